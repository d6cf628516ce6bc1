//! No container left behind: the garbage collector, heartbeat timeouts, cancellation and
//! shutdown against the real daemon and a real database, with the worker as a child
//! process where it must be killed, paused or cut from Postgres (TESTING.md R1–R6, R10,
//! R17, R23, R24, kept containers).
//!
//! Each test works in its own deployment (`HIGHWAY_DEPLOYMENT`), so collectors of other
//! tests never see its containers, and ends asserting that no container labelled
//! `highway.managed=true` of that deployment is left and every activity is terminal or
//! retried.

use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use highway_tests::docker::{docker, docker_cli, ensure_test_image, TEST_IMAGE};
use highway_tests::proxy::{url_host_port, Mode, TcpProxy};
use highway_tests::{eventually, Process, TestDb, TestWorker};
use highway_worker::config::docker::DockerConfig;
use highway_worker::docker::client::{ClientSettings, DockerClient};
use highway_worker::docker::deployment::Deployment;
use highway_worker::docker::gc::{DockerGarbageCollector, GcOptions, Reason};
use highway_worker::docker::gc_store;
use highway_worker::docker::spec::container_name;
use highway_worker::docker::tracking::{self, ContainerRow, TrackedContainer};
use highway_worker::docker::DockerRuntime;
use highway_workflows::{CancelOutcome, EnqueueRequest, HumanDuration};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// One test's world: a fresh database, the daemon, a private deployment name and
/// artifact directory.
struct Env {
    db: TestDb,
    docker: Docker,
    deployment: String,
    /// The database's identity: containers made by hand in these tests carry it to
    /// stand in for a worker's.
    deployment_id: Uuid,
    artifacts: PathBuf,
}

impl Env {
    async fn new() -> Self {
        let docker = docker().await;
        ensure_test_image();
        let db = TestDb::new().await;
        let deployment = format!("gct-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let artifacts = std::env::temp_dir().join(format!("highway-gc-{deployment}"));
        std::fs::create_dir_all(&artifacts).unwrap();
        let deployment_id = db.deployment_id().await;
        Self {
            db,
            docker,
            deployment,
            deployment_id,
            artifacts,
        }
    }

    /// `highway worker` as a child, in this deployment, with fast timings; `extra`
    /// overrides any of them.
    fn spawn_worker(&self, url: &str, id: Uuid, extra: &[(&str, &str)]) -> Process {
        let id = id.to_string();
        let artifacts = self.artifacts.display().to_string();
        let mut env: HashMap<&str, &str> = HashMap::from([
            ("HIGHWAY_WORKER_ID", id.as_str()),
            ("HIGHWAY_DEPLOYMENT", self.deployment.as_str()),
            ("HIGHWAY_ARTIFACT_DIR", artifacts.as_str()),
            ("HIGHWAY_LEASE", "3s"),
            ("HIGHWAY_SHUTDOWN_GRACE", "10s"),
            ("HIGHWAY_POLL_INTERVAL", "100ms"),
            ("HIGHWAY_RESCUE_INTERVAL", "200ms"),
            ("HIGHWAY_GC_PERIOD", "500ms"),
            ("HIGHWAY_GC_CREATION_GRACE", "1s"),
            ("HIGHWAY_DOCKER_STOP_GRACE", "1s"),
        ]);
        for (k, v) in extra {
            env.insert(k, v);
        }
        let env: Vec<(&str, &str)> = env.into_iter().collect();
        Process::spawn(url, &["worker", "--no-http"], &env)
    }

    fn client(&self) -> DockerClient {
        DockerClient::new(ClientSettings::default())
    }

    fn gc_opts() -> GcOptions {
        GcOptions {
            period: Duration::from_millis(500),
            creation_grace: Duration::from_secs(1),
            max_age: Duration::from_secs(3600),
            stop_grace: Duration::from_secs(1),
            ..GcOptions::default()
        }
    }

    fn gc(&self, opts: GcOptions) -> DockerGarbageCollector {
        self.gc_with(self.client(), self.db.pool.clone(), opts)
    }

    fn gc_with(
        &self,
        client: DockerClient,
        pool: sqlx::PgPool,
        opts: GcOptions,
    ) -> DockerGarbageCollector {
        DockerGarbageCollector::new(
            client,
            pool,
            Deployment::new(self.deployment.clone(), false),
            Uuid::new_v4(),
            None,
            opts,
        )
        .expect("valid gc options")
    }

    /// A docker runtime in this deployment (for an in-process worker).
    fn runtime(&self, worker_id: Uuid) -> Arc<DockerRuntime> {
        let cfg = DockerConfig {
            deployment: self.deployment.clone(),
            stop_grace: HumanDuration::from_secs(1),
            ..DockerConfig::default()
        };
        Arc::new(DockerRuntime::new(
            cfg,
            self.db.pool.clone(),
            worker_id,
            self.artifacts.clone(),
        ))
    }

    /// An in-process worker with `tools.docker.run`, fast timings.
    fn worker(&self) -> TestWorker {
        let opts = TestWorker::fast_options(4);
        let rt = self.runtime(opts.id);
        TestWorker::start(&self.db.pool, opts, move |r| {
            highway_worker::docker::register(r, rt)
        })
    }

    async fn enqueue(&self, params: Value, tweak: impl FnOnce(&mut EnqueueRequest)) -> Uuid {
        let mut req = EnqueueRequest::new("tools.docker.run", params);
        req.retry_policy.initial_interval = HumanDuration::from_millis(100);
        tweak(&mut req);
        self.db.client().enqueue(&req).await.unwrap().id
    }

    /// Every container of this deployment labelled `highway.managed=true`.
    async fn labelled(&self) -> Vec<ContainerSummary> {
        list(
            &self.docker,
            vec![
                "highway.managed=true".into(),
                format!("highway.deployment={}", self.deployment),
            ],
        )
        .await
    }

    async fn containers_of(&self, activity: Uuid) -> Vec<ContainerSummary> {
        list(
            &self.docker,
            vec![
                "highway.managed=true".into(),
                format!("highway.activity_id={activity}"),
            ],
        )
        .await
    }

    /// Waits for a running container of `activity` at `attempt`; returns its id.
    async fn running(&self, activity: Uuid, attempt: i32) -> String {
        eventually("a running container of the attempt", WAIT, || async {
            self.containers_of(activity)
                .await
                .into_iter()
                .find_map(|c| {
                    let l = c.labels.clone().unwrap_or_default();
                    (c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING)
                        && l.get("highway.attempt") == Some(&attempt.to_string()))
                    .then(|| c.id.unwrap())
                })
        })
        .await
    }

