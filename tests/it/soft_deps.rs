//! Docker and Postgres as soft dependencies, with the fault proxy between the worker and
//! the Docker socket (the machine's daemon is never stopped) and a private Postgres
//! cluster for restarts (the shared test cluster is never stopped):
//! R12 (socket refuses), R13 (socket hangs, a run in flight), R15 (create's reply lost),
//! start with Docker unreachable (child process: `/health`, log fields, recovery),
//! max retries exhausted, `HIGHWAY_DOCKER_OPTIONAL=false`, R8 (Postgres restart).
//! Every test uses its own deployment name and ends with zero containers of its own.

use highway_tests::docker::{assert_no_containers, docker, ensure_test_image, TEST_IMAGE};
use highway_tests::fault_proxy::{FaultProxy, Mode};
use highway_tests::{crash_postgres, eventually, highway_bin, Process, TestDb, TestWorker};
use highway_worker::config::docker::{Availability, DockerConfig};
use highway_worker::docker::breaker::Breaker;
use highway_worker::docker::client::{self, ClientSettings, DockerClient};
use highway_worker::docker::monitor::{DockerMonitor, MonitorSettings, MonitorSummary};
use highway_worker::docker::runtime::RunSettings;
use highway_worker::docker::{self as hdocker, DockerRuntime};
use highway_worker::health::{Circuit, Health, Status};
use highway_workflows::{EnqueueRequest, HumanDuration};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

