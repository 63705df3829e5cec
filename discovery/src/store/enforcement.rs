//! What enforcement keeps in the database (migration 0002): each workload's modes and the policies
//! loaded for it, so a restarted daemon can re-apply them, and the deny / would-deny events the kernel
//! reported, for `stance events`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use sqlx::{SqliteConnection, SqlitePool};
use utoipa::ToSchema;

use super::{
    query::{bits_u64, rfc3339},
    write::{multi_row_sql, now_ns, pow2_chunks, u64_bits},
    Result, StoreError,
};
use crate::enforce::{Domain, Mode, Modes, Policy};

/// Where a stored policy's rules came from (`policies.source`).
pub const SOURCE_GRAPH: &str = "graph";
/// `policies.source` of a recommended version (`policies.version` says which).
pub const SOURCE_RECOMMEND: &str = "recommend";

/// Where a loaded policy came from: compiled from the graph as it was, or a recommended version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicySource {
    Graph,
    Recommend { version: u32 },
}

impl PolicySource {
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicySource::Graph => SOURCE_GRAPH,
            PolicySource::Recommend { .. } => SOURCE_RECOMMEND,
        }
    }

    fn version(self) -> Option<i64> {
        match self {
            PolicySource::Graph => None,
            PolicySource::Recommend { version } => Some(i64::from(version)),
        }
    }

    fn from_row(source: String, version: Option<i64>) -> Result<Self> {
        match (source.as_str(), version.map(u32::try_from)) {
            (SOURCE_GRAPH, _) => Ok(PolicySource::Graph),
            (SOURCE_RECOMMEND, Some(Ok(version))) => Ok(PolicySource::Recommend { version }),
            _ => Err(StoreError::Unrecognised { column: "policy source", value: source }),
        }
    }
}

/// A workload as enforcement needs it: its row id (the kernel's policy id), its cgroups, its modes
/// and the policy last loaded for it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadEnforcement {
    /// `workloads.id`: stable for the life of the database, so it doubles as the enforcer's policy id.
    pub id: i64,
    pub name: String,
    /// Every cgroup mapped to the workload, with its path under the cgroup2 mount. Some may be gone:
    /// the caller checks which still exist.
    pub cgroups: Vec<(u64, String)>,
    /// Observe for every domain that has no row.
    pub modes: Modes,
    /// The latest policy loaded, if any ever was.
    pub policy: Option<StoredPolicy>,
}

/// A policy as it was loaded into the kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPolicy {
    /// The enforcer's revision for that load.
    pub revision: u32,
    pub policy: Policy,
    /// What the policy is: re-recorded unchanged when a restarted daemon loads it again.
    pub source: PolicySource,
}

/// Deny (enforce mode: the action failed) or would-deny (audit mode: it was allowed and reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    Deny,
    WouldDeny,
}

impl VerdictKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            VerdictKind::Deny => "deny",
            VerdictKind::WouldDeny => "would-deny",
        }
    }

    pub const fn of(deny: bool) -> Self {
        if deny {
            VerdictKind::Deny
        } else {
            VerdictKind::WouldDeny
        }
    }
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VerdictKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "deny" => Ok(VerdictKind::Deny),
            "would-deny" => Ok(VerdictKind::WouldDeny),
            _ => Err(format!("unknown event kind '{s}' (expected deny or would-deny)")),
        }
    }
}

/// One deny or would-deny as the daemon hands it to the store (decoded from the kernel's record,
/// with the policy id already known to be the workload's row id and the time in unix ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictRecord {
    /// `workloads.id` (the kernel record's policy id). Records of an id the database does not know
    /// (maps pinned by a daemon that used another database) are not stored.
    pub workload_id: i64,
    pub domain: Domain,
    /// true: denied (enforce); false: would have been denied (audit).
    pub deny: bool,
    /// The path, binary, address (`a.b.c.d:port/proto`, `unix:PATH`) or capability name.
    pub object: String,
    /// The acting executable.
    pub actor: String,
    /// Process id (the kernel's tgid).
    pub pid: u32,
    /// Thread id (the kernel's pid).
    pub tid: u32,
    pub cgroup_id: u64,
    /// Unix time in nanoseconds.
    pub at: i64,
    /// The object's path could not be resolved in full.
    pub truncated: bool,
    /// A datagram sent without connect (network only).
    pub send: bool,
}

/// What `stance events` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub workload: Option<String>,
    pub kind: Option<VerdictKind>,
    /// Only events at or after this unix time (ns).
    pub since: Option<i64>,
    /// At most this many, newest first.
    pub limit: u32,
}

