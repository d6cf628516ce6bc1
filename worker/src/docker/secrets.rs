//! Secret references of `tools.docker.run` (`{"secret": "name"}` env values): resolving
//! them at run time through a [`SecretResolver`], and the [`Redactor`] that replaces every
//! resolved value by `***` before a line, error or result leaves the worker.
//!
//! Owns: the resolver trait and its environment-backed implementation. Must not: log,
//! store or format a resolved value anywhere (the values live only in the create body
//! sent to the daemon and inside the `Redactor`).

use async_trait::async_trait;
use std::fmt;

/// Why a secret could not be resolved. The message never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// No secret of that name exists for the tenant: a user error, not retried.
    #[error("secret {name:?} is not defined")]
    NotFound { name: String },
    /// The name cannot be a secret name (empty, or characters outside `[A-Za-z0-9_.-]`).
    #[error("secret name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// The store could not be read (a table-backed store with Postgres down): retried.
    #[error("secret store unavailable: {0}")]
    Unavailable(String),
}

/// Where secret values come from. Issue 6 adds a table-backed store; the run handler
/// only sees this trait.
#[async_trait]
pub trait SecretResolver: Send + Sync + 'static {
    async fn resolve(&self, tenant_id: &str, name: &str) -> Result<SecretValue, SecretError>;
}

/// A resolved secret. `Debug` never prints the value, so it cannot leak through a
/// `{:?}` in a log line or an error chain.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretValue(String);

impl SecretValue {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(***)")
    }
}

/// Checks a secret name: the environment resolver maps it to a variable name, so only
/// characters that survive that mapping are accepted.
pub fn validate_name(name: &str) -> Result<(), SecretError> {
    let invalid = |reason| SecretError::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("empty"));
    }
    if name.len() > 128 {
        return Err(invalid("longer than 128 characters"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(invalid(
            "only letters, digits, '_', '-' and '.' are allowed",
        ));
    }
    Ok(())
}

/// Resolves `{"secret": "db-password"}` from the worker's environment variable
/// `HIGHWAY_SECRET_DB_PASSWORD` (uppercased, `-` and `.` become `_`). Every tenant
/// sees the same variables: this is the single-tenant stopgap until the secrets store.
#[derive(Debug, Clone, Default)]
pub struct EnvSecretResolver {
    prefix: String,
}

impl EnvSecretResolver {
    pub const DEFAULT_PREFIX: &'static str = "HIGHWAY_SECRET_";

    pub fn new() -> Self {
        Self {
            prefix: Self::DEFAULT_PREFIX.to_string(),
        }
    }

    /// A resolver reading `<prefix><NAME>`; tests use their own prefix so they never
    /// depend on the real environment of the machine.
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn variable_for(&self, name: &str) -> String {
        let upper: String = name
            .chars()
            .map(|c| match c {
                '-' | '.' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        format!("{}{upper}", self.prefix)
    }
}

#[async_trait]
impl SecretResolver for EnvSecretResolver {
    async fn resolve(&self, _tenant_id: &str, name: &str) -> Result<SecretValue, SecretError> {
        validate_name(name)?;
        match std::env::var(self.variable_for(name)) {
            Ok(v) => Ok(SecretValue(v)),
            Err(_) => Err(SecretError::NotFound {
                name: name.to_string(),
            }),
        }
    }
}

/// The marker that replaces a secret value.
pub const REDACTED: &str = "***";

/// Replaces every known secret value in text by `***`. Built once per run from the
/// resolved values; cheap to clone into the log reader task.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    needles: Vec<String>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} values)", self.needles.len())
    }
}

impl Redactor {
    pub fn new<'a>(values: impl IntoIterator<Item = &'a SecretValue>) -> Self {
        let mut needles: Vec<String> = Vec::new();
        for v in values {
            let v = v.expose();
            if v.is_empty() {
                continue;
            }
            needles.push(v.to_string());
            // Output is split into lines before it is redacted, so a multi-line secret
            // is also hidden line by line.
            if v.contains('\n') {
                needles.extend(
                    v.lines()
                        .map(str::trim_end)
                        .filter(|l| !l.is_empty())
                        .map(str::to_string),
                );
            }
        }
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Self { needles }
    }

    pub fn is_empty(&self) -> bool {
        self.needles.is_empty()
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for n in &self.needles {
            if out.contains(n.as_str()) {
                out = out.replace(n.as_str(), REDACTED);
            }
        }
        out
    }

    /// Redacts in place only when needed (the hot path of the log reader).
    pub fn redact_in_place(&self, text: &mut String) {
        if self.needles.iter().any(|n| text.contains(n.as_str())) {
            *text = self.redact(text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_longest_first_and_multiline() {
        let a = SecretValue::new("hunter2");
        let b = SecretValue::new("hunter2-extended");
        let c = SecretValue::new("line-one\nline-two");
        let r = Redactor::new([&a, &b, &c]);
        assert_eq!(r.redact("x hunter2-extended y hunter2"), "x *** y ***");
        assert_eq!(r.redact("line-two"), "***");
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn env_names() {
        let r = EnvSecretResolver::new();
        assert_eq!(
            r.variable_for("db-pass.word"),
            "HIGHWAY_SECRET_DB_PASS_WORD"
        );
        assert!(validate_name("a b").is_err());
        assert!(validate_name("").is_err());
    }
}
