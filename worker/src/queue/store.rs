//! All worker-side SQL of the activity queue. Each function is one statement (or one
//! short transaction); batched forms take arrays and `unnest` them so a worker tick
//! costs one round trip however many activities it touches.

use super::{Claimed, Completion, Outcome, RescueCounts};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Where the last full claim stopped: the next claim starts after it, so it does not
/// walk the dead index entries of rows claimed a moment ago. Reset on a short claim.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeysetHint {
    pub priority: i16,
    pub run_at: DateTime<Utc>,
    pub id: Uuid,
}

/// The claim statement, with or without the keyset hint. Two texts rather than one with
/// `$n IS NULL OR ...`: each has one right plan, custom or cached generic alike (an
/// index range scan of `activities_claim_idx`). Postgres still plans claims afresh
/// (it keeps preferring custom plans for them: ~0.2 ms per claim, measured).
macro_rules! claim_sql {
    ($after:literal) => {
        concat!(
            r#"
WITH picked AS (
    SELECT id FROM highway.activities
    WHERE status = 'scheduled' AND queue = $1 AND run_at <= now() AND kind = ANY($2)"#,
            $after,
            r#"
    ORDER BY priority, run_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE highway.activities a
SET status = 'running',
    attempt = a.attempt + 1,
    lease_owner = $4,
    lease_expires_at = now() + make_interval(secs => COALESCE(a.heartbeat_timeout_ms, $5) / 1000.0),
    heartbeat_at = now(),
    heartbeat_details = NULL,
    started_at = now()
-- `= ANY(ARRAY(...))` probes the primary key; a join with the CTE would, under a generic
-- plan (which guesses LIMIT $3 at a tenth of the table), hash the whole table.
WHERE a.id = ANY (ARRAY(SELECT id FROM picked))
RETURNING a.id, a.attempt, a.kind, a.params, a.tenant_id, a.workflow_run_id, a.queue, a.priority, a.run_at,
          COALESCE(a.heartbeat_timeout_ms, $5) AS lease_ms,
          a.start_to_close_timeout_ms AS start_to_close_ms,
          (EXTRACT(EPOCH FROM (a.created_at + make_interval(secs => a.schedule_to_close_timeout_ms / 1000.0) - now())) * 1000)::bigint
              AS schedule_to_close_left_ms
"#
        )
    };
}
const CLAIM_HEAD: &str = claim_sql!("");
const CLAIM_AFTER: &str = claim_sql!("\n      AND (priority, run_at, id) > ($6, $7, $8)");

/// Claims up to `limit` scheduled activities of `queue` whose kind is in `kinds`, in
/// priority order, skipping rows other workers hold. One statement, one transaction.
pub async fn claim(
    db: impl PgExecutor<'_>,
    worker_id: Uuid,
    queue: &str,
    kinds: &[String],
    limit: usize,
    hint: Option<KeysetHint>,
    default_lease_ms: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let q = sqlx::query_as(if hint.is_some() {
        CLAIM_AFTER
    } else {
        CLAIM_HEAD
    })
    .bind(queue)
    .bind(kinds)
    .bind(limit as i64)
    .bind(worker_id)
    .bind(default_lease_ms);
    let q = match hint {
        Some(h) => q.bind(h.priority).bind(h.run_at).bind(h.id),
        None => q,
    };
    let mut rows: Vec<Claimed> = q.fetch_all(db).await?;
    // UPDATE ... RETURNING does not keep the CTE's order.
    rows.sort_by_key(|r| (r.priority, r.run_at, r.id));
    Ok(rows)
}

const HEARTBEAT: &str = r#"
UPDATE highway.activities a
SET lease_expires_at = now() + make_interval(secs => COALESCE(a.heartbeat_timeout_ms, $2) / 1000.0),
    heartbeat_at = now(),
    heartbeat_details = COALESCE(u.details, a.heartbeat_details)
FROM unnest($3::uuid[], $4::int[], $5::jsonb[]) AS u(id, attempt, details)
-- `IS TRUE` hides the fence from the planner's index matching: this worker's rows are
-- found through the primary key, never by walking every running row (the running-lease
-- index), whatever plan is cached.
WHERE a.id = u.id AND a.id = ANY ($3::uuid[]) AND a.attempt = u.attempt AND a.lease_owner = $1
  AND (a.status = 'running' AND a.lease_expires_at > now()) IS TRUE
RETURNING a.id, a.cancel_requested_at IS NOT NULL AS cancel_requested
"#;

/// Renews the leases of every attempt this worker runs, in one statement. Returns the
/// attempts still held, with their cancellation flag; any attempt missing from the
/// answer has lost its lease (rescued, expired, or owned by another attempt).
pub async fn heartbeat(
    db: impl PgExecutor<'_>,
    worker_id: Uuid,
    default_lease_ms: i64,
    beats: &[(Uuid, i32, Option<Value>)],
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    let ids: Vec<Uuid> = beats.iter().map(|b| b.0).collect();
    let attempts: Vec<i32> = beats.iter().map(|b| b.1).collect();
    let details: Vec<Option<Value>> = beats.iter().map(|b| b.2.clone()).collect();
    sqlx::query_as(HEARTBEAT)
        .bind(worker_id)
        .bind(default_lease_ms)
        .bind(&ids)
        .bind(&attempts)
        .bind(&details)
        .fetch_all(db)
        .await
}

// One UPDATE: the fence sits in WHERE and the new state in SET, both over the target
// row `a`, so when another transaction changed the row first (a cancel request, the
// rescuer) Postgres re-evaluates them on the latest version (EvalPlanQual); no separate
// lock step is needed. `IS TRUE` hides the fence from index matching, so the rows are
// found by primary key (never by walking the running-lease index) under any cached plan.
const COMPLETE: &str = r#"
UPDATE highway.activities a
SET (status, result, error, uncounted_attempts, run_at, lease_owner, lease_expires_at, finished_at) = (
    SELECT d.new_status,
        CASE WHEN d.new_status = 'succeeded' THEN u.result END,
        CASE
            WHEN d.new_status = 'succeeded' THEN NULL
            WHEN d.new_status = 'cancelled' AND u.outcome <> 'cancelled'
                THEN jsonb_build_object('type', 'Cancelled', 'message', 'cancelled while running', 'retryable', false,
                                        'attempt', a.attempt)
            WHEN d.new_status = 'timed_out' AND u.outcome <> 'timeout'
                THEN jsonb_build_object('type', 'ScheduleToCloseTimeout', 'message', 'schedule-to-close timeout passed',
                                        'retryable', false, 'attempt', a.attempt, 'cause', u.error)
            ELSE u.error
        END,
        a.uncounted_attempts
            + CASE WHEN d.new_status = 'scheduled' AND u.outcome IN ('release', 'infra') THEN 1 ELSE 0 END,
        CASE
            WHEN d.new_status <> 'scheduled' THEN a.run_at
            WHEN u.outcome = 'release' THEN now()
            WHEN u.outcome = 'infra' THEN now() + make_interval(secs => a.retry_initial_interval_ms / 1000.0)
            ELSE now() + make_interval(secs => highway.retry_delay_ms(a.attempt - a.uncounted_attempts,
                     a.retry_initial_interval_ms, a.retry_backoff_coefficient, a.retry_max_interval_ms) / 1000.0)
        END,
        NULL::uuid,
        NULL::timestamptz,
        CASE WHEN d.new_status = 'scheduled' THEN NULL ELSE now() END
    -- The new state is decided in one place. Order matters: a requested cancellation
    -- wins over a late success (the user asked it to stop); an exhausted
    -- schedule-to-close wins over any retry.
    FROM (SELECT CASE
            WHEN a.cancel_requested_at IS NOT NULL THEN 'cancelled'
            WHEN u.outcome = 'succeeded' THEN 'succeeded'
            WHEN u.outcome = 'cancelled' THEN 'cancelled'
            WHEN a.schedule_to_close_timeout_ms IS NOT NULL
                 AND now() >= a.created_at + make_interval(secs => a.schedule_to_close_timeout_ms / 1000.0)
                THEN 'timed_out'
            WHEN u.outcome = 'release' THEN 'scheduled'
            WHEN u.outcome = 'infra' AND a.uncounted_attempts < $9 THEN 'scheduled'
            WHEN u.retryable AND u.outcome <> 'infra'
                 AND a.attempt - a.uncounted_attempts < a.max_attempts
                 AND NOT (u.error_type = ANY (a.non_retryable_error_types))
                THEN 'scheduled'
            WHEN u.outcome = 'timeout' THEN 'timed_out'
            ELSE 'failed'
        END AS new_status) d
)
FROM unnest($2::uuid[], $3::int[], $4::text[], $5::jsonb[], $6::jsonb[], $7::bool[], $8::text[])
    AS u(id, attempt, outcome, result, error, retryable, error_type)
WHERE a.id = u.id AND a.id = ANY ($2::uuid[])
  AND (a.attempt = u.attempt AND a.lease_owner = $1 AND a.status = 'running'
       AND a.lease_expires_at > now()) IS TRUE
RETURNING a.id, a.status, a.workflow_run_id
"#;

/// Records many results in one statement. Only rows still running under this worker,
/// at this attempt, with a live lease change: a late result affects nothing. Returns
/// the rows that changed with their new status.
pub async fn complete(
    db: impl PgExecutor<'_>,
    worker_id: Uuid,
    max_uncounted: i32,
    items: &[Completion],
) -> Result<Vec<(Uuid, String, Option<Uuid>)>, sqlx::Error> {
    let mut ids = Vec::with_capacity(items.len());
    let mut attempts = Vec::with_capacity(items.len());
    let mut outcomes = Vec::with_capacity(items.len());
    let mut results: Vec<Option<Value>> = Vec::with_capacity(items.len());
    let mut errors: Vec<Option<Value>> = Vec::with_capacity(items.len());
    let mut retryable = Vec::with_capacity(items.len());
    let mut types: Vec<Option<String>> = Vec::with_capacity(items.len());
    for c in items {
        ids.push(c.id);
        attempts.push(c.attempt);
        outcomes.push(c.outcome.code());
        let (res, err, retry, ty) = match &c.outcome {
            Outcome::Succeeded(v) => (Some(v.clone()), None, false, None),
            Outcome::Failed {
                error,
                error_type,
                retryable,
                ..
            } => (
                None,
                Some(error.clone()),
                *retryable,
                Some(error_type.clone()),
            ),
            Outcome::Cancelled(e) => (None, Some(e.clone()), false, Some("Cancelled".into())),
            Outcome::Release => (None, None, true, None),
            Outcome::Infrastructure(e) => {
                (None, Some(e.clone()), true, Some("Infrastructure".into()))
            }
        };
        results.push(res);
        errors.push(err);
        retryable.push(retry);
        types.push(ty);
    }
    sqlx::query_as(COMPLETE)
        .bind(worker_id)
        .bind(&ids)
        .bind(&attempts)
        .bind(&outcomes)
        .bind(&results)
        .bind(&errors)
        .bind(&retryable)
        .bind(&types)
        .bind(max_uncounted)
        .fetch_all(db)
        .await
}

const RESCUE_EXPIRED: &str = r#"
WITH expired AS (
    SELECT id FROM highway.activities
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
),
decided AS (
    SELECT a.id,
        CASE
            WHEN a.cancel_requested_at IS NOT NULL THEN 'cancelled'
            WHEN a.schedule_to_close_timeout_ms IS NOT NULL
                 AND now() >= a.created_at + make_interval(secs => a.schedule_to_close_timeout_ms / 1000.0)
                THEN 'timed_out'
            WHEN a.attempt - a.uncounted_attempts >= a.max_attempts
                 OR 'HeartbeatTimeout' = ANY (a.non_retryable_error_types)
                THEN 'timed_out'
            ELSE 'scheduled'
        END AS new_status
    FROM highway.activities a JOIN expired e ON a.id = e.id
)
UPDATE highway.activities a
SET status = d.new_status,
    error = jsonb_build_object(
        'type', 'HeartbeatTimeout',
        'message', 'lease expired at ' || a.lease_expires_at || ': worker ' || a.lease_owner || ' stopped heartbeating',
        'retryable', d.new_status = 'scheduled',
        'attempt', a.attempt),
    run_at = CASE WHEN d.new_status = 'scheduled'
        THEN now() + make_interval(secs => highway.retry_delay_ms(a.attempt - a.uncounted_attempts,
                 a.retry_initial_interval_ms, a.retry_backoff_coefficient, a.retry_max_interval_ms) / 1000.0)
        ELSE a.run_at END,
    lease_owner = NULL,
    lease_expires_at = NULL,
    finished_at = CASE WHEN d.new_status = 'scheduled' THEN NULL ELSE now() END
FROM decided d
WHERE a.id = d.id
RETURNING a.id, a.status, a.workflow_run_id
"#;

const RESCUE_WAITING: &str = r#"
WITH expired AS (
    SELECT id FROM highway.activities
    WHERE status = 'scheduled'
      AND (schedule_to_start_timeout_ms IS NOT NULL OR schedule_to_close_timeout_ms IS NOT NULL)
      AND (run_at + make_interval(secs => schedule_to_start_timeout_ms / 1000.0) < now()
           OR created_at + make_interval(secs => schedule_to_close_timeout_ms / 1000.0) < now())
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
UPDATE highway.activities a
SET status = 'timed_out',
    finished_at = now(),
    error = CASE
        WHEN a.created_at + make_interval(secs => a.schedule_to_close_timeout_ms / 1000.0) < now()
            THEN jsonb_build_object('type', 'ScheduleToCloseTimeout', 'retryable', false,
                                    'message', 'not finished within schedule-to-close', 'cause', a.error)
        ELSE jsonb_build_object('type', 'ScheduleToStartTimeout', 'retryable', false,
                                'message', 'no worker started it within schedule-to-start')
    END
FROM expired e
WHERE a.id = e.id
RETURNING a.id, a.status, a.workflow_run_id
"#;

/// One pass of the rescuer: expired leases go back to `scheduled` (with backoff) or
/// end `timed_out`/`cancelled`; waiting rows past their deadlines end `timed_out`.
/// Safe with any number of workers running it at once (SKIP LOCKED, fenced on state).
pub async fn rescue(pool: &PgPool, limit: i64) -> Result<(RescueCounts, Vec<Uuid>), sqlx::Error> {
    let mut counts = RescueCounts::default();
    let mut finished_runs = Vec::new();
    let rows: Vec<(Uuid, String, Option<Uuid>)> = sqlx::query_as(RESCUE_EXPIRED)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    for (_, status, run) in &rows {
        match status.as_str() {
            "scheduled" => counts.retried += 1,
            "cancelled" => counts.cancelled += 1,
            _ => counts.timed_out += 1,
        }
        if status != "scheduled" {
            finished_runs.extend(*run);
        }
    }
    let rows: Vec<(Uuid, String, Option<Uuid>)> = sqlx::query_as(RESCUE_WAITING)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    counts.expired_waiting += rows.len() as u64;
    finished_runs.extend(rows.into_iter().filter_map(|r| r.2));
    counts.lost_workers = sqlx::query(
        "UPDATE highway.workers SET status = 'lost' \
         WHERE status IN ('running', 'draining') AND heartbeat_at < now() - interval '5 minutes'",
    )
    .execute(pool)
    .await?
    .rows_affected();
    finished_runs.sort_unstable();
    finished_runs.dedup();
    Ok((counts, finished_runs))
}

/// Deletes activities that finished more than `older_than_ms` ago (their logs go with
/// them), at most `limit` per call. Keeps the table, and so every index, small.
pub async fn delete_finished(
    pool: &PgPool,
    older_than_ms: i64,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM highway.activities WHERE id IN (              SELECT id FROM highway.activities              WHERE status IN ('succeeded', 'failed', 'cancelled', 'timed_out')                AND finished_at < now() - make_interval(secs => $1 / 1000.0)              LIMIT $2 FOR UPDATE SKIP LOCKED)",
    )
    .bind(older_than_ms)
    .bind(limit)
    .execute(pool)
    .await?
    .rows_affected())
}

