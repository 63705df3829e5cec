//! Versions, proposals and acceptance: the recommender's state in the store.
//!
//! - `review` recommends from the graph as it is now, adds the rules adopted earlier, and writes a
//!   new version when the result differs from the latest one (behaviour changed). It also turns
//!   deny / would-deny events into proposed additions: the rules that would have allowed them and
//!   that the latest version does not have. Proposals are never applied on their own.
//! - `accept` adopts one proposal into a new version; every later recommendation keeps it.
//! - `latest_or_new` is what `stance mode` loads: the latest version, made if there is none.

use serde::Serialize;

use super::{
    collapse::{collapse, parse_endpoint, Endpoint, Recommendation},
    paths::HostFs,
    readiness::{self, Readiness},
    recommend,
    rule::{policy_of, rules_of, Rule},
    unix_ns, Evidence, RecommendError, Result, RuleInfo,
};
use crate::{
    config::ReadinessConfig,
    enforce::{verdict::PTRACE_SAME_WORKLOAD, Domain, Policy},
    model::{EdgeKind, NodeKind},
    store::{
        EnforcementEvent, EventFilter, Graph, GraphEdge, GraphNode, NewVersion, PolicyVersion, Store,
        StoreError, WorkloadInfo, ORIGIN_ACCEPT, ORIGIN_RECOMMEND,
    },
};

/// What `stance policy WORKLOAD` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    pub workload: String,
    /// Who the workload is: what exports select it by.
    #[serde(skip)]
    pub info: WorkloadInfo,
    /// The latest version (new when `created`).
    pub version: u32,
    /// `recommend` or `accept`.
    pub origin: String,
    /// RFC 3339.
    pub created_at: String,
    /// This review wrote the version: behaviour changed since the previous one.
    pub created: bool,
    pub policy: Policy,
    /// Evidence per rule of `policy`, in its order.
    pub rules: Vec<RuleInfo>,
    /// Rules that deny / would-deny events ask for, not in the policy; `stance policy accept`.
    pub proposed: Vec<RuleInfo>,
    pub readiness: Readiness,
}

/// Recommends for `workload` now, writes a new version if it differs from the latest, and returns
/// the latest with its proposals and readiness.
pub async fn review(
    store: &Store,
    workload: &str,
    fs: &dyn HostFs,
    readiness_cfg: &ReadinessConfig,
) -> Result<Review> {
    let graph = store.graph(workload).await?;
    let current = current(store, &graph, fs).await?;
    let latest = store.policy_version(workload, None).await?;
    // Once a domain is in audit or enforce, what the workload does beyond its policy comes back as
    // would-deny / deny events, offered below as proposals for `stance policy accept`. Folding that
    // behaviour into a new version here would adopt it silently (`stance mode` loads the latest
    // version), so versions are only recommended from behaviour while the workload is observed.
    let frozen = !store.workload_enforcement(workload).await?.modes.is_observe_only();
    let (version, created) = match latest {
        Some(v) if v.policy == current.policy || frozen => (v, false),
        _ => {
            let number = write_recommended(store, workload, &current).await?;
            (stored(store, workload, number).await?, true)
        }
    };
    let proposed = proposals(store, &graph, &version.policy, fs).await?;
    let readiness = assess(store, &graph, &current, readiness_cfg).await?;
    // Frozen with new behaviour, the version shown is not the recommendation of now: its own rules,
    // with their evidence as observed now where the recommendation still has the rule, else as the
    // version stored it.
    let rules = if version.policy == current.policy {
        current.rules
    } else {
        let stored: Vec<RuleInfo> = serde_json::from_value(version.evidence.clone())
            .map_err(|source| RecommendError::RuleJson { workload: workload.to_owned(), source })?;
        rules_of(&version.policy).iter().map(|rule| info_of(rule, &current.rules, &stored)).collect()
    };
    Ok(Review {
        info: graph.workload.clone(),
        workload: workload.to_owned(),
        version: version.version,
        origin: version.origin,
        created_at: version.created_at,
        created,
        policy: version.policy,
        rules,
        proposed,
        readiness,
    })
}

