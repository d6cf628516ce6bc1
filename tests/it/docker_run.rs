//! `tools.docker.run` against the real daemon and a real database: results, failures,
//! hostile containers (timeout ignoring SIGTERM, OOM, stdout flood, fork bomb), tar in
//! and out, secure defaults, secrets, 409 adoption, older attempts, pull policies, and
//! cleanup on every path — each test ends with zero containers labelled for its activity.

use highway_tests::docker::{
    assert_no_containers, docker_cli, managed_containers, sha256_file, wait_running, DockerHarness,
    LocalRegistry, SECRET_PREFIX, TEST_IMAGE,
};
use highway_worker::docker::artifacts::Producer;
use highway_worker::docker::runtime::Failpoint;
use highway_worker::docker::spec::container_name;
use highway_worker::docker::tario::TarLimits;
use highway_worker::docker::tracking;
use highway_worker::executor::{CancelReason, HandlerError};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn err(r: Result<Value, HandlerError>) -> HandlerError {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn details(e: &HandlerError) -> &Value {
    e.details
        .as_ref()
        .expect("error details carry the run result")
}

/// The tracking rows of the activity are all closed (`removed` or `missing`).
async fn assert_rows_closed(h: &DockerHarness, activity: Uuid) -> Vec<tracking::TrackedContainer> {
    let rows = tracking::rows_of_activity(&h.db.pool, activity)
        .await
        .unwrap();
    for r in &rows {
        assert!(
            r.status == "removed" || r.status == "missing",
            "tracking row still open: {r:?}"
        );
    }
    rows
}

#[tokio::test]
async fn success_captures_stdout_and_stderr_and_removes_the_container() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let out = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo hello; echo oops >&2"]}),
        )
        .await
        .expect("run succeeds");
    assert_eq!(out["exit_code"], 0);
    assert_eq!(out["status"], "exited");
    assert_eq!(out["stdout"], "hello\n");
    assert_eq!(out["stderr"], "oops\n");
    assert_eq!(out["logs_truncated"], false);
    assert_eq!(out["oom_killed"], false);
    assert!(out["image"]
        .as_str()
        .unwrap()
        .contains("highway-test/busybox"));
    // Missing memory/CPU limits were defaulted with a warning.
    assert!(!out["warnings"].as_array().unwrap().is_empty(), "{out}");

    let rows = assert_rows_closed(&h, a).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let row = &rows[0];
    assert_eq!(row.status, "removed");
    assert_eq!(row.exit_code, Some(0));
    assert_eq!(row.attempt, Some(1));
    assert_eq!(row.removed_by.as_deref(), Some(h.runtime.actor().as_str()));
    assert_eq!(row.removed_reason.as_deref(), Some("completed"));
    assert!(row.started_at.is_some() && row.finished_at.is_some() && row.removed_at.is_some());
    assert_eq!(row.container_id, out["container_id"].as_str().unwrap());

    let lines = h.log_lines(a).await;
    assert!(
        lines.contains(&("stdout".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "oops".into())),
        "{lines:?}"
    );
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn non_zero_exit_is_a_retryable_error_carrying_the_result() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo before; exit 3"]}),
        )
        .await);
    assert_eq!(e.error_type, "NonZeroExit");
    assert!(e.retryable && !e.infrastructure);
    assert_eq!(details(&e)["exit_code"], 3);
    assert_eq!(details(&e)["stdout"], "before\n");
    let rows = assert_rows_closed(&h, a).await;
    assert_eq!(rows[0].exit_code, Some(3));
    assert_eq!(rows[0].removed_reason.as_deref(), Some("exited_non_zero"));
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn timeout_kills_a_process_ignoring_sigterm_after_the_grace_and_removes_it() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let t0 = Instant::now();
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({
                "image": TEST_IMAGE,
                "command": ["sh", "-c", "trap '' TERM; echo started; while true; do sleep 1; done"],
                "timeout": "2s",
                "stop_grace": "2s",
            }),
        )
        .await);
    let took = t0.elapsed();
    assert_eq!(e.error_type, "Timeout");
    assert!(e.retryable);
    let d = details(&e);
    assert_eq!(d["status"], "timed_out");
    assert_eq!(d["stdout"], "started\n");
    // SIGKILL after the grace: 137, and that is not an OOM (trap 18).
    assert_eq!(d["exit_code"], 137);
    assert_eq!(d["oom_killed"], false);
    assert!(
        took >= Duration::from_secs(4),
        "stopped before the grace: {took:?}"
    );
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let rows = assert_rows_closed(&h, a).await;
    assert_eq!(rows[0].removed_reason.as_deref(), Some("timed_out"));
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn oom_is_reported() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let e = err(h
        .run(
            h.ctx(a, 1),
            // `tail` buffers a newline-free stream without bound.
            json!({"image": TEST_IMAGE, "command": ["tail", "/dev/zero"], "memory_limit": "16m",
                   "timeout": "60s"}),
        )
        .await);
    assert_eq!(e.error_type, "NonZeroExit", "{e:?}");
    assert_eq!(details(&e)["oom_killed"], true, "{e:?}");
    assert!(e.message.contains("OOM"), "{}", e.message);
    let rows = assert_rows_closed(&h, a).await;
    assert_eq!(rows[0].oom_killed, Some(true));
    assert_no_containers(&h.docker, a).await;
}

