//! The recommender's state over HTTP: policy versions, the diff between two, the replay check of a
//! version against the stored behaviour, and proposals from deny / would-deny events with their
//! acceptance. The same functions as `stance policy`, `stance policy diff|check|accept`.
//!
//! Only the two POSTs write: `POST .../policy/versions` (recommend from the behaviour as it is now,
//! storing a new version when it changed, as `stance policy WORKLOAD` does) and
//! `POST .../proposals/{id}/accept`. Every GET reads through the API's read-only connection, so a
//! GET cannot store anything even by mistake: a listing of proposals that would first need a new
//! version says so (409) instead of writing one.

use axum::{
    extract::State,
    http::{StatusCode, Uri},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{path_segment, NoBody, PathName, QueryOf},
    events::parse_since,
    ApiError, ApiState, ErrorBody, ErrorKind,
};
use crate::{
    enforce::Policy,
    recommend::{self, replay::Denial, RecommendError, Review, RuleInfo},
    store::{EventFilter, PolicyVersion, Store, StoreError},
};

impl From<RecommendError> for ApiError {
    fn from(e: RecommendError) -> Self {
        let line = crate::control::one_line(&e);
        match e {
            RecommendError::Store(s) => s.into(),
            RecommendError::UnknownProposal { .. } | RecommendError::NoVersion { .. } => {
                ApiError::unknown_item(line)
            }
            // A stored version the enforcer's checks refuse could not be loaded either.
            RecommendError::Unevaluable { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorKind::Rejected, line)
            }
            RecommendError::RuleJson { .. } => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal, line)
            }
        }
    }
}

/// A stored version in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VersionSummary {
    /// Counts from 1 per workload.
    pub version: u32,
    /// `recommend` (from behaviour) or `accept` (an adopted proposal).
    pub origin: String,
    /// RFC 3339.
    pub created_at: String,
    /// Rules of the version's policy.
    pub rules: usize,
}

/// One stored version: its policy and each rule's evidence as it was when the version was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VersionView {
    pub workload: String,
    pub version: u32,
    pub origin: String,
    pub created_at: String,
    /// What the enforcer loads (docs/policy-format.md).
    #[schema(value_type = Object)]
    pub policy: Policy,
    /// Per rule: id, text, the rule, evidence and breadth.
    #[schema(value_type = Vec<Object>)]
    pub rules: Vec<RuleInfo>,
}

fn rule_infos(workload: &str, stored: &PolicyVersion) -> Result<Vec<RuleInfo>, ApiError> {
    serde_json::from_value(stored.evidence.clone())
        .map_err(|source| RecommendError::RuleJson { workload: workload.to_owned(), source }.into())
}

fn version_segment(uri: &Uri) -> Result<u32, ApiError> {
    // workloads/{name}/policy/versions/{version}
    let raw = path_segment(uri, 3, "version")?;
    raw.parse().map_err(|_| ApiError::bad_request(format!("version must be a positive number, got '{raw}'")))
}

