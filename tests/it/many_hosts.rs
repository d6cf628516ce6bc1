//! Safe beside other stacks and across Docker hosts: deployment identity (one per
//! database) and daemon-scoped ownership, against the machine's daemon ("host A") and
//! the tests' second daemon ("host B", started by `scripts/test.sh`).
//!
//! - two stacks with separate databases and the *same* deployment name on one daemon
//!   both finish containers longer than the creation grace, neither collector touching
//!   the other's;
//! - a collector on host B never lists, stops or removes host A's containers, nor marks
//!   their rows missing;
//! - a three-step workflow whose steps are routed by queue to workers on different
//!   hosts passes files between them (artifacts live in Postgres, not on a host);
//! - `kill -9` of host A's worker mid-step: the step is retried on host B once host A is
//!   taken as lost, the run finishes, and A's container is removed when a worker of A is
//!   back.

use highway_tests::docker::{
    docker, docker_b, docker_b_host, ensure_test_image, managed_containers, remove_leftovers_on,
    TEST_IMAGE,
};
use highway_tests::{eventually, Process, TestDb};
use highway_worker::docker::client::{ClientSettings, DockerClient};
use highway_worker::docker::deployment::Deployment;
use highway_worker::docker::gc::{DockerGarbageCollector, GcOptions};
use highway_worker::docker::tracking::{self, ContainerRow};
use highway_workflows::definition::WorkflowDefinition;
use highway_workflows::runs::{self, ImageDigests};
use highway_workflows::EnqueueRequest;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(90);

fn host_a() -> String {
    "unix:///var/run/docker.sock".to_string()
}

/// A test's deployment name and scratch directory; removes what it left on both hosts.
struct Scope {
    deployment: String,
    dir: PathBuf,
}

