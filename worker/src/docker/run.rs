//! The `tools.docker.run` handler: one attempt = one container, through the whole
//! lifecycle of DOCKER-NOTES "Recommended run sequence": validate → policy → secrets →
//! image per `pull_policy` → remove older attempts' containers → tracking row → create
//! (deterministic name, adopt on 409) → upload inputs → attach → start → wait (racing
//! timeout, cancellation, lease loss) → stop with grace → inspect → outputs → remove.
//!
//! Owns: the order of those steps, error classification (`HandlerError` types callers
//! branch on), and the cleanup guarantee: every path out of [`RunHandler::run`] — success,
//! non-zero exit, timeout, cancellation, an error at any step, or a panic — goes through
//! [`cleanup`], which stops (with grace) and removes the container with `force, v` and
//! closes its tracking row. If the handler future itself is dropped mid-run, a guard hands
//! the same cleanup to the runtime's task tracker.
//! Must not: speak SQL (that is `tracking`, `logs`, `artifacts`) or call bollard directly
//! (that is `client`).
//!
//! Error types returned (all `HandlerError::error_type`):
//! `InvalidParams`, `PolicyViolation`, `SecretNotFound` (non-retryable);
//! `ImageNotFound` (non-retryable: `never` and absent), `ImagePullFailed`;
//! `ArtifactNotFound`, `ArtifactCorrupt`, `InvalidInput`, `InputUploadFailed`, `CreateFailed`,
//! `StartFailed`, `OutputsRefused` (non-retryable when the request is at fault);
//! `NonZeroExit` and `Timeout` (retryable, the run result in `details`);
//! `Cancelled` (non-retryable); `LeaseLost`, `Shutdown`, `DockerUnavailable`,
//! `DatabaseUnavailable`, `PreviousAttemptLive`, `StaleAttempt`, `NameConflict`
//! (infrastructure: retried without burning an attempt); `HandlerPanic`.

use crate::docker::artifacts::{self, Producer};
use crate::docker::client::{self, ContainerEnd, Removed, WaitExit};
use crate::docker::deployment::Ownership;
use crate::docker::door::{self, Refused};
use crate::docker::gc;
use crate::docker::logs::{self, LogSender, Reader};
use crate::docker::registry_auth::{refusal_text, RegistryCredentials};
use crate::docker::runtime::{DockerRuntime, Failpoint};
use crate::docker::secrets::{Redactor, SecretError, SecretValue};
use crate::docker::spec::{self, labels, RunIdentity};
use crate::docker::tario::{self, InputData, TarError};
use crate::docker::tracking::{self, AuditEvent, ContainerRow};
use crate::executor::{
    ActivityContext, CancelReason, Handler, HandlerError, HandlerResult, LeaseCheck,
};
use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use highway_workflows::docker::{
    error_code, ArtifactRef, DockerRunParams, DockerRunResult, EnvValue, InputSource, PullPolicy,
    RunStatus, KIND,
};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// The handler registered as `tools.docker.run`.
#[derive(Debug, Clone)]
pub struct RunHandler {
    rt: Arc<DockerRuntime>,
}

impl RunHandler {
    pub fn new(rt: Arc<DockerRuntime>) -> Self {
        Self { rt }
    }
}

/// What cleanup needs to know, updated as the attempt progresses. Behind a `Mutex` so
/// the cleanup sees the latest state even after a panic unwound the attempt.
#[derive(Debug, Default, Clone)]
struct RunState {
    /// The deterministic name, set just before the first create call: from then on a
    /// container may exist even if we never learnt its id (a lost create reply).
    name: Option<String>,
    /// The placeholder tracking row was written.
    pending_row: bool,
    container_id: Option<String>,
    /// Start was (possibly) sent: cleanup stops with grace before removing.
    started: bool,
    exited: bool,
    /// An error path already stopped it (the cleanup only removes it).
    stopped: bool,
    /// `auto_remove: false` and the run finished: keep the container this long.
    keep: Option<Duration>,
    /// A detached run that started: the container outlives the attempt.
    detached: bool,
    stop_grace: Duration,
    /// Why the container is removed (`removed_reason`).
    reason: String,
    /// The daemon's evidence of the container's end, once inspect read it.
    end: Option<tracking::ExitEvidence>,
    redactor: Redactor,
}

fn update(state: &Mutex<RunState>, f: impl FnOnce(&mut RunState)) {
    f(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
}

fn snapshot(state: &Mutex<RunState>) -> RunState {
    state.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Hands the cleanup to the runtime's tracker if the handler future is dropped before
/// it ran the cleanup itself (the executor should never do that, but a container must
/// not leak if it does).
struct CleanupGuard {
    rt: Arc<DockerRuntime>,
    ctx: ActivityContext,
    state: Arc<Mutex<RunState>>,
    armed: bool,
}

impl Drop for CleanupGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (rt, ctx, state) = (self.rt.clone(), self.ctx.clone(), self.state.clone());
        update(&state, |s| {
            if s.reason.is_empty() {
                s.reason = "handler_dropped".into();
            }
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let tracker = rt.tracker().clone();
            let _entered = handle.enter();
            tracker.spawn(async move { cleanup(&rt, &ctx, &state).await });
        }
    }
}

/// An older attempt's container that ran and exited by itself (see
/// [`Attempt::remove_older_attempts`]).
#[derive(Debug)]
struct Exited {
    container_id: String,
    attempt: Option<i32>,
    end: ContainerEnd,
}

/// The result of a run whose container exited by itself: success on 0 (unless its
/// outputs were refused), a retryable `NonZeroExit` otherwise.
fn exited_outcome(
    exit_code: Option<i64>,
    oom_killed: bool,
    outputs_refused: Option<String>,
    details: Value,
) -> HandlerResult {
    match exit_code {
        Some(0) => match outputs_refused {
            None => Ok(details),
            Some(msg) => Err(HandlerError::non_retryable(
                "OutputsRefused",
                format!("the container succeeded but its outputs were refused: {msg}"),
            )
            .with_details(details)),
        },
        code => Err(HandlerError::retryable(
            "NonZeroExit",
            match code {
                Some(c) if oom_killed => {
                    format!("container exited with code {c} (killed by the OOM killer)")
                }
                Some(c) => format!("container exited with code {c}"),
                None => "container exit code unknown".to_string(),
            },
        )
        .with_details(details)),
    }
}

/// How the wait ended.
#[derive(Debug)]
enum Ending {
    Exited(WaitExit),
    TimedOut,
    Cancelled(CancelReason),
}

#[async_trait]
impl Handler for RunHandler {
    async fn run(&self, ctx: ActivityContext, params: Value) -> HandlerResult {
        let span = tracing::info_span!(
            "docker.run",
            activity_id = %ctx.activity_id,
            attempt = ctx.attempt,
            kind = %ctx.kind,
            container_id = tracing::field::Empty,
        );
        let state = Arc::new(Mutex::new(RunState::default()));
        let mut guard = CleanupGuard {
            rt: self.rt.clone(),
            ctx: ctx.clone(),
            state: state.clone(),
            armed: true,
        };
        let attempt = Attempt {
            rt: &self.rt,
            ctx: &ctx,
            state: &state,
            span: span.clone(),
        };
        let outcome = AssertUnwindSafe(attempt.run(params))
            .catch_unwind()
            .instrument(span.clone())
            .await;
        let outcome = match outcome {
            Ok(r) => r,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                let what = snapshot(&state).redactor.redact(&what);
                tracing::error!(parent: &span, panic = %what, "docker run handler panicked");
                update(&state, |s| s.reason = "handler_panic".into());
                Err(HandlerError::retryable(
                    "HandlerPanic",
                    format!("the docker run handler panicked: {what}"),
                ))
            }
        };
        cleanup(&self.rt, &ctx, &state).instrument(span).await;
        guard.armed = false;
        outcome
    }

    fn ready(&self) -> bool {
        self.rt.is_ready()
    }
}

/// One attempt, borrowed pieces.
struct Attempt<'a> {
    rt: &'a Arc<DockerRuntime>,
    ctx: &'a ActivityContext,
    state: &'a Arc<Mutex<RunState>>,
    span: tracing::Span,
}

/// Everything resolved before any Docker call.
struct Prepared {
    params: DockerRunParams,
    image: String,
    warnings: Vec<String>,
    secrets: BTreeMap<String, SecretValue>,
    env: Vec<(String, String)>,
}