/// Every stored version of the workload's policy, oldest first.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/policy/versions", tag = "policy",
    params(("name" = String, Path, description = "Workload name")),
    responses((status = 200, body = Vec<VersionSummary>), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn list(
    State(state): State<ApiState>,
    PathName(name): PathName,
) -> Result<Json<Vec<VersionSummary>>, ApiError> {
    let mut out = Vec::new();
    for number in state.store.policy_version_numbers(&name).await? {
        if let Some(v) = state.store.policy_version(&name, Some(number)).await? {
            let rules = recommend::rule::rules_of(&v.policy).len();
            out.push(VersionSummary {
                version: v.version,
                origin: v.origin,
                created_at: v.created_at,
                rules,
            });
        }
    }
    Ok(Json(out))
}

/// One stored version with its rules' evidence.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/policy/versions/{version}", tag = "policy",
    params(("name" = String, Path, description = "Workload name"),
        ("version" = u32, Path, description = "Version number")),
    responses((status = 200, body = VersionView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(state): State<ApiState>,
    PathName(name): PathName,
    uri: Uri,
) -> Result<Json<VersionView>, ApiError> {
    let number = version_segment(&uri)?;
    let stored = state
        .store
        .policy_version(&name, Some(number))
        .await?
        .ok_or_else(|| RecommendError::NoVersion { workload: name.clone(), version: number })?;
    let rules = rule_infos(&name, &stored)?;
    Ok(Json(VersionView {
        workload: name,
        version: stored.version,
        origin: stored.origin,
        created_at: stored.created_at,
        policy: stored.policy,
        rules,
    }))
}

/// Recommends from the behaviour as it is now and stores it as a new version when it differs from
/// the latest (as `stance policy WORKLOAD`); answers the latest version with its current evidence,
/// proposals and readiness. 201 when a version was written, 200 when the latest still holds.
#[utoipa::path(post, path = "/api/v1/workloads/{name}/policy/versions", tag = "policy",
    params(("name" = String, Path, description = "Workload name")),
    responses(
        (status = 201, body = Object, description = "A new version was stored (`created`: true)"),
        (status = 200, body = Object, description = "The latest version still holds: version, origin, created_at, created, policy, rules, proposed, readiness"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn create(
    State(state): State<ApiState>,
    PathName(name): PathName,
    _: NoBody,
) -> Result<(StatusCode, Json<Review>), ApiError> {
    let review = recommend::review(&state.versions, &name, &recommend::RealFs, &state.readiness).await?;
    let status = if review.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(review)))
}

/// `GET .../policy/diff` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DiffQuery {
    /// The older version (0: the empty policy). With `to`; without both, the latest and the one before.
    pub from: Option<u32>,
    /// The newer version.
    pub to: Option<u32>,
}

/// Rules added and removed between two versions.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/policy/diff", tag = "policy",
    params(("name" = String, Path, description = "Workload name"), DiffQuery),
    responses((status = 200, body = Object, description = "workload, from, to, added and removed rules with their evidence"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn diff(
    State(state): State<ApiState>,
    PathName(name): PathName,
    QueryOf(q): QueryOf<DiffQuery>,
) -> Result<Json<recommend::Diff>, ApiError> {
    let pair = diff_pair(&q)?;
    Ok(Json(recommend::diff(&state.store, &name, pair).await?))
}

/// The versions to compare: both or neither, `to` a real version.
pub fn diff_pair(q: &DiffQuery) -> Result<Option<(u32, u32)>, ApiError> {
    let pair = match (q.from, q.to) {
        (Some(from), Some(to)) => Some((from, to)),
        (None, None) => None,
        _ => return Err(ApiError::bad_request("give both from and to, or neither")),
    };
    if pair.is_some_and(|(_, to)| to == 0) {
        return Err(ApiError::bad_request("to must be a stored version (1 or more)"));
    }
    Ok(pair)
}

/// `GET .../policy/check` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckQuery {
    /// The version to replay (default: the latest; without any stored version, the policy the
    /// first mode change would store).
    pub version: Option<u32>,
    /// Only behaviour seen since an RFC 3339 time or a duration back (`10m`).
    pub since: Option<String>,
    /// Only behaviour seen until an RFC 3339 time or a duration back.
    pub until: Option<String>,
}

/// What a version would deny of the stored behaviour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CheckView {
    pub workload: String,
    /// The version replayed; null when none is stored yet and the recommendation of the behaviour
    /// as it is now was replayed (what `PUT .../mode` would store and load).
    pub version: Option<u32>,
    /// Actions replayed.
    pub checked: u64,
    /// The actions the version would deny: domain, object, access, actor, hits, first and last seen.
    #[schema(value_type = Vec<Object>)]
    pub denied: Vec<Denial>,
}

/// Replays the stored behaviour against a version (`recommend::check`, the enforcer's semantics):
/// what enforcing it would deny. The dashboard shows it before switching to enforce.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/policy/check", tag = "policy",
    params(("name" = String, Path, description = "Workload name"), CheckQuery),
    responses((status = 200, body = CheckView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The stored version cannot be evaluated")))]
pub async fn check(
    State(state): State<ApiState>,
    PathName(name): PathName,
    QueryOf(q): QueryOf<CheckQuery>,
) -> Result<Json<CheckView>, ApiError> {
    let (since, until) = check_interval(&q)?;
    if q.version.is_none() && state.store.policy_version(&name, None).await?.is_none() {
        // Nothing stored: the policy a mode change would store first (`latest_or_new`), which,
        // with no version, has no adopted rules either.
        let cached = state.graphs.get(&state.store, &name).await?;
        let graph = &cached.graph;
        let policy = recommend::recommend(graph, &recommend::RealFs).policy;
        let (checked, denied) = recommend::replay::replay(&policy, graph, since, until).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, ErrorKind::Rejected, e.to_string())
        })?;
        return Ok(Json(CheckView { workload: name, version: None, checked, denied }));
    }
    let c = recommend::replay::check(&state.store, &name, q.version, since, until).await?;
    Ok(Json(CheckView {
        workload: c.workload,
        version: Some(c.version),
        checked: c.checked,
        denied: c.denied,
    }))
}

