//! Versions, proposals, acceptance and diffs against a real SQLite file.

use super::*;
use crate::{
    model::{Batch, CgroupObs, EdgeKey, EdgeStats, Identity, LossObs, LossReason, NodeRef, WorkloadKind},
    recommend::paths::tests::FakeFs,
    store::VerdictRecord,
};

const T0: i64 = 1_700_000_000_000_000_000;
const MIN: i64 = 60_000_000_000;
const PY: &str = "/usr/bin/python3";

fn edge(
    kind: EdgeKind,
    target: (NodeKind, &str),
    access: &str,
    result: &str,
    at: i64,
) -> (EdgeKey, EdgeStats) {
    (
        EdgeKey {
            workload: "web".into(),
            kind,
            source: NodeRef::new(NodeKind::Executable, PY),
            target: NodeRef::new(target.0, target.1),
            access: access.into(),
            result: result.into(),
        },
        EdgeStats { count: 1, first_seen: at, last_seen: at },
    )
}

fn batch(edges: Vec<(EdgeKey, EdgeStats)>) -> Batch {
    let identity = Identity {
        name: "web".into(),
        kind: WorkloadKind::Launched,
        runtime: None,
        container_id: None,
        unit: None,
        pod_uid: None,
    };
    Batch {
        cgroups: vec![CgroupObs { cgroup_id: 77, path: "/stance/web".into(), identity, seen_at: T0 }],
        edges,
        executables: vec![],
        losses: vec![],
    }
}

async fn store_with(edges: Vec<(EdgeKey, EdgeStats)>) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("s.db")).await.unwrap();
    store.write_batch(&batch(edges)).await.unwrap();
    (dir, store)
}

fn hosts(at: i64) -> (EdgeKey, EdgeStats) {
    edge(EdgeKind::Open, (NodeKind::File, "/etc/hosts"), "read", "ok", at)
}

fn cfg() -> ReadinessConfig {
    ReadinessConfig::default()
}

#[tokio::test]
async fn a_version_is_written_only_when_behaviour_changes() {
    let (_dir, store) = store_with(vec![hosts(T0)]).await;
    let fs = FakeFs::default();
    let first = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert_eq!((first.version, first.created, first.origin.as_str()), (1, true, "recommend"));
    assert_eq!(first.policy.files.len(), 1);
    let again = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert_eq!((again.version, again.created), (1, false), "same behaviour, same version");

    // New behaviour: a connect. A repeat of the old behaviour later does not count.
    store
        .write_batch(&batch(vec![
            hosts(T0 + 5 * MIN),
            edge(EdgeKind::Connect, (NodeKind::Endpoint, "10.0.0.1:5432/tcp"), "tcp", "ok", T0 + 5 * MIN),
        ]))
        .await
        .unwrap();
    let second = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert_eq!((second.version, second.created), (2, true));
    assert_eq!(
        second.readiness.reason,
        "1 new process rule, 1 new file rule, 1 new network rule in the last 10m"
    );

    let d = diff(&store, "web", None).await.unwrap();
    assert_eq!((d.from, d.to), (1, 2));
    assert_eq!(d.added.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["net 10.0.0.1/32 tcp 5432"]);
    assert!(d.removed.is_empty());
    assert_eq!(d.added[0].evidence.hits, 1, "evidence comes along from the stored version");
    let d = diff(&store, "web", Some((2, 1))).await.unwrap();
    assert_eq!((d.added.len(), d.removed.len()), (0, 1));
    let d = diff(&store, "web", Some((0, 1))).await.unwrap();
    assert_eq!(d.added.len(), 2, "version 0 is the empty policy: python and /etc/hosts are new");
    assert!(matches!(
        diff(&store, "web", Some((1, 9))).await,
        Err(RecommendError::NoVersion { version: 9, .. })
    ));
}

#[tokio::test]
async fn a_frozen_review_shows_the_rules_of_the_version_it_keeps() {
    use crate::enforce::{Mode, Modes};
    let (_dir, store) = store_with(vec![hosts(T0)]).await;
    let fs = FakeFs::default();
    assert_eq!(review(&store, "web", &fs, &cfg()).await.unwrap().version, 1);
    let w = store.workload_enforcement("web").await.unwrap();
    store.record_enforcement(&w, Modes::all(Mode::Audit), None).await.unwrap();
    // New behaviour while in audit: no new version, and the rules shown are version 1's, with the
    // evidence as observed now.
    store
        .write_batch(&batch(vec![
            hosts(T0 + MIN),
            edge(EdgeKind::Connect, (NodeKind::Endpoint, "10.0.0.1:5432/tcp"), "tcp", "ok", T0 + MIN),
        ]))
        .await
        .unwrap();
    let frozen = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert_eq!((frozen.version, frozen.created), (1, false));
    assert!(frozen.policy.network.is_empty());
    let ids: Vec<String> = frozen.rules.iter().map(|r| r.id.clone()).collect();
    assert_eq!(ids, rules_of(&frozen.policy).iter().map(Rule::id).collect::<Vec<_>>());
    let hosts_rule = frozen.rules.iter().find(|r| r.text.contains("/etc/hosts")).unwrap();
    assert_eq!(hosts_rule.evidence.hits, 2, "{hosts_rule:?}");
}

