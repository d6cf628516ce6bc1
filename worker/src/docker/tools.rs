//! The `tools.docker.*` kinds other than `run`: inspect, stop, remove, logs, exec, pull,
//! images and commit, plus the garbage collection of the images we commit
//! ([`reap_expired_images`]).
//!
//! Owns: ownership checks (a container or image is addressed only through the tracking
//! tables, within the caller's tenant: anything else answers exactly like a missing one,
//! `ContainerNotFound` / `ImageNotFound`, with no Docker call), the secret scrubbing of
//! what these tools return or bake (inspect env, exec and log output, commit config; a
//! container that received secrets is never committed), which images a tenant lists
//! (its own commits, and others only when the operator's allow-list names them), the
//! SQL of `highway.docker_images`, and one `highway.audit_log` row per Docker operation.
//! Must not: call bollard (that is `client`), or write `docker_containers` other than
//! through `tracking`.
//!
//! Which environment keys of a container came from secrets: the `{"secret": name}` values
//! of the `tools.docker.run` params that created it (stored with its activity; references
//! only, never values). When those params cannot be read, the worker cannot tell, and
//! fails closed: inspect hides every value, exec/logs redact every env value, commit is
//! refused.
//!
//! Error types (`HandlerError::error_type`): `InvalidParams`, `ContainerNotFound`,
//! `ImageNotFound`, `ContainerNotRunning`, `ContainerRunning`, `CommitRefused`
//! (non-retryable); `ImagePullFailed`, `DockerError` (retryable); `DockerUnavailable`,
//! `DatabaseUnavailable` (infrastructure).

use crate::docker::client::tools::{ExecSpec, LogsQuery};
use crate::docker::client::{self, Removed};
use crate::docker::policy;
use crate::docker::runtime::DockerRuntime;
use crate::docker::secrets::{Redactor, SecretValue, REDACTED};
use crate::docker::tracking::{self, AuditEvent};
use crate::executor::{
    ActivityContext, CancelReason, Handler, HandlerError, HandlerResult, Registry,
};
use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::models::{ContainerConfig, ContainerInspectResponse};
use chrono::{DateTime, Utc};
use highway_workflows::docker::{DockerRunParams, EnvValue, ImageRef, PullPolicy};
use highway_workflows::docker_tools::{
    self as wire, CommitParams, CommitResult, ExecParams, ExecResult, ImageView, ImagesParams,
    ImagesResult, InspectParams, InspectResult, LogLine, LogsParams, LogsResult, MountView,
    PullParams, PullResult, RemoveParams, RemoveResult, StopParams, StopResult, ToolParams,
};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

/// Registers every kind of this module.
pub fn register(registry: &mut Registry, rt: Arc<DockerRuntime>) {
    use wire::*;
    for (kind, tool) in [
        (KIND_INSPECT, Tool::Inspect),
        (KIND_STOP, Tool::Stop),
        (KIND_REMOVE, Tool::Remove),
        (KIND_LOGS, Tool::Logs),
        (KIND_EXEC, Tool::Exec),
        (KIND_PULL, Tool::Pull),
        (KIND_IMAGES, Tool::Images),
        (KIND_COMMIT, Tool::Commit),
    ] {
        registry.register(kind, ToolHandler::new(rt.clone(), tool));
    }
}

/// Which tool a [`ToolHandler`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Inspect,
    Stop,
    Remove,
    Logs,
    Exec,
    Pull,
    Images,
    Commit,
}

/// One `tools.docker.<tool>` kind.
#[derive(Debug, Clone)]
pub struct ToolHandler {
    rt: Arc<DockerRuntime>,
    tool: Tool,
}

impl ToolHandler {
    pub fn new(rt: Arc<DockerRuntime>, tool: Tool) -> Self {
        Self { rt, tool }
    }
}

#[async_trait]
impl Handler for ToolHandler {
    async fn run(&self, ctx: ActivityContext, params: Value) -> HandlerResult {
        let span = tracing::info_span!(
            "docker.tool",
            activity_id = %ctx.activity_id,
            attempt = ctx.attempt,
            kind = %ctx.kind,
            tenant_id = %ctx.tenant_id,
        );
        let call = Call {
            rt: &self.rt,
            ctx: &ctx,
        };
        let fut = async {
            match self.tool {
                Tool::Inspect => to_value(call.inspect(parse(&params)?).await?),
                Tool::Stop => to_value(call.stop(parse(&params)?).await?),
                Tool::Remove => to_value(call.remove(parse(&params)?).await?),
                Tool::Logs => to_value(call.logs(parse(&params)?).await?),
                Tool::Exec => to_value(call.exec(parse(&params)?).await?),
                Tool::Pull => to_value(call.pull(parse(&params)?).await?),
                Tool::Images => to_value(call.images(parse(&params)?).await?),
                Tool::Commit => {
                    let p: CommitParams = parse(&params)?;
                    let remove = p.remove_container.then(|| p.container.clone());
                    let committed = call.commit(p).await?;
                    if let Some(container) = remove {
                        call.remove_committed(container).await;
                    }
                    to_value(committed)
                }
            }
        };
        fut.instrument(span).await
    }

    fn ready(&self) -> bool {
        self.rt.is_ready()
    }
}

fn parse<P: ToolParams>(v: &Value) -> Result<P, HandlerError> {
    P::from_json(v).map_err(|e| {
        HandlerError::invalid_params(format!("`{}`: {}", e.field, e.reason))
            .with_details(json!({"code": "invalid_params", "field": e.field}))
    })
}

fn to_value<T: Serialize>(v: T) -> HandlerResult {
    serde_json::to_value(v)
        .map_err(|e| HandlerError::non_retryable("ResultEncoding", format!("result: {e}")))
}

fn db_error(e: sqlx::Error) -> HandlerError {
    HandlerError::infrastructure("DatabaseUnavailable", format!("database: {e}"))
}

/// The one answer for "missing" and "another tenant's": same type, same message shape.
fn not_found(what: &str) -> HandlerError {
    HandlerError::non_retryable("ContainerNotFound", format!("container {what:?} not found"))
}

