//! The findings of an outside soak (3 workers, kill -9, SIGSTOP past the lease, Docker
//! outages, Postgres restarts), each reproduced with the fault produced for real where
//! practical, and each failing without its fix:
//!
//! - a retry takes over the exited container of a dead attempt instead of running the
//!   work again (`kill -9` of a real worker process after its container finished);
//! - a worker frozen past its lease (`SIGSTOP`/`SIGCONT` of a real worker process)
//!   whose container exited 0 gets its success recorded when no later attempt started,
//!   and refused but audited when one did;
//! - the tracking row holds the daemon's real exit code and `FinishedAt`, also when the
//!   collector removes a container whose worker died;
//! - no container starts once the lease is gone by the database's clock;
//! - a tracking update lost to a Postgres crash lands when Postgres is back.
//!
//! Waits are on events (the daemon's state, rows in Postgres) with deadlines derived
//! from the configured lease and periods, never fixed sleeps.

use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use highway_tests::docker::{docker, ensure_test_image, DockerHarness, TEST_IMAGE};
use highway_tests::{crash_postgres, eventually, Process, TestDb, TestWorker};
use highway_worker::config::docker::DockerConfig;
use highway_worker::docker::gc::{DockerGarbageCollector, GcOptions, Reason};
use highway_worker::docker::tracking::{self, TrackedContainer};
use highway_worker::docker::{DockerRuntime, RunHandler};
use highway_worker::executor::{CancelReason, DbLeaseProbe, Handler};
use highway_workflows::{EnqueueRequest, HumanDuration};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

/// The lease of the worker processes of these tests.
const LEASE: Duration = Duration::from_secs(3);
/// Any event these tests wait for comes within a few leases (rescue, retry, collector
/// passes of 500 ms); this is the bound with room for a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

/// One test's world: a fresh database, the daemon, a private deployment name and
/// artifact directory; leftovers of the deployment are removed on drop.
struct Env {
    db: TestDb,
    docker: Docker,
    deployment: String,
    artifacts: PathBuf,
}

impl Env {
    async fn new() -> Self {
        let docker = docker().await;
        ensure_test_image();
        let db = TestDb::new().await;
        let deployment = format!("soak-{}", &Uuid::new_v4().simple().to_string()[..12]);
        let artifacts = std::env::temp_dir().join(format!("highway-{deployment}"));
        std::fs::create_dir_all(&artifacts).unwrap();
        Self {
            db,
            docker,
            deployment,
            artifacts,
        }
    }

