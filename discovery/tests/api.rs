//! The REST API against a real listening server.
//!
//! Most tests serve the real router on a loopback port over a real SQLite file, with the real
//! enforcement actor in front of a recording enforcer (this host has no BPF-LSM): auth, every
//! endpoint, every class of bad input, TLS. The last one runs the real daemon (root): a workload
//! observed for real, switched to audit through the API, and its would-deny read back through the
//! API and through `stance events --server`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::{json, Value};
use stance::{
    api::{self, auth, metrics::Sources, ApiState, Listener},
    config::TlsFiles,
    control::actor::{self, Actor, Enforcement},
    enforce::{Backend, EnforceError, Modes, Policy, Status},
    model::{
        Batch, CgroupObs, EdgeKey, EdgeKind, EdgeStats, Identity, LossObs, LossReason, NodeKind, NodeRef,
        WorkloadKind,
    },
    pipeline::ReaderStats,
    store::{Store, VerdictRecord},
};
use tokio::sync::{mpsc, watch};

use common::{stance, workload, Daemon, TempDir, STANCE};

const T0: i64 = 1_700_000_000_000_000_000;

/// What the recording enforcer was asked, and whether it refuses.
#[derive(Default)]
struct Recorded {
    applied: Vec<(String, Modes)>,
    refuse: bool,
}

struct FakeEnforcer(Arc<Mutex<Recorded>>);

impl Enforcement for FakeEnforcer {
    fn apply(
        &mut self,
        workload: &str,
        _: u32,
        _: &[u64],
        _: &Policy,
        modes: Modes,
    ) -> Result<u32, EnforceError> {
        let mut r = self.0.lock().unwrap();
        if r.refuse {
            return Err(EnforceError::TooLarge {
                workload: workload.into(),
                what: "file rules",
                needed: 2,
                free: 1,
            });
        }
        r.applied.push((workload.to_owned(), modes));
        Ok(r.applied.len() as u32)
    }
    fn add_cgroup(&mut self, _: u32, _: u64) -> Result<(), EnforceError> {
        Ok(())
    }
    fn release(&mut self, _: u32) -> Result<(), EnforceError> {
        Ok(())
    }
}

fn identity(name: &str) -> Identity {
    Identity { name: name.into(), kind: WorkloadKind::Launched, ..Identity::host() }
}

fn edge(
    w: &str,
    kind: EdgeKind,
    source: &str,
    target: (NodeKind, &str),
    access: &str,
    at: i64,
) -> (EdgeKey, EdgeStats) {
    (
        EdgeKey {
            workload: w.into(),
            kind,
            source: NodeRef::new(NodeKind::Executable, source),
            target: NodeRef::new(target.0, target.1),
            access: access.into(),
            result: "ok".into(),
        },
        EdgeStats { count: 3, first_seen: at, last_seen: at + 1_000_000_000 },
    )
}

/// Two workloads: `web` (an exec, a file, a connect, losses, a would-deny and a deny) and `idle`.
async fn seed(store: &Store) {
    let batch = Batch {
        cgroups: vec![
            CgroupObs { cgroup_id: 101, path: "/stance/web".into(), identity: identity("web"), seen_at: T0 },
            CgroupObs {
                cgroup_id: 102,
                path: "/stance/idle".into(),
                identity: identity("idle"),
                seen_at: T0,
            },
        ],
        edges: vec![
            edge("web", EdgeKind::Exec, "/bin/sh", (NodeKind::Executable, "/usr/bin/curl"), "", T0),
            edge("web", EdgeKind::Open, "/usr/bin/curl", (NodeKind::File, "/etc/hosts"), "read", T0),
            edge(
                "web",
                EdgeKind::Connect,
                "/usr/bin/curl",
                (NodeKind::Endpoint, "10.0.0.1:443/tcp"),
                "tcp",
                T0,
            ),
        ],
        executables: vec![],
        losses: vec![LossObs {
            workload: Some("web".into()),
            reason: LossReason::RingbufFull,
            count: 7,
            at: T0,
        }],
    };
    store.write_batch(&batch).await.unwrap();
    let id = store.workload_enforcement("web").await.unwrap().id;
    let verdict = |deny: bool, object: &str, at: i64| VerdictRecord {
        workload_id: id,
        domain: stance::enforce::Domain::Network,
        deny,
        object: object.into(),
        actor: "/usr/bin/curl".into(),
        pid: 42,
        tid: 42,
        cgroup_id: 101,
        at,
        truncated: false,
        send: false,
    };
    store
        .write_verdicts(&[
            verdict(false, "10.0.0.2:80/tcp", T0 + 120_000_000_000),
            verdict(true, "10.0.0.3:22/tcp", T0 + 180_000_000_000),
        ])
        .await
        .unwrap();
}

fn available_status() -> Status {
    Status {
        process: Backend::BpfLsm,
        file: Backend::BpfLsm,
        network: Backend::CgroupSockAddr,
        capabilities: Backend::Unavailable("no capability hook in this test".into()),
        adopted: 0,
        notes: vec![],
    }
}

/// The router on a loopback port, over `dir/stance.db`.
struct Server {
    url: String,
    token: String,
    db: PathBuf,
    recorded: Arc<Mutex<Recorded>>,
    stop: watch::Sender<bool>,
    rt: tokio::runtime::Runtime,
}

