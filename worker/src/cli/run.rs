//! The older `highway run FILE [--input k=v]... [--follow] [--json]`, kept for one
//! release: starts a workflow run from a definition file, shows each step's state as it
//! changes (and with `--follow` the live log lines of its activities from
//! `highway.activity_logs`), and exits with the run's outcome (`output::exit`). The
//! driving itself is done by the workers.
//!
//! `highway run FILE` still parses as this when its first argument is not one of the
//! `run` verbs (`start`, `ls`, ...): see `super::legacy_run_argv`. It talks to the
//! database directly (DATABASE_URL), unlike `highway run start FILE --wait`, its
//! replacement, which goes through the API. Steps with a `cache` that are ready at start have their image digest
//! resolved here, with a Docker client built from the worker's settings
//! (`HIGHWAY_DOCKER_HOST`, ...); the workers resolve the later ones.

use super::text;
use crate::config::docker::DockerConfig;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};

use anyhow::{bail, Context};
use highway_workflows::definition::WorkflowDefinition;
use highway_workflows::runs::{self, RunStatus};
use highway_workflows::Client;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// The workflow definition (JSON; see `workflows/examples/`).
    pub file: PathBuf,
    /// An input value, `NAME=VALUE` (repeatable).
    #[arg(long = "input", value_name = "NAME=VALUE")]
    pub inputs: Vec<String>,
    #[arg(long, default_value = highway_workflows::types::DEFAULT_TENANT)]
    pub tenant: String,
    /// Print the live log lines of every step.
    #[arg(long)]
    pub follow: bool,
    /// Print JSON lines (step changes, log lines, the final run) instead of text.
    #[arg(long)]
    pub json: bool,
    /// Give up waiting after this long (the run keeps going); exit code 4.
    #[arg(long, value_parser = humantime_like)]
    pub timeout: Option<Duration>,
    /// The daemon whose images cached steps are keyed by (the workers' settings).
    #[command(flatten)]
    pub docker: DockerConfig,
}

fn humantime_like(s: &str) -> Result<Duration, String> {
    s.parse::<highway_workflows::HumanDuration>()
        .map(|d| d.into())
        .map_err(|e| e.to_string())
}

pub(crate) fn parse_inputs(raw: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for r in raw {
        let Some((k, v)) = r.split_once('=') else {
            bail!("--input {r:?}: expected NAME=VALUE");
        };
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let db_args = &args.db;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let def = WorkflowDefinition::from_json(&text)
        .with_context(|| format!("{} is not a valid workflow", args.file.display()))?;
    let inputs = parse_inputs(&args.inputs)?;
    let pool = db::connect(
        &db_args.resolve_url()?,
        &PoolOptions {
            max_connections: 4,
            application_name: "highway-cli".into(),
            ..PoolOptions::default()
        },
    )
    .await?;
    let client = Client::new(pool.clone());
    let digests = crate::workflow::DockerDigests::new(args.docker.client());
    let run_id = runs::start_run(&client, &args.tenant, &def, &inputs, &digests).await?;
    if args.json {
        println!("{}", json!({"event": "started", "run_id": run_id}));
    } else {
        println!("run {run_id} ({}) started", def.name);
    }
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut log_seq: HashMap<Uuid, i64> = HashMap::new();
    let mut interval = Duration::from_millis(50);
    // The run's end wakes the loop at once; step changes keep the interval's cadence.
    let mut done = highway_workflows::done::DoneWaiter::listen(
        &pool,
        highway_workflows::done::RUN_DONE_CHANNEL,
        run_id,
    )
    .await;
    loop {
        let s = runs::run_status(&pool, run_id, Some(&args.tenant)).await?;
        show_steps(&s, &mut shown, args.json);
        if args.follow {
            follow_logs(&pool, &s, &mut log_seq, args.json).await?;
        }
        if s.is_terminal() {
            print_final(&s, args.json);
            return Ok(super::output::for_status(&s.status));
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            eprintln!("run {run_id} still {} after the timeout", s.status);
            return Ok(ExitCode::from(super::output::exit::WAIT_TIMED_OUT));
        }
        done.wake(std::time::Instant::now() + interval).await;
        interval = (interval * 2).min(Duration::from_millis(500));
    }
}

fn show_steps(s: &RunStatus, shown: &mut HashMap<String, String>, as_json: bool) {
    for st in &s.steps {
        // Activity state refines `scheduled` (waiting vs running, which attempt).
        let state = match (&*st.status, st.activity_status.as_deref()) {
            ("scheduled", Some(a)) => format!("{a} (attempt {})", st.attempt.unwrap_or(0)),
            (other, _) => other.to_string(),
        };
        if shown.get(&st.step_id) == Some(&state) {
            continue;
        }
        shown.insert(st.step_id.clone(), state.clone());
        if as_json {
            println!(
                "{}",
                json!({"event": "step", "step": st.step_id, "status": st.status,
                       "activity_id": st.activity_id, "activity_status": st.activity_status,
                       "attempt": st.attempt})
            );
        } else {
            println!("  {:<20} {state}", st.step_id);
        }
    }
}

async fn follow_logs(
    pool: &sqlx::PgPool,
    s: &RunStatus,
    seq: &mut HashMap<Uuid, i64>,
    as_json: bool,
) -> anyhow::Result<()> {
    for st in &s.steps {
        let Some(a) = st.activity_id else { continue };
        let after = seq.get(&a).copied().unwrap_or(0);
        let lines = runs::step_logs(pool, a, after).await?;
        for l in &lines {
            if as_json {
                let ev = json!({"event": "log", "step": st.step_id, "attempt": l.attempt,
                                "stream": l.stream, "line": l.line});
                println!("{}", text::json_for_terminal(&ev, false));
            } else {
                println!(
                    "[{}] {} | {}",
                    st.step_id,
                    l.stream,
                    text::for_terminal(&l.line)
                );
            }
        }
        if let Some(last) = lines.last() {
            seq.insert(a, last.seq);
        }
    }
    Ok(())
}

fn print_final(s: &RunStatus, as_json: bool) {
    if as_json {
        let ev = json!({"event": "finished", "run_id": s.id, "status": s.status,
                        "result": s.result, "error": s.error});
        println!("{}", text::json_for_terminal(&ev, false));
    } else {
        println!("run {} {}", s.id, s.status);
        if let Some(e) = &s.error {
            println!("  error: {}", text::json_for_terminal(e, false));
        }
    }
}