    /// `highway worker` as a child process in this deployment, lease [`LEASE`].
    fn spawn_worker(&self, id: Uuid, extra: &[(&str, &str)]) -> Process {
        let id = id.to_string();
        let artifacts = self.artifacts.display().to_string();
        let lease = format!("{}s", LEASE.as_secs());
        let mut env: HashMap<&str, &str> = HashMap::from([
            ("HIGHWAY_WORKER_ID", id.as_str()),
            ("HIGHWAY_DEPLOYMENT", self.deployment.as_str()),
            ("HIGHWAY_ARTIFACT_DIR", artifacts.as_str()),
            ("HIGHWAY_LEASE", lease.as_str()),
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
        Process::spawn(&self.db.url, &["worker", "--no-http"], &env)
    }

    async fn enqueue(&self, params: Value, tweak: impl FnOnce(&mut EnqueueRequest)) -> Uuid {
        let mut req = EnqueueRequest::new("tools.docker.run", params);
        req.retry_policy.initial_interval = HumanDuration::from_millis(100);
        tweak(&mut req);
        self.db.client().enqueue(&req).await.unwrap().id
    }

    async fn containers_of(&self, activity: Uuid) -> Vec<ContainerSummary> {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![
                "highway.managed=true".to_string(),
                format!("highway.activity_id={activity}"),
            ],
        );
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.docker.list_containers(Some(opts)).await.unwrap()
    }

    /// Waits for the running container of `activity` at `attempt`; returns its id.
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

    /// Waits until the container has exited; returns the daemon's exit code and
    /// `FinishedAt` (what the tracking row must hold).
    async fn exited(&self, id: &str) -> (i64, chrono::DateTime<chrono::Utc>) {
        eventually("the container exited", WAIT, || async {
            let st = self.docker.inspect_container(id, None).await.ok()?.state?;
            if st.running.unwrap_or(true) {
                return None;
            }
            let at = chrono::DateTime::parse_from_rfc3339(st.finished_at.as_deref()?).ok()?;
            Some((st.exit_code?, at.with_timezone(&chrono::Utc)))
        })
        .await
    }

    async fn lease_expired(&self, activity: Uuid) {
        eventually("the lease expired by Postgres' clock", WAIT, || async {
            let expired: bool = sqlx::query_scalar(
                "SELECT lease_expires_at < now() FROM highway.activities WHERE id = $1",
            )
            .bind(activity)
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or(false);
            expired.then_some(())
        })
        .await;
    }

    async fn rows(&self, activity: Uuid) -> Vec<TrackedContainer> {
        tracking::rows_of_activity(&self.db.pool, activity)
            .await
            .unwrap()
    }

    async fn audit(&self, activity: Uuid, action: &str) -> Vec<(String, Value)> {
        sqlx::query_as(
            "SELECT outcome, details FROM highway.audit_log
              WHERE activity_id = $1 AND action = $2 ORDER BY id",
        )
        .bind(activity)
        .bind(action)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Nothing of this deployment left on the daemon (leftovers removed either way).
    async fn assert_no_containers(&self) {
        let mut filters = HashMap::new();
        filters.insert(
            "label".to_string(),
            vec![format!("highway.deployment={}", self.deployment)],
        );
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let left = self.docker.list_containers(Some(opts)).await.unwrap();
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
        assert!(left.is_empty(), "containers left behind: {left:?}");
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        highway_tests::docker::remove_leftovers(&self.deployment, None);
        let _ = std::fs::remove_dir_all(&self.artifacts);
    }
}

/// Postgres keeps microseconds, the daemon nanoseconds.
fn same_instant(a: chrono::DateTime<chrono::Utc>, b: chrono::DateTime<chrono::Utc>) -> bool {
    (a - b).num_microseconds().is_some_and(|d| d.abs() <= 1)
}

/// A worker killed (`kill -9`) after its container ran to its end: the retry on another
/// worker takes that container's exit, output and outputs as its own result and does
/// not run the work again. The collector of the second worker leaves the exited
/// container for the retry; the tracking row ends `removed` with the daemon's exit code
/// and `FinishedAt`.
#[tokio::test]
async fn a_retry_takes_over_the_exited_container_of_a_dead_attempt() {
    let env = Env::new().await;
    let mut a = env.spawn_worker(Uuid::new_v4(), &[("HIGHWAY_GC_ENABLED", "false")]);
    let id = env
        .enqueue(
            json!({
                "image": TEST_IMAGE,
                "command": ["sh", "-c", "sleep 2; echo ran-once; echo result > /out/r.txt"],
                "outputs": ["/out"],
            }),
            |_| {},
        )
        .await;
    let c1 = env.running(id, 1).await;
    a.signal(libc::SIGKILL);
    a.wait_exit(WAIT).await;
    let (code, finished) = env.exited(&c1).await;
    assert_eq!(code, 0);

    // The second worker runs its collector too (every 500 ms).
    let mut b = env.spawn_worker(Uuid::new_v4(), &[]);
    let act = env.db.client().wait(id, None, WAIT).await.unwrap();
    assert_eq!(act.status, "succeeded", "{act:?}");
    assert_eq!(act.attempt, 2);
    let result = act.result.clone().unwrap();
    assert_eq!(
        result["container_id"],
        json!(c1),
        "attempt 2 ran the work again instead of taking attempt 1's exit: {result}"
    );
    assert_eq!(result["exit_code"], 0);
    assert_eq!(result["stdout"], "ran-once\n");
    assert!(result["outputs"].is_object(), "outputs taken: {result}");
    let rows = env.rows(id).await;
    assert_eq!(rows.len(), 1, "one container ever: {rows:?}");
    let row = &rows[0];
    assert_eq!(row.container_id, c1);
    assert_eq!(row.status, "removed", "{row:?}");
    assert_eq!(row.removed_reason.as_deref(), Some("adopted_by_retry"));
    assert_eq!(row.exit_code, Some(0), "{row:?}");
    assert!(
        same_instant(row.finished_at.unwrap(), finished),
        "finished_at {:?} is not the daemon's FinishedAt {finished}",
        row.finished_at
    );
    let adopted = env.audit(id, "container.adopt_exit").await;
    assert_eq!(adopted.len(), 1, "{adopted:?}");
    b.signal(libc::SIGTERM);
    assert_eq!(b.wait_exit(WAIT).await, Some(0));
    env.assert_no_containers().await;
}

/// A worker frozen (SIGSTOP) past its lease while its container runs to exit 0, then
/// resumed (SIGCONT): no later attempt started, so the success is recorded on attempt 1
/// instead of being thrown away and the attempt burnt; audited as a late success.
#[tokio::test]
async fn a_frozen_worker_s_late_success_counts_when_no_later_attempt_started() {
    let env = Env::new().await;
    let w = Uuid::new_v4();
    let mut p = env.spawn_worker(w, &[]);
    let id = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 1; echo late"]}),
            |r| {
                // A retry after the rescue would wait an hour: only the late success can
                // finish this activity within the test.
                r.retry_policy.initial_interval = HumanDuration::from_secs(3600);
                r.retry_policy.maximum_interval = HumanDuration::from_secs(3600);
            },
        )
        .await;
    let c1 = env.running(id, 1).await;
    p.signal(libc::SIGSTOP);
    let (code, finished) = env.exited(&c1).await;
    assert_eq!(code, 0);
    env.lease_expired(id).await;
    p.signal(libc::SIGCONT);

    let act = env.db.client().wait(id, None, WAIT).await.unwrap();
    assert_eq!(
        (act.status.as_str(), act.attempt),
        ("succeeded", 1),
        "the frozen worker's success was thrown away: {act:?}"
    );
    let result = act.result.unwrap();
    assert_eq!(result["container_id"], json!(c1));
    assert_eq!(result["stdout"], "late\n");
    let late = env.audit(id, "activity.late_success").await;
    assert_eq!(late.len(), 1, "{late:?}");
    assert_eq!(late[0].0, "accepted");
    let row = eventually("the container's row closed", WAIT, || async {
        env.rows(id)
            .await
            .into_iter()
            .find(|r| r.container_id == c1 && r.status == "removed")
    })
    .await;
    assert_eq!(row.exit_code, Some(0));
    assert_eq!(
        row.removed_reason.as_deref(),
        Some("completed_after_lease_lost")
    );
    assert_eq!(row.removed_by, Some(format!("worker:{w}")));
    assert!(same_instant(row.finished_at.unwrap(), finished), "{row:?}");
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait_exit(WAIT).await, Some(0));
    env.assert_no_containers().await;
}

