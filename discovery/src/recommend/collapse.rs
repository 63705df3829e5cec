//! The behaviour graph → the rules of a policy, with evidence. The graph is loaded into petgraph so
//! each object's rule is built from its incoming edges (who did what to it) in one pass.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::IpAddr,
    str::FromStr,
};

use petgraph::{graph::DiGraph, Direction};

use super::{
    net::{self, Dest},
    paths::{self, Breadth, HostFs, PathUse, UnknownFs},
    rule::{policy_of, rules_of, Rule},
    Evidence, RuleInfo,
};
use crate::{
    enforce::{policy::ExecRule, Policy},
    model::{EdgeKind, NodeKind, WorkloadKind},
    store::{Graph, GraphEdge, GraphNode},
};

/// A policy and, in the policy's order, what justifies each of its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recommendation {
    pub policy: Policy,
    pub rules: Vec<RuleInfo>,
}

impl Recommendation {
    /// Builds the policy from rules with their evidence; rules of one object are merged
    /// (`policy_of`), and a merged rule keeps the evidence of the rules it came from.
    pub(super) fn from_parts(parts: Vec<(Rule, Evidence, Option<Breadth>)>) -> Recommendation {
        let policy = policy_of(parts.iter().map(|(r, _, _)| r.clone()));
        let mut by_object: HashMap<String, (Evidence, Option<Breadth>)> = HashMap::new();
        for (rule, evidence, breadth) in parts {
            let e = by_object.entry(object_key(&rule)).or_insert_with(|| (Evidence::default(), None));
            merge_evidence(&mut e.0, &evidence);
            if breadth.is_some() {
                e.1 = breadth;
            }
        }
        let rules = rules_of(&policy)
            .into_iter()
            .map(|rule| {
                let (evidence, breadth) = by_object.get(&object_key(&rule)).cloned().unwrap_or_default();
                RuleInfo { id: rule.id(), text: rule.text(), rule, evidence, breadth }
            })
            .collect();
        Recommendation { policy, rules }
    }
}

/// What `policy_of` merges on: rules with the same key are one rule of the policy.
fn object_key(rule: &Rule) -> String {
    match rule {
        Rule::Exec(e) => format!("x {} {:?} {:?}", e.path, e.dev, e.ino),
        Rule::File(f) => format!("f {} {} {}", f.path, f.prefix, f.children),
        other => other.text(),
    }
}

pub(super) fn merge_evidence(into: &mut Evidence, from: &Evidence) {
    if into.first_seen.is_empty() || (!from.first_seen.is_empty() && from.first_seen < into.first_seen) {
        into.first_seen.clone_from(&from.first_seen);
    }
    if from.last_seen > into.last_seen {
        into.last_seen.clone_from(&from.last_seen);
    }
    into.hits = into.hits.saturating_add(from.hits);
    into.objects = into.objects.saturating_add(from.objects);
    for e in &from.executables {
        if !into.executables.contains(e) {
            into.executables.push(e.clone());
        }
    }
    into.executables.sort();
    if into.origin.is_empty() || from.origin == "observed" {
        into.origin.clone_from(&from.origin);
    }
}

/// Evidence gathered from edges.
#[derive(Default)]
struct Acc<'g> {
    first: Option<&'g str>,
    last: Option<&'g str>,
    hits: u64,
    executables: BTreeSet<&'g str>,
    objects: BTreeSet<&'g str>,
}

impl<'g> Acc<'g> {
    fn add(&mut self, e: &'g GraphEdge) {
        // RFC 3339 texts of one format and zone compare as the times they are.
        if self.first.is_none_or(|f| e.first_seen.as_str() < f) {
            self.first = Some(&e.first_seen);
        }
        if self.last.is_none_or(|l| e.last_seen.as_str() > l) {
            self.last = Some(&e.last_seen);
        }
        self.hits = self.hits.saturating_add(e.count);
        self.executables.insert(&e.source_label);
        self.objects.insert(&e.target_label);
    }

    fn evidence(&self) -> Evidence {
        Evidence {
            first_seen: self.first.unwrap_or_default().to_owned(),
            last_seen: self.last.unwrap_or_default().to_owned(),
            hits: self.hits,
            executables: self.executables.iter().map(|s| (*s).to_owned()).collect(),
            objects: self.objects.len() as u64,
            processes: None,
            origin: "observed".to_owned(),
        }
    }
}

/// The recommended policy of `graph`. Pure apart from `fs` (directory sizes for breadth): same
/// graph and host, same policy.
pub fn recommend(graph: &Graph, fs: &dyn HostFs) -> Recommendation {
    collapse(graph, fs, true)
}

/// A container's paths are in its own mount namespace: this host's directories say nothing about
/// them, so their sizes are unknown.
fn visible<'a>(fs: &'a dyn HostFs, graph: &Graph) -> &'a dyn HostFs {
    if graph.workload.kind == WorkloadKind::Container {
        &UnknownFs
    } else {
        fs
    }
}

