//! Definition-driven workflow runs through real containers: a three-step pipeline passing
//! files between steps, a diamond DAG, a failing step cancelling its sibling, run
//! cancellation mid-step, a worker killed mid-run whose run another worker finishes, the
//! snapshot cache (keyed by the image digest too), per-path `inputs_from` selection, and
//! runs started, shown and cancelled through the API and `highway runs`.
//! Each test ends with zero containers labelled for the run's activities.

use highway_tests::docker::{
    assert_no_containers, docker, ensure_test_image, wait_running, TEST_IMAGE,
};
use highway_tests::{eventually, Process, TestDb, TestWorker};
use highway_worker::docker::client::{ClientSettings, DockerClient};
use highway_worker::workflow::DockerDigests;
use highway_workflows::definition::WorkflowDefinition;
use highway_workflows::runs::{self, ImageDigests, RunStatus};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(90);
const TENANT: &str = "tenant-a";

const PIPELINE: &str = include_str!("../../workflows/examples/pipeline.json");
const DIAMOND: &str = include_str!("../../workflows/examples/diamond.json");
const SLOW: &str = include_str!("../../workflows/examples/slow.json");
const CACHED: &str = include_str!("../../workflows/examples/cached.json");

/// A fresh database, an in-process worker with the docker kinds, an artifact directory.
struct Wf {
    db: TestDb,
    worker: Option<TestWorker>,
    artifacts: PathBuf,
    /// Resolves image digests of steps ready at start (the test starts runs itself).
    digests: Arc<dyn ImageDigests>,
}

/// A digest resolver without a TTL: a test that rebuilds an image sees it at once.
fn fresh_digests() -> Arc<dyn ImageDigests> {
    Arc::new(DockerDigests::with_ttl(
        DockerClient::new(ClientSettings::default()),
        Duration::ZERO,
    ))
}

impl Wf {
    async fn new() -> Self {
        Self::with_worker(true).await
    }

    async fn with_worker(start: bool) -> Self {
        ensure_test_image();
        let db = TestDb::new().await;
        let artifacts = std::env::temp_dir().join(format!("highway-wf-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&artifacts).unwrap();
        let worker = start.then(|| {
            let mut opts = TestWorker::fast_options(4);
            opts.digests = highway_worker::workflow::Digests(fresh_digests());
            let rt = Arc::new(highway_worker::docker::DockerRuntime::new(
                highway_worker::config::docker::DockerConfig::default(),
                db.pool.clone(),
                opts.id,
                artifacts.clone(),
            ));
            TestWorker::start(&db.pool, opts, |r| {
                highway_worker::docker::register(r, rt.clone())
            })
        });
        Self {
            db,
            worker,
            artifacts,
            digests: fresh_digests(),
        }
    }

    async fn start(&self, def: &str, extra: &[(&str, &str)]) -> Uuid {
        let def = WorkflowDefinition::from_json(def).expect("example is valid");
        let mut inputs: BTreeMap<String, String> =
            [("image".to_string(), TEST_IMAGE.to_string())].into();
        for (k, v) in extra {
            inputs.insert(k.to_string(), v.to_string());
        }
        runs::start_run(
            &self.db.client(),
            TENANT,
            &def,
            &inputs,
            self.digests.as_ref(),
        )
        .await
        .expect("run starts")
    }

    async fn wait(&self, run: Uuid) -> RunStatus {
        runs::wait_run(&self.db.pool, run, Some(TENANT), WAIT)
            .await
            .expect("run finishes")
    }

    async fn activity_of(&self, run: Uuid, step: &str) -> Uuid {
        eventually(&format!("step {step} scheduled"), WAIT, || async {
            let s = runs::run_status(&self.db.pool, run, None).await.unwrap();
            s.steps
                .iter()
                .find(|s| s.step_id == step)
                .and_then(|s| s.activity_id)
        })
        .await
    }

    /// Zero containers for every activity of the run.
    async fn assert_clean(&self, run: Uuid) {
        let d = docker().await;
        let ids: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM highway.activities WHERE workflow_run_id = $1")
                .bind(run)
                .fetch_all(&self.db.pool)
                .await
                .unwrap();
        for (id,) in ids {
            assert_no_containers(&d, id).await;
        }
    }

    async fn stop(mut self) {
        if let Some(w) = self.worker.take() {
            w.stop().await;
        }
        std::fs::remove_dir_all(&self.artifacts).ok();
    }
}

fn step<'a>(s: &'a RunStatus, id: &str) -> &'a runs::StepStatus {
    s.steps.iter().find(|x| x.step_id == id).expect("step")
}

