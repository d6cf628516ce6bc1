//! The container tracking table (live and removed, with why and by whom), the orphans
//! view, and the garbage collector's dry-run plan (admin only, as `GET /v1/gc/plan`:
//! the collector's own pass without removing anything).

use super::super::error::UiError;
use super::super::session::Ui;
use super::super::view::{self, activity_link, opt_time, state, time};
use super::{given, one_of};
use crate::api::{gc as api_gc, store, AppState};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;
use serde_json::Value;

const STATUSES: &[&str] = &["created", "running", "exited", "removed", "missing"];

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub status: Option<String>,
    pub view: Option<String>,
    pub tenant: Option<String>,
}

/// The tracking rows as a table (shared with the activity page).
pub fn table(rows: &[store::Container]) -> Markup {
    html! {
        @if rows.is_empty() {
            p.muted { "No containers." }
        } @else {
            table.containers {
                thead { tr { th { "Container" } th { "Image" } th { "State" } th { "Activity" } th.num { "Attempt" } th.num { "Exit" } th { "Created" } th { "Removed" } th { "Removed by" } th { "Reason" } } }
                tbody {
                    @for c in rows {
                        tr data-container=(c.short_id) data-state=(c.status) {
                            td { code title=(c.name) { (c.short_id) } }
                            td { (c.image) }
                            td { (state(&c.status)) @if c.oom_killed == Some(true) { " " (state("oom")) } }
                            td { @if let Some(a) = &c.activity_id { (activity_link(a)) } }
                            td.num { @if let Some(n) = c.attempt { (n) } }
                            td.num { @if let Some(e) = c.exit_code { (e) } }
                            td { (time(&c.created_at)) }
                            td { (opt_time(&c.removed_at)) }
                            td { (c.removed_by.as_deref().unwrap_or("")) }
                            td { (c.removed_reason.as_deref().or(c.orphan_reason.as_deref()).unwrap_or("")) }
                        }
                    }
                }
            }
        }
    }
}

pub async fn list(
    State(st): State<AppState>,
    ui: Ui,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let status = one_of("status", &q.status, STATUSES)?;
    let orphans = match given(&q.view).as_deref() {
        None | Some("all") => false,
        Some("orphans") => true,
        Some(_) => {
            return Err(UiError::Invalid {
                field: "view",
                reason: "must be `all` or `orphans`".into(),
            })
        }
    };
    let rows = store::list_containers(
        &st.pool,
        &store::ContainerFilter {
            tenant: ui
                .caller
                .scope(given(&q.tenant).as_deref())
                .map(str::to_owned),
            status: status.clone(),
            orphans,
            limit: 200,
            ..Default::default()
        },
    )
    .await?;
    Ok(view::frame(
        Some(&ui),
        "Containers",
        "containers",
        html! {
            h1 { "Containers" }
            form.filters method="get" action="/ui/containers" aria-label="Filter containers" {
                (view::select("status", "State", STATUSES, status.as_deref()))
                (view::select("view", "View", &["orphans"], given(&q.view).as_deref()))
                @if ui.caller.admin {
                    (view::text_input("tenant", "Tenant", given(&q.tenant).as_deref(), "any"))
                }
                button type="submit" { "Filter" }
                a href="/ui/containers" { "Clear" }
            }
            @if ui.caller.admin {
                p { a href="/ui/containers/gc" { "What would the garbage collector remove now? (dry run)" } }
            }
            (table(&rows))
        },
    )
    .into_response())
}

pub async fn gc_plan(State(st): State<AppState>, ui: Ui) -> Result<Response, UiError> {
    let plan = api_gc::plan_of(&st, &ui.caller).await?;
    let empty = Vec::new();
    let containers = plan["containers"].as_array().unwrap_or(&empty);
    let images = plan["images"].as_array().unwrap_or(&empty);
    let counts = plan["counts"].as_object().cloned().unwrap_or_default();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    Ok(view::frame(
        Some(&ui),
        "GC dry run",
        "containers",
        html! {
            p.crumbs { a href="/ui/containers" { "Containers" } " / GC dry run" }
            h1 { "Garbage collector: dry run" }
            p { "Deployment " code { (s(&plan["deployment"])) } ". Nothing was removed." }
            table.counts {
                tbody {
                    @for (k, v) in &counts { tr { th scope="row" { (k) } td.num { (s(v)) } } }
                }
            }
            h2 { "Containers it would remove" }
            @if containers.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th { "Container" } th { "Image" } th { "Tenant" } th { "Activity" } th.num { "Age (s)" } th { "Running" } th { "Reason" } } }
                    tbody {
                        @for c in containers {
                            tr {
                                td { code { (s(&c["container_id"]).chars().take(12).collect::<String>()) } }
                                td { (s(&c["image"])) }
                                td { (s(&c["tenant_id"])) }
                                td { (s(&c["activity_id"])) }
                                td.num { (s(&c["age_s"])) }
                                td { (s(&c["running"])) }
                                td { (s(&c["reason"])) }
                            }
                        }
                    }
                }
            }
            h2 { "Expired snapshot images" }
            @if images.is_empty() { p.muted { "None." } } @else { (view::json_block(&Value::Array(images.clone()))) }
        },
    )
    .into_response())
}
