//! Durable cron, the wire side: what a schedule owner writes ([`ScheduleSpec`]), what a
//! reader sees ([`Schedule`], [`ScheduleFire`]), validation that names the field, the
//! cron-in-a-timezone arithmetic ([`CronTz`], DST rules below), the pure catch-up plan
//! ([`plan_slots`]) and the preview of the next fire times.
//!
//! The SQL of schedules lives in one place, [`store`] ([`ScheduleClient`]): the CLI, the
//! Rust client and the worker's scheduler service all go through it.
//!
//! # Cron
//! Standard 5 fields (`minute hour day-of-month month day-of-week`), or 6 with seconds
//! first, or a shorthand (`@hourly`, `@daily`, ...). Day-of-week numbers are crontab's
//! (`0` or `7` = Sunday, `1` = Monday; names `MON`..`SUN` too). When both day fields are
//! restricted, a day matches if either matches (Vixie cron). Parsing and the day rule
//! live in [`cron_expr`].
//!
//! # Daylight saving time
//! Wall-clock fields are read in the schedule's IANA timezone, with Vixie cron's rules:
//! - a *fixed-time* job (the hour field is not `*`) whose time falls in a spring-forward
//!   gap runs once, right after the gap; in a fall-back overlap it runs once (at the
//!   first of the two instants);
//! - an *interval* job (hour field `*`) follows real time: gap times do not exist and are
//!   not run, overlap times run at both instants.

mod cron_expr;
pub mod store;

pub use store::{
    BackfillReport, ScheduleClient, ScheduleFilter, TickOptions, TickReport, TriggerOutcome,
};

use crate::duration::HumanDuration;
use crate::types::{
    default_priority, default_queue, default_tenant, empty_object, EnqueueRequest, FieldError,
    RetryPolicy, Timeouts, DEFAULT_PRIORITY,
};
use chrono::{
    DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, Offset, SecondsFormat,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

/// Schema stand-ins for the OpenAPI document: `chrono`, [`HumanDuration`] and the queue's
/// policy types have no schema derive, so their wire shapes are described here (inline,
/// so their names cannot clash with other documents' definitions).
mod schema {
    use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
    use std::borrow::Cow;

    pub struct Timestamp;
    impl JsonSchema for Timestamp {
        fn inline_schema() -> bool {
            true
        }
        fn schema_name() -> Cow<'static, str> {
            "Timestamp".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({"type": "string", "format": "date-time"})
        }
    }

    pub struct Dur;
    impl JsonSchema for Dur {
        fn inline_schema() -> bool {
            true
        }
        fn schema_name() -> Cow<'static, str> {
            "HumanDuration".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({
                "description": "seconds, or a string such as \"30s\", \"5m\", \"1h30m\"",
                "oneOf": [{"type": "number", "minimum": 0}, {"type": "string"}]
            })
        }
    }

    /// `retry_policy` / `timeouts`: the queue's objects (see `EnqueueRequest`).
    pub struct Object;
    impl JsonSchema for Object {
        fn inline_schema() -> bool {
            true
        }
        fn schema_name() -> Cow<'static, str> {
            "Object".into()
        }
        fn json_schema(_: &mut SchemaGenerator) -> Schema {
            json_schema!({"type": "object"})
        }
    }
}

/// Default catch-up window of a schedule that does not set one.
pub const DEFAULT_CATCHUP_WINDOW: Duration = Duration::from_secs(3600);
/// Default burst cap of catch-up fires per schedule per pass.
pub const DEFAULT_MAX_CATCHUP_BURST: u32 = 10;
/// Largest accepted catch-up window: every slot in it may be enumerated in one pass.
pub const MAX_CATCHUP_WINDOW: Duration = Duration::from_secs(7 * 86400);
/// Largest accepted jitter.
pub const MAX_JITTER: Duration = Duration::from_secs(86400);
/// "Never fires" means no fire within this many days of a fixed base (covers 29 Feb).
const NEVER_FIRES_HORIZON_DAYS: i64 = 5 * 366;
/// Consecutive fires sampled to find the shortest interval of an expression.
const INTERVAL_SAMPLES: usize = 1000;

/// What the overlap policy does when a slot comes while the previous fire's activity is
/// still scheduled or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OverlapPolicy {
    /// Do not fire; the slot is recorded `skipped`.
    #[default]
    Skip,
    /// Fire anyway: activities of one schedule may run side by side.
    Allow,
    /// Keep one slot waiting (`buffered`) and fire it when the running one finishes;
    /// further slots meanwhile are `skipped`.
    BufferOne,
    /// Cancel the running activity (which stops its container) and fire.
    CancelOther,
}

impl OverlapPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Allow => "allow",
            Self::BufferOne => "buffer_one",
            Self::CancelOther => "cancel_other",
        }
    }
}

impl FromStr for OverlapPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "skip" => Ok(Self::Skip),
            "allow" => Ok(Self::Allow),
            "buffer_one" => Ok(Self::BufferOne),
            "cancel_other" => Ok(Self::CancelOther),
            _ => Err(format!(
                "unknown overlap policy {s:?} (skip, allow, buffer_one, cancel_other)"
            )),
        }
    }
}

impl fmt::Display for OverlapPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to slots that passed while no scheduler ran (older than the on-time
/// grace, within the catch-up window). Slots older than the window are always `missed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchupPolicy {
    /// Fire once for the whole backlog (its newest slot); the older ones are `missed`.
    #[default]
    Latest,
    /// Fire every slot of the window, newest first up to the burst cap; the rest `missed`.
    All,
    /// Fire none of them: all `missed`.
    None,
}