fn image_not_found(what: &str) -> HandlerError {
    HandlerError::non_retryable("ImageNotFound", format!("image {what:?} not found"))
}

/// Why the attempt stopped, classified like the run handler does (a lease loss or a
/// shutdown is retried without burning an attempt).
fn cancel_error(reason: Option<CancelReason>) -> HandlerError {
    match reason {
        Some(CancelReason::Timeout) => {
            HandlerError::retryable("Timeout", "the attempt's deadline passed")
        }
        Some(CancelReason::LeaseLost) => {
            HandlerError::infrastructure("LeaseLost", "the worker lost the lease")
        }
        Some(CancelReason::Shutdown) => {
            HandlerError::infrastructure("Shutdown", "the worker is shutting down")
        }
        Some(CancelReason::Requested) | None => {
            HandlerError::non_retryable("Cancelled", "the activity was cancelled")
        }
    }
}

/// Maps a Docker failure; the message goes through the container's redactor.
fn docker_error(e: client::Error, redactor: &Redactor) -> HandlerError {
    let msg = redactor.redact(&e.to_string());
    if e.is_daemon_failure() {
        HandlerError::infrastructure("DockerUnavailable", msg)
    } else {
        HandlerError::retryable("DockerError", msg)
    }
}

// ------------------------------------------------------------------------ ownership

/// A tracked container of the caller's tenant.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OwnedContainer {
    pub container_id: String,
    pub name: String,
    pub status: String,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    /// The daemon the container lives on (`None`: not recorded yet).
    pub daemon_id: Option<String>,
}

impl OwnedContainer {
    fn is_gone(&self) -> bool {
        self.status == "removed" || self.status == "missing"
    }
}

/// Looks `reference` (validated: id, short id or name) up among the tenant's tracked
/// containers; the newest row wins (a name is reused across attempts only after the
/// older container is gone). Placeholder rows (`pending:`) are never matched.
pub async fn find_container(
    pool: &PgPool,
    tenant_id: &str,
    reference: &str,
) -> sqlx::Result<Option<OwnedContainer>> {
    sqlx::query_as(
        "SELECT container_id, name, status, activity_id, workflow_run_id, daemon_id
           FROM highway.docker_containers
          WHERE tenant_id = $1
            AND container_id NOT LIKE 'pending:%'
            AND (container_id = $2 OR name = $2
                 OR (length($2) >= 12 AND container_id LIKE $2 || '%'
                     AND $2 ~ '^[0-9a-f]+$'))
          ORDER BY (status IN ('removed', 'missing')), created_at DESC
          LIMIT 1",
    )
    .bind(tenant_id)
    .bind(reference)
    .fetch_optional(pool)
    .await
}

/// Which environment keys of a container came from secrets, and what to redact.
#[derive(Debug, Clone)]
struct ContainerSecrets {
    /// `None`: unknown (the creating params could not be read): treat every key as one.
    env_keys: Option<BTreeSet<String>>,
    /// Container paths of the secret files delivered at create (empty when unknown).
    files: Vec<String>,
    redactor: Redactor,
}

impl ContainerSecrets {
    fn is_secret_key(&self, key: &str) -> bool {
        self.env_keys.as_ref().is_none_or(|k| k.contains(key))
    }
}

/// The params of the `tools.docker.run` activity that created the container (references
/// only). A read of `highway.activities`, the one place they are stored.
async fn run_params(
    pool: &PgPool,
    tenant_id: &str,
    activity_id: Option<Uuid>,
) -> sqlx::Result<Option<DockerRunParams>> {
    let Some(id) = activity_id else {
        return Ok(None);
    };
    let raw: Option<Value> = sqlx::query_scalar(
        "SELECT params FROM highway.activities
          WHERE id = $1 AND tenant_id = $2 AND kind = 'tools.docker.run'",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(raw.and_then(|v| DockerRunParams::from_json(&v).ok()))
}

fn split_env(entry: &str) -> (&str, &str) {
    entry.split_once('=').unwrap_or((entry, ""))
}

struct Call<'a> {
    rt: &'a Arc<DockerRuntime>,
    ctx: &'a ActivityContext,
}

