//! The audit log, newest first: filters (action, with a trailing `*` for a prefix;
//! activity; run) and pages (`before` = the last row's id). Tenants see their rows.

use super::super::error::UiError;
use super::super::session::Ui;
use super::super::view::{self, activity_link, run_link, state, time};
use super::{given, query, uuid_filter};
use crate::api::{store, AppState};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

const PAGE: i64 = 100;

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub action: Option<String>,
    pub activity: Option<String>,
    pub run: Option<String>,
    pub before: Option<String>,
}

pub async fn list(
    State(st): State<AppState>,
    ui: Ui,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let before_id = given(&q.before)
        .map(|s| {
            s.parse::<i64>().map_err(|_| UiError::Invalid {
                field: "before",
                reason: "must be an audit id".into(),
            })
        })
        .transpose()?;
    let f = store::AuditFilter {
        tenant: ui.caller.scope(None).map(str::to_owned),
        action: given(&q.action),
        activity: uuid_filter("activity", &q.activity, "a UUID")?,
        run: uuid_filter("run", &q.run, "a UUID")?,
        before_id,
        limit: PAGE,
        ..Default::default()
    };
    let rows = store::list_audit(&st.pool, &f).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let filters = query(&[
        ("action", given(&q.action)),
        ("activity", given(&q.activity)),
        ("run", given(&q.run)),
    ]);
    let sep = if filters.is_empty() { "?" } else { "&" };
    Ok(view::frame(
        Some(&ui),
        "Audit log",
        "audit",
        html! {
            h1 { "Audit log" }
            form.filters method="get" action="/ui/audit" aria-label="Filter the audit log" {
                (view::text_input("action", "Action", given(&q.action).as_deref(), "activity.cancel or container.*"))
                (view::text_input("activity", "Activity", given(&q.activity).as_deref(), "id"))
                (view::text_input("run", "Run", given(&q.run).as_deref(), "id"))
                button type="submit" { "Filter" }
                a href="/ui/audit" { "Clear" }
            }
            @if rows.is_empty() {
                p.muted { "No rows match." }
            } @else {
                table.audit {
                    thead { tr { th { "When" } th { "Actor" } th { "Action" } th { "Target" } th { "Tenant" } th { "Activity" } th { "Run" } th { "Outcome" } } }
                    tbody {
                        @for r in &rows {
                            tr data-action=(r.action) {
                                td { (time(&r.at)) }
                                td { code { (r.actor) } }
                                td { (r.action) }
                                td { (r.target.as_deref().unwrap_or("")) }
                                td { (r.tenant_id.as_deref().unwrap_or("")) }
                                td { @if let Some(a) = &r.activity_id { (activity_link(a)) } }
                                td { @if let Some(x) = &r.workflow_run_id { (run_link(x)) } }
                                td { (state(&r.outcome)) }
                            }
                        }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if before_id.is_some() { a href=(format!("/ui/audit{filters}")) { "Newest" } }
                @if let Some(n) = next { a href=(format!("/ui/audit{filters}{sep}before={n}")) rel="next" { "Older" } }
            }
        },
    )
    .into_response())
}
