//! The label set that ties an exported policy to its workload.
//!
//! Pods carry their own labels, but Stance does not read them yet, and host, `stance launch` and
//! systemd workloads have none. So every workload gets a documented label set derived from its
//! identity; an exported policy selects [`WORKLOAD`] alone (the workload name is Stance's key, so
//! one label is enough), and whoever deploys the workload puts that label on its pods (or, for the
//! host workload, on the node). When pod labels are stored, [`selector`] is where a pod's own
//! labels will replace the derived one.
//!
//! | label | value |
//! | --- | --- |
//! | `stance.dev/workload` | the workload name as a label value (see [`label_value`]) |
//! | `stance.dev/kind` | `host`, `launched`, `systemd` or `container` |
//! | `stance.dev/unit` | the systemd unit, for units |
//! | `stance.dev/runtime` | the container runtime, for containers |
//!
//! Values a label cannot hold go into annotations of the same names: the exact workload name,
//! `stance.dev/container-id` (64 hex digits: one more than a label value may have) and
//! `stance.dev/pod-uid`.

use std::collections::BTreeMap;

use super::{ExportError, Result};
use crate::store::WorkloadInfo;

/// Label (and annotation, with the exact name) naming the workload.
pub const WORKLOAD: &str = "stance.dev/workload";
pub const KIND: &str = "stance.dev/kind";
pub const UNIT: &str = "stance.dev/unit";
pub const RUNTIME: &str = "stance.dev/runtime";
/// Annotations only.
pub const CONTAINER_ID: &str = "stance.dev/container-id";
pub const POD_UID: &str = "stance.dev/pod-uid";

/// Kubernetes' limit on a label value.
const MAX_LABEL_VALUE: usize = 63;

/// `s` as a Kubernetes label value: characters other than `[A-Za-z0-9._-]` become `-`, leading
/// and trailing non-alphanumerics go, and it is cut to 63 characters. `docker:0123abcd` →
/// `docker-0123abcd`. None when nothing is left.
pub fn label_value(s: &str) -> Option<String> {
    let mapped: String = s
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '-' })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let cut: String = trimmed.chars().take(MAX_LABEL_VALUE).collect();
    let value = cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    (!value.is_empty()).then(|| value.to_owned())
}

/// `metadata.name` of an exported object: `stance-` and the workload name as a DNS subdomain
/// (lower case, `[a-z0-9.-]`), which every exported kind accepts.
pub fn object_name(workload: &str) -> String {
    let mapped: String = workload
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '-') => c,
            _ => '-',
        })
        .collect();
    let body = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if body.is_empty() {
        "stance-workload".to_owned()
    } else {
        format!("stance-{body}")
    }
}

/// The full label set of a workload (put on the exported object, and documented for pods).
pub fn workload_labels(w: &WorkloadInfo) -> Result<BTreeMap<String, String>> {
    let mut labels = selector(w)?;
    labels.insert(KIND.to_owned(), w.kind.as_str().to_owned());
    if let Some(unit) = w.unit.as_deref().and_then(label_value) {
        labels.insert(UNIT.to_owned(), unit);
    }
    if let Some(runtime) = w.runtime.as_deref().and_then(label_value) {
        labels.insert(RUNTIME.to_owned(), runtime);
    }
    Ok(labels)
}

/// The labels an exported policy selects the workload's pods (or node) by.
pub fn selector(w: &WorkloadInfo) -> Result<BTreeMap<String, String>> {
    let value = label_value(&w.name).ok_or_else(|| ExportError::Unlabelable(w.name.clone()))?;
    Ok(BTreeMap::from([(WORKLOAD.to_owned(), value)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_follow_kubernetes_rules() {
        assert_eq!(label_value("web").as_deref(), Some("web"));
        assert_eq!(label_value("docker:0123456789ab").as_deref(), Some("docker-0123456789ab"));
        assert_eq!(label_value("getty@tty1.service").as_deref(), Some("getty-tty1.service"));
        assert_eq!(label_value("_x_").as_deref(), Some("x"));
        assert_eq!(label_value("._-"), None);
        let long = format!("a{}-b", "x".repeat(70));
        let v = label_value(&long).unwrap();
        assert_eq!(v.len(), 63);
        // Cut at 63 must not leave a trailing separator.
        let v = label_value(&format!("{}-zz", "a".repeat(62))).unwrap();
        assert_eq!(v, "a".repeat(62));
    }

    #[test]
    fn object_names_are_dns_subdomains() {
        assert_eq!(object_name("Web_1"), "stance-web-1");
        assert_eq!(object_name("docker:abc"), "stance-docker-abc");
        assert_eq!(object_name("nginx.service"), "stance-nginx.service");
        assert_eq!(object_name("__"), "stance-workload");
    }
}
