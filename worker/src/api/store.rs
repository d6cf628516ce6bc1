//! The API's own SQL: API tokens (create, look up by hash, revoke, list), quota counts,
//! and the read-only queries behind `/v1/activities`, `/v1/containers`, `/v1/runs`,
//! `/v1/audit`, `/v1/gc/plan`, `/metrics` and the web console (`/ui`).
//!
//! Owns: `highway.api_tokens`. Reads (never writes) `docker_containers`, `workflow_runs`,
//! `workers`,
//! `audit_log`, `activities`, `docker_images` and, when the scheduler's migration is present, `schedules`
//! and `schedule_fires`. Every tenant-scoped read takes `tenant: Option<&str>` and adds
//! `($n::text IS NULL OR tenant_id = $n)`, so another tenant's row is simply not found.

use chrono::{DateTime, Utc};
use rand::RngCore;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use uuid::Uuid;

/// Prefix of every token: makes tokens recognisable to secret scanners and lets a
/// malformed one be refused without a database round trip.
pub const TOKEN_PREFIX: &str = "hw_";
const TOKEN_HEX_LEN: usize = 64;

/// Hex SHA-256 of a token: the only form stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// True when `token` has the shape of one of ours (`hw_` + 64 lowercase hex digits).
pub fn well_formed(token: &str) -> bool {
    token.strip_prefix(TOKEN_PREFIX).is_some_and(|h| {
        h.len() == TOKEN_HEX_LEN && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// A fresh random token (256 bits from the OS generator).
pub fn generate_token() -> String {
    let mut bytes = [0u8; TOKEN_HEX_LEN / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// A token as listed (never the token itself, nor its hash).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct TokenInfo {
    pub id: Uuid,
    pub name: String,
    /// `None` for an admin token.
    pub tenant_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// Stores a new token's hash and returns its id and the token (to print once).
pub async fn create_token(
    db: impl PgExecutor<'_>,
    name: &str,
    tenant: Option<&str>,
) -> sqlx::Result<(Uuid, String)> {
    let id = Uuid::now_v7();
    let token = generate_token();
    sqlx::query(
        "INSERT INTO highway.api_tokens (id, name, tenant_id, token_sha256) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(name)
    .bind(tenant)
    .bind(token_hash(&token))
    .execute(db)
    .await?;
    Ok((id, token))
}

/// Revokes a token; false when no live token has that id.
pub async fn revoke_token(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let r = sqlx::query(
        "UPDATE highway.api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .execute(db)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn list_tokens(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<TokenInfo>> {
    sqlx::query_as(
        "SELECT id, name, tenant_id, created_at, revoked_at, last_used_at
           FROM highway.api_tokens ORDER BY created_at, id",
    )
    .fetch_all(db)
    .await
}

/// The live token with this hash: `(id, tenant_id)`. Marks it used (at most once a
/// minute, so a busy client does not turn every request into a write).
pub async fn lookup_token(
    pool: &PgPool,
    hash: &str,
) -> sqlx::Result<Option<(Uuid, Option<String>)>> {
    let row: Option<(Uuid, Option<String>, bool)> = sqlx::query_as(
        "SELECT id, tenant_id,
                (last_used_at IS NULL OR last_used_at < now() - interval '1 minute') AS stale
           FROM highway.api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?;
    let Some((id, tenant, stale)) = row else {
        return Ok(None);
    };
    if stale {
        sqlx::query("UPDATE highway.api_tokens SET last_used_at = now() WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await?;
    }
    Ok(Some((id, tenant)))
}

/// Whether a token with this hash was ever created (live or revoked): `highway up`
/// replaces a local admin token only when the database has never heard of it.
pub async fn token_known(db: impl PgExecutor<'_>, hash: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM highway.api_tokens WHERE token_sha256 = $1)")
        .bind(hash)
        .fetch_one(db)
        .await
}

// ---------------------------------------------------------------------------------
// Quotas.

/// Activities of the tenant waiting to run.
pub async fn queued_count(db: impl PgExecutor<'_>, tenant: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM highway.activities WHERE tenant_id = $1 AND status = 'scheduled'",
    )
    .bind(tenant)
    .fetch_one(db)
    .await
}

/// Containers of the tenant that exist or are about to (created or running), plus its
/// docker activities already running but not yet at create.
pub async fn live_container_count(db: impl PgExecutor<'_>, tenant: &str) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM highway.docker_containers
          WHERE tenant_id = $1 AND status IN ('created', 'running')",
    )
    .bind(tenant)
    .fetch_one(db)
    .await
}

/// Schedules the tenant owns (0 when the scheduler's table does not exist).
pub async fn schedule_count(pool: &PgPool, tenant: &str) -> sqlx::Result<i64> {
    if !table_exists(pool, "highway.schedules").await? {
        return Ok(0);
    }
    sqlx::query_scalar("SELECT count(*) FROM highway.schedules WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(pool)
        .await
}

/// True when an activity with this (tenant, idempotency key) exists: a retried enqueue
/// must reach the idempotency check, not a quota it already counted in.
pub async fn idempotency_key_exists(
    db: impl PgExecutor<'_>,
    tenant: &str,
    key: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM highway.activities WHERE tenant_id = $1 AND idempotency_key = $2)",
    )
    .bind(tenant)
    .bind(key)
    .fetch_one(db)
    .await
}

pub async fn table_exists(db: impl PgExecutor<'_>, name: &str) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(name)
        .fetch_one(db)
        .await
}

/// True when the activity exists and (with `tenant`) belongs to it.
pub async fn activity_visible(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tenant: Option<&str>,
) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM highway.activities
                         WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2))",
    )
    .bind(id)
    .bind(tenant)
    .fetch_one(db)
    .await
}

// ---------------------------------------------------------------------------------
// Activity logs.

/// One stored log line, as streamed.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct LogRow {
    /// Resume point: pass it back as `Last-Event-ID` or `?after=`.
    pub seq: i64,
    pub attempt: i32,
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub line: String,
    pub at: DateTime<Utc>,
}

/// Lines after `after`, oldest first, at most `limit`.
pub async fn logs_after(
    db: impl PgExecutor<'_>,
    activity: Uuid,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<LogRow>> {
    sqlx::query_as(
        "SELECT seq, attempt, stream, line, at FROM highway.activity_logs
          WHERE activity_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(activity)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The activity's status (for the log stream to know when to stop following).
pub async fn activity_status(db: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT status FROM highway.activities WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await
}

// ---------------------------------------------------------------------------------
// Containers.

/// A tracked container as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Container {
    pub container_id: String,
    pub short_id: String,
    pub name: String,
    pub tenant_id: String,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    pub attempt: Option<i32>,
    pub image: String,
    /// `created`, `running`, `exited`, `removed` or `missing`.
    pub status: String,
    pub exit_code: Option<i32>,
    pub oom_killed: Option<bool>,
    pub detached: bool,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_by: Option<String>,
    pub removed_reason: Option<String>,
    pub worker_id: Option<Uuid>,
    /// Only in the `orphans` view: why the container counts as an orphan.
    pub orphan_reason: Option<String>,
}

/// Filters of `GET /v1/containers`.
#[derive(Debug, Clone, Default)]
pub struct ContainerFilter {
    pub tenant: Option<String>,
    pub status: Option<String>,
    pub run: Option<Uuid>,
    pub activity: Option<Uuid>,
    /// Prefix match on the image reference.
    pub image: Option<String>,
    /// Created at least this long ago.
    pub older_than_ms: Option<i64>,
    pub orphans: bool,
    pub limit: i64,
}

const CONTAINER_COLUMNS: &str = "c.container_id, c.short_id, c.name, c.tenant_id, c.activity_id, \
    c.workflow_run_id, c.attempt, c.image, c.status, c.exit_code, c.oom_killed, c.detached, \
    c.created_at, c.started_at, c.finished_at, c.removed_at, c.removed_by, c.removed_reason, \
    c.worker_id";

pub async fn list_containers(
    db: impl PgExecutor<'_>,
    f: &ContainerFilter,
) -> sqlx::Result<Vec<Container>> {
    // The orphans view decides orphan-ness in one place (the migration), shared with
    // operators' SQL; the plain listing reads the table.
    let (from, reason) = if f.orphans {
        (
            "highway.containers_orphaned o JOIN highway.docker_containers c USING (container_id)",
            "o.orphan_reason",
        )
    } else {
        ("highway.docker_containers c", "NULL::text")
    };
    let sql = format!(
        "SELECT {CONTAINER_COLUMNS}, {reason} AS orphan_reason FROM {from}
          WHERE ($1::text IS NULL OR c.tenant_id = $1) AND ($2::text IS NULL OR c.status = $2)
            AND ($3::uuid IS NULL OR c.workflow_run_id = $3)
            AND ($4::uuid IS NULL OR c.activity_id = $4)
            AND ($5::text IS NULL OR starts_with(c.image, $5))
            AND ($6::bigint IS NULL OR c.created_at <= now() - make_interval(secs => $6 / 1000.0))
            AND c.container_id NOT LIKE 'pending:%'
          ORDER BY c.created_at DESC, c.container_id LIMIT $7"
    );
    sqlx::query_as(&sql)
        .bind(&f.tenant)
        .bind(&f.status)
        .bind(f.run)
        .bind(f.activity)
        .bind(&f.image)
        .bind(f.older_than_ms)
        .bind(f.limit)
        .fetch_all(db)
        .await
}

/// One container by full id, short id (12+ hex characters) or name.
pub async fn get_container(
    db: impl PgExecutor<'_>,
    key: &str,
    tenant: Option<&str>,
) -> sqlx::Result<Option<Container>> {
    let sql = format!(
        "SELECT {CONTAINER_COLUMNS}, NULL::text AS orphan_reason FROM highway.docker_containers c
          WHERE (c.container_id = $1 OR c.name = $1 OR (length($1) >= 12 AND starts_with(c.container_id, $1)))
            AND ($2::text IS NULL OR c.tenant_id = $2)
          ORDER BY c.created_at DESC LIMIT 1"
    );
    sqlx::query_as(&sql)
        .bind(key)
        .bind(tenant)
        .fetch_optional(db)
        .await
}

// ---------------------------------------------------------------------------------
// Workflow runs.

/// A workflow run as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct Run {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub status: String,
    pub input: Value,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Activities of the run by status.
    pub activities: Value,
}

pub async fn get_run(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tenant: Option<&str>,
) -> sqlx::Result<Option<Run>> {
    sqlx::query_as(
        "SELECT r.id, r.tenant_id, r.name, r.status, r.input, r.result, r.error, r.created_at,
                r.finished_at, r.cancel_requested_at,
                COALESCE((SELECT jsonb_object_agg(s.status, s.n) FROM
                            (SELECT status, count(*) AS n FROM highway.activities
                              WHERE workflow_run_id = r.id GROUP BY status) s), '{}'::jsonb) AS activities
           FROM highway.workflow_runs r
          WHERE r.id = $1 AND ($2::text IS NULL OR r.tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await
}

// ---------------------------------------------------------------------------------
// Audit log.

#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    pub outcome: String,
    pub details: Value,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub tenant: Option<String>,
    /// An action; a trailing `*` matches a prefix (`image.*`).
    pub action: Option<String>,
    /// Rows whose target (container or image id) starts with this.
    pub target_prefix: Option<String>,
    pub activity: Option<Uuid>,
    pub run: Option<Uuid>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Rows with an id below this (paging backwards).
    pub before_id: Option<i64>,
    pub limit: i64,
}

fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// The audit rows matching `f`, newest first. The one audit query: `GET /v1/audit`
/// (and so `highway audit ls`) uses it.
pub async fn list_audit(db: impl PgExecutor<'_>, f: &AuditFilter) -> sqlx::Result<Vec<AuditRow>> {
    let action_like = f.action.as_deref().map(|a| match a.strip_suffix('*') {
        Some(prefix) => format!("{}%", like_escape(prefix)),
        None => like_escape(a),
    });
    let target_like = f
        .target_prefix
        .as_deref()
        .map(|t| format!("{}%", like_escape(t)));
    sqlx::query_as(
        "SELECT id, at, tenant_id, actor, action, target, activity_id, workflow_run_id, outcome, details
           FROM highway.audit_log
          WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::text IS NULL OR action LIKE $2)
            AND ($3::text IS NULL OR target LIKE $3)
            AND ($4::uuid IS NULL OR activity_id = $4) AND ($5::uuid IS NULL OR workflow_run_id = $5)
            AND ($6::timestamptz IS NULL OR at >= $6) AND ($7::timestamptz IS NULL OR at < $7)
            AND ($8::bigint IS NULL OR id < $8)
          ORDER BY id DESC LIMIT $9",
    )
    .bind(&f.tenant)
    .bind(action_like)
    .bind(target_like)
    .bind(f.activity)
    .bind(f.run)
    .bind(f.since)
    .bind(f.until)
    .bind(f.before_id)
    .bind(f.limit.clamp(1, 100_000))
    .fetch_all(db)
    .await
}

/// Appends an audit row for an API action (the actor is `token:<id>`, never the token).
pub async fn audit(
    db: impl PgExecutor<'_>,
    tenant: Option<&str>,
    actor: &str,
    action: &str,
    target: Option<&str>,
    activity_id: Option<Uuid>,
    workflow_run_id: Option<Uuid>,
    outcome: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO highway.audit_log (tenant_id, actor, action, target, activity_id, workflow_run_id, outcome)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(activity_id)
    .bind(workflow_run_id)
    .bind(outcome)
    .execute(db)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_well_formed_and_hashes_are_hex() {
        let t = generate_token();
        assert!(well_formed(&t), "{t}");
        assert_ne!(t, generate_token());
        assert!(!well_formed("hw_xyz"));
        assert!(!well_formed(&t.to_uppercase()));
        assert!(!well_formed(&t[3..]));
        let h = token_hash(&t);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&t[3..]));
    }
}

