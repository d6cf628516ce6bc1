//! `tools.docker.{inspect,stop,remove,logs,exec,pull,images,commit}` against the real
//! daemon and a real database: each tool on a detached `tools.docker.run` container,
//! tenant isolation through every tool (S2, S24), the secret canary across every sink
//! (S16), commit without secrets or `highway.*` labels, and the expiry of committed
//! images. Each test uses its own deployment and removes what it created.

use highway_tests::docker::{DockerHarness, SECRET_PREFIX, TEST_IMAGE};
use highway_worker::docker::tools::{self, Tool, ToolHandler};
use highway_worker::docker::tracking;
use highway_worker::executor::{ActivityContext, Handler, HandlerError};
use highway_workflows::docker_tools::tenant_namespace;
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const TENANT_A: &str = "tenant-a";
const TENANT_B: &str = "tenant-b";

async fn harness() -> DockerHarness {
    let deployment = format!("tools-{}", Uuid::new_v4().simple());
    DockerHarness::with(move |cfg, _| cfg.deployment = deployment).await
}

/// Inserts an activity row holding `params` (the tools read a container's creating
/// params from it) and returns its context.
async fn activity(h: &DockerHarness, tenant: &str, kind: &str, params: &Value) -> ActivityContext {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO highway.activities (id, tenant_id, kind, params) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(tenant)
    .bind(kind)
    .bind(params)
    .execute(&h.db.pool)
    .await
    .expect("insert activity");
    ActivityContext::new(
        id,
        1,
        kind.to_string(),
        tenant.to_string(),
        None,
        h.worker_id,
        "default".into(),
        None,
    )
}

/// A detached `tools.docker.run` of `tenant`; returns (result, run activity id).
async fn start(h: &DockerHarness, tenant: &str, params: Value) -> (Value, Uuid) {
    let ctx = activity(h, tenant, "tools.docker.run", &params).await;
    let id = ctx.activity_id;
    let out = h
        .handler
        .run(ctx, params)
        .await
        .expect("detached run starts");
    assert_eq!(out["status"], "running", "{out}");
    (out, id)
}

fn kind_of(tool: Tool) -> &'static str {
    match tool {
        Tool::Inspect => "tools.docker.inspect",
        Tool::Stop => "tools.docker.stop",
        Tool::Remove => "tools.docker.remove",
        Tool::Logs => "tools.docker.logs",
        Tool::Exec => "tools.docker.exec",
        Tool::Pull => "tools.docker.pull",
        Tool::Images => "tools.docker.images",
        Tool::Commit => "tools.docker.commit",
    }
}

async fn tool(
    h: &DockerHarness,
    tenant: &str,
    t: Tool,
    params: Value,
) -> Result<Value, HandlerError> {
    let ctx = activity(h, tenant, kind_of(t), &params).await;
    ToolHandler::new(h.runtime.clone(), t)
        .run(ctx, params)
        .await
}

async fn ok(h: &DockerHarness, tenant: &str, t: Tool, params: Value) -> Value {
    tool(h, tenant, t, params.clone())
        .await
        .unwrap_or_else(|e| panic!("{t:?} {params}: {e:?}"))
}

async fn fails(h: &DockerHarness, tenant: &str, t: Tool, params: Value) -> HandlerError {
    match tool(h, tenant, t, params.clone()).await {
        Ok(v) => panic!("{t:?} {params}: expected an error, got {v}"),
        Err(e) => e,
    }
}

fn set_canary(name: &str) -> String {
    let canary = format!("canary-{}", Uuid::new_v4().simple());
    let var: String = name
        .chars()
        .map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    std::env::set_var(format!("{SECRET_PREFIX}{var}"), &canary);
    canary
}

/// The canary is in none of the stored sinks.
async fn assert_no_canary(h: &DockerHarness, canary: &str) {
    for (table, col) in [
        ("highway.activities", "params::text"),
        ("highway.activities", "coalesce(result::text, '')"),
        ("highway.activities", "coalesce(error::text, '')"),
        ("highway.activity_logs", "line"),
        ("highway.docker_containers", "labels::text"),
        ("highway.audit_log", "details::text"),
        ("highway.audit_log", "coalesce(target, '')"),
        ("highway.docker_images", "reference"),
    ] {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM {table} WHERE {col} LIKE '%' || $1 || '%'"
        ))
        .bind(canary)
        .fetch_one(&h.db.pool)
        .await
        .unwrap_or_else(|e| panic!("{table}.{col}: {e}"));
        assert_eq!(n, 0, "the canary leaked into {table}.{col}");
    }
}

