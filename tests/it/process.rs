//! The `highway` binary as a child process: SIGTERM drains (R5), `kill -9` is rescued
//! (R1 for the queue), a paused worker records nothing (R4), `--help` and `enqueue --wait`.

use highway_tests::{eventually, status_of, Process, TestDb, TestWorker};
use highway_workflows::{EnqueueRequest, HumanDuration};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

fn worker_env(lease: &str, grace: &str) -> Vec<(&'static str, String)> {
    vec![
        ("HIGHWAY_LEASE", lease.to_string()),
        ("HIGHWAY_SHUTDOWN_GRACE", grace.to_string()),
        ("HIGHWAY_POLL_INTERVAL", "100ms".to_string()),
        ("HIGHWAY_RESCUE_INTERVAL", "200ms".to_string()),
    ]
}

fn spawn_worker(db: &TestDb, worker_id: Uuid, lease: &str, grace: &str) -> Process {
    let id = worker_id.to_string();
    let env = worker_env(lease, grace);
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("HIGHWAY_WORKER_ID", &id));
    Process::spawn(&db.url, &["worker", "--no-http"], &env)
}

async fn worker_status(db: &TestDb, worker: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM highway.workers WHERE id = $1")
        .bind(worker)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn wait_running_on(db: &TestDb, id: Uuid, worker: Uuid) {
    eventually("activity running on the child worker", WAIT, || async {
        let owner: Option<Uuid> = sqlx::query_scalar(
            "SELECT lease_owner FROM highway.activities WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .flatten();
        (owner == Some(worker)).then_some(())
    })
    .await;
}

/// R5: SIGTERM stops claiming at once; running work finishes within the grace; exit 0.
#[tokio::test]
async fn sigterm_lets_running_work_finish_then_exits_zero() {
    let db = TestDb::new().await;
    let client = db.client();
    let wid = Uuid::new_v4();
    let mut p = spawn_worker(&db, wid, "10s", "20s");
    let e = client
        .enqueue(&EnqueueRequest::new(
            "highway.sleep",
            json!({"duration": "1500ms"}),
        ))
        .await
        .unwrap();
    wait_running_on(&db, e.id, wid).await;
    p.signal(libc::SIGTERM);
    // Wait until claiming stopped: the worker's row says draining once every fetch loop
    // ended (or stopped, if the work finished already). A fixed pause was too short on
    // a loaded machine.
    eventually("the worker draining", WAIT, || async {
        let st = worker_status(&db, wid).await;
        (st == "draining" || st == "stopped").then_some(())
    })
    .await;
    // Enqueued after the signal: never claimed by this worker.
    let late = client
        .enqueue(&EnqueueRequest::new("highway.noop", json!({})))
        .await
        .unwrap();
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    assert_eq!(status_of(&db.pool, e.id).await, ("succeeded".into(), 1));
    assert_eq!(status_of(&db.pool, late.id).await, ("scheduled".into(), 0));
    assert_eq!(worker_status(&db, wid).await, "stopped");
}

/// R5: work that outlives the grace is stopped and released without counting an attempt.
#[tokio::test]
async fn sigterm_past_the_grace_releases_without_counting() {
    let db = TestDb::new().await;
    let client = db.client();
    let wid = Uuid::new_v4();
    let mut p = spawn_worker(&db, wid, "10s", "500ms");
    let mut req = EnqueueRequest::new("highway.sleep", json!({"duration": "60s"}));
    req.retry_policy.maximum_attempts = 1;
    let e = client.enqueue(&req).await.unwrap();
    wait_running_on(&db, e.id, wid).await;
    let t0 = std::time::Instant::now();
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    assert!(t0.elapsed() < Duration::from_secs(10));
    let (status, attempt, uncounted): (String, i32, i32) = sqlx::query_as(
        "SELECT status, attempt, uncounted_attempts FROM highway.activities WHERE id = $1",
    )
    .bind(e.id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    // max_attempts = 1, and still it will run again: the release did not count.
    assert_eq!((status.as_str(), attempt, uncounted), ("scheduled", 1, 1));
}

/// The worker's row says `draining` as soon as SIGTERM stopped claiming, not at its next
/// beat (a third of the lease: 20 s here), so operators see it at once. A second signal
/// then skips the grace.
#[tokio::test]
async fn draining_shows_at_once_and_a_second_signal_escalates() {
    let db = TestDb::new().await;
    let client = db.client();
    let wid = Uuid::new_v4();
    let mut p = spawn_worker(&db, wid, "60s", "1h");
    let e = client
        .enqueue(&EnqueueRequest::new(
            "highway.sleep",
            json!({"duration": "60s"}),
        ))
        .await
        .unwrap();
    wait_running_on(&db, e.id, wid).await;
    p.signal(libc::SIGTERM);
    eventually(
        "the worker's row draining",
        Duration::from_secs(5),
        || async { (worker_status(&db, wid).await == "draining").then_some(()) },
    )
    .await;
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(Duration::from_secs(10)).await, Some(0));
    assert_eq!(status_of(&db.pool, e.id).await.0, "scheduled");
}

/// R1 (queue part): `kill -9` the worker; the lease expires by Postgres' clock and
/// another worker runs attempt 2.
#[tokio::test]
async fn kill_9_is_rescued_and_retried_by_another_worker() {
    let db = TestDb::new().await;
    let client = db.client();
    let wid = Uuid::new_v4();
    let mut p = spawn_worker(&db, wid, "3s", "10s");
    let mut req = EnqueueRequest::new(
        "highway.sleep",
        json!({"duration": "2s", "fail_until_attempt": 0}),
    );
    req.retry_policy.initial_interval = HumanDuration::from_millis(10);
    let e = client.enqueue(&req).await.unwrap();
    wait_running_on(&db, e.id, wid).await;
    p.signal(libc::SIGKILL);
    p.wait_exit(WAIT).await;
    let killed_at = std::time::Instant::now();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!((a.status.as_str(), a.attempt), ("succeeded", 2));
    // Not before the 3 s lease ran out.
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "{:?}",
        killed_at.elapsed()
    );
    w.stop().await;
}

/// R4: a worker paused longer than its lease stops its attempt when it resumes and
/// records nothing; the rescued attempt 2 runs elsewhere.
#[tokio::test]
async fn a_paused_worker_records_nothing_after_resume() {
    let db = TestDb::new().await;
    let client = db.client();
    let wid = Uuid::new_v4();
    let mut p = spawn_worker(&db, wid, "3s", "10s");
    let mut req = EnqueueRequest::new("highway.sleep", json!({"duration": "5s"}));
    req.retry_policy.initial_interval = HumanDuration::from_secs(3600);
    req.retry_policy.maximum_interval = HumanDuration::from_secs(3600);
    let e = client.enqueue(&req).await.unwrap();
    wait_running_on(&db, e.id, wid).await;
    p.signal(libc::SIGSTOP);
    // Another process's rescuer takes the attempt back after the lease.
    let rescuer = highway_worker::executor::Rescuer::new(db.pool.clone(), Duration::from_secs(1));
    eventually("rescued", WAIT, || async {
        let c = rescuer.run_once().await.unwrap();
        (c.retried == 1).then_some(())
    })
    .await;
    p.signal(libc::SIGCONT);
    // Give the resumed worker time to finish its sleep and try to record it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let a = client.get(e.id, None).await.unwrap();
    assert_eq!(
        (a.status.as_str(), a.attempt),
        ("scheduled", 1),
        "the late attempt recorded nothing"
    );
    assert_eq!(a.error.unwrap()["type"], "HeartbeatTimeout");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
}

/// The CLI contract: `enqueue --wait --json` prints one object and exits non-zero unless
/// the activity succeeded (3: failed). Through the API: the CLI needs no DATABASE_URL.
#[tokio::test]
async fn cli_enqueue_wait_json() {
    let db = TestDb::new().await;
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let api = crate::cli_remote::ApiServer::start(&db.url);
    let bin = highway_tests::highway_bin();
    let out = tokio::process::Command::new(&bin)
        .args([
            "enqueue",
            "highway.noop",
            "--params",
            r#"{"a":1}"#,
            "--wait",
            "--json",
        ])
        .env_remove("DATABASE_URL")
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["attempt"], 1);
    assert_eq!(v["result"], json!({"echo": {"a": 1}}));
    assert!(v["id"].as_str().unwrap().parse::<Uuid>().is_ok());
    let out = tokio::process::Command::new(&bin)
        .args([
            "enqueue",
            "highway.sleep",
            "--params",
            r#"{"duration":"1ms","fail_with":"X","retryable":false}"#,
            "--wait",
            "--json",
        ])
        .env_remove("DATABASE_URL")
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["error"]["type"].as_str()),
        (Some("failed"), Some("X"))
    );
    // Bad params JSON: a clear error naming the flag.
    let out = tokio::process::Command::new(&bin)
        .args(["enqueue", "highway.noop", "--params", "{nope"])
        .env_remove("DATABASE_URL")
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--params"));
    w.stop().await;
}
