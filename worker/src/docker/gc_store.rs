//! The SQL of the garbage collector and of the stop steps of a container: what the GC
//! reads to judge the containers it listed (activity, attempt, lease, run, tracking row,
//! all judged by Postgres `now()`), and every state change it makes to
//! `highway.docker_containers` (removal with its reason, `missing`, resolving
//! `pending:<name>` placeholders) plus the stop-step timestamps (requested, signalled,
//! killed) that any worker may write.
//!
//! Owns: these statements; each state change names the state it expects (fencing), so
//! two collectors on one daemon, or a collector racing the run handler, never move a row
//! backwards (a `removed` row stays removed).
//! Must not: call Docker, or write `highway.activities` (it only reads it: the GC must
//! see the lease as the queue sees it; the queue's SQL stays in `queue/store.rs`).

use crate::docker::tracking::ExitEvidence;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Postgres' clock: leases, retentions and TTLs are judged by it (trap 28).
pub async fn db_now(db: impl PgExecutor<'_>) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar("SELECT now()").fetch_one(db).await
}

/// What Postgres knows about one listed container: its activity (if it exists), the
/// attempt and lease as of `now()`, its run, and its tracking row (if any).
#[derive(Debug, Clone, Default, PartialEq, sqlx::FromRow)]
pub struct Facts {
    pub container_id: String,
    /// `None`: no activity with the container's `highway.activity_id` exists.
    pub activity_status: Option<String>,
    pub activity_attempt: Option<i32>,
    /// `lease_expires_at > now()`; `None` without a lease.
    pub lease_live: Option<bool>,
    /// Seconds since the activity's cancellation was requested (`None`: not requested).
    pub cancel_age_s: Option<f64>,
    /// The status of the container's workflow run (`None`: no run, or missing).
    pub run_status: Option<String>,
    /// The run id the container names exists in `workflow_runs`.
    pub run_exists: bool,
    /// A tracking row exists under the container's id.
    pub tracked: bool,
    pub row_status: Option<String>,
    pub detached: Option<bool>,
    /// `detach_expires_at <= now()`.
    pub detach_expired: Option<bool>,
    /// `gc_protected_until > now()` (kept for inspection: never touched).
    pub protected: Option<bool>,
    /// `gc_protected_until <= now()` (the retention of a kept container passed).
    pub protection_passed: Option<bool>,
    /// A stop of the container was recorded (signalled or killed) and may have reached
    /// the daemon: if it exited, it did not exit by itself.
    pub stop_sent: Option<bool>,
}

/// Reads the facts of every listed container in one statement. `ids`, `activities` and
/// `runs` are parallel arrays (a `None` activity or run: the label was missing).
pub async fn facts(
    db: impl PgExecutor<'_>,
    ids: &[String],
    activities: &[Option<Uuid>],
    runs: &[Option<Uuid>],
) -> sqlx::Result<Vec<Facts>> {
    sqlx::query_as(
        "SELECT u.container_id,
                a.status AS activity_status,
                a.attempt AS activity_attempt,
                a.lease_expires_at > now() AS lease_live,
                EXTRACT(EPOCH FROM now() - a.cancel_requested_at)::float8 AS cancel_age_s,
                r.status AS run_status,
                r.id IS NOT NULL AS run_exists,
                d.container_id IS NOT NULL AS tracked,
                d.status AS row_status,
                d.detached,
                d.detach_expires_at <= now() AS detach_expired,
                d.gc_protected_until > now() AS protected,
                d.gc_protected_until <= now() AS protection_passed,
                ((d.stop_signalled_at IS NOT NULL OR d.killed_at IS NOT NULL)
                 AND d.stop_undelivered_at IS NULL) AS stop_sent
           FROM unnest($1::text[], $2::uuid[], $3::uuid[]) AS u(container_id, activity_id, run_id)
           LEFT JOIN highway.activities a ON a.id = u.activity_id
           LEFT JOIN highway.docker_containers d ON d.container_id = u.container_id
           LEFT JOIN highway.workflow_runs r
                  ON r.id = COALESCE(u.run_id, a.workflow_run_id, d.workflow_run_id)",
    )
    .bind(ids)
    .bind(activities)
    .bind(runs)
    .fetch_all(db)
    .await
}

/// A placeholder row (`pending:<name>`): create may or may not have happened.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PendingRow {
    pub container_id: String,
    pub name: String,
    pub activity_id: Option<Uuid>,
    pub attempt: Option<i32>,
    /// The attempt that wrote it still runs under a live lease (it may still create).
    pub attempt_live: bool,
    /// Written before the creation grace began: old enough to be closed when its
    /// container is not on the daemon.
    pub past_grace: bool,
}

