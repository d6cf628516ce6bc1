//! `/v1/activities`: enqueue (with `Idempotency-Key`), get, list, cancel, retry, and the log
//! stream (server-sent events, resumable from a sequence number, following live).
//!
//! Owns: the HTTP shape of these operations and the tenant rules: a tenant token
//! enqueues only for its own tenant and sees only its own activities (another
//! tenant's id answers 404 exactly like a missing one). The queue's SQL stays in
//! `highway_workflows::Client`; the log reads are in `store.rs`.

use super::auth::Caller;
use super::body::{decode, ApiQuery, JsonBytes};
use super::error::{parse_uuid, ApiError};
use super::{admission, store, AppState};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use highway_workflows::{Activity, ActivityFilter, ActivityStatus, EnqueueRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use uuid::Uuid;

/// The header carrying the enqueue's idempotency key.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Log lines sent per database read.
const LOG_PAGE: i64 = 500;
/// How often a follower re-reads without a NOTIFY (the polling fallback).
const LOG_POLL: Duration = Duration::from_millis(1000);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/activities", post(enqueue).get(list))
        .route("/v1/activities/{id}", get(show))
        .route("/v1/activities/{id}/cancel", post(cancel))
        .route("/v1/activities/{id}/retry", post(retry))
        .route("/v1/activities/{id}/logs", get(logs))
}

/// `POST /v1/activities`: the body is an `EnqueueRequest`. 201 when created, 200 when
/// the same request with the same key already existed, 409 for the same key with a
/// different request.
async fn enqueue(
    State(st): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    JsonBytes(body): JsonBytes,
) -> Result<Response, ApiError> {
    let mut req: EnqueueRequest = decode(&body)?;
    if let Some(t) =
        caller.own_tenant(&body, "a tenant token can only enqueue for its own tenant")?
    {
        req.tenant_id = t.to_owned();
    }
    if let Some(h) = headers.get(IDEMPOTENCY_HEADER) {
        let key = h
            .to_str()
            .map_err(|_| ApiError::field("Idempotency-Key", "must be printable ASCII"))?
            .to_string();
        if req.idempotency_key.as_ref().is_some_and(|k| *k != key) {
            return Err(ApiError::field(
                "Idempotency-Key",
                "differs from the body's idempotency_key",
            ));
        }
        req.idempotency_key = Some(key);
    }
    // Docker params first: a 422 from the worker's own judgement, before anything else
    // could store them.
    admission::admit(&st, "", &req.kind, &req.params)?;
    req.validate()
        .map_err(|e| ApiError::field(e.field, e.reason))?;

    // Quotas are checked before the insert; a retry of an existing key skips them so
    // it reaches the idempotency answer (it was counted when it was created).
    let retry = match &req.idempotency_key {
        Some(k) => store::idempotency_key_exists(&st.pool, &req.tenant_id, k).await?,
        None => false,
    };
    if !retry {
        check_quotas(&st, &req).await?;
    }
    let enq = st.client.enqueue(&req).await?;
    if enq.created {
        store::audit(
            &st.pool,
            Some(&req.tenant_id),
            &caller.actor(),
            "activity.enqueue",
            Some(&req.kind),
            Some(enq.id),
            req.workflow_run_id,
            "ok",
        )
        .await?;
    }
    let act = st.client.get(enq.id, None).await?;
    let status = if enq.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(view(&act, Some(enq.created)))).into_response())
}

async fn check_quotas(st: &AppState, req: &EnqueueRequest) -> Result<(), ApiError> {
    let q = &st.api;
    if q.api_quota_queued > 0
        && store::queued_count(&st.pool, &req.tenant_id).await? >= q.api_quota_queued
    {
        return Err(ApiError::QuotaExceeded {
            what: "queued activities",
            limit: q.api_quota_queued,
        });
    }
    if q.api_quota_containers > 0
        && req.kind.starts_with("tools.docker.")
        && store::live_container_count(&st.pool, &req.tenant_id).await? >= q.api_quota_containers
    {
        return Err(ApiError::QuotaExceeded {
            what: "running containers",
            limit: q.api_quota_containers,
        });
    }
    Ok(())
}

/// The wire view of an activity: the stored row, with `created` on enqueue answers.
fn view(a: &Activity, created: Option<bool>) -> Value {
    let mut v = serde_json::to_value(a).unwrap_or(Value::Null);
    if let (Some(c), Some(obj)) = (created, v.as_object_mut()) {
        obj.insert("created".into(), json!(c));
    }
    v
}

/// Query of `GET /v1/activities/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Admin tokens: only if it belongs to this tenant (404 otherwise). A tenant
    /// token is always held to its own tenant.
    pub tenant: Option<String>,
    /// Long poll: answer once the activity is terminal or this long has passed
    /// (`"30s"`, at most 300 s), with its state either way.
    pub wait: Option<String>,
}