impl Call<'_> {
    async fn audit(&self, action: &str, target: Option<&str>, outcome: &str, details: Value) {
        let actor = self.rt.actor();
        let ev = AuditEvent {
            tenant_id: &self.ctx.tenant_id,
            actor: &actor,
            action,
            target,
            activity_id: Some(self.ctx.activity_id),
            workflow_run_id: self.ctx.workflow_run_id,
            outcome,
            details,
        };
        tracking::audit_or_warn(&self.rt.pool, &ev).await;
    }

    /// The tenant's container, or `ContainerNotFound` (audited, no Docker call).
    async fn owned(
        &self,
        action: &str,
        reference: &str,
        allow_gone: bool,
    ) -> Result<OwnedContainer, HandlerError> {
        let row = find_container(&self.rt.pool, &self.ctx.tenant_id, reference)
            .await
            .map_err(db_error)?;
        match row {
            Some(r) if !r.is_gone() && r.daemon_id.is_some() => {
                // A container on another Docker host is that host's workers' to act on:
                // this daemon would answer 404 and the row would be wrongly closed.
                let here = self
                    .rt
                    .client
                    .daemon_id()
                    .await
                    .map_err(|e| docker_error(e, &Redactor::default()))?;
                if r.daemon_id.as_deref() != Some(here.as_str()) {
                    self.audit(
                        action,
                        Some(&r.container_id),
                        "wrong_host",
                        json!({"container": reference, "daemon_id": r.daemon_id}),
                    )
                    .await;
                    return Err(HandlerError::infrastructure(
                        "ContainerOnAnotherHost",
                        format!(
                            "container {reference} lives on Docker daemon {}, not on this \
                             worker's; route the activity to a queue served by that host",
                            r.daemon_id.as_deref().unwrap_or_default()
                        ),
                    ));
                }
                Ok(r)
            }
            Some(r) if allow_gone || !r.is_gone() => Ok(r),
            _ => {
                self.audit(action, None, "not_found", json!({"container": reference}))
                    .await;
                Err(not_found(reference))
            }
        }
    }

    /// Inspects an owned container; 404 closes the tracking row and answers like a
    /// missing container.
    async fn inspect_owned(
        &self,
        action: &str,
        reference: &str,
        row: &OwnedContainer,
    ) -> Result<ContainerInspectResponse, HandlerError> {
        match self.rt.client.inspect_container(&row.container_id).await {
            Ok(Some(i)) => Ok(i),
            Ok(None) => {
                let _ = tracking::mark_missing(
                    &self.rt.pool,
                    &row.container_id,
                    &self.rt.actor(),
                    "not_on_daemon",
                )
                .await;
                self.audit(
                    action,
                    Some(&row.container_id),
                    "not_found",
                    json!({"container": reference}),
                )
                .await;
                Err(not_found(reference))
            }
            Err(e) => Err(docker_error(e, &Redactor::default())),
        }
    }

    async fn secrets_of(
        &self,
        row: &OwnedContainer,
        inspect: Option<&ContainerInspectResponse>,
    ) -> Result<ContainerSecrets, HandlerError> {
        let params = run_params(&self.rt.pool, &self.ctx.tenant_id, row.activity_id)
            .await
            .map_err(db_error)?;
        let env: Vec<String> = inspect
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        let mut values: Vec<SecretValue> = Vec::new();
        let env_keys = params.as_ref().map(|p| {
            p.environment
                .iter()
                .filter(|(_, v)| matches!(v, EnvValue::Secret(_)))
                .map(|(k, _)| k.clone())
                .collect::<BTreeSet<_>>()
        });
        // The values the container actually holds (a secret rotated since create is
        // still hidden), plus secret files resolved again, best effort.
        for e in &env {
            let (k, v) = split_env(e);
            let secret = match &env_keys {
                Some(keys) => keys.contains(k),
                // Unknown: every value of 4+ bytes (shorter ones would mangle output).
                None => v.len() >= 4,
            };
            if secret && !v.is_empty() {
                values.push(SecretValue::new(v));
            }
        }
        if let Some(p) = &params {
            for name in p.secret_names() {
                if let Ok(v) = self.rt.secrets.resolve(&self.ctx.tenant_id, name).await {
                    values.push(v);
                }
            }
        }
        Ok(ContainerSecrets {
            env_keys,
            files: params
                .as_ref()
                .map(|p| p.secrets.iter().map(|s| s.target()).collect())
                .unwrap_or_default(),
            redactor: Redactor::new(values.iter()),
        })
    }

    // -------------------------------------------------------------------- inspect

    async fn inspect(&self, p: InspectParams) -> Result<InspectResult, HandlerError> {
        let action = "container.inspect";
        let row = self.owned(action, &p.container, false).await?;
        let i = self.inspect_owned(action, &p.container, &row).await?;
        let secrets = self.secrets_of(&row, Some(&i)).await?;
        let r = &secrets.redactor;
        let state = i.state.clone().unwrap_or_default();
        let config = i.config.clone().unwrap_or_default();
        let env = config
            .env
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let (k, v) = split_env(e);
                if secrets.is_secret_key(k) {
                    format!("{k}={REDACTED}")
                } else {
                    format!("{k}={}", r.redact(v))
                }
            })
            .collect();
        let networks = i
            .network_settings
            .as_ref()
            .and_then(|n| n.networks.clone())
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.ip_address.unwrap_or_default()))
            .collect();
        let mounts = i
            .mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| MountView {
                kind: m
                    .typ
                    .and_then(|t| serde_json::to_value(t).ok())
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                source: m.source.map(|s| r.redact(&s)),
                destination: m.destination.unwrap_or_default(),
                read_only: !m.rw.unwrap_or(true),
            })
            .collect();
        let redact_all = |v: Vec<String>| v.iter().map(|s| r.redact(s)).collect::<Vec<_>>();
        let result = InspectResult {
            container_id: row.container_id.clone(),
            name: i
                .name
                .clone()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            image: config.image.clone().unwrap_or_default(),
            status: state.status.map(|s| s.to_string()).unwrap_or_default(),
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            started_at: state.started_at.filter(|s| !s.starts_with("0001")),
            finished_at: state.finished_at.filter(|s| !s.starts_with("0001")),
            command: redact_all(config.cmd.unwrap_or_default()),
            entrypoint: redact_all(config.entrypoint.unwrap_or_default()),
            env,
            labels: config
                .labels
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    let v = r.redact(&v);
                    (k, v)
                })
                .collect(),
            working_dir: config.working_dir.filter(|s| !s.is_empty()),
            user: config.user.filter(|s| !s.is_empty()),
            network_mode: i.host_config.as_ref().and_then(|h| h.network_mode.clone()),
            networks,
            mounts,
        };
        self.audit(action, Some(&row.container_id), "ok", json!({}))
            .await;
        Ok(result)
    }

    // -------------------------------------------------------------------- stop

    async fn stop(&self, p: StopParams) -> Result<StopResult, HandlerError> {
        let action = "container.stop";
        let row = self.owned(action, &p.container, false).await?;
        let before = self.inspect_owned(action, &p.container, &row).await?;
        let secrets = self.secrets_of(&row, Some(&before)).await?;
        let was_running = before
            .state
            .as_ref()
            .and_then(|s| s.running)
            .unwrap_or(false);
        let id = row.container_id.as_str();
        let mut killed = false;
        if was_running {
            self.ctx.record_heartbeat(json!({"phase": "stopping"}));
            if let Err(e) = self.rt.client.stop_container(id, p.grace.0).await {
                // A stop whose call timed out may still be in progress (trap 5): kill.
                self.audit(
                    action,
                    Some(id),
                    "failed",
                    json!({"error": secrets.redactor.redact(&e.to_string())}),
                )
                .await;
                self.rt
                    .client
                    .kill_container(id)
                    .await
                    .map_err(|e| docker_error(e, &secrets.redactor))?;
                killed = true;
                self.audit("container.kill", Some(id), "ok", json!({}))
                    .await;
            } else {
                self.audit(
                    action,
                    Some(id),
                    "ok",
                    json!({"grace_seconds": p.grace.0.as_secs()}),
                )
                .await;
            }
        } else {
            self.audit(action, Some(id), "ok", json!({"was_running": false}))
                .await;
        }
        let after = self.inspect_owned(action, &p.container, &row).await?;
        let state = after.state.unwrap_or_default();
        let finished = state
            .finished_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        if !state.running.unwrap_or(false) {
            tracking::mark_exited(
                &self.rt.pool,
                id,
                state.exit_code,
                state.oom_killed.unwrap_or(false),
                finished,
            )
            .await
            .map_err(db_error)?;
        }
        Ok(StopResult {
            container_id: id.to_string(),
            was_running,
            exit_code: state.exit_code,
            killed,
        })
    }

    // -------------------------------------------------------------------- remove

    async fn remove(&self, p: RemoveParams) -> Result<RemoveResult, HandlerError> {
        let action = "container.remove";
        let row = self.owned(action, &p.container, false).await?;
        let id = row.container_id.as_str();
        // The end as the daemon saw it, read before the removal destroys it.
        let end = match self.rt.client.container_end(id).await {
            Ok(Some(e)) => e.evidence(),
            _ => Default::default(),
        };
        let outcome = self
            .rt
            .client
            .remove_container_with(id, p.force, p.volumes)
            .await;
        let reason = format!("tool:{}", self.ctx.activity_id);
        match outcome {
            Ok(removed) => {
                tracking::mark_removed(&self.rt.pool, id, &self.rt.actor(), &reason, &end)
                    .await
                    .map_err(db_error)?;
                let gone = removed == Removed::AlreadyGone;
                self.audit(
                    action,
                    Some(id),
                    "ok",
                    json!({"force": p.force, "volumes": p.volumes, "already_gone": gone}),
                )
                .await;
                Ok(RemoveResult {
                    container_id: id.to_string(),
                    removed: !gone,
                })
            }
            Err(e) if e.is_conflict() && !p.force => {
                self.audit(action, Some(id), "refused", json!({"reason": "running"}))
                    .await;
                Err(HandlerError::non_retryable(
                    "ContainerRunning",
                    format!(
                        "container {:?} is running: stop it first or pass `force`",
                        p.container
                    ),
                ))
            }
            Err(e) => {
                let msg = e.to_string();
                self.audit(action, Some(id), "failed", json!({"error": msg}))
                    .await;
                Err(docker_error(e, &Redactor::default()))
            }
        }
    }

    /// `remove_container` of a commit: the container is removed (as `tools.docker.remove`
    /// would, tracked and audited) once its image is recorded. Best effort: on failure
    /// the garbage collector removes it after its retention.
    async fn remove_committed(&self, container: String) {
        let p = RemoveParams {
            container,
            force: false,
            volumes: true,
        };
        if let Err(e) = self.remove(p).await {
            tracing::warn!(error = %e.message, "committed container not removed; the GC will");
        }
    }

    // -------------------------------------------------------------------- logs

    async fn logs(&self, p: LogsParams) -> Result<LogsResult, HandlerError> {
        let action = "container.logs";
        let row = self.owned(action, &p.container, true).await?;
        let cap = self.rt.settings.logs.capture_bytes.max(1024);
        let live = if row.is_gone() {
            None
        } else {
            self.rt
                .client
                .inspect_container(&row.container_id)
                .await
                .map_err(|e| docker_error(e, &Redactor::default()))?
        };
        let (source, mut lines) = match &live {
            Some(i) => {
                let secrets = self.secrets_of(&row, Some(i)).await?;
                let lines = self.docker_logs(&row, &p, &secrets.redactor).await?;
                ("docker", lines)
            }
            None => {
                let Some(activity) = row.activity_id else {
                    return Err(not_found(&p.container));
                };
                let lines = stored_logs(&self.rt.pool, activity, &p)
                    .await
                    .map_err(db_error)?;
                ("activity_logs", lines)
            }
        };
        if let Some(t) = p.tail {
            let t = usize::try_from(t).unwrap_or(usize::MAX);
            if lines.len() > t {
                lines.drain(..lines.len() - t);
            }
        }
        // Keep the newest lines within the capture cap.
        let mut truncated = false;
        let mut bytes = 0usize;
        let mut keep = lines.len();
        for (i, l) in lines.iter().enumerate().rev() {
            bytes += l.line.len() + 1;
            if bytes > cap {
                truncated = true;
                break;
            }
            keep = i;
        }
        lines.drain(..keep);
        self.audit(
            action,
            Some(&row.container_id),
            "ok",
            json!({"source": source, "lines": lines.len(), "truncated": truncated}),
        )
        .await;
        Ok(LogsResult {
            container_id: row.container_id,
            source: source.into(),
            lines,
            truncated,
        })
    }

    async fn docker_logs(
        &self,
        row: &OwnedContainer,
        p: &LogsParams,
        redactor: &Redactor,
    ) -> Result<Vec<LogLine>, HandlerError> {
        let q = LogsQuery {
            tail: p.tail,
            since: p.since.map(|t| t.timestamp()),
            // `until` is whole seconds on the daemon: ask one more, filter exactly below.
            until: p.until.map(|t| t.timestamp() + 1),
        };
        let mut stream = self
            .rt
            .client
            .logs(&row.container_id, q)
            .map_err(|e| docker_error(e, redactor))?;
        let cap = self.rt.settings.logs.capture_bytes.max(1024);
        let mut out: std::collections::VecDeque<LogLine> = Default::default();
        let mut bytes = 0usize;
        let deadline = Instant::now() + self.rt.client.settings().call_timeout * 6;
        let res = self
            .rt
            .client
            .drain_output("logs", &mut stream, deadline, |item| {
                let (name, msg) = match item {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        ("stdout", message)
                    }
                    LogOutput::StdErr { message } => ("stderr", message),
                    LogOutput::StdIn { .. } => return,
                };
                let text = String::from_utf8_lossy(&msg);
                for raw in text.lines() {
                    let (at, line) = match raw.split_once(' ') {
                        Some((ts, rest)) => match DateTime::parse_from_rfc3339(ts) {
                            Ok(t) => (Some(t.with_timezone(&Utc)), rest),
                            Err(_) => (None, raw),
                        },
                        None => (None, raw),
                    };
                    if let (Some(t), Some(s)) = (at, p.since) {
                        if t < s {
                            continue;
                        }
                    }
                    if let (Some(t), Some(u)) = (at, p.until) {
                        if t >= u {
                            continue;
                        }
                    }
                    let line = redactor.redact(line);
                    bytes += line.len() + 1;
                    out.push_back(LogLine {
                        stream: name.into(),
                        line,
                        at,
                    });
                    // Bounded memory: never hold much more than the cap.
                    while bytes > cap * 2 {
                        if let Some(old) = out.pop_front() {
                            bytes -= old.line.len() + 1;
                        }
                    }
                }
            })
            .await;
        res.map_err(|e| docker_error(e, redactor))?;
        Ok(out.into())
    }

    // -------------------------------------------------------------------- exec

    async fn exec(&self, p: ExecParams) -> Result<ExecResult, HandlerError> {
        let action = "container.exec";
        let row = self.owned(action, &p.container, false).await?;
        let i = self.inspect_owned(action, &p.container, &row).await?;
        let secrets = self.secrets_of(&row, Some(&i)).await?;
        let r = &secrets.redactor;
        if !i.state.as_ref().and_then(|s| s.running).unwrap_or(false) {
            self.audit(
                action,
                Some(&row.container_id),
                "refused",
                json!({"reason": "not_running"}),
            )
            .await;
            return Err(HandlerError::non_retryable(
                "ContainerNotRunning",
                format!("container {:?} is not running", p.container),
            ));
        }
        let spec = ExecSpec {
            cmd: p.command.clone(),
            env: p
                .environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            user: p.user.clone(),
            working_dir: p.working_dir.clone(),
            stdin: p.stdin.is_some(),
        };
        let started = Instant::now();
        let exec = self.rt.client.exec_start(&row.container_id, spec).await;
        let mut exec = match exec {
            Ok(x) => x,
            Err(e) => {
                let msg = r.redact(&e.to_string());
                self.audit(
                    action,
                    Some(&row.container_id),
                    "failed",
                    json!({"error": msg}),
                )
                .await;
                return Err(docker_error(e, r));
            }
        };
        self.ctx
            .record_heartbeat(json!({"phase": "exec", "exec_id": exec.exec_id}));
        let reader = crate::docker::logs::Reader::spawn(
            exec.output,
            r.clone(),
            &self.rt.settings.logs,
            None,
        );
        if let Some(input) = &p.stdin {
            // Bounded: a process that never reads stdin must not hang us past the timeout.
            let write = async {
                exec.input.write_all(input.as_bytes()).await?;
                exec.input.shutdown().await
            };
            let _ = tokio::time::timeout(p.timeout.0, write).await;
        }
        drop(exec.input);
        let remaining = p.timeout.0.saturating_sub(started.elapsed());
        let captured = tokio::select! {
            c = reader.finish(remaining) => c,
            // Cancellation stops reading; the exec itself cannot be killed (moby#9098).
            _ = self.ctx.cancelled() => {
                self.audit(action, Some(&row.container_id), "cancelled", json!({})).await;
                return Err(cancel_error(self.ctx.cancel_reason()));
            }
        };
        let inspect = self
            .rt
            .client
            .exec_inspect(&exec.exec_id)
            .await
            .map_err(|e| docker_error(e, r))?;
        let running = inspect.running.unwrap_or(false);
        let result = ExecResult {
            container_id: row.container_id.clone(),
            exit_code: if running { None } else { inspect.exit_code },
            timed_out: running,
            stdout: captured.stdout,
            stderr: captured.stderr,
            truncated: captured.truncated,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        self.audit(
            action,
            Some(&row.container_id),
            if running { "timed_out" } else { "ok" },
            json!({
                "exec_id": exec.exec_id,
                "argv0": r.redact(&p.command[0]),
                "args": p.command.len(),
                "exit_code": result.exit_code,
                "stdin_bytes": p.stdin.as_ref().map(String::len),
            }),
        )
        .await;
        Ok(result)
    }

    // -------------------------------------------------------------------- images

    /// Refuses references in another tenant's commit namespace, as if absent.
    fn check_namespace(&self, reference: &str) -> Result<(), HandlerError> {
        if in_foreign_namespace(&self.ctx.tenant_id, reference) {
            return Err(image_not_found(reference));
        }
        Ok(())
    }

    async fn pull(&self, p: PullParams) -> Result<PullResult, HandlerError> {
        let action = "image.pull";
        let image = ImageRef::parse(&p.image)
            .map_err(|e| HandlerError::invalid_params(format!("`image`: {e}")))?
            .to_string();
        if let Err(e) = self.check_namespace(&image) {
            self.audit(action, None, "not_found", json!({"image": image}))
                .await;
            return Err(e);
        }
        let present = self
            .rt
            .client
            .inspect_image(&image)
            .await
            .map_err(|e| docker_error(e, &Redactor::default()))?;
        if let Some(i) = &present {
            let tags = i.repo_tags.clone().unwrap_or_default();
            let foreign = image_is_foreign(
                &self.rt.pool,
                &self.ctx.tenant_id,
                i.id.as_deref().unwrap_or(""),
                &tags,
            )
            .await
            .map_err(db_error)?;
            if foreign {
                self.audit(action, None, "not_found", json!({"image": image}))
                    .await;
                return Err(image_not_found(&image));
            }
        }
        let must_pull = match p.policy {
            PullPolicy::Always => true,
            PullPolicy::IfNotPresent => present.is_none(),
            PullPolicy::Never => false,
        };
        if !must_pull {
            return match present.and_then(|i| i.id) {
                Some(id) => Ok(PullResult {
                    image,
                    image_id: id,
                    pulled: false,
                }),
                None => Err(image_not_found(&image)),
            };
        }
        let creds = self
            .rt
            .registries
            .for_image(&self.ctx.tenant_id, &image)
            .await?;
        let ctx = self.ctx;
        let mut layers: BTreeMap<String, String> = BTreeMap::new();
        let mut last = Instant::now() - Duration::from_secs(1);
        let pull = self.rt.client.pull_image(&image, creds.as_ref(), |info| {
            if let (Some(id), Some(status)) = (&info.id, &info.status) {
                layers.insert(id.clone(), status.clone());
            }
            // Only the latest value is sent with a heartbeat: no need to flood.
            if last.elapsed() >= Duration::from_millis(500) {
                last = Instant::now();
                let done = layers
                    .values()
                    .filter(|s| s.starts_with("Pull complete") || s.starts_with("Already"))
                    .count();
                ctx.record_heartbeat(json!({
                    "phase": "pulling",
                    "image": image,
                    "status": info.status,
                    "layers": layers.len(),
                    "layers_done": done,
                }));
            }
        });
        // A cancelled activity stops waiting; the daemon may finish the pull anyway
        // (harmless: images are shared and the next pull finds it present).
        let res = tokio::select! {
            r = pull => r,
            _ = self.ctx.cancelled() => {
                self.audit(action, Some(&image), "cancelled", json!({})).await;
                return Err(cancel_error(self.ctx.cancel_reason()));
            }
        };
        if let Err(e) = res {
            let msg = e.to_string();
            self.audit(action, Some(&image), "failed", json!({"error": msg}))
                .await;
            return Err(if let client::Error::Unauthorized { .. } = e {
                HandlerError::non_retryable(
                    "ImagePullFailed",
                    crate::docker::registry_auth::refusal_text(&image, creds.as_ref(), &msg),
                )
            } else if e.is_daemon_failure() {
                HandlerError::infrastructure("DockerUnavailable", msg)
            } else if e.is_not_found() {
                HandlerError::non_retryable("ImagePullFailed", msg)
            } else {
                HandlerError::retryable("ImagePullFailed", msg)
            });
        }
        let id = self
            .rt
            .client
            .inspect_image(&image)
            .await
            .map_err(|e| docker_error(e, &Redactor::default()))?
            .and_then(|i| i.id)
            .unwrap_or_default();
        self.audit(action, Some(&image), "ok", json!({"image_id": id}))
            .await;
        Ok(PullResult {
            image,
            image_id: id,
            pulled: true,
        })
    }

    async fn images(&self, p: ImagesParams) -> Result<ImagesResult, HandlerError> {
        let action = "image.list";
        let mut filters: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(r) = &p.reference {
            filters.insert("reference".into(), vec![r.clone()]);
        }
        if !p.labels.is_empty() {
            filters.insert("label".into(), p.labels.clone());
        }
        if let Some(d) = p.dangling {
            filters.insert("dangling".into(), vec![d.to_string()]);
        }
        let list = self
            .rt
            .client
            .list_images(&filters)
            .await
            .map_err(|e| docker_error(e, &Redactor::default()))?;
        let tracked = tracked_image_owners(&self.rt.pool)
            .await
            .map_err(db_error)?;
        let images: Vec<ImageView> = list
            .into_iter()
            .filter_map(|i| {
                let owner = tracked.get(&i.id);
                let owned = owner.is_some_and(|t| *t == self.ctx.tenant_id);
                // Another tenant's commit, tracked or just in its namespace: invisible.
                if owner.is_some() && !owned {
                    return None;
                }
                if i.repo_tags
                    .iter()
                    .any(|t| in_foreign_namespace(&self.ctx.tenant_id, t))
                {
                    return None;
                }
                // Nobody's image (another stack's, the operator's): listed only when the
                // operator's allow-list names one of its tags.
                if !owned
                    && !i
                        .repo_tags
                        .iter()
                        .any(|t| policy::lists_image(&self.rt.config.policy, t))
                {
                    return None;
                }
                Some(ImageView {
                    image_id: i.id,
                    repo_tags: i.repo_tags,
                    size: i.size,
                    created: i.created,
                    labels: i.labels.into_iter().collect(),
                    owned,
                })
            })
            .collect();
        self.audit(action, None, "ok", json!({"count": images.len()}))
            .await;
        Ok(ImagesResult { images })
    }

    // -------------------------------------------------------------------- commit

    async fn commit(&self, p: CommitParams) -> Result<CommitResult, HandlerError> {
        let action = "image.commit";
        let row = self.owned(action, &p.container, false).await?;
        let i = self.inspect_owned(action, &p.container, &row).await?;
        let secrets = self.secrets_of(&row, Some(&i)).await?;
        let id = row.container_id.as_str();
        let Some(secret_keys) = secrets.env_keys.clone() else {
            self.audit(
                action,
                Some(id),
                "refused",
                json!({"reason": "unknown_secret_keys"}),
            )
            .await;
            return Err(HandlerError::non_retryable(
                "CommitRefused",
                "cannot tell which environment variables of this container came from \
                 secrets (its run params are unreadable): refusing to commit",
            ));
        };
        // A container that received secrets is never committed. The commit body can
        // override the image's `Config`, but the engine (20.10 here) also stores the
        // container's own config, environment and labels included, as the image's
        // `ContainerConfig`, which no request can change; and the secret files this
        // worker delivered lie in the container's layer. Exporting a filtered layer
        // and loading it back as an image would lose the layer sharing and the exact
        // semantics of `commit`, so the commit is refused, naming why.
        if !secret_keys.is_empty() || !secrets.files.is_empty() {
            let env: Vec<&String> = secret_keys.iter().collect();
            self.audit(
                action,
                Some(id),
                "refused",
                json!({"reason": "received_secrets", "env": env, "files": secrets.files}),
            )
            .await;
            return Err(HandlerError::non_retryable(
                "CommitRefused",
                format!(
                    "this container received secrets (environment: {env:?}, files: {:?}); \
                     an image committed from it would carry them (the engine keeps the \
                     container's configuration, environment included, in the image, and \
                     the files in its layer): refusing to commit",
                    secrets.files
                ),
            )
            .with_details(json!({"env": env, "files": secrets.files})));
        }
        let config = i.config.clone().unwrap_or_default();
        let env_keys: BTreeSet<String> = config
            .env
            .unwrap_or_default()
            .iter()
            .map(|e| split_env(e).0.to_string())
            .collect();
        // F6: the commit body can only override keys. Empty values replace secrets and
        // every `highway.*` label (the GC must never adopt containers of this image).
        let scrubbed_env: Vec<String> = secret_keys.intersection(&env_keys).cloned().collect();
        let scrubbed_labels: Vec<String> = config
            .labels
            .unwrap_or_default()
            .into_keys()
            .filter(|k| k.starts_with(highway_workflows::docker::RESERVED_LABEL_PREFIX))
            .collect();
        let body = ContainerConfig {
            env: Some(scrubbed_env.iter().map(|k| format!("{k}=")).collect()),
            labels: Some(
                scrubbed_labels
                    .iter()
                    .map(|k| (k.clone(), String::new()))
                    .collect(),
            ),
            ..Default::default()
        };
        let repo = format!(
            "highway/{}/{}",
            wire::tenant_namespace(&self.ctx.tenant_id),
            p.repository
        );
        let reference = format!("{repo}:{}", p.tag);
        self.ctx.record_heartbeat(json!({"phase": "committing"}));
        let comment = p.comment.clone().unwrap_or_default();
        let image_id = match self
            .rt
            .client
            .commit(id, &repo, &p.tag, &secrets.redactor.redact(&comment), body)
            .await
        {
            Ok(v) => v,
            Err(e) => {
                let msg = secrets.redactor.redact(&e.to_string());
                self.audit(action, Some(id), "failed", json!({"error": msg}))
                    .await;
                return Err(docker_error(e, &secrets.redactor));
            }
        };
        // Track first: an image we cannot prove clean is removed below, and the GC
        // finds it through this row if that removal fails.
        let daemon_id = self.rt.client.daemon_id().await.ok();
        let expires_at = insert_image(
            &self.rt.pool,
            &NewImage {
                image_id: &image_id,
                tenant_id: &self.ctx.tenant_id,
                reference: &reference,
                source_container_id: id,
                activity_id: self.ctx.activity_id,
                workflow_run_id: self.ctx.workflow_run_id,
                daemon_id: daemon_id.as_deref(),
                pinned: p.pinned,
                ttl: p.ttl.0,
            },
        )
        .await
        .map_err(db_error)?;
        // Verify what was baked: no secret value, no non-empty `highway.*` label.
        let baked = self
            .rt
            .client
            .inspect_image(&image_id)
            .await
            .map_err(|e| docker_error(e, &secrets.redactor))?
            .and_then(|i| i.config);
        let clean = baked.as_ref().is_some_and(|c| {
            let env_ok = c.env.iter().flatten().all(|e| {
                let (k, v) = split_env(e);
                !secret_keys.contains(k) || v.is_empty()
            }) && c
                .env
                .iter()
                .flatten()
                .all(|e| secrets.redactor.redact(e) == *e);
            let labels_ok = c.labels.iter().flatten().all(|(k, v)| {
                !k.starts_with(highway_workflows::docker::RESERVED_LABEL_PREFIX) || v.is_empty()
            });
            env_ok && labels_ok
        });
        if !clean {
            let _ = self.rt.client.remove_image(&image_id, true).await;
            let _ = mark_image_removed(&self.rt.pool, &image_id, &self.rt.actor(), "unclean").await;
            self.audit(
                action,
                Some(&image_id),
                "refused",
                json!({"reason": "unclean"}),
            )
            .await;
            return Err(HandlerError::non_retryable(
                "CommitRefused",
                "the committed image still held a secret or a highway label; it was removed",
            ));
        }
        self.audit(
            action,
            Some(&image_id),
            "ok",
            json!({
                "container": id,
                "reference": reference,
                "pinned": p.pinned,
                "scrubbed_env": scrubbed_env,
                "scrubbed_labels": scrubbed_labels,
            }),
        )
        .await;
        Ok(CommitResult {
            image_id,
            reference,
            pinned: p.pinned,
            expires_at,
            scrubbed_env,
            scrubbed_labels,
        })
    }
}

