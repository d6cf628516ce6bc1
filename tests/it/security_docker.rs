//! Security findings on the Docker side, through the real daemon: a container that
//! received secrets (environment and files) never yields an image holding them or a
//! `highway.*` label (the image's `Config`, `ContainerConfig`, history and every layer
//! of `docker save` are scanned), and a cached workflow step receiving secrets runs
//! uncached instead of failing; a tenant's image listing shows only its own images and
//! those the operator's allow-list names; a symlink chain (`c -> .`,
//! `b -> c/c/c/c/c/c/../../../../../..`) is refused in outputs and in input placement, so
//! nothing is written outside the input's directory. Each test uses its own deployment,
//! images with unique names, and removes what it created.

use highway_tests::docker::{
    assert_no_containers, docker_cli, DockerHarness, SECRET_PREFIX, TEST_IMAGE,
};
use highway_tests::{TestDb, TestWorker};
use highway_worker::docker::tools::{Tool, ToolHandler};
use highway_worker::executor::{ActivityContext, Handler, HandlerError};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TENANT: &str = "tenant-a";

async fn harness(allowed_images: Vec<String>) -> DockerHarness {
    let deployment = format!("sec-{}", Uuid::new_v4().simple());
    DockerHarness::with(move |cfg, _| {
        cfg.deployment = deployment;
        cfg.policy.allowed_images = allowed_images;
    })
    .await
}

/// An activity row holding `params` (the tools read a container's creating params from
/// it) and its context.
async fn activity(h: &DockerHarness, kind: &str, params: &Value) -> ActivityContext {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO highway.activities (id, tenant_id, kind, params) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(TENANT)
    .bind(kind)
    .bind(params)
    .execute(&h.db.pool)
    .await
    .expect("insert activity");
    ActivityContext::new(
        id,
        1,
        kind.to_string(),
        TENANT.to_string(),
        None,
        h.worker_id,
        "default".into(),
        None,
    )
}

async fn run(h: &DockerHarness, params: Value) -> (Result<Value, HandlerError>, Uuid) {
    let ctx = activity(h, "tools.docker.run", &params).await;
    let id = ctx.activity_id;
    (h.handler.run(ctx, params).await, id)
}

async fn tool(
    h: &DockerHarness,
    t: Tool,
    kind: &str,
    params: Value,
) -> Result<Value, HandlerError> {
    let ctx = activity(h, kind, &params).await;
    ToolHandler::new(h.runtime.clone(), t)
        .run(ctx, params)
        .await
}

/// Sets the secret `name` (through the harness's environment resolver) to a fresh
/// canary value and returns it.
fn set_canary(name: &str) -> String {
    let canary = format!("canary-{}", Uuid::new_v4().simple());
    let var = name.replace('-', "_").to_ascii_uppercase();
    std::env::set_var(format!("{SECRET_PREFIX}{var}"), &canary);
    canary
}

