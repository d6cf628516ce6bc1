//! `highway bench docker`: the container overhead of `tools.docker.run`, next to a raw
//! bollard create/start/wait/remove loop and the `docker run --rm` CLI on the same image,
//! in one run. The worker runs as a child `highway worker` process (so its RSS is its
//! own) against a private Postgres cluster this program starts and stops.
//!
//! Lanes: latency of `true` (median, p99), what a user sees (the `highway activity
//! enqueue … --wait` process from start to exit against the running worker's API,
//! alternating with the `docker run --rm` process), containers per second at concurrency 8,
//! 1 GiB of stdout with the worker's peak RSS, and 1 GiB through the artifact store
//! (Postgres by default): store → container → store, then store → another container,
//! against `docker cp` of the same file, with the peak RSS of a fresh worker.

use crate::db::{self, embedded::Cluster, PoolOptions};
use crate::docker::artifacts::{ArtifactStore, Backend, Producer};
use crate::docker::tario::TarLimits;
use anyhow::Context;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use highway_workflows::{Client, EnqueueRequest};
use serde_json::{json, Value};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};
use uuid::Uuid;

#[derive(clap::Args, Debug)]
pub struct DockerBench {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Image with `/bin/true`, `/bin/sh`, `head`, `yes` (the offline test image).
    #[arg(long, default_value = "highway-test/busybox:1")]
    pub image: String,
    /// Sequential runs per latency lane.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,
    /// Containers per throughput lane (at concurrency 8).
    #[arg(long, default_value_t = 80)]
    pub containers: usize,
    /// Skip the 1 GiB stdout and tar lanes.
    #[arg(long)]
    pub quick: bool,
    /// Artifact store of the tar lanes: `postgres` or `fs` (the worker's
    /// `HIGHWAY_ARTIFACT_STORE`).
    #[arg(long, default_value = "postgres", value_parser = ["postgres", "fs"])]
    pub artifact_store: String,
}

struct Row {
    name: String,
    value: f64,
    unit: &'static str,
}

fn row(name: impl Into<String>, value: f64, unit: &'static str) -> Row {
    Row {
        name: name.into(),
        value,
        unit,
    }
}