impl Attempt<'_> {
    async fn run(self, raw: Value) -> HandlerResult {
        self.ctx.record_heartbeat(json!({"phase": "validating"}));
        let prepared = self.prepare(&raw).await?;
        update(self.state, |s| {
            s.stop_grace = prepared.params.stop_grace.0;
            s.reason = "failed".into();
        });
        let writer = logs::Writer::spawn(
            self.rt.pool.clone(),
            self.ctx.activity_id,
            self.ctx.attempt,
            &self.rt.settings.logs,
        );
        let sys = writer.sender();
        let mut reader_slot: Option<Reader> = None;
        let res = AssertUnwindSafe(self.lifecycle(&prepared, &sys, &mut reader_slot))
            .catch_unwind()
            .await;
        if let Some(reader) = reader_slot.take() {
            // An early exit: the container may still be running; stop reading now.
            reader.finish(Duration::ZERO).await;
        }
        let res = match res {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        if res.is_err() {
            // An error may have left the container running: stop it before the log
            // flush below, which waits on Postgres. A hung database (R10) must not keep
            // the container running past the lease.
            if let Some(id) = snapshot(self.state).container_id {
                stop_if_running(self.rt, self.ctx, self.state, &id).await;
            }
        }
        match &res {
            Ok(_) => sys.system("highway: run finished"),
            Err(e) => sys.system(format!("highway: run failed: {}", e.error_type)),
        }
        drop(sys);
        // After a shutdown or a lost lease Postgres may be what failed: the last lines
        // get a short flush so the attempt's end (and the worker's) is not held up.
        let flush = match self.ctx.cancel_reason() {
            Some(CancelReason::Shutdown | CancelReason::LeaseLost) => {
                self.rt.settings.log_flush_timeout.min(LOG_FLUSH_WHEN_LOST)
            }
            _ => self.rt.settings.log_flush_timeout,
        };
        let stats = writer.finish(flush).await;
        if stats.lines_dropped > 0 || stats.lines_over_cap > 0 {
            tracing::info!(
                lines_stored = stats.lines_stored,
                lines_over_cap = stats.lines_over_cap,
                lines_dropped = stats.lines_dropped,
                "activity log capped"
            );
        }
        res
    }

    /// Validation, policy and secret resolution: pure refusals before any side effect.
    async fn prepare(&self, raw: &Value) -> Result<Prepared, HandlerError> {
        // The same admission as the API's door, against this worker's policy.
        let admitted = door::admit(KIND, raw, &self.rt.config.policy).map_err(|r| match r {
            Refused::Invalid(e) => {
                HandlerError::invalid_params(format!("`{}`: {}", e.field, e.reason))
                    .with_details(json!({"code": error_code(&e), "field": e.field}))
            }
            Refused::Policy(e) => HandlerError::non_retryable("PolicyViolation", e.to_string())
                .with_details(json!({
                    "code": e.code(),
                    "refusal": e.refusal.as_str(),
                    "field": e.field,
                })),
        })?;
        let warnings = admitted.warnings;
        let params = admitted
            .run
            .ok_or_else(|| HandlerError::invalid_params("params of another kind"))?;
        let image = params
            .image_ref()
            .map(|r| r.to_string())
            .map_err(|e| HandlerError::invalid_params(format!("`image`: {e}")))?;
        let mut secrets = BTreeMap::new();
        for name in params.secret_names() {
            let v = self
                .rt
                .secrets
                .resolve(&self.ctx.tenant_id, name)
                .await
                .map_err(|e| match e {
                    SecretError::Unavailable(_) => {
                        HandlerError::infrastructure("SecretStoreUnavailable", e.to_string())
                    }
                    _ => HandlerError::non_retryable("SecretNotFound", e.to_string()),
                })?;
            secrets.insert(name.to_string(), v);
        }
        let env = params
            .environment
            .iter()
            .map(|(k, v)| match v {
                EnvValue::Plain(s) => (k.clone(), s.clone()),
                EnvValue::Secret(n) => (
                    k.clone(),
                    secrets
                        .get(n)
                        .map(|s| s.expose().to_string())
                        .unwrap_or_default(),
                ),
            })
            .collect();
        let redactor = Redactor::new(secrets.values());
        update(self.state, |s| s.redactor = redactor);
        Ok(Prepared {
            params,
            image,
            warnings,
            secrets,
            env,
        })
    }

    fn redactor(&self) -> Redactor {
        snapshot(self.state).redactor
    }

    /// A tracking-table write that gives way to a cancellation. With Postgres cut off (a
    /// blackholed network, R10) a write can hang for minutes, and a lease lost meanwhile
    /// must still stop the container before the lease ends: the error path stops and
    /// removes it through the daemon.
    async fn tracked<T>(
        &self,
        write: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, HandlerError> {
        match give_way_to_cancel(self.ctx, write).await {
            Some(r) => r.map_err(db_error),
            None => Err(cancel_error(self.ctx.cancel_reason())),
        }
    }

    fn check_cancelled(&self) -> Result<(), HandlerError> {
        if self.ctx.is_cancelled() {
            Err(cancel_error(self.ctx.cancel_reason()))
        } else {
            Ok(())
        }
    }

    fn audit_event<'e>(
        &'e self,
        actor: &'e str,
        action: &'e str,
        target: Option<&'e str>,
        outcome: &'e str,
        details: Value,
    ) -> AuditEvent<'e> {
        AuditEvent {
            tenant_id: &self.ctx.tenant_id,
            actor,
            action,
            target,
            activity_id: Some(self.ctx.activity_id),
            workflow_run_id: self.ctx.workflow_run_id,
            outcome,
            details,
        }
    }

    async fn audit(&self, action: &str, target: Option<&str>, outcome: &str, details: Value) {
        let actor = self.rt.actor();
        let ev = self.audit_event(&actor, action, target, outcome, details);
        // Like `tracked`: a hung audit write must not hold the attempt past a cancel.
        if give_way_to_cancel(self.ctx, tracking::audit_or_warn(&self.rt.pool, &ev))
            .await
            .is_none()
        {
            tracing::warn!(
                action,
                "audit row not written: Postgres did not answer before the attempt was stopped"
            );
        }
    }

    /// Everything from the image to the result. Anything it creates is cleaned by the
    /// caller's `cleanup`, whatever it returns.
    async fn lifecycle(
        &self,
        p: &Prepared,
        sys: &LogSender,
        reader_slot: &mut Option<Reader>,
    ) -> HandlerResult {
        let rt = self.rt;
        let ctx = self.ctx;
        let params = &p.params;
        let mut warnings = p.warnings.clone();

        let daemon_id = rt
            .client
            .daemon_id()
            .await
            .map_err(|e| docker_error("CreateFailed", e, &self.redactor()))?;

        self.check_cancelled()?;
        self.ensure_image(&p.image, params.pull_policy, sys).await?;

        let deployment_id = rt
            .deployment
            .id(&rt.pool)
            .await
            .map_err(|e| HandlerError::infrastructure("DatabaseUnavailable", e.to_string()))?;

        self.check_cancelled()?;
        if let Some(prev) = self
            .remove_older_attempts(&daemon_id, deployment_id, params)
            .await?
        {
            return self.take_over_exited(prev, p, sys, warnings).await;
        }

        // Tracking row first: a crash between here and create leaves a trace.
        let ident = RunIdentity {
            activity_id: ctx.activity_id,
            attempt: ctx.attempt,
            tenant_id: ctx.tenant_id.clone(),
            workflow_run_id: ctx.workflow_run_id,
            worker_id: rt.worker_id,
            deployment: rt.deployment.name().to_string(),
            deployment_id,
        };
        let (body, spec_warnings) = spec::container_config(params, &rt.config, &ident, &p.env);
        warnings.extend(spec_warnings);
        let name = spec::container_name(ctx.activity_id, ctx.attempt);
        let row = ContainerRow {
            name: name.clone(),
            activity_id: ctx.activity_id,
            workflow_run_id: ctx.workflow_run_id,
            tenant_id: ctx.tenant_id.clone(),
            image: p.image.clone(),
            labels: json!(body.labels.clone().unwrap_or_default()),
            worker_id: rt.worker_id,
            daemon_id: daemon_id.clone(),
            attempt: ctx.attempt,
        };
        self.tracked(tracking::insert_pending(&rt.pool, &row))
            .await?;
        update(self.state, |s| {
            s.pending_row = true;
            s.name = Some(name.clone());
        });

        self.check_cancelled()?;
        ctx.record_heartbeat(json!({"phase": "creating", "name": name}));
        let (id, create_warnings) = self.create(&name, body).await?;
        warnings.extend(create_warnings.into_iter().map(|w| format!("docker: {w}")));
        update(self.state, |s| s.container_id = Some(id.clone()));
        self.span.record("container_id", id.as_str());
        self.tracked(tracking::record_created(&rt.pool, &row, &id))
            .await?;
        self.audit(
            "container.create",
            Some(&id),
            "ok",
            json!({"name": name, "image": p.image}),
        )
        .await;
        let short: String = id.chars().take(12).collect();
        sys.system(format!("highway: created container {short} ({})", p.image));
        if rt.settings.failpoint == Some(Failpoint::PanicAfterCreate) {
            panic!("failpoint: panic after create");
        }

        self.check_cancelled()?;
        self.upload_inputs(&id, p).await?;

        // Attach before start (nothing is lost), and drain it from now on (F10).
        let stream = rt
            .client
            .attach(&id)
            .await
            .map_err(|e| docker_error("StartFailed", e, &self.redactor()))?;
        *reader_slot = Some(Reader::spawn(
            stream,
            self.redactor(),
            &rt.settings.logs,
            Some(sys.clone()),
        ));

        self.check_cancelled()?;
        self.confirm_lease_before_start(&id, sys).await?;
        update(self.state, |s| s.started = true);
        rt.client
            .start_container(&id)
            .await
            .map_err(|e| docker_error("StartFailed", e, &self.redactor()))?;
        let started = Instant::now();
        let _running = crate::metrics::container_started();
        self.tracked(tracking::mark_running(&rt.pool, &id)).await?;
        sys.system("highway: container started");
        if rt.settings.failpoint == Some(Failpoint::PanicAfterStart) {
            panic!("failpoint: panic after start");
        }
        tracing::info!(container_id = %id, image = %p.image, "container started");

        if params.detach {
            let ttl = params.detach_ttl.0;
            self.tracked(tracking::mark_detached(&rt.pool, &id, ttl))
                .await?;
            update(self.state, |s| s.detached = true);
            self.audit(
                "container.detach",
                Some(&id),
                "ok",
                json!({"ttl_seconds": ttl.as_secs()}),
            )
            .await;
            let captured = match reader_slot.take() {
                Some(r) => r.finish(Duration::ZERO).await,
                None => logs::Captured::default(),
            };
            let result = DockerRunResult {
                container_id: id.clone(),
                short_id: short,
                status: RunStatus::Running,
                exit_code: None,
                stdout: captured.stdout,
                stderr: captured.stderr,
                logs_truncated: captured.truncated,
                duration_ms: started.elapsed().as_millis() as u64,
                image: p.image.clone(),
                oom_killed: false,
                warnings: redact_all(&self.redactor(), warnings),
                outputs: None,
            };
            return Ok(to_json(&result));
        }

        ctx.record_heartbeat(json!({"phase": "running", "container_id": id}));
        let ending = self.wait(&id, params, started).await?;
        let stop_reason = match &ending {
            Ending::Exited(_) => None,
            Ending::TimedOut => Some("timeout".to_string()),
            Ending::Cancelled(r) => Some(format!("{r:?}").to_lowercase()),
        };
        if let Some(why) = &stop_reason {
            let grace = grace_within_lease(self.ctx, params.stop_grace.0);
            sys.system(format!(
                "highway: stopping container ({why}): SIGTERM, SIGKILL after {:.1}s",
                grace.as_secs_f64()
            ));
            ctx.record_heartbeat(json!({"phase": "stopping", "container_id": id, "reason": why}));
            self.stop(&id, grace).await;
        }
        let duration_ms = started.elapsed().as_millis() as u64;

        let captured = match reader_slot.take() {
            Some(r) => r.finish(rt.settings.attach_drain_grace).await,
            None => logs::Captured::default(),
        };
        if let Some(e) = &captured.stream_error {
            warnings.push(format!("log stream ended with an error: {e}"));
        }
        if captured.lines_dropped > 0 {
            warnings.push(format!(
                "{} log lines were not stored because the log writer fell behind",
                captured.lines_dropped
            ));
        }

        // Exit code and OOM from inspect (authoritative); wait's code as a fallback.
        let (exit_code, oom_killed, finished_at) = self.inspect_exit(&id, &ending).await;
        update(self.state, |s| {
            s.exited = true;
            s.end = Some(tracking::ExitEvidence {
                exit_code,
                oom_killed: Some(oom_killed),
                finished_at,
            });
            s.reason = match &ending {
                Ending::Exited(_) if exit_code == Some(0) => "completed".into(),
                Ending::Exited(_) => "exited_non_zero".into(),
                Ending::TimedOut => "timed_out".into(),
                Ending::Cancelled(r) => format!("{r:?}").to_lowercase(),
            };
        });
        // Bounded once the attempt is cancelled (Postgres may be what failed): the
        // removal below closes the row anyway, or the collector does.
        match cleanup_write(
            self.ctx,
            tracking::mark_exited(&rt.pool, &id, exit_code, oom_killed, finished_at),
        )
        .await
        {
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "tracking row not marked exited"),
            None => {
                tracing::warn!("tracking row not marked exited: postgres did not answer in time")
            }
        }
        match exit_code {
            Some(c) => sys.system(format!(
                "highway: container exited with code {c}{}",
                if oom_killed { " (OOM killed)" } else { "" }
            )),
            None => sys.system("highway: container exit code unknown"),
        }

        // Outputs, even after a non-zero exit or a timeout; not for a cancelled run.
        let mut outputs: Option<ArtifactRef> = None;
        let mut outputs_refused: Option<String> = None;
        if !params.outputs.is_empty() && !matches!(ending, Ending::Cancelled(_)) {
            ctx.record_heartbeat(json!({"phase": "collecting_outputs", "container_id": id}));
            match self.outputs_or_refusal(&id, &params.outputs).await {
                Ok((o, refused)) => {
                    outputs = o;
                    if let Some(msg) = refused {
                        warnings.push(format!("outputs refused: {msg}"));
                        outputs_refused = Some(msg);
                    }
                }
                Err(msg) => {
                    warnings.push(format!("outputs not collected: {msg}"));
                    outputs_refused = Some(msg);
                }
            }
        }

        if !params.auto_remove && matches!(ending, Ending::Exited(_) | Ending::TimedOut) {
            let keep = params
                .retention
                .map(|r| r.0)
                .unwrap_or(rt.settings.default_retention);
            update(self.state, |s| s.keep = Some(keep));
        }

        let status = match &ending {
            Ending::Exited(_) => RunStatus::Exited,
            Ending::TimedOut => RunStatus::TimedOut,
            Ending::Cancelled(_) => RunStatus::Cancelled,
        };
        let result = DockerRunResult {
            container_id: id.clone(),
            short_id: short,
            status,
            exit_code,
            stdout: captured.stdout,
            stderr: captured.stderr,
            logs_truncated: captured.truncated,
            duration_ms,
            image: p.image.clone(),
            oom_killed,
            warnings: redact_all(&self.redactor(), warnings),
            outputs,
        };
        let details = to_json(&result);
        match ending {
            Ending::Cancelled(reason) => Err(cancel_error(Some(reason)).with_details(details)),
            Ending::TimedOut => Err(HandlerError::retryable(
                "Timeout",
                format!(
                    "container did not finish within {}s and was stopped",
                    params.timeout.0.as_secs()
                ),
            )
            .with_details(details)),
            Ending::Exited(_) => exited_outcome(exit_code, oom_killed, outputs_refused, details),
        }
    }

    /// Right before start, the one step that cannot be taken back: the lease must still
    /// be held with a margin, by this worker's count and then by the database's `now()`
    /// (fenced on attempt and owner). A worker frozen between create and start wakes
    /// past its lease and must not start the container another attempt may already
    /// run: the attempt ends as lease lost and the cleanup removes the unstarted
    /// container.
    async fn confirm_lease_before_start(
        &self,
        id: &str,
        sys: &LogSender,
    ) -> Result<(), HandlerError> {
        let check = give_way_to_cancel(self.ctx, self.ctx.confirm_lease(START_LEASE_MARGIN)).await;
        match check {
            Some(LeaseCheck::Held) => Ok(()),
            Some(LeaseCheck::Lost) | None => {
                let why = "lease_lost_before_start";
                update(self.state, |s| s.reason = why.into());
                tracing::warn!(container_id = %id, "the lease ended before the container started: not starting it");
                sys.system(
                    "highway: the lease ended before the container could start; not started",
                );
                self.audit(
                    "container.start",
                    Some(id),
                    "refused",
                    json!({"reason": why}),
                )
                .await;
                // The attempt is over as a lease loss: the executor records nothing and
                // the cleanup removes the unstarted container within what is left.
                self.ctx.set_lease_end(std::time::Instant::now());
                self.ctx.cancel(CancelReason::LeaseLost);
                Err(cancel_error(Some(CancelReason::LeaseLost)))
            }
            Some(LeaseCheck::Unknown(e)) => {
                update(self.state, |s| s.reason = "lease_unconfirmed".into());
                Err(HandlerError::infrastructure(
                    "DatabaseUnavailable",
                    format!("the lease could not be confirmed before start: {e}"),
                ))
            }
        }
    }

    /// A retry found the container of an older attempt that had exited by itself (no
    /// stop was ever sent, within that run's timeout): the run already happened, so its
    /// exit code, output (the daemon's copy of stdout/stderr) and outputs are this
    /// attempt's result and nothing is run again. The container then goes through this
    /// attempt's cleanup (removed, or kept for `retention`), its row recording its end.
    async fn take_over_exited(
        &self,
        prev: Exited,
        p: &Prepared,
        sys: &LogSender,
        mut warnings: Vec<String>,
    ) -> HandlerResult {
        let rt = self.rt;
        let params = &p.params;
        let id = prev.container_id.clone();
        let end = prev.end;
        update(self.state, |s| {
            s.container_id = Some(id.clone());
            s.started = true;
            s.exited = true;
            s.end = Some(end.evidence());
            s.reason = "adopted_by_retry".into();
        });
        self.span.record("container_id", id.as_str());
        let short: String = id.chars().take(12).collect();
        tracing::info!(container_id = %id, old_attempt = ?prev.attempt, exit_code = ?end.exit_code,
                       "an older attempt's container exited by itself: taking its result instead of running again");
        self.audit(
            "container.adopt_exit",
            Some(&id),
            "ok",
            json!({"attempt": prev.attempt, "exit_code": end.exit_code,
                   "finished_at": end.finished_at.map(|t| t.to_rfc3339())}),
        )
        .await;
        sys.system(format!(
            "highway: container {short} of attempt {} had already exited with code {}; its result is taken, the run is not repeated",
            prev.attempt.map_or_else(|| "?".to_string(), |a| a.to_string()),
            end.exit_code.map_or_else(|| "?".to_string(), |c| c.to_string()),
        ));
        warnings.push(format!(
            "the container of attempt {} had already exited; its result was taken instead of running again",
            prev.attempt.map_or_else(|| "?".to_string(), |a| a.to_string()),
        ));
        let captured = match rt.client.output_of(&id) {
            Ok(stream) => {
                Reader::spawn(
                    stream,
                    self.redactor(),
                    &rt.settings.logs,
                    Some(sys.clone()),
                )
                .finish(ADOPTED_OUTPUT_READ)
                .await
            }
            Err(e) => logs::Captured {
                stream_error: Some(self.redactor().redact(&e.to_string())),
                ..logs::Captured::default()
            },
        };
        // A result is taken whole or not at all: output that could not be read (the
        // container went away meanwhile, its own worker woke and removed it) ends this
        // attempt as infrastructure, and the next one runs afresh.
        let still_there = matches!(rt.client.container_end(&id).await, Ok(Some(_)));
        if captured.stream_error.is_some() || !still_there {
            return Err(HandlerError::infrastructure(
                "PreviousAttemptLive",
                format!(
                    "the output of the exited container of an older attempt could not be read{}",
                    captured
                        .stream_error
                        .as_deref()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                ),
            ));
        }
        let (exit_code, oom_killed) = (end.exit_code, end.oom_killed);
        match cleanup_write(
            self.ctx,
            tracking::mark_exited(&rt.pool, &id, exit_code, oom_killed, end.finished_at),
        )
        .await
        {
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "tracking row not marked exited"),
            None => {
                tracing::warn!("tracking row not marked exited: postgres did not answer in time")
            }
        }
        let mut outputs: Option<ArtifactRef> = None;
        let mut outputs_refused: Option<String> = None;
        if !params.outputs.is_empty() {
            self.ctx
                .record_heartbeat(json!({"phase": "collecting_outputs", "container_id": id}));
            match self.outputs_or_refusal(&id, &params.outputs).await {
                Ok((o, refused)) => {
                    outputs = o;
                    if let Some(msg) = refused {
                        warnings.push(format!("outputs refused: {msg}"));
                        outputs_refused = Some(msg);
                    }
                }
                // The container went away while being read (its own worker woke and
                // removed it): the result cannot be taken whole. Retried without
                // burning an attempt; the next attempt runs afresh.
                Err(msg) => {
                    return Err(HandlerError::infrastructure(
                        "PreviousAttemptLive",
                        format!("the outputs of the exited container of an older attempt could not be read: {msg}"),
                    ));
                }
            }
        }
        if !params.auto_remove {
            let keep = params
                .retention
                .map(|r| r.0)
                .unwrap_or(rt.settings.default_retention);
            update(self.state, |s| s.keep = Some(keep));
        }
        let duration_ms = match (end.started_at, end.finished_at) {
            (Some(a), Some(b)) => (b - a).num_milliseconds().max(0) as u64,
            _ => 0,
        };
        let result = DockerRunResult {
            container_id: id.clone(),
            short_id: short,
            status: RunStatus::Exited,
            exit_code,
            stdout: captured.stdout,
            stderr: captured.stderr,
            logs_truncated: captured.truncated,
            duration_ms,
            image: p.image.clone(),
            oom_killed,
            warnings: redact_all(&self.redactor(), warnings),
            outputs,
        };
        exited_outcome(exit_code, oom_killed, outputs_refused, to_json(&result))
    }

    /// Image per `pull_policy`; the pull consumes the whole progress stream (trap 23:
    /// always with a tag or digest).
    async fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
        sys: &LogSender,
    ) -> Result<(), HandlerError> {
        let client = &self.rt.client;
        // Another tenant's committed snapshot answers exactly like a missing image.
        let not_found = || {
            HandlerError::non_retryable(
                "ImageNotFound",
                format!("image {image} is not present on the Docker daemon"),
            )
        };
        if crate::docker::tools::in_foreign_namespace(&self.ctx.tenant_id, image) {
            return Err(not_found());
        }
        let inspected = client
            .inspect_image(image)
            .await
            .map_err(|e| docker_error("ImagePullFailed", e, &self.redactor()))?;
        if let Some(img) = &inspected {
            let foreign = crate::docker::tools::image_is_foreign(
                &self.rt.pool,
                &self.ctx.tenant_id,
                img.id.as_deref().unwrap_or_default(),
                img.repo_tags.as_deref().unwrap_or_default(),
            )
            .await
            .map_err(db_error)?;
            if foreign {
                return Err(not_found());
            }
        }
        let present = inspected.is_some();
        match (policy, present) {
            (PullPolicy::Never, false) => {
                return Err(HandlerError::non_retryable(
                    "ImageNotFound",
                    format!(
                        "image {image} is not present on the Docker daemon and pull_policy is \
                         `never`: no pull was attempted"
                    ),
                ))
            }
            (PullPolicy::Never, true) | (PullPolicy::IfNotPresent, true) => return Ok(()),
            _ => {}
        }
        let creds = self
            .rt
            .registries
            .for_image(&self.ctx.tenant_id, image)
            .await?;
        sys.system(format!("highway: pulling image {image}"));
        self.ctx
            .record_heartbeat(json!({"phase": "pulling", "image": image}));
        let ctx = self.ctx;
        let mut last_beat = std::time::Instant::now();
        let mut items: u64 = 0;
        let image_owned = image.to_string();
        let pull = client.pull_image(image, creds.as_ref(), |info| {
            items += 1;
            // Heartbeat details carry the latest progress, at most once a second.
            if last_beat.elapsed() >= Duration::from_secs(1) {
                last_beat = std::time::Instant::now();
                ctx.record_heartbeat(json!({
                    "phase": "pulling",
                    "image": image_owned,
                    "status": info.status,
                    "layer": info.id,
                    "progress_items": items,
                }));
            }
        });
        let res = tokio::select! {
            r = pull => r,
            _ = ctx.cancelled() => return Err(cancel_error(ctx.cancel_reason())),
        };
        match res {
            Ok(()) => {
                self.audit("image.pull", Some(image), "ok", json!({})).await;
            }
            Err(e) => {
                let msg = self.redactor().redact(&e.to_string());
                self.audit("image.pull", Some(image), "failed", json!({"error": msg}))
                    .await;
                return Err(pull_error(image, e, &msg, creds.as_ref()));
            }
        }
        match client.inspect_image(image).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(HandlerError::retryable(
                "ImagePullFailed",
                format!("pull of {image} finished but the image is not on the daemon"),
            )),
            Err(e) => Err(docker_error("ImagePullFailed", e, &self.redactor())),
        }
    }

    /// At most one live container per activity: before this attempt creates its
    /// container, every container of an older attempt on this daemon is removed, and an
    /// older attempt still live on another daemon makes this attempt wait in place
    /// ([`Self::wait_for_other_host`]) until that daemon's workers removed it, or until
    /// no worker of that daemon has heartbeated for `host_lost_after`: then the host is
    /// taken as lost, the old row is marked `lost` and this attempt runs (the lost
    /// host's collector removes the old container if the host comes back). Only
    /// containers of this deployment (name and database identity) are touched.
    ///
    /// Except one: an older attempt's container that exited by itself (it ran, no stop
    /// was ever sent to it, it ended within the run's timeout) holds the run's result,
    /// which a retry must not throw away and run again (a Docker outage that outlived
    /// the attempt, a worker killed after the run ended). The newest such container is
    /// returned for [`Self::take_over_exited`] instead of being removed.
    async fn remove_older_attempts(
        &self,
        daemon_id: &str,
        deployment_id: Uuid,
        params: &DockerRunParams,
    ) -> Result<Option<Exited>, HandlerError> {
        let rt = self.rt;
        let ctx = self.ctx;
        let filters = vec![
            format!("{}=true", labels::MANAGED),
            format!("{}={}", labels::ACTIVITY_ID, ctx.activity_id),
        ];
        let found = rt
            .client
            .list_by_labels(&filters)
            .await
            .map_err(|e| docker_error("CreateFailed", e, &self.redactor()))?;
        let actor = rt.actor();
        let mut on_daemon = std::collections::HashSet::new();
        let mut older: Vec<(gc::Target, Option<Exited>)> = Vec::new();
        for c in found {
            let Some(id) = c.id.clone() else { continue };
            let attempt = c
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::ATTEMPT))
                .and_then(|a| a.parse::<i32>().ok());
            let empty = HashMap::new();
            match rt
                .deployment
                .ownership(deployment_id, c.labels.as_ref().unwrap_or(&empty))
            {
                Ownership::Ours => {}
                Ownership::Foreign => continue,
                // Our name and activity, but made before identities existed: not ours to
                // remove unless the operator adopts such containers, and not gone either.
                Ownership::Unlabelled => {
                    return Err(HandlerError::infrastructure(
                        "PreviousAttemptLive",
                        format!(
                            "container {id} of an older attempt carries no deployment identity; \
                             remove it, or run with --adopt-unlabelled-containers"
                        ),
                    ))
                }
            }
            on_daemon.insert(id.clone());
            match attempt {
                Some(a) if a > ctx.attempt => {
                    return Err(HandlerError::infrastructure(
                        "StaleAttempt",
                        format!(
                            "attempt {a} of this activity already has a container; attempt {} is stale",
                            ctx.attempt
                        ),
                    ));
                }
                // Same attempt: the deterministic name makes create adopt it.
                Some(a) if a == ctx.attempt => continue,
                _ => {}
            }
            let target = gc::Target {
                container_id: id.clone(),
                name: c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default(),
                image: c.image.clone().unwrap_or_default(),
                tenant_id: ctx.tenant_id.clone(),
                activity_id: Some(ctx.activity_id),
                workflow_run_id: ctx.workflow_run_id,
                attempt,
                daemon_id: daemon_id.to_string(),
                labels: json!(c.labels.clone().unwrap_or_default()),
                running: true,
            };
            let exited = if params.detach {
                None
            } else {
                self.exited_by_itself(&id, attempt, params).await?
            };
            older.push((target, exited));
        }
        // The newest attempt that ran to its end is taken over; every other one goes.
        let keep = older
            .iter()
            .filter_map(|(_, e)| e.as_ref())
            .max_by_key(|e| e.attempt)
            .map(|e| e.container_id.clone());
        let mut taken = None;
        for (target, exited) in older {
            if keep.as_deref() == Some(target.container_id.as_str()) {
                taken = exited;
                continue;
            }
            tracing::info!(container_id = %target.container_id, old_attempt = ?target.attempt,
                           "removing an older attempt's container");
            // The removal sequence shared with the garbage collector (one place that
            // stops, reads the exit, removes, records the reason on the row and audits).
            // No grace: that attempt's lease is gone, so its run is void.
            if let Err(e) = gc::stop_and_remove(
                &rt.client,
                &rt.pool,
                &target,
                Duration::ZERO,
                &actor,
                "older_attempt",
            )
            .await
            {
                return Err(HandlerError::infrastructure(
                    "PreviousAttemptLive",
                    format!("could not remove the container of an older attempt: {e}"),
                ));
            }
        }
        // The tracking table knows about containers on other daemons, and about rows whose
        // container vanished behind our back.
        let rows = tracking::live_rows_of_activity(&rt.pool, ctx.activity_id)
            .await
            .map_err(db_error)?;
        for row in rows {
            if row.attempt.unwrap_or(0) >= ctx.attempt {
                continue;
            }
            if row.daemon_id.as_deref() == Some(daemon_id) {
                if !on_daemon.contains(&row.container_id) {
                    let _ = tracking::mark_missing(
                        &rt.pool,
                        &row.container_id,
                        &actor,
                        "older_attempt_not_on_daemon",
                    )
                    .await;
                }
            } else {
                self.wait_for_other_host(&row).await?;
            }
        }
        Ok(taken)
    }

    /// The container `id` of an older attempt, if it ran and ended by itself within the
    /// run's timeout with an exit code the program chose (not a death by signal), and no
    /// stop that may have reached it was ever recorded (a container we stopped ended
    /// because of us, not with a result).
    async fn exited_by_itself(
        &self,
        id: &str,
        attempt: Option<i32>,
        params: &DockerRunParams,
    ) -> Result<Option<Exited>, HandlerError> {
        let end = match self.rt.client.container_end(id).await {
            Ok(Some(end)) if end.exited() => end,
            Ok(_) => return Ok(None),
            Err(e) => return Err(docker_error("CreateFailed", e, &self.redactor())),
        };
        // A death by signal (128 + n: SIGTERM, SIGKILL, the OOM killer) may be our own
        // stop, sent by a worker cut off from Postgres that could not record it: only
        // an exit the program chose itself is a result.
        match end.exit_code {
            Some(code) if (0..128).contains(&code) && !end.oom_killed => {}
            _ => return Ok(None),
        }
        let ran_for = match (end.started_at, end.finished_at) {
            (Some(a), Some(b)) => (b - a).to_std().unwrap_or_default(),
            _ => return Ok(None),
        };
        // The daemon's times are whole-second rounded at worst; the run's own timeout
        // would have stopped it (and recorded the stop) had it run longer.
        if ran_for > params.timeout.0 + Duration::from_secs(1) {
            return Ok(None);
        }
        if tracking::stop_was_sent(&self.rt.pool, id)
            .await
            .map_err(db_error)?
        {
            return Ok(None);
        }
        Ok(Some(Exited {
            container_id: id.to_string(),
            attempt,
            end,
        }))
    }

    /// An older attempt's container on another Docker daemon: wait, holding this
    /// attempt's lease (the executor keeps heartbeating), until that host's workers
    /// close its row (its collector removes the container once it sees the newer
    /// attempt), or until the host has been silent for `host_lost_after`; then the row
    /// is marked `lost`, audited, and this attempt runs. Waiting in place burns no
    /// attempt, so a host that is gone for good cannot exhaust the retry budget.
    async fn wait_for_other_host(&self, row: &tracking::LiveRow) -> Result<(), HandlerError> {
        let rt = self.rt;
        let ctx = self.ctx;
        let silent_for = rt.config.host_lost_after.0;
        let poll = Duration::from_secs(1).min(silent_for);
        let mut announced = false;
        loop {
            self.check_cancelled()?;
            let still_open = tracking::live_rows_of_activity(&rt.pool, ctx.activity_id)
                .await
                .map_err(db_error)?
                .iter()
                .any(|r| r.container_id == row.container_id);
            if !still_open {
                return Ok(());
            }
            let lost = tracking::mark_lost_if_host_lost(&rt.pool, &row.container_id, silent_for)
                .await
                .map_err(db_error)?;
            if lost == 1 {
                tracing::warn!(container_id = %row.container_id, daemon_id = ?row.daemon_id,
                               "the host of an older attempt's container is lost; running without it");
                self.audit(
                    "container.lost",
                    Some(&row.container_id),
                    "ok",
                    json!({"reason": "host_lost", "attempt": row.attempt, "daemon_id": row.daemon_id,
                           "host_lost_after_s": silent_for.as_secs()}),
                )
                .await;
                return Ok(());
            }
            if !announced {
                announced = true;
                tracing::info!(container_id = %row.container_id, daemon_id = ?row.daemon_id,
                               old_attempt = ?row.attempt,
                               "an older attempt's container is on another Docker host; waiting for it to be removed");
                ctx.record_heartbeat(json!({"phase": "waiting_for_host",
                                            "daemon_id": row.daemon_id, "attempt": row.attempt}));
            }
            tokio::select! {
                () = ctx.cancelled() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    }

    /// Create with the deterministic name. A timed-out create is retried: if the first
    /// one did happen, the retry gets 409 and adopts it (R15).
    async fn create(
        &self,
        name: &str,
        body: bollard::models::ContainerCreateBody,
    ) -> Result<(String, Vec<String>), HandlerError> {
        let client = &self.rt.client;
        let mut tries = 0;
        loop {
            tries += 1;
            match client.create_container(name, body.clone()).await {
                Ok(r) => return Ok((r.id, r.warnings)),
                Err(e) if e.is_conflict() => match self.adopt(name).await? {
                    Some(id) => {
                        return Ok((id, vec![format!("adopted the existing container {name}")]))
                    }
                    None if tries < 3 => continue,
                    None => {
                        return Err(HandlerError::infrastructure(
                            "NameConflict",
                            format!("container name {name} stays in use"),
                        ))
                    }
                },
                Err(e @ (client::Error::Timeout { .. } | client::Error::Unavailable { .. }))
                    if tries < 3 =>
                {
                    tracing::warn!(error = %e, "create failed; retrying (a lost reply is adopted)");
                    tokio::time::sleep(Duration::from_millis(250 * tries)).await;
                }
                Err(e) => return Err(docker_error("CreateFailed", e, &self.redactor())),
            }
        }
    }

    /// On 409: the container under our name is adopted only if its labels say it is this
    /// very attempt of this activity in this deployment, and it never started.
    async fn adopt(&self, name: &str) -> Result<Option<String>, HandlerError> {
        let client = &self.rt.client;
        let Some(c) = client
            .inspect_container(name)
            .await
            .map_err(|e| docker_error("CreateFailed", e, &self.redactor()))?
        else {
            return Ok(None); // removed in between: create again
        };
        let l = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.clone())
            .unwrap_or_default();
        let ours = l.get(labels::ACTIVITY_ID).map(String::as_str)
            == Some(self.ctx.activity_id.to_string().as_str())
            && l.get(labels::ATTEMPT).map(String::as_str)
                == Some(self.ctx.attempt.to_string().as_str())
            && self
                .rt
                .deployment
                .id(&self.rt.pool)
                .await
                .is_ok_and(|id| self.rt.deployment.ownership(id, &l) == Ownership::Ours);
        let Some(id) = c.id.clone() else {
            return Ok(None);
        };
        if !ours {
            return Err(HandlerError::infrastructure(
                "NameConflict",
                format!(
                    "a container named {name} exists that highway did not create for this attempt"
                ),
            ));
        }
        let never_started = matches!(
            c.state.as_ref().and_then(|s| s.status),
            Some(bollard::models::ContainerStateStatusEnum::CREATED)
        );
        if never_started {
            tracing::info!(container_id = %id, "adopting the container of this attempt (409)");
            return Ok(Some(id));
        }
        // It ran already (an earlier try of this attempt that we lost track of): its output
        // is not ours to reuse. Remove it and create afresh.
        let _ = client.kill_container(&id).await;
        let end = match client.container_end(&id).await {
            Ok(Some(e)) => e.evidence(),
            _ => Default::default(),
        };
        client
            .remove_container(&id)
            .await
            .map_err(|e| docker_error("CreateFailed", e, &self.redactor()))?;
        let _ = tracking::mark_removed(
            &self.rt.pool,
            &id,
            &self.rt.actor(),
            "stale_same_attempt",
            &end,
        )
        .await;
        Ok(None)
    }

    /// Inputs and secret files as one uncompressed tar, extracted at `/` before start.
    async fn upload_inputs(&self, id: &str, p: &Prepared) -> Result<(), HandlerError> {
        let params = &p.params;
        if params.inputs.is_empty() && params.secrets.is_empty() {
            return Ok(());
        }
        let rt = self.rt;
        let owner = numeric_owner(params.user.as_deref());
        let mut files = Vec::new();
        // Artifacts open for reading, by input index: each is closed (and its checksum
        // checked) once the input tar was built.
        let mut opened = Vec::new();
        for (i, input) in params.inputs.iter().enumerate() {
            let data = match &input.source {
                InputSource::Artifact(aid) => {
                    let a = rt
                        .artifacts
                        .open(&self.ctx.tenant_id, *aid)
                        .await
                        .map_err(|e| artifact_error(i, e))?;
                    let path = a.path();
                    opened.push((i, a));
                    match &input.select {
                        // `select` is validated absolute and normalised with the params.
                        Some(sel) => InputData::ArtifactEntry {
                            tar: path,
                            select: sel.trim_start_matches('/').to_string(),
                            index: i,
                        },
                        None => InputData::ArtifactTar(path),
                    }
                }
                _ => InputData::Bytes(bytes::Bytes::copy_from_slice(
                    input.inline_bytes().unwrap_or_default(),
                )),
            };
            files.push(tario::InputFile {
                path: input.path.clone(),
                mode: input.mode.map(|m| m.0),
                owner,
                data,
            });
        }
        for s in &params.secrets {
            let value = p
                .secrets
                .get(&s.name)
                .map(|v| v.expose())
                .unwrap_or_default();
            files.push(tario::InputFile {
                path: s.target(),
                mode: Some(s.mode.map(|m| m.0).unwrap_or(0o400)),
                owner,
                data: InputData::Bytes(bytes::Bytes::copy_from_slice(value.as_bytes())),
            });
        }
        self.ctx
            .record_heartbeat(json!({"phase": "uploading_inputs", "container_id": id}));
        let (rx, handle) = tario::spawn_input_tar(files, rt.settings.input_limits);
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let uploaded = rt.client.upload_archive(id, "/", body).await;
        let built = handle.await.map_err(|e| {
            HandlerError::retryable("InputUploadFailed", format!("input tar task failed: {e}"))
        });
        // A stored artifact's checksum is known once it was read to the end, when its
        // bytes are already in the container: a mismatch fails the attempt here, before
        // the container starts, and the cleanup removes the container with them. It
        // comes first, since a corrupt artifact may also have broken the tar.
        for (i, a) in opened {
            a.close().await.map_err(|e| artifact_error(i, e))?;
        }
        match (built?, uploaded) {
            (Err(TarError::NotInArtifact { input, select }), _) => {
                let e = TarError::NotInArtifact {
                    input,
                    select: select.clone(),
                };
                Err(
                    HandlerError::non_retryable("InputPathNotFound", e.to_string())
                        .with_details(json!({"input": input, "select": select})),
                )
            }
            (Err(e), _) if e.is_content_error() => Err(HandlerError::non_retryable(
                "InvalidInput",
                self.redactor().redact(&e.to_string()),
            )),
            (Err(e), _) => Err(HandlerError::retryable(
                "InputUploadFailed",
                self.redactor().redact(&e.to_string()),
            )),
            (Ok(_), Err(e)) => Err(docker_error("InputUploadFailed", e, &self.redactor())),
            (Ok(stats), Ok(())) => {
                tracing::info!(
                    entries = stats.entries,
                    bytes = stats.bytes,
                    "inputs uploaded"
                );
                Ok(())
            }
        }
    }

    /// Waits for the container to stop by itself, racing the run timeout, the attempt's
    /// deadline and cancellation. A periodic inspect guards against a wait stream that
    /// hangs or breaks (the daemon restarting, a proxy cutting it).
    async fn wait(
        &self,
        id: &str,
        params: &DockerRunParams,
        started: Instant,
    ) -> Result<Ending, HandlerError> {
        let rt = self.rt;
        let ctx = self.ctx;
        let mut deadline = started + params.timeout.0;
        if let Some(d) = ctx.deadline {
            deadline = deadline.min(Instant::from_std(d));
        }
        let wait = rt
            .client
            .wait_container(id, params.timeout.0 + Duration::from_secs(60));
        tokio::pin!(wait);
        let mut wait_active = true;
        let period = rt.settings.liveness_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + period, period);
        let mut failures = 0u32;
        // A daemon that stays unreachable (refused, hung, circuit open) for this long ends
        // the wait as infrastructure: the attempt is retried without burning one, and the
        // retry removes this container first (`remove_older_attempts`). A hung wait
        // stream alone would otherwise hold the attempt until the run's own timeout.
        let outage_grace = period * 3;
        let mut last_seen = Instant::now();
        loop {
            tokio::select! {
                // An exit already reported wins over a cancellation that arrived with it
                // (a worker waking from a freeze sees both at once).
                biased;
                r = &mut wait, if wait_active => match r {
                    Ok(exit) => return Ok(Ending::Exited(exit)),
                    Err(e) => {
                        tracing::warn!(error = %e, "wait stream failed; falling back to inspect");
                        wait_active = false;
                        tick = tokio::time::interval(Duration::from_secs(1));
                    }
                },
                _ = tick.tick() => match rt.client.inspect_container(id).await {
                    Ok(Some(c)) => {
                        failures = 0;
                        last_seen = Instant::now();
                        let st = c.state.unwrap_or_default();
                        let running = st.running.unwrap_or(false)
                            || st.restarting.unwrap_or(false)
                            || st.paused.unwrap_or(false);
                        if !running {
                            return Ok(Ending::Exited(WaitExit {
                                code: st.exit_code.unwrap_or(-1),
                                error: st.error.filter(|e| !e.is_empty()),
                            }));
                        }
                    }
                    Ok(None) => {
                        return Err(HandlerError::infrastructure(
                            "DockerUnavailable",
                            "the container vanished while running (removed outside highway)",
                        ));
                    }
                    Err(e) => {
                        failures += 1;
                        tracing::warn!(error = %e, failures, "inspect during wait failed");
                        let outage = e.is_daemon_failure() && last_seen.elapsed() >= outage_grace;
                        if outage || (!wait_active && failures >= 30) {
                            return Err(docker_error("DockerUnavailable", e, &self.redactor()));
                        }
                    }
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(Ending::TimedOut),
                _ = ctx.cancelled() => {
                    let reason = ctx.cancel_reason().unwrap_or(CancelReason::Requested);
                    // A lost lease or a shutdown does not undo a run that already ended
                    // by itself (a worker frozen past its lease wakes to find its
                    // container exited): that exit is the result, reported as such.
                    if matches!(reason, CancelReason::LeaseLost | CancelReason::Shutdown) {
                        if let Ok(Some(end)) = rt.client.container_end(id).await {
                            if end.exited() {
                                return Ok(Ending::Exited(WaitExit {
                                    code: end.exit_code.unwrap_or(-1),
                                    error: end.error,
                                }));
                            }
                        }
                    }
                    return Ok(if reason == CancelReason::Timeout {
                        Ending::TimedOut
                    } else {
                        Ending::Cancelled(reason)
                    });
                }
            }
        }
    }

    /// SIGTERM, grace, SIGKILL (the daemon does it; trap 5: the call's deadline covers
    /// the grace). If stop fails, kill.
    async fn stop(&self, id: &str, grace: Duration) {
        // The sequence is shared with the garbage collector: it also timestamps the stop
        // steps (requested, signalled, killed) on the tracking row, so any worker can see
        // how far this stop got and finish it if this worker cannot.
        let reason = match self.ctx.cancel_reason() {
            Some(r) => format!("{r:?}").to_lowercase(),
            None => "timeout".to_string(),
        };
        gc::stop_container(&self.rt.client, &self.rt.pool, id, grace, &reason).await;
    }

    /// Exit code and OOM flag from inspect. OOM comes only from `OOMKilled` (trap 18):
    /// never from 137, which our own SIGKILL after the grace also produces.
    async fn inspect_exit(
        &self,
        id: &str,
        ending: &Ending,
    ) -> (Option<i64>, bool, Option<chrono::DateTime<chrono::Utc>>) {
        let wait_code = match ending {
            Ending::Exited(e) => Some(e.code),
            _ => None,
        };
        let (code, oom, finished) = self.inspect_state(id, wait_code).await;
        // The daemon handles the kernel's OOM event and the exit event separately and
        // may record `OOMKilled` just after the exit: a 137 the container ended on by
        // itself (not our stop) gets one more look.
        if !oom && code == Some(137) && matches!(ending, Ending::Exited(_)) {
            tokio::time::sleep(OOM_SETTLE).await;
            return self.inspect_state(id, code).await;
        }
        (code, oom, finished)
    }

    /// Exit code, OOM flag and the daemon's `FinishedAt`.
    async fn inspect_state(
        &self,
        id: &str,
        fallback: Option<i64>,
    ) -> (Option<i64>, bool, Option<chrono::DateTime<chrono::Utc>>) {
        match self.rt.client.container_end(id).await {
            Ok(Some(end)) => (end.exit_code.or(fallback), end.oom_killed, end.finished_at),
            Ok(None) => (fallback, false, None),
            Err(e) => {
                tracing::warn!(error = %e, "inspect after exit failed");
                (fallback, false, None)
            }
        }
    }

    /// The declared outputs as the result takes them: the artifact (or none), and the
    /// redacted reason when the archive rules refused its content. Any other failure is
    /// the redacted message, for the caller to judge (a warning, or a retry).
    async fn outputs_or_refusal(
        &self,
        id: &str,
        paths: &[String],
    ) -> Result<(Option<ArtifactRef>, Option<String>), String> {
        match self.collect_outputs(id, paths).await {
            Ok(o) => Ok((o, None)),
            Err(e) if e.is_content_error() => {
                Ok((None, Some(self.redactor().redact(&e.to_string()))))
            }
            Err(e) => Err(self.redactor().redact(&e.to_string())),
        }
    }

    /// Downloads every declared output path into one validated artifact tar. Paths that
    /// do not exist are skipped (a failed run may not have written them). `Ok(None)` when
    /// none exists.
    async fn collect_outputs(
        &self,
        id: &str,
        paths: &[String],
    ) -> Result<Option<ArtifactRef>, TarError> {
        let rt = self.rt;
        let producer = Producer {
            tenant_id: &self.ctx.tenant_id,
            activity_id: Some(self.ctx.activity_id),
            attempt: Some(self.ctx.attempt),
        };
        let mut writer = rt
            .artifacts
            .writer(producer, "outputs", rt.settings.output_limits)
            .await
            .map_err(|e| TarError::Io(std::io::Error::other(e.to_string())))?;
        let mut found = Vec::new();
        let mut failure: Option<TarError> = None;
        'paths: for path in paths {
            match rt.client.path_exists(id, path).await {
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    failure = Some(TarError::Io(std::io::Error::other(e.to_string())));
                    break;
                }
            }
            let mut stream = match rt.client.download_archive(id, path) {
                Ok(s) => s,
                Err(e) => {
                    failure = Some(TarError::Io(std::io::Error::other(e.to_string())));
                    break;
                }
            };
            if writer.start(path).await.is_err() {
                break;
            }
            while let Some(item) = stream.next().await {
                match item {
                    Ok(chunk) => {
                        if writer.data(chunk).await.is_err() {
                            // The validator stopped (refused entry, cap); `finish` says why.
                            break 'paths;
                        }
                    }
                    Err(e) => {
                        writer.fail(e.to_string()).await;
                        break 'paths;
                    }
                }
            }
            if writer.end().await.is_err() {
                break;
            }
            found.push(path.clone());
        }
        // Dropping the stream (if any is left) releases the container lock (trap 15).
        let summary = writer.finish().await;
        let summary = match (summary, failure) {
            (Ok(s), None) => s,
            (Err(e), _) | (Ok(_), Some(e)) => {
                writer.discard().await;
                return Err(e);
            }
        };
        if found.is_empty() {
            writer.discard().await;
            return Ok(None);
        }
        let stored = writer
            .commit(&summary, found)
            .await
            .map_err(|e| TarError::Io(std::io::Error::other(e.to_string())))?;
        tracing::info!(
            artifact_id = %stored.id,
            bytes = stored.size_bytes,
            entries = summary.entry_count,
            "outputs stored"
        );
        Ok(Some(stored.to_ref()))
    }
}

