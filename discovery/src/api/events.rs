//! The event feed: deny and would-deny verdicts, and lost observations, newest first, paged.

use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{error::QueryOf, ApiError, ApiState, ErrorBody};
use crate::store::{EnforcementEvent, EventFilter, LossEvent, VerdictKind};

/// Events per page unless `limit` says otherwise.
const DEFAULT_LIMIT: u32 = 100;
/// Most events one page holds.
pub const MAX_LIMIT: u32 = 1000;
/// Deepest page: paging reads `offset + limit` rows, so the offset is bounded like the limit.
pub const MAX_OFFSET: u32 = 100_000;

/// What the feed can be narrowed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FeedKind {
    Deny,
    WouldDeny,
    Loss,
}

/// `GET /api/v1/events` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this workload's events.
    pub workload: Option<String>,
    /// Only events of this kind.
    pub kind: Option<FeedKind>,
    /// An RFC 3339 time (`2024-05-01T12:00:00Z`) or a duration back from now (`10m`, `2h`).
    pub since: Option<String>,
    /// Events per page (1 to 1000, default 100).
    pub limit: Option<u32>,
    /// Events to skip, newest first (at most 100000); `next_offset` of the previous page.
    pub offset: Option<u32>,
}

/// A deny / would-deny verdict, or lost observations; `kind` tells which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum FeedEvent {
    Verdict(EnforcementEvent),
    Loss(LossEvent),
}

impl FeedEvent {
    fn at(&self) -> &str {
        match self {
            FeedEvent::Verdict(v) => &v.at,
            FeedEvent::Loss(l) => &l.at,
        }
    }
}

/// One page of the feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    /// Newest first.
    pub events: Vec<FeedEvent>,
    /// The `offset` of the next page; absent on the last one.
    pub next_offset: Option<u32>,
}

/// The parameters, checked: (filter without limit, limit, offset).
pub fn validate(q: &EventsQuery) -> Result<(Option<i64>, u32, u32), ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {MAX_LIMIT}, got {limit}")));
    }
    let offset = q.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(ApiError::bad_request(format!("offset must be at most {MAX_OFFSET}, got {offset}")));
    }
    let since = q.since.as_deref().map(parse_since).transpose().map_err(ApiError::bad_request)?;
    Ok((since, limit, offset))
}

/// `since`: an RFC 3339 time, or a duration back from now; unix nanoseconds.
pub fn parse_since(s: &str) -> Result<i64, String> {
    let at = match humantime::parse_rfc3339_weak(s) {
        Ok(at) => at,
        Err(_) => {
            let back = humantime::parse_duration(s).map_err(|_| {
                format!("'{s}' is neither an RFC 3339 time (2024-05-01T12:00:00Z) nor a duration (10m, 2h)")
            })?;
            std::time::SystemTime::now().checked_sub(back).unwrap_or(std::time::UNIX_EPOCH)
        }
    };
    let ns = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    Ok(i64::try_from(ns).unwrap_or(i64::MAX))
}

/// Deny, would-deny and loss events, newest first.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    QueryOf(q): QueryOf<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let (since, limit, offset) = validate(&q)?;
    // One more than the page, to know whether there is a next one.
    let want = offset + limit + 1;
    let verdict_kind = match q.kind {
        Some(FeedKind::Deny) => Some(Some(VerdictKind::Deny)),
        Some(FeedKind::WouldDeny) => Some(Some(VerdictKind::WouldDeny)),
        Some(FeedKind::Loss) => None,
        None => Some(None),
    };
    let mut events: Vec<FeedEvent> = Vec::new();
    if let Some(kind) = verdict_kind {
        let filter = EventFilter { workload: q.workload.clone(), kind, since, limit: want };
        events.extend(state.store.events(&filter).await?.into_iter().map(FeedEvent::Verdict));
    }
    if matches!(q.kind, None | Some(FeedKind::Loss)) {
        let losses = state.store.loss_events(q.workload.as_deref(), since, want).await?;
        events.extend(losses.into_iter().map(FeedEvent::Loss));
    }
    // Both sources are newest first with times in one fixed-width format: a stable sort merges them.
    events.sort_by(|a, b| b.at().cmp(a.at()));
    let more = events.len() > (offset + limit) as usize;
    let page: Vec<FeedEvent> = events.into_iter().skip(offset as usize).take(limit as usize).collect();
    Ok(Json(EventPage { events: page, next_offset: more.then_some(offset + limit) }))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Parses like the endpoint does, from a real URI.
    fn query(s: &str) -> Result<EventsQuery, String> {
        let uri: axum::http::Uri = format!("/api/v1/events?{s}").parse().map_err(|e| format!("{e}"))?;
        crate::api::error::parse_query(&uri).map_err(|e| e.message)
    }

    #[test]
    fn parameters_are_checked() {
        let q = query("workload=web&kind=would-deny&since=10m&limit=5&offset=10").unwrap();
        assert_eq!(q.kind, Some(FeedKind::WouldDeny));
        let (since, limit, offset) = validate(&q).unwrap();
        assert!(since.is_some());
        assert_eq!((limit, offset), (5, 10));
        assert_eq!(validate(&EventsQuery::default()).unwrap(), (None, DEFAULT_LIMIT, 0));
        assert!(query("kind=allow").is_err());
        assert!(query("limit=-1").is_err());
        assert!(query("limit=ten").is_err());
        assert!(query("colour=red").is_err());
        assert_eq!(query("workload=%FF").unwrap_err(), "the query string is not valid UTF-8");
        let bad = |s: &str| validate(&query(s).unwrap()).unwrap_err().message;
        assert_eq!(bad("limit=0"), "limit must be between 1 and 1000, got 0");
        assert_eq!(bad("offset=100001"), "offset must be at most 100000, got 100001");
        assert!(bad("since=yesterday").contains("neither an RFC 3339 time"));
        assert_eq!(parse_since("2024-05-01T12:00:00Z"), Ok(1_714_564_800_000_000_000));
    }

    proptest! {
        /// Whatever the query string, parsing and validation answer Ok or a 400, never panic, and
        /// what they accept is within bounds.
        #[test]
        fn any_query_string_is_answered(s in ".{0,200}") {
            if let Ok(q) = query(&s) {
                match validate(&q) {
                    Ok((_, limit, offset)) => {
                        prop_assert!((1..=MAX_LIMIT).contains(&limit));
                        prop_assert!(offset <= MAX_OFFSET);
                    }
                    Err(e) => prop_assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST),
                }
            }
        }

        /// Percent-encoded arbitrary bytes: invalid UTF-8 is refused, valid text reaches the filter
        /// unchanged.
        #[test]
        fn workload_filters_are_exact_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            match (std::str::from_utf8(&bytes), query(&format!("workload={encoded}"))) {
                (Ok(text), Ok(q)) => prop_assert_eq!(q.workload.as_deref(), Some(text)),
                (Err(_), Err(e)) => prop_assert_eq!(e, "the query string is not valid UTF-8"),
                (utf8, parsed) => prop_assert!(false, "{:?} → {:?}", utf8, parsed),
            }
        }

        #[test]
        fn structured_queries_round_trip(limit in 0u32..3000, offset in 0u32..200_000, kind in 0usize..4) {
            let kinds = ["", "&kind=deny", "&kind=would-deny", "&kind=loss"];
            let q = query(&format!("limit={limit}&offset={offset}{}", kinds[kind])).unwrap();
            let ok = (1..=MAX_LIMIT).contains(&limit) && offset <= MAX_OFFSET;
            prop_assert_eq!(validate(&q).is_ok(), ok);
        }
    }
}