    async fn exists(&self, id: &str) -> bool {
        self.docker.inspect_container(id, None).await.is_ok()
    }

    async fn is_running(&self, id: &str) -> bool {
        match self.docker.inspect_container(id, None).await {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }

    /// `docker run -d --init` with labels (the test stands in for a crashed worker).
    fn run_labelled(&self, name: &str, labels: &[(&str, String)]) -> String {
        let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--init".into()];
        args.push(format!("--name={name}"));
        for (k, v) in labels {
            args.push(format!("--label={k}={v}"));
        }
        args.extend([TEST_IMAGE.into(), "sleep".into(), "600".into()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker_cli(&args).trim().to_string()
    }

    /// Labels a worker of this deployment would put on attempt `attempt` of `activity`.
    fn ours(&self, activity: Uuid, attempt: i32) -> Vec<(&'static str, String)> {
        vec![
            ("highway.managed", "true".into()),
            ("highway.deployment", self.deployment.clone()),
            ("highway.deployment_id", self.deployment_id.to_string()),
            ("highway.activity_id", activity.to_string()),
            ("highway.attempt", attempt.to_string()),
            ("highway.tenant_id", "default".into()),
        ]
    }

    async fn rows(&self, activity: Uuid) -> Vec<TrackedContainer> {
        tracking::rows_of_activity(&self.db.pool, activity)
            .await
            .unwrap()
    }

    /// The end of every test: nothing of this deployment left (removing leftovers so a
    /// failure does not leak into the machine), every activity terminal or retried.
    async fn assert_clean(&self) {
        let left = self.labelled().await;
        for c in &left {
            let _ = self
                .docker
                .remove_container(
                    c.id.as_deref().unwrap_or_default(),
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await;
        }
        assert!(
            left.is_empty(),
            "containers of deployment {} left behind: {:?}",
            self.deployment,
            left.iter()
                .map(|c| (c.id.clone(), c.state, c.labels.clone()))
                .collect::<Vec<_>>()
        );
        let open: Vec<(Uuid, String)> =
            sqlx::query_as("SELECT id, status FROM highway.activities WHERE status = 'running'")
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
        assert!(open.is_empty(), "activities still running: {open:?}");
        let _ = std::fs::remove_dir_all(&self.artifacts);
    }
}

impl Drop for Env {
    /// A failed test must not leak containers into the machine: remove whatever this
    /// deployment (or the test's unlabelled helpers, named after it) left.
    fn drop(&mut self) {
        highway_tests::docker::remove_leftovers(
            &self.deployment,
            Some(&format!("{}-", self.deployment)),
        );
        let _ = std::fs::remove_dir_all(&self.artifacts);
    }
}

async fn list(docker: &Docker, labels: Vec<String>) -> Vec<ContainerSummary> {
    let mut filters = HashMap::new();
    filters.insert("label".to_string(), labels);
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker.list_containers(Some(opts)).await.unwrap()
}

async fn activity_row(db: &TestDb, id: Uuid) -> highway_workflows::Activity {
    db.client().get(id, None).await.unwrap()
}

/// Inserts an activity that a worker claimed as attempt `attempt` and then lost (the
/// lease ran out `expired_ago` ago): what a crashed worker leaves behind.
async fn crashed_attempt(db: &TestDb, params: Value, attempt: i32, lease_left_s: f64) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO highway.activities (id, tenant_id, kind, params, status, attempt, lease_owner,
                                         lease_expires_at, started_at, retry_initial_interval_ms)
         VALUES ($1, 'default', 'tools.docker.run', $2, 'running', $3, $4,
                 now() + make_interval(secs => $5), now(), 100)",
    )
    .bind(id)
    .bind(params)
    .bind(attempt)
    .bind(Uuid::new_v4())
    .bind(lease_left_s)
    .execute(&db.pool)
    .await
    .unwrap();
    id
}

// ------------------------------------------------------------------ the collector alone

/// R23: without our label, another deployment's, ours but younger than the grace, ours
/// and live: all survive. Only the orphan goes, with its reason on a tracking row and in
/// the audit log.
#[tokio::test]
async fn r23_only_the_orphan_is_removed() {
    let env = Env::new().await;
    let tag = &env.deployment;
    // The orphan first, so it is past the grace when the young one is created.
    let orphan_activity = Uuid::new_v4();
    let orphan = env.run_labelled(&format!("{tag}-orphan"), &env.ours(orphan_activity, 1));
    let unlabelled = env.run_labelled(&format!("{tag}-plain"), &[]);
    let mut other = env.ours(Uuid::new_v4(), 1);
    other[1].1 = format!("{tag}-other");
    let other = env.run_labelled(&format!("{tag}-other"), &other);
    let live_activity = crashed_attempt(&env.db, json!({}), 1, 3600.0).await;
    let live = env.run_labelled(&format!("{tag}-live"), &env.ours(live_activity, 1));
    // Past the 2 s grace even counted from the end of `Created`'s whole second.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let young = env.run_labelled(&format!("{tag}-young"), &env.ours(Uuid::new_v4(), 1));

    let gc = env.gc(GcOptions {
        creation_grace: Duration::from_secs(2),
        ..Env::gc_opts()
    });
    let c = gc.run_once().await.unwrap();
    assert_eq!(c.listed, 3, "{c:?}");
    assert_eq!((c.young, c.live), (1, 1), "{c:?}");
    assert_eq!(c.removed_for(Reason::Orphan), 1, "{c:?}");
    assert_eq!(c.removed_total(), 1, "{c:?}");
    assert!(!env.exists(&orphan).await);
    for id in [&unlabelled, &other, &live, &young] {
        assert!(env.is_running(id).await, "{id} must survive");
    }
    // Recorded: a row created from the labels, and an audit row.
    let (status, by, why): (String, String, String) = sqlx::query_as(
        "SELECT status, removed_by, removed_reason FROM highway.docker_containers WHERE container_id = $1",
    )
    .bind(&orphan)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (status.as_str(), by.as_str(), why.as_str()),
        ("removed", gc.actor(), "orphan")
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE target = $1 AND action = 'container.remove'
            AND details->>'reason' = 'orphan'",
    )
    .bind(&orphan)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    for id in [&unlabelled, &other] {
        docker_cli(&["rm", "-f", id]);
    }
    // The live one is ours: end its activity, and the collector takes it (terminal),
    // together with the young orphan once it is past the grace.
    sqlx::query("UPDATE highway.activities SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, finished_at = now() WHERE id = $1")
        .bind(live_activity)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let c = gc.run_once().await.unwrap();
    assert_eq!(c.removed_for(Reason::Terminal), 1, "{c:?}");
    eventually(
        "the young orphan removed once past the grace",
        WAIT,
        || async {
            gc.run_once().await.unwrap();
            (!env.exists(&young).await).then_some(())
        },
    )
    .await;
    env.assert_clean().await;
}

/// R24: with Docker or Postgres unreachable the collector does nothing at all.
#[tokio::test]
async fn r24_gc_does_nothing_on_partial_information() {
    let env = Env::new().await;
    let orphan = env.run_labelled(
        &format!("{}-orphan", env.deployment),
        &env.ours(Uuid::new_v4(), 1),
    );
    let vanished_row = ContainerRow {
        name: "gone".into(),
        activity_id: Uuid::new_v4(),
        workflow_run_id: None,
        tenant_id: "default".into(),
        image: TEST_IMAGE.into(),
        labels: json!({"highway.deployment": env.deployment}),
        worker_id: Uuid::new_v4(),
        daemon_id: env.client().daemon_id().await.unwrap(),
        attempt: 1,
    };
    tracking::record_created(&env.db.pool, &vanished_row, "vanished-container-id")
        .await
        .unwrap();
    sqlx::query("UPDATE highway.docker_containers SET created_at = now() - interval '1 hour', updated_at = now() - interval '1 hour'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    // Past the 1 s grace even counted from the end of `Created`'s whole second.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Docker unreachable: a socket that does not exist.
    let no_docker = DockerClient::new(ClientSettings {
        host: "unix:///nonexistent/highway-test/docker.sock".into(),
        ..ClientSettings::default()
    });
    let gc = env.gc_with(no_docker, env.db.pool.clone(), Env::gc_opts());
    let err = gc.run_once().await.unwrap_err();
    assert!(
        matches!(err, highway_worker::docker::gc::Error::Docker(_)),
        "{err}"
    );

    // Postgres unreachable: a proxy that refuses, and one that blackholes.
    let proxy = TcpProxy::start(&url_host_port(&env.db.url)).await;
    let url = proxy.rewrite_url(&env.db.url);
    for mode in [Mode::Refuse, Mode::Blackhole] {
        proxy.set(mode);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(&url)
            .unwrap();
        let gc = env.gc_with(
            env.client(),
            pool,
            GcOptions {
                db_timeout: Duration::from_secs(2),
                ..Env::gc_opts()
            },
        );
        let t0 = Instant::now();
        let err = gc.run_once().await.unwrap_err();
        assert!(
            matches!(
                err,
                highway_worker::docker::gc::Error::Database(_)
                    | highway_worker::docker::gc::Error::DatabaseTimeout(_)
            ),
            "{mode:?}: {err}"
        );
        assert!(t0.elapsed() < Duration::from_secs(10), "{mode:?} hung");
    }
    assert!(
        env.is_running(&orphan).await,
        "no removal on partial information"
    );
    let status: String = sqlx::query_scalar(
        "SELECT status FROM highway.docker_containers WHERE container_id = 'vanished-container-id'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(status, "created", "no row marked on partial information");

    // Both reachable: the orphan goes, the vanished row is marked.
    let c = env.gc(Env::gc_opts()).run_once().await.unwrap();
    assert_eq!((c.removed_for(Reason::Orphan), c.missing), (1, 1), "{c:?}");
    env.assert_clean().await;
}

/// Dry-run changes nothing; the per-pass cap defers the rest; `highway gc --once` is the
/// same collector as a command.
#[tokio::test]
async fn dry_run_cap_and_the_standalone_command() {
    let env = Env::new().await;
    let ids: Vec<String> = (0..3)
        .map(|i| {
            env.run_labelled(
                &format!("{}-o{i}", env.deployment),
                &env.ours(Uuid::new_v4(), 1),
            )
        })
        .collect();
    // Past the 1 s grace even counted from the end of `Created`'s whole second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = env
        .gc(GcOptions {
            dry_run: true,
            ..Env::gc_opts()
        })
        .run_once()
        .await
        .unwrap();
    assert!(c.dry_run);
    assert_eq!(c.removed_for(Reason::Orphan), 3, "{c:?}");
    for id in &ids {
        assert!(env.exists(id).await, "dry run removed {id}");
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.docker_containers")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "dry run wrote rows");

    let c = env
        .gc(GcOptions {
            max_per_pass: 2,
            ..Env::gc_opts()
        })
        .run_once()
        .await
        .unwrap();
    assert_eq!((c.removed_total(), c.deferred), (2, 1), "{c:?}");

    let out = tokio::process::Command::new(highway_tests::highway_bin())
        .args(["gc", "--once", "--json", "--gc-creation-grace", "1s"])
        .env("DATABASE_URL", &env.db.url)
        .env("HIGHWAY_DEPLOYMENT", &env.deployment)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["removed"]["orphan"], 1, "{v}");
    assert_eq!(v["listed"], 1, "{v}");

    // `highway gc` as a daemon: passes every period until SIGTERM, then exits 0.
    let orphan = env.run_labelled(
        &format!("{}-o3", env.deployment),
        &env.ours(Uuid::new_v4(), 1),
    );
    let mut daemon = Process::spawn(
        &env.db.url,
        &["gc"],
        &[
            ("HIGHWAY_DEPLOYMENT", env.deployment.as_str()),
            ("HIGHWAY_GC_PERIOD", "300ms"),
            ("HIGHWAY_GC_CREATION_GRACE", "1s"),
        ],
    );
    eventually("the daemon removed the orphan", WAIT, || async {
        (!env.exists(&orphan).await).then_some(())
    })
    .await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit(WAIT).await, Some(0));
    env.assert_clean().await;
}

/// R2: a worker crashed right after create, before recording the container (only the
/// placeholder row exists). After the creation grace the collector finds it by name,
/// removes it, and the activity is retried.
#[tokio::test]
async fn r2_crash_after_create_before_record() {
    let env = Env::new().await;
    let client = env.client();
    let daemon = client.daemon_id().await.unwrap();
    let a = crashed_attempt(
        &env.db,
        json!({"image": TEST_IMAGE, "command": ["echo", "attempt two"]}),
        1,
        -1.0,
    )
    .await;
    let name = container_name(a, 1);
    let labels = env.ours(a, 1);
    let row = ContainerRow {
        name: name.clone(),
        activity_id: a,
        workflow_run_id: None,
        tenant_id: "default".into(),
        image: TEST_IMAGE.into(),
        labels: json!(labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<HashMap<_, _>>()),
        worker_id: Uuid::new_v4(),
        daemon_id: daemon,
        attempt: 1,
    };
    tracking::insert_pending(&env.db.pool, &row).await.unwrap();
    let id = env.run_labelled(&name, &labels);

    let gc = env.gc(GcOptions {
        creation_grace: Duration::from_secs(2),
        ..Env::gc_opts()
    });
    let c = gc.run_once().await.unwrap();
    assert_eq!((c.young, c.removed_total()), (1, 0), "{c:?}");
    // Found by name at once (adopting needs no grace; only closing does).
    assert_eq!(c.pending_adopted, 1, "{c:?}");
    assert!(env.is_running(&id).await);
    let c = eventually("removed after the grace", WAIT, || async {
        let c = gc.run_once().await.unwrap();
        (c.removed_total() > 0).then_some(c)
    })
    .await;
    assert_eq!(c.removed_for(Reason::LeaseExpired), 1, "{c:?}");
    assert!(!env.exists(&id).await);
    let rows = env.rows(a).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].container_id, id, "the placeholder took the real id");
    assert_eq!(rows[0].status, "removed");
    assert_eq!(rows[0].removed_by.as_deref(), Some(gc.actor()));

