//! Userspace pipeline throughput on one thread, from a replayed event stream (`make bench` runs it
//! pinned to one CPU; `cargo bench --bench pipeline` runs it anywhere).
//!
//! 1. decode → `Aggregator::ingest`, with `take_window` once per second's worth of events at the
//!    target rate (1,000,000 events): the work the daemon's reader and aggregator tasks do per event,
//!    minus the channel between them.
//! 2. `Resolution::to_batch` and `Store::write_batch` of the windows that produced, into a real
//!    SQLite file: edges upserted per second, the first window inserting, the later ones updating;
//!    then one window of `max_pending_edges` (100,000) new edges, the largest the daemon writes.
//!
//! The stream is built with the same encoder the unit tests use, so records have the kernel's layout:
//! 20 cgroups (each announced by a cgroup-mkdir record, as the kernel does), 10,000 distinct edges
//! (opens, connects, execs), plus fork and exit records, in a fixed pseudo-random order. Records are
//! laid out back to back, 8-byte aligned, in one buffer far larger than the CPU caches, as a ring
//! buffer would hold them.
//!
//! Output: human-readable lines, and `bench:` lines of key=value pairs that tests/bench/run.sh parses.

use std::{
    ops::Range,
    path::PathBuf,
    time::{Duration, Instant},
};

use stance::{
    identity::Resolver,
    model::Batch,
    pipeline::{Aggregator, Resolution, Window},
    probes::{
        abi,
        decode::{decode, encode},
    },
    store::Store,
};

/// Cgroups in the stream; each gets `EDGES_PER_CGROUP` distinct edges.
const CGROUPS: u64 = 20;
const OPENS_PER_CGROUP: u64 = 350;
const CONNECTS_PER_CGROUP: u64 = 100;
const EXECS_PER_CGROUP: u64 = 50;
const EDGES_PER_CGROUP: u64 = OPENS_PER_CGROUP + CONNECTS_PER_CGROUP + EXECS_PER_CGROUP;
/// Executables acting inside each cgroup.
const ACTORS_PER_CGROUP: u64 = 8;
/// Events per window: one second at the 1,000,000 events/s target.
const EVENTS_PER_WINDOW: usize = 1_000_000;
/// Timed passes over the stream (after one untimed warm-up pass).
const PASSES: usize = 7;
/// Distinct edges in the largest window: the daemon's default `max_pending_edges`.
const LARGEST_WINDOW: u64 = 100_000;
/// First cgroup id; arbitrary, far from real ids.
const CGROUP_BASE: u64 = 0x5_0000_0000;

/// The distinct records of the stream, by category, before they are interleaved.
struct Templates {
    mkdirs: Vec<Vec<u8>>,
    opens: Vec<Vec<u8>>,
    connects: Vec<Vec<u8>>,
    execs: Vec<Vec<u8>>,
    forks: Vec<Vec<u8>>,
    exits: Vec<Vec<u8>>,
}

fn actor(cg: u64, i: u64) -> String {
    format!("/usr/lib/bench-w{cg}/bin/worker-{}", i % ACTORS_PER_CGROUP)
}

