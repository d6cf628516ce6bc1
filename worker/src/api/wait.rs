//! Long-poll reads: `GET /v1/activities/{id}?wait=30s` and `GET /v1/runs/{id}?wait=30s`
//! answer once the activity or run is terminal, or when the wait ends (the current
//! state, 200 either way: the caller reads `status`), like Nomad's blocking queries.
//!
//! A waiting request is woken by the completion notification
//! ([`highway_workflows::done`]) on a LISTEN connection of its own. At most
//! [`MAX_WAIT_LISTENERS`] such connections exist at once; further waiters poll, so
//! waits cannot exhaust Postgres connections. A wait ends early when the server begins
//! to drain, so graceful shutdown is never held up by a long poll.

use super::error::ApiError;
use super::AppState;
use highway_workflows::done::DoneWaiter;
use highway_workflows::duration::HumanDuration;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

/// Longest `wait` a request may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(300);
/// LISTEN connections held by waiting requests at most.
pub const MAX_WAIT_LISTENERS: usize = 32;

/// Parses the `wait` query parameter (`"30s"`, `"500ms"`, a number of seconds; at most
/// [`MAX_WAIT`]); a 400 naming `wait` otherwise.
pub fn parse_wait(raw: Option<&str>) -> Result<Option<Duration>, ApiError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let d: HumanDuration =
        raw.parse()
            .map_err(|e: highway_workflows::duration::ParseDurationError| {
                ApiError::field("wait", e.to_string())
            })?;
    if d.0 > MAX_WAIT {
        return Err(ApiError::field(
            "wait",
            format!("must be at most {}s", MAX_WAIT.as_secs()),
        ));
    }
    Ok(Some(d.0))
}

/// A waiter for one id on one completion channel, with its share of the LISTEN budget.
pub struct Wait {
    waiter: DoneWaiter,
    deadline: Instant,
    draining: tokio_util::sync::CancellationToken,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Wait {
    /// Starts listening (before the caller's first read, so no completion is missed).
    pub async fn start(st: &AppState, channel: &str, id: Uuid, wait: Duration) -> Self {
        let permit = st.wait_listeners.clone().try_acquire_owned().ok();
        let waiter = match permit {
            Some(_) => DoneWaiter::listen(&st.pool, channel, id).await,
            None => DoneWaiter::polling(id),
        };
        Self {
            waiter,
            deadline: Instant::now() + wait,
            draining: st.health.draining.clone(),
            _permit: permit,
        }
    }

    /// Waits for the next reason to read again (`true`: read once more, also when the
    /// deadline just came); `false` once the wait is over (the deadline passed before,
    /// or the server is draining): the caller answers with what it last read.
    pub async fn next(&mut self) -> bool {
        if Instant::now() >= self.deadline || self.draining.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = self.waiter.wake(self.deadline) => true,
            _ = self.draining.cancelled() => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_parses_and_is_bounded() {
        assert_eq!(parse_wait(None).unwrap(), None);
        assert_eq!(
            parse_wait(Some("30s")).unwrap(),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_wait(Some("250ms")).unwrap(),
            Some(Duration::from_millis(250))
        );
        let e = parse_wait(Some("301s")).unwrap_err();
        assert!(format!("{e:?}").contains("wait"), "{e:?}");
        let e = parse_wait(Some("soon")).unwrap_err();
        assert!(format!("{e:?}").contains("wait"), "{e:?}");
    }
}
