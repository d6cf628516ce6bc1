//! All SQL on `highway.docker_containers` issued by the run handler, plus the audit rows
//! of the Docker operations it performs.
//!
//! Owns: the row's state changes, each fenced by the state it expects (as River guards
//! every job transition), so a late or duplicated update never moves a row backwards:
//! a container the garbage collector already marked `removed` stays removed.
//!
//! The container id (the primary key) is only known after create, but the row must
//! exist before create (a crash in between must leave a trace). So the row is first
//! written under the placeholder id `pending:<name>`, and `record_created` replaces it
//! with the real id in one statement. A placeholder row that outlives its attempt means
//! "create may or may not have happened": look the container up by `name`.
//! Must not: call Docker.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use uuid::Uuid;

/// The placeholder primary key of a row whose container is not created yet.
pub fn pending_id(name: &str) -> String {
    format!("pending:{name}")
}

/// What the handler knows about a container before and after create.
#[derive(Debug, Clone)]
pub struct ContainerRow {
    pub name: String,
    pub activity_id: Uuid,
    pub workflow_run_id: Option<Uuid>,
    pub tenant_id: String,
    pub image: String,
    pub labels: Value,
    pub worker_id: Uuid,
    pub daemon_id: String,
    pub attempt: i32,
}

/// Writes the placeholder row before create. Idempotent (a retried attempt reuses it).
pub async fn insert_pending(db: impl PgExecutor<'_>, row: &ContainerRow) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO highway.docker_containers
             (container_id, short_id, activity_id, workflow_run_id, tenant_id, image, status,
              labels, name, worker_id, daemon_id, attempt)
         VALUES ($1, '', $2, $3, $4, $5, 'created', $6, $7, $8, $9, $10)
         ON CONFLICT (container_id) DO UPDATE
            SET worker_id = EXCLUDED.worker_id, updated_at = now()
          WHERE highway.docker_containers.status = 'created'",
    )
    .bind(pending_id(&row.name))
    .bind(row.activity_id)
    .bind(row.workflow_run_id)
    .bind(&row.tenant_id)
    .bind(&row.image)
    .bind(&row.labels)
    .bind(&row.name)
    .bind(row.worker_id)
    .bind(&row.daemon_id)
    .bind(row.attempt)
    .execute(db)
    .await?;
    Ok(())
}

/// `audit`, for paths whose Docker operation already happened: a failed write is logged
/// (with the action and target) but must not undo or fail that operation.
pub async fn audit_or_warn(db: impl PgExecutor<'_>, e: &AuditEvent<'_>) {
    if let Err(err) = audit(db, e).await {
        tracing::warn!(error = %err, action = e.action, target = e.target, "audit row not written");
    }
}

/// Replaces the placeholder by the real container id (created or adopted).
pub async fn record_created(
    db: impl PgExecutor<'_>,
    row: &ContainerRow,
    container_id: &str,
) -> sqlx::Result<()> {
    let short: String = container_id.chars().take(12).collect();
    sqlx::query(
        "WITH gone AS (
             DELETE FROM highway.docker_containers WHERE container_id = $11 RETURNING created_at)
         INSERT INTO highway.docker_containers
             (container_id, short_id, activity_id, workflow_run_id, tenant_id, image, status,
              labels, name, worker_id, daemon_id, attempt, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'created', $7, $8, $9, $10, $12,
                 COALESCE((SELECT created_at FROM gone), now()))
         ON CONFLICT (container_id) DO UPDATE
            SET worker_id = EXCLUDED.worker_id, updated_at = now()",
    )
    .bind(container_id)
    .bind(short)
    .bind(row.activity_id)
    .bind(row.workflow_run_id)
    .bind(&row.tenant_id)
    .bind(&row.image)
    .bind(&row.labels)
    .bind(&row.name)
    .bind(row.worker_id)
    .bind(&row.daemon_id)
    .bind(pending_id(&row.name))
    .bind(row.attempt)
    .execute(db)
    .await?;
    Ok(())
}

/// Create failed and nothing exists under the name: close the placeholder.
pub async fn close_pending(
    db: impl PgExecutor<'_>,
    name: &str,
    removed_by: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET status = 'missing', removed_at = now(), removed_by = $2, removed_reason = $3,
                updated_at = now()
          WHERE container_id = $1 AND status = 'created'",
    )
    .bind(pending_id(name))
    .bind(removed_by)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// `created → running`.
