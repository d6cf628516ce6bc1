//! `GET /metrics`: Prometheus text exposition, computed from the database at scrape
//! time (so every worker answers the same numbers, and a restart loses nothing):
//! activities by kind and status, finished durations, queue depth and lag per queue,
//! tracked containers, removals by remover and reason, dependency status, the Docker
//! circuit breaker's state, and cron
//! slot outcomes when the scheduler's tables exist.
//!
//! No auth, like `/health`: it carries no tenant names, ids or secrets. When Postgres
//! is down only the dependency gauges are written (and `highway_up 1`).

use super::{store, AppState};
use crate::health::{Circuit, Status};
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::fmt::Write;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

/// Escapes a label value per the exposition format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn status_value(s: Status) -> i32 {
    match s {
        Status::Up => 1,
        Status::Down => 0,
        Status::Unknown => -1,
    }
}

async fn metrics(State(st): State<AppState>) -> Response {
    let mut out = String::with_capacity(4096);
    header(
        &mut out,
        "highway_up",
        "gauge",
        "1 while this process serves.",
    );
    let _ = writeln!(out, "highway_up 1");
    header(
        &mut out,
        "highway_dependency_up",
        "gauge",
        "Dependency status: 1 up, 0 down, -1 unknown.",
    );
    for (name, dep) in [
        ("postgres", &st.health.postgres),
        ("docker", &st.health.docker),
    ] {
        let s = dep.snapshot();
        let _ = writeln!(
            out,
            "highway_dependency_up{{dependency=\"{name}\"}} {}",
            status_value(s.status)
        );
    }
    header(
        &mut out,
        "highway_dependency_consecutive_failures",
        "gauge",
        "Consecutive failed probes of a dependency.",
    );
    for (name, dep) in [
        ("postgres", &st.health.postgres),
        ("docker", &st.health.docker),
    ] {
        let _ = writeln!(
            out,
            "highway_dependency_consecutive_failures{{dependency=\"{name}\"}} {}",
            dep.snapshot().consecutive_failures
        );
    }
    if let Some(c) = st.health.docker.snapshot().circuit {
        header(
            &mut out,
            "highway_docker_circuit",
            "gauge",
            "Docker circuit breaker: 1 for the current state (closed, open, half_open).",
        );
        for (name, state) in [
            ("closed", Circuit::Closed),
            ("open", Circuit::Open),
            ("half_open", Circuit::HalfOpen),
        ] {
            let _ = writeln!(
                out,
                "highway_docker_circuit{{state=\"{name}\"}} {}",
                i32::from(c == state)
            );
        }
    }
    if let Err(e) = database_metrics(&st, &mut out).await {
        // Partial output is still useful; the scrape itself succeeds.
        tracing::warn!(error = %crate::health::classify_db_error(&e), "metrics: database figures unavailable");
        header(
            &mut out,
            "highway_metrics_db_error",
            "gauge",
            "1 when the database figures could not be read.",
        );
        let _ = writeln!(out, "highway_metrics_db_error 1");
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
        .into_response()
}

async fn database_metrics(st: &AppState, out: &mut String) -> sqlx::Result<()> {
    let pool = &st.pool;
    let counts = store::activity_counts(pool).await?;
    header(
        out,
        "highway_activities",
        "gauge",
        "Activities stored, by kind and status (outcome).",
    );
    for (kind, status, n) in counts {
        let _ = writeln!(
            out,
            "highway_activities{{kind=\"{}\",status=\"{}\"}} {n}",
            esc(&kind),
            esc(&status)
        );
    }
    let durs = store::activity_durations(pool).await?;
    header(
        out,
        "highway_activity_duration_seconds",
        "summary",
        "Start-to-finish time of finished activities, by kind and outcome.",
    );
    for (kind, status, n, sum) in durs {
        let l = format!("kind=\"{}\",status=\"{}\"", esc(&kind), esc(&status));
        let _ = writeln!(out, "highway_activity_duration_seconds_count{{{l}}} {n}");
        let _ = writeln!(out, "highway_activity_duration_seconds_sum{{{l}}} {sum}");
    }
    let queues = store::queue_depths(pool).await?;
    header(
        out,
        "highway_queue_depth",
        "gauge",
        "Activities due and waiting to be claimed, per queue.",
    );
    for (q, n, _) in &queues {
        let _ = writeln!(out, "highway_queue_depth{{queue=\"{}\"}} {n}", esc(q));
    }
    header(
        out,
        "highway_queue_lag_seconds",
        "gauge",
        "How long the oldest due activity has waited, per queue.",
    );
    for (q, _, lag) in &queues {
        let _ = writeln!(
            out,
            "highway_queue_lag_seconds{{queue=\"{}\"}} {lag}",
            esc(q)
        );
    }
    let containers = store::container_counts(pool).await?;
    header(
        out,
        "highway_containers",
        "gauge",
        "Tracked containers not yet removed, by status.",
    );
    for s in ["created", "running", "exited"] {
        let n = containers
            .iter()
            .find(|(k, _)| k == s)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        let _ = writeln!(out, "highway_containers{{status=\"{s}\"}} {n}");
    }
    let removals = store::removal_counts(pool).await?;
    header(
        out,
        "highway_container_removals",
        "gauge",
        "Containers removed (or found missing), by remover (gc, worker, ...) and reason.",
    );
    for (by, reason, n) in removals {
        let _ = writeln!(
            out,
            "highway_container_removals{{removed_by=\"{}\",reason=\"{}\"}} {n}",
            esc(&by),
            esc(&reason)
        );
    }
    if let Some(fires) = store::schedule_fire_counts(pool).await? {
        header(
            out,
            "highway_schedule_slots",
            "gauge",
            "Cron slots by outcome (fired, skipped, missed, deduplicated, buffered).",
        );
        for (outcome, n) in fires {
            let _ = writeln!(
                out,
                "highway_schedule_slots{{outcome=\"{}\"}} {n}",
                esc(&outcome)
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_values_are_escaped() {
        assert_eq!(super::esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
