//! Reading the behaviour graph back: the workload list and one workload's graph, as serialisable
//! values the CLI prints as JSON or hands to `render`.
//!
//! Each answer is read inside one transaction, so it is a consistent snapshot even while the daemon
//! commits batches. Ids in the output (`n12`, `e7`) are the database row ids: stable for the life of
//! the database, so two reads of the same graph can be compared.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, UNIX_EPOCH},
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use sqlx::{SqliteConnection, SqlitePool};
use utoipa::ToSchema;

use super::{write::UNATTRIBUTED, Result, StoreError};
use crate::model::{EdgeKind, LossReason, NodeKind, WorkloadKind};

/// Who a workload is and when it was active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkloadInfo {
    /// The key of every query (`stance graph NAME`).
    pub name: String,
    /// Host, launched, systemd unit or container: decides how exports select the workload.
    pub kind: WorkloadKind,
    /// Container runtime, for containers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// Full container id, for containers (the latest one when a name was reused).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// systemd unit name, for units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    /// Kubernetes pod UID, when the cgroup path carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// First observation (RFC 3339, UTC).
    pub first_seen: String,
    /// Latest observation (RFC 3339, UTC): tells a live workload from a gone one.
    pub last_seen: String,
}

/// One line of `stance workloads`: a workload and the size of what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WorkloadSummary {
    /// Identity and activity span.
    #[serde(flatten)]
    pub workload: WorkloadInfo,
    /// Cgroups currently mapped to the workload.
    pub cgroups: u64,
    /// Distinct edges (not observations): the size of the graph a policy must cover.
    pub edges: u64,
    /// Distinct executables.
    pub executables: u64,
    /// Distinct files.
    pub files: u64,
    /// Distinct network or unix endpoints.
    pub endpoints: u64,
    /// Distinct capabilities checked.
    pub capabilities: u64,
    /// Observations lost for this workload: a non-zero count means the graph may be incomplete.
    pub losses: LossSummary,
}

/// Lost observations, total and per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LossSummary {
    /// Sum over every reason.
    pub total: u64,
    /// Per reason, only reasons that occurred.
    pub by_reason: BTreeMap<LossReason, u64>,
}