/// A worker frozen past its lease while another worker took the activity over: the
/// frozen worker's late success is refused (attempt 2 started) but left in the audit
/// log and on its tracking row; the work itself ran once (attempt 2 took over attempt
/// 1's exited container).
#[tokio::test]
async fn a_frozen_worker_s_late_success_is_refused_but_traced_when_a_later_attempt_started() {
    let env = Env::new().await;
    let wa = Uuid::new_v4();
    let mut a = env.spawn_worker(wa, &[("HIGHWAY_GC_ENABLED", "false")]);
    let id = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 1; echo once"]}),
            |_| {},
        )
        .await;
    let c1 = env.running(id, 1).await;
    a.signal(libc::SIGSTOP);
    let (code, _) = env.exited(&c1).await;
    assert_eq!(code, 0);
    let mut b = env.spawn_worker(Uuid::new_v4(), &[("HIGHWAY_GC_ENABLED", "false")]);
    let act = env.db.client().wait(id, None, WAIT).await.unwrap();
    assert_eq!((act.status.as_str(), act.attempt), ("succeeded", 2));
    assert_eq!(act.result.unwrap()["container_id"], json!(c1));
    a.signal(libc::SIGCONT);
    let late = eventually("the late success audited", WAIT, || async {
        let rows = env.audit(id, "activity.late_success").await;
        (!rows.is_empty()).then_some(rows)
    })
    .await;
    // Attempt 2 may have removed the container before the frozen worker's handler saw
    // its exit; then attempt 1 ends as a lease loss with nothing to offer. Whenever it
    // did see the exit, its success is refused.
    assert!(late.iter().all(|(o, _)| o == "refused"), "{late:?}");
    assert_eq!(late[0].1["attempt"], 1, "{late:?}");
    let act = env.db.client().get(id, None).await.unwrap();
    assert_eq!((act.status.as_str(), act.attempt), ("succeeded", 2));
    for p in [&mut a, &mut b] {
        p.signal(libc::SIGTERM);
        assert_eq!(p.wait_exit(WAIT).await, Some(0));
    }
    env.assert_no_containers().await;
}

