//! `stance policy`, `policy diff`, `policy accept`, `policy check` and the readiness columns of
//! `stance workloads`, run as the real binary against a real SQLite file written by the daemon's
//! own store code (no root or kernel needed).

mod common;

use common::{stance, stance_json, TempDir};
use stance::{
    enforce::Domain,
    model::{Batch, CgroupObs, EdgeKey, EdgeKind, EdgeStats, Identity, NodeKind, NodeRef, WorkloadKind},
    store::{Store, VerdictRecord},
};

const PY: &str = "/usr/bin/python3";
const MIN: i64 = 60_000_000_000;

fn now() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
        .unwrap()
}

fn edge(
    kind: EdgeKind,
    source: &str,
    target: (NodeKind, &str),
    access: &str,
    at: i64,
) -> (EdgeKey, EdgeStats) {
    let source_kind = if source == "web" { NodeKind::Workload } else { NodeKind::Executable };
    (
        EdgeKey {
            workload: "web".into(),
            kind,
            source: NodeRef::new(source_kind, source),
            target: NodeRef::new(target.0, target.1),
            access: access.into(),
            result: if kind == EdgeKind::Capable { "granted" } else { "ok" }.into(),
        },
        EdgeStats { count: 2, first_seen: at, last_seen: at + MIN },
    )
}

fn batch(edges: Vec<(EdgeKey, EdgeStats)>, at: i64) -> Batch {
    let identity = Identity {
        name: "web".into(),
        kind: WorkloadKind::Launched,
        runtime: None,
        container_id: None,
        unit: None,
        pod_uid: None,
    };
    Batch {
        cgroups: vec![CgroupObs { cgroup_id: 99, path: "/stance/web".into(), identity, seen_at: at }],
        edges,
        executables: vec![],
        losses: vec![],
    }
}

fn training(t0: i64) -> Vec<(EdgeKey, EdgeStats)> {
    vec![
        edge(EdgeKind::Exec, "web", (NodeKind::Executable, PY), "", t0),
        edge(EdgeKind::Exec, PY, (NodeKind::Executable, "/usr/bin/cat"), "", t0),
        edge(EdgeKind::Open, PY, (NodeKind::File, "/etc/hosts"), "read", t0),
        edge(EdgeKind::Open, PY, (NodeKind::File, "/proc/4242/status"), "read", t0 + MIN),
        edge(EdgeKind::Open, PY, (NodeKind::File, "/tmp/app-93817.lock"), "write,create", t0 + MIN),
        edge(EdgeKind::Connect, PY, (NodeKind::Endpoint, "127.0.0.1:6379/tcp"), "tcp", t0 + 2 * MIN),
        edge(EdgeKind::Capable, PY, (NodeKind::Capability, "CAP_NET_BIND_SERVICE"), "", t0 + 2 * MIN),
    ]
}