impl Server {
    fn start(dir: &Path, tls: Option<TlsFiles>) -> Server {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let db = dir.join("stance.db");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let (stop, stop_rx) = watch::channel(false);
        let web = dir.join("web");
        std::fs::create_dir_all(&web).unwrap();
        std::fs::write(web.join("index.html"), "<!doctype html><title>Stance</title>").unwrap();
        let (url, token) = rt.block_on(async {
            let store = Store::open(&db).await.unwrap();
            seed(&store).await;
            let enforcer = Box::new(FakeEnforcer(recorded.clone())) as Box<dyn Enforcement>;
            // The cgroup mount only matters for which cgroups are live; none of these are.
            let actor = Actor::new(store.clone(), Some(enforcer), available_status(), dir.to_owned());
            let (handle, commands) = actor::channel();
            let (sightings_tx, sightings) = mpsc::channel(1);
            tokio::spawn(async move {
                actor.run(commands, sightings).await;
                drop(sightings_tx);
            });
            let token = auth::load_or_create(&auth::token_path(&db)).unwrap();
            let sources =
                Sources::new(db.clone(), vec![], available_status(), Arc::new(ReaderStats::default()), None);
            let state = ApiState {
                store: Store::open_read_only(&db).await.unwrap(),
                versions: Store::open_for_review(&db).await.unwrap(),
                readiness: stance::config::ReadinessConfig::default(),
                control: Some(handle),
                token: Arc::new(token),
                metrics: Arc::new(sources),
                graphs: Default::default(),
            };
            let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), tls.as_ref()).await.unwrap();
            let url = listener.url();
            let token = state.token.as_str().to_owned();
            tokio::spawn(listener.serve(api::router(state, &web), stop_rx));
            (url, token)
        });
        Server { url, token, db, recorded, stop, rt }
    }

    fn state(&self, name: &str) -> Modes {
        let db = self.db.clone();
        let name = name.to_owned();
        self.rt.block_on(async move {
            Store::open_read_only(&db).await.unwrap().workload_enforcement(&name).await.unwrap().modes
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// (status, body as JSON or as a string)
fn send(method: &str, url: &str, token: Option<&str>, body: Option<(&str, &[u8])>) -> (u16, Value) {
    let agent = agent();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some((ct, _)) = body {
        req = req.header("Content-Type", ct);
    }
    let req = req.body(body.map(|(_, b)| b.to_vec()).unwrap_or_default()).unwrap();
    let mut resp = agent.run(req).unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    send("GET", &format!("{}{path}", s.url), Some(&s.token), None)
}

fn put_json(s: &Server, path: &str, body: &[u8]) -> (u16, Value) {
    send("PUT", &format!("{}{path}", s.url), Some(&s.token), Some(("application/json", body)))
}

fn post(s: &Server, path: &str) -> (u16, Value) {
    send("POST", &format!("{}{path}", s.url), Some(&s.token), None)
}

/// The workload's stored version numbers, read from the database itself.
fn versions(s: &Server, name: &str) -> Vec<u32> {
    let db = s.db.clone();
    let name = name.to_owned();
    s.rt.block_on(async move {
        Store::open_read_only(&db).await.unwrap().policy_version_numbers(&name).await.unwrap()
    })
}

/// A 4xx with the JSON error body and the expected kind.
fn assert_error(got: (u16, Value), status: u16, kind: &str) -> String {
    assert_eq!(got.0, status, "{:#}", got.1);
    assert_eq!(got.1["error"]["kind"], kind, "{:#}", got.1);
    got.1["error"]["message"].as_str().expect("an error message").to_owned()
}

#[test]
fn every_api_request_needs_the_token() {
    let tmp = TempDir::new("api-auth");
    let s = Server::start(tmp.path(), None);
    let mode = std::fs::metadata(auth::token_path(&s.db)).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
    for path in [
        "/api/v1/workloads",
        "/api/v1/workloads/web/graph",
        "/api/v1/events",
        "/api/v1/status",
        "/api/v1/openapi.json",
        "/api/v1/nothing",
    ] {
        let url = format!("{}{path}", s.url);
        let msg = assert_error(send("GET", &url, None, None), 401, "unauthorized");
        assert!(msg.contains("Bearer"), "{msg}");
        assert_error(send("GET", &url, Some("wrong"), None), 401, "unauthorized");
        assert_error(send("GET", &url, Some(&format!("{}x", s.token)), None), 401, "unauthorized");
    }
    // A mode change without the token changes nothing.
    let url = format!("{}/api/v1/workloads/web/mode", s.url);
    assert_error(
        send("PUT", &url, None, Some(("application/json", br#"{"mode":"audit"}"#))),
        401,
        "unauthorized",
    );
    assert_eq!(s.state("web"), Modes::default());
    // Outside /api, no token is needed.
    assert_eq!(send("GET", &format!("{}/healthz", s.url), None, None).0, 200);
    assert_eq!(send("GET", &format!("{}/readyz", s.url), None, None).1, json!({"status": "ready"}));
    assert_eq!(send("GET", &format!("{}/metrics", s.url), None, None).0, 200);
    let (status, page) = send("GET", &format!("{}/", s.url), None, None);
    assert_eq!(status, 200);
    assert!(page.as_str().unwrap().contains("<title>Stance</title>"));
}

#[test]
fn workloads_graph_events_and_status() {
    let tmp = TempDir::new("api-read");
    let s = Server::start(tmp.path(), None);

    let (status, list) = get(&s, "/api/v1/workloads");
    assert_eq!(status, 200);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["idle", "web"]);
    let web = &list[1];
    assert_eq!(web["kind"], "launched");
    // Readiness with its reason: the READY / REASON of `stance workloads`, from the same data.
    let offline = common::stance_json(&["workloads", "--db", s.db.to_str().unwrap(), "-o", "json"]);
    for (api_row, cli_row) in list.as_array().unwrap().iter().zip(offline.as_array().unwrap()) {
        assert_eq!(api_row["readiness"], cli_row["readiness"], "{}", api_row["name"]);
    }
    assert_eq!(web["readiness"]["ready"], false);
    assert!(!web["readiness"]["reason"].as_str().unwrap().is_empty(), "{web:#}");
    assert_eq!(web["edges"], 3);
    assert_eq!(
        web["modes"],
        json!({"process": "observe", "file": "observe", "network": "observe", "capabilities": "observe"})
    );
    assert_eq!(web["losses"]["total"], 7);
    assert_eq!(web["warnings"][0], "7 observations lost (ringbuf-full: 7): the graph may be incomplete");
    assert_eq!(list[0]["warnings"], json!([]));

    let (status, one) = get(&s, "/api/v1/workloads/web");
    assert_eq!((status, &one), (200, web));
    assert_error(get(&s, "/api/v1/workloads/nope"), 404, "unknown-workload");

    let (status, graph) = get(&s, "/api/v1/workloads/web/graph");
    assert_eq!(status, 200);
    let labels: Vec<&str> =
        graph["nodes"].as_array().unwrap().iter().map(|n| n["label"].as_str().unwrap()).collect();
    for want in ["web", "/bin/sh", "/usr/bin/curl", "/etc/hosts", "10.0.0.1:443/tcp"] {
        assert!(labels.contains(&want), "{want} missing from {labels:?}");
    }
    let open = graph["edges"].as_array().unwrap().iter().find(|e| e["kind"] == "open").unwrap();
    assert_eq!(
        (open["actor"].as_str(), open["count"].as_u64(), open["access"].as_str()),
        (Some("/usr/bin/curl"), Some(3), Some("read"))
    );
    assert_eq!(open["first_seen"], "2023-11-14T22:13:20.000Z");
    assert_error(get(&s, "/api/v1/workloads/nope/graph"), 404, "unknown-workload");

    // Newest first: deny, would-deny, then the losses' minute.
    let (status, page) = get(&s, "/api/v1/events");
    assert_eq!(status, 200);
    let kinds: Vec<&str> =
        page["events"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["deny", "would-deny", "loss"]);
    assert_eq!(page["next_offset"], Value::Null);
    assert_eq!(page["events"][2]["count"], 7);
    assert_eq!(page["events"][2]["reason"], "ringbuf-full");
    // Paging.
    let (_, first) = get(&s, "/api/v1/events?limit=2");
    assert_eq!(first["events"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_offset"], 2);
    let (_, second) = get(&s, "/api/v1/events?limit=2&offset=2");
    assert_eq!(second["events"][0]["kind"], "loss");
    assert_eq!(second["next_offset"], Value::Null);
    // Filters: kind, workload, since (an RFC 3339 time, or a duration back).
    let (_, would) = get(&s, "/api/v1/events?kind=would-deny");
    assert_eq!(would["events"].as_array().unwrap().len(), 1);
    assert_eq!(would["events"][0]["object"], "10.0.0.2:80/tcp");
    let (_, loss) = get(&s, "/api/v1/events?kind=loss&workload=web");
    assert_eq!(loss["events"].as_array().unwrap().len(), 1);
    let (_, idle) = get(&s, "/api/v1/events?workload=idle");
    assert_eq!(idle["events"], json!([]));
    let (_, late) = get(&s, "/api/v1/events?since=2023-11-14T22:16:00Z");
    assert_eq!(late["events"].as_array().unwrap().len(), 1, "{late:#}");
    let (_, recent) = get(&s, "/api/v1/events?since=10m");
    assert_eq!(recent["events"], json!([]));
    assert_error(get(&s, "/api/v1/events?workload=nope"), 404, "unknown-workload");

    let (status, st) = get(&s, "/api/v1/status");
    assert_eq!(status, 200);
    assert_eq!(
        st["enforcement"][2],
        json!({"domain": "network", "available": true, "backend": "cgroup sock_addr programs"})
    );
    assert_eq!(st["enforcement"][3]["available"], false);
}

/// GET of a workload's graph with `If-None-Match`: (status, ETag, body).
fn get_graph(s: &Server, name: &str, if_none_match: Option<&str>) -> (u16, String, String) {
    let mut req = ureq::http::Request::builder()
        .uri(format!("{}/api/v1/workloads/{name}/graph", s.url))
        .header("Authorization", format!("Bearer {}", s.token));
    if let Some(tag) = if_none_match {
        req = req.header("If-None-Match", tag);
    }
    let mut resp = agent().run(req.body(Vec::new()).unwrap()).unwrap();
    let etag = resp.headers().get("etag").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (resp.status().as_u16(), etag, resp.body_mut().read_to_string().unwrap())
}

/// The count of the `open` edge in a graph's JSON.
fn open_count(body: &str) -> u64 {
    let graph: Value = serde_json::from_str(body).unwrap();
    graph["edges"].as_array().unwrap().iter().find(|e| e["kind"] == "open").unwrap()["count"]
        .as_u64()
        .unwrap()
}

#[test]
fn a_graph_is_served_again_until_its_workload_changes() {
    let tmp = TempDir::new("api-graph-cache");
    let s = Server::start(tmp.path(), None);

    let policy =
        || get(&s, "/api/v1/workloads/web/policy?format=native").1["content"].as_str().unwrap().to_owned();
    assert!(policy().contains("/etc/hosts") && !policy().contains("/etc/resolv.conf"));
    let (status, tag, body) = get_graph(&s, "web", None);
    assert_eq!(status, 200);
    assert!(tag.starts_with('"') && tag.ends_with('"'), "ETag {tag:?}");
    assert_eq!(open_count(&body), 3);
    let (status, again, same) = get_graph(&s, "web", None);
    assert_eq!((status, &again, &same), (200, &tag, &body));
    // The tag given back: nothing to send. A list of tags, or another tag, as HTTP says.
    let (status, _, empty) = get_graph(&s, "web", Some(&tag));
    assert_eq!((status, empty.as_str()), (304, ""));
    assert_eq!(get_graph(&s, "web", Some(&format!("\"x\", {tag}"))).0, 304);
    assert_eq!(get_graph(&s, "web", Some("\"x\"")).0, 200);

    // The daemon's writer changes another workload: this graph is still the same.
    let writer = s.rt.block_on(Store::open(&s.db)).unwrap();
    let other = Batch {
        edges: vec![edge("idle", EdgeKind::Open, "/bin/sleep", (NodeKind::File, "/etc/passwd"), "read", T0)],
        ..Batch::default()
    };
    s.rt.block_on(writer.write_batch(&other)).unwrap();
    assert_eq!(get_graph(&s, "web", Some(&tag)).0, 304);

    // Then this one: the old tag no longer matches, and the graph is the new one.
    let more = Batch {
        edges: vec![
            edge("web", EdgeKind::Open, "/usr/bin/curl", (NodeKind::File, "/etc/hosts"), "read", T0),
            edge("web", EdgeKind::Open, "/usr/bin/curl", (NodeKind::File, "/etc/resolv.conf"), "read", T0),
        ],
        ..Batch::default()
    };
    s.rt.block_on(writer.write_batch(&more)).unwrap();
    let (status, newer, body) = get_graph(&s, "web", Some(&tag));
    assert_eq!(status, 200);
    assert_ne!(newer, tag);
    assert_eq!(open_count(&body), 6);
    assert!(body.contains("/etc/resolv.conf"));
    // The recommendation served before any version is stored comes from the same kept graph.
    assert!(policy().contains("/etc/resolv.conf"));
    assert_eq!(get_graph(&s, "idle", None).0, 200);
    assert_error(
        (get_graph(&s, "nope", None).0, serde_json::from_str(&get_graph(&s, "nope", None).2).unwrap()),
        404,
        "unknown-workload",
    );
}

#[test]
fn modes_go_through_the_actor_and_are_all_or_nothing() {
    let tmp = TempDir::new("api-mode");
    let s = Server::start(tmp.path(), None);

    let (status, reply) =
        put_json(&s, "/api/v1/workloads/web/mode", br#"{"mode":"audit","domains":["network","file"]}"#);
    assert_eq!(status, 200, "{reply:#}");
    assert_eq!(reply["modes"]["network"], "audit");
    assert_eq!(reply["modes"]["process"], "observe");
    assert_eq!(reply["revision"], 1);
    assert_eq!(s.state("web").network, stance::enforce::Mode::Audit);
    assert_eq!(s.recorded.lock().unwrap().applied.len(), 1);

    // Capabilities cannot be enforced here: a request for every domain changes none.
    let msg = assert_error(
        put_json(&s, "/api/v1/workloads/web/mode", br#"{"mode":"enforce"}"#),
        409,
        "unavailable",
    );
    assert!(msg.contains("no capability hook in this test"), "{msg}");
    assert_eq!(s.state("web").network, stance::enforce::Mode::Audit);
    assert_eq!(s.state("web").process, stance::enforce::Mode::Observe);

    // The enforcer refuses: the previous modes stay, in the database too.
    s.recorded.lock().unwrap().refuse = true;
    let msg = assert_error(
        put_json(&s, "/api/v1/workloads/web/mode", br#"{"mode":"enforce","domains":["network"]}"#),
        422,
        "rejected",
    );
    assert!(msg.contains("does not fit the kernel maps"), "{msg}");
    assert_eq!(s.state("web").network, stance::enforce::Mode::Audit);
    s.recorded.lock().unwrap().refuse = false;

    assert_error(
        put_json(&s, "/api/v1/workloads/nope/mode", br#"{"mode":"audit"}"#),
        404,
        "unknown-workload",
    );

    let (status, reply) = put_json(&s, "/api/v1/workloads/web/mode", br#"{"mode":"observe"}"#);
    assert_eq!(status, 200);
    assert_eq!(reply["revision"], Value::Null);
    assert_eq!(s.state("web"), Modes::default());

    // The mode shows in the list.
    put_json(&s, "/api/v1/workloads/idle/mode", br#"{"mode":"audit","domains":["process"]}"#);
    let (_, list) = get(&s, "/api/v1/workloads");
    assert_eq!(list[0]["modes"]["process"], "audit");
    let (_, metrics) = send("GET", &format!("{}/metrics", s.url), None, None);
    let metrics = metrics.as_str().unwrap().to_owned();
    assert!(metrics.contains("stance_workloads{domain=\"process\",mode=\"audit\"} 1"), "{metrics}");
}

#[test]
fn bad_input_gets_a_4xx_with_a_json_error_and_changes_nothing() {
    let tmp = TempDir::new("api-bad");
    let s = Server::start(tmp.path(), None);
    let mode_url = format!("{}/api/v1/workloads/web/mode", s.url);
    let put = |ct: &str, body: &[u8]| send("PUT", &mode_url, Some(&s.token), Some((ct, body)));

    // Malformed JSON, wrong types, unknown values and fields.
    for body in [
        &b"{\"mode\":"[..],
        b"not json",
        b"",
        b"[]",
        b"{\"mode\":1}",
        b"{\"mode\":\"block\"}",
        b"{\"mode\":\"audit\",\"domains\":\"network\"}",
        b"{\"mode\":\"audit\",\"domains\":[\"disk\"]}",
        b"{\"mode\":\"audit\",\"colour\":1}",
        b"{}",
    ] {
        assert_error(put("application/json", body), 400, "bad-request");
    }
    // Invalid UTF-8 in the body, the path and the query.
    assert_error(put("application/json", b"{\"mode\":\"aud\xffit\"}"), 400, "bad-request");
    assert_error(get(&s, "/api/v1/workloads/%FF%FE/graph"), 400, "bad-request");
    assert_error(get(&s, "/api/v1/events?workload=%FF"), 400, "bad-request");
    // Wrong content type, oversized body.
    assert_error(put("text/plain", br#"{"mode":"audit"}"#), 415, "unsupported-media-type");
    let mut big = br#"{"mode":"audit","domains":["network"],"pad":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', api::MAX_BODY_BYTES + 1));
    big.extend(b"\"}");
    assert_error(put("application/json", &big), 413, "payload-too-large");
    // Query parameters: wrong types, out of range, unknown.
    for q in [
        "limit=ten",
        "limit=0",
        "limit=1001",
        "limit=-1",
        "offset=100001",
        "kind=allow",
        "since=yesterday",
        "colour=red",
    ] {
        assert_error(get(&s, &format!("/api/v1/events?{q}")), 400, "bad-request");
    }
    // Unknown endpoints and methods.
    assert_error(get(&s, "/api/v1/nothing"), 404, "not-found");
    assert_error(get(&s, "/api/v2/workloads"), 404, "not-found");
    assert_error(
        send("POST", &format!("{}/api/v1/workloads", s.url), Some(&s.token), None),
        405,
        "bad-request",
    );
    // None of it reached the actor or the database.
    assert!(s.recorded.lock().unwrap().applied.is_empty());
    assert_eq!(s.state("web"), Modes::default());
    // And the server still answers.
    assert_eq!(get(&s, "/api/v1/workloads").0, 200);
}

#[test]
fn policy_in_every_format() {
    let tmp = TempDir::new("api-policy");
    let s = Server::start(tmp.path(), None);
    let (status, native) = get(&s, "/api/v1/workloads/web/policy");
    assert_eq!(status, 200, "{native:#}");
    assert_eq!((native["format"].as_str(), native["output"].as_str()), (Some("native"), Some("json")));
    let body: Value = serde_json::from_str(native["content"].as_str().unwrap()).unwrap();
    assert!(body.to_string().contains("/etc/hosts"), "{body:#}");
    assert!(body.to_string().contains("10.0.0.1"), "{body:#}");
    for format in ["kubearmor", "cilium", "networkpolicy"] {
        let (status, doc) = get(&s, &format!("/api/v1/workloads/web/policy?format={format}"));
        assert_eq!(status, 200, "{format}: {doc:#}");
        assert_eq!(doc["media_type"], "application/yaml");
        assert!(doc["content"].as_str().unwrap().contains("kind: "), "{format}: {doc:#}");
        let (_, json_doc) = get(&s, &format!("/api/v1/workloads/web/policy?format={format}&output=json"));
        let parsed: Value = serde_json::from_str(json_doc["content"].as_str().unwrap()).unwrap();
        assert!(parsed["kind"].is_string(), "{format}");
    }
    let (_, cilium) = get(&s, "/api/v1/workloads/web/policy?format=cilium");
    assert!(cilium["content"].as_str().unwrap().contains("10.0.0.1/32"), "{cilium:#}");
    // A launched workload is no host: the host policy format refuses it, with a reason.
    let msg = assert_error(get(&s, "/api/v1/workloads/web/policy?format=kubearmor-host"), 400, "bad-request");
    assert!(msg.contains("kubearmor-host"), "{msg}");
    let msg = assert_error(get(&s, "/api/v1/workloads/web/policy?format=selinux"), 400, "bad-request");
    assert!(msg.starts_with("unknown policy format 'selinux'"), "{msg}");
    assert_error(get(&s, "/api/v1/workloads/web/policy?output=xml"), 400, "bad-request");
    assert_error(get(&s, "/api/v1/workloads/nope/policy"), 404, "unknown-workload");
}

#[test]
fn versions_diff_check_proposals_and_accept() {
    let tmp = TempDir::new("api-versions");
    let s = Server::start(tmp.path(), None);
    let w = "/api/v1/workloads/web";

    // Nothing stored yet: the GETs answer without storing anything.
    let (status, doc) = get(&s, &format!("{w}/policy"));
    assert_eq!(status, 200, "{doc:#}");
    assert_eq!(doc["version"], Value::Null);
    let native: Value = serde_json::from_str(doc["content"].as_str().unwrap()).unwrap();
    assert_eq!((native["kind"].as_str(), native["version"].is_null()), (Some("Policy"), true));
    assert_eq!(get(&s, &format!("{w}/policy/versions")), (200, json!([])));
    let (status, check) = get(&s, &format!("{w}/policy/check"));
    assert_eq!(status, 200, "{check:#}");
    assert_eq!((check["version"].is_null(), check["checked"].as_u64()), (true, Some(3)));
    assert_eq!(check["denied"], json!([]), "the recommendation allows its own behaviour");
    // The deny and would-deny events ask for something, but against a version not stored yet.
    let msg = assert_error(get(&s, &format!("{w}/proposals")), 409, "stale");
    assert!(msg.contains("POST /api/v1/workloads/web/policy/versions"), "{msg}");
    assert_eq!(get(&s, "/api/v1/workloads/idle/proposals"), (200, json!([])));
    assert!(versions(&s, "web").is_empty(), "a GET stored a version");

    // The explicit POST stores version 1 (201), and a second one finds it still holds (200).
    let (status, review) = post(&s, &format!("{w}/policy/versions"));
    assert_eq!(status, 201, "{review:#}");
    assert_eq!((review["version"].as_u64(), review["created"].as_bool()), (Some(1), Some(true)));
    assert!(review["readiness"]["reason"].is_string());
    let (status, again) = post(&s, &format!("{w}/policy/versions"));
    assert_eq!((status, again["version"].as_u64(), again["created"].as_bool()), (200, Some(1), Some(false)));
    assert_eq!(versions(&s, "web"), [1]);

    // The policy endpoint now serves the stored version, as `stance policy` prints it.
    let (_, doc) = get(&s, &format!("{w}/policy"));
    assert_eq!(doc["version"], 1);
    let native: Value = serde_json::from_str(doc["content"].as_str().unwrap()).unwrap();
    assert_eq!(native["policy"], review["policy"]);
    assert_eq!((native["apiVersion"].as_str(), native["version"].as_u64()), (Some("stance.dev/v1"), Some(1)));
    assert_eq!(get(&s, &format!("{w}/policy?version=1")).1, doc);

    // Proposals from the two events: connects to 10.0.0.2:80 and 10.0.0.3:22.
    let (status, proposals) = get(&s, &format!("{w}/proposals"));
    assert_eq!(status, 200, "{proposals:#}");
    assert_eq!(proposals, review["proposed"]);
    let texts: Vec<&str> =
        proposals.as_array().unwrap().iter().map(|p| p["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.contains("10.0.0.2")), "{texts:?}");
    let id = proposals
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["text"].as_str().unwrap().contains("10.0.0.2"))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The version list and one version.
    let (_, list) = get(&s, &format!("{w}/policy/versions"));
    assert_eq!(list[0]["version"], 1);
    assert_eq!(list[0]["origin"], "recommend");
    let (status, v1) = get(&s, &format!("{w}/policy/versions/1"));
    assert_eq!(status, 200);
    assert_eq!(v1["policy"], review["policy"]);
    assert_eq!(list[0]["rules"].as_u64(), Some(v1["rules"].as_array().unwrap().len() as u64));

    // Accept one proposal: version 2 holds it, the other stays proposed.
    let (status, accepted) = post(&s, &format!("{w}/proposals/{id}/accept"));
    assert_eq!(status, 201, "{accepted:#}");
    assert_eq!((accepted["version"].as_u64(), accepted["rule"]["id"].as_str()), (Some(2), Some(id.as_str())));
    assert_eq!(versions(&s, "web"), [1, 2]);
    let (_, after) = get(&s, &format!("{w}/proposals"));
    assert!(after.as_array().unwrap().iter().all(|p| p["id"] != id.as_str()), "{after:#}");
    assert_eq!(after.as_array().unwrap().len(), proposals.as_array().unwrap().len() - 1);
    assert_eq!(get(&s, &format!("{w}/policy/versions/2")).1["origin"], "accept");

    // The diff: latest against the one before, and from the empty policy.
    let (status, diff) = get(&s, &format!("{w}/policy/diff"));
    assert_eq!(status, 200, "{diff:#}");
    assert_eq!((diff["from"].as_u64(), diff["to"].as_u64()), (Some(1), Some(2)));
    assert_eq!(diff["added"].as_array().unwrap().len(), 1);
    assert_eq!(diff["added"][0]["id"], id.as_str());
    assert_eq!(diff["removed"], json!([]));
    let (_, full) = get(&s, &format!("{w}/policy/diff?from=0&to=1"));
    assert_eq!(full["added"].as_array().unwrap().len(), v1["rules"].as_array().unwrap().len());
    let (_, back) = get(&s, &format!("{w}/policy/diff?from=2&to=1"));
    assert_eq!(back["removed"][0]["id"], id.as_str());

    // Replay: version 2 denies nothing recorded; a time window with nothing in it checks nothing.
    let (_, c2) = get(&s, &format!("{w}/policy/check?version=2"));
    assert_eq!(
        (c2["version"].as_u64(), c2["checked"].as_u64(), &c2["denied"]),
        (Some(2), Some(3), &json!([]))
    );
    let (_, late) = get(&s, &format!("{w}/policy/check?since=2030-01-01T00:00:00Z"));
    assert_eq!((late["version"].as_u64(), late["checked"].as_u64()), (Some(2), Some(0)));

    // Unknown workload, version and proposal: 404, and nothing written.
    for path in [
        "/api/v1/workloads/nope/policy/versions",
        "/api/v1/workloads/nope/policy/versions/1",
        "/api/v1/workloads/nope/policy/diff",
        "/api/v1/workloads/nope/policy/check",
        "/api/v1/workloads/nope/proposals",
    ] {
        assert_error(get(&s, path), 404, "unknown-workload");
    }
    assert_error(post(&s, "/api/v1/workloads/nope/policy/versions"), 404, "unknown-workload");
    assert_error(post(&s, "/api/v1/workloads/nope/proposals/x/accept"), 404, "unknown-workload");
    assert_error(get(&s, &format!("{w}/policy?version=9")), 404, "unknown-item");
    assert_error(get(&s, &format!("{w}/policy/versions/9")), 404, "unknown-item");
    assert_error(get(&s, &format!("{w}/policy/diff?from=1&to=9")), 404, "unknown-item");
    assert_error(get(&s, &format!("{w}/policy/check?version=9")), 404, "unknown-item");
    assert_error(get(&s, "/api/v1/workloads/idle/policy/diff"), 404, "unknown-item");
    let msg = assert_error(post(&s, &format!("{w}/proposals/f00000000/accept")), 404, "unknown-item");
    assert!(msg.contains("no proposed addition 'f00000000'"), "{msg}");
    assert_error(post(&s, &format!("{w}/proposals/{id}/accept")), 404, "unknown-item");
    // idle has no version: accepting anything is refused before a first version is stored.
    assert_error(post(&s, "/api/v1/workloads/idle/proposals/x/accept"), 404, "unknown-item");
    assert!(versions(&s, "idle").is_empty());

    // Bad input: wrong types, half a pair, invalid UTF-8, unknown parameters, bodies where none
    // is taken, oversized bodies, wrong methods.
    for path in [
        format!("{w}/policy?version=two"),
        format!("{w}/policy?version=-1"),
        format!("{w}/policy/versions/two"),
        format!("{w}/policy/versions/%FF"),
        format!("{w}/policy/diff?from=1"),
        format!("{w}/policy/diff?from=1&to=0"),
        format!("{w}/policy/diff?from=x&to=1"),
        format!("{w}/policy/diff?from=1&to=2&colour=red"),
        format!("{w}/policy/check?version=x"),
        format!("{w}/policy/check?since=yesterday"),
        format!("{w}/policy/check?until=%FF"),
        "/api/v1/workloads/%FF/proposals".to_owned(),
    ] {
        assert_error(get(&s, &path), 400, "bad-request");
    }
    let accept_url = format!("{}{w}/proposals/x/accept", s.url);
    let with_body =
        |url: &str, body: &[u8]| send("POST", url, Some(&s.token), Some(("application/json", body)));
    assert_error(with_body(&accept_url, b"{\"id\":"), 400, "bad-request");
    assert_error(with_body(&accept_url, b"{}"), 400, "bad-request");
    assert_error(with_body(&format!("{}{w}/policy/versions", s.url), b"\xff\xfe"), 400, "bad-request");
    let big = vec![b'x'; api::MAX_BODY_BYTES + 1];
    assert_error(with_body(&accept_url, &big), 413, "payload-too-large");
    assert_error(with_body(&format!("{}{w}/policy/versions", s.url), &big), 413, "payload-too-large");
    assert_error(post(&s, &format!("{w}/proposals/%FF%FE/accept")), 400, "bad-request");
    assert_error(
        send("DELETE", &format!("{}{w}/policy/versions", s.url), Some(&s.token), None),
        405,
        "bad-request",
    );
    assert_error(get(&s, &format!("{w}/proposals/{id}/accept")), 405, "bad-request");
    assert_error(post(&s, &format!("{w}/policy")), 405, "bad-request");
    // Without the token: 401, and nothing written.
    assert_error(send("POST", &format!("{}{w}/policy/versions", s.url), None, None), 401, "unauthorized");
    assert_eq!(versions(&s, "web"), [1, 2], "bad input wrote a version");
}

#[test]
fn stance_policy_through_the_api_prints_what_it_prints_offline() {
    let tmp = TempDir::new("api-policy-cli");
    let s = Server::start(tmp.path(), None);
    let db = s.db.to_str().unwrap().to_owned();
    let run = |args: &[&str]| {
        let out = stance(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
    };
    // Through the API first: the daemon stores version 1 and says so, like offline would.
    let (via_api, note) = run(&["policy", "web", "--server", &s.url, "--db", &db, "-o", "json", "--explain"]);
    assert!(note.contains("wrote version 1 of web"), "{note}");
    let (offline, note) = run(&["policy", "web", "--db", &db, "-o", "json", "--explain"]);
    assert!(note.is_empty(), "{note}");
    assert_eq!(
        serde_json::from_str::<Value>(&via_api).unwrap(),
        serde_json::from_str::<Value>(&offline).unwrap()
    );
    let doc: Value = serde_json::from_str(&via_api).unwrap();
    let id = doc["proposed"][0]["id"].as_str().expect("a proposal").to_owned();
    for format in ["kubearmor", "cilium"] {
        let (a, _) = run(&["policy", "web", "--server", &s.url, "--db", &db, "--format", format]);
        let (b, _) = run(&["policy", "web", "--db", &db, "--format", format]);
        assert_eq!(a, b, "{format}");
    }
    let (a, _) = run(&["policy", "check", "web", "--server", &s.url, "--db", &db]);
    let (b, _) = run(&["policy", "check", "web", "--db", &db]);
    assert_eq!(a, b);
    assert!(a.starts_with("workload web version 1: 0 of 3 actions would be denied"), "{a}");

    let (accepted, _) = run(&["policy", "accept", "web", &id, "--server", &s.url, "--db", &db]);
    assert!(accepted.starts_with(&format!("web: accepted {id} (")), "{accepted}");
    assert!(accepted.trim_end().ends_with("into version 2"), "{accepted}");
    let (a, _) = run(&["policy", "diff", "web", "--server", &s.url, "--db", &db, "-o", "json"]);
    let (b, _) = run(&["policy", "diff", "web", "--db", &db, "-o", "json"]);
    assert_eq!(a, b);
    let (a, _) = run(&["policy", "diff", "web", "0", "2", "--server", &s.url, "--db", &db]);
    let (b, _) = run(&["policy", "diff", "web", "0", "2", "--db", &db]);
    assert_eq!(a, b);

    // Errors come back as the server's one line.
    let out = stance(&["policy", "accept", "web", "nothing", "--server", &s.url, "--db", &db]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "stance: workload 'web' has no proposed addition 'nothing' (see `stance policy web --explain`)"
    );
    let out = stance(&["policy", "check", "idle", "--server", &s.url, "--db", &db]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "stance: workload 'idle' has no policy version 1"
    );
}

#[test]
fn openapi_covers_every_endpoint() {
    let tmp = TempDir::new("api-openapi");
    let s = Server::start(tmp.path(), None);
    let (status, doc) = get(&s, "/api/v1/openapi.json");
    assert_eq!(status, 200);
    assert_eq!(doc, serde_json::from_str::<Value>(&api::openapi_json()).unwrap());
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/api/v1/workloads", "get"),
        ("/api/v1/workloads/{name}", "get"),
        ("/api/v1/workloads/{name}/graph", "get"),
        ("/api/v1/workloads/{name}/mode", "put"),
        ("/api/v1/workloads/{name}/policy", "get"),
        ("/api/v1/workloads/{name}/policy/versions", "get"),
        ("/api/v1/workloads/{name}/policy/versions", "post"),
        ("/api/v1/workloads/{name}/policy/versions/{version}", "get"),
        ("/api/v1/workloads/{name}/policy/diff", "get"),
        ("/api/v1/workloads/{name}/policy/check", "get"),
        ("/api/v1/workloads/{name}/proposals", "get"),
        ("/api/v1/workloads/{name}/proposals/{id}/accept", "post"),
        ("/api/v1/events", "get"),
        ("/api/v1/status", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert!(doc["components"]["schemas"]["Graph"].is_object());
    assert!(doc["components"]["schemas"]["ModeRequest"].is_object());
}

#[test]
fn tls_when_a_certificate_is_configured() {
    let tmp = TempDir::new("api-tls");
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let st = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let s = Server::start(tmp.path(), Some(TlsFiles { cert: cert.clone(), key: key.clone() }));
    assert!(s.url.starts_with("https://127.0.0.1:"), "{}", s.url);

    let pem = std::fs::read(&cert).unwrap();
    let root = ureq::tls::Certificate::from_pem(&pem).unwrap();
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![root])))
        .build();
    let agent: ureq::Agent =
        ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
    let mut resp = agent
        .get(&format!("{}/api/v1/workloads", s.url))
        .header("Authorization", &format!("Bearer {}", s.token))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.body_mut().read_to_string().unwrap().contains("\"web\""));
    // Plain HTTP to the TLS port gets nothing useful.
    let plain = agent.get(&s.url.replace("https://", "http://")).call();
    assert!(plain.is_err() || plain.unwrap().status().as_u16() >= 400);

    // A key that does not load is reported, not served.
    std::fs::write(&key, "not a key").unwrap();
    let err =
        s.rt.block_on(Listener::bind("127.0.0.1:0".parse().unwrap(), Some(&TlsFiles { cert, key })))
            .err()
            .unwrap();
    assert!(err.to_string().starts_with("cannot load the TLS certificate"), "{err}");
}

#[test]
fn the_real_daemon_serves_what_it_observes_and_audits_through_the_api() {
    let tmp = TempDir::new("api-daemon");
    let mut daemon = Daemon::start(tmp.path(), "");
    let (url, token) = daemon.api();
    let name = workload("api");
    let st = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/bin/cat", "/etc/hostname"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let auth = |path: &str| send("GET", &format!("{url}{path}"), Some(&token), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let graph = loop {
        let (status, g) = auth(&format!("/api/v1/workloads/{name}/graph"));
        if status == 200 && g["nodes"].as_array().unwrap().iter().any(|n| n["label"] == "/etc/hostname") {
            break g;
        }
        assert!(std::time::Instant::now() < deadline, "never observed: {g:#}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(graph["nodes"].as_array().unwrap().iter().any(|n| n["label"] == "/usr/bin/cat"));

    // Audit network (this host's cgroup fallback); a connect to a port never seen is a would-deny.
    let (status, reply) = send(
        "PUT",
        &format!("{url}/api/v1/workloads/{name}/mode"),
        Some(&token),
        Some(("application/json", br#"{"mode":"audit","domains":["network"]}"#)),
    );
    assert_eq!(status, 200, "{reply:#}");
    assert_eq!(reply["modes"]["network"], "audit");
    let (status, _) = send(
        "PUT",
        &format!("{url}/api/v1/workloads/{name}/mode"),
        Some(&token),
        Some(("application/json", br#"{"mode":"audit"}"#)),
    );
    assert_eq!(status, 409, "process/file/capabilities cannot be audited on this host");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = format!(
        "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=5)\nprint('connected')"
    );
    let out = Command::new(STANCE)
        .args(["launch", "--workload", &name, "--", "/usr/bin/python3", "-c", &connect])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "connected", "audit lets it through");
    let object = format!("127.0.0.1:{port}/tcp");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (_, page) = auth(&format!("/api/v1/events?workload={name}&kind=would-deny"));
        if page["events"].as_array().unwrap().iter().any(|e| e["object"] == object.as_str()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no would-deny: {page:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // The CLI reads the same through --server (token from the file beside --db).
    let db = daemon.db.to_str().unwrap().to_owned();
    let out = stance(&["events", "--server", &url, "--db", &db, "--workload", &name, "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let events: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(events[0]["kind"], "would-deny");
    assert_eq!(events[0]["object"], object.as_str());
    let out = stance(&["workloads", "--server", &url, "--db", &db]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
    let out = stance(&["graph", &name, "--server", &url, "--db", &db, "-o", "json"]);
    let via_api: Value = serde_json::from_slice(&out.stdout).unwrap();
    let offline: Value = common::stance_json(&["graph", &name, "--db", &db, "-o", "json"]);
    assert_eq!(via_api["nodes"], offline["nodes"]);
    let out = stance(&["graph", "nope", "--server", &url, "--db", &db]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "stance: unknown workload 'nope' (see `stance workloads`)"
    );
    let out = stance(&["workloads", "--server", &url, "--token-file", "/nonexistent"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("stance: cannot read the API token file /nonexistent"));

    let (status, _) = send(
        "PUT",
        &format!("{url}/api/v1/workloads/{name}/mode"),
        Some(&token),
        Some(("application/json", br#"{"mode":"observe"}"#)),
    );
    assert_eq!(status, 200);
    let (code, _) = daemon.stop();
    assert_eq!(code, 0);
}
