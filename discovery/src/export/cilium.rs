//! CiliumNetworkPolicy (cilium.io/v2): the workload's egress as `toCIDR` rules with `toPorts`, the
//! cluster DNS as a `toEndpoints` rule, and egress default-deny switched on explicitly so that a
//! policy with no destinations still denies (Cilium turns default-deny on only for a direction that
//! has rules). Ingress is left alone: Stance observes what a workload initiates, not what it
//! accepts.

use serde_json::{json, Map, Value};

use super::{
    egress::{self, Ports, L4},
    labels, metadata, ExportFormat, Result,
};
use crate::{enforce::policy::Policy, store::WorkloadInfo};

/// Cilium's limit on ports in one `toPorts` entry.
const MAX_PORTS_PER_RULE: usize = 40;

pub(super) fn render(policy: &Policy, w: &WorkloadInfo) -> Result<Value> {
    let (plan, notes) = egress::plan_for_pods(ExportFormat::Cilium, policy, w)?;
    let mut rules = Vec::new();
    for (net, ports) in plan.destinations() {
        let mut rule = Map::new();
        rule.insert("toCIDR".into(), json!([net.to_string()]));
        if let Some(ports) = ports {
            rule.insert("toPorts".into(), to_ports(ports.iter().map(port_protocol)));
        }
        rules.push(Value::Object(rule));
    }
    if !plan.dns.is_empty() {
        rules.push(json!({
            "toEndpoints": [{"matchLabels": {
                "k8s:io.kubernetes.pod.namespace": "kube-system",
                "k8s:k8s-app": "kube-dns",
            }}],
            "toPorts": to_ports(plan.dns.iter().map(|p| json!({"port": egress::DNS_PORT.to_string(), "protocol": p.as_str()}))),
        }));
    }
    Ok(json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": metadata(w, &notes)?,
        "spec": {
            "endpointSelector": {"matchLabels": labels::selector(w)?},
            "enableDefaultDeny": {"egress": true, "ingress": false},
            "egress": rules,
        },
    }))
}

/// One `ports` entry: Cilium takes the port as a string and the range's end as `endPort`. Every
/// port of a protocol is 1–65535 (port 0 cannot be connected to).
fn port_protocol(p: &Ports) -> Value {
    let (lo, hi) = p.range.unwrap_or((1, u16::MAX));
    let mut v = Map::new();
    v.insert("port".into(), json!(lo.to_string()));
    if hi > lo {
        v.insert("endPort".into(), json!(hi));
    }
    v.insert("protocol".into(), json!(p.proto.map_or("ANY", L4::as_str)));
    Value::Object(v)
}

/// `toPorts` entries of at most 40 ports each (the entries are alternatives, so splitting keeps
/// the meaning).
fn to_ports(ports: impl Iterator<Item = Value>) -> Value {
    let ports: Vec<Value> = ports.collect();
    Value::Array(ports.chunks(MAX_PORTS_PER_RULE).map(|c| json!({"ports": c})).collect())
}