// ---------------------------------------------------------------------------------
// Run listing, workers, queues.

/// A workflow run as `GET /v1/runs` lists it (no input or result: those are in
/// `GET /v1/runs/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct RunSummary {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    /// running | succeeded | failed | cancelling | cancelled
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Activities of the run by status.
    pub activities: Value,
}

/// Filters of `GET /v1/runs`.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub tenant: Option<String>,
    pub status: Option<String>,
    /// Prefix of the run's name.
    pub name: Option<String>,
    /// Runs listed after this one (the previous page's `next`).
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Runs newest first, keyset-paged by `(created_at, id)`.
pub async fn list_runs(db: impl PgExecutor<'_>, f: &RunFilter) -> sqlx::Result<Vec<RunSummary>> {
    sqlx::query_as(
        "SELECT r.id, r.tenant_id, r.name, r.status, r.created_at, r.finished_at,
                COALESCE((SELECT jsonb_object_agg(s.status, s.n) FROM
                            (SELECT status, count(*) AS n FROM highway.activities
                              WHERE workflow_run_id = r.id GROUP BY status) s), '{}'::jsonb) AS activities
           FROM highway.workflow_runs r
          WHERE ($1::text IS NULL OR r.tenant_id = $1) AND ($2::text IS NULL OR r.status = $2)
            AND ($3::text IS NULL OR starts_with(r.name, $3))
            AND ($4::uuid IS NULL OR (r.created_at, r.id) <
                 (SELECT b.created_at, b.id FROM highway.workflow_runs b WHERE b.id = $4))
          ORDER BY r.created_at DESC, r.id DESC LIMIT $5",
    )
    .bind(&f.tenant)
    .bind(&f.status)
    .bind(&f.name)
    .bind(f.before)
    .bind(f.limit)
    .fetch_all(db)
    .await
}

