//! The `highway` commands (clap). Thin: each command parses, calls the library or the
//! API, prints. Errors reach `main` as `anyhow` and are printed with their causes.
//!
//! Two kinds of commands. Client commands (`activity`, `run`, `container`, `schedule`,
//! `worker ls`, `queue`, `token`, `secret`, `audit`, `gc --dry-run`) talk only to the
//! HTTP API ([`remote`]): they need HIGHWAY_API_URL and a token, never DATABASE_URL.
//! Server commands (`up`, `worker`, `scheduler`, `migrate`, `postgres`, `bench`, `gc`,
//! `bootstrap-token`) run services against the database; `--help` lists them apart.
//! The older names (`enqueue`, `cancel`, `runs`, `activities`, `containers`, `tokens`,
//! `secrets`, `schedules`, `run FILE`) are hidden aliases for one release.

pub mod activity;
pub mod audit;
pub mod bench;
pub mod bench_cron;
pub mod bench_docker;
pub mod bench_reap;
pub mod containers;
pub mod gc;
pub mod health;
pub mod logs;
pub mod output;
pub mod progress;
pub mod registry;
pub mod remote;
pub mod run;
pub mod runs;
pub mod schedules;
pub mod secrets;
pub mod secrets_key;
pub mod text;
pub mod tokens;
pub mod workers;

use crate::config::{DatabaseArgs, HttpConfig, LogConfig, LogFormat, WorkerConfig};
use crate::db::{self, embedded::Cluster, PoolOptions};
use crate::executor::{builtin, Registry, Shutdown, WorkerOptions};
use crate::health::Health;
use crate::supervisor::{self, RunOptions};
use anyhow::{bail, Context};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::Value;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
#[command(name = "highway", version, about, long_about = None,
          subcommand_help_heading = "Client commands (through the API: HIGHWAY_API_URL, HIGHWAY_TOKEN)",
          after_help = output::EXIT_CODES_HELP)]
pub struct Cli {
    /// State directory of `highway up`: private Postgres cluster, logs, artifacts, and
    /// the API URL and admin token client commands find there.
    #[arg(
        long,
        env = "HIGHWAY_STATE_DIR",
        default_value = ".highway",
        global = true
    )]
    pub state_dir: PathBuf,
    /// What client commands print: `table` for people, `json` for machines.
    #[arg(long, value_enum, env = "HIGHWAY_OUTPUT", global = true)]
    pub output: Option<output::Output>,
    #[command(flatten)]
    pub log: LogConfig,
    #[command(subcommand)]
    pub command: Command,
}

/// The server commands: hidden from the client list in `--help` and listed under their
/// own heading instead ([`command`]).
pub const SERVER_COMMANDS: &[&str] = &[
    "up",
    "worker",
    "scheduler",
    "migrate",
    "postgres",
    "gc",
    "bench",
    "bootstrap-token",
    "rotate-secrets-key",
    "health",
];

#[derive(Subcommand, Debug)]
pub enum Command {
    // ---- client commands -------------------------------------------------------
    /// Activities: ls, show, logs, enqueue, cancel, retry.
    #[command(subcommand, alias = "activities", display_order = 1)]
    Activity(activity::ActivityCommand),
    /// Workflow runs: start, ls, show, logs, cancel.
    #[command(subcommand, alias = "runs", display_order = 2)]
    Run(runs::RunsCommand),
    /// Tracked containers: ls, show, logs.
    #[command(subcommand, alias = "containers", display_order = 3)]
    Container(containers::ContainersCommand),
    /// Durable cron schedules: create, ls, show, update, delete, pause, resume, trigger,
    /// backfill, preview, fires.
    #[command(subcommand, alias = "schedules", display_order = 4)]
    Schedule(schedules::SchedulesCommand),
    /// Queues: depth, oldest waiting, running.
    #[command(subcommand, display_order = 6)]
    Queue(workers::QueueCommand),
    /// API tokens (admin token): create, revoke, ls.
    #[command(subcommand, alias = "tokens", display_order = 7)]
    Token(tokens::TokensCommand),
    /// The tenant secrets store: set (value from stdin), rm, ls.
    #[command(subcommand, alias = "secrets", display_order = 8)]
    Secret(secrets::SecretsCommand),
    /// The append-only audit log: ls with filters.
    #[command(subcommand, display_order = 9)]
    Audit(audit::AuditCommand),
    /// Private registry credentials: add (password from stdin), ls, rm.
    #[command(subcommand, display_order = 10)]
    Registry(registry::RegistryCommand),
    /// Shell completions: `highway completions bash > /etc/bash_completion.d/highway`.
    #[command(display_order = 11)]
    Completions { shell: clap_complete::Shell },

