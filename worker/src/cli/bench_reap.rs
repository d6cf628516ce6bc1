//! `highway bench reap`: how fast containers are cleaned up when things go wrong, over
//! many trials against the real Docker daemon and a private Postgres cluster.
//!
//! - `kill -9` of a worker → its container removed by the garbage collector (target
//!   p99 ≤ lease + GC period + 2 s);
//! - cancel of a workflow run → stop issued (`stop_signalled_at − cancel_requested_at`,
//!   both by Postgres' clock; target p99 ≤ 250 ms) and the container gone from the
//!   daemon (wall clock from the cancel call; target ≤ stop grace + 1 s).
//!
//! Each trial's worker for the kill lane is a `highway worker` child process of this
//! binary (so it can be killed); the collector and the cancel lane's worker run in this
//! process. Everything runs in a private deployment, removed at the end.

use crate::db::{self, embedded::Cluster, PoolOptions};
use crate::docker::client::{ClientSettings, DockerClient};
use crate::docker::gc::{DockerGarbageCollector, GcOptions};
use crate::docker::DockerRuntime;
use crate::executor::{builtin, Registry, Shutdown, Worker, WorkerOptions};
use anyhow::{bail, Context};
use highway_workflows::{Client, EnqueueRequest, HumanDuration};
use serde_json::json;
use sqlx::PgPool;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

#[derive(clap::Args, Debug)]
pub struct ReapBench {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Trials per lane.
    #[arg(long, default_value_t = 20)]
    pub trials: usize,
    /// Lease of the killed workers.
    #[arg(long, default_value = "3s")]
    pub lease: HumanDuration,
    /// Period of the garbage collector.
    #[arg(long, default_value = "1s")]
    pub gc_period: HumanDuration,
    /// Creation grace of the collector: the product's default, so the kill lane
    /// measures what a default deployment does (the grace only shields containers with no
    /// tracking row, so it should not show in kill -9 → removed).
    #[arg(long, default_value = "60s")]
    pub gc_creation_grace: HumanDuration,
    /// Stop grace of the cancelled containers.
    #[arg(long, default_value = "2s")]
    pub stop_grace: HumanDuration,
    /// Image of the trial containers (`sleep` must exist in it).
    #[arg(long, default_value = "highway-test/busybox:1")]
    pub image: String,
}

struct Lane {
    name: &'static str,
    samples: Vec<f64>,
    target_ms: f64,
}

impl Lane {
    fn pct(&self, q: f64) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i]
    }
}

