//! A workload's policy in every format: Stance's native one (what the enforcer loads) and the
//! exports for other enforcers (`export`).
//!
//! What is served is the recommender's latest stored version (`stance policy`, `stance mode` and
//! `POST .../policy/versions` store versions), read as it is: serving it costs two small queries,
//! never a recomputation from the graph. A GET never stores a version. Before any version is
//! stored, it serves what the recommender would store first, computed from the graph on each
//! request, with `version: null`.

use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{PathName, QueryOf},
    graphs::GraphCache,
    ApiError, ApiState, ErrorBody,
};
use crate::{
    enforce::Policy,
    export::{self, ExportFormat},
    recommend,
    store::{Store, WorkloadInfo},
};

/// The formats, as `format=` takes them.
pub const FORMATS: [&str; 5] = ["native", "kubearmor", "kubearmor-host", "cilium", "networkpolicy"];

/// How the document is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Output {
    Json,
    Yaml,
}

/// `GET /api/v1/workloads/{name}/policy` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PolicyQuery {
    /// native (default), kubearmor, kubearmor-host, cilium or networkpolicy.
    pub format: Option<String>,
    /// json or yaml; default json for native, yaml (what `kubectl apply` takes) for the others.
    pub output: Option<Output>,
    /// A stored version (default: the latest).
    pub version: Option<u32>,
}

/// A policy document, ready to copy or download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyDocument {
    pub workload: String,
    /// The stored version served; null before any is stored (the recommendation as it is now).
    pub version: Option<u32>,
    pub format: String,
    pub output: Output,
    /// `application/json` or `application/yaml`.
    pub media_type: String,
    /// The document itself.
    pub content: String,
}

/// The policy served: a stored version, or the first recommendation when none is stored.
pub struct Served {
    pub workload: WorkloadInfo,
    /// None: nothing stored yet.
    pub version: Option<u32>,
    pub origin: String,
    /// RFC 3339; None with `version`.
    pub created_at: Option<String>,
    pub policy: Policy,
}

/// The native document, as `stance policy WORKLOAD -o json` prints it (without proposals, which
/// `GET .../proposals` lists, and without the evidence).
#[derive(Serialize)]
struct NativeDocument<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    workload: &'a str,
    version: Option<u32>,
    origin: &'a str,
    #[serde(rename = "createdAt")]
    created_at: Option<&'a str>,
    policy: &'a Policy,
}

/// The version to serve: `version`, else the latest, else (nothing stored) the recommendation the
/// first `stance mode` would store (`recommend::latest_or_new`; with no version there are no
/// adopted rules either).
pub async fn served(
    store: &Store,
    graphs: &GraphCache,
    name: &str,
    version: Option<u32>,
) -> Result<Served, ApiError> {
    if let Some(v) = store.policy_version(name, version).await? {
        return Ok(Served {
            workload: store.workload(name).await?,
            version: Some(v.version),
            origin: v.origin,
            created_at: Some(v.created_at),
            policy: v.policy,
        });
    }
    if let Some(version) = version {
        return Err(recommend::RecommendError::NoVersion { workload: name.to_owned(), version }.into());
    }
    let graph = graphs.get(store, name).await?;
    let policy = recommend::recommend(&graph.graph, &recommend::RealFs).policy;
    Ok(Served {
        workload: graph.graph.workload.clone(),
        version: None,
        origin: crate::store::ORIGIN_RECOMMEND.to_owned(),
        created_at: None,
        policy,
    })
}

/// Renders `policy` in `format`.
pub fn render(served: &Served, format: &str, output: Option<Output>) -> Result<PolicyDocument, ApiError> {
    let (workload, policy) = (&served.workload, &served.policy);
    let (value, default_output) = if format == "native" {
        let doc = NativeDocument {
            api_version: recommend::render::API_VERSION,
            kind: "Policy",
            workload: &workload.name,
            version: served.version,
            origin: &served.origin,
            created_at: served.created_at.as_deref(),
            policy,
        };
        let value = serde_json::to_value(doc).map_err(|e| ApiError::internal(&e))?;
        (value, Output::Json)
    } else {
        let f: ExportFormat = format.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "unknown policy format '{format}' (expected {})",
                FORMATS.join(", ")
            ))
        })?;
        // A format that cannot select this kind of workload is the request's problem, not a fault.
        let value = export::render(f, policy, workload).map_err(|e| ApiError::bad_request(e.to_string()))?;
        (value, Output::Yaml)
    };
    let output = output.unwrap_or(default_output);
    let (media_type, content) = match output {
        Output::Json => {
            ("application/json", serde_json::to_string_pretty(&value).map_err(|e| ApiError::internal(&e))?)
        }
        Output::Yaml => ("application/yaml", export::to_yaml(&value).map_err(|e| ApiError::internal(&e))?),
    };
    Ok(PolicyDocument {
        workload: workload.name.clone(),
        version: served.version,
        format: format.to_owned(),
        output,
        media_type: media_type.to_owned(),
        content,
    })
}

/// The workload's policy in one format: the latest stored version (or `version`), read as stored.
/// Before any version is stored: the recommendation of the behaviour as it is now, `version` null.
/// Never stores a version (`POST .../policy/versions` does).
#[utoipa::path(get, path = "/api/v1/workloads/{name}/policy", tag = "policy",
    params(("name" = String, Path, description = "Workload name"), PolicyQuery),
    responses((status = 200, body = PolicyDocument), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<ApiState>,
    PathName(name): PathName,
    QueryOf(q): QueryOf<PolicyQuery>,
) -> Result<Json<PolicyDocument>, ApiError> {
    let format = q.format.as_deref().unwrap_or("native");
    // The format first: a bad one is refused before any work.
    if !FORMATS.contains(&format) {
        return Err(ApiError::bad_request(format!(
            "unknown policy format '{format}' (expected {})",
            FORMATS.join(", ")
        )));
    }
    let served = served(&state.store, &state.graphs, &name, q.version).await?;
    Ok(Json(render(&served, format, q.output)?))
}