pub async fn run(b: DockerBench) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("highway-bench-docker-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let d2 = dir.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&d2)).await??;
    let res = lanes(&b, &cluster, &dir).await;
    let stop = tokio::task::spawn_blocking(move || cluster.stop()).await;
    std::fs::remove_dir_all(&dir).ok();
    stop??;
    let rows = res?;
    let get = |n: &str| {
        rows.iter()
            .find(|r| r.name == n)
            .map(|r| r.value)
            .unwrap_or(f64::NAN)
    };
    let ratios = json!({
        "worker_p50_vs_raw_bollard_p50": get("worker_true_p50") / get("raw_bollard_true_p50"),
        "worker_p50_vs_cli_p50": get("worker_true_p50") / get("docker_cli_true_p50"),
        "user_enqueue_wait_p50_vs_docker_run_rm_p50": get("user_enqueue_wait_true_p50") / get("user_docker_run_rm_true_p50"),
        "worker_throughput_vs_raw_bollard_at_8": get("worker_containers_per_s_at_8") / get("raw_bollard_containers_per_s_at_8"),
        "docker_cp_time_vs_worker_tar_time": get("docker_cp_1gib_in_out_s") / get("worker_tar_1gib_in_out_s"),
        "worker_tar_in_vs_docker_cp_in": get("worker_tar_1gib_in_s") / get("docker_cp_1gib_in_s"),
        "worker_tar_out_vs_docker_cp_out": get("worker_tar_1gib_out_s") / get("docker_cp_1gib_out_s"),
    });
    if b.json {
        let mut m = serde_json::Map::new();
        for r in &rows {
            m.insert(r.name.clone(), json!({"value": r.value, "unit": r.unit}));
        }
        println!(
            "{}",
            json!({"bench": "docker", "lanes": m, "ratios": ratios})
        );
    } else {
        println!("{:<40} {:>12}  unit", "lane", "value");
        for r in &rows {
            println!("{:<40} {:>12.2}  {}", r.name, r.value, r.unit);
        }
        println!();
        for (k, v) in ratios.as_object().into_iter().flatten() {
            println!("{:<40} {:>12.3}", k, v.as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A loopback address nothing listens on now (the worker binds it right after).
fn free_loopback_port() -> anyhow::Result<std::net::SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(l.local_addr()?)
}

/// Waits (up to 60 s) until the worker's API answers `/health/live`.
async fn wait_for_api(base: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok = http
            .get(format!("{base}/health/live"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker's API at {base} never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A child `highway worker` with its own state dir and deployment.
struct ChildWorker {
    child: tokio::process::Child,
}

impl ChildWorker {
    /// With `listen`, the worker serves its HTTP API there; else it has none.
    fn start(
        url: &str,
        dir: &Path,
        concurrency: usize,
        store: &str,
        listen: Option<std::net::SocketAddr>,
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut cmd = tokio::process::Command::new(exe);
        match listen {
            Some(addr) => cmd.arg("worker").env("HIGHWAY_LISTEN", addr.to_string()),
            None => cmd.args(["worker", "--no-http"]),
        };
        let child = cmd
            .env("DATABASE_URL", url)
            .env("HIGHWAY_STATE_DIR", dir)
            .env("HIGHWAY_ARTIFACT_DIR", dir.join("artifacts"))
            .env("HIGHWAY_ARTIFACT_STORE", store)
            .env("HIGHWAY_CONCURRENCY", concurrency.to_string())
            .env("HIGHWAY_POLL_INTERVAL", "200ms")
            .env("HIGHWAY_DEPLOYMENT", "bench")
            .env("HIGHWAY_DOCKER_INPUT_MAX_BYTES", "2g")
            .env("HIGHWAY_DOCKER_OUTPUT_MAX_BYTES", "2g")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("start the worker")?;
        Ok(Self { child })
    }

    /// Peak resident set size (VmHWM) of the worker process, in MiB.
    fn peak_rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return f64::NAN;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| {
                        v.split_whitespace()
                            .next()
                            .and_then(|n| n.parse::<f64>().ok())
                    })
            })
            .map(|kib| kib / 1024.0)
            .unwrap_or(f64::NAN)
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
    }
}

async fn lanes(b: &DockerBench, cluster: &Cluster, dir: &Path) -> anyhow::Result<Vec<Row>> {
    let pool = db::connect(&cluster.url, &PoolOptions::default()).await?;
    db::migrate(&pool).await?;
    let client = Client::new(pool.clone());
    let docker = bollard::Docker::connect_with_local_defaults()?;
    docker
        .ping()
        .await
        .context("the Docker daemon is unreachable")?;
    docker.inspect_image(&b.image).await.with_context(|| {
        format!(
            "image {} missing (run scripts/build-test-image.sh)",
            b.image
        )
    })?;
    let mut rows = Vec::new();
    let listen = free_loopback_port()?;
    let mut worker = ChildWorker::start(&cluster.url, dir, 8, &b.artifact_store, Some(listen))?;

    // Warm up every path once.
    run_activity(
        &client,
        &pool,
        json!({"image": b.image, "command": ["true"]}),
    )
    .await?;
    raw_once(&docker, &b.image).await?;

    // 1. Latency of `true`, sequential.
    let mut w = Vec::new();
    for _ in 0..b.runs {
        let (_, ms) = run_activity(
            &client,
            &pool,
            json!({"image": b.image, "command": ["true"]}),
        )
        .await?;
        w.push(ms);
    }
    let w = sorted(w);
    rows.push(row("worker_true_p50", percentile(&w, 0.5), "ms"));
    rows.push(row("worker_true_p99", percentile(&w, 0.99), "ms"));
    let mut r = Vec::new();
    for _ in 0..b.runs {
        let t = Instant::now();
        raw_once(&docker, &b.image).await?;
        r.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let r = sorted(r);
    rows.push(row("raw_bollard_true_p50", percentile(&r, 0.5), "ms"));
    rows.push(row("raw_bollard_true_p99", percentile(&r, 0.99), "ms"));
    let mut c = Vec::new();
    for _ in 0..b.runs {
        let t = Instant::now();
        let st = tokio::process::Command::new("docker")
            .args(["run", "--rm", &b.image, "true"])
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(st.success(), "docker run --rm failed");
        c.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let c = sorted(c);
    rows.push(row("docker_cli_true_p50", percentile(&c, 0.5), "ms"));
    rows.push(row("docker_cli_true_p99", percentile(&c, 0.99), "ms"));

    // 1b. What a user sees: `highway activity enqueue … --wait` as a process, start to
    //     exit, against the worker's API, alternating with `docker run --rm` as a process.
    let (_, token) = crate::api::store::create_token(&pool, "bench-docker", None).await?;
    let api = format!("http://{listen}");
    wait_for_api(&api).await?;
    let params = json!({"image": b.image, "command": ["true"]}).to_string();
    let exe = std::env::current_exe()?;
    let (mut u, mut d) = (Vec::new(), Vec::new());
    for i in 0..=b.runs {
        let t = Instant::now();
        let st = tokio::process::Command::new(&exe)
            .args([
                "activity",
                "enqueue",
                "tools.docker.run",
                "--params",
                &params,
            ])
            .args(["--wait", "--json"])
            .env("HIGHWAY_API_URL", &api)
            .env("HIGHWAY_TOKEN", &token)
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(st.success(), "highway activity enqueue --wait failed: {st}");
        let user_ms = t.elapsed().as_secs_f64() * 1000.0;
        let t = Instant::now();
        let st = tokio::process::Command::new("docker")
            .args(["run", "--rm", &b.image, "true"])
            .stdout(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(st.success(), "docker run --rm failed");
        let cli_ms = t.elapsed().as_secs_f64() * 1000.0;
        // The first pair warms the CLI binary and the connection paths.
        if i > 0 {
            u.push(user_ms);
            d.push(cli_ms);
        }
    }
    let (u, d) = (sorted(u), sorted(d));
    rows.push(row("user_enqueue_wait_true_p50", percentile(&u, 0.5), "ms"));
    rows.push(row(
        "user_enqueue_wait_true_p99",
        percentile(&u, 0.99),
        "ms",
    ));
    rows.push(row(
        "user_docker_run_rm_true_p50",
        percentile(&d, 0.5),
        "ms",
    ));
    rows.push(row(
        "user_docker_run_rm_true_p99",
        percentile(&d, 0.99),
        "ms",
    ));

    // 2. Containers per second at concurrency 8.
    let reqs: Vec<EnqueueRequest> = (0..b.containers)
        .map(|_| {
            EnqueueRequest::new(
                "tools.docker.run",
                json!({"image": b.image, "command": ["true"]}),
            )
            .queue("default")
        })
        .collect();
    let ids: Vec<Uuid> = client
        .enqueue_many(&reqs)
        .await?
        .into_iter()
        .map(|e| e.id)
        .collect();
    for id in &ids {
        let a = client.wait(*id, None, Duration::from_secs(600)).await?;
        anyhow::ensure!(
            a.status == "succeeded",
            "activity {id} ended {}: {:?}",
            a.status,
            a.error
        );
    }
    let span: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::float8 FROM highway.activities WHERE id = ANY($1)",
    )
    .bind(&ids)
    .fetch_one(&pool)
    .await?;
    rows.push(row(
        "worker_containers_per_s_at_8",
        ids.len() as f64 / span,
        "containers/s",
    ));
    let t = Instant::now();
    let per = b.containers / 8;
    let mut hs = Vec::new();
    for _ in 0..8 {
        let docker = docker.clone();
        let image = b.image.clone();
        hs.push(tokio::spawn(async move {
            for _ in 0..per {
                raw_once(&docker, &image).await?;
            }
            anyhow::Ok(())
        }));
    }
    for h in hs {
        h.await??;
    }
    rows.push(row(
        "raw_bollard_containers_per_s_at_8",
        (per * 8) as f64 / t.elapsed().as_secs_f64(),
        "containers/s",
    ));

    if !b.quick {
        // 3. 1 GiB of stdout (100-byte lines) through the worker; its peak RSS.
        let (res, ms) = run_activity(
            &client,
            &pool,
            json!({"image": b.image, "timeout": "600s", "command": ["sh", "-c",
                   "yes 'highway-benchmark-line-of-one-hundred-bytes-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' | head -c 1073741824"]}),
        )
        .await?;
        rows.push(row("worker_stdout_1gib_s", ms / 1000.0, "s"));
        rows.push(row(
            "worker_stdout_1gib_logs_truncated",
            if res["logs_truncated"] == json!(true) {
                1.0
            } else {
                0.0
            },
            "bool",
        ));
        rows.push(row("worker_peak_rss", worker.peak_rss_mib(), "MiB"));

        // 4. 1 GiB through the artifact store, on a fresh worker (its peak RSS is this
        //    lane's alone): store → container → store (in + out), then store → another
        //    container (in); out = (in + out) − in. Against docker create + cp in + start
        //    + cp out + rm, and create + cp in + start + rm.
        worker.stop().await;
        worker = ChildWorker::start(&cluster.url, dir, 8, &b.artifact_store, None)?;
        let work = dir.join("tar");
        std::fs::create_dir_all(&work)?;
        let big = work.join("big.bin");
        let st = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "head -c 1073741824 /dev/urandom > {0} && tar -C {1} -cf {1}/in.tar big.bin",
                big.display(),
                work.display()
            ))
            .status()
            .await?;
        anyhow::ensure!(st.success(), "making the 1 GiB file failed");
        let store = match b.artifact_store.as_str() {
            "fs" => ArtifactStore::new(
                pool.clone(),
                Backend::Filesystem {
                    dir: dir.join("artifacts"),
                },
            ),
            _ => ArtifactStore::new(pool.clone(), Backend::Postgres),
        };
        let input = store
            .import_tar_file(
                Producer {
                    tenant_id: "default",
                    activity_id: None,
                    attempt: None,
                },
                &work.join("in.tar"),
                TarLimits {
                    max_bytes: 2 << 30,
                    max_entries: 10,
                },
            )
            .await?;
        std::fs::remove_file(work.join("in.tar")).ok();
        let (res, in_out_ms) = run_activity(
            &client,
            &pool,
            json!({"image": b.image, "timeout": "600s", "command": ["true"],
                   "inputs": [{"path": "/data", "artifact": input.id}],
                   "outputs": ["/data/big.bin"]}),
        )
        .await?;
        let output = res["outputs"]["id"]
            .as_str()
            .context("the in + out run stored no output")?
            .to_string();
        let (_, in_ms) = run_activity(
            &client,
            &pool,
            json!({"image": b.image, "timeout": "600s", "command": ["true"],
                   "inputs": [{"path": "/data", "artifact": output}]}),
        )
        .await?;
        rows.push(row("worker_tar_1gib_in_out_s", in_out_ms / 1000.0, "s"));
        rows.push(row("worker_tar_1gib_in_s", in_ms / 1000.0, "s"));
        rows.push(row(
            "worker_tar_1gib_out_s",
            (in_out_ms - in_ms) / 1000.0,
            "s",
        ));
        rows.push(row("worker_tar_peak_rss", worker.peak_rss_mib(), "MiB"));
        let cp_in_out = docker_cp(&b.image, &big, &work, true).await?;
        let cp_in = docker_cp(&b.image, &big, &work, false).await?;
        rows.push(row("docker_cp_1gib_in_out_s", cp_in_out, "s"));
        rows.push(row("docker_cp_1gib_in_s", cp_in, "s"));
        rows.push(row("docker_cp_1gib_out_s", cp_in_out - cp_in, "s"));
    }
    worker.stop().await;
    pool.close().await;
    Ok(rows)
}

/// Enqueues one `tools.docker.run` and waits; returns the result and the enqueue→result
/// time in ms by the database's clock (created_at → finished_at).
async fn run_activity(
    client: &Client,
    pool: &PgPool,
    params: Value,
) -> anyhow::Result<(Value, f64)> {
    let e = client
        .enqueue(&EnqueueRequest::new("tools.docker.run", params).max_attempts(1))
        .await?;
    let a = client.wait(e.id, None, Duration::from_secs(900)).await?;
    anyhow::ensure!(
        a.status == "succeeded",
        "activity ended {}: {:?}",
        a.status,
        a.error
    );
    let ms: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM finished_at - created_at)::float8 * 1000 FROM highway.activities WHERE id = $1",
    )
    .bind(e.id)
    .fetch_one(pool)
    .await?;
    Ok((a.result.unwrap_or_default(), ms))
}