/// `VmRSS` or `VmHWM` (the peak) of process `pid`, in KiB.
fn proc_kib(pid: i32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn stdout_flood_is_truncated() {
    let h = DockerHarness::with(|cfg, s| {
        cfg.activity_log_lines = 1000;
        s.logs.max_stored_lines = 1000;
    })
    .await;
    let a = h.activity().await;
    // 64 MiB of output in 80-byte lines.
    let out = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "timeout": "120s", "command": ["sh", "-c",
                "yes 0123456789012345678901234567890123456789012345678901234567890123456789abcdefgh | head -c 67108864"]}),
        )
        .await
        .expect("flood run succeeds");
    assert_eq!(out["logs_truncated"], true);
    let stdout = out["stdout"].as_str().unwrap();
    assert!(
        stdout.len() <= 1024 * 1024 + 200,
        "stdout kept {} bytes",
        stdout.len()
    );
    assert!(stdout.contains("bytes truncated by highway"));
    assert!(stdout.starts_with("0123456789"));
    let lines = h.log_lines(a).await;
    assert!(lines.len() <= 1000 + 3, "stored {} lines", lines.len());
    assert!(
        lines
            .iter()
            .any(|(s, l)| s == "system" && l.contains("log limit of 1000 lines")),
        "no truncation marker row"
    );
    assert_no_containers(&h.docker, a).await;
}

