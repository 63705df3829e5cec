//! The policy the enforcer loads: plain data, independent of how it was made (compiled from the
//! behaviour graph now; the recommender later) and of how the kernel stores it (`enforce::maps`).
//! Serialisable, because it is also Stance's native policy format.

use std::{collections::BTreeSet, fmt, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// What a policy governs. Each domain of a workload has its own mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// exec of binaries (bprm_check_security) and ptrace (ptrace_access_check)
    Process,
    /// file opens (file_open), including io_uring's
    File,
    /// connect and unconnected sends (socket_connect, socket_sendmsg)
    Network,
    /// capability checks (capable)
    Capabilities,
}

impl Domain {
    pub const ALL: [Domain; 4] = [Domain::Process, Domain::File, Domain::Network, Domain::Capabilities];

    /// Index into the kernel's per-domain mode array (enum stance_domain).
    pub const fn index(self) -> usize {
        match self {
            Domain::Process => 0,
            Domain::File => 1,
            Domain::Network => 2,
            Domain::Capabilities => 3,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Domain::Process => "process",
            Domain::File => "file",
            Domain::Network => "network",
            Domain::Capabilities => "capabilities",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Domain {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Domain::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown domain '{s}' (expected process, file, network or capabilities)"))
    }
}

/// observe (no policy) → audit (report would-deny) → enforce (deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Observe,
    Audit,
    Enforce,
}

impl Mode {
    /// The kernel's value (enum stance_mode).
    pub const fn kernel(self) -> u8 {
        match self {
            Mode::Observe => 0,
            Mode::Audit => 1,
            Mode::Enforce => 2,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "observe" => Ok(Mode::Observe),
            "audit" => Ok(Mode::Audit),
            "enforce" => Ok(Mode::Enforce),
            _ => Err(format!("unknown mode '{s}' (expected observe, audit or enforce)")),
        }
    }
}

/// A mode per domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Modes {
    pub process: Mode,
    pub file: Mode,
    pub network: Mode,
    pub capabilities: Mode,
}

impl Modes {
    pub fn all(mode: Mode) -> Self {
        Modes { process: mode, file: mode, network: mode, capabilities: mode }
    }

    pub fn get(&self, d: Domain) -> Mode {
        match d {
            Domain::Process => self.process,
            Domain::File => self.file,
            Domain::Network => self.network,
            Domain::Capabilities => self.capabilities,
        }
    }

    pub fn set(&mut self, d: Domain, m: Mode) {
        match d {
            Domain::Process => self.process = m,
            Domain::File => self.file = m,
            Domain::Network => self.network = m,
            Domain::Capabilities => self.capabilities = m,
        }
    }

    /// True when nothing is evaluated: the workload is left alone entirely.
    pub fn is_observe_only(&self) -> bool {
        Domain::ALL.iter().all(|d| self.get(*d) == Mode::Observe)
    }

    /// The kernel's per-domain array.
    pub fn kernel(&self) -> [u8; 4] {
        let mut out = [0u8; 4];
        for d in Domain::ALL {
            out[d.index()] = self.get(d).kernel();
        }
        out
    }
}

/// Allowed access to a file or to everything under a directory. Read never implies write.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FileRule {
    /// Absolute path, as the kernel resolves it (no trailing slash except for `/` itself).
    pub path: String,
    /// true: every path under `path`, at any depth (a recursive directory rule); false: exactly `path`.
    #[serde(default)]
    pub prefix: bool,
    /// true: the direct children of the directory `path` only (one level, not deeper). Exclusive with
    /// `prefix`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub children: bool,
    #[serde(default)]
    pub read: bool,
    /// Includes create and truncate.
    #[serde(default)]
    pub write: bool,
}

/// An executable the workload may run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ExecRule {
    /// Path as the kernel resolved it, or `memfd:NAME` for an anonymous executable.
    pub path: String,
    /// When both are set, the binary must also be this device (stat(2) encoding) and inode: a
    /// replaced file at the same path is not the allowed binary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// The executables allowed to start this one (KubeArmor's fromSource): the executable of the
    /// process calling execve. Empty: any executable of the workload may start it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

/// Destinations the workload may connect or send to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NetRule {
    /// Address or prefix; IPv4 prefixes also match their IPv4-mapped IPv6 form.
    pub net: IpNet,
    pub port_lo: u16,
    pub port_hi: u16,
    /// `tcp`, `udp`, ... ; None = any protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// Who processes of the workload may ptrace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PtraceRule {
    #[default]
    None,
    SameWorkload,
}

/// A workload's complete allowlist. Anything not listed is denied in enforce mode.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    pub executables: Vec<ExecRule>,
    pub files: Vec<FileRule>,
    pub network: Vec<NetRule>,
    /// Unix socket paths (`/run/x.sock`, or `@name` for the abstract namespace).
    pub unix: Vec<String>,
    /// Capability numbers (CAP_NET_RAW = 13).
    pub capabilities: BTreeSet<u32>,
    pub ptrace: PtraceRule,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_kernel_values() {
        assert_eq!("enforce".parse::<Mode>().unwrap().kernel(), 2);
        assert!("block".parse::<Mode>().is_err());
        assert_eq!("network".parse::<Domain>().unwrap().index(), 2);
        let mut m = Modes::default();
        assert!(m.is_observe_only());
        m.set(Domain::File, Mode::Audit);
        assert_eq!(m.kernel(), [0, 1, 0, 0]);
        assert!(!m.is_observe_only());
    }

    #[test]
    fn policy_round_trips_as_json() {
        let p = Policy {
            executables: vec![ExecRule {
                path: "/usr/bin/cat".into(),
                dev: Some(1),
                ino: Some(2),
                from: vec![],
            }],
            files: vec![FileRule {
                path: "/etc".into(),
                prefix: true,
                children: false,
                read: true,
                write: false,
            }],
            network: vec![NetRule {
                net: "127.0.0.0/8".parse().unwrap(),
                port_lo: 80,
                port_hi: 80,
                protocol: Some("tcp".into()),
            }],
            unix: vec!["@x".into()],
            capabilities: [13].into_iter().collect(),
            ptrace: PtraceRule::None,
        };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&s).unwrap(), p);
    }
}