/// Everything in an image that holds `canary` or a `highway.*` label: `docker image
/// inspect` (Config and ContainerConfig, Env and Labels), `docker history`, and every
/// file of every layer of `docker save`.
fn image_leaks(image: &str, canary: &str) -> Vec<String> {
    let mut leaks = Vec::new();
    let inspect: Value =
        serde_json::from_str(&docker_cli(&["image", "inspect", image])).expect("inspect JSON");
    let img = &inspect[0];
    for section in ["Config", "ContainerConfig"] {
        let cfg = &img[section];
        for e in cfg["Env"].as_array().into_iter().flatten() {
            if e.as_str().unwrap_or_default().contains(canary) {
                leaks.push(format!("{section}.Env {e}"));
            }
        }
        for (k, _) in cfg["Labels"].as_object().into_iter().flatten() {
            if k.starts_with("highway.") {
                leaks.push(format!("{section}.Labels {k}"));
            }
        }
    }
    if img.to_string().contains(canary) {
        leaks.push("image inspect".into());
    }
    if docker_cli(&["history", "--no-trunc", image]).contains(canary) {
        leaks.push("history".into());
    }
    let dir = std::env::temp_dir().join(format!("highway-save-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let saved = dir.join("image.tar");
    docker_cli(&["save", "-o", saved.to_str().unwrap(), image]);
    let mut outer = tar::Archive::new(std::fs::File::open(&saved).unwrap());
    for e in outer.entries().unwrap() {
        let mut e = e.unwrap();
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if contains(&data, canary.as_bytes()) {
            leaks.push(format!("save: {name}"));
        }
        if name.ends_with("layer.tar") {
            let mut layer = tar::Archive::new(&data[..]);
            for f in layer.entries().unwrap() {
                let mut f = f.unwrap();
                let path = String::from_utf8_lossy(&f.path_bytes()).into_owned();
                let mut content = Vec::new();
                f.read_to_end(&mut content).unwrap();
                if contains(&content, canary.as_bytes()) {
                    leaks.push(format!("layer file {path}"));
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    leaks
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn image_exists(reference: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `tools.docker.commit` of a container that received a secret as an environment value
/// and as a file: either an image with no trace of it (and no `highway.*` label), or a
/// clear non-retryable refusal and no image at all. The engine keeps the container's own
/// config as `ContainerConfig`, so on this daemon it is the refusal.
#[tokio::test]
async fn a_container_that_received_secrets_never_becomes_an_image_holding_them() {
    let h = harness(Vec::new()).await;
    let name = format!("sec-canary-{}", Uuid::new_v4().simple());
    let canary = set_canary(&name);
    let (out, _) = run(
        &h,
        json!({
            "image": TEST_IMAGE,
            "environment": {"TOK": {"secret": name}},
            "secrets": [{"name": name}],
            "command": ["sleep", "600"],
            "detach": true,
            "stop_grace": "1s",
        }),
    )
    .await;
    let out = out.expect("detached run starts");
    let id = out["container_id"].as_str().unwrap().to_string();
    let repo = format!("leak{}", Uuid::new_v4().simple());
    let commit = tool(
        &h,
        Tool::Commit,
        "tools.docker.commit",
        json!({"container": id, "repository": repo, "tag": "v1"}),
    )
    .await;
    // Removed first, so a failing assertion below leaves no container behind.
    tool(
        &h,
        Tool::Remove,
        "tools.docker.remove",
        json!({"container": id, "force": true}),
    )
    .await
    .expect("remove");
    match commit {
        Ok(c) => {
            let image_id = c["image_id"].as_str().unwrap().to_string();
            let leaks = image_leaks(&image_id, &canary);
            let _ = Command::new("docker")
                .args(["rmi", "-f", &image_id])
                .output();
            assert!(leaks.is_empty(), "the committed image leaks: {leaks:#?}");
        }
        Err(e) => {
            assert_eq!(e.error_type, "CommitRefused", "{e:?}");
            assert!(!e.retryable, "{e:?}");
            assert!(e.message.contains("secrets"), "{e:?}");
            assert!(e.message.contains("TOK"), "names the variable: {e:?}");
            assert!(
                e.message.contains(&format!("/run/secrets/{name}")),
                "names the file: {e:?}"
            );
            assert!(!e.to_string().contains(&canary), "{e:?}");
            let images: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.docker_images")
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
            assert_eq!(images, 0, "no image tracked");
            let reference = format!(
                "highway/{}/{repo}:v1",
                highway_workflows::docker_tools::tenant_namespace(TENANT)
            );
            assert!(!image_exists(&reference), "{reference} exists");
        }
    }
    let audit: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE details::text LIKE '%' || $1 || '%'",
    )
    .bind(&canary)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(audit, 0);
}

/// Imports a one-file image under `reference` (its own image id, nobody's).
fn import_image(reference: &str) {
    let mut b = tar::Builder::new(Vec::new());
    let mut hd = tar::Header::new_gnu();
    let data = reference.as_bytes();
    hd.set_size(data.len() as u64);
    hd.set_mode(0o644);
    hd.set_cksum();
    b.append_data(&mut hd, "marker", data).unwrap();
    let bytes = b.into_inner().unwrap();
    let mut child = Command::new("docker")
        .args(["import", "-", reference])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker import");
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    assert!(child.wait().unwrap().success(), "docker import {reference}");
}

fn listed_ids(v: &Value) -> Vec<String> {
    v["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["image_id"].as_str().unwrap().to_string())
        .collect()
}

/// An image on the daemon that no tenant owns (here one the test imports under a unique
/// name) is invisible to a tenant's listing, filtered or not, unless the operator's
/// allow-list names it; the tenant's own commit is listed either way.
#[tokio::test]
async fn a_tenant_lists_only_its_own_images_and_the_allowed_ones() {
    let reference = format!("highway-sec-test/foreign-{}:1", Uuid::new_v4().simple());
    import_image(&reference);
    let foreign_id = docker_cli(&["image", "inspect", "--format", "{{.Id}}", &reference])
        .trim()
        .to_string();

    let h = harness(Vec::new()).await;
    let filtered = tool(
        &h,
        Tool::Images,
        "tools.docker.images",
        json!({"reference": reference}),
    )
    .await
    .expect("images");
    let all = tool(&h, Tool::Images, "tools.docker.images", json!({}))
        .await
        .expect("images");
    // The tenant's own commit (of a container without secrets) is listed.
    let (out, _) = run(
        &h,
        json!({"image": TEST_IMAGE, "command": ["sleep", "600"], "detach": true, "stop_grace": "1s"}),
    )
    .await;
    let id = out.expect("detached run")["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    let c = tool(
        &h,
        Tool::Commit,
        "tools.docker.commit",
        json!({"container": id, "repository": "own", "tag": "v1"}),
    )
    .await
    .expect("commit without secrets");
    let own_id = c["image_id"].as_str().unwrap().to_string();
    let mine = tool(&h, Tool::Images, "tools.docker.images", json!({}))
        .await
        .expect("images");
    tool(
        &h,
        Tool::Remove,
        "tools.docker.remove",
        json!({"container": id, "force": true}),
    )
    .await
    .expect("remove");

    // The operator allows the foreign image by name: now it is listed (not owned).
    let name = reference.rsplit_once(':').unwrap().0.to_string();
    let allowed = harness(vec![name]).await;
    let listed = tool(
        &allowed,
        Tool::Images,
        "tools.docker.images",
        json!({"reference": reference}),
    )
    .await
    .expect("images");

    let _ = Command::new("docker").args(["rmi", "-f", &own_id]).output();
    let _ = Command::new("docker")
        .args(["rmi", "-f", &reference])
        .output();

    assert!(
        listed_ids(&filtered).is_empty(),
        "a filtered listing shows a host image nobody owns: {filtered}"
    );
    assert!(
        !listed_ids(&all).contains(&foreign_id),
        "the listing shows a host image nobody owns"
    );
    assert!(
        listed_ids(&mine).contains(&own_id),
        "own commit not listed: {mine}"
    );
    let own = mine["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["image_id"] == own_id.as_str())
        .unwrap();
    assert_eq!(own["owned"], true);
    assert!(listed_ids(&listed).contains(&foreign_id), "{listed}");
    assert_eq!(listed["images"][0]["owned"], false, "{listed}");
}

/// Builds a tar by hand (the `tar` crate's Builder refuses nothing here, but the names
/// and targets are written raw to keep them exactly as given).
fn raw_tar(entries: &[(&str, tar::EntryType, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o777 });
        h.set_size(0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        if !link.is_empty() {
            h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }
    b.into_inner().unwrap()
}

/// The chain `c -> .`, `b -> c/c/c/c/c/c/../../../../../..` looks balanced but climbs
/// six levels. As a run's output it is refused; an artifact holding it (stored as it
/// was before the check knew better) placed at `/in` with a file at `/in/out/b/etc/x`
/// is refused before the container starts: nothing lands in `/etc`.
#[tokio::test]
async fn a_symlink_chain_never_escapes_through_outputs_or_inputs() {
    let h = harness(Vec::new()).await;
    let (out, a1) = run(
        &h,
        json!({
            "image": TEST_IMAGE,
            "command": ["sh", "-c",
                        "mkdir -p /out && ln -s . /out/c && ln -s c/c/c/c/c/c/../../../../../.. /out/b"],
            "outputs": ["/out"],
        }),
    )
    .await;
    match out {
        Ok(v) => panic!("the chain was stored as an output: {v}"),
        Err(e) => {
            assert_eq!(e.error_type, "OutputsRefused", "{e:?}");
            assert!(!e.retryable, "{e:?}");
            assert!(e.message.contains("out/b"), "names the entry: {e:?}");
        }
    }
    assert_no_containers(&h.docker, a1).await;

    // An artifact written without validation, as one stored earlier would be.
    let bytes = raw_tar(&[
        ("out", tar::EntryType::Directory, ""),
        (
            "out/b",
            tar::EntryType::Symlink,
            "c/c/c/c/c/c/../../../../../..",
        ),
        ("out/c", tar::EntryType::Symlink, "."),
    ]);
    // Stored as an older version would have stored it: straight into the artifact
    // tables, with no validation on the way in.
    let sha256 = {
        let f = std::env::temp_dir().join(format!("highway-chain-{}.tar", Uuid::new_v4()));
        std::fs::write(&f, &bytes).unwrap();
        let sha = highway_tests::docker::sha256_file(&f);
        std::fs::remove_file(&f).ok();
        sha
    };
    let stored_id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO highway.artifacts (id, tenant_id, size_bytes, sha256, entry_count,
                                        paths, storage, state, chunk_count)
         VALUES ($1, $2, $3, $4, 3, ARRAY['/out'], 'postgres', 'complete', 1)",
    )
    .bind(stored_id)
    .bind(TENANT)
    .bind(bytes.len() as i64)
    .bind(&sha256)
    .execute(&h.db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO highway.artifact_chunks (artifact_id, seq, data) VALUES ($1, 0, $2)")
        .bind(stored_id)
        .bind(&bytes)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let marker = format!("x-{}", Uuid::new_v4().simple());
    let (res, a2) = run(
        &h,
        json!({
            "image": TEST_IMAGE,
            "inputs": [
                {"path": "/in", "artifact": stored_id},
                {"path": format!("/in/out/b/etc/{marker}"), "content": "pwned"},
            ],
            "command": ["cat", format!("/etc/{marker}")],
        }),
    )
    .await;
    match res {
        Ok(v) => panic!("the input was placed; the container read: {v}"),
        Err(e) => {
            assert_eq!(e.error_type, "InvalidInput", "{e:?}");
            assert!(!e.retryable, "{e:?}");
            assert!(e.message.contains("in/out/b"), "names the entry: {e:?}");
        }
    }
    assert_no_containers(&h.docker, a2).await;
}

/// A cached workflow step whose container receives a secret runs uncached
/// (`miss-no-commit`, saying why): the run succeeds, nothing is committed.
#[tokio::test]
async fn a_cached_step_receiving_secrets_runs_uncached() {
    use highway_worker::docker::client::{ClientSettings, DockerClient};
    use highway_worker::docker::secrets::EnvSecretResolver;
    use highway_worker::workflow::DockerDigests;
    use highway_workflows::definition::WorkflowDefinition;
    use highway_workflows::runs::{self, ImageDigests};

    highway_tests::docker::ensure_test_image();
    let db = TestDb::new().await;
    let artifacts = std::env::temp_dir().join(format!("highway-sec-wf-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&artifacts).unwrap();
    let digests: Arc<dyn ImageDigests> = Arc::new(DockerDigests::with_ttl(
        DockerClient::new(ClientSettings::default()),
        Duration::ZERO,
    ));
    let mut opts = TestWorker::fast_options(2);
    opts.digests = highway_worker::workflow::Digests(digests.clone());
    let cfg = highway_worker::config::docker::DockerConfig {
        deployment: format!("sec-{}", Uuid::new_v4().simple()),
        ..Default::default()
    };
    let rt = Arc::new(
        highway_worker::docker::DockerRuntime::new(
            cfg,
            db.pool.clone(),
            opts.id,
            artifacts.clone(),
        )
        .with_secrets(Arc::new(EnvSecretResolver::with_prefix(SECRET_PREFIX))),
    );
    let worker = TestWorker::start(&db.pool, opts, |r| {
        highway_worker::docker::register(r, rt.clone())
    });

    let name = format!("sec-wf-{}", Uuid::new_v4().simple());
    let canary = set_canary(&name);
    let def = json!({
        "name": "secret-cache",
        "steps": [{"id": "build", "kind": "tools.docker.run",
                   "cache": {"key": format!("k-{}", Uuid::new_v4().simple())},
                   "retry_policy": {"maximum_attempts": 1},
                   "params": {"image": TEST_IMAGE, "pull_policy": "never",
                              "environment": {"TOK": {"secret": name}},
                              "command": ["sh", "-c", "test -n \"$TOK\""]}}]
    });
    let def = WorkflowDefinition::from_json(&def.to_string()).expect("valid definition");
    let run_id = runs::start_run(
        &db.client(),
        TENANT,
        &def,
        &Default::default(),
        digests.as_ref(),
    )
    .await
    .expect("run starts");
    let status = runs::wait_run(&db.pool, run_id, Some(TENANT), Duration::from_secs(90))
        .await
        .expect("run finishes");
    let commits: Vec<(String, Option<Value>)> = sqlx::query_as(
        "SELECT status, error FROM highway.activities WHERE kind = 'tools.docker.commit'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let images: Vec<(String,)> = sqlx::query_as("SELECT image_id FROM highway.docker_images")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for (id,) in &images {
        let _ = Command::new("docker").args(["rmi", "-f", id]).output();
    }
    let activity = status.steps[0].activity_id;
    worker.stop().await;
    if let Some(a) = activity {
        // The kept container of a cache miss (if any) is the GC's after its retention.
        highway_tests::docker::remove_leftovers(rt.deployment.name(), None);
        assert_no_containers(&highway_tests::docker::docker().await, a).await;
    }
    std::fs::remove_dir_all(&artifacts).ok();

    assert_eq!(status.status, "succeeded", "{status:#?}");
    let step = &status.steps[0];
    assert_eq!(
        step.cache_decision.as_deref(),
        Some("miss-no-commit"),
        "{status:#?}"
    );
    let reason = step.cache_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("secrets") && reason.contains("TOK"),
        "{reason}"
    );
    assert!(!reason.contains(&canary));
    assert!(commits.is_empty(), "a commit was attempted: {commits:?}");
    assert!(images.is_empty(), "an image was committed: {images:?}");
}