/// The memory bound, measured where it holds: on a `highway worker` process of its own
/// (its `/proc` peak RSS, `VmHWM`), so no other test's allocations blur it. 128 MiB of
/// output pass through the worker; its peak grows by far less than that (the capture
/// keeps 1 MiB, the log writer a bounded channel). A worker that held the stream, or
/// any sizeable part of it, would exceed the bound.
#[tokio::test]
async fn a_stdout_flood_leaves_the_worker_process_memory_bounded() {
    let db = highway_tests::TestDb::new().await;
    let docker = highway_tests::docker::docker().await;
    highway_tests::docker::ensure_test_image();
    let deployment = format!("mem-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let artifacts = std::env::temp_dir().join(format!("highway-{deployment}"));
    let artifacts_s = artifacts.display().to_string();
    let worker = highway_tests::Process::spawn(
        &db.url,
        &["worker", "--no-http"],
        &[
            ("HIGHWAY_DEPLOYMENT", deployment.as_str()),
            ("HIGHWAY_ARTIFACT_DIR", artifacts_s.as_str()),
            ("HIGHWAY_POLL_INTERVAL", "100ms"),
            ("HIGHWAY_DOCKER_ACTIVITY_LOG_LINES", "1000"),
        ],
    );
    let client = db.client();
    let run = |cmd: &str| {
        highway_workflows::EnqueueRequest::new(
            "tools.docker.run",
            json!({"image": TEST_IMAGE, "timeout": "300s", "command": ["sh", "-c", cmd]}),
        )
    };
    // Warm up (client, pools, first container), then take the baseline.
    let warm = client.enqueue(&run("echo warm")).await.unwrap().id;
    let done = client
        .wait(warm, None, Duration::from_secs(120))
        .await
        .unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let before = proc_kib(worker.pid(), "VmRSS:");
    assert!(before > 0, "no /proc status for the worker");
    let flood = client
        .enqueue(&run(
            "yes 0123456789012345678901234567890123456789012345678901234567890123456789abcdefgh | head -c 134217728",
        ))
        .await
        .unwrap()
        .id;
    let done = client
        .wait(flood, None, Duration::from_secs(300))
        .await
        .unwrap();
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(done.result.as_ref().unwrap()["logs_truncated"], true);
    let peak = proc_kib(worker.pid(), "VmHWM:");
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("worker RSS before the flood {before} KiB, peak {peak} KiB (+{grown_mib} MiB for 128 MiB of output)");
    assert!(
        grown_mib < 48,
        "the worker's peak RSS grew by {grown_mib} MiB ({before} KiB -> {peak} KiB) for 128 MiB of output"
    );
    drop(worker);
    assert_no_containers(&docker, warm).await;
    assert_no_containers(&docker, flood).await;
    highway_tests::docker::remove_leftovers(&deployment, None);
    let _ = std::fs::remove_dir_all(&artifacts);
}

#[tokio::test]
async fn fork_bomb_is_held_by_the_pids_limit() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let t0 = Instant::now();
    let res = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "pids_limit": 16, "timeout": "60s", "command": ["sh", "-c",
                "for i in $(seq 1 200); do sleep 3 & done; wait; echo survived"]}),
        )
        .await;
    let out = match res {
        Ok(v) => v,
        Err(e) => details(&e).clone(),
    };
    let stderr = out["stderr"].as_str().unwrap().to_lowercase();
    assert!(
        stderr.contains("fork") || stderr.contains("resource temporarily unavailable"),
        "forks were not refused: {stderr}"
    );
    assert!(t0.elapsed() < Duration::from_secs(50));
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn inputs_and_outputs_round_trip_binary_files() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let binary: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    let b64 = highway_tests::base64(&binary);
    let out = h
        .run(
            h.ctx(a, 1),
            json!({
                "image": TEST_IMAGE,
                "user": "65534:65534",
                "command": ["sh", "-c", "cat /in/hello.txt; cp /in/bin.dat /out/copy.dat; ls -l /in/run.sh | cut -c1-10; mkdir /out/sub; echo nested > /out/sub/n.txt"],
                "inputs": [
                    {"path": "/in/hello.txt", "content": "hi there\n"},
                    {"path": "/in/bin.dat", "base64": b64},
                    {"path": "/in/run.sh", "content": "#!/bin/sh\n", "mode": "0755"}
                ],
                "outputs": ["/out"],
            }),
        )
        .await
        .expect("run succeeds");
    assert_eq!(out["stdout"], "hi there\n-rwxr-xr-x\n");
    let art = &out["outputs"];
    assert_eq!(art["paths"], json!(["/out"]));
    let id: Uuid = art["id"].as_str().unwrap().parse().unwrap();
    let stored = h
        .runtime
        .artifacts
        .load(&h.tenant, id)
        .await
        .expect("artifact stored");
    assert_eq!(stored.size_bytes, art["size_bytes"].as_u64().unwrap());
    // Another tenant cannot see it.
    assert!(h.runtime.artifacts.load("tenant-b", id).await.is_err());

    // Unpack on the host with the system tar into a temp dir and compare bytes.
    let dir = std::env::temp_dir().join(format!("highway-out-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let tar_file = dir.join("artifact.tar");
    h.runtime
        .artifacts
        .export(&h.tenant, id, &tar_file)
        .await
        .expect("artifact read back, checksum verified");
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_file)
        .arg("-C")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(std::fs::read(dir.join("out/copy.dat")).unwrap(), binary);
    assert_eq!(
        std::fs::read_to_string(dir.join("out/sub/n.txt")).unwrap(),
        "nested\n"
    );
    std::fs::remove_dir_all(&dir).ok();

    // The artifact as the input of a second run: placed under the input path.
    let a2 = h.activity().await;
    let out2 = h
        .run(
            h.ctx(a2, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "cat /data/out/sub/n.txt; cmp /data/out/copy.dat /data/out/copy.dat && wc -c < /data/out/copy.dat"],
                   "inputs": [{"path": "/data", "artifact": id}]}),
        )
        .await
        .expect("second run succeeds");
    assert_eq!(out2["stdout"], "nested\n4096\n");
    assert_no_containers(&h.docker, a).await;
    assert_no_containers(&h.docker, a2).await;
}

