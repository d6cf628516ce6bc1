//! Test harness shared by the integration tests: a fresh migrated database per test
//! (cloned from a template), the `highway` binary as a child process (so tests can
//! `kill -9` it), and polling helpers with deadlines instead of sleeps.
//!
//! The Postgres cluster comes from `HIGHWAY_TEST_DATABASE_URL` (an admin URL to the
//! `postgres` database of a private cluster), which `scripts/test.sh` starts.

use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use std::future::Future;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod docker;
pub mod fault_proxy;
pub mod proxy;

const TEMPLATE: &str = "highway_test_template";

/// The admin URL of the test cluster, or a panic telling how to get one.
pub fn admin_url() -> String {
    std::env::var("HIGHWAY_TEST_DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "HIGHWAY_TEST_DATABASE_URL is not set: run the tests with ./scripts/test.sh, \
             which installs and starts a private Postgres cluster"
        )
    })
}

fn url_for(db: &str) -> String {
    let admin = admin_url();
    let (base, _) = admin
        .rsplit_once('/')
        .expect("admin URL has a database path");
    format!("{base}/{db}")
}

/// Creates the migrated template once per test process.
fn template() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url())
                    .await
                    .expect("connect to test cluster");
                // A stale template from an older schema would hide migration bugs: rebuild.
                sqlx::query(&format!("DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                sqlx::query(&format!("CREATE DATABASE {TEMPLATE}"))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                let mut conn = PgConnection::connect(&url_for(TEMPLATE)).await.unwrap();
                highway_worker::db::MIGRATOR
                    .run(&mut conn)
                    .await
                    .expect("migrations apply");
                conn.close().await.unwrap();
            });
        })
        .join()
        .expect("template creation");
    });
    TEMPLATE
}

/// A fresh database for one test.
#[derive(Debug)]
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_max_connections(20).await
    }

    pub async fn with_max_connections(max: u32) -> Self {
        let tmpl = template();
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&admin_url())
            .await
            .expect("connect to test cluster");
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {tmpl}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = url_for(&name);
        let pool = PgPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await
            .expect("connect to test database");
        // A clone of the template carries the template's deployment identity: every test
        // database gets its own, so no test's collector can see another test's
        // containers as its own.
        sqlx::query("UPDATE highway.settings SET value = gen_random_uuid()::text WHERE name = 'deployment_id'")
            .execute(&pool)
            .await
            .expect("give the test database its own deployment identity");
        Self { pool, url, name }
    }

    /// A pool on the cluster's `postgres` database (to terminate backends, create databases).
    pub async fn admin_pool() -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect(&admin_url())
            .await
            .expect("connect to test cluster")
    }

    /// This database's deployment identity (the `highway.deployment_id` label of the
    /// containers its workers create).
    pub async fn deployment_id(&self) -> uuid::Uuid {
        highway_worker::db::settings::deployment_id(&self.pool)
            .await
            .expect("deployment identity")
    }

    pub fn client(&self) -> highway_workflows::Client {
        highway_workflows::Client::new(self.pool.clone())
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(10);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_millis(200));
    }
}

/// Path of the `highway` binary, built once per test process.
pub fn highway_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "highway-worker", "--bin", "highway"])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the highway binary failed");
        // target/debug/deps/it-xxxx → target/debug/highway
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().unwrap().parent().unwrap().join("highway");
        assert!(bin.exists(), "{} missing after build", bin.display());
        bin
    })
    .clone()
}

/// A `highway` child process, killed (SIGKILL) on drop if still running.
#[derive(Debug)]
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Starts `highway ARGS` with DATABASE_URL set and the given extra environment.
    pub fn spawn(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(highway_bin());
        cmd.args(args)
            .env("DATABASE_URL", db_url)
            .env(
                "RUST_LOG",
                std::env::var("HIGHWAY_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self {
            child: cmd.spawn().expect("spawn highway"),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        let rc = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill");
        assert!(rc.success(), "kill -{sig} {}", self.pid());
    }

    /// Waits for exit up to `timeout`; returns the exit code (None if killed by a signal).
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st.code();
            }
            if Instant::now() >= deadline {
                panic!("process {} did not exit within {timeout:?}", self.pid());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An in-process worker for tests: its shutdown handle and its join handle.
#[derive(Debug)]
pub struct TestWorker {
    pub id: uuid::Uuid,
    pub shutdown: highway_worker::executor::Shutdown,
    pub handle: tokio::task::JoinHandle<highway_worker::executor::WorkerSummary>,
}

impl TestWorker {
    /// Starts a worker with the built-in kinds plus whatever `extra` registers.
    pub fn start(
        pool: &PgPool,
        opts: highway_worker::executor::WorkerOptions,
        extra: impl FnOnce(&mut highway_worker::executor::Registry),
    ) -> Self {
        let mut registry = highway_worker::cli::default_registry();
        extra(&mut registry);
        let id = opts.id;
        let shutdown = highway_worker::executor::Shutdown::new();
        let w = highway_worker::executor::Worker::new(opts, pool.clone(), pool.clone(), registry);
        let handle = tokio::spawn(w.run(shutdown.clone()));
        Self {
            id,
            shutdown,
            handle,
        }
    }

    /// Fast timings for tests: short polls, leases and rescue passes.
    pub fn fast_options(concurrency: usize) -> highway_worker::executor::WorkerOptions {
        let mut o =
            highway_worker::executor::WorkerOptions::new(vec!["default".into()], concurrency);
        o.poll_interval = Duration::from_millis(100);
        o.lease = Duration::from_secs(3);
        o.heartbeat_interval = Duration::from_millis(500);
        o.rescue_interval = Duration::from_millis(200);
        o
    }

    /// Soft then hard shutdown; returns the summary.
    pub async fn stop(self) -> highway_worker::executor::WorkerSummary {
        self.shutdown.now();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("worker stops within 60s")
            .expect("worker task")
    }
}

/// Reads an activity's status and attempt.
pub async fn status_of(pool: &PgPool, id: uuid::Uuid) -> (String, i32) {
    sqlx::query_as("SELECT status, attempt FROM highway.activities WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("activity row")
}

/// `pg_ctl stop -m immediate` on a test's own private cluster: a crash, not a clean
/// stop. As root the cluster runs as `postgres` (initdb refuses root), so pg_ctl does too.
pub fn crash_postgres(cluster: &highway_worker::db::embedded::Cluster) {
    use std::os::unix::fs::MetadataExt;
    let is_root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let pg_ctl = cluster.bindir.join("pg_ctl");
    let mut cmd = if is_root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_ctl);
        c
    } else {
        Command::new(pg_ctl)
    };
    let st = cmd
        .arg("-D")
        .arg(&cluster.data_dir)
        .args(["-m", "immediate", "-w", "stop"])
        .stdout(Stdio::null())
        .status()
        .expect("run pg_ctl");
    assert!(st.success(), "pg_ctl stop -m immediate failed");
}

/// Standard base64 with padding (what `docker login` writes and what a leak of a
/// credential would look like in encoded form).
pub fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}