#[tokio::test]
async fn three_step_pipeline_passes_files_through_real_containers() {
    let wf = Wf::new().await;
    let run = wf.start(PIPELINE, &[]).await;
    let s = wf.wait(run).await;
    assert_eq!(s.status, "succeeded", "{s:#?}");
    let result = s.result.as_ref().unwrap();
    assert_eq!(result["check"]["stdout"], "HELLO\n", "{result}");
    assert_eq!(result["check"]["exit_code"], 0);
    for id in ["produce", "transform", "check"] {
        assert_eq!(step(&s, id).status, "succeeded", "{s:#?}");
    }
    assert!(step(&s, "produce").outputs_artifact.is_some());
    // Each step ran once, keyed by run and step.
    let keys: Vec<(String,)> = sqlx::query_as(
        "SELECT idempotency_key FROM highway.activities WHERE workflow_run_id = $1 ORDER BY created_at",
    )
    .bind(run)
    .fetch_all(&wf.db.pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![
            (format!("run:{run}:produce"),),
            (format!("run:{run}:transform"),),
            (format!("run:{run}:check"),)
        ]
    );
    // Advancing a finished run again changes nothing.
    let mut conn = wf.db.pool.acquire().await.unwrap();
    let a = runs::advance(&wf.db.client(), &mut conn, run, wf.digests.as_ref())
        .await
        .unwrap();
    assert!(a.enqueued.is_empty());
    drop(conn);
    wf.assert_clean(run).await;
    wf.stop().await;
}

#[tokio::test]
async fn diamond_dag_joins_both_branches() {
    let wf = Wf::new().await;
    let run = wf.start(DIAMOND, &[]).await;
    let s = wf.wait(run).await;
    assert_eq!(s.status, "succeeded", "{s:#?}");
    assert_eq!(s.result.as_ref().unwrap()["join"]["stdout"], "20 21 40\n");
    // The join started only after both branches finished.
    let join = step(&s, "join").scheduled_at.unwrap();
    for b in ["left", "right"] {
        assert!(step(&s, b).finished_at.unwrap() <= join, "{s:#?}");
    }
    wf.assert_clean(run).await;
    wf.stop().await;
}

#[tokio::test]
async fn a_failing_step_cancels_its_running_sibling_and_fails_the_run() {
    let wf = Wf::new().await;
    let def = serde_json::json!({
        "name": "fail-fast",
        "inputs": {"image": {}},
        "steps": [
            {"id": "slow", "kind": "tools.docker.run",
             "params": {"image": "${inputs.image}", "command": ["sh", "-c", "sleep 300"]}},
            {"id": "bad", "kind": "tools.docker.run",
             "params": {"image": "${inputs.image}", "command": ["sh", "-c", "sleep 2; exit 3"]},
             "retry_policy": {"maximum_attempts": 1}},
            {"id": "after", "kind": "tools.docker.run", "depends_on": ["slow", "bad"],
             "params": {"image": "${inputs.image}", "command": ["true"]}}
        ]
    })
    .to_string();
    let run = wf.start(&def, &[]).await;
    let slow = wf.activity_of(run, "slow").await;
    wait_running(&docker().await, slow, WAIT).await;
    let s = wf.wait(run).await;
    assert_eq!(s.status, "failed", "{s:#?}");
    assert_eq!(s.error.as_ref().unwrap()["step"], "bad", "{s:#?}");
    assert_eq!(step(&s, "after").status, "skipped");
    let (st, _) = eventually("sibling cancelled", WAIT, || async {
        let st = highway_tests::status_of(&wf.db.pool, slow).await;
        (st.0 == "cancelled").then_some(st)
    })
    .await;
    assert_eq!(st, "cancelled");
    wf.assert_clean(run).await;
    wf.stop().await;
}