impl CatchupPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Latest => "latest",
            Self::All => "all",
            Self::None => "none",
        }
    }
}

impl FromStr for CatchupPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "latest" => Ok(Self::Latest),
            "all" => Ok(Self::All),
            "none" => Ok(Self::None),
            _ => Err(format!("unknown catch-up policy {s:?} (latest, all, none)")),
        }
    }
}

impl fmt::Display for CatchupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FireOutcome {
    Fired,
    Skipped,
    Missed,
    Deduplicated,
    Buffered,
}

impl FireOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fired => "fired",
            Self::Skipped => "skipped",
            Self::Missed => "missed",
            Self::Deduplicated => "deduplicated",
            Self::Buffered => "buffered",
        }
    }
}

impl FromStr for FireOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "fired" => Ok(Self::Fired),
            "skipped" => Ok(Self::Skipped),
            "missed" => Ok(Self::Missed),
            "deduplicated" => Ok(Self::Deduplicated),
            "buffered" => Ok(Self::Buffered),
            _ => Err(format!("unknown fire outcome {s:?}")),
        }
    }
}

/// The activity a schedule enqueues at each fire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityTemplate {
    pub kind: String,
    #[serde(default = "empty_object")]
    pub params: Value,
    #[serde(default = "default_queue")]
    pub queue: String,
    #[serde(default = "default_priority")]
    pub priority: i16,
    #[serde(default)]
    #[schemars(with = "schema::Object")]
    pub retry_policy: RetryPolicy,
    #[serde(default)]
    #[schemars(with = "schema::Object")]
    pub timeouts: Timeouts,
}

impl ActivityTemplate {
    pub fn new(kind: impl Into<String>, params: Value) -> Self {
        Self {
            kind: kind.into(),
            params,
            queue: default_queue(),
            priority: DEFAULT_PRIORITY,
            retry_policy: RetryPolicy::default(),
            timeouts: Timeouts::default(),
        }
    }

    /// The enqueue request of one fire: the same slot always builds the same request, so
    /// a repeated enqueue is recognised by its idempotency key and body hash.
    pub fn request(
        &self,
        tenant: &str,
        schedule_id: Uuid,
        fire_at: DateTime<Utc>,
        jitter: Duration,
    ) -> EnqueueRequest {
        let mut r = EnqueueRequest::new(self.kind.clone(), self.params.clone())
            .tenant(tenant)
            .queue(self.queue.clone())
            .idempotency_key(idempotency_key(schedule_id, fire_at));
        r.priority = self.priority;
        r.retry_policy = self.retry_policy.clone();
        r.timeouts = self.timeouts.clone();
        if !jitter.is_zero() {
            r.run_at = Some(fire_at + jitter_for(schedule_id, fire_at, jitter));
        }
        r
    }

    fn validate(&self, tenant: &str) -> Result<(), FieldError> {
        let probe = self.request(
            tenant,
            Uuid::nil(),
            DateTime::<Utc>::UNIX_EPOCH,
            Duration::ZERO,
        );
        probe.validate().map_err(|e| {
            let field = if e.field == "tenant_id" {
                e.field
            } else {
                format!("activity.{}", e.field)
            };
            FieldError::new(field, e.reason)
        })
    }
}

/// `schedule:<id>:<nominal fire time, RFC 3339 UTC>`: one activity per slot, whoever
/// enqueues it and however often.
pub fn idempotency_key(schedule_id: Uuid, fire_at: DateTime<Utc>) -> String {
    format!(
        "schedule:{schedule_id}:{}",
        fire_at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
    )
}

/// A deterministic offset in `[0, jitter)` for one slot: every scheduler computes the
/// same one, so their requests for the slot are identical.
pub fn jitter_for(schedule_id: Uuid, fire_at: DateTime<Utc>, jitter: Duration) -> ChronoDuration {
    use sha2::{Digest, Sha256};
    let ms = jitter.as_millis() as u64;
    if ms == 0 {
        return ChronoDuration::zero();
    }
    let mut h = Sha256::new();
    h.update(schedule_id.as_bytes());
    h.update(fire_at.timestamp_micros().to_be_bytes());
    let d = h.finalize();
    let v = u64::from_be_bytes(d[..8].try_into().unwrap_or([0; 8]));
    ChronoDuration::milliseconds((v % ms) as i64)
}

/// A schedule as its owner writes it (`--file spec.json`, the API, the Rust client).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSpec {
    /// Unique per tenant.
    pub name: String,
    #[serde(default = "default_tenant")]
    pub tenant_id: String,
    /// 5 fields, or 6 with seconds first; or `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
    pub cron: String,
    /// IANA timezone, default UTC.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    pub activity: ActivityTemplate,
    #[serde(default)]
    pub overlap: OverlapPolicy,
    /// How far back a scheduler that was down catches up (default from the settings, 1h).
    #[serde(default)]
    #[schemars(with = "Option<schema::Dur>")]
    pub catchup_window: Option<HumanDuration>,
    #[serde(default)]
    pub catchup_policy: CatchupPolicy,
    /// Most catch-up fires of one pass (default from the settings).
    #[serde(default)]
    pub max_catchup_burst: Option<u32>,
    /// Each activity starts up to this long after its slot.
    #[serde(default)]
    #[schemars(with = "Option<schema::Dur>")]
    pub jitter: Option<HumanDuration>,
    #[serde(default)]
    pub paused: bool,
    /// Why it is paused.
    #[serde(default)]
    pub note: Option<String>,
    /// No slot before this instant.
    #[serde(default)]
    #[schemars(with = "Option<schema::Timestamp>")]
    pub start_at: Option<DateTime<Utc>>,
    /// No slot after this instant.
    #[serde(default)]
    #[schemars(with = "Option<schema::Timestamp>")]
    pub end_at: Option<DateTime<Utc>>,
}