/// The collector removes the container of a worker killed while it ran (its activity
/// ended `timed_out` by the rescuer): the row holds the daemon's exit code and
/// `FinishedAt`, not the removal time.
#[tokio::test]
async fn the_collector_records_the_daemon_s_exit_code_and_finish_time() {
    let env = Env::new().await;
    let mut p = env.spawn_worker(Uuid::new_v4(), &[("HIGHWAY_GC_ENABLED", "false")]);
    let id = env
        .enqueue(
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 1; exit 3"]}),
            |r| r.retry_policy.maximum_attempts = 1,
        )
        .await;
    let c1 = env.running(id, 1).await;
    p.signal(libc::SIGKILL);
    p.wait_exit(WAIT).await;
    let (code, finished) = env.exited(&c1).await;
    assert_eq!(code, 3);
    // A rescuer alone (no docker kinds): the expired lease ends the activity.
    let rescuer = TestWorker::start(&env.db.pool, TestWorker::fast_options(1), |_| {});
    let act = env.db.client().wait(id, None, WAIT).await.unwrap();
    assert_eq!(act.status, "timed_out", "{act:?}");
    let gc = DockerGarbageCollector::new(
        highway_worker::docker::client::DockerClient::new(Default::default()),
        env.db.pool.clone(),
        highway_worker::docker::deployment::Deployment::new(env.deployment.clone(), false),
        Uuid::new_v4(),
        None,
        GcOptions {
            creation_grace: Duration::from_secs(1),
            stop_grace: Duration::from_secs(1),
            ..GcOptions::default()
        },
    )
    .unwrap();
    let c = gc.run_once().await.unwrap();
    assert_eq!(c.removed_for(Reason::Terminal), 1, "{c:?}");
    let rows = env.rows(id).await;
    let row = rows.iter().find(|r| r.container_id == c1).unwrap();
    assert_eq!(row.status, "removed");
    assert_eq!(row.exit_code, Some(3), "{row:?}");
    let at = row.finished_at.expect("finished_at");
    assert!(
        same_instant(at, finished),
        "finished_at {at} is not the daemon's FinishedAt {finished} (removed at {:?})",
        row.removed_at
    );
    assert!(row.removed_at.unwrap() - at > chrono::Duration::from_std(LEASE).unwrap() / 2);
    rescuer.stop().await;
    env.assert_no_containers().await;
}

