//! Built-in activity kinds for tests and benchmarks: `highway.noop` returns its params,
//! `highway.sleep` sleeps (obeying cancellation) and can fail on demand. They touch no
//! external system.

use super::registry::{ActivityContext, Handler, HandlerError, HandlerResult, Registry};
use async_trait::async_trait;
use highway_workflows::HumanDuration;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

pub const NOOP: &str = "highway.noop";
pub const SLEEP: &str = "highway.sleep";

/// Registers `highway.noop` and `highway.sleep`.
pub fn register(r: &mut Registry) {
    r.register(NOOP, Noop);
    r.register(SLEEP, Sleep);
}

/// Returns `{"echo": params}` at once.
#[derive(Debug)]
pub struct Noop;

#[async_trait]
impl Handler for Noop {
    async fn run(&self, _ctx: ActivityContext, params: Value) -> HandlerResult {
        Ok(json!({ "echo": params }))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SleepParams {
    /// How long to sleep.
    #[serde(default = "default_duration")]
    duration: HumanDuration,
    /// Fail after sleeping, with this error type.
    #[serde(default)]
    fail_with: Option<String>,
    /// Whether that failure may be retried.
    #[serde(default = "yes")]
    retryable: bool,
    /// Fail only on attempts before this one (then succeed): exercises retries.
    #[serde(default)]
    fail_until_attempt: Option<i32>,
    /// Ignore cancellation (a misbehaving handler, for shutdown tests).
    #[serde(default)]
    ignore_cancel: bool,
}

fn default_duration() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn yes() -> bool {
    true
}

/// Sleeps for `duration`, heartbeating its progress; stops at once when cancelled.
#[derive(Debug)]
pub struct Sleep;

#[async_trait]
impl Handler for Sleep {
    async fn run(&self, ctx: ActivityContext, params: Value) -> HandlerResult {
        let p: SleepParams = serde_json::from_value(params)
            .map_err(|e| HandlerError::invalid_params(e.to_string()))?;
        let total: Duration = p.duration.into();
        let start = tokio::time::Instant::now();
        let end = start + total;
        loop {
            let step = tokio::time::sleep_until(
                end.min(tokio::time::Instant::now() + Duration::from_secs(1)),
            );
            if p.ignore_cancel {
                step.await;
            } else {
                tokio::select! {
                    _ = step => {}
                    _ = ctx.cancelled() => {
                        return Err(HandlerError::non_retryable("Cancelled", "sleep interrupted"));
                    }
                }
            }
            let now = tokio::time::Instant::now();
            ctx.record_heartbeat(json!({ "slept_ms": (now - start).as_millis() as u64 }));
            if now >= end {
                break;
            }
        }
        let failing = match p.fail_until_attempt {
            Some(n) => ctx.attempt < n,
            None => p.fail_with.is_some(),
        };
        if failing {
            let ty = p.fail_with.unwrap_or_else(|| "SleepFailed".into());
            let msg = format!("failed on purpose on attempt {}", ctx.attempt);
            return Err(if p.retryable {
                HandlerError::retryable(ty, msg)
            } else {
                HandlerError::non_retryable(ty, msg)
            });
        }
        Ok(json!({ "slept_ms": total.as_millis() as u64, "attempt": ctx.attempt }))
    }
}
