//! The worker loop: claim → run the handler → heartbeat → record; drain on shutdown.
//!
//! One [`Worker`] per process runs, all under one `TaskTracker`:
//! - a fetch loop per queue that claims `min(free slots, batch)` activities in one
//!   statement and starts one task per activity (a slot is a semaphore permit);
//! - the heartbeat loop: one statement per tick renews every lease this worker holds and
//!   reports cancellations; attempts missing from the answer have lost their lease;
//! - the completer: results are batched into one fenced statement every few ms; a
//!   success that comes after its lease was lost (a worker frozen past it) is offered
//!   once more as a late success, recorded only while no later attempt has started;
//! - the listener: one LISTEN connection for wake-ups and cancellations;
//! - the rescuer (`rescuer.rs`).
//!
//! Shutdown has two phases ([`Shutdown`]): *soft* stops claiming and lets running work
//! finish; *hard* cancels what is left with [`CancelReason::Shutdown`] so handlers stop
//! their containers, and those attempts are released without counting as failures.
//! Nothing in it waits on Postgres without a bound: a statement on a connection that
//! went dead (a blackholed network answers nothing for minutes) is abandoned, which is
//! as safe as a crash (leases expire, the rescuer takes the work back).

pub mod builtin;
pub mod registry;
mod rescuer;

pub use registry::{
    ActivityContext, CancelReason, Handler, HandlerError, HandlerResult, LeaseCheck, LeaseProbe,
    Registry,
};
pub use rescuer::Rescuer;

use crate::queue::store::{self, KeysetHint};
use crate::queue::{Claimed, Completion, Outcome, ACTIVITY_CHANNEL, CANCEL_CHANNEL};
use futures::FutureExt;
use serde_json::json;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};
use uuid::Uuid;

/// The two phases of a shutdown, shared by every service of the process.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// Stop taking new work; let running work finish.
    pub soft: CancellationToken,
    /// Stop running work now (containers are stopped, leases released).
    pub hard: CancellationToken,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Both phases at once (tests, fatal errors).
    pub fn now(&self) {
        self.soft.cancel();
        self.hard.cancel();
    }
}

pub use crate::periodic::{finish_within, pass_or_stop, PASS_GRACE_AT_STOP};

/// How long the last writes of a shutdown (queued results, releasing the leases) may
/// take before they are abandoned; the rescuer takes the work back once the leases end.
const LAST_WRITES: Duration = Duration::from_secs(5);

/// A claim that has not answered in this long is given up (its rows, if it did commit,
/// come back through the rescuer when their leases end).
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// The error of a statement given up client-side (the server may not even have seen it).
fn timed_out(what: &str, after: Duration) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} did not answer within {} ms", after.as_millis()),
    ))
}

/// The database side of [`ActivityContext::confirm_lease`]: the lease as the queue's
/// table holds it, fenced on attempt and owner, by Postgres' `now()`.
#[derive(Debug, Clone)]
pub struct DbLeaseProbe {
    pool: PgPool,
}

impl DbLeaseProbe {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait::async_trait]
impl LeaseProbe for DbLeaseProbe {
    async fn holds(
        &self,
        activity_id: Uuid,
        attempt: i32,
        worker_id: Uuid,
        margin: Duration,
    ) -> Result<bool, sqlx::Error> {
        // Bounded: a hung connection must not hold the attempt past the lease it checks.
        let margin_ms = margin.as_millis() as i64;
        tokio::time::timeout(
            LEASE_PROBE_TIMEOUT,
            store::lease_held(&self.pool, activity_id, attempt, worker_id, margin_ms),
        )
        .await
        .unwrap_or_else(|_| Err(timed_out("the lease check", LEASE_PROBE_TIMEOUT)))
    }
}

/// How long a lease check may take before the lease counts as unconfirmed.
const LEASE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Settings of a worker (from `config::WorkerConfig`).
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub id: Uuid,
    pub queues: Vec<String>,
    pub concurrency: usize,
    pub fetch_batch: usize,
    pub poll_interval: Duration,
    pub lease: Duration,
    pub heartbeat_interval: Duration,
    pub rescue_interval: Duration,
    pub complete_batch: usize,
    pub complete_flush: Duration,
    pub max_uncounted_attempts: i32,
    /// After hard shutdown, how long handlers get to stop their containers.
    pub hard_stop_timeout: Duration,
    /// Run the rescuer in this process (every worker does by default).
    pub run_rescuer: bool,
    /// Finished activities older than this are deleted by the rescuer (`None`: never).
    pub retention: Option<Duration>,
    /// Image digests for workflow cache keys, used when a completion advances a run.
    pub digests: crate::workflow::Digests,
}

impl WorkerOptions {
    pub fn from_config(c: &crate::config::WorkerConfig) -> Self {
        Self {
            id: c.worker_id.unwrap_or_else(Uuid::new_v4),
            queues: c.queues.clone(),
            concurrency: c.concurrency,
            fetch_batch: c.fetch_batch,
            poll_interval: c.poll_interval.0,
            lease: c.lease.0,
            heartbeat_interval: c.heartbeat_interval(),
            rescue_interval: c.rescue_interval.0,
            complete_batch: c.complete_batch,
            complete_flush: c.complete_flush.0,
            max_uncounted_attempts: c.max_uncounted_attempts,
            hard_stop_timeout: Duration::from_secs(60),
            run_rescuer: true,
            retention: Some(c.retention.0).filter(|r| !r.is_zero()),
            digests: Default::default(),
        }
    }