// ------------------------------------------------------------------ errors of lookups

/// How a pull handler reports a failed lookup: Postgres down is an infrastructure
/// failure (retried, uncounted); a row this key cannot open is the operator's to fix
/// (not retried).
impl From<crate::docker::registry_store::LookupError> for HandlerError {
    fn from(e: crate::docker::registry_store::LookupError) -> Self {
        use crate::docker::registry_store::LookupError;
        match e {
            LookupError::Db(e) => HandlerError::infrastructure(
                "DatabaseUnavailable",
                format!("registry credentials: {e}"),
            ),
            e @ LookupError::Undecryptable(_) => {
                HandlerError::non_retryable("ImagePullFailed", e.to_string())
            }
        }
    }
}

// ------------------------------------------------------------------------ image ownership

pub use highway_workflows::docker_tools::in_foreign_namespace;

/// Whether an image found on the daemon belongs to another tenant: tracked for another
/// tenant, or tagged in another tenant's namespace. Such an image answers as absent.
pub async fn image_is_foreign(
    pool: &PgPool,
    tenant_id: &str,
    image_id: &str,
    repo_tags: &[String],
) -> sqlx::Result<bool> {
    if repo_tags.iter().any(|t| in_foreign_namespace(tenant_id, t)) {
        return Ok(true);
    }
    let owner: Option<String> = sqlx::query_scalar(
        "SELECT tenant_id FROM highway.docker_images WHERE image_id = $1 AND removed_at IS NULL",
    )
    .bind(image_id)
    .fetch_optional(pool)
    .await?;
    Ok(owner.is_some_and(|o| o != tenant_id))
}

