//! `highway gc`: the Docker garbage collector as a standalone daemon (the seed's
//! `docker_gc_worker`), for hosts that run containers without a worker or as a second
//! line of defence. Thin: builds the client, the pool and the collector, then runs one
//! pass (`--once`) or passes until SIGTERM/SIGINT.
//!
//! `highway gc --dry-run` is an operator's question, not a collector: it asks the API
//! (`GET /v1/gc/plan`, admin token) what a pass would remove now and why, and removes
//! nothing.

use crate::config::docker::DockerConfig;
use crate::config::gc::GcConfig;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use crate::docker::deployment::Deployment;

use crate::docker::gc::{DockerGarbageCollector, GcCounts};
use serde_json::json;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

use super::cell;
use super::remote::{Remote, RemoteArgs};

#[derive(clap::Args, Debug)]
pub struct GcArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// One pass, print its counts, exit (non-zero when the pass could not read both
    /// Postgres and Docker).
    #[arg(long)]
    pub once: bool,
    /// Ask the API what a pass would remove now and why (admin token), change nothing.
    /// (`--gc-dry-run true` instead runs this collector judging without removing.)
    #[arg(long = "dry-run")]
    pub dry_run_flag: bool,
    /// With `--once` or `--dry-run`: print one JSON object (as `--output json`).
    #[arg(long, hide = true)]
    pub json: bool,
    #[command(flatten)]
    pub remote: RemoteArgs,
    #[command(flatten)]
    pub docker: DockerConfig,
    #[command(flatten)]
    pub gc: GcConfig,
}

pub async fn run(args: GcArgs, pool_opts: PoolOptions) -> anyhow::Result<ExitCode> {
    let db_args = &args.db;
    if args.dry_run_flag {
        return plan(&args.remote, super::output::json(args.json)).await;
    }
    let opts = args.gc.options(args.docker.stop_grace.0)?;
    // Lazy: a database that is down at start makes passes fail (and do nothing) until
    // it is back, rather than stopping the collector.
    let pool = db::lazy_pool(&db_args.resolve_url()?, &pool_opts)?;
    let client = args.docker.client();
    let gc = DockerGarbageCollector::new(
        client,
        pool.clone(),
        Deployment::new(args.docker.deployment.clone(), args.docker.adopt_unlabelled),
        Uuid::new_v4(),
        None,
        opts,
    )?;
    if args.once {
        let res = gc.run_once().await;
        pool.close().await;
        return match res {
            Ok(c) => {
                print_counts(&c, super::output::json(args.json));
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
    crate::signals::stop_on_signal(stop.clone(), &tracker, "garbage collector");
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
                "pending_closed": c.pending_closed, "foreign": c.foreign,
                "unlabelled": c.unlabelled,
            })
        );
    } else {
        println!(
            "listed {} young {} live {} protected {} unsure {} removed {}{} deferred {} failed {} missing {} pending adopted {} closed {} foreign {}",
            c.listed, c.young, c.live, c.protected, c.unsure, c.removed_total(),
            if c.dry_run { " (dry run: would remove)" } else { "" },
            c.deferred, c.failed, c.missing, c.pending_adopted, c.pending_closed, c.foreign
        );
        for (reason, n) in &c.removed {
            println!("  {reason}: {n}");
        }
    }
}

/// `--dry-run`: the API's plan, as a table or one JSON object.
async fn plan(remote: &RemoteArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let api = Remote::new(remote)?;
    let plan = api.get_json("/v1/gc/plan", &[]).await?;
    if as_json {
        println!("{}", serde_json::to_string(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    let containers = plan["containers"].as_array().cloned().unwrap_or_default();
    let images = plan["images"].as_array().cloned().unwrap_or_default();
    let c = &plan["counts"];
    println!(
        "dry run (deployment {}): would remove {} container(s) and {} image(s); \
         listed {} young {} live {} protected {} unsure {} deferred {}; foreign {} (not ours: never touched)",
        cell(&plan["deployment"]),
        containers.len(),
        images.len(),
        c["listed"],
        c["young"],
        c["live"],
        c["protected"],
        c["unsure"],
        c["deferred"],
        c["foreign"],
    );
    if c["unlabelled"].as_u64().unwrap_or(0) > 0 {
        println!(
            "{} of the foreign containers carry this deployment's name but no deployment identity \
             (made before identities existed); run the collector with --adopt-unlabelled-containers \
             to collect them",
            c["unlabelled"]
        );
    }
    if !containers.is_empty() {
        println!(
            "{:<12}  {:<18}  {:<12}  {:<36}  {:>6}  IMAGE",
            "CONTAINER", "REASON", "TENANT", "ACTIVITY", "AGE"
        );
        for p in &containers {
            let id: String = cell(&p["container_id"]).chars().take(12).collect();
            println!(
                "{:<12}  {:<18}  {:<12}  {:<36}  {:>5}s  {}",
                id,
                cell(&p["reason"]),
                cell(&p["tenant_id"]),
                cell(&p["activity_id"]),
                cell(&p["age_s"]),
                cell(&p["image"]),
            );
        }
    }
    if !images.is_empty() {
        println!(
            "{:<19}  {:<10}  {:<12}  REFERENCE",
            "IMAGE", "REASON", "TENANT"
        );
        for i in &images {
            let id: String = cell(&i["image_id"]).chars().take(19).collect();
            println!(
                "{:<19}  {:<10}  {:<12}  {}",
                id,
                cell(&i["reason"]),
                cell(&i["tenant_id"]),
                cell(&i["reference"]),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
