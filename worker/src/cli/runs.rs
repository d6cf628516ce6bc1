//! `highway run start|ls|show|logs|cancel`: workflow runs through the API (`/v1/runs`),
//! with the token from HIGHWAY_TOKEN or a file, never argv (see `remote`). `start` posts
//! a definition file with its inputs (`--wait`: shows step changes until the run ends,
//! `--follow`: and their log lines; both exit with its outcome, see `output::exit`);
//! `ls` lists runs; `show` prints a run's steps as a table; `logs` prints the log lines
//! of its activities; `cancel` cancels a run and every activity of it. `highway runs …`
//! is a hidden alias.
//!
//! The older `highway run FILE` (database-direct) is still accepted for one release;
//! see `super::run`.

use super::output::{self, exit, Table};
use super::remote::{Remote, RemoteArgs};
use super::{cell, cell_time, text};
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Start a run of a workflow definition file (JSON; see `workflows/examples/`).
    #[command(after_help = output::EXIT_CODES_HELP)]
    Start {
        #[command(flatten)]
        remote: RemoteArgs,
        file: PathBuf,
        /// An input value, `NAME=VALUE` (repeatable).
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Admin tokens only: the tenant to run for.
        #[arg(long)]
        tenant: Option<String>,
        /// Show step changes until the run ends; exit with its outcome.
        #[arg(long)]
        wait: bool,
        /// Show step changes and log lines until the run ends; exit with its outcome.
        #[arg(long)]
        follow: bool,
        /// With --wait/--follow: stop waiting after this long (exit code 4; the run
        /// goes on).
        #[arg(long)]
        timeout: Option<highway_workflows::HumanDuration>,
        /// JSON: the API's answer (with --wait/--follow, one JSON event per line).
        #[arg(long, hide = true)]
        json: bool,
    },
    /// List runs, newest first.
    Ls(ListArgs),
    /// Print the log lines of a run's activities; `-f` follows until the run ends.
    Logs {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(short, long)]
        follow: bool,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Show a run and its steps (status, activity, cache decision).
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Cancel a run: waiting activities at once, running ones are stopped.
    Cancel {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long, hide = true)]
        json: bool,
    },
}

/// `run ls`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// running | succeeded | failed | cancelling | cancelled
    #[arg(long)]
    pub status: Option<String>,
    /// Runs whose name starts with this.
    #[arg(long)]
    pub name: Option<String>,
    /// Admin tokens only (a tenant token sees its own tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Runs older than this run id (the `next` of the previous page).
    #[arg(long)]
    pub before: Option<uuid::Uuid>,
    /// 1 to 1000.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    #[arg(long, hide = true)]
    pub json: bool,
}