/// A worker that reaches `start` after its lease ended by the database's clock (frozen
/// between create and start, the lease gone meanwhile) does not start the container: it
/// removes it unstarted and ends the attempt as a lease loss. With the lease held, the
/// same run starts.
#[tokio::test]
async fn no_container_starts_after_the_lease_ended() {
    let h = DockerHarness::new().await;
    let params = json!({"image": TEST_IMAGE, "command": ["echo", "started"]});
    let claimed = |lease_s: f64| {
        let pool = h.db.pool.clone();
        let worker = h.worker_id;
        async move {
            let id = Uuid::now_v7();
            sqlx::query(
                "INSERT INTO highway.activities
                     (id, tenant_id, kind, params, status, attempt, lease_owner, lease_expires_at)
                 VALUES ($1, 'tenant-a', 'tools.docker.run', '{}', 'running', 1, $2,
                         now() + make_interval(secs => $3))",
            )
            .bind(id)
            .bind(worker)
            .bind(lease_s)
            .execute(&pool)
            .await
            .unwrap();
            id
        }
    };
    let probe = Arc::new(DbLeaseProbe::new(h.db.pool.clone()));

    // The lease ended a second ago; this worker has not heard of it yet.
    let gone = claimed(-1.0).await;
    let ctx = h.ctx(gone, 1).with_lease_probe(probe.clone());
    let res = h.run(ctx.clone(), params.clone()).await;
    let e = res.expect_err("a container started after the lease ended");
    assert_eq!(e.error_type, "LeaseLost", "{e:?}");
    assert!(e.infrastructure);
    assert_eq!(ctx.cancel_reason(), Some(CancelReason::LeaseLost));
    let rows = tracking::rows_of_activity(&h.db.pool, gone).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, "removed");
    assert_eq!(rows[0].started_at, None, "never started: {rows:?}");
    assert_eq!(
        rows[0].removed_reason.as_deref(),
        Some("lease_lost_before_start")
    );
    let refused: Vec<(String,)> = sqlx::query_as(
        "SELECT outcome FROM highway.audit_log WHERE activity_id = $1 AND action = 'container.start'",
    )
    .bind(gone)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(refused, vec![("refused".to_string(),)]);
    highway_tests::docker::assert_no_containers(&h.docker, gone).await;

    // Held (a minute left): it runs.
    let held = claimed(60.0).await;
    let out = h
        .run(h.ctx(held, 1).with_lease_probe(probe), params)
        .await
        .expect("runs under a live lease");
    assert_eq!(out["stdout"], "started\n");
    highway_tests::docker::assert_no_containers(&h.docker, held).await;
}

/// Postgres crashes (`pg_ctl stop -m immediate`) while a container runs: the worker
/// removes the container but cannot record it. When Postgres is back, the row ends
/// `removed` with the exit code and `FinishedAt` — not left open for the collector to
/// judge `missing`.
#[tokio::test]
async fn a_removal_record_lost_to_a_postgres_crash_lands_when_postgres_returns() {
    use highway_worker::db::embedded::Cluster;
    let docker = docker().await;
    ensure_test_image();
    let state = std::env::temp_dir().join(format!("highway-soak-pg-{}", Uuid::new_v4()));
    let s = state.clone();
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&s))
        .await
        .unwrap()
        .expect("private cluster starts");
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy(&cluster.url)
        .unwrap();
    highway_worker::db::MIGRATOR.run(&pool).await.unwrap();
    let deployment = format!("soak-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let worker = Uuid::new_v4();
    let cfg = DockerConfig {
        deployment: deployment.clone(),
        ..DockerConfig::default()
    };
    let rt = Arc::new(DockerRuntime::new(
        cfg,
        pool.clone(),
        worker,
        state.join("artifacts"),
    ));
    let handler = RunHandler::new(rt.clone());
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO highway.activities (id, tenant_id, kind, params) VALUES ($1, 't', 'tools.docker.run', '{}')",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    let ctx = highway_worker::executor::ActivityContext::new(
        id,
        1,
        "tools.docker.run".into(),
        "t".into(),
        None,
        worker,
        "default".into(),
        None,
    );
    let run = tokio::spawn({
        let handler = handler.clone();
        async move {
            handler
                .run(
                    ctx,
                    json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 3; exit 0"]}),
                )
                .await
        }
    });
    let container = eventually("the container running and recorded", WAIT, || async {
        let rows = tracking::rows_of_activity(&pool, id).await.ok()?;
        rows.into_iter()
            .find(|r| r.status == "running")
            .map(|r| r.container_id)
    })
    .await;
    crash_postgres(&cluster);
    let res = tokio::time::timeout(WAIT, run)
        .await
        .expect("the attempt ends without Postgres")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert!(
        docker.inspect_container(&container, None).await.is_err(),
        "the container was removed"
    );
    let s = state.clone();
    let restarted = tokio::task::spawn_blocking(move || Cluster::start(&s))
        .await
        .unwrap()
        .expect("the cluster restarts");
    let row = eventually("the removal recorded after the restart", WAIT, || async {
        let rows = tracking::rows_of_activity(&pool, id).await.ok()?;
        rows.into_iter()
            .find(|r| r.container_id == container && r.status == "removed")
    })
    .await;
    assert_eq!(row.exit_code, Some(0), "{row:?}");
    assert!(row.finished_at.is_some(), "{row:?}");
    assert_eq!(row.removed_reason.as_deref(), Some("completed"), "{row:?}");
    rt.drain().await;
    pool.close().await;
    let (bindir, data_dir) = (restarted.bindir.clone(), restarted.data_dir.clone());
    tokio::task::spawn_blocking(move || Cluster::stop_dir(&bindir, &data_dir))
        .await
        .unwrap()
        .expect("stop the private cluster");
    highway_tests::docker::remove_leftovers(&deployment, None);
    let _ = std::fs::remove_dir_all(&state);
}