async fn remove_image(h: &DockerHarness, id: &str) {
    let _ = h
        .docker
        .remove_image(
            id,
            Some(
                bollard::query_parameters::RemoveImageOptionsBuilder::default()
                    .force(true)
                    .build(),
            ),
            None,
        )
        .await;
}

#[tokio::test]
async fn each_tool_on_a_detached_container_and_the_canary_never_leaks() {
    let h = harness().await;
    let canary = set_canary("tools-canary-1");
    let (run, run_id) = start(
        &h,
        TENANT_A,
        json!({
            "image": TEST_IMAGE,
            "environment": {"CANARY": {"secret": "tools-canary-1"}, "PLAIN": "plain-value"},
            "command": ["sh", "-c", "echo hello; echo oops >&2; echo token=$CANARY; sleep 600"],
            "detach": true,
            "stop_grace": "1s",
        }),
    )
    .await;
    let id = run["container_id"].as_str().unwrap().to_string();
    let name = highway_worker::docker::spec::container_name(run_id, 1);
    let mut returned: Vec<Value> = vec![run.clone()];

    // inspect: by id, short id and name; the secret is `***`, the plain value is not.
    for reference in [id.clone(), id[..12].to_string(), name.clone()] {
        let i = ok(&h, TENANT_A, Tool::Inspect, json!({"container": reference})).await;
        assert_eq!(i["container_id"], id.as_str());
        assert_eq!(i["running"], true);
        assert_eq!(i["status"], "running");
        let env: Vec<String> = serde_json::from_value(i["env"].clone()).unwrap();
        assert!(env.contains(&"CANARY=***".to_string()), "{env:?}");
        assert!(env.contains(&"PLAIN=plain-value".to_string()), "{env:?}");
        assert_eq!(i["labels"]["highway.tenant_id"], TENANT_A);
        returned.push(i);
    }

    // exec: stdin, exit code, the secret redacted in its output, and a timeout.
    let e = ok(
        &h,
        TENANT_A,
        Tool::Exec,
        json!({"container": id, "command": ["sh", "-c", "cat; echo; echo x$CANARY; exit 3"],
               "stdin": "from-stdin"}),
    )
    .await;
    assert_eq!(e["exit_code"], 3, "{e}");
    assert_eq!(e["timed_out"], false);
    assert_eq!(e["stdout"], "from-stdin\nx***\n", "{e}");
    returned.push(e);
    let started = std::time::Instant::now();
    let e = ok(
        &h,
        TENANT_A,
        Tool::Exec,
        json!({"container": name, "command": ["sh", "-c", "echo begun; sleep 30"],
               "timeout": "2s"}),
    )
    .await;
    assert_eq!(e["timed_out"], true, "{e}");
    assert_eq!(e["exit_code"], Value::Null);
    assert_eq!(e["stdout"], "begun\n", "{e}");
    assert!(started.elapsed() < Duration::from_secs(15));

    // A cancelled exec returns promptly (the process itself cannot be killed: moby#9098).
    let params = json!({"container": id, "command": ["sleep", "30"], "timeout": "60s"});
    let ctx = activity(&h, TENANT_A, "tools.docker.exec", &params).await;
    let canceller = {
        let ctx = ctx.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            ctx.cancel(highway_worker::executor::CancelReason::Requested);
        }
    };
    let exec = ToolHandler::new(h.runtime.clone(), Tool::Exec);
    let started = std::time::Instant::now();
    let (r, ()) = tokio::join!(exec.run(ctx, params), canceller);
    assert_eq!(r.unwrap_err().error_type, "Cancelled");
    assert!(started.elapsed() < Duration::from_secs(10));

    // logs from the daemon while the container exists: redacted, both streams, tail.
    let l = ok(&h, TENANT_A, Tool::Logs, json!({"container": id})).await;
    assert_eq!(l["source"], "docker");
    let lines: Vec<(String, String)> = l["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["stream"].as_str().unwrap().into(),
                x["line"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        lines.contains(&("stdout".into(), "hello".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stderr".into(), "oops".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&("stdout".into(), "token=***".into())),
        "{lines:?}"
    );
    returned.push(l);
    let l = ok(
        &h,
        TENANT_A,
        Tool::Logs,
        json!({"container": id, "tail": 1}),
    )
    .await;
    assert_eq!(l["lines"].as_array().unwrap().len(), 1, "{l}");

    // stop: grace then kill (the daemon's), the row is closed as exited.
    let s = ok(
        &h,
        TENANT_A,
        Tool::Stop,
        json!({"container": id, "grace": "1s"}),
    )
    .await;
    assert_eq!(s["was_running"], true, "{s}");
    let rows = tracking::rows_of_activity(&h.db.pool, run_id)
        .await
        .unwrap();
    assert_eq!(rows[0].status, "exited", "{rows:?}");
    let i = ok(&h, TENANT_A, Tool::Inspect, json!({"container": id})).await;
    assert_eq!(i["running"], false);
    // exec into a stopped container is refused, without the secret in the message.
    let err = fails(
        &h,
        TENANT_A,
        Tool::Exec,
        json!({"container": id, "command": ["true"]}),
    )
    .await;
    assert_eq!(err.error_type, "ContainerNotRunning");
    assert!(!err.message.contains(&canary));

    // remove: the tracking row says who and why.
    let r = ok(&h, TENANT_A, Tool::Remove, json!({"container": id})).await;
    assert_eq!(r["removed"], true, "{r}");
    let rows = tracking::rows_of_activity(&h.db.pool, run_id)
        .await
        .unwrap();
    assert_eq!(rows[0].status, "removed");
    assert_eq!(
        rows[0].removed_by.as_deref(),
        Some(h.runtime.actor().as_str())
    );
    assert!(rows[0]
        .removed_reason
        .as_deref()
        .unwrap_or("")
        .starts_with("tool:"));
    assert!(h.docker.inspect_container(&id, None).await.is_err());

    // logs after removal come from `activity_logs`.
    let l = ok(&h, TENANT_A, Tool::Logs, json!({"container": id})).await;
    assert_eq!(l["source"], "activity_logs", "{l}");
    assert!(
        l["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["line"] == "highway: container started"),
        "{l}"
    );
    // Other tools now answer "not found".
    let err = fails(&h, TENANT_A, Tool::Inspect, json!({"container": id})).await;
    assert_eq!(err.error_type, "ContainerNotFound");

    for v in &returned {
        assert!(
            !v.to_string().contains(&canary),
            "the canary leaked into {v}"
        );
    }
    assert_no_canary(&h, &canary).await;
    // Every operation was audited.
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT action FROM highway.audit_log WHERE tenant_id = $1")
            .bind(TENANT_A)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    for a in [
        "container.inspect",
        "container.exec",
        "container.logs",
        "container.stop",
        "container.remove",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} not audited: {actions:?}"
        );
    }
}

#[tokio::test]
async fn another_tenant_sees_nothing_through_any_tool() {
    let h = harness().await;
    let (run, run_id) = start(
        &h,
        TENANT_A,
        json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "detach": true,
               "stop_grace": "1s"}),
    )
    .await;
    let id = run["container_id"].as_str().unwrap().to_string();
    let name = highway_worker::docker::spec::container_name(run_id, 1);
    let commit = ok(
        &h,
        TENANT_A,
        Tool::Commit,
        json!({"container": id, "repository": "isolation", "tag": "1"}),
    )
    .await;
    let image_id = commit["image_id"].as_str().unwrap().to_string();
    let reference = commit["reference"].as_str().unwrap().to_string();

    let missing = "highway-0000000000000000000000000000dead-1";
    for reference in [id.as_str(), &id[..12], name.as_str(), missing] {
        let cases = [
            (Tool::Inspect, json!({"container": reference})),
            (Tool::Stop, json!({"container": reference, "grace": "1s"})),
            (Tool::Remove, json!({"container": reference, "force": true})),
            (Tool::Logs, json!({"container": reference})),
            (
                Tool::Exec,
                json!({"container": reference, "command": ["true"]}),
            ),
            (
                Tool::Commit,
                json!({"container": reference, "repository": "stolen"}),
            ),
        ];
        for (t, params) in cases {
            let e = fails(&h, TENANT_B, t, params.clone()).await;
            assert_eq!(e.error_type, "ContainerNotFound", "{t:?} {params}");
            // Exactly the answer for a missing container: nothing but the reference.
            assert_eq!(e.message, format!("container {reference:?} not found"));
            assert!(!e.retryable);
        }
    }
    // Still running, untouched.
    let c = h.docker.inspect_container(&id, None).await.unwrap();
    assert_eq!(c.state.unwrap().running, Some(true));

    // Images: B does not see A's commit, and cannot address its namespace.
    let b = ok(&h, TENANT_B, Tool::Images, json!({})).await;
    assert!(!b.to_string().contains(&image_id), "{b}");
    let a = ok(&h, TENANT_A, Tool::Images, json!({"reference": reference})).await;
    let a = a["images"].as_array().unwrap();
    assert!(
        a.iter()
            .any(|i| i["image_id"] == image_id.as_str() && i["owned"] == true),
        "{a:?}"
    );
    let e = fails(
        &h,
        TENANT_B,
        Tool::Pull,
        json!({"image": reference, "policy": "never"}),
    )
    .await;
    assert_eq!(e.error_type, "ImageNotFound");
    // Also through Docker Hub's implicit domain, which the daemon resolves to the same image.
    let e = fails(
        &h,
        TENANT_B,
        Tool::Pull,
        json!({"image": format!("docker.io/{reference}"), "policy": "never"}),
    )
    .await;
    assert_eq!(e.error_type, "ImageNotFound");
    // A owns it.
    let p = ok(
        &h,
        TENANT_A,
        Tool::Pull,
        json!({"image": reference, "policy": "never"}),
    )
    .await;
    assert_eq!(p["image_id"], image_id.as_str());

    // Ids that would escape the URL path are refused before anything (S24, trap 29).
    for bad in ["../images/x", "a/b", "x%2f..", ""] {
        let e = fails(&h, TENANT_A, Tool::Inspect, json!({"container": bad})).await;
        assert_eq!(e.error_type, "InvalidParams", "{bad}");
    }
    // B's attempts are audited as not_found.
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE tenant_id = $1 AND outcome = 'not_found'",
    )
    .bind(TENANT_B)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(n >= 24, "{n}");

    ok(
        &h,
        TENANT_A,
        Tool::Remove,
        json!({"container": id, "force": true}),
    )
    .await;
    remove_image(&h, &image_id).await;
}

