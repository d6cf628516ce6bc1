//! The activity queue, worker side: claim, heartbeat, complete/fail/retry, the rescuer,
//! and worker registration. All of its SQL is in [`store`]; every state change there is
//! guarded by the expected prior state, attempt and lease owner (fencing), and every
//! lease and retry time is judged by the database's `now()`. [`stats`] reads queue depth
//! and the oldest wait for `/metrics`, once per interval per process.
//!
//! The producer side (enqueue, read, cancel) is `highway_workflows::Client`. This module
//! knows nothing of Docker.

pub mod stats;
pub mod store;

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

pub use highway_workflows::client::{ACTIVITY_CHANNEL, CANCEL_CHANNEL};

/// One claimed attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub attempt: i32,
    pub kind: String,
    pub params: Value,
    pub tenant_id: String,
    pub workflow_run_id: Option<Uuid>,
    pub queue: String,
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    /// The lease this attempt holds (its heartbeat timeout or the worker default).
    pub lease_ms: i64,
    /// Start-to-close limit of this attempt.
    pub start_to_close_ms: Option<i64>,
    /// Time left before schedule-to-close, measured by the database at claim time.
    pub schedule_to_close_left_ms: Option<i64>,
}

/// How an attempt ended, as the executor reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    /// A failure; retried per policy unless `retryable` is false or the type is listed
    /// as non-retryable. `timeout` makes the final state `timed_out` instead of `failed`.
    Failed {
        error: Value,
        error_type: String,
        retryable: bool,
        timeout: bool,
    },
    /// The handler stopped because the activity was cancelled.
    Cancelled(Value),
    /// Shutdown stopped it: back to `scheduled` at once, not counted as an attempt.
    Release,
    /// Infrastructure failed under it: retried without counting, within its own budget.
    Infrastructure(Value),
}

impl Outcome {
    /// The outcome's short name (stored results, metrics labels).
    pub fn code(&self) -> &'static str {
        match self {
            Outcome::Succeeded(_) => "succeeded",
            Outcome::Failed { timeout: true, .. } => "timeout",
            Outcome::Failed { .. } => "failed",
            Outcome::Cancelled(_) => "cancelled",
            Outcome::Release => "release",
            Outcome::Infrastructure(_) => "infra",
        }
    }
}

/// A result to record for one attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    pub id: Uuid,
    pub attempt: i32,
    pub outcome: Outcome,
}

/// What the rescuer did in one pass.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RescueCounts {
    /// Expired leases put back for another attempt.
    pub retried: u64,
    /// Expired leases with no attempts left, or past schedule-to-close.
    pub timed_out: u64,
    /// Expired leases of activities whose cancellation was requested.
    pub cancelled: u64,
    /// Waiting activities past schedule-to-start or schedule-to-close.
    pub expired_waiting: u64,
    /// Workers marked lost (no heartbeat for a long time).
    pub lost_workers: u64,
    /// Finished activities deleted after the retention period.
    pub deleted: u64,
}

impl RescueCounts {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}
