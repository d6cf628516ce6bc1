//! `/v1/schedules`: durable cron over HTTP: create (with the per-tenant schedules quota,
//! 429), list, get, replace (PUT) or merge-patch (PATCH), delete, pause (with a note),
//! resume, trigger, backfill, preview of the next fire times, and the slot records.
//!
//! Owns: the HTTP shape of these operations and their tenant rules (a tenant token
//! creates only for its own tenant and sees only its own schedules; another tenant's id
//! answers 404 exactly like a missing one) and one audit row per mutation. The SQL stays
//! in `highway_workflows::schedule::ScheduleClient`.
//!
//! Errors: a body whose field is well-formed JSON but unusable (a bad cron expression,
//! timezone, policy name, range or type) is 422 `invalid_value` naming the field; an
//! unknown field is 422 `unknown_field`; a bad query parameter or a non-UUID id is 400.

use super::activities::{parse_count, parse_limit};
use super::auth::Caller;
use super::body::{decode, ApiQuery, JsonBytes};
use super::error::{parse_uuid, ApiError};
use super::{admission, store, AppState};
use crate::config::scheduler::SchedulerConfig;
use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use highway_workflows::schedule::store::Error as ScheduleError;
use highway_workflows::schedule::{
    OverlapPolicy, Schedule, ScheduleClient, ScheduleFilter, ScheduleLimits, ScheduleSpec,
};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::OnceLock;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/schedules", post(create).get(list))
        .route(
            "/v1/schedules/{id}",
            get(show).put(replace).patch(patch).delete(remove),
        )
        .route("/v1/schedules/{id}/pause", post(pause))
        .route("/v1/schedules/{id}/resume", post(resume))
        .route("/v1/schedules/{id}/trigger", post(trigger))
        .route("/v1/schedules/{id}/backfill", post(backfill))
        .route("/v1/schedules/{id}/preview", get(preview))
        .route("/v1/schedules/{id}/fires", get(fires))
}

/// The limits schedules are validated with: the scheduler's settings
/// (`HIGHWAY_SCHEDULER_MIN_INTERVAL`, ...) of this process, read once. A bad value
/// stops the scheduler at start; here it falls back to the defaults.
fn limits() -> ScheduleLimits {
    static LIMITS: OnceLock<ScheduleLimits> = OnceLock::new();
    *LIMITS.get_or_init(|| {
        SchedulerConfig::from_env()
            .map(|c| c.limits())
            .unwrap_or_default()
    })
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::InvalidField(f) => ApiError::InvalidValue {
                field: f.field,
                reason: f.reason,
            },
            ScheduleError::NotFound(_) => ApiError::NotFound("schedule"),
            e @ ScheduleError::NameTaken { .. } => ApiError::Conflict(e.to_string()),
            ScheduleError::Conflict { .. } => {
                ApiError::Conflict("the schedule changed concurrently; retry".into())
            }
            ScheduleError::Enqueue(e) => e.into(),
            ScheduleError::Database(e) => ApiError::db(e),
            e @ (ScheduleError::Corrupt { .. } | ScheduleError::Failpoint(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

/// [`decode`] for schedule bodies: a field error is 422 (see the module doc).
fn decode_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    decode(bytes).map_err(|e| match e {
        ApiError::InvalidField { field, reason } => ApiError::InvalidValue { field, reason },
        other => other,
    })
}

/// An optional JSON body: none at all (no content type, empty) is `T::default()`;
/// anything else goes through the JSON extractor (415, 413, 422 as usual).
async fn optional_body<T: DeserializeOwned + Default>(
    st: &AppState,
    req: Request,
) -> Result<T, ApiError> {
    if !req.headers().contains_key(CONTENT_TYPE) {
        let limit = st.api.api_body_limit;
        let bytes = Bytes::from_request(req, st)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(limit))?;
        return if bytes.iter().all(u8::is_ascii_whitespace) {
            Ok(T::default())
        } else {
            Err(ApiError::UnsupportedMediaType)
        };
    }
    let JsonBytes(bytes) = JsonBytes::from_request(req, st).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    decode_body(&bytes)
}

fn client(st: &AppState) -> ScheduleClient {
    ScheduleClient::new(st.pool.clone())
}

/// The wire view of a schedule, with `changed` on pause/resume answers.
fn view(s: &Schedule, changed: Option<bool>) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(s)?;
    if let (Some(c), Some(obj)) = (changed, v.as_object_mut()) {
        obj.insert("changed".into(), json!(c));
    }
    Ok(v)
}

