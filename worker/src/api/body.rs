//! Request bodies: the size guard that answers 413 from `Content-Length` before a byte
//! is read, and [`ApiJson`], the JSON extractor that answers 415 for other content
//! types, 422 naming an unknown field, and 400 naming a field of the wrong type.
//!
//! Every JSON body is first walked once by [`check_document`], which refuses (422
//! naming the JSON path, e.g. `params.x` or `inputs[0].path`) what Postgres cannot store
//! or what would be read ambiguously, at any depth: a NUL character in a string or an
//! object key (`jsonb` and `text` refuse `\u0000`), a lone UTF-16 surrogate escape
//! (`"\ud800"`), and a key repeated within one object (a typed field refuses that, but a
//! free-form `params` object would silently keep the last one).
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
        // An empty body is left to the handler (some bodies are optional).
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            check_document(&bytes)?;
        }
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

/// Walks the whole document once and refuses, naming the JSON path: NUL in a string or
/// key, a lone surrogate escape, a key repeated within one object (422). A document that
/// is not JSON at all is a 400 `invalid_json`, as [`decode`] would answer.
pub fn check_document(bytes: &[u8]) -> Result<(), ApiError> {
    let walk = Walk::default();
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let res = serde::de::DeserializeSeed::deserialize(Node(&walk), &mut de).and_then(|()| de.end());
    match res {
        Ok(()) => Ok(()),
        Err(e) => {
            if let Some((field, reason)) = walk.refused.borrow_mut().take() {
                return Err(ApiError::InvalidValue { field, reason });
            }
            // serde_json refuses a lone surrogate escape while it reads the string, with
            // one of two messages that nothing else produces ("lone leading surrogate in
            // hex escape" for a trailing one or a pair broken by another escape,
            // "unexpected end of hex escape" for a leading one not followed by `\u`); the
            // walk still knows where it was.
            let msg = e.to_string();
            if msg.starts_with("lone leading surrogate")
                || msg.starts_with("unexpected end of hex escape")
            {
                let at = walk.path();
                let reason = if walk.in_key.get() {
                    "an object key holds a lone UTF-16 surrogate escape, which cannot be stored"
                } else {
                    "holds a lone UTF-16 surrogate escape, which cannot be stored"
                };
                return Err(ApiError::InvalidValue {
                    field: at,
                    reason: reason.into(),
                });
            }
            Err(ApiError::InvalidJson(msg))
        }
    }
}

/// One step of a JSON path.
#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The walk's state: where it is, and the first refusal.
#[derive(Debug, Default)]
struct Walk {
    path: std::cell::RefCell<Vec<Seg>>,
    /// True while an object key is being read (a failure there belongs to the object).
    in_key: std::cell::Cell<bool>,
    refused: std::cell::RefCell<Option<(String, String)>>,
}

impl Walk {
    /// The path as the API names fields: `a.b[2].c`; `body` for the document itself.
    fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.borrow().iter() {
            match seg {
                Seg::Key(k) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    // A key is named with its control characters escaped.
                    for c in k.chars() {
                        if c.is_control() {
                            out.extend(c.escape_unicode());
                        } else {
                            out.push(c);
                        }
                    }
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        if out.is_empty() {
            "body".into()
        } else {
            out
        }
    }

    fn refuse<E: serde::de::Error>(&self, reason: &str) -> E {
        self.refused
            .borrow_mut()
            .get_or_insert_with(|| (self.path(), reason.to_string()));
        E::custom(reason)
    }
}

/// A value at the walk's current path.
struct Node<'w>(&'w Walk);

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if v.contains('\0') {
            return Err(self
                .0
                .refuse("holds a NUL character, which cannot be stored"));
        }
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            self.0.path.borrow_mut().push(Seg::Index(i));
            // Popped only on success, so a failure below still knows its path.
            if seq.next_element_seed(Node(self.0))?.is_none() {
                self.0.path.borrow_mut().pop();
                return Ok(());
            }
            self.0.path.borrow_mut().pop();
            i += 1;
        }
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        loop {
            self.0.in_key.set(true);
            let key: Option<String> = map.next_key()?;
            self.0.in_key.set(false);
            let Some(key) = key else { return Ok(()) };
            self.0.path.borrow_mut().push(Seg::Key(key.clone()));
            if key.contains('\0') {
                return Err(self
                    .0
                    .refuse("this object key holds a NUL character, which cannot be stored"));
            }
            if !seen.insert(key) {
                return Err(self
                    .0
                    .refuse("duplicate key: each key may appear once in an object"));
            }
            map.next_value_seed(Node(self.0))?;
            self.0.path.borrow_mut().pop();
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
    use serde_json::Value;

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

    fn refused(doc: &[u8]) -> (String, String) {
        match check_document(doc) {
            Err(ApiError::InvalidValue { field, reason }) => (field, reason),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(doc)),
        }
    }

    #[test]
    fn nul_surrogates_and_duplicates_are_refused_at_any_depth_naming_the_path() {
        let (f, r) = refused(br#"{"kind":"k","params":{"x":"a\u0000b"}}"#);
        assert_eq!(f, "params.x");
        assert!(r.contains("NUL"), "{r}");
        let (f, _) = refused(br#"{"params":{"inputs":[{"path":"/a"},{"path":"/b\u0000"}]}}"#);
        assert_eq!(f, "params.inputs[1].path");
        let (f, r) = refused(br#"{"params":{"a\u0000b":1}}"#);
        assert_eq!(f, "params.a\\u{0}b");
        assert!(r.contains("key"), "{r}");
        let (f, r) = refused(br#"{"params":{"image":"a","image":"b"}}"#);
        assert_eq!(f, "params.image");
        assert!(r.contains("duplicate"), "{r}");
        let (f, _) = refused(br#"{"kind":"a","kind":"b"}"#);
        assert_eq!(f, "kind");
        let (f, _) = refused(br#"[1,[2,{"x":{"y":"\u0000"}}]]"#);
        assert_eq!(f, "[1][1].x.y");
        let (f, _) = refused(br#""\u0000""#);
        assert_eq!(f, "body");
    }

    /// serde_json itself refuses lone surrogate escapes (leading and trailing) while it
    /// reads the string, as a syntax error; the walk turns that into a 422 at the path.
    #[test]
    fn lone_surrogates_are_named_by_their_path() {
        for doc in [
            &br#"{"params":{"x":"\ud800"}}"#[..],
            br#"{"params":{"x":"a\udc00b"}}"#,
            br#"{"params":{"x":"\ud800\u0041"}}"#,
        ] {
            assert!(serde_json::from_slice::<Value>(doc).is_err());
            let (f, r) = refused(doc);
            assert_eq!(f, "params.x", "{}", String::from_utf8_lossy(doc));
            assert!(r.contains("surrogate"), "{r}");
        }
        let (f, r) = refused(br#"{"params":{"\ud800":1}}"#);
        assert_eq!(f, "params");
        assert!(r.contains("key"), "{r}");
        // A proper pair is a character like any other.
        check_document(br#"{"params":{"x":"\ud83d\ude00"}}"#).unwrap();
    }

    #[test]
    fn plain_documents_pass_and_broken_ones_are_invalid_json() {
        check_document(br#"{"a":[1,2.5,-3,true,null,{"b":"c\td"}],"e":{}}"#).unwrap();
        check_document(br#"{"a":{"x":1},"b":{"x":1}}"#).unwrap();
        assert!(matches!(
            check_document(b"{\"kind\":"),
            Err(ApiError::InvalidJson(_))
        ));
        assert!(matches!(
            check_document(b"{} {}"),
            Err(ApiError::InvalidJson(_))
        ));
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
