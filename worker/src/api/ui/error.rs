//! [`UiError`]: what a console page answers when it cannot show what was asked: a
//! redirect to the login form without a live session, 403 for a form without its CSRF
//! field, 404 for a missing id or another tenant's (the same page, as in the API), and the
//! API's own statuses otherwise. Internal details go only to the log, as in the API.

use super::session::Ui;
use super::view;
use crate::api::error::ApiError;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::html;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// No live session: go to the login form.
    #[error("log in first")]
    NeedLogin,
    /// A POST without this session's CSRF field.
    #[error("the form's CSRF token is missing or wrong; reload the page and try again")]
    Csrf,
    /// Missing, or another tenant's.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A query parameter or form field that cannot be used (names the field).
    #[error("invalid `{field}`: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<sqlx::Error> for UiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(ApiError::db(e))
    }
}

impl From<highway_workflows::Error> for UiError {
    fn from(e: highway_workflows::Error) -> Self {
        Self::Api(e.into())
    }
}

impl UiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NeedLogin => StatusCode::SEE_OTHER,
            Self::Csrf => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Invalid { .. } => StatusCode::BAD_REQUEST,
            Self::Api(ApiError::NotFound(_)) => StatusCode::NOT_FOUND,
            Self::Api(e) => e.status(),
        }
    }

    /// The page for this error, inside the console's frame when there is a session.
    pub fn page(&self, ui: Option<&Ui>) -> Response {
        if matches!(self, Self::NeedLogin) {
            return (
                StatusCode::SEE_OTHER,
                [(header::LOCATION, "/ui/login")],
                "log in first",
            )
                .into_response();
        }
        let status = self.status();
        let message = match self {
            Self::Api(ApiError::Internal(detail)) => {
                tracing::error!(error_code = "internal", detail = %detail, "console request failed");
                "internal error".to_string()
            }
            Self::Api(ApiError::NotFound(what)) | Self::NotFound(what) => {
                format!("{what} not found")
            }
            other => other.to_string(),
        };
        let title = match status {
            StatusCode::NOT_FOUND => "Not found",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::CONFLICT => "Conflict",
            StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
            s if s.is_client_error() => "Bad request",
            _ => "Error",
        };
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/ui" { "Back to the overview" } }
        };
        (status, view::frame(ui, title, "", body)).into_response()
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        self.page(None)
    }
}
