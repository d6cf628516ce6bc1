//! Private registries: a `docker-registry` of the test's own with htpasswd auth and TLS
//! (the run's test certificate), the test image pushed to it and its local tag removed,
//! then pulled by a real `highway worker` / `highway up` child process:
//! - credentials stored through the CLI and the API (global and per tenant, the
//!   tenant's entry winning) make the pull and the run succeed; wrong ones fail once;
//! - credentials from a Docker `config.json` (`--docker-config`) do too, and a stored
//!   entry wins over the file;
//! - without credentials the pull fails once as a non-retryable `ImagePullFailed`
//!   saying unauthorized, and the registry sees exactly one pull (no retry storm);
//! - the canary: the passwords (and their base64 forms) appear in no log line of the
//!   worker, no table, no API answer, no CLI output and no audit row.

use crate::cli_remote::{run_cli, spawn_up, stop_up};
use highway_tests::docker::{docker_cli, remove_leftovers, LocalRegistry};
use highway_tests::{eventually, highway_bin, status_of, Process, TestDb};
use highway_workflows::{EnqueueRequest, HumanDuration};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const REPO: &str = "private/busybox";
const USER: &str = "highway-reg";

/// A key of this test run only, in the format HIGHWAY_SECRETS_KEY takes (64 hex digits).
fn secrets_key() -> String {
    format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple())
}

/// A password nothing else on the machine contains.
fn canary(label: &str) -> String {
    format!("{label}-pw-{}", Uuid::new_v4().simple())
}

