//! [`DockerGarbageCollector`]: the last layer of cleanup (DESIGN "Layers of cleanup").
//! Every worker runs one, and `highway gc` runs one alone; each works on the Docker
//! daemon its client talks to (identified by the daemon's ID) and only on containers
//! labelled `highway.managed=true` with its own deployment name *and* its database's
//! deployment identity ([`Deployment::ownership`]); others are counted as `foreign` and
//! never touched. Many collectors on one daemon are safe: removals are idempotent and
//! every row change is fenced.
//!
//! One pass ([`DockerGarbageCollector::run_once`]):
//! 1. read, and stop if any read fails (never act on partial information, R24): the
//!    daemon's ID and clock, Postgres' clock, the deployment identity, every labelled
//!    container in all states (created and exited ones too), what Postgres knows about each (activity, attempt, lease, run, tracking
//!    row), and the placeholder rows of the daemon;
//! 2. judge each container ([`judge`], a pure function): untracked ones only past a
//!    creation grace on the *daemon's* clock (the host's clock may differ), remove it when its activity is gone (orphan), finished
//!    (terminal), on a newer attempt, or its lease expired by Postgres' `now()`; a
//!    detached one when its run ended or its TTL passed; a kept one when its retention
//!    passed; any one older than `max_age` unless `gc_protected_until` is in the future;
//!    a cancelled one whose owner did not finish the cancel in time;
//! 3. act (unless dry-run, at most `max_per_pass` removals): stop with grace, remove
//!    with `force, v`, record who and why on the tracking row and in the audit log;
//!    resolve `pending:<name>` rows by name; mark rows whose container vanished.
//!
//! Also owns [`stop_container`] and [`stop_and_remove`], the one stop/remove sequence
//! with its timestamped steps, shared with the run handler's stop path.
//! Must not: call bollard (that is `client.rs`) or speak SQL (that is `gc_store.rs`).

use crate::docker::client::{self, DockerClient, Removed};
use crate::docker::deployment::{Deployment, Ownership};
use crate::docker::gc_store::{self, Facts, Removal};
use crate::docker::spec::labels;
use crate::docker::tracking::{self, AuditEvent};
use bollard::models::ContainerSummary;
use serde_json::json;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// Why a pass did nothing. "Shut down" is not an error here: `run` just returns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not be read: nothing was done.
    #[error("garbage collector did nothing: docker unreachable: {0}")]
    Docker(#[from] client::Error),
    /// Postgres could not be read: nothing was done.
    #[error("garbage collector did nothing: postgres unreachable: {0}")]
    Database(#[from] sqlx::Error),
    /// The deployment identity is missing or malformed: nothing was done.
    #[error("garbage collector did nothing: {0}")]
    Identity(#[from] crate::db::settings::Error),
    /// A Postgres read did not answer within the deadline (a hung connection).
    #[error("garbage collector did nothing: postgres did not answer within {0:?}")]
    DatabaseTimeout(Duration),
    #[error("invalid garbage collector option {name}: {reason}")]
    InvalidOptions { name: &'static str, reason: String },
}

pub use crate::config::gc::{GcOptions, InvalidGcOption};

impl From<InvalidGcOption> for Error {
    fn from(e: InvalidGcOption) -> Self {
        Error::InvalidOptions {
            name: e.name,
            reason: e.reason,
        }
    }
}

/// Why the collector removes a container (`removed_reason`, audit `details.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Its activity does not exist (or it names none).
    Orphan,
    /// Its activity finished.
    Terminal,
    /// Its activity runs a newer attempt.
    OlderAttempt,
    /// Its attempt's lease expired (by Postgres `now()`), or the attempt was taken back.
    LeaseExpired,
    /// Detached: its workflow run ended.
    DetachedRunEnded,
    /// Detached: its `detach_expires_at` (TTL) passed.
    DetachedExpired,
    /// Older than `max_age` and not protected.
    MaxAge,
    /// Kept (`auto_remove: false`): its `gc_protected_until` passed.
    RetentionExpired,
    /// Its cancellation was requested long ago and the owner did not finish it.
    CancelTakeover,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Orphan => "orphan",
            Reason::Terminal => "terminal",
            Reason::OlderAttempt => "older_attempt",
            Reason::LeaseExpired => "lease_expired",
            Reason::DetachedRunEnded => "detached_run_ended",
            Reason::DetachedExpired => "detached_expired",
            Reason::MaxAge => "max_age",
            Reason::RetentionExpired => "retention_expired",
            Reason::CancelTakeover => "cancel_takeover",
        }
    }
}

/// What [`judge`] decided for one container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Younger than the creation grace.
    Young,
    /// Its attempt runs under a live lease (or a detached run still belongs to it).
    Live,
    /// `gc_protected_until` is in the future.
    Protected,
    /// The labels and the database disagree in a way no removal rule covers (an attempt
    /// newer than the activity's): left alone, `max_age` catches it.
    Unsure,
    Remove(Reason),
}