impl Scope {
    fn new() -> Self {
        ensure_test_image();
        let deployment = format!("mh-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let dir = std::env::temp_dir().join(format!("highway-{deployment}"));
        std::fs::create_dir_all(&dir).unwrap();
        Self { deployment, dir }
    }

    /// `highway worker` on `docker_host`, claiming `queues`, with fast timings and its
    /// own artifact directory (so nothing can pass between hosts on a shared disk).
    fn worker(
        &self,
        db_url: &str,
        docker_host: &str,
        queues: &str,
        extra: &[(&str, &str)],
    ) -> Process {
        let artifacts = self.dir.join(format!("artifacts-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&artifacts).unwrap();
        let artifacts = artifacts.display().to_string();
        let mut env: HashMap<&str, &str> = HashMap::from([
            ("HIGHWAY_DEPLOYMENT", self.deployment.as_str()),
            ("HIGHWAY_DOCKER_HOST", docker_host),
            ("HIGHWAY_QUEUES", queues),
            ("HIGHWAY_ARTIFACT_DIR", artifacts.as_str()),
            ("HIGHWAY_LEASE", "3s"),
            ("HIGHWAY_SHUTDOWN_GRACE", "5s"),
            ("HIGHWAY_POLL_INTERVAL", "100ms"),
            ("HIGHWAY_RESCUE_INTERVAL", "200ms"),
            ("HIGHWAY_GC_PERIOD", "300ms"),
            ("HIGHWAY_GC_CREATION_GRACE", "1s"),
            ("HIGHWAY_DOCKER_STOP_GRACE", "1s"),
        ]);
        for (k, v) in extra {
            env.insert(k, v);
        }
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        Process::spawn(db_url, &["worker", "--no-http"], &env)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        remove_leftovers_on(
            None,
            &self.deployment,
            Some(&format!("{}-", self.deployment)),
        );
        remove_leftovers_on(
            Some(&docker_b_host()),
            &self.deployment,
            Some(&format!("{}-", self.deployment)),
        );
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sleep_run(seconds: u32) -> serde_json::Value {
    json!({"image": TEST_IMAGE, "command": ["sleep", seconds.to_string()]})
}

async fn wait_terminal(db: &TestDb, id: Uuid) -> highway_workflows::Activity {
    eventually("the activity ends", WAIT, || async {
        let a = db.client().get(id, None).await.unwrap();
        matches!(
            a.status.as_str(),
            "succeeded" | "failed" | "cancelled" | "timed_out"
        )
        .then_some(a)
    })
    .await
}

/// Audit rows of removals by a collector (`gc:…`), as (target, reason).
async fn gc_removals(db: &TestDb) -> Vec<(Option<String>, serde_json::Value)> {
    sqlx::query_as(
        "SELECT target, details FROM highway.audit_log
          WHERE action = 'container.remove' AND actor LIKE 'gc:%'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Two stacks, one daemon, the same `--deployment` name, separate databases: each runs
/// a container for longer than the creation grace (1 s here, GC every 300 ms) and both
/// succeed at their first attempt. Before deployment identities, each collector took
/// the other's container for an orphan and removed it.
#[tokio::test]
async fn two_stacks_with_one_name_on_one_daemon_never_touch_each_other() {
    let scope = Scope::new();
    let (db1, db2) = (TestDb::new().await, TestDb::new().await);
    assert_ne!(db1.deployment_id().await, db2.deployment_id().await);
    let _w1 = scope.worker(&db1.url, &host_a(), "default", &[]);
    let _w2 = scope.worker(&db2.url, &host_a(), "default", &[]);
    let req = || EnqueueRequest::new("tools.docker.run", sleep_run(5)).max_attempts(1);
    let a1 = db1.client().enqueue(&req()).await.unwrap().id;
    let a2 = db2.client().enqueue(&req()).await.unwrap().id;
    for (db, id) in [(&db1, a1), (&db2, a2)] {
        let a = wait_terminal(db, id).await;
        assert_eq!(
            a.status.as_str(),
            "succeeded",
            "activity {id}: {:?}",
            a.error
        );
        assert_eq!(a.attempt, 1);
        assert!(
            gc_removals(db).await.is_empty(),
            "a collector removed a container of this stack: {:?}",
            gc_removals(db).await
        );
        let rows = tracking::rows_of_activity(&db.pool, id).await.unwrap();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].status, "removed");
        assert!(
            rows[0]
                .removed_by
                .as_deref()
                .unwrap_or("")
                .starts_with("worker:"),
            "{rows:?}"
        );
    }
    let d = docker().await;
    assert!(managed_containers(&d, a1).await.is_empty());
    assert!(managed_containers(&d, a2).await.is_empty());
}

/// A collector on host B judges only host B's containers: an orphan of this database on
/// host A (with a tracking row naming host A's daemon) survives every pass of B's
/// collector, its row stays open; B's own orphan is removed; A's collector then removes
/// A's orphan.
#[tokio::test]
async fn a_collector_on_host_b_never_touches_host_a() {
    let scope = Scope::new();
    let db = TestDb::new().await;
    let id = db.deployment_id().await;
    let client_a = DockerClient::new(ClientSettings::default());
    let client_b = DockerClient::new(ClientSettings {
        host: docker_b_host(),
        ..Default::default()
    });
    let (daemon_a, daemon_b) = (
        client_a.daemon_id().await.unwrap(),
        client_b.daemon_id().await.unwrap(),
    );
    assert_ne!(daemon_a, daemon_b, "the two test daemons must be two hosts");
    // `docker run -d` of a sleeping container labelled as a worker of `identity` would.
    let run_on = |host: &str, name: &str, identity: Uuid| {
        let args = [
            "run".to_string(),
            "-d".into(),
            format!("--name={name}"),
            "--label=highway.managed=true".into(),
            format!("--label=highway.deployment={}", scope.deployment),
            format!("--label=highway.deployment_id={identity}"),
            format!("--label=highway.activity_id={}", Uuid::new_v4()),
            "--label=highway.attempt=1".into(),
            "--label=highway.tenant_id=default".into(),
            TEST_IMAGE.into(),
            "sleep".into(),
            "600".into(),
        ];
        let out = std::process::Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let on_a = run_on(&host_a(), &format!("{}-a", scope.deployment), id);
    let on_b = run_on(&docker_b_host(), &format!("{}-b", scope.deployment), id);
    // Another stack's container on host B: same deployment name, another identity.
    let theirs = run_on(
        &docker_b_host(),
        &format!("{}-theirs", scope.deployment),
        Uuid::new_v4(),
    );
    // Host A's container is known to this database, on host A's daemon.
    let row = ContainerRow {
        name: format!("{}-a", scope.deployment),
        activity_id: Uuid::new_v4(),
        workflow_run_id: None,
        tenant_id: "default".into(),
        image: TEST_IMAGE.into(),
        labels: json!({"highway.deployment": scope.deployment}),
        worker_id: Uuid::new_v4(),
        daemon_id: daemon_a.clone(),
        attempt: 1,
    };
    tracking::record_created(&db.pool, &row, &on_a)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await; // past the 1 s creation grace
    let opts = GcOptions {
        creation_grace: Duration::from_secs(1),
        stop_grace: Duration::from_secs(1),
        ..GcOptions::default()
    };
    let gc = |client: &DockerClient| {
        DockerGarbageCollector::new(
            client.clone(),
            db.pool.clone(),
            Deployment::new(scope.deployment.clone(), false),
            Uuid::new_v4(),
            None,
            opts.clone(),
        )
        .unwrap()
    };
    let gc_b = gc(&client_b);
    for _ in 0..3 {
        let c = gc_b.run_once().await.unwrap();
        assert_eq!(c.missing, 0, "B's collector marked a row missing: {c:?}");
        assert!(
            c.foreign >= 1,
            "another stack's container is counted: {c:?}"
        );
    }
    let (da, db_) = (docker().await, docker_b().await);
    assert!(
        db_.inspect_container(&on_b, None).await.is_err(),
        "B's collector left B's orphan"
    );
    assert!(
        da.inspect_container(&on_a, None).await.is_ok(),
        "B's collector removed a container of host A"
    );
    assert!(
        db_.inspect_container(&theirs, None).await.is_ok(),
        "B's collector removed another stack's container"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM highway.docker_containers WHERE container_id = $1")
            .bind(&on_a)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "created", "B's collector changed host A's row");
    // Host A's own collector does remove it.
    let c = gc(&client_a).run_once().await.unwrap();
    assert_eq!(c.removed_total(), 1, "{c:?}");
    assert!(da.inspect_container(&on_a, None).await.is_err());
}

/// Resolves nothing: these steps are not cached.
struct NoDigests;
impl ImageDigests for NoDigests {
    fn digest<'a>(
        &'a self,
        _tenant: &'a str,
        _image: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<String, runs::DigestError>> {
        Box::pin(async { Err(runs::DigestError("these steps are not cached".into())) })
    }
}

/// Which daemon ran each activity of a run, by its tracking rows.
async fn daemons_of_run(db: &TestDb, run: Uuid) -> BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT a.params->>'command', c.daemon_id FROM highway.activities a
           JOIN highway.docker_containers c ON c.activity_id = a.id
          WHERE a.workflow_run_id = $1 ORDER BY c.created_at",
    )
    .bind(run)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (cmd, d) in rows {
        m.entry(d.unwrap_or_default()).or_default().push(cmd);
    }
    m
}

/// Three steps routed by queue: `produce` on host A, `transform` on host B, `check` on
/// host A again; each worker has its own artifact directory, so the files can only have
/// travelled through Postgres.
#[tokio::test]
async fn a_workflow_routed_across_hosts_passes_files_between_them() {
    let scope = Scope::new();
    let db = TestDb::new().await;
    let _a = scope.worker(&db.url, &host_a(), "host-a", &[]);
    let _b = scope.worker(&db.url, &docker_b_host(), "host-b", &[]);
    let def = WorkflowDefinition::from_json(
        r#"{
          "name": "across-hosts",
          "inputs": {"image": {}},
          "steps": [
            {"id": "produce", "kind": "tools.docker.run", "queue": "host-a",
             "params": {"image": "${inputs.image}", "outputs": ["/out"],
                        "command": ["sh", "-c", "echo from-a > /out/msg.txt"]}},
            {"id": "transform", "kind": "tools.docker.run", "queue": "host-b",
             "depends_on": ["produce"],
             "inputs_from": [{"from": "produce:/out/msg.txt", "path": "/in"}],
             "params": {"image": "${inputs.image}", "outputs": ["/out"],
                        "command": ["sh", "-c", "cat /in/msg.txt > /out/msg.txt; echo via-b >> /out/msg.txt"]}},
            {"id": "check", "kind": "tools.docker.run", "queue": "host-a",
             "depends_on": ["transform"],
             "inputs_from": [{"from": "transform:/out/msg.txt", "path": "/in"}],
             "params": {"image": "${inputs.image}",
                        "command": ["sh", "-c", "test \"$(cat /in/msg.txt)\" = \"$(printf 'from-a\\nvia-b')\" && echo checked"]}}
          ]
        }"#,
    )
    .expect("valid definition");
    let inputs = BTreeMap::from([("image".to_string(), TEST_IMAGE.to_string())]);
    let run = runs::start_run(&db.client(), "default", &def, &inputs, &NoDigests)
        .await
        .unwrap();
    let status = runs::wait_run(&db.pool, run, None, WAIT).await.unwrap();
    assert_eq!(status.status, "succeeded", "{status:?}");
    let a = DockerClient::new(ClientSettings::default())
        .daemon_id()
        .await
        .unwrap();
    let b = DockerClient::new(ClientSettings {
        host: docker_b_host(),
        ..Default::default()
    })
    .daemon_id()
    .await
    .unwrap();
    let by_daemon = daemons_of_run(&db, run).await;
    assert_eq!(by_daemon.get(&a).map(Vec::len), Some(2), "{by_daemon:?}");
    assert_eq!(by_daemon.get(&b).map(Vec::len), Some(1), "{by_daemon:?}");
    assert!(
        by_daemon[&b][0].contains("via-b"),
        "transform ran on host B: {by_daemon:?}"
    );
}

/// `kill -9` of host A's worker while its container runs. The activity's lease expires;
/// host B's worker retries it but first waits for attempt 1's container, which is on
/// host A: no worker of A heartbeats, so after `--host-lost-after` (2 s here) the row is
/// marked `lost` and attempt 2 runs on B. The run finishes with A's container still on
/// A (nobody on B touched it); when a worker of A is back, its collector removes it.
#[tokio::test]
async fn a_killed_host_a_worker_is_replaced_by_host_b_and_cleaned_when_a_returns() {
    let scope = Scope::new();
    let db = TestDb::new().await;
    let lost_after = [("HIGHWAY_HOST_LOST_AFTER", "2s")];
    let mut wa = scope.worker(&db.url, &host_a(), "pool", &lost_after);
    let def = WorkflowDefinition::from_json(
        r#"{"name": "one-step", "inputs": {"image": {}},
            "steps": [{"id": "work", "kind": "tools.docker.run", "queue": "pool",
                       "retry_policy": {"maximum_attempts": 3, "initial_interval": "100ms"},
                       "params": {"image": "${inputs.image}", "command": ["sleep", "4"]}}]}"#,
    )
    .unwrap();
    let inputs = BTreeMap::from([("image".to_string(), TEST_IMAGE.to_string())]);
    let run = runs::start_run(&db.client(), "default", &def, &inputs, &NoDigests)
        .await
        .unwrap();
    let activity: Uuid = eventually("the step's activity", WAIT, || async {
        sqlx::query_scalar("SELECT id FROM highway.activities WHERE workflow_run_id = $1")
            .bind(run)
            .fetch_optional(&db.pool)
            .await
            .unwrap()
    })
    .await;
    let da = docker().await;
    let on_a = highway_tests::docker::wait_running(&da, activity, WAIT).await;
    // The worker row knows its daemon (what "host A is silent" is judged by).
    let daemon_a = DockerClient::new(ClientSettings::default())
        .daemon_id()
        .await
        .unwrap();
    eventually("host A's worker row names its daemon", WAIT, || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM highway.workers WHERE daemon_id = $1")
                .bind(&daemon_a)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        (n > 0).then_some(())
    })
    .await;
    wa.signal(9);
    let _ = wa.wait_exit(Duration::from_secs(10)).await;
    let _wb = scope.worker(&db.url, &docker_b_host(), "pool", &lost_after);
    let status = runs::wait_run(&db.pool, run, None, WAIT).await.unwrap();
    assert_eq!(status.status, "succeeded", "{status:?}");
    let a = db.client().get(activity, None).await.unwrap();
    assert_eq!(a.attempt, 2, "retried once, on host B");
    let rows = tracking::rows_of_activity(&db.pool, activity)
        .await
        .unwrap();
    let first = rows
        .iter()
        .find(|r| r.attempt == Some(1))
        .expect("attempt 1 row");
    assert_eq!(first.status, "lost", "{rows:?}");
    assert!(
        da.inspect_container(&on_a, None).await.is_ok(),
        "host B's worker removed a container of host A"
    );
    let lost_audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE action = 'container.lost' AND target = $1",
    )
    .bind(&on_a)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(lost_audit, 1);
    // Host A comes back: its collector removes the old attempt's container.
    let _wa2 = scope.worker(&db.url, &host_a(), "pool", &lost_after);
    eventually(
        "host A's collector removes the lost container",
        WAIT,
        || async {
            let rows = tracking::rows_of_activity(&db.pool, activity)
                .await
                .unwrap();
            let r = rows.iter().find(|r| r.container_id == on_a)?;
            (r.status == "removed" && da.inspect_container(&on_a, None).await.is_err())
                .then_some(())
        },
    )
    .await;
    assert!(managed_containers(&da, activity).await.is_empty());
    assert!(managed_containers(&docker_b().await, activity)
        .await
        .is_empty());
}
