//! Log in with an API token (admin or tenant) and log out. The token is posted once in a
//! password field, looked up by its hash exactly like a bearer token, and never stored,
//! logged or shown; the browser gets a session cookie instead (see `session.rs`). A wrong
//! token gets the same answer whatever was wrong with it. The login form has no session
//! yet, so instead of a CSRF field it must come from our own origin (`Origin` header).

use super::super::error::UiError;
use super::super::session::{self, Ui};
use super::super::view::{self, Page};
use super::{checked, see_other, ActionForm};
use crate::api::{store, AppState};
use axum::extract::rejection::FormRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use maud::html;
use serde::Deserialize;

fn login_page(error: Option<&str>) -> Page {
    view::frame(
        None,
        "Log in",
        "",
        html! {
            h1 { "Log in to the Highway console" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.login method="post" action="/ui/login" {
                label for="token" { "API token (admin or tenant)" }
                input id="token" name="token" type="password" autocomplete="off" required
                    autofocus spellcheck="false" placeholder="hw_…";
                button type="submit" { "Log in" }
            }
            p.muted {
                "Make a token with " code { "highway token create --tenant T --name N" } " (or "
                code { "--admin" } "). The console keeps "
                "only a session cookie; the token is not stored in the browser."
            }
        },
    )
}

pub async fn form(ui: Option<Ui>) -> Response {
    if ui.is_some() {
        return see_other("/ui");
    }
    login_page(None).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    pub token: Option<String>,
}

pub async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Result<Response, UiError> {
    if !session::same_origin(&headers) {
        return Err(UiError::Csrf);
    }
    let token = form
        .ok()
        .and_then(|Form(f)| f.token)
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let found = if store::well_formed(&token) {
        store::lookup_token(&st.pool, &store::token_hash(&token)).await?
    } else {
        None
    };
    let Some((token_id, _)) = found else {
        return Ok((
            StatusCode::UNAUTHORIZED,
            login_page(Some(
                "That token is not valid (unknown, revoked or mistyped).",
            )),
        )
            .into_response());
    };
    session::purge_expired(&st.pool).await?;
    let id = session::create(&st.pool, token_id).await?;
    tracing::info!(token_id = %token_id, "console login");
    let secure = session::is_https(&st, &headers);
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::cookie(&id, secure)),
            (header::LOCATION, "/ui".to_string()),
        ],
    )
        .into_response())
}

pub async fn logout(
    State(st): State<AppState>,
    ui: Ui,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<Response, UiError> {
    checked(&ui, form)?;
    session::delete(&st.pool, ui.session_id()).await?;
    let secure = session::is_https(&st, &headers);
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::clear_cookie(secure)),
            (header::LOCATION, "/ui/login".to_string()),
        ],
    )
        .into_response())
}