/// Ends cancelling runs whose last activity just finished.
pub async fn finish_cancelled_runs(db: &PgPool, runs: &[Uuid]) -> Result<u64, sqlx::Error> {
    if runs.is_empty() {
        return Ok(0);
    }
    Ok(sqlx::query(
        "UPDATE highway.workflow_runs r SET status = 'cancelled', finished_at = now() \
         WHERE r.id = ANY($1) AND r.status = 'cancelling' \
           AND NOT EXISTS (SELECT 1 FROM highway.activities a \
                           WHERE a.workflow_run_id = r.id AND a.status IN ('scheduled', 'running'))",
    )
    .bind(runs)
    .execute(db)
    .await?
    .rows_affected())
}

/// Registers (or re-registers) this worker.
pub async fn register_worker(
    db: impl PgExecutor<'_>,
    id: Uuid,
    hostname: &str,
    version: &str,
    queues: &[String],
    concurrency: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO highway.workers (id, hostname, version, queues, concurrency) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET hostname = EXCLUDED.hostname, version = EXCLUDED.version, \
             queues = EXCLUDED.queues, concurrency = EXCLUDED.concurrency, started_at = now(), \
             heartbeat_at = now(), stopped_at = NULL, status = 'running'",
    )
    .bind(id)
    .bind(hostname)
    .bind(version)
    .bind(queues)
    .bind(concurrency)
    .execute(db)
    .await?;
    Ok(())
}

