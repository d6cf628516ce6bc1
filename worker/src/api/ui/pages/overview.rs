//! The overview: Postgres and Docker health, queues (depth, oldest waiting, running),
//! workers (heartbeat, daemon, slots; admin only, as in the API) and recent failures.
//! The body is one live fragment, re-rendered over SSE.

use super::super::error::UiError;
use super::super::session::Ui;
use super::super::view::{self, activity_link, opt_time, secs, state, time};
use crate::api::{store, AppState};
use crate::health::DependencyStatus;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::response::Response;
use maud::{html, Markup};

pub async fn page(State(st): State<AppState>, ui: Ui) -> Result<Response, UiError> {
    let body = fragment(&st, &ui).await?;
    Ok(view::frame(
        Some(&ui),
        "Overview",
        "overview",
        html! {
            h1 { "Overview" }
            (view::live("overview", "/ui/live/overview", body))
        },
    )
    .into_response())
}

fn dependency(name: &str, d: &DependencyStatus, detail: bool) -> Markup {
    let s = serde_json::to_value(d.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    html! {
        div.card {
            h3 { (name) }
            p { (state(&s)) }
            @if detail {
                dl {
                    dt { "Last success" } dd { (opt_time(&d.last_success_at)) }
                    @if d.consecutive_failures > 0 {
                        dt { "Failures in a row" } dd { (d.consecutive_failures) }
                    }
                    @if let Some(e) = &d.last_error {
                        dt { "Last error" } dd { (e) }
                    }
                }
            }
        }
    }
}

/// The live part of the overview.
pub async fn fragment(st: &AppState, ui: &Ui) -> Result<Markup, UiError> {
    let scope = ui.caller.scope(None);
    let queues = store::list_queues(&st.pool, scope).await?;
    let workers = if ui.caller.admin {
        Some(store::list_workers(&st.pool, false, 100).await?)
    } else {
        None
    };
    let mut failures = Vec::new();
    for status in ["failed", "timed_out"] {
        failures.extend(
            store::list_activities_page(
                &st.pool,
                &store::ActivityPageFilter {
                    tenant: scope.map(str::to_owned),
                    status: Some(status.into()),
                    limit: 10,
                    ..Default::default()
                },
            )
            .await?,
        );
    }
    failures.sort_by_key(|a| std::cmp::Reverse(a.created_at));
    failures.truncate(10);
    let pg = st.health.postgres.snapshot();
    let docker = st.health.docker.snapshot();
    Ok(html! {
        section aria-labelledby="h-health" {
            h2 id="h-health" { "Health" }
            div.cards {
                (dependency("Postgres", &pg, ui.caller.admin))
                (dependency("Docker", &docker, ui.caller.admin))
                @if st.health.draining.is_cancelled() {
                    div.card { h3 { "Server" } p { (state("draining")) } }
                }
            }
        }
        section aria-labelledby="h-queues" {
            h2 id="h-queues" { "Queues" }
            @if queues.is_empty() {
                p.muted { "No activity is waiting or running." }
            } @else {
                table {
                    thead { tr { th { "Queue" } th.num { "Depth" } th.num { "Delayed" } th.num { "Oldest waiting" } th.num { "Running" } } }
                    tbody {
                        @for q in &queues {
                            tr {
                                td { a href=(format!("/ui/activities{}", super::query(&[("queue", Some(q.queue.clone()))]))) { (q.queue) } }
                                td.num { (q.depth) }
                                td.num { (q.delayed) }
                                td.num { (secs(q.oldest_waiting_secs)) }
                                td.num { (q.running) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="h-workers" {
            h2 id="h-workers" { "Workers" }
            @match &workers {
                None => p.muted { "Workers are shared infrastructure: an admin token sees them." },
                Some(w) if w.is_empty() => p.muted { "No worker is running." },
                Some(w) => table {
                    thead { tr { th { "Host" } th { "State" } th { "Daemon" } th { "Queues" } th.num { "Slots" } th { "Heartbeat" } th { "Version" } } }
                    tbody {
                        @for w in w {
                            tr {
                                td { (w.hostname) br; (view::short(&w.id)) }
                                td { (state(&w.state)) }
                                td { @if let Some(d) = &w.daemon_id { code { (d.chars().take(12).collect::<String>()) } } @else { span.muted { "—" } } }
                                td { (w.queues.join(", ")) }
                                td.num { (w.slots_busy) " / " (w.slots_total) }
                                td { (secs(w.heartbeat_age_secs)) " ago" }
                                td { (w.version) }
                            }
                        }
                    }
                },
            }
        }
        section aria-labelledby="h-failures" {
            h2 id="h-failures" { "Recent failures" }
            @if failures.is_empty() {
                p.muted { "None." }
            } @else {
                table {
                    thead { tr { th { "Activity" } th { "Kind" } th { "State" } th { "Tenant" } th { "Created" } th { "Finished" } } }
                    tbody {
                        @for a in &failures {
                            tr {
                                td { (activity_link(&a.id)) }
                                td { (a.kind) }
                                td { (state(&a.status)) }
                                td { (a.tenant_id) }
                                td { (time(&a.created_at)) }
                                td { (opt_time(&a.finished_at)) }
                            }
                        }
                    }
                }
            }
        }
    })
}
