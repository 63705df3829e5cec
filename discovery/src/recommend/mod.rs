//! Recommend: collapse a workload's behaviour graph into the smallest policy that allows everything
//! it was observed doing, and say how sure that policy is.
//!
//! Data flow: store (the graph, losses, deny events) → `collapse` (petgraph in memory) → a `Policy`
//! the enforcer loads, each rule with its evidence and, for generalisations, its breadth →
//! `review` keeps versions in the store, turns deny / would-deny events into proposed additions and
//! adopts the ones a person accepts; `readiness` says whether learning has converged.
//!
//! What each domain becomes:
//!
//! - **process**: every executable the workload ran or was seen acting as, pinned to device and inode
//!   where the kernel reported them, with the executables that started it (`from`, from the sources
//!   of its exec edges). An executable started from outside the workload (its entry point), or only
//!   ever seen acting, may be started by anything (`from` empty).
//! - **file**: `paths` — exact paths, directory rules and generalised components, read and write
//!   apart. Only opens that succeeded count: a failed open (ENOENT, EACCES) never reaches the LSM
//!   hook, so it needs no rule.
//! - **network**: `net` — per destination, port and protocol, aggregated where justified; unix
//!   sockets by path.
//! - **capabilities**: the capabilities whose check was granted.
//!
//! Evidence per rule: first and last observation, hit count (observations), the executables that
//! used it, and how many distinct objects (paths, endpoints) it covers. Distinct processes are not
//! recorded by the store (edges aggregate observations, not process ids), so `processes` is null.

mod collapse;
pub mod net;
pub mod paths;
pub mod readiness;
pub mod render;
pub mod replay;
pub mod review;
pub mod rule;

use serde::{Deserialize, Serialize};

pub use collapse::{recommend, Recommendation};
pub use paths::{Breadth, HostFs, RealFs, UnknownFs};
pub use readiness::Readiness;
pub use review::{accept, diff, latest_or_new, review, Diff, Review};
pub use rule::Rule;

use crate::store::StoreError;

/// One rule of a recommended policy with what justifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    /// `Rule::id`: what `stance policy accept` and `diff` name.
    pub id: String,
    /// The rule as one line (`Rule::text`).
    pub text: String,
    pub rule: Rule,
    pub evidence: Evidence,
    /// For a generalisation: how much it admits that was never observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breadth: Option<Breadth>,
}

/// What was observed of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// First observation the rule covers (RFC 3339); empty when there is none (an adopted rule).
    pub first_seen: String,
    /// Latest observation the rule covers (RFC 3339).
    pub last_seen: String,
    /// Observations (or deny events, for a proposal) the rule covers.
    pub hits: u64,
    /// The executables that used it (for an exec rule: the ones that started it).
    pub executables: Vec<String>,
    /// Distinct objects (paths, endpoints, binaries) it covers.
    pub objects: u64,
    /// Distinct processes: not recorded by the store yet, always null.
    pub processes: Option<u64>,
    /// `observed`, or `accepted` for a rule adopted from deny events.
    pub origin: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RecommendError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "workload '{workload}' has no proposed addition '{id}' (see `stance policy {workload} --explain`)"
    )]
    UnknownProposal { workload: String, id: String },
    #[error("workload '{workload}' has no policy version {version}")]
    NoVersion { workload: String, version: u32 },
    /// The enforcer's rule checks refuse the stored version (it could not be loaded either).
    #[error("version {version} of workload '{workload}' cannot be evaluated")]
    Unevaluable {
        workload: String,
        version: u32,
        #[source]
        source: crate::enforce::rules::RuleError,
    },
    #[error("stored rule of workload '{workload}' is not valid")]
    RuleJson {
        workload: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = RecommendError> = std::result::Result<T, E>;

/// Unix ns of an RFC 3339 time as the store writes them; 0 for an empty or broken one.
pub(crate) fn unix_ns(rfc3339: &str) -> i64 {
    humantime::parse_rfc3339(rfc3339)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}