/// `stance graph NAME`: one workload's nodes and edges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Graph {
    /// Whose graph this is.
    pub workload: WorkloadInfo,
    /// Sorted by kind, then label.
    pub nodes: Vec<GraphNode>,
    /// Sorted by kind, then source label, target label, access and result.
    pub edges: Vec<GraphEdge>,
    /// What the graph may be missing.
    pub losses: GraphLosses,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GraphNode {
    /// `n` and the row id; what edges' `source` and `target` refer to.
    pub id: String,
    /// What the node stands for.
    pub kind: NodeKind,
    /// The plain name: a path, `addr:port/proto`, a capability name, or the workload's name.
    pub label: String,
    /// Device of an executable's file, so enforcement can match the file and not only its path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev: Option<u64>,
    /// Inode of an executable's file, for the same reason as `dev`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ino: Option<u64>,
    /// True for an anonymous (memfd) executable, which has no path to allow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memfd: Option<bool>,
    /// The last argv sampled for an executable: context for a person reviewing the graph.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub argv: Option<String>,
    /// First edge touching the node (RFC 3339).
    pub first_seen: String,
    /// Latest edge touching the node (RFC 3339).
    pub last_seen: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GraphEdge {
    /// `e` and the row id.
    pub id: String,
    /// What was done.
    pub kind: EdgeKind,
    /// Id of the source node.
    pub source: String,
    /// Id of the target node.
    pub target: String,
    /// Label of the source node, so the edge reads on its own.
    pub source_label: String,
    /// Label of the target node, so the edge reads on its own.
    pub target_label: String,
    /// The executable that acted: the source for every kind (for `exec`, the source is the parent
    /// that started the target). Spelled out so a consumer need not know that per kind.
    pub actor: String,
    /// Access mode in the model's canonical text (`read,write`, `tcp`, …); empty where meaningless.
    pub access: String,
    /// `ok`, an errno name, or `granted`/`denied` for capabilities.
    pub result: String,
    /// Observations merged into this edge.
    pub count: u64,
    /// First observation (RFC 3339).
    pub first_seen: String,
    /// Latest observation (RFC 3339).
    pub last_seen: String,
}

/// A workload's losses with the minutes they happened in, to line them up with gaps in the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct GraphLosses {
    /// Sum over every reason and minute.
    pub total: u64,
    /// Per reason, over every minute.
    pub by_reason: BTreeMap<LossReason, u64>,
    /// Per minute and reason, oldest first.
    pub by_minute: Vec<LossBucket>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LossBucket {
    /// Start of the minute (RFC 3339).
    pub minute: String,
    /// Why the observations were lost.
    pub reason: LossReason,
    /// How many were lost in that minute.
    pub count: u64,
}

#[derive(sqlx::FromRow)]
struct WorkloadRow {
    id: i64,
    name: String,
    kind: String,
    runtime: Option<String>,
    container_id: Option<String>,
    unit: Option<String>,
    pod_uid: Option<String>,
    first_seen: i64,
    last_seen: i64,
    /// With `id`, the graph's stamp (migration 0005).
    graph_changes: i64,
}

impl WorkloadRow {
    fn into_info(self) -> Result<WorkloadInfo> {
        let kind = WorkloadKind::parse(&self.kind)
            .ok_or(StoreError::Unrecognised { column: "workload kind", value: self.kind })?;
        Ok(WorkloadInfo {
            name: self.name,
            kind,
            runtime: self.runtime,
            container_id: self.container_id,
            unit: self.unit,
            pod_uid: self.pod_uid,
            first_seen: rfc3339(self.first_seen),
            last_seen: rfc3339(self.last_seen),
        })
    }
}

/// A node as `graph_rows` reads it: the fields in the order of its query's `json_array`, which a
/// derived `Deserialize` accepts as a JSON array.
#[derive(Deserialize)]
struct NodeRow {
    id: i64,
    kind: String,
    label: String,
    exe_dev: Option<i64>,
    exe_ino: Option<i64>,
    exe_memfd: Option<i64>,
    exe_argv: Option<String>,
    first_seen: i64,
    last_seen: i64,
}

/// An edge as `graph_rows` reads it, like `NodeRow`.
#[derive(Deserialize)]
struct EdgeRow {
    id: i64,
    kind: String,
    source_id: i64,
    target_id: i64,
    access: String,
    result: String,
    count: i64,
    first_seen: i64,
    last_seen: i64,
}

const WORKLOAD_COLUMNS: &str =
    "id, name, kind, runtime, container_id, unit, pod_uid, first_seen, last_seen, graph_changes";

pub(super) async fn workloads(pool: &SqlitePool) -> Result<Vec<WorkloadSummary>> {
    let read = |source| StoreError::Read { what: "the workload list", source };
    let mut tx = pool.begin().await.map_err(read)?;
    let rows: Vec<WorkloadRow> =
        sqlx::query_as(&format!("SELECT {WORKLOAD_COLUMNS} FROM workloads ORDER BY name"))
            .fetch_all(&mut *tx)
            .await
            .map_err(read)?;
    let cgroups: HashMap<i64, i64> =
        sqlx::query_as("SELECT workload_id, count(*) FROM cgroups GROUP BY workload_id")
            .fetch_all(&mut *tx)
            .await
            .map_err(read)?
            .into_iter()
            .collect();
    let edges: HashMap<i64, i64> =
        sqlx::query_as("SELECT workload_id, count(*) FROM edges GROUP BY workload_id")
            .fetch_all(&mut *tx)
            .await
            .map_err(read)?
            .into_iter()
            .collect();
    let nodes: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT workload_id, kind, count(*) FROM nodes GROUP BY workload_id, kind")
            .fetch_all(&mut *tx)
            .await
            .map_err(read)?;
    let losses: Vec<(i64, String, i64)> =
        sqlx::query_as("SELECT workload_id, reason, sum(count) FROM losses GROUP BY workload_id, reason")
            .fetch_all(&mut *tx)
            .await
            .map_err(read)?;
    tx.commit().await.map_err(read)?;

    let mut node_counts: HashMap<(i64, NodeKind), u64> = HashMap::new();
    for (workload_id, kind, count) in nodes {
        let kind =
            NodeKind::parse(&kind).ok_or(StoreError::Unrecognised { column: "node kind", value: kind })?;
        node_counts.insert((workload_id, kind), to_u64(count));
    }
    let mut loss_summaries: HashMap<i64, LossSummary> = HashMap::new();
    for (workload_id, reason, count) in losses {
        loss_summaries.entry(workload_id).or_default().add(parse_reason(reason)?, to_u64(count));
    }

    rows.into_iter()
        .map(|row| {
            let id = row.id;
            let nodes_of = |kind| node_counts.get(&(id, kind)).copied().unwrap_or(0);
            Ok(WorkloadSummary {
                cgroups: cgroups.get(&id).copied().map_or(0, to_u64),
                edges: edges.get(&id).copied().map_or(0, to_u64),
                executables: nodes_of(NodeKind::Executable),
                files: nodes_of(NodeKind::File),
                endpoints: nodes_of(NodeKind::Endpoint),
                capabilities: nodes_of(NodeKind::Capability),
                losses: loss_summaries.remove(&id).unwrap_or_default(),
                workload: row.into_info()?,
            })
        })
        .collect()
}

/// A workload's row id and how many batches have changed its graph (migration 0005). The id is part
/// of it because a database can be replaced under the same workload name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphStamp {
    pub workload_id: i64,
    pub changes: i64,
}

