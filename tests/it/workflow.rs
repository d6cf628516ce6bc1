//! Definition-driven workflow runs through real containers: a three-step pipeline passing
//! files between steps, a diamond DAG, a failing step cancelling its sibling, run
//! cancellation mid-step, and a worker killed mid-run whose run another worker finishes.
//! Each test ends with zero containers labelled for the run's activities.

use highway_tests::docker::{
    assert_no_containers, docker, ensure_test_image, wait_running, TEST_IMAGE,
};
use highway_tests::{eventually, Process, TestDb, TestWorker};
use highway_workflows::definition::WorkflowDefinition;
use highway_workflows::runs::{self, RunStatus};
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

/// A fresh database, an in-process worker with the docker kinds, an artifact directory.
struct Wf {
    db: TestDb,
    worker: Option<TestWorker>,
    artifacts: PathBuf,
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
            let opts = TestWorker::fast_options(4);
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
        }
    }

    async fn start(&self, def: &str, extra: &[(&str, &str)]) -> Uuid {
        let def = WorkflowDefinition::from_json(def).expect("example is valid");
        let mut inputs: BTreeMap<String, String> =
            [("image".to_string(), TEST_IMAGE.to_string())].into();
        for (k, v) in extra {
            inputs.insert(k.to_string(), v.to_string());
        }
        runs::start_run(&self.db.client(), TENANT, &def, &inputs)
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
    let a = runs::advance(&wf.db.client(), &mut conn, run)
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
    // The killed worker's container is an orphan now; remove it like the GC would, so
    // the second attempt is what finishes the run.
    for c in highway_tests::docker::managed_containers(&d, a).await {
        if let Some(id) = c.id {
            highway_tests::docker::docker_cli(&["rm", "-f", &id]);
        }
    }
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
    assert!(stdout.contains("[check] stdout: HELLO"), "{stdout}");
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
    let e = runs::start_run(&db.client(), TENANT, &def, &BTreeMap::new())
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
    const CACHED: &str = include_str!("../../workflows/examples/cached.json");
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
