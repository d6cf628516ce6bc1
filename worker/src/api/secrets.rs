//! `/v1/secrets`: the tenant secrets store (`highway.secrets`, sealed with the server's
//! `HIGHWAY_SECRETS_KEY`) over HTTP. `PUT /v1/secrets/{tenant}/{name}` with `{value}`
//! creates or replaces, `DELETE` removes, `GET /v1/secrets` lists names and metadata.
//! A value is never answered, logged or audited: the audit row holds the name and the
//! key id. An admin token acts on any tenant; a tenant token only on its own (403 for
//! another). 503 while the server has no key.

use super::auth::Caller;
use super::body::{decode, ApiQuery, JsonBytes};
use super::error::ApiError;
use super::AppState;
use crate::docker::secret_store::{SecretStore, StoreError};
use crate::docker::tracking::{self, AuditEvent};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/secrets", get(list)).route(
        "/v1/secrets/{tenant}/{name}",
        axum::routing::put(set).delete(remove),
    )
}

/// Body of `PUT /v1/secrets/{tenant}/{name}`.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetSecret {
    /// The value, 1 to 65536 bytes of UTF-8. Never shown again.
    pub value: String,
}

impl std::fmt::Debug for SetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecret { value: *** }")
    }
}

/// Query of `GET /v1/secrets`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Admin tokens only; a tenant token's own tenant otherwise.
    pub tenant: Option<String>,
}

fn store(st: &AppState) -> Result<SecretStore, ApiError> {
    st.secrets
        .clone()
        .map(|k| SecretStore::new(st.pool.clone(), k))
        .ok_or(ApiError::Unavailable(
            "secrets store (HIGHWAY_SECRETS_KEY is not set on this server)",
        ))
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::Name(e) => ApiError::field("name", e.to_string()),
        StoreError::BadTenant => ApiError::field("tenant", e.to_string()),
        StoreError::BadValue => ApiError::field("value", e.to_string()),
        StoreError::Db(e) => ApiError::db(e),
        StoreError::NoKey | StoreError::BadKey => {
            ApiError::Unavailable("secrets store (HIGHWAY_SECRETS_KEY)")
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// A tenant token acts only on its own tenant's secrets.
fn own(caller: &Caller, tenant: &str) -> Result<(), ApiError> {
    match &caller.tenant {
        Some(t) if t != tenant => Err(ApiError::Forbidden),
        _ => Ok(()),
    }
}

async fn audit(
    st: &AppState,
    caller: &Caller,
    tenant: &str,
    action: &str,
    name: &str,
) -> Result<(), ApiError> {
    let key_id = st.secrets.as_ref().map(|k| k.id().to_string());
    tracking::audit(
        &st.pool,
        &AuditEvent {
            tenant_id: tenant,
            actor: &caller.actor(),
            action,
            target: Some(name),
            activity_id: None,
            workflow_run_id: None,
            outcome: "ok",
            details: json!({ "key_id": key_id }),
        },
    )
    .await
    .map_err(ApiError::db)
}

async fn set(
    State(st): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<Value>, ApiError> {
    own(&caller, &tenant)?;
    let store = store(&st)?;
    let req: SetSecret = decode(&body)?;
    store
        .set(&tenant, &name, &req.value)
        .await
        .map_err(store_error)?;
    audit(&st, &caller, &tenant, "secret.set", &name).await?;
    Ok(Json(
        json!({ "tenant_id": tenant, "name": name, "outcome": "stored" }),
    ))
}

async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    own(&caller, &tenant)?;
    let store = store(&st)?;
    if !store.remove(&tenant, &name).await.map_err(store_error)? {
        return Err(ApiError::NotFound("secret"));
    }
    audit(&st, &caller, &tenant, "secret.rm", &name).await?;
    Ok(Json(
        json!({ "tenant_id": tenant, "name": name, "outcome": "removed" }),
    ))
}

async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let store = store(&st)?;
    let items = store
        .list(caller.scope(q.tenant.as_deref()))
        .await
        .map_err(store_error)?;
    Ok(Json(json!({ "items": items })))
}
