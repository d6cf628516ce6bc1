//! The HTTP server (axum): `/health` now; the `/v1` API and `/metrics` grow here. One
//! `IntoResponse` maps errors to statuses and leaks nothing internal.

pub mod docker_ready;

use crate::health::{Health, Status};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub health: Health,
    pub pool: sqlx::PgPool,
}

/// The router, testable with `oneshot` and no socket.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
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

/// Binds the listen address (a clear error naming it when taken).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (HIGHWAY_LISTEN): {e}"))
}
