//! The network half of a policy reduced to what Kubernetes network policies can say: destination
//! prefixes, each with L4 protocols (TCP, UDP, SCTP) and port ranges. Cilium and NetworkPolicy
//! render this same plan, so they agree on what is left out and why.
//!
//! Conventions (also in docs/exports.md):
//! - Loopback destinations are left out: in a pod, loopback traffic never leaves the pod's network
//!   namespace, and neither Cilium nor NetworkPolicy polices it. That admits every loopback port,
//!   so it is noted as wider.
//! - DNS: a rule that admits port 53 over UDP or TCP also admits the cluster's DNS service
//!   (`k8s-app=kube-dns` in `kube-system`), because a pod resolves names there and not at the
//!   resolver the host used. Noted as wider.
//! - Protocols without ports (ICMP, ICMPv6) and protocols Kubernetes cannot name (UDP-Lite, raw
//!   protocol numbers) are left out rather than widened to all traffic to the destination; noted
//!   as narrower. MPTCP is TCP on the wire, so it becomes TCP.

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;

use super::{refuse_host, ExportFormat, Notes, Result};
use crate::{
    enforce::policy::{NetRule, Policy},
    store::WorkloadInfo,
};

/// The L4 protocols Kubernetes network policies name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum L4 {
    Tcp,
    Udp,
    Sctp,
}

impl L4 {
    pub(super) const ALL: [L4; 3] = [L4::Tcp, L4::Udp, L4::Sctp];

    /// The spelling both Cilium and NetworkPolicy use.
    pub(super) const fn as_str(self) -> &'static str {
        match self {
            L4::Tcp => "TCP",
            L4::Udp => "UDP",
            L4::Sctp => "SCTP",
        }
    }
}

/// Port ranges of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Ports {
    /// None: any protocol.
    pub proto: Option<L4>,
    /// Inclusive range, 1..=65535; None: every port.
    pub range: Option<(u16, u16)>,
}

impl Ports {
    /// Admits everything to its destination: no port or protocol condition at all.
    pub(super) fn is_everything(&self) -> bool {
        self.proto.is_none() && self.range.is_none()
    }
}

/// The DNS port, for the DNS convention.
pub(super) const DNS_PORT: u16 = 53;

#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Destination prefix (host bits cleared) → what may be sent there.
    pub targets: BTreeMap<IpNet, BTreeSet<Ports>>,
    /// Protocols on which the cluster DNS service is admitted (empty: no DNS rule).
    pub dns: BTreeSet<L4>,
}

impl Plan {
    /// Each destination with what may be sent there; None where the native policy admits every
    /// port and protocol, which a rule without port conditions says (and only then may say).
    pub(super) fn destinations(&self) -> impl Iterator<Item = (&IpNet, Option<&BTreeSet<Ports>>)> {
        self.targets
            .iter()
            .map(|(net, ports)| (net, (!ports.iter().any(Ports::is_everything)).then_some(ports)))
    }
}

/// The plan of a pod-selecting network policy, with its notes; the host cannot be selected.
pub(super) fn plan_for_pods(
    format: ExportFormat,
    policy: &Policy,
    w: &WorkloadInfo,
) -> Result<(Plan, Notes)> {
    refuse_host(format, w)?;
    let mut notes = Notes::default();
    let plan = plan(policy, &mut notes);
    Ok((plan, notes))
}

/// Builds the plan of `policy`'s network rules, noting in `notes` what it changes.
fn plan(policy: &Policy, notes: &mut Notes) -> Plan {
    let mut plan = Plan::default();
    for rule in &policy.network {
        let proto = match rule.protocol.as_deref() {
            None | Some("" | "any") => None,
            Some("tcp" | "mptcp") => Some(L4::Tcp),
            Some("udp") => Some(L4::Udp),
            Some("sctp") => Some(L4::Sctp),
            Some(other) => {
                notes.narrower(format!(
                    "network {}: protocol {other} has no ports to match (only TCP, UDP and SCTP)",
                    describe(rule)
                ));
                continue;
            }
        };
        if is_loopback(&rule.net) {
            notes.wider(format!(
                "network {}: loopback is not policed (it stays in the pod), so every loopback port is open",
                describe(rule)
            ));
            continue;
        }
        let (lo, hi) = (rule.port_lo.min(rule.port_hi), rule.port_lo.max(rule.port_hi));
        let range = match (lo, hi) {
            (0, u16::MAX) => None,
            (_, 0) => {
                notes.narrower(format!("network {}: port 0 cannot be matched", describe(rule)));
                continue;
            }
            (lo, hi) => Some((lo.max(1), hi)),
        };
        if range.is_none_or(|(lo, hi)| (lo..=hi).contains(&DNS_PORT)) {
            match proto {
                None => plan.dns.extend([L4::Udp, L4::Tcp]),
                Some(p @ (L4::Udp | L4::Tcp)) => {
                    plan.dns.insert(p);
                }
                Some(L4::Sctp) => {}
            }
        }
        plan.targets.entry(rule.net.trunc()).or_default().insert(Ports { proto, range });
    }
    if !plan.dns.is_empty() {
        let protos: Vec<_> = plan.dns.iter().map(|p| p.as_str().to_ascii_lowercase()).collect();
        notes.wider(format!(
            "network: the cluster DNS service (kube-system, k8s-app=kube-dns) on port 53/{}, where a pod resolves names",
            protos.join(",")
        ));
    }
    plan
}

