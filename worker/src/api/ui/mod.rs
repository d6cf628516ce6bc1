//! The operators' web console, served under `/ui` by the API's own server: server-rendered
//! HTML (maud), one small script and one stylesheet embedded in the binary, live updates
//! over server-sent events. No separate process, no build step of its own.
//!
//! Owns: the console's routes, its session cookie and CSRF check ([`session`],
//! [`csrf`]), the security headers of every `/ui` response, the HTML of its pages
//! ([`pages`]) and the DAG drawing ([`dag`]). Reads go through the API's store and the
//! clients the API uses; every action (cancel, retry, pause, resume, trigger) calls the
//! same function as its `/v1` route, so it is authorised, fenced and audited identically
//! (the actor is the session's token).
//!
//! Must not: write a table other than `highway.ui_sessions`, put a token or session id
//! in a page, a log or a URL, or run inline script (the CSP forbids it).
//!
//! # Layout
//! - [`session`]: `highway.ui_sessions`, the cookie, the [`session::Ui`] extractor.
//! - [`csrf`]: the hidden form field and its constant-time check.
//! - [`error`]: [`error::UiError`], rendered as an HTML page (login redirect, 403, 404).
//! - [`pages`]: one module per page; [`live`]: fragments re-rendered over SSE.
//! - [`dag`]: a run's steps laid out in columns and drawn as SVG.
//! - [`redact`]: params as shown (credential-looking values masked).
//! - [`view`]: the shared page frame and small formatters (times, states).

pub mod csrf;
pub mod dag;
pub mod error;
pub mod live;
pub mod pages;
pub mod redact;
pub mod session;
pub mod view;

use crate::api::AppState;
use axum::extract::Request;
use axum::http::header::{self, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;

/// The console's script: local times, live fragments, log follow.
pub const APP_JS: &str = include_str!("assets/app.js");
/// The console's stylesheet: light and dark themes after the system setting.
pub const APP_CSS: &str = include_str!("assets/app.css");

/// The Content-Security-Policy of every `/ui` response: only our own script, style and
/// event streams; no inline script, no framing, forms post only to us.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The `/ui` routes, merged by [`crate::api::router`].
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(pages::overview::page))
        .route("/ui/", get(pages::overview::page))
        .route(
            "/ui/login",
            get(pages::login::form).post(pages::login::submit),
        )
        .route("/ui/logout", post(pages::login::logout))
        .route("/ui/assets/app.js", get(script))
        .route("/ui/assets/app.css", get(style))
        .route("/ui/activities", get(pages::activities::list))
        .route("/ui/activities/{id}", get(pages::activity::page))
        .route("/ui/activities/{id}/logs", get(pages::activity::logs))
        .route("/ui/activities/{id}/cancel", post(pages::activity::cancel))
        .route("/ui/activities/{id}/retry", post(pages::activity::retry))
        .route("/ui/containers", get(pages::containers::list))
        .route("/ui/containers/gc", get(pages::containers::gc_plan))
        .route("/ui/runs", get(pages::runs::list))
        .route("/ui/runs/{id}", get(pages::runs::page))
        .route("/ui/runs/{id}/cancel", post(pages::runs::cancel))
        .route("/ui/schedules", get(pages::schedules::list))
        .route("/ui/schedules/{id}", get(pages::schedules::page))
        .route("/ui/schedules/{id}/pause", post(pages::schedules::pause))
        .route("/ui/schedules/{id}/resume", post(pages::schedules::resume))
        .route(
            "/ui/schedules/{id}/trigger",
            post(pages::schedules::trigger),
        )
        .route("/ui/audit", get(pages::audit::list))
        .route("/ui/live/{view}", get(live::stream))
        .route("/ui/{*rest}", any(not_found))
        .layer(axum::middleware::from_fn(security_headers))
}

async fn not_found(ui: Option<session::Ui>) -> Response {
    error::UiError::NotFound("page").page(ui.as_ref())
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Headers on every `/ui` response: CSP, no framing, no sniffing, same-origin referrers;
/// pages (not assets) are never cached, since they show a tenant's data.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}
