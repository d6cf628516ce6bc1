//! The rescuer: a background service (every worker runs one; safe with many) that takes
//! back attempts whose lease expired by the database's clock and times out waiting
//! activities past their deadlines. Shape shared by every background service: options,
//! a ticker around `run_once`, a summary logged only when something happened.

use crate::queue::store;
use crate::queue::RescueCounts;
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Rows handled per statement; a backlog is worked through over several passes.
const BATCH: i64 = 1000;

#[derive(Debug, Clone)]
pub struct Rescuer {
    pool: PgPool,
    interval: Duration,
}

impl Rescuer {
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self { pool, interval }
    }

    /// One pass; the counts are what tests assert on.
    pub async fn run_once(&self) -> Result<RescueCounts, sqlx::Error> {
        let (counts, runs) = store::rescue(&self.pool, BATCH).await?;
        store::finish_cancelled_runs(&self.pool, &runs).await?;
        Ok(counts)
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(super::jitter(self.interval, 0.2)) => {}
                _ = stop.cancelled() => return,
            }
            match self.run_once().await {
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
