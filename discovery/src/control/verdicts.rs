//! Deny / would-deny records: the enforcer's ring buffer → the store's `enforcement_events`.
//!
//! ```text
//! ring buffer ──reader (decode)──► [Vec<VerdictRecord>, bounded, try_send] ──writer──► SQLite
//! ```
//!
//! Like the observation pipeline's reader, this one never blocks on the event path: a batch that
//! does not fit the queue is dropped and counted. A verdict is evidence, not a decision — the kernel
//! has already denied (or let through) the action — so losing one under a flood costs a line in
//! `stance events`, never enforcement. The reader is generic over the decoding, which belongs to the
//! enforcer (`enforce::verdict::decode`) and to the daemon (policy id → workload, boot → unix time).

use std::{
    fmt::Display,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::{unix::AsyncFd, Interest},
    sync::{mpsc, watch},
};
use tracing::{error, warn};

use crate::store::{Store, VerdictRecord};

/// Batches waiting for the writer. A batch is one wake-up's worth of records.
pub const QUEUE_BATCHES: usize = 64;

/// Most records the writer puts in one transaction.
const MAX_BATCH: usize = 4096;

/// What happened to the records, for the stop report.
#[derive(Debug, Default)]
pub struct VerdictStats {
    pub received: AtomicU64,
    pub malformed: AtomicU64,
    /// Dropped because the writer was behind.
    pub dropped: AtomicU64,
    pub stored: AtomicU64,
    /// Of policy ids the database has no workload for (pins of a daemon that used another database).
    pub unknown_workload: AtomicU64,
    /// Lost to a failed database write.
    pub not_written: AtomicU64,
}

impl VerdictStats {
    /// One line when anything was lost, for the daemon's stop report.
    pub fn losses(&self) -> Option<String> {
        let [malformed, dropped, unknown, not_written] =
            [&self.malformed, &self.dropped, &self.unknown_workload, &self.not_written]
                .map(|c| c.load(Ordering::Relaxed));
        (malformed + dropped + unknown + not_written > 0).then(|| {
            format!(
                "enforcement events lost: {malformed} malformed, {dropped} queue full, \
                 {unknown} of unknown workloads, {not_written} not written"
            )
        })
    }
}

/// Reads the verdict ring buffer until `stop` changes, then drains it with awaited sends. `decode`
/// returns `Ok(None)` for a record that belongs to no workload (the start-up canary's).
pub async fn run_reader<D, E>(
    ringbuf: RingBuf<MapData>,
    mut decode: D,
    tx: mpsc::Sender<Vec<VerdictRecord>>,
    stats: Arc<VerdictStats>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    D: FnMut(&[u8]) -> Result<Option<VerdictRecord>, E>,
    E: Display,
{
    // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged, for as long as it lives,
    // and it lives inside the AsyncFd until the AsyncFd is dropped.
    let mut afd = unsafe { AsyncFd::register_with_interest(ringbuf, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    let mut take_all = |rb: &mut RingBuf<MapData>| {
        let mut batch = Vec::new();
        while let Some(item) = rb.next() {
            stats.received.fetch_add(1, Ordering::Relaxed);
            match decode(&item) {
                Ok(Some(v)) => batch.push(v),
                Ok(None) => {}
                Err(e) => {
                    warn!(error = %e, "malformed verdict record");
                    stats.malformed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        batch
    };
    loop {
        tokio::select! {
            guard = afd.readable_mut() => {
                let mut guard = guard?;
                // Readiness is cleared before draining, never after: the kernel wakes the reader only
                // for a record written when the reader had caught up, and a record that lands
                // between the end of a drain and a later clear would lose that one wakeup, leaving
                // every following record unread (the consumer position no longer catches up).
                guard.clear_ready();
                let batch = take_all(guard.get_inner_mut());
                if batch.is_empty() {
                    continue;
                }
                if let Err(mpsc::error::TrySendError::Full(batch)) = tx.try_send(batch) {
                    stats.dropped.fetch_add(batch.len() as u64, Ordering::Relaxed);
                }
            }
            _ = stop.changed() => break,
        }
    }
    let rest = take_all(afd.get_mut());
    if !rest.is_empty() {
        let _ = tx.send(rest).await;
    }
    Ok(())
}

/// Writes batches until the reader is done, merging what is queued into one transaction.
pub async fn run_writer(mut rx: mpsc::Receiver<Vec<VerdictRecord>>, store: Store, stats: Arc<VerdictStats>) {
    while let Some(mut batch) = rx.recv().await {
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        match store.write_verdicts(&batch).await {
            Ok(stored) => {
                stats.stored.fetch_add(stored, Ordering::Relaxed);
                if stored < n {
                    warn!(
                        skipped = n - stored,
                        "enforcement events of workloads this database does not know"
                    );
                    stats.unknown_workload.fetch_add(n - stored, Ordering::Relaxed);
                }
            }
            Err(e) => {
                error!(error = %super::one_line(&e), events = n, "cannot store enforcement events");
                stats.not_written.fetch_add(n, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        enforce::Domain,
        model::{Batch, CgroupObs, Identity},
        store::EventFilter,
    };

    fn record(workload_id: i64, object: &str) -> VerdictRecord {
        VerdictRecord {
            workload_id,
            domain: Domain::File,
            deny: true,
            object: object.into(),
            actor: "/bin/cat".into(),
            pid: 1,
            tid: 1,
            cgroup_id: 1,
            at: 1,
            truncated: false,
            send: false,
        }
    }

    #[tokio::test]
    async fn the_writer_stores_queued_batches_and_counts_what_it_cannot() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("stance.db")).await.unwrap();
        let host = CgroupObs { cgroup_id: 1, path: "/".into(), identity: Identity::host(), seen_at: 1 };
        store.write_batch(&Batch { cgroups: vec![host], ..Batch::default() }).await.unwrap();
        let id = store.workload_enforcement("host").await.unwrap().id;

        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        tx.send(vec![record(id, "/a"), record(id + 1, "/b")]).await.unwrap();
        tx.send(vec![record(id, "/c")]).await.unwrap();
        drop(tx);
        let stats = Arc::new(VerdictStats::default());
        run_writer(rx, store.clone(), stats.clone()).await;

        assert_eq!(stats.stored.load(Ordering::Relaxed), 2);
        assert_eq!(stats.unknown_workload.load(Ordering::Relaxed), 1);
        assert_eq!(
            stats.losses().as_deref(),
            Some("enforcement events lost: 0 malformed, 0 queue full, 1 of unknown workloads, 0 not written")
        );
        let filter = EventFilter { workload: None, kind: None, since: None, limit: 10 };
        assert_eq!(store.events(&filter).await.unwrap().len(), 2);
        assert_eq!(VerdictStats::default().losses(), None);
    }
}