/// What one pass saw and did; tests assert on these.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcCounts {
    /// Labelled containers of this deployment on the daemon.
    pub listed: u64,
    /// `highway.managed` containers on the daemon that are not ours (another database's
    /// identity or another deployment name): never touched, only counted.
    pub foreign: u64,
    /// Of those, containers with our deployment name but no identity label (made before
    /// identities existed): ours only with `--adopt-unlabelled-containers`.
    pub unlabelled: u64,
    pub young: u64,
    pub live: u64,
    pub protected: u64,
    pub unsure: u64,
    /// Removed (or, in dry-run, that would have been), by reason.
    pub removed: BTreeMap<&'static str, u64>,
    /// Dry-run: removals judged but not done.
    pub dry_run: bool,
    /// Judged removable but left for the next pass (per-pass cap).
    pub deferred: u64,
    /// Removals that failed (retried next pass).
    pub failed: u64,
    /// Tracking rows whose container vanished, marked `missing`.
    pub missing: u64,
    /// Placeholder rows whose container was found by name (now tracked by id).
    pub pending_adopted: u64,
    /// Placeholder rows closed: the create never happened.
    pub pending_closed: u64,
    /// Committed snapshot images removed (or found gone) after their TTL.
    pub images_removed: u64,
    /// Dry-run: each container the pass would remove, with its reason (`GET /v1/gc/plan`).
    pub planned: Vec<Planned>,
}

/// A removal a dry-run pass judged but did not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub tenant_id: String,
    pub activity_id: Option<Uuid>,
    pub attempt: Option<i32>,
    /// On the daemon's clock.
    pub age: Duration,
    pub running: bool,
    pub reason: Reason,
}

impl GcCounts {
    /// Removals of this pass (all reasons).
    pub fn removed_total(&self) -> u64 {
        self.removed.values().sum()
    }

    pub fn removed_for(&self, reason: Reason) -> u64 {
        self.removed.get(reason.as_str()).copied().unwrap_or(0)
    }

    /// Something changed (or would have): worth a log line.
    pub fn acted(&self) -> bool {
        self.removed_total()
            + self.failed
            + self.missing
            + self.pending_adopted
            + self.pending_closed
            + self.deferred
            + self.images_removed
            > 0
    }
}

/// A listed container, with its labels parsed.
#[derive(Debug, Clone)]
pub struct Listed {
    pub id: String,
    pub name: String,
    pub image: String,
    /// Seconds since creation, on the daemon's clock.
    pub age: Duration,
    pub running: bool,
    /// Ran and ended (`exited`; not `created` or `dead`).
    pub exited: bool,
    pub activity_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub attempt: Option<i32>,
    pub tenant_id: String,
    pub detached: bool,
    pub labels: HashMap<String, String>,
}

impl Listed {
    fn from_summary(
        c: ContainerSummary,
        daemon_now: chrono::DateTime<chrono::Utc>,
    ) -> Option<Self> {
        let id = c.id?;
        let labels = c.labels.unwrap_or_default();
        let label = |k: &str| labels.get(k).cloned();
        // `Created` has whole seconds: the container was created somewhere within that
        // second, so count from its end. The grace is then never cut short (R23).
        let created =
            chrono::DateTime::from_timestamp(c.created.unwrap_or(0) + 1, 0).unwrap_or(daemon_now);
        let age = (daemon_now - created).to_std().unwrap_or(Duration::ZERO);
        let running = matches!(
            c.state,
            Some(
                bollard::models::ContainerSummaryStateEnum::RUNNING
                    | bollard::models::ContainerSummaryStateEnum::PAUSED
                    | bollard::models::ContainerSummaryStateEnum::RESTARTING
            )
        );
        let exited = c.state == Some(bollard::models::ContainerSummaryStateEnum::EXITED);
        let name = c
            .names
            .unwrap_or_default()
            .into_iter()
            .next()
            .map(|n| n.trim_start_matches('/').to_string())
            .unwrap_or_default();
        Some(Self {
            name,
            image: c.image.unwrap_or_default(),
            age,
            running,
            exited,
            activity_id: label(labels::ACTIVITY_ID).and_then(|v| v.parse().ok()),
            run_id: label(labels::WORKFLOW_RUN_ID).and_then(|v| v.parse().ok()),
            attempt: label(labels::ATTEMPT).and_then(|v| v.parse().ok()),
            tenant_id: label(labels::TENANT_ID).unwrap_or_default(),
            detached: label(labels::DETACHED).as_deref() == Some("true"),
            labels,
            id,
        })
    }

    /// `highway.ttl_seconds` (detached TTL), for a container whose row is missing.
    fn ttl(&self) -> Option<Duration> {
        self.labels
            .get(labels::TTL_SECONDS)
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_secs)
    }
}

