//! The console's pages, one module each. Every page takes the [`Ui`] session (a login
//! redirect without one), reads through the API's store and clients with the session's
//! tenant scope, and renders with [`super::view`]. Actions are POST forms checked by
//! [`checked`] and answered with a redirect back to the page (303), so a reload never
//! repeats them.

pub mod activities;
pub mod activity;
pub mod audit;
pub mod containers;
pub mod login;
pub mod overview;
pub mod runs;
pub mod schedules;

use super::csrf;
use super::error::UiError;
use super::session::Ui;
use axum::extract::rejection::FormRejection;
use axum::http::header;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Form;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

/// The body of an action form.
#[derive(Debug, Default, Deserialize)]
pub struct ActionForm {
    pub csrf: Option<String>,
    /// A pause's note.
    pub note: Option<String>,
    /// A trigger's `force` checkbox.
    pub force: Option<String>,
}

/// The form, once its CSRF field is the session's (403 otherwise, before anything runs).
pub fn checked(
    ui: &Ui,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Result<ActionForm, UiError> {
    let Ok(Form(form)) = form else {
        return Err(UiError::Csrf);
    };
    if !csrf::verify(&ui.csrf, form.csrf.as_deref()) {
        tracing::warn!(token_id = %ui.caller.token_id, "console form without a valid CSRF token refused");
        return Err(UiError::Csrf);
    }
    Ok(form)
}

/// 303 to `path` (after an action).
pub fn see_other(path: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, path.to_string())],
    )
        .into_response()
}

/// A path id that must be a UUID; anything else is the same 404 page as a missing one.
pub fn path_id(raw: &str, what: &'static str) -> Result<Uuid, UiError> {
    Uuid::parse_str(raw).map_err(|_| UiError::NotFound(what))
}

/// A filter value: empty (an untouched form field) is none.
pub fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// A filter that must be one of `allowed` (`None` when empty); else an error naming
/// `field` that lists the allowed values.
pub fn one_of(
    field: &'static str,
    v: &Option<String>,
    allowed: &[&str],
) -> Result<Option<String>, UiError> {
    match given(v) {
        Some(s) if !allowed.contains(&s.as_str()) => Err(UiError::Invalid {
            field,
            reason: format!("must be one of {}", allowed.join(", ")),
        }),
        other => Ok(other),
    }
}

/// A filter or page cursor holding an id (`None` when empty); else an error naming
/// `field` (`what`: "an activity id", "a UUID").
pub fn uuid_filter(
    field: &'static str,
    v: &Option<String>,
    what: &str,
) -> Result<Option<Uuid>, UiError> {
    given(v)
        .map(|s| {
            Uuid::parse_str(&s).map_err(|_| UiError::Invalid {
                field,
                reason: format!("must be {what}"),
            })
        })
        .transpose()
}

/// A time filter: RFC 3339, or the `YYYY-MM-DDTHH:MM[:SS]` of a `datetime-local` field
/// taken as UTC (the form says so).
pub fn instant(field: &'static str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, UiError> {
    let Some(s) = given(v) else {
        return Ok(None);
    };
    if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for f in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&s, f) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(UiError::Invalid {
        field,
        reason: "must be a time like 2026-12-06T20:30 (UTC) or RFC 3339".into(),
    })
}

/// `?done=` after an action: a fixed message (never text from the URL).
pub fn notice(done: &Option<String>) -> Option<&'static str> {
    Some(match done.as_deref()? {
        "cancel" => "Cancellation requested.",
        "retry" => "Queued again.",
        "pause" => "Schedule paused.",
        "resume" => "Schedule resumed.",
        "trigger" => "Schedule fired.",
        _ => return None,
    })
}

/// Builds a query string from the non-empty pairs (values percent-encoded).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_skip_empty_and_encode() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("kind", Some("tools.docker.run".into())),
                ("x", None),
                ("q", Some("a b&c".into()))
            ]),
            "?kind=tools.docker.run&q=a%20b%26c"
        );
    }

    #[test]
    fn time_filters() {
        let t = instant("since", &Some("2026-12-06T20:30".into()))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2026-12-06T20:30:00+00:00");
        assert!(instant("since", &Some(" ".into())).unwrap().is_none());
        let e = instant("until", &Some("yesterday".into())).unwrap_err();
        assert!(e.to_string().contains("`until`"), "{e}");
    }
}
