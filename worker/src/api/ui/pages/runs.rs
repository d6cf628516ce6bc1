//! Workflow runs: the list (state filter, pages) and one run with its DAG drawn as SVG
//! (steps coloured by state, the files passed between steps on the arrows), its steps
//! and activities, and a cancel button that calls the `/v1` route's function. The run's
//! part is live. Another tenant's run is a 404.

use super::super::dag;
use super::super::error::UiError;
use super::super::session::Ui;
use super::super::view::{self, activity_link, opt_time, run_link, state, time};
use super::{checked, given, notice, one_of, path_id, query, see_other, uuid_filter, ActionForm};
use crate::api::{runs as api_runs, store, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Form;
use highway_workflows::ActivityFilter;
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

const STATES: &[&str] = &["running", "succeeded", "failed", "cancelling", "cancelled"];
const PAGE: i64 = 50;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub state: Option<String>,
    pub tenant: Option<String>,
    pub before: Option<String>,
}

fn counts(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

pub async fn list(
    State(st): State<AppState>,
    ui: Ui,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let status = one_of("state", &q.state, STATES)?;
    let before = uuid_filter("before", &q.before, "a run id")?;
    let rows = store::list_runs(
        &st.pool,
        &store::RunFilter {
            tenant: ui
                .caller
                .scope(given(&q.tenant).as_deref())
                .map(str::to_owned),
            status: status.clone(),
            name: None,
            before,
            limit: PAGE,
        },
    )
    .await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let filters = query(&[("state", status.clone()), ("tenant", given(&q.tenant))]);
    let sep = if filters.is_empty() { "?" } else { "&" };
    Ok(view::frame(
        Some(&ui),
        "Workflow runs",
        "runs",
        html! {
            h1 { "Workflow runs" }
            form.filters method="get" action="/ui/runs" aria-label="Filter runs" {
                (view::select("state", "State", STATES, status.as_deref()))
                @if ui.caller.admin {
                    (view::text_input("tenant", "Tenant", given(&q.tenant).as_deref(), "any"))
                }
                button type="submit" { "Filter" }
                a href="/ui/runs" { "Clear" }
            }
            @if rows.is_empty() {
                p.muted { "No runs match." }
            } @else {
                table {
                    thead { tr { th { "Run" } th { "Name" } th { "State" } th { "Tenant" } th { "Activities" } th { "Created" } th { "Finished" } } }
                    tbody {
                        @for r in &rows {
                            tr data-id=(r.id) {
                                td { (run_link(&r.id)) }
                                td { (r.name) }
                                td { (state(&r.status)) }
                                td { (r.tenant_id) }
                                td { (counts(&r.activities)) }
                                td { (time(&r.created_at)) }
                                td { (opt_time(&r.finished_at)) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if before.is_some() { a href=(format!("/ui/runs{filters}")) { "First page" } }
                @if let Some(n) = next { a href=(format!("/ui/runs{filters}{sep}before={n}")) rel="next" { "Next page" } }
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
    let id = path_id(&id, "run")?;
    let (name, body) = fragment(&st, &ui, id).await?;
    Ok(view::frame(
        Some(&ui),
        &format!("Run {name}"),
        "runs",
        html! {
            p.crumbs { a href="/ui/runs" { "Workflow runs" } " / " code { (id) } }
            h1 { "Run " (name) }
            @if let Some(n) = notice(&q.done) { p.notice role="status" { (n) } }
            (view::live("run", &format!("/ui/live/run?id={id}"), body))
        },
    )
    .into_response())
}

/// The steps of a definition-driven run as the DAG draws them.
pub fn dag_steps(
    definition: &Value,
    steps: &[highway_workflows::runs::StepStatus],
) -> Vec<dag::Step> {
    let empty = Vec::new();
    let defs = definition["steps"].as_array().unwrap_or(&empty);
    defs.iter()
        .filter_map(|d| {
            let id = d["id"].as_str()?.to_string();
            let st = steps.iter().find(|s| s.step_id == id);
            // A scheduled step shows its activity's state (running, retrying, ...).
            let shown = match st {
                Some(s) if s.status == "scheduled" => s
                    .activity_status
                    .clone()
                    .unwrap_or_else(|| s.status.clone()),
                Some(s) => s.status.clone(),
                None => "pending".into(),
            };
            let strs = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let inputs = d["inputs_from"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|i| {
                            let (from, p) = i["from"].as_str()?.split_once(':')?;
                            let to = i["path"].as_str().unwrap_or("");
                            Some((from.to_string(), format!("{p} → {to}")))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(dag::Step {
                id,
                state: shown,
                depends_on: strs(&d["depends_on"]),
                inputs,
                activity: st.and_then(|s| s.activity_id),
                artifact: st.and_then(|s| s.outputs_artifact),
            })
        })
        .collect()
}

/// The live part of a run page, and the run's name.
pub async fn fragment(st: &AppState, ui: &Ui, id: Uuid) -> Result<(String, Markup), UiError> {
    let scope = ui.caller.scope(None);
    let Some(v) = api_runs::view(st, id, scope).await? else {
        return Err(UiError::NotFound("run"));
    };
    let run = &v.run;
    let definition = store::run_definition(&st.pool, id, scope).await?;
    let live = matches!(run.status.as_str(), "running");
    let activities = if v.steps.is_none() {
        st.client
            .list(&ActivityFilter {
                tenant_id: scope.map(str::to_owned),
                workflow_run_id: Some(id),
                limit: Some(200),
                ..Default::default()
            })
            .await?
    } else {
        Vec::new()
    };
    let body = html! {
        dl.summary {
            dt { "State" } dd { (state(&run.status)) }
            dt { "Tenant" } dd { (run.tenant_id) }
            dt { "Activities" } dd { (counts(&run.activities)) }
            dt { "Created" } dd { (time(&run.created_at)) }
            dt { "Finished" } dd { (opt_time(&run.finished_at)) }
            @if let Some(t) = &run.cancel_requested_at { dt { "Cancel requested" } dd { (time(t)) } }
        }
        div.actions {
            @if live {
                (view::action(ui, &format!("/ui/runs/{id}/cancel"), "Cancel run", "danger"))
            }
        }
        @if let (Some(steps), Some(def)) = (&v.steps, &definition) {
            section aria-labelledby="h-graph" {
                h2 id="h-graph" { "Graph" }
                div.dag-wrap { (dag::svg(&dag_steps(def, steps))) }
            }
            section aria-labelledby="h-steps" {
                h2 id="h-steps" { "Steps" }
                table {
                    thead { tr { th { "Step" } th { "State" } th { "Activity" } th.num { "Attempt" } th { "Output artifact" } th { "Cache" } th { "Scheduled" } th { "Finished" } } }
                    tbody {
                        @for s in steps {
                            tr data-step=(s.step_id) data-state=(s.status) {
                                td { (s.step_id) }
                                td { (state(&s.status)) @if let Some(a) = &s.activity_status { " " (state(a)) } }
                                td { @if let Some(a) = &s.activity_id { (activity_link(a)) } }
                                td.num { @if let Some(n) = s.attempt { (n) } }
                                td { @if let Some(o) = &s.outputs_artifact { (view::short(o)) } }
                                td { (s.cache_decision.as_deref().unwrap_or("")) }
                                td { (opt_time(&s.scheduled_at)) }
                                td { (opt_time(&s.finished_at)) }
                            }
                        }
                    }
                }
            }
        } @else {
            section aria-labelledby="h-acts" {
                h2 id="h-acts" { "Activities" }
                @if activities.is_empty() { p.muted { "No activities yet." } }
                @else {
                    table {
                        thead { tr { th { "Activity" } th { "Kind" } th { "State" } th { "Created" } } }
                        tbody {
                            @for a in &activities {
                                tr { td { (activity_link(&a.id)) } td { (a.kind) } td { (state(&a.status)) } td { (time(&a.created_at)) } }
                            }
                        }
                    }
                }
            }
        }
        @if let Some(e) = &run.error {
            section { h2 { "Error" } (view::json_block(e)) }
        }
        @if let Some(r) = &run.result {
            section { h2 { "Result" } (view::json_block(r)) }
        }
        p.muted { "Run " (run_link(&id)) }
    };
    Ok((run.name.clone(), body))
}

pub async fn cancel(
    State(st): State<AppState>,
    ui: Ui,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    checked(&ui, form)?;
    let id = path_id(&id, "run")?;
    api_runs::cancel_run(&st, &ui.caller, id).await?;
    Ok(see_other(&format!("/ui/runs/{id}?done=cancel")))
}