    /// Defaults for tests and embedding.
    pub fn new(queues: Vec<String>, concurrency: usize) -> Self {
        Self {
            id: Uuid::new_v4(),
            queues,
            concurrency,
            fetch_batch: 100,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(10),
            rescue_interval: Duration::from_secs(5),
            complete_batch: 200,
            complete_flush: Duration::from_millis(2),
            max_uncounted_attempts: 20,
            hard_stop_timeout: Duration::from_secs(60),
            run_rescuer: true,
            retention: Some(rescuer::DEFAULT_RETENTION),
            digests: Default::default(),
        }
    }
}

/// Counters of one worker's life, returned by [`Worker::run`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSummary {
    pub claimed: u64,
    pub completed: u64,
    /// Results the database refused (lease lost, late, or cancelled meanwhile).
    pub rejected: u64,
    pub lease_lost: u64,
    pub released: u64,
}

/// An attempt running in this process.
struct Running {
    attempt: i32,
    /// Also holds where the lease ends (`ActivityContext::lease_end`): counted from when
    /// the last successful heartbeat (or the claim) was *sent*, so the lease in the
    /// database runs at least until then.
    ctx: ActivityContext,
    lease: Duration,
}

impl Running {
    /// When the attempt must stop if its lease cannot be renewed: `margin` before the
    /// lease ends (never before the last renewal).
    fn stop_by(&self, margin: Duration) -> Instant {
        let end = self.ctx.lease_end().unwrap_or_else(Instant::now);
        end.checked_sub(margin.min(self.lease)).unwrap_or(end)
    }
}

type RunningMap = Arc<Mutex<HashMap<Uuid, Running>>>;

#[derive(Default)]
struct Counters {
    claimed: std::sync::atomic::AtomicU64,
    completed: std::sync::atomic::AtomicU64,
    rejected: std::sync::atomic::AtomicU64,
    lease_lost: std::sync::atomic::AtomicU64,
}

/// A worker process's executor. See the module docs.
pub struct Worker {
    opts: WorkerOptions,
    pool: PgPool,
    maint_pool: PgPool,
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// `pool` carries claims, heartbeats and completions; `maint_pool` the LISTEN
    /// connection and the rescuer, so maintenance never waits behind work.
    pub fn new(opts: WorkerOptions, pool: PgPool, maint_pool: PgPool, registry: Registry) -> Self {
        Self {
            opts,
            pool,
            maint_pool,
            registry: Arc::new(registry),
        }
    }

    pub fn id(&self) -> Uuid {
        self.opts.id
    }

