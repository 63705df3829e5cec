//! What the recommender keeps in the database (migration 0003): each workload's policy versions with
//! the evidence they were made from, and the rules adopted from deny / would-deny events.
//!
//! The store does not interpret evidence or adopted rules: they are the recommender's JSON, kept and
//! returned as is, so data flows one way (store → recommend).

use serde_json::Value;
use sqlx::SqlitePool;

use super::{
    enforcement::workload_id,
    query::rfc3339,
    write::{now_ns, UNATTRIBUTED},
    Result, StoreError,
};
use crate::enforce::Policy;

/// `policy_versions.origin` of a version collapsed from the behaviour graph.
pub const ORIGIN_RECOMMEND: &str = "recommend";
/// `policy_versions.origin` of a version made by adopting a proposed addition.
pub const ORIGIN_ACCEPT: &str = "accept";

/// One stored version of a workload's recommended policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyVersion {
    /// Counts from 1 per workload.
    pub version: u32,
    /// `recommend` or `accept`.
    pub origin: String,
    pub policy: Policy,
    /// The recommender's evidence for the rules, as it was when the version was made.
    pub evidence: Value,
    /// RFC 3339.
    pub created_at: String,
    /// Unix ns, for comparisons.
    pub created_ns: i64,
}

/// A rule adopted with `stance policy accept`.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedRule {
    pub rule_id: String,
    /// The recommender's rule, as it stored it.
    pub rule: Value,
    /// The version it was adopted into.
    pub version: u32,
}

/// A new version to write, and the rule it adopts if it is an `accept`.
pub struct NewVersion<'a> {
    pub origin: &'static str,
    pub policy: &'a Policy,
    pub evidence: &'a Value,
    /// `(rule id, rule)` adopted into this version.
    pub accepted: Option<(&'a str, &'a Value)>,
}

#[derive(sqlx::FromRow)]
struct VersionRow {
    version: i64,
    origin: String,
    body_json: String,
    evidence_json: String,
    created_at: i64,
}

fn read_err(source: sqlx::Error) -> StoreError {
    StoreError::Read { what: "policy versions", source }
}

fn version_u32(value: i64) -> Result<u32> {
    u32::try_from(value)
        .map_err(|_| StoreError::Unrecognised { column: "policy version", value: value.to_string() })
}

/// Every version number of the workload, oldest first.
pub(super) async fn version_numbers(pool: &SqlitePool, workload: &str) -> Result<Vec<u32>> {
    let mut conn = pool.acquire().await.map_err(read_err)?;
    let id = workload_id(&mut conn, workload).await?;
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM policy_versions WHERE workload_id = ? ORDER BY version")
            .bind(id)
            .fetch_all(&mut *conn)
            .await
            .map_err(read_err)?;
    rows.into_iter().map(version_u32).collect()
}

/// One version (the latest when `version` is None); None when there is no such version.
pub(super) async fn version(
    pool: &SqlitePool,
    workload: &str,
    version: Option<u32>,
) -> Result<Option<PolicyVersion>> {
    let mut conn = pool.acquire().await.map_err(read_err)?;
    let id = workload_id(&mut conn, workload).await?;
    const COLUMNS: &str = "version, origin, body_json, evidence_json, created_at";
    let one = format!("SELECT {COLUMNS} FROM policy_versions WHERE workload_id = ? AND version = ?");
    let latest =
        format!("SELECT {COLUMNS} FROM policy_versions WHERE workload_id = ? ORDER BY version DESC LIMIT 1");
    let row: Option<VersionRow> = match version {
        Some(v) => sqlx::query_as(&one).bind(id).bind(i64::from(v)),
        None => sqlx::query_as(&latest).bind(id),
    }
    .fetch_optional(&mut *conn)
    .await
    .map_err(read_err)?;
    let Some(row) = row else { return Ok(None) };
    let bad = |source| StoreError::PolicyJson { workload: workload.to_owned(), source };
    Ok(Some(PolicyVersion {
        version: version_u32(row.version)?,
        origin: row.origin,
        policy: serde_json::from_str(&row.body_json).map_err(bad)?,
        evidence: serde_json::from_str(&row.evidence_json).map_err(bad)?,
        created_at: rfc3339(row.created_at),
        created_ns: row.created_at,
    }))
}

/// Writes the next version (latest + 1) and, for an accept, the adopted rule, in one transaction.
/// Returns the new version number.
pub(super) async fn add_version(pool: &SqlitePool, workload: &str, new: NewVersion<'_>) -> Result<u32> {
    let record = |source| StoreError::Record { what: "a policy version", source };
    let bad = |source| StoreError::PolicyJson { workload: workload.to_owned(), source };
    let body = serde_json::to_string(new.policy).map_err(bad)?;
    let evidence = serde_json::to_string(new.evidence).map_err(bad)?;
    let now = now_ns();
    let mut tx = pool.begin().await.map_err(record)?;
    let id = workload_id(&mut tx, workload).await?;
    let latest: i64 =
        sqlx::query_scalar("SELECT coalesce(max(version), 0) FROM policy_versions WHERE workload_id = ?")
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(record)?;
    let version = latest + 1;
    sqlx::query(
        "INSERT INTO policy_versions (workload_id, version, origin, body_json, evidence_json, created_at)
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(id)
    .bind(version)
    .bind(new.origin)
    .bind(body)
    .bind(evidence)
    .bind(now)
    .execute(&mut *tx)
    .await
    .map_err(record)?;
    if let Some((rule_id, rule)) = new.accepted {
        // Adopting the same rule again keeps its first adoption.
        sqlx::query(
            "INSERT INTO accepted_rules (workload_id, rule_id, rule_json, version, accepted_at)
             VALUES (?, ?, ?, ?, ?) ON CONFLICT (workload_id, rule_id) DO NOTHING",
        )
        .bind(id)
        .bind(rule_id)
        .bind(serde_json::to_string(rule).map_err(bad)?)
        .bind(version)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(record)?;
    }
    tx.commit().await.map_err(record)?;
    version_u32(version)
}

/// The rules adopted for the workload, oldest first.
pub(super) async fn accepted_rules(pool: &SqlitePool, workload: &str) -> Result<Vec<AcceptedRule>> {
    let mut conn = pool.acquire().await.map_err(read_err)?;
    let id = workload_id(&mut conn, workload).await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT rule_id, rule_json, version FROM accepted_rules WHERE workload_id = ? ORDER BY accepted_at, rule_id",
    )
    .bind(id)
    .fetch_all(&mut *conn)
    .await
    .map_err(read_err)?;
    rows.into_iter()
        .map(|(rule_id, json, version)| {
            Ok(AcceptedRule {
                rule_id,
                rule: serde_json::from_str(&json)
                    .map_err(|source| StoreError::PolicyJson { workload: workload.to_owned(), source })?,
                version: version_u32(version)?,
            })
        })
        .collect()
}

/// Losses no workload could be charged with, per minute (unix seconds) and summed over reasons:
/// any of them may have been the workload's, so readiness counts them too.
pub(super) async fn unattributed_loss_minutes(pool: &SqlitePool) -> Result<Vec<(i64, u64)>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT bucket, sum(count) FROM losses WHERE workload_id = ? GROUP BY bucket ORDER BY bucket",
    )
    .bind(UNATTRIBUTED)
    .fetch_all(pool)
    .await
    .map_err(|source| StoreError::Read { what: "losses", source })?;
    Ok(rows.into_iter().map(|(bucket, count)| (bucket, u64::try_from(count).unwrap_or(0))).collect())
}