    // The activity is retried (attempt 2) and succeeds.
    let w = env.worker();
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!((act.status.as_str(), act.attempt), ("succeeded", 2));
    w.stop().await;
    env.assert_clean().await;
}

/// Kept containers: `auto_remove: false` keeps the exited container until its retention
/// passes (`gc_protected_until`), then the collector removes it.
#[tokio::test]
async fn kept_containers_live_until_their_retention() {
    let env = Env::new().await;
    let w = env.worker();
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["echo", "keep me"], "auto_remove": false, "retention": "3s"}),
            |_| {},
        )
        .await;
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!(act.status, "succeeded");
    let rows = env.rows(a).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].gc_protected_until.is_some(), "{rows:?}");
    assert!(
        env.exists(&rows[0].container_id).await,
        "kept for inspection"
    );
    let gc = env.gc(Env::gc_opts());
    // Past the 1 s grace even counted from the end of `Created`'s whole second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let c = gc.run_once().await.unwrap();
    assert_eq!((c.protected, c.removed_total()), (1, 0), "{c:?}");
    let c = eventually("removed after the retention", WAIT, || async {
        let c = gc.run_once().await.unwrap();
        (c.removed_total() > 0).then_some(c)
    })
    .await;
    assert_eq!(c.removed_for(Reason::RetentionExpired), 1, "{c:?}");
    let rows = env.rows(a).await;
    assert_eq!(rows[0].removed_reason.as_deref(), Some("retention_expired"));
    w.stop().await;
    env.assert_clean().await;
}

