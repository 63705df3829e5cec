//! Writing one `Batch` as one transaction of upserts.
//!
//! A batch can hold 100,000 edges and arrives every second, so statements carry many rows each
//! (multi-row `VALUES`) instead of one round trip to SQLite's worker thread per row. Chunks are powers
//! of two up to `MAX_ROWS`, so a table needs at most a dozen distinct statements, all of which stay in
//! the connection's prepared-statement cache however batch sizes vary.
//!
//! Order matters because of foreign keys and ids: workloads first (everything refers to them), then
//! cgroups and nodes, then edges (which refer to the ids of the nodes just written), then losses.

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap},
    time::{SystemTime, UNIX_EPOCH},
};

use sqlx::{Row, SqliteConnection, SqlitePool};

use crate::model::{
    Batch, EdgeKey, EdgeStats, ExecutableObs, Identity, LossReason, NodeKind, NodeRef, WorkloadKind,
};

/// Most rows in one statement. 2048 rows of 10 columns stay below SQLite's default limit of 32,766
/// bind parameters; going from 512 to 2048 rows made a 100,000-node batch about 20% faster.
const MAX_ROWS: usize = 2048;

/// `losses.workload_id` of losses no workload can be blamed for (see the migration).
pub(super) const UNATTRIBUTED: i64 = 0;

/// SQL for `count = count + excluded.count` that saturates like `EdgeStats::merge`, instead of letting
/// SQLite turn an overflowing sum into a REAL (which a STRICT INTEGER column rejects). A macro so that
/// `concat!` can build whole statements as literals.
macro_rules! saturating_count {
    () => {
        "count = CASE WHEN count > 9223372036854775807 - excluded.count THEN 9223372036854775807
                      ELSE count + excluded.count END"
    };
}

/// SQL widening a row's first/last-seen span by the incoming row's.
macro_rules! widen_span {
    () => {
        "first_seen = min(first_seen, excluded.first_seen), last_seen = max(last_seen, excluded.last_seen)"
    };
}

/// SQL counting one more change of a workload's graph (migration 0005). Every batch that mentions a
/// workload (edges, executables, cgroups, losses) upserts its row, so this is the one place to count.
macro_rules! count_change {
    () => {
        "graph_changes = graph_changes + 1, "
    };
}

/// A node as the batch names it: (workload name, kind, label).
type NodeKey<'b> = (&'b str, NodeKind, &'b str);

/// Why a batch was not written (the transaction was rolled back).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// SQLite refused a statement (disk full, read-only database, a lock held too long, …).
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
    /// Nodes written moments ago in the same transaction could not be found again. Only a bug gets
    /// here; the batch fails rather than attach edges to guessed nodes.
    #[error("found the ids of only {found} of {expected} nodes just written")]
    NodeIds { expected: usize, found: usize },
}

pub(super) async fn write_batch(pool: &SqlitePool, batch: &Batch) -> Result<(), WriteError> {
    if batch.is_empty() {
        return Ok(());
    }
    let plan = Plan::new(batch, now_ns());
    let mut tx = pool.begin_with(super::WRITE_TX).await?;
    let (workload_ids, changes) = upsert_workloads(&mut tx, &plan).await?;
    upsert_cgroups(&mut tx, &plan, &workload_ids).await?;
    let node_ids = upsert_nodes(&mut tx, &plan, &workload_ids, &changes).await?;
    upsert_edges(&mut tx, &batch.edges, &plan, &workload_ids, &changes, &node_ids).await?;
    upsert_losses(&mut tx, &plan, &workload_ids).await?;
    Ok(tx.commit().await?)
}

/// What one batch changes, deduplicated and merged in memory so each row is written once.
struct Plan<'b> {
    /// Per workload name: its identity (if a cgroup of it was seen) and the span of its activity.
    workloads: BTreeMap<&'b str, WorkloadRow<'b>>,
    /// Per cgroup id: the latest mapping seen in the batch.
    cgroups: BTreeMap<u64, CgroupRow<'b>>,
    /// Every node the batch touches, in first-touched order, so node ids can be returned by index.
    nodes: Vec<(NodeKey<'b>, NodeRow<'b>)>,
    /// Position of each node in `nodes`.
    node_index: HashMap<NodeKey<'b>, usize>,
    /// Loss counts per (workload, reason, minute bucket).
    losses: BTreeMap<(Option<&'b str>, LossReason, i64), u64>,
}