/// `actors_are_executables`: every executable node becomes an exec rule (a real graph: what acted
/// ran). False for a graph made of deny events, whose actors were not denied anything themselves.
pub(super) fn collapse(graph: &Graph, fs: &dyn HostFs, actors_are_executables: bool) -> Recommendation {
    let fs = visible(fs, graph);
    let mut g: DiGraph<&GraphNode, &GraphEdge> = DiGraph::with_capacity(graph.nodes.len(), graph.edges.len());
    let index: HashMap<&str, _> = graph.nodes.iter().map(|n| (n.id.as_str(), g.add_node(n))).collect();
    for e in &graph.edges {
        if let (Some(s), Some(t)) = (index.get(e.source.as_str()), index.get(e.target.as_str())) {
            g.add_edge(*s, *t, e);
        }
    }

    let mut parts: Vec<(Rule, Evidence, Option<Breadth>)> = Vec::new();
    let mut file_uses: Vec<(PathUse<'_>, Vec<&GraphEdge>)> = Vec::new();
    let mut ptrace = Acc::default();
    let mut dests: Vec<(Dest<'_>, &GraphEdge)> = Vec::new();
    let mut unix: BTreeMap<&str, Acc<'_>> = BTreeMap::new();
    let mut caps: BTreeMap<u32, Acc<'_>> = BTreeMap::new();

    for n in g.node_indices() {
        let node = g[n];
        let incoming: Vec<&GraphEdge> =
            g.edges_directed(n, Direction::Incoming).map(|e| *e.weight()).collect();
        match node.kind {
            NodeKind::Executable => {
                if let Some(part) = exec_rule(node, &incoming, &g, &index, actors_are_executables) {
                    parts.push(part);
                }
            }
            NodeKind::File => {
                let mut u =
                    PathUse { path: &node.label, read: false, write: false, create: false, temporary: false };
                let mut used = Vec::new();
                let mut renamed_away = false;
                for e in incoming.iter().filter(|e| e.kind == EdgeKind::Open && e.result == "ok") {
                    let (r, w, c) = open_access(&e.access);
                    if r || w {
                        u.read |= r;
                        u.write |= w;
                        u.create |= c;
                        renamed_away |= e.access.split(',').any(|p| p == "rename-from");
                        used.push(*e);
                    }
                }
                u.temporary = u.create && renamed_away;
                if !used.is_empty() {
                    file_uses.push((u, used));
                }
            }
            NodeKind::Endpoint => {
                for e in incoming.iter().filter(|e| e.kind == EdgeKind::Connect && !refused(&e.result)) {
                    match parse_endpoint(&node.label) {
                        Some(Endpoint::Inet(d)) => dests.push((d, e)),
                        Some(Endpoint::Unix(path)) => unix.entry(path).or_default().add(e),
                        None => {}
                    }
                }
            }
            NodeKind::Capability => {
                for e in incoming.iter().filter(|e| e.kind == EdgeKind::Capable && e.result == "granted") {
                    if let Some(cap) = capability_number(&node.label) {
                        caps.entry(cap).or_default().add(e);
                    }
                }
            }
            // Ptrace of processes of the workload itself: the only kind a policy can allow.
            NodeKind::Workload if node.label == graph.workload.name => {
                for e in incoming.iter().filter(|e| e.kind == EdgeKind::Ptrace && e.result == "ok") {
                    ptrace.add(e);
                }
            }
            NodeKind::Workload => {}
        }
    }
    if ptrace.hits > 0 {
        parts.push((Rule::Ptrace, ptrace.evidence(), None));
    }

    // Files: collapse, then give each observation's evidence to the rules that cover it.
    let uses: Vec<PathUse<'_>> = file_uses.iter().map(|(u, _)| *u).collect();
    let files = paths::collapse(&uses, fs);
    let mut file_acc: Vec<Acc<'_>> = files.rules.iter().map(|_| Acc::default()).collect();
    for (u, edges) in &file_uses {
        for e in edges {
            let (r, w, _) = open_access(&e.access);
            for i in files.covering(u.path, r, w) {
                file_acc[i].add(e);
            }
        }
    }
    for ((rule, breadth), acc) in files.rules.into_iter().zip(file_acc) {
        parts.push((Rule::File(rule), acc.evidence(), breadth));
    }

    // Network: collapse the destinations, then attribute each edge to the rule that holds it.
    let list: Vec<Dest<'_>> = dests.iter().map(|(d, _)| *d).collect();
    let net_rules = net::collapse(&list);
    for (rule, breadth, members) in net_rules {
        let mut acc = Acc::default();
        for i in members {
            acc.add(dests[i].1);
        }
        parts.push((Rule::Net(rule), acc.evidence(), breadth));
    }
    for (path, acc) in unix {
        parts.push((Rule::Unix { path: path.to_owned() }, acc.evidence(), None));
    }
    for (number, acc) in caps {
        parts.push((Rule::Capability { number }, acc.evidence(), None));
    }
    Recommendation::from_parts(parts)
}

/// The exec rule of an executable node, or None for what is not a binary (`[kworker/0:1]`) or
/// was never run (in a graph of deny events: only acted).
fn exec_rule(
    node: &GraphNode,
    incoming: &[&GraphEdge],
    g: &DiGraph<&GraphNode, &GraphEdge>,
    index: &HashMap<&str, petgraph::graph::NodeIndex>,
    actors_are_executables: bool,
) -> Option<(Rule, Evidence, Option<Breadth>)> {
    let memfd = node.memfd == Some(true);
    if !memfd && !node.label.starts_with('/') {
        return None;
    }
    let execs: Vec<&GraphEdge> =
        incoming.iter().copied().filter(|e| e.kind == EdgeKind::Exec && !refused(&e.result)).collect();
    if execs.is_empty() && !actors_are_executables {
        return None;
    }
    // `from` only when every start came from an executable of the workload: a start from outside
    // (the workload node) has no executable to name, so the rule cannot be narrowed.
    let parents: Option<BTreeSet<&str>> = execs
        .iter()
        .map(|e| {
            let parent = g[*index.get(e.source.as_str())?];
            (parent.kind == NodeKind::Executable && parent.label.starts_with('/'))
                .then_some(parent.label.as_str())
        })
        .collect();
    let from = match parents {
        Some(p) if !p.is_empty() => p.into_iter().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    let (dev, ino) = match (node.dev, node.ino) {
        (Some(dev), Some(ino)) if !memfd && ino != 0 => (Some(dev), Some(ino)),
        _ => (None, None),
    };
    let mut acc = Acc::default();
    for e in &execs {
        acc.add(e);
    }
    let mut evidence = acc.evidence();
    if execs.is_empty() {
        // Only seen acting (started before observation began).
        evidence.first_seen.clone_from(&node.first_seen);
        evidence.last_seen.clone_from(&node.last_seen);
        evidence.objects = 1;
    }
    Some((Rule::Exec(ExecRule { path: node.label.clone(), dev, ino, from }), evidence, None))
}

/// A connect the kernel refused for policy reasons was not the workload's normal behaviour.
fn refused(result: &str) -> bool {
    matches!(result, "EPERM" | "EACCES")
}

/// (read, write, create) of an open edge's access text (`read,write,create,truncate`, or `path`;
/// a name change is `write` plus the change, e.g. `write,rename-to`, and counts as that write).
fn open_access(access: &str) -> (bool, bool, bool) {
    let (mut read, mut write, mut create) = (false, false, false);
    for part in access.split(',') {
        match part {
            "read" => read = true,
            "write" | "truncate" => write = true,
            "create" => {
                write = true;
                create = true;
            }
            _ => {}
        }
    }
    (read, write, create)
}

pub(super) enum Endpoint<'a> {
    Inet(Dest<'a>),
    Unix(&'a str),
}

/// `a.b.c.d:port/proto`, `[v6]:port/proto`, `unix:PATH`, `unix:@name`.
pub(super) fn parse_endpoint(label: &str) -> Option<Endpoint<'_>> {
    if let Some(path) = label.strip_prefix("unix:") {
        return (!path.is_empty()).then_some(Endpoint::Unix(path));
    }
    let slash = label.rfind('/')?;
    let (addr_port, protocol) = (&label[..slash], &label[slash + 1..]);
    let colon = addr_port.rfind(':')?;
    let host = addr_port[..colon].trim_start_matches('[').trim_end_matches(']');
    Some(Endpoint::Inet(Dest {
        addr: host.parse::<IpAddr>().ok()?,
        port: addr_port[colon + 1..].parse().ok()?,
        protocol: (!protocol.is_empty()).then_some(protocol),
    }))
}

/// `CAP_NET_RAW` → 13; `CAP_41` → 41.
pub(super) fn capability_number(label: &str) -> Option<u32> {
    match caps::Capability::from_str(label) {
        Ok(cap) => Some(u32::from(cap.index())),
        Err(_) => label.strip_prefix("CAP_")?.parse().ok(),
    }
}

/// An IP host rule (used by tests and proposals that name one address).
#[cfg(test)]
pub(super) fn host(addr: &str, port: u16, protocol: &str) -> crate::enforce::policy::NetRule {
    crate::enforce::policy::NetRule {
        net: ipnet::IpNet::from(addr.parse::<IpAddr>().expect("an address")),
        port_lo: port,
        port_hi: port,
        protocol: Some(protocol.to_owned()),
    }
}

#[cfg(test)]
pub(super) mod tests;