/// The decision for one container. Pure: every time it needs was read by Postgres
/// (`facts`) or measured on the daemon's clock (`c.age`).
pub fn judge(c: &Listed, f: &Facts, o: &GcOptions) -> Verdict {
    if !f.tracked && c.age < o.creation_grace {
        return Verdict::Young;
    }
    if f.protected == Some(true) {
        return Verdict::Protected;
    }
    if f.protection_passed == Some(true) {
        return Verdict::Remove(Reason::RetentionExpired);
    }
    if !o.max_age.is_zero() && c.age > o.max_age {
        return Verdict::Remove(Reason::MaxAge);
    }
    let (Some(status), Some(current), Some(attempt)) =
        (f.activity_status.as_deref(), f.activity_attempt, c.attempt)
    else {
        // No such activity, or labels that name none: nothing owns it.
        return Verdict::Remove(Reason::Orphan);
    };
    if attempt < current {
        // An older attempt's container that exited by itself while the current attempt
        // holds its lease: that attempt may be taking its result over right now, and
        // removes it itself (a removal here would cut its read of logs and outputs).
        if c.exited
            && f.stop_sent != Some(true)
            && status == "running"
            && f.lease_live == Some(true)
        {
            return Verdict::Live;
        }
        return Verdict::Remove(Reason::OlderAttempt);
    }
    if attempt > current {
        return Verdict::Unsure;
    }
    let attempt_live = status == "running" && f.lease_live == Some(true);
    if attempt_live {
        // The owner holds the lease. Only a cancel it did not finish in time is ours.
        return match f.cancel_age_s {
            Some(age) if age > (o.stop_grace + o.cancel_takeover).as_secs_f64() => {
                Verdict::Remove(Reason::CancelTakeover)
            }
            _ => Verdict::Live,
        };
    }
    if c.detached || f.detached == Some(true) {
        // The container belongs to the workflow run until the run ends or the TTL passes.
        if f.detach_expired == Some(true) {
            return Verdict::Remove(Reason::DetachedExpired);
        }
        if f.detach_expired.is_none() && c.ttl().is_some_and(|ttl| c.age > ttl) {
            return Verdict::Remove(Reason::DetachedExpired);
        }
        let run_ended = match (&f.run_status, f.run_exists) {
            (Some(s), true) => s != "running",
            // A run the labels name but that does not exist any more.
            (_, false) => c.run_id.is_some(),
            (None, true) => false,
        };
        if run_ended {
            return Verdict::Remove(Reason::DetachedRunEnded);
        }
        // A detached start whose activity did not succeed is not owned by anyone.
        return match status {
            "succeeded" => Verdict::Live,
            "scheduled" | "running" => Verdict::Remove(Reason::LeaseExpired),
            _ => Verdict::Remove(Reason::Terminal),
        };
    }
    match status {
        "succeeded" | "failed" | "cancelled" | "timed_out" => Verdict::Remove(Reason::Terminal),
        // The attempt's container exited by itself (no stop was ever sent) and the
        // activity is not over: that exit is the run's result, which the retry takes
        // over (or the frozen worker reports on waking) instead of running it again.
        // Kept until then; `max_age` still bounds it.
        _ if c.exited && f.stop_sent != Some(true) => Verdict::Live,
        // `scheduled` at the same attempt: the attempt was taken back (rescued/released).
        _ => Verdict::Remove(Reason::LeaseExpired),
    }
}

/// The collector. Cheap to build; `run` consumes it.
#[derive(Debug, Clone)]
pub struct DockerGarbageCollector {
    client: DockerClient,
    pool: PgPool,
    deployment: Deployment,
    /// `gc:<id>`: `removed_by` and the audit actor.
    actor: String,
    /// The worker this collector runs in (its `workers.daemon_id` is filled in).
    worker_id: Option<Uuid>,
    opts: GcOptions,
}

impl DockerGarbageCollector {
    /// `id` names the collector (`gc:<id>`); pass the worker's id when it runs inside a
    /// worker so `workers.daemon_id` is recorded.
    pub fn new(
        client: DockerClient,
        pool: PgPool,
        deployment: Deployment,
        id: Uuid,
        worker_id: Option<Uuid>,
        opts: GcOptions,
    ) -> Result<Self, Error> {
        opts.validate()?;
        if deployment.name().is_empty() {
            return Err(Error::InvalidOptions {
                name: "deployment",
                reason: "must not be empty".into(),
            });
        }
        Ok(Self {
            client,
            pool,
            deployment,
            actor: format!("gc:{id}"),
            worker_id,
            opts,
        })
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn options(&self) -> &GcOptions {
        &self.opts
    }

    async fn db<T>(
        &self,
        f: impl std::future::Future<Output = sqlx::Result<T>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.opts.db_timeout, f).await {
            Err(_) => Err(Error::DatabaseTimeout(self.opts.db_timeout)),
            Ok(r) => Ok(r?),
        }
    }