struct WorkloadRow<'b> {
    /// The identity of the latest cgroup observation; None when the batch only names the workload.
    identity: Option<(&'b Identity, i64)>,
    /// Earliest time in the batch attributed to the workload (unix ns).
    first_seen: i64,
    /// Latest time in the batch attributed to the workload (unix ns).
    last_seen: i64,
}

struct CgroupRow<'b> {
    /// Path of the mapping, to tell a reused cgroup id from the same cgroup seen again.
    path: &'b str,
    /// The workload the cgroup belongs to.
    workload: &'b str,
    /// When this mapping was first seen in the batch (unix ns).
    first_seen: i64,
    /// When this mapping was last seen in the batch (unix ns).
    last_seen: i64,
}

struct NodeRow<'b> {
    /// Earliest time the batch touched the node (unix ns).
    first_seen: i64,
    /// Latest time the batch touched the node (unix ns).
    last_seen: i64,
    /// Kernel attributes for an executable node, from the last observation in the batch.
    exe: Option<&'b ExecutableObs>,
}

impl<'b> Plan<'b> {
    fn new(batch: &'b Batch, now: i64) -> Self {
        // Things without a timestamp of their own (an executable's attributes, a workload only named
        // by them) are dated by the batch's latest time, or by the clock for a batch without one.
        let batch_time = batch
            .cgroups
            .iter()
            .map(|c| c.seen_at)
            .chain(batch.edges.iter().map(|(_, s)| s.last_seen))
            .chain(batch.losses.iter().map(|l| l.at))
            .max()
            .unwrap_or(now);

        let mut plan = Plan {
            workloads: BTreeMap::new(),
            cgroups: BTreeMap::new(),
            nodes: Vec::new(),
            node_index: HashMap::new(),
            losses: BTreeMap::new(),
        };

        for cg in &batch.cgroups {
            let row = plan.workload(&cg.identity.name, cg.seen_at, cg.seen_at);
            if row.identity.is_none_or(|(_, at)| cg.seen_at >= at) {
                row.identity = Some((&cg.identity, cg.seen_at));
            }
            let same = |r: &CgroupRow| r.path == cg.path && r.workload == cg.identity.name;
            match plan.cgroups.get_mut(&cg.cgroup_id) {
                Some(r) if same(r) => {
                    r.first_seen = r.first_seen.min(cg.seen_at);
                    r.last_seen = r.last_seen.max(cg.seen_at);
                }
                // A different mapping for the same id: the later observation wins.
                Some(r) if cg.seen_at < r.last_seen => {}
                _ => {
                    let row = CgroupRow {
                        path: &cg.path,
                        workload: &cg.identity.name,
                        first_seen: cg.seen_at,
                        last_seen: cg.seen_at,
                    };
                    plan.cgroups.insert(cg.cgroup_id, row);
                }
            }
        }
        for (key, stats) in &batch.edges {
            plan.workload(&key.workload, stats.first_seen, stats.last_seen);
            plan.node((&key.workload, key.source.kind, &key.source.label), stats.first_seen, stats.last_seen);
            plan.node((&key.workload, key.target.kind, &key.target.label), stats.first_seen, stats.last_seen);
        }
        for exe in &batch.executables {
            plan.workload(&exe.workload, batch_time, batch_time);
            let i = plan.node((&exe.workload, NodeKind::Executable, &exe.path), batch_time, batch_time);
            plan.nodes[i].1.exe = Some(exe);
        }
        for loss in &batch.losses {
            if let Some(name) = &loss.workload {
                plan.workload(name, loss.at, loss.at);
            }
            let bucket = minute_bucket(loss.at);
            let count = plan.losses.entry((loss.workload.as_deref(), loss.reason, bucket)).or_default();
            *count = count.saturating_add(loss.count);
        }
        // Every workload has its own node, the source of exec edges whose parent is outside it.
        let spans: Vec<(&str, i64, i64)> =
            plan.workloads.iter().map(|(n, w)| (*n, w.first_seen, w.last_seen)).collect();
        for (name, first, last) in spans {
            plan.node((name, NodeKind::Workload, name), first, last);
        }
        plan
    }