#[tokio::test]
async fn cancelling_a_run_mid_step_leaves_zero_containers() {
    let wf = Wf::new().await;
    let run = wf.start(SLOW, &[]).await;
    let a = wf.activity_of(run, "wait").await;
    wait_running(&docker().await, a, WAIT).await;
    // A cancel may meet the completer's lock on the run (deadlock detection): retry.
    eventually("cancel accepted", WAIT, || async {
        wf.db.client().cancel_run(run, Some(TENANT)).await.ok()
    })
    .await;
    let s = wf.wait(run).await;
    assert_eq!(s.status, "cancelled", "{s:#?}");
    assert_eq!(step(&s, "first").status, "succeeded");
    let (st, _) = highway_tests::status_of(&wf.db.pool, a).await;
    assert_eq!(st, "cancelled");
    wf.assert_clean(run).await;
    wf.stop().await;
}

#[tokio::test]
async fn a_worker_killed_mid_run_is_finished_by_another_worker() {
    let wf = Wf::with_worker(false).await;
    let artifacts = wf.artifacts.display().to_string();
    let spawn = |id: Uuid| {
        let id = id.to_string();
        Process::spawn(
            &wf.db.url,
            &["worker", "--no-http"],
            &[
                ("HIGHWAY_WORKER_ID", id.as_str()),
                ("HIGHWAY_ARTIFACT_DIR", artifacts.as_str()),
                ("HIGHWAY_LEASE", "3s"),
                ("HIGHWAY_POLL_INTERVAL", "100ms"),
                ("HIGHWAY_RESCUE_INTERVAL", "200ms"),
                ("HIGHWAY_DOCKER_STOP_GRACE", "1s"),
            ],
        )
    };
    let mut first = spawn(Uuid::new_v4());
    let run = wf.start(SLOW, &[("seconds", "6")]).await;
    let a = wf.activity_of(run, "wait").await;
    let d = docker().await;
    wait_running(&d, a, WAIT).await;
    first.signal(9);
    first.wait_exit(Duration::from_secs(10)).await;
    // The killed worker's container is left as it is: the second worker's attempt must
    // deal with it (remove it while it runs, or take over its exit once it ended), and
    // nothing of it may be left when the run is done.
    let mut second = spawn(Uuid::new_v4());
    let s = wf.wait(run).await;
    assert_eq!(s.status, "succeeded", "{s:#?}");
    assert_eq!(
        s.result.as_ref().unwrap()["wait"]["stdout"],
        "waiting\none\n"
    );
    assert!(step(&s, "wait").attempt.unwrap() >= 2, "{s:#?}");
    second.signal(15);
    second.wait_exit(Duration::from_secs(30)).await;
    wf.assert_clean(run).await;
    wf.stop().await;
}

/// `highway run FILE --input image=REF --follow`: step states, live log lines, exit 0 on
/// success and non-zero on failure.
#[tokio::test]
async fn cli_run_follows_steps_and_logs_and_exits_with_the_outcome() {
    let wf = Wf::new().await;
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/../workflows/examples");
    let image = format!("image={TEST_IMAGE}");
    let run_cli = |file: String, extra: Vec<String>| {
        let url = wf.db.url.clone();
        let image = image.clone();
        tokio::task::spawn_blocking(move || {
            let mut cmd = std::process::Command::new(highway_tests::highway_bin());
            cmd.env("DATABASE_URL", url)
                .env("RUST_LOG", "warn")
                .args([
                    "run", &file, "--input", &image, "--tenant", TENANT, "--follow",
                ])
                .args(extra);
            cmd.output().expect("run highway")
        })
    };
    let out = run_cli(format!("{examples}/pipeline.json"), vec![])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[check] stdout | HELLO"), "{stdout}");
    assert!(stdout.contains("succeeded"), "{stdout}");
    for s in ["produce", "transform", "check"] {
        assert!(stdout.contains(s), "{stdout}");
    }

    // A failing run: the exit code says so; --json prints machine-readable events.
    let bad = std::env::temp_dir().join(format!("highway-bad-{}.json", Uuid::new_v4()));
    std::fs::write(
        &bad,
        serde_json::json!({"name": "bad", "inputs": {"image": {}}, "steps": [
            {"id": "boom", "kind": "tools.docker.run", "retry_policy": {"maximum_attempts": 1},
             "params": {"image": "${inputs.image}", "command": ["sh", "-c", "echo nope; exit 4"]}}
        ]})
        .to_string(),
    )
    .unwrap();
    let out = run_cli(bad.display().to_string(), vec!["--json".into()])
        .await
        .unwrap();
    std::fs::remove_file(&bad).ok();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    let last: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("json line");
    assert_eq!(last["status"], "failed", "{stdout}");
    assert_eq!(last["error"]["step"], "boom", "{stdout}");
    let run: Uuid = last["run_id"].as_str().unwrap().parse().unwrap();
    wf.assert_clean(run).await;
    wf.stop().await;
}