impl ScheduleSpec {
    pub fn new(
        name: impl Into<String>,
        cron: impl Into<String>,
        activity: ActivityTemplate,
    ) -> Self {
        Self {
            name: name.into(),
            tenant_id: default_tenant(),
            cron: cron.into(),
            timezone: default_timezone(),
            activity,
            overlap: OverlapPolicy::default(),
            catchup_window: None,
            catchup_policy: CatchupPolicy::default(),
            max_catchup_burst: None,
            jitter: None,
            paused: false,
            note: None,
            start_at: None,
            end_at: None,
        }
    }

    /// Checks every field against `limits`; the error names the first bad one.
    pub fn validate(&self, limits: &ScheduleLimits) -> Result<CronTz, FieldError> {
        check_name(&self.name)?;
        let cron = CronTz::parse(&self.cron, &self.timezone)?;
        if let Some(gap) = cron.shortest_interval() {
            if gap < limits.min_interval {
                return Err(FieldError::new(
                    "cron",
                    format!(
                        "fires every {} at times; the minimum interval is {}",
                        HumanDuration(gap),
                        HumanDuration(limits.min_interval)
                    ),
                ));
            }
        }
        self.activity.validate(&self.tenant_id)?;
        if let Some(w) = self.catchup_window {
            if w.0 > MAX_CATCHUP_WINDOW {
                return Err(FieldError::new(
                    "catchup_window",
                    format!("must be at most {}", HumanDuration(MAX_CATCHUP_WINDOW)),
                ));
            }
        }
        if let Some(b) = self.max_catchup_burst {
            if b == 0 || b > limits.max_catchup_burst_limit {
                return Err(FieldError::new(
                    "max_catchup_burst",
                    format!("must be between 1 and {}", limits.max_catchup_burst_limit),
                ));
            }
        }
        if let Some(j) = self.jitter {
            if j.0 > MAX_JITTER {
                return Err(FieldError::new(
                    "jitter",
                    format!("must be at most {}", HumanDuration(MAX_JITTER)),
                ));
            }
        }
        if let Some(n) = &self.note {
            if n.len() > 1000 || n.chars().any(|c| c.is_control() && c != '\n') {
                return Err(FieldError::new(
                    "note",
                    "must be at most 1000 printable characters",
                ));
            }
        }
        if let (Some(s), Some(e)) = (self.start_at, self.end_at) {
            if e <= s {
                return Err(FieldError::new("end_at", "must be after start_at"));
            }
        }
        Ok(cron)
    }
}

fn check_name(v: &str) -> Result<(), FieldError> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "name",
            "must be 1 to 128 letters, digits, '_', '-' or '.'",
        ))
    }
}

fn default_timezone() -> String {
    "UTC".to_owned()
}

/// Operator limits and defaults that validation and creation apply (from the settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleLimits {
    /// Expressions firing more often than this are refused.
    pub min_interval: Duration,
    pub default_catchup_window: Duration,
    pub default_max_catchup_burst: u32,
    /// Largest `max_catchup_burst` a schedule may ask for.
    pub max_catchup_burst_limit: u32,
}

impl Default for ScheduleLimits {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(1),
            default_catchup_window: DEFAULT_CATCHUP_WINDOW,
            default_max_catchup_burst: DEFAULT_MAX_CATCHUP_BURST,
            max_catchup_burst_limit: 10_000,
        }
    }
}

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Schedule {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub activity: ActivityTemplate,
    pub overlap: OverlapPolicy,
    #[schemars(with = "schema::Dur")]
    pub catchup_window: HumanDuration,
    pub catchup_policy: CatchupPolicy,
    pub max_catchup_burst: u32,
    #[schemars(with = "schema::Dur")]
    pub jitter: HumanDuration,
    pub paused: bool,
    pub note: Option<String>,
    #[schemars(with = "Option<schema::Timestamp>")]
    pub paused_at: Option<DateTime<Utc>>,
    #[schemars(with = "Option<schema::Timestamp>")]
    pub start_at: Option<DateTime<Utc>>,
    #[schemars(with = "Option<schema::Timestamp>")]
    pub end_at: Option<DateTime<Utc>>,
    #[schemars(with = "Option<schema::Timestamp>")]
    pub next_run_at: Option<DateTime<Utc>>,
    #[schemars(with = "Option<schema::Timestamp>")]
    pub last_fired_at: Option<DateTime<Utc>>,
    pub last_activity_id: Option<Uuid>,
    #[schemars(with = "Option<schema::Timestamp>")]
    pub buffered_fire_at: Option<DateTime<Utc>>,
    pub version: i64,
    #[schemars(with = "schema::Timestamp")]
    pub created_at: DateTime<Utc>,
    #[schemars(with = "schema::Timestamp")]
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The spec this schedule was created from (with defaults filled in).
    pub fn spec(&self) -> ScheduleSpec {
        ScheduleSpec {
            name: self.name.clone(),
            tenant_id: self.tenant_id.clone(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            activity: self.activity.clone(),
            overlap: self.overlap,
            catchup_window: Some(self.catchup_window),
            catchup_policy: self.catchup_policy,
            max_catchup_burst: Some(self.max_catchup_burst),
            jitter: (!self.jitter.0.is_zero()).then_some(self.jitter),
            paused: self.paused,
            note: self.note.clone(),
            start_at: self.start_at,
            end_at: self.end_at,
        }
    }
}

/// One slot's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ScheduleFire {
    pub schedule_id: Uuid,
    #[schemars(with = "schema::Timestamp")]
    pub fire_at: DateTime<Utc>,
    pub outcome: FireOutcome,
    pub activity_id: Option<Uuid>,
    pub reason: Option<String>,
    /// `cron`, `trigger` or `backfill`.
    pub source: String,
    #[schemars(with = "schema::Timestamp")]
    pub recorded_at: DateTime<Utc>,
}

