//! A `Policy` → the entries the kernel maps hold for one revision: hashed file, exec and unix rules,
//! LPM-trie network entries with their port ranges, the capability mask. Pure (no kernel), so every
//! rule of the translation is unit-tested here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    abi,
    hash::{Hash128, HashKeys},
    policy::{Policy, PtraceRule},
};

/// Why a policy cannot be expressed in the kernel maps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("file rule '{0}' is not an absolute path")]
    RelativeFile(String),
    #[error("path '{0}' has a '.' or '..' component (rules name paths as the kernel resolves them)")]
    DotComponent(String),
    #[error("file rule '{0}': one-level directory rules (children) are not supported by this enforcer yet")]
    ChildrenUnsupported(String),
    #[error("executable rule '{0}': fromSource restrictions are not supported by this enforcer yet")]
    FromUnsupported(String),
    #[error("executable rule '{0}' is empty")]
    EmptyExec(String),
    #[error("unix socket rule '{0}' is neither an absolute path nor @name")]
    BadUnix(String),
    #[error("capability {0} is out of range (0..=63)")]
    Capability(u32),
    #[error("network rule {net}: port range {lo}-{hi} is empty")]
    PortRange { net: IpNet, lo: u16, hi: u16 },
    #[error("network rule {net}: unknown protocol '{protocol}'")]
    Protocol { net: IpNet, protocol: String },
    #[error("network prefix {net} needs {needed} port ranges (with those of the prefixes containing it); the kernel keeps {max}")]
    TooManyPortRanges { net: IpNet, needed: usize, max: usize },
}

/// One port range of a network entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// 0 = any protocol.
    pub protocol: u16,
    pub lo: u16,
    pub hi: u16,
}

/// Everything one revision writes, keyed the way the maps are (without policy id and revision).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompiledRules {
    /// (STANCE_FILE_EXACT | STANCE_FILE_PREFIX, path hash) → STANCE_ACC_READ | STANCE_ACC_WRITE.
    pub files: BTreeMap<(u32, Hash128), u32>,
    /// Path hash → (inode, device in the kernel's encoding); (0, 0) = any binary at that path.
    pub execs: BTreeMap<Hash128, (u64, u64)>,
    /// (prefix length of the 128-bit address, address) → allowed port ranges, already merged with
    /// those of every shorter prefix containing it.
    pub net: BTreeMap<(u32, [u8; 16]), Vec<PortRange>>,
    pub unix: BTreeSet<Hash128>,
    pub caps_allowed: u64,
    pub ptrace: u32,
}

impl CompiledRules {
    pub fn file_entries(&self) -> usize {
        self.files.len()
    }
}

