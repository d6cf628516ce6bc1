//! `/v1/runs`: start, get and cancel workflow runs. A run here is the record that groups
//! activities (`workflow_run_id`); starting one records it, cancelling it cancels every
//! activity of the run through `highway_workflows::Client::cancel_run`.

use super::auth::Caller;
use super::body::ApiJson;
use super::error::{parse_uuid, ApiError};
use super::{store, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/runs", post(start))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/cancel", post(cancel))
}

/// Body of `POST /v1/runs`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// A name for people (`nightly-build`).
    pub name: String,
    #[serde(default)]
    pub input: Option<Value>,
    /// Admin tokens only; a tenant token's own tenant otherwise.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

async fn start(
    State(st): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<StartRun>,
) -> Result<(StatusCode, Json<store::Run>), ApiError> {
    if body.name.is_empty() || body.name.len() > 200 || body.name.chars().any(char::is_control) {
        return Err(ApiError::field(
            "name",
            "must be 1 to 200 printable characters",
        ));
    }
    let tenant = match (&caller.tenant, body.tenant_id) {
        (Some(own), Some(t)) if *own != t => {
            return Err(ApiError::field(
                "tenant_id",
                "a tenant token can only start runs for its own tenant",
            ))
        }
        (Some(own), _) => own.clone(),
        (None, Some(t)) => t,
        (None, None) => highway_workflows::types::DEFAULT_TENANT.to_string(),
    };
    let input = body.input.unwrap_or_else(|| json!({}));
    let id = st.client.create_run(&tenant, &body.name, &input).await?;
    store::audit(
        &st.pool,
        Some(&tenant),
        &caller.actor(),
        "run.start",
        Some(&body.name),
        None,
        Some(id),
        "ok",
    )
    .await?;
    let run = store::get_run(&st.pool, id, None)
        .await?
        .ok_or(ApiError::Internal("run vanished after insert".into()))?;
    Ok((StatusCode::CREATED, Json(run)))
}

async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<store::Run>, ApiError> {
    let id = parse_uuid("id", &id)?;
    store::get_run(&st.pool, id, caller.scope(None))
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("run"))
}

async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let outcome = match st.client.cancel_run(id, caller.scope(None)).await {
        Ok(o) => o,
        Err(highway_workflows::Error::NotFound(_)) => return Err(ApiError::NotFound("run")),
        Err(e) => return Err(e.into()),
    };
    let tenant = store::get_run(&st.pool, id, None)
        .await?
        .map(|r| r.tenant_id);
    store::audit(
        &st.pool,
        tenant.as_deref(),
        &caller.actor(),
        "run.cancel",
        None,
        None,
        Some(id),
        serde_json::to_value(outcome)?.as_str().unwrap_or("ok"),
    )
    .await?;
    Ok(Json(json!({ "id": id, "outcome": outcome })))
}