/// One previewed fire time, in the schedule's timezone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FirePreview {
    #[schemars(with = "schema::Timestamp")]
    pub at: DateTime<Utc>,
    /// RFC 3339 with the zone's offset at that instant, e.g. `2026-10-25T02:30:00+02:00`.
    pub local: String,
    /// Set around DST: the wall time is in a gap (shifted) or an overlap (both offsets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
}

/// A cron expression bound to a timezone: the fire-time arithmetic.
#[derive(Debug, Clone)]
pub struct CronTz {
    cron: cron_expr::WallCron,
    tz: Tz,
    /// The hour field is `*`: the job follows real time across DST (see module doc).
    interval_like: bool,
}

impl CronTz {
    /// Parses `expr` (5 or 6 fields, or an `@` shorthand) in IANA zone `timezone`.
    /// Errors name the spec field (`cron`, `timezone`) and the cron field within.
    pub fn parse(expr: &str, timezone: &str) -> Result<Self, FieldError> {
        let me = Self::compile(expr, timezone)?;
        let base = Utc
            .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
            .single()
            .unwrap_or_default();
        match me.next_after(base) {
            Some(t) if t - base <= ChronoDuration::days(NEVER_FIRES_HORIZON_DAYS) => Ok(me),
            _ => Err(FieldError::new(
                "cron",
                format!(
                    "cron expression {:?} never fires (no date matches within 5 years)",
                    truncate(expr, 64)
                ),
            )),
        }
    }

    /// `parse` without the never-fires check: for expressions validated when stored
    /// (the scheduler compiles every due schedule on every pass).
    pub fn compile(expr: &str, timezone: &str) -> Result<Self, FieldError> {
        let tz: Tz = timezone.parse().map_err(|_| {
            FieldError::new(
                "timezone",
                format!(
                    "unknown IANA timezone {:?} (examples: UTC, Europe/Berlin, America/New_York)",
                    truncate(timezone, 64)
                ),
            )
        })?;
        let cron = cron_expr::WallCron::parse(expr).map_err(|r| FieldError::new("cron", r))?;
        let interval_like = cron.every_hour();
        Ok(Self {
            cron,
            tz,
            interval_like,
        })
    }

    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The shortest gap between consecutive fires, sampled over the first
    /// `INTERVAL_SAMPLES` wall-clock fires after a fixed base (None: fires at most once).
    pub fn shortest_interval(&self) -> Option<Duration> {
        let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single()?;
        let mut prev: Option<DateTime<Utc>> = None;
        let mut best: Option<Duration> = None;
        for t in self.cron.after(&base).take(INTERVAL_SAMPLES) {
            if let Some(p) = prev {
                let gap = (t - p).to_std().unwrap_or_default();
                best = Some(best.map_or(gap, |b: Duration| b.min(gap)));
            }
            prev = Some(t);
        }
        best
    }