/// The Docker daemon unreachable (the proxy refusing) while a container runs: attempt 1
/// gives up as `DockerUnavailable` (uncounted), its stop never reaches the daemon, and
/// the container exits 0 meanwhile. When the daemon is back, attempt 2 takes that exit
/// and output as its result instead of removing the container and running it again.
#[tokio::test]
async fn after_a_docker_outage_the_retry_takes_the_exit_instead_of_running_again() {
    use highway_tests::fault_proxy::{FaultProxy, Mode};
    let dir = std::env::temp_dir().join(format!("highway-soak-proxy-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let proxy = FaultProxy::docker(&dir).await.expect("proxy");
    let url = proxy.url();
    let deployment = format!("soak-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let dep = deployment.clone();
    let h = DockerHarness::with(move |c, s| {
        c.host = url;
        c.deployment = dep;
        // The wait gives up after three failed liveness checks in a row.
        s.liveness_interval = Duration::from_secs(1);
    })
    .await;
    let a = h.activity().await;
    let params = json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sleep 4; echo once"]});
    let first = tokio::spawn({
        let (handler, ctx, params) = (h.handler.clone(), h.ctx(a, 1), params.clone());
        async move { handler.run(ctx, params).await }
    });
    let c1 = highway_tests::docker::wait_running(&h.docker, a, WAIT).await;
    proxy.set_mode(Mode::Refuse);
    proxy.sever();
    let e = tokio::time::timeout(WAIT, first)
        .await
        .expect("attempt 1 gives up")
        .unwrap()
        .expect_err("attempt 1 cannot finish without the daemon");
    assert_eq!(e.error_type, "DockerUnavailable", "{e:?}");
    assert!(e.infrastructure);
    let (code, _) = eventually("the container exited by itself", WAIT, || async {
        let st = h.docker.inspect_container(&c1, None).await.ok()?.state?;
        (!st.running.unwrap_or(true)).then_some((st.exit_code?, ()))
    })
    .await;
    assert_eq!(code, 0);
    proxy.set_mode(Mode::Pass);
    let out = eventually("attempt 2 once the daemon answers", WAIT, || async {
        match h.run(h.ctx(a, 2), params.clone()).await {
            Err(e) if e.infrastructure => None,
            r => Some(r),
        }
    })
    .await
    .expect("attempt 2 succeeds");
    assert_eq!(
        out["container_id"],
        json!(c1),
        "attempt 2 ran the work again: {out}"
    );
    assert_eq!(out["stdout"], "once\n");
    let rows = tracking::rows_of_activity(&h.db.pool, a).await.unwrap();
    assert_eq!(rows.len(), 1, "one container ever: {rows:?}");
    assert_eq!(rows[0].exit_code, Some(0));
    assert_eq!(rows[0].removed_reason.as_deref(), Some("adopted_by_retry"));
    highway_tests::docker::assert_no_containers(&h.docker, a).await;
    proxy.shutdown().await;
    highway_tests::docker::remove_leftovers(&deployment, None);
    let _ = std::fs::remove_dir_all(&dir);
}