    // ---- server commands -------------------------------------------------------
    /// Run everything on this machine: a private Postgres (unless DATABASE_URL is set),
    /// migrations, the worker, the rescuer and the HTTP server. Ctrl-C stops it all.
    #[command(display_order = 100)]
    Up {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        worker: WorkerConfig,
        #[command(flatten)]
        http: HttpConfig,
    },
    /// Run a worker (and its HTTP server) against DATABASE_URL; `worker ls` lists the
    /// workers through the API.
    #[command(display_order = 101, subcommand_help_heading = "Client commands")]
    Worker {
        #[command(subcommand)]
        list: Option<workers::WorkerCommand>,
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        worker: WorkerConfig,
        #[command(flatten)]
        http: HttpConfig,
        /// Do not start the HTTP server.
        #[arg(long, help_heading = "HTTP")]
        no_http: bool,
    },
    /// Run only the cron scheduler (any number may run at once; no leader).
    #[command(display_order = 102)]
    Scheduler {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        scheduler: crate::config::scheduler::SchedulerConfig,
    },
    /// Apply pending database migrations and exit.
    #[command(display_order = 103)]
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Manage the private Postgres cluster under the state dir.
    #[command(subcommand, display_order = 104)]
    Postgres(PostgresCommand),
    /// Run the Docker garbage collector alone (the `docker_gc_worker`): one pass every
    /// `--gc-period`, or a single pass with `--once`; `--dry-run` (a client command)
    /// asks the API what a pass would remove and why.
    #[command(display_order = 105)]
    Gc(gc::GcArgs),
    /// Benchmarks (programs that print figures; `--json` for machines).
    #[command(subcommand, display_order = 106)]
    Bench(bench::BenchCommand),
    /// Create an admin API token straight in the database (DATABASE_URL) and print it
    /// once: the first token of a deployment without a local `highway up`.
    #[command(display_order = 107)]
    BootstrapToken(tokens::BootstrapArgs),
    /// Re-encrypt the secrets and registry passwords under HIGHWAY_SECRETS_KEY, reading
    /// rows of previous keys with HIGHWAY_SECRETS_KEY_OLD (each table all or nothing).
    #[command(display_order = 108)]
    RotateSecretsKey(secrets_key::RotateArgs),
    /// Ask a running server's /health/live (or /health/ready with --ready); exit 0 on a
    /// 200, 1 otherwise (the image's HEALTHCHECK).
    #[command(display_order = 109)]
    Health(health::HealthArgs),

    // ---- hidden aliases of the older names, for one release --------------------
    /// `activity enqueue`.
    #[command(hide = true)]
    Enqueue(activity::EnqueueArgs),
    /// `activity cancel` (`--run`: `run cancel`).
    #[command(hide = true)]
    Cancel(activity::CancelArgs),
    /// The older `highway run FILE` (see [`legacy_run_argv`]).
    #[command(hide = true, name = LEGACY_RUN)]
    LegacyRun(run::RunArgs),
}

/// The hidden name the older `highway run FILE` form is parsed under.
pub const LEGACY_RUN: &str = "legacy-run-file";

/// The verbs of `highway run` (and clap's help forms).
const RUN_VERBS: &[&str] = &[
    "start", "ls", "show", "logs", "cancel", "help", "-h", "--help",
];

/// `highway [GLOBAL...] run X ...` with `X` not a `run` verb is the older form
/// `highway run FILE [flags]`: it is rewritten to the hidden [`LEGACY_RUN`] command, so
/// scripts written for it keep working for one release. Global flags before `run` are
/// skipped over (with their values).
pub fn legacy_run_argv(args: Vec<OsString>) -> Vec<OsString> {
    const WITH_VALUE: &[&str] = &["--state-dir", "--output", "--log-format"];
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if WITH_VALUE.contains(&a.as_ref()) {
            i += 2;
        } else if a.starts_with("--") && a.contains('=') {
            i += 1;
        } else {
            break;
        }
    }
    let is_run = args.get(i).is_some_and(|a| a == "run");
    let next = args.get(i + 1).map(|a| a.to_string_lossy().into_owned());
    match next {
        Some(n) if is_run && !RUN_VERBS.contains(&n.as_str()) => {
            let mut out = args;
            out[i] = LEGACY_RUN.into();
            out
        }
        _ => args,
    }
}

