//! The enforcer's decisions, replayed in userspace: `Matcher` answers "would the kernel allow
//! this?" for a policy, for `stance policy check` and for tests that hold the kernel to the same
//! answers (the VM scenario 38-matcher-equivalence feeds the same cases to both).
//!
//! It is built from the entries `rules::compile_keyed` makes for the kernel maps (with paths kept as
//! strings instead of hashed), so validation, normalisation and the merging of rules are the
//! kernel's by construction; the lookups below mirror enforce.bpf.c step by step:
//!
//! - file: the path with procfs pids as "*" (`normalize_path`); granted = exact rule | recursive
//!   rule of the path itself and of every prefix ending before a '/' (the root rule is the empty
//!   prefix) | one-level rule of the parent directory (a path's last '/'; "/" has none). An open
//!   needs read for reading (and for an open with neither access), write for writing, creating or
//!   truncating.
//! - exec: the binary's path (or `memfd:NAME` label) must have an entry, its identity must match
//!   where the rule has one, and when every rule for it names sources, the acting executable must be
//!   one of them.
//! - network: the longest rule prefix containing the address (IPv4 and its IPv4-mapped IPv6 form
//!   are one), then its port ranges (with those of the shorter prefixes containing it), protocol
//!   "any" or equal.
//!
//! What replay cannot see, and how it answers:
//! - A path the kernel cannot resolve in full is denied (flagged truncated). Replay denies every
//!   path longer than `MAX_RESOLVED_PATH` bytes (after pid normalisation for files), which is
//!   exactly the walker's limit; a path of more than 2047 components may also be cut in the kernel
//!   depending on the mounts crossed, which replay cannot know.
//! - Objects with no path in any mount (pipes, sockets, memfds reopened through /proc/PID/fd) are
//!   allowed by the kernel's file hook: replay allows any file "path" that does not start with '/'.
//! - The kernel denies a decision whose per-CPU path buffer was reused mid-walk (a preemption race,
//!   flagged truncated); that never depends on the policy and replay never predicts it.
//! - Procfs is recognised by path (`/proc/...`), the kernel recognises it by filesystem.
//! - A `#!` script is judged by its interpreter in the kernel (the hook runs again for it): replay
//!   judges whatever path it is given.

use std::net::IpAddr;

use super::{
    abi,
    policy::Policy,
    rules::{self, compile_keyed, kernel_dev, mapped_octets, CompiledRules, RuleError},
};

pub use super::rules::normalize_path;

/// The longest path the kernel's walker resolves in full (its buffer is STANCE_PATH_MAX bytes,
/// one of which stays unused before the path and one after it).
pub const MAX_RESOLVED_PATH: usize = crate::probes::abi::STANCE_PATH_MAX as usize - 2;

/// A policy's kernel decisions, answerable without a kernel. Says "allowed or not", whatever the
/// mode (audit reports what enforce would deny).
#[derive(Debug, Clone)]
pub struct Matcher {
    rules: CompiledRules<String>,
}

impl Matcher {
    /// Refuses exactly the policies `rules::compile` refuses.
    pub fn new(policy: &Policy) -> Result<Matcher, RuleError> {
        Ok(Matcher { rules: compile_keyed(policy, str::to_owned)? })
    }

    fn file_rule(&self, kind: u32, path: &str) -> u32 {
        // Lookups by borrowed str: the map's keys are Strings, compared as strs.
        self.rules.files.get(&(kind, path.to_owned())).copied().unwrap_or(0)
    }

    /// The access bits (STANCE_ACC_*) the file rules grant to `path`, an already normalised and
    /// resolvable absolute path.
    fn file_granted(&self, path: &str) -> u32 {
        let mut granted = self.file_rule(abi::STANCE_FILE_EXACT, path);
        granted |= self.file_rule(abi::STANCE_FILE_PREFIX, path);
        for (i, _) in path.match_indices('/') {
            granted |= self.file_rule(abi::STANCE_FILE_PREFIX, &path[..i]);
        }
        if path.len() > 1 {
            let parent = path.rfind('/').map_or("", |i| &path[..i]);
            granted |= self.file_rule(abi::STANCE_FILE_CHILDREN, parent);
        }
        granted
    }

    /// An open of `path` (as observed: real pids) for reading and/or writing (write includes create
    /// and truncate). True: allowed.
    pub fn file(&self, path: &str, read: bool, write: bool) -> bool {
        if !path.starts_with('/') {
            return true;
        }
        let path = normalize_path(path);
        if path.len() > MAX_RESOLVED_PATH {
            return false;
        }
        let mut need = 0;
        if read || !write {
            need |= abi::STANCE_ACC_READ;
        }
        if write {
            need |= abi::STANCE_ACC_WRITE;
        }
        need & !self.file_granted(&path) == 0
    }

