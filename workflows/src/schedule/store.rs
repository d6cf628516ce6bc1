//! [`ScheduleClient`]: every SQL statement on `highway.schedules` and
//! `highway.schedule_fires` — operations (create, update, delete, pause, resume, trigger,
//! backfill, list, fires) and the scheduler's tick ([`ScheduleClient::tick`]). The
//! worker's scheduler service calls this; nothing else writes these tables.
//!
//! Exactly once per slot, with no leader: a tick takes its slots with a compare-and-set
//! on the schedule's cursor (`last_fired_at`, `next_run_at`, `version`), and inside the
//! same transaction records every slot in `schedule_fires` (UNIQUE (schedule_id,
//! fire_at) is the backstop) and enqueues each fire with the idempotency key
//! `schedule:<id>:<nominal time>`. A scheduler that loses the compare-and-set rolls
//! back; one that dies mid-tick leaves nothing behind and the slots are derived again.

use super::*;
use crate::client::Client;
use crate::types::CancelOutcome;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use std::collections::HashMap;
use uuid::Uuid;

/// Most slots one backfill may cover.
pub const MAX_BACKFILL_SLOTS: usize = 10_000;
const ACTIVE: &str =
    "SELECT status IN ('scheduled', 'running') FROM highway.activities WHERE id = $1";

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    #[error("schedule {0} not found")]
    NotFound(String),
    #[error("a schedule named {name:?} already exists for tenant {tenant:?}")]
    NameTaken { tenant: String, name: String },
    #[error("schedule {id} is stored with an invalid {field}: {reason}")]
    Corrupt {
        id: Uuid,
        field: String,
        reason: String,
    },
    #[error("fire record of schedule {id} at {fire_at} changed concurrently")]
    Conflict { id: Uuid, fire_at: DateTime<Utc> },
    #[error("enqueue failed: {0}")]
    Enqueue(#[source] crate::client::Error),
    /// A test failpoint fired (a simulated crash mid-tick; the transaction rolled back).
    #[error("failpoint {0:?}")]
    Failpoint(TickFailpoint),
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

impl From<crate::client::Error> for Error {
    fn from(e: crate::client::Error) -> Self {
        match e {
            crate::client::Error::Database(d) => Error::Database(d),
            crate::client::Error::InvalidField(f) => Error::InvalidField(f),
            other => Error::Enqueue(other),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where a simulated crash happens inside a tick (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TickFailpoint {
    /// After the compare-and-set took the slots, before anything was recorded.
    AfterCas,
    /// After the activities were enqueued, before the commit.
    BeforeCommit,
}

/// Knobs of one tick (from the scheduler's options).
#[derive(Debug, Clone)]
pub struct TickOptions {
    /// Slots at most this late are on time: they fire whatever the catch-up policy.
    pub on_time_grace: std::time::Duration,
    /// Slots handled per schedule per tick; a longer backlog continues next tick.
    pub max_slots: usize,
    pub failpoint: Option<TickFailpoint>,
}

impl Default for TickOptions {
    fn default() -> Self {
        Self {
            on_time_grace: std::time::Duration::from_secs(5),
            max_slots: 10_000,
            failpoint: None,
        }
    }
}

/// What one tick did to one schedule. The counts are the scheduler's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TickReport {
    pub fired: u64,
    pub skipped: u64,
    pub missed: u64,
    pub deduplicated: u64,
    pub buffered: u64,
    /// Running activities cancelled by `cancel_other`.
    pub cancelled: u64,
    /// Another scheduler (or an operator) changed the schedule first; nothing was done.
    pub contended: bool,
}

impl TickReport {
    fn count(&mut self, o: FireOutcome) {
        match o {
            FireOutcome::Fired => self.fired += 1,
            FireOutcome::Skipped => self.skipped += 1,
            FireOutcome::Missed => self.missed += 1,
            FireOutcome::Deduplicated => self.deduplicated += 1,
            FireOutcome::Buffered => self.buffered += 1,
        }
    }
}

/// What `trigger` did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TriggerOutcome {
    #[schemars(with = "schema::Timestamp")]
    pub fire_at: DateTime<Utc>,
    pub outcome: FireOutcome,
    pub activity_id: Option<Uuid>,
    pub reason: Option<String>,
}

/// What `backfill` did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BackfillReport {
    pub slots: u64,
    pub fired: u64,
    pub skipped: u64,
    /// Slots that already had a fire (or an activity with their key): left alone.
    pub deduplicated: u64,
    pub activity_ids: Vec<Uuid>,
}

/// What [`ScheduleClient::list_filtered`] selects; `None` fields do not filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleFilter {
    pub tenant: Option<String>,
    pub paused: Option<bool>,
    pub name: Option<String>,
    /// Only schedules with a larger id (the last id of the previous page).
    pub after: Option<Uuid>,
    pub limit: i64,
}

/// The schedules API. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ScheduleClient {
    pool: PgPool,
    queue: Client,
}

