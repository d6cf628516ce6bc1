//! [`ApiError`]: the one error type of the HTTP API and its one `IntoResponse`. Every
//! handler returns it; the body is always `{"error": {"code", "message"[, "field"]}}`.
//!
//! Owns: the mapping from failures to statuses. Must not: put internal details (SQL,
//! driver messages, connection strings, tokens) in a response. Internal failures are
//! logged here with a classified message and answered with a fixed text.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// What went wrong, as the API answers it.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field, header, query parameter or path segment is invalid.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField { field: String, reason: String },
    /// 400: the body is not JSON at all.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// 401: no, malformed, unknown or revoked token. One message for all, so probing
    /// learns nothing about which tokens exist.
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// 403: a tenant token asked for an admin-only operation.
    #[error("this operation needs an admin token")]
    Forbidden,
    /// 404: missing, or another tenant's (indistinguishable on purpose).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: an idempotency key reused with a different request.
    #[error("idempotency key {0:?} was already used with a different request")]
    IdempotencyConflict(String),
    /// 409: a name already taken, or a state change that no longer applies.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is over the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415: not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// 422: a field the endpoint does not know.
    #[error("unknown field `{0}`")]
    UnknownField(String),
    /// 422: a well-formed field whose value cannot be used (a bad cron expression,
    /// timezone or policy).
    #[error("invalid value of `{field}`: {reason}")]
    InvalidValue { field: String, reason: String },
    /// 422: `tools.docker.*` params the worker would refuse (syntax or the operator's
    /// policy), found before anything was stored. `field` is the JSON path in the body.
    #[error("refused `{field}`: {reason}")]
    Refused {
        code: &'static str,
        field: String,
        reason: String,
    },
    /// 429: a per-tenant quota is used up.
    #[error("quota exceeded: {what} (limit {limit})")]
    QuotaExceeded { what: &'static str, limit: i64 },
    /// 503: a dependency is down; retry later.
    #[error("{0} is unavailable; retry later")]
    Unavailable(&'static str),
    /// 500: a bug or an unexpected database error; details are only logged.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// A database error: unavailable (503) when Postgres cannot be reached, else 500.
    pub fn db(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Tls(_) => Self::Unavailable("postgres"),
            other => Self::Internal(crate::health::classify_db_error(&other)),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::InvalidField { .. } | Self::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::IdempotencyConflict(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::UnknownField(_) | Self::InvalidValue { .. } | Self::Refused { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidField { .. } => "invalid_field",
            Self::InvalidJson(_) => "invalid_json",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::IdempotencyConflict(_) => "idempotency_conflict",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnknownField(_) => "unknown_field",
            Self::InvalidValue { .. } => "invalid_value",
            Self::Refused { code, .. } => code,
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }
}

impl From<highway_workflows::Error> for ApiError {
    fn from(e: highway_workflows::Error) -> Self {
        use highway_workflows::Error as E;
        match e {
            E::InvalidField(f) => Self::InvalidField {
                field: f.field,
                reason: f.reason,
            },
            E::IdempotencyConflict { key } => Self::IdempotencyConflict(key),
            E::NotFound(_) => Self::NotFound("activity"),
            E::RunNotFound(_) => Self::NotFound("workflow run"),
            E::NotRetryable(m) => Self::Conflict(m),
            E::WaitTimeout(_) => Self::Unavailable("activity result"),
            E::Database(db) => Self::db(db),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::db(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match &self {
            Self::Internal(detail) => {
                // Only here do details go anywhere, and only to the log.
                tracing::error!(error_code = "internal", detail = %detail, "api request failed");
                "internal error".to_string()
            }
            Self::Unavailable(dep) => {
                tracing::warn!(
                    error_code = "unavailable",
                    dependency = *dep,
                    "api dependency down"
                );
                self.to_string()
            }
            other => other.to_string(),
        };
        let mut err = json!({ "code": self.code(), "message": message });
        match &self {
            Self::InvalidField { field, .. }
            | Self::InvalidValue { field, .. }
            | Self::Refused { field, .. }
            | Self::UnknownField(field) => {
                err["field"] = json!(field);
            }
            _ => {}
        }
        let mut resp = (status, Json(json!({ "error": err }))).into_response();
        match self {
            Self::Unauthorized => {
                resp.headers_mut().insert(
                    axum::http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                );
            }
            Self::Unavailable(_) | Self::QuotaExceeded { .. } => {
                resp.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("5"),
                );
            }
            _ => {}
        }
        resp
    }
}

/// A path id that must be a UUID (400 naming the parameter otherwise).
pub fn parse_uuid(field: &str, raw: &str) -> Result<uuid::Uuid, ApiError> {
    uuid::Uuid::parse_str(raw).map_err(|_| ApiError::field(field, "must be a UUID"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_leak_nothing() {
        let resp = ApiError::Internal("relation highway.secret_table password=hunter2".into())
            .into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let s = String::from_utf8_lossy(&body);
        assert!(!s.contains("hunter2") && !s.contains("secret_table"), "{s}");
        assert!(s.contains("\"internal\""), "{s}");
    }

    #[tokio::test]
    async fn field_errors_name_the_field() {
        let resp = ApiError::UnknownField("bogus".into()).into_response();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["field"], "bogus");
        assert_eq!(v["error"]["code"], "unknown_field");
    }
}