/// The raw ceiling: create, start, wait, remove with bollard, nothing else.
async fn raw_once(docker: &bollard::Docker, image: &str) -> anyhow::Result<()> {
    let name = format!("highway-bench-raw-{}", Uuid::new_v4().simple());
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["true".into()]),
        ..Default::default()
    };
    let created = docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await?;
    let res = async {
        docker.start_container(&created.id, None).await?;
        let mut wait = docker.wait_container(
            &created.id,
            Some(
                WaitContainerOptionsBuilder::default()
                    .condition("not-running")
                    .build(),
            ),
        );
        while let Some(w) = wait.next().await {
            w?;
        }
        anyhow::Ok(())
    }
    .await;
    docker
        .remove_container(
            &created.id,
            Some(
                RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await?;
    res
}

/// `docker create` + `docker cp` in + `docker start -a` + (`out`: `docker cp` out) +
/// `docker rm`.
async fn docker_cp(image: &str, big: &Path, work: &Path, copy_out: bool) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = tokio::process::Command::new("docker")
        .args(["create", image, "true"])
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "docker create failed");
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let back: PathBuf = work.join("back.bin");
    let mut steps: Vec<Vec<String>> = vec![
        vec![
            "cp".into(),
            big.display().to_string(),
            format!("{id}:/big.bin"),
        ],
        vec!["start".into(), "-a".into(), id.clone()],
    ];
    if copy_out {
        steps.push(vec![
            "cp".into(),
            format!("{id}:/big.bin"),
            back.display().to_string(),
        ]);
    }
    let mut ok = true;
    for s in steps {
        ok &= tokio::process::Command::new("docker")
            .args(&s)
            .status()
            .await?
            .success();
    }
    tokio::process::Command::new("docker")
        .args(["rm", "-f", "-v", &id])
        .stdout(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(ok, "docker cp lane failed");
    let secs = t.elapsed().as_secs_f64();
    std::fs::remove_file(back).ok();
    Ok(secs)
}
