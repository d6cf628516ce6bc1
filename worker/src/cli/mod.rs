//! The `highway` commands (clap). Thin: each command parses, calls the library, prints.
//! Errors reach `main` as `anyhow` and are printed with their causes.

pub mod audit;
pub mod bench;
pub mod bench_cron;
pub mod bench_docker;
pub mod bench_reap;
pub mod containers;
pub mod gc;
pub mod health;
pub mod logs;
pub mod progress;
pub mod registry;
pub mod remote;
pub mod run;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod text;
pub mod tokens;

use crate::config::{DatabaseArgs, HttpConfig, LogConfig, LogFormat, WorkerConfig};
use crate::db::{self, embedded::Cluster, PoolOptions};
use crate::executor::{builtin, Registry, Shutdown, WorkerOptions};
use crate::health::Health;
use crate::supervisor::{self, RunOptions};
use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use highway_workflows::{ActivityStatus, Client, EnqueueRequest, HumanDuration};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::Duration;
use uuid::Uuid;

/// A JSON value as a table cell: a string without its quotes, `-` for null, anything
/// else as JSON; control characters escaped ([`text::for_terminal`]). One rule for
/// every table the API commands print.
pub(crate) fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => text::for_terminal(s).into_owned(),
        other => text::json_for_terminal(other, false),
    }
}

