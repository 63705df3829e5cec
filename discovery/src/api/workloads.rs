//! Workloads: the list, one workload, its behaviour graph, its modes, and what this host can
//! enforce.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    error::{JsonBody, PathName},
    ApiError, ApiState, ErrorBody, ErrorKind,
};
use crate::{
    control::protocol::ModeReply,
    enforce::{Domain, Mode, Modes},
    recommend::{self, Readiness},
    store::{Graph, WorkloadSummary},
};

/// A workload as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WorkloadView {
    /// Identity, activity span, graph size and losses.
    #[serde(flatten)]
    pub summary: WorkloadSummary,
    /// The mode of each domain.
    pub modes: Modes,
    /// One line per reason to distrust the graph (lost observations).
    pub warnings: Vec<String>,
    /// Whether learning is done, and why (READY and REASON of `stance workloads`): `ready`,
    /// `reason`, and per domain the new rules of each recent window.
    #[schema(value_type = Object)]
    pub readiness: Readiness,
}

/// `PUT /api/v1/workloads/{name}/mode`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ModeRequest {
    pub mode: Mode,
    /// The domains to change; empty or absent means all four.
    #[serde(default)]
    pub domains: Vec<Domain>,
}

/// How each domain is enforced here, and how each probe family observes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostStatus {
    pub probes: Vec<ProbeView>,
    pub enforcement: Vec<EnforcementView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProbeView {
    pub family: String,
    pub active: bool,
    /// As the daemon printed it at start (`file: active`, `capabilities: unavailable: ...`).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnforcementView {
    pub domain: Domain,
    /// Whether audit and enforce can be set for this domain.
    pub available: bool,
    /// `bpf-lsm`, `cgroup sock_addr programs`, or `unavailable: <reason>`.
    pub backend: String,
}

/// Lines that warn a reviewer the graph may be incomplete.
fn warnings(summary: &WorkloadSummary) -> Vec<String> {
    let losses = &summary.losses;
    if losses.total == 0 {
        return Vec::new();
    }
    let reasons: Vec<String> = losses.by_reason.iter().map(|(r, n)| format!("{}: {n}", r.as_str())).collect();
    vec![format!("{} observations lost ({}): the graph may be incomplete", losses.total, reasons.join(", "))]
}

async fn view(state: &ApiState, summary: WorkloadSummary) -> Result<WorkloadView, ApiError> {
    let name = &summary.workload.name;
    let modes = state.store.workload_enforcement(name).await?.modes;
    let graph = state.graphs.get(&state.store, name).await?;
    let readiness =
        recommend::review::readiness_of(&state.store, &graph.graph, &recommend::RealFs, &state.readiness)
            .await?;
    Ok(WorkloadView { warnings: warnings(&summary), modes, readiness, summary })
}

/// Every workload observed.
#[utoipa::path(get, path = "/api/v1/workloads", tag = "workloads",
    responses((status = 200, body = Vec<WorkloadView>), (status = 401, body = ErrorBody)))]
pub async fn list(State(state): State<ApiState>) -> Result<Json<Vec<WorkloadView>>, ApiError> {
    let mut out = Vec::new();
    for summary in state.store.workloads().await? {
        out.push(view(&state, summary).await?);
    }
    Ok(Json(out))
}

