//! Text forms of the recommender's answers: the native policy document (JSON or YAML), the diff and
//! replay tables, and the readiness columns of `stance workloads`.

use serde_json::{json, Value};

use super::{review::Diff, Readiness, Review};
use crate::store::{render::aligned, WorkloadSummary};

/// Version of the native document's layout (docs/policy-format.md).
pub const API_VERSION: &str = "stance.dev/v1";

/// The native document: the policy the enforcer loads, under `policy`, with its version and, when
/// `explain`, every rule's evidence and breadth and the workload's readiness. Proposed additions
/// are always listed (they are what `stance policy accept` takes).
pub fn native(review: &Review, explain: bool) -> Value {
    let mut doc = json!({
        "apiVersion": API_VERSION,
        "kind": "Policy",
        "workload": review.workload,
        "version": review.version,
        "origin": review.origin,
        "createdAt": review.created_at,
        "policy": review.policy,
    });
    if explain {
        doc["rules"] = json!(review.rules);
        doc["readiness"] = json!(review.readiness);
    }
    if !review.proposed.is_empty() {
        doc["proposed"] = json!(review.proposed);
    }
    doc
}

/// `+ ID TEXT` for each added rule, `- ID TEXT` for each removed one, after a header line.
pub fn diff_table(diff: &Diff) -> String {
    let mut out = format!("workload {}: version {} → {}\n", diff.workload, diff.from, diff.to);
    if diff.added.is_empty() && diff.removed.is_empty() {
        out.push_str("no change\n");
    }
    for r in &diff.removed {
        out.push_str(&format!("- {}  {}\n", r.id, r.text));
    }
    for r in &diff.added {
        out.push_str(&format!("+ {}  {}\n", r.id, r.text));
    }
    out
}

/// `stance workloads` with READY and REASON columns.
pub fn workloads_table(list: &[WorkloadSummary], readiness: &[Readiness]) -> String {
    let ready = readiness.iter().map(|r| if r.ready { "yes" } else { "no" }.to_owned()).collect();
    let reason = readiness.iter().map(|r| r.reason.clone()).collect();
    crate::store::render::workloads_table_with(list, &[("READY", ready), ("REASON", reason)])
}

/// Columns of a table of rows built elsewhere (replay), numeric columns right-aligned.
pub fn table(header: &[&str], numeric: &[bool], rows: Vec<Vec<String>>) -> String {
    aligned(header, numeric, rows.into_iter())
}