// ------------------------------------------------------------------ crashes and faults

/// R1: `kill -9` the worker while its container runs. The lease expires by Postgres'
/// clock, the collector (in another worker) removes attempt 1's container, and that
/// worker runs attempt 2.
#[tokio::test]
async fn r1_kill_9_container_reaped_and_retried() {
    let env = Env::new().await;
    let wa = Uuid::new_v4();
    let mut pa = env.spawn_worker(&env.db.url, wa, &[("HIGHWAY_GC_ENABLED", "false")]);
    // Attempt 2 waits 4 s after the rescue, so the collector (not attempt 2's own
    // cleanup of older attempts) is what removes attempt 1's container.
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "5"]}),
            |r| {
                r.retry_policy.initial_interval = HumanDuration::from_secs(4);
            },
        )
        .await;
    let c1 = env.running(a, 1).await;
    pa.signal(libc::SIGKILL);
    pa.wait_exit(WAIT).await;
    let killed = Instant::now();
    let wb = Uuid::new_v4();
    let mut pb = env.spawn_worker(&env.db.url, wb, &[]);
    eventually("attempt 1's container removed", WAIT, || async {
        (!env.exists(&c1).await).then_some(())
    })
    .await;
    let reaped = killed.elapsed();
    // Lease 3 s + GC period 0.5 s + a stop grace of 1 s + slack for a 2-core machine.
    assert!(reaped < Duration::from_secs(8), "reaped after {reaped:?}");
    let row = env
        .rows(a)
        .await
        .into_iter()
        .find(|r| r.container_id == c1)
        .unwrap();
    assert_eq!(row.status, "removed");
    assert!(
        row.removed_by
            .as_deref()
            .unwrap_or_default()
            .starts_with("gc:"),
        "{row:?}"
    );
    assert_eq!(row.removed_reason.as_deref(), Some("lease_expired"));
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!((act.status.as_str(), act.attempt), ("succeeded", 2));
    pb.signal(libc::SIGTERM);
    assert_eq!(pb.wait_exit(WAIT).await, Some(0));
    env.assert_clean().await;
}

