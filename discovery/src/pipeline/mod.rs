//! probes → store: three tasks joined by bounded channels.
//!
//! ```text
//! ring buffer ──reader──► [queue: Event, bounded, try_send] ──aggregator──► [Window, bounded] ──writer──► SQLite
//! ```
//!
//! * The **reader** never blocks on the event path: when the queue is full it counts the drop per
//!   cgroup (`queue-full` loss) and goes on.
//! * The **aggregator** folds events into per-cgroup edges for one flush window; memory is bounded
//!   by `max_pending_edges` (an early flush) and by the window channel (backpressure into the queue).
//! * The **writer** resolves cgroups to workloads (filesystem work, in `spawn_blocking`), reads the
//!   kernel's loss counters, and writes one transaction per window.
//!
//! Shutdown: the daemon detaches the programs, then tells the reader to stop; the reader drains the
//! ring buffer with awaited sends (nothing is dropped at a clean stop), the channel closes, the
//! aggregator takes the repeats the kernel still held (read by the daemon from the now quiescent
//! dedup maps) into its last window and flushes it, and the writer finishes when that window is
//! written.

pub mod aggregate;
pub mod key_owners;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, oneshot, watch},
};
use tracing::{debug, error, warn};

use crate::{
    identity::Resolver,
    model::{Batch, CgroupObs, EdgeKey, EdgeStats, ExecutableObs, LossObs, LossReason, NodeKind, NodeRef},
    probes::{
        abi,
        decode::{decode, Event},
        dedup::DedupKey,
        LossCounters,
    },
    store::Store,
};
pub use aggregate::{Aggregator, Window};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("cannot poll the ring buffer")]
    RingBuf(#[source] std::io::Error),
    #[error("writing to the database failed {attempts} times in a row")]
    Store {
        attempts: u32,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("a pipeline task panicked")]
    Join(#[from] tokio::task::JoinError),
}

/// Losses counted by the reader, handed to the aggregator at each flush.
#[derive(Debug, Default)]
pub struct ReaderLosses {
    /// Events dropped because the queue was full, per cgroup. Locked only on the drop path and at
    /// flush, never for a delivered event.
    queue_full: Mutex<HashMap<u64, u64>>,
    malformed: AtomicU64,
}

impl ReaderLosses {
    fn drain_into(&self, agg: &mut Aggregator) {
        let taken = std::mem::take(&mut *self.queue_full.lock().expect("queue_full lock"));
        for (cg, n) in taken {
            agg.add_loss(Some(cg), LossReason::QueueFull, n);
        }
        agg.add_loss(None, LossReason::Malformed, self.malformed.swap(0, Ordering::Relaxed));
    }
}

/// Counters the reader keeps for the status line and the benchmark.
#[derive(Debug, Default)]
pub struct ReaderStats {
    pub received: AtomicU64,
    pub dropped: AtomicU64,
}

/// The kernel only wakes the reader when the ring buffer is filling up (see `wakeup_bytes` in
/// observe.bpf.c); otherwise the reader drains it on this timer. Bounds the delay of an event.
pub const DRAIN_EVERY: Duration = Duration::from_millis(50);

/// Reads the ring buffer until told to stop, then drains it completely.
pub async fn run_reader(
    ringbuf: RingBuf<MapData>,
    tx: mpsc::Sender<Event>,
    losses: Arc<ReaderLosses>,
    stats: Arc<ReaderStats>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), PipelineError> {
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives,
    // and it lives inside the AsyncFd until the AsyncFd is dropped.
    let mut afd = unsafe { AsyncFd::register_with_interest(ringbuf, Interest::READABLE) }
        .map_err(|e| PipelineError::RingBuf(e.into_parts().1))?;
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let drain = |rb: &mut RingBuf<MapData>| {
        while let Some(item) = rb.next() {
            stats.received.fetch_add(1, Ordering::Relaxed);
            match decode(&item) {
                Ok(ev) => {
                    if let Err(mpsc::error::TrySendError::Full(ev)) = tx.try_send(ev) {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        *losses
                            .queue_full
                            .lock()
                            .expect("queue_full lock")
                            .entry(ev.cgroup_id)
                            .or_default() += 1;
                    }
                }
                Err(e) => {
                    debug!(error = %e, "malformed record");
                    losses.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    };
    loop {
        tokio::select! {
            guard = afd.readable_mut() => {
                let mut guard = guard.map_err(PipelineError::RingBuf)?;
                // Clear before draining: a record landing after the drain would otherwise have its
                // wakeup cleared away (the drain timer below would still pick it up, 50 ms late).
                guard.clear_ready();
                drain(guard.get_inner_mut());
            }
            _ = tick.tick() => drain(afd.get_mut()),
            _ = stop.changed() => break,
        }
    }
    // Programs are detached by now: drain what is left, waiting for room rather than dropping.
    let rb = afd.get_mut();
    let mut pending = Vec::new();
    while let Some(item) = rb.next() {
        stats.received.fetch_add(1, Ordering::Relaxed);
        match decode(&item) {
            Ok(ev) => pending.push(ev),
            Err(_) => {
                losses.malformed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    for ev in pending {
        if tx.send(ev).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Folds events into windows; flushes every `every`, or early when `max_pending` edges are held.
/// Once the events end, the repeats the kernel still held (`held`, sent once the reader is done;
/// nothing when the sender goes without sending) join the last window.
pub async fn run_aggregator(
    mut rx: mpsc::Receiver<Event>,
    mut agg: Aggregator,
    losses: Arc<ReaderLosses>,
    windows: mpsc::Sender<Window>,
    every: Duration,
    max_pending: usize,
    held: oneshot::Receiver<HashMap<DedupKey, u64>>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut buf = Vec::with_capacity(1024);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut buf, 1024) => {
                if n == 0 {
                    break;
                }
                for ev in buf.drain(..) {
                    agg.ingest(ev);
                }
                if agg.pending_edges() >= max_pending {
                    losses.drain_into(&mut agg);
                    if windows.send(agg.take_window()).await.is_err() {
                        return;
                    }
                }
            }
            _ = tick.tick() => {
                losses.drain_into(&mut agg);
                let w = agg.take_window();
                if !w.is_empty() && windows.send(w).await.is_err() {
                    return;
                }
            }
        }
    }
    if let Ok(held) = held.await {
        agg.add_held_repeats(held);
    }
    losses.drain_into(&mut agg);
    let w = agg.take_window();
    if !w.is_empty() {
        let _ = windows.send(w).await;
    }
}

/// What the writer needs besides the store: cgroup→workload resolution and the kernel's loss
/// counters (absent when replaying recorded events).
pub struct Resolution {
    pub resolver: Resolver,
    pub kernel_losses: Option<LossCounters>,
    /// Last cumulative kernel counts per cgroup, to turn snapshots into deltas.
    prev: HashMap<u64, [u64; abi::STANCE_LOSS_NR as usize]>,
    prev_unattributed: [u64; abi::STANCE_LOSS_NR as usize],
}

impl Resolution {
    pub fn new(resolver: Resolver, kernel_losses: Option<LossCounters>) -> Self {
        Resolution {
            resolver,
            kernel_losses,
            prev: HashMap::new(),
            prev_unattributed: [0; abi::STANCE_LOSS_NR as usize],
        }
    }

    /// Window (cgroup ids) → Batch (workloads). Blocking: touches /sys/fs/cgroup and BPF maps.
    pub fn to_batch(&mut self, mut w: Window, now: i64) -> Batch {
        const KERNEL_REASONS: [LossReason; abi::STANCE_LOSS_NR as usize] =
            [LossReason::RingbufFull, LossReason::ReadFailed];
        if let Some(k) = &self.kernel_losses {
            let (per, un) = k.snapshot();
            for (cg, counts) in per {
                let prev = self.prev.entry(cg).or_default();
                for (i, reason) in KERNEL_REASONS.iter().enumerate() {
                    w.add_loss(Some(cg), *reason, counts[i].saturating_sub(prev[i]));
                }
                *prev = counts;
            }
            for (i, reason) in KERNEL_REASONS.iter().enumerate() {
                w.add_loss(None, *reason, un[i].saturating_sub(self.prev_unattributed[i]));
            }
            self.prev_unattributed = un;
        }

        let mut removed = Vec::new();
        for change in w.cgroup_changes.drain(..) {
            match change {
                aggregate::CgroupChange::Created { id, path } => self.resolver.learn(id, path),
                aggregate::CgroupChange::Removed { id } => removed.push(id),
            }
        }

        // A cgroup whose mkdir record was lost (ring buffer full) is unknown: rescan once per
        // window, ignoring the resolver's rate limit, rather than file its behaviour under `host`.
        let needed = w
            .active_cgroups
            .keys()
            .chain(w.edges.keys().map(|e| &e.cgroup_id))
            .chain(w.executables.keys().map(|(cg, _)| cg))
            .chain(w.losses.keys().filter_map(|(cg, _)| cg.as_ref()));
        if needed.into_iter().any(|cg| !self.resolver.knows(*cg)) {
            if let Err(e) = self.resolver.scan() {
                warn!(error = %e, "cannot rescan cgroups");
            }
        }

        let mut names: HashMap<u64, String> = HashMap::new();
        let mut batch = Batch::default();
        let mut seen = |cg: u64, at: i64, batch: &mut Batch, resolver: &mut Resolver| -> String {
            if let Some(n) = names.get(&cg) {
                return n.clone();
            }
            let (path, identity) = resolver.resolve(cg);
            let name = identity.name.clone();
            batch.cgroups.push(CgroupObs { cgroup_id: cg, path, identity, seen_at: at });
            names.insert(cg, name.clone());
            name
        };

        for (cg, at) in &w.active_cgroups {
            seen(*cg, *at, &mut batch, &mut self.resolver);
        }
        let mut edges: HashMap<EdgeKey, EdgeStats> = HashMap::with_capacity(w.edges.len());
        for (e, stats) in w.edges {
            let workload = seen(e.cgroup_id, stats.last_seen, &mut batch, &mut self.resolver);
            let source =
                if e.source.kind == NodeKind::Workload && e.source.label == aggregate::WORKLOAD_PLACEHOLDER {
                    NodeRef::new(NodeKind::Workload, workload.clone())
                } else {
                    e.source
                };
            // A ptrace target is named by its process's workload (resolved, not recorded as seen:
            // the target did nothing).
            let target = match e.target_cgroup {
                Some(tcg) if tcg == e.cgroup_id => NodeRef::new(NodeKind::Workload, workload.clone()),
                Some(tcg) => NodeRef::new(NodeKind::Workload, self.resolver.resolve(tcg).1.name),
                None => e.target,
            };
            let key = EdgeKey { workload, kind: e.kind, source, target, access: e.access, result: e.result };
            edges.entry(key).and_modify(|s| s.merge(stats)).or_insert(stats);
        }
        batch.edges = edges.into_iter().collect();
        for ((cg, path), x) in w.executables {
            let workload = seen(cg, now, &mut batch, &mut self.resolver);
            batch.executables.push(ExecutableObs {
                workload,
                path,
                dev: x.dev,
                ino: x.ino,
                memfd: x.memfd,
                argv: x.argv,
            });
        }
        for ((cg, reason), count) in w.losses {
            let workload = cg.map(|cg| seen(cg, now, &mut batch, &mut self.resolver));
            batch.losses.push(LossObs { workload, reason, count, at: now });
        }
        for id in removed {
            self.resolver.forget(id);
        }
        batch
    }
}

/// Writes windows until the aggregator is done. A write that keeps failing stops the daemon:
/// an observer that silently stops recording is worse than one that exits loudly.
///
/// After each commit, the (cgroup id, workload) pairs of the batch go to `committed` (the enforcement
/// actor, which adds new cgroups of enforced workloads). Sent only once they are in the database, so
/// a `stance mode` that reads the workload's cgroups either finds a cgroup there or gets it here.
pub async fn run_writer(
    mut rx: mpsc::Receiver<Window>,
    store: Store,
    resolution: Arc<Mutex<Resolution>>,
    committed: mpsc::Sender<Vec<(u64, String)>>,
) -> Result<Store, PipelineError> {
    const ATTEMPTS: u32 = 5;
    while let Some(w) = rx.recv().await {
        let res = resolution.clone();
        let batch = tokio::task::spawn_blocking(move || {
            let now = unix_now_ns();
            res.lock().expect("resolution lock").to_batch(w, now)
        })
        .await?;
        if batch.is_empty() {
            continue;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            match store.write_batch(&batch).await {
                Ok(()) => break,
                Err(e) if attempt < ATTEMPTS => {
                    warn!(error = %e, attempt, "database write failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                }
                Err(source) => {
                    error!(error = %source, "database write failed; stopping");
                    return Err(PipelineError::Store { attempts: attempt, source });
                }
            }
        }
        if !batch.cgroups.is_empty() {
            let seen = batch.cgroups.into_iter().map(|c| (c.cgroup_id, c.identity.name)).collect();
            // Gone only when the daemon is stopping.
            let _ = committed.send(seen).await;
        }
    }
    Ok(store)
}

pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// CLOCK_REALTIME − CLOCK_BOOTTIME, to turn the kernel's boot-time stamps into unix time.
pub fn boot_to_unix_offset_ns() -> i64 {
    let read = |clock| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes into the valid, initialised timespec we pass.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        ts.tv_sec * 1_000_000_000 + ts.tv_nsec
    };
    read(libc::CLOCK_REALTIME) - read(libc::CLOCK_BOOTTIME)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        model::{EdgeKind, WorkloadKind},
        probes::decode::{decode, encode},
    };

    #[test]
    fn windows_become_batches_keyed_by_workload() {
        let tmp = std::env::temp_dir().join(format!("stance-res-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut res = Resolution::new(Resolver::new(tmp.clone()), None);
        let mut agg = Aggregator::new(0, 64);
        // Two cgroups of one launched workload, and the kernel telling us about them.
        for (id, path) in [(11u64, "/stance/web"), (12, "/stance/web/worker")] {
            agg.ingest(
                decode(&encode::record(
                    abi::STANCE_EV_CGROUP_MKDIR,
                    1,
                    1,
                    0,
                    0,
                    encode::as_bytes(&abi::stance_cgroup_body { id, ..Default::default() }),
                    [b"", path.as_bytes(), b"", b""],
                ))
                .unwrap(),
            );
        }
        agg.ingest(
            decode(&encode::open(11, "/usr/sbin/nginx", "/etc/nginx/nginx.conf", abi::STANCE_ACC_READ))
                .unwrap(),
        );
        agg.ingest(
            decode(&encode::open(12, "/usr/sbin/nginx", "/etc/nginx/nginx.conf", abi::STANCE_ACC_READ))
                .unwrap(),
        );
        let exec = abi::stance_exec_body { ino: 1, ..Default::default() };
        agg.ingest(
            decode(&encode::record(
                abi::STANCE_EV_EXEC,
                11,
                1,
                abi::STANCE_F_PARENT_OUTSIDE,
                0,
                encode::as_bytes(&exec),
                [b"", b"/usr/sbin/nginx", b"/usr/bin/stance", b""],
            ))
            .unwrap(),
        );
        let batch = res.to_batch(agg.take_window(), 5);
        assert!(batch
            .cgroups
            .iter()
            .all(|c| c.identity.name == "web" && c.identity.kind == WorkloadKind::Launched));
        let open: Vec<_> = batch.edges.iter().filter(|(k, _)| k.kind == EdgeKind::Open).collect();
        assert_eq!(open.len(), 1, "both cgroups' edges merge into the workload's one edge");
        assert_eq!(open[0].0.workload, "web");
        assert_eq!(open[0].1.count, 2);
        let exec = batch.edges.iter().find(|(k, _)| k.kind == EdgeKind::Exec).unwrap();
        assert_eq!(exec.0.source, NodeRef::new(NodeKind::Workload, "web"));
        assert_eq!(batch.executables[0].workload, "web");
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
