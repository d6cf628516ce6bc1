//! `highway bench ...`: benchmark programs that print a table (or JSON with `--json`).
//! They are run on demand, never as tests. `bench queue` starts its own private
//! Postgres cluster (in a temp dir) so every lane runs against the same server, and
//! measures raw-SQL ceilings next to the queue itself.

use crate::db::{self, embedded::Cluster, PoolOptions};
use crate::executor::{builtin, Registry, Shutdown, Worker, WorkerOptions};
use highway_workflows::{Client, EnqueueRequest};
use serde_json::json;
use sqlx::PgPool;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Queue throughput and latency, with raw-SQL ceilings on the same cluster: a private
    /// Postgres of its own, started in a temp dir and removed (`--database-url` and
    /// `--state-dir` are not used).
    Queue(QueueBench),
    /// Container overhead of `tools.docker.run` against raw bollard and the docker CLI.
    Docker(super::bench_docker::DockerBench),
    /// Lateness of cron fires (enqueue minus nominal) p50/p99, duplicates and misses.
    Cron(super::bench_cron::CronBench),
    /// Cleanup latency: kill -9 → container reaped by the GC; cancel → stop issued and
    /// container removed (p50/p99 over N trials).
    Reap(super::bench_reap::ReapBench),
}

#[derive(clap::Args, Debug)]
pub struct QueueBench {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seconds each timed lane runs.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Activities per throughput lane (64 slots; the 1- and 4-slot lanes use a tenth).
    #[arg(long, default_value_t = 20_000)]
    pub activities: usize,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Queue(b) => queue(b).await,
        BenchCommand::Docker(b) => super::bench_docker::run(b).await,
        BenchCommand::Cron(b) => super::bench_cron::run(b).await,
        BenchCommand::Reap(b) => super::bench_reap::run(b).await,
    }
}

struct Lane {
    name: String,
    value: f64,
    unit: &'static str,
}

