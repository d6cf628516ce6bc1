//! `/v1/registries`: credentials of private registries, sent with every pull from that
//! registry. `PUT /v1/registries/{host}` stores (or replaces) a username and password,
//! `GET /v1/registries` lists host, username, scope and times, `DELETE
//! /v1/registries/{host}` removes one. The password is write-only: no answer, error or
//! audit row carries it.
//!
//! Owns: the HTTP shape and the scope rules: an admin token manages global entries (or a
//! tenant's, with `tenant_id` in the body / `tenant` in the query); a tenant token only
//! its own tenant's, and sees only those. The SQL, the encryption and the audit rows are
//! `docker::registry_store`'s. Storing needs `HIGHWAY_SECRETS_KEY` on the server (409
//! without it); listing and removing do not.

use super::auth::Caller;
use super::body::{decode, ApiQuery, JsonBytes};
use super::error::ApiError;
use super::AppState;
use crate::docker::registry_store::{Listing, RegistryStore, StoreError};
use crate::docker::secrets::SecretValue;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/registries", get(list))
        .route("/v1/registries/{host}", put(add).delete(remove))
}

/// Body of `PUT /v1/registries/{host}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistryPut {
    pub username: String,
    /// Write-only: never returned, logged or audited.
    #[schemars(with = "String")]
    pub password: Value,
    /// Admin tokens: the tenant whose pulls use it (absent: every tenant, a tenant's own
    /// entry winning). A tenant token's own tenant.
    pub tenant_id: Option<String>,
}

/// Query of `GET /v1/registries` and `DELETE /v1/registries/{host}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopeQuery {
    /// Admin tokens only: that tenant's entries (absent: all for a listing, the global
    /// entry for a removal).
    pub tenant: Option<String>,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            e @ StoreError::NoKey => ApiError::Conflict(e.to_string()),
            StoreError::Host(h) => ApiError::field("host", h.to_string()),
            e @ StoreError::BadTenant => ApiError::field("tenant_id", e.to_string()),
            e @ StoreError::BadUsername => ApiError::field("username", e.to_string()),
            e @ StoreError::BadPassword => ApiError::field("password", e.to_string()),
            e @ StoreError::Decrypt { .. } => ApiError::Internal(e.to_string()),
            StoreError::Db(e) => ApiError::db(e),
        }
    }
}

fn store(st: &AppState) -> Result<RegistryStore, ApiError> {
    RegistryStore::from_env(st.pool.clone()).map_err(|e| ApiError::Internal(e.to_string()))
}

/// `PUT /v1/registries/{host}`: 201 with the entry when new, 200 when it replaced one.
async fn add(
    State(st): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let req: RegistryPut = decode(&body)?;
    // Checked by shape only: serde's messages could quote a wrong-typed value.
    let Value::String(password) = req.password else {
        return Err(ApiError::field("password", "must be a string"));
    };
    let tenant = match caller.own_tenant(
        &body,
        "a tenant token can only store registry credentials for its own tenant",
    )? {
        Some(t) => Some(t.to_owned()),
        None => req.tenant_id,
    };
    let password = SecretValue::new(password);
    let (info, replaced) = store(&st)?
        .add(
            tenant.as_deref(),
            &host,
            &req.username,
            &password,
            &caller.actor(),
        )
        .await?;
    let status = if replaced {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    let mut v = serde_json::to_value(&info)?;
    v["replaced"] = json!(replaced);
    Ok((status, Json(v)).into_response())
}

/// `GET /v1/registries`: `{"items": [...]}`, never a password.
async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let which = match caller.scope(q.tenant.as_deref()) {
        Some(t) => Listing::Tenant(t.to_owned()),
        None => Listing::All,
    };
    let items = store(&st)?.list(&which).await?;
    Ok(Json(json!({ "items": items })))
}

/// `DELETE /v1/registries/{host}`: 200 `{"removed": true, ...}`, 404 when there is none.
async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
    ApiQuery(q): ApiQuery<ScopeQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = caller.scope(q.tenant.as_deref());
    let host_norm = crate::docker::registry_auth::normalize_host(&host)
        .map_err(|h| ApiError::field("host", h.to_string()))?;
    if !store(&st)?
        .remove(tenant, &host_norm, &caller.actor())
        .await?
    {
        return Err(ApiError::NotFound("registry credentials"));
    }
    Ok(Json(json!({
        "removed": true,
        "host": host_norm,
        "scope": if tenant.is_some() { "tenant" } else { "global" },
        "tenant_id": tenant,
    })))
}