pub async fn mark_running(db: impl PgExecutor<'_>, container_id: &str) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET status = 'running', started_at = COALESCE(started_at, now()), updated_at = now()
          WHERE container_id = $1 AND status = 'created'",
    )
    .bind(container_id)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// A detached run: the container outlives the activity until its run ends or `ttl`
/// passes (the garbage collector enforces both).
pub async fn mark_detached(
    db: impl PgExecutor<'_>,
    container_id: &str,
    ttl: Duration,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET detached = true,
                detach_expires_at = now() + make_interval(secs => $2),
                updated_at = now()
          WHERE container_id = $1 AND status IN ('created', 'running')",
    )
    .bind(container_id)
    .bind(ttl.as_secs_f64())
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// What the daemon reported about a container's end (`State.ExitCode`, `OOMKilled`,
/// `State.FinishedAt`), read by inspect before the container is removed. Empty for a
/// container that never ran or whose inspect failed: the row then keeps what it had,
/// and never takes the removal time for the end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitEvidence {
    pub exit_code: Option<i64>,
    pub oom_killed: Option<bool>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl ExitEvidence {
    fn code(&self) -> Option<i32> {
        self.exit_code.map(|c| i32::try_from(c).unwrap_or(i32::MIN))
    }
}

/// `created|running → exited` with what inspect reported. `finished_at` is the daemon's
/// `FinishedAt`; without one the column stays empty (never our clock).
pub async fn mark_exited(
    db: impl PgExecutor<'_>,
    container_id: &str,
    exit_code: Option<i64>,
    oom_killed: bool,
    finished_at: Option<DateTime<Utc>>,
) -> sqlx::Result<u64> {
    let code = exit_code.map(|c| i32::try_from(c).unwrap_or(i32::MIN));
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET status = 'exited', exit_code = COALESCE($2, exit_code), oom_killed = $3,
                finished_at = COALESCE($4, finished_at), updated_at = now()
          WHERE container_id = $1 AND status IN ('created', 'running')",
    )
    .bind(container_id)
    .bind(code)
    .bind(oom_killed)
    .bind(finished_at)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// `auto_remove: false`: the exited container is kept until `retention` passes.
pub async fn mark_kept(
    db: impl PgExecutor<'_>,
    container_id: &str,
    retention: Duration,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET gc_protected_until = now() + make_interval(secs => $2), updated_at = now()
          WHERE container_id = $1 AND status <> 'removed'",
    )
    .bind(container_id)
    .bind(retention.as_secs_f64())
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Any state except `removed` → `removed`, with who and why, and the daemon's evidence
/// of the container's end read before the removal (kept as it was where the evidence
/// is empty: the removal time is never taken for the end).
pub async fn mark_removed(
    db: impl PgExecutor<'_>,
    container_id: &str,
    removed_by: &str,
    reason: &str,
    end: &ExitEvidence,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET status = 'removed', removed_at = now(), removed_by = $2, removed_reason = $3,
                exit_code = COALESCE($4, exit_code), oom_killed = COALESCE($5, oom_killed),
                finished_at = COALESCE($6, finished_at), updated_at = now()
          WHERE container_id = $1 AND status <> 'removed'",
    )
    .bind(container_id)
    .bind(removed_by)
    .bind(reason)
    .bind(end.code())
    .bind(end.oom_killed)
    .bind(end.finished_at)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// Whether a stop of the container may have reached the daemon (recorded by any worker
/// or collector, and not known to have failed before reaching it): a container that
/// ended after our own stop did not end by itself, so its exit is not a run result a
/// retry may adopt. `false` when there is no row.
pub async fn stop_was_sent(db: impl PgExecutor<'_>, container_id: &str) -> sqlx::Result<bool> {
    let sent: Option<bool> = sqlx::query_scalar(
        "SELECT ((stop_signalled_at IS NOT NULL OR killed_at IS NOT NULL)
                 AND stop_undelivered_at IS NULL) OR status = 'removed'
           FROM highway.docker_containers WHERE container_id = $1",
    )
    .bind(container_id)
    .fetch_optional(db)
    .await?;
    Ok(sent.unwrap_or(false))
}