async fn audit(
    st: &AppState,
    caller: &Caller,
    s: &Schedule,
    action: &str,
    activity: Option<Uuid>,
    outcome: &str,
) -> Result<(), ApiError> {
    store::audit(
        &st.pool,
        Some(&s.tenant_id),
        &caller.actor(),
        action,
        Some(&s.id.to_string()),
        activity,
        None,
        outcome,
    )
    .await?;
    Ok(())
}

/// The schedule `id` names, as the caller may see it (404 otherwise).
async fn visible(st: &AppState, caller: &Caller, id: &str) -> Result<Schedule, ApiError> {
    let id = parse_uuid("id", id)?;
    Ok(client(st).get(id, caller.scope(None)).await?)
}

/// `POST /v1/schedules`: the body is a `ScheduleSpec`. 201 with the stored schedule;
/// 409 when the tenant already has a schedule of that name; 429 at the quota.
async fn create(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let mut spec: ScheduleSpec = decode_body(&body)?;
    if let Some(t) = caller.own_tenant(
        &body,
        "a tenant token can only create schedules for its own tenant",
    )? {
        spec.tenant_id = t.to_owned();
    }
    admission::admit(&st, "activity.", &spec.activity.kind, &spec.activity.params)?;
    let quota = st.api.api_quota_schedules;
    if quota > 0 && store::schedule_count(&st.pool, &spec.tenant_id).await? >= quota {
        return Err(ApiError::QuotaExceeded {
            what: "schedules",
            limit: quota,
        });
    }
    let s = client(&st).create(&spec, &limits()).await?;
    audit(&st, &caller, &s, "schedule.create", None, "ok").await?;
    Ok((StatusCode::CREATED, Json(view(&s, None)?)).into_response())
}

/// Query of `GET /v1/schedules`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `true` or `false`.
    pub paused: Option<String>,
    /// Exact name.
    pub name: Option<String>,
    /// Admin tokens only; a tenant token's own tenant otherwise.
    pub tenant: Option<String>,
    /// Schedules after this id (the `next` of the previous page).
    pub after: Option<String>,
    pub limit: Option<String>,
}

/// `GET /v1/schedules`: oldest first; `next` is the cursor of the following page (null
/// on the last one).
async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let paused = match q.paused.as_deref() {
        None => None,
        Some("true") | Some("1") => Some(true),
        Some("false") | Some("0") => Some(false),
        Some(_) => return Err(ApiError::field("paused", "must be true or false")),
    };
    let limit = parse_limit(q.limit.as_deref(), 100, 1000)?;
    let f = ScheduleFilter {
        tenant: caller.scope(q.tenant.as_deref()).map(str::to_owned),
        paused,
        name: q.name,
        after: q
            .after
            .as_deref()
            .map(|a| parse_uuid("after", a))
            .transpose()?,
        limit,
    };
    let rows = client(&st).list_filtered(&f).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|s| s.id))
        .flatten();
    let items = rows
        .iter()
        .map(|s| view(s, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({ "items": items, "next": next })))
}

async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = visible(&st, &caller, &id).await?;
    Ok(Json(view(&s, None)?))
}

/// Stores `spec` as the new definition of `old` (its tenant unless the body named one,
/// which must then be the same).
async fn update(
    st: &AppState,
    caller: &Caller,
    old: &Schedule,
    mut spec: ScheduleSpec,
    named_tenant: bool,
) -> Result<Json<Value>, ApiError> {
    if !named_tenant {
        spec.tenant_id = old.tenant_id.clone();
    }
    admission::admit(st, "activity.", &spec.activity.kind, &spec.activity.params)?;
    let s = client(st)
        .update(old.id, caller.scope(None), &spec, &limits())
        .await?;
    audit(st, caller, &s, "schedule.update", None, "ok").await?;
    Ok(Json(view(&s, None)?))
}