fn templates() -> Templates {
    let mut t = Templates {
        mkdirs: vec![],
        opens: vec![],
        connects: vec![],
        execs: vec![],
        forks: vec![],
        exits: vec![],
    };
    for c in 0..CGROUPS {
        let cg = CGROUP_BASE + c;
        let tgid = 10_000 + c as u32;
        let body = abi::stance_cgroup_body { id: cg, level: 2, ..Default::default() };
        let path = format!("/stance/bench-pipeline-{c}");
        t.mkdirs.push(encode::record(
            abi::STANCE_EV_CGROUP_MKDIR,
            1,
            1,
            0,
            0,
            encode::as_bytes(&body),
            [b"", path.as_bytes(), b"", b""],
        ));
        for i in 0..OPENS_PER_CGROUP {
            // A third of the files are opened read-write; a few opens fail.
            let access =
                if i % 3 == 0 { abi::STANCE_ACC_READ | abi::STANCE_ACC_WRITE } else { abi::STANCE_ACC_READ };
            let path = format!("/srv/bench-w{c}/data/{:02}/item-{i:04}.json", i % 16);
            let mut rec = encode::open(cg, &actor(c, i), &path, access);
            if i % 50 == 49 {
                let ret = -libc::ENOENT;
                rec[std::mem::offset_of!(abi::stance_event_header, ret)..][..4]
                    .copy_from_slice(&ret.to_ne_bytes());
            }
            // Every record the kernel emits with dedup on carries the key it passed, which the
            // aggregator remembers per edge (pipeline::key_owners): the stream does the same.
            encode::set_dedup(&mut rec, dedup_key(cg, abi::STANCE_EV_OPEN, i, access));
            t.opens.push(rec);
        }
        for i in 0..CONNECTS_PER_CGROUP {
            let (port, sock_type, protocol) = if i % 4 == 0 {
                (53, libc::SOCK_DGRAM, libc::IPPROTO_UDP)
            } else {
                (443, libc::SOCK_STREAM, libc::IPPROTO_TCP)
            };
            let mut body = abi::stance_net_body {
                family: libc::AF_INET as u16,
                port,
                sock_type: sock_type as u16,
                protocol: protocol as u16,
                ..Default::default()
            };
            body.addr[..4].copy_from_slice(&[10, c as u8, (i / 250) as u8, (i % 250) as u8]);
            let mut rec = encode::record(
                abi::STANCE_EV_CONNECT,
                cg,
                tgid,
                0,
                0,
                encode::as_bytes(&body),
                [actor(c, i).as_bytes(), b"", b"", b""],
            );
            encode::set_dedup(&mut rec, dedup_key(cg, abi::STANCE_EV_CONNECT, i, sock_type as u32));
            t.connects.push(rec);
        }
        for i in 0..EXECS_PER_CGROUP {
            let target = format!("/usr/lib/bench-w{c}/libexec/tool-{i}");
            let argv = format!("tool-{i}\0--config\0/etc/bench-w{c}/tool.conf\0");
            let body =
                abi::stance_exec_body { ino: 1_000 + i, dev: 8 << 20 | 1, argc: 3, ..Default::default() };
            t.execs.push(encode::record(
                abi::STANCE_EV_EXEC,
                cg,
                tgid,
                0,
                0,
                encode::as_bytes(&body),
                [b"", target.as_bytes(), actor(c, i).as_bytes(), argv.as_bytes()],
            ));
        }
        let fork = abi::stance_proc_body { child_tgid: tgid + 1, ..Default::default() };
        t.forks.push(encode::record(
            abi::STANCE_EV_FORK,
            cg,
            tgid,
            0,
            0,
            encode::as_bytes(&fork),
            [actor(c, 0).as_bytes(), b"", b"", b""],
        ));
        let exit = abi::stance_proc_body::default();
        t.exits.push(encode::record(
            abi::STANCE_EV_EXIT,
            cg,
            tgid + 1,
            0,
            0,
            encode::as_bytes(&exit),
            [actor(c, 1).as_bytes(), b"", b"", b""],
        ));
    }
    t
}

/// xorshift64*: a fixed, dependency-free sequence, so every run replays the same stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// One window's worth of records back to back: the cgroup announcements, then a mix of 70% opens,
/// 15% connects, 5% each execs, forks and exits. Timestamps advance 1 µs per record.
fn stream(t: &Templates) -> (Vec<u8>, Vec<Range<usize>>) {
    let mut arena = Vec::with_capacity(EVENTS_PER_WINDOW * 192);
    let mut spans = Vec::with_capacity(EVENTS_PER_WINDOW);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let ts_at = std::mem::offset_of!(abi::stance_event_header, ts_ns);
    for n in 0..EVENTS_PER_WINDOW {
        let rec = if n < t.mkdirs.len() {
            &t.mkdirs[n]
        } else {
            let pick = |v: &'_ Vec<Vec<u8>>, rng: &mut Rng| rng.below(v.len());
            match rng.below(100) {
                0..70 => &t.opens[pick(&t.opens, &mut rng)],
                70..85 => &t.connects[pick(&t.connects, &mut rng)],
                85..90 => &t.execs[pick(&t.execs, &mut rng)],
                90..95 => &t.forks[pick(&t.forks, &mut rng)],
                _ => &t.exits[pick(&t.exits, &mut rng)],
            }
        };
        let start = arena.len();
        arena.extend_from_slice(rec);
        let ts = 1_000_000_000u64 + n as u64 * 1_000;
        arena[start + ts_at..][..8].copy_from_slice(&ts.to_ne_bytes());
        spans.push(start..arena.len());
        arena.resize(arena.len().next_multiple_of(8), 0);
    }
    (arena, spans)
}