fn texts(rules: &serde_json::Value) -> Vec<String> {
    rules.as_array().unwrap().iter().map(|r| r["text"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn recommend_review_accept_and_replay_through_the_cli() {
    let dir = TempDir::new("recommend");
    let db = dir.path().join("stance.db");
    let db_arg = db.to_str().unwrap();
    let t0 = now() - 180 * MIN;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(&db).await.unwrap();
        store.write_batch(&batch(training(t0), t0)).await.unwrap();
        // Still running: the same read again just now (no new rule).
        let again = vec![edge(EdgeKind::Open, PY, (NodeKind::File, "/etc/hosts"), "read", now() - 2 * MIN)];
        store.write_batch(&batch(again, now() - 2 * MIN)).await.unwrap();
        store.close().await;
    });

    // Readiness: observed 3 hours, nothing new in the last hour, no losses.
    let list = stance_json(&["workloads", "--db", db_arg, "-o", "json"]);
    let web = &list.as_array().unwrap()[0];
    assert_eq!(web["readiness"]["ready"], true, "{web}");
    assert_eq!(web["readiness"]["reason"], "no new rule in the last 1h, no events lost");
    let table = stance(&["workloads", "--db", db_arg]);
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.lines().next().unwrap().ends_with("READY  REASON"), "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[9..12], ["yes", "no", "new"], "{table}");
    let config = dir.path().join("stance.toml");
    std::fs::write(&config, "readiness_window_secs = 3600\nreadiness_quiet_windows = 4\n").unwrap();
    let list =
        stance_json(&["workloads", "--db", db_arg, "--config", config.to_str().unwrap(), "-o", "json"]);
    assert_eq!(
        list[0]["readiness"]["reason"],
        "2 new process rules, 3 new file rules, 1 new network rule, 1 new capability rule in the last 3h"
    );

    // The first `stance policy` writes version 1.
    let doc = stance_json(&["policy", "web", "--db", db_arg, "-o", "json", "--explain"]);
    assert_eq!((doc["apiVersion"].as_str(), doc["version"].as_u64()), (Some("stance.dev/v1"), Some(1)));
    let rules = texts(&doc["rules"]);
    assert!(rules.contains(&"file /proc/*/status r".to_owned()), "{rules:?}");
    assert!(rules.contains(&"file /tmp/* w".to_owned()), "a lock file named by a number: {rules:?}");
    assert!(rules.contains(&"exec /usr/bin/cat from /usr/bin/python3".to_owned()), "{rules:?}");
    let tmp = doc["rules"].as_array().unwrap().iter().find(|r| r["text"] == "file /tmp/* w").unwrap();
    assert!(tmp["breadth"]["basis"].as_str().unwrap().contains("/tmp"), "{tmp}");
    assert_eq!(tmp["evidence"]["executables"][0], PY);
    assert_eq!(doc["policy"]["capabilities"][0], 10);
    let yaml = stance(&["policy", "web", "--db", db_arg]);
    let yaml = String::from_utf8(yaml.stdout).unwrap();
    assert!(yaml.contains("apiVersion: stance.dev/v1") && yaml.contains("version: 1"), "{yaml}");

    // An export of the same version.
    let np = stance_json(&["policy", "web", "--db", db_arg, "--format", "networkpolicy", "-o", "json"]);
    assert_eq!(np["kind"], "NetworkPolicy", "{np}");

    // The version allows its own training.
    let check = stance_json(&["policy", "check", "web", "--db", db_arg, "-o", "json"]);
    assert_eq!((check["version"].as_u64(), check["checked"].as_u64()), (Some(1), Some(7)));
    assert_eq!(check["denied"], serde_json::json!([]));

    // New behaviour and deny events.
    let t1 = now() - 5 * MIN;
    rt.block_on(async {
        let store = Store::open(&db).await.unwrap();
        let new = vec![
            edge(EdgeKind::Open, PY, (NodeKind::File, "/etc/passwd"), "read", t1),
            edge(EdgeKind::Exec, PY, (NodeKind::Executable, "/bin/sh"), "", t1),
        ];
        store.write_batch(&batch(new, t1)).await.unwrap();
        let id = store.workload_enforcement("web").await.unwrap().id;
        let verdict = VerdictRecord {
            workload_id: id,
            domain: Domain::Capabilities,
            deny: false,
            object: "CAP_NET_RAW".into(),
            actor: PY.into(),
            pid: 7,
            tid: 7,
            cgroup_id: 99,
            at: t1,
            truncated: false,
            send: false,
        };
        store.write_verdicts(&[verdict]).await.unwrap();
        store.close().await;
    });
    let check = stance_json(&["policy", "check", "web", "--db", db_arg, "--version", "1", "-o", "json"]);
    let denied: Vec<&str> =
        check["denied"].as_array().unwrap().iter().map(|d| d["object"].as_str().unwrap()).collect();
    assert_eq!(denied, ["/bin/sh", "/etc/passwd"], "{check}");
    let check = stance(&["policy", "check", "web", "--db", db_arg, "--version", "1", "--until", "1h"]);
    assert!(String::from_utf8(check.stdout).unwrap().contains("0 of 7 actions would be denied"));

    let list = stance_json(&["workloads", "--db", db_arg, "-o", "json"]);
    assert_eq!(list[0]["readiness"]["reason"], "1 new process rule, 1 new file rule in the last 10m");

    let doc = stance_json(&["policy", "web", "--db", db_arg, "-o", "json"]);
    assert_eq!(doc["version"], 2, "behaviour changed: a new version");
    let proposed = &doc["proposed"];
    assert_eq!(texts(proposed), ["capability CAP_NET_RAW"], "{doc}");
    let diff = stance(&["policy", "diff", "web", "--db", db_arg]);
    let diff = String::from_utf8(diff.stdout).unwrap();
    assert!(diff.starts_with("workload web: version 1 → 2\n"), "{diff}");
    assert!(
        diff.contains("  file /etc/passwd r\n") && diff.contains("  exec /bin/sh from /usr/bin/python3\n"),
        "{diff}"
    );

    let id = proposed[0]["id"].as_str().unwrap();
    let out = stance(&["policy", "accept", "web", id, "--db", db_arg]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("web: accepted {id} (capability CAP_NET_RAW) into version 3\n")
    );
    let out = stance(&["policy", "accept", "web", id, "--db", db_arg]);
    assert!(!out.status.success(), "no longer proposed");
    assert!(String::from_utf8(out.stderr).unwrap().contains("no proposed addition"));
    let diff = stance_json(&["policy", "diff", "web", "2", "3", "--db", db_arg, "-o", "json"]);
    assert_eq!(texts(&diff["added"]), ["capability CAP_NET_RAW"]);
    let doc = stance_json(&["policy", "web", "--db", db_arg, "-o", "json"]);
    assert_eq!(
        (doc["version"].as_u64(), doc["policy"]["capabilities"].clone()),
        (Some(3), serde_json::json!([10, 13]))
    );
    assert!(doc.get("proposed").is_none(), "{doc}");

    let out = stance(&["policy", "nobody", "--db", db_arg]);
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "stance: unknown workload 'nobody' (see `stance workloads`)\n"
    );
}