pub async fn run(cmd: RunsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RunsCommand::Start {
            remote,
            file,
            inputs,
            tenant,
            wait,
            follow,
            timeout,
            json,
        } => {
            let json = output::json(json);
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let definition: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let inputs = super::run::parse_inputs(&inputs)?;
            let mut body = json!({"definition": definition, "inputs": inputs});
            if let Some(t) = tenant {
                body["tenant_id"] = json!(t);
            }
            let api = Remote::new(&remote)?;
            let run = api.post_json("/v1/runs", &body).await?;
            let id = run["id"].as_str().unwrap_or_default().to_string();
            if !follow && !wait {
                if json {
                    println!("{}", text::json_for_terminal(&run, false));
                } else {
                    println!("run {id} ({}) {}", cell(&run["name"]), cell(&run["status"]));
                }
                return Ok(ExitCode::SUCCESS);
            }
            if json {
                println!("{}", json!({"event": "started", "run_id": id}));
            } else {
                println!("run {id} ({}) started", cell(&run["name"]));
            }
            let deadline = timeout.map(|t| tokio::time::Instant::now() + t.0);
            follow_run(&api, &id, json, follow, deadline).await
        }
        RunsCommand::Ls(a) => list(a).await,
        RunsCommand::Logs {
            remote,
            id,
            follow,
            json,
        } => logs(remote, &id, follow, json).await,
        RunsCommand::Show { remote, id, json } => {
            let json = output::json(json);
            let api = Remote::new(&remote)?;
            let run = api.get_json(&format!("/v1/runs/{id}"), &[]).await?;
            if json {
                println!("{}", text::json_for_terminal(&run, true));
            } else {
                print_run(&run);
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Cancel { remote, id, json } => {
            let json = output::json(json);
            let api = Remote::new(&remote)?;
            let v = api
                .post_json(&format!("/v1/runs/{id}/cancel"), &json!({}))
                .await?;
            if json {
                println!("{v}");
            } else {
                println!("{id}: {}", cell(&v["outcome"]));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `run ls`: one page of runs, newest first.
async fn list(a: ListArgs) -> anyhow::Result<ExitCode> {
    let ListArgs {
        remote,
        status,
        name,
        tenant,
        before,
        limit,
        json,
    } = a;
    if !(1..=1000).contains(&limit) {
        bail!("--limit must be between 1 and 1000");
    }
    let api = Remote::new(&remote)?;
    let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    for (k, v) in [
        ("status", status),
        ("name", name),
        ("tenant", tenant),
        ("before", before.map(|b| b.to_string())),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    let v = api.get_json("/v1/runs", &q).await?;
    if output::json(json) {
        println!("{}", text::json_for_terminal(&v, false));
    } else {
        let mut t = Table::new(&["ID", "NAME", "STATUS", "TENANT", "ACTIVITIES", "CREATED"]);
        for r in v["items"].as_array().cloned().unwrap_or_default() {
            let acts = r["activities"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, n)| format!("{}={n}", text::for_terminal(k)))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default();
            t.row(vec![
                cell(&r["id"]),
                cell(&r["name"]),
                cell(&r["status"]),
                cell(&r["tenant_id"]),
                acts,
                cell_time(&r["created_at"]),
            ]);
        }
        t.print();
        if let Some(n) = v["next"].as_str() {
            eprintln!("# more: --before {n}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `run logs`: the stored log lines of every activity of the run; with `follow`, new
/// ones until the run ends (exit code: its outcome).
async fn logs(remote: RemoteArgs, id: &str, follow: bool, json: bool) -> anyhow::Result<ExitCode> {
    let api = Remote::new(&remote)?;
    let json = output::json(json);
    let mut seq: HashMap<String, i64> = HashMap::new();
    let mut poll = RunPoll::new(id);
    loop {
        let run = poll.next(&api).await?;
        for (label, activity) in run_activities(&api, id, &run).await? {
            print_new_logs(&api, &label, &activity, &mut seq, json).await?;
        }
        let status = run["status"].as_str().unwrap_or_default().to_string();
        if !follow || matches!(status.as_str(), "succeeded" | "failed" | "cancelled") {
            // One more pass after the end catches lines written while it ended.
            if follow {
                for (label, activity) in run_activities(&api, id, &run).await? {
                    print_new_logs(&api, &label, &activity, &mut seq, json).await?;
                }
                return Ok(output::for_status(&status));
            }
            return Ok(ExitCode::SUCCESS);
        }
    }
}

fn print_run(run: &Value) {
    println!(
        "run {} ({}) {}  tenant {}",
        cell(&run["id"]),
        cell(&run["name"]),
        cell(&run["status"]),
        cell(&run["tenant_id"])
    );
    if let Some(e) = run.get("error").filter(|e| !e.is_null()) {
        println!("  error: {}", text::json_for_terminal(e, false));
    }
    let Some(steps) = run["steps"].as_array() else {
        println!("  (no definition: activities {})", run["activities"]);
        return;
    };
    println!(
        "{:<20} {:<10} {:<36} {:<10} {:<7} CACHE",
        "STEP", "STATUS", "ACTIVITY", "ACTIVITY_STATUS", "ATTEMPT"
    );
    for st in steps {
        let cache = match (st["cache_decision"].as_str(), st["cache_reason"].as_str()) {
            (Some(d), Some(r)) => format!("{d} ({})", text::for_terminal(r)),
            (Some(d), None) => d.to_string(),
            _ => "-".into(),
        };
        println!(
            "{:<20} {:<10} {:<36} {:<10} {:<7} {cache}",
            cell(&st["step_id"]),
            cell(&st["status"]),
            cell(&st["activity_id"]),
            cell(&st["activity_status"]),
            cell(&st["attempt"]),
        );
    }
}

/// `(label, activity id)` of every activity of a run: its steps' when a definition
/// drives it, else the activities enqueued into it (labelled by kind).
async fn run_activities(
    api: &Remote,
    id: &str,
    run: &Value,
) -> anyhow::Result<Vec<(String, String)>> {
    if let Some(steps) = run["steps"].as_array() {
        return Ok(steps
            .iter()
            .filter_map(|st| {
                st["activity_id"]
                    .as_str()
                    .map(|a| (cell(&st["step_id"]), a.to_string()))
            })
            .collect());
    }
    let v = api
        .get_json(
            "/v1/activities",
            &[("run", id.to_string()), ("limit", "1000".to_string())],
        )
        .await?;
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|a| a["id"].as_str().map(|i| (cell(&a["kind"]), i.to_string())))
        .collect();
    out.reverse(); // oldest first
    Ok(out)
}

/// Reads the run (50 ms growing to 1 s apart) until it ends: prints each step change and,
/// with `logs`, the new log lines of every step's activity. Exit code: the run's
/// outcome, or 4 when `deadline` passes first.
async fn follow_run(
    api: &Remote,
    id: &str,
    as_json: bool,
    logs: bool,
    deadline: Option<tokio::time::Instant>,
) -> anyhow::Result<ExitCode> {
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut seq: HashMap<String, i64> = HashMap::new();
    let mut poll = RunPoll::new(id);
    loop {
        let run = poll.next(api).await?;
        let steps = run["steps"].as_array().cloned().unwrap_or_default();
        for st in &steps {
            let step = cell(&st["step_id"]);
            let state = match (st["status"].as_str(), st["activity_status"].as_str()) {
                (Some("scheduled"), Some(a)) => format!("{a} (attempt {})", cell(&st["attempt"])),
                (Some(other), _) => other.to_string(),
                _ => "?".into(),
            };
            if shown.get(&step) != Some(&state) {
                shown.insert(step.clone(), state.clone());
                if as_json {
                    println!(
                        "{}",
                        json!({"event": "step", "step": step, "status": st["status"],
                               "activity_id": st["activity_id"], "activity_status": st["activity_status"],
                               "attempt": st["attempt"], "cache_decision": st["cache_decision"]})
                    );
                } else {
                    println!("  {step:<20} {state}");
                }
            }
            if let Some(a) = st["activity_id"].as_str().filter(|_| logs) {
                print_new_logs(api, &step, a, &mut seq, as_json).await?;
            }
        }
        let status = run["status"].as_str().unwrap_or_default();
        if matches!(status, "succeeded" | "failed" | "cancelled") {
            if as_json {
                let ev = json!({"event": "finished", "run_id": id, "status": status,
                                "result": run["result"], "error": run["error"]});
                println!("{}", text::json_for_terminal(&ev, false));
            } else {
                println!("run {id} {status}");
                if let Some(e) = run.get("error").filter(|e| !e.is_null()) {
                    println!("  error: {}", text::json_for_terminal(e, false));
                }
            }
            return Ok(output::for_status(status));
        }
        if status.is_empty() {
            bail!("the API answered a run without a status: {run}");
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            eprintln!("run {id} still {status} after the timeout");
            return Ok(ExitCode::from(exit::WAIT_TIMED_OUT));
        }
    }
}

/// Successive reads of a run, 50 ms growing to 1 s apart. Each read after the first is a
/// long poll (`?wait=` the interval), so the run's end is seen the moment it happens
/// while step changes keep the interval's cadence. A server without `wait` (older than
/// this CLI) gets plain reads with sleeps between.
struct RunPoll {
    path: String,
    interval: Option<Duration>,
    long_poll: bool,
}

impl RunPoll {
    fn new(id: &str) -> Self {
        Self {
            path: format!("/v1/runs/{id}"),
            interval: None,
            long_poll: true,
        }
    }

    async fn next(&mut self, api: &Remote) -> anyhow::Result<Value> {
        let Some(interval) = self.interval else {
            self.interval = Some(Duration::from_millis(50));
            return api.get_json(&self.path, &[]).await;
        };
        self.interval = Some((interval * 2).min(Duration::from_secs(1)));
        if self.long_poll {
            let wait = format!("{}ms", interval.as_millis());
            match api.get_json(&self.path, &[("wait", wait)]).await {
                Err(e) if e.to_string().contains("`wait`") => self.long_poll = false,
                other => return other,
            }
        }
        tokio::time::sleep(interval).await;
        api.get_json(&self.path, &[]).await
    }
}

/// The stored log lines of `activity` after the last one printed (the API's log stream
/// without `follow`: what is stored, then `end`).
async fn print_new_logs(
    api: &Remote,
    step: &str,
    activity: &str,
    seq: &mut HashMap<String, i64>,
    as_json: bool,
) -> anyhow::Result<()> {
    let after = seq.get(activity).copied().unwrap_or(0);
    let mut last = after;
    api.follow_sse(
        &format!("/v1/activities/{activity}/logs"),
        &[
            ("follow", "false".to_string()),
            ("after", after.to_string()),
        ],
        None,
        |event, _id, data| {
            if event != "log" {
                return event != "end";
            }
            let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
            last = last.max(v["seq"].as_i64().unwrap_or(last));
            if as_json {
                let ev = json!({"event": "log", "step": step, "attempt": v["attempt"],
                                "stream": v["stream"], "line": v["line"]});
                println!("{}", text::json_for_terminal(&ev, false));
            } else {
                // `cell` escapes control characters; the stream marks container lines.
                println!("[{step}] {} | {}", cell(&v["stream"]), cell(&v["line"]));
            }
            true
        },
    )
    .await?;
    seq.insert(activity.to_string(), last);
    Ok(())
}