/// A definition with an error is refused before anything is stored, naming the field.
#[tokio::test]
async fn an_invalid_definition_names_the_field_and_stores_nothing() {
    let db = TestDb::new().await;
    let def = WorkflowDefinition::from_json(PIPELINE).unwrap();
    let e = runs::start_run(
        &db.client(),
        TENANT,
        &def,
        &BTreeMap::new(),
        fresh_digests().as_ref(),
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("inputs.image"), "{e}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.workflow_runs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

/// A cached step: the first run misses, runs the step and commits its container as the
/// key (`tools.docker.commit`); the second run hits, skips the step (no activity) and
/// reuses the snapshot and the output artifact, so its dependents still get the files.
#[tokio::test]
async fn a_cache_hit_skips_the_step_and_reuses_the_snapshot() {
    let wf = Wf::new().await;
    let d = docker().await;
    let first = wf.start(CACHED, &[]).await;
    let s1 = wf.wait(first).await;
    assert_eq!(s1.status, "succeeded", "{s1:#?}");
    let b1 = step(&s1, "build");
    assert_eq!(
        b1.cache_decision.as_deref(),
        Some("miss-build-as"),
        "{s1:#?}"
    );
    assert_eq!(s1.result.as_ref().unwrap()["use"]["stdout"], "built-v1\n");
    let image: String = sqlx::query_scalar(
        "SELECT cache_image FROM highway.workflow_steps WHERE run_id = $1 AND step_id = 'build'",
    )
    .bind(first)
    .fetch_one(&wf.db.pool)
    .await
    .unwrap();
    // The snapshot holds the step's filesystem.
    let out = highway_tests::docker::docker_cli(&["run", "--rm", &image, "cat", "/opt-state"]);
    assert_eq!(out, "built-v1\n");
    // The miss kept its container for the commit; it is ours to remove now.
    let b1_activity = b1.activity_id.unwrap();
    for c in highway_tests::docker::managed_containers(&d, b1_activity).await {
        highway_tests::docker::docker_cli(&["rm", "-f", c.id.as_deref().unwrap()]);
    }

    let second = wf.start(CACHED, &[]).await;
    let s2 = wf.wait(second).await;
    assert_eq!(s2.status, "succeeded", "{s2:#?}");
    let b2 = step(&s2, "build");
    assert_eq!(b2.status, "cached", "{s2:#?}");
    assert_eq!(b2.cache_decision.as_deref(), Some("hit"));
    assert!(b2.activity_id.is_none(), "a hit runs nothing: {s2:#?}");
    let r2 = s2.result.as_ref().unwrap();
    assert_eq!(r2["build"]["cached"], true);
    assert_eq!(r2["build"]["image"], image.as_str());
    assert_eq!(r2["use"]["stdout"], "built-v1\n");
    // Another key misses again.
    let third = wf.start(CACHED, &[("version", "2")]).await;
    let s3 = wf.wait(third).await;
    assert_eq!(
        step(&s3, "build").cache_decision.as_deref(),
        Some("miss-build-as")
    );
    assert_eq!(s3.result.as_ref().unwrap()["use"]["stdout"], "built-v2\n");
    let b3_activity = step(&s3, "build").activity_id.unwrap();
    for c in highway_tests::docker::managed_containers(&d, b3_activity).await {
        highway_tests::docker::docker_cli(&["rm", "-f", c.id.as_deref().unwrap()]);
    }
    let images: Vec<(String,)> = sqlx::query_as(
        "SELECT cache_image FROM highway.workflow_steps WHERE cache_decision = 'miss-build-as'",
    )
    .fetch_all(&wf.db.pool)
    .await
    .unwrap();
    for (img,) in images {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &img])
            .output();
    }
    for r in [first, second, third] {
        wf.assert_clean(r).await;
    }
    wf.stop().await;
}

