//! `GET /v1/audit`: the append-only audit log, newest first, filtered by action,
//! activity, run, target (a container or image id prefix) and time range; paged with
//! `before` (an audit id). Tenants see their rows.

use super::activities::parse_limit;
use super::auth::Caller;
use super::body::ApiQuery;
use super::error::{parse_uuid, ApiError};
use super::{store, AppState};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/audit", get(list))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Admin tokens only.
    pub tenant: Option<String>,
    pub action: Option<String>,
    pub activity: Option<String>,
    pub run: Option<String>,
    /// A container (or image) id, or a prefix of at least 4 characters.
    pub container: Option<String>,
    /// RFC 3339 instant; rows at or after it.
    pub since: Option<String>,
    /// RFC 3339 instant; rows before it.
    pub until: Option<String>,
    /// Rows older than this audit id (the `id` of the last row of the previous page).
    pub before: Option<String>,
    pub limit: Option<String>,
}

async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<Value>, ApiError> {
    let since = instant("since", q.since.as_deref())?;
    let until = instant("until", q.until.as_deref())?;
    if q.container.as_ref().is_some_and(|c| c.len() < 4) {
        return Err(ApiError::field("container", "needs at least 4 characters"));
    }
    let before_id = q
        .before
        .as_deref()
        .map(|s| {
            s.parse::<i64>()
                .map_err(|_| ApiError::field("before", "must be an audit id"))
        })
        .transpose()?;
    let f = store::AuditFilter {
        tenant: caller.scope(q.tenant.as_deref()).map(str::to_owned),
        action: q.action,
        activity: q
            .activity
            .as_deref()
            .map(|s| parse_uuid("activity", s))
            .transpose()?,
        run: q.run.as_deref().map(|s| parse_uuid("run", s)).transpose()?,
        target_prefix: q.container,
        since,
        until,
        before_id,
        limit: parse_limit(q.limit.as_deref(), 100, 1000)?,
    };
    let items = store::list_audit(&st.pool, &f).await?;
    Ok(Json(json!({ "items": items })))
}

fn instant(field: &'static str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|s| {
        DateTime::parse_from_rfc3339(s)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| ApiError::field(field, "must be an RFC 3339 time"))
    })
    .transpose()
}
