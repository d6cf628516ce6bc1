//! Wire types of the activity queue: what a producer sends, what a reader sees.
//! Defaults here are the documented defaults of the product (README "Retries and timeouts").

use crate::duration::HumanDuration;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// Bad input, naming the field (defined in [`crate::field`], the ground floor of the
/// crate, so the params modules below `types` can use it).
pub use crate::field::FieldError;

pub const DEFAULT_TENANT: &str = "default";
pub const DEFAULT_QUEUE: &str = "default";
pub const DEFAULT_PRIORITY: i16 = 5;
/// Largest accepted `params` document, in bytes of JSON.
pub const MAX_PARAMS_BYTES: usize = 1024 * 1024;

/// The states of an activity; see ARCHITECTURE.md for the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivityStatus {
    Scheduled,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl ActivityStatus {
    pub const ALL: [ActivityStatus; 6] = [
        Self::Scheduled,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
        Self::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        !matches!(self, Self::Scheduled | Self::Running)
    }
}

impl fmt::Display for ActivityStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActivityStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown activity status {s:?}"))
    }
}

/// Temporal's retry policy. Delay before attempt n+1 is
/// `min(initial_interval * backoff_coefficient^(n-1), maximum_interval)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub initial_interval: HumanDuration,
    pub backoff_coefficient: f64,
    pub maximum_interval: HumanDuration,
    /// Attempts in all, the first included. 1 disables retries.
    pub maximum_attempts: u32,
    /// Error types (`ActivityError::error_type`) that fail the activity at once.
    pub non_retryable_error_types: Vec<String>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_interval: HumanDuration::from_secs(1),
            backoff_coefficient: 2.0,
            maximum_interval: HumanDuration::from_secs(100),
            maximum_attempts: 3,
            non_retryable_error_types: Vec::new(),
        }
    }
}

/// Temporal's four activity timeouts; each is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// From enqueue (or `run_at`) to the first start; past it the activity is `timed_out`.
    pub schedule_to_start: Option<HumanDuration>,
    /// One attempt's limit; past it the attempt times out and is retried per policy.
    pub start_to_close: Option<HumanDuration>,
    /// The whole activity, retries included; past it the activity is `timed_out`.
    pub schedule_to_close: Option<HumanDuration>,
    /// The lease: a running attempt whose worker has not heartbeated for this long is
    /// taken back by the rescuer. Defaults to the worker's lease (`HIGHWAY_LEASE`).
    pub heartbeat: Option<HumanDuration>,
}

/// A request to enqueue one activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Registered kind, for example `tools.docker.run`.
    pub kind: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    #[serde(default = "default_tenant")]
    pub tenant_id: String,
    #[serde(default)]
    pub workflow_run_id: Option<Uuid>,
    /// Routes the activity to a pool of workers.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// 1 (most urgent) to 9; default 5.
    #[serde(default = "default_priority")]
    pub priority: i16,
    /// Do not start before this instant.
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
    /// Do not start before the database's `now()` plus this delay.
    #[serde(default)]
    pub delay: Option<HumanDuration>,
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// Unique per tenant: the same key with the same request returns the existing
    /// activity; with a different request it is refused.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

pub(crate) fn empty_object() -> Value {
    Value::Object(Default::default())
}
pub(crate) fn default_tenant() -> String {
    DEFAULT_TENANT.to_owned()
}
pub(crate) fn default_queue() -> String {
    DEFAULT_QUEUE.to_owned()
}
pub(crate) fn default_priority() -> i16 {
    DEFAULT_PRIORITY
}

impl EnqueueRequest {
    pub fn new(kind: impl Into<String>, params: Value) -> Self {
        Self {
            kind: kind.into(),
            params,
            tenant_id: default_tenant(),
            workflow_run_id: None,
            queue: default_queue(),
            priority: DEFAULT_PRIORITY,
            run_at: None,
            delay: None,
            retry_policy: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            idempotency_key: None,
        }
    }

