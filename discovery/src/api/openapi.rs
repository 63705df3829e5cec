//! The OpenAPI document, generated from the handlers' annotations and the types they exchange.

use axum::{response::IntoResponse, Json};
use utoipa::{
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    Modify, OpenApi,
};

use super::{error, events, metrics, policy, versions, workloads};

#[derive(OpenApi)]
#[openapi(
    info(title = "Stance", description = "Behaviour graphs, policies and enforcement modes of the workloads Stance observes."),
    paths(
        workloads::list,
        workloads::one,
        workloads::graph,
        workloads::set_mode,
        workloads::status,
        policy::get,
        versions::list,
        versions::one,
        versions::create,
        versions::diff,
        versions::check,
        versions::proposals,
        versions::accept,
        events::list,
        serve,
        metrics::healthz,
        metrics::readyz,
        metrics::prometheus,
    ),
    components(schemas(error::ErrorBody, error::ErrorKind, events::FeedKind)),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// Every /api request carries `Authorization: Bearer <token>`.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations",
    responses((status = 200, body = Object, description = "OpenAPI 3.1")))]
pub async fn serve() -> impl IntoResponse {
    Json(ApiDoc::openapi())
}
