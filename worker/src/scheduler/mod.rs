//! Durable cron: the scheduler service. Every worker runs one (and `highway scheduler`
//! runs one alone); no leader is needed for correctness. A pass reads the schedules due
//! by the clock (the database's `now()` in production, [`FakeClock`] in tests) and hands
//! each to [`ScheduleClient::tick`], which takes its slots with a compare-and-set on the
//! cursor and records and enqueues them in one transaction (see
//! `highway_workflows::schedule::store` for the exactly-once argument).
//!
//! Shape shared by every background service: [`SchedulerOptions`] with named defaults,
//! a loop around [`Scheduler::run_once`] returning [`RunCounts`] (what tests and metrics
//! read), and a summary logged only when something happened. The loop sleeps until the
//! next due slot (at most `tick`), so fires are late by milliseconds, not by a tick.
//!
//! Operations (create, update, delete, pause, resume, trigger, backfill, preview, fires)
//! are [`ScheduleClient`] methods, re-exported here; all schedule SQL lives there.

pub mod clock;

pub use clock::{Clock, DatabaseClock, FakeClock};
pub use highway_workflows::schedule::store::TickFailpoint;
pub use highway_workflows::schedule::{
    store::Error, BackfillReport, CronTz, FirePreview, OverlapPolicy, Schedule, ScheduleClient,
    ScheduleFire, ScheduleLimits, ScheduleSpec, TickOptions, TickReport, TriggerOutcome,
};

use crate::config::scheduler::SchedulerConfig;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use futures::StreamExt;
use serde::Serialize;
use sqlx::PgPool;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// Default longest sleep between passes.
pub const DEFAULT_TICK: Duration = Duration::from_secs(1);
/// Default lateness still counted as on time.
pub const DEFAULT_ON_TIME_GRACE: Duration = Duration::from_secs(5);
/// Default schedules handled at once within a pass.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Due schedules read per pass; a longer list is worked through over several passes.
pub const DEFAULT_BATCH: i64 = 1000;
/// Shortest sleep between passes, so a schedule another scheduler holds does not spin us.
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// How the service runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub tick: Duration,
    pub on_time_grace: Duration,
    pub concurrency: usize,
    pub batch: i64,
    /// Slots handled per schedule per pass.
    pub max_slots: usize,
    /// Tests only: simulate a crash inside every tick.
    pub failpoint: Option<TickFailpoint>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            tick: DEFAULT_TICK,
            on_time_grace: DEFAULT_ON_TIME_GRACE,
            concurrency: DEFAULT_CONCURRENCY,
            batch: DEFAULT_BATCH,
            max_slots: TickOptions::default().max_slots,
            failpoint: None,
        }
    }
}

impl SchedulerOptions {
    pub fn from_config(c: &SchedulerConfig) -> Self {
        Self {
            tick: c.tick.0,
            on_time_grace: c.on_time_grace.0,
            concurrency: c.concurrency,
            ..Self::default()
        }
    }

    fn tick_options(&self) -> TickOptions {
        TickOptions {
            on_time_grace: self.on_time_grace,
            max_slots: self.max_slots,
            failpoint: self.failpoint,
        }
    }
}

/// What one pass did: the scheduler's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Schedules looked at.
    pub schedules: u64,
    pub fired: u64,
    pub skipped: u64,
    pub missed: u64,
    pub deduplicated: u64,
    pub buffered: u64,
    pub cancelled: u64,
    /// Schedules another scheduler (or an operator) changed first.
    pub contended: u64,
    /// Schedules whose tick failed (rolled back; retried next pass).
    pub errors: u64,
}

impl RunCounts {
    /// Nothing worth a log line happened.
    pub fn is_quiet(&self) -> bool {
        self.fired
            + self.skipped
            + self.missed
            + self.deduplicated
            + self.buffered
            + self.cancelled
            + self.errors
            == 0
    }

    fn add(&mut self, r: &TickReport) {
        self.fired += r.fired;
        self.skipped += r.skipped;
        self.missed += r.missed;
        self.deduplicated += r.deduplicated;
        self.buffered += r.buffered;
        self.cancelled += r.cancelled;
        self.contended += u64::from(r.contended);
    }

    pub fn merge(&mut self, o: &RunCounts) {
        self.schedules += o.schedules;
        self.fired += o.fired;
        self.skipped += o.skipped;
        self.missed += o.missed;
        self.deduplicated += o.deduplicated;
        self.buffered += o.buffered;
        self.cancelled += o.cancelled;
        self.contended += o.contended;
        self.errors += o.errors;
    }
}

/// The scheduler service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Scheduler {
    client: ScheduleClient,
    options: SchedulerOptions,
    clock: Arc<dyn Clock>,
}