/// A path as the kernel's walker writes it: absolute, no trailing slash (except "/"), no empty
/// components. `.` and `..` are refused rather than guessed at.
fn canonical_path(p: &str) -> Result<String, RuleError> {
    if !p.starts_with('/') {
        return Err(RuleError::RelativeFile(p.to_owned()));
    }
    let mut out = String::with_capacity(p.len());
    for comp in p.split('/').filter(|c| !c.is_empty()) {
        if comp == "." || comp == ".." {
            return Err(RuleError::DotComponent(p.to_owned()));
        }
        out.push('/');
        out.push_str(comp);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The kernel's device encoding (MKDEV: major << 20 | minor) of a stat(2) st_dev.
pub fn kernel_dev(user_dev: u64) -> u64 {
    let major = u64::from(libc::major(user_dev));
    let minor = u64::from(libc::minor(user_dev));
    (major << 20) | minor
}

fn protocol_number(net: &IpNet, p: &Option<String>) -> Result<u16, RuleError> {
    let Some(name) = p else { return Ok(0) };
    let n = match name.as_str() {
        "" | "any" => 0,
        "tcp" => libc::IPPROTO_TCP,
        "udp" => libc::IPPROTO_UDP,
        "icmp" => libc::IPPROTO_ICMP,
        "icmpv6" => libc::IPPROTO_ICMPV6,
        "sctp" => libc::IPPROTO_SCTP,
        "mptcp" => libc::IPPROTO_MPTCP,
        "udplite" => libc::IPPROTO_UDPLITE,
        other => other
            .strip_prefix("proto")
            .unwrap_or(other)
            .parse::<u16>()
            .map(i32::from)
            .map_err(|_| RuleError::Protocol { net: *net, protocol: name.clone() })?,
    };
    Ok(n as u16)
}

/// IPv4 prefixes live in the trie as their IPv4-mapped IPv6 form, which is also what a dual-stack
/// socket's connect to ::ffff:a.b.c.d presents, so both forms match the same rule.
fn trie_prefix(net: &IpNet) -> (u32, [u8; 16]) {
    match net.trunc() {
        IpNet::V4(n) => (96 + u32::from(n.prefix_len()), n.network().to_ipv6_mapped().octets()),
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

fn prefix_contains(outer: &(u32, [u8; 16]), inner: &(u32, [u8; 16])) -> bool {
    if outer.0 > inner.0 {
        return false;
    }
    let a = u128::from_be_bytes(outer.1);
    let b = u128::from_be_bytes(inner.1);
    let mask = if outer.0 == 0 { 0 } else { u128::MAX << (128 - outer.0) };
    a & mask == b & mask
}

/// Sorted, with overlapping or adjacent ranges of the same protocol joined.
fn merge_ranges(mut v: Vec<PortRange>) -> Vec<PortRange> {
    v.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        if let Some(last) = out.last_mut() {
            if last.protocol == r.protocol && u32::from(r.lo) <= u32::from(last.hi) + 1 {
                last.hi = last.hi.max(r.hi);
                continue;
            }
        }
        out.push(r);
    }
    out
}

pub fn compile(policy: &Policy, keys: &HashKeys) -> Result<CompiledRules, RuleError> {
    let mut out = CompiledRules::default();

    for f in &policy.files {
        let path = canonical_path(&f.path)?;
        if f.children {
            return Err(RuleError::ChildrenUnsupported(f.path.clone()));
        }
        let (kind, text) = if f.prefix {
            // A directory rule is hashed without its trailing slash; "/" as the empty string.
            (abi::STANCE_FILE_PREFIX, if path == "/" { String::new() } else { path })
        } else {
            (abi::STANCE_FILE_EXACT, path)
        };
        let mut access = 0;
        if f.read {
            access |= abi::STANCE_ACC_READ;
        }
        if f.write {
            access |= abi::STANCE_ACC_WRITE;
        }
        if access == 0 {
            continue;
        }
        *out.files.entry((kind, keys.hash(text.as_bytes()))).or_insert(0) |= access;
    }

    for e in &policy.executables {
        if e.path.is_empty() {
            return Err(RuleError::EmptyExec(e.path.clone()));
        }
        if !e.from.is_empty() {
            return Err(RuleError::FromUnsupported(e.path.clone()));
        }
        // Anonymous executables are rules by label ("memfd:NAME"), which never starts with '/'.
        let text = if e.path.starts_with('/') { canonical_path(&e.path)? } else { e.path.clone() };
        let id = match (e.ino, e.dev) {
            (Some(ino), Some(dev)) if ino != 0 => (ino, kernel_dev(dev)),
            _ => (0, 0),
        };
        let h = keys.hash(text.as_bytes());
        match out.execs.get(&h) {
            // The same path with two identities (say, a binary upgraded while it was observed):
            // the map holds one entry per path, so the path alone decides.
            Some(prev) if *prev != id => {
                out.execs.insert(h, (0, 0));
            }
            _ => {
                out.execs.insert(h, id);
            }
        }
    }

    let mut direct: BTreeMap<(u32, [u8; 16]), Vec<PortRange>> = BTreeMap::new();
    let mut nets: BTreeMap<(u32, [u8; 16]), IpNet> = BTreeMap::new();
    for n in &policy.network {
        if n.port_lo > n.port_hi {
            return Err(RuleError::PortRange { net: n.net, lo: n.port_lo, hi: n.port_hi });
        }
        let protocol = protocol_number(&n.net, &n.protocol)?;
        let p = trie_prefix(&n.net);
        nets.insert(p, n.net.trunc());
        direct.entry(p).or_default().push(PortRange { protocol, lo: n.port_lo, hi: n.port_hi });
    }
    // The trie answers with the longest matching prefix only: give each entry the ranges of every
    // rule prefix that contains it.
    for p in direct.keys() {
        let mut ranges = Vec::new();
        for (q, rs) in &direct {
            if prefix_contains(q, p) {
                ranges.extend_from_slice(rs);
            }
        }
        let ranges = merge_ranges(ranges);
        if ranges.len() > abi::STANCE_NET_PORTS as usize {
            return Err(RuleError::TooManyPortRanges {
                net: nets[p],
                needed: ranges.len(),
                max: abi::STANCE_NET_PORTS as usize,
            });
        }
        out.net.insert(*p, ranges);
    }

    for u in &policy.unix {
        let text = if let Some(name) = u.strip_prefix('@') {
            format!("@{name}")
        } else if u.starts_with('/') {
            canonical_path(u)?
        } else {
            return Err(RuleError::BadUnix(u.clone()));
        };
        out.unix.insert(keys.hash(text.as_bytes()));
    }

    for &c in &policy.capabilities {
        if c > 63 {
            return Err(RuleError::Capability(c));
        }
        out.caps_allowed |= 1u64 << c;
    }
    out.ptrace = match policy.ptrace {
        PtraceRule::None => abi::STANCE_PTRACE_NONE,
        PtraceRule::SameWorkload => abi::STANCE_PTRACE_SAME_WORKLOAD,
    };
    Ok(out)
}

/// The 16-byte form the trie stores an address in (IPv4 as ::ffff:a.b.c.d).
pub fn mapped_octets(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::policy::{ExecRule, FileRule, NetRule};

    const KEYS: HashKeys = HashKeys([1, 2, 3, 4]);

    fn file(path: &str, prefix: bool, read: bool, write: bool) -> FileRule {
        FileRule { path: path.into(), prefix, children: false, read, write }
    }

    fn net(n: &str, lo: u16, hi: u16, proto: Option<&str>) -> NetRule {
        NetRule { net: n.parse().unwrap(), port_lo: lo, port_hi: hi, protocol: proto.map(str::to_owned) }
    }

    #[test]
    fn file_rules_hash_canonical_paths_and_add_up_access() {
        let p = Policy {
            files: vec![
                file("/etc/hostname", false, true, false),
                file("//etc//hostname/", false, false, true),
                file("/usr/lib/", true, true, false),
                file("/", true, true, false),
                file("/nothing", false, false, false),
            ],
            ..Default::default()
        };
        let c = compile(&p, &KEYS).unwrap();
        let rw = abi::STANCE_ACC_READ | abi::STANCE_ACC_WRITE;
        assert_eq!(c.files[&(abi::STANCE_FILE_EXACT, KEYS.hash(b"/etc/hostname"))], rw);
        assert_eq!(c.files[&(abi::STANCE_FILE_PREFIX, KEYS.hash(b"/usr/lib"))], abi::STANCE_ACC_READ);
        // The root directory rule is the empty prefix (every path starts with "" + "/").
        assert_eq!(c.files[&(abi::STANCE_FILE_PREFIX, KEYS.hash(b""))], abi::STANCE_ACC_READ);
        assert_eq!(c.files.len(), 3, "a rule granting nothing is not stored");
    }

    #[test]
    fn bad_paths_are_refused() {
        let rel = Policy { files: vec![file("etc/x", false, true, false)], ..Default::default() };
        assert_eq!(compile(&rel, &KEYS), Err(RuleError::RelativeFile("etc/x".into())));
        let dots = Policy { files: vec![file("/etc/../x", false, true, false)], ..Default::default() };
        assert!(matches!(compile(&dots, &KEYS), Err(RuleError::DotComponent(_))));
        let unix = Policy { unix: vec!["x.sock".into()], ..Default::default() };
        assert!(matches!(compile(&unix, &KEYS), Err(RuleError::BadUnix(_))));
        let cap = Policy { capabilities: [64].into_iter().collect(), ..Default::default() };
        assert_eq!(compile(&cap, &KEYS), Err(RuleError::Capability(64)));
    }

    #[test]
    fn exec_rules_by_path_label_and_identity() {
        let dev = libc::makedev(8, 1);
        let p = Policy {
            executables: vec![
                ExecRule { path: "/usr/bin/cat".into(), dev: Some(dev), ino: Some(42), from: vec![] },
                ExecRule { path: "memfd:runc_cloned".into(), dev: None, ino: None, from: vec![] },
                ExecRule { path: "/bin/busybox".into(), dev: Some(dev), ino: Some(1), from: vec![] },
                ExecRule { path: "/bin/busybox".into(), dev: Some(dev), ino: Some(2), from: vec![] },
            ],
            ..Default::default()
        };
        let c = compile(&p, &KEYS).unwrap();
        assert_eq!(c.execs[&KEYS.hash(b"/usr/bin/cat")], (42, (8 << 20) | 1));
        assert_eq!(c.execs[&KEYS.hash(b"memfd:runc_cloned")], (0, 0));
        assert_eq!(c.execs[&KEYS.hash(b"/bin/busybox")], (0, 0), "two identities: the path decides");
    }

    #[test]
    fn ipv4_is_stored_mapped_and_contained_prefixes_inherit_ports() {
        let p = Policy {
            network: vec![
                net("10.0.0.0/8", 80, 80, Some("tcp")),
                net("10.1.0.0/16", 443, 443, Some("tcp")),
                net("10.1.0.0/16", 444, 450, Some("tcp")),
                net("::1/128", 53, 53, Some("udp")),
                net("192.168.1.7/24", 1, 65535, None),
            ],
            ..Default::default()
        };
        let c = compile(&p, &KEYS).unwrap();
        let ten = (104, mapped_octets("10.0.0.0".parse().unwrap()));
        let ten_one = (112, mapped_octets("10.1.0.0".parse().unwrap()));
        let tcp = libc::IPPROTO_TCP as u16;
        assert_eq!(c.net[&ten], vec![PortRange { protocol: tcp, lo: 80, hi: 80 }]);
        assert_eq!(
            c.net[&ten_one],
            vec![PortRange { protocol: tcp, lo: 80, hi: 80 }, PortRange { protocol: tcp, lo: 443, hi: 450 }],
            "the /16 inherits the /8's port, and its adjacent ranges merge"
        );
        // Host bits are cleared.
        assert!(c.net.contains_key(&(120, mapped_octets("192.168.1.0".parse().unwrap()))));
        assert!(c.net.contains_key(&(128, mapped_octets("::1".parse().unwrap()))));
    }

    #[test]
    fn network_errors() {
        let p = Policy { network: vec![net("10.0.0.0/8", 90, 80, None)], ..Default::default() };
        assert!(matches!(compile(&p, &KEYS), Err(RuleError::PortRange { .. })));
        let p =
            Policy { network: vec![net("10.0.0.0/8", 80, 80, Some("carrier-pigeon"))], ..Default::default() };
        assert!(matches!(compile(&p, &KEYS), Err(RuleError::Protocol { .. })));
        let many = (0..17).map(|i| net("10.0.0.0/8", i * 10, i * 10, Some("tcp"))).collect();
        let p = Policy { network: many, ..Default::default() };
        assert!(matches!(compile(&p, &KEYS), Err(RuleError::TooManyPortRanges { needed: 17, .. })));
        let p = Policy { network: vec![net("10.0.0.0/8", 80, 80, Some("17"))], ..Default::default() };
        assert_eq!(compile(&p, &KEYS).unwrap().net.values().next().unwrap()[0].protocol, 17);
    }

    #[test]
    fn unix_caps_ptrace() {
        let p = Policy {
            unix: vec!["/run/x.sock".into(), "@abstract".into()],
            capabilities: [13, 0].into_iter().collect(),
            ptrace: PtraceRule::SameWorkload,
            ..Default::default()
        };
        let c = compile(&p, &KEYS).unwrap();
        assert!(c.unix.contains(&KEYS.hash(b"/run/x.sock")));
        assert!(c.unix.contains(&KEYS.hash(b"@abstract")));
        assert_eq!(c.caps_allowed, (1 << 13) | 1);
        assert_eq!(c.ptrace, abi::STANCE_PTRACE_SAME_WORKLOAD);
    }

    #[test]
    fn prefix_containment() {
        let all = (0, [0u8; 16]);
        let v4 = trie_prefix(&"127.0.0.0/8".parse().unwrap());
        assert!(prefix_contains(&all, &v4));
        assert!(prefix_contains(&v4, &trie_prefix(&"127.0.0.2/32".parse().unwrap())));
        assert!(!prefix_contains(&v4, &trie_prefix(&"10.0.0.1/32".parse().unwrap())));
        assert!(!prefix_contains(&trie_prefix(&"127.0.0.2/32".parse().unwrap()), &v4));
    }
}
