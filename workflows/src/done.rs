//! Completion notifications: [`DoneWaiter`] wakes a waiter the moment the activity or
//! workflow run it waits for reaches a terminal state, instead of polling.
//!
//! A database trigger (migration `done_notify`) sends the id of every activity that
//! becomes terminal on [`ACTIVITY_DONE_CHANNEL`] and of every run on
//! [`RUN_DONE_CHANNEL`], whichever path ended it. A waiter LISTENs on its own
//! connection and re-reads its row when its id arrives. Notifications are transient, so
//! it also re-reads every [`FALLBACK_RECHECK`] and at once after the listener lost its
//! connection; when LISTEN cannot be set up at all it falls back to polling with a
//! growing interval (10 ms to 250 ms), as every waiter did before.
//!
//! Callers loop: read the row; if terminal, return; else `waiter.wake(deadline)`. The
//! LISTEN is issued before the first read, so a completion between the read and the wait
//! is never missed.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Channel of activities that became terminal; payload = the activity id.
pub const ACTIVITY_DONE_CHANNEL: &str = "highway_activity_done";
/// Channel of workflow runs that became terminal; payload = the run id.
pub const RUN_DONE_CHANNEL: &str = "highway_run_done";
/// A listening waiter re-reads its row this often even without a notification (one
/// could be lost while its connection reconnects).
pub const FALLBACK_RECHECK: Duration = Duration::from_secs(1);

const POLL_FIRST: Duration = Duration::from_millis(10);
const POLL_MAX: Duration = Duration::from_millis(250);

/// Why [`DoneWaiter::wake`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The id was announced: the row is terminal now.
    Notified,
    /// The fallback interval passed without the id.
    Recheck,
    /// The listener lost its connection (anything sent meanwhile is gone).
    Reconnected,
    /// A polling waiter's nap ended.
    Polled,
    /// The deadline came.
    Deadline,
}

/// Wakes when one id is announced on one channel (see the module doc).
#[derive(Debug)]
pub struct DoneWaiter {
    listener: Option<PgListener>,
    id: String,
    poll: Duration,
}

impl DoneWaiter {
    /// LISTENs on `channel` for `id` on a connection of its own (made with `pool`'s
    /// options, not taken from it). Never fails: without a listener it polls.
    pub async fn listen(pool: &PgPool, channel: &str, id: Uuid) -> Self {
        let listener = match PgListener::connect_with(pool).await {
            Ok(mut l) => match l.listen(channel).await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::debug!(error = %e, channel, "done waiter: LISTEN failed, polling");
                    None
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, channel, "done waiter: cannot connect, polling");
                None
            }
        };
        Self::with_listener(listener, id)
    }

    /// A waiter that only polls (the fallback; also for callers without a pool).
    pub fn polling(id: Uuid) -> Self {
        Self::with_listener(None, id)
    }

    fn with_listener(listener: Option<PgListener>, id: Uuid) -> Self {
        Self {
            listener,
            id: id.to_string(),
            poll: POLL_FIRST,
        }
    }

    /// Whether notifications wake this waiter (false: it polls).
    pub fn is_listening(&self) -> bool {
        self.listener.is_some()
    }

    /// Returns when the row should be read again: the id was announced, the fallback
    /// interval passed, the listener reconnected, or `deadline` came.
    pub async fn wake(&mut self, deadline: Instant) -> Wake {
        let now = Instant::now();
        if now >= deadline {
            return Wake::Deadline;
        }
        let Some(listener) = self.listener.as_mut() else {
            let nap = self.poll.min(deadline - now);
            self.poll = (self.poll * 2).min(POLL_MAX);
            tokio::time::sleep(nap).await;
            return Wake::Polled;
        };
        let recheck = now + FALLBACK_RECHECK;
        let until = tokio::time::Instant::from_std(recheck.min(deadline));
        loop {
            match tokio::time::timeout_at(until, listener.try_recv()).await {
                Err(_) if recheck < deadline => return Wake::Recheck,
                Err(_) => return Wake::Deadline,
                Ok(Ok(Some(n))) if n.payload() == self.id => return Wake::Notified,
                // Another activity's completion.
                Ok(Ok(Some(_))) => continue,
                // The connection was lost (and is re-made on the next call): anything sent
                // meanwhile is gone, so read the row now.
                Ok(Ok(None)) => return Wake::Reconnected,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "done waiter: listener failed, polling");
                    self.listener = None;
                    return Wake::Reconnected;
                }
            }
        }
    }
}