/// A worker process as `GET /v1/workers` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct WorkerRow {
    pub id: Uuid,
    pub hostname: String,
    /// The Docker daemon it runs containers on (`None` until it first reached one).
    pub daemon_id: Option<String>,
    pub version: String,
    pub queues: Vec<String>,
    /// Activities it is running now (leases it holds).
    pub slots_busy: i64,
    /// How many activities it runs at once.
    pub slots_total: i32,
    /// running | draining | stopped | lost
    pub state: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Seconds since its last heartbeat, by the database's clock.
    pub heartbeat_age_secs: f64,
}

/// Workers, live ones first then by last heartbeat; `include_stopped` adds the stopped
/// and lost ones.
pub async fn list_workers(
    db: impl PgExecutor<'_>,
    include_stopped: bool,
    limit: i64,
) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as(
        "SELECT w.id, w.hostname, w.daemon_id, w.version, w.queues,
                (SELECT count(*) FROM highway.activities a
                  WHERE a.lease_owner = w.id AND a.status = 'running') AS slots_busy,
                w.concurrency AS slots_total, w.status AS state, w.started_at, w.heartbeat_at,
                extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age_secs
           FROM highway.workers w
          WHERE $1 OR w.status IN ('running', 'draining')
          ORDER BY (w.status IN ('running', 'draining')) DESC, w.heartbeat_at DESC, w.id
          LIMIT $2",
    )
    .bind(include_stopped)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// One queue as `GET /v1/queues` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow, JsonSchema)]
