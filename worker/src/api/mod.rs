//! The HTTP server (axum): `/health`, `/health/live`, `/health/ready` and `/metrics`
//! without auth, and the `/v1` API behind bearer tokens. One `IntoResponse`
//! ([`error::ApiError`]) maps every failure to a status and a `{"error": {...}}` body,
//! and leaks nothing internal.
//!
//! # Layout
//! - [`error`]: `ApiError` and its response mapping.
//! - [`auth`]: the `Caller` extractor (hashed bearer tokens, tenant or admin).
//! - [`body`]: body size guard (413 before reading), JSON and query extractors (415,
//!   422 naming unknown fields, 400 naming bad fields).
//! - [`activities`], [`containers`], [`runs`], [`audit`], [`gc`], [`schedules`],
//!   [`workers`] (workers and queues), [`tokens`], [`secrets`], [`registries`]: the `/v1`
//!   resources.
//! - [`docker_ready`]: `DockerReady` / `PostgresReady` guards (503 while a dependency is
//!   down).
//! - [`metrics`]: Prometheus text. [`openapi`]: the OpenAPI document.
//! - [`store`]: the API's own SQL (tokens, quotas, reads).
//! - [`tls`]: HTTPS (`--tls-cert`/`--tls-key`, reloaded on SIGHUP).
//! - [`wait`]: long-poll reads (`?wait=`) woken by completion notifications.
//! - [`admission`]: `tools.docker.*` params judged at the door (422 naming the path).
//! - [`ui`]: the operators' web console under `/ui` (sessions, CSRF, HTML pages, live
//!   fragments), in `worker/src/ui/`.
//!
//! Architecture Invariant: handlers never format a database error into a response;
//! they return `ApiError`, whose `Internal` variant is only logged.

pub mod activities;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod body;
pub mod containers;
pub mod docker_ready;
pub mod error;
pub mod gc;
pub mod metrics;
pub mod openapi;
pub mod registries;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod store;
pub mod tls;
pub mod tokens;
/// The web console: a child of the HTTP layer (it uses the routes' own functions).
pub mod ui;
pub mod wait;
pub mod workers;

use crate::config::api::ApiConfig;
use crate::config::docker::SecurityPolicy;
use crate::health::{Health, Status};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Most log streams holding a LISTEN connection at once; more followers poll instead,
/// so tails cannot exhaust the pool.
pub const MAX_LOG_LISTENERS: usize = 8;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: Health,
    pub pool: sqlx::PgPool,
    /// The queue's producer API (enqueue, get, list, cancel).
    pub client: highway_workflows::Client,
    pub api: ApiConfig,
    /// Budget of LISTEN connections for log streams.
    pub log_listeners: Arc<Semaphore>,
    /// Budget of LISTEN connections for long-poll reads (`?wait=`).
    pub wait_listeners: Arc<Semaphore>,
    /// `GET /v1/gc/plan`: set when this server runs with Docker.
    pub gc: Option<gc::GcPlanner>,
    /// Image digests of workflow cache keys, for runs started here.
    pub digests: crate::workflow::Digests,
    /// The secrets store's key (`/v1/secrets` answers 503 without it).
    pub secrets: Option<crate::docker::secret_store::SecretsKey>,
    /// `/health/ready` needs Docker `up`: this process runs docker activities and was
    /// started with `HIGHWAY_DOCKER_OPTIONAL=false`.
    pub docker_required: bool,
    /// The Docker policy `tools.docker.*` params are admitted against before they are
    /// stored: this process's Docker policy settings (`HIGHWAY_DOCKER_*`), the same ones
    /// its worker uses (secure defaults in a process without Docker settings).
    pub docker_policy: Arc<SecurityPolicy>,
    /// This server answers over HTTPS: the web console's session cookie is `Secure`.
    pub https: bool,
}

impl AppState {
    pub fn new(health: Health, pool: sqlx::PgPool, api: ApiConfig) -> Self {
        Self {
            health,
            client: highway_workflows::Client::new(pool.clone()),
            pool,
            api,
            log_listeners: Arc::new(Semaphore::new(MAX_LOG_LISTENERS)),
            wait_listeners: Arc::new(Semaphore::new(wait::MAX_WAIT_LISTENERS)),
            gc: None,
            digests: Default::default(),
            secrets: None,
            docker_required: false,
            docker_policy: Arc::default(),
            https: false,
        }
    }

