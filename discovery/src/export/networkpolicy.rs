//! Kubernetes NetworkPolicy (networking.k8s.io/v1): `policyTypes: [Egress]` with one rule per
//! destination prefix (`ipBlock`) and its ports, plus the cluster DNS by namespace and pod
//! selector. With `policyTypes: [Egress]` and no rules, all egress is denied, which is what an
//! empty native network policy means. Ingress is not listed, so it stays as it was.

use serde_json::{json, Map, Value};

use super::{
    egress::{self, L4},
    labels, metadata, ExportFormat, Result,
};
use crate::{enforce::policy::Policy, store::WorkloadInfo};

pub(super) fn render(policy: &Policy, w: &WorkloadInfo) -> Result<Value> {
    let (plan, mut notes) = egress::plan_for_pods(ExportFormat::NetworkPolicy, policy, w)?;
    let mut rules = Vec::new();
    for (net, ports) in plan.destinations() {
        let mut rule = Map::new();
        rule.insert("to".into(), json!([{"ipBlock": {"cidr": net.to_string()}}]));
        if let Some(ports) = ports {
            let mut entries = Vec::new();
            for p in ports {
                if p.proto.is_none() {
                    notes.narrower(format!(
                        "network {net}: 'any protocol' becomes TCP, UDP and SCTP (NetworkPolicy ports name one of those)"
                    ));
                }
                for proto in p.proto.as_ref().map_or(&L4::ALL[..], std::slice::from_ref) {
                    entries.push(port(*proto, p.range));
                }
            }
            rule.insert("ports".into(), Value::Array(entries));
        }
        rules.push(Value::Object(rule));
    }
    if !plan.dns.is_empty() {
        rules.push(json!({
            "to": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
            }],
            "ports": plan.dns.iter().map(|p| port(*p, Some((egress::DNS_PORT, egress::DNS_PORT)))).collect::<Vec<_>>(),
        }));
    }
    Ok(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(w, &notes)?,
        "spec": {
            "podSelector": {"matchLabels": labels::selector(w)?},
            "policyTypes": ["Egress"],
            "egress": rules,
        },
    }))
}

/// A NetworkPolicyPort: no `port` means every port of the protocol.
fn port(proto: L4, range: Option<(u16, u16)>) -> Value {
    let mut v = Map::new();
    v.insert("protocol".into(), json!(proto.as_str()));
    if let Some((lo, hi)) = range {
        v.insert("port".into(), json!(lo));
        if hi > lo {
            v.insert("endPort".into(), json!(hi));
        }
    }
    Value::Object(v)
}