pub(super) async fn graph_stamp(pool: &SqlitePool, workload: &str) -> Result<GraphStamp> {
    let row: Option<(i64, i64)> = sqlx::query_as("SELECT id, graph_changes FROM workloads WHERE name = ?")
        .bind(workload)
        .fetch_optional(pool)
        .await
        .map_err(|source| StoreError::Read { what: "a workload's graph stamp", source })?;
    match row {
        Some((workload_id, changes)) => Ok(GraphStamp { workload_id, changes }),
        None => Err(StoreError::UnknownWorkload { name: workload.to_owned() }),
    }
}

pub(super) async fn graph(pool: &SqlitePool, workload: &str) -> Result<Graph> {
    Ok(graph_at(pool, workload).await?.0)
}

/// One workload's identity and activity span, without the counts `workloads` computes.
pub(super) async fn workload_info(pool: &SqlitePool, workload: &str) -> Result<WorkloadInfo> {
    let mut conn = pool.acquire().await.map_err(|source| StoreError::Read { what: "a workload", source })?;
    workload_at(&mut conn, workload).await?.0.into_info()
}

/// The workload's row and its graph stamp, in the caller's transaction.
async fn workload_at(conn: &mut SqliteConnection, workload: &str) -> Result<(WorkloadRow, GraphStamp)> {
    let read = |source| StoreError::Read { what: "a workload graph", source };
    let row: Option<WorkloadRow> =
        sqlx::query_as(&format!("SELECT {WORKLOAD_COLUMNS} FROM workloads WHERE name = ?"))
            .bind(workload)
            .fetch_optional(&mut *conn)
            .await
            .map_err(read)?;
    let Some(row) = row else {
        return Err(StoreError::UnknownWorkload { name: workload.to_owned() });
    };
    let stamp = GraphStamp { workload_id: row.id, changes: row.graph_changes };
    Ok((row, stamp))
}