async fn queue(b: QueueBench) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("highway-bench-{}", std::process::id()));
    let d2 = dir.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&d2)).await??;
    let res = queue_lanes(&b, &cluster).await;
    let stop = tokio::task::spawn_blocking(move || cluster.stop()).await;
    std::fs::remove_dir_all(&dir).ok();
    stop??;
    let lanes = res?;
    let get = |n: &str| {
        lanes
            .iter()
            .find(|l| l.name == n)
            .map(|l| l.value)
            .unwrap_or(f64::NAN)
    };
    let ratios = json!({
        "enqueue_single_vs_pgbench": get("highway_enqueue_single_16c") / get("pgbench_insert_16c"),
        "claim_complete_64_vs_raw_batched": get("highway_noop_64_slots") / get("raw_batched_claim_complete"),
        "claim_complete_64_vs_raw_unbatched": get("highway_noop_64_slots") / get("raw_unbatched_claim_complete"),
    });
    if b.json {
        let mut m = serde_json::Map::new();
        for l in &lanes {
            m.insert(l.name.clone(), json!({"value": l.value, "unit": l.unit}));
        }
        println!(
            "{}",
            json!({"bench": "queue", "lanes": m, "ratios": ratios})
        );
    } else {
        println!("{:<36} {:>14}  unit", "lane", "value");
        for l in &lanes {
            println!("{:<36} {:>14.2}  {}", l.name, l.value, l.unit);
        }
        println!();
        for (k, v) in ratios.as_object().into_iter().flatten() {
            println!("{:<36} {:>14.2}", k, v.as_f64().unwrap_or(f64::NAN));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn queue_lanes(b: &QueueBench, cluster: &Cluster) -> anyhow::Result<Vec<Lane>> {
    let secs = Duration::from_secs(b.seconds.max(1));
    let pool = db::connect(
        &cluster.url,
        &PoolOptions {
            max_connections: 40,
            ..Default::default()
        },
    )
    .await?;
    db::migrate(&pool).await?;
    let mut lanes = Vec::new();

    let mut cpu = CpuMeter::new(cluster);

    // 1. pgbench: single-row inserts, 16 clients.
    let v = pgbench_insert(cluster, secs).await?;
    cpu.lane(
        &mut lanes,
        "pgbench_insert_16c",
        v,
        v * secs.as_secs_f64(),
        "rows/s",
    );

    // 2. Raw claim+complete ceilings on a bare table shaped like ours.
    cpu.restart();
    let (v, done) = raw_claim_complete(&pool, 100, b.activities, secs).await?;
    cpu.lane(&mut lanes, "raw_batched_claim_complete", v, done, "jobs/s");
    cpu.restart();
    let (v, done) = raw_claim_complete(&pool, 1, b.activities / 4, secs).await?;
    cpu.lane(
        &mut lanes,
        "raw_unbatched_claim_complete",
        v,
        done,
        "jobs/s",
    );

    // 3. Highway enqueue, single (16 concurrent clients) and batched.
    let client = Client::new(pool.clone());
    cpu.restart();
    let single = enqueue_single(&client, 16, secs).await?;
    cpu.lane(
        &mut lanes,
        "highway_enqueue_single_16c",
        single,
        single * secs.as_secs_f64(),
        "activities/s",
    );
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < secs {
        let reqs: Vec<EnqueueRequest> = (0..1000)
            .map(|_| EnqueueRequest::new(builtin::NOOP, json!({})).queue("bench-batch"))
            .collect();
        client.enqueue_many(&reqs).await?;
        n += 1000;
    }
    lanes.push(Lane {
        name: "highway_enqueue_batched_1000".into(),
        value: n as f64 / t0.elapsed().as_secs_f64(),
        unit: "activities/s",
    });
    sqlx::query("TRUNCATE highway.activities CASCADE")
        .execute(&pool)
        .await?;

    // 4. No-op claim+complete with 1, 4 and 64 slots.
    let mut max_tput: f64 = 0.0;
    for (slots, name, count) in [
        (1usize, "highway_noop_1_slot", b.activities / 10),
        (4, "highway_noop_4_slots", b.activities / 10),
        (64, "highway_noop_64_slots", b.activities),
    ] {
        let (v, used) = noop_throughput(&pool, &client, slots, count.max(100), &mut cpu).await?;
        max_tput = max_tput.max(v);
        lanes.push(Lane {
            name: name.into(),
            value: v,
            unit: "activities/s",
        });
        cpu.push_usage(&mut lanes, name, used, count.max(100) as f64);
        sqlx::query("TRUNCATE highway.activities CASCADE")
            .execute(&pool)
            .await?;
        sqlx::query("VACUUM ANALYZE highway.activities")
            .execute(&pool)
            .await?;
    }

    // 5. Enqueue→start latency at half the measured maximum (and within what single
    //    enqueues can offer), plus transactions per activity.
    let rate = (max_tput.min(single) / 2.0).max(10.0);
    let (p50, p99, p999, tx_per) = latency(&pool, &client, rate, secs).await?;
    for (name, value, unit) in [
        ("latency_offered_rate", rate, "activities/s"),
        ("enqueue_to_start_p50", p50, "ms"),
        ("enqueue_to_start_p99", p99, "ms"),
        ("enqueue_to_start_p99.9", p999, "ms"),
        ("transactions_per_activity", tx_per, "xact/activity"),
    ] {
        lanes.push(Lane {
            name: name.into(),
            value,
            unit,
        });
    }
    pool.close().await;
    Ok(lanes)
}

async fn pgbench_insert(cluster: &Cluster, secs: Duration) -> anyhow::Result<f64> {
    let pool = db::connect(&cluster.url, &PoolOptions::default()).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS bench_pgbench (id bigserial PRIMARY KEY, payload jsonb, created_at timestamptz DEFAULT now())")
        .execute(&pool)
        .await?;
    pool.close().await;
    let script = std::env::temp_dir().join(format!("highway-pgbench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "INSERT INTO bench_pgbench (payload) VALUES ('{}');\n",
    )?;
    let out = tokio::process::Command::new(cluster.bindir.join("pgbench"))
        .args(["-n", "-c", "16", "-j", "2", "-T"])
        .arg(secs.as_secs().to_string())
        .arg("-f")
        .arg(&script)
        .args(["-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(cluster.port.to_string())
        .arg(db::embedded::DATABASE)
        .env("PGPASSWORD", &cluster.password)
        .output()
        .await?;
    std::fs::remove_file(&script).ok();
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "pgbench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "tps = 1234.5 (without initial connection time)"
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tps in pgbench output: {text}"))
}

/// The ceiling: a bare table, claim `batch` rows with SKIP LOCKED (keyset hint), complete
/// them (`batch == 1`: one statement per row), 4 concurrent loops. Returns the rate and
/// the rows done: the lane ends early when the rows run out.
async fn raw_claim_complete(
    pool: &PgPool,
    batch: i64,
    rows: usize,
    secs: Duration,
) -> anyhow::Result<(f64, f64)> {
    sqlx::query("DROP TABLE IF EXISTS bench_raw")
        .execute(pool)
        .await?;
    sqlx::query(
        "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, queue text NOT NULL DEFAULT 'q', \
         status text NOT NULL DEFAULT 'scheduled', run_at timestamptz NOT NULL DEFAULT now(), \
         attempt int NOT NULL DEFAULT 0, owner uuid, params jsonb NOT NULL DEFAULT '{}')",
    )
    .execute(pool)
    .await?;
    sqlx::query("CREATE INDEX ON bench_raw (queue, run_at, id) WHERE status = 'scheduled'")
        .execute(pool)
        .await?;
    checkpoint(pool).await?;
    sqlx::query("INSERT INTO bench_raw (params) SELECT '{}' FROM generate_series(1, $1)")
        .bind(rows as i64)
        .execute(pool)
        .await?;
    sqlx::query("VACUUM ANALYZE bench_raw")
        .execute(pool)
        .await?;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + secs;
    let t0 = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let pool = pool.clone();
        let done = done.clone();
        handles.push(tokio::spawn(async move {
            let owner = uuid::Uuid::new_v4();
            let mut hint: Option<(chrono::DateTime<chrono::Utc>, i64)> = None;
            while Instant::now() < deadline {
                let claimed: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
                    "WITH p AS (SELECT id FROM bench_raw WHERE status = 'scheduled' AND queue = 'q' AND run_at <= now() \
                       AND ($3::timestamptz IS NULL OR (run_at, id) > ($3, $4)) \
                       ORDER BY run_at, id LIMIT $1 FOR UPDATE SKIP LOCKED) \
                     UPDATE bench_raw b SET status = 'running', attempt = attempt + 1, owner = $2 FROM p \
                     WHERE b.id = p.id RETURNING b.id, b.run_at",
                )
                .bind(batch)
                .bind(owner)
                .bind(hint.map(|h| h.0))
                .bind(hint.map(|h| h.1))
                .fetch_all(&pool)
                .await?;
                if claimed.is_empty() {
                    if hint.is_none() {
                        break;
                    }
                    hint = None;
                    continue;
                }
                hint = claimed.iter().map(|c| (c.1, c.0)).max();
                let ids: Vec<i64> = claimed.iter().map(|c| c.0).collect();
                if batch == 1 {
                    for id in &ids {
                        sqlx::query("UPDATE bench_raw SET status = 'succeeded' WHERE id = $1 AND owner = $2 AND status = 'running'")
                            .bind(id)
                            .bind(owner)
                            .execute(&pool)
                            .await?;
                    }
                } else {
                    sqlx::query("UPDATE bench_raw SET status = 'succeeded' WHERE id = ANY($1) AND owner = $2 AND status = 'running'")
                        .bind(&ids)
                        .bind(owner)
                        .execute(&pool)
                        .await?;
                }
                done.fetch_add(ids.len() as u64, Ordering::Relaxed);
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let n = done.load(Ordering::Relaxed) as f64;
    sqlx::query("DROP TABLE bench_raw").execute(pool).await?;
    Ok((n / t0.elapsed().as_secs_f64(), n))
}

async fn enqueue_single(client: &Client, clients: usize, secs: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + secs;
    let t0 = Instant::now();
    let done = Arc::new(AtomicU64::new(0));
    let mut hs = Vec::new();
    for _ in 0..clients {
        let c = client.clone();
        let done = done.clone();
        hs.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                c.enqueue(&EnqueueRequest::new(builtin::NOOP, json!({})).queue("bench-single"))
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, highway_workflows::Error>(())
        }));
    }
    for h in hs {
        h.await??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / t0.elapsed().as_secs_f64())
}

fn bench_worker(
    pool: &PgPool,
    queue: &str,
    slots: usize,
) -> (
    Shutdown,
    tokio::task::JoinHandle<crate::executor::WorkerSummary>,
) {
    let mut reg = Registry::new();
    builtin::register(&mut reg);
    let mut o = WorkerOptions::new(vec![queue.to_string()], slots);
    o.fetch_batch = 100;
    o.run_rescuer = false;
    let shutdown = Shutdown::new();
    let w = Worker::new(o, pool.clone(), pool.clone(), reg);
    (shutdown.clone(), tokio::spawn(w.run(shutdown)))
}

async fn noop_throughput(
    pool: &PgPool,
    client: &Client,
    slots: usize,
    count: usize,
    cpu: &mut CpuMeter,
) -> anyhow::Result<(f64, (f64, f64))> {
    let queue = format!("bench-noop-{slots}");
    checkpoint(pool).await?;
    for chunk in (0..count).collect::<Vec<_>>().chunks(1000) {
        let reqs: Vec<EnqueueRequest> = chunk
            .iter()
            .map(|_| EnqueueRequest::new(builtin::NOOP, json!({})).queue(queue.clone()))
            .collect();
        client.enqueue_many(&reqs).await?;
    }
    sqlx::query("VACUUM ANALYZE highway.activities")
        .execute(pool)
        .await?;
    cpu.restart();
    let (shutdown, h) = bench_worker(pool, &queue, slots);
    // Each probe costs Postgres ~2 ms (the running-lease index is full of dead entries
    // mid-lane); every 20 ms it took a tenth of the database it measures. The span comes
    // from the rows' own timestamps, so a late probe changes nothing.
    drained(pool, &queue, Duration::from_millis(200)).await?;
    let used = cpu.used();
    // Measured from the database's own timestamps: first start to last finish.
    let span: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::float8 FROM highway.activities",
    )
    .fetch_one(pool)
    .await?;
    shutdown.now();
    h.await?;
    Ok((count as f64 / span.max(1e-6), used))
}

/// Waits until `queue` has nothing waiting and nothing runs anywhere, probing every
/// `every` through the partial indexes (a count over the table would cost the database
/// more than the work it measures); fails after 10 minutes.
async fn drained(pool: &PgPool, queue: &str, every: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        let busy: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM highway.activities WHERE status = 'scheduled' AND queue = $1) \
                 OR EXISTS (SELECT 1 FROM highway.activities WHERE status = 'running')",
        )
        .bind(queue)
        .fetch_one(pool)
        .await?;
        if !busy {
            return Ok(());
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "the {queue} lane did not finish"
        );
        tokio::time::sleep(every).await;
    }
}

/// Every throughput lane loads its rows right after a checkpoint, so no lane pays full
/// page images (the first change of a page after a checkpoint) that another does not: the
/// WAL the earlier lanes wrote would otherwise start one in the middle of a random lane.
async fn checkpoint(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}

/// CPU time spent by this process (and its reaped children: pgbench) and by the
/// benchmark's Postgres cluster, from `/proc`. Per-item CPU cost is what the lanes
/// compare when the machine is shared: throughput moves with the load of other
/// programs, CPU microseconds per activity much less.
struct CpuMeter {
    postmaster: Option<u32>,
    start: (f64, f64),
}

impl CpuMeter {
    fn new(cluster: &Cluster) -> Self {
        let postmaster = std::fs::read_to_string(cluster.data_dir.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
        let mut m = Self {
            postmaster,
            start: (0.0, 0.0),
        };
        m.restart();
        m
    }

    fn restart(&mut self) {
        self.start = self.now();
    }

    /// (this process, Postgres) CPU seconds since `restart`.
    fn used(&self) -> (f64, f64) {
        let now = self.now();
        (now.0 - self.start.0, now.1 - self.start.1)
    }

    fn now(&self) -> (f64, f64) {
        // stat fields after the command: state=0, ppid=1, utime=11, stime=12,
        // cutime=13, cstime=14 (clock ticks; 100 per second on Linux).
        fn fields(pid: &str) -> Option<Vec<u64>> {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let rest = &s[s.rfind(')')? + 2..];
            Some(
                rest.split_whitespace()
                    .map(|f| f.parse().unwrap_or(0))
                    .collect(),
            )
        }
        let secs = |f: &[u64], idx: &[usize]| idx.iter().map(|i| f[*i]).sum::<u64>() as f64 / 100.0;
        let me = fields("self")
            .map(|f| secs(&f, &[11, 12, 13, 14]))
            .unwrap_or(0.0);
        let Some(pm) = self.postmaster else {
            return (me, f64::NAN);
        };
        // Exited backends are counted in the postmaster's cutime/cstime.
        let mut pg = fields(&pm.to_string())
            .map(|f| secs(&f, &[11, 12, 13, 14]))
            .unwrap_or(0.0);
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if let Some(f) = fields(&name) {
                if f.len() > 14 && f[1] == pm as u64 {
                    pg += secs(&f, &[11, 12]);
                }
            }
        }
        (me, pg)
    }

    /// Pushes the lane and its CPU cost per item (`items` done since `restart`).
    fn lane(
        &mut self,
        lanes: &mut Vec<Lane>,
        name: &'static str,
        rate: f64,
        items: f64,
        unit: &'static str,
    ) {
        let used = self.used();
        lanes.push(Lane {
            name: name.into(),
            value: rate,
            unit,
        });
        self.push_usage(lanes, name, used, items);
    }

    fn push_usage(&self, lanes: &mut Vec<Lane>, name: &'static str, used: (f64, f64), items: f64) {
        let per = |s: f64| s * 1e6 / items.max(1.0);
        lanes.push(Lane {
            name: format!("{name}.cpu_client"),
            value: per(used.0),
            unit: "cpu µs/item",
        });
        lanes.push(Lane {
            name: format!("{name}.cpu_postgres"),
            value: per(used.1),
            unit: "cpu µs/item",
        });
    }
}

async fn latency(
    pool: &PgPool,
    client: &Client,
    rate: f64,
    secs: Duration,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let queue = "bench-latency";
    let (shutdown, h) = bench_worker(pool, queue, 64);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let commits = |pool: PgPool| async move {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&pool)
        .await
    };
    // pg_stat counters are flushed lazily; force it so deltas are exact.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(pool)
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c0 = commits(pool.clone()).await?;
    let total = (rate * secs.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    // 16 enqueuers share the offered rate; each sends on its own fixed schedule.
    let per = 16usize;
    let mut hs = Vec::new();
    let start = tokio::time::Instant::now();
    for k in 0..per {
        let c = client.clone();
        hs.push(tokio::spawn(async move {
            let mut i = k;
            while i < total {
                tokio::time::sleep_until(start + interval.mul_f64(i as f64)).await;
                c.enqueue(&EnqueueRequest::new(builtin::NOOP, json!({})).queue(queue))
                    .await?;
                i += per;
            }
            Ok::<_, highway_workflows::Error>(())
        }));
    }
    for h in hs {
        h.await??;
    }
    drained(pool, queue, Duration::from_millis(20)).await?;
    shutdown.now();
    h.await?;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let c1 = commits(pool.clone()).await?;
    let row: (Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.99) WITHIN GROUP (ORDER BY d), \
                percentile_cont(0.999) WITHIN GROUP (ORDER BY d) \
         FROM (SELECT EXTRACT(EPOCH FROM started_at - created_at) * 1000 AS d FROM highway.activities WHERE queue = $1) t",
    )
    .bind(queue)
    .fetch_one(pool)
    .await?;
    // Commits include the probes of this function (a handful) and the worker's heartbeats.
    let tx_per = (c1 - c0) as f64 / total.max(1) as f64;
    Ok((
        row.0.unwrap_or(f64::NAN),
        row.1.unwrap_or(f64::NAN),
        row.2.unwrap_or(f64::NAN),
        tx_per,
    ))
}