/// One line of `stance events`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnforcementEvent {
    /// The workload whose policy decided.
    pub workload: String,
    /// The domain whose rules decided.
    pub domain: Domain,
    /// `deny` or `would-deny`.
    pub kind: VerdictKind,
    /// What was acted on: a path, a binary, an address or a capability.
    pub object: String,
    /// The executable that acted.
    pub actor: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Process id.
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// The acting task's cgroup.
    pub cgroup_id: u64,
    /// The object's path was cut short (too deep or too long): denied in enforce mode.
    pub truncated: bool,
    /// A datagram sent without connect.
    pub send: bool,
}

pub(super) async fn workload_enforcement(pool: &SqlitePool, name: &str) -> Result<WorkloadEnforcement> {
    let read = |source| StoreError::Read { what: "a workload's enforcement state", source };
    let mut tx = pool.begin().await.map_err(read)?;
    let id = workload_id(&mut tx, name).await?;
    let state = enforcement_rows(&mut tx, id, name).await?;
    tx.commit().await.map_err(read)?;
    Ok(state)
}

pub(super) async fn enforced_workloads(pool: &SqlitePool) -> Result<Vec<WorkloadEnforcement>> {
    let read = |source| StoreError::Read { what: "the enforced workloads", source };
    let mut tx = pool.begin().await.map_err(read)?;
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT DISTINCT w.id, w.name FROM workload_modes AS m JOIN workloads AS w ON w.id = m.workload_id
         WHERE m.mode != ? ORDER BY w.name",
    )
    .bind(Mode::Observe.as_str())
    .fetch_all(&mut *tx)
    .await
    .map_err(read)?;
    let mut out = Vec::with_capacity(rows.len());
    for (id, name) in rows {
        out.push(enforcement_rows(&mut tx, id, &name).await?);
    }
    tx.commit().await.map_err(read)?;
    Ok(out)
}

pub(super) async fn workload_id(conn: &mut SqliteConnection, name: &str) -> Result<i64> {
    sqlx::query_scalar("SELECT id FROM workloads WHERE name = ?")
        .bind(name)
        .fetch_optional(conn)
        .await
        .map_err(|source| StoreError::Read { what: "a workload id", source })?
        .ok_or_else(|| StoreError::UnknownWorkload { name: name.to_owned() })
}