/// R3: the container exited but the worker crashed before the result committed (its
/// Postgres was blackholed, then it was killed). The work is not run again: attempt 2
/// takes over attempt 1's exited container (its exit and output become attempt 2's
/// result), and the container and its row are closed.
#[tokio::test]
async fn r3_crash_after_exit_before_the_result_commits() {
    let env = Env::new().await;
    let proxy = TcpProxy::start(&url_host_port(&env.db.url)).await;
    let wa = Uuid::new_v4();
    let mut pa = env.spawn_worker(
        &proxy.rewrite_url(&env.db.url),
        wa,
        &[("HIGHWAY_LEASE", "8s"), ("HIGHWAY_GC_ENABLED", "false")],
    );
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 2; echo attempt-done"]}),
            |_| {},
        )
        .await;
    let c1 = env.running(a, 1).await;
    proxy.set(Mode::Blackhole);
    eventually("attempt 1's container exited", WAIT, || async {
        (!env.is_running(&c1).await).then_some(())
    })
    .await;
    // The result is stuck behind the blackhole: crash now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    pa.signal(libc::SIGKILL);
    pa.wait_exit(WAIT).await;
    proxy.set(Mode::Pass);
    let mut pb = env.spawn_worker(&env.db.url, Uuid::new_v4(), &[]);
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!((act.status.as_str(), act.attempt), ("succeeded", 2));
    let result = act.result.as_ref().unwrap();
    assert_eq!(
        result["container_id"],
        json!(c1),
        "the recorded result is attempt 1's exited run, taken over by attempt 2"
    );
    assert_eq!(result["stdout"], "attempt-done\n");
    let rows = env.rows(a).await;
    assert!(
        rows.iter().all(|r| r.attempt == Some(1)),
        "no second container: {rows:?}"
    );
    eventually("attempt 1's row closed", WAIT, || async {
        let rows = env.rows(a).await;
        rows.iter()
            .all(|r| r.status == "removed" || r.status == "missing")
            .then_some(())
    })
    .await;
    assert!(!env.exists(&c1).await);
    pb.signal(libc::SIGTERM);
    assert_eq!(pb.wait_exit(WAIT).await, Some(0));
    env.assert_clean().await;
}

/// R4: a worker paused (SIGSTOP) longer than its lease, then resumed: its heartbeat is
/// refused, it stops and removes its own container and records nothing.
#[tokio::test]
async fn r4_paused_worker_removes_its_own_container_and_records_nothing() {
    let env = Env::new().await;
    let w = Uuid::new_v4();
    // No collector anywhere: the resumed worker must clean up by itself.
    let mut p = env.spawn_worker(&env.db.url, w, &[("HIGHWAY_GC_ENABLED", "false")]);
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"]}),
            |r| {
                r.retry_policy.initial_interval = HumanDuration::from_secs(3600);
                r.retry_policy.maximum_interval = HumanDuration::from_secs(3600);
            },
        )
        .await;
    let c1 = env.running(a, 1).await;
    p.signal(libc::SIGSTOP);
    eventually("the lease expired by Postgres' clock", WAIT, || async {
        let expired: bool = sqlx::query_scalar(
            "SELECT lease_expires_at < now() - interval '500 milliseconds' FROM highway.activities WHERE id = $1",
        )
        .bind(a)
        .fetch_one(&env.db.pool)
        .await
        .unwrap_or(false);
        expired.then_some(())
    })
    .await;
    assert!(env.exists(&c1).await);
    p.signal(libc::SIGCONT);
    eventually("its own container removed", WAIT, || async {
        (!env.exists(&c1).await).then_some(())
    })
    .await;
    let row = env
        .rows(a)
        .await
        .into_iter()
        .find(|r| r.container_id == c1)
        .unwrap();
    assert_eq!(row.removed_by, Some(format!("worker:{w}")), "{row:?}");
    assert_eq!(row.removed_reason.as_deref(), Some("leaselost"), "{row:?}");
    let act = eventually("rescued", WAIT, || async {
        let act = activity_row(&env.db, a).await;
        (act.status == "scheduled").then_some(act)
    })
    .await;
    assert_eq!(act.attempt, 1);
    assert!(act.result.is_none(), "the paused attempt recorded nothing");
    assert_eq!(act.error.unwrap()["type"], "HeartbeatTimeout");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    // Retried, not lost: it waits for its (long) backoff.
    env.db.client().cancel(a, None).await.unwrap();
    env.assert_clean().await;
}

