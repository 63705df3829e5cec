//! One rule of a policy on its own: the unit the recommender explains, versions diff, and people
//! accept. A `Policy` is the enforcer's shape (rules grouped by domain); `Rule` is one of its entries
//! with a stable id and a one-line text.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enforce::{
    policy::{ExecRule, FileRule, NetRule, PtraceRule},
    Domain, Policy,
};

/// One entry of a `Policy`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Rule {
    Exec(ExecRule),
    File(FileRule),
    Net(NetRule),
    Unix {
        path: String,
    },
    Capability {
        number: u32,
    },
    /// Ptrace access (ptrace(2), /proc/PID files, process_vm_readv, ...) to processes of the same
    /// workload: the policy's `ptrace: same-workload`.
    Ptrace,
}

impl Rule {
    pub fn domain(&self) -> Domain {
        match self {
            Rule::Exec(_) | Rule::Ptrace => Domain::Process,
            Rule::File(_) => Domain::File,
            Rule::Net(_) | Rule::Unix { .. } => Domain::Network,
            Rule::Capability { .. } => Domain::Capabilities,
        }
    }

    /// The rule as one line: `exec /usr/bin/cat from /usr/bin/bash`, `file /var/cache/app/* rw`,
    /// `net 10.0.0.0/29 tcp 5432`, `unix /run/app.sock`, `capability CAP_NET_BIND_SERVICE`.
    /// `/*` ends a one-level directory rule, `/**` a recursive one.
    pub fn text(&self) -> String {
        match self {
            Rule::Exec(e) => {
                let mut s = format!("exec {}", e.path);
                if let (Some(dev), Some(ino)) = (e.dev, e.ino) {
                    s.push_str(&format!(" (dev {dev} ino {ino})"));
                }
                if !e.from.is_empty() {
                    s.push_str(" from ");
                    s.push_str(&e.from.join(","));
                }
                s
            }
            Rule::File(f) => {
                let suffix = if f.prefix {
                    "/**"
                } else if f.children {
                    "/*"
                } else {
                    ""
                };
                let path =
                    if suffix.is_empty() { f.path.clone() } else { f.path.trim_end_matches('/').to_owned() };
                let access = match (f.read, f.write) {
                    (true, true) => "rw",
                    (true, false) => "r",
                    (false, true) => "w",
                    (false, false) => "-",
                };
                format!("file {path}{suffix} {access}")
            }
            Rule::Net(n) => {
                let ports = if n.port_lo == n.port_hi {
                    n.port_lo.to_string()
                } else {
                    format!("{}-{}", n.port_lo, n.port_hi)
                };
                format!("net {} {} {ports}", n.net, n.protocol.as_deref().unwrap_or("any"))
            }
            Rule::Unix { path } => format!("unix {path}"),
            Rule::Capability { number } => format!("capability {}", capability_name(*number)),
            Rule::Ptrace => "ptrace same-workload".to_owned(),
        }
    }

    /// A stable id: the domain's letter and 8 hex digits of a hash of `text()`, so the same rule has
    /// the same id in every version and on every host (`stance policy accept WORKLOAD f3a09c1d2`).
    pub fn id(&self) -> String {
        let letter = match self {
            Rule::Exec(_) => 'x',
            Rule::File(_) => 'f',
            Rule::Net(_) => 'n',
            Rule::Unix { .. } => 'u',
            Rule::Capability { .. } => 'c',
            Rule::Ptrace => 'p',
        };
        format!("{letter}{:08x}", fnv1a(self.text().as_bytes()) >> 32)
    }
}

/// FNV-1a, 64 bits: stable across Rust releases and platforms, unlike the standard library's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

/// `CAP_NET_RAW` for 13; `CAP_41` for a number the caps crate has no name for.
pub fn capability_name(number: u32) -> String {
    caps::all()
        .into_iter()
        .find(|c| u32::from(c.index()) == number)
        .map_or_else(|| format!("CAP_{number}"), |c| c.to_string())
}

/// The rules of a policy, in the policy's order (processes, files, network, unix, capabilities).
pub fn rules_of(policy: &Policy) -> Vec<Rule> {
    let mut out = Vec::new();
    out.extend(policy.executables.iter().cloned().map(Rule::Exec));
    out.extend(policy.files.iter().cloned().map(Rule::File));
    out.extend(policy.network.iter().cloned().map(Rule::Net));
    out.extend(policy.unix.iter().map(|path| Rule::Unix { path: path.clone() }));
    out.extend(policy.capabilities.iter().map(|number| Rule::Capability { number: *number }));
    if policy.ptrace == PtraceRule::SameWorkload {
        out.push(Rule::Ptrace);
    }
    out
}