/// `PUT /v1/schedules/{id}`: replaces the definition with a whole `ScheduleSpec`
/// (`paused` and `note` are changed by pause/resume, not here).
async fn replace(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<Value>, ApiError> {
    let old = visible(&st, &caller, &id).await?;
    let spec: ScheduleSpec = decode_body(&body)?;
    let named = serde_json::from_slice::<Value>(&body)
        .ok()
        .is_some_and(|v| v.get("tenant_id").is_some());
    update(&st, &caller, &old, spec, named).await
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes, the rest
/// replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// `PATCH /v1/schedules/{id}`: a JSON merge patch of the schedule's spec, e.g.
/// `{"cron": "0 3 * * *"}` or `{"activity": {"priority": 2}}`.
async fn patch(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<Value>, ApiError> {
    let old = visible(&st, &caller, &id).await?;
    let p: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !p.is_object() {
        return Err(ApiError::field(
            "body",
            "a merge patch must be a JSON object",
        ));
    }
    let mut doc = serde_json::to_value(old.spec())?;
    merge_patch(&mut doc, &p);
    let spec: ScheduleSpec = decode_body(&serde_json::to_vec(&doc)?)?;
    update(&st, &caller, &old, spec, true).await
}

/// `DELETE /v1/schedules/{id}`: the schedule and its slot records (its activities stay).
async fn remove(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let s = visible(&st, &caller, &id).await?;
    if !client(&st).delete(s.id, caller.scope(None)).await? {
        return Err(ApiError::NotFound("schedule"));
    }
    audit(&st, &caller, &s, "schedule.delete", None, "ok").await?;
    Ok(Json(json!({ "id": s.id, "deleted": true })))
}

/// Body of `POST /v1/schedules/{id}/pause` (optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why it is paused (shown by get and list).
    #[serde(default)]
    pub note: Option<String>,
}

/// `POST /v1/schedules/{id}/pause`: `changed` is false when it was already paused.
async fn pause(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let body: PauseRequest = optional_body(&st, req).await?;
    pause_schedule(&st, &caller, id, body.note.as_deref())
        .await
        .map(Json)
}

/// Pauses a schedule as `caller` and audits it: the one path of `POST
/// /v1/schedules/{id}/pause` and the web console's pause button.
pub async fn pause_schedule(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
    note: Option<&str>,
) -> Result<Value, ApiError> {
    let (s, changed) = client(st).pause(id, caller.scope(None), note).await?;
    let outcome = if changed { "ok" } else { "unchanged" };
    audit(st, caller, &s, "schedule.pause", None, outcome).await?;
    view(&s, Some(changed))
}

/// `POST /v1/schedules/{id}/resume`: from the next slot after now.
async fn resume(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    resume_schedule(&st, &caller, id).await.map(Json)
}

/// Resumes a schedule as `caller` and audits it: the one path of `POST
/// /v1/schedules/{id}/resume` and the web console's resume button.
pub async fn resume_schedule(st: &AppState, caller: &Caller, id: Uuid) -> Result<Value, ApiError> {
    let (s, changed) = client(st).resume(id, caller.scope(None)).await?;
    let outcome = if changed { "ok" } else { "unchanged" };
    audit(st, caller, &s, "schedule.resume", None, outcome).await?;
    view(&s, Some(changed))
}

/// Body of `POST /v1/schedules/{id}/trigger` (optional).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// Fire even when the overlap policy would skip or wait (never cancels).
    #[serde(default)]
    pub force: bool,
}

/// `POST /v1/schedules/{id}/trigger`: fires now (the slot is the database's now).
async fn trigger(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let s = visible(&st, &caller, &id).await?;
    let body: TriggerRequest = optional_body(&st, req).await?;
    trigger_schedule(&st, &caller, s.id, body.force)
        .await
        .map(Json)
}

/// Fires a schedule now as `caller` and audits it: the one path of `POST
/// /v1/schedules/{id}/trigger` and the web console's trigger button.
pub async fn trigger_schedule(
    st: &AppState,
    caller: &Caller,
    id: Uuid,
    force: bool,
) -> Result<Value, ApiError> {
    let s = client(st).get(id, caller.scope(None)).await?;
    let t = client(st).trigger(s.id, caller.scope(None), force).await?;
    audit(
        st,
        caller,
        &s,
        "schedule.trigger",
        t.activity_id,
        t.outcome.as_str(),
    )
    .await?;
    Ok(serde_json::to_value(&t)?)
}

/// Body of `POST /v1/schedules/{id}/backfill`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackfillRequest {
    /// First instant (RFC 3339), inclusive.
    #[schemars(with = "String")]
    pub from: DateTime<Utc>,
    /// Last instant (RFC 3339), inclusive; not in the future. At most 10000 slots.
    #[schemars(with = "String")]
    pub to: DateTime<Utc>,
    /// The backfill's own overlap policy: allow (default), skip or cancel_other.
    #[serde(default = "allow")]
    pub overlap: OverlapPolicy,
}