/// R5: SIGTERM. Claiming stops; a container that finishes within the grace completes; one
/// that does not is stopped, removed and released without counting; exit 0. A second
/// signal skips the grace.
#[tokio::test]
async fn r5_sigterm_finishes_or_stops_and_releases() {
    let env = Env::new().await;
    let w = Uuid::new_v4();
    let mut p = env.spawn_worker(
        &env.db.url,
        w,
        &[("HIGHWAY_SHUTDOWN_GRACE", "4s"), ("HIGHWAY_LEASE", "10s")],
    );
    let short = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "2"]}),
            |_| {},
        )
        .await;
    let long = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"]}),
            |r| r.retry_policy.maximum_attempts = 1,
        )
        .await;
    let _ = env.running(short, 1).await;
    let cl = env.running(long, 1).await;
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let late = env
        .enqueue(json!({"image": TEST_IMAGE, "command": ["true"]}), |_| {})
        .await;
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    assert_eq!(activity_row(&env.db, short).await.status, "succeeded");
    let l = activity_row(&env.db, long).await;
    assert_eq!(
        (l.status.as_str(), l.attempt, l.uncounted_attempts),
        ("scheduled", 1, 1),
        "released without counting (max_attempts = 1 and it will still run)"
    );
    let row = env
        .rows(long)
        .await
        .into_iter()
        .find(|r| r.container_id == cl)
        .unwrap();
    assert_eq!(
        (row.status.as_str(), row.removed_reason.as_deref()),
        ("removed", Some("shutdown"))
    );
    assert_eq!(
        activity_row(&env.db, late).await.attempt,
        0,
        "never claimed"
    );

    // A second signal escalates at once (grace 1 h).
    let mut p = env.spawn_worker(
        &env.db.url,
        Uuid::new_v4(),
        &[("HIGHWAY_SHUTDOWN_GRACE", "1h"), ("HIGHWAY_LEASE", "10s")],
    );
    let c = env.running(long, 2).await;
    p.signal(libc::SIGTERM);
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.signal(libc::SIGINT);
    assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(0));
    assert!(!env.exists(&c).await);
    // Finish the remaining activities so the test ends with everything terminal.
    let client = env.db.client();
    client.cancel(long, None).await.unwrap();
    client.cancel(late, None).await.unwrap();
    env.assert_clean().await;
}

/// R6: a poison activity (always exits 1) fails after `max_attempts` with the last error;
/// the worker never crash-loops.
#[tokio::test]
async fn r6_poison_activity_fails_after_max_attempts() {
    let env = Env::new().await;
    let mut p = env.spawn_worker(&env.db.url, Uuid::new_v4(), &[]);
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo poison >&2; exit 1"]}),
            |r| {
                r.retry_policy.maximum_attempts = 3;
                r.retry_policy.initial_interval = HumanDuration::from_millis(10);
            },
        )
        .await;
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!((act.status.as_str(), act.attempt), ("failed", 3));
    let err = act.error.unwrap();
    assert_eq!(err["type"], "NonZeroExit");
    assert_eq!(err["attempt"], 3);
    assert_eq!(err["details"]["exit_code"], 1);
    assert_eq!(err["details"]["stderr"], "poison\n");
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the worker is still up"
    );
    assert_eq!(env.rows(a).await.len(), 3);
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    env.assert_clean().await;
}

/// A worker cut from Postgres (blackholed) and then told to stop still stops on time:
/// its attempt's container is stopped and removed through the daemon, and no task
/// (collector, sweeper, scheduler, lease release) hangs on the dead connection past the
/// shutdown grace. The attempt is taken back by the rescuer once Postgres returns.
#[tokio::test]
async fn a_worker_cut_from_postgres_still_shuts_down_within_its_grace() {
    let env = Env::new().await;
    let proxy = TcpProxy::start(&url_host_port(&env.db.url)).await;
    let mut p = env.spawn_worker(
        &proxy.rewrite_url(&env.db.url),
        Uuid::new_v4(),
        &[
            ("HIGHWAY_LEASE", "15s"),
            ("HIGHWAY_SHUTDOWN_GRACE", "3s"),
            ("HIGHWAY_SCHEDULER_ENABLED", "true"),
        ],
    );
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "stop_grace": "1s"}),
            |_| {},
        )
        .await;
    let c = env.running(a, 1).await;
    // Let every service start a pass against the dead connection.
    proxy.set(Mode::Blackhole);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t0 = Instant::now();
    p.signal(libc::SIGTERM);
    let code = p.wait_exit(WAIT).await;
    let took = t0.elapsed();
    // The 3 s grace, the 1 s stop grace, then bounded bookkeeping (cleanup writes 2 s
    // each, results 5 s, lease release 3 s, passes 3 s, closing 2 s): about 24 s here,
    // all of it timeouts. Before every wait was bounded, it did not exit at all.
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(40), "exit after {took:?}");
    assert!(!env.exists(&c).await, "the attempt's container was removed");
    proxy.set(Mode::Pass);
    // Its lease could not be released: the rescuer of the next worker takes it back.
    let mut pb = env.spawn_worker(&env.db.url, Uuid::new_v4(), &[]);
    let c2 = env.running(a, 2).await;
    assert_ne!(c, c2);
    env.db.client().cancel(a, None).await.unwrap();
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!(act.status, "cancelled");
    pb.signal(libc::SIGTERM);
    assert_eq!(pb.wait_exit(WAIT).await, Some(0));
    env.assert_clean().await;
}

