//! Deny / would-deny records from the `verdicts` ring buffer → owned `Verdict`s. Pure: bytes in,
//! `Verdict` out, unit-tested without a kernel. Object labels are the ones the behaviour graph uses
//! (`pipeline::aggregate::{endpoint_label, capability_name}`), so a verdict names the same node a
//! policy rule was made from.

use std::net::{IpAddr, Ipv6Addr};

use super::{abi, policy::Domain};
use crate::pipeline::aggregate::{capability_name, endpoint_label};
use crate::probes::decode::{user_dev, Destination};

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerdictError {
    #[error("verdict record of {len} bytes is shorter than its fixed part ({min} bytes)")]
    Short { len: usize, min: usize },
    #[error("verdict record strings claim {claimed} bytes but only {available} follow the fixed part")]
    StringsOverrun { claimed: usize, available: usize },
    #[error("verdict record has unknown domain {0}")]
    UnknownDomain(u32),
}

/// One deny (enforce) or would-deny (audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// CLOCK_BOOTTIME nanoseconds.
    pub boot_ns: u64,
    pub cgroup_id: u64,
    /// The workload's policy id as given to `Enforcer::apply` (`CANARY_POLICY_ID` for the
    /// start-up self-test, which callers skip).
    pub policy_id: u32,
    pub rev: u32,
    pub domain: Domain,
    /// true: denied (enforce); false: would have been denied (audit).
    pub deny: bool,
    pub pid: u32,
    pub tgid: u32,
    pub comm: String,
    /// The acting executable's path as the kernel resolved it (empty from the cgroup sock_addr
    /// fallback, which cannot read it).
    pub exe: String,
    /// What was refused: a file path, a binary (or `memfd:NAME`), `1.2.3.4:80/tcp`,
    /// `[::1]:53/udp`, `unix:/x` or `unix:@n`, `CAP_NET_RAW`, or `ptrace pid N (comm)` (`ptrace
    /// same-workload pid N (comm)` when the target was a process of the same workload).
    pub object: String,
    /// file: STANCE_ACC_READ / STANCE_ACC_WRITE asked for; 0 otherwise.
    pub access: u32,
    /// Device (stat(2) encoding) and inode of a file, binary or unix socket file; 0 otherwise.
    pub dev: u64,
    pub ino: u64,
    /// The path could not be resolved in full (too deep or too long): never allowed.
    pub truncated: bool,
    /// A datagram sent without connect.
    pub send: bool,
    /// A check the kernel itself does not audit (CAP_OPT_NOAUDIT, PTRACE_MODE_NOAUDIT).
    pub noaudit: bool,
    /// Identical verdicts the kernel counted, not reported, since the previous report of this one.
    pub repeat: u32,
    /// STANCE_V_* bits as the kernel set them.
    pub flags: u32,
}

impl Verdict {
    /// An exec of a binary the policy allows, refused because the acting executable is not one of
    /// the sources its rules name (fromSource).
    pub fn from_source(&self) -> bool {
        self.flags & abi::STANCE_V_FROM_SOURCE != 0
    }
}

/// How the object of a ptrace verdict starts when the target was a process of the same workload
/// (which `ptrace same-workload` would allow); `ptrace pid N (comm)` otherwise.
pub const PTRACE_SAME_WORKLOAD: &str = "ptrace same-workload ";

/// The policy id the start-up canary uses; its verdicts are not a workload's.
pub const CANARY_POLICY_ID: u32 = u32::MAX;

const FIXED: usize = std::mem::size_of::<abi::stance_verdict_event>();

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn c_string(raw: &[std::os::raw::c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).take_while(|&b| b != 0).collect();
    text(&bytes)
}

fn domain_of(n: u32) -> Result<Domain, VerdictError> {
    Domain::ALL.into_iter().find(|d| d.index() as u32 == n).ok_or(VerdictError::UnknownDomain(n))
}

