//! Recommendation time and peak memory for a synthetic graph of 100,000 edges (target: at most 1 s
//! and 200 MB; `cargo bench --bench recommend`).
//!
//! The graph is written into a real SQLite file with the daemon's writer, then read back and
//! collapsed: first `Store::graph` (the SQLite read) and `recommend::recommend` (petgraph build,
//! collapse, evidence) timed apart, then end to end what `stance policy bench` does after opening the
//! database (`recommend::review`: read, collapse, versions, proposals, readiness; then the native
//! document as JSON). Best and median of several passes; the end-to-end time is the one the target
//! is about. Peak memory is the process's maximum resident set size (getrusage) after all passes;
//! the resident size before the first read is printed beside it.
//!
//! Shape (one workload, like a busy server): 60 executables, each started by two others (120 exec
//! edges); 80,000 opens — 60,000 files in 600 application directories read, 10,000 written, 5,000
//! `/proc/<pid>/status` reads, 5,000 temp files with random names under /tmp; 19,000 connects to
//! addresses in 10.0.0.0/16 on a few ports; granted capability checks for the rest.
//!
//! Output: human-readable lines, and a `bench:` line of key=value pairs.

use std::time::{Duration, Instant};

use stance::{
    config::ReadinessConfig,
    model::{
        Batch, CgroupObs, EdgeKey, EdgeKind, EdgeStats, ExecutableObs, Identity, NodeKind, NodeRef,
        WorkloadKind,
    },
    recommend::{self, RealFs},
    store::Store,
};

const EDGES: usize = 100_000;
const EXECUTABLES: usize = 60;
const PASSES: usize = 5;
const T0: i64 = 1_700_000_000_000_000_000;

fn exe(i: usize) -> String {
    format!("/usr/lib/bench/bin{i:02}")
}

fn batch() -> Batch {
    let mut edges = Vec::with_capacity(EDGES);
    let mut push =
        |kind, source: String, target: (NodeKind, String), access: &str, result: &str, i: usize| {
            let at = T0 + i as i64 * 1_000_000_000;
            edges.push((
                EdgeKey {
                    workload: "bench".into(),
                    kind,
                    source: NodeRef::new(NodeKind::Executable, source),
                    target: NodeRef::new(target.0, target.1),
                    access: access.into(),
                    result: result.into(),
                },
                EdgeStats { count: 1 + (i as u64 % 7), first_seen: at, last_seen: at + 60_000_000_000 },
            ));
        };
    let mut n = 0;
    for i in 0..EXECUTABLES {
        for p in [(i + 1) % EXECUTABLES, (i + 7) % EXECUTABLES] {
            push(EdgeKind::Exec, exe(p), (NodeKind::Executable, exe(i)), "", "ok", n);
            n += 1;
        }
    }
    for i in 0..60_000 {
        let path = format!("/srv/bench/app{:03}/data/file{:05}.dat", i % 600, i);
        push(EdgeKind::Open, exe(i % EXECUTABLES), (NodeKind::File, path), "read", "ok", n);
        n += 1;
    }
    for i in 0..10_000 {
        let path = format!("/var/lib/bench/out{:03}/part{:05}", i % 100, i);
        push(EdgeKind::Open, exe(i % EXECUTABLES), (NodeKind::File, path), "write,create", "ok", n);
        n += 1;
    }
    for i in 0..5_000 {
        let path = format!("/proc/{}/status", 1000 + i * 3);
        push(EdgeKind::Open, exe(i % EXECUTABLES), (NodeKind::File, path), "read", "ok", n);
        n += 1;
    }
    for i in 0..5_000u64 {
        let path = format!("/tmp/tmp{:08x}/state", i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32);
        push(
            EdgeKind::Open,
            exe(i as usize % EXECUTABLES),
            (NodeKind::File, path),
            "read,write,create",
            "ok",
            n,
        );
        n += 1;
    }
    for i in 0..19_000 {
        let target = format!("10.0.{}.{}:{}/tcp", (i / 250) % 256, i % 250 + 1, [80, 443, 5432, 6379][i % 4]);
        push(EdgeKind::Connect, exe(i % EXECUTABLES), (NodeKind::Endpoint, target), "tcp", "ok", n);
        n += 1;
    }
    let caps = ["CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_DAC_OVERRIDE"];
    let mut i = 0;
    while n < EDGES {
        // Distinct (source, target) pairs: executables × capabilities, then more executables.
        let source = format!("/usr/lib/bench/cap{:04}", i / caps.len());
        push(
            EdgeKind::Capable,
            source,
            (NodeKind::Capability, caps[i % caps.len()].into()),
            "",
            "granted",
            n,
        );
        n += 1;
        i += 1;
    }
    let identity = Identity {
        name: "bench".into(),
        kind: WorkloadKind::Launched,
        runtime: None,
        container_id: None,
        unit: None,
        pod_uid: None,
    };
    Batch {
        cgroups: vec![CgroupObs { cgroup_id: 4242, path: "/stance/bench".into(), identity, seen_at: T0 }],
        edges,
        executables: (0..EXECUTABLES)
            .map(|i| ExecutableObs {
                workload: "bench".into(),
                path: exe(i),
                dev: 2049,
                ino: 1000 + i as u64,
                memfd: false,
                argv: None,
            })
            .collect(),
        losses: vec![],
    }
}