/// The graph and the stamp of the state it is, read in one transaction.
pub(super) async fn graph_at(pool: &SqlitePool, workload: &str) -> Result<(Graph, GraphStamp)> {
    let read = |source| StoreError::Read { what: "a workload graph", source };
    let mut tx = pool.begin().await.map_err(read)?;
    let (row, stamp) = workload_at(&mut tx, workload).await?;
    let (mut nodes, mut edges, losses) = graph_rows(&mut tx, row.id, None).await.map_err(read)?;
    tx.commit().await.map_err(read)?;

    // Pages come in row-id order already; sorted, an edge's ends are found by binary search.
    nodes.sort_unstable_by_key(|n| n.id);
    let node_kinds = nodes.iter().map(|n| node_kind(&n.kind)).collect::<Result<Vec<_>>>()?;
    let mut node_ids: Vec<String> = nodes.iter().map(|n| format!("n{}", n.id)).collect();
    let node_of = |node_id: i64| -> Result<usize> {
        nodes.binary_search_by_key(&node_id, |n| n.id).map_err(|_| missing_node(node_id))
    };
    // Edges sort by their nodes' labels. Ranking the labels once lets the sort compare integers
    // instead of paths (some 1.7 million comparisons for 100,000 edges); equal labels get equal
    // ranks, so the order is the labels' order (`edge_order` is the same order, by label). Indices
    // are sorted rather than the edges themselves, which would move hundreds of bytes per swap.
    let rank = label_ranks(&nodes);
    let mut ends = Vec::with_capacity(edges.len());
    for e in &edges {
        ends.push((edge_kind(&e.kind)?, node_of(e.source_id)?, node_of(e.target_id)?));
    }
    let mut order: Vec<usize> = (0..edges.len()).collect();
    // The row id last: two edges whose labels, access and result are all equal (possible only
    // between nodes of different kinds with one label) keep one order from read to read.
    order.sort_unstable_by_key(|&i| {
        let (kind, s, t) = ends[i];
        (kind, rank[s], rank[t], edges[i].access.as_str(), edges[i].result.as_str(), edges[i].id)
    });
    let mut graph_edges = Vec::with_capacity(edges.len());
    for i in order {
        let (kind, s, t) = ends[i];
        graph_edges.push(graph_edge(
            &mut edges[i],
            kind,
            (&node_ids[s], &nodes[s].label),
            (&node_ids[t], &nodes[t].label),
        ));
    }
    drop(edges);
    // (kind, label) is unique per workload (the table's key), so no tie is left to order.
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_unstable_by_key(|&i| (node_kinds[i], rank[i]));
    let mut graph_nodes = Vec::with_capacity(nodes.len());
    for i in order {
        graph_nodes.push(graph_node(&mut nodes[i], std::mem::take(&mut node_ids[i]), node_kinds[i]));
    }
    let graph = Graph {
        workload: row.into_info()?,
        nodes: graph_nodes,
        edges: graph_edges,
        losses: graph_losses(losses)?,
    };
    Ok((graph, stamp))
}

/// Brings `graph`, read at `since`, up to the state in the database now, reading only the nodes and
/// edges that changed after `since` (migration 0005) and the losses. Returns the new stamp, or None
/// when the name now belongs to another workload row (a replaced database): read it in full then.
pub(super) async fn refresh_graph(
    pool: &SqlitePool,
    graph: &mut Graph,
    since: GraphStamp,
) -> Result<Option<GraphStamp>> {
    let read = |source| StoreError::Read { what: "a workload graph", source };
    let mut tx = pool.begin().await.map_err(read)?;
    let (row, stamp) = workload_at(&mut tx, &graph.workload.name).await?;
    if row.id != since.workload_id || stamp.changes < since.changes {
        return Ok(None);
    }
    if stamp == since {
        return Ok(Some(stamp));
    }
    let (nodes, edges, losses) = graph_rows(&mut tx, row.id, Some(since.changes)).await.map_err(read)?;
    tx.commit().await.map_err(read)?;
    apply_changes(graph, nodes, edges)?;
    graph.workload = row.into_info()?;
    graph.losses = graph_losses(losses)?;
    Ok(Some(stamp))
}