    pub fn tenant(mut self, t: impl Into<String>) -> Self {
        self.tenant_id = t.into();
        self
    }
    pub fn queue(mut self, q: impl Into<String>) -> Self {
        self.queue = q.into();
        self
    }
    pub fn idempotency_key(mut self, k: impl Into<String>) -> Self {
        self.idempotency_key = Some(k.into());
        self
    }
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry_policy.maximum_attempts = n;
        self
    }
    pub fn workflow_run(mut self, id: Uuid) -> Self {
        self.workflow_run_id = Some(id);
        self
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), FieldError> {
        check_name("kind", &self.kind, 128, true)?;
        check_tenant(&self.tenant_id)?;
        check_queue(&self.queue)?;
        if !(1..=9).contains(&self.priority) {
            return Err(FieldError::new("priority", "must be between 1 and 9"));
        }
        if !self.params.is_object() {
            return Err(FieldError::new("params", "must be a JSON object"));
        }
        check_storable("params", &self.params)?;
        // The worker's own parser: params it would refuse are refused here, unstored.
        crate::docker_params::check(&self.kind, &self.params)
            .map_err(|e| FieldError::new(crate::docker_params::request_path(&e), e.reason))?;
        for (i, t) in self
            .retry_policy
            .non_retryable_error_types
            .iter()
            .enumerate()
        {
            if t.contains('\0') {
                return Err(FieldError::new(
                    format!("retry_policy.non_retryable_error_types[{i}]"),
                    NUL_REASON,
                ));
            }
        }
        let size = serde_json::to_vec(&self.params)
            .map(|v| v.len())
            .unwrap_or(0);
        if size > MAX_PARAMS_BYTES {
            return Err(FieldError::new(
                "params",
                format!("is {size} bytes; the limit is {MAX_PARAMS_BYTES}"),
            ));
        }
        if self.run_at.is_some() && self.delay.is_some() {
            return Err(FieldError::new("delay", "give run_at or delay, not both"));
        }
        let rp = &self.retry_policy;
        if rp.maximum_attempts == 0 || rp.maximum_attempts > 1000 {
            return Err(FieldError::new(
                "retry_policy.maximum_attempts",
                "must be between 1 and 1000",
            ));
        }
        if !(rp.backoff_coefficient.is_finite() && (1.0..=100.0).contains(&rp.backoff_coefficient))
        {
            return Err(FieldError::new(
                "retry_policy.backoff_coefficient",
                "must be between 1.0 and 100.0",
            ));
        }
        if rp.maximum_interval < rp.initial_interval {
            return Err(FieldError::new(
                "retry_policy.maximum_interval",
                "must not be shorter than initial_interval",
            ));
        }
        for (name, t) in [
            (
                "timeouts.schedule_to_start",
                self.timeouts.schedule_to_start,
            ),
            ("timeouts.start_to_close", self.timeouts.start_to_close),
            (
                "timeouts.schedule_to_close",
                self.timeouts.schedule_to_close,
            ),
            ("timeouts.heartbeat", self.timeouts.heartbeat),
        ] {
            if let Some(t) = t {
                if t.0.as_millis() < 1 {
                    return Err(FieldError::new(name, "must be at least 1ms"));
                }
                if t.0.as_secs() > 366 * 86400 {
                    return Err(FieldError::new(name, "must be at most 366 days"));
                }
            }
        }
        if let Some(hb) = self.timeouts.heartbeat {
            if hb.0.as_millis() < 1000 {
                return Err(FieldError::new("timeouts.heartbeat", "must be at least 1s"));
            }
        }
        if let Some(k) = &self.idempotency_key {
            if k.is_empty() || k.len() > 255 || k.chars().any(char::is_control) {
                return Err(FieldError::new(
                    "idempotency_key",
                    "must be 1 to 255 printable characters",
                ));
            }
        }
        Ok(())
    }
}

const NUL_REASON: &str = "holds a NUL character, which cannot be stored";