/// R10: a worker cut from Postgres (blackholed) longer than its lease stops its container
/// within the lease, even one that ignores SIGTERM with a `stop_grace` far longer than
/// the lease (the grace is cut to what is left of the lease); another worker reruns the
/// activity; the cut worker's late result is rejected.
#[tokio::test]
async fn r10_worker_cut_from_postgres_stops_within_the_lease() {
    let env = Env::new().await;
    let proxy = TcpProxy::start(&url_host_port(&env.db.url)).await;
    let wa = Uuid::new_v4();
    let mut pa = env.spawn_worker(
        &proxy.rewrite_url(&env.db.url),
        wa,
        &[("HIGHWAY_LEASE", "4s")],
    );
    let a = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "trap '' TERM; sleep 600 & wait"],
                   "stop_grace": "60s"}),
            |_| {},
        )
        .await;
    let c1 = env.running(a, 1).await;
    let renewed: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT heartbeat_at FROM highway.activities WHERE id = $1")
            .bind(a)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    proxy.set(Mode::Blackhole);
    // When the container actually stopped: its `FinishedAt` (the daemon and Postgres
    // share this machine's clock), not when this poll happened to notice.
    let stopped_by = eventually("the cut worker stopped its container", WAIT, || async {
        match env.docker.inspect_container(&c1, None).await {
            Ok(c) => {
                let st = c.state.unwrap_or_default();
                if st.running.unwrap_or(false) {
                    return None;
                }
                st.finished_at
                    .and_then(|f| chrono::DateTime::parse_from_rfc3339(&f).ok())
                    .map(|t| t.with_timezone(&chrono::Utc))
            }
            // Already removed: only an upper bound is known.
            Err(_) => Some(chrono::Utc::now()),
        }
    })
    .await;
    let lease_end: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT lease_expires_at FROM highway.activities WHERE id = $1")
            .bind(a)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(
        stopped_by <= lease_end + chrono::Duration::milliseconds(500),
        "stopped at {stopped_by}, lease ended {lease_end} (last renewal seen {renewed})"
    );
    // Another worker takes over as attempt 2.
    let wb = Uuid::new_v4();
    let mut pb = env.spawn_worker(&env.db.url, wb, &[]);
    let c2 = env.running(a, 2).await;
    // The cut worker comes back: whatever it still holds for attempt 1 is refused.
    proxy.set(Mode::Pass);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let act = activity_row(&env.db, a).await;
    assert_eq!(
        (act.status.as_str(), act.attempt, act.lease_owner),
        ("running", 2, Some(wb))
    );
    assert!(act.result.is_none());
    assert!(env.is_running(&c2).await);
    assert!(!env.exists(&c1).await, "attempt 1's container removed");
    assert_eq!(
        env.db.client().cancel(a, None).await.unwrap(),
        CancelOutcome::Requested
    );
    // Attempt 2 ignores SIGTERM too and its lease holds, so it gets the whole 60 s
    // grace: end it now rather than wait.
    docker_cli(&["kill", &c2]);
    let act = env.db.client().wait(a, None, WAIT).await.unwrap();
    assert_eq!(act.status, "cancelled");
    for p in [&mut pa, &mut pb] {
        p.signal(libc::SIGTERM);
        assert_eq!(p.wait_exit(WAIT).await, Some(0));
    }
    eventually("every row closed", WAIT, || async {
        env.rows(a)
            .await
            .iter()
            .all(|r| r.status == "removed" || r.status == "missing")
            .then_some(())
    })
    .await;
    env.assert_clean().await;
}

// ------------------------------------------------------------------ cancellation