/// A row whose container is not on its daemon any more (removed behind our back).
pub async fn mark_missing(
    db: impl PgExecutor<'_>,
    container_id: &str,
    removed_by: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers
            SET status = 'missing', removed_at = COALESCE(removed_at, now()), removed_by = $2,
                removed_reason = $3, updated_at = now()
          WHERE container_id = $1 AND status NOT IN ('removed', 'missing')",
    )
    .bind(container_id)
    .bind(removed_by)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// A row that may still have a live container.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LiveRow {
    pub container_id: String,
    pub name: String,
    pub attempt: Option<i32>,
    pub daemon_id: Option<String>,
    pub status: String,
}

/// Rows of the activity not yet `removed`, `missing` or `lost` (every attempt).
pub async fn live_rows_of_activity(
    db: impl PgExecutor<'_>,
    activity_id: Uuid,
) -> sqlx::Result<Vec<LiveRow>> {
    sqlx::query_as(
        "SELECT container_id, name, attempt, daemon_id, status
           FROM highway.docker_containers
          WHERE activity_id = $1 AND status NOT IN ('removed', 'missing', 'lost')
          ORDER BY created_at",
    )
    .bind(activity_id)
    .fetch_all(db)
    .await
}

/// Marks an open row `lost` when its Docker host has been silent for `silent_for`: no
/// worker bound to the row's daemon has heartbeated (and the row itself has not changed)
/// for that long, by Postgres' clock. 1 when marked; 0 when the host may still be alive
/// (or the row was closed meanwhile). The container is not removed here: the host's own
/// collector removes it (`lost` → `removed`) if the host comes back.
pub async fn mark_lost_if_host_lost(
    db: impl PgExecutor<'_>,
    container_id: &str,
    silent_for: std::time::Duration,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_containers d
            SET status = 'lost', stop_reason = COALESCE(d.stop_reason, 'host_lost'),
                updated_at = now()
          WHERE d.container_id = $1 AND d.status NOT IN ('removed', 'missing', 'lost')
            AND d.daemon_id IS NOT NULL
            AND GREATEST(d.updated_at,
                         (SELECT max(w.heartbeat_at) FROM highway.workers w
                           WHERE w.daemon_id = d.daemon_id))
                < now() - make_interval(secs => $2)",
    )
    .bind(container_id)
    .bind(silent_for.as_secs_f64())
    .execute(db)
    .await?;
    Ok(r.rows_affected())
}

/// One row as operators and tests see it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TrackedContainer {
    pub container_id: String,
    pub short_id: String,
    pub name: String,
    pub status: String,
    pub attempt: Option<i32>,
    pub exit_code: Option<i32>,
    pub oom_killed: Option<bool>,
    pub detached: bool,
    pub detach_expires_at: Option<DateTime<Utc>>,
    pub gc_protected_until: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
    pub removed_reason: Option<String>,
    pub daemon_id: Option<String>,
    pub worker_id: Option<Uuid>,
}

/// Every row of an activity, oldest first.
pub async fn rows_of_activity(
    pool: &PgPool,
    activity_id: Uuid,
) -> sqlx::Result<Vec<TrackedContainer>> {
    sqlx::query_as(
        "SELECT container_id, short_id, name, status, attempt, exit_code, oom_killed, detached,
                detach_expires_at, gc_protected_until, started_at, finished_at, removed_at,
                removed_by, removed_reason, daemon_id, worker_id
           FROM highway.docker_containers
          WHERE activity_id = $1
          ORDER BY created_at, container_id",
    )
    .bind(activity_id)
    .fetch_all(pool)
    .await
}

/// One Docker operation of the run handler, appended to `highway.audit_log`.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub tenant_id: &'a str,
    /// `worker:<uuid>`.
    pub actor: &'a str,
    /// `container.create`, `container.remove`, `image.pull`, ...
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    pub outcome: &'a str,
    /// Never holds a secret value: callers pass ids, reasons and redacted messages.
    pub details: Value,
}

pub async fn audit(db: impl PgExecutor<'_>, e: &AuditEvent<'_>) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO highway.audit_log
             (tenant_id, actor, action, target, activity_id, workflow_run_id, outcome, details)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(e.tenant_id)
    .bind(e.actor)
    .bind(e.action)
    .bind(e.target)
    .bind(e.activity_id)
    .bind(e.workflow_run_id)
    .bind(e.outcome)
    .bind(&e.details)
    .execute(db)
    .await?;
    Ok(())
}
