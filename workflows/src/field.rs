//! [`FieldError`], the error of bad input naming its field, and the one rule that turns
//! a `serde_path_to_error` failure into it. The crate's ground floor: it imports nothing
//! of the crate, so the params modules (`docker`, `docker_tools`), their check
//! (`docker_params`) and the request types above them all use it without a cycle.

use serde::{Deserialize, Serialize};

/// Bad input, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("invalid field `{field}`: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The field a `serde_path_to_error` failure names: its path, and for an unknown field
/// the field itself (`bogus`, `inputs[0].bogus`), so the error points at what to delete.
pub(crate) fn deserialize_error(path: &str, inner: String) -> FieldError {
    let unknown = inner
        .strip_prefix("unknown field `")
        .and_then(|r| r.split('`').next())
        .map(str::to_owned);
    let field = match (path, unknown) {
        (".", Some(name)) => name,
        (".", None) => "params".to_string(),
        (p, Some(name)) if !p.ends_with(&name) => format!("{p}.{name}"),
        (p, _) => p.to_string(),
    };
    FieldError::new(field, inner)
}
