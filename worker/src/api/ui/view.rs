//! The console's page frame (head, navigation, logout form) and the small formatters
//! every page shares: times as `<time>` (UTC in the text and on hover; the script turns
//! the text into the viewer's zone), states as badges, short ids, JSON blocks.

use super::csrf;
use super::session::Ui;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;
use uuid::Uuid;

/// The navigation: (path, label, key).
const NAV: &[(&str, &str, &str)] = &[
    ("/ui", "Overview", "overview"),
    ("/ui/activities", "Activities", "activities"),
    ("/ui/runs", "Workflow runs", "runs"),
    ("/ui/containers", "Containers", "containers"),
    ("/ui/schedules", "Schedules", "schedules"),
    ("/ui/audit", "Audit log", "audit"),
];

/// A rendered page.
pub struct Page(pub Markup);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        Html(self.0.into_string()).into_response()
    }
}

/// A whole page: `current` is the navigation key to mark.
pub fn frame(ui: Option<&Ui>, title: &str, current: &str, body: Markup) -> Page {
    Page(html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · Highway" }
                link rel="stylesheet" href="/ui/assets/app.css";
                script src="/ui/assets/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/ui" { "Highway" }
                    @if let Some(ui) = ui {
                        nav aria-label="Main" {
                            ul {
                                @for (href, label, key) in NAV {
                                    li {
                                        @if *key == current {
                                            a href=(href) aria-current="page" { (label) }
                                        } @else {
                                            a href=(href) { (label) }
                                        }
                                    }
                                }
                            }
                        }
                        div.who {
                            span { (ui.token_name) " · " (scope_label(ui)) }
                            form method="post" action="/ui/logout" {
                                (csrf_field(ui))
                                button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" { (body) }
            }
        }
    })
}

fn scope_label(ui: &Ui) -> String {
    match &ui.caller.tenant {
        Some(t) => format!("tenant {t}"),
        None => "admin".into(),
    }
}

/// The hidden CSRF field of a form.
pub fn csrf_field(ui: &Ui) -> Markup {
    html! { input type="hidden" name=(csrf::FIELD) value=(ui.csrf); }
}

/// A one-button POST form (an action), with the CSRF field.
pub fn action(ui: &Ui, path: &str, label: &str, class: &str) -> Markup {
    html! {
        form.action method="post" action=(path) {
            (csrf_field(ui))
            button type="submit" class=(class) { (label) }
        }
    }
}

/// An instant: UTC text and hover, ISO in `datetime` for the script.
pub fn time(t: &DateTime<Utc>) -> Markup {
    let utc = t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    html! { time datetime=(t.to_rfc3339()) title=(utc) { (utc) } }
}

pub fn opt_time(t: &Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "—" } },
    }
}

/// A state as a coloured badge (`state-<name>` in the stylesheet).
pub fn state(s: &str) -> Markup {
    html! { span class=(format!("badge state-{}", css_token(s))) { (s) } }
}

/// Keeps only `[a-z0-9_-]` so a value can be part of a class name.
pub fn css_token(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The last 8 hex digits of an id (ids are time-ordered, so their heads repeat), the
/// whole id on hover.
pub fn short(id: &Uuid) -> Markup {
    let full = id.to_string();
    html! { code title=(full) { "…" (full[full.len() - 8..]) } }
}

/// A link to an activity by its short id.
pub fn activity_link(id: &Uuid) -> Markup {
    html! { a href=(format!("/ui/activities/{id}")) { (short(id)) } }
}

pub fn run_link(id: &Uuid) -> Markup {
    html! { a href=(format!("/ui/runs/{id}")) { (short(id)) } }
}

/// Pretty JSON in a `<pre>` (escaped).
pub fn json_block(v: &Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// Seconds as `1h 2m 3s`.
pub fn secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

/// A `<select>` of choices with "any" first; `current` is selected.
pub fn select(name: &str, label: &str, choices: &[&str], current: Option<&str>) -> Markup {
    html! {
        label {
            (label)
            select name=(name) {
                option value="" { "any" }
                @for c in choices {
                    @if Some(*c) == current {
                        option value=(c) selected { (c) }
                    } @else {
                        option value=(c) { (c) }
                    }
                }
            }
        }
    }
}

/// A text filter field.
pub fn text_input(name: &str, label: &str, current: Option<&str>, placeholder: &str) -> Markup {
    html! {
        label {
            (label)
            input type="text" name=(name) value=(current.unwrap_or("")) placeholder=(placeholder);
        }
    }
}

/// A live region: the script replaces its content with the fragments streamed from
/// `src`; without the script it is the server-rendered content.
pub fn live(id: &str, src: &str, content: Markup) -> Markup {
    html! { div id=(id) data-live=(src) aria-live="polite" { (content) } }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_carry_utc_and_iso() {
        let t = DateTime::parse_from_rfc3339("2026-12-06T20:36:28Z")
            .unwrap()
            .with_timezone(&Utc);
        let s = time(&t).into_string();
        assert!(s.contains(r#"datetime="2026-12-06T20:36:28+00:00""#), "{s}");
        assert!(s.contains(r#"title="2026-12-06 20:36:28 UTC""#), "{s}");
    }

    #[test]
    fn class_tokens_are_sanitised() {
        assert_eq!(css_token("timed_out"), "timed_out");
        assert_eq!(css_token("x\" onclick=\"y"), "xonclicky");
    }
}