// ------------------------------------------------------------------------ SQL

async fn stored_logs(
    pool: &PgPool,
    activity_id: Uuid,
    p: &LogsParams,
) -> sqlx::Result<Vec<LogLine>> {
    // Newest first with a limit, then reversed: `tail` never reads the whole table.
    let limit = i64::try_from(p.tail.unwrap_or(wire::MAX_LOG_LINES)).unwrap_or(i64::MAX);
    let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT stream, line, at FROM highway.activity_logs
          WHERE activity_id = $1
            AND ($2::timestamptz IS NULL OR at >= $2)
            AND ($3::timestamptz IS NULL OR at < $3)
          ORDER BY seq DESC
          LIMIT $4",
    )
    .bind(activity_id)
    .bind(p.since)
    .bind(p.until)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .rev()
        .map(|(stream, line, at)| LogLine {
            stream,
            line,
            at: Some(at),
        })
        .collect())
}

/// Image id → owner tenant, for every tracked image not yet removed.
async fn tracked_image_owners(pool: &PgPool) -> sqlx::Result<HashMap<String, String>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT image_id, tenant_id FROM highway.docker_images WHERE removed_at IS NULL",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

struct NewImage<'a> {
    image_id: &'a str,
    tenant_id: &'a str,
    reference: &'a str,
    source_container_id: &'a str,
    activity_id: Uuid,
    workflow_run_id: Option<Uuid>,
    daemon_id: Option<&'a str>,
    pinned: bool,
    ttl: Duration,
}