    /// The first fire strictly after `after`, by the DST rules of the module doc.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let four_h = ChronoDuration::hours(4);
        let off_a = self.offset(after);
        let off_b = self.offset(after + four_h);
        // Wall times whose instant lies after `after` start at `after` read in the smaller
        // of the two offsets: that is where the second pass of an overlap ahead begins.
        let start = after.naive_utc() + ChronoDuration::seconds(off_a.min(off_b) as i64);
        let horizon = start + ChronoDuration::days(NEVER_FIRES_HORIZON_DAYS + 366);
        let near_bound = off_a.max(off_b) as i64;
        let mut best: Option<DateTime<Utc>> = None;
        let mut bound = near_bound;
        let from = Utc.from_utc_datetime(&(start - ChronoDuration::seconds(1)));
        for cand in self.cron.after(&from) {
            let wall = cand.naive_utc();
            if wall > horizon {
                break;
            }
            if let Some(b) = best {
                // No later wall time can map to an instant before `b`: stop. Any instant
                // in (after, b] has a wall time of at most b + its offset.
                if wall - ChronoDuration::seconds(bound) > b.naive_utc() {
                    break;
                }
            }
            for i in self.instants_of(wall).into_iter().flatten() {
                if i > after && best.is_none_or(|b| i < b) {
                    best = Some(i);
                    bound = if i - after > four_h {
                        // Far away: transitions in between are possible; be generous.
                        near_bound.max(self.offset(i) as i64) + 3 * 3600
                    } else {
                        near_bound
                    };
                }
            }
        }
        best
    }

    /// Fires in `(after, until]`, at most `limit`.
    pub fn fires_between(
        &self,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut cur = after;
        while out.len() < limit {
            match self.next_after(cur) {
                Some(t) if t <= until => {
                    out.push(t);
                    cur = t;
                }
                _ => break,
            }
        }
        out
    }

    /// The next `n` fires after `after`, each with its local time and any DST note.
    pub fn preview(&self, after: DateTime<Utc>, n: usize) -> Vec<FirePreview> {
        let mut out = Vec::with_capacity(n);
        let mut cur = after;
        while out.len() < n {
            let Some(t) = self.next_after(cur) else { break };
            let local = t.with_timezone(&self.tz);
            let wall = local.naive_local();
            let dst = match self.tz.from_local_datetime(&wall) {
                LocalResult::Ambiguous(e, l) => Some(format!(
                    "DST overlap: {} occurs at {} and at {}; {}",
                    wall.format("%H:%M:%S"),
                    e.format("%:z"),
                    l.format("%:z"),
                    if self.interval_like {
                        "fires at both (interval job)"
                    } else {
                        "fires once, at the first"
                    }
                )),
                _ => None,
            }
            .or_else(|| self.gap_note(cur, t));
            out.push(FirePreview {
                at: t,
                local: local.to_rfc3339_opts(SecondsFormat::AutoSi, false),
                dst,
            });
            cur = t;
        }
        out
    }

    /// When `t` is the shifted run of a wall time that fell in a gap, say so.
    fn gap_note(&self, after: DateTime<Utc>, t: DateTime<Utc>) -> Option<String> {
        if self.interval_like {
            return None;
        }
        // The wall times the cron named just before t's wall time that do not exist.
        let wall_t = t.with_timezone(&self.tz).naive_local();
        let start = after.with_timezone(&self.tz).naive_local();
        let from = Utc.from_utc_datetime(&start);
        for cand in self.cron.after(&from) {
            let w = cand.naive_utc();
            if w >= wall_t {
                break;
            }
            if matches!(self.tz.from_local_datetime(&w), LocalResult::None) {
                return Some(format!(
                    "DST gap: {} does not exist on {}; runs right after the gap",
                    w.format("%H:%M:%S"),
                    w.format("%Y-%m-%d")
                ));
            }
        }
        None
    }

    fn offset(&self, at: DateTime<Utc>) -> i32 {
        self.tz
            .offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc()
    }

    /// The instants a wall time fires at (0, 1 or 2), by the DST rules.
    fn instants_of(&self, wall: NaiveDateTime) -> [Option<DateTime<Utc>>; 2] {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(d) => [Some(d.with_timezone(&Utc)), None],
            LocalResult::Ambiguous(e, l) => {
                if self.interval_like {
                    [Some(e.with_timezone(&Utc)), Some(l.with_timezone(&Utc))]
                } else {
                    [Some(e.with_timezone(&Utc)), None]
                }
            }
            LocalResult::None if self.interval_like => [None, None],
            LocalResult::None => {
                // Right after the gap: the first wall minute that exists.
                let minute = wall
                    .with_second(0)
                    .unwrap_or(wall)
                    .with_nanosecond(0)
                    .unwrap_or(wall);
                for m in 1..=(26 * 60) {
                    let w = minute + ChronoDuration::minutes(m);
                    match self.tz.from_local_datetime(&w) {
                        LocalResult::Single(d) => return [Some(d.with_timezone(&Utc)), None],
                        LocalResult::Ambiguous(e, _) => return [Some(e.with_timezone(&Utc)), None],
                        LocalResult::None => continue,
                    }
                }
                [None, None]
            }
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

/// What to do with one due slot before overlap is considered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotPlan {
    Fire { catch_up: bool },
    Missed(String),
}

