//! `GET /metrics`: the Prometheus text exposition of this process's metrics
//! ([`crate::metrics`]). A scrape reads memory only: the dependency gauges are set from
//! the health cells here, the queue gauges by the queue statistics service, everything
//! else where it happens.
//!
//! No auth, like `/health`: it carries no tenant names, ids or secrets (labels from
//! tenants pass only when the operator allow-lists them).

use super::AppState;
use crate::health::{Circuit, Status};
use crate::metrics;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

fn status_value(s: Status) -> f64 {
    match s {
        Status::Up => 1.0,
        Status::Down => 0.0,
        Status::Unknown => -1.0,
    }
}

async fn scrape(State(st): State<AppState>) -> Response {
    metrics::install();
    for (name, dep) in [
        ("postgres", &st.health.postgres),
        ("docker", &st.health.docker),
    ] {
        let s = dep.snapshot();
        metrics::dependency(name, status_value(s.status), s.consecutive_failures);
    }
    if let Some(c) = st.health.docker.snapshot().circuit {
        for (name, state) in [
            ("closed", Circuit::Closed),
            ("open", Circuit::Open),
            ("half_open", Circuit::HalfOpen),
        ] {
            metrics::circuit(name, c == state);
        }
    }
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics::render(),
    )
        .into_response()
}
