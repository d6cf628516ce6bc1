//! Request bodies: the size guard that answers 413 from `Content-Length` before a byte
//! is read, and [`ApiJson`], the JSON extractor that answers 415 for other content
//! types, 422 naming an unknown field, and 400 naming a field of the wrong type.
//!
//! Bodies without a length (chunked) are cut off at the limit while they stream in
//! (`DefaultBodyLimit` / `RequestBodyLimitLayer`), so nothing is ever buffered past it.

use super::error::ApiError;
use super::AppState;
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// Middleware: refuses a declared length over the limit before the handler (and so
/// before any reading of the body) runs.
pub async fn limit_declared_length(
    State(st): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = st.api.api_body_limit;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::PayloadTooLarge(limit).into_response();
    }
    next.run(req).await
}

/// A JSON body deserialized into `T` with the API's error mapping.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

fn is_json(req: &Request) -> bool {
    let Some(ct) = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, st).await?;
        decode(&bytes).map(ApiJson)
    }
}

/// The raw bytes of a JSON body (content type checked, size bounded), for handlers that
/// look at the document before typing it.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl FromRequest<AppState> for JsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, ApiError> {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let limit = st.api.api_body_limit;
        // The only failure reading a body here is the streaming length limit.
        let bytes = Bytes::from_request(req, st)
            .await
            .map_err(|_| ApiError::PayloadTooLarge(limit))?;
        Ok(JsonBytes(bytes))
    }
}

/// Query parameters deserialized into `T` (which should `deny_unknown_fields`): an
/// unknown parameter is a 422 naming it, a bad value a 400 naming it.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => {
                let text = rej.body_text();
                let msg = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                // serde_urlencoded may prefix the message with the key (`k: unknown ...`).
                let unknown = msg
                    .find("unknown field `")
                    .and_then(|i| unknown_field_name(&msg[i..]));
                if let Some(name) = unknown {
                    return Err(ApiError::UnknownField(name.to_string()));
                }
                // serde_urlencoded names the parameter only in some messages; keep the text.
                let field = msg
                    .split_once(':')
                    .map(|(f, _)| f.trim().to_string())
                    .filter(|f| !f.is_empty() && !f.contains(' '))
                    .unwrap_or_else(|| "query".into());
                Err(ApiError::field(field, msg.to_string()))
            }
        }
    }
}

/// Deserializes with the path of the offending field in every error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, T>(&mut de) {
        Ok(v) => {
            de.end().map_err(|e| ApiError::InvalidJson(e.to_string()))?;
            Ok(v)
        }
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if !inner.is_data() {
                return Err(ApiError::InvalidJson(inner.to_string()));
            }
            let msg = inner.to_string();
            if let Some(name) = unknown_field_name(&msg) {
                // The path points at the struct holding the unknown key (or at the key).
                let full = if path == "." || path.is_empty() {
                    name.to_string()
                } else if path.ends_with(name) {
                    path
                } else {
                    format!("{path}.{name}")
                };
                return Err(ApiError::UnknownField(full));
            }
            // serde_json appends " at line L column C"; the field name is what matters.
            let reason = msg
                .rsplit_once(" at line ")
                .map(|(m, _)| m.to_string())
                .unwrap_or(msg);
            let field = if path == "." { "body".into() } else { path };
            Err(ApiError::InvalidField { field, reason })
        }
    }
}

fn unknown_field_name(msg: &str) -> Option<&str> {
    let rest = msg.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use highway_workflows::EnqueueRequest;

    #[test]
    fn unknown_fields_are_named_with_their_path() {
        match decode::<EnqueueRequest>(br#"{"kind":"k","bogus":1}"#) {
            Err(ApiError::UnknownField(f)) => assert_eq!(f, "bogus"),
            other => panic!("{other:?}"),
        }
        match decode::<EnqueueRequest>(br#"{"kind":"k","retry_policy":{"nope":1}}"#) {
            Err(ApiError::UnknownField(f)) => assert_eq!(f, "retry_policy.nope"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn wrong_types_name_the_field_and_syntax_errors_say_json() {
        match decode::<EnqueueRequest>(br#"{"kind":"k","priority":"high"}"#) {
            Err(ApiError::InvalidField { field, .. }) => assert_eq!(field, "priority"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode::<EnqueueRequest>(b"{\"kind\":"),
            Err(ApiError::InvalidJson(_))
        ));
    }
}
