//! Live fragments over server-sent events: `GET /ui/live/{view}` re-renders one part of
//! a page (the overview, the first page of activities, an activity, a run) once a
//! second and sends it as an `event: fragment` whenever it changed; the page's script
//! swaps it in. The HTML is the same function the page renders with, so a page without
//! the script shows the same thing as of its load.
//!
//! Each tick looks the session up again, so a logout, an expiry or a revoked token ends
//! the stream (`event: end`); so does a fragment that cannot be rendered any more (its
//! activity or run not found) and the server's shutdown.

use super::error::UiError;
use super::pages;
use super::session::{self, Ui};
use crate::api::AppState;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use maud::Markup;
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use uuid::Uuid;

/// How often a fragment is rendered again.
pub const TICK: Duration = Duration::from_millis(1000);

/// The part of a page a stream renders.
#[derive(Debug, Clone)]
pub enum View {
    Overview,
    Activities(pages::activities::ListQuery),
    Activity(Uuid),
    Run(Uuid),
}

#[derive(Debug, Default, Deserialize)]
pub struct LiveQuery {
    pub id: Option<String>,
    #[serde(flatten)]
    pub list: pages::activities::ListQuery,
}

impl View {
    async fn render(&self, st: &AppState, ui: &Ui) -> Result<Markup, UiError> {
        match self {
            View::Overview => pages::overview::fragment(st, ui).await,
            View::Activities(q) => pages::activities::fragment(st, ui, q).await,
            View::Activity(id) => pages::activity::live_fragment(st, ui, *id).await,
            View::Run(id) => Ok(pages::runs::fragment(st, ui, *id).await?.1),
        }
    }
}

pub async fn stream(
    State(st): State<AppState>,
    ui: Ui,
    Path(view): Path<String>,
    Query(q): Query<LiveQuery>,
) -> Result<Response, UiError> {
    let id = || {
        q.id.as_deref()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or(UiError::NotFound("id"))
    };
    let view = match view.as_str() {
        "overview" => View::Overview,
        "activities" => View::Activities(q.list.clone()),
        "activity" => View::Activity(id()?),
        "run" => View::Run(id()?),
        _ => return Err(UiError::NotFound("live view")),
    };
    // Refuse at once what cannot render (another tenant's id is a 404 here too).
    view.render(&st, &ui).await?;
    Ok(Sse::new(events(st, ui, view))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct Tail {
    st: AppState,
    ui: Ui,
    view: View,
    last: Option<String>,
    done: bool,
}

fn events(
    st: AppState,
    ui: Ui,
    view: View,
) -> impl Stream<Item = Result<Event, Infallible>> + Send {
    let t = Tail {
        st,
        ui,
        view,
        last: None,
        done: false,
    };
    futures::stream::unfold(t, |mut t| async move {
        if t.done {
            return None;
        }
        loop {
            match session::lookup(&t.st.pool, t.ui.session_id()).await {
                Ok(Some(_)) => {}
                // The session is gone (logout, expiry, revoked token).
                Ok(None) => {
                    t.done = true;
                    return Some((Ok(Event::default().event("end").data("session")), t));
                }
                // Postgres hiccup: try again next tick.
                Err(_) => {}
            }
            match t.view.render(&t.st, &t.ui).await {
                Ok(m) => {
                    let html = m.into_string();
                    if t.last.as_deref() != Some(html.as_str()) {
                        t.last = Some(html.clone());
                        return Some((Ok(Event::default().event("fragment").data(html)), t));
                    }
                }
                Err(UiError::NotFound(_))
                | Err(UiError::Api(crate::api::error::ApiError::NotFound(_))) => {
                    t.done = true;
                    return Some((Ok(Event::default().event("end").data("gone")), t));
                }
                Err(_) => {}
            }
            let draining = t.st.health.draining.clone();
            tokio::select! {
                _ = draining.cancelled() => {
                    t.done = true;
                    return Some((Ok(Event::default().event("end").data("shutdown")), t));
                }
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    })
}
