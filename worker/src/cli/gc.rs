//! `highway gc`: the Docker garbage collector as a standalone daemon (the seed's
//! `docker_gc_worker`), for hosts that run containers without a worker or as a second
//! line of defence. Thin: builds the client, the pool and the collector, then runs one
//! pass (`--once`) or passes until SIGTERM/SIGINT.

use crate::config::docker::DockerConfig;
use crate::config::gc::GcConfig;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use crate::docker::client::{ClientSettings, DockerClient};
use crate::docker::gc::{DockerGarbageCollector, GcCounts};
use serde_json::json;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// One pass, print its counts, exit (non-zero when the pass could not read both
    /// Postgres and Docker).
    #[arg(long)]
    pub once: bool,
    /// Judge and print, change nothing (same as `--gc-dry-run true`).
    #[arg(long = "dry-run")]
    pub dry_run_flag: bool,
    /// With `--once`: print the counts as one JSON object.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub docker: DockerConfig,
    #[command(flatten)]
    pub gc: GcConfig,
}

pub async fn run(
    args: GcArgs,
    db_args: &DatabaseArgs,
    pool_opts: PoolOptions,
) -> anyhow::Result<ExitCode> {
    let mut opts = args.gc.options(args.docker.stop_grace.0)?;
    opts.dry_run |= args.dry_run_flag;
    // Lazy: a database that is down at start makes passes fail (and do nothing) until
    // it is back, rather than stopping the collector.
    let pool = db::lazy_pool(&db_args.resolve_url()?, &pool_opts)?;
    let client = DockerClient::new(ClientSettings {
        host: args.docker.effective_host(),
        ..ClientSettings::default()
    });
    let gc = DockerGarbageCollector::new(
        client,
        pool.clone(),
        args.docker.deployment.clone(),
        Uuid::new_v4(),
        None,
        opts,
    )?;
    if args.once {
        let res = gc.run_once().await;
        pool.close().await;
        return match res {
            Ok(c) => {
                print_counts(&c, args.json);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(ExitCode::FAILURE)
            }
        };
    }
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    crate::supervisor::stop_on_signal(stop.clone(), &tracker, "garbage collector");
    tracker.spawn(gc.run(stop.clone()));
    tracker.close();
    stop.cancelled().await;
    tracker.wait().await;
    pool.close().await;
    Ok(ExitCode::SUCCESS)
}

fn print_counts(c: &GcCounts, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "listed": c.listed, "young": c.young, "live": c.live, "protected": c.protected,
                "unsure": c.unsure, "removed": c.removed, "removed_total": c.removed_total(),
                "dry_run": c.dry_run, "deferred": c.deferred, "failed": c.failed,
                "missing": c.missing, "pending_adopted": c.pending_adopted,
                "pending_closed": c.pending_closed,
            })
        );
    } else {
        println!(
            "listed {} young {} live {} protected {} unsure {} removed {}{} deferred {} failed {} missing {} pending adopted {} closed {}",
            c.listed, c.young, c.live, c.protected, c.unsure, c.removed_total(),
            if c.dry_run { " (dry run: would remove)" } else { "" },
            c.deferred, c.failed, c.missing, c.pending_adopted, c.pending_closed
        );
        for (reason, n) in &c.removed {
            println!("  {reason}: {n}");
        }
    }
}