async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let wait = super::wait::parse_wait(q.wait.as_deref())?;
    let scope = caller.scope(q.tenant.as_deref());
    let mut a = st.client.get(id, scope).await?;
    if let (Some(wait), false) = (wait, a.status().is_terminal()) {
        let channel = highway_workflows::done::ACTIVITY_DONE_CHANNEL;
        let mut w = super::wait::Wait::start(&st, channel, id, wait).await;
        // Read again once listening: it may have ended before the LISTEN.
        a = st.client.get(id, scope).await?;
        while !a.status().is_terminal() && w.next().await {
            a = st.client.get(id, scope).await?;
        }
    }
    Ok(Json(view(&a, None)))
}

/// Query of `GET /v1/activities`. Strings, parsed by hand so errors name the parameter.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub run: Option<String>,
    /// Admin tokens only; a tenant token's own tenant otherwise.
    pub tenant: Option<String>,
    pub limit: Option<String>,
}

/// Parses `limit` (1..=max, default `default`).
pub fn parse_limit(raw: Option<&str>, default: i64, max: i64) -> Result<i64, ApiError> {
    parse_count("limit", raw, default, max)
}

/// The query parameter `field` as a whole number in 1..=max (`default` when absent);
/// a 422 naming `field` otherwise.
pub fn parse_count(
    field: &'static str,
    raw: Option<&str>,
    default: i64,
    max: i64,
) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::field(field, format!("must be between 1 and {max}"))),
    }
}

async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| s.parse::<ActivityStatus>())
        .transpose()
        .map_err(|e| ApiError::field("status", e))?;
    let run = q.run.as_deref().map(|r| parse_uuid("run", r)).transpose()?;
    let filter = ActivityFilter {
        tenant_id: caller.scope(q.tenant.as_deref()).map(str::to_owned),
        status,
        kind: q.kind,
        queue: q.queue,
        workflow_run_id: run,
        limit: Some(parse_limit(q.limit.as_deref(), 50, 1000)?),
    };
    let rows = st.client.list(&filter).await?;
    let items: Vec<Value> = rows.iter().map(|a| view(a, None)).collect();
    Ok(Json(json!({ "items": items })))
}

async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    cancel_activity(&st, &caller, id).await.map(Json)
}

/// Cancels an activity as `caller` and audits it: the one path of `POST
/// /v1/activities/{id}/cancel` and the web console's cancel button.
pub async fn cancel_activity(st: &AppState, caller: &Caller, id: Uuid) -> Result<Value, ApiError> {
    let outcome = st.client.cancel(id, caller.scope(None)).await?;
    let tenant = st.client.get(id, None).await.ok().map(|a| a.tenant_id);
    store::audit(
        &st.pool,
        tenant.as_deref(),
        &caller.actor(),
        "activity.cancel",
        None,
        Some(id),
        None,
        serde_json::to_value(outcome)?.as_str().unwrap_or("ok"),
    )
    .await?;
    Ok(json!({ "id": id, "outcome": outcome }))
}

/// `POST /v1/activities/{id}/retry`: a failed, cancelled or timed-out activity back to
/// `scheduled` (see `highway_workflows::Client::retry`: attempts extended, fenced on the
/// state read here). 409 when it is in another state, its run has ended, or it changed
/// under us; 404 for another tenant's id. Audited.
async fn retry(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    retry_activity(&st, &caller, id).await.map(Json)
}

/// Retries an activity as `caller` and audits it: the one path of `POST
/// /v1/activities/{id}/retry` and the web console's retry button.
pub async fn retry_activity(st: &AppState, caller: &Caller, id: Uuid) -> Result<Value, ApiError> {
    let before = st.client.get(id, caller.scope(None)).await?;
    let outcome = st
        .client
        .retry(id, caller.scope(None), before.status())
        .await?;
    if outcome == highway_workflows::RetryOutcome::Conflict {
        return Err(ApiError::Conflict(format!(
            "activity {id} changed state during the retry; read it again"
        )));
    }
    store::audit(
        &st.pool,
        Some(&before.tenant_id),
        &caller.actor(),
        "activity.retry",
        Some(before.status.as_str()),
        Some(id),
        before.workflow_run_id,
        "ok",
    )
    .await?;
    let after = st.client.get(id, None).await?;
    Ok(
        json!({ "id": id, "outcome": outcome, "previous_status": before.status, "activity": view(&after, None) }),
    )
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::Internal(format!("serialization: {e}"))
    }
}

/// Query of the log stream.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Send lines with a sequence number above this (`Last-Event-ID` wins when both).
    pub after: Option<String>,
    /// `false`: send what is stored and end; default `true`: follow until the activity
    /// is terminal and its last line is sent.
    pub follow: Option<String>,
}