/// Entirely inside 127.0.0.0/8 or ::1 (also in its IPv4-mapped form).
fn is_loopback(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.prefix_len() >= 8 && n.network().is_loopback(),
        IpNet::V6(n) => match n.network().to_ipv4_mapped() {
            Some(v4) => n.prefix_len() >= 104 && v4.is_loopback(),
            None => n.prefix_len() == 128 && n.network().is_loopback(),
        },
    }
}

/// `10.0.0.2/32 port 53/udp`, as notes name a native rule.
pub(super) fn describe(rule: &NetRule) -> String {
    let ports = if rule.port_lo == rule.port_hi {
        format!("port {}", rule.port_lo)
    } else {
        format!("ports {}-{}", rule.port_lo, rule.port_hi)
    };
    format!("{} {ports}/{}", rule.net, rule.protocol.as_deref().unwrap_or("any"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(net: &str, lo: u16, hi: u16, proto: Option<&str>) -> NetRule {
        NetRule { net: net.parse().unwrap(), port_lo: lo, port_hi: hi, protocol: proto.map(str::to_owned) }
    }

    #[test]
    fn plan_keeps_what_kubernetes_can_say_and_notes_the_rest() {
        let policy = Policy {
            network: vec![
                rule("10.1.2.3/32", 5432, 5432, Some("tcp")),
                rule("10.1.2.3/32", 8000, 8100, Some("mptcp")),
                rule("127.0.0.1/32", 6379, 6379, Some("tcp")),
                rule("::1/128", 6379, 6379, Some("tcp")),
                rule("192.0.2.7/24", 0, 65535, None),
                rule("203.0.113.9/32", 0, 0, Some("icmp")),
                rule("198.51.100.1/32", 53, 53, Some("udp")),
            ],
            ..Policy::default()
        };
        let mut notes = Notes::default();
        let plan = plan(&policy, &mut notes);
        let t: Vec<_> = plan
            .targets
            .iter()
            .map(|(n, p)| (n.to_string(), p.iter().copied().collect::<Vec<_>>()))
            .collect();
        assert_eq!(
            t,
            vec![
                (
                    "10.1.2.3/32".to_owned(),
                    vec![
                        Ports { proto: Some(L4::Tcp), range: Some((5432, 5432)) },
                        Ports { proto: Some(L4::Tcp), range: Some((8000, 8100)) }
                    ]
                ),
                ("192.0.2.0/24".to_owned(), vec![Ports { proto: None, range: None }]),
                ("198.51.100.1/32".to_owned(), vec![Ports { proto: Some(L4::Udp), range: Some((53, 53)) }]),
            ]
        );
        // The any-protocol all-ports rule and the UDP 53 rule both admit DNS.
        assert_eq!(plan.dns, BTreeSet::from([L4::Tcp, L4::Udp]));
        assert_eq!(notes.narrower.len(), 1, "{:?}", notes.narrower);
        assert!(notes.narrower.iter().next().unwrap().contains("203.0.113.9/32 port 0/icmp"));
        assert_eq!(notes.wider.iter().filter(|n| n.contains("loopback")).count(), 2);
        assert!(notes.wider.iter().any(|n| n.contains("kube-dns") && n.contains("53/tcp,udp")));
    }

    #[test]
    fn loopback_is_only_what_lies_inside_it() {
        assert!(is_loopback(&"127.0.0.53/32".parse().unwrap()));
        assert!(is_loopback(&"::ffff:127.0.0.1/128".parse().unwrap()));
        assert!(!is_loopback(&"0.0.0.0/0".parse().unwrap()));
        assert!(!is_loopback(&"::/0".parse().unwrap()));
        assert!(!is_loopback(&"10.0.0.1/32".parse().unwrap()));
    }
}
