//! A `Policy` → the entries the kernel maps hold for one revision: hashed file, exec and unix rules,
//! LPM-trie network entries with their port ranges, the capability mask. Pure (no kernel), so every
//! rule of the translation is unit-tested here.
//!
//! The translation is generic over the key a string becomes: the kernel's keyed hash for the maps,
//! or the string itself for `enforce::matcher`, which replays the kernel's lookups on the same
//! entries, so both see one validation and one set of merged rules.

use std::borrow::Cow;
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
    #[error("file rule '{0}' is both a recursive (prefix) and a one-level (children) directory rule")]
    ChildrenAndPrefix(String),
    #[error("file rule '{0}': '*' is only allowed as a whole component under /proc (standing for a pid)")]
    Wildcard(String),
    #[error("executable rule '{0}' is empty")]
    EmptyExec(String),
    #[error("executable rule '{0}' has an empty fromSource entry")]
    EmptyFrom(String),
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

/// An executable's entry (one per path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecEntry {
    /// Inode and device (kernel encoding) the binary must be; 0 = any binary at that path.
    pub ino: u64,
    pub dev: u64,
    /// Only the sources listed in `exec_sources` may start it (every rule for the path had `from`).
    pub from_only: bool,
}

/// Everything one revision writes, keyed the way the maps are (without policy id and revision):
/// `K` is a path's hash for the kernel (`Hash128`), the path itself for the matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRules<K = Hash128> {
    /// (STANCE_FILE_EXACT | _PREFIX | _CHILDREN, path) → STANCE_ACC_READ | STANCE_ACC_WRITE. Directory
    /// rules are keyed without a trailing slash ("/" as the empty string); procfs pids as "*".
    pub files: BTreeMap<(u32, K), u32>,
    /// Binary path → its entry.
    pub execs: BTreeMap<K, ExecEntry>,
    /// (binary, source) for the binaries with `from_only`: the executables allowed to start them.
    pub exec_sources: BTreeSet<(K, K)>,
    /// (prefix length of the 128-bit address, address) → allowed port ranges, already merged with
    /// those of every shorter prefix containing it.
    pub net: BTreeMap<(u32, [u8; 16]), Vec<PortRange>>,
    pub unix: BTreeSet<K>,
    pub caps_allowed: u64,
    pub ptrace: u32,
}

impl<K> Default for CompiledRules<K> {
    fn default() -> Self {
        CompiledRules {
            files: BTreeMap::new(),
            execs: BTreeMap::new(),
            exec_sources: BTreeSet::new(),
            net: BTreeMap::new(),
            unix: BTreeSet::new(),
            caps_allowed: 0,
            ptrace: 0,
        }
    }
}

impl<K> CompiledRules<K> {
    pub fn file_entries(&self) -> usize {
        self.files.len()
    }

    /// Entries in `exec_rules`: one per binary and one per (binary, source).
    pub fn exec_entries(&self) -> usize {
        self.execs.len() + self.exec_sources.len()
    }
}

/// A component the kernel writes as "*" on procfs: 1 to 10 ASCII digits (a pid or tid).
fn is_pid_component(c: &str) -> bool {
    (1..=10).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_digit())
}

/// The path file rules are looked up with: under /proc, every all-digit component of 1 to 10
/// characters (a pid, a tid) becomes "*", as the kernel writes the names of procfs dentries for
/// its file-rule lookup, so `/proc/1234/task/1235/stat` → `/proc/*/task/*/stat`. Other paths are
/// returned as they are. (The kernel decides by the filesystem, this by the path: they agree when
/// procfs is mounted at /proc and nothing else is mounted under it with all-digit names.)
pub fn normalize_path(path: &str) -> Cow<'_, str> {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return Cow::Borrowed(path);
    };
    if !rest.split('/').any(is_pid_component) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    out.push_str("/proc");
    for comp in rest.split('/') {
        out.push('/');
        out.push_str(if is_pid_component(comp) { "*" } else { comp });
    }
    Cow::Owned(out)
}

/// A file rule's path as the kernel looks it up: canonical, pids under /proc as "*". A '*' is only
/// accepted as a whole component below /proc (where the kernel writes it); anywhere else it would
/// be a literal name no rule author means, so it is refused.
fn file_rule_path(p: &str) -> Result<String, RuleError> {
    let path = canonical_path(p)?;
    let under_proc = path.starts_with("/proc/");
    for (i, comp) in path.split('/').skip(1).enumerate() {
        if comp.contains('*') && (comp != "*" || i == 0 || !under_proc) {
            return Err(RuleError::Wildcard(p.to_owned()));
        }
    }
    Ok(normalize_path(&path).into_owned())
}

