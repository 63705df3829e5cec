//! Enforcement: Stance's own BPF-LSM programs, scoped to the workloads put into audit or enforce.
//!
//! Data flow: a `policy::Policy` (compiled from the behaviour graph, later from the recommender)
//! and per-domain `policy::Modes` → `Enforcer::apply` writes the rules of a new revision into the
//! pinned BPF maps and swaps each of the workload's cgroups to it atomically → the LSM hooks decide
//! from kernel objects → deny / would-deny records come back through a ring buffer.
//!
//! API CONTRACT (bodies being written on the `enforcer` branch; callers code against these names).

pub mod compile;
pub mod policy;

use std::fmt;

use aya::maps::{MapData, RingBuf};

pub use policy::{Domain, Mode, Modes, Policy};

#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error("enforcement unavailable: {0}")]
    Unavailable(String),
    #[error("policy of workload {workload} does not fit the kernel maps: {what} needs {needed} entries, {free} are free")]
    TooLarge { workload: String, what: &'static str, needed: usize, free: usize },
    #[error("updating the kernel maps for workload {workload} failed; the previous policy stays in force")]
    Update {
        workload: String,
        #[source]
        source: aya::maps::MapError,
    },
}

/// How each domain is enforced on this kernel, as the daemon reports it at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// BPF-LSM hooks, proven by the start-up canary.
    BpfLsm,
    /// cgroup connect4/connect6/sendmsg4/sendmsg6 programs (network only, where BPF-LSM is not).
    CgroupSockAddr,
    /// Not enforceable here, with the reason.
    Unavailable(String),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::BpfLsm => f.write_str("bpf-lsm"),
            Backend::CgroupSockAddr => f.write_str("cgroup sock_addr programs"),
            Backend::Unavailable(r) => write!(f, "unavailable: {r}"),
        }
    }
}

/// Enforcement status per domain.
#[derive(Debug, Clone)]
pub struct Status {
    pub process: Backend,
    pub file: Backend,
    pub network: Backend,
    pub capabilities: Backend,
}

/// Options for `Enforcer::start`.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The daemon's own pid (never enforced on).
    pub self_tgid: u32,
    /// cgroup2 mount, for the canary's throwaway cgroup and the sock_addr fallback's attachment.
    pub cgroup_mount: std::path::PathBuf,
}

/// The loaded (or adopted, after a restart) enforcement programs and their pinned maps.
pub struct Enforcer {
    _private: (),
}

impl Enforcer {
    /// Loads the enforcement object, or adopts the one pinned under /sys/fs/bpf/stance by an earlier
    /// daemon; runs the canary self-test; falls back to cgroup sock_addr programs for the network
    /// domain where BPF-LSM does not deny. Never fails just because BPF-LSM is missing: the status
    /// says so per domain.
    pub fn start(_opts: &StartOptions) -> Result<(Enforcer, Status), EnforceError> {
        Err(EnforceError::Unavailable("the enforcer is not built yet".into()))
    }

    pub fn status(&self) -> &Status {
        unreachable!()
    }

    /// Installs `policy` with `modes` for the workload `policy_id` (a stable number per workload,
    /// chosen by the caller) on all of its `cgroups`, atomically; returns the new revision. A policy
    /// that does not fit, or a failed update, leaves the previous revision in force. Modes that are
    /// all observe mean `release`.
    pub fn apply(
        &mut self,
        _workload: &str,
        _policy_id: u32,
        _cgroups: &[u64],
        _policy: &Policy,
        _modes: Modes,
    ) -> Result<u32, EnforceError> {
        unreachable!()
    }

    /// A new cgroup of a workload already in audit/enforce (container restart, new launch).
    pub fn add_cgroup(&mut self, _policy_id: u32, _cgroup: u64) -> Result<(), EnforceError> {
        unreachable!()
    }

    /// Stops evaluating the workload: its cgroups' entries and rules are removed.
    pub fn release(&mut self, _policy_id: u32) -> Result<(), EnforceError> {
        unreachable!()
    }

    /// The deny / would-deny ring buffer (records: stance_verdict_event + exe + object). Once.
    pub fn take_verdicts(&mut self) -> Option<RingBuf<MapData>> {
        unreachable!()
    }
}
