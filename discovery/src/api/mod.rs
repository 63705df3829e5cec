//! The REST API and the dashboard, served by `stance run` (axum).
//!
//! ```text
//! browser / scripts ──HTTP(S)──► router ──► /api/v1/*  (bearer token) ──► store (read-only pool)
//!                                   │                                 ├─► control actor (modes)
//!                                   │                                 └─► store (read-write: POSTs that store policy versions)
//!                                   ├─► /healthz /readyz /metrics
//!                                   └─► /  the dashboard (web/dist)
//! ```
//!
//! Reads go through a read-only connection of their own, so a slow request never holds up the
//! pipeline's writer. A mode change goes through the same actor as `stance mode`, so the API can
//! neither half-apply a change nor race the control socket. Every answer is JSON; every failure is a
//! status code with `{"error": {"kind", "message"}}`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    extract::DefaultBodyLimit,
    middleware,
    routing::{any, get, post, put},
    Router,
};
use tokio::sync::watch;
use tower_http::services::{ServeDir, ServeFile};
use tracing::warn;

use crate::{
    config::{ReadinessConfig, TlsFiles},
    control::actor::ActorHandle,
    store::Store,
};

pub mod auth;
pub mod client;
mod error;
pub mod events;
pub mod graphs;
pub mod metrics;
mod openapi;
pub mod policy;
mod schema;
pub mod versions;
pub mod workloads;

pub use error::{ApiError, ErrorBody, ErrorKind};
pub use openapi::openapi_json;

/// Largest request body accepted. Requests are small JSON documents; anything bigger is a mistake
/// or an attack, and is refused with 413 before it is buffered.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// How long in-flight requests get to finish when the daemon stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot load the TLS certificate {} and key {}", cert.display(), key.display())]
    Tls {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Token(#[from] auth::TokenError),
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// Read-only connection to the daemon's database: every GET reads through it, so none can write.
    pub store: Store,
    /// Read-write connection (`Store::open_for_review`) for the two requests that store policy
    /// versions: `POST .../policy/versions` and accepting a proposal. Modes go through `control`.
    pub versions: Store,
    /// When learning counts as done (readiness in the workload list).
    pub readiness: ReadinessConfig,
    /// The enforcement actor; None when the daemon has none (tests of reads only).
    pub control: Option<ActorHandle>,
    /// The token every /api request must carry.
    pub token: Arc<auth::Token>,
    /// What /metrics and /readyz report.
    pub metrics: Arc<metrics::Sources>,
    /// Graphs read for earlier requests, served again while the workload's graph is unchanged.
    pub graphs: Arc<graphs::GraphCache>,
}

/// The whole HTTP surface: API, probes for orchestrators, metrics and the dashboard.
pub fn router(state: ApiState, web_dir: &Path) -> Router {
    let api = Router::new()
        .route("/workloads", get(workloads::list))
        .route("/workloads/{name}", get(workloads::one))
        .route("/workloads/{name}/graph", get(workloads::graph))
        .route("/workloads/{name}/mode", put(workloads::set_mode))
        .route("/workloads/{name}/policy", get(policy::get))
        .route("/workloads/{name}/policy/versions", get(versions::list).post(versions::create))
        .route("/workloads/{name}/policy/versions/{version}", get(versions::one))
        .route("/workloads/{name}/policy/diff", get(versions::diff))
        .route("/workloads/{name}/policy/check", get(versions::check))
        .route("/workloads/{name}/proposals", get(versions::proposals))
        .route("/workloads/{name}/proposals/{id}/accept", post(versions::accept))
        .route("/events", get(events::list))
        .route("/status", get(workloads::status))
        .route("/openapi.json", get(openapi::serve))
        .fallback(error::no_such_endpoint)
        .method_not_allowed_fallback(error::wrong_method);
    // The dashboard is a single page: unknown paths get index.html, so a reload of a deep link works.
    let dashboard = ServeDir::new(web_dir).fallback(ServeFile::new(web_dir.join("index.html")));
    Router::new()
        .nest("/api/v1", api)
        .route("/api", any(error::no_such_endpoint))
        .route("/api/{*rest}", any(error::no_such_endpoint))
        .route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::prometheus))
        .fallback_service(dashboard)
        // Outermost, by path: every request under /api, whichever route (or none) it matches.
        .layer(middleware::from_fn_with_state(state.token.clone(), auth::require_token))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A bound listener, reported before the daemon says it is ready.
pub struct Listener {
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
}

impl Listener {
    /// Binds `addr` (and loads the TLS material) now, so a busy port or a bad certificate is
    /// reported at start. Must run inside a tokio runtime.
    pub async fn bind(addr: SocketAddr, tls: Option<&TlsFiles>) -> Result<Listener, ServeError> {
        let tls = match tls {
            None => None,
            Some(files) => {
                // Several crates may ask for a provider; the first to install it wins, which is fine.
                let _ = rustls::crypto::ring::default_provider().install_default();
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
                    .await
                    .map_err(|source| ServeError::Tls {
                        cert: files.cert.clone(),
                        key: files.key.clone(),
                        source,
                    })?;
                Some(config)
            }
        };
        let bind = |source| ServeError::Bind { addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        Ok(Listener { listener, tls })
    }

    /// `http://` or `https://` and the address really bound (a port 0 becomes the one chosen).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.listener.local_addr() {
            Ok(addr) => format!("{scheme}://{addr}"),
            Err(_) => format!("{scheme}://?"),
        }
    }

    /// Serves `app` until `stop` changes, then lets in-flight requests finish for a moment.
    pub async fn serve(self, app: Router, mut stop: watch::Receiver<bool>) {
        let handle = axum_server::Handle::new();
        let stopper = handle.clone();
        tokio::spawn(async move {
            let _ = stop.changed().await;
            stopper.graceful_shutdown(Some(SHUTDOWN_GRACE));
        });
        let service = app.into_make_service();
        let served = match self.tls {
            Some(tls) => axum_server::from_tcp_rustls(self.listener, tls).handle(handle).serve(service).await,
            None => axum_server::from_tcp(self.listener).handle(handle).serve(service).await,
        };
        if let Err(e) = served {
            warn!(error = %e, "the API server stopped with an error");
        }
    }
}