/// Maximum resident set size of this process so far, in MB.
fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage writes into the struct we pass and has no other preconditions.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}

fn current_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU time this process (every thread: the read runs partly on sqlx's SQLite thread) has used.
/// On a loaded machine it varies far less than the wall clock, which also counts waiting for a CPU.
fn cpu_time() -> Duration {
    // SAFETY: clock_gettime writes into the struct we pass; the clock id is always valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Wall and CPU time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let out = f();
    (out, wall.elapsed(), cpu_time() - cpu)
}

/// Best and median of a list of durations, in seconds.
fn seconds(list: &mut [Duration]) -> (f64, f64) {
    list.sort();
    (list[0].as_secs_f64(), list[list.len() / 2].as_secs_f64())
}

/// What `stance policy bench` does after opening the database: review (graph read, collapse,
/// versions, proposals, readiness) and the native document as JSON. Returns the rule count and the
/// document's size.
async fn policy_command(store: &Store) -> (usize, usize, bool) {
    let review = recommend::review(store, "bench", &RealFs, &ReadinessConfig::default())
        .await
        .expect("the review succeeds");
    let doc = recommend::render::native(&review, false);
    let text = serde_json::to_string_pretty(&doc).expect("the document serialises");
    (review.rules.len(), text.len(), review.created)
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.db");
    rt.block_on(async {
        let store = Store::open(&path).await.expect("the bench database");
        let b = batch();
        assert_eq!(b.edges.len(), EDGES);
        store.write_batch(&b).await.expect("the synthetic graph is written");
        drop(b);
        store.close().await;
    });
    let before = current_rss_mb();

    // The parts: the SQLite read, then the collapse, each timed alone.
    let store = rt.block_on(Store::open_read_only(&path)).expect("the bench database opens");
    let (mut reads, mut collapses, mut reads_cpu, mut collapses_cpu) = (vec![], vec![], vec![], vec![]);
    let mut rules = 0;
    for _ in 0..PASSES {
        let (graph, wall, cpu) = timed(|| rt.block_on(store.graph("bench")).expect("the graph reads back"));
        reads.push(wall);
        reads_cpu.push(cpu);
        assert_eq!(graph.edges.len(), EDGES);
        let (rec, wall, cpu) = timed(|| recommend::recommend(&graph, &RealFs));
        collapses.push(wall);
        collapses_cpu.push(cpu);
        rules = rec.rules.len();
    }
    rt.block_on(store.close());
    let parts_peak = peak_rss_mb();

    // End to end, as `stance policy bench` runs it. The first review writes version 1 (the graph
    // is new); the later ones find the policy unchanged, as every review of a quiet workload does.
    let store = rt.block_on(Store::open_for_review(&path)).expect("the bench database opens for review");
    let ((first_rules, doc_bytes, created), first, _) = timed(|| rt.block_on(policy_command(&store)));
    let first = first.as_secs_f64();
    assert!(created, "the first review writes a version");
    assert_eq!(first_rules, rules, "the review recommends what the collapse did");
    let (mut ends, mut ends_cpu) = (vec![], vec![]);
    for _ in 0..PASSES {
        let ((_, _, created), wall, cpu) = timed(|| rt.block_on(policy_command(&store)));
        ends.push(wall);
        ends_cpu.push(cpu);
        assert!(!created, "an unchanged graph writes no version");
    }
    rt.block_on(store.close());
    let peak = peak_rss_mb();

    let (read_best, read_med) = seconds(&mut reads);
    let (rec_best, rec_med) = seconds(&mut collapses);
    let (end_best, end_med) = seconds(&mut ends);
    let (_, read_cpu) = seconds(&mut reads_cpu);
    let (_, rec_cpu) = seconds(&mut collapses_cpu);
    let (_, end_cpu) = seconds(&mut ends_cpu);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split(' ').next().unwrap_or("?");
    println!(
        "recommend: {EDGES} edges → {rules} rules; read from SQLite median {read_med:.3} s (best {read_best:.3}), \
         collapse median {rec_med:.3} s (best {rec_best:.3}); CPU time median read {read_cpu:.3} s, \
         collapse {rec_cpu:.3} s; peak RSS {parts_peak:.0} MB after them (load average {load})"
    );
    println!(
        "recommend: end to end (`stance policy`: read, collapse, versions, proposals, readiness, JSON document \
         of {} KiB) median {end_med:.3} s (best {end_best:.3}, CPU time median {end_cpu:.3} s), first run (writes version 1) {first:.3} s; \
         peak RSS {peak:.0} MB (RSS before the first read {before:.0} MB)",
        doc_bytes / 1024
    );
    println!(
        "bench: recommend edges={EDGES} rules={rules} read_s={read_med:.3} collapse_s={rec_med:.3} \
         end_to_end_s={end_med:.3} read_cpu_s={read_cpu:.3} collapse_cpu_s={rec_cpu:.3} \
         end_to_end_cpu_s={end_cpu:.3} first_run_s={first:.3} peak_rss_mb={peak:.0} rss_before_mb={before:.0} \
         passes={PASSES} load={load}"
    );
}