pub fn decode(rec: &[u8]) -> Result<Verdict, VerdictError> {
    if rec.len() < FIXED {
        return Err(VerdictError::Short { len: rec.len(), min: FIXED });
    }
    // SAFETY: the length is checked above; the struct is bindgen's #[repr(C)] plain-integer layout,
    // valid for any bit pattern; read_unaligned makes no alignment assumption.
    let ev: abi::stance_verdict_event = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
    let rest = &rec[FIXED..];
    let (olen, elen) = (ev.object_len as usize, ev.exe_len as usize);
    if olen + elen > rest.len() {
        return Err(VerdictError::StringsOverrun { claimed: olen + elen, available: rest.len() });
    }
    let raw_object = &rest[..olen];
    let exe = text(&rest[olen..olen + elen]);
    let domain = domain_of(ev.domain)?;
    let has = |f: u32| ev.flags & f != 0;

    let mut access = 0;
    let object = match domain {
        Domain::File => {
            access = ev.detail;
            text(raw_object)
        }
        Domain::Process if has(abi::STANCE_V_PTRACE) => {
            // The object is the target's comm, detail its tgid.
            let who = if has(abi::STANCE_V_SAME_WORKLOAD) { PTRACE_SAME_WORKLOAD } else { "ptrace " };
            format!("{who}pid {} ({})", ev.detail, text(raw_object))
        }
        Domain::Process => text(raw_object),
        Domain::Capabilities => capability_name(ev.detail),
        Domain::Network if has(abi::STANCE_V_UNIX) => format!("unix:{}", text(raw_object)),
        Domain::Network => {
            let v6 = Ipv6Addr::from(ev.addr);
            let addr = match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(v6),
            };
            let dest = Destination::Inet { addr, port: ev.detail as u16 };
            endpoint_label(&dest, ev.sock_type, ev.protocol).0
        }
    };
    Ok(Verdict {
        boot_ns: ev.ts_ns,
        cgroup_id: ev.cgroup_id,
        policy_id: ev.policy_id,
        rev: ev.rev,
        domain,
        deny: ev.mode == abi::STANCE_MODE_ENFORCE,
        pid: ev.pid,
        tgid: ev.tgid,
        comm: c_string(&ev.comm),
        exe,
        object,
        access,
        dev: if ev.dev == 0 { 0 } else { user_dev(ev.dev) },
        ino: ev.ino,
        truncated: has(abi::STANCE_V_TRUNCATED),
        send: has(abi::STANCE_V_SEND),
        noaudit: has(abi::STANCE_V_NOAUDIT),
        repeat: ev.repeat,
        flags: ev.flags,
    })
}

/// Building records as the kernel writes them, for tests (here and in callers' tests).
pub mod encode {
    use super::abi;