/// R17: cancel while queued, while creating, while running (stop within the grace, steps
/// timestamped), and while completing (a late success is rejected).
#[tokio::test]
async fn r17_cancel_while_queued_creating_running_completing() {
    let env = Env::new().await;
    let client = env.db.client();

    // Queued: cancelled at once, never started.
    let queued = env
        .enqueue(json!({"image": TEST_IMAGE, "command": ["true"]}), |_| {})
        .await;
    assert_eq!(
        client.cancel(queued, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    let w = env.worker();

    // Creating: cancelled as soon as its placeholder row appears.
    let creating = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"]}),
            |_| {},
        )
        .await;
    eventually("the placeholder row", WAIT, || async {
        (!env.rows(creating).await.is_empty()).then_some(())
    })
    .await;
    client.cancel(creating, None).await.unwrap();
    let act = client.wait(creating, None, WAIT).await.unwrap();
    assert_eq!(act.status, "cancelled");

    // Running, with a container that ignores SIGTERM: SIGKILL after the 2 s grace.
    let running = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "trap '' TERM; sleep 600 & wait"],
                   "stop_grace": "2s"}),
            |_| {},
        )
        .await;
    let c = env.running(running, 1).await;
    client.cancel(running, None).await.unwrap();
    eventually("the running container removed", WAIT, || async {
        (!env.exists(&c).await).then_some(())
    })
    .await;
    let act = client.wait(running, None, WAIT).await.unwrap();
    assert_eq!(act.status, "cancelled");
    // Judged on the steps' own timestamps (all from Postgres' clock), not on when this
    // test's polls noticed: the stop goes out at once, the grace is honoured in full,
    // and SIGKILL follows it. The slack covers a loaded machine (CI runs four tests at
    // a time on two cores); a cancel that waited for a heartbeat or a grace that was
    // doubled would still show.
    let s = eventually("the removal recorded", WAIT, || async {
        let steps = gc_store::stop_steps_of_activity(&env.db.pool, running)
            .await
            .unwrap();
        steps.into_iter().next().filter(|s| s.removed_at.is_some())
    })
    .await;
    let requested = act.cancel_requested_at.unwrap();
    let signalled = s.stop_signalled_at.expect("signalled step");
    let killed = s
        .killed_at
        .unwrap_or_else(|| panic!("SIGTERM ignored: killed after the grace: {s:?}"));
    assert!(s.stop_requested_at.is_some());
    assert!(
        signalled - requested < chrono::Duration::milliseconds(2000),
        "the stop went out late: {s:?} requested {requested}"
    );
    assert!(
        // The `signalled` write goes out with the signal and may land a little after it.
        killed - signalled >= chrono::Duration::milliseconds(1500),
        "killed before the 2 s grace ended: {s:?}"
    );
    assert!(
        killed - signalled < chrono::Duration::milliseconds(2000 + 2000),
        "killed long after the 2 s grace: {s:?}"
    );
    assert_eq!(s.stop_reason.as_deref(), Some("requested"));
    assert_eq!(s.status, "removed");

    // Completing: the container exits and is removed, but its result cannot commit (we
    // hold the activity's row lock); the cancel lands first and wins.
    let completing = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "1"]}),
            |_| {},
        )
        .await;
    let c = env.running(completing, 1).await;
    let mut tx = env.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM highway.activities WHERE id = $1 FOR UPDATE")
        .bind(completing)
        .execute(&mut *tx)
        .await
        .unwrap();
    eventually("the container removed", WAIT, || async {
        (!env.exists(&c).await).then_some(())
    })
    .await;
    sqlx::query(
        "UPDATE highway.activities SET cancel_requested_at = now() WHERE id = $1 AND status = 'running'",
    )
    .bind(completing)
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let act = client.wait(completing, None, WAIT).await.unwrap();
    assert_eq!(act.status, "cancelled", "the late success was rejected");
    assert!(act.result.is_none());

    for a in [queued, creating, running, completing] {
        assert!(env.containers_of(a).await.is_empty());
    }
    w.stop().await;
    env.assert_clean().await;
}

/// Cancelling a workflow run stops every running container of the run within the stop
/// grace, and the collector removes its detached containers; every activity ends
/// terminal (the running ones `cancelled`) and the run `cancelled`.
#[tokio::test]
async fn r17_cancel_run_stops_running_and_detached_containers() {
    let env = Env::new().await;
    let client = env.db.client();
    let w = env.worker();
    let stop = tokio_util::sync::CancellationToken::new();
    let gc = env.gc(Env::gc_opts());
    let gc_task = tokio::spawn(gc.run(stop.clone()));
    let run = client
        .create_run("default", "gc-test", &json!({}))
        .await
        .unwrap();
    let detached = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "detach": true}),
            |r| r.workflow_run_id = Some(run),
        )
        .await;
    let act = client.wait(detached, None, WAIT).await.unwrap();
    assert_eq!(act.status, "succeeded");
    let dc = act.result.unwrap()["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut running = Vec::new();
    for _ in 0..2 {
        running.push(
            env.enqueue(
                json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "stop_grace": "1s"}),
                |r| r.workflow_run_id = Some(run),
            )
            .await,
        );
    }
    let mut cs = Vec::new();
    for a in &running {
        cs.push(env.running(*a, 1).await);
    }
    // Past the creation grace, the detached container is still kept: its run is live.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(env.is_running(&dc).await);
    let t0 = Instant::now();
    client.cancel_run(run, None).await.unwrap();
    for c in cs.iter().chain([&dc]) {
        eventually("every container of the run removed", WAIT, || async {
            (!env.exists(c).await).then_some(())
        })
        .await;
    }
    // 1 s grace plus the collector's 500 ms period, with room for a loaded machine; the
    // daemon's default 10 s grace would not fit.
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    for a in &running {
        assert_eq!(
            client.wait(*a, None, WAIT).await.unwrap().status,
            "cancelled"
        );
    }
    // The run is finished right after its last activity's result commits, in a
    // statement of its own: wait for it rather than read in between.
    eventually("the run cancelled", WAIT, || async {
        let status: String =
            sqlx::query_scalar("SELECT status FROM highway.workflow_runs WHERE id = $1")
                .bind(run)
                .fetch_one(&env.db.pool)
                .await
                .unwrap();
        (status == "cancelled").then_some(())
    })
    .await;
    // The collector records a removal after the daemon confirms it: wait for the row.
    let reason = eventually(
        "the detached container's removal recorded",
        WAIT,
        || async {
            env.rows(detached)
                .await
                .into_iter()
                .next()
                .and_then(|r| r.removed_reason)
        },
    )
    .await;
    assert_eq!(reason, "detached_run_ended");
    stop.cancel();
    gc_task.await.unwrap();
    w.stop().await;
    env.assert_clean().await;
}