    /// One pass; see the module docs. `Err` means nothing was changed.
    pub async fn run_once(&self) -> Result<GcCounts, Error> {
        let o = &self.opts;
        // ---- 1. Read everything first; any failure ends the pass before any action.
        let clock = self.client.daemon_clock().await?;
        let deployment_id = match tokio::time::timeout(
            self.opts.db_timeout,
            self.deployment.id(&self.pool),
        )
        .await
        {
            Err(_) => return Err(Error::DatabaseTimeout(self.opts.db_timeout)),
            Ok(Err(crate::db::settings::Error::Db(e))) => return Err(Error::Database(e)),
            Ok(Err(e)) => return Err(Error::Identity(e)),
            Ok(Ok(id)) => id,
        };
        let listed_at = self.db(gc_store::db_now(&self.pool)).await?;
        // Every managed container on the daemon: ours are judged, the others only counted.
        let filters = vec![format!("{}=true", labels::MANAGED)];
        let summaries = self.client.list_by_labels(&filters).await?;
        let all: Vec<Listed> = summaries
            .into_iter()
            .filter_map(|c| Listed::from_summary(c, clock.now))
            .collect();
        // Every container on the daemon, ours or not: a row is only `missing` when its
        // container is really absent (an unlabelled one of ours still exists).
        let present: Vec<String> = all.iter().map(|c| c.id.clone()).collect();
        let (mut foreign, mut unlabelled) = (0, 0);
        let listed: Vec<Listed> = all
            .into_iter()
            .filter(
                |c| match self.deployment.ownership(deployment_id, &c.labels) {
                    Ownership::Ours => true,
                    Ownership::Unlabelled => {
                        unlabelled += 1;
                        foreign += 1;
                        false
                    }
                    Ownership::Foreign => {
                        foreign += 1;
                        false
                    }
                },
            )
            .collect();
        let ids: Vec<String> = listed.iter().map(|c| c.id.clone()).collect();
        let acts: Vec<Option<Uuid>> = listed.iter().map(|c| c.activity_id).collect();
        let runs: Vec<Option<Uuid>> = listed.iter().map(|c| c.run_id).collect();
        let facts = self
            .db(gc_store::facts(&self.pool, &ids, &acts, &runs))
            .await?;
        let grace = chrono::Duration::from_std(o.creation_grace).unwrap_or(chrono::Duration::MAX);
        let before = listed_at - grace;
        let pending = self
            .db(gc_store::pending_rows(
                &self.pool,
                &clock.id,
                self.deployment.name(),
                before,
            ))
            .await?;

        // ---- 2. Judge.
        let mut counts = GcCounts {
            listed: listed.len() as u64,
            foreign,
            unlabelled,
            dry_run: o.dry_run,
            ..GcCounts::default()
        };
        let by_id: HashMap<&str, &Facts> =
            facts.iter().map(|f| (f.container_id.as_str(), f)).collect();
        let mut removals: Vec<(Listed, Reason)> = Vec::new();
        for c in &listed {
            let missing = Facts::default();
            let f = by_id.get(c.id.as_str()).copied().unwrap_or(&missing);
            match judge(c, f, o) {
                Verdict::Young => counts.young += 1,
                Verdict::Live => counts.live += 1,
                Verdict::Protected => counts.protected += 1,
                Verdict::Unsure => {
                    counts.unsure += 1;
                    warn!(container_id = %c.id, attempt = ?c.attempt, activity_attempt = ?f.activity_attempt,
                          "gc: container labelled with an attempt newer than its activity's; left alone");
                }
                Verdict::Remove(r) => removals.push((c.clone(), r)),
            }
        }
        if removals.len() > o.max_per_pass {
            counts.deferred = (removals.len() - o.max_per_pass) as u64;
            // Oldest first: they have waited longest.
            removals.sort_by_key(|r| std::cmp::Reverse(r.0.age));
            removals.truncate(o.max_per_pass);
        }
        if o.dry_run {
            for (c, r) in &removals {
                *counts.removed.entry(r.as_str()).or_default() += 1;
                counts.planned.push(Planned {
                    container_id: c.id.clone(),
                    name: c.name.clone(),
                    image: c.image.clone(),
                    tenant_id: c.tenant_id.clone(),
                    activity_id: c.activity_id,
                    attempt: c.attempt,
                    age: c.age,
                    running: c.running,
                    reason: *r,
                });
                info!(container_id = %c.id, reason = r.as_str(), "gc (dry run): would remove");
            }
            return Ok(counts);
        }

        // ---- 3. Act.
        if let Err(e) = gc_store::record_daemon(&self.pool, self.worker_id, &clock.id, &ids).await {
            warn!(error = %e, "gc: could not record the daemon id");
        }
        let by_name: HashMap<&str, &Listed> = listed.iter().map(|c| (c.name.as_str(), c)).collect();
        for p in &pending {
            let name_hit = by_name.get(p.name.as_str());
            let res = match name_hit {
                Some(c) => {
                    match gc_store::adopt_pending(&self.pool, &p.container_id, &c.id).await {
                        Ok(1) => {
                            counts.pending_adopted += 1;
                            Ok(())
                        }
                        // Recorded under its id by its owner meanwhile: the placeholder is moot.
                        Ok(_) => gc_store::close_pending_row(
                            &self.pool,
                            &p.container_id,
                            &self.actor,
                            "pending_superseded",
                        )
                        .await
                        .map(|n| counts.pending_closed += n),
                        Err(e) => Err(e),
                    }
                }
                // Not on the daemon and its attempt is over: the create never happened.
                None if p.past_grace && !p.attempt_live => gc_store::close_pending_row(
                    &self.pool,
                    &p.container_id,
                    &self.actor,
                    "create_never_happened",
                )
                .await
                .map(|n| counts.pending_closed += n),
                None => Ok(()),
            };
            if let Err(e) = res {
                warn!(error = %e, row = %p.container_id, "gc: could not resolve a placeholder row");
            }
        }

        let mut set = JoinSet::new();
        let mut queue = removals.into_iter();
        loop {
            while set.len() < o.concurrency {
                let Some((c, reason)) = queue.next() else {
                    break;
                };
                let (client, pool, actor, daemon) = (
                    self.client.clone(),
                    self.pool.clone(),
                    self.actor.clone(),
                    clock.id.clone(),
                );
                let grace = o.stop_grace;
                set.spawn(async move {
                    let target = Target::from_listed(&c, &daemon);
                    let r =
                        stop_and_remove(&client, &pool, &target, grace, &actor, reason.as_str())
                            .await;
                    (c.id, reason, r)
                });
            }
            let Some(done) = set.join_next().await else {
                break;
            };
            match done {
                Ok((_, reason, Ok(_))) => *counts.removed.entry(reason.as_str()).or_default() += 1,
                Ok((id, reason, Err(e))) => {
                    counts.failed += 1;
                    warn!(container_id = %id, reason = reason.as_str(), error = %e, "gc: removal failed; retried next pass");
                }
                Err(e) => {
                    counts.failed += 1;
                    warn!(error = %e, "gc: removal task failed");
                }
            }
        }

        // Rows whose container vanished (removed outside highway, or by a cleanup that
        // could not record it). Judged against this pass's listing only.
        match gc_store::mark_absent_missing(
            &self.pool,
            &clock.id,
            self.deployment.name(),
            &present,
            before,
            listed_at,
            &self.actor,
            o.max_per_pass as i64,
        )
        .await
        {
            Ok(rows) => {
                counts.missing = rows.len() as u64;
                for r in rows {
                    let ev = AuditEvent {
                        tenant_id: &r.tenant_id,
                        actor: &self.actor,
                        action: "container.missing",
                        target: Some(&r.container_id),
                        activity_id: r.activity_id,
                        workflow_run_id: r.workflow_run_id,
                        outcome: "ok",
                        details: json!({"reason": "not_on_daemon", "daemon_id": clock.id}),
                    };
                    tracking::audit_or_warn(&self.pool, &ev).await;
                }
            }
            Err(e) => warn!(error = %e, "gc: could not mark vanished containers"),
        }
        // Snapshot images (`tools.docker.commit`) past their TTL, unless pinned.
        match crate::docker::tools::reap_expired_images(
            &self.client,
            &self.pool,
            &self.actor,
            &clock.id,
            o.max_per_pass as i64,
        )
        .await
        {
            Ok(r) => counts.images_removed = r.removed + r.gone,
            Err(e) => warn!(error = %e, "gc: expired images not reaped this pass"),
        }
        Ok(counts)
    }

