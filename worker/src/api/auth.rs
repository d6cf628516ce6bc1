//! Bearer-token authentication: the [`Caller`] extractor. A request carries
//! `Authorization: Bearer hw_...`; the token's SHA-256 is looked up in
//! `highway.api_tokens` (live, not revoked) and names a tenant or admin. The caller
//! carries the tenant rules every route applies: the read scope and the own tenant of
//! a create.
//!
//! Must not: log, echo or store a token. Only its hash reaches the database and only
//! the token's id reaches logs and audit rows. Every failure is the same 401, so a
//! prober cannot tell a malformed token from an unknown or a revoked one.

use super::error::ApiError;
use super::store;
use super::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use uuid::Uuid;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The tenant the token is bound to; `None` for admin tokens.
    pub tenant: Option<String>,
    pub admin: bool,
    pub token_id: Uuid,
}

impl Caller {
    /// The tenant filter for reads: a tenant token sees only its rows; admin sees all
    /// (optionally narrowed by a `tenant` query parameter).
    pub fn scope<'a>(&'a self, requested: Option<&'a str>) -> Option<&'a str> {
        match &self.tenant {
            Some(t) => Some(t.as_str()),
            None => requested,
        }
    }

    /// `token:<id>`: the actor recorded in the audit log.
    pub fn actor(&self) -> String {
        format!("token:{}", self.token_id)
    }

    /// The tenant a create writes to when the caller is a tenant token: its own, and a
    /// body whose `tenant_id` names another one is a 422 on `tenant_id` saying `refusal`.
    /// `None` for admin tokens (the body's `tenant_id` stands). Checked on the raw body
    /// because the decoded types default a missing `tenant_id` to "default".
    pub fn own_tenant(&self, body: &[u8], refusal: &'static str) -> Result<Option<&str>, ApiError> {
        let Some(t) = &self.tenant else {
            return Ok(None);
        };
        let named = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| {
                v.get("tenant_id")
                    .and_then(|t| t.as_str().map(str::to_owned))
            });
        if named.as_deref().is_some_and(|n| n != t) {
            return Err(ApiError::field("tenant_id", refusal));
        }
        Ok(Some(t.as_str()))
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.admin {
            Ok(())
        } else {
            Err(ApiError::Forbidden)
        }
    }
}

/// The token from an `Authorization` header value, if it has the bearer shape.
fn bearer(value: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(value).ok()?;
    let (scheme, token) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    store::well_formed(token).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized)?;
        let token = bearer(header.as_bytes()).ok_or(ApiError::Unauthorized)?;
        let hash = store::token_hash(token);
        match store::lookup_token(&st.pool, &hash).await? {
            Some((token_id, tenant)) => {
                tracing::debug!(token_id = %token_id, tenant = tenant.as_deref().unwrap_or("*"), "api caller");
                Ok(Caller {
                    admin: tenant.is_none(),
                    tenant,
                    token_id,
                })
            }
            None => Err(ApiError::Unauthorized),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let t = store::generate_token();
        assert_eq!(bearer(format!("Bearer {t}").as_bytes()), Some(t.as_str()));
        assert_eq!(bearer(format!("bearer  {t} ").as_bytes()), Some(t.as_str()));
        assert_eq!(bearer(format!("Basic {t}").as_bytes()), None);
        assert_eq!(bearer(b"Bearer hw_short"), None);
        assert_eq!(bearer(t.as_bytes()), None);
    }

    #[test]
    fn tenant_tokens_cannot_widen_their_scope() {
        let c = Caller {
            tenant: Some("a".into()),
            admin: false,
            token_id: Uuid::nil(),
        };
        assert_eq!(c.scope(Some("b")), Some("a"));
        assert_eq!(c.scope(None), Some("a"));
        let admin = Caller {
            tenant: None,
            admin: true,
            token_id: Uuid::nil(),
        };
        assert_eq!(admin.scope(Some("b")), Some("b"));
        assert_eq!(admin.scope(None), None);
    }
}