pub async fn run(b: ReapBench) -> anyhow::Result<ExitCode> {
    if b.trials == 0 {
        bail!("--trials must be at least 1");
    }
    let docker = DockerClient::new(ClientSettings::default());
    docker
        .ping()
        .await
        .context("the Docker daemon is unreachable")?;
    if docker.inspect_image(&b.image).await?.is_none() {
        bail!(
            "image {} is not on the daemon (scripts/build-test-image.sh builds it)",
            b.image
        );
    }
    let dir = std::env::temp_dir().join(format!("highway-bench-reap-{}", std::process::id()));
    let d2 = dir.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&d2)).await??;
    let res = lanes(&b, &cluster.url, &docker, &dir).await;
    let stop = tokio::task::spawn_blocking(move || cluster.stop()).await;
    std::fs::remove_dir_all(&dir).ok();
    stop??;
    let lanes = res?;
    if b.json {
        let mut m = serde_json::Map::new();
        for l in &lanes {
            m.insert(
                l.name.into(),
                json!({"n": l.samples.len(), "p50_ms": l.pct(0.5), "p99_ms": l.pct(0.99),
                       "max_ms": l.pct(1.0), "target_p99_ms": l.target_ms,
                       "ok": l.pct(0.99) <= l.target_ms}),
            );
        }
        println!(
            "{}",
            json!({"bench": "reap", "lease_ms": b.lease.0.as_millis() as u64,
                   "gc_period_ms": b.gc_period.0.as_millis() as u64,
                   "gc_creation_grace_ms": b.gc_creation_grace.0.as_millis() as u64,
                   "stop_grace_ms": b.stop_grace.0.as_millis() as u64, "lanes": m})
        );
    } else {
        println!(
            "lease {:?}, gc period {:?}, gc creation grace {:?}, stop grace {:?}, {} trials per lane",
            b.lease.0, b.gc_period.0, b.gc_creation_grace.0, b.stop_grace.0, b.trials
        );
        println!(
            "{:<34} {:>4} {:>9} {:>9} {:>9} {:>11}  ok",
            "lane", "n", "p50 ms", "p99 ms", "max ms", "target p99"
        );
        for l in &lanes {
            println!(
                "{:<34} {:>4} {:>9.0} {:>9.0} {:>9.0} {:>11.0}  {}",
                l.name,
                l.samples.len(),
                l.pct(0.5),
                l.pct(0.99),
                l.pct(1.0),
                l.target_ms,
                if l.pct(0.99) <= l.target_ms {
                    "yes"
                } else {
                    "NO"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn lanes(
    b: &ReapBench,
    url: &str,
    docker: &DockerClient,
    dir: &std::path::Path,
) -> anyhow::Result<Vec<Lane>> {
    let pool = db::connect(
        url,
        &PoolOptions {
            max_connections: 10,
            ..PoolOptions::default()
        },
    )
    .await?;
    db::migrate(&pool).await?;
    let deployment = format!("bench-reap-{}", std::process::id());
    let artifacts = dir.join("artifacts");
    std::fs::create_dir_all(&artifacts)?;

    // The collector of this "host": what reaps the killed workers' containers.
    let stop = CancellationToken::new();
    let tracker = TaskTracker::new();
    let gc = DockerGarbageCollector::new(
        docker.clone(),
        pool.clone(),
        crate::docker::deployment::Deployment::new(deployment.clone(), false),
        Uuid::new_v4(),
        None,
        GcOptions {
            period: b.gc_period.0,
            creation_grace: b.gc_creation_grace.0,
            stop_grace: Duration::from_secs(2),
            ..GcOptions::default()
        },
    )?;
    tracker.spawn(gc.run(stop.clone()));
    let res = async {
        let kill = kill_lane(b, url, &pool, docker, &deployment, &artifacts).await?;
        let (signalled, removed) = cancel_lane(b, &pool, docker, &deployment, &artifacts).await?;
        anyhow::Ok(vec![kill, signalled, removed])
    }
    .await;
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    // Whatever a failed trial left: remove it (same deployment only).
    let left = docker
        .list_by_labels(&[
            "highway.managed=true".into(),
            format!("highway.deployment={deployment}"),
        ])
        .await
        .unwrap_or_default();
    for c in left {
        if let Some(id) = c.id {
            let _ = docker.remove_container(&id).await;
        }
    }
    pool.close().await;
    res
}

fn request(b: &ReapBench, run: Option<Uuid>) -> EnqueueRequest {
    let mut req = EnqueueRequest::new(
        "tools.docker.run",
        json!({"image": b.image, "command": ["sleep", "600"], "stop_grace": format!("{}ms", b.stop_grace.0.as_millis())}),
    );
    req.retry_policy.maximum_attempts = 1;
    req.workflow_run_id = run;
    req
}

/// The running container of an activity, waited for.
async fn running_container(docker: &DockerClient, activity: Uuid) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = docker
            .list_by_labels(&[
                "highway.managed=true".into(),
                format!("highway.activity_id={activity}"),
            ])
            .await?;
        if let Some(id) = found.into_iter().find_map(|c| {
            (c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING))
                .then_some(c.id)
                .flatten()
        }) {
            return Ok(id);
        }
        if Instant::now() > deadline {
            bail!("no running container for activity {activity} within 60s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn gone(docker: &DockerClient, id: &str, max: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + max;
    while docker.inspect_container(id).await?.is_some() {
        if Instant::now() > deadline {
            bail!("container {id} still exists after {max:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

async fn kill_lane(
    b: &ReapBench,
    url: &str,
    pool: &PgPool,
    docker: &DockerClient,
    deployment: &str,
    artifacts: &std::path::Path,
) -> anyhow::Result<Lane> {
    let exe = std::env::current_exe()?;
    let client = Client::new(pool.clone());
    let mut samples = Vec::with_capacity(b.trials);
    for trial in 0..b.trials {
        let mut child = tokio::process::Command::new(&exe)
            .args(["worker", "--no-http"])
            .env("DATABASE_URL", url)
            .env("HIGHWAY_DEPLOYMENT", deployment)
            .env("HIGHWAY_ARTIFACT_DIR", artifacts)
            .env("HIGHWAY_LEASE", format!("{}ms", b.lease.0.as_millis()))
            .env("HIGHWAY_POLL_INTERVAL", "50ms")
            .env("HIGHWAY_GC_ENABLED", "false")
            .env("RUST_LOG", "error")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let a = client.enqueue(&request(b, None)).await?.id;
        let id = running_container(docker, a).await?;
        // Kill at a random point of the heartbeat cycle, as a crash would.
        let lease_ms = b.lease.0.as_millis() as u64;
        let wait = rand::random::<u64>() % (lease_ms / 3).max(1);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.start_kill()?; // SIGKILL
        let t0 = Instant::now();
        child.wait().await?;
        gone(
            docker,
            &id,
            b.lease.0 + b.gc_period.0 + Duration::from_secs(60),
        )
        .await?;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(trial, ms, "kill -9 → removed");
        samples.push(ms);
    }
    Ok(Lane {
        name: "kill9_to_container_removed",
        samples,
        target_ms: (b.lease.0 + b.gc_period.0 + Duration::from_secs(2)).as_secs_f64() * 1000.0,
    })
}

async fn cancel_lane(
    b: &ReapBench,
    pool: &PgPool,
    docker: &DockerClient,
    deployment: &str,
    artifacts: &std::path::Path,
) -> anyhow::Result<(Lane, Lane)> {
    let mut opts = WorkerOptions::new(vec!["default".into()], 4);
    opts.poll_interval = Duration::from_millis(50);
    let cfg = crate::config::docker::DockerConfig {
        deployment: deployment.to_string(),
        ..crate::config::docker::DockerConfig::default()
    };
    let rt = Arc::new(DockerRuntime::with_client(
        cfg,
        docker.clone(),
        pool.clone(),
        opts.id,
        artifacts.to_path_buf(),
    ));
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    crate::docker::register(&mut registry, rt.clone());
    let shutdown = Shutdown::new();
    let worker = Worker::new(opts, pool.clone(), pool.clone(), registry);
    let handle = tokio::spawn(worker.run(shutdown.clone()));
    let client = Client::new(pool.clone());
    let res = async {
        let mut signalled = Vec::with_capacity(b.trials);
        let mut removed = Vec::with_capacity(b.trials);
        for _ in 0..b.trials {
            let run = client.create_run("default", "bench-reap", &json!({})).await?;
            let a = client.enqueue(&request(b, Some(run))).await?.id;
            let id = running_container(docker, a).await?;
            let t0 = Instant::now();
            client.cancel_run(run, None).await?;
            gone(docker, &id, b.stop_grace.0 + Duration::from_secs(60)).await?;
            removed.push(t0.elapsed().as_secs_f64() * 1000.0);
            let ms: Option<f64> = sqlx::query_scalar(
                "SELECT (EXTRACT(EPOCH FROM d.stop_signalled_at - r.cancel_requested_at) * 1000)::float8
                   FROM highway.docker_containers d JOIN highway.workflow_runs r ON r.id = d.workflow_run_id
                  WHERE d.container_id = $1",
            )
            .bind(&id)
            .fetch_optional(pool)
            .await?
            .flatten();
            signalled.push(ms.context("stop_signalled_at was not recorded")?);
            client.wait(a, None, Duration::from_secs(30)).await?;
        }
        anyhow::Ok((signalled, removed))
    }
    .await;
    shutdown.now();
    let _ = handle.await;
    rt.drain().await;
    let (signalled, removed) = res?;
    Ok((
        Lane {
            name: "cancel_to_stop_signalled",
            samples: signalled,
            target_ms: 250.0,
        },
        Lane {
            name: "cancel_to_container_removed",
            samples: removed,
            target_ms: (b.stop_grace.0 + Duration::from_secs(1)).as_secs_f64() * 1000.0,
        },
    ))
}
