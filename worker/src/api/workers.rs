//! `GET /v1/workers` and `GET /v1/queues`: what operators look at first.
//!
//! Tenancy: workers are shared infrastructure (host names, daemons, versions), so
//! `/v1/workers` is for admin tokens only (403 for a tenant token). `/v1/queues` answers
//! every token, counting only the caller's own activities for a tenant token (its
//! depth, its oldest waiting, its running), so one tenant learns nothing of another's
//! load; an admin sees every tenant's, narrowed by `tenant` when given.

use super::activities::parse_limit;
use super::auth::Caller;
use super::body::ApiQuery;
use super::error::ApiError;
use super::{store, AppState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/workers", get(workers))
        .route("/v1/queues", get(queues))
}

/// Query of `GET /v1/workers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersQuery {
    /// `true`: stopped and lost workers too (default: running and draining only).
    pub all: Option<String>,
    pub limit: Option<String>,
}

async fn workers(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<WorkersQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let all = match q.all.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(_) => return Err(ApiError::field("all", "must be true or false")),
    };
    let limit = parse_limit(q.limit.as_deref(), 100, 1000)?;
    let items = store::list_workers(&st.pool, all, limit).await?;
    Ok(Json(json!({ "items": items })))
}

/// Query of `GET /v1/queues`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuesQuery {
    /// Admin tokens only; a tenant token's own tenant otherwise.
    pub tenant: Option<String>,
}

async fn queues(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<QueuesQuery>,
) -> Result<Json<Value>, ApiError> {
    let items = store::list_queues(&st.pool, caller.scope(q.tenant.as_deref())).await?;
    Ok(Json(json!({ "items": items })))
}
