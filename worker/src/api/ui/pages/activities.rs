//! The activity list: filters (state, kind, tenant for admins, queue, created between)
//! and keyset pagination (`before` = the last id of the page). The first page is live:
//! new activities appear and states change without a reload.

use super::super::error::UiError;
use super::super::session::Ui;
use super::super::view::{self, activity_link, opt_time, run_link, state, time};
use super::{given, instant, one_of, query, uuid_filter};
use crate::api::{store, AppState};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde::Deserialize;

/// The activity states a filter may name.
pub const STATES: &[&str] = &[
    "scheduled",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
];
const PAGE: i64 = 50;

#[derive(Debug, Default, Clone, Deserialize)]
pub struct ListQuery {
    pub state: Option<String>,
    pub kind: Option<String>,
    pub tenant: Option<String>,
    pub queue: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub before: Option<String>,
}

impl ListQuery {
    /// The filter query string, without the page cursor.
    pub fn filters(&self) -> String {
        query(&[
            ("state", given(&self.state)),
            ("kind", given(&self.kind)),
            ("tenant", given(&self.tenant)),
            ("queue", given(&self.queue)),
            ("since", given(&self.since)),
            ("until", given(&self.until)),
        ])
    }
}

pub async fn list(
    State(st): State<AppState>,
    ui: Ui,
    Query(q): Query<ListQuery>,
) -> Result<Response, UiError> {
    let table = fragment(&st, &ui, &q).await?;
    let live = given(&q.before).is_none();
    let filters = html! {
        form.filters method="get" action="/ui/activities" aria-label="Filter activities" {
            (view::select("state", "State", STATES, given(&q.state).as_deref()))
            (view::text_input("kind", "Kind", given(&q.kind).as_deref(), "tools.docker.run"))
            @if ui.caller.admin {
                (view::text_input("tenant", "Tenant", given(&q.tenant).as_deref(), "any"))
            }
            (view::text_input("queue", "Queue", given(&q.queue).as_deref(), "default"))
            label { "Created from (UTC)" input type="datetime-local" name="since" value=(given(&q.since).unwrap_or_default()); }
            label { "until (UTC)" input type="datetime-local" name="until" value=(given(&q.until).unwrap_or_default()); }
            button type="submit" { "Filter" }
            a href="/ui/activities" { "Clear" }
        }
    };
    Ok(view::frame(
        Some(&ui),
        "Activities",
        "activities",
        html! {
            h1 { "Activities" }
            (filters)
            @if live {
                (view::live("activities", &format!("/ui/live/activities{}", q.filters()), table))
            } @else {
                div id="activities" { (table) }
            }
        },
    )
    .into_response())
}

/// The table and its pager.
pub async fn fragment(st: &AppState, ui: &Ui, q: &ListQuery) -> Result<Markup, UiError> {
    let status = one_of("state", &q.state, STATES)?;
    let before = uuid_filter("before", &q.before, "an activity id")?;
    let f = store::ActivityPageFilter {
        tenant: ui
            .caller
            .scope(given(&q.tenant).as_deref())
            .map(str::to_owned),
        status,
        kind: given(&q.kind),
        queue: given(&q.queue),
        since: instant("since", &q.since)?,
        until: instant("until", &q.until)?,
        before,
        limit: PAGE,
    };
    let rows = store::list_activities_page(&st.pool, &f).await?;
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let filters = q.filters();
    let sep = if filters.is_empty() { "?" } else { "&" };
    Ok(html! {
        @if rows.is_empty() {
            p.muted { "No activities match." }
        } @else {
            table.activities {
                thead { tr { th { "Activity" } th { "Kind" } th { "State" } th.num { "Attempt" } th { "Queue" } th { "Tenant" } th { "Run" } th { "Created" } th { "Finished" } } }
                tbody {
                    @for a in &rows {
                        tr data-id=(a.id) data-state=(a.status) {
                            td { (activity_link(&a.id)) }
                            td { (a.kind) }
                            td { (state(&a.status)) }
                            td.num { (a.attempt) "/" (a.max_attempts) }
                            td { (a.queue) }
                            td { (a.tenant_id) }
                            td { @if let Some(r) = &a.workflow_run_id { (run_link(r)) } }
                            td { (time(&a.created_at)) }
                            td { (opt_time(&a.finished_at)) }
                        }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if before.is_some() {
                a href=(format!("/ui/activities{filters}")) { "First page" }
            }
            @if let Some(n) = next {
                a href=(format!("/ui/activities{filters}{sep}before={n}")) rel="next" { "Next page" }
            }
        }
    })
}
