//! A workload's policy in every format: Stance's native one (what the enforcer loads) and the
//! exports for other enforcers (`export`).

use axum::{extract::State, Json};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{
    error::{PathName, QueryOf},
    ApiError, ApiState, ErrorBody,
};
use crate::{
    enforce::{compile, Policy},
    export::{self, ExportFormat},
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
}

/// A policy document, ready to copy or download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PolicyDocument {
    pub workload: String,
    pub format: String,
    pub output: Output,
    /// `application/json` or `application/yaml`.
    pub media_type: String,
    /// The document itself.
    pub content: String,
}

/// The policy Stance recommends for the workload now, with the workload's identity.
pub async fn recommended(store: &Store, name: &str) -> Result<(WorkloadInfo, Policy), ApiError> {
    let graph = store.graph(name).await?;
    let policy = compile::from_graph(&graph);
    Ok((graph.workload, policy))
}

/// Renders `policy` in `format`.
pub fn render(
    workload: &WorkloadInfo,
    policy: &Policy,
    format: &str,
    output: Option<Output>,
) -> Result<PolicyDocument, ApiError> {
    let (value, default_output) = if format == "native" {
        let value = serde_json::to_value(policy).map_err(|e| ApiError::internal(&e))?;
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
        format: format.to_owned(),
        output,
        media_type: media_type.to_owned(),
        content,
    })
}

/// The workload's recommended policy in one format.
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
    let (workload, policy) = recommended(&state.store, &name).await?;
    Ok(Json(render(&workload, &policy, format, q.output)?))
}