/// The error of an unreadable `inputs[i].artifact`: absent, or corrupt (both the
/// request's fault, never retried), or the store unreachable (retried).
fn artifact_error(i: usize, e: artifacts::Error) -> HandlerError {
    match e {
        artifacts::Error::NotFound(_) => {
            HandlerError::non_retryable("ArtifactNotFound", format!("`inputs[{i}].artifact`: {e}"))
        }
        artifacts::Error::Corrupt { .. } => {
            HandlerError::non_retryable("ArtifactCorrupt", format!("`inputs[{i}].artifact`: {e}"))
        }
        other => HandlerError::retryable(
            "InputUploadFailed",
            format!("`inputs[{i}].artifact`: {other}"),
        ),
    }
}

/// The finally of every attempt: stop (with grace) if it may be running, remove with
/// `force, v` (404 and 409-in-progress are done), close the tracking row and audit.
/// A detached container is left alone; a kept one gets its retention.
async fn cleanup(rt: &DockerRuntime, ctx: &ActivityContext, state: &Mutex<RunState>) {
    let s = snapshot(state);
    let actor = rt.actor();
    let mut reason = if s.reason.is_empty() {
        "failed".to_string()
    } else {
        s.reason.clone()
    };
    // A run that ended by itself while (or before) the lease was lost: the row says so,
    // whatever the queue then makes of the late result.
    if s.exited
        && ctx.cancel_reason() == Some(CancelReason::LeaseLost)
        && matches!(reason.as_str(), "completed" | "exited_non_zero")
    {
        reason.push_str("_after_lease_lost");
    }
    if s.detached {
        return;
    }
    let audit = |action: &'static str, target: String, outcome: &'static str, details: Value| {
        let actor = actor.clone();
        let tenant = ctx.tenant_id.clone();
        async move {
            let ev = AuditEvent {
                tenant_id: &tenant,
                actor: &actor,
                action,
                target: Some(&target),
                activity_id: Some(ctx.activity_id),
                workflow_run_id: ctx.workflow_run_id,
                outcome,
                details,
            };
            if cleanup_write(ctx, tracking::audit_or_warn(&rt.pool, &ev))
                .await
                .is_none()
            {
                tracing::warn!(
                    action,
                    "audit row not written: postgres did not answer in time"
                );
            }
        }
    };
    let id = match (&s.container_id, &s.name) {
        (Some(id), _) => Some(id.clone()),
        (None, Some(name)) => {
            // Create was attempted but no id came back: the container may exist (lost
            // reply). Look it up by name; remove it only if it is ours.
            match rt.client.inspect_container(name).await {
                Ok(Some(c)) => {
                    let l = c
                        .config
                        .as_ref()
                        .and_then(|cfg| cfg.labels.clone())
                        .unwrap_or_default();
                    let ours = l.get(labels::ACTIVITY_ID).map(String::as_str)
                        == Some(ctx.activity_id.to_string().as_str())
                        && l.get(labels::ATTEMPT).map(String::as_str)
                            == Some(ctx.attempt.to_string().as_str());
                    if ours {
                        c.id
                    } else {
                        None
                    }
                }
                Ok(None) => None,
                Err(e) => {
                    // Daemon unreachable: leave the placeholder row open for the GC.
                    tracing::warn!(error = %e, "cleanup could not look up the container by name");
                    return;
                }
            }
        }
        (None, None) => None,
    };
    let Some(id) = id else {
        if let Some(name) = &s.name {
            if s.pending_row {
                let _ = cleanup_write(
                    ctx,
                    tracking::close_pending(&rt.pool, name, &actor, "create_failed"),
                )
                .await;
            }
        }
        return;
    };
    if let (Some(keep), true) = (s.keep, s.exited) {
        match tracking::mark_kept(&rt.pool, &id, keep).await {
            Ok(_) => {
                audit(
                    "container.keep",
                    id.clone(),
                    "ok",
                    json!({"retention_seconds": keep.as_secs()}),
                )
                .await;
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not record retention; removing instead"),
        }
    }
    stop_if_running(rt, ctx, state, &id).await;
    // The daemon's evidence of the end, read before the removal destroys it (the wait
    // path read it already).
    let end = match snapshot(state).end {
        Some(e) => e,
        None => match rt.client.container_end(&id).await {
            Ok(Some(e)) => e.evidence(),
            _ => tracking::ExitEvidence::default(),
        },
    };
    let mut last_err = None;
    for attempt in 0..3u32 {
        match rt.client.remove_container(&id).await {
            Ok(outcome) => {
                last_err = None;
                let why = match outcome {
                    Removed::Removed => reason.clone(),
                    Removed::AlreadyGone => format!("{reason} (already gone)"),
                };
                // Bounded once the attempt is cancelled: Postgres may be what failed.
                // A write that does not land is handed to a retry that outlives the
                // attempt, so a database outage does not leave the row open for the
                // collector to judge `missing` when the container was in fact removed.
                let recorded = match cleanup_write(
                    ctx,
                    tracking::mark_removed(&rt.pool, &id, &actor, &why, &end),
                )
                .await
                {
                    Some(Ok(_)) => true,
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "tracking row not marked removed; retrying in the background");
                        false
                    }
                    None => {
                        tracing::warn!("tracking row not marked removed: postgres did not answer in time; retrying in the background");
                        false
                    }
                };
                if !recorded {
                    retry_removal_record(rt, ctx, &id, &why, end);
                    break;
                }
                if s.container_id.is_none() {
                    if let Some(name) = &s.name {
                        let _ = cleanup_write(
                            ctx,
                            tracking::close_pending(
                                &rt.pool,
                                name,
                                &actor,
                                "create_reply_lost_removed",
                            ),
                        )
                        .await;
                    }
                }
                audit("container.remove", id.clone(), "ok", json!({"reason": why})).await;
                tracing::info!(container_id = %id, reason = %why, "container removed");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "remove failed");
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(500 * (u64::from(attempt) + 1))).await;
            }
        }
    }
    if let Some(e) = last_err {
        // The garbage collector removes it later (the tracking row stays open).
        tracing::error!(container_id = %id, error = %e, "container could not be removed");
        audit(
            "container.remove",
            id,
            "failed",
            json!({"reason": reason, "error": s.redactor.redact(&e.to_string())}),
        )
        .await;
    }
}