    /// A record with the given fixed part (lengths are filled in) and strings.
    pub fn record(mut ev: abi::stance_verdict_event, object: &[u8], exe: &[u8]) -> Vec<u8> {
        ev.object_len = object.len() as u16;
        ev.exe_len = exe.len() as u16;
        let mut out = vec![0u8; std::mem::size_of::<abi::stance_verdict_event>()];
        // SAFETY: `out` is exactly the size of the plain-integer struct written unaligned into it.
        unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), ev) };
        out.extend_from_slice(object);
        out.extend_from_slice(exe);
        out
    }

    /// The fixed part of a verdict of `domain` in `mode` for cgroup 7, policy 3, pid 100.
    pub fn event(domain: u32, mode: u32) -> abi::stance_verdict_event {
        let mut ev = abi::stance_verdict_event {
            ts_ns: 5,
            cgroup_id: 7,
            policy_id: 3,
            rev: 9,
            domain,
            mode,
            pid: 100,
            tgid: 100,
            ..Default::default()
        };
        for (i, c) in b"app".iter().enumerate() {
            ev.comm[i] = *c as _;
        }
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::encode::{event, record};
    use super::*;

    #[test]
    fn file_deny_with_exe_and_identity() {
        let mut ev = event(abi::STANCE_DOM_FILE, abi::STANCE_MODE_ENFORCE);
        ev.detail = abi::STANCE_ACC_READ;
        ev.ino = 77;
        ev.dev = (8 << 20) | 1;
        let v = decode(&record(ev, b"/etc/shadow", b"/usr/bin/cat")).unwrap();
        assert_eq!(v.domain, Domain::File);
        assert!(v.deny);
        assert_eq!(
            (v.object.as_str(), v.exe.as_str(), v.comm.as_str()),
            ("/etc/shadow", "/usr/bin/cat", "app")
        );
        assert_eq!(v.access, abi::STANCE_ACC_READ);
        assert_eq!((v.dev, v.ino), (libc::makedev(8, 1), 77));
        assert_eq!((v.cgroup_id, v.policy_id, v.rev, v.pid), (7, 3, 9, 100));
        assert!(!v.truncated && !v.send);
    }

    #[test]
    fn audit_is_would_deny_and_truncation_is_flagged() {
        let mut ev = event(abi::STANCE_DOM_FILE, abi::STANCE_MODE_AUDIT);
        ev.flags = abi::STANCE_V_TRUNCATED;
        let v = decode(&record(ev, b"/a/a/a", b"")).unwrap();
        assert!(!v.deny);
        assert!(v.truncated);
    }

    #[test]
    fn network_labels_match_the_graph() {
        let mut ev = event(abi::STANCE_DOM_NETWORK, abi::STANCE_MODE_ENFORCE);
        ev.addr = "::ffff:127.0.0.1".parse::<Ipv6Addr>().unwrap().octets();
        ev.detail = 8080;
        ev.protocol = libc::IPPROTO_TCP as u16;
        ev.sock_type = libc::SOCK_STREAM as u16;
        assert_eq!(decode(&record(ev, b"", b"/bin/nc")).unwrap().object, "127.0.0.1:8080/tcp");

        ev.addr = "::1".parse::<Ipv6Addr>().unwrap().octets();
        ev.detail = 53;
        ev.protocol = libc::IPPROTO_UDP as u16;
        ev.flags = abi::STANCE_V_SEND;
        let v = decode(&record(ev, b"", b"")).unwrap();
        assert_eq!(v.object, "[::1]:53/udp");
        assert!(v.send);

        let mut ev = event(abi::STANCE_DOM_NETWORK, abi::STANCE_MODE_AUDIT);
        ev.flags = abi::STANCE_V_UNIX;
        assert_eq!(decode(&record(ev, b"/run/docker.sock", b"")).unwrap().object, "unix:/run/docker.sock");
        assert_eq!(decode(&record(ev, b"@name", b"")).unwrap().object, "unix:@name");
    }

    #[test]
    fn capabilities_exec_ptrace() {
        let mut ev = event(abi::STANCE_DOM_CAPS, abi::STANCE_MODE_ENFORCE);
        ev.detail = 13;
        ev.flags = abi::STANCE_V_NOAUDIT;
        let v = decode(&record(ev, b"", b"/usr/bin/ping")).unwrap();
        assert_eq!(v.object, "CAP_NET_RAW");
        assert!(v.noaudit);

        let mut ev = event(abi::STANCE_DOM_PROCESS, abi::STANCE_MODE_ENFORCE);
        ev.ino = 5;
        ev.dev = 1;
        assert_eq!(decode(&record(ev, b"/bin/sh", b"/app")).unwrap().object, "/bin/sh");
        assert!(!decode(&record(ev, b"/bin/sh", b"/app")).unwrap().from_source());
        ev.flags = abi::STANCE_V_FROM_SOURCE;
        assert!(decode(&record(ev, b"/bin/sh", b"/app")).unwrap().from_source());
        ev.flags = abi::STANCE_V_ANON;
        assert_eq!(decode(&record(ev, b"memfd:x", b"/app")).unwrap().object, "memfd:x");

        let mut ev = event(abi::STANCE_DOM_PROCESS, abi::STANCE_MODE_AUDIT);
        ev.detail = 4242;
        ev.flags = abi::STANCE_V_PTRACE;
        assert_eq!(decode(&record(ev, b"sleep", b"/app")).unwrap().object, "ptrace pid 4242 (sleep)");
        ev.flags |= abi::STANCE_V_SAME_WORKLOAD;
        assert_eq!(
            decode(&record(ev, b"sleep", b"/app")).unwrap().object,
            "ptrace same-workload pid 4242 (sleep)"
        );
    }

    #[test]
    fn malformed_records() {
        assert!(matches!(decode(&[0u8; 8]), Err(VerdictError::Short { .. })));
        let ev = event(abi::STANCE_DOM_FILE, abi::STANCE_MODE_ENFORCE);
        let mut rec = record(ev, b"/etc/shadow", b"/bin/cat");
        rec.truncate(rec.len() - 3);
        assert!(matches!(decode(&rec), Err(VerdictError::StringsOverrun { .. })));
        let ev = event(9, abi::STANCE_MODE_ENFORCE);
        assert_eq!(decode(&record(ev, b"", b"")), Err(VerdictError::UnknownDomain(9)));
    }
}