    fn workload(&mut self, name: &'b str, first: i64, last: i64) -> &mut WorkloadRow<'b> {
        let row = self.workloads.entry(name).or_insert(WorkloadRow {
            identity: None,
            first_seen: first,
            last_seen: last,
        });
        row.first_seen = row.first_seen.min(first);
        row.last_seen = row.last_seen.max(last);
        row
    }

    fn node(&mut self, key: NodeKey<'b>, first: i64, last: i64) -> usize {
        match self.node_index.entry(key) {
            Entry::Occupied(e) => {
                let row = &mut self.nodes[*e.get()].1;
                row.first_seen = row.first_seen.min(first);
                row.last_seen = row.last_seen.max(last);
                *e.get()
            }
            Entry::Vacant(e) => {
                e.insert(self.nodes.len());
                self.nodes.push((key, NodeRow { first_seen: first, last_seen: last, exe: None }));
                self.nodes.len() - 1
            }
        }
    }
}

/// Upserts the plan's workloads; returns, per name, the row id and the number of this change of its
/// graph (`graph_changes` after this batch), which the nodes and edges written take in `changed`.
async fn upsert_workloads<'b>(
    conn: &mut SqliteConnection,
    plan: &Plan<'b>,
) -> sqlx::Result<(HashMap<&'b str, i64>, HashMap<&'b str, i64>)> {
    let mut ids = HashMap::with_capacity(plan.workloads.len());
    let mut changes = HashMap::with_capacity(plan.workloads.len());
    for (&name, row) in &plan.workloads {
        let query = match row.identity {
            Some((identity, _)) => sqlx::query(concat!(
                "INSERT INTO workloads
                    (name, kind, runtime, container_id, unit, pod_uid, first_seen, last_seen, graph_changes)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)
                 ON CONFLICT (name) DO UPDATE SET
                    kind = excluded.kind, runtime = excluded.runtime, container_id = excluded.container_id,
                    unit = excluded.unit, pod_uid = excluded.pod_uid, ",
                count_change!(),
                widen_span!(),
                " RETURNING id, graph_changes"
            ))
            .bind(name)
            .bind(identity.kind.as_str())
            .bind(identity.runtime.as_deref())
            .bind(identity.container_id.as_deref())
            .bind(identity.unit.as_deref())
            .bind(identity.pod_uid.as_deref()),
            // The pipeline reports a workload's cgroup in the first batch that mentions it, so this is
            // a defensive path: rather than fail the batch, store the name with kind 'host' (the
            // catch-all kind) until a cgroup observation brings the real identity, which then
            // overwrites it. An existing row's identity is left alone.
            None => sqlx::query(concat!(
                "INSERT INTO workloads (name, kind, first_seen, last_seen, graph_changes) VALUES (?, ?, ?, ?, 1)
                 ON CONFLICT (name) DO UPDATE SET ",
                count_change!(),
                widen_span!(),
                " RETURNING id, graph_changes"
            ))
            .bind(name)
            .bind(WorkloadKind::Host.as_str()),
        };
        let returned = query.bind(row.first_seen).bind(row.last_seen).fetch_one(&mut *conn).await?;
        ids.insert(name, returned.try_get(0)?);
        changes.insert(name, returned.try_get(1)?);
    }
    Ok((ids, changes))
}

