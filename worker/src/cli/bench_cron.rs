//! `highway bench cron`: the durable cron figure. Starts a private Postgres cluster (temp
//! dir), creates S schedules firing every second for D seconds (their `start_at`/`end_at`
//! bound the run exactly), runs N independent schedulers at once (each its own pool, as
//! separate workers would) plus a no-op worker, and reports the lateness of fires
//! (enqueue time minus nominal time: `schedule_fires.recorded_at`, written by
//! `clock_timestamp()` in the enqueue's transaction) p50/p99/max, duplicates and misses.

use crate::db::{self, embedded::Cluster, PoolOptions};
use crate::executor::{builtin, Registry, Shutdown, Worker, WorkerOptions};
use crate::scheduler::{OverlapPolicy, ScheduleClient, ScheduleSpec, Scheduler, SchedulerOptions};
use highway_workflows::schedule::{ActivityTemplate, ScheduleLimits};
use serde_json::json;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(clap::Args, Debug)]
pub struct CronBench {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Schedules, each firing every second.
    #[arg(long, default_value_t = 100)]
    pub schedules: usize,
    /// Seconds of firing.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Schedulers running at once (no leader; each its own pool).
    #[arg(long, default_value_t = 2)]
    pub schedulers: usize,
    /// Do not run a worker draining the fired no-op activities.
    #[arg(long)]
    pub no_worker: bool,
}

/// The figures.
#[derive(Debug, serde::Serialize)]
struct Figures {
    schedules: usize,
    seconds: u64,
    schedulers: usize,
    expected_fires: i64,
    fired: i64,
    missed: i64,
    duplicates: i64,
    lateness_p50_ms: f64,
    lateness_p99_ms: f64,
    lateness_max_ms: f64,
    contended_ticks: u64,
}

pub async fn run(b: CronBench) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("highway-bench-cron-{}", std::process::id()));
    let d2 = dir.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&d2)).await??;
    let res = measure(&b, &cluster.url).await;
    let stop = tokio::task::spawn_blocking(move || cluster.stop()).await;
    std::fs::remove_dir_all(&dir).ok();
    stop??;
    let f = res?;
    if b.json {
        println!("{}", json!({"bench": "cron", "figures": f}));
    } else {
        println!(
            "{} schedules x every 1s x {}s, {} schedulers",
            f.schedules, f.seconds, f.schedulers
        );
        println!("{:<24} {:>12}", "figure", "value");
        for (k, v) in [
            ("expected_fires", f.expected_fires as f64),
            ("fired", f.fired as f64),
            ("missed", f.missed as f64),
            ("duplicates", f.duplicates as f64),
            ("lateness_p50_ms", f.lateness_p50_ms),
            ("lateness_p99_ms", f.lateness_p99_ms),
            ("lateness_max_ms", f.lateness_max_ms),
            ("contended_ticks", f.contended_ticks as f64),
        ] {
            println!("{k:<24} {v:>12.1}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn measure(b: &CronBench, url: &str) -> anyhow::Result<Figures> {
    let pool = db::connect(
        url,
        &PoolOptions {
            max_connections: 8,
            ..Default::default()
        },
    )
    .await?;
    db::migrate(&pool).await?;
    let client = ScheduleClient::new(pool.clone());
    let now = client.db_now().await?;
    // Start on a whole second a little ahead, so every scheduler is up by then.
    let start = chrono::DateTime::from_timestamp(now.timestamp() + 3, 0).unwrap_or(now);
    let end =
        start + chrono::Duration::seconds(b.seconds as i64) - chrono::Duration::milliseconds(1);
    for i in 0..b.schedules {
        let mut spec = ScheduleSpec::new(
            format!("bench-{i:04}"),
            "* * * * * *",
            ActivityTemplate::new(builtin::NOOP, json!({"i": i})),
        );
        // The figure is the scheduler's: a slow drain must not turn into skips.
        spec.overlap = OverlapPolicy::Allow;
        spec.start_at = Some(start);
        spec.end_at = Some(end);
        client.create(&spec, &ScheduleLimits::default()).await?;
    }

    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    let mut handles = Vec::new();
    for n in 0..b.schedulers.max(1) {
        let p = db::connect(
            url,
            &PoolOptions {
                max_connections: 10,
                application_name: format!("bench-scheduler-{n}"),
                ..Default::default()
            },
        )
        .await?;
        let s = Scheduler::with_database_clock(p.clone(), SchedulerOptions::default());
        let stop = stop.clone();
        handles.push(tracker.spawn(async move {
            let total = s.run(stop).await;
            p.close().await;
            total
        }));
    }
    let shutdown = Shutdown::new();
    let worker = (!b.no_worker).then(|| {
        let mut registry = Registry::new();
        builtin::register(&mut registry);
        let opts = WorkerOptions::new(vec!["default".into()], 16);
        let w = Worker::new(opts, pool.clone(), pool.clone(), registry);
        tracker.spawn(w.run(shutdown.clone()))
    });

    let until = end + chrono::Duration::seconds(2);
    loop {
        let now = client.db_now().await?;
        if now >= until {
            break;
        }
        tokio::time::sleep(
            (until - now)
                .to_std()
                .unwrap_or_default()
                .min(Duration::from_secs(1)),
        )
        .await;
    }
    stop.cancel();
    shutdown.now();
    let mut contended = 0;
    for h in handles {
        contended += h.await?.contended;
    }
    if let Some(w) = worker {
        w.await?;
    }
    tracker.close();
    tracker.wait().await;

    let expected = (b.schedules as i64) * (b.seconds as i64);
    let (fired, p50, p99, max): (i64, Option<f64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "SELECT count(*), \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY l), \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY l), \
                max(l) \
         FROM (SELECT EXTRACT(EPOCH FROM recorded_at - fire_at)::float8 * 1000 AS l \
               FROM highway.schedule_fires WHERE outcome = 'fired' AND fire_at BETWEEN $1 AND $2) f",
    )
    .bind(start)
    .bind(end)
    .fetch_one(&pool)
    .await?;
    // Two activities for one slot would need two keys or a broken unique index; count
    // both ways: distinct keys, and activities against fired records.
    let (acts, keys): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM highway.activities \
         WHERE idempotency_key LIKE 'schedule:%'",
    )
    .fetch_one(&pool)
    .await?;
    let duplicates = (acts - keys) + (acts - fired).max(0);
    pool.close().await;
    Ok(Figures {
        schedules: b.schedules,
        seconds: b.seconds,
        schedulers: b.schedulers.max(1),
        expected_fires: expected,
        fired,
        missed: expected - fired,
        duplicates,
        lateness_p50_ms: p50.unwrap_or(f64::NAN),
        lateness_p99_ms: p99.unwrap_or(f64::NAN),
        lateness_max_ms: max.unwrap_or(f64::NAN),
        contended_ticks: contended,
    })
}
