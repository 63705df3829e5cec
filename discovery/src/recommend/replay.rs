//! Replay (shadow evaluation): a policy version against stored behaviour, with the kernel
//! enforcer's semantics (`enforce::matcher::Matcher`, held to the kernel's answers by VM scenario
//! 38). Lists what the version would deny.
//!
//! The behaviour replayed is what the recommender learns from: successful opens with their access,
//! execs, connects and sends (not those refused for policy reasons), granted capability checks,
//! successful ptrace access checks.
//! An edge aggregates every observation of one action, so an edge is replayed once and its hit
//! count says how often the action happened; `--since`/`--until` keep the edges whose span of
//! observations overlaps the interval.

use serde::Serialize;

use super::{
    collapse::{capability_number, parse_endpoint, Endpoint},
    RecommendError, Result,
};
use crate::{
    enforce::{matcher::Matcher, Domain, Policy},
    model::{EdgeKind, NodeKind},
    store::{Graph, Store},
};

/// One action the version would deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    pub domain: Domain,
    /// Path, binary, endpoint label or capability name.
    pub object: String,
    /// The edge's access (`read,write`, `tcp`, ...).
    pub access: String,
    /// The executable that acted.
    pub actor: String,
    /// Observations of the action.
    pub hits: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// `stance policy check`: what a version would deny.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub workload: String,
    pub version: u32,
    /// Edges replayed (after the time filter).
    pub checked: u64,
    pub denied: Vec<Denial>,
}