/// The policy of a set of rules, merged where two rules are about the same object: exec rules of
/// one binary join their `from` lists (an empty list, "from anywhere", wins), file rules of one
/// path and shape join their access. Sorted, so equal rule sets give equal policies.
pub fn policy_of(rules: impl IntoIterator<Item = Rule>) -> Policy {
    // (path, dev, ino) → the executables that may start it; None: any.
    type Binary = (String, Option<u64>, Option<u64>);
    let mut execs: BTreeMap<Binary, Option<Vec<String>>> = BTreeMap::new();
    let mut files: BTreeMap<(String, bool, bool), (bool, bool)> = BTreeMap::new();
    let mut policy = Policy::default();
    for rule in rules {
        match rule {
            Rule::Exec(e) => {
                let entry = execs.entry((e.path, e.dev, e.ino)).or_insert_with(|| Some(Vec::new()));
                match (entry.as_mut(), e.from.is_empty()) {
                    (Some(_), true) => *entry = None,
                    (Some(from), false) => from.extend(e.from),
                    (None, _) => {}
                }
            }
            Rule::File(f) => {
                let access = files.entry((f.path, f.prefix, f.children)).or_default();
                access.0 |= f.read;
                access.1 |= f.write;
            }
            Rule::Net(n) => policy.network.push(n),
            Rule::Unix { path } => policy.unix.push(path),
            Rule::Capability { number } => {
                policy.capabilities.insert(number);
            }
            Rule::Ptrace => policy.ptrace = PtraceRule::SameWorkload,
        }
    }
    policy.executables = execs
        .into_iter()
        .map(|((path, dev, ino), from)| {
            let mut from = from.unwrap_or_default();
            from.sort();
            from.dedup();
            ExecRule { path, dev, ino, from }
        })
        .collect();
    policy.files = files
        .into_iter()
        .map(|((path, prefix, children), (read, write))| FileRule { path, prefix, children, read, write })
        .collect();
    policy.network.sort();
    policy.network.dedup();
    policy.unix.sort();
    policy.unix.dedup();
    policy
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, prefix: bool, children: bool, read: bool, write: bool) -> Rule {
        Rule::File(FileRule { path: path.into(), prefix, children, read, write })
    }

    #[test]
    fn ids_are_stable_and_tell_rules_apart() {
        let a = file("/etc/hosts", false, false, true, false);
        assert_eq!(a.id(), a.clone().id());
        assert_eq!(a.id().len(), 9);
        assert!(a.id().starts_with('f'));
        assert_ne!(a.id(), file("/etc/hosts", false, false, true, true).id());
        assert_ne!(a.id(), file("/etc/hosts", true, false, true, false).id());
        assert_eq!(file("/var/cache/app", false, true, true, true).text(), "file /var/cache/app/* rw");
        assert_eq!(file("/usr/share/app", true, false, true, false).text(), "file /usr/share/app/** r");
        assert_eq!(Rule::Capability { number: 13 }.text(), "capability CAP_NET_RAW");
        assert_eq!(Rule::Capability { number: 63 }.text(), "capability CAP_63");
    }

    #[test]
    fn policy_of_merges_and_round_trips() {
        let exec = |from: &[&str]| {
            Rule::Exec(ExecRule {
                path: "/usr/bin/cat".into(),
                dev: None,
                ino: None,
                from: from.iter().map(|s| s.to_string()).collect(),
            })
        };
        let p = policy_of([
            exec(&["/bin/sh"]),
            exec(&["/bin/bash", "/bin/sh"]),
            file("/srv/log", false, false, true, false),
            file("/srv/log", false, false, false, true),
            Rule::Capability { number: 10 },
        ]);
        assert_eq!(p.executables[0].from, ["/bin/bash", "/bin/sh"]);
        assert_eq!(p.files.len(), 1);
        assert!(p.files[0].read && p.files[0].write);
        assert_eq!(policy_of(rules_of(&p)), p);
        // "from anywhere" is wider than any list, so it wins.
        let p = policy_of([exec(&["/bin/sh"]), exec(&[])]);
        assert!(p.executables[0].from.is_empty());
    }
}
