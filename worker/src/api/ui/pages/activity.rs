//! One activity: its params (shown through [`crate::api::ui::redact`]), a timeline of its
//! attempts (enqueued, each attempt's containers created, started, exited and removed,
//! finished), its result with stdout and stderr, its error, its containers, the stored
//! log lines followed live over SSE (the API's own log stream), and cancel and retry
//! buttons that call the `/v1` routes' functions. Another tenant's id is a 404.

use super::super::error::UiError;
use super::super::redact;
use super::super::session::Ui;
use super::super::view::{self, json_block, opt_time, run_link, state, time};
use super::{checked, notice, path_id, see_other, ActionForm};
use crate::api::{activities as api_activities, store, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::{DateTime, Utc};
use highway_workflows::{Activity, ActivityStatus};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

/// Stored lines rendered into the page (the rest streams in).
const LOG_LINES: i64 = 2000;

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub done: Option<String>,
}

async fn visible(st: &AppState, ui: &Ui, id: Uuid) -> Result<Activity, UiError> {
    Ok(st.client.get(id, ui.caller.scope(None)).await?)
}

pub async fn page(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, UiError> {
    let id = path_id(&id, "activity")?;
    let a = visible(&st, &ui, id).await?;
    let live = fragment(&st, &ui, &a).await?;
    let lines = store::logs_after(&st.pool, id, -1, LOG_LINES).await?;
    let last_seq = lines.last().map_or(-1, |l| l.seq);
    let params = redact::for_display(&a.params);
    Ok(view::frame(
        Some(&ui),
        &format!("Activity {id}"),
        "activities",
        html! {
            p.crumbs { a href="/ui/activities" { "Activities" } " / " code { (id) } }
            h1 { (a.kind) " " small { (view::short(&id)) } }
            @if let Some(n) = notice(&q.done) { p.notice role="status" { (n) } }
            (view::live("activity", &format!("/ui/live/activity?id={id}"), live))
            section aria-labelledby="h-logs" {
                h2 id="h-logs" { "Logs" }
                p.muted id="log-status" {
                    @if a.status().is_terminal() { "The activity has finished; these are its stored lines." }
                    @else { "Following live." }
                }
                pre.log id="log" tabindex="0" aria-label="Container log"
                    data-follow=(format!("/ui/activities/{id}/logs"))
                    data-after=(last_seq) data-done=(a.status().is_terminal()) {
                    @for l in &lines {
                        span class=(format!("line {}", view::css_token(&l.stream))) { "[" (l.stream) "] " (l.line) "\n" }
                    }
                }
            }
            section aria-labelledby="h-params" {
                h2 id="h-params" { "Params" }
                (json_block(&params))
            }
        },
    )
    .into_response())
}

/// The live part: summary, actions, timeline, result, error, containers.
pub async fn fragment(st: &AppState, ui: &Ui, a: &Activity) -> Result<Markup, UiError> {
    let containers = store::list_containers(
        &st.pool,
        &store::ContainerFilter {
            tenant: ui.caller.scope(None).map(str::to_owned),
            activity: Some(a.id),
            limit: 100,
            ..Default::default()
        },
    )
    .await?;
    let status = a.status();
    let retryable = matches!(
        status,
        ActivityStatus::Failed | ActivityStatus::Cancelled | ActivityStatus::TimedOut
    );
    let result = a.result.clone().unwrap_or(Value::Null);
    let stdout = result
        .get("stdout")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let stderr = result
        .get("stderr")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let mut rest = result.clone();
    if let Some(o) = rest.as_object_mut() {
        o.remove("stdout");
        o.remove("stderr");
    }
    // The timeline: what happened when, oldest first.
    let mut events: Vec<(DateTime<Utc>, String)> = vec![(a.created_at, "enqueued".into())];
    let mut cs = containers.clone();
    cs.sort_by_key(|c| c.created_at);
    for c in &cs {
        let n = c.attempt.map_or("?".to_string(), |n| n.to_string());
        events.push((
            c.created_at,
            format!("attempt {n}: container {} created", c.short_id),
        ));
        if let Some(t) = c.started_at {
            events.push((t, format!("attempt {n}: container started")));
        }
        if let Some(t) = c.finished_at {
            let code = c.exit_code.map_or("?".into(), |c| c.to_string());
            let oom = if c.oom_killed == Some(true) {
                " (OOM killed)"
            } else {
                ""
            };
            events.push((t, format!("attempt {n}: exited with code {code}{oom}")));
        }
        if let Some(t) = c.removed_at {
            let why = c.removed_reason.as_deref().unwrap_or("removed");
            let by = c.removed_by.as_deref().unwrap_or("?");
            events.push((t, format!("attempt {n}: container removed by {by} ({why})")));
        }
    }
    if let Some(t) = a.cancel_requested_at {
        events.push((t, "cancel requested".into()));
    }
    if let Some(t) = a.finished_at {
        events.push((t, format!("finished: {}", a.status)));
    }
    events.sort_by_key(|e| e.0);
    Ok(html! {
        dl.summary {
            dt { "State" } dd { (state(&a.status)) }
            dt { "Attempt" } dd { (a.attempt) " of " (a.max_attempts) }
            dt { "Tenant" } dd { (a.tenant_id) }
            dt { "Queue" } dd { (a.queue) }
            @if let Some(r) = &a.workflow_run_id { dt { "Run" } dd { (run_link(r)) } }
            dt { "Created" } dd { (time(&a.created_at)) }
            dt { "Started" } dd { (opt_time(&a.started_at)) }
            dt { "Finished" } dd { (opt_time(&a.finished_at)) }
            @if !status.is_terminal() {
                dt { "Lease until" } dd { (opt_time(&a.lease_expires_at)) }
            }
        }
        div.actions {
            @if !status.is_terminal() {
                (view::action(ui, &format!("/ui/activities/{}/cancel", a.id), "Cancel", "danger"))
            }
            @if retryable {
                (view::action(ui, &format!("/ui/activities/{}/retry", a.id), "Retry", ""))
            }
        }
        section aria-labelledby="h-timeline" {
            h2 id="h-timeline" { "Attempts" }
            ol.timeline {
                @for (t, what) in &events {
                    li { (time(t)) " " (what) }
                }
            }
        }
        @if a.result.is_some() {
            section aria-labelledby="h-result" {
                h2 id="h-result" { "Result" }
                @if let Some(s) = &stdout { h3 { "stdout" } pre.log { (s) } }
                @if let Some(s) = &stderr { h3 { "stderr" } pre.log { (s) } }
                (json_block(&rest))
            }
        }
        @if let Some(e) = &a.error {
            section aria-labelledby="h-error" {
                h2 id="h-error" { "Error" }
                (json_block(e))
            }
        }
        section aria-labelledby="h-containers" {
            h2 id="h-containers" { "Containers" }
            (super::containers::table(&containers))
        }
    })
}

/// The log stream of the page (SSE), the API's own, for a session that sees the activity.
pub async fn logs(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(q): Query<LogsQuery>,
) -> Result<Response, UiError> {
    let id = path_id(&id, "activity")?;
    if !store::activity_visible(&st.pool, id, ui.caller.scope(None)).await? {
        return Err(UiError::NotFound("activity"));
    }
    // A reconnecting EventSource sends the last id it saw.
    let after = headers
        .get("last-event-id")
        .and_then(|h| h.to_str().ok())
        .and_then(|s| s.trim().parse::<i64>().ok())
        .or_else(|| q.after.as_deref().and_then(|s| s.parse().ok()))
        .unwrap_or(-1);
    Ok(api_activities::log_stream(&st, id, after, true))
}

#[derive(Debug, Default, Deserialize)]
pub struct LogsQuery {
    pub after: Option<String>,
}

pub async fn cancel(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    checked(&ui, form)?;
    let id = path_id(&id, "activity")?;
    api_activities::cancel_activity(&st, &ui.caller, id).await?;
    Ok(see_other(&format!("/ui/activities/{id}?done=cancel")))
}

pub async fn retry(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    checked(&ui, form)?;
    let id = path_id(&id, "activity")?;
    api_activities::retry_activity(&st, &ui.caller, id).await?;
    Ok(see_other(&format!("/ui/activities/{id}?done=retry")))
}

/// The activity for a live fragment (404 once it is not visible).
pub async fn live_fragment(st: &AppState, ui: &Ui, id: Uuid) -> Result<Markup, UiError> {
    let a = visible(st, ui, id).await?;
    fragment(st, ui, &a).await
}