fn deployment() -> String {
    format!("sd-{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("highway-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

/// Fast probing for tests: the documented shape, shorter delays.
fn fast_availability() -> Availability {
    Availability {
        retry_base_delay_ms: 100,
        retry_max_delay_ms: 500,
        retry_jitter_ms: 50,
        probe_interval_ms: 500,
        ..Availability::default()
    }
}

/// A docker runtime whose client goes through `proxy`, its monitor running, and a
/// worker claiming from the test database.
struct Rig {
    db: TestDb,
    rt: Arc<DockerRuntime>,
    health: Health,
    breaker: Arc<Breaker>,
    stop: CancellationToken,
    monitor: Option<tokio::task::JoinHandle<MonitorSummary>>,
    worker: Option<TestWorker>,
    dir: PathBuf,
    deployment: String,
}

impl Drop for Rig {
    /// A failed test must not leak its containers or its directory into the machine.
    fn drop(&mut self) {
        highway_tests::docker::remove_leftovers(&self.deployment, None);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Rig {
    async fn new(proxy: &FaultProxy, call_timeout: Duration, liveness: Duration) -> Self {
        ensure_test_image();
        let db = TestDb::new().await;
        let dir = temp_dir("soft-deps");
        let opts = TestWorker::fast_options(2);
        let deployment = deployment();
        let config = DockerConfig {
            deployment: deployment.clone(),
            availability: fast_availability(),
            ..DockerConfig::default()
        };
        let client = DockerClient::new(ClientSettings {
            host: proxy.url(),
            call_timeout,
            ..ClientSettings::default()
        });
        let mut settings = RunSettings::from_config(&config);
        settings.liveness_interval = liveness;
        let rt = Arc::new(
            DockerRuntime::with_client(config, client, db.pool.clone(), opts.id, dir.clone())
                .with_settings(settings),
        );
        let health = Health::default();
        let mut m = DockerMonitor::for_runtime(
            rt.clone(),
            health.docker.clone(),
            MonitorSettings::from_config(&rt.config.availability),
        )
        .expect("first monitor of this client");
        let breaker = m.breaker();
        let first = m.start(true).await.expect("optional docker never fails");
        let stop = CancellationToken::new();
        let monitor = tokio::spawn(m.run(Some(first), stop.clone()));
        let reg = rt.clone();
        let worker = TestWorker::start(&db.pool, opts, move |r| hdocker::register(r, reg));
        Self {
            db,
            rt,
            health,
            breaker,
            stop,
            monitor: Some(monitor),
            worker: Some(worker),
            dir,
            deployment,
        }
    }

    async fn enqueue(&self, command: &[&str]) -> Uuid {
        let mut req = EnqueueRequest::new(
            highway_workflows::docker::KIND,
            json!({"image": TEST_IMAGE, "command": command}),
        );
        req.retry_policy.initial_interval = HumanDuration::from_millis(100);
        req.retry_policy.maximum_attempts = 2;
        self.db.client().enqueue(&req).await.expect("enqueue").id
    }

    async fn row(&self, id: Uuid) -> (String, i32, i32) {
        sqlx::query_as(
            "SELECT status, attempt, uncounted_attempts FROM highway.activities WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .expect("activity row")
    }

    async fn wait_status(&self, id: Uuid, status: &str) -> (String, i32, i32) {
        eventually(&format!("activity {id} {status}"), WAIT, || async {
            let r = self.row(id).await;
            (r.0 == status).then_some(r)
        })
        .await
    }

    async fn wait_docker(&self, want: Status) {
        eventually(&format!("docker {want:?}"), WAIT, || async {
            (self.health.docker.snapshot().status == want).then_some(())
        })
        .await
    }

    async fn finish(mut self) -> MonitorSummary {
        if let Some(w) = self.worker.take() {
            w.stop().await;
        }
        self.rt.drain().await;
        self.stop.cancel();
        let monitor = self.monitor.take().expect("finished once");
        monitor.await.expect("monitor task")
    }
}

/// R12: the socket refuses. The circuit opens, `/health`'s snapshot says down, docker
/// activities stay queued with no attempt burned; passing again recovers by itself and
/// the queued activity runs.
#[tokio::test]
async fn r12_socket_refuses_then_recovers() {
    let docker = docker().await;
    let dir = temp_dir("proxy");
    let proxy = FaultProxy::docker(&dir).await.expect("proxy");
    let rig = Rig::new(&proxy, Duration::from_secs(2), Duration::from_secs(1)).await;
    rig.wait_docker(Status::Up).await;

    proxy.set_mode(Mode::Refuse);
    rig.wait_docker(Status::Down).await;
    // The monitor keeps probing while the daemon is down, and each probe half-opens the
    // circuit while it runs (and fails); between probes the circuit is open.
    eventually("circuit open between probes", WAIT, || async {
        (rig.breaker.circuit() == Circuit::Open).then_some(())
    })
    .await;
    assert!(!rig.rt.is_ready());
    // Calls now fail fast without reaching the daemon.
    let before = proxy.accepted();
    let t0 = Instant::now();
    let e = rig
        .rt
        .client
        .inspect_container("whatever")
        .await
        .unwrap_err();
    assert!(matches!(e, client::Error::Rejected { .. }), "{e}");
    assert!(t0.elapsed() < Duration::from_millis(100));
    assert!(
        proxy.accepted() - before <= 1,
        "a rejected call dialed the daemon"
    );

    let a = rig.enqueue(&["sh", "-c", "echo hi"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rig.row(a).await,
        ("scheduled".into(), 0, 0),
        "no attempt burned"
    );
    let snap = rig.health.docker.snapshot();
    assert_eq!(snap.status, Status::Down);
    assert!(snap.consecutive_failures >= 2, "{snap:?}");
    assert!(snap.last_error.is_some() && snap.next_retry_at.is_some());
    let json = serde_json::to_value(&snap).unwrap();
    assert_eq!(json["status"], "down");
    assert!(
        json["circuit"] == "open" || json["circuit"] == "half_open",
        "{json}"
    );

    proxy.set_mode(Mode::Pass);
    rig.wait_docker(Status::Up).await;
    let (_, attempt, uncounted) = rig.wait_status(a, "succeeded").await;
    assert_eq!((attempt, uncounted), (1, 0));
    assert_eq!(rig.breaker.circuit(), Circuit::Closed);
    let summary = rig.finish().await;
    assert!(
        summary.recoveries >= 2 && summary.failures >= 1,
        "{summary:?}"
    );
    assert_no_containers(&docker, a).await;
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// R13: the socket hangs. Each call times out within its own deadline (seconds, not
/// bollard's 120 s), the circuit opens and later calls fail at once; a run in flight
/// ends as infrastructure (no attempt counted), and once the daemon answers again the
/// retry removes the old container first and completes: nothing stuck, nothing leaked.
#[tokio::test]
async fn r13_socket_hangs_calls_time_out_and_a_running_attempt_is_retried_uncounted() {
    let docker = docker().await;
    let dir = temp_dir("proxy");
    let proxy = FaultProxy::docker(&dir).await.expect("proxy");
    let rig = Rig::new(&proxy, Duration::from_secs(2), Duration::from_secs(1)).await;
    rig.wait_docker(Status::Up).await;

    let a = rig.enqueue(&["sh", "-c", "sleep 3; echo done"]).await;
    highway_tests::docker::wait_running(&docker, a, WAIT).await;
    proxy.set_mode(Mode::Blackhole);
    proxy.sever();

    // A direct call: the 2 s call deadline, not 120 s.
    let t0 = Instant::now();
    let e = rig
        .rt
        .client
        .inspect_container("whatever")
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            client::Error::Timeout { .. } | client::Error::Rejected { .. }
        ),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    eventually("circuit open", WAIT, || async {
        (rig.breaker.circuit() == Circuit::Open).then_some(())
    })
    .await;
    rig.wait_docker(Status::Down).await;
    let t0 = Instant::now();
    let e = rig.rt.client.list_by_labels(&[]).await.unwrap_err();
    assert!(
        matches!(
            e,
            client::Error::Rejected { .. } | client::Error::Timeout { .. }
        ),
        "{e}"
    );
    assert!(t0.elapsed() < Duration::from_secs(3));

    // The attempt in flight gives up as infrastructure: back to scheduled, uncounted.
    let r = eventually("attempt 1 released as infrastructure", WAIT, || async {
        let r = rig.row(a).await;
        (r.0 == "scheduled" && r.2 == 1).then_some(r)
    })
    .await;
    assert_eq!(r.1, 1);
    // Not claimed again while the daemon hangs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig.row(a).await.1, 1);

    proxy.set_mode(Mode::Pass);
    proxy.sever();
    rig.wait_docker(Status::Up).await;
    let (_, attempt, uncounted) = rig.wait_status(a, "succeeded").await;
    assert_eq!((attempt, uncounted), (2, 1));
    rig.finish().await;
    assert_no_containers(&docker, a).await;
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// R15: create succeeds on the daemon but its reply is lost. The retried create hits 409
/// on the deterministic name and adopts the container: one container for the attempt.
#[tokio::test]
async fn r15_lost_create_reply_is_adopted_one_container_per_attempt() {
    let docker = docker().await;
    let dir = temp_dir("proxy");
    let proxy = FaultProxy::docker(&dir).await.expect("proxy");
    let url = proxy.url();
    let dep = deployment();
    let h = highway_tests::docker::DockerHarness::with(move |c, _| {
        c.host = url;
        c.deployment = dep;
    })
    .await;
    let a = h.activity().await;
    proxy.set_mode(Mode::DropResponseOnce("/containers/create".into()));
    let out = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo adopted"]}),
        )
        .await
        .expect("the run adopts its container and succeeds");
    assert_eq!(proxy.dropped_responses(), 1, "the create reply was dropped");
    assert_eq!(out["stdout"], "adopted\n");
    let warnings = out["warnings"].to_string();
    assert!(warnings.contains("adopted the existing container"), "{out}");
    let rows = highway_worker::docker::tracking::rows_of_activity(&h.db.pool, a)
        .await
        .unwrap();
    let ids: std::collections::BTreeSet<_> = rows.iter().map(|r| r.container_id.clone()).collect();
    assert_eq!(ids.len(), 1, "one container for the attempt: {rows:?}");
    assert_eq!(
        ids.into_iter().next().unwrap(),
        out["container_id"].as_str().unwrap()
    );
    assert_no_containers(&docker, a).await;
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ child processes

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// `highway worker` with JSON logs (info) written to `log`.
fn spawn_worker(db_url: &str, env: &[(&str, String)], log: &Path) -> Process {
    let mut cmd = Command::new(highway_bin());
    cmd.arg("worker")
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "info,sqlx=warn")
        .env("HIGHWAY_LOG_FORMAT", "json")
        .env("HIGHWAY_POLL_INTERVAL", "100ms")
        .env_remove("DOCKER_HOST")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Process {
        child: cmd.spawn().expect("spawn highway"),
    }
}

fn docker_env(
    proxy_url: &str,
    port: u16,
    dir: &Path,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("HIGHWAY_DOCKER_HOST", proxy_url.to_string()),
        ("HIGHWAY_LISTEN", format!("127.0.0.1:{port}")),
        ("HIGHWAY_DEPLOYMENT", deployment()),
        (
            "HIGHWAY_ARTIFACT_DIR",
            dir.join("artifacts").display().to_string(),
        ),
        ("HIGHWAY_STATE_DIR", dir.join("state").display().to_string()),
        ("HIGHWAY_DOCKER_RETRY_BASE_DELAY_MS", "100".to_string()),
        ("HIGHWAY_DOCKER_RETRY_MAX_DELAY_MS", "400".to_string()),
        ("HIGHWAY_DOCKER_RETRY_JITTER_MS", "50".to_string()),
        ("HIGHWAY_DOCKER_PROBE_INTERVAL_MS", "500".to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

/// `GET path` on the child's HTTP server: (status, JSON body). `None` while it is not
/// listening yet.
async fn http_get(port: u16, path: &str) -> Option<(u16, Value)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

async fn health_of(port: u16) -> Value {
    eventually("the child's /health answers", WAIT, || async {
        http_get(port, "/health").await.map(|(status, body)| {
            assert_eq!(status, 200, "/health stays 200: {body}");
            body
        })
    })
    .await
}

async fn wait_health(port: u16, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(what, WAIT, || async {
        let h = health_of(port).await;
        check(&h).then_some(h)
    })
    .await
}

fn log_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn alive(p: &mut Process) -> bool {
    matches!(p.child.try_wait(), Ok(None))
}

/// Started with the Docker socket unreachable: the process stays up, `/health` is 200
/// with docker down, docker activities stay queued, every failure is logged with the
/// retry fields; once the socket passes, docker is up without a restart and the queued
/// activity runs. SIGTERM still exits 0.
#[tokio::test]
async fn start_with_docker_unreachable_recovers_without_restart() {
    let docker = docker().await;
    ensure_test_image();
    let db = TestDb::new().await;
    let dir = temp_dir("child");
    let proxy = FaultProxy::docker(&dir).await.expect("proxy");
    proxy.set_mode(Mode::Refuse);
    let port = free_port();
    let log = dir.join("worker.log");
    let mut p = spawn_worker(&db.url, &docker_env(&proxy.url(), port, &dir, &[]), &log);

    let h = wait_health(port, "docker down in /health", |h| {
        h["dependencies"]["docker"]["status"] == "down"
    })
    .await;
    assert_eq!(h["status"], "degraded", "{h}");
    let d = &h["dependencies"]["docker"];
    assert!(
        d["last_error"].is_string() && d["next_retry_at"].is_string(),
        "{h}"
    );
    assert!(d["consecutive_failures"].as_u64().unwrap() >= 1, "{h}");
    // Open, or half-open while a probe is in flight.
    assert!(d["circuit"] == "open" || d["circuit"] == "half_open", "{h}");
    assert!(
        !h.to_string().contains(&proxy.url()),
        "/health names no hosts or sockets: {h}"
    );

    let a = db
        .client()
        .enqueue(&EnqueueRequest::new(
            highway_workflows::docker::KIND,
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo back"]}),
        ))
        .await
        .unwrap()
        .id;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        highway_tests::status_of(&db.pool, a).await,
        ("scheduled".into(), 0)
    );
    assert!(alive(&mut p), "the worker stays up without docker");

    // Every failed probe is logged with the retry fields.
    let failures: Vec<Value> = log_lines(&log)
        .into_iter()
        .filter(|l| l["fields"]["retry_in_ms"].is_u64())
        .collect();
    assert!(failures.len() >= 2, "{failures:?}");
    let f = &failures[0]["fields"];
    assert_eq!(f["dependency"], "docker", "{f}");
    assert_eq!(f["docker_host"], proxy.url(), "{f}");
    assert!(f["error_code"].is_string(), "{f}");
    assert!(
        f["message"].as_str().unwrap().contains("unreachable"),
        "{f}"
    );
    assert!(f["next_retry_at"].is_string(), "{f}");
    assert!(f["consecutive_failures"].is_u64(), "{f}");

    proxy.set_mode(Mode::Pass);
    wait_health(port, "docker up again", |h| {
        h["dependencies"]["docker"]["status"] == "up"
    })
    .await;
    eventually("the queued activity ran", WAIT, || async {
        let (s, attempt) = highway_tests::status_of(&db.pool, a).await;
        (s == "succeeded").then_some(attempt)
    })
    .await;
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    assert_no_containers(&docker, a).await;
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// With `HIGHWAY_DOCKER_MAX_RETRIES`, the monitor gives up: docker stays down in
/// `/health` (`retries_exhausted`), the probes stop, and the process does not exit.
#[tokio::test]
async fn max_retries_exhausted_stays_down_without_exiting() {
    let db = TestDb::new().await;
    let dir = temp_dir("child");
    let proxy = FaultProxy::docker(&dir).await.expect("proxy");
    proxy.set_mode(Mode::Refuse);
    let port = free_port();
    let log = dir.join("worker.log");
    let env = docker_env(
        &proxy.url(),
        port,
        &dir,
        &[("HIGHWAY_DOCKER_MAX_RETRIES", "2")],
    );
    let mut p = spawn_worker(&db.url, &env, &log);
    let h = wait_health(port, "retries exhausted", |h| {
        h["dependencies"]["docker"]["retries_exhausted"] == true
    })
    .await;
    assert_eq!(h["dependencies"]["docker"]["status"], "down", "{h}");
    let dialed = proxy.accepted();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        alive(&mut p),
        "the worker does not exit when docker retries run out"
    );
    assert_eq!(proxy.accepted(), dialed, "no probes after giving up");
    assert!(
        log_lines(&log).iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("giving up"))),
        "the give-up is logged"
    );
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    proxy.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `HIGHWAY_DOCKER_OPTIONAL=false` restores fail-fast: no daemon at start, exit non-zero
/// with a message naming the setting and the socket.
#[tokio::test]
async fn docker_required_fails_fast_at_start() {
    let db = TestDb::new().await;
    let dir = temp_dir("child");
    let sock = dir.join("no-daemon-here.sock");
    let port = free_port();
    let log = dir.join("worker.log");
    let env = docker_env(
        &format!("unix://{}", sock.display()),
        port,
        &dir,
        &[("HIGHWAY_DOCKER_OPTIONAL", "false")],
    );
    let mut p = spawn_worker(&db.url, &env, &log);
    let t0 = Instant::now();
    let code = p.wait_exit(WAIT).await;
    assert!(code.is_some_and(|c| c != 0), "exit code {code:?}");
    assert!(t0.elapsed() < Duration::from_secs(30));
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(out.contains("HIGHWAY_DOCKER_OPTIONAL=false"), "{out}");
    assert!(out.contains("no-daemon-here.sock"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ Postgres

/// R8 for the worker: Postgres crashes under load and comes back. The worker process
/// survives (no restart), `/health` shows postgres down then up, the pool reconnects,
/// and every acknowledged enqueue — before and after — completes.
#[tokio::test]
async fn r8_worker_survives_a_postgres_crash_and_finishes_acknowledged_work() {
    use highway_worker::db::embedded::Cluster;
    let state = temp_dir("r8-pg");
    let s = state.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&s))
        .await
        .unwrap()
        .expect("private cluster starts");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(&cluster.url)
        .unwrap();
    let client = highway_workflows::Client::new(pool.clone());
    let dir = temp_dir("child");
    let port = free_port();
    let log = dir.join("worker.log");
    let env = vec![
        ("HIGHWAY_LISTEN", format!("127.0.0.1:{port}")),
        ("HIGHWAY_DEPLOYMENT", deployment()),
        (
            "HIGHWAY_ARTIFACT_DIR",
            dir.join("artifacts").display().to_string(),
        ),
        ("HIGHWAY_LEASE", "10s".to_string()),
        ("HIGHWAY_RESCUE_INTERVAL", "500ms".to_string()),
    ];
    let mut p = spawn_worker(&cluster.url, &env, &log);
    wait_health(port, "postgres up", |h| {
        h["dependencies"]["postgres"]["status"] == "up"
    })
    .await;

    let sleep =
        |ms: u64| EnqueueRequest::new("highway.sleep", json!({"duration": format!("{ms}ms")}));
    let mut acknowledged = Vec::new();
    for _ in 0..10 {
        acknowledged.push(client.enqueue(&sleep(300)).await.unwrap().id);
    }
    eventually("some work done before the crash", WAIT, || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM highway.activities WHERE status = 'succeeded'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        (n >= 2).then_some(())
    })
    .await;

    crash_postgres(&cluster);
    let h = wait_health(port, "postgres down in /health", |h| {
        h["dependencies"]["postgres"]["status"] == "down"
    })
    .await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        !h.to_string().contains("postgres://"),
        "no connection strings in /health: {h}"
    );
    // An enqueue during the outage fails (not acknowledged), quickly.
    let t0 = Instant::now();
    assert!(client.enqueue(&sleep(1)).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(alive(&mut p), "the worker survives the outage");

    let s = state.clone();
    let restarted = tokio::task::spawn_blocking(move || Cluster::start(&s))
        .await
        .unwrap()
        .expect("the cluster restarts");
    assert_eq!(
        restarted.port, cluster.port,
        "same port, so the URL still works"
    );
    wait_health(port, "postgres up again", |h| {
        h["dependencies"]["postgres"]["status"] == "up"
    })
    .await;
    for _ in 0..10 {
        let id = eventually("enqueue after the restart", WAIT, || async {
            client.enqueue(&sleep(100)).await.ok().map(|e| e.id)
        })
        .await;
        acknowledged.push(id);
    }
    eventually("every acknowledged activity succeeded", WAIT, || async {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM highway.activities WHERE id = ANY($1) AND status = 'succeeded'",
        )
        .bind(&acknowledged)
        .fetch_one(&pool)
        .await
        .ok()?;
        (done == acknowledged.len() as i64).then_some(())
    })
    .await;
    assert!(alive(&mut p), "no restart was needed");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    pool.close().await;
    let (bindir, data_dir) = (restarted.bindir.clone(), restarted.data_dir.clone());
    tokio::task::spawn_blocking(move || Cluster::stop_dir(&bindir, &data_dir))
        .await
        .unwrap()
        .expect("stop the private cluster");
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&dir);
}