impl Scheduler {
    pub fn new(pool: PgPool, options: SchedulerOptions, clock: Arc<dyn Clock>) -> Self {
        Self {
            client: ScheduleClient::new(pool),
            options,
            clock,
        }
    }

    /// A scheduler on the database's clock.
    pub fn with_database_clock(pool: PgPool, options: SchedulerOptions) -> Self {
        let clock = Arc::new(DatabaseClock::new(pool.clone()));
        Self::new(pool, options, clock)
    }

    pub fn client(&self) -> &ScheduleClient {
        &self.client
    }

    /// One pass over every due schedule. Errors of single schedules are counted and
    /// logged (their transaction rolled back; the next pass takes the slots again); only
    /// a failure to read the clock or the due list is an error.
    pub async fn run_once(&self) -> Result<RunCounts, Error> {
        let now = self.clock.now().await?;
        let due = self.client.due(now, self.options.batch).await?;
        let mut counts = RunCounts {
            schedules: due.len() as u64,
            ..Default::default()
        };
        let opts = self.options.tick_options();
        // Not spawned: the futures live inside this call, so stopping waits for them.
        // Owned per future (no borrows across the stream) so the pass is `Send + 'static`.
        let mut results = futures::stream::iter(due)
            .map(|s| {
                let client = self.client.clone();
                let opts = opts.clone();
                async move {
                    let r = client.tick(&s, now, &opts).await;
                    (s, r)
                }
            })
            .buffer_unordered(self.options.concurrency.max(1));
        while let Some((s, r)) = results.next().await {
            match r {
                Ok(rep) => counts.add(&rep),
                Err(e) => {
                    counts.errors += 1;
                    warn!(schedule_id = %s.id, schedule = %s.name, error = %e, "scheduler: tick failed; retried next pass");
                }
            }
        }
        Ok(counts)
    }

    /// How long to sleep: until the next due slot by the clock, at most `tick`.
    async fn next_sleep(&self) -> Duration {
        let (Ok(Some(next)), Ok(now)) = (self.client.next_due().await, self.clock.now().await)
        else {
            return self.options.tick;
        };
        (next - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .clamp(MIN_SLEEP, self.options.tick.max(MIN_SLEEP))
    }

    /// Runs passes until `stop` is cancelled. A pass in progress finishes first (its
    /// transactions are short), so stopping never leaves a half-taken slot behind —
    /// and a crash would not either: a pass stuck on a dead connection is dropped after
    /// `PASS_GRACE_AT_STOP`. Returns the counts of all passes.
    pub async fn run(self, stop: CancellationToken) -> RunCounts {
        let mut total = RunCounts::default();
        loop {
            let Some(pass) = crate::periodic::pass_or_stop(&stop, self.run_once()).await else {
                break;
            };
            let sleep = match pass {
                Ok(c) => {
                    if !c.is_quiet() {
                        info!(
                            schedules = c.schedules,
                            fired = c.fired,
                            skipped = c.skipped,
                            missed = c.missed,
                            deduplicated = c.deduplicated,
                            buffered = c.buffered,
                            cancelled = c.cancelled,
                            contended = c.contended,
                            errors = c.errors,
                            "scheduler: pass"
                        );
                    }
                    total.merge(&c);
                    self.next_sleep().await
                }
                Err(e) => {
                    warn!(dependency = "postgres", error = %e, "scheduler pass failed");
                    self.options.tick
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                _ = stop.cancelled() => break,
            }
        }
        info!(
            fired = total.fired,
            skipped = total.skipped,
            missed = total.missed,
            deduplicated = total.deduplicated,
            "scheduler stopped"
        );
        total
    }
}

/// `highway scheduler`: runs the scheduler alone against DATABASE_URL until SIGTERM or
/// SIGINT. Migrations are applied first (waiting for a database that is down).
pub async fn run_standalone(
    db_args: &DatabaseArgs,
    config: &SchedulerConfig,
) -> anyhow::Result<ExitCode> {
    config.validate()?;
    let url = db_args.resolve_url()?;
    let pool = db::lazy_pool(
        &url,
        &PoolOptions {
            max_connections: (config.concurrency as u32 * 2 + 2).max(4),
            application_name: "highway-scheduler".into(),
            ..PoolOptions::default()
        },
    )?;
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    crate::signals::stop_on_signal(stop.clone(), &tracker, "scheduler");
    let migrated = db::migrate_when_available(&pool, &stop).await;
    if let Ok(true) = migrated {
        info!("scheduler running");
        Scheduler::with_database_clock(pool.clone(), SchedulerOptions::from_config(config))
            .run(stop.clone())
            .await;
    }
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    pool.close().await;
    anyhow::Context::context(migrated, "database unusable at start")?;
    Ok(ExitCode::SUCCESS)
}