/// An executable named by a rule: a path (canonical) or an anonymous label such as `memfd:NAME`.
fn exec_text(p: &str) -> Result<String, RuleError> {
    if p.starts_with('/') {
        canonical_path(p)
    } else {
        Ok(p.to_owned())
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

/// The protocol number of a rule's protocol name (`tcp`, `udp`, ..., `protoN` or `N`); 0 = any.
pub fn protocol_by_name(name: &str) -> Option<u16> {
    let n = match name {
        "" | "any" => 0,
        "tcp" => libc::IPPROTO_TCP,
        "udp" => libc::IPPROTO_UDP,
        "icmp" => libc::IPPROTO_ICMP,
        "icmpv6" => libc::IPPROTO_ICMPV6,
        "sctp" => libc::IPPROTO_SCTP,
        "mptcp" => libc::IPPROTO_MPTCP,
        "udplite" => libc::IPPROTO_UDPLITE,
        other => other.strip_prefix("proto").unwrap_or(other).parse::<u16>().map(i32::from).ok()?,
    };
    Some(n as u16)
}

fn protocol_number(net: &IpNet, p: &Option<String>) -> Result<u16, RuleError> {
    let Some(name) = p else { return Ok(0) };
    protocol_by_name(name).ok_or_else(|| RuleError::Protocol { net: *net, protocol: name.clone() })
}

/// IPv4 prefixes live in the trie as their IPv4-mapped IPv6 form, which is also what a dual-stack
/// socket's connect to ::ffff:a.b.c.d presents, so both forms match the same rule.
fn trie_prefix(net: &IpNet) -> (u32, [u8; 16]) {
    match net.trunc() {
        IpNet::V4(n) => (96 + u32::from(n.prefix_len()), n.network().to_ipv6_mapped().octets()),
        IpNet::V6(n) => (u32::from(n.prefix_len()), n.network().octets()),
    }
}

pub(crate) fn prefix_contains(outer: &(u32, [u8; 16]), inner: &(u32, [u8; 16])) -> bool {
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

/// The kernel's entries for `policy`, paths hashed with `keys`.
pub fn compile(policy: &Policy, keys: &HashKeys) -> Result<CompiledRules, RuleError> {
    compile_keyed(policy, |text| keys.hash(text.as_bytes()))
}

/// The same entries with each string turned into a key by `key` (the identity for the matcher).
pub fn compile_keyed<K: Ord + Clone>(
    policy: &Policy,
    key: impl Fn(&str) -> K,
) -> Result<CompiledRules<K>, RuleError> {
    let mut out = CompiledRules::default();

    for f in &policy.files {
        let path = file_rule_path(&f.path)?;
        if f.children && f.prefix {
            return Err(RuleError::ChildrenAndPrefix(f.path.clone()));
        }
        // A directory rule is hashed without its trailing slash; "/" as the empty string.
        let dir = |path: String| if path == "/" { String::new() } else { path };
        let (kind, text) = if f.prefix {
            (abi::STANCE_FILE_PREFIX, dir(path))
        } else if f.children {
            (abi::STANCE_FILE_CHILDREN, dir(path))
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
        *out.files.entry((kind, key(&text))).or_insert(0) |= access;
    }

    // Per binary: its entry, and the union of the sources its rules name.
    let mut execs: BTreeMap<String, (ExecEntry, BTreeSet<String>)> = BTreeMap::new();
    for e in &policy.executables {
        if e.path.is_empty() {
            return Err(RuleError::EmptyExec(e.path.clone()));
        }
        // Anonymous executables are rules by label ("memfd:NAME"), which never starts with '/'.
        let text = exec_text(&e.path)?;
        let (ino, dev) = match (e.ino, e.dev) {
            (Some(ino), Some(dev)) if ino != 0 => (ino, kernel_dev(dev)),
            _ => (0, 0),
        };
        let mut sources = BTreeSet::new();
        for src in &e.from {
            if src.is_empty() {
                return Err(RuleError::EmptyFrom(e.path.clone()));
            }
            sources.insert(exec_text(src)?);
        }
        let rule = ExecEntry { ino, dev, from_only: !sources.is_empty() };
        match execs.get_mut(&text) {
            Some((prev, prev_sources)) => {
                // The same path with two identities (say, a binary upgraded while it was
                // observed): the map holds one entry per path, so the path alone decides.
                if (prev.ino, prev.dev) != (ino, dev) {
                    (prev.ino, prev.dev) = (0, 0);
                }
                // Rules add up: one rule without sources lets any executable start it.
                prev.from_only &= rule.from_only;
                prev_sources.extend(sources);
            }
            None => {
                execs.insert(text, (rule, sources));
            }
        }
    }
    for (text, (entry, sources)) in execs {
        let k = key(&text);
        if entry.from_only {
            for src in sources {
                out.exec_sources.insert((k.clone(), key(&src)));
            }
        }
        out.execs.insert(k, entry);
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
        out.unix.insert(key(&text));
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
pub(crate) mod tests {
    use super::*;
    use crate::enforce::policy::{ExecRule, FileRule, NetRule};

    const KEYS: HashKeys = HashKeys([1, 2, 3, 4]);

    fn file(path: &str, prefix: bool, read: bool, write: bool) -> FileRule {
        FileRule { path: path.into(), prefix, children: false, read, write }
    }

    pub(crate) fn net(n: &str, lo: u16, hi: u16, proto: Option<&str>) -> NetRule {
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
        let id = |path: &[u8]| {
            let e = c.execs[&KEYS.hash(path)];
            (e.ino, e.dev)
        };
        assert_eq!(id(b"/usr/bin/cat"), (42, (8 << 20) | 1));
        assert_eq!(id(b"memfd:runc_cloned"), (0, 0));
        assert_eq!(id(b"/bin/busybox"), (0, 0), "two identities: the path decides");
        assert!(c.exec_sources.is_empty() && c.execs.values().all(|e| !e.from_only));
    }

    pub(crate) fn exec_from(path: &str, from: &[&str]) -> ExecRule {
        ExecRule {
            path: path.into(),
            dev: None,
            ino: None,
            from: from.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn from_sources_add_up_and_a_rule_without_sources_allows_any() {
        let p = Policy {
            executables: vec![
                exec_from("/bin/tar", &["/bin/sh"]),
                exec_from("/bin/tar", &["//usr/bin/make", "memfd:jit"]),
                exec_from("/bin/gzip", &["/bin/tar"]),
                exec_from("/bin/gzip", &[]),
            ],
            ..Default::default()
        };
        let c = compile_keyed(&p, str::to_owned).unwrap();
        assert!(c.execs["/bin/tar"].from_only);
        assert!(!c.execs["/bin/gzip"].from_only, "one rule without sources: any source");
        let pairs: Vec<_> = c.exec_sources.iter().map(|(b, s)| (b.as_str(), s.as_str())).collect();
        assert_eq!(
            pairs,
            [("/bin/tar", "/bin/sh"), ("/bin/tar", "/usr/bin/make"), ("/bin/tar", "memfd:jit")]
        );
        assert_eq!(c.exec_entries(), 5);
        let empty = Policy { executables: vec![exec_from("/bin/tar", &[""])], ..Default::default() };
        assert_eq!(compile(&empty, &KEYS), Err(RuleError::EmptyFrom("/bin/tar".into())));
    }

    #[test]
    fn children_rules_and_proc_wildcards() {
        let children = |path: &str| FileRule {
            path: path.into(),
            prefix: false,
            children: true,
            read: true,
            write: false,
        };
        let p = Policy {
            files: vec![
                children("/var/log/"),
                children("/"),
                file("/proc/*/stat", false, true, false),
                file("/proc/1/task/22/status", false, true, false),
                file("/proc/self/*", true, true, false),
                file("/proc/4294967296123/x", false, true, false),
            ],
            ..Default::default()
        };
        let c = compile_keyed(&p, str::to_owned).unwrap();
        let keys: Vec<(u32, &str)> = c.files.keys().map(|(k, p)| (*k, p.as_str())).collect();
        assert_eq!(
            keys,
            [
                (abi::STANCE_FILE_EXACT, "/proc/*/stat"),
                (abi::STANCE_FILE_EXACT, "/proc/*/task/*/status"),
                (abi::STANCE_FILE_EXACT, "/proc/4294967296123/x"),
                (abi::STANCE_FILE_PREFIX, "/proc/self/*"),
                (abi::STANCE_FILE_CHILDREN, ""),
                (abi::STANCE_FILE_CHILDREN, "/var/log"),
            ],
            "literal pids become '*'; longer digit runs are not pids; directory rules lose the slash"
        );
        for bad in ["/tmp/*", "/*/1", "/proc/1*", "/proc/*x/stat", "/etc/pass*"] {
            let p = Policy { files: vec![file(bad, false, true, false)], ..Default::default() };
            assert_eq!(compile(&p, &KEYS), Err(RuleError::Wildcard(bad.into())), "{bad}");
        }
        let both = FileRule { prefix: true, ..children("/x") };
        let p = Policy { files: vec![both], ..Default::default() };
        assert_eq!(compile(&p, &KEYS), Err(RuleError::ChildrenAndPrefix("/x".into())));
    }

    #[test]
    fn normalize_path_only_touches_pids_under_proc() {
        assert_eq!(normalize_path("/proc/123/stat"), "/proc/*/stat");
        assert_eq!(normalize_path("/proc/1/task/1/fd/3"), "/proc/*/task/*/fd/*");
        assert!(matches!(normalize_path("/proc/self/stat"), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/srv/123/x"), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/proc"), Cow::Borrowed(_)));
        assert!(matches!(normalize_path("/proc123/4"), Cow::Borrowed(_)));
        assert_eq!(normalize_path("/proc/12345678901"), "/proc/12345678901", "11 digits: not a pid");
        assert_eq!(normalize_path("/proc/1234567890"), "/proc/*");
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