/// The removal happened but its tracking write did not land (Postgres down or hung):
/// retried in the runtime's tracker, with backoff, until Postgres answers, and then
/// audited. At shutdown one last bounded try is made; if that fails too, the row stays
/// open and the collector closes it.
fn retry_removal_record(
    rt: &DockerRuntime,
    ctx: &ActivityContext,
    id: &str,
    why: &str,
    end: tracking::ExitEvidence,
) {
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (pool, stop, actor) = (rt.pool.clone(), rt.stopping().clone(), rt.actor());
    let (id, why) = (id.to_string(), why.to_string());
    let (tenant, activity_id, run_id) =
        (ctx.tenant_id.clone(), ctx.activity_id, ctx.workflow_run_id);
    let _entered = handle.enter();
    rt.tracker().spawn(async move {
        let mut delay = Duration::from_millis(200);
        loop {
            let last = stop.is_cancelled();
            let write = tokio::time::timeout(
                REMOVAL_RECORD_TRY,
                tracking::mark_removed(&pool, &id, &actor, &why, &end),
            )
            .await;
            match write {
                Ok(Ok(_)) => {
                    let ev = AuditEvent {
                        tenant_id: &tenant,
                        actor: &actor,
                        action: "container.remove",
                        target: Some(&id),
                        activity_id: Some(activity_id),
                        workflow_run_id: run_id,
                        outcome: "ok",
                        details: json!({"reason": why, "recorded_late": true}),
                    };
                    let _ = tokio::time::timeout(
                        REMOVAL_RECORD_TRY,
                        tracking::audit_or_warn(&pool, &ev),
                    )
                    .await;
                    tracing::info!(container_id = %id, reason = %why, "container removal recorded after a retry");
                    return;
                }
                Ok(Err(e)) if last => {
                    tracing::warn!(container_id = %id, error = %e, "removal never recorded; the collector closes the row");
                    return;
                }
                Err(_) if last => {
                    tracing::warn!(container_id = %id, "removal never recorded (postgres did not answer); the collector closes the row");
                    return;
                }
                _ => {}
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = stop.cancelled() => {}
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    });
}

/// One try of a background tracking write.
const REMOVAL_RECORD_TRY: Duration = Duration::from_secs(5);

/// Stops the container, once, if an error or panic may have left it running: with grace
/// first (trap 6: removing a running container with force skips the grace), the grace
/// cut to the lease after a lease loss. Shared with the GC: stop steps timestamped, kill
/// if the stop call fails. A detached container is not ours to stop.
async fn stop_if_running(
    rt: &DockerRuntime,
    ctx: &ActivityContext,
    state: &Mutex<RunState>,
    id: &str,
) {
    let s = snapshot(state);
    if !s.started || s.exited || s.stopped || s.detached {
        return;
    }
    let reason = if s.reason.is_empty() {
        "failed"
    } else {
        s.reason.as_str()
    };
    let grace = grace_within_lease(ctx, s.stop_grace);
    gc::stop_container(&rt.client, &rt.pool, id, grace, reason).await;
    update(state, |s| s.stopped = true);
}

/// The log flush at the end of an attempt stopped by a shutdown or a lost lease.
const LOG_FLUSH_WHEN_LOST: Duration = Duration::from_secs(1);

/// What the stop call itself may take (SIGKILL delivered, the container down) once the
/// grace ends: kept free at the end of a lost lease.
const STOP_CALL_SLACK: Duration = Duration::from_millis(250);

/// The grace a stop may use: the attempt's `stop_grace`, except after a lease loss,
/// when it is cut to what is left of the lease. Another worker may start the activity
/// once the lease ends, so a container that ignores SIGTERM must be killed before then:
/// the lease is the guarantee that one attempt runs at a time, the grace a courtesy.
fn grace_within_lease(ctx: &ActivityContext, grace: Duration) -> Duration {
    match (ctx.cancel_reason(), ctx.lease_left()) {
        (Some(CancelReason::LeaseLost), Some(left)) => {
            grace.min(left.saturating_sub(STOP_CALL_SLACK))
        }
        _ => grace,
    }
}

/// How long the daemon may take to record an OOM kill after the exit it caused.
const OOM_SETTLE: Duration = Duration::from_millis(300);

/// What is left of the lease, at least, when a container is started.
const START_LEASE_MARGIN: Duration = Duration::from_millis(500);

/// How long the daemon's copy of an exited container's output may take to read.
const ADOPTED_OUTPUT_READ: Duration = Duration::from_secs(10);

/// How long a write may still take once the attempt is cancelled: enough for a healthy
/// database (so a cancel does not lose the row), short against the lease margin.
const WRITE_GRACE_ON_CANCEL: Duration = Duration::from_millis(250);

/// How long a bookkeeping write after the container stopped (tracking row, audit) may
/// take once the attempt is cancelled: a loaded database answers well within it (250 ms
/// left a resumed worker's row open), a dead one no longer holds up a shutdown.
const CLEANUP_WRITE_GRACE: Duration = Duration::from_secs(2);

/// A bookkeeping write of the cleanup: to its end, or dropped `CLEANUP_WRITE_GRACE` after
/// the attempt is cancelled (the collector closes a row left open).
async fn cleanup_write<T>(
    ctx: &ActivityContext,
    write: impl std::future::Future<Output = T>,
) -> Option<T> {
    crate::executor::finish_within(ctx.cancel_token(), CLEANUP_WRITE_GRACE, write).await
}

/// Runs `write` to its end, unless the attempt is cancelled and the write then takes more
/// than `WRITE_GRACE_ON_CANCEL`: `None` (the write is dropped).
async fn give_way_to_cancel<T>(
    ctx: &ActivityContext,
    write: impl std::future::Future<Output = T>,
) -> Option<T> {
    crate::executor::finish_within(ctx.cancel_token(), WRITE_GRACE_ON_CANCEL, write).await
}

fn cancel_error(reason: Option<CancelReason>) -> HandlerError {
    match reason {
        Some(CancelReason::Timeout) => {
            HandlerError::retryable("Timeout", "the attempt's deadline passed")
        }
        Some(CancelReason::LeaseLost) => HandlerError::infrastructure(
            "LeaseLost",
            "the worker lost the lease; the container was stopped and removed",
        ),
        Some(CancelReason::Shutdown) => HandlerError::infrastructure(
            "Shutdown",
            "the worker is shutting down; the container was stopped and removed",
        ),
        Some(CancelReason::Requested) | None => {
            HandlerError::non_retryable("Cancelled", "the activity was cancelled")
        }
    }
}

/// Maps a Docker error of a step: the daemon failing is infrastructure (no attempt
/// burned); a 4xx is the request's fault (not retried); anything else is retried.
fn docker_error(step_type: &str, e: client::Error, redactor: &Redactor) -> HandlerError {
    let msg = redactor.redact(&e.to_string());
    match &e {
        _ if e.is_daemon_failure() => HandlerError::infrastructure("DockerUnavailable", msg),
        client::Error::NotFound { .. } => HandlerError::non_retryable(step_type, msg),
        client::Error::Api { status, .. } if (400..500).contains(status) => {
            HandlerError::non_retryable(step_type, msg)
        }
        _ => HandlerError::retryable(step_type, msg),
    }
}

/// A pull that the registry refused for good (unknown image, no access) is not retried;
/// an unreachable registry or a stalled stream is.
///
/// A registry's refusal (unauthorized) is not retried either: it fails once, saying
/// whether credentials were sent, so a missing login never becomes a retry storm.
fn pull_error(
    image: &str,
    e: client::Error,
    msg: &str,
    creds: Option<&RegistryCredentials>,
) -> HandlerError {
    if let client::Error::Unauthorized { .. } = e {
        return HandlerError::non_retryable("ImagePullFailed", refusal_text(image, creds, msg));
    }
    let lower = msg.to_lowercase();
    let permanent = matches!(e, client::Error::NotFound { .. })
        || [
            "manifest unknown",
            "not found",
            "denied",
            "unauthorized",
            "does not exist",
        ]
        .iter()
        .any(|p| lower.contains(p));
    let text = format!("pulling {image} failed: {msg}");
    match e {
        client::Error::Unavailable { .. } | client::Error::Rejected { .. } => {
            HandlerError::infrastructure("DockerUnavailable", text)
        }
        _ if permanent => HandlerError::non_retryable("ImagePullFailed", text),
        _ => HandlerError::retryable("ImagePullFailed", text),
    }
}

fn db_error(e: sqlx::Error) -> HandlerError {
    HandlerError::infrastructure("DatabaseUnavailable", format!("tracking table: {e}"))
}

/// `"1000"` or `"1000:1000"` → the owner of uploaded files; names are not resolved.
fn numeric_owner(user: Option<&str>) -> Option<(u64, u64)> {
    let user = user?;
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = u.parse::<u64>().ok()?;
    let gid = match g {
        Some(g) => g.parse::<u64>().ok()?,
        None => uid,
    };
    Some((uid, gid))
}

fn redact_all(r: &Redactor, v: Vec<String>) -> Vec<String> {
    v.into_iter().map(|s| r.redact(&s)).collect()
}

fn to_json(result: &DockerRunResult) -> Value {
    serde_json::to_value(result).unwrap_or_else(|e| json!({"error": e.to_string()}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ActivityContext {
        ActivityContext::new(
            uuid::Uuid::nil(),
            1,
            "tools.docker.run".into(),
            "default".into(),
            None,
            uuid::Uuid::nil(),
            "default".into(),
            None,
        )
    }

    #[test]
    fn a_lost_lease_cuts_the_grace_to_what_is_left_of_it() {
        let grace = Duration::from_secs(30);
        let c = ctx();
        c.set_lease_end(std::time::Instant::now() + Duration::from_secs(2));
        // Cancelled for another reason, or not at all: the full grace.
        assert_eq!(grace_within_lease(&c, grace), grace);
        c.cancel(CancelReason::Requested);
        assert_eq!(grace_within_lease(&c, grace), grace);

        let c = ctx();
        c.set_lease_end(std::time::Instant::now() + Duration::from_secs(2));
        c.cancel(CancelReason::LeaseLost);
        let cut = grace_within_lease(&c, grace);
        assert!(cut <= Duration::from_secs(2) - STOP_CALL_SLACK, "{cut:?}");
        assert!(cut > Duration::from_secs(1), "{cut:?}");
        // A short grace stays as it is.
        assert_eq!(
            grace_within_lease(&c, Duration::from_millis(300)),
            Duration::from_millis(300)
        );
        // The lease already gone (the database refused the renewal): kill at once.
        c.set_lease_end(std::time::Instant::now());
        assert_eq!(grace_within_lease(&c, grace), Duration::ZERO);
        // No lease known (a context outside an executor): the grace stands.
        let c = ctx();
        c.cancel(CancelReason::LeaseLost);
        assert_eq!(grace_within_lease(&c, grace), grace);
    }

    #[test]
    fn owners() {
        assert_eq!(numeric_owner(Some("65534")), Some((65534, 65534)));
        assert_eq!(numeric_owner(Some("1:2")), Some((1, 2)));
        assert_eq!(numeric_owner(Some("nobody")), None);
        assert_eq!(numeric_owner(None), None);
    }

    #[test]
    fn error_classes() {
        let r = Redactor::default();
        let e = docker_error(
            "CreateFailed",
            client::Error::Api {
                op: "create_container",
                status: 400,
                message: "bad".into(),
            },
            &r,
        );
        assert!(!e.retryable);
        let e = docker_error(
            "CreateFailed",
            client::Error::Timeout {
                op: "create_container",
                after: Duration::from_secs(5),
            },
            &r,
        );
        assert!(e.infrastructure);
        assert_eq!(cancel_error(None).error_type, "Cancelled");
        assert!(!cancel_error(Some(CancelReason::Requested)).retryable);
    }
}
