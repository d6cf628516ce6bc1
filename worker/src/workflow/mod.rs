//! The worker side of definition-driven workflow runs: the completer hook that advances
//! the runs of finished activities inside the completion's transaction, and the sweeper
//! that advances live runs left with nothing in flight (a crashed driver, an activity the
//! rescuer ended), so another worker continues any run from the database. The driver
//! logic and all `workflow_steps` SQL live in `highway_workflows::runs`.

use highway_workflows::runs::{self, RunError};
use highway_workflows::Client;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Runs advanced per sweeper pass.
const SWEEP_BATCH: i64 = 100;

/// Advances the definition-driven runs among `runs` (the runs of activities that just
/// finished) on the caller's transaction. Runs without a definition are filtered out by
/// one indexed lookup, so the plain activity path pays nothing more.
pub async fn advance_finished(
    pool: &PgPool,
    conn: &mut PgConnection,
    runs: &[Uuid],
) -> Result<usize, RunError> {
    let driven = runs::driven_runs(conn, runs).await?;
    if driven.is_empty() {
        return Ok(0);
    }
    let client = Client::new(pool.clone());
    for run in &driven {
        let a = runs::advance(&client, conn, *run).await?;
        debug!(workflow_run_id = %run, enqueued = ?a.enqueued, status = ?a.run_status, "run advanced");
    }
    Ok(driven.len())
}

/// The sweeper service (every worker runs one; safe with many: `advance` locks the run).
#[derive(Debug, Clone)]
pub struct Sweeper {
    pool: PgPool,
    interval: Duration,
}

impl Sweeper {
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self { pool, interval }
    }

    /// One pass: advances every stalled run, each in its own transaction (one bad run
    /// does not hold back the others). Returns how many were advanced.
    pub async fn run_once(&self) -> Result<usize, RunError> {
        let stalled = runs::stalled_runs(&self.pool, SWEEP_BATCH).await?;
        let client = Client::new(self.pool.clone());
        let mut n = 0;
        for run in stalled {
            let res = async {
                let mut tx = self.pool.begin().await?;
                let a = runs::advance(&client, &mut tx, run).await?;
                // A cancelling run with nothing left running ends here too.
                sqlx::query(highway_workflows::client::FINISH_CANCELLED_RUN)
                    .bind(run)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, RunError>(a)
            }
            .await;
            match res {
                Ok(a) => {
                    n += 1;
                    debug!(workflow_run_id = %run, enqueued = ?a.enqueued, status = ?a.run_status, "sweeper advanced run");
                }
                Err(e) => {
                    warn!(workflow_run_id = %run, error = %e, "sweeper could not advance run")
                }
            }
        }
        Ok(n)
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
            match self.run_once().await {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "workflow sweeper advanced stalled runs"),
                Err(e) => {
                    warn!(dependency = "postgres", error = %e, "workflow sweeper pass failed")
                }
            }
        }
    }
}
