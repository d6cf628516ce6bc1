//! `highway activity ls|show|logs|enqueue|cancel|retry`: activities through the API
//! (HIGHWAY_API_URL, HIGHWAY_TOKEN; see `remote`). `enqueue --wait` long-polls the activity
//! until it ends and exits with its outcome (see `output::exit`). The older spellings
//! (`activities …`, `enqueue`, `cancel`) are hidden aliases of these.

use super::output::{self, exit, Table};
use super::progress::Progress;
use super::remote::{Remote, RemoteArgs};
use super::{cell, cell_time, logs, text};
use anyhow::{bail, Context};
use clap::Subcommand;
use highway_workflows::{Activity, ActivityStatus, EnqueueRequest, HumanDuration};
use serde_json::{json, Value};
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Subcommand, Debug)]
pub enum ActivityCommand {
    /// List activities, newest first.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Admin tokens only (a tenant token sees its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        queue: Option<String>,
        #[arg(long)]
        run: Option<Uuid>,
        /// 1 to 1000.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Show one activity.
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        id: Uuid,
        /// Only if it belongs to this tenant (a tenant token: always its own).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Print an activity's log lines; `-f` follows until it finishes.
    Logs(logs::LogsArgs),
    /// Enqueue one activity (`--wait`: until it ends, exiting with its outcome).
    #[command(after_help = output::EXIT_CODES_HELP)]
    Enqueue(EnqueueArgs),
    /// Cancel an activity: a waiting one at once, a running one is stopped.
    Cancel(CancelArgs),
    /// Put a failed, cancelled or timed-out activity back in its queue, with its whole
    /// retry budget again (attempt numbers keep counting).
    Retry {
        #[command(flatten)]
        remote: RemoteArgs,
        id: Uuid,
        #[arg(long, hide = true)]
        json: bool,
    },
}

#[derive(clap::Args, Debug)]
pub struct EnqueueArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Activity kind, e.g. `tools.docker.run` or `highway.noop`.
    pub kind: String,
    /// Parameters, a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    /// Admin tokens: the tenant to enqueue for (default `default`); a tenant token
    /// enqueues for its own.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, default_value = highway_workflows::types::DEFAULT_QUEUE)]
    pub queue: String,
    /// 1 (most urgent) to 9.
    #[arg(long, default_value_t = highway_workflows::types::DEFAULT_PRIORITY)]
    pub priority: i16,
    /// Same key + same request returns the existing activity; a different request is refused.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Attempts in all (the first included).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Start no earlier than this delay from now (e.g. `30s`).
    #[arg(long)]
    pub delay: Option<HumanDuration>,
    /// Start-to-close timeout of one attempt (e.g. `10m`).
    #[arg(long)]
    pub start_to_close: Option<HumanDuration>,
    /// Schedule-to-close timeout of the whole activity, retries included.
    #[arg(long)]
    pub schedule_to_close: Option<HumanDuration>,
    /// Lease / heartbeat timeout of a running attempt (default: the worker's lease).
    #[arg(long)]
    pub heartbeat_timeout: Option<HumanDuration>,
    /// Workflow run the activity belongs to.
    #[arg(long)]
    pub run: Option<Uuid>,
    /// A whole request as JSON (the fields of EnqueueRequest); the flags above are ignored.
    #[arg(long, conflicts_with = "params")]
    pub request: Option<String>,
    /// Wait until the activity finishes; exit with its outcome (3 failed, 5 cancelled).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits (then exit code 4; the activity goes on).
    #[arg(long, default_value = "1h")]
    pub timeout: HumanDuration,
    #[arg(long, hide = true)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct CancelArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Activity id (or workflow run id with --run).
    pub id: Uuid,
    /// Cancel the workflow run with this id (all of its activities); `highway run
    /// cancel` says it shorter.
    #[arg(long)]
    pub run: bool,
    /// Only if it belongs to this tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    #[arg(long, hide = true)]
    pub json: bool,
}