fn allow() -> OverlapPolicy {
    OverlapPolicy::Allow
}

/// `POST /v1/schedules/{id}/backfill`: runs the slots of a past range.
async fn backfill(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    JsonBytes(body): JsonBytes,
) -> Result<Json<Value>, ApiError> {
    let s = visible(&st, &caller, &id).await?;
    let b: BackfillRequest = decode_body(&body)?;
    let r = client(&st)
        .backfill(s.id, caller.scope(None), b.from, b.to, b.overlap)
        .await?;
    let outcome = format!("{} fired, {} skipped", r.fired, r.skipped);
    audit(&st, &caller, &s, "schedule.backfill", None, &outcome).await?;
    Ok(Json(serde_json::to_value(&r)?))
}

/// Query of `GET /v1/schedules/{id}/preview`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    /// 1..=1000, default 10.
    pub count: Option<String>,
}

/// `GET /v1/schedules/{id}/preview?count=N`: the next fire times in its timezone.
async fn preview(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<PreviewQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let count = parse_count("count", q.count.as_deref(), 10, 1000)? as usize;
    let items = client(&st).preview(id, caller.scope(None), count).await?;
    Ok(Json(json!({ "items": items })))
}

/// Query of `GET /v1/schedules/{id}/fires`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiresQuery {
    pub limit: Option<String>,
}

/// `GET /v1/schedules/{id}/fires`: the newest slot records.
async fn fires(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<FiresQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let limit = parse_limit(q.limit.as_deref(), 50, 1000)?;
    let items = client(&st).fires(id, caller.scope(None), limit).await?;
    Ok(Json(json!({ "items": items })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_merges_objects_removes_nulls_replaces_the_rest() {
        let mut doc =
            json!({"cron": "* * * * *", "activity": {"kind": "k", "priority": 5}, "jitter": "1s"});
        merge_patch(
            &mut doc,
            &json!({"cron": "0 3 * * *", "activity": {"priority": 2}, "jitter": null}),
        );
        assert_eq!(
            doc,
            json!({"cron": "0 3 * * *", "activity": {"kind": "k", "priority": 2}})
        );
    }

    #[test]
    fn schedule_body_field_errors_are_422_naming_the_field() {
        match decode_body::<ScheduleSpec>(
            br#"{"name":"n","cron":"* * * * *","activity":{"kind":"k"},"overlap":"sometimes"}"#,
        ) {
            Err(ApiError::InvalidValue { field, .. }) => assert_eq!(field, "overlap"),
            other => panic!("{other:?}"),
        }
        match decode_body::<ScheduleSpec>(br#"{"name":"n","crn":"x"}"#) {
            Err(ApiError::UnknownField(f)) => assert_eq!(f, "crn"),
            other => panic!("{other:?}"),
        }
        let e: ApiError =
            ScheduleError::InvalidField(highway_workflows::types::FieldError::new("cron", "bad"))
                .into();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