const COLS: &str = "id, tenant_id, name, cron, timezone, template, overlap_policy, catchup_window_ms, \
    catchup_policy, max_catchup_burst, jitter_ms, paused, paused_note, paused_at, start_at, end_at, \
    next_run_at, last_fired_at, last_activity_id, buffered_fire_at, version, created_at, updated_at";

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn from_row(r: &PgRow) -> Result<Schedule> {
    let id: Uuid = r.try_get("id")?;
    let corrupt = |field: &str, reason: String| Error::Corrupt {
        id,
        field: field.to_owned(),
        reason,
    };
    let template: Value = r.try_get("template")?;
    let activity: ActivityTemplate =
        serde_json::from_value(template).map_err(|e| corrupt("template", e.to_string()))?;
    let overlap: String = r.try_get("overlap_policy")?;
    let catchup: String = r.try_get("catchup_policy")?;
    let window: i64 = r.try_get("catchup_window_ms")?;
    let jitter: i64 = r.try_get("jitter_ms")?;
    let burst: i32 = r.try_get("max_catchup_burst")?;
    Ok(Schedule {
        id,
        tenant_id: r.try_get("tenant_id")?,
        name: r.try_get("name")?,
        cron: r.try_get("cron")?,
        timezone: r.try_get("timezone")?,
        activity,
        overlap: overlap.parse().map_err(|e| corrupt("overlap_policy", e))?,
        catchup_window: HumanDuration::from_millis(window.max(0) as u64),
        catchup_policy: catchup.parse().map_err(|e| corrupt("catchup_policy", e))?,
        max_catchup_burst: burst.max(1) as u32,
        jitter: HumanDuration::from_millis(jitter.max(0) as u64),
        paused: r.try_get("paused")?,
        note: r.try_get("paused_note")?,
        paused_at: r.try_get("paused_at")?,
        start_at: r.try_get("start_at")?,
        end_at: r.try_get("end_at")?,
        next_run_at: r.try_get("next_run_at")?,
        last_fired_at: r.try_get("last_fired_at")?,
        last_activity_id: r.try_get("last_activity_id")?,
        buffered_fire_at: r.try_get("buffered_fire_at")?,
        version: r.try_get("version")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

fn fire_from_row(r: &PgRow) -> Result<ScheduleFire> {
    let outcome: String = r.try_get("outcome")?;
    let schedule_id: Uuid = r.try_get("schedule_id")?;
    Ok(ScheduleFire {
        schedule_id,
        fire_at: r.try_get("fire_at")?,
        outcome: outcome.parse().map_err(|e| Error::Corrupt {
            id: schedule_id,
            field: "schedule_fires.outcome".into(),
            reason: e,
        })?,
        activity_id: r.try_get("activity_id")?,
        reason: r.try_get("reason")?,
        source: r.try_get("source")?,
        recorded_at: r.try_get("recorded_at")?,
    })
}

fn map_unique(e: sqlx::Error, tenant: &str, name: &str) -> Error {
    if let sqlx::Error::Database(db) = &e {
        if db.constraint() == Some("schedules_tenant_name_uniq") {
            return Error::NameTaken {
                tenant: tenant.to_owned(),
                name: name.to_owned(),
            };
        }
    }
    Error::Database(e)
}

/// The first slot after `base`, not before `start_at` and not after `end_at`.
fn next_slot(
    cron: &CronTz,
    base: DateTime<Utc>,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let base = match start_at {
        Some(s) if s > base => s - chrono::Duration::microseconds(1),
        _ => base,
    };
    cron.next_after(base)
        .filter(|t| end_at.is_none_or(|e| *t <= e))
}

/// Where a fire came from (`schedule_fires.source`).
#[derive(Debug, Clone, Copy)]
enum Source {
    Cron,
    Trigger,
    Backfill,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Self::Cron => "cron",
            Self::Trigger => "trigger",
            Self::Backfill => "backfill",
        }
    }
}

impl ScheduleClient {
    pub fn new(pool: PgPool) -> Self {
        Self {
            queue: Client::new(pool.clone()),
            pool,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The database's clock: the time every "due" is judged by.
    pub async fn db_now(&self) -> Result<DateTime<Utc>> {
        Ok(sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await?)
    }

    /// Creates a schedule; its first slot is the first after the database's now.
    pub async fn create(&self, spec: &ScheduleSpec, limits: &ScheduleLimits) -> Result<Schedule> {
        let now = self.db_now().await?;
        self.create_as_of(spec, limits, now).await
    }

    /// `create` with the first slot computed from `now` (a scheduler's clock).
    pub async fn create_as_of(
        &self,
        spec: &ScheduleSpec,
        limits: &ScheduleLimits,
        now: DateTime<Utc>,
    ) -> Result<Schedule> {
        let cron = spec.validate(limits)?;
        let next = next_slot(&cron, now, spec.start_at, spec.end_at);
        let template = serde_json::to_value(&spec.activity)
            .map_err(|e| FieldError::new("activity", e.to_string()))?;
        let sql = format!(
            "INSERT INTO highway.schedules (id, tenant_id, name, cron, timezone, template, overlap_policy, \
               catchup_window_ms, catchup_policy, max_catchup_burst, jitter_ms, paused, paused_note, paused_at, \
               start_at, end_at, next_run_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, CASE WHEN $12 THEN now() END, $14, $15, $16) \
             RETURNING {COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(Uuid::now_v7())
            .bind(&spec.tenant_id)
            .bind(&spec.name)
            .bind(spec.cron.trim())
            .bind(&spec.timezone)
            .bind(template)
            .bind(spec.overlap.as_str())
            .bind(ms(spec
                .catchup_window
                .map(|w| w.0)
                .unwrap_or(limits.default_catchup_window)))
            .bind(spec.catchup_policy.as_str())
            .bind(
                spec.max_catchup_burst
                    .unwrap_or(limits.default_max_catchup_burst) as i32,
            )
            .bind(ms(spec.jitter.map(|j| j.0).unwrap_or_default()))
            .bind(spec.paused)
            .bind(&spec.note)
            .bind(spec.start_at)
            .bind(spec.end_at)
            .bind(next)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| map_unique(e, &spec.tenant_id, &spec.name))?;
        from_row(&row)
    }

    /// One schedule; with `tenant`, another tenant's schedule is `NotFound`.
    pub async fn get(&self, id: Uuid, tenant: Option<&str>) -> Result<Schedule> {
        let sql = format!(
            "SELECT {COLS} FROM highway.schedules WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        from_row(&row)
    }

    pub async fn get_by_name(&self, tenant: &str, name: &str) -> Result<Schedule> {
        let sql =
            format!("SELECT {COLS} FROM highway.schedules WHERE tenant_id = $1 AND name = $2");
        let row = sqlx::query(&sql)
            .bind(tenant)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{tenant}/{name}")))?;
        from_row(&row)
    }

    /// Schedules by tenant and name.
    pub async fn list(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<Schedule>> {
        let sql = format!(
            "SELECT {COLS} FROM highway.schedules WHERE ($1::text IS NULL OR tenant_id = $1) \
             ORDER BY tenant_id, name LIMIT $2"
        );
        sqlx::query(&sql)
            .bind(tenant)
            .bind(limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// Schedules matching `f`, oldest first (ids are UUIDv7, so id order is creation
    /// order and `after` pages without gaps even when rows are deleted meanwhile).
    pub async fn list_filtered(&self, f: &ScheduleFilter) -> Result<Vec<Schedule>> {
        let sql = format!(
            "SELECT {COLS} FROM highway.schedules \
             WHERE ($1::text IS NULL OR tenant_id = $1) AND ($2::bool IS NULL OR paused = $2) \
               AND ($3::text IS NULL OR name = $3) AND ($4::uuid IS NULL OR id > $4) \
             ORDER BY id LIMIT $5"
        );
        sqlx::query(&sql)
            .bind(f.tenant.as_deref())
            .bind(f.paused)
            .bind(f.name.as_deref())
            .bind(f.after)
            .bind(f.limit.clamp(1, 10_000))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// The newest slot records of a schedule.
    pub async fn fires(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<ScheduleFire>> {
        self.get(id, tenant).await?;
        sqlx::query(
            "SELECT schedule_id, fire_at, outcome, activity_id, reason, source, recorded_at \
             FROM highway.schedule_fires WHERE schedule_id = $1 ORDER BY fire_at DESC LIMIT $2",
        )
        .bind(id)
        .bind(limit.clamp(1, 100_000))
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(fire_from_row)
        .collect()
    }

    async fn lock(
        &self,
        conn: &mut PgConnection,
        id: Uuid,
        tenant: Option<&str>,
    ) -> Result<Schedule> {
        let sql = format!(
            "SELECT {COLS} FROM highway.schedules WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) FOR UPDATE"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        from_row(&row)
    }

    /// Replaces a schedule's definition (name included; `paused` and `note` are left to
    /// pause/resume). Slots already handled stay handled; the next slot is computed from
    /// the later of now and the last handled slot.
    pub async fn update(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        spec: &ScheduleSpec,
        limits: &ScheduleLimits,
    ) -> Result<Schedule> {
        let now = self.db_now().await?;
        self.update_as_of(id, tenant, spec, limits, now).await
    }

    pub async fn update_as_of(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        spec: &ScheduleSpec,
        limits: &ScheduleLimits,
        now: DateTime<Utc>,
    ) -> Result<Schedule> {
        let cron = spec.validate(limits)?;
        let mut tx = self.pool.begin().await?;
        let old = self.lock(&mut tx, id, tenant).await?;
        if spec.tenant_id != old.tenant_id {
            return Err(
                FieldError::new("tenant_id", "a schedule cannot move to another tenant").into(),
            );
        }
        let base = old.last_fired_at.map_or(now, |l| l.max(now));
        let next = next_slot(&cron, base, spec.start_at, spec.end_at);
        let template = serde_json::to_value(&spec.activity)
            .map_err(|e| FieldError::new("activity", e.to_string()))?;
        let sql = format!(
            "UPDATE highway.schedules SET name = $3, cron = $4, timezone = $5, template = $6, \
               overlap_policy = $7, catchup_window_ms = $8, catchup_policy = $9, max_catchup_burst = $10, \
               jitter_ms = $11, start_at = $12, end_at = $13, next_run_at = $14, \
               version = version + 1, updated_at = now() \
             WHERE id = $1 AND version = $2 RETURNING {COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(old.version)
            .bind(&spec.name)
            .bind(spec.cron.trim())
            .bind(&spec.timezone)
            .bind(template)
            .bind(spec.overlap.as_str())
            .bind(ms(spec
                .catchup_window
                .map(|w| w.0)
                .unwrap_or(limits.default_catchup_window)))
            .bind(spec.catchup_policy.as_str())
            .bind(
                spec.max_catchup_burst
                    .unwrap_or(limits.default_max_catchup_burst) as i32,
            )
            .bind(ms(spec.jitter.map(|j| j.0).unwrap_or_default()))
            .bind(spec.start_at)
            .bind(spec.end_at)
            .bind(next)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| map_unique(e, &spec.tenant_id, &spec.name))?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let s = from_row(&row)?;
        tx.commit().await?;
        Ok(s)
    }

    /// Deletes a schedule and its slot records (activities it enqueued stay). False when
    /// there was none.
    pub async fn delete(&self, id: Uuid, tenant: Option<&str>) -> Result<bool> {
        let n = sqlx::query(
            "DELETE FROM highway.schedules WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
        )
        .bind(id)
        .bind(tenant)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// Pauses: no slot is taken while paused (slots of the pause are not slots). Returns
    /// the schedule and whether it changed (false: it was already paused).
    pub async fn pause(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        note: Option<&str>,
    ) -> Result<(Schedule, bool)> {
        if let Some(n) = note {
            if n.len() > 1000 {
                return Err(FieldError::new("note", "must be at most 1000 characters").into());
            }
        }
        let sql = format!(
            "UPDATE highway.schedules SET paused = true, paused_note = $3, paused_at = now(), \
               version = version + 1, updated_at = now() \
             WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2) AND NOT paused RETURNING {COLS}"
        );
        match sqlx::query(&sql)
            .bind(id)
            .bind(tenant)
            .bind(note)
            .fetch_optional(&self.pool)
            .await?
        {
            Some(row) => Ok((from_row(&row)?, true)),
            None => Ok((self.get(id, tenant).await?, false)),
        }
    }

    /// Resumes from the next slot after now (the slots of the pause are not taken).
    pub async fn resume(&self, id: Uuid, tenant: Option<&str>) -> Result<(Schedule, bool)> {
        let now = self.db_now().await?;
        self.resume_as_of(id, tenant, now).await
    }

    pub async fn resume_as_of(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Schedule, bool)> {
        let mut tx = self.pool.begin().await?;
        let old = self.lock(&mut tx, id, tenant).await?;
        if !old.paused {
            return Ok((old, false));
        }
        let cron = CronTz::compile(&old.cron, &old.timezone).map_err(|e| Error::Corrupt {
            id,
            field: e.field,
            reason: e.reason,
        })?;
        let base = old.last_fired_at.map_or(now, |l| l.max(now));
        let next = next_slot(&cron, base, old.start_at, old.end_at);
        let sql = format!(
            "UPDATE highway.schedules SET paused = false, paused_note = NULL, paused_at = NULL, \
               next_run_at = $3, version = version + 1, updated_at = now() \
             WHERE id = $1 AND version = $2 AND paused RETURNING {COLS}"
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(old.version)
            .bind(next)
            .fetch_one(&mut *tx)
            .await?;
        let s = from_row(&row)?;
        tx.commit().await?;
        Ok((s, true))
    }

    /// The next `n` fire times after now (or after the last handled slot, if later).
    pub async fn preview(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        n: usize,
    ) -> Result<Vec<FirePreview>> {
        let s = self.get(id, tenant).await?;
        let now = self.db_now().await?;
        let cron = CronTz::compile(&s.cron, &s.timezone).map_err(|e| Error::Corrupt {
            id,
            field: e.field,
            reason: e.reason,
        })?;
        let base = s.last_fired_at.map_or(now, |l| l.max(now));
        Ok(cron
            .preview(base, n.min(1000))
            .into_iter()
            .filter(|p| {
                s.end_at.is_none_or(|e| p.at <= e) && s.start_at.is_none_or(|st| p.at >= st)
            })
            .collect())
    }

    /// Schedules with work at `now`: a due slot, or a buffered slot waiting for its
    /// running activity. Read without locks: `tick` decides with a compare-and-set.
    pub async fn due(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<Schedule>> {
        let sql = format!(
            "(SELECT {COLS} FROM highway.schedules \
              WHERE NOT paused AND next_run_at IS NOT NULL AND next_run_at <= $1 \
              ORDER BY next_run_at LIMIT $2) \
             UNION ALL \
             (SELECT {COLS} FROM highway.schedules \
              WHERE NOT paused AND buffered_fire_at IS NOT NULL \
                AND NOT (next_run_at IS NOT NULL AND next_run_at <= $1) LIMIT $2)"
        );
        sqlx::query(&sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(from_row)
            .collect()
    }

    /// The earliest next slot of any running schedule (the scheduler sleeps until then).
    pub async fn next_due(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar(
            "SELECT min(next_run_at) FROM highway.schedules WHERE NOT paused AND next_run_at IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn active(conn: &mut PgConnection, id: Option<Uuid>) -> Result<bool> {
        let Some(id) = id else { return Ok(false) };
        Ok(sqlx::query_scalar::<_, bool>(ACTIVE)
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(false))
    }

    /// Cancels the running activity for `cancel_other` (its worker stops its container).
    /// Its own short transaction: the cancel stands even if this tick rolls back, which
    /// is what the policy asked for, and the slot is taken again on the next tick.
    async fn cancel_running(&self, s: &Schedule, id: Uuid) -> Result<bool> {
        match self.queue.cancel(id, Some(&s.tenant_id)).await {
            Ok(CancelOutcome::AlreadyFinished) => Ok(false),
            Ok(_) => Ok(true),
            Err(crate::client::Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Enqueues the slot's activity and records the slot (or moves its record from
    /// `existing` to fired, guarded by that old outcome).
    async fn fire(
        &self,
        conn: &mut PgConnection,
        s: &Schedule,
        fire_at: DateTime<Utc>,
        source: Source,
        existing: Option<FireOutcome>,
        reason: Option<&str>,
    ) -> Result<(FireOutcome, Uuid)> {
        let req = s.activity.request(&s.tenant_id, s.id, fire_at, s.jitter.0);
        let enq = self.queue.enqueue_tx(conn, &req).await?;
        let outcome = if enq.created {
            FireOutcome::Fired
        } else {
            FireOutcome::Deduplicated
        };
        let reason = match (outcome, reason) {
            (FireOutcome::Deduplicated, _) => {
                Some("an activity with this slot's key already exists")
            }
            (_, r) => r,
        };
        match existing {
            None => {
                let n = sqlx::query(
                    "INSERT INTO highway.schedule_fires (schedule_id, fire_at, outcome, activity_id, reason, source) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (schedule_id, fire_at) DO NOTHING",
                )
                .bind(s.id)
                .bind(fire_at)
                .bind(outcome.as_str())
                .bind(enq.id)
                .bind(reason)
                .bind(source.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if n == 0 {
                    // Recorded already (a backfill or trigger took this instant); the
                    // idempotency key made the enqueue return that activity.
                    return Ok((FireOutcome::Deduplicated, enq.id));
                }
            }
            Some(old) => {
                let n = sqlx::query(
                    "UPDATE highway.schedule_fires SET outcome = $3, activity_id = $4, reason = $5, source = $6, \
                       recorded_at = clock_timestamp() \
                     WHERE schedule_id = $1 AND fire_at = $2 AND outcome = $7",
                )
                .bind(s.id)
                .bind(fire_at)
                .bind(outcome.as_str())
                .bind(enq.id)
                .bind(reason)
                .bind(source.as_str())
                .bind(old.as_str())
                .execute(&mut *conn)
                .await?
                .rows_affected();
                if n == 0 {
                    return Err(Error::Conflict { id: s.id, fire_at });
                }
            }
        }
        Ok((outcome, enq.id))
    }

    async fn record_many(
        conn: &mut PgConnection,
        id: Uuid,
        source: Source,
        rows: &[(DateTime<Utc>, FireOutcome, String)],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let at: Vec<DateTime<Utc>> = rows.iter().map(|r| r.0).collect();
        let outcome: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let reason: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        sqlx::query(
            "INSERT INTO highway.schedule_fires (schedule_id, fire_at, outcome, reason, source) \
             SELECT $1, u.at, u.outcome, u.reason, $5 \
             FROM unnest($2::timestamptz[], $3::text[], $4::text[]) AS u(at, outcome, reason) \
             ON CONFLICT (schedule_id, fire_at) DO NOTHING",
        )
        .bind(id)
        .bind(&at)
        .bind(&outcome)
        .bind(&reason)
        .bind(source.as_str())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// One scheduler pass over one schedule `s` (a snapshot from [`due`](Self::due)) at
    /// `now`: takes its due slots with a compare-and-set on the cursor, applies the
    /// catch-up plan and the overlap policy, records every slot and enqueues the fires,
    /// all in one transaction.
    pub async fn tick(
        &self,
        s: &Schedule,
        now: DateTime<Utc>,
        opts: &TickOptions,
    ) -> Result<TickReport> {
        let mut rep = TickReport::default();
        if s.paused {
            return Ok(rep);
        }
        let cron = CronTz::compile(&s.cron, &s.timezone).map_err(|e| Error::Corrupt {
            id: s.id,
            field: e.field,
            reason: e.reason,
        })?;
        let mut slots = Vec::new();
        let mut cur = s.next_run_at;
        while let Some(t) = cur {
            if t > now || slots.len() >= opts.max_slots.max(1) {
                break;
            }
            if s.end_at.is_some_and(|e| t > e) {
                cur = None;
                break;
            }
            // Monotone: never a slot at or before the last one handled (a clock that
            // went back, or a cursor written by an older version).
            if s.last_fired_at.is_none_or(|l| t > l) {
                slots.push(t);
            }
            cur = cron.next_after(t);
        }
        let new_next = cur.filter(|t| s.end_at.is_none_or(|e| *t <= e));
        let new_last = slots.last().copied().or(s.last_fired_at);
        if slots.is_empty() && s.buffered_fire_at.is_none() && new_next == s.next_run_at {
            return Ok(rep);
        }
        let plan = plan_slots(
            &slots,
            now,
            opts.on_time_grace,
            s.catchup_window.0,
            s.catchup_policy,
            s.max_catchup_burst,
        );

        let mut tx = self.pool.begin().await?;
        // The compare-and-set: only the scheduler that still sees the cursor it read
        // advances it. A row another scheduler is working on is skipped rather than
        // waited for (SKIP LOCKED): it is taken care of, and if that transaction dies the
        // next pass derives the slots again. The guard, not the lock, makes it exactly once.
        let taken: Option<(Option<Uuid>, Option<DateTime<Utc>>)> = sqlx::query_as(
            "WITH mine AS (SELECT id FROM highway.schedules WHERE id = $1 FOR UPDATE SKIP LOCKED) \
             UPDATE highway.schedules s SET last_fired_at = $2, next_run_at = $3, updated_at = now() \
             FROM mine WHERE s.id = mine.id AND s.version = $4 AND NOT s.paused \
               AND s.last_fired_at IS NOT DISTINCT FROM $5 AND s.next_run_at IS NOT DISTINCT FROM $6 \
             RETURNING s.last_activity_id, s.buffered_fire_at",
        )
        .bind(s.id)
        .bind(new_last)
        .bind(new_next)
        .bind(s.version)
        .bind(s.last_fired_at)
        .bind(s.next_run_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((mut prev, mut buffered)) = taken else {
            tx.rollback().await?;
            rep.contended = true;
            return Ok(rep);
        };
        if opts.failpoint == Some(TickFailpoint::AfterCas) {
            return Err(Error::Failpoint(TickFailpoint::AfterCas));
        }
        let (prev0, buffered0) = (prev, buffered);
        // `allow` never looks at the previous activity (a buffered slot still does).
        let mut prev_active = if s.overlap == OverlapPolicy::Allow && buffered.is_none() {
            false
        } else {
            Self::active(&mut tx, prev).await?
        };

        // buffer_one: the waiting slot goes first once the running activity finished.
        if let Some(b) = buffered {
            if !prev_active {
                let (o, id) = self
                    .fire(
                        &mut tx,
                        s,
                        b,
                        Source::Cron,
                        Some(FireOutcome::Buffered),
                        Some("buffered slot released"),
                    )
                    .await?;
                rep.count(o);
                prev = Some(id);
                prev_active = o == FireOutcome::Fired || Self::active(&mut tx, Some(id)).await?;
                buffered = None;
            }
        }

        let newest_fire = plan
            .iter()
            .rposition(|p| matches!(p, SlotPlan::Fire { .. }));
        let mut records: Vec<(DateTime<Utc>, FireOutcome, String)> = Vec::new();
        for (i, (slot, p)) in slots.iter().zip(&plan).enumerate() {
            let reason = match p {
                SlotPlan::Missed(r) => {
                    records.push((*slot, FireOutcome::Missed, r.clone()));
                    rep.missed += 1;
                    continue;
                }
                SlotPlan::Fire { catch_up: true } => Some("catch-up"),
                SlotPlan::Fire { catch_up: false } => None,
            };
            let running = prev.filter(|_| prev_active);
            match (s.overlap, running) {
                (OverlapPolicy::Skip, Some(r)) => {
                    records.push((
                        *slot,
                        FireOutcome::Skipped,
                        format!("overlap skip: activity {r} is still scheduled or running"),
                    ));
                    rep.skipped += 1;
                    continue;
                }
                (OverlapPolicy::BufferOne, Some(r)) => {
                    if let Some(b) = buffered {
                        records.push((
                            *slot,
                            FireOutcome::Skipped,
                            format!(
                                "overlap buffer_one: slot {} already waits for activity {r}",
                                b.to_rfc3339_opts(SecondsFormat::AutoSi, true)
                            ),
                        ));
                        rep.skipped += 1;
                    } else {
                        buffered = Some(*slot);
                        records.push((
                            *slot,
                            FireOutcome::Buffered,
                            format!("overlap buffer_one: waits for activity {r}"),
                        ));
                        rep.buffered += 1;
                    }
                    continue;
                }
                (OverlapPolicy::CancelOther, _) if Some(i) != newest_fire => {
                    // Firing and cancelling within one pass would only churn: the newest
                    // slot of the pass fires, the older ones are superseded.
                    records.push((
                        *slot,
                        FireOutcome::Skipped,
                        "overlap cancel_other: superseded by a newer slot of the same pass".into(),
                    ));
                    rep.skipped += 1;
                    continue;
                }
                (OverlapPolicy::CancelOther, Some(r)) => {
                    let cancelled = self.cancel_running(s, r).await?;
                    rep.cancelled += u64::from(cancelled);
                }
                _ => {}
            }
            // Earlier non-fire records first: the unique key must see them in order only
            // for readability of `fires`; correctness does not depend on it.
            let (o, id) = self
                .fire(&mut tx, s, *slot, Source::Cron, None, reason)
                .await?;
            rep.count(o);
            prev = Some(id);
            prev_active = o == FireOutcome::Fired
                || (s.overlap != OverlapPolicy::Allow && Self::active(&mut tx, Some(id)).await?);
        }
        Self::record_many(&mut tx, s.id, Source::Cron, &records).await?;
        if prev != prev0 || buffered != buffered0 {
            sqlx::query(
                "UPDATE highway.schedules SET last_activity_id = $2, buffered_fire_at = $3 WHERE id = $1",
            )
            .bind(s.id)
            .bind(prev)
            .bind(buffered)
            .execute(&mut *tx)
            .await?;
        }
        if opts.failpoint == Some(TickFailpoint::BeforeCommit) {
            return Err(Error::Failpoint(TickFailpoint::BeforeCommit));
        }
        tx.commit().await?;
        Ok(rep)
    }

    /// Fires now (the database's now is the slot's time). Obeys the overlap policy
    /// unless `force`; a forced trigger neither cancels nor waits.
    pub async fn trigger(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        force: bool,
    ) -> Result<TriggerOutcome> {
        let mut tx = self.pool.begin().await?;
        let s = self.lock(&mut tx, id, tenant).await?;
        let fire_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let prev_active = Self::active(&mut tx, s.last_activity_id).await?;
        let running = s.last_activity_id.filter(|_| prev_active && !force);
        let mut buffered = s.buffered_fire_at;
        let (outcome, activity_id, reason) = match (s.overlap, running) {
            (OverlapPolicy::Skip, Some(r)) => (
                FireOutcome::Skipped,
                None,
                Some(format!(
                    "trigger: overlap skip: activity {r} is still scheduled or running"
                )),
            ),
            (OverlapPolicy::BufferOne, Some(r)) if buffered.is_none() => {
                buffered = Some(fire_at);
                (
                    FireOutcome::Buffered,
                    None,
                    Some(format!(
                        "trigger: overlap buffer_one: waits for activity {r}"
                    )),
                )
            }
            (OverlapPolicy::BufferOne, Some(_)) => (
                FireOutcome::Skipped,
                None,
                Some("trigger: overlap buffer_one: a slot is already waiting".to_owned()),
            ),
            (policy, running) => {
                if let (OverlapPolicy::CancelOther, Some(r)) = (policy, running) {
                    self.cancel_running(&s, r).await?;
                }
                let why = if force { "trigger (forced)" } else { "trigger" };
                let (o, aid) = self
                    .fire(&mut tx, &s, fire_at, Source::Trigger, None, Some(why))
                    .await?;
                (o, Some(aid), Some(why.to_owned()))
            }
        };
        if activity_id.is_none() {
            Self::record_many(
                &mut tx,
                s.id,
                Source::Trigger,
                &[(fire_at, outcome, reason.clone().unwrap_or_default())],
            )
            .await?;
        }
        sqlx::query(
            "UPDATE highway.schedules SET last_activity_id = COALESCE($2, last_activity_id), \
               buffered_fire_at = $3, updated_at = now() WHERE id = $1",
        )
        .bind(s.id)
        .bind(activity_id)
        .bind(buffered)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(TriggerOutcome {
            fire_at,
            outcome,
            activity_id,
            reason,
        })
    }

    /// Runs the slots in `[from, to]` (`to` not after the database's now) with its own
    /// overlap policy: `allow` fires every slot not fired yet; `skip` fires none while
    /// an activity of the schedule is active, else only the first; `cancel_other`
    /// cancels the running one and fires the newest slot. Slots recorded `missed` or
    /// `skipped` become `fired`; fired ones are left alone (deduplicated).
    pub async fn backfill(
        &self,
        id: Uuid,
        tenant: Option<&str>,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        overlap: OverlapPolicy,
    ) -> Result<BackfillReport> {
        if to < from {
            return Err(FieldError::new("to", "must not be before from").into());
        }
        if overlap == OverlapPolicy::BufferOne {
            return Err(FieldError::new(
                "overlap",
                "buffer_one is not meaningful for a backfill (use allow, skip or cancel_other)",
            )
            .into());
        }
        let mut tx = self.pool.begin().await?;
        let s = self.lock(&mut tx, id, tenant).await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        if to > now {
            return Err(FieldError::new(
                "to",
                "must not be in the future (the scheduler owns those slots)",
            )
            .into());
        }
        let cron = CronTz::compile(&s.cron, &s.timezone).map_err(|e| Error::Corrupt {
            id,
            field: e.field,
            reason: e.reason,
        })?;
        let slots = cron.fires_between(
            from - chrono::Duration::microseconds(1),
            to,
            MAX_BACKFILL_SLOTS + 1,
        );
        if slots.len() > MAX_BACKFILL_SLOTS {
            return Err(FieldError::new(
                "to",
                format!("the range holds more than {MAX_BACKFILL_SLOTS} slots; split it"),
            )
            .into());
        }
        let existing: HashMap<DateTime<Utc>, FireOutcome> = sqlx::query(
            "SELECT fire_at, outcome FROM highway.schedule_fires \
             WHERE schedule_id = $1 AND fire_at BETWEEN $2 AND $3",
        )
        .bind(id)
        .bind(from)
        .bind(to)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .filter_map(|r| {
            let at: DateTime<Utc> = r.try_get("fire_at").ok()?;
            let o: String = r.try_get("outcome").ok()?;
            Some((at, o.parse().ok()?))
        })
        .collect();
        let mut rep = BackfillReport {
            slots: slots.len() as u64,
            ..Default::default()
        };
        let mut prev = s.last_activity_id;
        let mut prev_active = Self::active(&mut tx, prev).await?;
        let todo: Vec<DateTime<Utc>> = slots
            .iter()
            .copied()
            .filter(|t| {
                !matches!(
                    existing.get(t),
                    Some(FireOutcome::Fired | FireOutcome::Deduplicated | FireOutcome::Buffered)
                )
            })
            .collect();
        rep.deduplicated = (slots.len() - todo.len()) as u64;
        let mut skipped = Vec::new();
        for (i, slot) in todo.iter().enumerate() {
            let old = existing.get(slot).copied();
            let fire = match overlap {
                OverlapPolicy::Allow => true,
                OverlapPolicy::Skip => !prev_active,
                OverlapPolicy::CancelOther => i + 1 == todo.len(),
                OverlapPolicy::BufferOne => false,
            };
            if !fire {
                rep.skipped += 1;
                if old.is_none() {
                    skipped.push((
                        *slot,
                        FireOutcome::Skipped,
                        format!("backfill: overlap {overlap}"),
                    ));
                }
                continue;
            }
            if overlap == OverlapPolicy::CancelOther && prev_active {
                if let Some(r) = prev {
                    self.cancel_running(&s, r).await?;
                }
            }
            let (o, aid) = self
                .fire(&mut tx, &s, *slot, Source::Backfill, old, Some("backfill"))
                .await?;
            match o {
                FireOutcome::Fired => {
                    rep.fired += 1;
                    rep.activity_ids.push(aid);
                }
                _ => rep.deduplicated += 1,
            }
            prev = Some(aid);
            prev_active = true;
        }
        Self::record_many(&mut tx, s.id, Source::Backfill, &skipped).await?;
        if prev != s.last_activity_id {
            sqlx::query("UPDATE highway.schedules SET last_activity_id = $2, updated_at = now() WHERE id = $1")
                .bind(s.id)
                .bind(prev)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rep)
    }
}