/// A rule's evidence from the first of two lists that has it, else none.
fn info_of(rule: &Rule, infos: &[RuleInfo], others: &[RuleInfo]) -> RuleInfo {
    let id = rule.id();
    infos.iter().chain(others).find(|i| i.id == id).cloned().unwrap_or_else(|| RuleInfo {
        id,
        text: rule.text(),
        rule: rule.clone(),
        evidence: Evidence::default(),
        breadth: None,
    })
}

/// The readiness of a workload's graph as it is now.
pub async fn readiness_of(
    store: &Store,
    graph: &Graph,
    fs: &dyn HostFs,
    cfg: &ReadinessConfig,
) -> Result<Readiness> {
    let current = recommend(graph, fs);
    assess(store, graph, &current, cfg).await
}

async fn assess(
    store: &Store,
    graph: &Graph,
    current: &Recommendation,
    cfg: &ReadinessConfig,
) -> Result<Readiness> {
    let rules: Vec<(Domain, i64)> = current
        .rules
        .iter()
        .filter(|r| !r.evidence.first_seen.is_empty())
        .map(|r| (r.rule.domain(), unix_ns(&r.evidence.first_seen)))
        .collect();
    let mut losses: Vec<(i64, u64)> =
        graph.losses.by_minute.iter().map(|b| (unix_ns(&b.minute), b.count)).collect();
    losses.extend(
        store
            .unattributed_loss_minutes()
            .await?
            .into_iter()
            .map(|(s, n)| (s.saturating_mul(1_000_000_000), n)),
    );
    Ok(readiness::assess(
        &rules,
        &losses,
        unix_ns(&graph.workload.first_seen),
        unix_ns(&graph.workload.last_seen),
        cfg,
    ))
}

/// The graph's recommendation plus every adopted rule.
async fn current(store: &Store, graph: &Graph, fs: &dyn HostFs) -> Result<Recommendation, StoreError> {
    let rec = recommend(graph, fs);
    let accepted = store.accepted_rules(&graph.workload.name).await?;
    if accepted.is_empty() {
        return Ok(rec);
    }
    let mut parts: Vec<_> = rec.rules.into_iter().map(|r| (r.rule, r.evidence, r.breadth)).collect();
    for a in accepted {
        let rule: Rule = serde_json::from_value(a.rule)
            .map_err(|source| StoreError::PolicyJson { workload: graph.workload.name.clone(), source })?;
        let evidence = Evidence { origin: "accepted".into(), ..Evidence::default() };
        parts.push((rule, evidence, None));
    }
    Ok(Recommendation::from_parts(parts))
}

async fn stored(store: &Store, workload: &str, version: u32) -> Result<PolicyVersion> {
    store
        .policy_version(workload, Some(version))
        .await?
        .ok_or_else(|| RecommendError::NoVersion { workload: workload.to_owned(), version })
}

/// The latest version's number and policy, writing the first one if there is none: what
/// `stance mode` loads.
pub async fn latest_or_new(
    store: &Store,
    workload: &str,
    fs: &dyn HostFs,
) -> Result<(u32, Policy), StoreError> {
    if let Some(v) = store.policy_version(workload, None).await? {
        return Ok((v.version, v.policy));
    }
    let graph = store.graph(workload).await?;
    let rec = current(store, &graph, fs).await?;
    let version = write_recommended(store, workload, &rec).await?;
    Ok((version, rec.policy))
}

/// Stores a recommendation as the workload's next version.
async fn write_recommended(store: &Store, workload: &str, rec: &Recommendation) -> Result<u32, StoreError> {
    let evidence = serde_json::to_value(&rec.rules).expect("rule infos serialise");
    store
        .add_policy_version(
            workload,
            NewVersion { origin: ORIGIN_RECOMMEND, policy: &rec.policy, evidence: &evidence, accepted: None },
        )
        .await
}