/// Records a committed image; returns its expiry (`None` when pinned).
async fn insert_image(pool: &PgPool, i: &NewImage<'_>) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "INSERT INTO highway.docker_images
             (image_id, tenant_id, reference, source_container_id, activity_id,
              workflow_run_id, daemon_id, pinned, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8,
                 CASE WHEN $8 THEN NULL ELSE now() + make_interval(secs => $9) END)
         ON CONFLICT (image_id) DO UPDATE SET reference = EXCLUDED.reference
         RETURNING expires_at",
    )
    .bind(i.image_id)
    .bind(i.tenant_id)
    .bind(i.reference)
    .bind(i.source_container_id)
    .bind(i.activity_id)
    .bind(i.workflow_run_id)
    .bind(i.daemon_id)
    .bind(i.pinned)
    .bind(i.ttl.as_secs_f64())
    .fetch_one(pool)
    .await
}

async fn mark_image_removed(
    pool: &PgPool,
    image_id: &str,
    removed_by: &str,
    reason: &str,
) -> sqlx::Result<u64> {
    let r = sqlx::query(
        "UPDATE highway.docker_images
            SET removed_at = now(), removed_by = $2, removed_reason = $3
          WHERE image_id = $1 AND removed_at IS NULL",
    )
    .bind(image_id)
    .bind(removed_by)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(r.rows_affected())
}