    /// Served over HTTPS (`--tls-cert`): cookies of the web console get `Secure`.
    pub fn with_https(mut self, https: bool) -> Self {
        self.https = https;
        self
    }

    /// With the Docker policy the door admits params against.
    pub fn with_docker_policy(mut self, policy: SecurityPolicy) -> Self {
        self.docker_policy = Arc::new(policy);
        self
    }

    /// Whether `/health/ready` waits for Docker as well as Postgres.
    pub fn with_docker_required(mut self, required: bool) -> Self {
        self.docker_required = required;
        self
    }

    /// With the secrets store's key (`/v1/secrets`).
    pub fn with_secrets(mut self, key: Option<crate::docker::secret_store::SecretsKey>) -> Self {
        self.secrets = key;
        self
    }

    /// With the garbage-collector planner (`GET /v1/gc/plan`).
    pub fn with_gc(mut self, gc: Option<gc::GcPlanner>) -> Self {
        self.gc = gc;
        self
    }

    pub fn with_digests(mut self, digests: crate::workflow::Digests) -> Self {
        self.digests = digests;
        self
    }
}

/// The router, testable with `oneshot` and no socket.
pub fn router(state: AppState) -> Router {
    let limit = state.api.api_body_limit;
    let v1 = Router::new()
        .merge(activities::routes())
        .merge(containers::routes())
        .merge(runs::routes())
        .merge(audit::routes())
        .merge(schedules::routes())
        .merge(gc::routes())
        .merge(workers::routes())
        .merge(tokens::routes())
        .merge(secrets::routes())
        .merge(registries::routes())
        // While Postgres is known to be down, answer 503 at once instead of waiting
        // for the pool's acquire timeout (R8).
        .route_layer(axum::middleware::from_fn_with_state(
            state.health.clone(),
            docker_ready::require_postgres,
        ))
        .merge(openapi::routes());
    // The web console: its own pages, session cookie and headers, beside the API.
    let ui = ui::routes().route_layer(axum::middleware::from_fn_with_state(
        state.health.clone(),
        docker_ready::require_postgres,
    ));
    Router::new()
        .route("/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .merge(metrics::routes())
        .merge(v1)
        .merge(ui)
        .fallback(|| async { error::ApiError::NotFound("route") })
        // Every matched route is timed under its template, never its raw path.
        .route_layer(axum::middleware::from_fn(crate::metrics::track_http))
        // Layers run bottom-up: the declared length is checked first (413 before a
        // byte is read), then bodies without a length are capped while streaming.
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            body::limit_declared_length,
        ))
        .with_state(state)
}

/// `/health`: 200 while the process is healthy, with dependency snapshots. No auth, so
/// it holds no versions, hostnames or connection strings.
async fn health(State(st): State<AppState>) -> Response {
    let pg = st.health.postgres.snapshot();
    let docker = st.health.docker.snapshot();
    let status = if st.health.draining.is_cancelled() {
        "draining"
    } else if pg.status == Status::Up && docker.status != Status::Down {
        "ok"
    } else {
        "degraded"
    };
    (
        StatusCode::OK,
        Json(json!({
            "status": status,
            "dependencies": { "postgres": pg, "docker": docker },
        })),
    )
        .into_response()
}

/// `/health/live`: 200 whenever the process answers at all (an orchestrator restarts
/// it otherwise); dependencies do not matter here.
async fn live() -> Response {
    (StatusCode::OK, Json(json!({ "status": "live" }))).into_response()
}

/// `/health/ready`: 200 `{"status":"ready","failing":[]}` while Postgres is up (and
/// Docker, when this process needs it); else 503 naming the failing dependencies, or
/// `draining` once shutdown began. No versions, hostnames or connection strings.
async fn ready(State(st): State<AppState>) -> Response {
    let readiness = st.health.readiness(st.docker_required);
    let code = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(readiness)).into_response()
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Serves over TLS (see [`tls`]) until `shutdown` completes.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    state: AppState,
    config: axum_server::tls_rustls::RustlsConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tls::serve(listener, router(state), config, shutdown).await
}

/// Binds the listen address (a clear error naming it when taken).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (HIGHWAY_LISTEN): {e}"))
}