/// Removes the container a cache miss kept for its commit (the GC's job after its
/// retention; the test does it now).
async fn remove_kept_container(activity: Uuid) {
    let d = docker().await;
    for c in highway_tests::docker::managed_containers(&d, activity).await {
        highway_tests::docker::docker_cli(&["rm", "-f", c.id.as_deref().unwrap()]);
    }
}

/// Removes every snapshot image the database's cache misses committed.
async fn remove_cache_images(pool: &sqlx::PgPool) {
    let images: Vec<(String,)> = sqlx::query_as(
        "SELECT cache_image FROM highway.workflow_steps WHERE cache_decision = 'miss-build-as' \
           AND cache_image IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    for (img,) in images {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &img])
            .output();
    }
}

/// Builds (offline, from the test image) a derived image under `reference`; `version`
/// makes its content, and so its id, differ. Returns the image id.
fn build_image(reference: &str, version: &str) -> String {
    use std::io::Write as _;
    let mut child = std::process::Command::new("docker")
        .args(["build", "-q", "-t", reference, "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("docker build");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            format!("FROM {TEST_IMAGE}\nLABEL dev.highway-test.wf-digest={version}\n").as_bytes(),
        )
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    highway_tests::docker::docker_cli(&["image", "inspect", "--format", "{{.Id}}", reference])
        .trim()
        .to_string()
}

/// The image digest is part of every cache key: rebuilding the image under the same
/// reference turns a hit into a miss; an image Docker cannot resolve runs the step
/// uncached (`miss-no-commit` with a reason), never a hit. The worker's resolver caches
/// a digest for its TTL and then sees the rebuild.
#[tokio::test]
async fn rebuilding_the_image_under_the_same_ref_turns_a_hit_into_a_miss() {
    let wf = Wf::new().await;
    let image = format!("highway-test/wf-digest:{}", Uuid::new_v4().simple());
    let v1 = build_image(&image, "1");

    let first = wf.start(CACHED, &[("image", &image)]).await;
    let s1 = wf.wait(first).await;
    assert_eq!(s1.status, "succeeded", "{s1:#?}");
    let b1 = step(&s1, "build");
    assert_eq!(
        b1.cache_decision.as_deref(),
        Some("miss-build-as"),
        "{s1:#?}"
    );
    assert_eq!(b1.image_digest.as_deref(), Some(v1.as_str()), "{s1:#?}");
    remove_kept_container(b1.activity_id.unwrap()).await;

    let second = wf.start(CACHED, &[("image", &image)]).await;
    let s2 = wf.wait(second).await;
    assert_eq!(
        step(&s2, "build").cache_decision.as_deref(),
        Some("hit"),
        "{s2:#?}"
    );

    // The worker's resolver: a rebuild is seen once the cached digest expired.
    let cached = DockerDigests::new(DockerClient::new(ClientSettings::default()));
    assert_eq!(cached.digest(TENANT, &image).await.unwrap(), v1);
    let v2 = build_image(&image, "2");
    assert_ne!(v1, v2);
    assert_eq!(
        cached.digest(TENANT, &image).await.unwrap(),
        v1,
        "within the TTL"
    );
    tokio::time::sleep(highway_worker::workflow::DIGEST_TTL).await;
    assert_eq!(
        cached.digest(TENANT, &image).await.unwrap(),
        v2,
        "after the TTL"
    );

    let third = wf.start(CACHED, &[("image", &image)]).await;
    let s3 = wf.wait(third).await;
    assert_eq!(s3.status, "succeeded", "{s3:#?}");
    let b3 = step(&s3, "build");
    assert_eq!(
        b3.cache_decision.as_deref(),
        Some("miss-build-as"),
        "{s3:#?}"
    );
    assert_eq!(b3.image_digest.as_deref(), Some(v2.as_str()));
    assert!(b3.activity_id.is_some(), "the miss ran the step: {s3:#?}");
    assert_eq!(s3.result.as_ref().unwrap()["use"]["stdout"], "built-v1\n");
    remove_kept_container(b3.activity_id.unwrap()).await;

    // An image that is not there: no digest, so no hit and no commit; the step fails.
    let missing = serde_json::json!({
        "name": "cached", "inputs": {"image": {}},
        "steps": [{"id": "build", "kind": "tools.docker.run", "cache": {"key": "k"},
                   "retry_policy": {"maximum_attempts": 1},
                   "params": {"image": "${inputs.image}", "pull_policy": "never", "command": ["true"]}}]
    })
    .to_string();
    let absent = format!("highway-test/wf-digest-absent:{}", Uuid::new_v4().simple());
    let fourth = wf.start(&missing, &[("image", &absent)]).await;
    let s4 = wf.wait(fourth).await;
    assert_eq!(s4.status, "failed", "{s4:#?}");
    let b4 = step(&s4, "build");
    assert_eq!(
        b4.cache_decision.as_deref(),
        Some("miss-no-commit"),
        "{s4:#?}"
    );
    assert!(
        b4.cache_reason
            .as_deref()
            .unwrap_or_default()
            .contains("not present"),
        "{s4:#?}"
    );
    assert!(b4.image_digest.is_none());

    remove_cache_images(&wf.db.pool).await;
    highway_tests::docker::docker_cli(&["rmi", "-f", &image]);
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &v1])
        .output();
    for r in [first, second, third, fourth] {
        wf.assert_clean(r).await;
    }
    wf.stop().await;
}