    /// An exec of `path` (or a `memfd:NAME` label), whose device (stat(2) encoding) and inode are
    /// given where known (unknown: the path alone decides), by a process running `source_exe`
    /// (None: no executable, e.g. a kernel thread). True: allowed.
    pub fn exec(&self, path: &str, dev: Option<u64>, ino: Option<u64>, source_exe: Option<&str>) -> bool {
        if path.len() > MAX_RESOLVED_PATH {
            return false;
        }
        let Some(entry) = self.rules.execs.get(path) else {
            return false;
        };
        if entry.ino != 0 {
            if let (Some(dev), Some(ino)) = (dev, ino) {
                if ino != entry.ino || kernel_dev(dev) != entry.dev {
                    return false;
                }
            }
        }
        if !entry.from_only {
            return true;
        }
        match source_exe {
            Some(src) if src.len() <= MAX_RESOLVED_PATH => {
                self.rules.exec_sources.contains(&(path.to_owned(), src.to_owned()))
            }
            _ => false,
        }
    }

    /// A connect (or unconnected send) to `addr`:`port` over `protocol` ("tcp", "udp", a number...).
    /// IPv4-mapped IPv6 addresses are their IPv4 address. True: allowed.
    pub fn connect(&self, addr: IpAddr, port: u16, protocol: &str) -> bool {
        let target = mapped_octets(addr);
        // The trie's answer: the longest rule prefix containing the address.
        let best = self
            .rules
            .net
            .iter()
            .filter(|(prefix, _)| rules::prefix_contains(prefix, &(128, target)))
            .max_by_key(|((len, _), _)| *len);
        let Some((_, ranges)) = best else {
            return false;
        };
        // A protocol name no rule can carry matches only rules for any protocol.
        let proto = rules::protocol_by_name(protocol);
        ranges.iter().any(|r| port >= r.lo && port <= r.hi && (r.protocol == 0 || Some(r.protocol) == proto))
    }

    /// A connect or send to a unix socket: its path as the kernel resolves it, or `@name` in the
    /// abstract namespace. True: allowed.
    pub fn unix(&self, path: &str) -> bool {
        path.len() <= MAX_RESOLVED_PATH && self.rules.unix.contains(path)
    }

    /// A check of capability number `cap` (CAP_NET_RAW = 13). True: allowed.
    pub fn capability(&self, cap: u32) -> bool {
        cap < 64 && (self.rules.caps_allowed >> cap) & 1 == 1
    }