pub struct QueueRow {
    pub queue: String,
    /// Scheduled activities whose start time has come.
    pub depth: i64,
    /// Scheduled activities whose start time is still ahead (delays, retry backoff).
    pub delayed: i64,
    /// Seconds the oldest due activity has waited; 0 when none waits.
    pub oldest_waiting_secs: f64,
    pub running: i64,
}

/// Per queue with scheduled or running activities (of `tenant`, when given).
pub async fn list_queues(
    db: impl PgExecutor<'_>,
    tenant: Option<&str>,
) -> sqlx::Result<Vec<QueueRow>> {
    sqlx::query_as(
        "SELECT queue,
                count(*) FILTER (WHERE status = 'scheduled' AND run_at <= now()) AS depth,
                count(*) FILTER (WHERE status = 'scheduled' AND run_at > now()) AS delayed,
                COALESCE(extract(epoch FROM now() - min(run_at)
                           FILTER (WHERE status = 'scheduled' AND run_at <= now())), 0)::float8
                    AS oldest_waiting_secs,
                count(*) FILTER (WHERE status = 'running') AS running
           FROM highway.activities
          WHERE status IN ('scheduled', 'running') AND ($1::text IS NULL OR tenant_id = $1)
          GROUP BY queue ORDER BY queue",
    )
    .bind(tenant)
    .fetch_all(db)
    .await
}

