//! Lost observations as events (one per workload, reason and minute), for the API's event feed
//! beside deny and would-deny. The `losses` table already keeps them per minute; this only reads it.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{query::rfc3339, Result, Store, StoreError};
use crate::model::LossReason;

/// The `kind` of every loss event, so a feed that mixes them with deny / would-deny reads alike.
pub const LOSS_KIND: &str = "loss";

/// Observations lost in one minute for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LossEvent {
    /// The workload they were lost for; none when they could not be attributed to one.
    pub workload: Option<String>,
    /// Always `loss`.
    pub kind: String,
    /// Start of the minute (RFC 3339, UTC).
    pub at: String,
    pub reason: LossReason,
    /// How many observations were lost.
    pub count: u64,
}

impl Store {
    /// Loss events, newest first: of one workload or all, from `since` (unix ns) on, at most `limit`.
    pub async fn loss_events(
        &self,
        workload: Option<&str>,
        since: Option<i64>,
        limit: u32,
    ) -> Result<Vec<LossEvent>> {
        let read = |source| StoreError::Read { what: "loss events", source };
        if let Some(name) = workload {
            // An unknown name is an error here as everywhere else, not an empty list.
            self.workload_enforcement(name).await?;
        }
        // Buckets are unix seconds; a minute that started before `since` still counts if it ends after.
        let since_bucket = since.map(|ns| ns.div_euclid(1_000_000_000) - 59);
        let rows: Vec<(Option<String>, String, i64, i64)> = sqlx::query_as(
            "SELECT w.name, l.reason, l.bucket, l.count FROM losses AS l
             LEFT JOIN workloads AS w ON w.id = l.workload_id
             WHERE (?1 IS NULL OR w.name = ?1) AND (?2 IS NULL OR l.bucket >= ?2)
             ORDER BY l.bucket DESC, l.reason LIMIT ?3",
        )
        .bind(workload)
        .bind(since_bucket)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(read)?;
        rows.into_iter()
            .map(|(workload, reason, bucket, count)| {
                let reason = LossReason::parse(&reason)
                    .ok_or(StoreError::Unrecognised { column: "loss reason", value: reason })?;
                Ok(LossEvent {
                    workload,
                    kind: LOSS_KIND.to_owned(),
                    at: rfc3339(bucket.saturating_mul(1_000_000_000)),
                    reason,
                    count: u64::try_from(count).unwrap_or(0),
                })
            })
            .collect()
    }
}