/// `from: "make:/out/app", path: "/in"` places exactly that subtree at `/in/app` (and a
/// selected file at `path/<name>`): the sibling of `/out/app` is absent. A `from` path
/// the producing step did not write fails the consumer, the run's error naming
/// `steps[1].inputs_from[0].from`.
#[tokio::test]
async fn per_path_inputs_deliver_only_the_selected_entry() {
    let wf = Wf::new().await;
    let def = |from: &str| {
        serde_json::json!({
            "name": "select", "inputs": {"image": {}},
            "steps": [
                {"id": "make", "kind": "tools.docker.run",
                 "params": {"image": "${inputs.image}", "outputs": ["/out"], "command": ["sh", "-c",
                    "mkdir -p /out/app/bin && echo exe > /out/app/bin/x && echo sib > /out/sibling"]}},
                {"id": "use", "kind": "tools.docker.run", "depends_on": ["make"],
                 "retry_policy": {"maximum_attempts": 1},
                 "inputs_from": [{"from": from, "path": "/in"},
                                 {"from": "make:/out/sibling", "path": "/f"}],
                 "params": {"image": "${inputs.image}",
                            "inputs": [{"path": "/etc/own", "content": "own"}],
                            "command": ["sh", "-c",
                    "test ! -e /in/sibling && test ! -e /in/out && ls /in && cat /in/app/bin/x /f/sibling /etc/own"]}}
            ]
        })
        .to_string()
    };
    let ok = wf.start(&def("make:/out/app"), &[]).await;
    let s = wf.wait(ok).await;
    assert_eq!(s.status, "succeeded", "{s:#?}");
    assert_eq!(
        s.result.as_ref().unwrap()["use"]["stdout"],
        "app\nexe\nsib\nown",
        "{s:#?}"
    );

    let bad = wf.start(&def("make:/out/nope"), &[]).await;
    let s = wf.wait(bad).await;
    assert_eq!(s.status, "failed", "{s:#?}");
    let e = s.error.as_ref().unwrap();
    assert_eq!(e["field"], "steps[1].inputs_from[0].from", "{e}");
    assert_eq!(e["error"]["type"], "InputPathNotFound", "{e}");
    assert!(e["message"].as_str().unwrap().contains("/out/nope"), "{e}");
    for r in [ok, bad] {
        wf.assert_clean(r).await;
    }
    wf.stop().await;
}