/// Adopts the proposed addition `id` into a new version; returns the version and the rule.
pub async fn accept(store: &Store, workload: &str, id: &str, fs: &dyn HostFs) -> Result<(u32, RuleInfo)> {
    let (number, latest) = latest_or_new(store, workload, fs).await?;
    let graph = store.graph(workload).await?;
    let proposal =
        proposals(store, &graph, &latest, fs).await?.into_iter().find(|p| p.id == id).ok_or_else(|| {
            RecommendError::UnknownProposal { workload: workload.to_owned(), id: id.to_owned() }
        })?;
    let mut rules = rules_of(&latest);
    rules.push(proposal.rule.clone());
    let policy = policy_of(rules);
    // The new version's evidence: the latest's, and the proposal's for the adopted rule.
    let mut infos: Vec<RuleInfo> = serde_json::from_value(stored(store, workload, number).await?.evidence)
        .map_err(|source| RecommendError::RuleJson { workload: workload.to_owned(), source })?;
    infos.push(RuleInfo {
        evidence: Evidence { origin: "accepted".into(), ..proposal.evidence.clone() },
        ..proposal.clone()
    });
    let evidence = serde_json::to_value(&infos).expect("rule infos serialise");
    let rule_json = serde_json::to_value(&proposal.rule).expect("rules serialise");
    let version = store
        .add_policy_version(
            workload,
            NewVersion {
                origin: ORIGIN_ACCEPT,
                policy: &policy,
                evidence: &evidence,
                accepted: Some((id, &rule_json)),
            },
        )
        .await?;
    Ok((version, proposal))
}

/// Deny / would-deny events → the rules that would allow them and that `latest` does not have.
async fn proposals(store: &Store, graph: &Graph, latest: &Policy, fs: &dyn HostFs) -> Result<Vec<RuleInfo>> {
    let events = store
        .events(&EventFilter {
            workload: Some(graph.workload.name.clone()),
            kind: None,
            since: None,
            limit: u32::MAX,
        })
        .await?;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let have: std::collections::HashSet<String> = rules_of(latest).iter().map(Rule::id).collect();
    let mut asked = events_graph(&events, graph);
    // Events the latest version already allows (they came from an older one) ask for nothing.
    if let Ok((_, denied)) = super::replay::replay(latest, &asked, None, None) {
        let denied: std::collections::HashSet<(&str, &str, &str)> =
            denied.iter().map(|d| (d.object.as_str(), d.actor.as_str(), d.access.as_str())).collect();
        let keep: Vec<bool> = asked
            .edges
            .iter()
            .map(|e| denied.contains(&(e.target_label.as_str(), e.source_label.as_str(), e.access.as_str())))
            .collect();
        let mut keep = keep.into_iter();
        asked.edges.retain(|_| keep.next().unwrap_or(false));
    }
    let denied = collapse(&asked, fs, false);
    Ok(denied
        .rules
        .into_iter()
        .filter(|r| !have.contains(&r.id))
        .map(|mut r| {
            r.evidence.origin = "proposed".into();
            r
        })
        .collect())
}