/// A private state dir, removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new() -> Self {
        let p = std::env::temp_dir().join(format!("highway-registry-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `highway worker --no-http` in its own deployment and state dir, its log in
/// `worker.log` there.
fn spawn_worker(db: &TestDb, state: &Path, deployment: &str, env: &[(&str, &str)]) -> Process {
    let mut all: Vec<(&str, &str)> = vec![
        ("HIGHWAY_DEPLOYMENT", deployment),
        ("HIGHWAY_POLL_INTERVAL", "100ms"),
        ("HIGHWAY_RESCUE_INTERVAL", "200ms"),
    ];
    all.extend_from_slice(env);
    let mut cmd = Command::new(highway_bin());
    cmd.args([
        "--state-dir",
        state.to_str().unwrap(),
        "worker",
        "--no-http",
    ])
    .env("DATABASE_URL", &db.url)
    .env("RUST_LOG", "debug")
    .env_remove("HIGHWAY_SECRETS_KEY")
    .env_remove("HIGHWAY_DOCKER_CONFIG")
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(state.join("worker.out")).unwrap())
    .stderr(std::fs::File::create(state.join("worker.log")).unwrap());
    for (k, v) in all {
        cmd.env(k, v);
    }
    Process {
        child: cmd.spawn().expect("spawn highway worker"),
    }
}

/// Enqueues a run of `image` for `tenant` that must pull it, with room for retries (so
/// a failure that is retried shows as more than one attempt or pull).
async fn enqueue_run(db: &TestDb, tenant: &str, image: &str) -> Uuid {
    let mut req = EnqueueRequest::new(
        "tools.docker.run",
        json!({"image": image, "pull_policy": "always", "command": ["echo", "private-ok"]}),
    );
    req.tenant_id = tenant.to_string();
    req.retry_policy.maximum_attempts = 5;
    req.retry_policy.initial_interval = HumanDuration::from_millis(100);
    req.retry_policy.maximum_interval = HumanDuration::from_millis(200);
    db.client().enqueue(&req).await.expect("enqueue").id
}

/// Waits until the activity is terminal; returns (status, attempt, result, error).
async fn finished(db: &TestDb, id: Uuid) -> (String, i32, Value, Value) {
    eventually("the activity finishes", WAIT, || async {
        let (status, attempt) = status_of(&db.pool, id).await;
        if !["succeeded", "failed", "cancelled", "timed_out"].contains(&status.as_str()) {
            return None;
        }
        let (result, error): (Option<Value>, Option<Value>) =
            sqlx::query_as("SELECT result, error FROM highway.activities WHERE id = $1")
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        Some((
            status,
            attempt,
            result.unwrap_or(Value::Null),
            error.unwrap_or(Value::Null),
        ))
    })
    .await
}

/// The pull failed once, for good, saying unauthorized and `why`.
fn assert_unauthorized_once(status: &str, attempt: i32, error: &Value, why: &str) {
    assert_eq!(status, "failed", "{error}");
    assert_eq!(attempt, 1, "retried: {error}");
    assert_eq!(error["type"], "ImagePullFailed", "{error}");
    assert_eq!(error["retryable"], false, "{error}");
    let msg = error["message"].as_str().unwrap_or_default();
    assert!(msg.contains("unauthorized") && msg.contains(why), "{msg}");
}

/// One failed pull reached the registry since `before` (and, when the daemon's own
/// error was unclear, the worker's one manifest inspect to tell a refusal apart), and
/// nothing more for a while after the failure: it was final, not the first of a retry
/// storm. (A bounded wait is the only way to see that nothing more happens.)
async fn assert_one_pull(reg: &LocalRegistry, before: usize) {
    let n = reg.pulls();
    assert!(
        (before + 1..=before + 2).contains(&n),
        "{} registry sessions for one pull; registry log:\n{}",
        n - before,
        reg.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(reg.pulls(), n, "registry log:\n{}", reg.log());
}

#[tokio::test]
async fn without_credentials_a_private_pull_fails_once_as_unauthorized() {
    let db = TestDb::new().await;
    let password = canary("nocreds");
    let reg = LocalRegistry::start_private(USER, &password).await;
    let tag = format!("t{}", Uuid::new_v4().simple());
    let image = reg.push_test_image(REPO, &tag, Some((USER, &password)));
    let before = reg.pulls();
    let state = StateDir::new();
    let deployment = format!("registry-{}", Uuid::new_v4().simple());
    let mut worker = spawn_worker(&db, &state.0, &deployment, &[]);

    let a = enqueue_run(&db, "default", &image).await;
    let (status, attempt, _, error) = finished(&db, a).await;
    assert_unauthorized_once(&status, attempt, &error, "no credentials are configured");
    assert_one_pull(&reg, before).await;
    let (s, n) = status_of(&db.pool, a).await;
    assert_eq!((s.as_str(), n), ("failed", 1));

    worker.signal(libc::SIGTERM);
    worker.wait_exit(WAIT).await;
    remove_leftovers(&deployment, None);
}

#[tokio::test]
async fn credentials_from_a_docker_config_json_and_stored_entries_win() {
    let db = TestDb::new().await;
    let password = canary("file");
    let reg = LocalRegistry::start_private(USER, &password).await;
    let tag = format!("t{}", Uuid::new_v4().simple());
    let image = reg.push_test_image(REPO, &tag, Some((USER, &password)));
    // What `docker login` writes: `{"auths": {"127.0.0.1:PORT": {"auth": base64}}}`.
    let config = reg.login_config(USER, &password);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"auth\""), "{text}");
    let key = secrets_key();
    let state = StateDir::new();
    let deployment = format!("registry-{}", Uuid::new_v4().simple());
    let mut worker = spawn_worker(
        &db,
        &state.0,
        &deployment,
        &[
            ("HIGHWAY_DOCKER_CONFIG", config.to_str().unwrap()),
            ("HIGHWAY_SECRETS_KEY", &key),
        ],
    );

    let a = enqueue_run(&db, "default", &image).await;
    let (status, _, result, error) = finished(&db, a).await;
    assert_eq!(status, "succeeded", "{error}");
    assert_eq!(result["stdout"], "private-ok\n");
    docker_cli(&["rmi", &image]);

    // A stored (global) entry wins over the file: with a wrong password the pull is
    // refused, although the file's credentials are right.
    let wrong = canary("wrong");
    let store = highway_worker::docker::registry_store::RegistryStore::new(
        db.pool.clone(),
        Some(highway_worker::docker::secret_store::SecretsKey::parse(&key).unwrap()),
    );
    store
        .add(
            None,
            &reg.addr,
            USER,
            &highway_worker::docker::secrets::SecretValue::new(wrong.clone()),
            "test",
        )
        .await
        .unwrap();
    let pulls = reg.pulls();
    let b = enqueue_run(&db, "default", &image).await;
    let (status, attempt, _, error) = finished(&db, b).await;
    assert_unauthorized_once(&status, attempt, &error, "stored globally");
    assert_one_pull(&reg, pulls).await;

    worker.signal(libc::SIGTERM);
    worker.wait_exit(WAIT).await;
    let log = std::fs::read_to_string(state.0.join("worker.log")).unwrap();
    for secret in [&password, &wrong] {
        assert!(
            !log.contains(secret.as_str()),
            "worker log leaks a password"
        );
    }
    remove_leftovers(&deployment, None);
}