    /// Passes every `period` (jittered) until `stop`; the first pass runs at once. A pass
    /// in progress is finished, never abandoned half-way.
    pub async fn run(self, stop: CancellationToken) {
        info!(actor = %self.actor, deployment = %self.deployment.name(), period_ms = self.opts.period.as_millis() as u64,
              dry_run = self.opts.dry_run, "garbage collector started");
        loop {
            // A pass stuck on a dead connection must not hold up the shutdown.
            let started = std::time::Instant::now();
            let Some(pass) = crate::periodic::pass_or_stop(&stop, self.run_once()).await else {
                return;
            };
            crate::metrics::gc_pass(started, pass.as_ref().ok().map(|c| c.removed_total()));
            match pass {
                Ok(c) if c.acted() => info!(
                    listed = c.listed,
                    removed = c.removed_total(),
                    reasons = ?c.removed,
                    dry_run = c.dry_run,
                    deferred = c.deferred,
                    failed = c.failed,
                    missing = c.missing,
                    pending_adopted = c.pending_adopted,
                    pending_closed = c.pending_closed,
                    images_removed = c.images_removed,
                    "garbage collector pass"
                ),
                Ok(_) => {}
                Err(e) => warn!(error = %e, "garbage collector pass skipped"),
            }
            tokio::select! {
                _ = tokio::time::sleep(jitter(self.opts.period)) => {}
                _ = stop.cancelled() => return,
            }
        }
    }
}

fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.9..=1.0))
}

/// A container to stop and remove, with what its tracking row and audit row need.
#[derive(Debug, Clone)]
pub struct Target {
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub tenant_id: String,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    pub attempt: Option<i32>,
    pub daemon_id: String,
    pub labels: serde_json::Value,
    /// It may be running: stop with grace before removing.
    pub running: bool,
}

impl Target {
    fn from_listed(c: &Listed, daemon_id: &str) -> Self {
        Self {
            container_id: c.id.clone(),
            name: c.name.clone(),
            image: c.image.clone(),
            tenant_id: c.tenant_id.clone(),
            activity_id: c.activity_id,
            workflow_run_id: c.run_id,
            attempt: c.attempt,
            daemon_id: daemon_id.to_string(),
            labels: json!(c.labels),
            running: c.running,
        }
    }
}

/// Stops a container with its steps timestamped on the tracking row: requested and
/// signalled (SIGTERM goes out with the stop call), then killed if the grace ran out
/// (the daemon sent SIGKILL) or the stop call failed and we killed it. The timestamps
/// let any worker see how far a stop got and finish it. Used by the run handler and
/// the collector alike. Step writes are best-effort: Postgres being down must never
/// keep a container running.
pub async fn stop_container(
    client: &DockerClient,
    pool: &PgPool,
    container_id: &str,
    grace: Duration,
    reason: &str,
) {
    // The step is recorded while the stop goes out, never before it: a hung Postgres
    // (R10) must not delay the SIGTERM, and the write is bounded so it cannot hold up
    // the rest of the stop either.
    let step = Duration::from_millis(500);
    let record = async {
        if let Ok(Err(e)) = tokio::time::timeout(
            step,
            gc_store::mark_stop_signalled(pool, container_id, reason),
        )
        .await
        {
            warn!(error = %e, "stop step `signalled` not recorded");
        }
    };
    let stop = async {
        let t0 = tokio::time::Instant::now();
        let call = client.stop_container(container_id, grace);
        let mut call = std::pin::pin!(call);
        let res = if grace.subsec_nanos() == 0 {
            call.await
        } else {
            // The daemon counts the grace in whole seconds (rounded up, so it is never
            // short); a fraction (a grace cut to what is left of a lease) ends with our
            // own SIGKILL on time. The stop call returns once the container is down.
            tokio::select! {
                r = &mut call => r,
                () = tokio::time::sleep(grace) => {
                    if let Err(e) = client.kill_container(container_id).await {
                        warn!(error = %e, "kill at the end of the grace failed");
                    }
                    call.await
                }
            }
        };
        // (killed, delivered): whether SIGKILL ended it, and whether any of our
        // requests may have reached the daemon at all.
        match res {
            // The daemon's stop returns once the container is down; taking the whole
            // grace means SIGTERM was not enough and the daemon sent SIGKILL.
            Ok(()) => (t0.elapsed() >= grace, true),
            Err(e) => {
                warn!(error = %e, "stop failed; killing");
                match client.kill_container(container_id).await {
                    Ok(()) => (true, true),
                    Err(k) => {
                        warn!(error = %k, "kill failed");
                        (true, may_have_reached(&e) || may_have_reached(&k))
                    }
                }
            }
        }
    };
    let ((), (killed, delivered)) = tokio::join!(record, stop);
    let step_write = if !delivered {
        // Neither request reached the daemon: if the container exits, it exits by
        // itself, with a result a retry may take over.
        gc_store::mark_stop_undelivered(pool, container_id).await
    } else if killed {
        gc_store::mark_killed(pool, container_id).await
    } else {
        gc_store::mark_stop_delivered(pool, container_id).await
    };
    if let Err(e) = step_write {
        warn!(error = %e, "stop step not recorded");
    }
}

/// Whether a failed request may still have reached the daemon. Refused connections and
/// an open circuit never sent it; a timeout may have (the daemon goes on stopping).
fn may_have_reached(e: &client::Error) -> bool {
    !matches!(
        e,
        client::Error::Unavailable { .. } | client::Error::Rejected { .. }
    )
}

