//! `/v1/tokens`: API tokens for admin tokens only (a tenant token gets 403, so a leaked
//! one cannot mint others). `POST` answers the new token once (only its SHA-256 is
//! stored); `GET` lists ids, names, tenants and use, never a token or its hash;
//! `POST /v1/tokens/{id}/revoke` makes it answer 401 from the next request on. Creating
//! and revoking are audited with the token's id, never the token.

use super::auth::Caller;
use super::body::{decode, JsonBytes};
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
        .route("/v1/tokens", get(list).post(create))
        .route("/v1/tokens/{id}/revoke", post(revoke))
}

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// A name for people (`ci`, `billing-service`), 1 to 128 characters.
    pub name: String,
    /// The tenant the token acts for; absent (with `admin: true`) for an admin token.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// An admin token: sees and acts on every tenant. Exclusive with `tenant_id`.
    #[serde(default)]
    pub admin: bool,
}

async fn create(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require_admin()?;
    let req: CreateToken = decode(&body)?;
    if req.name.is_empty() || req.name.chars().count() > 128 || req.name.contains('\0') {
        return Err(ApiError::field("name", "must be 1 to 128 characters"));
    }
    let tenant = match (req.admin, req.tenant_id) {
        (true, Some(_)) => {
            return Err(ApiError::field(
                "tenant_id",
                "an admin token has no tenant (leave out tenant_id or admin)",
            ))
        }
        (true, None) => None,
        (false, None) => {
            return Err(ApiError::field(
                "tenant_id",
                "is required unless admin is true",
            ))
        }
        (false, Some(t)) => {
            highway_workflows::EnqueueRequest::new("x", json!({}))
                .tenant(t.clone())
                .validate()
                .map_err(|e| ApiError::field("tenant_id", e.reason))?;
            Some(t)
        }
    };
    let (id, token) = store::create_token(&st.pool, &req.name, tenant.as_deref()).await?;
    store::audit(
        &st.pool,
        tenant.as_deref(),
        &caller.actor(),
        "token.create",
        Some(&id.to_string()),
        None,
        None,
        "ok",
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": id, "name": req.name, "tenant_id": tenant, "token": token})),
    ))
}

async fn list(State(st): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let items = store::list_tokens(&st.pool).await?;
    Ok(Json(json!({ "items": items })))
}

async fn revoke(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let id = parse_uuid("id", &id)?;
    if !store::revoke_token(&st.pool, id).await? {
        return Err(ApiError::NotFound("live token"));
    }
    store::audit(
        &st.pool,
        None,
        &caller.actor(),
        "token.revoke",
        Some(&id.to_string()),
        None,
        None,
        "ok",
    )
    .await?;
    Ok(Json(json!({ "id": id, "outcome": "revoked" })))
}