/// Updates the nodes and edges that exist, adds the new ones, and puts the graph back in the order
/// `graph_at` reads it in.
fn apply_changes(graph: &mut Graph, mut nodes: Vec<NodeRow>, mut edges: Vec<EdgeRow>) -> Result<()> {
    let row_id = |id: &str| id[1..].parse::<i64>().ok();
    let mut node_at: HashMap<i64, usize> =
        graph.nodes.iter().enumerate().filter_map(|(i, n)| Some((row_id(&n.id)?, i))).collect();
    let before = graph.nodes.len();
    for n in &mut nodes {
        let kind = node_kind(&n.kind)?;
        match node_at.get(&n.id) {
            Some(&i) => graph.nodes[i] = graph_node(n, std::mem::take(&mut graph.nodes[i].id), kind),
            None => {
                node_at.insert(n.id, graph.nodes.len());
                graph.nodes.push(graph_node(n, format!("n{}", n.id), kind));
            }
        }
    }
    let edge_at: HashMap<i64, usize> =
        graph.edges.iter().enumerate().filter_map(|(i, e)| Some((row_id(&e.id)?, i))).collect();
    let mut added = false;
    for e in &mut edges {
        match edge_at.get(&e.id) {
            // Only counts and times change in an existing edge (see the migration).
            Some(&i) => {
                let old = &mut graph.edges[i];
                old.count = to_u64(e.count);
                old.first_seen = rfc3339(e.first_seen);
                old.last_seen = rfc3339(e.last_seen);
            }
            None => {
                let end = |id: i64| node_at.get(&id).copied().ok_or_else(|| missing_node(id));
                let (s, t) = (&graph.nodes[end(e.source_id)?], &graph.nodes[end(e.target_id)?]);
                let edge = graph_edge(e, edge_kind(&e.kind)?, (&s.id, &s.label), (&t.id, &t.label));
                graph.edges.push(edge);
                added = true;
            }
        }
    }
    // New rows go to the end; a stable sort finds the sorted run before them and merges.
    if graph.nodes.len() != before {
        graph.nodes.sort_by(|a, b| (a.kind, &a.label).cmp(&(b.kind, &b.label)));
    }
    if added {
        graph.edges.sort_by(edge_order);
    }
    Ok(())
}

/// The order of a graph's edges: kind, source label, target label, access, result, then row id.
fn edge_order(a: &GraphEdge, b: &GraphEdge) -> std::cmp::Ordering {
    fn key(e: &GraphEdge) -> (EdgeKind, &str, &str, &str, &str) {
        (e.kind, &e.source_label, &e.target_label, &e.access, &e.result)
    }
    // The row id only breaks ties, so it is parsed only then.
    let row_id = |e: &GraphEdge| e.id.get(1..).and_then(|n| n.parse::<i64>().ok()).unwrap_or(i64::MAX);
    key(a).cmp(&key(b)).then_with(|| row_id(a).cmp(&row_id(b)))
}

fn node_kind(kind: &str) -> Result<NodeKind> {
    NodeKind::parse(kind)
        .ok_or_else(|| StoreError::Unrecognised { column: "node kind", value: kind.to_owned() })
}

fn edge_kind(kind: &str) -> Result<EdgeKind> {
    EdgeKind::parse(kind)
        .ok_or_else(|| StoreError::Unrecognised { column: "edge kind", value: kind.to_owned() })
}

fn missing_node(node_id: i64) -> StoreError {
    StoreError::Unrecognised { column: "edge node", value: format!("n{node_id}") }
}