/// Stop (with grace, if it may run), read the daemon's evidence of the end (exit code,
/// `FinishedAt`), remove with `force, v`, record the removal with its reason and that
/// evidence on the tracking row (created from the labels if missing) and in the audit
/// log. `Ok` once the container is gone, whoever removed it.
pub async fn stop_and_remove(
    client: &DockerClient,
    pool: &PgPool,
    t: &Target,
    grace: Duration,
    actor: &str,
    reason: &str,
) -> Result<Removed, client::Error> {
    if t.running {
        stop_container(client, pool, &t.container_id, grace, reason).await;
    }
    // The daemon's exit code and `FinishedAt` are read now, once it is down and before
    // the removal destroys them: the row records the container's real end, never the
    // removal time. An inspect that fails leaves the evidence empty, not the removal.
    let end = match client.container_end(&t.container_id).await {
        Ok(Some(e)) => e.evidence(),
        Ok(None) => Default::default(),
        Err(e) => {
            warn!(error = %e, container_id = %t.container_id, "inspect before removal failed");
            Default::default()
        }
    };
    let removed = client.remove_container(&t.container_id).await?;
    let why = match removed {
        Removed::Removed => reason.to_string(),
        Removed::AlreadyGone => format!("{reason} (already gone)"),
    };
    let rec = Removal {
        container_id: &t.container_id,
        name: &t.name,
        activity_id: t.activity_id,
        workflow_run_id: t.workflow_run_id,
        tenant_id: &t.tenant_id,
        image: &t.image,
        labels: t.labels.clone(),
        daemon_id: &t.daemon_id,
        attempt: t.attempt,
        removed_by: actor,
        reason: &why,
        end,
    };
    match gc_store::record_removal(pool, &rec).await {
        // Another remover recorded it first: its audit row says so, not ours.
        Ok(0) => {}
        Ok(_) => {
            let ev = AuditEvent {
                tenant_id: &t.tenant_id,
                actor,
                action: "container.remove",
                target: Some(&t.container_id),
                activity_id: t.activity_id,
                workflow_run_id: t.workflow_run_id,
                outcome: "ok",
                details: json!({"reason": why, "attempt": t.attempt, "daemon_id": t.daemon_id}),
            };
            tracking::audit_or_warn(pool, &ev).await;
        }
        // Gone from the daemon but not recorded: the next pass marks the row `missing`.
        Err(e) => warn!(error = %e, container_id = %t.container_id, "removal not recorded"),
    }
    info!(container_id = %t.container_id, reason = %why, actor, "container removed");
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(age_s: u64, attempt: Option<i32>) -> Listed {
        Listed {
            id: "c".into(),
            name: "n".into(),
            image: "i".into(),
            age: Duration::from_secs(age_s),
            running: true,
            exited: false,
            activity_id: Some(Uuid::nil()),
            run_id: None,
            attempt,
            tenant_id: "t".into(),
            detached: false,
            labels: HashMap::new(),
        }
    }

    fn act(status: &str, attempt: i32, lease_live: Option<bool>) -> Facts {
        Facts {
            container_id: "c".into(),
            activity_status: Some(status.into()),
            activity_attempt: Some(attempt),
            lease_live,
            run_exists: false,
            ..Facts::default()
        }
    }

    fn opts() -> GcOptions {
        GcOptions {
            creation_grace: Duration::from_secs(10),
            max_age: Duration::from_secs(1000),
            ..GcOptions::default()
        }
    }

    #[test]
    fn verdicts() {
        let o = opts();
        let j = |c: &Listed, f: &Facts| judge(c, f, &o);
        let c = listed(60, Some(1));
        // Young beats everything for an untracked container, even an orphan.
        assert_eq!(j(&listed(5, Some(1)), &Facts::default()), Verdict::Young);
        // The grace only covers the create → record window: a tracked container whose
        // attempt is over goes at once, a tracked live one stays.
        let tracked = |f: Facts| Facts { tracked: true, ..f };
        assert_eq!(
            j(
                &listed(5, Some(1)),
                &tracked(act("running", 1, Some(false)))
            ),
            Verdict::Remove(Reason::LeaseExpired)
        );
        assert_eq!(
            j(&listed(5, Some(1)), &tracked(act("succeeded", 1, None))),
            Verdict::Remove(Reason::Terminal)
        );
        assert_eq!(
            j(&listed(5, Some(1)), &tracked(act("running", 1, Some(true)))),
            Verdict::Live
        );
        assert_eq!(j(&c, &Facts::default()), Verdict::Remove(Reason::Orphan));
        assert_eq!(
            j(&listed(60, None), &act("running", 1, Some(true))),
            Verdict::Remove(Reason::Orphan)
        );
        assert_eq!(j(&c, &act("running", 1, Some(true))), Verdict::Live);
        assert_eq!(
            j(&c, &act("running", 1, Some(false))),
            Verdict::Remove(Reason::LeaseExpired)
        );
        assert_eq!(
            j(&c, &act("scheduled", 1, None)),
            Verdict::Remove(Reason::LeaseExpired)
        );
        assert_eq!(
            j(&c, &act("running", 2, Some(true))),
            Verdict::Remove(Reason::OlderAttempt)
        );
        assert_eq!(
            j(&c, &act("succeeded", 1, None)),
            Verdict::Remove(Reason::Terminal)
        );
        assert_eq!(
            j(&c, &act("cancelled", 1, None)),
            Verdict::Remove(Reason::Terminal)
        );
        assert_eq!(
            j(&listed(60, Some(3)), &act("running", 2, Some(true))),
            Verdict::Unsure
        );
        // Max age, unless protected.
        let old = listed(2000, Some(1));
        assert_eq!(
            j(&old, &act("running", 1, Some(true))),
            Verdict::Remove(Reason::MaxAge)
        );
        let kept = Facts {
            protected: Some(true),
            ..act("succeeded", 1, None)
        };
        assert_eq!(j(&old, &kept), Verdict::Protected);
        let passed = Facts {
            protection_passed: Some(true),
            protected: Some(false),
            ..act("succeeded", 1, None)
        };
        assert_eq!(j(&c, &passed), Verdict::Remove(Reason::RetentionExpired));
        // A cancel the owner did not finish.
        let mut f = act("running", 1, Some(true));
        f.cancel_age_s = Some(5.0);
        assert_eq!(j(&c, &f), Verdict::Live);
        f.cancel_age_s = Some((o.stop_grace + o.cancel_takeover).as_secs_f64() + 1.0);
        assert_eq!(j(&c, &f), Verdict::Remove(Reason::CancelTakeover));
    }

    #[test]
    fn an_exited_container_of_an_unfinished_activity_waits_for_its_retry() {
        let o = opts();
        let mut c = listed(100, Some(2));
        c.running = false;
        c.exited = true;
        // Exited by itself, the activity rescued (or its lease gone): kept for the retry.
        assert_eq!(judge(&c, &act("scheduled", 2, None), &o), Verdict::Live);
        assert_eq!(
            judge(&c, &act("running", 2, Some(false)), &o),
            Verdict::Live
        );
        // Stopped by us: its exit is no result.
        let mut f = act("scheduled", 2, None);
        f.stop_sent = Some(true);
        assert_eq!(judge(&c, &f, &o), Verdict::Remove(Reason::LeaseExpired));
        // Over, or a newer attempt runs: removed.
        assert_eq!(
            judge(&c, &act("succeeded", 2, None), &o),
            Verdict::Remove(Reason::Terminal)
        );
        // A newer attempt holds its lease: it takes the container over (or removes it)
        // itself; once its lease is gone, the container is an older attempt's.
        assert_eq!(judge(&c, &act("running", 3, Some(true)), &o), Verdict::Live);
        assert_eq!(
            judge(&c, &act("running", 3, Some(false)), &o),
            Verdict::Remove(Reason::OlderAttempt)
        );
        // Created and never started: nothing to take over.
        c.exited = false;
        assert_eq!(
            judge(&c, &act("scheduled", 2, None), &o),
            Verdict::Remove(Reason::LeaseExpired)
        );
    }

    #[test]
    fn detached_verdicts() {
        let o = opts();
        let mut c = listed(60, Some(1));
        c.detached = true;
        c.run_id = Some(Uuid::nil());
        let mut f = act("succeeded", 1, None);
        f.detached = Some(true);
        f.detach_expired = Some(false);
        f.run_exists = true;
        f.run_status = Some("running".into());
        assert_eq!(judge(&c, &f, &o), Verdict::Live);
        f.run_status = Some("cancelling".into());
        assert_eq!(judge(&c, &f, &o), Verdict::Remove(Reason::DetachedRunEnded));
        f.run_status = Some("running".into());
        f.detach_expired = Some(true);
        assert_eq!(judge(&c, &f, &o), Verdict::Remove(Reason::DetachedExpired));
        // Still inside its handler (lease live): not ours yet.
        let mut f = act("running", 1, Some(true));
        f.detached = Some(true);
        assert_eq!(judge(&c, &f, &o), Verdict::Live);
    }

    #[test]
    fn options_are_validated() {
        assert!(GcOptions::default().validate().is_ok());
        let o = GcOptions {
            max_per_pass: 0,
            ..GcOptions::default()
        };
        assert!(matches!(
            o.validate(),
            Err(InvalidGcOption {
                name: "max_per_pass",
                ..
            })
        ));
        let o = GcOptions {
            max_age: Duration::from_secs(1),
            ..GcOptions::default()
        };
        assert!(o.validate().is_err());
        let o = GcOptions {
            max_age: Duration::ZERO,
            ..GcOptions::default()
        };
        assert!(o.validate().is_ok());
    }
}
