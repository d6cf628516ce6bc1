//! The registry of activity kinds: the [`Handler`] trait every kind implements, the
//! [`ActivityContext`] a handler gets (ids, cancellation, heartbeat details), and the
//! [`HandlerError`] it returns. Built-in kinds register here and so do `tools.docker.*`.

use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Why a running attempt is being stopped. The first reason set wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// A user cancelled the activity or its workflow run.
    Requested,
    /// The worker no longer holds the lease (rescued, or Postgres unreachable longer
    /// than the lease): stop, clean up and record nothing, except a success the
    /// handler still returns, which is offered as a late success (accepted only while
    /// no later attempt has started).
    LeaseLost,
    /// Hard phase of a worker shutdown: stop, clean up; the attempt is released
    /// without counting as a failure.
    Shutdown,
    /// The start-to-close or schedule-to-close deadline passed.
    Timeout,
}

/// What a handler receives besides its params.
#[derive(Clone)]
pub struct ActivityContext {
    pub activity_id: Uuid,
    pub attempt: i32,
    pub kind: String,
    pub tenant_id: String,
    pub workflow_run_id: Option<Uuid>,
    pub worker_id: Uuid,
    pub queue: String,
    /// When the attempt must be finished (start-to-close / schedule-to-close), if any.
    pub deadline: Option<Instant>,
    cancel: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
    details: Arc<Mutex<Option<Value>>>,
    lease_end: Arc<Mutex<Option<Instant>>>,
    /// Asks the database whether the lease is still held (installed by the executor).
    lease_probe: Option<Arc<dyn LeaseProbe>>,
}

/// Asks the database (by its own `now()`) whether an attempt still holds its lease.
#[async_trait]
pub trait LeaseProbe: Send + Sync + 'static {
    /// `Ok(true)` when `worker_id` holds the running attempt's lease for at least
    /// `margin` more, by the database's clock.
    async fn holds(
        &self,
        activity_id: Uuid,
        attempt: i32,
        worker_id: Uuid,
        margin: Duration,
    ) -> Result<bool, sqlx::Error>;
}

/// What [`ActivityContext::confirm_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseCheck {
    /// Held, with the margin to spare.
    Held,
    /// Gone, or ending within the margin: start nothing new.
    Lost,
    /// The database could not be asked (the error text).
    Unknown(String),
}