    /// A ptrace access check (ptrace(2), another process's /proc/PID files, ...) on a process of
    /// the same workload or not. True: allowed.
    pub fn ptrace(&self, same_workload: bool) -> bool {
        same_workload && self.rules.ptrace == abi::STANCE_PTRACE_SAME_WORKLOAD
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::policy::FileRule;
    use crate::enforce::rules::tests::{exec_from as exec, net};

    fn file(path: &str, prefix: bool, children: bool, read: bool, write: bool) -> FileRule {
        FileRule { path: path.into(), prefix, children, read, write }
    }

    fn files(rules: Vec<FileRule>) -> Matcher {
        Matcher::new(&Policy { files: rules, ..Default::default() }).unwrap()
    }

    #[test]
    fn exact_rules_split_read_and_write() {
        let m = files(vec![
            file("/etc/hostname", false, false, true, false),
            file("/srv/out", false, false, false, true),
        ]);
        assert!(m.file("/etc/hostname", true, false));
        assert!(!m.file("/etc/hostname", true, true));
        assert!(!m.file("/etc/hostname", false, true));
        assert!(m.file("/srv/out", false, true));
        assert!(!m.file("/srv/out", true, false));
        assert!(!m.file("/srv/out", false, false), "an open for neither needs read");
        assert!(!m.file("/etc/hostnam", true, false));
        assert!(!m.file("/etc/hostname/x", true, false));
    }

    #[test]
    fn recursive_rules_cover_the_directory_and_every_depth() {
        let m =
            files(vec![file("/usr/lib/", true, false, true, false), file("/var", true, false, true, true)]);
        assert!(m.file("/usr/lib", true, false));
        assert!(m.file("/usr/lib/x86_64-linux-gnu/libc.so.6", true, false));
        assert!(!m.file("/usr/libexec/x", true, false), "a prefix ends at a '/'");
        assert!(!m.file("/usr", true, false));
        assert!(!m.file("/usr/lib/x", true, true));
        assert!(m.file("/var/a/b/c", true, true));
        let root = files(vec![file("/", true, false, true, false)]);
        assert!(root.file("/", true, false));
        assert!(root.file("/anything/at/all", true, false));
    }

    #[test]
    fn children_rules_are_one_level_and_not_the_directory() {
        let m = files(vec![file("/var/log", false, true, true, false)]);
        assert!(m.file("/var/log/syslog", true, false));
        assert!(!m.file("/var/log", true, false), "the directory itself is not its child");
        assert!(!m.file("/var/log/apt/history.log", true, false), "deeper than one level");
        assert!(!m.file("/var/logs/x", true, false));
        let root = files(vec![file("/", false, true, true, false)]);
        assert!(root.file("/init", true, false));
        assert!(!root.file("/", true, false));
        assert!(!root.file("/etc/x", true, false));
        // Grants add up across kinds.
        let m = files(vec![file("/d", false, true, true, false), file("/d/f", false, false, false, true)]);
        assert!(m.file("/d/f", true, true));
    }

    #[test]
    fn proc_pids_match_wildcard_and_literal_rules() {
        let m = files(vec![
            file("/proc/*/stat", false, false, true, false),
            file("/proc/1/task/1/status", false, false, true, false),
            file("/proc/*/fd", false, true, true, false),
        ]);
        assert!(m.file("/proc/4242/stat", true, false));
        assert!(m.file("/proc/1/stat", true, false));
        assert!(!m.file("/proc/self/stat", true, false), "replay gets resolved paths: self is not a pid");
        assert!(m.file("/proc/7/task/8/status", true, false), "a literal pid rule covers every pid");
        assert!(!m.file("/proc/7/status", true, false));
        assert!(m.file("/proc/99/fd/3", true, false), "children of /proc/*/fd: the fd names are digits too");
        assert!(!m.file("/srv/4242/stat", true, false));
        assert!(matches!(
            Matcher::new(&Policy {
                files: vec![file("/srv/*", true, false, true, false)],
                ..Default::default()
            }),
            Err(RuleError::Wildcard(_))
        ));
    }

    #[test]
    fn unresolvable_paths_are_denied_and_pathless_objects_allowed() {
        let m = files(vec![file("/", true, false, true, true)]);
        let longest = format!("/{}", "a".repeat(MAX_RESOLVED_PATH - 1));
        assert!(m.file(&longest, true, false));
        assert!(!m.file(&format!("{longest}b"), true, false), "one byte more than the walker holds");
        assert!(files(vec![]).file("pipe:[1234]", true, true));
    }

    #[test]
    fn exec_by_path_identity_and_source() {
        let dev = libc::makedev(8, 3);
        let mut cat = exec("/usr/bin/cat", &[]);
        (cat.dev, cat.ino) = (Some(dev), Some(42));
        let tar = exec("/bin/tar", &["/bin/sh", "memfd:jit"]);
        let p = Policy { executables: vec![tar, exec("memfd:jit", &[]), cat], ..Default::default() };
        let m = Matcher::new(&p).unwrap();
        assert!(m.exec("/usr/bin/cat", Some(dev), Some(42), Some("/bin/sh")));
        assert!(!m.exec("/usr/bin/cat", Some(dev), Some(43), Some("/bin/sh")), "another binary at the path");
        assert!(m.exec("/usr/bin/cat", None, None, None), "identity unknown: the path decides");
        assert!(m.exec("/bin/tar", None, None, Some("/bin/sh")));
        assert!(m.exec("/bin/tar", None, None, Some("memfd:jit")));
        assert!(!m.exec("/bin/tar", None, None, Some("/bin/bash")));
        assert!(!m.exec("/bin/tar", None, None, None));
        assert!(m.exec("memfd:jit", None, None, Some("/bin/anything")));
        assert!(!m.exec("memfd:other", None, None, Some("/bin/sh")));
        assert!(!m.exec("/bin/sh", None, None, Some("/bin/sh")));
    }

    #[test]
    fn network_longest_prefix_ports_and_protocols() {
        let p = Policy {
            network: [
                ("10.0.0.0/8", 80, 80, Some("tcp")),
                ("10.1.0.0/16", 443, 450, Some("tcp")),
                ("127.0.0.0/8", 5353, 5353, Some("udp")),
                ("::1/128", 1, 65535, None),
            ]
            .into_iter()
            .map(|(n, lo, hi, proto)| net(n, lo, hi, proto))
            .collect(),
            unix: vec!["/run/x.sock".into(), "@abstract".into()],
            capabilities: [13].into_iter().collect(),
            ..Default::default()
        };
        let m = Matcher::new(&p).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(m.connect(ip("10.2.3.4"), 80, "tcp"));
        assert!(!m.connect(ip("10.2.3.4"), 80, "udp"));
        assert!(!m.connect(ip("10.2.3.4"), 443, "tcp"));
        assert!(m.connect(ip("10.1.3.4"), 445, "tcp"));
        assert!(m.connect(ip("10.1.3.4"), 80, "tcp"), "the /16 carries the /8's ports");
        assert!(m.connect(ip("::ffff:10.1.3.4"), 80, "tcp"), "IPv4-mapped is IPv4");
        assert!(m.connect(ip("127.0.0.9"), 5353, "udp"));
        assert!(!m.connect(ip("127.0.0.9"), 5353, "tcp"));
        assert!(m.connect(ip("::1"), 22, "sctp"), "any protocol");
        assert!(!m.connect(ip("::2"), 22, "tcp"));
        assert!(!m.connect(ip("192.0.2.1"), 80, "tcp"));
        assert!(m.unix("/run/x.sock") && m.unix("@abstract"));
        assert!(!m.unix("/run/y.sock") && !m.unix("@x"));
        assert!(m.capability(13) && !m.capability(12) && !m.capability(64));
    }

    #[test]
    fn refuses_what_the_kernel_compiler_refuses() {
        let bad = Policy { files: vec![file("rel", false, false, true, false)], ..Default::default() };
        assert_eq!(
            Matcher::new(&bad).unwrap_err(),
            rules::compile(&bad, &crate::enforce::hash::HashKeys([1, 2, 3, 4])).unwrap_err()
        );
    }
}
