//! `cargo bench --bench api`: latency of the graph and policy endpoints on a workload with 10,000
//! edges, over a real loopback connection to the real router and a real SQLite file (target: p99
//! under 50 ms). The graph is timed unchanged and changed by the writer before every request. A
//! plain main: it prints one line per endpoint.

use std::{sync::Arc, time::Instant};

use stance::{
    api::{self, auth, metrics::Sources, ApiState, Listener},
    control::actor,
    enforce::{Backend, Status},
    model::{Batch, CgroupObs, EdgeKey, EdgeKind, EdgeStats, Identity, NodeKind, NodeRef, WorkloadKind},
    pipeline::ReaderStats,
    store::Store,
};
use tokio::sync::watch;

const EDGES: usize = 10_000;
const WARMUP: usize = 10;
const SAMPLES: usize = 200;
const T0: i64 = 1_700_000_000_000_000_000;

/// 100 executables that start each other, 8,000 file opens, 1,900 connects: 10,000 edges.
fn batch() -> Batch {
    let w = "bench";
    let exe = |i: usize| NodeRef::new(NodeKind::Executable, format!("/usr/lib/bench/bin{i}"));
    let mut edges = Vec::with_capacity(EDGES);
    let mut push = |kind, source, target, access: &str| {
        let key =
            EdgeKey { workload: w.into(), kind, source, target, access: access.into(), result: "ok".into() };
        edges.push((key, EdgeStats { count: 5, first_seen: T0, last_seen: T0 + 1_000_000_000 }));
    };
    for i in 0..100 {
        push(EdgeKind::Exec, exe(i), exe((i + 1) % 100), "");
    }
    for i in 0..8_000 {
        let file = NodeRef::new(NodeKind::File, format!("/srv/data/d{}/f{i}.dat", i % 50));
        push(EdgeKind::Open, exe(i % 100), file, if i % 3 == 0 { "read,write" } else { "read" });
    }
    for i in 0..1_900 {
        let ep =
            NodeRef::new(NodeKind::Endpoint, format!("10.{}.{}.{}:{}/tcp", i % 7, i % 13, i % 251, 1000 + i));
        push(EdgeKind::Connect, exe(i % 100), ep, "tcp");
    }
    let identity = Identity { name: w.into(), kind: WorkloadKind::Launched, ..Identity::host() };
    Batch {
        cgroups: vec![CgroupObs { cgroup_id: 7, path: "/stance/bench".into(), identity, seen_at: T0 }],
        edges,
        ..Batch::default()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("stance.db");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_stop, stop_rx) = watch::channel(false);
    let (url, token, writer) = rt.block_on(async {
        let store = Store::open(&db).await.unwrap();
        store.write_batch(&batch()).await.unwrap();
        // The policy endpoint serves the latest stored version; store it as `stance mode` would.
        stance::recommend::latest_or_new(&store, "bench", &stance::recommend::RealFs).await.unwrap();
        let un = || Backend::Unavailable("bench".into());
        let status = Status {
            process: un(),
            file: un(),
            network: un(),
            capabilities: un(),
            adopted: 0,
            notes: vec![],
        };
        let token = auth::load_or_create(&auth::token_path(&db)).unwrap();
        let (handle, _commands) = actor::channel();
        let state = ApiState {
            store: Store::open_read_only(&db).await.unwrap(),
            versions: Store::open_for_review(&db).await.unwrap(),
            readiness: stance::config::ReadinessConfig::default(),
            control: Some(handle),
            token: Arc::new(token),
            metrics: Arc::new(Sources::new(
                db.clone(),
                vec![],
                status,
                Arc::new(ReaderStats::default()),
                None,
            )),
            graphs: Default::default(),
        };
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), None).await.unwrap();
        let url = listener.url();
        let token = state.token.as_str().to_owned();
        tokio::spawn(listener.serve(api::router(state, dir.path()), stop_rx));
        (url, token, store)
    });
    // One more observation of one edge, as the daemon's writer would commit it: the graph changes.
    let mut one = batch();
    one.edges.truncate(1);
    let mut touch = |i: usize| {
        one.edges[0].1.last_seen = T0 + 1_000_000_000 + i as i64;
        rt.block_on(writer.write_batch(&one)).unwrap();
    };
    let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
    // (path, whether the workload's graph changes before every request). Unchanged, the graph is
    // served as the API holds it; changed, every request brings it up to date from the rows that
    // changed and serialises it again (the write itself is not timed).
    let endpoints = [
        ("/api/v1/workloads/bench/graph", false),
        ("/api/v1/workloads/bench/graph", true),
        ("/api/v1/workloads/bench/policy?format=native", false),
        ("/api/v1/workloads/bench/policy?format=kubearmor", false),
        ("/api/v1/workloads/bench/policy?format=cilium", false),
    ];
    println!(
        "api latency, workload with {EDGES} edges, {SAMPLES} sequential requests per endpoint (keep-alive):"
    );
    for (path, changing) in endpoints {
        let mut ms = Vec::with_capacity(SAMPLES);
        let mut bytes = 0;
        for i in 0..WARMUP + SAMPLES {
            if changing {
                touch(i);
            }
            let start = Instant::now();
            let mut resp = agent
                .get(&format!("{url}{path}"))
                .header("Authorization", &format!("Bearer {token}"))
                .call()
                .unwrap();
            let body = resp.body_mut().with_config().limit(256 << 20).read_to_vec().unwrap();
            if i >= WARMUP {
                ms.push(start.elapsed().as_secs_f64() * 1000.0);
                bytes = body.len();
            }
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  GET {path}{}: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} KiB)",
            if changing { " (graph changed before each request)" } else { "" },
            percentile(&ms, 0.5),
            percentile(&ms, 0.99),
            ms[ms.len() - 1],
            bytes / 1024
        );
    }
    // A graph the API does not hold yet (its first request, or after eviction) is read in full:
    // what that costs in process, the read from SQLite and then the JSON.
    let reader = rt.block_on(Store::open_read_only(&db)).unwrap();
    let (mut read, mut json) = (Vec::new(), Vec::new());
    for _ in 0..50 {
        let start = Instant::now();
        let graph = rt.block_on(reader.graph("bench")).unwrap();
        read.push(start.elapsed().as_secs_f64() * 1000.0);
        let start = Instant::now();
        let bytes = serde_json::to_vec(&graph).unwrap();
        json.push(start.elapsed().as_secs_f64() * 1000.0);
        assert!(!bytes.is_empty());
    }
    read.sort_by(|a, b| a.total_cmp(b));
    json.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  a graph read in full (not held yet), in process: Store::graph p50 {:.1} ms, serialising it p50 {:.1} ms",
        percentile(&read, 0.5),
        percentile(&json, 0.5)
    );
}
