//! `/health/live` and `/health/ready` of a real `highway worker` process, as an
//! orchestrator sees them: on a private Postgres cluster of the test's own, ready turns
//! 503 naming `postgres` while the cluster is down and 200 once it is back; with
//! `HIGHWAY_DOCKER_OPTIONAL=false`, ready turns 503 naming `docker` while the socket
//! refuses (a fault proxy). Live and `/health` stay 200 throughout.

use highway_tests::fault_proxy::{FaultProxy, Mode};
use highway_tests::{crash_postgres, eventually, highway_bin, Process};
use highway_worker::db::embedded::Cluster;
use highway_worker::health::{
    POSTGRES_PROBE_INTERVAL, POSTGRES_PROBE_TIMEOUT, POSTGRES_RETRY_INTERVAL,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

/// The worker's Docker probe period while the daemon is up (set below).
const DOCKER_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// The Docker client's per-call deadline (its default), which bounds one probe.
const DOCKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Room for a loaded machine on top of the configured periods.
const SLACK: Duration = Duration::from_secs(10);
/// Start: migrations on a fresh database, then the first probes.
const START: Duration = Duration::from_secs(60);

fn temp_dir(what: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("highway-{what}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn start_cluster(state: &Path) -> Cluster {
    let s = state.to_path_buf();
    tokio::task::spawn_blocking(move || Cluster::start(&s))
        .await
        .unwrap()
        .expect("private cluster starts")
}

/// `GET path` on the child: (status, JSON body); `None` while nothing answers.
async fn get(http: &reqwest::Client, port: u16, path: &str) -> Option<(u16, Value)> {
    let resp = http
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or(Value::Null);
    Some((status, body))
}

/// Waits up to `within` for `/health/ready` to answer `status` with `body`; checks on the
/// way that live and `/health` keep answering 200, and that no answer holds a connection
/// string or the cluster's host and port.
async fn ready_becomes(
    http: &reqwest::Client,
    port: u16,
    pg_port: u16,
    status: u16,
    body: Value,
    within: Duration,
) {
    let what = format!("/health/ready {status} {body} within {within:?}");
    eventually(&what, within, || async {
        let (live, live_body) = get(http, port, "/health/live").await?;
        assert_eq!((live, &live_body), (200, &json!({"status": "live"})));
        let (health, health_body) = get(http, port, "/health").await?;
        assert_eq!(health, 200, "/health keeps answering 200: {health_body}");
        let (got, got_body) = get(http, port, "/health/ready").await?;
        for text in [health_body.to_string(), got_body.to_string()] {
            assert!(!text.contains("postgres://"), "{text}");
            assert!(!text.contains(&format!(":{pg_port}")), "{text}");
        }
        (got == status && got_body == body).then_some(())
    })
    .await;
}

/// Ready follows Postgres (and Docker, required here); live never wavers.
#[tokio::test]
async fn ready_names_the_failing_dependency_and_live_stays_up() {
    let state = temp_dir("ready-pg");
    let cluster = start_cluster(&state).await;
    let dir = temp_dir("ready-child");
    let proxy = FaultProxy::docker(&dir).await.expect("docker proxy");
    let port = free_port();
    let mut cmd = Command::new(highway_bin());
    cmd.arg("worker")
        .env("DATABASE_URL", &cluster.url)
        .env("RUST_LOG", "warn")
        .env_remove("DOCKER_HOST")
        .env("HIGHWAY_DOCKER_HOST", proxy.url())
        .env("HIGHWAY_DOCKER_OPTIONAL", "false")
        .env(
            "HIGHWAY_DOCKER_PROBE_INTERVAL_MS",
            DOCKER_PROBE_INTERVAL.as_millis().to_string(),
        )
        .env("HIGHWAY_DOCKER_RETRY_BASE_DELAY_MS", "100")
        .env("HIGHWAY_DOCKER_RETRY_MAX_DELAY_MS", "400")
        .env("HIGHWAY_DOCKER_RETRY_JITTER_MS", "50")
        .env("HIGHWAY_LISTEN", format!("127.0.0.1:{port}"))
        .env("HIGHWAY_STATE_DIR", dir.join("state"))
        .env("HIGHWAY_ARTIFACT_DIR", dir.join("artifacts"))
        .env(
            "HIGHWAY_DEPLOYMENT",
            format!("hr-{}", &Uuid::new_v4().simple().to_string()[..12]),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let mut p = Process {
        child: cmd.spawn().expect("spawn highway"),
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let ready = json!({"status": "ready", "failing": []});
    ready_becomes(&http, port, cluster.port, 200, ready.clone(), START).await;

    // Postgres down: noticed at the latest one up-interval plus one probe later, then
    // confirmed by the retries.
    crash_postgres(&cluster);
    let noticed = POSTGRES_PROBE_INTERVAL + POSTGRES_PROBE_TIMEOUT + POSTGRES_RETRY_INTERVAL;
    let pg_down = json!({"status": "not_ready", "failing": ["postgres"]});
    ready_becomes(&http, port, cluster.port, 503, pg_down, noticed + SLACK).await;
    let restarted = start_cluster(&state).await;
    assert_eq!(restarted.port, cluster.port, "same port, same URL");
    // Back within a retry, a probe that may still meet a stale connection, and another.
    let recovered = 2 * (POSTGRES_RETRY_INTERVAL + POSTGRES_PROBE_TIMEOUT);
    ready_becomes(
        &http,
        port,
        cluster.port,
        200,
        ready.clone(),
        recovered + SLACK,
    )
    .await;

    // Docker down: the socket refuses every new connection.
    proxy.set_mode(Mode::Refuse);
    let docker_down = json!({"status": "not_ready", "failing": ["docker"]});
    let noticed = DOCKER_PROBE_INTERVAL + DOCKER_CALL_TIMEOUT;
    ready_becomes(&http, port, cluster.port, 503, docker_down, noticed + SLACK).await;
    proxy.set_mode(Mode::Pass);
    // The monitor retries at most HIGHWAY_DOCKER_RETRY_MAX_DELAY_MS (+ jitter) apart.
    let recovered = Duration::from_millis(450) + DOCKER_CALL_TIMEOUT;
    ready_becomes(&http, port, cluster.port, 200, ready, recovered + SLACK).await;

    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(START).await, Some(0));
    proxy.shutdown().await;
    let (bindir, data_dir) = (restarted.bindir.clone(), restarted.data_dir.clone());
    tokio::task::spawn_blocking(move || Cluster::stop_dir(&bindir, &data_dir))
        .await
        .unwrap()
        .expect("stop the private cluster");
    let _ = std::fs::remove_dir_all(&state);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker for which Docker is optional (the default) stays ready while Docker is down:
/// its other kinds still run. `/health` says docker is down all the same.
#[tokio::test]
async fn optional_docker_down_keeps_the_worker_ready() {
    let db = highway_tests::TestDb::new().await;
    let dir = temp_dir("ready-optional");
    let port = free_port();
    let missing = dir.join("no-daemon-here.sock");
    let listen = format!("127.0.0.1:{port}");
    let docker_host = format!("unix://{}", missing.display());
    let state_dir = dir.join("state").display().to_string();
    let artifacts = dir.join("artifacts").display().to_string();
    let mut p = Process::spawn(
        &db.url,
        &["worker"],
        &[
            ("HIGHWAY_DOCKER_HOST", docker_host.as_str()),
            ("HIGHWAY_LISTEN", listen.as_str()),
            ("HIGHWAY_STATE_DIR", state_dir.as_str()),
            ("HIGHWAY_ARTIFACT_DIR", artifacts.as_str()),
        ],
    );
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    eventually("docker down and postgres up in /health", START, || async {
        let (_, h) = get(&http, port, "/health").await?;
        let deps = &h["dependencies"];
        (deps["docker"]["status"] == "down" && deps["postgres"]["status"] == "up").then_some(())
    })
    .await;
    let (status, body) = get(&http, port, "/health/ready").await.expect("answers");
    assert_eq!(
        (status, body),
        (200, json!({"status": "ready", "failing": []}))
    );
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(START).await, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