    /// Runs until `shutdown.soft` fires and the drain completes.
    pub async fn run(self, shutdown: Shutdown) -> WorkerSummary {
        let opts = Arc::new(self.opts);
        let hostname = hostname();
        // Registration waits for the database (a worker may start during an outage).
        let mut delay = Duration::from_millis(200);
        loop {
            match store::register_worker(
                &self.pool,
                opts.id,
                &hostname,
                env!("CARGO_PKG_VERSION"),
                &opts.queues,
                opts.concurrency as i32,
            )
            .await
            {
                Ok(()) => break,
                Err(e) => {
                    warn!(dependency = "postgres", error = %e, retry_in_ms = delay.as_millis() as u64, "worker registration failed");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.soft.cancelled() => return WorkerSummary::default(),
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        info!(worker_id = %opts.id, queues = ?opts.queues, concurrency = opts.concurrency, "worker started");

        let running: RunningMap = Arc::default();
        let counters = Arc::new(Counters::default());
        let slots = Arc::new(Semaphore::new(opts.concurrency));
        crate::metrics::slots(opts.concurrency);
        let wakers: Arc<HashMap<String, Arc<Notify>>> = Arc::new(
            opts.queues
                .iter()
                .map(|q| (q.clone(), Arc::new(Notify::new())))
                .collect(),
        );
        let services = TaskTracker::new();
        let tasks = TaskTracker::new();
        // Services that must outlive the drain (heartbeats, completer, listener).
        let stop_services = CancellationToken::new();
        // Results still unwritten when the last writes ran out of time are given up.
        let abandon = CancellationToken::new();
        let (done_tx, done_rx) = mpsc::channel::<Done>(opts.complete_batch * 4);

        services.spawn(completer(
            self.pool.clone(),
            opts.clone(),
            done_rx,
            counters.clone(),
            abandon.clone(),
        ));
        // Fires once every fetch loop has ended: no claim is in flight any more.
        let claiming_stopped = CancellationToken::new();
        services.spawn(heartbeat_loop(
            self.pool.clone(),
            opts.clone(),
            running.clone(),
            claiming_stopped.clone(),
            stop_services.clone(),
        ));
        services.spawn(listener(
            self.maint_pool.clone(),
            wakers.clone(),
            running.clone(),
            stop_services.clone(),
        ));
        if opts.run_rescuer {
            let rescuer = Rescuer::new(self.maint_pool.clone(), opts.rescue_interval)
                .with_retention(opts.retention);
            services.spawn(rescuer.run(stop_services.clone()));
        }
        let fetchers = TaskTracker::new();
        for q in &opts.queues {
            fetchers.spawn(
                FetchLoop {
                    queue: q.clone(),
                    pool: self.pool.clone(),
                    opts: opts.clone(),
                    registry: self.registry.clone(),
                    slots: slots.clone(),
                    wake: wakers[q].clone(),
                    running: running.clone(),
                    tasks: tasks.clone(),
                    done: done_tx.clone(),
                    counters: counters.clone(),
                    hard: shutdown.hard.clone(),
                }
                .run(shutdown.soft.clone()),
            );
        }
        fetchers.close();

        // Phase 1: stop claiming, let running work finish until the hard phase.
        shutdown.soft.cancelled().await;
        fetchers.wait().await;
        claiming_stopped.cancel();
        info!(
            running = running.lock().map(|r| r.len()).unwrap_or(0),
            "draining: claiming stopped"
        );
        tasks.close();
        tokio::select! {
            _ = tasks.wait() => {}
            _ = shutdown.hard.cancelled() => {
                // Phase 2: stop what is left; handlers stop and remove their containers.
                let n = cancel_all(&running, CancelReason::Shutdown);
                info!(stopping = n, "shutdown grace over: stopping running activities");
                if tokio::time::timeout(opts.hard_stop_timeout, tasks.wait()).await.is_err() {
                    warn!("some activities did not stop in time; their leases are released");
                }
            }
        }
        // Completions queued by the tasks are flushed before the services stop.
        drop(done_tx);
        stop_services.cancel();
        services.close();
        if tokio::time::timeout(LAST_WRITES, services.wait())
            .await
            .is_err()
        {
            warn!(dependency = "postgres", timeout_ms = LAST_WRITES.as_millis() as u64,
                  "results not recorded in time at shutdown: abandoned (their leases expire and the rescuer retries them)");
            abandon.cancel();
            services.wait().await;
        }
        let released =
            match tokio::time::timeout(LAST_WRITES, store::release_and_stop(&self.pool, opts.id))
                .await
            {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    warn!(error = %e, "could not release leases at shutdown; the rescuer will");
                    0
                }
                Err(_) => {
                    warn!(
                        dependency = "postgres",
                        "releasing leases at shutdown timed out; the rescuer will take them back"
                    );
                    0
                }
            };
        let summary = WorkerSummary {
            claimed: counters.claimed.load(std::sync::atomic::Ordering::Relaxed),
            completed: counters
                .completed
                .load(std::sync::atomic::Ordering::Relaxed),
            rejected: counters.rejected.load(std::sync::atomic::Ordering::Relaxed),
            lease_lost: counters
                .lease_lost
                .load(std::sync::atomic::Ordering::Relaxed),
            released,
        };
        info!(?summary, "worker stopped");
        summary
    }
}

fn cancel_all(running: &RunningMap, reason: CancelReason) -> usize {
    let map = running.lock().unwrap_or_else(|p| p.into_inner());
    for r in map.values() {
        r.ctx.cancel(reason);
    }
    map.len()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn jitter(d: Duration, fraction: f64) -> Duration {
    use rand::Rng;
    let f = rand::thread_rng().gen_range(1.0 - fraction..=1.0);
    d.mul_f64(f)
}

/// After a wake-up or a non-empty claim, keep polling at this pace for a while: the
/// producer's NOTIFY is debounced, so enqueues right after a NOTIFY rely on it.
const LINGER: Duration = Duration::from_millis(150);
const LINGER_POLL: Duration = Duration::from_millis(5);
/// Longest a fetch loop waits for more free slots before a claim under backlog.
const FETCH_GATHER: Duration = Duration::from_millis(2);
/// Completion statements in flight at once per worker.
const COMPLETE_IN_FLIGHT: usize = 3;

struct FetchLoop {
    queue: String,
    pool: PgPool,
    opts: Arc<WorkerOptions>,
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    wake: Arc<Notify>,
    running: RunningMap,
    tasks: TaskTracker,
    done: mpsc::Sender<Done>,
    counters: Arc<Counters>,
    hard: CancellationToken,
}

impl FetchLoop {
    async fn run(self, soft: CancellationToken) {
        let mut hint: Option<KeysetHint> = None;
        let mut hint_set_at = Instant::now();
        let mut linger_until = Instant::now();
        let mut error_delay = Duration::from_millis(100);
        // The last claim filled every slot it asked for: more work is probably waiting.
        let mut backlog = false;
        loop {
            // A free slot first: never claim more than we can run.
            let first = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                _ = soft.cancelled() => return,
            };
            let mut permits = first;
            // Under a backlog, slots free up one by one as tasks finish; claiming each
            // alone would turn the queue into one round trip per activity. Wait a moment
            // for a useful batch of slots (half the batch), then take what is free.
            let target = self.opts.concurrency.min(self.opts.fetch_batch) * 3 / 4;
            if backlog && target > 1 && self.slots.available_permits() + 1 < target {
                if let Ok(Ok(more)) = tokio::time::timeout(
                    FETCH_GATHER,
                    self.slots.clone().acquire_many_owned((target - 1) as u32),
                )
                .await
                {
                    permits.merge(more);
                }
            }
            let extra = self
                .slots
                .available_permits()
                .min(self.opts.fetch_batch.saturating_sub(permits.num_permits()));
            if extra > 0 {
                if let Ok(more) = self.slots.clone().try_acquire_many_owned(extra as u32) {
                    permits.merge(more);
                }
            }
            // Both branches above may be ready at once; a shutdown wins over a claim.
            if soft.is_cancelled() {
                return;
            }
            let want = permits.num_permits();
            let kinds = self.registry.ready_kinds();
            // Hints go stale as new rows arrive behind them; restart from the head often.
            if hint_set_at.elapsed() > Duration::from_secs(1) {
                hint = None;
            }
            let claim_started = Instant::now();
            let claimed = if kinds.is_empty() {
                Ok(Vec::new())
            } else {
                let claim = tokio::time::timeout(
                    CLAIM_TIMEOUT,
                    store::claim(
                        &self.pool,
                        self.opts.id,
                        &self.queue,
                        &kinds,
                        want,
                        hint,
                        self.opts.lease.as_millis() as i64,
                    ),
                );
                // A claim hung on a dead connection must not hold up the hard phase: it
                // is dropped then (rows it may have taken come back through the rescuer).
                tokio::select! {
                    r = claim => r.unwrap_or_else(|_| Err(timed_out("the claim", CLAIM_TIMEOUT))),
                    () = self.hard.cancelled() => return,
                }
            };
            let got = match claimed {
                Ok(rows) => {
                    crate::metrics::claimed(&self.queue, claim_started.elapsed(), rows.len());
                    error_delay = Duration::from_millis(100);
                    if rows.len() < want {
                        hint = None;
                    } else if let Some(last) = rows.last() {
                        hint = Some(KeysetHint {
                            priority: last.priority,
                            run_at: last.run_at,
                            id: last.id,
                        });
                        hint_set_at = Instant::now();
                    }
                    let n = rows.len();
                    debug!(
                        want,
                        got = n,
                        elapsed_us = claim_started.elapsed().as_micros() as u64,
                        "claimed"
                    );
                    backlog = n == want;
                    for row in rows {
                        let permit = permits.split(1).expect("one permit per claimed row");
                        self.start(row, permit, claim_started);
                    }
                    drop(permits);
                    n
                }
                Err(e) => {
                    drop(permits);
                    hint = None;
                    backlog = false;
                    warn!(dependency = "postgres", queue = %self.queue, error = %e,
                          retry_in_ms = error_delay.as_millis() as u64, "claim failed");
                    tokio::select! {
                        _ = tokio::time::sleep(jitter(error_delay, 0.2)) => {}
                        _ = soft.cancelled() => return,
                    }
                    error_delay = (error_delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            if got > 0 {
                linger_until = Instant::now() + LINGER;
                continue;
            }
            let wait = if Instant::now() < linger_until {
                LINGER_POLL
            } else {
                jitter(self.opts.poll_interval, 0.1)
            };
            tokio::select! {
                _ = self.wake.notified() => { linger_until = Instant::now() + LINGER; }
                _ = tokio::time::sleep(wait) => {}
                _ = soft.cancelled() => return,
            }
        }
    }

    /// Runs a claimed attempt. `claim_sent` is when the claim went out: its lease began
    /// no earlier in the database, so counting from it never overstates the lease.
    fn start(&self, row: Claimed, permit: tokio::sync::OwnedSemaphorePermit, claim_sent: Instant) {
        self.counters
            .claimed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = Instant::now();
        let s2c = row
            .start_to_close_ms
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        let sched = row
            .schedule_to_close_left_ms
            .map(|ms| Duration::from_millis(ms.max(0) as u64));
        let (deadline, deadline_type) = match (s2c, sched) {
            (Some(a), Some(b)) if b < a => (Some(now + b), "ScheduleToCloseTimeout"),
            (Some(a), _) => (Some(now + a), "StartToCloseTimeout"),
            (None, Some(b)) => (Some(now + b), "ScheduleToCloseTimeout"),
            (None, None) => (None, ""),
        };
        let ctx = ActivityContext::new(
            row.id,
            row.attempt,
            row.kind.clone(),
            row.tenant_id.clone(),
            row.workflow_run_id,
            self.opts.id,
            row.queue.clone(),
            deadline,
        )
        .with_lease_probe(Arc::new(DbLeaseProbe::new(self.pool.clone())));
        let lease = Duration::from_millis(row.lease_ms.max(1000) as u64);
        ctx.set_lease_end(claim_sent + lease);
        // A cancellation racing the claim is seen at the first heartbeat.
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                row.id,
                Running {
                    attempt: row.attempt,
                    ctx: ctx.clone(),
                    lease,
                },
            );
        if self.hard.is_cancelled() {
            ctx.cancel(CancelReason::Shutdown);
        }
        let handler = self.registry.get(&row.kind).cloned();
        let busy = crate::metrics::attempt_started(&row.kind, row.run_at);
        let in_run = row.workflow_run_id.is_some();
        let running = self.running.clone();
        let done = self.done.clone();
        let counters = self.counters.clone();
        let (pool, opts) = (self.pool.clone(), self.opts.clone());
        let span = info_span!("activity", activity_id = %row.id, kind = %row.kind, attempt = row.attempt,
                              tenant_id = %row.tenant_id);
        self.tasks.spawn(
            async move {
                let _permit = permit;
                let verdict = execute(handler, ctx.clone(), row.params, deadline_type).await;
                busy.finish(match &verdict {
                    Verdict::Record(o) => o.code(),
                    Verdict::LateSuccess(_) | Verdict::Nothing => "lease_lost",
                });
                running.lock().unwrap_or_else(|p| p.into_inner()).remove(&ctx.activity_id);
                match verdict {
                    Verdict::Record(outcome) => {
                        // The completer only stops after every sender is gone, so this
                        // send fails only if the process is already tearing down.
                        if done
                            .send(Done {
                                completion: Completion { id: ctx.activity_id, attempt: ctx.attempt, outcome },
                                in_run,
                            })
                            .await
                            .is_err()
                        {
                            warn!("completer gone; result dropped (the lease will expire and the rescuer retries it)");
                        }
                    }
                    Verdict::LateSuccess(result) => {
                        counters.lease_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if record_late_success(&pool, &opts, ctx.activity_id, ctx.attempt, &result).await {
                            counters.completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Verdict::Nothing => {
                        counters.lease_lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        warn!("lease lost: attempt stopped, nothing recorded");
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// What to do with the end of an attempt.
enum Verdict {
    /// Record it through the completer (fenced on the live lease).
    Record(Outcome),
    /// The handler succeeded, but the lease was lost meanwhile (a worker frozen past
    /// it): offered to the queue as a late success ([`record_late_success`]).
    LateSuccess(serde_json::Value),
    /// The lease was lost and the attempt did not succeed: nothing to record (the
    /// rescuer decides the activity's fate).
    Nothing,
}

/// Runs one attempt to its outcome.
async fn execute(
    handler: Option<Arc<dyn Handler>>,
    ctx: ActivityContext,
    params: serde_json::Value,
    deadline_type: &'static str,
) -> Verdict {
    let Some(handler) = handler else {
        return Verdict::Record(Outcome::Failed {
            error: json!({"type": "UnknownKind", "message": format!("no handler registered for kind {:?}", ctx.kind),
                          "retryable": false, "attempt": ctx.attempt}),
            error_type: "UnknownKind".into(),
            retryable: false,
            timeout: false,
        });
    };
    let started = Instant::now();
    debug!("attempt started");
    let fut = AssertUnwindSafe(handler.run(ctx.clone(), params)).catch_unwind();
    tokio::pin!(fut);
    let res = match ctx.deadline {
        Some(deadline) => {
            tokio::select! {
                r = &mut fut => r,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    ctx.cancel(CancelReason::Timeout);
                    fut.await
                }
            }
        }
        None => fut.await,
    };
    let reason = ctx.cancel_reason();
    if reason == Some(CancelReason::LeaseLost) {
        return match res {
            Ok(Ok(v)) => Verdict::LateSuccess(v),
            _ => Verdict::Nothing,
        };
    }
    let res = match res {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".into());
            tracing::error!(panic = %msg, "handler panicked");
            Err(HandlerError::retryable("Panic", msg))
        }
    };
    let elapsed_ms = started.elapsed().as_millis() as u64;
    Verdict::Record(match (res, reason) {
        (Ok(v), _) => {
            debug!(elapsed_ms, "attempt succeeded");
            Outcome::Succeeded(v)
        }
        (Err(_), Some(CancelReason::Shutdown)) => Outcome::Release,
        (Err(e), Some(CancelReason::Requested)) => Outcome::Cancelled(error_json(&e, ctx.attempt)),
        (Err(e), Some(CancelReason::Timeout)) => {
            let mut err = error_json(&e, ctx.attempt);
            err["type"] = json!(deadline_type);
            err["message"] = json!(format!(
                "{deadline_type}: attempt stopped after {elapsed_ms} ms ({})",
                e.message
            ));
            Outcome::Failed {
                error: err,
                error_type: deadline_type.into(),
                retryable: true,
                timeout: true,
            }
        }
        (Err(e), _) if e.infrastructure => Outcome::Infrastructure(error_json(&e, ctx.attempt)),
        (Err(e), _) => {
            debug!(error = %e, "attempt failed");
            Outcome::Failed {
                error: error_json(&e, ctx.attempt),
                error_type: e.error_type.clone(),
                retryable: e.retryable,
                timeout: false,
            }
        }
    })
}

/// Offers a success that came after the lease was lost: the queue accepts it when no
/// later attempt has started, and audits it either way (`store::late_success`), so a
/// worker frozen past its lease neither throws away work that succeeded nor lets it
/// vanish without a trace. Retried like a completion while Postgres is unreachable
/// (a lost lease often means it was). True when accepted.
async fn record_late_success(
    pool: &PgPool,
    opts: &WorkerOptions,
    activity_id: Uuid,
    attempt: i32,
    result: &serde_json::Value,
) -> bool {
    let give_up = Instant::now() + opts.lease * 2;
    let mut delay = Duration::from_millis(50);
    loop {
        let write = async {
            let mut tx = pool.begin().await?;
            let late = store::late_success(&mut *tx, activity_id, attempt, opts.id, result).await?;
            if let Some(run) = late
                .as_ref()
                .filter(|l| l.accepted)
                .and_then(|l| l.workflow_run_id)
            {
                let mut sp = sqlx::Connection::begin(&mut *tx).await?;
                match crate::workflow::advance_finished(
                    pool,
                    &mut sp,
                    &[run],
                    opts.digests.0.as_ref(),
                )
                .await
                {
                    Ok(_) => sp.commit().await?,
                    Err(e) => {
                        warn!(error = %e, "could not advance the workflow run; the sweeper will");
                        sp.rollback().await?;
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(late)
        };
        let budget = give_up
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        let res = tokio::time::timeout(budget, write)
            .await
            .unwrap_or_else(|_| Err(timed_out("recording a late success", budget)));
        match res {
            Ok(Some(l)) if l.accepted => {
                info!(%activity_id, attempt, status_then = %l.status, "lease lost, but the attempt succeeded and no later attempt started: success recorded");
                return true;
            }
            Ok(Some(l)) => {
                warn!(%activity_id, attempt, status = %l.status, current_attempt = l.attempt,
                      "lease lost and the activity moved on: the late success is refused (audited)");
                return false;
            }
            Ok(None) => {
                warn!("lease lost and the activity is gone: late success not recorded");
                return false;
            }
            Err(e) if Instant::now() < give_up => {
                warn!(dependency = "postgres", error = %e, "recording a late success failed; retrying");
                tokio::time::sleep(jitter(delay, 0.2)).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                warn!(error = %e, "could not record a late success within twice the lease");
                return false;
            }
        }
    }
}

fn error_json(e: &HandlerError, attempt: i32) -> serde_json::Value {
    let mut v = json!({"type": e.error_type, "message": e.message, "retryable": e.retryable, "attempt": attempt});
    if let Some(d) = &e.details {
        v["details"] = d.clone();
    }
    v
}

/// A finished attempt on its way to the completer.
struct Done {
    completion: Completion,
    /// The activity belongs to a workflow run: its batch needs the transaction that
    /// also advances the run.
    in_run: bool,
}

/// Batches results into fenced statements (up to `COMPLETE_IN_FLIGHT` at once, so one
/// commit's latency does not cap throughput). While every statement slot is busy the
/// batch keeps growing (group commit): under load, batches grow instead of queueing.
/// A failed write (a Postgres outage) is retried until it succeeds or the leases would
/// have expired anyway.
async fn completer(
    pool: PgPool,
    opts: Arc<WorkerOptions>,
    mut rx: mpsc::Receiver<Done>,
    counters: Arc<Counters>,
    abandon: CancellationToken,
) {
    let mut in_flight = tokio::task::JoinSet::new();
    let mut closed = false;
    while !closed {
        let Some(first) = rx.recv().await else { break };
        let mut batch = Batch::with_capacity(opts.complete_batch);
        batch.push(first);
        let flush_at = tokio::time::Instant::now() + opts.complete_flush;
        while batch.items.len() < opts.complete_batch && !closed {
            tokio::select! {
                d = rx.recv() => match d { Some(d) => batch.push(d), None => closed = true },
                _ = tokio::time::sleep_until(flush_at) => break,
            }
        }
        while in_flight.len() >= COMPLETE_IN_FLIGHT {
            if batch.items.len() >= opts.complete_batch || closed {
                in_flight.join_next().await;
                continue;
            }
            tokio::select! {
                biased;
                _ = in_flight.join_next() => {}
                d = rx.recv() => match d { Some(d) => batch.push(d), None => closed = true },
            }
        }
        in_flight.spawn(record(
            pool.clone(),
            opts.clone(),
            batch,
            counters.clone(),
            abandon.clone(),
        ));
    }
    while in_flight.join_next().await.is_some() {}
}

/// Results to record in one statement.
struct Batch {
    items: Vec<Completion>,
    in_run: bool,
}

impl Batch {
    fn with_capacity(n: usize) -> Self {
        Self {
            items: Vec::with_capacity(n),
            in_run: false,
        }
    }

    fn push(&mut self, d: Done) {
        self.in_run |= d.in_run;
        self.items.push(d.completion);
    }
}

/// Writes one batch of results, retrying until twice the lease has passed; each try is
/// bounded too (a dead connection never answers). Fencing makes a retry of a try that
/// did commit harmless: it changes nothing.
async fn record(
    pool: PgPool,
    opts: Arc<WorkerOptions>,
    batch: Batch,
    counters: Arc<Counters>,
    abandon: CancellationToken,
) {
    let buf = &batch.items;
    let give_up = Instant::now() + opts.lease * 2;
    let mut delay = Duration::from_millis(50);
    loop {
        let t0 = Instant::now();
        let write = async {
            if batch.in_run {
                complete_and_advance(&pool, &opts, buf).await
            } else {
                // No workflow run to advance: one statement, no explicit transaction.
                store::complete(&pool, opts.id, opts.max_uncounted_attempts, buf).await
            }
        };
        let budget = give_up
            .saturating_duration_since(t0)
            .max(Duration::from_secs(1));
        let res = tokio::select! {
            biased;
            () = abandon.cancelled() => {
                warn!(dropped = buf.len(), "results abandoned at shutdown; the rescuer retries them");
                return;
            }
            r = tokio::time::timeout(budget, write) => r.unwrap_or_else(|_| Err(timed_out("recording results", budget))),
        };
        match res {
            Ok(rows) => {
                debug!(
                    batch = buf.len(),
                    elapsed_us = t0.elapsed().as_micros() as u64,
                    "results recorded"
                );
                let accepted = rows.len() as u64;
                counters
                    .completed
                    .fetch_add(accepted, std::sync::atomic::Ordering::Relaxed);
                let rejected = buf.len() as u64 - accepted;
                if rejected > 0 {
                    counters
                        .rejected
                        .fetch_add(rejected, std::sync::atomic::Ordering::Relaxed);
                    let ids: std::collections::HashSet<Uuid> = rows.iter().map(|r| r.0).collect();
                    for c in buf.iter().filter(|c| !ids.contains(&c.id)) {
                        warn!(activity_id = %c.id, attempt = c.attempt,
                              "result refused: the attempt no longer holds its lease");
                        // A success that lost the race with its lease is still offered:
                        // accepted if no later attempt started, audited either way.
                        if let Outcome::Succeeded(v) = &c.outcome {
                            if record_late_success(&pool, &opts, c.id, c.attempt, v).await {
                                counters
                                    .completed
                                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                }
                let runs: Vec<Uuid> = rows
                    .iter()
                    .filter(|r| r.1 != "scheduled")
                    .filter_map(|r| r.2)
                    .collect();
                if !runs.is_empty() {
                    if let Err(e) = store::finish_cancelled_runs(&pool, &runs).await {
                        warn!(error = %e, "could not finish cancelled runs; the rescuer will");
                    }
                }
                return;
            }
            Err(e) if Instant::now() < give_up => {
                warn!(dependency = "postgres", error = %e, retry_in_ms = delay.as_millis() as u64,
                      pending = buf.len(), "recording results failed; retrying");
                tokio::select! {
                    () = tokio::time::sleep(jitter(delay, 0.2)) => {}
                    () = abandon.cancelled() => {}
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                warn!(error = %e, dropped = buf.len(),
                      "could not record results within twice the lease; their leases have expired and the rescuer retries them");
                return;
            }
        }
    }
}

/// Records a batch and, in the same transaction, advances the definition-driven
/// workflow runs whose activities finished (the next steps are enqueued exactly when the
/// completion commits). A failing advance is rolled back to its savepoint and left to the
/// workflow sweeper: it must never hold back the completions themselves.
async fn complete_and_advance(
    pool: &PgPool,
    opts: &WorkerOptions,
    buf: &[Completion],
) -> Result<Vec<(Uuid, String, Option<Uuid>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let rows = store::complete(&mut *tx, opts.id, opts.max_uncounted_attempts, buf).await?;
    let mut runs: Vec<Uuid> = rows
        .iter()
        .filter(|r| r.1 != "scheduled")
        .filter_map(|r| r.2)
        .collect();
    if !runs.is_empty() {
        runs.sort_unstable();
        runs.dedup();
        let mut sp = sqlx::Connection::begin(&mut *tx).await?;
        match crate::workflow::advance_finished(pool, &mut sp, &runs, opts.digests.0.as_ref()).await
        {
            Ok(_) => sp.commit().await?,
            Err(e) => {
                warn!(error = %e, "could not advance workflow runs; the sweeper will");
                sp.rollback().await?;
            }
        }
    }
    tx.commit().await?;
    Ok(rows)
}

/// Renews every lease each tick; reports lease loss and cancellations to the attempts.
/// When Postgres cannot be reached, each attempt stops itself before its lease can
/// expire in the database, so no other worker ever runs it at the same time.
async fn heartbeat_loop(
    pool: PgPool,
    opts: Arc<WorkerOptions>,
    running: RunningMap,
    claiming_stopped: CancellationToken,
    stop: CancellationToken,
) {
    let tick = opts.heartbeat_interval.max(Duration::from_millis(200));
    // Stop a little before the lease ends in the database.
    let margin = (opts.lease / 10).max(Duration::from_millis(500));
    let mut last_worker_beat = Instant::now() - Duration::from_secs(3600);
    // The earliest moment an attempt must stop if its lease cannot be renewed (attempts
    // already told to stop are left out). The loop wakes up for it and bounds each
    // heartbeat by it, so a hung connection (a blackholed network, R10) cannot carry an
    // attempt past its lease: a failed or late heartbeat is noticed before that moment.
    let stop_deadline = |running: &RunningMap| -> Option<Instant> {
        let map = running.lock().unwrap_or_else(|p| p.into_inner());
        map.values()
            .filter(|r| !r.ctx.is_cancelled())
            .map(|r| r.stop_by(margin))
            .min()
    };
    let floor = Duration::from_millis(100);
    // The worker's row says `draining` as soon as claiming stopped (every fetch loop
    // ended, no claim in flight), not a tick later.
    let mut draining_told = false;
    loop {
        let mut nap = jitter(tick, 0.1);
        if let Some(d) = stop_deadline(&running) {
            nap = nap.min(d.saturating_duration_since(Instant::now()).max(floor));
        }
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = claiming_stopped.cancelled(), if !draining_told => {
                draining_told = true;
                last_worker_beat = Instant::now() - tick;
            }
            _ = stop.cancelled() => return,
        }
        let sent_at = Instant::now();
        let beats: Vec<(Uuid, i32, Option<serde_json::Value>)> = {
            let map = running.lock().unwrap_or_else(|p| p.into_inner());
            map.iter()
                .map(|(id, r)| (*id, r.attempt, r.ctx.take_heartbeat_details()))
                .collect()
        };
        if !beats.is_empty() {
            heartbeat_once(
                &pool,
                &opts,
                &running,
                &beats,
                sent_at,
                margin,
                tick,
                stop_deadline(&running),
            )
            .await;
        }
        // The worker's own row, bounded by the next stop deadline too: a hung connection
        // must not delay the lease check past it (a tick-long wait here once let an
        // attempt run 650 ms past its lease).
        let budget = match stop_deadline(&running) {
            Some(d) => tick.min(d.saturating_duration_since(Instant::now())),
            None => tick,
        };
        if last_worker_beat.elapsed() >= tick && !budget.is_zero() {
            let status = if claiming_stopped.is_cancelled() {
                "draining"
            } else {
                "running"
            };
            if let Ok(Ok(())) =
                tokio::time::timeout(budget, store::worker_heartbeat(&pool, opts.id, status)).await
            {
                last_worker_beat = Instant::now();
            }
        }
    }
}

/// One batched lease renewal; reports lease loss and cancellations to the attempts.
async fn heartbeat_once(
    pool: &PgPool,
    opts: &WorkerOptions,
    running: &RunningMap,
    beats: &[(Uuid, i32, Option<serde_json::Value>)],
    sent_at: Instant,
    margin: Duration,
    tick: Duration,
    stop_deadline: Option<Instant>,
) {
    {
        let budget = stop_deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(tick)
            .clamp(Duration::from_millis(100), tick);
        let beat = tokio::time::timeout(
            budget,
            store::heartbeat(pool, opts.id, opts.lease.as_millis() as i64, beats),
        )
        .await
        .unwrap_or_else(|_| Err(sqlx::Error::PoolTimedOut));
        match beat {
            Ok(held) => {
                let held: HashMap<Uuid, bool> = held.into_iter().collect();
                let map = &mut *running.lock().unwrap_or_else(|p| p.into_inner());
                for (id, attempt, _) in beats.iter() {
                    let Some(r) = map.get_mut(id) else { continue };
                    if r.attempt != *attempt {
                        continue;
                    }
                    match held.get(id) {
                        Some(cancel) => {
                            r.ctx.set_lease_end(sent_at + r.lease);
                            if *cancel {
                                r.ctx.cancel(CancelReason::Requested);
                            }
                        }
                        None => {
                            if !r.ctx.is_cancelled() {
                                warn!(activity_id = %id, attempt, "heartbeat refused: lease lost; stopping the attempt");
                            }
                            // The database says the lease is gone already.
                            r.ctx.set_lease_end(Instant::now());
                            r.ctx.cancel(CancelReason::LeaseLost);
                        }
                    }
                }
            }
            Err(e) => {
                warn!(dependency = "postgres", error = %e, "heartbeat failed");
                let map = running.lock().unwrap_or_else(|p| p.into_inner());
                for (id, r) in map.iter() {
                    if !r.ctx.is_cancelled() && r.stop_by(margin) <= Instant::now() {
                        warn!(activity_id = %id, "cannot renew the lease before it expires: stopping the attempt");
                        r.ctx.cancel(CancelReason::LeaseLost);
                    }
                }
            }
        }
    }
}

/// One LISTEN connection: wake-ups for the fetch loops, cancellations for attempts.
/// After a reconnect every fetch loop is woken (notifications may have been missed).
async fn listener(
    pool: PgPool,
    wakers: Arc<HashMap<String, Arc<Notify>>>,
    running: RunningMap,
    stop: CancellationToken,
) {
    let mut delay = Duration::from_millis(200);
    loop {
        let mut l = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                debug!(error = %e, "listener: connect failed");
                tokio::select! {
                    _ = tokio::time::sleep(jitter(delay, 0.2)) => {}
                    _ = stop.cancelled() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if let Err(e) = l.listen_all([ACTIVITY_CHANNEL, CANCEL_CHANNEL]).await {
            debug!(error = %e, "listener: LISTEN failed");
            continue;
        }
        delay = Duration::from_millis(200);
        for w in wakers.values() {
            w.notify_one();
        }
        loop {
            let n = tokio::select! {
                n = l.try_recv() => n,
                _ = stop.cancelled() => return,
            };
            match n {
                Ok(Some(n)) => {
                    if n.channel() == ACTIVITY_CHANNEL {
                        if let Some(w) = wakers.get(n.payload()) {
                            w.notify_one();
                        }
                    } else if let Ok(id) = n.payload().parse::<Uuid>() {
                        if let Some(r) = running.lock().unwrap_or_else(|p| p.into_inner()).get(&id)
                        {
                            info!(activity_id = %id, "cancellation requested");
                            r.ctx.cancel(CancelReason::Requested);
                        }
                    }
                }
                // Connection lost: reconnect and wake everyone.
                Ok(None) | Err(_) => break,
            }
        }
    }
}