/// `GET /v1/activities/{id}/logs`: `event: log` per line (`id:` = its sequence number,
/// data = `{seq, attempt, stream, line, at}`), then one `event: end` with the final
/// status. Reconnecting with `Last-Event-ID` resumes after the last line received.
async fn logs(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LogsQuery>,
) -> Result<Response, ApiError> {
    let id = parse_uuid("id", &id)?;
    if !store::activity_visible(&st.pool, id, caller.scope(None)).await? {
        return Err(ApiError::NotFound("activity"));
    }
    let after = match headers.get("last-event-id") {
        Some(h) => Some(
            h.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::field("Last-Event-ID", "must be a sequence number"))?,
        ),
        None => q
            .after
            .as_deref()
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| ApiError::field("after", "must be a sequence number"))
            })
            .transpose()?,
    }
    .unwrap_or(-1);
    let follow = match q.follow.as_deref() {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => return Err(ApiError::field("follow", "must be true or false")),
    };
    Ok(log_stream(&st, id, after, follow))
}

/// The log stream of an activity the caller was already found to see: lines after
/// `after`, following until it is terminal when `follow`. Shared by `GET
/// /v1/activities/{id}/logs` and the web console's live log view.
pub fn log_stream(st: &AppState, id: Uuid, after: i64, follow: bool) -> Response {
    let tail = LogTail {
        st: st.clone(),
        id,
        cursor: after,
        follow,
        pending: VecDeque::new(),
        listener: None,
        listen_tried: false,
        done: false,
    };
    Sse::new(tail.into_stream())
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The state of one log stream.
struct LogTail {
    st: AppState,
    id: Uuid,
    cursor: i64,
    follow: bool,
    pending: VecDeque<store::LogRow>,
    /// A LISTEN connection while the shared budget allows one; polling otherwise.
    listener: Option<(PgListener, tokio::sync::OwnedSemaphorePermit)>,
    listen_tried: bool,
    done: bool,
}

impl LogTail {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures::stream::unfold(self, |mut t| async move {
            let ev = t.next_event().await?;
            Some((Ok(ev), t))
        })
    }

    fn end(&mut self, status: Option<String>) -> Option<Event> {
        self.done = true;
        Some(
            Event::default()
                .event("end")
                .data(json!({ "status": status, "last_seq": self.cursor }).to_string()),
        )
    }

    /// The next event, or `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(row) = self.pending.pop_front() {
                self.cursor = row.seq;
                let data = serde_json::to_string(&row).unwrap_or_default();
                return Some(
                    Event::default()
                        .event("log")
                        .id(row.seq.to_string())
                        .data(data),
                );
            }
            if self.done {
                return None;
            }
            // Subscribe before reading, so a line written between the read and the
            // wait still wakes us.
            if self.follow && !self.listen_tried {
                self.listen_tried = true;
                self.listener = self.listen().await;
            }
            match store::logs_after(&self.st.pool, self.id, self.cursor, LOG_PAGE).await {
                Ok(rows) if !rows.is_empty() => {
                    self.pending.extend(rows);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(activity_id = %self.id, error = %crate::health::classify_db_error(&e), "log stream read failed; retrying");
                }
            }
            let status = store::activity_status(&self.st.pool, self.id)
                .await
                .ok()
                .flatten();
            let terminal = status
                .as_deref()
                .and_then(|s| s.parse::<ActivityStatus>().ok())
                .is_none_or(|s| s.is_terminal());
            if terminal || !self.follow {
                // The writer flushes before the result commits; one more read after
                // seeing the final status catches its last batch.
                if let Ok(rows) =
                    store::logs_after(&self.st.pool, self.id, self.cursor, LOG_PAGE).await
                {
                    if !rows.is_empty() {
                        self.pending.extend(rows);
                        continue;
                    }
                }
                return self.end(status);
            }
            if self.wait().await {
                return self.end(status);
            }
        }
    }

    async fn listen(&self) -> Option<(PgListener, tokio::sync::OwnedSemaphorePermit)> {
        let permit = self.st.log_listeners.clone().try_acquire_owned().ok()?;
        let mut l = PgListener::connect_with(&self.st.pool).await.ok()?;
        l.listen(crate::docker::logs::NOTIFY_CHANNEL).await.ok()?;
        Some((l, permit))
    }

    /// Waits for a NOTIFY about this activity or the polling interval. True when the
    /// server is shutting down (the stream must end so shutdown is not held up).
    async fn wait(&mut self) -> bool {
        let draining = self.st.health.draining.clone();
        let id = self.id.to_string();
        let deadline = tokio::time::sleep(LOG_POLL);
        tokio::pin!(deadline);
        loop {
            let recv = async {
                match &mut self.listener {
                    Some((l, _)) => l.recv().await.map(|n| n.payload() == id),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = draining.cancelled() => return true,
                _ = &mut deadline => return false,
                r = recv => match r {
                    Ok(true) => return false,
                    Ok(false) => continue,
                    // A lost LISTEN connection: fall back to polling.
                    Err(_) => { self.listener = None; }
                }
            }
        }
    }
}
