use super::*;
use crate::{
    model::WorkloadKind,
    recommend::paths::tests::FakeFs,
    store::{GraphLosses, WorkloadInfo},
};

/// One edge of a test graph: kind, actor, target, access, result, count, first and last seen
/// (minutes after 2026-01-01T00:00).
pub(crate) type E<'a> = (EdgeKind, &'a str, &'a str, &'a str, &'a str, u64, u32, u32);

pub(crate) fn at(minute: u32) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600 + u64::from(minute) * 60);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A graph of `edges`, with the nodes they need. Sources starting with `/` are executables; the
/// source `web` is the workload node (a start from outside).
pub(crate) fn graph_of(edges: &[E<'_>]) -> Graph {
    let mut nodes: Vec<GraphNode> = Vec::new();
    let node = |kind: NodeKind, label: &str, nodes: &mut Vec<GraphNode>| -> String {
        if let Some(n) = nodes.iter().find(|n| n.label == label && n.kind == kind) {
            return n.id.clone();
        }
        let id = format!("n{}", nodes.len() + 1);
        nodes.push(GraphNode {
            id: id.clone(),
            kind,
            label: label.to_owned(),
            dev: (kind == NodeKind::Executable).then_some(2049),
            ino: (kind == NodeKind::Executable).then_some(nodes.len() as u64 + 100),
            memfd: None,
            argv: None,
            first_seen: at(0),
            last_seen: at(0),
        });
        id
    };
    let mut out = Vec::new();
    for (i, (kind, actor, target, access, result, count, first, last)) in edges.iter().enumerate() {
        let source_kind = if *actor == "web" { NodeKind::Workload } else { NodeKind::Executable };
        let source = node(source_kind, actor, &mut nodes);
        let target_kind = match kind {
            EdgeKind::Exec => NodeKind::Executable,
            EdgeKind::Open => NodeKind::File,
            EdgeKind::Connect => NodeKind::Endpoint,
            EdgeKind::Capable => NodeKind::Capability,
            EdgeKind::Ptrace => NodeKind::Workload,
        };
        let target_id = node(target_kind, target, &mut nodes);
        out.push(GraphEdge {
            id: format!("e{i}"),
            kind: *kind,
            source,
            target: target_id,
            source_label: (*actor).to_owned(),
            target_label: (*target).to_owned(),
            actor: (*actor).to_owned(),
            access: (*access).to_owned(),
            result: (*result).to_owned(),
            count: *count,
            first_seen: at(*first),
            last_seen: at(*last),
        });
    }
    Graph {
        workload: WorkloadInfo {
            name: "web".into(),
            kind: WorkloadKind::Launched,
            runtime: None,
            container_id: None,
            unit: None,
            pod_uid: None,
            first_seen: at(0),
            last_seen: at(edges.iter().map(|e| e.7).max().unwrap_or(0)),
        },
        nodes,
        edges: out,
        losses: GraphLosses::default(),
    }
}

const SH: &str = "/bin/sh";
const PY: &str = "/usr/bin/python3";

fn sample() -> Graph {
    use EdgeKind::*;
    graph_of(&[
        (Exec, "web", SH, "", "ok", 1, 0, 0),
        (Exec, SH, PY, "", "ok", 3, 1, 50),
        (Exec, PY, "/usr/bin/cat", "", "ok", 2, 2, 3),
        (Exec, SH, "/usr/bin/cat", "", "ok", 1, 4, 4),
        (Open, PY, "/etc/hosts", "read", "ok", 10, 1, 40),
        (Open, "/usr/bin/cat", "/etc/hosts", "read", "ok", 2, 2, 4),
        (Open, PY, "/proc/123/status", "read", "ok", 1, 5, 5),
        (Open, PY, "/proc/456/status", "read", "ok", 1, 9, 9),
        (Open, PY, "/srv/out", "write,create,truncate", "ok", 1, 6, 6),
        (Open, PY, "/etc/shadow", "read", "EACCES", 1, 7, 7),
        (Open, PY, "/srv/dir", "path", "ok", 1, 7, 7),
        (Connect, PY, "10.0.0.1:5432/tcp", "tcp", "ok", 4, 1, 30),
        (Connect, PY, "10.0.0.2:5432/tcp", "tcp", "ECONNREFUSED", 1, 2, 2),
        (Connect, PY, "192.0.2.9:25/tcp", "tcp", "EPERM", 1, 2, 2),
        (Connect, PY, "unix:/run/app.sock", "unix-stream", "ok", 1, 3, 3),
        (Capable, PY, "CAP_NET_BIND_SERVICE", "", "granted", 1, 1, 1),
        (Capable, PY, "CAP_SYS_ADMIN", "", "denied", 1, 1, 1),
    ])
}

fn info<'a>(rec: &'a Recommendation, text: &str) -> &'a RuleInfo {
    rec.rules
        .iter()
        .find(|r| r.text.starts_with(text))
        .unwrap_or_else(|| panic!("no rule {text}: {:#?}", rec.rules))
}

