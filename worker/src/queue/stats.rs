//! The queue statistics service: one per process that serves `/metrics`. Every interval
//! one `GROUP BY queue` over the waiting activities sets the queue depth and oldest-wait
//! gauges, so scrapes (however many, however often) never query the database. Read-only;
//! the activities are written by [`super::store`] alone.

use sqlx::PgPool;
use std::collections::HashSet;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The default interval between passes.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(15);

/// See the module doc.
#[derive(Debug, Clone)]
pub struct QueueStats {
    pool: PgPool,
    interval: Duration,
}

impl QueueStats {
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self { pool, interval }
    }

    /// One pass: reads the queues and sets the gauges; `seen` carries the labels set
    /// before, so a queue that emptied goes to 0. The figures are what tests assert on.
    pub async fn run_once(
        &self,
        seen: &mut HashSet<String>,
    ) -> sqlx::Result<crate::metrics::QueueFigures> {
        let rows: Vec<(String, i64, f64)> = sqlx::query_as(
            "SELECT queue, count(*) FILTER (WHERE run_at <= now()),
                    COALESCE(extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now())), 0)::float8
               FROM highway.activities WHERE status = 'scheduled' GROUP BY queue ORDER BY 1",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(crate::metrics::queues(rows, seen))
    }

    /// Passes until `stop`. A pass in progress is dropped at stop: it only reads.
    pub async fn run(self, stop: CancellationToken) {
        let mut seen = HashSet::new();
        let mut failing = false;
        loop {
            let pass = tokio::select! {
                r = self.run_once(&mut seen) => r,
                _ = stop.cancelled() => return,
            };
            match pass {
                Ok(_) if failing => {
                    info!(dependency = "postgres", "queue statistics read again");
                    failing = false;
                }
                Ok(_) => {}
                Err(e) => {
                    crate::metrics::queue_stats_failed();
                    // Once per outage, not once per pass.
                    if !failing {
                        warn!(dependency = "postgres", error = %crate::health::classify_db_error(&e),
                              "queue statistics unavailable");
                    }
                    failing = true;
                }
            }
            crate::metrics::upkeep();
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}
