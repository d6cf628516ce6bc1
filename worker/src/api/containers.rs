//! `/v1/containers`: the container tracking table, listed with filters (status, tenant,
//! run, activity, image prefix, age) or as the `orphans` view, and one container by id,
//! short id or name. Reads only; tenants see their own containers.

use super::activities::parse_limit;
use super::auth::Caller;
use super::body::ApiQuery;
use super::error::{parse_uuid, ApiError};
use super::{store, AppState};
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use highway_workflows::HumanDuration;
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/containers", get(list))
        .route("/v1/containers/{id}", get(show))
}

const STATUSES: [&str; 5] = ["created", "running", "exited", "removed", "missing"];

/// Query of `GET /v1/containers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    /// Admin tokens only.
    pub tenant: Option<String>,
    pub run: Option<String>,
    pub activity: Option<String>,
    /// Image reference prefix, e.g. `alpine` or `registry.example/team/`.
    pub image: Option<String>,
    /// Created at least this long ago, e.g. `1h`.
    pub older_than: Option<String>,
    /// `orphans`: managed containers whose activity is terminal or missing.
    pub view: Option<String>,
    pub limit: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = &q.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(ApiError::field(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
    }
    let orphans = match q.view.as_deref() {
        None | Some("all") => false,
        Some("orphans") => true,
        Some(_) => return Err(ApiError::field("view", "must be `all` or `orphans`")),
    };
    let older_than_ms = q
        .older_than
        .as_deref()
        .map(|s| {
            s.parse::<HumanDuration>()
                .map(|d| d.0.as_millis().min(i64::MAX as u128) as i64)
                .map_err(|e| ApiError::field("older_than", e.to_string()))
        })
        .transpose()?;
    let filter = store::ContainerFilter {
        tenant: caller.scope(q.tenant.as_deref()).map(str::to_owned),
        status: q.status,
        run: q.run.as_deref().map(|r| parse_uuid("run", r)).transpose()?,
        activity: q
            .activity
            .as_deref()
            .map(|r| parse_uuid("activity", r))
            .transpose()?,
        image: q.image,
        older_than_ms,
        orphans,
        limit: parse_limit(q.limit.as_deref(), 100, 1000)?,
    };
    let items = store::list_containers(&st.pool, &filter).await?;
    Ok(Json(json!({ "items": items })))
}

/// A container key: a (short) id or a name; anything else is a 400.
fn valid_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<store::Container>, ApiError> {
    if !valid_key(&id) {
        return Err(ApiError::field(
            "id",
            "must be a container id, short id or name",
        ));
    }
    store::get_container(&st.pool, &id, caller.scope(None))
        .await?
        .map(Json)
        .ok_or(ApiError::NotFound("container"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys() {
        assert!(super::valid_key("hw-0190abcd-1"));
        assert!(super::valid_key("3f2a9c1b7e6d"));
        assert!(!super::valid_key("a/b"));
        assert!(!super::valid_key("x' OR 1=1"));
    }
}