/// Every text the outside world can see: each table of the schema as text.
async fn dump_tables(db: &TestDb) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
          WHERE table_schema = 'highway' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(tables.contains(&"registry_credentials".to_string()));
    let mut out = String::new();
    for t in tables {
        let rows: Vec<String> =
            sqlx::query_scalar(&format!("SELECT t::text FROM highway.\"{t}\" t"))
                .fetch_all(&db.pool)
                .await
                .unwrap();
        out.push_str(&format!("== {t}\n{}\n", rows.join("\n")));
    }
    out
}

/// `highway --state-dir STATE ARGS` (the CLI finds the API and the admin token there),
/// `stdin` on its standard input.
fn cli(state: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(highway_bin());
    cmd.args(["--state-dir", state.to_str().unwrap()])
        .args(args)
        .env_remove("HIGHWAY_TOKEN")
        .env_remove("HIGHWAY_TOKEN_FILE")
        .env_remove("HIGHWAY_API_URL");
    match stdin {
        None => run_cli(cmd, &[]),
        Some(input) => {
            use std::io::Write;
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("run highway");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(format!("{input}\n").as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    }
}

#[tokio::test]
async fn stored_credentials_per_tenant_and_global_and_the_canary() {
    let db = TestDb::new().await;
    let password = canary("right");
    let wrong = canary("wrong");
    let reg = LocalRegistry::start_private(USER, &password).await;
    let tag = format!("t{}", Uuid::new_v4().simple());
    let image = reg.push_test_image(REPO, &tag, Some((USER, &password)));
    let host = reg.addr.clone();
    let key = secrets_key();
    let state = StateDir::new();
    let deployment = format!("registry-{}", Uuid::new_v4().simple());
    let (mut up, base) = spawn_up(&db.url, &state.0, |cmd| {
        cmd.env("RUST_LOG", "debug")
            .env("HIGHWAY_SECRETS_KEY", &key)
            .env("HIGHWAY_DEPLOYMENT", &deployment)
            .env("HIGHWAY_RESCUE_INTERVAL", "200ms")
            .env_remove("HIGHWAY_DOCKER_CONFIG");
    })
    .await;
    let mut seen = String::new();

    // CLI: a global entry with the wrong password, the right one for tenant `t-right`.
    let (code, out, err) = cli(
        &state.0,
        &[
            "registry",
            "add",
            &host,
            "--username",
            USER,
            "--password-stdin",
        ],
        Some(&wrong),
    );
    assert_eq!(code, 0, "{out}{err}");
    seen.push_str(&format!("{out}{err}"));
    let (code, out, err) = cli(
        &state.0,
        &[
            "registry",
            "add",
            &host,
            "--username",
            USER,
            "--password-stdin",
            "--tenant",
            "t-right",
        ],
        Some(&password),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("stored"), "{err}");
    seen.push_str(&format!("{out}{err}"));
    let (code, out, err) = cli(&state.0, &["registry", "ls", "--json"], None);
    assert_eq!(code, 0, "{out}{err}");
    seen.push_str(&format!("{out}{err}"));
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert_eq!(listed[0]["scope"], "global");
    assert_eq!(listed[1]["tenant_id"], "t-right");
    assert!(listed
        .iter()
        .all(|i| i["host"] == host.as_str() && i["username"] == USER));
    assert!(listed.iter().all(|i| i.get("password").is_none()));

    // The tenant's entry wins over the global one for its pulls.
    let a = enqueue_run(&db, "t-right", &image).await;
    let (status, _, result, error) = finished(&db, a).await;
    assert_eq!(status, "succeeded", "{error}");
    assert_eq!(result["stdout"], "private-ok\n");
    seen.push_str(&result.to_string());
    docker_cli(&["rmi", &image]);

    // Another tenant gets the global entry, whose password is wrong: refused once.
    let pulls = reg.pulls();
    let b = enqueue_run(&db, "t-other", &image).await;
    let (status, attempt, _, error) = finished(&db, b).await;
    assert_unauthorized_once(&status, attempt, &error, "stored globally");
    assert_one_pull(&reg, pulls).await;

    // The API: replace the global entry (200, replaced), the password never answered.
    let admin = std::fs::read_to_string(state.0.join("admin.token")).unwrap();
    let http = reqwest::Client::new();
    let resp = http
        .put(format!("{base}/v1/registries/{host}"))
        .bearer_auth(admin.trim())
        .json(&json!({"username": USER, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    seen.push_str(&body);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["replaced"].clone(), v["scope"].clone()),
        (json!(true), json!("global"))
    );
    let c = enqueue_run(&db, "t-other", &image).await;
    let (status, _, result, error) = finished(&db, c).await;
    assert_eq!(status, "succeeded", "{error}");
    seen.push_str(&result.to_string());
    docker_cli(&["rmi", &image]);

    // A tenant token sees and manages only its own tenant's entries.
    let (_, tenant_token) =
        highway_worker::api::store::create_token(&db.pool, "reg-tenant", Some("t-right"))
            .await
            .unwrap();
    let body = http
        .get(format!("{base}/v1/registries"))
        .bearer_auth(&tenant_token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen.push_str(&body);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(v["items"][0]["tenant_id"], "t-right");
    let resp = http
        .put(format!("{base}/v1/registries/{host}"))
        .bearer_auth(&tenant_token)
        .json(&json!({"username": USER, "password": wrong, "tenant_id": "t-other"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("tenant_id"), "{body}");
    seen.push_str(&body);
    // A bad field is named at the door, and a mistyped password is not echoed.
    let resp = http
        .put(format!("{base}/v1/registries/{host}"))
        .bearer_auth(admin.trim())
        .json(&json!({"username": "a:b", "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("username"), "{body}");
    seen.push_str(&body);
    let resp = http
        .put(format!("{base}/v1/registries/bad%20host"))
        .bearer_auth(admin.trim())
        .json(&json!({"username": USER, "password": wrong}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body = resp.text().await.unwrap();
    assert!(body.contains("host"), "{body}");
    seen.push_str(&body);

    // CLI rm of the tenant entry; rm again is a clear error.
    let (code, out, err) = cli(
        &state.0,
        &["registry", "rm", &host, "--tenant", "t-right"],
        None,
    );
    assert_eq!(code, 0, "{out}{err}");
    seen.push_str(&format!("{out}{err}"));
    let (code, out, err) = cli(
        &state.0,
        &["registry", "rm", &host, "--tenant", "t-right"],
        None,
    );
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
    seen.push_str(&format!("{out}{err}"));
    let (_, out, err) = cli(&state.0, &["registry", "ls"], None);
    seen.push_str(&format!("{out}{err}"));
    assert!(out.contains(&host) && out.contains("global"), "{out}");

    // Every change is audited (host and username, never the password).
    let audit = http
        .get(format!("{base}/v1/audit"))
        .query(&[("action", "registry.*")])
        .bearer_auth(admin.trim())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    seen.push_str(&audit);
    let rows: Vec<(Option<String>, String, String)> = sqlx::query_as(
        "SELECT tenant_id, action, target FROM highway.audit_log
          WHERE action LIKE 'registry.%' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let want = |t: Option<&str>, a: &str| (t.map(str::to_string), a.to_string(), host.clone());
    assert_eq!(
        rows,
        vec![
            want(None, "registry.add"),
            want(Some("t-right"), "registry.add"),
            want(None, "registry.add"),
            want(Some("t-right"), "registry.rm"),
        ]
    );
    for a in [a, b, c] {
        let body = http
            .get(format!("{base}/v1/activities/{a}"))
            .bearer_auth(admin.trim())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen.push_str(&body);
    }

    stop_up(&mut up).await;
    // The canary: no password, in clear or base64 (alone or as docker's user:password),
    // anywhere the outside world can read.
    seen.push_str(&std::fs::read_to_string(state.0.join("up.log")).unwrap());
    seen.push_str(&std::fs::read_to_string(state.0.join("up.out")).unwrap());
    let tables = dump_tables(&db).await;
    assert!(
        tables.contains("registry.add") && tables.contains(&host),
        "the dump holds the audit rows"
    );
    assert!(
        seen.contains("debug") || seen.contains("DEBUG"),
        "the worker log was captured at debug level"
    );
    seen.push_str(&tables);
    for (i, secret) in [&password, &wrong].into_iter().enumerate() {
        let forms = [
            secret.to_string(),
            highway_tests::base64(secret.as_bytes()),
            highway_tests::base64(format!("{USER}:{secret}").as_bytes()),
        ];
        for (j, form) in forms.iter().enumerate() {
            // The message names which password and which form, never the value.
            assert!(
                !seen.contains(form.as_str()),
                "password {i} leaked in form {j}"
            );
        }
    }
    remove_leftovers(&deployment, None);
}