async fn upsert_cgroups(
    conn: &mut SqliteConnection,
    plan: &Plan<'_>,
    workload_ids: &HashMap<&str, i64>,
) -> sqlx::Result<()> {
    for (&cgroup_id, row) in &plan.cgroups {
        sqlx::query(
            // SET expressions all read the old row, so first_seen can compare the old mapping with the
            // new one: a reused id starts a new span.
            "INSERT INTO cgroups (cgroup_id, path, workload_id, first_seen, last_seen) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (cgroup_id) DO UPDATE SET
                first_seen = CASE WHEN path = excluded.path AND workload_id = excluded.workload_id
                                  THEN min(first_seen, excluded.first_seen) ELSE excluded.first_seen END,
                last_seen = CASE WHEN path = excluded.path AND workload_id = excluded.workload_id
                                 THEN max(last_seen, excluded.last_seen) ELSE excluded.last_seen END,
                path = excluded.path, workload_id = excluded.workload_id",
        )
        .bind(u64_bits(cgroup_id))
        .bind(row.path)
        .bind(workload_ids[row.workload])
        .bind(row.first_seen)
        .bind(row.last_seen)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Upserts every node of the plan and returns their ids, indexed like `plan.nodes`.
///
/// The ids come back as one text row per chunk rather than through `RETURNING`: sqlx hands rows over
/// one at a time between threads, and for 100,000 new nodes that cost more than the inserts did.
async fn upsert_nodes(
    conn: &mut SqliteConnection,
    plan: &Plan<'_>,
    workload_ids: &HashMap<&str, i64>,
    changes: &HashMap<&str, i64>,
) -> Result<Vec<i64>, WriteError> {
    let mut ids = Vec::with_capacity(plan.nodes.len());
    for chunk in pow2_chunks(&plan.nodes) {
        let sql = multi_row_sql(
            "INSERT INTO nodes
                (workload_id, kind, label, exe_dev, exe_ino, exe_memfd, exe_argv, first_seen, last_seen, changed)
             VALUES ",
            10,
            chunk.len(),
            // An argv sample is optional; keep the previous one rather than forget it.
            concat!(
                " ON CONFLICT (workload_id, kind, label) DO UPDATE SET
                    exe_dev = coalesce(excluded.exe_dev, exe_dev),
                    exe_ino = coalesce(excluded.exe_ino, exe_ino),
                    exe_memfd = coalesce(excluded.exe_memfd, exe_memfd),
                    exe_argv = coalesce(excluded.exe_argv, exe_argv),
                    changed = excluded.changed, ",
                widen_span!()
            ),
        );
        let mut query = sqlx::query(&sql);
        for ((workload, kind, label), row) in chunk {
            query = query
                .bind(workload_ids[workload])
                .bind(kind.as_str())
                .bind(*label)
                .bind(row.exe.map(|e| u64_bits(e.dev)))
                .bind(row.exe.map(|e| u64_bits(e.ino)))
                .bind(row.exe.map(|e| e.memfd))
                .bind(row.exe.and_then(|e| e.argv.as_deref()))
                .bind(row.first_seen)
                .bind(row.last_seen)
                .bind(changes[workload]);
        }
        query.execute(&mut *conn).await?;

        // `position:id` pairs, because an aggregate's input order is not promised. CROSS JOIN keeps
        // the VALUES rows as the outer loop: one probe of the nodes' unique index per node.
        let sql = multi_row_sql(
            "SELECT group_concat(v.column1 || ':' || n.id) FROM (VALUES ",
            4,
            chunk.len(),
            ") AS v CROSS JOIN nodes AS n
             WHERE n.workload_id = v.column2 AND n.kind = v.column3 AND n.label = v.column4",
        );
        let mut query = sqlx::query_scalar::<_, Option<String>>(&sql);
        for (position, ((workload, kind, label), _)) in chunk.iter().enumerate() {
            query = query.bind(position as i64).bind(workload_ids[workload]).bind(kind.as_str()).bind(*label);
        }
        let pairs = query.fetch_one(&mut *conn).await?.unwrap_or_default();
        let mut chunk_ids = vec![None; chunk.len()];
        for pair in pairs.split(',') {
            let parsed = pair
                .split_once(':')
                .and_then(|(p, id)| Some((p.parse::<usize>().ok()?, id.parse::<i64>().ok()?)));
            if let Some((Some(slot), id)) = parsed.map(|(position, id)| (chunk_ids.get_mut(position), id)) {
                *slot = Some(id);
            }
        }
        let found = chunk_ids.iter().flatten().count();
        if found != chunk.len() {
            return Err(WriteError::NodeIds { expected: chunk.len(), found });
        }
        ids.extend(chunk_ids.into_iter().flatten());
    }
    Ok(ids)
}

async fn upsert_edges(
    conn: &mut SqliteConnection,
    edges: &[(EdgeKey, EdgeStats)],
    plan: &Plan<'_>,
    workload_ids: &HashMap<&str, i64>,
    changes: &HashMap<&str, i64>,
    node_ids: &[i64],
) -> sqlx::Result<()> {
    let node_id = |workload: &str, node: &NodeRef| {
        node_ids[plan.node_index[&(workload, node.kind, node.label.as_str())]]
    };
    for chunk in pow2_chunks(edges) {
        let sql = multi_row_sql(
            "INSERT INTO edges
                (workload_id, kind, source_id, target_id, access, result, count, first_seen, last_seen, changed)
             VALUES ",
            10,
            chunk.len(),
            concat!(
                " ON CONFLICT (workload_id, kind, source_id, target_id, access, result) DO UPDATE SET ",
                saturating_count!(),
                ", changed = excluded.changed, ",
                widen_span!()
            ),
        );
        let mut query = sqlx::query(&sql);
        for (key, stats) in chunk {
            let w = key.workload.as_str();
            query = query
                .bind(workload_ids[w])
                .bind(key.kind.as_str())
                .bind(node_id(w, &key.source))
                .bind(node_id(w, &key.target))
                .bind(key.access.as_str())
                .bind(key.result.as_str())
                .bind(clamp_count(stats.count))
                .bind(stats.first_seen)
                .bind(stats.last_seen)
                .bind(changes[w]);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

async fn upsert_losses(
    conn: &mut SqliteConnection,
    plan: &Plan<'_>,
    workload_ids: &HashMap<&str, i64>,
) -> sqlx::Result<()> {
    let rows: Vec<_> = plan.losses.iter().collect();
    for chunk in pow2_chunks(&rows) {
        let sql = multi_row_sql(
            "INSERT INTO losses (workload_id, reason, bucket, count) VALUES ",
            4,
            chunk.len(),
            concat!(" ON CONFLICT (workload_id, reason, bucket) DO UPDATE SET ", saturating_count!()),
        );
        let mut query = sqlx::query(&sql);
        for ((workload, reason, bucket), count) in chunk {
            let workload_id = workload.map_or(UNATTRIBUTED, |w| workload_ids[w]);
            query = query.bind(workload_id).bind(reason.as_str()).bind(*bucket).bind(clamp_count(**count));
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

/// `head (?, …), (?, …) tail` with `rows` groups of `columns` placeholders.
pub(super) fn multi_row_sql(head: &str, columns: usize, rows: usize, tail: &str) -> String {
    let group = format!("({})", vec!["?"; columns].join(", "));
    let mut sql = String::with_capacity(head.len() + rows * (group.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&group);
    }
    sql.push_str(tail);
    sql
}

/// Splits `items` into chunks of `MAX_ROWS`, then of decreasing powers of two: any length is covered
/// by statements of at most log2(MAX_ROWS) + 1 distinct sizes.
pub(super) fn pow2_chunks<T>(mut items: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let n = if items.len() >= MAX_ROWS { MAX_ROWS } else { 1 << items.len().ilog2() };
        let (chunk, rest) = items.split_at(n);
        items = rest;
        Some(chunk)
    })
}

/// Start of the minute containing `at_ns`, in unix seconds.
pub(super) fn minute_bucket(at_ns: i64) -> i64 {
    at_ns.div_euclid(1_000_000_000).div_euclid(60) * 60
}

/// Counts are u64 in the model and i64 in SQLite; a count past i64::MAX is as good as saturated.
fn clamp_count(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Kernel identifiers (cgroup ids, dev, ino) are opaque 64-bit values: store their bits unchanged.
pub(super) fn u64_bits(value: u64) -> i64 {
    value as i64
}

pub(super) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn chunks_cover_every_length_with_few_sizes() {
        for len in [0, 1, 2, 3, 511, 512, 513, 1000, 1537, 20_000] {
            let items: Vec<usize> = (0..len).collect();
            let chunks: Vec<&[usize]> = pow2_chunks(&items).collect();
            assert_eq!(chunks.iter().map(|c| c.len()).sum::<usize>(), len);
            assert!(chunks.iter().all(|c| c.len().is_power_of_two() && c.len() <= MAX_ROWS), "{len}");
            assert_eq!(chunks.concat(), items);
        }
    }

    #[test]
    fn minute_buckets() {
        assert_eq!(minute_bucket(0), 0);
        assert_eq!(minute_bucket(59_999_999_999), 0);
        assert_eq!(minute_bucket(60_000_000_000), 60);
        assert_eq!(minute_bucket(-1), -60);
    }

    #[test]
    fn multi_row_placeholders() {
        assert_eq!(multi_row_sql("V ", 2, 3, ";"), "V (?, ?), (?, ?), (?, ?);");
    }
}