/// A tracked image, as tests and operators see it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TrackedImage {
    pub image_id: String,
    pub tenant_id: String,
    pub reference: String,
    pub pinned: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub removed_reason: Option<String>,
}

pub async fn tracked_image(pool: &PgPool, image_id: &str) -> sqlx::Result<Option<TrackedImage>> {
    sqlx::query_as(
        "SELECT image_id, tenant_id, reference, pinned, expires_at, removed_at, removed_reason
           FROM highway.docker_images WHERE image_id = $1",
    )
    .bind(image_id)
    .fetch_optional(pool)
    .await
}

// ------------------------------------------------------------------------ GC

/// What one [`reap_expired_images`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImageReapCounts {
    /// Removed from the daemon now.
    pub removed: u64,
    /// Already gone from the daemon; row closed.
    pub gone: u64,
    /// Still used by a container (409): left for a later pass.
    pub in_use: u64,
    pub failed: u64,
}

/// A committed snapshot image past its TTL: what the reaper removes next and what the
/// GC plan (`GET /v1/gc/plan`) lists.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ExpiredImage {
    pub image_id: String,
    pub reference: String,
    pub tenant_id: String,
    pub activity_id: Option<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    /// Always `expired`: why the pass would remove it.
    pub reason: String,
}

/// Unpinned images of this daemon (or of none recorded) whose TTL passed, oldest
/// expiry first: the ones the collector's image sweep would remove next.
pub async fn expired_images(
    db: impl sqlx::PgExecutor<'_>,
    daemon_id: &str,
    limit: i64,
) -> sqlx::Result<Vec<ExpiredImage>> {
    sqlx::query_as(
        "SELECT image_id, reference, tenant_id, activity_id, expires_at, 'expired' AS reason
           FROM highway.docker_images
          WHERE removed_at IS NULL AND NOT pinned AND expires_at <= now()
            AND (daemon_id = $1 OR daemon_id IS NULL)
          ORDER BY expires_at LIMIT $2",
    )
    .bind(daemon_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Removes expired, unpinned images committed on this daemon (at most `limit` per
/// pass), closing their rows and auditing each removal as `actor`. For the garbage
/// collector's pass (`gc:<id>`, with `DaemonClock::id`) or `highway gc`; expiry is judged
/// by Postgres' clock. `Err` only for the database; Docker failures are counted.
pub async fn reap_expired_images(
    client: &client::DockerClient,
    pool: &PgPool,
    actor: &str,
    daemon_id: &str,
    limit: i64,
) -> sqlx::Result<ImageReapCounts> {
    let rows = expired_images(pool, daemon_id, limit).await?;
    let mut counts = ImageReapCounts::default();
    for ExpiredImage {
        image_id,
        tenant_id,
        activity_id,
        ..
    } in rows
    {
        let (outcome, details) = match client.remove_image(&image_id, false).await {
            Ok(true) => {
                counts.removed += 1;
                mark_image_removed(pool, &image_id, actor, "expired").await?;
                ("ok", json!({"reason": "expired"}))
            }
            Ok(false) => {
                counts.gone += 1;
                mark_image_removed(pool, &image_id, actor, "gone").await?;
                ("ok", json!({"reason": "expired", "already_gone": true}))
            }
            Err(e) if e.is_conflict() => {
                counts.in_use += 1;
                ("deferred", json!({"reason": "in_use"}))
            }
            Err(e) => {
                counts.failed += 1;
                ("failed", json!({"error": e.to_string()}))
            }
        };
        let ev = AuditEvent {
            tenant_id: &tenant_id,
            actor,
            action: "image.gc_remove",
            target: Some(&image_id),
            activity_id,
            workflow_run_id: None,
            outcome,
            details,
        };
        tracking::audit_or_warn(pool, &ev).await;
    }
    Ok(counts)
}