#[tokio::test]
async fn a_100_mib_file_goes_in_via_an_artifact_and_comes_back_out() {
    let h = DockerHarness::new().await;
    let work = std::env::temp_dir().join(format!("highway-big-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&work).unwrap();
    let big = work.join("big.bin");
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "head -c 104857600 /dev/urandom > {0} && tar -C {1} -cf {1}/in.tar big.bin",
            big.display(),
            work.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    let want = sha256_file(&big);
    let limits = TarLimits {
        max_bytes: 1 << 30,
        max_entries: 10,
    };
    let input = h
        .runtime
        .artifacts
        .import_tar_file(
            Producer {
                tenant_id: &h.tenant,
                activity_id: None,
                attempt: None,
            },
            &work.join("in.tar"),
            limits,
        )
        .await
        .expect("import");
    let a = h.activity().await;
    let out = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "timeout": "300s", "command": ["sh", "-c",
                   "sha256sum /in/big.bin | cut -d' ' -f1; cp /in/big.bin /out/big.bin"],
                   "inputs": [{"path": "/in", "artifact": input.id}],
                   "outputs": ["/out/big.bin"]}),
        )
        .await
        .expect("run succeeds");
    assert_eq!(
        out["stdout"].as_str().unwrap().trim(),
        want,
        "bytes changed on the way in"
    );
    let id: Uuid = out["outputs"]["id"].as_str().unwrap().parse().unwrap();
    let back = work.join("back");
    std::fs::create_dir_all(&back).unwrap();
    let tar_file = work.join("out.tar");
    h.runtime
        .artifacts
        .export(&h.tenant, id, &tar_file)
        .await
        .unwrap();
    let st = std::process::Command::new("tar")
        .arg("-xf")
        .arg(&tar_file)
        .arg("-C")
        .arg(&back)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        sha256_file(&back.join("out/big.bin")),
        want,
        "bytes changed on the way out"
    );
    std::fs::remove_dir_all(&work).ok();
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn outputs_are_collected_after_a_failure() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo partial > /out/r.txt; exit 2"],
                   "outputs": ["/out/r.txt", "/out/never-written"]}),
        )
        .await);
    assert_eq!(e.error_type, "NonZeroExit");
    let d = details(&e);
    assert_eq!(d["exit_code"], 2);
    assert_eq!(d["outputs"]["paths"], json!(["/out/r.txt"]));
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn hostile_output_symlink_is_refused() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "ln -s /etc/passwd /out/evil"],
                   "outputs": ["/out"]}),
        )
        .await);
    assert_eq!(e.error_type, "OutputsRefused", "{e:?}");
    assert!(!e.retryable);
    assert!(
        e.message.contains("out/evil") && e.message.contains("escapes"),
        "{}",
        e.message
    );
    assert!(details(&e)["outputs"].is_null());
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn start_failure_and_missing_artifact_still_remove_the_container() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    // With init, docker-init is what starts, and it reports the failed exec as 127.
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["/nonexistent"]}),
        )
        .await);
    assert_eq!(e.error_type, "NonZeroExit", "{e:?}");
    assert_eq!(details(&e)["exit_code"], 127);
    assert_rows_closed(&h, a).await;
    assert_no_containers(&h.docker, a).await;
    // Without init the daemon itself fails the start (trap 27: after create).
    let a = h.activity().await;
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "init": false, "command": ["/nonexistent"]}),
        )
        .await);
    assert_eq!(e.error_type, "StartFailed", "{e:?}");
    assert!(!e.retryable, "{e:?}");
    assert_rows_closed(&h, a).await;
    assert_no_containers(&h.docker, a).await;

    let a = h.activity().await;
    let e = err(h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["true"],
                   "inputs": [{"path": "/in", "artifact": Uuid::new_v4()}]}),
        )
        .await);
    assert_eq!(e.error_type, "ArtifactNotFound", "{e:?}");
    assert!(!e.retryable);
    assert!(e.message.contains("inputs[0].artifact"), "{}", e.message);
    let rows = assert_rows_closed(&h, a).await;
    assert_eq!(rows.len(), 1);
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn a_panic_after_create_or_start_still_removes_the_container() {
    for fp in [Failpoint::PanicAfterCreate, Failpoint::PanicAfterStart] {
        let h = DockerHarness::with(|_, s| s.failpoint = Some(fp)).await;
        let a = h.activity().await;
        let e = err(h
            .run(
                h.ctx(a, 1),
                json!({"image": TEST_IMAGE, "command": ["sleep", "30"], "stop_grace": "1s"}),
            )
            .await);
        assert_eq!(e.error_type, "HandlerPanic", "{fp:?}: {e:?}");
        let rows = assert_rows_closed(&h, a).await;
        assert_eq!(rows[0].removed_reason.as_deref(), Some("handler_panic"));
        assert_no_containers(&h.docker, a).await;
    }
}

