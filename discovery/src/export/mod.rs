//! Exports: Stance's native policy rendered as the policies of other enforcers, so a workload
//! learned here can be protected where Stance does not run (a Kubernetes cluster with KubeArmor,
//! Cilium or any NetworkPolicy implementation).
//!
//! The last step of the flow: `store` → `enforce::compile` / recommender → [`Policy`] → here. Each
//! format is a pure function of the policy and the workload's identity, returning a JSON value the
//! CLI prints as JSON or, through [`to_yaml`], as YAML.
//!
//! No format can say everything the native policy says. Where a rule cannot be expressed exactly,
//! the export either takes the closest rule that admits a little more (write-only → read+write) or
//! leaves the rule out when the closest rule would admit far more (ICMP to one host → all traffic
//! to it). Both are written into the object's annotations ([`ANNOTATION_WIDER`],
//! [`ANNOTATION_NARROWER`]), so nothing is widened or narrowed silently. `docs/exports.md` has the
//! mapping tables and the label conventions of [`labels`].

mod cilium;
mod egress;
mod kubearmor;
pub mod labels;
mod networkpolicy;

use std::{collections::BTreeSet, fmt, str::FromStr};

use serde_json::{json, Map, Value};

use crate::{enforce::policy::Policy, model::WorkloadKind, store::WorkloadInfo};

/// Annotation listing what the export admits that the native policy does not, one item a line.
pub const ANNOTATION_WIDER: &str = "stance.dev/wider-than-native";
/// Annotation listing native rules the export leaves out (the workload may be denied them).
pub const ANNOTATION_NARROWER: &str = "stance.dev/narrower-than-native";

/// The formats `stance policy WORKLOAD --format F` can produce besides `native`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExportFormat {
    /// KubeArmorPolicy (security.kubearmor.com/v1) selecting the workload's pods by label.
    Kubearmor,
    /// KubeArmorHostPolicy for the host workload, selecting nodes by label.
    KubearmorHost,
    /// CiliumNetworkPolicy (cilium.io/v2) egress rules.
    Cilium,
    /// Kubernetes networking.k8s.io/v1 NetworkPolicy egress rules.
    NetworkPolicy,
}

impl ExportFormat {
    pub const ALL: [ExportFormat; 4] = [
        ExportFormat::Kubearmor,
        ExportFormat::KubearmorHost,
        ExportFormat::Cilium,
        ExportFormat::NetworkPolicy,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ExportFormat::Kubearmor => "kubearmor",
            ExportFormat::KubearmorHost => "kubearmor-host",
            ExportFormat::Cilium => "cilium",
            ExportFormat::NetworkPolicy => "networkpolicy",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExportFormat {
    type Err = ExportError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExportFormat::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| ExportError::UnknownFormat(s.to_owned()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("unknown export format '{0}' (expected kubearmor, kubearmor-host, cilium or networkpolicy)")]
    UnknownFormat(String),
    /// The format has no way to select this kind of workload.
    #[error("{format} cannot select workload '{workload}' (a {kind} workload): {hint}")]
    Unsupported { format: ExportFormat, workload: String, kind: &'static str, hint: &'static str },
    /// Nothing of the name survives the Kubernetes label-value rules.
    #[error("workload name '{0}' has no character usable in a Kubernetes label value")]
    Unlabelable(String),
    /// KubeArmorHostPolicy requires fromSource on network and capability rules.
    #[error("kubearmor-host: network and capability rules need fromSource, and the policy of '{0}' has no executable with a path")]
    NoSource(String),
    #[error("cannot write YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
}

pub type Result<T, E = ExportError> = std::result::Result<T, E>;

/// Renders `policy`, the policy of `workload`, in `format`.
pub fn render(format: ExportFormat, policy: &Policy, workload: &WorkloadInfo) -> Result<Value> {
    match format {
        ExportFormat::Kubearmor => kubearmor::render(policy, workload, kubearmor::Target::Pods),
        ExportFormat::KubearmorHost => kubearmor::render(policy, workload, kubearmor::Target::Node),
        ExportFormat::Cilium => cilium::render(policy, workload),
        ExportFormat::NetworkPolicy => networkpolicy::render(policy, workload),
    }
}

/// The value as one YAML document (what `kubectl apply -f` takes).
pub fn to_yaml(v: &Value) -> Result<String> {
    Ok(yaml_serde::to_string(v)?)
}

/// Where an export departs from the native policy. Kept as sets so repeated causes read once.
#[derive(Debug, Default)]
struct Notes {
    wider: BTreeSet<String>,
    narrower: BTreeSet<String>,
}

impl Notes {
    fn wider(&mut self, s: impl Into<String>) {
        self.wider.insert(s.into());
    }

    fn narrower(&mut self, s: impl Into<String>) {
        self.narrower.insert(s.into());
    }
}

/// Refuses a workload kind a format cannot select.
fn unsupported(format: ExportFormat, w: &WorkloadInfo, hint: &'static str) -> ExportError {
    ExportError::Unsupported { format, workload: w.name.clone(), kind: w.kind.as_str(), hint }
}

/// Pods and containers are selected by label; the host is the node itself, which only node-level
/// policies can select.
fn refuse_host(format: ExportFormat, w: &WorkloadInfo) -> Result<()> {
    if w.kind == WorkloadKind::Host {
        return Err(unsupported(
            format,
            w,
            "the host is a node, not a pod (use kubearmor-host for its process, file and capability rules)",
        ));
    }
    Ok(())
}

/// `metadata` of every exported object: a name derived from the workload, the label set, and
/// the annotations that keep what labels cannot (the exact name, identifiers, the notes).
fn metadata(w: &WorkloadInfo, notes: &Notes) -> Result<Value> {
    let mut labels = Map::new();
    labels.insert("app.kubernetes.io/managed-by".into(), json!("stance"));
    for (k, v) in labels::workload_labels(w)? {
        labels.insert(k, Value::String(v));
    }
    let mut annotations = Map::new();
    annotations.insert(labels::WORKLOAD.into(), json!(w.name));
    if let Some(id) = &w.container_id {
        annotations.insert(labels::CONTAINER_ID.into(), json!(id));
    }
    if let Some(uid) = &w.pod_uid {
        annotations.insert(labels::POD_UID.into(), json!(uid));
    }
    for (key, set) in [(ANNOTATION_WIDER, &notes.wider), (ANNOTATION_NARROWER, &notes.narrower)] {
        if !set.is_empty() {
            annotations.insert(key.into(), json!(set.iter().cloned().collect::<Vec<_>>().join("\n")));
        }
    }
    Ok(json!({
        "name": labels::object_name(&w.name),
        "labels": labels,
        "annotations": annotations,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in ExportFormat::ALL {
            assert_eq!(f.to_string().parse::<ExportFormat>().unwrap(), f);
        }
        let e = "kubearmorhost".parse::<ExportFormat>().unwrap_err();
        assert!(e.to_string().contains("unknown export format 'kubearmorhost'"), "{e}");
    }
}