#[tokio::test]
async fn denies_become_proposals_and_accept_adopts_one_for_good() {
    let (_dir, store) = store_with(vec![
        hosts(T0),
        edge(EdgeKind::Open, (NodeKind::File, "/proc/1/status"), "read", "ok", T0),
        // The denied open was observed too (EPERM), with its access: a write.
        edge(EdgeKind::Open, (NodeKind::File, "/srv/data"), "write", "EPERM", T0 + MIN),
    ])
    .await;
    let fs = FakeFs::default();
    let (v, policy) = latest_or_new(&store, "web", &fs).await.unwrap();
    assert_eq!((v, policy.files.len()), (1, 2), "mode's first version: the EPERM open is not learnt");
    assert_eq!(latest_or_new(&store, "web", &fs).await.unwrap().0, 1, "the latest is reused");

    let id = store.workload_enforcement("web").await.unwrap().id;
    let verdict = |domain, object: &str| VerdictRecord {
        workload_id: id,
        domain,
        deny: true,
        object: object.into(),
        actor: PY.into(),
        pid: 10,
        tid: 10,
        cgroup_id: 77,
        at: T0 + 2 * MIN,
        truncated: false,
        send: false,
    };
    store
        .write_verdicts(&[
            verdict(Domain::File, "/srv/data"),
            verdict(Domain::File, "/srv/data"),
            verdict(Domain::File, "/etc/hosts"),
            // The latest lets anything start python (its rule has no `from`): no proposal, although
            // the rule the event alone would make ("from /bin/sh") is not in the policy.
            VerdictRecord { actor: "/bin/sh".into(), ..verdict(Domain::Process, PY) },
            verdict(Domain::Capabilities, "CAP_NET_RAW"),
            // A ptrace of another workload's process: no policy allows it, nothing is proposed.
            verdict(Domain::Process, "ptrace pid 1 (systemd)"),
            // Of one of its own (the kernel said so): `ptrace same-workload` would allow it.
            verdict(Domain::Process, "ptrace same-workload pid 4242 (python3)"),
        ])
        .await
        .unwrap();
    let r = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert!(!r.created);
    let proposed: Vec<&str> = r.proposed.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        proposed,
        ["file /srv/data w", "capability CAP_NET_RAW", "ptrace same-workload"],
        "/etc/hosts is already allowed"
    );
    let file = &r.proposed[0];
    assert_eq!(file.evidence.hits, 2);
    assert_eq!(file.evidence.executables, [PY]);
    assert_eq!(r.proposed[2].evidence.hits, 1);
    assert!(r.policy.capabilities.is_empty(), "never applied on its own");
    assert_eq!(r.policy.ptrace, crate::enforce::policy::PtraceRule::None, "never applied on its own");

    let err = accept(&store, "web", "f00000000", &fs).await.unwrap_err();
    assert!(err.to_string().contains("no proposed addition 'f00000000'"), "{err}");
    let (version, rule) = accept(&store, "web", &file.id, &fs).await.unwrap();
    assert_eq!((version, rule.text.as_str()), (2, "file /srv/data w"));
    let latest = store.policy_version("web", None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.origin.as_str()), (2, "accept"));
    assert!(latest.policy.files.iter().any(|f| f.path == "/srv/data" && f.write && !f.read));

    // Later reviews keep the adopted rule and no longer propose it.
    let r = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert_eq!((r.version, r.created), (2, false));
    assert_eq!(
        r.proposed.iter().map(|p| p.text.as_str()).collect::<Vec<_>>(),
        ["capability CAP_NET_RAW", "ptrace same-workload"]
    );
    assert!(r.rules.iter().any(|i| i.text == "file /srv/data w" && i.evidence.origin == "accepted"));
    store
        .write_batch(&batch(vec![
            hosts(T0 + 3 * MIN),
            edge(EdgeKind::Open, (NodeKind::File, "/etc/passwd"), "read", "ok", T0 + 3 * MIN),
        ]))
        .await
        .unwrap();
    let r = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert_eq!((r.version, r.created), (3, true));
    assert!(r.policy.files.iter().any(|f| f.path == "/srv/data"), "a new recommendation carries it");
    let d = diff(&store, "web", None).await.unwrap();
    assert_eq!(d.added.iter().map(|r| r.text.as_str()).collect::<Vec<_>>(), ["file /etc/passwd r"]);
}

#[tokio::test]
async fn losses_hold_readiness_back() {
    let (_dir, store) = store_with(vec![hosts(T0), hosts(T0 + 120 * MIN)]).await;
    let fs = FakeFs::default();
    let r = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert!(r.readiness.ready, "{:?}", r.readiness);
    let mut b = batch(vec![]);
    b.losses.push(LossObs { workload: None, reason: LossReason::RingbufFull, count: 3, at: T0 + 100 * MIN });
    store.write_batch(&b).await.unwrap();
    let r = review(&store, "web", &fs, &cfg()).await.unwrap();
    assert!(!r.readiness.ready);
    assert!(r.readiness.reason.starts_with("events lost at 2023-11-14 23:53 UTC"), "{}", r.readiness.reason);
}
