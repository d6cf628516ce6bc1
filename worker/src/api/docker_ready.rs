//! Readiness guards for endpoints that need a dependency: while the Docker daemon (or
//! Postgres) is known to be down, the request is answered at once with 503 instead of
//! waiting on a call that cannot succeed.
//!
//! Owns: the 503 answers `{"error":{"code":"docker_not_ready","message":"docker daemon
//! not ready"}}` and `{"error":{"code":"postgres_not_ready","message":"postgres not
//! ready"}}` (with `Retry-After`). Must not: probe anything itself — it reads the
//! snapshots the monitors keep in [`Health`]. Only `down` refuses: `unknown` (no probe
//! answered yet) lets the request through to its own deadlines.
//!
//! # Usage
//! As an extractor, first in the handler's arguments (any state `S` with
//! `Health: FromRef<S>`; `AppState` has that impl below):
//! ```ignore
//! async fn list_containers(_: DockerReady, State(st): State<AppState>, ...) -> ... {}
//! async fn enqueue(_: PostgresReady, State(st): State<AppState>, ...) -> ... {}
//! ```
//! Or for a whole router, as a middleware layer:
//! ```ignore
//! Router::new().route("/v1/containers", get(list))
//!     .route_layer(axum::middleware::from_fn_with_state(state.health.clone(), require_docker))
//! ```

use crate::api::AppState;
use crate::health::{Dependency, Health, Status};
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

impl FromRef<AppState> for Health {
    fn from_ref(st: &AppState) -> Health {
        st.health.clone()
    }
}

/// A dependency that is down; answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("docker daemon not ready")]
    Docker {
        /// Seconds until the monitor's next probe, if known.
        retry_after: Option<u64>,
    },
    #[error("postgres not ready")]
    Postgres { retry_after: Option<u64> },
}

impl NotReady {
    pub fn code(&self) -> &'static str {
        match self {
            NotReady::Docker { .. } => "docker_not_ready",
            NotReady::Postgres { .. } => "postgres_not_ready",
        }
    }
}

impl IntoResponse for NotReady {
    fn into_response(self) -> Response {
        let retry_after = match self {
            NotReady::Docker { retry_after } | NotReady::Postgres { retry_after } => retry_after,
        };
        let mut res = (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": self.code(), "message": self.to_string()}})),
        )
            .into_response();
        // Clients back off at least until the next probe (at least 1 s).
        let secs = retry_after.unwrap_or(5).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            res.headers_mut().insert(RETRY_AFTER, v);
        }
        res
    }
}

/// `Some(seconds until the next probe)` when `dep` is down.
fn down(dep: &Dependency) -> Option<Option<u64>> {
    let s = dep.snapshot();
    (s.status == Status::Down).then(|| {
        s.next_retry_at.map(|t| {
            let ms = (t - chrono::Utc::now()).num_milliseconds().max(0) as u64;
            ms.div_ceil(1000)
        })
    })
}

/// Checks Docker readiness now.
pub fn check_docker(health: &Health) -> Result<(), NotReady> {
    match down(&health.docker) {
        Some(retry_after) => Err(NotReady::Docker { retry_after }),
        None => Ok(()),
    }
}

/// Checks Postgres readiness now.
pub fn check_postgres(health: &Health) -> Result<(), NotReady> {
    match down(&health.postgres) {
        Some(retry_after) => Err(NotReady::Postgres { retry_after }),
        None => Ok(()),
    }
}

/// Extractor: the Docker daemon is not known to be down.
#[derive(Debug, Clone, Copy)]
pub struct DockerReady;

impl<S> FromRequestParts<S> for DockerReady
where
    Health: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = NotReady;

    async fn from_request_parts(_: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check_docker(&Health::from_ref(state)).map(|()| DockerReady)
    }
}

/// Extractor: Postgres is not known to be down.
#[derive(Debug, Clone, Copy)]
pub struct PostgresReady;

impl<S> FromRequestParts<S> for PostgresReady
where
    Health: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = NotReady;

    async fn from_request_parts(_: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        check_postgres(&Health::from_ref(state)).map(|()| PostgresReady)
    }
}

/// Middleware (`from_fn_with_state(health, require_docker)`): 503 while Docker is down.
pub async fn require_docker(State(health): State<Health>, req: Request, next: Next) -> Response {
    match check_docker(&health) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware (`from_fn_with_state(health, require_postgres)`): 503 while Postgres is down.
pub async fn require_postgres(State(health): State<Health>, req: Request, next: Next) -> Response {
    match check_postgres(&health) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    async fn call(app: Router) -> (StatusCode, serde_json::Value, Option<String>) {
        let res = app
            .oneshot(Request::get("/x").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = res.status();
        let retry = res
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .unwrap();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        (status, json, retry)
    }

    #[tokio::test]
    async fn extractor_answers_503_only_while_down() {
        let health = Health::default();
        let app = Router::new()
            .route("/x", get(|_: DockerReady| async { "ran" }))
            .with_state(health.clone());
        // Unknown: through.
        assert_eq!(call(app.clone()).await.0, StatusCode::OK);
        let next = chrono::Utc::now() + chrono::Duration::milliseconds(2500);
        health.docker.failure("refused".into(), Some(next));
        let (status, body, retry) = call(app.clone()).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            json!({"error":{"code":"docker_not_ready","message":"docker daemon not ready"}})
        );
        assert_eq!(retry.as_deref(), Some("3"));
        health.docker.success();
        assert_eq!(call(app).await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn middleware_guards_postgres() {
        let health = Health::default();
        let app = Router::new()
            .route("/x", get(|| async { "ran" }))
            .route_layer(axum::middleware::from_fn_with_state(
                health.clone(),
                require_postgres,
            ));
        health.postgres.failure("io".into(), None);
        let (status, body, retry) = call(app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "postgres_not_ready");
        assert_eq!(retry.as_deref(), Some("5"));
    }
}
