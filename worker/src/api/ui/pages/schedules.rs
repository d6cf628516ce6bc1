//! Schedules: the list, and one schedule with its next fires in its own time zone (and
//! UTC), its fire history (fired, skipped, missed, ...), and pause, resume and trigger
//! buttons that call the `/v1` routes' functions. Another tenant's schedule is a 404.

use super::super::error::UiError;
use super::super::redact;
use super::super::session::Ui;
use super::super::view::{self, activity_link, opt_time, state, time};
use super::{checked, notice, path_id, see_other, ActionForm};
use crate::api::{schedules as api_schedules, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use highway_workflows::schedule::ScheduleClient;
use maud::html;
use serde::Deserialize;

fn name_of<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub async fn list(State(st): State<AppState>, ui: Ui) -> Result<Response, UiError> {
    let rows = ScheduleClient::new(st.pool.clone())
        .list(ui.caller.scope(None), 500)
        .await
        .map_err(crate::api::error::ApiError::from)?;
    Ok(view::frame(
        Some(&ui),
        "Schedules",
        "schedules",
        html! {
            h1 { "Schedules" }
            @if rows.is_empty() {
                p.muted { "No schedules." }
            } @else {
                table {
                    thead { tr { th { "Name" } th { "Tenant" } th { "Cron" } th { "Zone" } th { "State" } th { "Next fire" } th { "Last fired" } } }
                    tbody {
                        @for s in &rows {
                            tr data-id=(s.id) {
                                td { a href=(format!("/ui/schedules/{}", s.id)) { (s.name) } }
                                td { (s.tenant_id) }
                                td { code { (s.cron) } }
                                td { (s.timezone) }
                                td { @if s.paused { (state("paused")) } @else { (state("active")) } }
                                td { (opt_time(&s.next_run_at)) }
                                td { (opt_time(&s.last_fired_at)) }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response())
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    pub done: Option<String>,
}

pub async fn page(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Response, UiError> {
    let id = path_id(&id, "schedule")?;
    let client = ScheduleClient::new(st.pool.clone());
    let scope = ui.caller.scope(None);
    let api = crate::api::error::ApiError::from;
    let s = client.get(id, scope).await.map_err(api)?;
    let next = client.preview(id, scope, 10).await.map_err(api)?;
    let fires = client.fires(id, scope, 100).await.map_err(api)?;
    let base = format!("/ui/schedules/{id}");
    Ok(view::frame(
        Some(&ui),
        &format!("Schedule {}", s.name),
        "schedules",
        html! {
            p.crumbs { a href="/ui/schedules" { "Schedules" } " / " (s.name) }
            h1 { "Schedule " (s.name) }
            @if let Some(n) = notice(&q.done) { p.notice role="status" { (n) } }
            dl.summary {
                dt { "State" } dd { @if s.paused { (state("paused")) } @else { (state("active")) } }
                @if let Some(n) = &s.note { dt { "Note" } dd { (n) } }
                dt { "Cron" } dd { code { (s.cron) } " in " (s.timezone) }
                dt { "Tenant" } dd { (s.tenant_id) }
                dt { "Kind" } dd { (s.activity.kind) " on queue " (s.activity.queue) }
                dt { "Overlap" } dd { (name_of(&s.overlap)) }
                dt { "Catch-up" } dd { (name_of(&s.catchup_policy)) " within " (s.catchup_window.to_string()) }
                dt { "Next fire" } dd { (opt_time(&s.next_run_at)) }
                dt { "Last fired" } dd { (opt_time(&s.last_fired_at)) }
            }
            div.actions {
                @if s.paused {
                    (view::action(&ui, &format!("{base}/resume"), "Resume", ""))
                } @else {
                    form.action method="post" action=(format!("{base}/pause")) {
                        (view::csrf_field(&ui))
                        label { "Note " input type="text" name="note" maxlength="500"; }
                        button type="submit" { "Pause" }
                    }
                }
                form.action method="post" action=(format!("{base}/trigger")) {
                    (view::csrf_field(&ui))
                    label { input type="checkbox" name="force" value="true"; " even if the overlap policy would skip" }
                    button type="submit" { "Trigger now" }
                }
            }
            section aria-labelledby="h-next" {
                h2 id="h-next" { "Next fires" }
                @if s.paused { p.muted { "Paused: these are the slots it would fire at once resumed." } }
                table {
                    thead { tr { th { "In " (s.timezone) } th { "Your time (UTC on hover)" } th { "Note" } } }
                    tbody {
                        @for p in &next {
                            tr { td { code { (p.local) } } td { (time(&p.at)) } td { (p.dst.as_deref().unwrap_or("")) } }
                        }
                    }
                }
            }
            section aria-labelledby="h-fires" {
                h2 id="h-fires" { "Fire history" }
                @if fires.is_empty() { p.muted { "It has not fired yet." } }
                @else {
                    table {
                        thead { tr { th { "Slot" } th { "Outcome" } th { "Source" } th { "Activity" } th { "Reason" } th { "Recorded" } } }
                        tbody {
                            @for f in &fires {
                                tr {
                                    td { (time(&f.fire_at)) }
                                    td { (state(f.outcome.as_str())) }
                                    td { (f.source) }
                                    td { @if let Some(a) = &f.activity_id { (activity_link(a)) } }
                                    td { (f.reason.as_deref().unwrap_or("")) }
                                    td { (time(&f.recorded_at)) }
                                }
                            }
                        }
                    }
                }
            }
            section aria-labelledby="h-template" {
                h2 id="h-template" { "Activity template params" }
                (view::json_block(&redact::for_display(&s.activity.params)))
            }
        },
    )
    .into_response())
}

pub async fn pause(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    let form = checked(&ui, form)?;
    let id = path_id(&id, "schedule")?;
    let note = super::given(&form.note);
    if note.as_ref().is_some_and(|n| n.len() > 500) {
        return Err(UiError::Invalid {
            field: "note",
            reason: "must be at most 500 characters".into(),
        });
    }
    api_schedules::pause_schedule(&st, &ui.caller, id, note.as_deref()).await?;
    Ok(see_other(&format!("/ui/schedules/{id}?done=pause")))
}

pub async fn resume(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    checked(&ui, form)?;
    let id = path_id(&id, "schedule")?;
    api_schedules::resume_schedule(&st, &ui.caller, id).await?;
    Ok(see_other(&format!("/ui/schedules/{id}?done=resume")))
}

pub async fn trigger(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    let form = checked(&ui, form)?;
    let id = path_id(&id, "schedule")?;
    let force = matches!(form.force.as_deref(), Some("true" | "on" | "1"));
    api_schedules::trigger_schedule(&st, &ui.caller, id, force).await?;
    Ok(see_other(&format!("/ui/schedules/{id}?done=trigger")))
}