/// The catch-up plan for the due `slots` (ascending) at `now`: on-time slots (within
/// `on_time_grace`) always fire; older ones within the window follow the policy and the
/// burst cap; older than the window are missed. Pure, so it is unit-tested here.
pub fn plan_slots(
    slots: &[DateTime<Utc>],
    now: DateTime<Utc>,
    on_time_grace: Duration,
    window: Duration,
    policy: CatchupPolicy,
    burst: u32,
) -> Vec<SlotPlan> {
    let grace = ChronoDuration::from_std(on_time_grace).unwrap_or(ChronoDuration::MAX);
    let win = ChronoDuration::from_std(window).unwrap_or(ChronoDuration::MAX);
    let on_time = |s: DateTime<Utc>| now - s <= grace;
    let in_window = |s: DateTime<Utc>| now - s <= win;
    let any_on_time = slots.iter().any(|s| on_time(*s));
    let catchup: Vec<usize> = (0..slots.len())
        .filter(|&i| !on_time(slots[i]) && in_window(slots[i]))
        .collect();
    // Indices (into `slots`) of catch-up slots that fire.
    let firing: Vec<usize> = match policy {
        CatchupPolicy::None => Vec::new(),
        CatchupPolicy::Latest if any_on_time => Vec::new(),
        CatchupPolicy::Latest => catchup.last().copied().into_iter().collect(),
        CatchupPolicy::All => catchup.iter().rev().take(burst as usize).copied().collect(),
    };
    slots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if on_time(*s) {
                SlotPlan::Fire { catch_up: false }
            } else if !in_window(*s) {
                SlotPlan::Missed(format!(
                    "older than the catch-up window ({})",
                    HumanDuration(window)
                ))
            } else if firing.contains(&i) {
                SlotPlan::Fire { catch_up: true }
            } else {
                SlotPlan::Missed(match policy {
                    CatchupPolicy::None => "catch-up policy none".to_owned(),
                    CatchupPolicy::Latest => {
                        "catch-up policy latest: superseded by a newer slot".to_owned()
                    }
                    CatchupPolicy::All => format!("catch-up burst cap ({burst}) reached"),
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn field_of(expr: &str, tz: &str) -> (String, String) {
        let e = CronTz::parse(expr, tz).unwrap_err();
        (e.field, e.reason)
    }

    #[test]
    fn validation_names_the_field() {
        let (f, r) = field_of("* * * *", "UTC");
        assert_eq!(f, "cron");
        assert!(r.contains("4 fields"), "{r}");
        let (f, r) = field_of("0 25 * * *", "UTC");
        assert_eq!(f, "cron");
        assert!(r.contains("hour"), "{r}");
        let (_, r) = field_of("61 * * * *", "UTC");
        assert_eq!(
            r,
            r#"invalid cron expression "61 * * * *": minute 61 is out of range 0-59"#
        );
        let (_, r) = field_of("0 0 32 * *", "UTC");
        assert!(r.contains("day of month 32 is out of range 1-31"), "{r}");
        let (_, r) = field_of("0 0 * 13 *", "UTC");
        assert!(r.contains("month"), "{r}");
        let (_, r) = field_of("0 0 * * 8", "UTC");
        assert!(r.contains("day of week 8 is out of range 0-7"), "{r}");
        let (f, r) = field_of("0 0 30 2 *", "UTC");
        assert_eq!(f, "cron");
        assert!(r.contains("never fires"), "{r}");
        let (f, _) = field_of("0 0 * * *", "Mars/Olympus");
        assert_eq!(f, "timezone");
        let mut spec = ScheduleSpec::new(
            "n",
            "* * * * * *",
            ActivityTemplate::new("highway.noop", serde_json::json!({})),
        );
        let limits = ScheduleLimits {
            min_interval: Duration::from_secs(60),
            ..Default::default()
        };
        let e = spec.validate(&limits).unwrap_err();
        assert_eq!(e.field, "cron");
        assert!(e.reason.contains("minimum interval"), "{}", e.reason);
        spec.cron = "*/5 * * * *".into();
        spec.validate(&limits).unwrap();
        spec.cron = "0,1 0 0 * * *".into();
        assert_eq!(spec.validate(&limits).unwrap_err().field, "cron");
        spec.cron = "@daily".into();
        spec.activity.priority = 0;
        assert_eq!(
            spec.validate(&limits).unwrap_err().field,
            "activity.priority"
        );
    }

    #[test]
    fn five_fields_and_standard_day_of_week() {
        let c = CronTz::parse("0 9 * * 1", "UTC").unwrap();
        // 2026-01-05 is a Monday.
        assert_eq!(
            c.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-05T09:00:00Z"))
        );
        let c = CronTz::parse("0 9 * * 0", "UTC").unwrap();
        assert_eq!(
            c.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2026-01-04T09:00:00Z"))
        );
        let c = CronTz::parse("0 9 * * 5-7", "UTC").unwrap();
        let got = c.fires_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-05T00:00:00Z"), 10);
        // Fri 2, Sat 3, Sun 4.
        assert_eq!(got.len(), 3, "{got:?}");
        let c = CronTz::parse("*/10 * * * * *", "UTC").unwrap();
        assert_eq!(c.shortest_interval(), Some(Duration::from_secs(10)));
    }

    #[test]
    fn berlin_gap_runs_once_right_after() {
        let c = CronTz::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fires = c.fires_between(utc("2026-03-27T00:00:00Z"), utc("2026-03-31T00:00:00Z"), 10);
        assert_eq!(
            fires,
            vec![
                utc("2026-03-27T01:30:00Z"),
                utc("2026-03-28T01:30:00Z"),
                utc("2026-03-29T01:00:00Z"), // 03:00 CEST, right after the gap
                utc("2026-03-30T00:30:00Z"),
            ]
        );
        let p = c.preview(utc("2026-03-28T12:00:00Z"), 1);
        assert!(p[0].dst.as_deref().unwrap_or("").contains("gap"), "{p:?}");
    }

    #[test]
    fn berlin_overlap_runs_once() {
        let c = CronTz::parse("30 2 * * *", "Europe/Berlin").unwrap();
        let fires = c.fires_between(utc("2026-10-24T00:00:00Z"), utc("2026-10-27T00:00:00Z"), 10);
        assert_eq!(
            fires,
            vec![
                utc("2026-10-24T00:30:00Z"),
                utc("2026-10-25T00:30:00Z"), // 02:30 CEST only
                utc("2026-10-26T01:30:00Z"),
            ]
        );
        let p = c.preview(utc("2026-10-24T12:00:00Z"), 1);
        let note = p[0].dst.clone().unwrap_or_default();
        assert!(note.contains("+02:00") && note.contains("+01:00"), "{note}");
        assert_eq!(p[0].local, "2026-10-25T02:30:00+02:00");
    }

    #[test]
    fn interval_jobs_follow_real_time_across_dst() {
        let c = CronTz::parse("*/30 * * * *", "Europe/Berlin").unwrap();
        let fires = c.fires_between(utc("2026-10-24T23:40:00Z"), utc("2026-10-25T02:10:00Z"), 20);
        let gaps: Vec<i64> = fires
            .windows(2)
            .map(|w| (w[1] - w[0]).num_minutes())
            .collect();
        assert!(gaps.iter().all(|g| *g == 30), "{fires:?}");
        assert_eq!(fires.len(), 5);
        let fires = c.fires_between(utc("2026-03-28T23:40:00Z"), utc("2026-03-29T02:10:00Z"), 20);
        let gaps: Vec<i64> = fires
            .windows(2)
            .map(|w| (w[1] - w[0]).num_minutes())
            .collect();
        assert!(gaps.iter().all(|g| *g == 30), "{fires:?}");
    }

    #[test]
    fn new_york_gap_and_overlap() {
        let c = CronTz::parse("30 2 * * *", "America/New_York").unwrap();
        let fires = c.fires_between(utc("2026-03-07T12:00:00Z"), utc("2026-03-09T12:00:00Z"), 10);
        // 03-08 02:30 does not exist: 03:00 EDT = 07:00Z.
        assert_eq!(
            fires,
            vec![utc("2026-03-08T07:00:00Z"), utc("2026-03-09T06:30:00Z")]
        );
        let c = CronTz::parse("30 1 * * *", "America/New_York").unwrap();
        let fires = c.fires_between(utc("2026-10-31T12:00:00Z"), utc("2026-11-02T12:00:00Z"), 10);
        // 11-01 01:30 happens twice; once, at EDT (05:30Z).
        assert_eq!(
            fires,
            vec![utc("2026-11-01T05:30:00Z"), utc("2026-11-02T06:30:00Z")]
        );
    }

    #[test]
    fn plan_follows_policy_window_and_burst() {
        let now = utc("2026-01-01T12:00:00Z");
        let slots: Vec<_> = (0..=120)
            .rev()
            .map(|m| now - ChronoDuration::minutes(m))
            .collect();
        let count = |p: &[SlotPlan]| {
            p.iter()
                .filter(|x| matches!(x, SlotPlan::Fire { .. }))
                .count()
        };
        let g = Duration::from_secs(5);
        let w = Duration::from_secs(3600);
        // The slot at `now` is on time and always fires.
        assert_eq!(
            count(&plan_slots(&slots, now, g, w, CatchupPolicy::None, 10)),
            1
        );
        assert_eq!(
            count(&plan_slots(&slots, now, g, w, CatchupPolicy::Latest, 10)),
            1
        );
        assert_eq!(
            count(&plan_slots(&slots, now, g, w, CatchupPolicy::All, 10)),
            11
        );
        let old = &slots[..120];
        let p = plan_slots(old, now, g, w, CatchupPolicy::Latest, 10);
        assert_eq!(p[119], SlotPlan::Fire { catch_up: true });
        assert_eq!(count(&p), 1);
    }

    /// Expressions × zone × start → the next fire times (UTC), worked out by hand.
    #[test]
    fn table_of_expressions_and_fire_times() {
        let table: &[(&str, &str, &str, &[&str])] = &[
            // Both day fields restricted: the 1st of the month or any Monday.
            (
                "0 0 1 * MON",
                "UTC",
                "2026-01-01T00:00:00Z",
                &[
                    "2026-01-05T00:00:00Z",
                    "2026-01-12T00:00:00Z",
                    "2026-01-19T00:00:00Z",
                    "2026-01-26T00:00:00Z",
                    "2026-02-01T00:00:00Z", // a Sunday, the 1st
                    "2026-02-02T00:00:00Z",
                ],
            ),
            (
                "0 0 1 * MON",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                &[
                    "2026-03-29T22:00:00Z", // Mon 30 March, 00:00 CEST
                    "2026-03-31T22:00:00Z", // Wed 1 April
                    "2026-04-05T22:00:00Z", // Mon 6 April
                ],
            ),
            (
                "0 0 1 * MON",
                "America/New_York",
                "2026-10-31T12:00:00Z",
                &[
                    "2026-11-01T04:00:00Z", // Sun 1 November, 00:00 EDT
                    "2026-11-02T05:00:00Z", // Mon 2 November, 00:00 EST
                    "2026-11-09T05:00:00Z",
                ],
            ),
            // Friday the 13th in crontab is "the 13th or any Friday".
            (
                "0 12 13 * 5",
                "UTC",
                "2026-02-11T00:00:00Z",
                &[
                    "2026-02-13T12:00:00Z",
                    "2026-02-20T12:00:00Z",
                    "2026-02-27T12:00:00Z",
                    "2026-03-06T12:00:00Z",
                    "2026-03-13T12:00:00Z",
                ],
            ),
            // One day field `*` or `?`: the other alone decides.
            (
                "0 0 ? * MON",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"],
            ),
            (
                "0 0 1 * *",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"],
            ),
            (
                "*/15 9-17 * * MON-FRI",
                "UTC",
                "2026-01-02T17:30:00Z", // a Friday
                &[
                    "2026-01-02T17:45:00Z",
                    "2026-01-05T09:00:00Z",
                    "2026-01-05T09:15:00Z",
                    "2026-01-05T09:30:00Z",
                ],
            ),
            (
                "0 0 29 2 *",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
            ),
            // Crontab day-of-week numbers: 0 and 7 are Sunday, 1 is Monday.
            (
                "0 0 * * 0",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "0 0 * * 7",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            (
                "0 0 * * 1",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-05T00:00:00Z", "2026-01-12T00:00:00Z"],
            ),
            (
                "30 0 12 * * *",
                "UTC",
                "2026-01-01T12:00:30Z",
                &["2026-01-02T12:00:30Z"],
            ),
            (
                "@daily",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                &[
                    "2026-03-28T23:00:00Z",
                    "2026-03-29T22:00:00Z",
                    "2026-03-30T22:00:00Z",
                ],
            ),
            (
                "@weekly",
                "UTC",
                "2026-01-01T00:00:00Z",
                &["2026-01-04T00:00:00Z", "2026-01-11T00:00:00Z"],
            ),
            // Interval jobs follow real time: 02:00 does not exist on 29 March...
            (
                "@hourly",
                "Europe/Berlin",
                "2026-03-29T00:30:00Z",
                &[
                    "2026-03-29T01:00:00Z",
                    "2026-03-29T02:00:00Z",
                    "2026-03-29T03:00:00Z",
                ],
            ),
            // ...and 02:00 happens twice on 25 October.
            (
                "@hourly",
                "Europe/Berlin",
                "2026-10-24T23:30:00Z",
                &[
                    "2026-10-25T00:00:00Z",
                    "2026-10-25T01:00:00Z",
                    "2026-10-25T02:00:00Z",
                    "2026-10-25T03:00:00Z",
                ],
            ),
            (
                "*/30 * * * *",
                "America/New_York",
                "2026-11-01T05:00:00Z",
                &[
                    "2026-11-01T05:30:00Z",
                    "2026-11-01T06:00:00Z",
                    "2026-11-01T06:30:00Z",
                    "2026-11-01T07:00:00Z",
                ],
            ),
            // Fixed-time jobs: once right after a gap, once (the first) in a fold.
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-03-28T12:00:00Z",
                &["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"],
            ),
            (
                "30 2 * * *",
                "Europe/Berlin",
                "2026-10-24T12:00:00Z",
                &["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"],
            ),
            (
                "30 2 * * *",
                "America/New_York",
                "2026-03-07T12:00:00Z",
                &["2026-03-08T07:00:00Z", "2026-03-09T06:30:00Z"],
            ),
            (
                "30 1 * * *",
                "America/New_York",
                "2026-10-31T12:00:00Z",
                &["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"],
            ),
            // Either-day rule and a gap at once: Sunday 29 March (a Sunday, not the 1st).
            (
                "30 2 1 * SUN",
                "Europe/Berlin",
                "2026-03-22T12:00:00Z",
                &["2026-03-29T01:00:00Z", "2026-04-01T00:30:00Z"],
            ),
        ];
        for (expr, tz, start, want) in table {
            let c = CronTz::parse(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
            let want: Vec<_> = want.iter().map(|w| utc(w)).collect();
            let got = c.fires_between(utc(start), utc("2040-01-01T00:00:00Z"), want.len());
            assert_eq!(got, want, "{expr} in {tz} after {start}");
        }
    }

    /// The fires of `expr` in `(start, end]`, by brute force: every wall minute of the
    /// window checked against the fields, then mapped to instants by the DST rules
    /// (gap: fixed-time jobs once at the first existing minute after, interval jobs not
    /// at all; fold: fixed-time jobs at the first instant, interval jobs at both).
    fn brute_force(
        expr: &str,
        tz: Tz,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        let f = cron_expr::Fields::parse(expr).unwrap();
        let interval = f.every_hour();
        let mut wall = start.with_timezone(&tz).naive_local() - ChronoDuration::days(1);
        let wall_end = end.with_timezone(&tz).naive_local() + ChronoDuration::days(1);
        let mut out = Vec::new();
        while wall <= wall_end {
            if f.matches(wall) {
                match tz.from_local_datetime(&wall) {
                    LocalResult::Single(d) => out.push(d.with_timezone(&Utc)),
                    LocalResult::Ambiguous(e, l) => {
                        out.push(e.with_timezone(&Utc));
                        if interval {
                            out.push(l.with_timezone(&Utc));
                        }
                    }
                    LocalResult::None if interval => {}
                    LocalResult::None => {
                        let mut w = wall;
                        loop {
                            w += ChronoDuration::minutes(1);
                            if let Some(d) = tz.from_local_datetime(&w).earliest() {
                                out.push(d.with_timezone(&Utc));
                                break;
                            }
                        }
                    }
                }
            }
            wall += ChronoDuration::minutes(1);
        }
        out.sort();
        out.dedup();
        out.retain(|t| *t > start && *t <= end);
        out
    }

    /// Generated expressions, enumerated by the scheduler's arithmetic and by brute
    /// force over windows around month ends and the DST changes of two zones.
    #[test]
    fn fires_match_brute_force_minute_enumeration() {
        const MINUTE: &[&str] = &["*", "0", "*/15", "5,35", "10-20/5", "59", "30"];
        const HOUR: &[&str] = &["*", "0", "2", "1-3", "9-17", "*/6", "23", "2,3"];
        const DOM: &[&str] = &["*", "1", "13", "29-31", "1-7", "*/10", "?", "25"];
        const MONTH: &[&str] = &["*", "2", "3,10,11", "JAN-JUN", "*/3", "3", "OCT-DEC"];
        const DOW: &[&str] = &[
            "*", "0", "7", "1", "MON-FRI", "5-7", "FRI-SUN", "?", "*/2", "SUN", "6",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut pick = |xs: &[&'static str]| -> &'static str {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            xs[(seed >> 33) as usize % xs.len()]
        };
        let mut exprs: Vec<String> = [
            "0 0 1 * MON",
            "*/15 9-17 * * MON-FRI",
            "0 0 29 2 *",
            "@daily",
            "@hourly",
            "30 2 * * *",
            "30 1 * * *",
            "0,30 2,3 * * *",
            "0 0 13 * 5",
            "15 2 1 * SUN",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for _ in 0..40 {
            exprs.push(format!(
                "{} {} {} {} {}",
                pick(MINUTE),
                pick(HOUR),
                pick(DOM),
                pick(MONTH),
                pick(DOW)
            ));
        }
        let windows: &[(&str, &str, &str)] = &[
            ("UTC", "2026-01-25T00:00:00Z", "2026-03-05T00:00:00Z"),
            (
                "Europe/Berlin",
                "2026-03-24T00:00:00Z",
                "2026-04-03T00:00:00Z",
            ),
            (
                "Europe/Berlin",
                "2026-10-21T00:00:00Z",
                "2026-11-02T00:00:00Z",
            ),
            (
                "America/New_York",
                "2026-03-04T00:00:00Z",
                "2026-03-12T00:00:00Z",
            ),
            (
                "America/New_York",
                "2026-10-28T00:00:00Z",
                "2026-11-05T00:00:00Z",
            ),
        ];
        for expr in &exprs {
            for (tz, start, end) in windows {
                let c = CronTz::compile(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
                let (start, end) = (utc(start), utc(end));
                let got = c.fires_between(start, end, usize::MAX);
                let want = brute_force(expr, c.timezone(), start, end);
                assert_eq!(got, want, "{expr} in {tz}");
            }
        }
    }
}
