//! Every failure the API answers with: a status code and `{"error": {"kind", "message"}}`.
//!
//! Request parsing goes through the extractors here (`JsonBody`, `QueryOf`, `PathName`), whose
//! rejections become the same JSON body, so no input — malformed JSON, wrong types, invalid UTF-8,
//! an oversized body — reaches a handler or produces a plain-text answer.

use axum::{
    extract::{
        rejection::{JsonRejection, QueryRejection},
        FromRequest, FromRequestParts, Query, Request,
    },
    http::{request::Parts, StatusCode, Uri},
    response::{IntoResponse, Response},
    Json,
};
use serde::{de::DeserializeOwned, Serialize};
use utoipa::ToSchema;

use crate::{
    control::{one_line, ControlError},
    enforce::EnforceError,
    store::StoreError,
};

/// What went wrong, for a program to match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// Malformed JSON, a wrong type, an unknown value, or an invalid query or path.
    BadRequest,
    /// No or wrong bearer token.
    Unauthorized,
    /// No such endpoint.
    NotFound,
    UnknownWorkload,
    /// A policy format, version or proposal that does not exist.
    UnknownItem,
    /// The body is larger than the API accepts.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// No enforcement for a requested domain on this kernel; nothing changed.
    Unavailable,
    /// The enforcer refused the policy; the previous one stays.
    Rejected,
    /// The answer needs a newer policy version first (POST .../policy/versions); nothing changed.
    Stale,
    /// The daemon failed otherwise (database); nothing changed.
    Internal,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub kind: ErrorKind,
    /// One line for a person.
    pub message: String,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { status, kind, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, ErrorKind::BadRequest, message)
    }

    pub fn unknown_item(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, ErrorKind::UnknownItem, message)
    }

    pub fn internal(err: &(dyn std::error::Error + 'static)) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal, one_line(err))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { kind: self.kind, message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownWorkload { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, ErrorKind::UnknownWorkload, e.to_string())
            }
            e => ApiError::internal(&e),
        }
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let (status, kind) = match &e {
            ControlError::UnknownWorkload { .. } => (StatusCode::NOT_FOUND, ErrorKind::UnknownWorkload),
            ControlError::Unavailable { .. } | ControlError::Enforce(EnforceError::Unavailable(_)) => {
                (StatusCode::CONFLICT, ErrorKind::Unavailable)
            }
            ControlError::Enforce(_) => (StatusCode::UNPROCESSABLE_ENTITY, ErrorKind::Rejected),
            ControlError::NotRecorded { .. }
            | ControlError::Store(_)
            | ControlError::PolicyId { .. }
            | ControlError::Stopping => (StatusCode::INTERNAL_SERVER_ERROR, ErrorKind::Internal),
        };
        ApiError::new(status, kind, one_line(&e))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let (status, kind) = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorKind::UnsupportedMediaType)
            }
            JsonRejection::BytesRejection(_) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorKind::PayloadTooLarge)
            }
            // Wrong types and unknown values are the client's mistake like a syntax error: 400
            // for both keeps the contract simple.
            _ => (StatusCode::BAD_REQUEST, ErrorKind::BadRequest),
        };
        let message = match kind {
            ErrorKind::PayloadTooLarge => {
                format!("request body larger than {} bytes", super::MAX_BODY_BYTES)
            }
            _ => r.body_text(),
        };
        ApiError::new(status, kind, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(r.body_text())
    }
}

/// A JSON body whose rejections are `ApiError`s.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(value))
    }
}

/// Query parameters whose rejections are `ApiError`s.
pub struct QueryOf<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryOf<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parse_query(&parts.uri).map(QueryOf)
    }
}

/// The query string of `uri` as a `T`, or a 400.
pub fn parse_query<T: DeserializeOwned>(uri: &Uri) -> Result<T, ApiError> {
    // The form decoder replaces invalid UTF-8; refuse it instead, so a filter never silently
    // becomes another one.
    let raw = uri.query().unwrap_or("");
    let valid = raw.split(['&', '=']).all(|p| percent_encoding::percent_decode_str(p).decode_utf8().is_ok());
    if !valid {
        return Err(ApiError::bad_request("the query string is not valid UTF-8"));
    }
    let Query(value) = Query::<T>::try_from_uri(uri)?;
    Ok(value)
}

/// A request that must carry no body (the POSTs that act on the path alone). Reading it enforces
/// the body limit (413) like every other request; a body is refused rather than ignored, so a
/// client that meant to send parameters learns they were not taken.
pub struct NoBody;

impl<S: Send + Sync> FromRequest<S> for NoBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = axum::body::Bytes::from_request(req, state).await.map_err(|r| {
            if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorKind::PayloadTooLarge,
                    format!("request body larger than {} bytes", super::MAX_BODY_BYTES),
                )
            } else {
                ApiError::bad_request(r.body_text())
            }
        })?;
        if body.is_empty() {
            Ok(NoBody)
        } else {
            Err(ApiError::bad_request("this endpoint takes no request body"))
        }
    }
}

/// The path segment `n` places after `workloads` (0: the workload name; the routes' later
/// segments by position, so a workload named like a route segment stays a name), percent-decoded.
/// Bytes that are not UTF-8 are refused rather than replaced, so a name never silently becomes
/// another one. From the raw URI: axum's own path captures replace invalid UTF-8 instead of
/// refusing it.
pub fn path_segment(uri: &Uri, n: usize, what: &str) -> Result<String, ApiError> {
    let mut segments = uri.path().split('/');
    let raw = segments
        .by_ref()
        .find(|s| *s == "workloads")
        .and_then(|_| segments.nth(n))
        .ok_or_else(|| ApiError::bad_request(format!("no {what} in the path")))?;
    let decoded = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::bad_request(format!("the {what} in the path is not valid UTF-8")))?;
    Ok(decoded.into_owned())
}

/// The `{name}` segment (a workload name).
pub struct PathName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathName {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        path_segment(&parts.uri, 0, "workload name").map(PathName)
    }
}

/// Answer for paths under /api that name no endpoint (and for a wrong method on one that does).
pub async fn no_such_endpoint() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, "no such endpoint (see /api/v1/openapi.json)")
}

/// Answer for a method an endpoint does not take.
pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorKind::BadRequest,
        "method not allowed on this endpoint (see /api/v1/openapi.json)",
    )
}
