//! The rescuer: a background service (every worker runs one; safe with many) that takes
//! back attempts whose lease expired by the database's clock, times out waiting
//! activities past their deadlines, and deletes finished activities after the retention
//! period (River's job cleaner), so finished rows never pile up in the hot table. Shape shared by every background service: options,
//! a ticker around `run_once`, a summary logged only when something happened.

use crate::queue::store;
use crate::queue::RescueCounts;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Rows handled per statement; a backlog is worked through over several passes.
const BATCH: i64 = 1000;

/// Default for how long finished activities are kept (`HIGHWAY_RETENTION`).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 86400);

#[derive(Debug, Clone)]
pub struct Rescuer {
    pool: PgPool,
    interval: Duration,
    /// Finished activities older than this are deleted; `None` keeps them forever.
    retention: Option<Duration>,
}

impl Rescuer {
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self {
            pool,
            interval,
            retention: Some(DEFAULT_RETENTION),
        }
    }

    /// `None` (or zero) keeps finished activities forever.
    pub fn with_retention(mut self, retention: Option<Duration>) -> Self {
        self.retention = retention.filter(|r| !r.is_zero());
        self
    }

    /// One pass; the counts are what tests assert on.
    pub async fn run_once(&self) -> Result<RescueCounts, sqlx::Error> {
        let (mut counts, runs) = store::rescue(&self.pool, BATCH).await?;
        store::finish_cancelled_runs(&self.pool, &runs).await?;
        if let Some(r) = self.retention {
            counts.deleted =
                store::delete_finished(&self.pool, r.as_millis() as i64, BATCH).await?;
        }
        Ok(counts)
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(super::jitter(self.interval, 0.2)) => {}
                _ = stop.cancelled() => return,
            }
            let Some(pass) = super::pass_or_stop(&stop, self.run_once()).await else {
                return;
            };
            match pass {
                Ok(c) if !c.is_empty() => info!(
                    retried = c.retried,
                    timed_out = c.timed_out,
                    cancelled = c.cancelled,
                    expired_waiting = c.expired_waiting,
                    lost_workers = c.lost_workers,
                    "rescuer: took back expired work"
                ),
                Ok(_) => {}
                Err(e) => warn!(dependency = "postgres", error = %e, "rescuer pass failed"),
            }
        }
    }
}