#[tokio::test]
async fn cancellation_and_lease_loss_stop_and_remove_the_container() {
    let h = DockerHarness::new().await;
    for (reason, want_type, want_retryable) in [
        (CancelReason::Requested, "Cancelled", false),
        (CancelReason::LeaseLost, "LeaseLost", true),
        (CancelReason::Shutdown, "Shutdown", true),
    ] {
        let a = h.activity().await;
        let ctx = h.ctx(a, 1);
        let canceller = {
            let ctx = ctx.clone();
            let docker = h.docker.clone();
            tokio::spawn(async move {
                wait_running(&docker, a, Duration::from_secs(30)).await;
                let t = Instant::now();
                ctx.cancel(reason);
                t
            })
        };
        let e = err(h
            .run(
                ctx,
                json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "stop_grace": "3s"}),
            )
            .await);
        let cancelled_at = canceller.await.unwrap();
        assert_eq!(e.error_type, want_type);
        assert_eq!(e.retryable, want_retryable);
        // `sleep` under init dies on SIGTERM: well within the grace.
        assert!(
            cancelled_at.elapsed() < Duration::from_secs(10),
            "{:?}",
            cancelled_at.elapsed()
        );
        assert_rows_closed(&h, a).await;
        assert_no_containers(&h.docker, a).await;
    }
    // Cancelled before anything was created: nothing is created.
    let a = h.activity().await;
    let ctx = h.ctx(a, 1);
    ctx.cancel(CancelReason::Requested);
    let e = err(h
        .run(ctx, json!({"image": TEST_IMAGE, "command": ["true"]}))
        .await);
    assert_eq!(e.error_type, "Cancelled");
    assert!(tracking::rows_of_activity(&h.db.pool, a)
        .await
        .unwrap()
        .is_empty());
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn create_conflict_adopts_our_own_container_and_refuses_a_foreign_one() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptionsBuilder;
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let name = container_name(a, 1);
    let deployment_id = h.db.deployment_id().await.to_string();
    let labels = |activity: Uuid| {
        [
            ("highway.managed", "true".to_string()),
            ("highway.activity_id", activity.to_string()),
            ("highway.attempt", "1".to_string()),
            ("highway.deployment", "default".to_string()),
            ("highway.deployment_id", deployment_id.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    };
    // As if an earlier create of this attempt succeeded and its reply was lost.
    let pre = h
        .docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            ContainerCreateBody {
                image: Some(TEST_IMAGE.into()),
                cmd: Some(vec!["echo".into(), "adopted".into()]),
                labels: Some(labels(a)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let out = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["echo", "fresh"]}),
        )
        .await
        .expect("adopting run succeeds");
    assert_eq!(out["container_id"], pre.id, "did not adopt");
    assert_eq!(out["stdout"], "adopted\n");
    assert!(out["warnings"].to_string().contains("adopted"));
    assert_no_containers(&h.docker, a).await;

    // Same name, labels of another activity: refused, and the foreign container is left.
    let b = h.activity().await;
    let other = Uuid::new_v4();
    let foreign = h
        .docker
        .create_container(
            Some(
                CreateContainerOptionsBuilder::default()
                    .name(&container_name(b, 1))
                    .build(),
            ),
            ContainerCreateBody {
                image: Some(TEST_IMAGE.into()),
                cmd: Some(vec!["true".into()]),
                labels: Some(labels(other)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let e = err(h
        .run(
            h.ctx(b, 1),
            json!({"image": TEST_IMAGE, "command": ["true"]}),
        )
        .await);
    assert_eq!(e.error_type, "NameConflict");
    assert!(
        h.docker.inspect_container(&foreign.id, None).await.is_ok(),
        "foreign container removed"
    );
    h.docker
        .remove_container(
            &foreign.id,
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await
        .unwrap();
    assert_no_containers(&h.docker, other).await;
    assert_no_containers(&h.docker, b).await;
}

#[tokio::test]
async fn an_older_attempts_container_is_removed_before_the_next_attempt_creates() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    // Attempt 1 detaches, so its container stays running like one whose worker died.
    let first = h
        .run(
            h.ctx(a, 1),
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "detach": true}),
        )
        .await
        .expect("detached start");
    assert_eq!(first["status"], "running");
    let old_id = first["container_id"].as_str().unwrap().to_string();
    let rows = tracking::rows_of_activity(&h.db.pool, a).await.unwrap();
    assert!(
        rows[0].detached && rows[0].detach_expires_at.is_some(),
        "{rows:?}"
    );
    assert_eq!(managed_containers(&h.docker, a).await.len(), 1);

    let out = h
        .run(
            h.ctx(a, 2),
            json!({"image": TEST_IMAGE, "command": ["echo", "two"]}),
        )
        .await
        .expect("attempt 2 succeeds");
    assert_eq!(out["stdout"], "two\n");
    assert!(
        h.docker.inspect_container(&old_id, None).await.is_err(),
        "attempt 1 survived"
    );
    let rows = tracking::rows_of_activity(&h.db.pool, a).await.unwrap();
    let old = rows.iter().find(|r| r.container_id == old_id).unwrap();
    assert_eq!(old.status, "removed");
    assert_eq!(old.removed_reason.as_deref(), Some("older_attempt"));

    // And a stale attempt never starts next to a newer one.
    let again = h
        .run(
            h.ctx(a, 3),
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "detach": true}),
        )
        .await
        .unwrap();
    let e = err(h
        .run(
            h.ctx(a, 2),
            json!({"image": TEST_IMAGE, "command": ["true"]}),
        )
        .await);
    assert_eq!(e.error_type, "StaleAttempt");
    assert!(e.infrastructure);
    let _ = h
        .docker
        .remove_container(
            again["container_id"].as_str().unwrap(),
            Some(
                bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build(),
            ),
        )
        .await;
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn inspect_after_create_shows_the_secure_defaults_and_secrets_are_redacted() {
    let h = DockerHarness::new().await;
    let canary = format!("canary-{}", Uuid::new_v4().simple());
    // Only this test reads this variable (the resolver has a test-only prefix).
    std::env::set_var(format!("{SECRET_PREFIX}S14_CANARY"), &canary);
    let a = h.activity().await;
    let ctx = h.ctx(a, 1);
    let inspector = {
        let docker = h.docker.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let id = wait_running(&docker, a, Duration::from_secs(30)).await;
            let c = docker.inspect_container(&id, None).await.unwrap();
            // Cancel once both lines are out (on a loaded machine the shell may not have
            // echoed yet when the container shows running), so the test sees them.
            highway_tests::eventually("the container's two lines", Duration::from_secs(30), || {
                let id = id.clone();
                async move {
                    let out = tokio::task::spawn_blocking(move || {
                        std::process::Command::new("docker")
                            .args(["logs", &id])
                            .output()
                    })
                    .await
                    .unwrap()
                    .ok()?;
                    let all = format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    );
                    (all.contains("token=") && all.contains("err=")).then_some(())
                }
            })
            .await;
            ctx.cancel(CancelReason::Requested);
            c
        })
    };
    let e = err(h
        .run(
            ctx,
            json!({
                "image": TEST_IMAGE,
                "environment": {"CANARY": {"secret": "s14-canary"}, "PLAIN": "x"},
                "command": ["sh", "-c", "echo token=$CANARY; echo err=$CANARY >&2; sleep 600"],
                "stop_grace": "1s",
            }),
        )
        .await);
    assert_eq!(e.error_type, "Cancelled");
    let c = inspector.await.unwrap();
    let hc = c.host_config.expect("host config");
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(hc
        .security_opt
        .unwrap_or_default()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    assert_eq!(hc.init, Some(true));
    assert!(hc.pids_limit.unwrap_or(0) > 0);
    assert!(hc.memory.unwrap_or(0) > 0);
    assert!(hc.nano_cpus.unwrap_or(0) > 0);
    assert_ne!(hc.auto_remove, Some(true));
    let log = hc.log_config.expect("log config");
    assert!(log.config.unwrap_or_default().contains_key("max-size"));
    assert!(hc
        .binds
        .unwrap_or_default()
        .iter()
        .all(|b| !b.contains("docker.sock")));
    let cfg = c.config.unwrap();
    assert_ne!(cfg.tty, Some(true));
    let labels = cfg.labels.unwrap();
    assert_eq!(
        labels.get("highway.managed").map(String::as_str),
        Some("true")
    );
    assert_eq!(labels.get("highway.activity_id"), Some(&a.to_string()));
    assert_eq!(labels.get("highway.attempt").map(String::as_str), Some("1"));
    assert_eq!(
        labels.get("highway.worker_id"),
        Some(&h.worker_id.to_string())
    );
    assert_eq!(labels.get("highway.tenant_id"), Some(&h.tenant));
    assert!(labels.contains_key("highway.deployment"));
    // The container received the secret.
    assert!(cfg.env.unwrap().contains(&format!("CANARY={canary}")));

    // Nowhere we store or return it: result, logs, tracking rows, audit rows.
    let d = details(&e).to_string();
    assert!(d.contains("token=***"), "{d}");
    assert!(!d.contains(&canary));
    assert!(!e.message.contains(&canary));
    let lines = h.log_lines(a).await;
    assert!(
        lines.contains(&("stdout".into(), "token=***".into())),
        "{lines:?}"
    );
    for (table, col) in [
        ("highway.activity_logs", "line"),
        ("highway.docker_containers", "labels::text"),
        ("highway.audit_log", "details::text"),
    ] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE {col} LIKE '%' || $1 || '%'"
        ))
        .bind(&canary)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "the canary leaked into {table}");
    }
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn refusals_happen_before_any_container_exists() {
    let h = DockerHarness::new().await;
    let cases = [
        (
            json!({"image": TEST_IMAGE, "bogus": 1}),
            "InvalidParams",
            "bogus",
        ),
        (json!({"image": "UPPER/case:tag"}), "InvalidParams", "image"),
        (
            json!({"image": TEST_IMAGE, "privileged": true}),
            "PolicyViolation",
            "privileged",
        ),
        (
            json!({"image": TEST_IMAGE, "volumes": ["/var/run/docker.sock:/var/run/docker.sock"]}),
            "PolicyViolation",
            "volumes",
        ),
        (
            json!({"image": TEST_IMAGE, "environment": {"X": {"secret": "never-defined"}}}),
            "SecretNotFound",
            "never-defined",
        ),
    ];
    for (params, want, mention) in cases {
        let a = h.activity().await;
        let e = err(h.run(h.ctx(a, 1), params.clone()).await);
        assert_eq!(e.error_type, want, "{params}: {e:?}");
        assert!(!e.retryable, "{params}");
        assert!(e.message.contains(mention), "{params}: {}", e.message);
        assert!(tracking::rows_of_activity(&h.db.pool, a)
            .await
            .unwrap()
            .is_empty());
        assert_no_containers(&h.docker, a).await;
    }
}

