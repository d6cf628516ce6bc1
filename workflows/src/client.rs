//! [`Client`]: the producer side of the queue (enqueue, batch enqueue, enqueue inside a
//! caller's transaction, read, list, wait, cancel). It owns the SQL for those operations;
//! claiming, heartbeats and completion live in the worker crate.

use crate::types::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool, Postgres};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The NOTIFY channel that wakes fetch loops; the payload is the queue name.
pub const ACTIVITY_CHANNEL: &str = "highway_activity";
/// The NOTIFY channel that tells workers to cancel a running activity; payload = id.
pub const CANCEL_CHANNEL: &str = "highway_cancel";
/// At most one wake-up NOTIFY per queue per this window per client: a NOTIFY per insert
/// halves insert throughput, and workers keep polling briefly after each wake-up.
pub const NOTIFY_DEBOUNCE: Duration = Duration::from_millis(50);

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    #[error("idempotency key {key:?} was already used with a different request")]
    IdempotencyConflict { key: String },
    #[error("activity {0} not found")]
    NotFound(Uuid),
    /// The request's `workflow_run_id` names no run of its tenant: missing, or another
    /// tenant's (indistinguishable on purpose).
    #[error("invalid field `workflow_run_id`: workflow run {0} not found")]
    RunNotFound(Uuid),
    /// A retry of an activity that is not failed, cancelled or timed out, or whose
    /// workflow run has ended.
    #[error("cannot retry: {0}")]
    NotRetryable(String),
    #[error("timed out after {0:?} waiting for activity to finish")]
    WaitTimeout(Duration),
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// True when the database could not be reached (callers answer 503, not 500).
    pub fn is_unavailable(&self) -> bool {
        match self {
            Error::Database(e) => matches!(
                e,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Tls(_)
            ),
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Result of an enqueue: the activity id and whether this call created it (false when an
/// identical request with the same idempotency key already existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Enqueued {
    pub id: Uuid,
    pub created: bool,
}

/// The queue's producer API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pool: PgPool,
    notify_gate: Arc<Mutex<HashMap<String, Instant>>>,
    coalesce: Arc<Coalescer>,
}

/// Concurrent single enqueues share statements (group insert, like Postgres' own group
/// commit of WAL flushes): a caller queues its request, and whoever holds one of
/// `INSERTERS` permits inserts everything queued in one statement. A caller alone
/// inserts its request at once with the single-row statement, as before; callers that
/// arrive while the inserters are busy ride the next statement together. Each still gets
/// its own committed result, and any failure of a shared statement sends every request
/// back to be inserted alone (same id), so one bad request never fails another.
#[derive(Debug)]
struct Coalescer {
    waiting: Mutex<Vec<Waiting>>,
    inserters: tokio::sync::Semaphore,
}

/// Shared statements in flight at once per client.
const INSERTERS: usize = 4;
/// Most requests in one shared statement.
const COALESCE_MAX: usize = 500;

impl Default for Coalescer {
    fn default() -> Self {
        Self {
            waiting: Mutex::default(),
            inserters: tokio::sync::Semaphore::new(INSERTERS),
        }
    }
}

#[derive(Debug)]
struct Waiting {
    id: Uuid,
    req: EnqueueRequest,
    tx: tokio::sync::oneshot::Sender<Shared>,
}

/// What an inserter tells a waiting caller.
#[derive(Debug)]
enum Shared {
    Done(Result<Enqueued>),
    /// The shared statement failed: insert alone (with the same id, so a statement that
    /// committed before its answer was lost is found, not duplicated).
    Alone,
}

const ACTIVITY_COLUMNS: &str = "id, workflow_run_id, tenant_id, kind, params, queue, priority, status, \
    attempt, max_attempts, uncounted_attempts, run_at, lease_owner, lease_expires_at, heartbeat_at, \
    heartbeat_details, result, error, idempotency_key, created_at, started_at, finished_at, \
    cancel_requested_at";

impl Client {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            notify_gate: Arc::default(),
            coalesce: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Enqueues one activity; it is committed when this returns. Concurrent calls on
    /// clones of one client may share a statement (see [`Coalescer`]); a call alone takes
    /// one single-row statement. A connection lost mid-call is retried with the same
    /// activity id, so a commit whose answer was lost is found rather than duplicated.
    pub async fn enqueue(&self, req: &EnqueueRequest) -> Result<Enqueued> {
        req.validate()?;
        let id = Uuid::now_v7();
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.coalesce
            .waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Waiting {
                id,
                req: req.clone(),
                tx,
            });
        loop {
            tokio::select! {
                biased;
                r = &mut rx => return match r {
                    Ok(Shared::Done(res)) => res,
                    // The shared statement failed, or its inserter was dropped mid-way.
                    Ok(Shared::Alone) | Err(_) => self.enqueue_alone(id, req).await,
                },
                permit = self.coalesce.inserters.acquire() => {
                    let Ok(_permit) = permit else { return self.enqueue_alone(id, req).await };
                    let batch: Vec<Waiting> = {
                        let mut w = self.coalesce.waiting.lock().unwrap_or_else(|p| p.into_inner());
                        let n = w.len().min(COALESCE_MAX);
                        w.drain(..n).collect()
                    };
                    // Our own request is in this batch or in one another inserter took:
                    // either way `rx` answers next.
                    self.insert_shared(batch).await;
                }
            }
        }
    }

    /// Inserts what waiting callers queued and answers each of them.
    async fn insert_shared(&self, batch: Vec<Waiting>) {
        match batch.len() {
            0 => {}
            1 => {
                let w = batch.into_iter().next().expect("one");
                let res = self.enqueue_alone(w.id, &w.req).await;
                let _ = w.tx.send(Shared::Done(res));
            }
            _ => {
                let mut conn = match self.pool.acquire().await {
                    Ok(c) => c,
                    Err(_) => {
                        for w in batch {
                            let _ = w.tx.send(Shared::Alone);
                        }
                        return;
                    }
                };
                // A request naming a run its tenant does not have is answered here, so
                // it does not fail the statement the others share.
                let batch = match self.answer_foreign_runs(&mut conn, batch).await {
                    Ok(rest) => rest,
                    Err(batch) => {
                        for w in batch {
                            let _ = w.tx.send(Shared::Alone);
                        }
                        return;
                    }
                };
                if batch.is_empty() {
                    return;
                }
                let ids: Vec<Uuid> = batch.iter().map(|w| w.id).collect();
                let reqs: Vec<&EnqueueRequest> = batch.iter().map(|w| &w.req).collect();
                let res = self.insert_many(&mut conn, &ids, &reqs).await;
                match res {
                    Ok(out) => {
                        for (w, e) in batch.into_iter().zip(out) {
                            let _ = w.tx.send(Shared::Done(Ok(e)));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, n = ids.len(), "shared enqueue failed; each request goes alone");
                        for w in batch {
                            let _ = w.tx.send(Shared::Alone);
                        }
                    }
                }
            }
        }
    }

    /// Answers `RunNotFound` to every waiting request whose `workflow_run_id` is not a
    /// run of its tenant and returns the others; on a database error, the whole batch.
    async fn answer_foreign_runs(
        &self,
        conn: &mut PgConnection,
        batch: Vec<Waiting>,
    ) -> std::result::Result<Vec<Waiting>, Vec<Waiting>> {
        let (runs, tenants): (Vec<Option<Uuid>>, Vec<&str>) = batch
            .iter()
            .map(|w| (w.req.workflow_run_id, w.req.tenant_id.as_str()))
            .unzip();
        if runs.iter().all(Option::is_none) {
            return Ok(batch);
        }
        let bad: Vec<(i64,)> = match sqlx::query_as(
            "SELECT u.n FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(run, tenant, n) \
             WHERE u.run IS NOT NULL AND NOT EXISTS (SELECT 1 FROM highway.workflow_runs w \
                                                     WHERE w.id = u.run AND w.tenant_id = u.tenant)",
        )
        .bind(&runs)
        .bind(&tenants)
        .fetch_all(&mut *conn)
        .await
        {
            Ok(rows) => rows,
            Err(_) => return Err(batch),
        };
        let bad: std::collections::HashSet<usize> =
            bad.into_iter().map(|(n,)| n as usize - 1).collect();
        let mut rest = Vec::with_capacity(batch.len());
        for (i, w) in batch.into_iter().enumerate() {
            match (bad.contains(&i), w.req.workflow_run_id) {
                (true, Some(run)) => {
                    let _ = w.tx.send(Shared::Done(Err(Error::RunNotFound(run))));
                }
                _ => rest.push(w),
            }
        }
        Ok(rest)
    }

    /// The single-row path: own statement, retried with the same id on a lost connection.
    async fn enqueue_alone(&self, id: Uuid, req: &EnqueueRequest) -> Result<Enqueued> {
        let mut tries = 0;
        loop {
            tries += 1;
            let res = async {
                let mut conn = self.pool.acquire().await?;
                self.enqueue_with(&mut conn, id, req).await
            }
            .await;
            match res {
                Err(Error::Database(e)) if tries < 3 && is_connection_lost(&e) => {
                    tracing::debug!(error = %e, "enqueue: connection lost; retrying with the same id");
                }
                other => return other,
            }
        }
    }

    /// Enqueues inside the caller's transaction (or on any connection): the activity
    /// exists exactly when the caller's transaction commits.
    pub async fn enqueue_tx(
        &self,
        conn: &mut PgConnection,
        req: &EnqueueRequest,
    ) -> Result<Enqueued> {
        req.validate()?;
        self.enqueue_with(conn, Uuid::now_v7(), req).await
    }

    async fn enqueue_with(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        req: &EnqueueRequest,
    ) -> Result<Enqueued> {
        // (Validated once, by the public entry points.)
        if let Some(run) = req.workflow_run_id {
            check_runs(&mut *conn, &[run], &[&req.tenant_id]).await?;
        }
        // Only a keyed request can ever be compared with another one.
        let hash = req.idempotency_key.as_ref().map(|_| request_hash(req));
        let keyed = hash.is_some();
        // The NOTIFY form is a heavier statement; most enqueues fall inside the
        // debounce window and take the plain INSERT. `ON CONFLICT` (a speculative
        // insertion into every unique index) is only paid by keyed requests.
        let sql = match (keyed, self.should_notify(&req.queue)) {
            (true, true) => INSERT_KEYED_NOTIFY,
            (true, false) => INSERT_KEYED,
            (false, true) => INSERT_PLAIN_NOTIFY,
            (false, false) => INSERT_PLAIN,
        };
        let res: std::result::Result<Option<(Uuid,)>, sqlx::Error> = sqlx::query_as(sql)
            .bind(id)
            .bind(req.workflow_run_id)
            .bind(&req.tenant_id)
            .bind(&req.kind)
            .bind(&req.params)
            .bind(&req.queue)
            .bind(req.priority)
            .bind(req.retry_policy.maximum_attempts as i32)
            .bind(req.retry_policy.initial_interval.as_millis_i64())
            .bind(req.retry_policy.backoff_coefficient)
            .bind(req.retry_policy.maximum_interval.as_millis_i64())
            .bind(&req.retry_policy.non_retryable_error_types)
            .bind(req.run_at)
            .bind(req.delay.map(|d| d.as_millis_i64()))
            .bind(req.timeouts.schedule_to_start.map(|d| d.as_millis_i64()))
            .bind(req.timeouts.start_to_close.map(|d| d.as_millis_i64()))
            .bind(req.timeouts.schedule_to_close.map(|d| d.as_millis_i64()))
            .bind(req.timeouts.heartbeat.map(|d| d.as_millis_i64()))
            .bind(&req.idempotency_key)
            .bind(&hash)
            .fetch_optional(&mut *conn)
            .await;
        let row = match res {
            Ok(row) => row,
            // A keyless retry whose first try committed: our own row holds the id.
            Err(sqlx::Error::Database(e))
                if !keyed && e.constraint() == Some("activities_pkey") =>
            {
                None
            }
            Err(e) => return Err(run_fk_violation(e, req.workflow_run_id)),
        };
        if let Some((id,)) = row {
            return Ok(Enqueued { id, created: true });
        }
        // Our own earlier try committed but its answer was lost.
        let mine: Option<(Uuid,)> =
            sqlx::query_as("SELECT id FROM highway.activities WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
        if mine.is_some() {
            return Ok(Enqueued { id, created: true });
        }
        existing_for_key(conn, req, hash.as_deref()).await
    }

    /// Enqueues many activities in one statement (one transaction), returning their ids in
    /// request order. Requests with idempotency keys follow the same rules as `enqueue`.
    pub async fn enqueue_many(&self, reqs: &[EnqueueRequest]) -> Result<Vec<Enqueued>> {
        let mut tx = self.pool.begin().await?;
        let out = self.enqueue_many_tx(&mut tx, reqs).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// `enqueue_many` inside the caller's transaction.
    pub async fn enqueue_many_tx(
        &self,
        conn: &mut PgConnection,
        reqs: &[EnqueueRequest],
    ) -> Result<Vec<Enqueued>> {
        for r in reqs {
            r.validate()?;
        }
        let ids: Vec<Uuid> = reqs.iter().map(|_| Uuid::now_v7()).collect();
        let reqs: Vec<&EnqueueRequest> = reqs.iter().collect();
        self.insert_many(conn, &ids, &reqs).await
    }

    /// The batched INSERT with the given ids, on the caller's connection (a transaction
    /// or not: it is one statement, then lookups of existing keyed rows). The requests
    /// are already validated.
    async fn insert_many(
        &self,
        conn: &mut PgConnection,
        ids: &[Uuid],
        reqs: &[&EnqueueRequest],
    ) -> Result<Vec<Enqueued>> {
        if reqs.is_empty() {
            return Ok(Vec::new());
        }
        let mut cols = BatchColumns::default();
        for (id, r) in ids.iter().zip(reqs) {
            cols.push(*id, r);
        }
        let (runs, tenants): (Vec<Uuid>, Vec<&str>) = reqs
            .iter()
            .filter_map(|r| r.workflow_run_id.map(|run| (run, r.tenant_id.as_str())))
            .unzip();
        if !runs.is_empty() {
            check_runs(&mut *conn, &runs, &tenants).await?;
        }
        let inserted: Vec<(Uuid,)> = sqlx::query_as(INSERT_MANY)
            .bind(&cols.id)
            .bind(&cols.run)
            .bind(&cols.tenant)
            .bind(&cols.kind)
            .bind(&cols.params)
            .bind(&cols.queue)
            .bind(&cols.priority)
            .bind(&cols.max_attempts)
            .bind(&cols.initial)
            .bind(&cols.coef)
            .bind(&cols.max_interval)
            .bind(&cols.non_retryable)
            .bind(&cols.run_at)
            .bind(&cols.delay)
            .bind(&cols.s2s)
            .bind(&cols.s2c)
            .bind(&cols.sc)
            .bind(&cols.hb)
            .bind(&cols.key)
            .bind(&cols.hash)
            .fetch_all(&mut *conn)
            .await
            .map_err(|e| run_fk_violation(e, runs.first().copied()))?;
        let created: std::collections::HashSet<Uuid> =
            inserted.into_iter().map(|(id,)| id).collect();
        let mut out = Vec::with_capacity(reqs.len());
        for (i, r) in reqs.iter().enumerate() {
            let id = cols.id[i];
            if created.contains(&id) {
                out.push(Enqueued { id, created: true });
                continue;
            }
            out.push(existing_for_key(&mut *conn, r, cols.hash[i].as_deref()).await?);
        }
        let mut queues: Vec<&str> = reqs.iter().map(|r| r.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        for q in queues {
            if self.should_notify(q) {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(ACTIVITY_CHANNEL)
                    .bind(q)
                    .execute(&mut *conn)
                    .await?;
            }
        }
        Ok(out)
    }

    /// Reads one activity. With `tenant`, another tenant's activity is `NotFound`.
    pub async fn get(&self, id: Uuid, tenant: Option<&str>) -> Result<Activity> {
        let sql = format!(
            "SELECT {ACTIVITY_COLUMNS} FROM highway.activities WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        );
        sqlx::query_as::<Postgres, Activity>(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(Error::NotFound(id))
    }

    /// Lists activities, newest first.
    pub async fn list(&self, f: &ActivityFilter) -> Result<Vec<Activity>> {
        let sql = format!(
            "SELECT {ACTIVITY_COLUMNS} FROM highway.activities \
             WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR kind = $3) AND ($4::text IS NULL OR queue = $4) \
               AND ($5::uuid IS NULL OR workflow_run_id = $5) \
             ORDER BY created_at DESC, id DESC LIMIT $6"
        );
        Ok(sqlx::query_as::<Postgres, Activity>(&sql)
            .bind(&f.tenant_id)
            .bind(f.status.map(|s| s.as_str()))
            .bind(&f.kind)
            .bind(&f.queue)
            .bind(f.workflow_run_id)
            .bind(f.limit.unwrap_or(100).clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?)
    }

    /// Waits until the activity is terminal, woken by its completion notification
    /// ([`crate::done`]; polling 10 ms to 250 ms when LISTEN is unavailable). Database
    /// errors while waiting are retried until the deadline, so a short outage does not
    /// surface to the caller.
    pub async fn wait(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        timeout: Duration,
    ) -> Result<Activity> {
        let deadline = Instant::now() + timeout;
        // LISTEN before the first read: a completion in between still wakes us.
        let mut waiter =
            crate::done::DoneWaiter::listen(&self.pool, crate::done::ACTIVITY_DONE_CHANNEL, id)
                .await;
        loop {
            match self.get(id, tenant).await {
                Ok(a) if a.status().is_terminal() => return Ok(a),
                Ok(_) => {}
                Err(e @ Error::NotFound(_)) => return Err(e),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(e) => tracing::debug!(error = %e, "wait: transient database error"),
            }
            if Instant::now() >= deadline {
                return Err(Error::WaitTimeout(timeout));
            }
            waiter.wake(deadline).await;
        }
    }

    /// Cancels an activity: a scheduled one becomes `cancelled` at once; a running one is
    /// flagged and its worker told through NOTIFY (and its next heartbeat).
    pub async fn cancel(&self, id: Uuid, tenant: Option<&str>) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let row: Option<(String,)> = sqlx::query_as(CANCEL_ONE)
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match row {
            Some((s,)) if s == "cancelled" => CancelOutcome::Cancelled,
            Some(_) => {
                sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CANCEL_CHANNEL)
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Requested
            }
            None => {
                // Either missing (or another tenant's) or already terminal.
                let exists: Option<(String,)> = sqlx::query_as(
                    "SELECT status FROM highway.activities WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
                )
                .bind(id)
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
                match exists {
                    None => return Err(Error::NotFound(id)),
                    Some(_) => CancelOutcome::AlreadyFinished,
                }
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Puts a failed, cancelled or timed-out activity back in its queue. A fenced state
    /// change: the update names the prior state the caller saw (`expected`), so a
    /// concurrent retry or a state that moved on changes nothing ([`RetryOutcome::Conflict`]).
    ///
    /// Attempts are extended, not reset: the attempt counter keeps counting (container
    /// names and tracking rows derive from it, so a reset would collide with the old
    /// attempts'), and `max_attempts` grows by the attempts already counted, so the
    /// activity gets its whole retry budget again. The schedule-to-close budget restarts
    /// at the retry (it counts from creation, which would time the retry out at once).
    /// An activity of a workflow run that is no longer running is refused
    /// ([`Error::NotRetryable`]): the run would not take its result.
    pub async fn retry(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        expected: ActivityStatus,
    ) -> Result<RetryOutcome> {
        if !matches!(
            expected,
            ActivityStatus::Failed | ActivityStatus::Cancelled | ActivityStatus::TimedOut
        ) {
            return Err(Error::NotRetryable(format!(
                "the activity is {expected}; only failed, cancelled or timed_out activities can be retried"
            )));
        }
        let mut tx = self.pool.begin().await?;
        let run: Option<(Option<String>,)> = sqlx::query_as(
            "SELECT r.status FROM highway.activities a \
               LEFT JOIN highway.workflow_runs r ON r.id = a.workflow_run_id \
              WHERE a.id = $1 AND ($2::text IS NULL OR a.tenant_id = $2)",
        )
        .bind(id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        match run {
            None => return Err(Error::NotFound(id)),
            Some((Some(s),)) if s != "running" => {
                return Err(Error::NotRetryable(format!(
                    "the activity's workflow run is {s}; it would not take the retry's result"
                )))
            }
            Some(_) => {}
        }
        let row: Option<(String,)> = sqlx::query_as(RETRY_ONE)
            .bind(id)
            .bind(tenant)
            .bind(expected.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some((queue,)) = row else {
            tx.commit().await?;
            return Ok(RetryOutcome::Conflict);
        };
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(ACTIVITY_CHANNEL)
            .bind(&queue)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(RetryOutcome::Requeued)
    }

    /// Starts a workflow run record (the driver that executes definitions is separate).
    pub async fn create_run(&self, tenant: &str, name: &str, input: &Value) -> Result<Uuid> {
        check_field("tenant_id", tenant)?;
        if name.contains('\0') {
            return Err(
                FieldError::new("name", "holds a NUL character, which cannot be stored").into(),
            );
        }
        check_storable("input", input)?;
        let id = Uuid::now_v7();
        sqlx::query("INSERT INTO highway.workflow_runs (id, tenant_id, name, input) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(tenant)
            .bind(name)
            .bind(input)
            .execute(&self.pool)
            .await?;
        Ok(id)
    }

    /// Cancels a workflow run: every scheduled activity is cancelled at once, every running
    /// one is told to stop. The run is `cancelled` when none is left running.
    pub async fn cancel_run(&self, run_id: Uuid, tenant: Option<&str>) -> Result<CancelOutcome> {
        let mut tx = self.pool.begin().await?;
        let run: Option<(String,)> = sqlx::query_as(
            "SELECT status FROM highway.workflow_runs WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        )
        .bind(run_id)
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((status,)) = run else {
            return Err(Error::NotFound(run_id));
        };
        if status != "running" && status != "cancelling" {
            tx.commit().await?;
            return Ok(CancelOutcome::AlreadyFinished);
        }
        // Lock order: activities first, then the run, the same order the completer and
        // the run driver take (they lock a finished activity, then its run); the reverse
        // order deadlocks against them.
        let mut running = cancel_run_activities(&mut tx, run_id, "workflow run cancelled").await?;
        sqlx::query(
            "UPDATE highway.workflow_runs SET cancel_requested_at = COALESCE(cancel_requested_at, now()), \
                    status = 'cancelling' \
             WHERE id = $1 AND status IN ('running', 'cancelling')",
        )
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
        // A step the driver enqueued while we waited for the run's lock is caught here.
        running.extend(cancel_run_activities(&mut tx, run_id, "workflow run cancelled").await?);
        for id in &running {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CANCEL_CHANNEL)
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let finished = sqlx::query(FINISH_CANCELLED_RUN)
            .bind(run_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(if finished > 0 {
            CancelOutcome::Cancelled
        } else {
            CancelOutcome::Requested
        })
    }

    fn should_notify(&self, queue: &str) -> bool {
        let mut gate = self.notify_gate.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match gate.get(queue) {
            Some(last) if now.duration_since(*last) < NOTIFY_DEBOUNCE => false,
            _ => {
                gate.insert(queue.to_owned(), now);
                true
            }
        }
    }
}

/// Cancels every activity of a run: scheduled ones at once (with `message` as their
/// error), running ones flagged. Returns the running ones, which the caller must
/// announce on `CANCEL_CHANNEL` in the same transaction. Lock order: activities before
/// the run row (the completer's order).
pub async fn cancel_run_activities(
    conn: &mut PgConnection,
    run_id: Uuid,
    message: &str,
) -> Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(CANCEL_RUN_ACTIVITIES)
        .bind(run_id)
        .bind(message)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().map(|(id,)| id).collect())
}

/// Every `runs[i]` must be a workflow run of `tenants[i]`: the first that is not (missing,
/// or another tenant's) is `RunNotFound`, so no tenant can attach an activity to, or
/// probe the ids of, another tenant's runs. One statement for a whole batch.
async fn check_runs(conn: &mut PgConnection, runs: &[Uuid], tenants: &[&str]) -> Result<()> {
    let bad: Option<(Uuid,)> = sqlx::query_as(
        "SELECT u.run FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS u(run, tenant, n) \
         WHERE NOT EXISTS (SELECT 1 FROM highway.workflow_runs w \
                           WHERE w.id = u.run AND w.tenant_id = u.tenant) \
         ORDER BY u.n LIMIT 1",
    )
    .bind(runs)
    .bind(tenants)
    .fetch_optional(&mut *conn)
    .await?;
    match bad {
        Some((run,)) => Err(Error::RunNotFound(run)),
        None => Ok(()),
    }
}

/// A run deleted between [`check_runs`] and the insert fails the foreign key: the same
/// answer as a run that was never there.
fn run_fk_violation(e: sqlx::Error, run: Option<Uuid>) -> Error {
    if let (sqlx::Error::Database(db), Some(run)) = (&e, run) {
        if db.constraint() == Some("activities_workflow_run_id_fkey") {
            return Error::RunNotFound(run);
        }
    }
    e.into()
}

/// After an insert skipped on a conflict of (tenant_id, idempotency_key): the same
/// request returns the original activity; a different one is refused.
async fn existing_for_key(
    conn: &mut PgConnection,
    req: &EnqueueRequest,
    hash: Option<&str>,
) -> Result<Enqueued> {
    let key = req.idempotency_key.clone().unwrap_or_default();
    let (id, existing_hash): (Uuid, Option<String>) = sqlx::query_as(
        "SELECT id, request_hash FROM highway.activities WHERE tenant_id = $1 AND idempotency_key = $2",
    )
    .bind(&req.tenant_id)
    .bind(&key)
    .fetch_one(&mut *conn)
    .await?;
    if hash.is_some() && existing_hash.as_deref() == hash {
        Ok(Enqueued { id, created: false })
    } else {
        Err(Error::IdempotencyConflict { key })
    }
}

/// The connection died under the call (terminated backend, restart): safe to retry
/// with the same id.
fn is_connection_lost(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db
            .code()
            .map(|c| c.starts_with("57P0") || c.starts_with("08"))
            .unwrap_or(false),
        _ => false,
    }
}

fn check_field(field: &'static str, v: &str) -> Result<(), FieldError> {
    if v.is_empty()
        || v.len() > 64
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(FieldError::new(
            field,
            "must be 1 to 64 letters, digits, '_' or '-'",
        ));
    }
    Ok(())
}

/// sha256 of the canonical request (serde_json maps are sorted), used to tell a retried
/// enqueue from a different request that reuses the key.
pub fn request_hash(req: &EnqueueRequest) -> String {
    let canonical = json!({
        "kind": req.kind, "params": req.params, "tenant_id": req.tenant_id,
        "workflow_run_id": req.workflow_run_id, "queue": req.queue, "priority": req.priority,
        "run_at": req.run_at, "delay": req.delay, "retry_policy": req.retry_policy,
        "timeouts": req.timeouts,
    });
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

#[derive(Default)]
struct BatchColumns {
    id: Vec<Uuid>,
    run: Vec<Option<Uuid>>,
    tenant: Vec<String>,
    kind: Vec<String>,
    params: Vec<Value>,
    queue: Vec<String>,
    priority: Vec<i16>,
    max_attempts: Vec<i32>,
    initial: Vec<i64>,
    coef: Vec<f64>,
    max_interval: Vec<i64>,
    non_retryable: Vec<Value>,
    run_at: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    delay: Vec<Option<i64>>,
    s2s: Vec<Option<i64>>,
    s2c: Vec<Option<i64>>,
    sc: Vec<Option<i64>>,
    hb: Vec<Option<i64>>,
    key: Vec<Option<String>>,
    hash: Vec<Option<String>>,
}

impl BatchColumns {
    fn push(&mut self, id: Uuid, r: &EnqueueRequest) {
        self.id.push(id);
        self.run.push(r.workflow_run_id);
        self.tenant.push(r.tenant_id.clone());
        self.kind.push(r.kind.clone());
        self.params.push(r.params.clone());
        self.queue.push(r.queue.clone());
        self.priority.push(r.priority);
        self.max_attempts
            .push(r.retry_policy.maximum_attempts as i32);
        self.initial
            .push(r.retry_policy.initial_interval.as_millis_i64());
        self.coef.push(r.retry_policy.backoff_coefficient);
        self.max_interval
            .push(r.retry_policy.maximum_interval.as_millis_i64());
        self.non_retryable
            .push(json!(r.retry_policy.non_retryable_error_types));
        self.run_at.push(r.run_at);
        self.delay.push(r.delay.map(|d| d.as_millis_i64()));
        self.s2s
            .push(r.timeouts.schedule_to_start.map(|d| d.as_millis_i64()));
        self.s2c
            .push(r.timeouts.start_to_close.map(|d| d.as_millis_i64()));
        self.sc
            .push(r.timeouts.schedule_to_close.map(|d| d.as_millis_i64()));
        self.hb
            .push(r.timeouts.heartbeat.map(|d| d.as_millis_i64()));
        self.key.push(r.idempotency_key.clone());
        self.hash
            .push(r.idempotency_key.as_ref().map(|_| request_hash(r)));
    }
}

/// The columns every enqueue writes (single and batched share them).
macro_rules! insert_into_activities {
    () => {
        r#"
INSERT INTO highway.activities (
    id, workflow_run_id, tenant_id, kind, params, queue, priority, max_attempts,
    retry_initial_interval_ms, retry_backoff_coefficient, retry_max_interval_ms,
    non_retryable_error_types, run_at, schedule_to_start_timeout_ms,
    start_to_close_timeout_ms, schedule_to_close_timeout_ms, heartbeat_timeout_ms,
    idempotency_key, request_hash)"#
    };
}

/// The single-row INSERT: with `ON CONFLICT DO NOTHING` for keyed requests, and with the
/// debounced NOTIFY riding in the statement itself (no extra round trip or transaction).
macro_rules! insert_one {
    ($conflict:literal, $pre:literal, $post:literal) => {
        concat!(
            $pre,
            insert_into_activities!(),
            r#"
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
        COALESCE($13, now() + make_interval(secs => COALESCE($14, 0)::double precision / 1000)),
        $15, $16, $17, $18, $19, $20)"#,
            $conflict,
            $post
        )
    };
}
const INSERT_PLAIN: &str = insert_one!("", "", "\nRETURNING id");
const INSERT_KEYED: &str = insert_one!("\nON CONFLICT DO NOTHING", "", "\nRETURNING id");
/// The NOTIFY form: the INSERT in a CTE, its queue name notified.
macro_rules! with_notify {
    ($conflict:literal) => {
        insert_one!(
            $conflict,
            "WITH ins AS (",
            "\n    RETURNING id, queue\n)\nSELECT ins.id FROM ins\nLEFT JOIN LATERAL (SELECT pg_notify('highway_activity', ins.queue)) n ON true"
        )
    };
}
const INSERT_PLAIN_NOTIFY: &str = with_notify!("");
const INSERT_KEYED_NOTIFY: &str = with_notify!("\nON CONFLICT DO NOTHING");

const INSERT_MANY: &str = concat!(
    insert_into_activities!(),
    r#"
SELECT u.id, u.run, u.tenant, u.kind, u.params, u.queue, u.priority, u.max_attempts,
       u.initial, u.coef, u.max_interval,
       ARRAY(SELECT jsonb_array_elements_text(u.non_retryable)),
       COALESCE(u.run_at, now() + make_interval(secs => COALESCE(u.delay, 0)::double precision / 1000)),
       u.s2s, u.s2c, u.sc, u.hb, u.key, u.hash
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::text[], $7::smallint[],
            $8::int[], $9::bigint[], $10::float8[], $11::bigint[], $12::jsonb[], $13::timestamptz[],
            $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::text[])
     AS u(id, run, tenant, kind, params, queue, priority, max_attempts, initial, coef, max_interval,
          non_retryable, run_at, delay, s2s, s2c, sc, hb, key, hash)
ON CONFLICT DO NOTHING
RETURNING id
"#
);

// `status` on the right-hand side is the row's value before the update.
const RETRY_ONE: &str = r#"
UPDATE highway.activities
SET status = 'scheduled',
    run_at = now(),
    max_attempts = max_attempts + (attempt - uncounted_attempts),
    schedule_to_close_timeout_ms = schedule_to_close_timeout_ms
        + (EXTRACT(EPOCH FROM now() - created_at) * 1000)::bigint,
    lease_owner = NULL,
    lease_expires_at = NULL,
    heartbeat_details = NULL,
    result = NULL,
    error = NULL,
    finished_at = NULL,
    cancel_requested_at = NULL
WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND status = $3
  AND status IN ('failed', 'cancelled', 'timed_out')
RETURNING queue
"#;

const CANCEL_ONE: &str = r#"
UPDATE highway.activities
SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
    status = CASE WHEN status = 'scheduled' THEN 'cancelled' ELSE status END,
    finished_at = CASE WHEN status = 'scheduled' THEN now() ELSE finished_at END,
    error = CASE WHEN status = 'scheduled'
                 THEN jsonb_build_object('type', 'Cancelled', 'message', 'cancelled before it started', 'retryable', false)
                 ELSE error END
WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND status IN ('scheduled', 'running')
RETURNING status
"#;

const CANCEL_RUN_ACTIVITIES: &str = r#"
WITH upd AS (
    UPDATE highway.activities
    SET cancel_requested_at = COALESCE(cancel_requested_at, now()),
        status = CASE WHEN status = 'scheduled' THEN 'cancelled' ELSE status END,
        finished_at = CASE WHEN status = 'scheduled' THEN now() ELSE finished_at END,
        error = CASE WHEN status = 'scheduled'
                     THEN jsonb_build_object('type', 'Cancelled', 'message', $2::text, 'retryable', false)
                     ELSE error END
    WHERE workflow_run_id = $1 AND status IN ('scheduled', 'running')
    RETURNING id, status
)
SELECT id FROM upd WHERE status = 'running'
"#;

/// Ends a cancelling run once none of its activities is left running. Also run by the
/// worker after it records a cancelled activity.
pub const FINISH_CANCELLED_RUN: &str = r#"
UPDATE highway.workflow_runs r SET status = 'cancelled', finished_at = now()
WHERE r.id = $1 AND r.status = 'cancelling'
  AND NOT EXISTS (SELECT 1 FROM highway.activities a
                  WHERE a.workflow_run_id = r.id AND a.status IN ('scheduled', 'running'))
"#;