/// `since` and `until` as unix ns.
pub fn check_interval(q: &CheckQuery) -> Result<(Option<i64>, Option<i64>), ApiError> {
    let time = |s: &Option<String>| s.as_deref().map(parse_since).transpose().map_err(ApiError::bad_request);
    Ok((time(&q.since)?, time(&q.until)?))
}

/// Proposed additions: the rules deny / would-deny events ask for that the latest version lacks.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/proposals", tag = "policy",
    params(("name" = String, Path, description = "Workload name")),
    responses((status = 200, body = Vec<Object>, description = "id, text, rule, evidence of each proposal"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "The behaviour changed since the latest version: POST .../policy/versions first")))]
pub async fn proposals(
    State(state): State<ApiState>,
    PathName(name): PathName,
) -> Result<Json<Vec<RuleInfo>>, ApiError> {
    Ok(Json(proposals_of(&state.store, &name, &state).await?))
}

/// The proposals against the latest version, read without writing. `store` must be read-only:
/// `review` stores a new version when the behaviour changed, and the refused write is how that
/// case is told apart.
async fn proposals_of(store: &Store, name: &str, state: &ApiState) -> Result<Vec<RuleInfo>, ApiError> {
    let filter = EventFilter { workload: Some(name.to_owned()), kind: None, since: None, limit: 1 };
    if store.events(&filter).await?.is_empty() {
        // No event asks for anything (and the workload exists: events() checks the name).
        return Ok(Vec::new());
    }
    match recommend::review(store, name, &recommend::RealFs, &state.readiness).await {
        Ok(review) => Ok(review.proposed),
        Err(RecommendError::Store(StoreError::Record { .. })) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorKind::Stale,
            format!(
                "the behaviour of '{name}' changed since its latest policy version: store a new one \
                 (POST /api/v1/workloads/{name}/policy/versions or `stance policy {name}`) to list proposals against it"
            ),
        )),
        Err(e) => Err(e.into()),
    }
}

/// What accepting a proposal stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub workload: String,
    /// The new version holding the adopted rule.
    pub version: u32,
    /// The adopted rule with its evidence.
    #[schema(value_type = Object)]
    pub rule: RuleInfo,
}