#[tokio::test]
async fn pull_policy_never_with_a_missing_image_is_a_clear_non_retryable_error() {
    let h = DockerHarness::new().await;
    let a = h.activity().await;
    let image = format!("highway-test/absent-{}:1", Uuid::new_v4().simple());
    let e = err(h
        .run(h.ctx(a, 1), json!({"image": image, "pull_policy": "never"}))
        .await);
    assert_eq!(e.error_type, "ImageNotFound");
    assert!(!e.retryable);
    assert!(
        e.message.contains(&image) && e.message.contains("never"),
        "{}",
        e.message
    );
    assert!(tracking::rows_of_activity(&h.db.pool, a)
        .await
        .unwrap()
        .is_empty());
    assert_no_containers(&h.docker, a).await;
}

#[tokio::test]
async fn pulls_from_a_local_registry() {
    let h = DockerHarness::new().await;
    let reg = LocalRegistry::start().await;
    let tag = format!("t{}", Uuid::new_v4().simple());
    let remote = format!("{}/highway-test/busybox:{tag}", reg.addr);
    docker_cli(&["tag", TEST_IMAGE, &remote]);
    docker_cli(&["push", &remote]);
    docker_cli(&["rmi", &remote]);
    assert!(
        h.docker.inspect_image(&remote).await.is_err(),
        "still present locally"
    );

    let a = h.activity().await;
    let out = h
        .run(
            h.ctx(a, 1),
            json!({"image": remote, "pull_policy": "if_not_present", "command": ["echo", "pulled"]}),
        )
        .await
        .expect("pull and run succeed");
    assert_eq!(out["stdout"], "pulled\n");
    assert!(h.docker.inspect_image(&remote).await.is_ok());
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE action = 'image.pull' AND outcome = 'ok' AND activity_id = $1",
    )
    .bind(a)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 1);

    // A tag the registry does not have: refused for good, no container.
    let b = h.activity().await;
    let missing = format!("{}/highway-test/busybox:nope", reg.addr);
    let e = err(h
        .run(
            h.ctx(b, 1),
            json!({"image": missing, "pull_policy": "always"}),
        )
        .await);
    assert_eq!(e.error_type, "ImagePullFailed", "{e:?}");
    assert!(!e.retryable, "{e:?}");
    docker_cli(&["rmi", &remote]);
    assert_no_containers(&h.docker, a).await;
    assert_no_containers(&h.docker, b).await;
}