/// Refuses what Postgres cannot store in `jsonb` anywhere in `v`: a NUL character in a
/// string or an object key. The error names the JSON path under `field`, the way the
/// API names it (`params.inputs[0].path`). (A Rust string cannot hold a lone surrogate,
/// and a `Value` map cannot hold a key twice: the API refuses those while reading.)
pub fn check_storable(field: &str, v: &Value) -> Result<(), FieldError> {
    fn walk(path: &mut String, v: &Value) -> Result<(), FieldError> {
        match v {
            Value::String(s) if s.contains('\0') => Err(FieldError::new(path.clone(), NUL_REASON)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk(path, item)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    for c in k.chars() {
                        if c.is_control() {
                            path.extend(c.escape_unicode());
                        } else {
                            path.push(c);
                        }
                    }
                    if k.contains('\0') {
                        return Err(FieldError::new(
                            path.clone(),
                            "this object key holds a NUL character, which cannot be stored",
                        ));
                    }
                    walk(path, item)?;
                    path.truncate(len);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(&mut field.to_string(), v)
}

/// A queue name as every request checks it (`queue`).
pub(crate) fn check_queue(queue: &str) -> Result<(), FieldError> {
    check_name("queue", queue, 64, false)
}

/// A tenant id as every request checks it (`tenant_id`).
pub(crate) fn check_tenant(tenant: &str) -> Result<(), FieldError> {
    check_name("tenant_id", tenant, 64, false)
}

fn check_name(field: &'static str, v: &str, max: usize, dots: bool) -> Result<(), FieldError> {
    if v.is_empty() || v.len() > max {
        return Err(FieldError::new(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    let ok = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || (dots && c == '.'));
    if !ok {
        let allowed = if dots {
            "letters, digits, '_', '-', '.'"
        } else {
            "letters, digits, '_', '-'"
        };
        return Err(FieldError::new(
            field,
            format!("may contain only {allowed}"),
        ));
    }
    Ok(())
}

/// How an attempt failed, as stored in `activities.error` and returned to callers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActivityError {
    /// A stable name callers branch on (`NonZeroExit`, `InvalidParams`, `HeartbeatTimeout`, ...).
    #[serde(rename = "type")]
    pub error_type: String,
    pub message: String,
    pub retryable: bool,
    /// The attempt that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
}

/// An activity as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Activity {
    pub id: Uuid,
    pub workflow_run_id: Option<Uuid>,
    pub tenant_id: String,
    pub kind: String,
    pub params: Value,
    pub queue: String,
    pub priority: i16,
    pub status: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub uncounted_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub heartbeat_details: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
}

impl Activity {
    pub fn status(&self) -> ActivityStatus {
        self.status.parse().unwrap_or(ActivityStatus::Failed)
    }
}

/// Filters of `Client::list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivityFilter {
    pub tenant_id: Option<String>,
    pub status: Option<ActivityStatus>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub workflow_run_id: Option<Uuid>,
    pub limit: Option<i64>,
}

/// What a retry request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOutcome {
    /// It was failed, cancelled or timed out: it is `scheduled` again.
    Requeued,
    /// Its state changed between the read and the update (a concurrent retry, or it
    /// was not in a retryable state): nothing changed.
    Conflict,
}

/// What a cancellation request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelOutcome {
    /// It had not started: it is `cancelled` now.
    Cancelled,
    /// It is running: its worker has been told and will stop it.
    Requested,
    /// It had already finished; nothing changed.
    AlreadyFinished,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_named() {
        let err = serde_json::from_str::<EnqueueRequest>(r#"{"kind":"highway.noop","bogus":1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn nul_anywhere_in_params_is_refused_naming_its_path() {
        let r = EnqueueRequest::new("ok", serde_json::json!({"x": "a\u{0}b"}));
        assert_eq!(r.validate().unwrap_err().field, "params.x");
        let r = EnqueueRequest::new(
            "ok",
            serde_json::json!({"inputs": [{"path": "/a"}, {"path": "/b\u{0}"}]}),
        );
        assert_eq!(r.validate().unwrap_err().field, "params.inputs[1].path");
        let r = EnqueueRequest::new("ok", serde_json::json!({"a": {"k\u{0}": 1}}));
        let e = r.validate().unwrap_err();
        assert_eq!(e.field, "params.a.k\\u{0}");
        assert!(e.reason.contains("key"), "{e}");
        let mut r = EnqueueRequest::new("ok", serde_json::json!({"x": "tab\tis fine"}));
        r.validate().unwrap();
        r.retry_policy.non_retryable_error_types = vec!["A\u{0}".into()];
        assert_eq!(
            r.validate().unwrap_err().field,
            "retry_policy.non_retryable_error_types[0]"
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut r = EnqueueRequest::new("highway.noop", serde_json::json!({}));
        r.priority = 0;
        assert_eq!(r.validate().unwrap_err().field, "priority");
        let mut r = EnqueueRequest::new("bad kind", serde_json::json!({}));
        assert_eq!(r.validate().unwrap_err().field, "kind");
        r.kind = "ok".into();
        r.params = serde_json::json!([1]);
        assert_eq!(r.validate().unwrap_err().field, "params");
        let mut r = EnqueueRequest::new("ok", serde_json::json!({}));
        r.retry_policy.maximum_attempts = 0;
        assert_eq!(
            r.validate().unwrap_err().field,
            "retry_policy.maximum_attempts"
        );
    }
}