/// A graph of what the events asked for, so proposals are collapsed like observations. A file
/// event carries no access mode: the graph's edges to that path say which access was attempted
/// (a denied open is still observed, with EPERM); read when it has none.
fn events_graph(events: &[EnforcementEvent], observed: &Graph) -> Graph {
    use std::collections::HashMap;
    let mut access: HashMap<&str, (bool, bool)> = HashMap::new();
    for e in observed.edges.iter().filter(|e| e.kind == EdgeKind::Open) {
        let a = access.entry(e.target_label.as_str()).or_default();
        a.0 |= e.access.split(',').any(|p| p == "read");
        a.1 |= e.access.split(',').any(|p| matches!(p, "write" | "create" | "truncate"));
    }
    let binaries: HashMap<&str, &GraphNode> = observed
        .nodes
        .iter()
        .filter(|n| n.kind == NodeKind::Executable)
        .map(|n| (n.label.as_str(), n))
        .collect();

    let mut nodes: Vec<GraphNode> = Vec::new();
    let mut ids: HashMap<(NodeKind, String), String> = HashMap::new();
    let mut node = |kind: NodeKind, label: &str, nodes: &mut Vec<GraphNode>| -> String {
        ids.entry((kind, label.to_owned()))
            .or_insert_with(|| {
                let id = format!("d{}", nodes.len());
                let known = binaries.get(label).filter(|_| kind == NodeKind::Executable);
                nodes.push(GraphNode {
                    id: id.clone(),
                    kind,
                    label: label.to_owned(),
                    dev: known.and_then(|n| n.dev),
                    ino: known.and_then(|n| n.ino),
                    memfd: known.and_then(|n| n.memfd),
                    argv: None,
                    first_seen: String::new(),
                    last_seen: String::new(),
                });
                id
            })
            .clone()
    };
    let mut edges: Vec<GraphEdge> = Vec::new();
    for ev in events.iter().filter(|e| !e.truncated) {
        let (kind, target_kind, access, result) = match ev.domain {
            // A ptrace of a process of the workload asks for `ptrace same-workload`: an edge to
            // the workload itself, as observation records it. Of another workload's, nothing can
            // be asked (no policy allows it).
            Domain::Process if ev.object.starts_with(PTRACE_SAME_WORKLOAD) => {
                (EdgeKind::Ptrace, NodeKind::Workload, "read".to_owned(), "ok")
            }
            Domain::Process if ev.object.starts_with("ptrace ") => continue,
            Domain::Process => (EdgeKind::Exec, NodeKind::Executable, String::new(), "ok"),
            Domain::File => {
                let (r, w) = access.get(ev.object.as_str()).copied().unwrap_or((true, false));
                let text = match (r, w) {
                    (true, true) => "read,write",
                    (false, true) => "write",
                    _ => "read",
                };
                (EdgeKind::Open, NodeKind::File, text.to_owned(), "ok")
            }
            Domain::Network => {
                let proto = match parse_endpoint(&ev.object) {
                    Some(Endpoint::Inet(d)) => d.protocol.unwrap_or("").to_owned(),
                    _ => "unix".to_owned(),
                };
                (EdgeKind::Connect, NodeKind::Endpoint, proto, "ok")
            }
            Domain::Capabilities => (EdgeKind::Capable, NodeKind::Capability, String::new(), "granted"),
        };
        let object = if kind == EdgeKind::Ptrace { &observed.workload.name } else { &ev.object };
        let source = node(NodeKind::Executable, &ev.actor, &mut nodes);
        let target = node(target_kind, object, &mut nodes);
        edges.push(GraphEdge {
            id: format!("v{}", edges.len()),
            kind,
            source,
            target,
            source_label: ev.actor.clone(),
            target_label: object.clone(),
            actor: ev.actor.clone(),
            access,
            result: result.to_owned(),
            count: 1,
            first_seen: ev.at.clone(),
            last_seen: ev.at.clone(),
        });
    }
    Graph { workload: observed.workload.clone(), nodes, edges, losses: Default::default() }
}

/// `stance policy diff`: rules added and removed between two versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub workload: String,
    /// 0 = the empty policy (diffing the first version).
    pub from: u32,
    pub to: u32,
    pub added: Vec<RuleInfo>,
    pub removed: Vec<RuleInfo>,
}

/// The difference between versions `from` and `to` (default: the latest and the one before it).
pub async fn diff(store: &Store, workload: &str, versions: Option<(u32, u32)>) -> Result<Diff> {
    let (from, to) = match versions {
        Some(pair) => pair,
        None => {
            let numbers = store.policy_version_numbers(workload).await?;
            let Some(&to) = numbers.last() else {
                return Err(RecommendError::NoVersion { workload: workload.to_owned(), version: 1 });
            };
            (numbers.len().checked_sub(2).map_or(0, |i| numbers[i]), to)
        }
    };
    let load = |v: u32| async move {
        if v == 0 {
            return Ok((Policy::default(), Vec::new()));
        }
        let stored = stored(store, workload, v).await?;
        let infos: Vec<RuleInfo> = serde_json::from_value(stored.evidence)
            .map_err(|source| RecommendError::RuleJson { workload: workload.to_owned(), source })?;
        Ok::<_, RecommendError>((stored.policy, infos))
    };
    let (old, old_infos) = load(from).await?;
    let (new, new_infos) = load(to).await?;
    let old_rules = rules_of(&old);
    let new_rules = rules_of(&new);
    let added = new_rules
        .iter()
        .filter(|r| !old_rules.contains(r))
        .map(|r| info_of(r, &new_infos, &old_infos))
        .collect();
    let removed = old_rules
        .iter()
        .filter(|r| !new_rules.contains(r))
        .map(|r| info_of(r, &old_infos, &new_infos))
        .collect();
    Ok(Diff { workload: workload.to_owned(), from, to, added, removed })
}

#[cfg(test)]
mod tests;