async fn enforcement_rows(conn: &mut SqliteConnection, id: i64, name: &str) -> Result<WorkloadEnforcement> {
    let read = |source| StoreError::Read { what: "a workload's enforcement state", source };
    let cgroups: Vec<(i64, String)> =
        sqlx::query_as("SELECT cgroup_id, path FROM cgroups WHERE workload_id = ? ORDER BY cgroup_id")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(read)?;
    let modes_rows: Vec<(String, String)> =
        sqlx::query_as("SELECT domain, mode FROM workload_modes WHERE workload_id = ?")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(read)?;
    let policy: Option<(i64, String, String, Option<i64>)> = sqlx::query_as(
        "SELECT revision, body_json, source, version FROM policies WHERE workload_id = ? ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(read)?;

    let mut modes = Modes::default();
    for (domain, mode) in modes_rows {
        modes.set(parse(domain, "domain")?, parse(mode, "mode")?);
    }
    let policy = match policy {
        None => None,
        Some((revision, body, source, version)) => Some(StoredPolicy {
            revision: u32::try_from(revision).map_err(|_| StoreError::Unrecognised {
                column: "policy revision",
                value: revision.to_string(),
            })?,
            policy: serde_json::from_str(&body)
                .map_err(|source| StoreError::PolicyJson { workload: name.to_owned(), source })?,
            source: PolicySource::from_row(source, version)?,
        }),
    };
    Ok(WorkloadEnforcement {
        id,
        name: name.to_owned(),
        cgroups: cgroups.into_iter().map(|(cg, path)| (bits_u64(cg), path)).collect(),
        modes,
        policy,
    })
}

fn parse<T: FromStr>(value: String, column: &'static str) -> Result<T> {
    value.parse().map_err(|_| StoreError::Unrecognised { column, value })
}

/// Stores the modes of every domain and, when a policy was loaded, that policy: in one transaction,
/// so a restart never finds new modes with an old policy or the reverse.
pub(super) async fn record_enforcement(
    pool: &SqlitePool,
    workload: &WorkloadEnforcement,
    modes: Modes,
    loaded: Option<(u32, &Policy, PolicySource)>,
) -> Result<()> {
    let record = |source| StoreError::Record { what: "a workload's modes and policy", source };
    let body = match loaded {
        None => None,
        Some((revision, policy, source)) => Some((
            revision,
            source,
            serde_json::to_string(policy)
                .map_err(|source| StoreError::PolicyJson { workload: workload.name.clone(), source })?,
        )),
    };
    let now = now_ns();
    let mut tx = pool.begin_with(super::WRITE_TX).await.map_err(record)?;
    for d in Domain::ALL {
        sqlx::query(
            "INSERT INTO workload_modes (workload_id, domain, mode, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (workload_id, domain) DO UPDATE SET mode = excluded.mode, updated_at = excluded.updated_at",
        )
        .bind(workload.id)
        .bind(d.as_str())
        .bind(modes.get(d).as_str())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(record)?;
    }
    if let Some((revision, source, body)) = body {
        sqlx::query(
            "INSERT INTO policies (workload_id, revision, source, version, body_json, created_at)
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(workload.id)
        .bind(i64::from(revision))
        .bind(source.as_str())
        .bind(source.version())
        .bind(body)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(record)?;
    }
    tx.commit().await.map_err(record)
}

/// Stores verdicts in one transaction, many rows per statement; returns how many were stored (records
/// of unknown workload ids are skipped rather than failing the batch).
pub(super) async fn write_verdicts(pool: &SqlitePool, verdicts: &[VerdictRecord]) -> Result<u64> {
    const COLUMNS: usize = 11;
    let record = |source| StoreError::Record { what: "enforcement events", source };
    if verdicts.is_empty() {
        return Ok(0);
    }
    let mut stored = 0;
    let mut tx = pool.begin_with(super::WRITE_TX).await.map_err(record)?;
    for chunk in pow2_chunks(verdicts) {
        let sql = multi_row_sql(
            "INSERT INTO enforcement_events
                (workload_id, at, domain, kind, object, actor, pid, tid, cgroup_id, truncated, send)
             SELECT * FROM (VALUES ",
            COLUMNS,
            chunk.len(),
            ") AS v WHERE v.column1 IN (SELECT id FROM workloads)",
        );
        let mut query = sqlx::query(&sql);
        for v in chunk {
            query = query
                .bind(v.workload_id)
                .bind(v.at)
                .bind(v.domain.as_str())
                .bind(VerdictKind::of(v.deny).as_str())
                .bind(&v.object)
                .bind(&v.actor)
                .bind(i64::from(v.pid))
                .bind(i64::from(v.tid))
                .bind(u64_bits(v.cgroup_id))
                .bind(v.truncated)
                .bind(v.send);
        }
        stored += query.execute(&mut *tx).await.map_err(record)?.rows_affected();
    }
    tx.commit().await.map_err(record)?;
    Ok(stored)
}

#[derive(sqlx::FromRow)]
struct EventRow {
    name: String,
    at: i64,
    domain: String,
    kind: String,
    object: String,
    actor: String,
    pid: i64,
    tid: i64,
    cgroup_id: i64,
    truncated: bool,
    send: bool,
}

pub(super) async fn events(pool: &SqlitePool, filter: &EventFilter) -> Result<Vec<EnforcementEvent>> {
    let read = |source| StoreError::Read { what: "enforcement events", source };
    let mut tx = pool.begin().await.map_err(read)?;
    let workload_id = match &filter.workload {
        Some(name) => Some(workload_id(&mut tx, name).await?),
        None => None,
    };
    // Only the conditions asked for, so SQLite can pick the (workload_id, at) or (at) index.
    let mut sql = String::from(
        "SELECT w.name, e.at, e.domain, e.kind, e.object, e.actor, e.pid, e.tid, e.cgroup_id, e.truncated, e.send
         FROM enforcement_events AS e JOIN workloads AS w ON w.id = e.workload_id WHERE 1",
    );
    if workload_id.is_some() {
        sql.push_str(" AND e.workload_id = ?");
    }
    if filter.kind.is_some() {
        sql.push_str(" AND e.kind = ?");
    }
    if filter.since.is_some() {
        sql.push_str(" AND e.at >= ?");
    }
    sql.push_str(" ORDER BY e.at DESC, e.id DESC LIMIT ?");
    let mut query = sqlx::query_as::<_, EventRow>(&sql);
    if let Some(id) = workload_id {
        query = query.bind(id);
    }
    if let Some(kind) = filter.kind {
        query = query.bind(kind.as_str());
    }
    if let Some(since) = filter.since {
        query = query.bind(since);
    }
    let rows = query.bind(i64::from(filter.limit)).fetch_all(&mut *tx).await.map_err(read)?;
    tx.commit().await.map_err(read)?;
    rows.into_iter()
        .map(|r| {
            Ok(EnforcementEvent {
                workload: r.name,
                domain: parse(r.domain, "event domain")?,
                kind: parse(r.kind, "event kind")?,
                object: r.object,
                actor: r.actor,
                at: rfc3339(r.at),
                pid: u32::try_from(r.pid).unwrap_or(0),
                tid: u32::try_from(r.tid).unwrap_or(0),
                cgroup_id: bits_u64(r.cgroup_id),
                truncated: r.truncated,
                send: r.send,
            })
        })
        .collect()
}