#[test]
fn every_observed_action_has_a_rule_and_nothing_else() {
    let rec = recommend(&sample(), &FakeFs::default());
    let texts: Vec<&str> = rec.rules.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "exec /bin/sh (dev 2049 ino 101)",
            "exec /usr/bin/cat (dev 2049 ino 103) from /bin/sh,/usr/bin/python3",
            "exec /usr/bin/python3 (dev 2049 ino 102) from /bin/sh",
            "file /etc/hosts r",
            "file /proc/*/status r",
            "file /srv/out w",
            "net 10.0.0.1/32 tcp 5432",
            "net 10.0.0.2/32 tcp 5432",
            "unix /run/app.sock",
            "capability CAP_NET_BIND_SERVICE",
        ],
        "EACCES, O_PATH, EPERM and denied capabilities add nothing"
    );
    assert_eq!(rules_of(&rec.policy).len(), rec.rules.len());
}

#[test]
fn ptrace_of_the_workloads_own_processes_is_a_rule_with_its_evidence() {
    use EdgeKind::*;
    let others =
        graph_of(&[(Exec, "web", PY, "", "ok", 1, 0, 0), (Ptrace, PY, "host", "read", "ok", 2, 1, 1)]);
    let rec = recommend(&others, &FakeFs::default());
    assert!(
        rec.rules.iter().all(|r| !r.text.starts_with("ptrace")),
        "another workload's processes: {:#?}",
        rec.rules
    );
    assert_eq!(rec.policy.ptrace, crate::enforce::policy::PtraceRule::None);

    let own = graph_of(&[
        (Exec, "web", PY, "", "ok", 1, 0, 0),
        (Ptrace, PY, "web", "read", "ok", 3, 2, 7),
        (Ptrace, PY, "web", "attach", "EPERM", 1, 8, 8),
    ]);
    let rec = recommend(&own, &FakeFs::default());
    let rule = info(&rec, "ptrace same-workload");
    assert_eq!(rule.evidence.hits, 3, "the refused attach is not evidence");
    assert_eq!(rec.policy.ptrace, crate::enforce::policy::PtraceRule::SameWorkload);
    assert_eq!(rules_of(&rec.policy).len(), rec.rules.len());
}

#[test]
fn evidence_counts_hits_times_and_executables() {
    let rec = recommend(&sample(), &FakeFs { processes: Some(50), ..FakeFs::default() });
    let hosts = info(&rec, "file /etc/hosts");
    assert_eq!(hosts.evidence.hits, 12);
    assert_eq!(
        (hosts.evidence.first_seen.as_str(), hosts.evidence.last_seen.as_str()),
        (at(1).as_str(), at(40).as_str())
    );
    assert_eq!(hosts.evidence.executables, ["/usr/bin/cat", PY]);
    assert_eq!(hosts.evidence.processes, None);
    assert!(hosts.breadth.is_none(), "an exact rule is no generalisation");
    let status = info(&rec, "file /proc/*/status");
    assert_eq!((status.evidence.objects, status.evidence.hits), (2, 2));
    let b = status.breadth.as_ref().unwrap();
    assert_eq!((b.observed, b.unobserved), (2, Some(48)));
    let cat = info(&rec, "exec /usr/bin/cat");
    assert_eq!((cat.evidence.hits, cat.evidence.executables.len()), (3, 2));
    assert_eq!(cat.id, cat.rule.id());
}

#[test]
fn a_graph_of_denies_proposes_only_what_was_denied() {
    use EdgeKind::*;
    let g = graph_of(&[(Open, PY, "/etc/shadow", "read", "ok", 1, 1, 1), (Exec, PY, SH, "", "ok", 1, 1, 1)]);
    let rec = collapse(&g, &FakeFs::default(), false);
    let texts: Vec<&str> = rec.rules.iter().map(|r| r.text.as_str()).collect();
    assert_eq!(texts, ["exec /bin/sh (dev 2049 ino 102) from /usr/bin/python3", "file /etc/shadow r"]);
}

#[test]
fn endpoints_and_capabilities_parse() {
    assert!(parse_endpoint("unix:").is_none());
    assert!(parse_endpoint("1.2.3.4:99999/tcp").is_none());
    let Some(Endpoint::Inet(d)) = parse_endpoint("[::1]:53/udp") else { panic!() };
    assert_eq!((d.addr.to_string(), d.port, d.protocol), ("::1".to_owned(), 53, Some("udp")));
    assert_eq!(capability_number("CAP_NET_RAW"), Some(13));
    assert_eq!(capability_number("CAP_41"), Some(41));
    assert_eq!(host("127.0.0.1", 80, "tcp").net.prefix_len(), 32);
}
