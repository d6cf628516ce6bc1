//! Console sessions: `highway.ui_sessions` (this module is its only writer), the cookie
//! that carries a session id, and the [`Ui`] extractor every console page takes.
//!
//! A login with an API token creates a row holding the SHA-256 of a fresh random session
//! id (the id itself lives only in the browser's HttpOnly cookie), the token's id, a CSRF
//! secret and `expires_at`, which Postgres' `now()` judges. A lookup joins the live token,
//! so revoking the token ends its sessions at once. The cookie is `HttpOnly`,
//! `SameSite=Strict`, `Path=/ui`, and `Secure` when the console is served over HTTPS.

use crate::api::auth::Caller;
use crate::api::AppState;
use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use std::time::Duration;
use uuid::Uuid;

use super::error::UiError;

/// The cookie's name.
pub const COOKIE_NAME: &str = "highway_session";
/// How long a session lives after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// A fresh 256-bit random value in hex (session ids and CSRF secrets).
pub fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Hex SHA-256 of a session id: the only form stored.
pub fn id_hash(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

/// A session id has our shape (64 lowercase hex digits); anything else is not looked up.
pub fn well_formed(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Stores a new session for `token_id`; returns its id (for the cookie only).
pub async fn create(db: impl PgExecutor<'_>, token_id: Uuid) -> sqlx::Result<String> {
    let id = random_hex();
    sqlx::query(
        "INSERT INTO highway.ui_sessions (id_sha256, token_id, csrf_secret, expires_at)
         VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
    )
    .bind(id_hash(&id))
    .bind(token_id)
    .bind(random_hex())
    .bind(SESSION_TTL.as_secs_f64())
    .execute(db)
    .await?;
    Ok(id)
}

/// Removes sessions whose time is up (run at each login, so the table stays small).
pub async fn purge_expired(db: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    Ok(
        sqlx::query("DELETE FROM highway.ui_sessions WHERE expires_at <= now()")
            .execute(db)
            .await?
            .rows_affected(),
    )
}

/// Ends a session (logout).
pub async fn delete(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM highway.ui_sessions WHERE id_sha256 = $1")
        .bind(id_hash(id))
        .execute(db)
        .await?;
    Ok(())
}

/// A live session: its token's caller and CSRF secret.
#[derive(Debug, Clone)]
pub struct Ui {
    pub caller: Caller,
    /// The value every form of this session carries in its hidden field.
    pub csrf: String,
    /// The token's name, shown in the header (never the token).
    pub token_name: String,
    /// The session id from the cookie (to log out); never rendered.
    id: String,
}

impl Ui {
    pub fn session_id(&self) -> &str {
        &self.id
    }
}

/// The live session with this id: unexpired by Postgres' clock, its token not revoked.
pub async fn lookup(db: impl PgExecutor<'_>, id: &str) -> sqlx::Result<Option<Ui>> {
    if !well_formed(id) {
        return Ok(None);
    }
    let row: Option<(Uuid, Option<String>, String, String)> = sqlx::query_as(
        "SELECT t.id, t.tenant_id, t.name, s.csrf_secret
           FROM highway.ui_sessions s JOIN highway.api_tokens t ON t.id = s.token_id
          WHERE s.id_sha256 = $1 AND s.expires_at > now() AND t.revoked_at IS NULL",
    )
    .bind(id_hash(id))
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(token_id, tenant, token_name, csrf)| Ui {
        caller: Caller {
            admin: tenant.is_none(),
            tenant,
            token_id,
        },
        csrf,
        token_name,
        id: id.to_string(),
    }))
}

/// The session id in a `Cookie` header, if any.
pub fn from_headers(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
        .map(|(_, v)| v.trim().to_string())
}

/// Whether the browser reached us over HTTPS: this server's own TLS, or a proxy in front
/// of it that says so (`X-Forwarded-Proto: https`; it only makes the cookie stricter).
pub fn is_https(st: &AppState, headers: &HeaderMap) -> bool {
    st.https
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The `Set-Cookie` value carrying a session id.
pub fn cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE_NAME}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE_NAME}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether a form POST comes from one of our own pages: a browser sends `Origin` with
/// every POST, and it must name the host the request was sent to. A request without
/// `Origin` (not a browser's form) passes; the login form has no session (and so no CSRF
/// secret) yet, and this keeps another site from logging a browser into a session of its
/// choosing.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let origin_host = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, h)| h.trim_end_matches('/'));
    // Behind a proxy the public host is in `X-Forwarded-Host` (a cross-site form cannot
    // set that header, so trusting it here lets nothing new in).
    [HOST.as_str(), "x-forwarded-host"]
        .iter()
        .filter_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
        .any(|h| origin_host.is_some_and(|o| o.eq_ignore_ascii_case(h.trim())))
}

impl FromRequestParts<AppState> for Ui {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, UiError> {
        let id = from_headers(&parts.headers).ok_or(UiError::NeedLogin)?;
        lookup(&st.pool, &id)
            .await
            .map_err(crate::api::error::ApiError::db)?
            .ok_or(UiError::NeedLogin)
    }
}

impl axum::extract::OptionalFromRequestParts<AppState> for Ui {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Option<Self>, UiError> {
        match <Ui as FromRequestParts<AppState>>::from_request_parts(parts, st).await {
            Ok(ui) => Ok(Some(ui)),
            Err(UiError::NeedLogin) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn cookie_attributes() {
        let id = random_hex();
        let c = cookie(&id, false);
        assert!(c.starts_with(&format!("{COOKIE_NAME}={id};")), "{c}");
        for attr in ["Path=/ui", "HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
            assert!(c.split("; ").any(|a| a == attr), "{attr} missing in {c}");
        }
        assert!(!c.contains("Secure"), "{c}");
        assert!(cookie(&id, true).ends_with("; Secure"));
        let gone = clear_cookie(true);
        assert!(gone.contains("Max-Age=0") && gone.contains("HttpOnly") && gone.contains("Secure"));
    }

    #[test]
    fn session_ids_are_random_hex_and_stored_hashed() {
        let a = random_hex();
        assert!(well_formed(&a));
        assert_ne!(a, random_hex());
        assert!(!well_formed("abc"));
        assert!(!well_formed(&a.to_uppercase()));
        assert_ne!(id_hash(&a), a);
        assert_eq!(id_hash(&a).len(), 64);
    }

    #[test]
    fn login_posts_must_come_from_our_own_pages() {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: not a cross-site browser form");
        h.insert(ORIGIN, HeaderValue::from_static("http://127.0.0.1:8080"));
        assert!(same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("https://evil.example"));
        assert!(!same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.insert(ORIGIN, HeaderValue::from_static("https://console.example"));
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("console.example"),
        );
        assert!(same_origin(&h), "behind a proxy");
    }

    #[test]
    fn cookie_header_parsing() {
        let mut h = HeaderMap::new();
        h.insert(
            COOKIE,
            HeaderValue::from_static("other=1; highway_session=abc ; x=y"),
        );
        assert_eq!(from_headers(&h).as_deref(), Some("abc"));
        let mut none = HeaderMap::new();
        none.insert(COOKIE, HeaderValue::from_static("highway_sessionx=1"));
        assert_eq!(from_headers(&none), None);
    }
}