pub async fn run(cmd: ActivityCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ActivityCommand::Ls {
            remote,
            tenant,
            status,
            kind,
            queue,
            run,
            limit,
            json,
        } => {
            if let Some(s) = &status {
                s.parse::<ActivityStatus>()
                    .map_err(|e| anyhow::anyhow!("--status: {e}"))?;
            }
            if !(1..=1000).contains(&limit) {
                bail!("--limit must be between 1 and 1000");
            }
            let api = Remote::new(&remote)?;
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("tenant", tenant),
                ("status", status),
                ("kind", kind),
                ("queue", queue),
                ("run", run.map(|r| r.to_string())),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let body = api.get_json("/v1/activities", &q).await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if output::json(json) {
                println!("{}", text::json_for_terminal(&Value::Array(items), false));
            } else {
                let mut t = Table::new(&["ID", "STATUS", "ATT", "KIND", "TENANT", "CREATED"]);
                for a in items {
                    t.row(vec![
                        cell(&a["id"]),
                        cell(&a["status"]),
                        cell(&a["attempt"]),
                        cell(&a["kind"]),
                        cell(&a["tenant_id"]),
                        cell_time(&a["created_at"]),
                    ]);
                }
                t.print();
            }
            Ok(ExitCode::SUCCESS)
        }
        ActivityCommand::Show {
            remote,
            id,
            tenant,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let q: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
            let a = api.get_json(&format!("/v1/activities/{id}"), &q).await?;
            println!("{}", text::json_for_terminal(&a, !output::json(json)));
            Ok(ExitCode::SUCCESS)
        }
        ActivityCommand::Logs(a) => logs::run(a).await,
        ActivityCommand::Enqueue(a) => enqueue(a).await,
        ActivityCommand::Cancel(a) => cancel(a).await,
        ActivityCommand::Retry { remote, id, json } => {
            let api = Remote::new(&remote)?;
            let v = api
                .post_json(&format!("/v1/activities/{id}/retry"), &json!({}))
                .await?;
            if output::json(json) {
                println!("{}", text::json_for_terminal(&v, false));
            } else {
                println!(
                    "{id}: requeued (was {}; attempts up to {})",
                    cell(&v["previous_status"]),
                    cell(&v["activity"]["max_attempts"])
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The request body: `--request` as given, or built from the flags. Without
/// `--tenant` the body names no tenant, so a tenant token's own applies.
fn request_body(a: &EnqueueArgs) -> anyhow::Result<Value> {
    if let Some(r) = &a.request {
        // Parsed here for a clear local error; sent as written.
        serde_json::from_str::<EnqueueRequest>(r).context("--request")?;
        return serde_json::from_str(r).context("--request");
    }
    let params: Value = serde_json::from_str(&a.params).context("--params is not valid JSON")?;
    let mut req = EnqueueRequest::new(a.kind.clone(), params).queue(a.queue.clone());
    if let Some(t) = &a.tenant {
        req = req.tenant(t.clone());
    }
    req.priority = a.priority;
    req.idempotency_key = a.idempotency_key.clone();
    req.workflow_run_id = a.run;
    req.delay = a.delay;
    if let Some(n) = a.max_attempts {
        req.retry_policy.maximum_attempts = n;
    }
    req.timeouts.start_to_close = a.start_to_close;
    req.timeouts.schedule_to_close = a.schedule_to_close;
    req.timeouts.heartbeat = a.heartbeat_timeout;
    req.validate()
        .map_err(|e| anyhow::anyhow!("{}: {}", e.field, e.reason))?;
    let mut body = serde_json::to_value(&req)?;
    if a.tenant.is_none() {
        if let Some(o) = body.as_object_mut() {
            o.remove("tenant_id");
        }
    }
    Ok(body)
}

async fn enqueue(a: EnqueueArgs) -> anyhow::Result<ExitCode> {
    let json = output::json(a.json);
    let body = request_body(&a)?;
    let api = Remote::new(&a.remote)?;
    let act = api.post_json("/v1/activities", &body).await?;
    let id: Uuid = act["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("the API answered an activity without an id: {act}"))?;
    if !a.wait {
        if json {
            println!(
                "{}",
                json!({"id": id, "created": act["created"], "status": act["status"]})
            );
        } else {
            println!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let progress = Progress::new(json);
    let Some(act) = wait_activity(&api, id, a.timeout.0, &progress).await? else {
        eprintln!("activity {id} still not finished after {}", a.timeout);
        return Ok(ExitCode::from(exit::WAIT_TIMED_OUT));
    };
    if json {
        let v = json!({"id": act.id, "status": act.status, "attempt": act.attempt, "result": act.result, "error": act.error});
        println!("{}", text::json_for_terminal(&v, false));
    } else {
        println!("{} {} (attempt {})", act.id, act.status, act.attempt);
        if let Some(r) = &act.result {
            println!("{}", text::json_for_terminal(r, true));
        }
        if let Some(e) = &act.error {
            println!("error: {}", text::json_for_terminal(e, true));
        }
    }
    Ok(output::for_status(&act.status))
}

/// Waits until the activity is terminal with long polls (`GET /v1/activities/{id}?wait=`,
/// which the server answers the moment the activity ends); `None` when `timeout` passed
/// first. Keeps the spinner up to date: while it is drawn each poll lasts at most a
/// second, so status and pull progress stay fresh. A server without `wait` (older than
/// this CLI) is polled instead, 50 ms growing to 1 s.
pub async fn wait_activity(
    api: &Remote,
    id: Uuid,
    timeout: std::time::Duration,
    progress: &Progress,
) -> anyhow::Result<Option<Activity>> {
    use std::time::Duration;
    let deadline = tokio::time::Instant::now() + timeout;
    let chunk = if progress.is_drawing() {
        Duration::from_secs(1)
    } else {
        // Under the client's 30 s request timeout.
        Duration::from_secs(20)
    };
    let path = format!("/v1/activities/{id}");
    let mut long_poll = true;
    let mut interval = Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let v = if long_poll {
            let wait = format!("{}ms", left.min(chunk).as_millis());
            match api.get_json(&path, &[("wait", wait)]).await {
                Ok(v) => v,
                Err(e) if e.to_string().contains("`wait`") => {
                    long_poll = false;
                    continue;
                }
                Err(e) => return Err(e),
            }
        } else {
            api.get_json(&path, &[]).await?
        };
        let a: Activity = serde_json::from_value(v).context("reading the activity")?;
        progress.update(&a);
        if a.status().is_terminal() {
            progress.clear();
            return Ok(Some(a));
        }
        if tokio::time::Instant::now() >= deadline {
            progress.clear();
            return Ok(None);
        }
        if !long_poll {
            tokio::time::sleep(interval.min(deadline - tokio::time::Instant::now())).await;
            interval = (interval * 2).min(Duration::from_secs(1));
        }
    }
}

/// `activity cancel` (and the older `cancel [--run]`).
pub async fn cancel(a: CancelArgs) -> anyhow::Result<ExitCode> {
    let api = Remote::new(&a.remote)?;
    let (what, path) = if a.run {
        ("runs", format!("/v1/runs/{}", a.id))
    } else {
        ("activities", format!("/v1/activities/{}", a.id))
    };
    if let Some(t) = &a.tenant {
        // The API holds a tenant token to its tenant; an admin's --tenant is checked
        // here, and another tenant's id fails exactly like a missing one.
        let v = api.get_json(&path, &[]).await?;
        if v["tenant_id"].as_str() != Some(t.as_str()) {
            bail!("API error 404 not_found: no {what} {} of tenant {t}", a.id);
        }
    }
    let v = api.post_json(&format!("{path}/cancel"), &json!({})).await?;
    if output::json(a.json) {
        println!("{}", json!({"id": a.id, "outcome": v["outcome"]}));
    } else {
        println!("{}: {}", a.id, cell(&v["outcome"]));
    }
    Ok(ExitCode::SUCCESS)
}