/// CPU time this thread has used. The passes are timed with it as well as by the clock: on a shared
/// machine the clock also counts time other tasks held this CPU, which is not the pipeline's cost.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the valid, initialised timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One pass: every record decoded and ingested, then the window taken. Returns (wall, CPU) time.
fn pass(agg: &mut Aggregator, arena: &[u8], spans: &[Range<usize>]) -> (Duration, Duration, Window) {
    let (t0, c0) = (Instant::now(), thread_cpu());
    for span in spans {
        let ev = decode(&arena[span.clone()]).expect("the bench's own records decode");
        agg.ingest(ev);
    }
    let w = agg.take_window();
    (t0.elapsed(), thread_cpu() - c0, w)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

fn list(v: &[f64]) -> String {
    v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(",")
}

fn main() {
    // `cargo bench` passes `--bench`; this bench takes no arguments of its own.
    let t = templates();
    let (arena, spans) = stream(&t);
    let distinct = CGROUPS * EDGES_PER_CGROUP;
    println!(
        "pipeline: {} records ({:.0} MB, mean {:.0} B), {CGROUPS} cgroups, {distinct} distinct edges",
        spans.len(),
        arena.len() as f64 / 1e6,
        arena.len() as f64 / spans.len() as f64
    );

    let mut agg = Aggregator::new(stance::pipeline::boot_to_unix_offset_ns(), 512);
    let (_, _, warm) = pass(&mut agg, &arena, &spans);
    assert_eq!(warm.edges.len() as u64, distinct, "every distinct edge appears in one window");
    let mut windows = vec![warm];
    let (mut per_cpu_s, mut per_wall_s) = (Vec::with_capacity(PASSES), Vec::with_capacity(PASSES));
    for _ in 0..PASSES {
        let (wall, cpu, w) = pass(&mut agg, &arena, &spans);
        per_wall_s.push(spans.len() as f64 / wall.as_secs_f64());
        per_cpu_s.push(spans.len() as f64 / cpu.as_secs_f64());
        windows.push(w);
    }
    let (cpu_list, wall_list) = (list(&per_cpu_s), list(&per_wall_s));
    let (cpu_med, wall_med) = (median(&mut per_cpu_s), median(&mut per_wall_s));
    println!(
        "pipeline: decode+ingest+take_window, one thread, {PASSES} passes of {} events: median {:.2} M events per CPU-second \
         (slowest pass {:.2}, fastest {:.2}); by the clock {:.2} M events/s",
        spans.len(),
        cpu_med / 1e6,
        per_cpu_s[0] / 1e6,
        per_cpu_s[PASSES - 1] / 1e6,
        wall_med / 1e6
    );
    println!(
        "bench: pipeline events_per_cpu_s={cpu_med:.0} min={:.0} max={:.0} events_per_wall_s={wall_med:.0} passes={PASSES} \
         events_per_pass={} edges={distinct} cgroups={CGROUPS} per_pass_cpu={cpu_list} per_pass_wall={wall_list}",
        per_cpu_s[0],
        per_cpu_s[PASSES - 1],
        spans.len()
    );
    drop(arena);

    if let Err(e) = store_bench(windows) {
        println!("store: not measured: {e}");
        println!("bench: store error={e:?}");
    }
}

/// A dedup key as the kernel side builds one (userspace only compares keys): the edge's cgroup,
/// kind and object, and some access bits.
fn dedup_key(cgroup_id: u64, kind: u32, object: u64, bits: u32) -> abi::stance_dedup_key {
    abi::stance_dedup_key {
        cgroup_id,
        obj_a: object,
        obj_b: 0,
        exe_ino: 1 + object % 8,
        exe_dev: 2,
        kind_bits: kind << 16 | (bits & 0xffff),
    }
}

/// A window of `LARGEST_WINDOW` opens of distinct files, spread over the stream's cgroups (whose
/// mkdir records the resolver has already seen).
fn largest_window() -> Window {
    let mut agg = Aggregator::new(stance::pipeline::boot_to_unix_offset_ns(), 512);
    let per_cgroup = LARGEST_WINDOW / CGROUPS;
    for c in 0..CGROUPS {
        for i in 0..per_cgroup {
            let path = format!("/srv/bench-w{c}/bulk/{:03}/object-{i:05}", i % 128);
            let rec = encode::open(CGROUP_BASE + c, &actor(c, i), &path, abi::STANCE_ACC_READ);
            agg.ingest(decode(&rec).expect("the bench's own records decode"));
        }
    }
    agg.take_window()
}

/// Writes each window the way the daemon's writer does (resolve, then one transaction), timed apart.
fn store_bench(windows: Vec<Window>) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("stance-bench-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = store_windows(&dir.join("bench.db"), windows);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn store_windows(db: &std::path::Path, windows: Vec<Window>) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    // Cgroup ids come from the stream's mkdir records; the mount is never read for them.
    let mut resolution = Resolution::new(Resolver::new(PathBuf::from("/sys/fs/cgroup")), None);
    let store = rt.block_on(Store::open(db)).map_err(|e| format!("Store::open: {e}"))?;
    let now = stance::pipeline::unix_now_ns();
    let (mut resolve_s, mut update_rates) = (0.0, Vec::new());
    let mut insert_rate = 0.0;
    let mut edges_per_window = 0;
    for (i, w) in windows.into_iter().enumerate() {
        let t0 = Instant::now();
        let batch: Batch = resolution.to_batch(w, now + i as i64);
        let resolved = t0.elapsed().as_secs_f64();
        edges_per_window = batch.edges.len();
        let t1 = Instant::now();
        rt.block_on(store.write_batch(&batch)).map_err(|e| format!("write_batch: {e}"))?;
        let rate = batch.edges.len() as f64 / t1.elapsed().as_secs_f64();
        if i == 0 {
            insert_rate = rate;
        } else {
            update_rates.push(rate);
            resolve_s += resolved;
        }
    }
    let largest = largest_window();
    let t0 = Instant::now();
    let batch = resolution.to_batch(largest, now + 1_000);
    let t1 = Instant::now();
    rt.block_on(store.write_batch(&batch)).map_err(|e| format!("write_batch: {e}"))?;
    let largest_s = t1.elapsed().as_secs_f64();
    let largest_to_batch_s = (t1 - t0).as_secs_f64();
    rt.block_on(store.close());
    println!(
        "store: one window of {} new edges: to_batch {largest_to_batch_s:.2} s, write {largest_s:.2} s ({:.0} edges/s)",
        batch.edges.len(),
        batch.edges.len() as f64 / largest_s
    );
    println!(
        "bench: store_largest edges={} write_s={largest_s:.3} to_batch_s={largest_to_batch_s:.3} edges_per_s={:.0}",
        batch.edges.len(),
        batch.edges.len() as f64 / largest_s
    );
    let updates = update_rates.len();
    let per_window = list(&update_rates);
    let upd = median(&mut update_rates);
    let resolve_rate = (edges_per_window * updates) as f64 / resolve_s;
    println!(
        "store: {edges_per_window} edges per window; first window (inserts) {:.0} edges/s; later windows (upserts of existing edges) median {upd:.0} edges/s over {updates}; to_batch {resolve_rate:.0} edges/s",
        insert_rate
    );
    println!(
        "bench: store edges_per_window={edges_per_window} insert_edges_per_s={insert_rate:.0} upsert_edges_per_s={upd:.0} windows={updates} to_batch_edges_per_s={resolve_rate:.0} per_window={per_window}"
    );
    Ok(())
}