/// Placeholder rows of this daemon and deployment. Any of them is resolved when its
/// container is found by name; only those written before `before` (the creation grace:
/// an owner may still be between insert and create) may be closed when it is not.
pub async fn pending_rows(
    db: impl PgExecutor<'_>,
    daemon_id: &str,
    deployment: &str,
    before: DateTime<Utc>,
) -> sqlx::Result<Vec<PendingRow>> {
    sqlx::query_as(
        "SELECT d.container_id, d.name, d.activity_id, d.attempt,
                COALESCE(a.status = 'running' AND a.attempt = d.attempt
                         AND a.lease_expires_at > now(), false) AS attempt_live,
                d.created_at < $3 AS past_grace
           FROM highway.docker_containers d
           LEFT JOIN highway.activities a ON a.id = d.activity_id
          WHERE d.container_id LIKE 'pending:%' AND d.status = 'created'
            AND d.daemon_id = $1 AND d.labels->>'highway.deployment' = $2",
    )
    .bind(daemon_id)
    .bind(deployment)
    .bind(before)
    .fetch_all(db)
    .await
}

/// The container of a placeholder row was found by name: the row takes its real id, so
/// its removal is recorded on it. 0 rows when the owner recorded it meanwhile (then the
/// placeholder is superseded; see [`close_pending_row`]).
pub async fn adopt_pending(
    db: impl PgExecutor<'_>,
    pending_id: &str,
    container_id: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET container_id = $2, short_id = left($2, 12), updated_at = now()
          WHERE container_id = $1 AND status = 'created'
            AND NOT EXISTS (SELECT 1 FROM highway.docker_containers WHERE container_id = $2)",
    )
    .bind(pending_id)
    .bind(container_id)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Closes a placeholder row as `missing`: its container never came to be (or is
/// tracked under its real id already).
pub async fn close_pending_row(
    db: impl PgExecutor<'_>,
    pending_id: &str,
    removed_by: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET status = 'missing', removed_at = now(), removed_by = $2, removed_reason = $3,
                updated_at = now()
          WHERE container_id = $1 AND status = 'created'",
    )
    .bind(pending_id)
    .bind(removed_by)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// A container the GC removed, as recorded on its tracking row. The row is created from
/// the container's labels when none exists (a container created by a worker that
/// crashed before recording it), so every removal has a row.
#[derive(Debug, Clone)]
pub struct Removal<'a> {
    pub container_id: &'a str,
    pub name: &'a str,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    pub tenant_id: &'a str,
    pub image: &'a str,
    pub labels: Value,
    pub daemon_id: &'a str,
    pub attempt: Option<i32>,
    pub removed_by: &'a str,
    pub reason: &'a str,
    /// The daemon's evidence of the container's end, read by inspect before removal.
    pub end: ExitEvidence,
}

/// Any state but `removed` → `removed` (inserting the row if it did not exist), with
/// the daemon's exit code and `FinishedAt` read before the removal; never the removal
/// time for the end. Returns 0 when another remover recorded it first.
pub async fn record_removal(db: impl PgExecutor<'_>, r: &Removal<'_>) -> sqlx::Result<u64> {
    let short: String = r.container_id.chars().take(12).collect();
    let res = sqlx::query(
        "INSERT INTO highway.docker_containers
             (container_id, short_id, activity_id, workflow_run_id, tenant_id, image, status,
              labels, name, daemon_id, attempt, exit_code, oom_killed, finished_at,
              removed_at, removed_by, removed_reason)
         VALUES ($1, $2, $3, $4, $5, $6, 'removed', $7, $8, $9, $10, $13, $14, $15, now(),
                 $11, $12)
         ON CONFLICT (container_id) DO UPDATE
            SET status = 'removed', removed_at = now(), removed_by = EXCLUDED.removed_by,
                removed_reason = EXCLUDED.removed_reason,
                exit_code = COALESCE($13, highway.docker_containers.exit_code),
                oom_killed = COALESCE($14, highway.docker_containers.oom_killed),
                finished_at = COALESCE($15, highway.docker_containers.finished_at),
                daemon_id = COALESCE(highway.docker_containers.daemon_id, EXCLUDED.daemon_id),
                updated_at = now()
          WHERE highway.docker_containers.status <> 'removed'",
    )
    .bind(r.container_id)
    .bind(short)
    .bind(r.activity_id)
    .bind(r.workflow_run_id)
    .bind(r.tenant_id)
    .bind(r.image)
    .bind(&r.labels)
    .bind(r.name)
    .bind(r.daemon_id)
    .bind(r.attempt)
    .bind(r.removed_by)
    .bind(r.reason)
    .bind(
        r.end
            .exit_code
            .map(|c| i32::try_from(c).unwrap_or(i32::MIN)),
    )
    .bind(r.end.oom_killed)
    .bind(r.end.finished_at)
    .execute(db)
    .await?;
    Ok(res.rows_affected())
}

/// A row marked `missing` by [`mark_absent_missing`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MissingRow {
    pub container_id: String,
    pub tenant_id: String,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
}