/// Replays `workload`'s stored behaviour against `version` (default: the latest). `since`/`until`
/// are unix ns.
pub async fn check(
    store: &Store,
    workload: &str,
    version: Option<u32>,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<Check> {
    let stored = store.policy_version(workload, version).await?.ok_or_else(|| RecommendError::NoVersion {
        workload: workload.to_owned(),
        version: version.unwrap_or(1),
    })?;
    let graph = store.graph(workload).await?;
    let (checked, denied) = replay(&stored.policy, &graph, since, until).map_err(|source| {
        RecommendError::Unevaluable { workload: workload.to_owned(), version: stored.version, source }
    })?;
    Ok(Check { workload: workload.to_owned(), version: stored.version, checked, denied })
}

/// (edges replayed, what `policy` denies of them).
pub fn replay(
    policy: &Policy,
    graph: &Graph,
    since: Option<i64>,
    until: Option<i64>,
) -> Result<(u64, Vec<Denial>), crate::enforce::rules::RuleError> {
    let m = Matcher::new(policy)?;
    let nodes: std::collections::HashMap<&str, &crate::store::GraphNode> =
        graph.nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut checked = 0;
    let mut denied = Vec::new();
    for e in &graph.edges {
        if since.is_some_and(|s| super::unix_ns(&e.last_seen) < s)
            || until.is_some_and(|u| super::unix_ns(&e.first_seen) > u)
        {
            continue;
        }
        let verdict = match e.kind {
            EdgeKind::Open if e.result == "ok" => {
                let read = e.access.split(',').any(|a| a == "read");
                let write = e.access.split(',').any(|a| matches!(a, "write" | "create" | "truncate"));
                (read || write).then(|| (Domain::File, m.file(&e.target_label, read, write)))
            }
            EdgeKind::Exec if !matches!(e.result.as_str(), "EPERM" | "EACCES") => {
                let target = nodes.get(e.target.as_str());
                let source = nodes
                    .get(e.source.as_str())
                    .filter(|n| n.kind == NodeKind::Executable && n.label.starts_with('/'))
                    .map(|n| n.label.as_str());
                let (dev, ino) = target.map_or((None, None), |n| (n.dev, n.ino));
                Some((Domain::Process, m.exec(&e.target_label, dev, ino, source)))
            }
            EdgeKind::Connect if !matches!(e.result.as_str(), "EPERM" | "EACCES") => {
                match parse_endpoint(&e.target_label) {
                    Some(Endpoint::Inet(d)) => {
                        Some((Domain::Network, m.connect(d.addr, d.port, d.protocol.unwrap_or(""))))
                    }
                    Some(Endpoint::Unix(path)) => Some((Domain::Network, m.unix(path))),
                    None => None,
                }
            }
            EdgeKind::Capable if e.result == "granted" => {
                capability_number(&e.target_label).map(|cap| (Domain::Capabilities, m.capability(cap)))
            }
            // A ptrace edge points to the target's workload node.
            EdgeKind::Ptrace if e.result == "ok" => {
                Some((Domain::Process, m.ptrace(e.target_label == graph.workload.name)))
            }
            _ => None,
        };
        let Some((domain, allowed)) = verdict else { continue };
        checked += 1;
        if !allowed {
            denied.push(Denial {
                domain,
                object: e.target_label.clone(),
                access: e.access.clone(),
                actor: e.source_label.clone(),
                hits: e.count,
                first_seen: e.first_seen.clone(),
                last_seen: e.last_seen.clone(),
            });
        }
    }
    Ok((checked, denied))
}

/// The would-deny list as a table.
pub fn table(check: &Check) -> String {
    let mut out = format!(
        "workload {} version {}: {} of {} actions would be denied\n",
        check.workload,
        check.version,
        check.denied.len(),
        check.checked
    );
    if !check.denied.is_empty() {
        let rows = check
            .denied
            .iter()
            .map(|d| {
                vec![
                    d.domain.as_str().to_owned(),
                    d.hits.to_string(),
                    d.last_seen.clone(),
                    d.actor.clone(),
                    d.access.clone(),
                    d.object.clone(),
                ]
            })
            .collect();
        out.push_str(&super::render::table(
            &["DOMAIN", "HITS", "LAST-SEEN", "ACTOR", "ACCESS", "OBJECT"],
            &[false, true, false, false, false, false],
            rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recommend::{
        collapse::tests::{at, graph_of},
        paths::tests::FakeFs,
        recommend,
    };

    const PY: &str = "/usr/bin/python3";

    fn training() -> Graph {
        use EdgeKind::*;
        graph_of(&[
            (Exec, "web", PY, "", "ok", 1, 0, 0),
            (Exec, PY, "/usr/bin/cat", "", "ok", 1, 1, 1),
            (Open, PY, "/etc/app/1.conf", "read", "ok", 1, 1, 1),
            (Open, PY, "/etc/app/2.conf", "read", "ok", 1, 1, 1),
            (Open, PY, "/etc/app/3.conf", "read", "ok", 1, 1, 1),
            (Open, PY, "/etc/app/4.conf", "read", "ok", 1, 1, 1),
            (Open, PY, "/proc/100/status", "read", "ok", 1, 2, 2),
            (Open, PY, "/var/log/app.log", "write", "ok", 3, 2, 9),
            (Connect, PY, "10.0.0.1:5432/tcp", "tcp", "ok", 4, 3, 3),
            (Connect, PY, "unix:/run/app.sock", "unix-stream", "ok", 1, 3, 3),
            (Capable, PY, "CAP_NET_BIND_SERVICE", "", "granted", 1, 3, 3),
            // Its own child's /proc/PID/fd.
            (Ptrace, PY, "web", "read", "ok", 2, 3, 3),
        ])
    }

    #[test]
    fn the_recommended_policy_allows_its_own_training() {
        let g = training();
        let fs = FakeFs { children: [("/etc/app".into(), 5)].into(), ..FakeFs::default() };
        let rec = recommend(&g, &fs);
        assert!(rec.rules.iter().any(|r| r.text == "file /etc/app/* r"));
        assert!(rec.rules.iter().any(|r| r.text == "ptrace same-workload"));
        let (checked, denied) = replay(&rec.policy, &g, None, None).unwrap();
        assert_eq!(checked, 12);
        assert!(denied.is_empty(), "{denied:#?}");
    }

    #[test]
    fn attacker_like_actions_are_denied_and_time_filters_apply() {
        use EdgeKind::*;
        let g = training();
        let fs = FakeFs { children: [("/etc/app".into(), 5)].into(), ..FakeFs::default() };
        let policy = recommend(&g, &fs).policy;
        let second = graph_of(&[
            (Exec, "web", PY, "", "ok", 1, 20, 20),
            // A second run: another pid, another config file of the same directory.
            (Open, PY, "/proc/2222/status", "read", "ok", 1, 21, 21),
            (Open, PY, "/etc/app/5.conf", "read", "ok", 1, 21, 21),
            (Exec, PY, "/bin/sh", "", "ok", 1, 22, 22),
            (Exec, "/bin/sh", "/usr/bin/cat", "", "ok", 1, 22, 22),
            (Open, PY, "/etc/shadow", "read", "ok", 1, 23, 23),
            (Open, PY, "/etc/app/1.conf", "write", "ok", 1, 23, 23),
            (Open, PY, "/usr/bin/python3", "write", "ok", 1, 24, 24),
            (Connect, PY, "10.0.0.1:4444/tcp", "tcp", "ok", 1, 25, 25),
            (Capable, PY, "CAP_SYS_ADMIN", "", "granted", 1, 26, 26),
            (Ptrace, PY, "web", "read", "ok", 1, 26, 26),
            // Another workload's process (the host's): never allowed.
            (Ptrace, PY, "host", "attach", "ok", 1, 27, 27),
            // Refused by the kernel anyway: not replayed.
            (Ptrace, PY, "host", "attach", "EPERM", 1, 27, 27),
        ]);
        let (checked, denied) = replay(&policy, &second, None, None).unwrap();
        assert_eq!(checked, 12);
        let objects: Vec<(&str, &str)> =
            denied.iter().map(|d| (d.object.as_str(), d.actor.as_str())).collect();
        assert_eq!(
            objects,
            [
                // graph_of orders edges as given
                ("/bin/sh", PY),
                ("/usr/bin/cat", "/bin/sh"),
                ("/etc/shadow", PY),
                ("/etc/app/1.conf", PY),
                ("/usr/bin/python3", PY),
                ("10.0.0.1:4444/tcp", PY),
                ("CAP_SYS_ADMIN", PY),
                ("host", PY),
            ],
            "a shell, cat from the wrong parent, /etc/shadow, a write where only reads were seen, the binary, an unusual port, a new capability, a ptrace of another workload"
        );
        assert_eq!(denied.last().map(|d| d.domain), Some(Domain::Process));
        // Only what overlaps the interval.
        let since = crate::recommend::unix_ns(&at(24));
        let (checked, denied) = replay(&policy, &second, Some(since), None).unwrap();
        assert_eq!((checked, denied.len()), (5, 4));
        let until = crate::recommend::unix_ns(&at(21));
        let (checked, denied) = replay(&policy, &second, None, Some(until)).unwrap();
        assert_eq!((checked, denied.len()), (3, 0));
    }
}