/// A node of the graph from its row (whose strings it takes).
fn graph_node(n: &mut NodeRow, id: String, kind: NodeKind) -> GraphNode {
    GraphNode {
        id,
        kind,
        label: std::mem::take(&mut n.label),
        dev: n.exe_dev.map(bits_u64),
        ino: n.exe_ino.map(bits_u64),
        memfd: n.exe_memfd.map(|m| m != 0),
        argv: n.exe_argv.take(),
        first_seen: rfc3339(n.first_seen),
        last_seen: rfc3339(n.last_seen),
    }
}

/// An edge of the graph from its row (whose strings it takes) and its ends' (id, label).
fn graph_edge(e: &mut EdgeRow, kind: EdgeKind, source: (&str, &str), target: (&str, &str)) -> GraphEdge {
    GraphEdge {
        id: format!("e{}", e.id),
        kind,
        source: source.0.to_owned(),
        target: target.0.to_owned(),
        actor: source.1.to_owned(),
        source_label: source.1.to_owned(),
        target_label: target.1.to_owned(),
        access: std::mem::take(&mut e.access),
        result: std::mem::take(&mut e.result),
        count: to_u64(e.count),
        first_seen: rfc3339(e.first_seen),
        last_seen: rfc3339(e.last_seen),
    }
}

fn graph_losses(losses: Vec<(String, i64, i64)>) -> Result<GraphLosses> {
    let mut graph_losses = GraphLosses::default();
    let mut by_minute = Vec::with_capacity(losses.len());
    for (reason, bucket, count) in losses {
        let reason = parse_reason(reason)?;
        let count = to_u64(count);
        graph_losses.total = graph_losses.total.saturating_add(count);
        let by_reason = graph_losses.by_reason.entry(reason).or_default();
        *by_reason = by_reason.saturating_add(count);
        by_minute.push((
            bucket,
            LossBucket { minute: rfc3339(bucket.saturating_mul(1_000_000_000)), reason, count },
        ));
    }
    by_minute.sort_by_key(|(bucket, b)| (*bucket, b.reason));
    graph_losses.by_minute = by_minute.into_iter().map(|(_, b)| b).collect();
    Ok(graph_losses)
}

/// Each node's rank among the distinct labels of `nodes`, in label order.
fn label_ranks(nodes: &[NodeRow]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..nodes.len()).collect();
    order.sort_unstable_by(|&a, &b| nodes[a].label.cmp(&nodes[b].label));
    let mut rank = vec![0; nodes.len()];
    let mut current = 0u32;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && nodes[order[k - 1]].label != nodes[i].label {
            current += 1;
        }
        rank[i] = current;
    }
    rank
}

type GraphRows = (Vec<NodeRow>, Vec<EdgeRow>, Vec<(String, i64, i64)>);

/// Rows per page when a graph is read. sqlx hands every result row from its SQLite thread to the
/// caller with a channel message and one allocation per column: for a graph's many small rows that
/// cost more than SQLite's own work (2 s for 100,000 edges). So SQLite packs a page of rows into one
/// JSON array, one result row, decoded here in one pass. Paging keeps each array a few MB, far below
/// SQLite's 1 GB string limit, however large the graph.
const PAGE_ROWS: i64 = 8192;

/// The workload's nodes, edges and losses; with `changed_after`, only the nodes and edges that a batch
/// after that change number wrote (the losses are always all of them).
async fn graph_rows(
    conn: &mut SqliteConnection,
    workload_id: i64,
    changed_after: Option<i64>,
) -> sqlx::Result<GraphRows> {
    let nodes = paged(
        conn,
        "json_array(id, kind, label, exe_dev, exe_ino, exe_memfd, exe_argv, first_seen, last_seen)",
        "nodes",
        (workload_id, changed_after),
        |n: &NodeRow| n.id,
    )
    .await?;
    let edges = paged(
        conn,
        "json_array(id, kind, source_id, target_id, access, result, count, first_seen, last_seen)",
        "edges",
        (workload_id, changed_after),
        |e: &EdgeRow| e.id,
    )
    .await?;
    let losses = sqlx::query_as("SELECT reason, bucket, count FROM losses WHERE workload_id = ?")
        .bind(workload_id)
        .fetch_all(&mut *conn)
        .await?;
    Ok((nodes, edges, losses))
}