/// The clap command with the server commands listed under their own heading (hidden
/// from the client list, shown in `after_help`), generated from their own `about`.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    let mut server = String::from("Server commands (against DATABASE_URL):\n");
    let width = SERVER_COMMANDS.iter().map(|n| n.len()).max().unwrap_or(0);
    for name in SERVER_COMMANDS {
        let sub = cmd
            .find_subcommand(name)
            .unwrap_or_else(|| panic!("server command {name} exists"));
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        let first = about.split(['.', '\n']).next().unwrap_or_default();
        server.push_str(&format!("  {name:<width$} {first}\n"));
    }
    for name in SERVER_COMMANDS {
        cmd = cmd.mut_subcommand(name, |s| s.hide(true));
    }
    cmd.after_help(format!("{server}\n{}", output::EXIT_CODES_HELP))
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
    let args = legacy_run_argv(std::env::args_os().collect());
    let cli = match command()
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        // Usage errors exit 2, help and version 0 (clap's codes).
        Err(e) => e.exit(),
    };
    init_tracing(cli.log.log_format);
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(output::exit::ERROR);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(output::exit::ERROR)
        }
    }
}

fn init_tracing(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(output::stderr_colour())
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

fn pool_options(db: &DatabaseArgs) -> PoolOptions {
    PoolOptions {
        max_connections: db.db_max_connections,
        ..PoolOptions::default()
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    // API commands find a local `highway up`'s token and URL under the same state dir.
    remote::set_state_dir(cli.state_dir.clone());
    output::set(cli.output);
    let state_dir = cli.state_dir.clone();
    let with_state = |mut db: DatabaseArgs| {
        db.state_dir = state_dir.clone();
        db
    };
    match cli.command {
        Command::Up { db, worker, http } => up(with_state(db), worker, http).await,
        Command::Worker {
            list: Some(cmd), ..
        } => workers::workers(cmd).await,
        Command::Worker {
            list: None,
            db,
            worker,
            http,
            no_http,
        } => {
            let db = with_state(db);
            worker.validate()?;
            let url = db.resolve_url()?;
            run_services(
                url,
                pool_options(&db),
                Some(&worker),
                (!no_http).then_some(http),
                &db.state_dir,
                false,
            )
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate { db } => {
            let db = with_state(db);
            let pool = db::connect(&db.resolve_url()?, &pool_options(&db)).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(ExitCode::SUCCESS)
        }
        Command::Activity(cmd) => activity::run(cmd).await,
        Command::Enqueue(args) => activity::run(activity::ActivityCommand::Enqueue(args)).await,
        Command::Cancel(args) => activity::cancel(args).await,
        Command::LegacyRun(mut args) => {
            args.db = with_state(args.db);
            run::run(args).await
        }
        Command::Run(cmd) => runs::run(cmd).await,
        Command::Postgres(cmd) => {
            let state = state_dir.clone();
            match cmd {
                PostgresCommand::Start => {
                    let c = tokio::task::spawn_blocking(move || Cluster::start(&state)).await??;
                    println!("{}", c.url);
                }
                PostgresCommand::Stop => {
                    tokio::task::spawn_blocking(move || Cluster::stop_state_dir(&state)).await??;
                    std::fs::remove_file(state_dir.join(db::embedded::URL_FILE)).ok();
                }
                PostgresCommand::Url => match db::embedded::url_from_state_dir(&state) {
                    Some(u) => println!("{u}"),
                    None => bail!("no private cluster URL under {}", state.display()),
                },
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(cmd) => bench::run(cmd).await,
        Command::Token(cmd) => tokens::run(cmd).await,
        Command::RotateSecretsKey(a) => {
            let db = with_state(a.db.clone());
            let opts = pool_options(&db);
            secrets_key::run(secrets_key::RotateArgs { db }, opts).await
        }
        Command::BootstrapToken(a) => {
            let db = with_state(a.db.clone());
            let opts = pool_options(&db);
            tokens::bootstrap(tokens::BootstrapArgs { db, ..a }, opts).await
        }
        Command::Secret(cmd) => secrets::run(cmd).await,
        Command::Audit(cmd) => audit::run(cmd).await,
        Command::Registry(cmd) => registry::run(cmd).await,
        Command::Container(cmd) => containers::run(cmd).await,
        Command::Queue(cmd) => workers::queues(cmd).await,
        Command::Gc(mut args) => {
            args.db = with_state(args.db);
            let opts = pool_options(&args.db);
            gc::run(args, opts).await
        }
        Command::Schedule(cmd) => schedules::run(cmd).await,
        Command::Scheduler { db, scheduler } => {
            crate::scheduler::run_standalone(&with_state(db), &scheduler).await
        }
        Command::Completions { shell } => {
            // The completions know every command, the server ones included.
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "highway", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Health(args) => health::run(args).await,
    }
}

async fn up(db: DatabaseArgs, worker: WorkerConfig, http: HttpConfig) -> anyhow::Result<ExitCode> {
    worker.validate()?;
    let (url, cluster) = match db.database_url.clone().filter(|u| !u.is_empty()) {
        Some(u) => (u, None),
        None => {
            let state = db.state_dir.clone();
            let c = tokio::task::spawn_blocking(move || Cluster::start(&state))
                .await?
                .context("starting the private Postgres cluster")?;
            (c.url.clone(), Some(c))
        }
    };
    println!("highway {} up", env!("CARGO_PKG_VERSION"));
    let scheme = if http.tls_files().is_some() {
        "https"
    } else {
        "http"
    };
    println!("  http:         {scheme}://{}", http.listen);
    println!(
        "  admin token:  {} (created when missing; `highway` commands run here use it)",
        db.state_dir.join(remote::ADMIN_TOKEN_FILE).display()
    );
    println!("  DATABASE_URL: {}", db::redact_url(&url));
    if cluster.is_some() {
        println!(
            "                (full URL in {}; `highway` commands run here find it)",
            db.state_dir.join(db::embedded::URL_FILE).display()
        );
    }
    println!("  Ctrl-C stops everything.");
    let res = run_services(
        url,
        pool_options(&db),
        Some(&worker),
        Some(http),
        &db.state_dir,
        true,
    )
    .await;
    if let Some(c) = cluster {
        if c.started_here {
            // Nobody else should find a URL to a stopped cluster.
            std::fs::remove_file(db.state_dir.join(db::embedded::URL_FILE)).ok();
        }
        tokio::task::spawn_blocking(move || c.stop()).await??;
    }
    res?;
    Ok(ExitCode::SUCCESS)
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
        tls: http.as_ref().and_then(HttpConfig::tls_files),
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
            Command::Worker {
                worker, list: None, ..
            } => worker.validate().unwrap(),
            other => panic!("parsed {other:?}"),
        }
        let cli = Cli::try_parse_from(["highway", "worker", "ls"]).unwrap();
        assert!(matches!(cli.command, Command::Worker { list: Some(_), .. }));
    }

    fn argv(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_older_run_file_form_is_still_accepted() {
        let legacy = legacy_run_argv(argv(&[
            "highway",
            "--state-dir",
            "s",
            "run",
            "wf.json",
            "--follow",
        ]));
        assert_eq!(
            legacy,
            argv(&[
                "highway",
                "--state-dir",
                "s",
                LEGACY_RUN,
                "wf.json",
                "--follow"
            ])
        );
        for verb in ["start", "ls", "show", "logs", "cancel", "--help"] {
            let a = argv(&["highway", "run", verb]);
            assert_eq!(legacy_run_argv(a.clone()), a);
        }
        let cli = Cli::try_parse_from(legacy).unwrap();
        assert!(matches!(cli.command, Command::LegacyRun(_)));
    }

    #[test]
    fn old_names_are_hidden_aliases() {
        for old in [
            &["highway", "activities", "ls"][..],
            &["highway", "runs", "show", "x"],
            &["highway", "containers", "ls"],
            &["highway", "tokens", "ls"],
            &["highway", "secrets", "ls"],
            &["highway", "schedules", "ls"],
            &["highway", "enqueue", "highway.noop"],
            &[
                "highway",
                "cancel",
                "00000000-0000-0000-0000-000000000000",
                "--run",
            ],
        ] {
            Cli::try_parse_from(old).unwrap_or_else(|e| panic!("{old:?}: {e}"));
        }
        let help = command().render_help().to_string();
        for old in ["enqueue", "activities", "tokens", "legacy-run"] {
            assert!(
                !help.contains(&format!("  {old} ")),
                "{old} shows in:\n{help}"
            );
        }
    }

    /// `worker --help` groups every flag under the documented headings; client
    /// commands show no worker policy flag and no database flag.
    #[test]
    fn help_headings_and_client_flags() {
        let mut cmd = command();
        cmd.build();
        let worker = cmd
            .find_subcommand_mut("worker")
            .unwrap()
            .render_help()
            .to_string();
        for h in [
            "Queue",
            "Docker policy",
            "Limits",
            "HTTP",
            "GC",
            "Shutdown",
            "Database",
            "Docker connection",
        ] {
            assert!(
                worker.contains(&format!("\n{h}:\n")),
                "no {h} heading in:\n{worker}"
            );
        }
        assert!(
            !worker.contains("\nOptions:\n      --queues"),
            "ungrouped flags:\n{worker}"
        );
        let top = command().render_help().to_string();
        assert!(top.contains("Server commands"), "{top}");
        assert!(top.contains("Exit codes:"), "{top}");
        let mut cmd = command();
        cmd.build();
        let ls = cmd
            .find_subcommand_mut("activity")
            .unwrap()
            .find_subcommand_mut("ls")
            .unwrap()
            .render_help()
            .to_string();
        for server_flag in [
            "--database-url",
            "--allow-privileged",
            "--concurrency",
            "--gc-period",
        ] {
            assert!(!ls.contains(server_flag), "{server_flag} in:\n{ls}");
        }
        assert!(ls.contains("--api-url") && ls.contains("--output"), "{ls}");
    }
}