// ---------------------------------------------------------------------------------
// The web console's reads: activity pages with a time range, a run's definition.

/// An activity as a list shows it (no params, result or error).
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ActivitySummary {
    pub id: Uuid,
    pub tenant_id: String,
    pub kind: String,
    pub queue: String,
    pub status: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub workflow_run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Filters of an activity page; `before` is the last id of the previous page.
#[derive(Debug, Clone, Default)]
pub struct ActivityPageFilter {
    pub tenant: Option<String>,
    pub status: Option<String>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Created at or after.
    pub since: Option<DateTime<Utc>>,
    /// Created before.
    pub until: Option<DateTime<Utc>>,
    pub before: Option<Uuid>,
    pub limit: i64,
}

/// Activities newest first, keyset-paged by `(created_at, id)`.
pub async fn list_activities_page(
    db: impl PgExecutor<'_>,
    f: &ActivityPageFilter,
) -> sqlx::Result<Vec<ActivitySummary>> {
    sqlx::query_as(
        "SELECT a.id, a.tenant_id, a.kind, a.queue, a.status, a.attempt, a.max_attempts,
                a.workflow_run_id, a.created_at, a.started_at, a.finished_at
           FROM highway.activities a
          WHERE ($1::text IS NULL OR a.tenant_id = $1) AND ($2::text IS NULL OR a.status = $2)
            AND ($3::text IS NULL OR a.kind = $3) AND ($4::text IS NULL OR a.queue = $4)
            AND ($5::timestamptz IS NULL OR a.created_at >= $5)
            AND ($6::timestamptz IS NULL OR a.created_at < $6)
            AND ($7::uuid IS NULL OR (a.created_at, a.id) <
                 (SELECT b.created_at, b.id FROM highway.activities b WHERE b.id = $7))
          ORDER BY a.created_at DESC, a.id DESC LIMIT $8",
    )
    .bind(&f.tenant)
    .bind(&f.status)
    .bind(&f.kind)
    .bind(&f.queue)
    .bind(f.since)
    .bind(f.until)
    .bind(f.before)
    .bind(f.limit.clamp(1, 1000))
    .fetch_all(db)
    .await
}

/// The definition a run was started from (`None` for a bare run, or when the run is
/// missing or another tenant's).
pub async fn run_definition(
    db: impl PgExecutor<'_>,
    id: Uuid,
    tenant: Option<&str>,
) -> sqlx::Result<Option<Value>> {
    let v: Option<Option<Value>> = sqlx::query_scalar(
        "SELECT definition FROM highway.workflow_runs
          WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
    )
    .bind(id)
    .bind(tenant)
    .fetch_optional(db)
    .await?;
    Ok(v.flatten())
}