impl fmt::Debug for ActivityContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivityContext")
            .field("activity_id", &self.activity_id)
            .field("attempt", &self.attempt)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl ActivityContext {
    pub fn new(
        activity_id: Uuid,
        attempt: i32,
        kind: String,
        tenant_id: String,
        workflow_run_id: Option<Uuid>,
        worker_id: Uuid,
        queue: String,
        deadline: Option<Instant>,
    ) -> Self {
        Self {
            activity_id,
            attempt,
            kind,
            tenant_id,
            workflow_run_id,
            worker_id,
            queue,
            deadline,
            cancel: CancellationToken::new(),
            reason: Arc::default(),
            details: Arc::default(),
            lease_end: Arc::default(),
            lease_probe: None,
        }
    }

    /// Installs the database check of [`Self::confirm_lease`] (the executor does, for
    /// every attempt it claims).
    pub fn with_lease_probe(mut self, probe: Arc<dyn LeaseProbe>) -> Self {
        self.lease_probe = Some(probe);
        self
    }

    /// Whether the attempt still holds its lease with `margin` to spare, asked right
    /// before an irreversible step (a container start): first this worker's own count
    /// of the lease (a worker frozen past its lease fails it on waking, before any
    /// round trip), then the database, fenced on attempt and owner and judged by its
    /// `now()`. Without a probe (a context built by hand) only the first applies.
    pub async fn confirm_lease(&self, margin: Duration) -> LeaseCheck {
        if self.lease_left().is_some_and(|left| left <= margin) {
            return LeaseCheck::Lost;
        }
        let Some(probe) = &self.lease_probe else {
            return LeaseCheck::Held;
        };
        match probe
            .holds(self.activity_id, self.attempt, self.worker_id, margin)
            .await
        {
            Ok(true) => LeaseCheck::Held,
            Ok(false) => LeaseCheck::Lost,
            Err(e) => LeaseCheck::Unknown(e.to_string()),
        }
    }

    /// Fires when the attempt must stop; `cancel_reason` says why.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    pub fn cancel_token(&self) -> &CancellationToken {
        &self.cancel
    }

    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.reason.get().copied()
    }

    /// Asks the handler to stop. The first reason is kept.
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.cancel.cancel();
    }

    /// How long this worker still holds the attempt's lease, as far as it knows: counted
    /// from the last renewal the database confirmed, so never longer than the real
    /// lease. `None` when no executor tracks a lease (a context built by hand). After
    /// a lease loss a handler must have its work stopped within this time: another
    /// worker may take the activity over once the lease ends.
    pub fn lease_left(&self) -> Option<Duration> {
        self.lease_end()
            .map(|e| e.saturating_duration_since(Instant::now()))
    }

    /// Where the lease ends, as far as this worker knows (see [`Self::lease_left`]).
    pub fn lease_end(&self) -> Option<Instant> {
        *self.lease_end.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The executor records where the lease ends (at the claim and at each renewal).
    pub fn set_lease_end(&self, at: Instant) {
        *self.lease_end.lock().unwrap_or_else(|p| p.into_inner()) = Some(at);
    }

    /// Progress to store with the next heartbeat (`activities.heartbeat_details`);
    /// only the latest value is sent. Never put secrets here.
    pub fn record_heartbeat(&self, details: Value) {
        *self.details.lock().unwrap_or_else(|p| p.into_inner()) = Some(details);
    }

    /// Takes the pending heartbeat details (the heartbeat loop calls this).
    pub fn take_heartbeat_details(&self) -> Option<Value> {
        self.details
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// How an attempt failed. `retryable: false` fails the activity at once.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{error_type}: {message}")]
pub struct HandlerError {
    /// A stable name callers branch on, e.g. `InvalidParams`, `NonZeroExit`.
    pub error_type: String,
    pub message: String,
    pub retryable: bool,
    /// The attempt failed because of infrastructure (Docker vanished), not the work
    /// itself: retried without counting against `max_attempts`.
    pub infrastructure: bool,
    /// Structured details stored with the error (for `NonZeroExit`, the run result).
    pub details: Option<Value>,
}

impl HandlerError {
    pub fn retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error_type: error_type.into(),
            message: message.into(),
            retryable: true,
            infrastructure: false,
            details: None,
        }
    }

    pub fn non_retryable(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(error_type, message)
        }
    }

    pub fn infrastructure(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            infrastructure: true,
            ..Self::retryable(error_type, message)
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// Bad params: never retried; the message names the field.
    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::non_retryable("InvalidParams", message)
    }
}

pub type HandlerResult = Result<Value, HandlerError>;

/// One activity kind.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt. Must return promptly once `ctx.cancelled()` fires, after
    /// cleaning up everything it created (containers included).
    async fn run(&self, ctx: ActivityContext, params: Value) -> HandlerResult;

    /// When false, the worker does not claim this kind right now (for `tools.docker.*`:
    /// the daemon is down), so queued activities burn no attempt.
    fn ready(&self) -> bool {
        true
    }
}

/// Kind name → handler.
#[derive(Default, Clone)]
pub struct Registry {
    kinds: BTreeMap<String, Arc<dyn Handler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.kinds.keys()).finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.kinds.insert(kind.into(), Arc::new(handler));
        self
    }

    pub fn register_arc(
        &mut self,
        kind: impl Into<String>,
        handler: Arc<dyn Handler>,
    ) -> &mut Self {
        self.kinds.insert(kind.into(), handler);
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn Handler>> {
        self.kinds.get(kind)
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.kinds.keys().map(String::as_str)
    }

    /// Kinds whose handlers are ready to run now (what the fetch loop may claim).
    pub fn ready_kinds(&self) -> Vec<String> {
        self.kinds
            .iter()
            .filter(|(_, h)| h.ready())
            .map(|(k, _)| k.clone())
            .collect()
    }
}