/// Every row of `table` that belongs to the workload, as `row` (a `json_array` of its columns)
/// decodes into `T`, in row-id order, a page at a time (`PAGE_ROWS`). Each page is a range of the
/// `<table>_by_workload` index (migration 0004).
async fn paged<T: DeserializeOwned>(
    conn: &mut SqliteConnection,
    row: &str,
    table: &str,
    (workload_id, changed_after): (i64, Option<i64>),
    id_of: fn(&T) -> i64,
) -> sqlx::Result<Vec<T>> {
    // The change filter is a scan of the workload's index range either way: `changed` has no index,
    // which would cost the writer an index update for every edge it counts again.
    let sql = format!(
        "SELECT json_group_array({row}) FROM
           (SELECT * FROM {table} WHERE workload_id = ? AND id > ? AND changed > ? ORDER BY id LIMIT {PAGE_ROWS})"
    );
    let mut rows = Vec::new();
    let mut after = i64::MIN;
    loop {
        let page: String = sqlx::query_scalar(&sql)
            .bind(workload_id)
            .bind(after)
            .bind(changed_after.unwrap_or(i64::MIN))
            .fetch_one(&mut *conn)
            .await?;
        let page: Vec<T> = serde_json::from_str(&page).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let full = i64::try_from(page.len()).is_ok_and(|n| n == PAGE_ROWS);
        // The largest id, not the last: SQL promises no order inside an aggregate.
        after = page.iter().map(id_of).max().unwrap_or(after);
        rows.extend(page);
        if !full {
            return Ok(rows);
        }
    }
}

pub(super) async fn unattributed_losses(pool: &SqlitePool) -> Result<LossSummary> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT reason, sum(count) FROM losses WHERE workload_id = ? GROUP BY reason")
            .bind(UNATTRIBUTED)
            .fetch_all(pool)
            .await
            .map_err(|source| StoreError::Read { what: "unattributed losses", source })?;
    let mut summary = LossSummary::default();
    for (reason, count) in rows {
        summary.add(parse_reason(reason)?, to_u64(count));
    }
    Ok(summary)
}

impl LossSummary {
    fn add(&mut self, reason: LossReason, count: u64) {
        self.total = self.total.saturating_add(count);
        let entry = self.by_reason.entry(reason).or_default();
        *entry = entry.saturating_add(count);
    }
}

fn parse_reason(reason: String) -> Result<LossReason> {
    LossReason::parse(&reason).ok_or(StoreError::Unrecognised { column: "loss reason", value: reason })
}

/// Unix nanoseconds as RFC 3339 with milliseconds. Times before 1970 only come from a broken clock and
/// print as the epoch rather than panic the formatter.
pub(super) fn rfc3339(unix_ns: i64) -> String {
    use std::fmt::Write;
    let since_epoch = Duration::from_nanos(u64::try_from(unix_ns).unwrap_or(0));
    // `2023-11-14T22:13:20.000Z`, 24 bytes: allocated once, where `to_string` would grow the text
    // three times (four graph times per edge and node add up).
    let mut text = String::with_capacity(24);
    write!(text, "{}", humantime::format_rfc3339_millis(UNIX_EPOCH + since_epoch))
        .expect("writing to a String cannot fail");
    text
}

/// Counts are never negative in the database; treat one that is as zero rather than wrap.
fn to_u64(count: i64) -> u64 {
    u64::try_from(count).unwrap_or(0)
}

/// Inverse of the writer's bit-preserving store of kernel identifiers.
pub(super) fn bits_u64(value: i64) -> u64 {
    value as u64
}