#[tokio::test]
async fn commit_bakes_no_secret_and_no_highway_label_and_expired_images_are_reaped() {
    let h = harness().await;
    let canary = set_canary("tools-canary-2");
    let (run, _) = start(
        &h,
        TENANT_A,
        json!({
            "image": TEST_IMAGE,
            // A container that received secrets is not committed at all (see
            // `security_docker`); this one holds plain values only.
            "environment": {"MODE": "seed"},
            "labels": {"team": "infra"},
            "command": ["sleep", "600"],
            "detach": true,
            "stop_grace": "1s",
        }),
    )
    .await;
    let id = run["container_id"].as_str().unwrap().to_string();
    ok(
        &h,
        TENANT_A,
        Tool::Exec,
        json!({"container": id, "command": ["sh", "-c", "echo installed > /seed.txt"]}),
    )
    .await;
    let c = ok(
        &h,
        TENANT_A,
        Tool::Commit,
        json!({"container": id, "repository": "seed", "tag": "v1", "ttl": "1h"}),
    )
    .await;
    let image_id = c["image_id"].as_str().unwrap().to_string();
    let reference = c["reference"].as_str().unwrap().to_string();
    assert_eq!(
        reference,
        format!("highway/{}/seed:v1", tenant_namespace(TENANT_A))
    );
    assert_eq!(c["scrubbed_env"], json!([]));
    assert!(!c.to_string().contains(&canary));

    let img = h.docker.inspect_image(&image_id).await.unwrap();
    let cfg = img.config.unwrap();
    let env = cfg.env.unwrap_or_default();
    assert!(env.iter().all(|e| !e.contains(&canary)), "{env:?}");
    assert!(env.contains(&"MODE=seed".to_string()), "{env:?}");
    let labels = cfg.labels.unwrap_or_default();
    for (k, v) in &labels {
        if k.starts_with("highway.") {
            assert_eq!(v, "", "label {k} baked into the image");
        }
    }
    assert_eq!(labels.get("team").map(String::as_str), Some("infra"));

    // A child step inherits what was installed (the seed use case).
    let ctx_params = json!({"image": reference, "pull_policy": "never",
                            "command": ["cat", "/seed.txt"]});
    let ctx = activity(&h, TENANT_A, "tools.docker.run", &ctx_params).await;
    let out = h.handler.run(ctx, ctx_params).await.expect("child run");
    assert_eq!(out["stdout"], "installed\n", "{out}");
    // Another tenant cannot run A's snapshot: it answers like a missing image.
    let p = json!({"image": reference, "pull_policy": "if_not_present", "command": ["true"]});
    let ctx = activity(&h, TENANT_B, "tools.docker.run", &p).await;
    let e = h
        .handler
        .run(ctx, p)
        .await
        .expect_err("foreign image refused");
    assert_eq!(e.error_type, "ImageNotFound", "{e}");

    // Tracked, then reaped once expired (unless pinned).
    let row = tools::tracked_image(&h.db.pool, &image_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.tenant_id, TENANT_A);
    assert!(row.expires_at.is_some() && !row.pinned);
    let pinned = ok(
        &h,
        TENANT_A,
        Tool::Commit,
        json!({"container": id, "repository": "seed", "tag": "pinned", "pinned": true}),
    )
    .await;
    let pinned_id = pinned["image_id"].as_str().unwrap().to_string();
    assert_eq!(pinned["expires_at"], Value::Null);
    ok(
        &h,
        TENANT_A,
        Tool::Remove,
        json!({"container": id, "force": true}),
    )
    .await;
    sqlx::query("UPDATE highway.docker_images SET expires_at = now() - interval '1 second'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let daemon = h.runtime.client.daemon_id().await.unwrap();
    // The reaper runs on every GC pass and leaves a failed removal to the next one. A
    // loaded daemon can fail one removal (it failed once in CI, reason not kept), so
    // give it three passes; the audit rows of failed ones say why.
    let mut passes = Vec::new();
    for _ in 0..3 {
        let counts = tools::reap_expired_images(
            &h.runtime.client,
            &h.db.pool,
            &h.runtime.actor(),
            &daemon,
            10,
        )
        .await
        .unwrap();
        let retry = counts.failed > 0 && counts.removed == 0;
        passes.push(counts);
        if !retry {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let failures: Vec<Value> = sqlx::query_scalar(
        "SELECT details FROM highway.audit_log WHERE action = 'image.gc_remove' AND outcome = 'failed'",
    )
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    // A removal whose call timed out may still have gone through: the next pass then
    // finds the image gone and records that.
    let last = passes.last().unwrap();
    let reason = match (last.removed, last.gone, last.in_use) {
        (1, 0, 0) => "expired",
        (0, 1, 0) if passes.len() > 1 => "gone",
        _ => panic!("passes {passes:?}, failures {failures:?}"),
    };
    assert!(h.docker.inspect_image(&image_id).await.is_err());
    let row = tools::tracked_image(&h.db.pool, &image_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.removed_reason.as_deref(), Some(reason));
    // Pinned: kept past its expiry.
    assert!(h.docker.inspect_image(&pinned_id).await.is_ok());
    remove_image(&h, &pinned_id).await;
    assert_no_canary(&h, &canary).await;
    remove_image(&h, &image_id).await;
}

#[tokio::test]
async fn commit_is_refused_when_secret_keys_are_unknown() {
    let h = harness().await;
    // The harness's activity rows carry `{}` params: the worker cannot tell which
    // environment keys came from secrets.
    let a = h.activity().await;
    let mut ctx = h.ctx(a, 1);
    ctx.tenant_id = TENANT_A.into();
    let out = h
        .handler
        .run(
            ctx,
            json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "detach": true,
                   "environment": {"V": "visible-value"}, "stop_grace": "1s"}),
        )
        .await
        .unwrap();
    let id = out["container_id"].as_str().unwrap().to_string();
    let e = fails(
        &h,
        h.tenant.as_str(),
        Tool::Commit,
        json!({"container": id, "repository": "nope"}),
    )
    .await;
    assert_eq!(e.error_type, "CommitRefused", "{e:?}");
    // And inspect hides every value (fails closed).
    let i = ok(
        &h,
        h.tenant.as_str(),
        Tool::Inspect,
        json!({"container": id}),
    )
    .await;
    assert!(
        i["env"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e.as_str().unwrap().ends_with("=***")),
        "{i}"
    );
    ok(
        &h,
        h.tenant.as_str(),
        Tool::Remove,
        json!({"container": id, "force": true}),
    )
    .await;
}

#[tokio::test]
async fn pull_policies_and_image_filters() {
    // Host images a tenant does not own are listed only when the allow-list names them.
    let deployment = format!("tools-{}", Uuid::new_v4().simple());
    let h = DockerHarness::with(move |cfg, _| {
        cfg.deployment = deployment;
        cfg.policy.allowed_images = vec!["highway-test/*".into()];
    })
    .await;
    let p = ok(
        &h,
        TENANT_A,
        Tool::Pull,
        json!({"image": TEST_IMAGE, "policy": "never"}),
    )
    .await;
    assert_eq!(p["pulled"], false);
    assert!(p["image_id"].as_str().unwrap().starts_with("sha256:"));
    let p2 = ok(&h, TENANT_A, Tool::Pull, json!({"image": TEST_IMAGE})).await;
    assert_eq!(p2["image_id"], p["image_id"]);
    let e = fails(
        &h,
        TENANT_A,
        Tool::Pull,
        json!({"image": "highway-test/absent:1", "policy": "never"}),
    )
    .await;
    assert_eq!(e.error_type, "ImageNotFound");
    let e = fails(&h, TENANT_A, Tool::Pull, json!({"image": "UPPER:x"})).await;
    assert_eq!(e.error_type, "InvalidParams");

    let l = ok(
        &h,
        TENANT_A,
        Tool::Images,
        json!({"reference": "highway-test/busybox"}),
    )
    .await;
    let images = l["images"].as_array().unwrap();
    assert!(
        images.iter().any(|i| i["image_id"] == p["image_id"]),
        "{images:?}"
    );
    let l = ok(
        &h,
        TENANT_A,
        Tool::Images,
        json!({"reference": "highway-test/absent"}),
    )
    .await;
    assert!(l["images"].as_array().unwrap().is_empty());
    ok(
        &h,
        TENANT_A,
        Tool::Images,
        json!({"dangling": true, "labels": ["x=y"]}),
    )
    .await;
    let e = fails(&h, TENANT_A, Tool::Images, json!({"bogus": 1})).await;
    assert_eq!(e.error_type, "InvalidParams");
    assert!(e.message.contains("bogus"));
}

#[tokio::test]
async fn secrets_store_encrypts_resolves_per_tenant_and_the_cli_never_prints_values() {
    use highway_worker::docker::secret_store::{SecretStore, SecretsKey, TableSecretResolver};
    use highway_worker::docker::secrets::EnvSecretResolver;
    use highway_worker::docker::{DockerRuntime, RunHandler};
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::sync::Arc;

    let h = harness().await;
    let key_hex = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let key = SecretsKey::parse(&key_hex).unwrap();
    let store = SecretStore::new(h.db.pool.clone(), key);
    let canary = format!("canary-{}", Uuid::new_v4().simple());
    store.set(TENANT_A, "db-pass", &canary).await.unwrap();

    // The CLI, through the API (whose server holds the key): the value comes from
    // stdin and is never printed.
    let api = crate::cli_remote::ApiServer::start_with_secrets(&h.db.url, Some(&key_hex));
    let cli_canary = format!("canary-{}", Uuid::new_v4().simple());
    let bin = highway_tests::highway_bin();
    let mut child = Command::new(&bin)
        .args(["secrets", "set", "--tenant", TENANT_A, "cli-secret"])
        .env_remove("DATABASE_URL")
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{cli_canary}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!printed.contains(&cli_canary), "{printed}");
    let ls = Command::new(&bin)
        .args(["secrets", "ls", "--tenant", TENANT_A, "--json"])
        .env_remove("DATABASE_URL")
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .output()
        .unwrap();
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains("cli-secret") && ls.contains("db-pass"), "{ls}");
    assert!(!ls.contains(&canary) && !ls.contains(&cli_canary), "{ls}");

    // At rest: ciphertext only.
    for c in [&canary, &cli_canary] {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM highway.secrets
              WHERE position(convert_to($1, 'UTF8') in ciphertext) > 0
                 OR position(convert_to($1, 'UTF8') in nonce) > 0",
        )
        .bind(c)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        assert_eq!(n, 0);
    }

    // The run handler resolves through the table, per tenant.
    let dir = std::env::temp_dir().join(format!("highway-artifacts-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let resolver = TableSecretResolver::new(
        Some(store.clone()),
        EnvSecretResolver::with_prefix(SECRET_PREFIX),
    );
    let rt = Arc::new(
        DockerRuntime::new(
            h.runtime.config.clone(),
            h.db.pool.clone(),
            h.worker_id,
            dir.clone(),
        )
        .with_secrets(Arc::new(resolver)),
    );
    let run = RunHandler::new(rt.clone());
    let params = json!({
        "image": TEST_IMAGE,
        "environment": {"A": {"secret": "db-pass"}, "B": {"secret": "cli-secret"}},
        "command": ["sh", "-c", "echo $A $B; echo ${#A} ${#B}"],
    });
    let ctx = activity(&h, TENANT_A, "tools.docker.run", &params).await;
    let out = run
        .run(ctx, params.clone())
        .await
        .expect("run with stored secrets");
    assert_eq!(
        out["stdout"],
        format!("*** ***\n{} {}\n", canary.len(), cli_canary.len()),
        "{out}"
    );
    let ctx = activity(&h, TENANT_B, "tools.docker.run", &params).await;
    let e = run.run(ctx, params).await.unwrap_err();
    assert_eq!(e.error_type, "SecretNotFound", "{e:?}");
    assert!(!e.message.contains(&canary));

    // `highway audit ls` (through the API) shows this tenant's Docker operations.
    let api = crate::cli_remote::ApiServer::start(&h.db.url);
    let audit = Command::new(&bin)
        .args([
            "audit",
            "ls",
            "--tenant",
            TENANT_A,
            "--action",
            "container.*",
            "--json",
        ])
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(audit.contains("\"container.create\""), "{audit}");
    assert!(!audit.contains(TENANT_B), "{audit}");
    // The operator's `secrets set` is audited too: the name, never the value.
    let audit = Command::new(&bin)
        .args(["audit", "ls", "--action", "secret.*", "--json"])
        .env("HIGHWAY_API_URL", &api.base)
        .env("HIGHWAY_TOKEN", &api.admin)
        .output()
        .unwrap();
    let audit = String::from_utf8_lossy(&audit.stdout).to_string();
    assert!(
        audit.contains("\"secret.set\"") && audit.contains("cli-secret"),
        "{audit}"
    );

    // Gone after rm.
    store.remove(TENANT_A, "db-pass").await.unwrap();
    assert!(store.get(TENANT_A, "db-pass").await.unwrap().is_none());
    for c in [&canary, &cli_canary] {
        assert_no_canary(&h, c).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tool run by a worker of another Docker host never acts on a container of this one:
/// a worker on host B asked to inspect, stop or remove a container tracked on host A
/// refuses (`ContainerOnAnotherHost`, retried uncounted so a worker of host A may take
/// it) without a Docker call, and the container and its row are left as they were.
#[tokio::test]
async fn tools_on_another_host_never_touch_the_container() {
    let h = harness().await;
    let (out, run_id) = start(
        &h,
        TENANT_A,
        json!({"image": TEST_IMAGE, "command": ["sleep", "60"], "detach": true}),
    )
    .await;
    let id = out["container_id"].as_str().unwrap().to_string();
    let cfg_b = highway_worker::config::docker::DockerConfig {
        host: highway_tests::docker::docker_b_host(),
        deployment: h.runtime.deployment.name().to_string(),
        ..Default::default()
    };
    let rt_b = std::sync::Arc::new(highway_worker::docker::DockerRuntime::new(
        cfg_b,
        h.db.pool.clone(),
        Uuid::new_v4(),
        std::env::temp_dir(),
    ));
    for (t, params) in [
        (Tool::Inspect, json!({"container": id})),
        (Tool::Stop, json!({"container": id, "grace": "1s"})),
        (Tool::Remove, json!({"container": id})),
    ] {
        let ctx = activity(&h, TENANT_A, kind_of(t), &params).await;
        let err = ToolHandler::new(rt_b.clone(), t)
            .run(ctx, params)
            .await
            .expect_err("a tool on another host is refused");
        assert_eq!(err.error_type, "ContainerOnAnotherHost", "{t:?}: {err:?}");
        assert!(err.infrastructure, "{t:?}: {err:?}");
    }
    let i = ok(&h, TENANT_A, Tool::Inspect, json!({"container": id})).await;
    assert_eq!(i["running"], true, "{i}");
    let rows = tracking::rows_of_activity(&h.db.pool, run_id)
        .await
        .unwrap();
    assert_eq!(rows[0].status, "running", "{rows:?}");
    let r = ok(
        &h,
        TENANT_A,
        Tool::Remove,
        json!({"container": id, "force": true}),
    )
    .await;
    assert_eq!(r["removed"], true, "{r}");
}