/// `POST /v1/runs` with a definition: a bad one is a 422 naming the field; `highway
/// runs start` starts one through the API, `highway runs show --json` shows its steps,
/// `highway runs cancel` cancels it mid-step, leaving zero containers.
#[tokio::test]
async fn runs_through_the_api_start_show_and_cancel() {
    let wf = Wf::new().await;
    let (_, token) = highway_worker::api::store::create_token(&wf.db.pool, "runs", Some(TENANT))
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let state = highway_worker::api::AppState::new(
        highway_worker::health::Health::default(),
        wf.db.pool.clone(),
        highway_worker::config::api::ApiConfig::default(),
    )
    .with_digests(highway_worker::workflow::Digests(fresh_digests()));
    let server = {
        let stop = stop.clone();
        tokio::spawn(highway_worker::api::serve(listener, state, async move {
            stop.cancelled().await
        }))
    };

    let http = reqwest::Client::new();
    let mut bad: serde_json::Value = serde_json::from_str(SLOW).unwrap();
    bad["steps"][1]["depends_on"] = serde_json::json!(["nope"]);
    let resp = http
        .post(format!("{base}/v1/runs"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"definition": bad, "inputs": {"image": TEST_IMAGE}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 422);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        body["error"]["field"], "definition.steps[1].depends_on[0]",
        "{body}"
    );

    let cli = |args: Vec<String>| {
        let base = base.clone();
        let token = token.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(highway_tests::highway_bin())
                .args(&args)
                .env("HIGHWAY_API_URL", base)
                .env("HIGHWAY_TOKEN", token)
                .env_remove("HIGHWAY_TOKEN_FILE")
                .env_remove("DATABASE_URL")
                .env("RUST_LOG", "warn")
                .output()
                .expect("run highway");
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let slow = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../workflows/examples/slow.json"
    );
    let (rc, out, err) = cli(vec![
        "runs".into(),
        "start".into(),
        slow.into(),
        "--input".into(),
        format!("image={TEST_IMAGE}"),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(rc, 0, "{out}{err}");
    assert!(!out.contains(&token) && !err.contains(&token));
    let started: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(started["tenant_id"], TENANT, "{started}");
    let run: Uuid = started["id"].as_str().unwrap().parse().unwrap();
    assert!(
        started["steps"].as_array().is_some_and(|s| s.len() == 2),
        "{started}"
    );

    let a = wf.activity_of(run, "wait").await;
    wait_running(&docker().await, a, WAIT).await;
    let (rc, out, err) = cli(vec![
        "runs".into(),
        "show".into(),
        run.to_string(),
        "--json".into(),
    ])
    .await
    .unwrap();
    assert_eq!(rc, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["status"], "running", "{shown}");
    assert_eq!(shown["steps"][0]["step_id"], "first");
    assert_eq!(shown["steps"][0]["status"], "succeeded");
    assert_eq!(shown["steps"][1]["step_id"], "wait");
    assert_eq!(shown["steps"][1]["activity_id"], a.to_string());
    let (rc, table, _) = cli(vec!["runs".into(), "show".into(), run.to_string()])
        .await
        .unwrap();
    assert_eq!(rc, 0);
    assert!(table.contains("STEP") && table.contains("wait"), "{table}");

    // A cancel may meet the completer's lock on the run (deadlock detection): retry.
    let out = eventually("runs cancel accepted", WAIT, || {
        let cancel = cli(vec!["runs".into(), "cancel".into(), run.to_string()]);
        async move {
            let (rc, out, _) = cancel.await.unwrap();
            (rc == 0).then_some(out)
        }
    })
    .await;
    assert!(out.contains(&run.to_string()), "{out}");
    let s = wf.wait(run).await;
    assert_eq!(s.status, "cancelled", "{s:#?}");
    let (st, _) = highway_tests::status_of(&wf.db.pool, a).await;
    assert_eq!(st, "cancelled");
    wf.assert_clean(run).await;

    // `--follow`: step changes and log lines through the API, exit 0 on success.
    let pipeline = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../workflows/examples/pipeline.json"
    );
    let (rc, out, err) = cli(vec![
        "runs".into(),
        "start".into(),
        pipeline.into(),
        "--input".into(),
        format!("image={TEST_IMAGE}"),
        "--follow".into(),
    ])
    .await
    .unwrap();
    assert_eq!(rc, 0, "{out}{err}");
    assert!(out.contains("[check] stdout | HELLO"), "{out}");
    assert!(out.contains("succeeded"), "{out}");
    stop.cancel();
    server.await.unwrap().unwrap();
    wf.stop().await;
}
