//! The daemon's enforcement control plane: how `stance mode` reaches the running daemon, and what the
//! daemon does with it.
//!
//! ```text
//! stance mode ──client──► control.sock ──server──► [Command + oneshot reply] ──► actor ──► Enforcer
//!                                                                               │    └──► Store (modes, policies)
//! pipeline writer ──[(cgroup, workload) after each commit]──────────────────────┘
//! Enforcer's verdict ring buffer ──verdicts reader──► [bounded, try_send] ──verdicts writer──► Store (events)
//! ```
//!
//! * `protocol`: the requests and responses on the socket (newline-delimited JSON, one request per
//!   connection).
//! * `client`: the CLI side (blocking, one call).
//! * `server`: the socket (0600, in a 0700 directory, root peers only) and its accept loop.
//! * `actor`: the one task that owns the `Enforcer`. Commands come in from the server, new cgroups
//!   from the pipeline's writer; nothing flows back to the pipeline.
//! * `verdicts`: the deny / would-deny ring buffer → the store's `enforcement_events`.

pub mod actor;
pub mod client;
pub mod protocol;
pub mod server;
pub mod verdicts;

use crate::{
    enforce::{Domain, EnforceError},
    store::StoreError,
};

/// Why a control request failed. Each becomes one line for the person who ran `stance mode`.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("unknown workload '{name}' (see `stance workloads`)")]
    UnknownWorkload { name: String },
    /// A domain asked to be audited or enforced has no enforcement on this kernel (or the enforcer
    /// could not start at all). Nothing was changed.
    #[error("enforcement unavailable: {reason}{}", domains_note(domains))]
    Unavailable { reason: String, domains: Vec<Domain> },
    /// The enforcer refused the policy or failed to update its maps; the previous policy stays.
    #[error(transparent)]
    Enforce(#[from] EnforceError),
    /// The policy was loaded, but the database did not take the new modes; the kernel was put back
    /// to what the database says.
    #[error("the new modes of workload '{workload}' could not be recorded; the previous ones stay in force")]
    NotRecorded {
        workload: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(StoreError),
    /// Workload ids are SQLite row ids; the kernel's policy ids are 32-bit.
    #[error("workload '{workload}' has id {id}, which does not fit a kernel policy id")]
    PolicyId { workload: String, id: i64 },
    /// The actor is gone: the daemon is stopping.
    #[error("the daemon is stopping")]
    Stopping,
}

impl From<StoreError> for ControlError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownWorkload { name } => ControlError::UnknownWorkload { name },
            e => ControlError::Store(e),
        }
    }
}

fn domains_note(domains: &[Domain]) -> String {
    if domains.is_empty() || domains.len() == Domain::ALL.len() {
        return String::new();
    }
    let names: Vec<&str> = domains.iter().map(|d| d.as_str()).collect();
    format!(" (for {})", names.join(", "))
}

/// An error and its causes on one line, each cause once.
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unavailable_names_the_domains_only_when_some() {
        let all = ControlError::Unavailable { reason: "no BPF-LSM".into(), domains: Domain::ALL.to_vec() };
        assert_eq!(all.to_string(), "enforcement unavailable: no BPF-LSM");
        let some = ControlError::Unavailable {
            reason: "no BPF-LSM".into(),
            domains: vec![Domain::File, Domain::Process],
        };
        assert_eq!(some.to_string(), "enforcement unavailable: no BPF-LSM (for file, process)");
    }

    #[test]
    fn causes_join_on_one_line() {
        let e = ControlError::NotRecorded {
            workload: "web".into(),
            source: StoreError::UnknownWorkload { name: "web".into() },
        };
        assert_eq!(
            one_line(&e),
            "the new modes of workload 'web' could not be recorded; the previous ones stay in force: \
             unknown workload 'web' (see `stance workloads`)"
        );
    }
}