/// Adopts a proposal into a new version (as `stance policy accept`); every later recommendation
/// keeps it. The version is written in one transaction, or not at all. No request body.
#[utoipa::path(post, path = "/api/v1/workloads/{name}/proposals/{id}/accept", tag = "policy",
    params(("name" = String, Path, description = "Workload name"),
        ("id" = String, Path, description = "The proposal's id")),
    responses((status = 201, body = Accepted), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn accept(
    State(state): State<ApiState>,
    PathName(name): PathName,
    uri: Uri,
    _: NoBody,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    // workloads/{name}/proposals/{id}/accept
    let id = path_segment(&uri, 2, "proposal id")?;
    // `accept` stores a first version when there is none before it looks for the proposal; with
    // none there is nothing proposed against, so refuse first and write nothing.
    if state.store.policy_version(&name, None).await?.is_none() {
        return Err(RecommendError::UnknownProposal { workload: name, id }.into());
    }
    let (version, rule) = recommend::accept(&state.versions, &name, &id, &recommend::RealFs).await?;
    Ok((StatusCode::CREATED, Json(Accepted { workload: name, version, rule })))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn uri(path: &str) -> Uri {
        path.parse().unwrap()
    }

    /// Parses like the endpoint does, from a real URI (a string that is no URI never reaches it).
    fn query<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, ApiError> {
        let uri: Uri = format!("/api/v1/workloads/w/policy/diff?{s}")
            .parse()
            .map_err(|e| ApiError::bad_request(format!("{e}")))?;
        crate::api::error::parse_query(&uri)
    }

    #[test]
    fn diff_and_check_parameters_are_checked() {
        let pair = |s: &str| query::<DiffQuery>(s).and_then(|q| diff_pair(&q)).map_err(|e| e.message);
        assert_eq!(pair(""), Ok(None));
        assert_eq!(pair("from=0&to=2"), Ok(Some((0, 2))));
        assert_eq!(pair("from=1").unwrap_err(), "give both from and to, or neither");
        assert_eq!(pair("from=1&to=0").unwrap_err(), "to must be a stored version (1 or more)");
        assert!(pair("from=-1&to=2").is_err());
        assert!(pair("from=a&to=2").is_err());
        assert!(pair("from=1&to=2&x=3").is_err());
        let interval =
            |s: &str| query::<CheckQuery>(s).and_then(|q| check_interval(&q)).map_err(|e| e.message);
        assert_eq!(interval("since=2024-05-01T12:00:00Z"), Ok((Some(1_714_564_800_000_000_000), None)));
        assert!(interval("until=yesterday").unwrap_err().contains("neither an RFC 3339 time"));
        assert!(query::<CheckQuery>("version=two").is_err());
        assert_eq!(version_segment(&uri("/api/v1/workloads/w/policy/versions/3")), Ok(3));
        assert!(version_segment(&uri("/api/v1/workloads/w/policy/versions/-3")).is_err());
        assert!(version_segment(&uri("/api/v1/workloads/w/policy/versions/%FF")).is_err());
    }

    proptest! {
        /// Any diff query: both versions, neither, or a 400; never a panic.
        #[test]
        fn any_diff_query_is_answered(s in ".{0,120}") {
            if let Ok(q) = query::<DiffQuery>(&s) {
                match diff_pair(&q) {
                    Ok(Some((_, to))) => prop_assert!(to > 0),
                    Ok(None) => prop_assert!(q.from.is_none() && q.to.is_none()),
                    Err(e) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                }
            }
        }

        /// Any check query: an interval or a 400.
        #[test]
        fn any_check_query_is_answered(s in ".{0,120}") {
            if let Ok(q) = query::<CheckQuery>(&s) {
                if let Err(e) = check_interval(&q) {
                    prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                }
            }
        }

        /// A version segment is a u32 exactly when its text is one.
        #[test]
        fn version_segments_parse_exactly(raw in "[0-9a-z%-]{0,12}") {
            let got = version_segment(&uri(&format!("/api/v1/workloads/w/policy/versions/{raw}")));
            let decoded = percent_encoding::percent_decode_str(&raw).decode_utf8().ok();
            let want = decoded.and_then(|t| t.parse::<u32>().ok());
            match (got, want) {
                (Ok(v), Some(w)) => prop_assert_eq!(v, w),
                (Err(e), None) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                (got, want) => prop_assert!(false, "{:?} vs {:?}", got, want),
            }
        }

        /// Proposal ids of arbitrary bytes: invalid UTF-8 refused, anything else reaches the
        /// recommender unchanged.
        #[test]
        fn proposal_ids_are_exact_or_refused(bytes in proptest::collection::vec(any::<u8>(), 1..30)) {
            let encoded: String = bytes.iter().map(|b| format!("%{b:02X}")).collect();
            let got = path_segment(&uri(&format!("/api/v1/workloads/proposals/proposals/{encoded}/accept")), 2, "proposal id");
            match (std::str::from_utf8(&bytes), got) {
                (Ok(text), Ok(id)) => prop_assert_eq!(id, text),
                (Err(_), Err(e)) => prop_assert_eq!(e.status, StatusCode::BAD_REQUEST),
                (utf8, got) => prop_assert!(false, "{:?} → {:?}", utf8, got),
            }
        }
    }
}