/// The worker's own liveness row; `status` is `running` or `draining`.
pub async fn worker_heartbeat(
    db: impl PgExecutor<'_>,
    id: Uuid,
    status: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE highway.workers SET heartbeat_at = now(), status = $2 WHERE id = $1 AND status <> 'stopped'",
    )
    .bind(id)
    .bind(status)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn set_worker_daemon(
    db: impl PgExecutor<'_>,
    id: Uuid,
    daemon_id: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE highway.workers SET daemon_id = $2 WHERE id = $1")
        .bind(id)
        .bind(daemon_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Releases every lease this worker still holds (end of shutdown) without counting
/// the attempts, and marks the worker stopped. Returns the released count.
pub async fn release_and_stop(pool: &PgPool, id: Uuid) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let released = sqlx::query(
        "UPDATE highway.activities SET status = 'scheduled', run_at = now(), lease_owner = NULL, \
             lease_expires_at = NULL, uncounted_attempts = uncounted_attempts + 1 \
         WHERE lease_owner = $1 AND status = 'running'",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query("UPDATE highway.workers SET status = 'stopped', stopped_at = now(), heartbeat_at = now() WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(released)
}

/// Whether `worker_id` still holds the lease of the running attempt with at least
/// `margin_ms` left, by the database's clock (checked right before a container start).
pub async fn lease_held(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
    worker_id: Uuid,
    margin_ms: i64,
) -> Result<bool, sqlx::Error> {
    let held: Option<bool> = sqlx::query_scalar(
        "SELECT (status = 'running' AND attempt = $2 AND lease_owner = $3
                 AND lease_expires_at > now() + make_interval(secs => $4 / 1000.0)) IS TRUE
           FROM highway.activities WHERE id = $1",
    )
    .bind(id)
    .bind(attempt)
    .bind(worker_id)
    .bind(margin_ms as f64)
    .fetch_optional(db)
    .await?;
    Ok(held.unwrap_or(false))
}

/// The fate of a success reported after its attempt lost the lease.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LateSuccess {
    /// Recorded as the activity's result.
    pub accepted: bool,
    /// The row's status and attempt when the result arrived.
    pub status: String,
    pub attempt: i32,
    pub workflow_run_id: Option<Uuid>,
}

// The success of an attempt whose lease was lost (a worker frozen past it) is still the
// activity's result as long as no later attempt has started: the row is at the same
// attempt, either still `running` under this worker (the rescuer has not come by) or
// `scheduled` by the rescuer for a retry no one has claimed yet, and no cancellation was
// asked for (a cancel wins over a late success, as in `COMPLETE`). Terminal rows stay as
// they are. Either way the audit log gets the late result, with what happened to it.
const LATE_SUCCESS: &str = r#"
WITH cur AS (
    SELECT id, status, attempt, tenant_id, workflow_run_id
      FROM highway.activities WHERE id = $1 FOR UPDATE
),
acc AS (
    UPDATE highway.activities a
       SET status = 'succeeded', result = $3, error = NULL, lease_owner = NULL,
           lease_expires_at = NULL, finished_at = now()
     WHERE a.id = $1 AND a.attempt = $2 AND a.cancel_requested_at IS NULL
       AND (a.status = 'scheduled' OR (a.status = 'running' AND a.lease_owner = $4))
    RETURNING a.id
),
aud AS (
    INSERT INTO highway.audit_log
        (tenant_id, actor, action, target, activity_id, workflow_run_id, outcome, details)
    SELECT cur.tenant_id, 'worker:' || $4::text, 'activity.late_success', cur.id::text, cur.id,
           cur.workflow_run_id,
           CASE WHEN EXISTS (SELECT 1 FROM acc) THEN 'accepted' ELSE 'refused' END,
           jsonb_build_object('attempt', $2, 'status_then', cur.status,
                              'attempt_then', cur.attempt)
      FROM cur
)
SELECT EXISTS (SELECT 1 FROM acc) AS accepted, cur.status, cur.attempt, cur.workflow_run_id
  FROM cur
"#;

/// Records the success of attempt `attempt` that `worker_id` reports after losing its
/// lease: accepted when no later attempt has started (see `LATE_SUCCESS`), refused
/// otherwise; audited either way. `None` when the activity no longer exists.
pub async fn late_success(
    db: impl PgExecutor<'_>,
    id: Uuid,
    attempt: i32,
    worker_id: Uuid,
    result: &Value,
) -> Result<Option<LateSuccess>, sqlx::Error> {
    sqlx::query_as(LATE_SUCCESS)
        .bind(id)
        .bind(attempt)
        .bind(result)
        .bind(worker_id)
        .fetch_optional(db)
        .await
}