/// One workload.
#[utoipa::path(get, path = "/api/v1/workloads/{name}", tag = "workloads",
    params(("name" = String, Path, description = "Workload name")),
    responses((status = 200, body = WorkloadView), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn one(
    State(state): State<ApiState>,
    PathName(name): PathName,
) -> Result<Json<WorkloadView>, ApiError> {
    // The list query is the one that computes counts and losses; a workload list is short.
    let summary = state.store.workloads().await?.into_iter().find(|w| w.workload.name == name);
    match summary {
        Some(summary) => Ok(Json(view(&state, summary).await?)),
        None => Err(crate::store::StoreError::UnknownWorkload { name }.into()),
    }
}

/// A workload's behaviour graph: nodes, edges with their evidence, and losses per minute. The answer
/// carries an `ETag`; a request whose `If-None-Match` names the graph as it still is gets 304.
#[utoipa::path(get, path = "/api/v1/workloads/{name}/graph", tag = "workloads",
    params(("name" = String, Path, description = "Workload name"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of a graph already held")),
    responses((status = 200, body = Graph, headers(("ETag" = String, description = "This state of the graph"))),
        (status = 304, description = "The graph is unchanged since the ETag given"),
        (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn graph(
    State(state): State<ApiState>,
    PathName(name): PathName,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let cached = state.graphs.get(&state.store, &name).await?;
    let etag = HeaderValue::from_str(cached.etag()).map_err(|e| ApiError::internal(&e))?;
    // The graph is private to whoever holds the token, and must be revalidated before any reuse.
    let common =
        [(header::ETAG, etag), (header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"))];
    let held = headers.get_all(header::IF_NONE_MATCH).iter().filter_map(|v| v.to_str().ok());
    if held.flat_map(|v| v.split(',')).any(|tag| tag.trim() == cached.etag() || tag.trim() == "*") {
        return Ok((StatusCode::NOT_MODIFIED, common).into_response());
    }
    let json = cached.json().map_err(|e| ApiError::internal(&e))?;
    let content_type = (header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok((common, [content_type], json).into_response())
}

/// Puts domains of a workload into a mode, through the daemon's enforcement actor (as
/// `stance mode` does): applied to every domain asked for, or to none.
#[utoipa::path(put, path = "/api/v1/workloads/{name}/mode", tag = "workloads",
    params(("name" = String, Path, description = "Workload name")),
    request_body = ModeRequest,
    responses(
        (status = 200, body = ModeReply, description = "The workload's modes now"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "Enforcement unavailable for a domain; nothing changed"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "The enforcer refused the policy; the previous one stays"),
    ))]
pub async fn set_mode(
    State(state): State<ApiState>,
    PathName(name): PathName,
    JsonBody(req): JsonBody<ModeRequest>,
) -> Result<Json<ModeReply>, ApiError> {
    let Some(control) = &state.control else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unavailable,
            "this server has no enforcement actor: mode changes need `stance run`",
        ));
    };
    Ok(Json(control.mode(name, req.mode, req.domains).await?))
}

/// What this host can observe and enforce.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    responses((status = 200, body = HostStatus), (status = 401, body = ErrorBody)))]
pub async fn status(State(state): State<ApiState>) -> Json<HostStatus> {
    Json(state.metrics.host_status())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Any body: a mode request or an error, never a panic; what parses names a real mode.
        #[test]
        fn any_body_parses_or_is_refused(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(req) = serde_json::from_slice::<ModeRequest>(&bytes) {
                prop_assert!(std::str::from_utf8(&bytes).is_ok());
                prop_assert!(req.domains.iter().all(|d| Domain::ALL.contains(d)));
            }
        }

        /// Bodies built from the grammar's own pieces: accepted exactly when every piece is valid.
        #[test]
        fn structured_bodies(mode in "observe|audit|enforce|block|", domains in proptest::collection::vec("process|file|network|capabilities|disk", 0..5)) {
            let body = serde_json::json!({ "mode": mode, "domains": domains }).to_string();
            let valid = ["observe", "audit", "enforce"].contains(&mode.as_str()) && !domains.iter().any(|d| d == "disk");
            prop_assert_eq!(serde_json::from_str::<ModeRequest>(&body).is_ok(), valid);
        }
    }

    #[test]
    fn mode_requests_parse_strictly() {
        let all: ModeRequest = serde_json::from_str(r#"{"mode":"audit"}"#).unwrap();
        assert_eq!(all, ModeRequest { mode: Mode::Audit, domains: vec![] });
        let one: ModeRequest = serde_json::from_str(r#"{"mode":"enforce","domains":["network"]}"#).unwrap();
        assert_eq!(one.domains, [Domain::Network]);
        for bad in [
            r#"{"mode":"block"}"#,
            r#"{"mode":1}"#,
            r#"{"mode":"audit","domains":"network"}"#,
            r#"{"mode":"audit","domains":["disk"]}"#,
            r#"{"mode":"audit","extra":true}"#,
            r#"{}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<ModeRequest>(bad).is_err(), "{bad}");
        }
    }
}