/// An RFC 3339 timestamp as a table cell, `YYYY-MM-DD HH:MM:SS` in UTC; `-` when absent
/// or not a timestamp.
pub(crate) fn cell_time(v: &Value) -> String {
    v.as_str()
        .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Highway: a durable workflow activity worker for `tools.docker.*` activities.
#[derive(Parser, Debug)]
#[command(name = "highway", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub log: LogConfig,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything on this machine: a private Postgres (unless DATABASE_URL is set),
    /// migrations, the worker, the rescuer and the HTTP server. Ctrl-C stops it all.
    Up {
        #[command(flatten)]
        worker: WorkerConfig,
        #[command(flatten)]
        http: HttpConfig,
    },
    /// Run a worker (and its HTTP server) against DATABASE_URL.
    Worker {
        #[command(flatten)]
        worker: WorkerConfig,
        #[command(flatten)]
        http: HttpConfig,
        /// Do not start the HTTP server.
        #[arg(long)]
        no_http: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Enqueue one activity.
    Enqueue(EnqueueArgs),
    /// Start a workflow run from a definition file, show its steps (`--follow`: and their
    /// logs) and exit with its outcome.
    Run(run::RunArgs),
    /// Workflow runs through the API (HIGHWAY_API_URL, HIGHWAY_TOKEN): start a definition
    /// file, show a run's steps, cancel a run.
    #[command(subcommand)]
    Runs(runs::RunsCommand),
    /// List and inspect activities, through the API (HIGHWAY_API_URL, HIGHWAY_TOKEN).
    #[command(subcommand)]
    Activities(ActivitiesCommand),
    /// Cancel an activity, or with --run a whole workflow run.
    Cancel {
        /// Activity id (or workflow run id with --run).
        id: Uuid,
        /// Cancel the workflow run with this id (all of its activities).
        #[arg(long)]
        run: bool,
        /// Only if it belongs to this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Manage the private Postgres cluster under the state dir.
    #[command(subcommand)]
    Postgres(PostgresCommand),
    /// Benchmarks (programs that print figures; `--json` for machines).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// API tokens (stored hashed): create, revoke, ls.
    #[command(subcommand)]
    Tokens(tokens::TokensCommand),
    /// The tenant secrets store (HIGHWAY_SECRETS_KEY): set (value from stdin), rm, ls.
    #[command(subcommand)]
    Secrets(secrets::SecretsCommand),
    /// Private registry credentials through the API: add (password from stdin), ls, rm.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// The append-only audit log through the API: ls with filters.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Tracked containers, through the API (HIGHWAY_API_URL, HIGHWAY_TOKEN).
    #[command(subcommand)]
    Containers(containers::ContainersCommand),
    /// Run the Docker garbage collector alone (the `docker_gc_worker`): one pass every
    /// `--gc-period`, or a single pass with `--once`; `--dry-run` asks the API what a
    /// pass would remove and why.
    Gc(gc::GcArgs),
    /// Durable cron schedules: create, ls, show, update, delete, pause, resume, trigger,
    /// backfill, preview, fires.
    #[command(subcommand, visible_alias = "schedule")]
    Schedules(schedules::SchedulesCommand),
    /// Ask a running server's /health/live (or /health/ready with --ready); exit 0 on a
    /// 200, 1 otherwise (the image's HEALTHCHECK).
    Health(health::HealthArgs),
    /// Run only the cron scheduler (any number may run at once; no leader).
    Scheduler {
        #[command(flatten)]
        scheduler: crate::config::scheduler::SchedulerConfig,
    },
}

#[derive(clap::Args, Debug)]
pub struct EnqueueArgs {
    /// Activity kind, e.g. `tools.docker.run` or `highway.noop`.
    pub kind: String,
    /// Parameters, a JSON object.
    #[arg(long, default_value = "{}")]
    pub params: String,
    #[arg(long, default_value = highway_workflows::types::DEFAULT_TENANT)]
    pub tenant: String,
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
    /// Wait until the activity finishes; exit non-zero unless it succeeded.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits.
    #[arg(long, default_value = "1h")]
    pub timeout: HumanDuration,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum ActivitiesCommand {
    /// List activities, newest first.
    Ls {
        #[command(flatten)]
        remote: remote::RemoteArgs,
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
        #[arg(long)]
        json: bool,
    },
    /// Print an activity's log lines through the API; `-f` follows until it finishes.
    Logs(logs::LogsArgs),
    /// Show one activity.
    Show {
        #[command(flatten)]
        remote: remote::RemoteArgs,
        id: Uuid,
        /// Only if it belongs to this tenant (a tenant token: always its own).
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum PostgresCommand {
    /// Start (initialising on first use) the private cluster; prints DATABASE_URL.
    Start,
    /// Stop the private cluster.
    Stop,
    /// Print the DATABASE_URL of the running private cluster.
    Url,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// The registry of every kind this binary runs.
pub fn default_registry() -> Registry {
    let mut r = Registry::new();
    builtin::register(&mut r);
    r
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // API commands find a local `highway up`'s token and URL under the same state dir.
    remote::set_state_dir(cli.db.state_dir.clone());
    let pool_opts = PoolOptions {
        max_connections: cli.db.db_max_connections,
        ..PoolOptions::default()
    };
    match cli.command {
        Command::Up { worker, http } => {
            worker.validate()?;
            let (url, cluster) = match cli.db.database_url.clone().filter(|u| !u.is_empty()) {
                Some(u) => (u, None),
                None => {
                    let state = cli.db.state_dir.clone();
                    let c = tokio::task::spawn_blocking(move || Cluster::start(&state))
                        .await?
                        .context("starting the private Postgres cluster")?;
                    (c.url.clone(), Some(c))
                }
            };
            println!("highway {} up", env!("CARGO_PKG_VERSION"));
            println!("  http:         http://{}", http.listen);
            println!(
                "  admin token:  {} (created when missing; `highway` commands run here use it)",
                cli.db.state_dir.join(remote::ADMIN_TOKEN_FILE).display()
            );
            println!("  DATABASE_URL: {}", db::redact_url(&url));
            if cluster.is_some() {
                println!(
                    "                (full URL in {}; `highway` commands run here find it)",
                    cli.db.state_dir.join(db::embedded::URL_FILE).display()
                );
            }
            println!("  Ctrl-C stops everything.");
            let res = run_services(
                url,
                pool_opts,
                Some(&worker),
                Some(http),
                &cli.db.state_dir,
                true,
            )
            .await;
            if let Some(c) = cluster {
                if c.started_here {
                    // Nobody else should find a URL to a stopped cluster.
                    std::fs::remove_file(cli.db.state_dir.join(db::embedded::URL_FILE)).ok();
                }
                tokio::task::spawn_blocking(move || c.stop()).await??;
            }
            res?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker {
            worker,
            http,
            no_http,
        } => {
            worker.validate()?;
            let url = cli.db.resolve_url()?;
            run_services(
                url,
                pool_opts,
                Some(&worker),
                (!no_http).then_some(http),
                &cli.db.state_dir,
                false,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let pool = db::connect(&cli.db.resolve_url()?, &pool_opts).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Enqueue(args) => enqueue(&cli.db, pool_opts, args).await,
        Command::Run(args) => run::run(args, &cli.db).await,
        Command::Runs(cmd) => runs::run(cmd).await,
        // Through the API: needs no DATABASE_URL.
        Command::Activities(ActivitiesCommand::Logs(a)) => logs::run(a).await,
        Command::Activities(cmd) => activities(cmd).await,
        Command::Cancel {
            id,
            run,
            tenant,
            json,
        } => {
            let client = Client::new(db::connect(&cli.db.resolve_url()?, &pool_opts).await?);
            let outcome = if run {
                client.cancel_run(id, tenant.as_deref()).await?
            } else {
                client.cancel(id, tenant.as_deref()).await?
            };
            if json {
                println!("{}", json!({"id": id, "outcome": outcome}));
            } else {
                println!(
                    "{id}: {}",
                    serde_json::to_value(outcome)?.as_str().unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Postgres(cmd) => {
            let state = cli.db.state_dir.clone();
            match cmd {
                PostgresCommand::Start => {
                    let c = tokio::task::spawn_blocking(move || Cluster::start(&state)).await??;
                    println!("{}", c.url);
                }
                PostgresCommand::Stop => {
                    tokio::task::spawn_blocking(move || Cluster::stop_state_dir(&state)).await??;
                    std::fs::remove_file(cli.db.state_dir.join(db::embedded::URL_FILE)).ok();
                }
                PostgresCommand::Url => match db::embedded::url_from_state_dir(&state) {
                    Some(u) => println!("{u}"),
                    None => bail!("no private cluster URL under {}", state.display()),
                },
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(cmd) => bench::run(cmd, &cli.db).await,
        Command::Tokens(cmd) => tokens::run(&cli.db, pool_opts, cmd).await,
        Command::Secrets(cmd) => secrets::run(&cli.db, pool_opts, cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Registry(cmd) => registry::run(cmd).await,
        Command::Containers(cmd) => containers::run(cmd).await,
        Command::Gc(args) => gc::run(args, &cli.db, pool_opts).await,
        Command::Schedules(cmd) => schedules::run(cmd).await,
        Command::Scheduler { scheduler } => {
            crate::scheduler::run_standalone(&cli.db, &scheduler).await
        }
        Command::Health(args) => health::run(args).await,
    }
}

async fn run_services(
    url: String,
    pool: PoolOptions,
    worker: Option<&WorkerConfig>,
    http: Option<HttpConfig>,
    state_dir: &std::path::Path,
    // `highway up`: write the local admin token and API URL (zero-config CLI).
    local_access: bool,
) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let grace = worker
        .map(|w| w.shutdown_grace.0)
        .unwrap_or(Duration::from_secs(10));
    let opts = RunOptions {
        database_url: url,
        pool,
        worker: worker.map(WorkerOptions::from_config),
        api: http.as_ref().map(|h| h.api.clone()).unwrap_or_default(),
        listen: http.map(|h| h.listen),
        shutdown_grace: grace,
        docker: worker.map(|w| {
            let dir = w
                .artifact_dir
                .clone()
                .unwrap_or_else(|| state_dir.join("artifacts"));
            (w.docker.clone(), dir)
        }),
        scheduler: worker.map(|w| w.scheduler.clone()),
        gc: match worker {
            Some(w) if w.gc.enabled => Some(w.gc.options(w.docker.stop_grace.0)?),
            _ => None,
        },
        local_access: local_access.then(|| state_dir.to_path_buf()),
    };
    supervisor::run(opts, default_registry(), Health::default(), shutdown).await?;
    Ok(())
}

async fn enqueue(
    db_args: &DatabaseArgs,
    pool_opts: PoolOptions,
    a: EnqueueArgs,
) -> anyhow::Result<ExitCode> {
    let req = match &a.request {
        Some(r) => serde_json::from_str::<EnqueueRequest>(r).context("--request")?,
        None => {
            let params: Value =
                serde_json::from_str(&a.params).context("--params is not valid JSON")?;
            let mut req = EnqueueRequest::new(a.kind.clone(), params)
                .tenant(a.tenant.clone())
                .queue(a.queue.clone());
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
            req
        }
    };
    let client = Client::new(db::connect(&db_args.resolve_url()?, &pool_opts).await?);
    let enq = client.enqueue(&req).await?;
    if !a.wait {
        if a.json {
            println!(
                "{}",
                json!({"id": enq.id, "created": enq.created, "status": "scheduled"})
            );
        } else {
            println!("{}", enq.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let progress = progress::Progress::new(a.json);
    let act = progress::wait_activity(&client, enq.id, a.timeout.0, &progress).await?;
    let ok = act.status() == ActivityStatus::Succeeded;
    if a.json {
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
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// `activities ls|show` through the API; `logs` has its own module.
async fn activities(cmd: ActivitiesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ActivitiesCommand::Ls {
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
            let api = remote::Remote::new(&remote)?;
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
            if json {
                println!("{}", text::json_for_terminal(&Value::Array(items), false));
            } else {
                println!(
                    "{:<36}  {:<10}  {:>3}  {:<20}  {:<10}  CREATED",
                    "ID", "STATUS", "ATT", "KIND", "TENANT"
                );
                for a in items {
                    let created = cell_time(&a["created_at"]);
                    println!(
                        "{:<36}  {:<10}  {:>3}  {:<20}  {:<10}  {}",
                        cell(&a["id"]),
                        cell(&a["status"]),
                        cell(&a["attempt"]),
                        cell(&a["kind"]),
                        cell(&a["tenant_id"]),
                        created
                    );
                }
            }
        }
        ActivitiesCommand::Logs(a) => return logs::run(a).await,
        ActivitiesCommand::Show {
            remote,
            id,
            tenant,
            json,
        } => {
            let api = remote::Remote::new(&remote)?;
            let q: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
            let a = api.get_json(&format!("/v1/activities/{id}"), &q).await?;
            println!("{}", text::json_for_terminal(&a, !json));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and flag is well formed (unique ids across flattened settings).
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn worker_defaults_parse_and_validate() {
        let cli = Cli::try_parse_from(["highway", "worker"]).unwrap();
        match cli.command {
            Command::Worker { worker, .. } => worker.validate().unwrap(),
            other => panic!("parsed {other:?}"),
        }
    }
}