/// Open rows of this daemon and deployment whose container was not in the listing
/// (`present`): their container vanished behind our back. Only rows created before
/// `before` (the creation grace) and last written before `listed_at` (the Postgres time
/// read before the listing): a row recorded after the listing started may name a
/// container created after it, which the listing could not show.
pub async fn mark_absent_missing(
    db: impl PgExecutor<'_>,
    daemon_id: &str,
    deployment: &str,
    present: &[String],
    before: DateTime<Utc>,
    listed_at: DateTime<Utc>,
    removed_by: &str,
    limit: i64,
) -> sqlx::Result<Vec<MissingRow>> {
    sqlx::query_as(
        "WITH gone AS (
             SELECT container_id FROM highway.docker_containers
              WHERE daemon_id = $1 AND status NOT IN ('removed', 'missing')
                AND container_id NOT LIKE 'pending:%'
                AND labels->>'highway.deployment' = $2
                AND NOT (container_id = ANY ($3::text[]))
                AND created_at < $4 AND updated_at < $7
              LIMIT $6
                FOR UPDATE SKIP LOCKED)
         UPDATE highway.docker_containers d
            SET status = 'missing', removed_at = COALESCE(d.removed_at, now()),
                removed_by = $5, removed_reason = 'not_on_daemon', updated_at = now()
           FROM gone
          WHERE d.container_id = gone.container_id AND d.status NOT IN ('removed', 'missing')
         RETURNING d.container_id, d.tenant_id, d.activity_id, d.workflow_run_id",
    )
    .bind(daemon_id)
    .bind(deployment)
    .bind(present)
    .bind(before)
    .bind(removed_by)
    .bind(limit)
    .bind(listed_at)
    .fetch_all(db)
    .await
}

/// Fills `daemon_id` where it is not recorded yet: on the collector's own worker row and
/// on tracking rows of the containers it listed on this daemon.
pub async fn record_daemon(
    pool: &PgPool,
    worker_id: Option<Uuid>,
    daemon_id: &str,
    container_ids: &[String],
) -> sqlx::Result<()> {
    if let Some(w) = worker_id {
        sqlx::query(
            "UPDATE highway.workers SET daemon_id = $2
              WHERE id = $1 AND daemon_id IS DISTINCT FROM $2",
        )
        .bind(w)
        .bind(daemon_id)
        .execute(pool)
        .await?;
    }
    if !container_ids.is_empty() {
        sqlx::query(
            "UPDATE highway.docker_containers SET daemon_id = $2, updated_at = now()
              WHERE container_id = ANY ($1::text[]) AND daemon_id IS NULL",
        )
        .bind(container_ids)
        .bind(daemon_id)
        .execute(pool)
        .await?;
    }
    Ok(())
}

/// Stop steps 1 and 2 at once: the stop was decided (`reason`) and SIGTERM is about to
/// be sent. Earlier timestamps are kept (a second stopper does not rewrite history).
pub async fn mark_stop_signalled(
    db: impl PgExecutor<'_>,
    container_id: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET stop_requested_at = COALESCE(stop_requested_at, now()),
                stop_signalled_at = COALESCE(stop_signalled_at, now()),
                stop_reason = COALESCE(stop_reason, $2), updated_at = now()
          WHERE container_id = $1 AND status NOT IN ('removed', 'missing')",
    )
    .bind(container_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Stop step 3: the grace ran out and the container was killed.
pub async fn mark_killed(db: impl PgExecutor<'_>, container_id: &str) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET killed_at = COALESCE(killed_at, now()), stop_undelivered_at = NULL,
                updated_at = now()
          WHERE container_id = $1 AND status NOT IN ('removed', 'missing')",
    )
    .bind(container_id)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// The stop reached the daemon (it answered): an earlier undelivered stop is moot.
pub async fn mark_stop_delivered(db: impl PgExecutor<'_>, container_id: &str) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers SET stop_undelivered_at = NULL, updated_at = now()
          WHERE container_id = $1 AND stop_undelivered_at IS NOT NULL",
    )
    .bind(container_id)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Neither the stop nor the kill reached the daemon (refused, or the circuit open): the
/// stop steps recorded for it did not happen on the daemon.
pub async fn mark_stop_undelivered(
    db: impl PgExecutor<'_>,
    container_id: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET stop_undelivered_at = COALESCE(stop_undelivered_at, now()), updated_at = now()
          WHERE container_id = $1 AND status NOT IN ('removed', 'missing')
            AND killed_at IS NULL",
    )
    .bind(container_id)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// The stop steps of one container, for operators, tests and `bench reap`.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StopSteps {
    pub container_id: String,
    pub status: String,
    pub stop_reason: Option<String>,
    pub stop_requested_at: Option<DateTime<Utc>>,
    pub stop_signalled_at: Option<DateTime<Utc>>,
    pub killed_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
    pub removed_reason: Option<String>,
}

/// The stop steps of every container of an activity, oldest first.
pub async fn stop_steps_of_activity(
    db: impl PgExecutor<'_>,
    activity_id: Uuid,
) -> sqlx::Result<Vec<StopSteps>> {
    sqlx::query_as(
        "SELECT container_id, status, stop_reason, stop_requested_at, stop_signalled_at,
                killed_at, removed_at, removed_by, removed_reason
           FROM highway.docker_containers
          WHERE activity_id = $1
          ORDER BY created_at, container_id",
    )
    .bind(activity_id)
    .fetch_all(db)
    .await
}
