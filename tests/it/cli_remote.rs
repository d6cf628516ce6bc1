//! The CLI over the API against a running `highway up`: `activities ls|show`, `audit
//! ls`, `gc --dry-run` (the plan lists an orphan and removes nothing), tenant scoping
//! (another tenant's id fails exactly like a missing one), the token never in any
//! output, and the zero-config path (no HIGHWAY_TOKEN: the CLI finds
//! `<state-dir>/admin.token`, written mode 0600, and `<state-dir>/api.url`).
//!
//! Also [`ApiServer`]: an in-process API server for CLI tests that need only the API;
//! and [`spawn_up`] / [`stop_up`] / [`run_cli`]: `highway up` as a child and a CLI
//! run, shared with `api` and `api_schedules`.

use highway_tests::docker::{docker_cli, ensure_test_image, TEST_IMAGE};
use highway_tests::{eventually, highway_bin, TestDb};
use highway_worker::api::{self, store, AppState};
use highway_worker::config::api::ApiConfig;
use highway_worker::health::Health;
use highway_workflows::EnqueueRequest;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// An API server on a free loopback port, on its own thread and runtime (callers may
/// block theirs on a child `highway` process), with an admin token; stopped on drop.
pub(crate) struct ApiServer {
    pub base: String,
    pub admin: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ApiServer {
    pub(crate) fn start(db_url: &str) -> Self {
        Self::start_with_secrets(db_url, None)
    }

    /// With the secrets store's key (`/v1/secrets`), as `HIGHWAY_SECRETS_KEY` text.
    pub(crate) fn start_with_secrets(db_url: &str, secrets_key: Option<&str>) -> Self {
        let key = secrets_key.map(|k| {
            highway_worker::docker::secret_store::SecretsKey::parse(k).expect("a valid key")
        });
        let url = db_url.to_string();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                let (_, admin) = store::create_token(&pool, "cli-test-admin", None)
                    .await
                    .unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let base = format!("http://{}", listener.local_addr().unwrap());
                ready_tx.send((base, admin)).unwrap();
                let state = AppState::new(Health::default(), pool.clone(), ApiConfig::default())
                    .with_secrets(key);
                api::serve(listener, state, async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
                pool.close().await;
            });
        });
        let (base, admin) = ready_rx.recv().expect("the API server started");
        Self {
            base,
            admin,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `highway up` as a child on a free loopback port, with `state` as its state dir (its
/// stdout and stderr in `up.out` and `up.log` there), the database at `db_url` and a
/// 100 ms poll; `configure` adds the caller's environment (RUST_LOG at least). Returns
/// the child and the base URL once `/health` answers.
pub(crate) async fn spawn_up(
    db_url: &str,
    state: &Path,
    configure: impl FnOnce(&mut Command),
) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut cmd = Command::new(highway_bin());
    cmd.args([
        "--state-dir",
        state.to_str().unwrap(),
        "up",
        "--listen",
        &listen,
    ])
    .env("DATABASE_URL", db_url)
    .env("HIGHWAY_POLL_INTERVAL", "100ms")
    .stdout(std::fs::File::create(state.join("up.out")).unwrap())
    .stderr(std::fs::File::create(state.join("up.log")).unwrap());
    configure(&mut cmd);
    let child = cmd.spawn().expect("spawn highway up");
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    eventually("highway up answers /health", WAIT, || async {
        http.get(format!("{base}/health"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    (child, base)
}

/// Runs `cmd` (a `highway` command line) to completion with `env` added; returns (exit
/// code, stdout, stderr).
pub(crate) fn run_cli(mut cmd: Command, env: &[(&str, &str)]) -> (i32, String, String) {
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run highway");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// SIGTERM to `highway up`, then waits for it to exit (a failure after WAIT).
pub(crate) async fn stop_up(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "highway up did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `highway up` as a child with its own state dir, deployment and port.
struct Up {
    child: Child,
    state: PathBuf,
    base: String,
    deployment: String,
}

impl Up {
    async fn start(db: &TestDb, state: &Path, deployment: &str) -> Self {
        let (child, base) = spawn_up(&db.url, state, |cmd| {
            cmd.env("RUST_LOG", "info,sqlx=warn")
                .env("HIGHWAY_DEPLOYMENT", deployment)
                // One pass at start, then none during the test: the plan must find the
                // orphan still there (the grace is short so it is judged at all).
                .env("HIGHWAY_GC_PERIOD", "1h")
                .env("HIGHWAY_GC_CREATION_GRACE", "1s")
                .env_remove("HIGHWAY_TOKEN")
                .env_remove("HIGHWAY_TOKEN_FILE")
                .env_remove("HIGHWAY_API_URL");
        })
        .await;
        Self {
            child,
            state: state.to_path_buf(),
            base,
            deployment: deployment.to_string(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("up.log")).unwrap_or_default()
            + &std::fs::read_to_string(self.state.join("up.out")).unwrap_or_default()
    }

    /// `highway ARGS` with no token, API URL or state dir from the caller's environment
    /// (DATABASE_URL points at a closed port: these commands must not need it).
    fn cli(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        let mut cmd = Command::new(highway_bin());
        cmd.args(args)
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
            .env_remove("HIGHWAY_TOKEN")
            .env_remove("HIGHWAY_TOKEN_FILE")
            .env_remove("HIGHWAY_API_URL")
            .env_remove("HIGHWAY_STATE_DIR")
            .env("RUST_LOG", "warn");
        run_cli(cmd, env)
    }

    /// The CLI with an explicit token and URL.
    fn with_token(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        self.cli(
            args,
            &[("HIGHWAY_API_URL", &self.base), ("HIGHWAY_TOKEN", token)],
        )
    }

    async fn get(&self, path: &str, token: &str) -> Value {
        reqwest::Client::new()
            .get(format!("{}{path}", self.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        stop_up(&mut self.child).await;
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // Containers this test made (labelled with its deployment).
        if let Ok(out) = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=highway.deployment={}", self.deployment),
            ])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
    }
}

fn temp_state(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("highway-cli-remote-{tag}-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Activities parked on a queue `highway up` does not claim (they stay `scheduled`, so
/// the CLI and the API see the same rows).
async fn parked(db: &TestDb, tenant: &str) -> Uuid {
    db.client()
        .enqueue(
            &EnqueueRequest::new("highway.noop", json!({"n": 1}))
                .tenant(tenant)
                .queue("cli-remote-parked"),
        )
        .await
        .unwrap()
        .id
}

fn no_secret(token: &str, texts: &[&str]) {
    for t in texts {
        assert!(!t.contains(&token[3..]), "the token was printed: {t}");
    }
}

/// `activities ls|show --json` equal the API's answers; a tenant token sees only its
/// own; another tenant's id fails exactly like a missing one; `audit ls --json` with
/// its filters; `gc --dry-run --json` lists an orphan (terminal activity) and leaves it;
/// tenant tokens get 403 for the plan. No token in any output.
#[tokio::test]
async fn activities_audit_and_gc_plan_through_the_api() {
    ensure_test_image();
    let db = TestDb::new().await;
    let state = temp_state("api");
    let deployment = format!("clir-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let up = Up::start(&db, &state, &deployment).await;
    let (_, admin) = store::create_token(&db.pool, "admin", None).await.unwrap();
    let (_, ta) = store::create_token(&db.pool, "a", Some("tenant-a"))
        .await
        .unwrap();
    let (_, tb) = store::create_token(&db.pool, "b", Some("tenant-b"))
        .await
        .unwrap();
    let a1 = parked(&db, "tenant-a").await;
    let b1 = parked(&db, "tenant-b").await;
    let mut outputs: Vec<String> = Vec::new();

    // ls --json is the API's list, item for item.
    let (rc, out, err) = up.with_token(
        &admin,
        &["activities", "ls", "--json", "--queue", "cli-remote-parked"],
    );
    assert_eq!(rc, 0, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    let api = up
        .get("/v1/activities?queue=cli-remote-parked&limit=50", &admin)
        .await;
    assert_eq!(cli, api["items"], "CLI and API disagree");
    assert_eq!(cli.as_array().unwrap().len(), 2, "{cli}");
    outputs.extend([out, err]);

    // A tenant token sees only its own.
    let (rc, out, err) = up.with_token(&ta, &["activities", "ls", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let items: Value = serde_json::from_str(&out).unwrap();
    let items = items.as_array().unwrap();
    assert!(items.iter().any(|a| a["id"] == a1.to_string()), "{out}");
    assert!(items.iter().all(|a| a["tenant_id"] == "tenant-a"), "{out}");
    // `--tenant` cannot widen a tenant token's scope.
    let (rc, out, _) = up.with_token(&ta, &["activities", "ls", "--json", "--tenant", "tenant-b"]);
    assert_eq!(rc, 0);
    assert!(!out.contains(&b1.to_string()), "{out}");
    // Filters reach the API; a bad one is named.
    let (rc, _, err) = up.with_token(&admin, &["activities", "ls", "--status", "nope"]);
    assert_ne!(rc, 0);
    assert!(err.contains("--status"), "{err}");
    let (rc, out, _) = up.with_token(
        &admin,
        &[
            "activities",
            "ls",
            "--json",
            "--tenant",
            "tenant-b",
            "--queue",
            "cli-remote-parked",
        ],
    );
    assert_eq!(rc, 0);
    let items: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(items.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(items[0]["id"], b1.to_string());
    // The table names the activity too.
    let (rc, out, _) = up.with_token(&ta, &["activities", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        out.starts_with("ID") && out.contains(&a1.to_string()),
        "{out}"
    );
    outputs.push(out);

    // show --json is the API's object.
    let (rc, out, err) = up.with_token(&ta, &["activities", "show", &a1.to_string(), "--json"]);
    assert_eq!(rc, 0, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli, up.get(&format!("/v1/activities/{a1}"), &ta).await);
    assert_eq!(cli["tenant_id"], "tenant-a");
    // Another tenant's id fails exactly like an id that does not exist.
    let (rc_other, out_other, err_other) =
        up.with_token(&ta, &["activities", "show", &b1.to_string()]);
    let missing = Uuid::new_v4();
    let (rc_missing, _, err_missing) =
        up.with_token(&ta, &["activities", "show", &missing.to_string()]);
    assert_ne!(rc_other, 0);
    assert_eq!(rc_other, rc_missing);
    assert!(out_other.is_empty(), "{out_other}");
    assert!(err_other.contains("404"), "{err_other}");
    assert_eq!(
        err_other, err_missing,
        "another tenant's id is distinguishable"
    );
    // An admin narrowing to the wrong tenant gets the same 404.
    let (rc, _, err) = up.with_token(
        &admin,
        &[
            "activities",
            "show",
            &a1.to_string(),
            "--tenant",
            "tenant-b",
        ],
    );
    assert_ne!(rc, 0);
    assert_eq!(err, err_missing);
    outputs.extend([err_other, err_missing]);

    // audit ls: an API enqueue is audited; tenants see their rows only.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/activities", up.base))
        .bearer_auth(&ta)
        .json(&json!({"kind": "highway.noop", "queue": "cli-remote-parked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let enq: Value = resp.json().await.unwrap();
    let enq_id = enq["id"].as_str().unwrap().to_string();
    let (rc, out, err) = up.with_token(
        &admin,
        &[
            "audit",
            "ls",
            "--json",
            "--action",
            "activity.*",
            "--tenant",
            "tenant-a",
        ],
    );
    assert_eq!(rc, 0, "{err}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rows.iter()
            .any(|r| r["activity_id"] == enq_id.as_str() && r["action"] == "activity.enqueue"),
        "{out}"
    );
    let api = up
        .get(
            "/v1/audit?action=activity.*&tenant=tenant-a&limit=100",
            &admin,
        )
        .await;
    assert_eq!(
        Value::from(rows.clone()),
        api["items"],
        "CLI and API disagree"
    );
    let (rc, out, _) = up.with_token(&tb, &["audit", "ls", "--json"]);
    assert_eq!(rc, 0);
    assert!(
        !out.contains(&enq_id),
        "tenant b sees tenant a's audit: {out}"
    );
    let (rc, out, _) = up.with_token(
        &admin,
        &["audit", "ls", "--json", "--until", "2000-01-01T00:00:00Z"],
    );
    assert_eq!(rc, 0);
    assert!(out.trim().is_empty(), "{out}");
    let (rc, _, err) = up.with_token(&admin, &["audit", "ls", "--container", "ab"]);
    assert_ne!(rc, 0);
    assert!(err.contains("--container"), "{err}");
    let (rc, out, _) = up.with_token(&admin, &["audit", "ls", "--limit", "1"]);
    assert_eq!(rc, 0);
    assert_eq!(out.lines().count(), 2, "header and one row: {out}");

    // gc --dry-run: an orphan (managed, its activity terminal) is listed with its reason
    // and survives. The startup pass is over before it exists (the period is 1 h).
    eventually("the collector started", WAIT, || async {
        up.log().contains("garbage collector started").then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = db
        .client()
        .enqueue(&EnqueueRequest::new("highway.noop", json!({})).tenant("tenant-a"))
        .await
        .unwrap()
        .id;
    db.client().wait(done, None, WAIT).await.unwrap();
    let identity = db.deployment_id().await;
    let orphan = docker_cli(&[
        "run",
        "-d",
        "--init",
        &format!("--name={deployment}-orphan"),
        "--label=highway.managed=true",
        &format!("--label=highway.deployment={deployment}"),
        &format!("--label=highway.deployment_id={identity}"),
        &format!("--label=highway.activity_id={done}"),
        "--label=highway.attempt=1",
        "--label=highway.tenant_id=tenant-a",
        TEST_IMAGE,
        "sleep",
        "600",
    ])
    .trim()
    .to_string();
    // Past the 1 s grace even counted from the end of `Created`'s whole second.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (rc, out, err) = up.with_token(&admin, &["gc", "--dry-run", "--json"]);
    assert_eq!(rc, 0, "{err}");
    let plan: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(plan["deployment"], deployment.as_str());
    let listed = plan["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["container_id"] == orphan.as_str())
        .unwrap_or_else(|| panic!("orphan not in the plan: {plan}"))
        .clone();
    assert_eq!(listed["reason"], "terminal", "{plan}");
    assert_eq!(listed["activity_id"], done.to_string());
    assert!(listed["running"].as_bool().unwrap());
    let still = docker_cli(&["inspect", "-f", "{{.State.Running}}", &orphan]);
    assert_eq!(still.trim(), "true", "the dry run touched the container");
    let (rc, out, err) = up.with_token(&admin, &["gc", "--dry-run"]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains(&orphan[..12]) && out.contains("terminal"),
        "{out}"
    );
    outputs.push(out);
    // Admin only.
    let (rc, _, err) = up.with_token(&ta, &["gc", "--dry-run", "--json"]);
    assert_ne!(rc, 0);
    assert!(err.contains("403"), "{err}");
    outputs.push(err);
    // Still there: nothing removed it.
    assert_eq!(
        docker_cli(&["inspect", "-f", "{{.State.Running}}", &orphan]).trim(),
        "true"
    );
    docker_cli(&["rm", "-f", &orphan]);

    for t in [&admin, &ta, &tb] {
        let texts: Vec<&str> = outputs.iter().map(String::as_str).collect();
        no_secret(t, &texts);
    }
    up.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}

/// Zero-config: `highway up` writes `<state-dir>/admin.token` (0600, never printed) and
/// `<state-dir>/api.url`; the CLI with no HIGHWAY_TOKEN / HIGHWAY_API_URL uses them
/// (state dir by flag or HIGHWAY_STATE_DIR). A restart keeps the token; stopping removes
/// the URL.
#[tokio::test]
async fn zero_config_admin_token_from_the_state_dir() {
    use std::os::unix::fs::PermissionsExt;
    let db = TestDb::new().await;
    let state = temp_state("zero");
    let deployment = format!("clir-{}", &Uuid::new_v4().simple().to_string()[..12]);
    let up = Up::start(&db, &state, &deployment).await;
    let token_file = state.join("admin.token");
    let token = eventually("admin.token written", WAIT, || async {
        std::fs::read_to_string(&token_file)
            .ok()
            .filter(|t| t.ends_with('\n'))
    })
    .await
    .trim()
    .to_string();
    assert!(token.starts_with("hw_"), "not a token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token mode {mode:o}");
    let url = std::fs::read_to_string(state.join("api.url")).unwrap();
    assert_eq!(url.trim(), up.base);
    // An admin token this database knows.
    let known: Option<(Option<String>,)> = sqlx::query_as(
        "SELECT tenant_id FROM highway.api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL",
    )
    .bind(store::token_hash(&token))
    .fetch_optional(&db.pool)
    .await
    .unwrap();
    assert_eq!(known, Some((None,)), "not a live admin token");

    let a = parked(&db, "tenant-z").await;
    let state_s = state.to_str().unwrap();
    // --state-dir, and nothing else.
    let (rc, out, err) = up.cli(&["--state-dir", state_s, "activities", "ls", "--json"], &[]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains(&a.to_string()), "{out}");
    no_secret(&token, &[&out, &err]);
    // HIGHWAY_STATE_DIR works the same.
    let (rc, out, err) = up.cli(
        &["activities", "show", &a.to_string()],
        &[("HIGHWAY_STATE_DIR", state_s)],
    );
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("tenant-z"), "{out}");
    no_secret(&token, &[&out, &err]);
    // An explicit HIGHWAY_TOKEN still wins over the file.
    let (rc, _, err) = up.cli(
        &["--state-dir", state_s, "activities", "ls"],
        &[("HIGHWAY_TOKEN", &store::generate_token())],
    );
    assert_ne!(rc, 0);
    assert!(err.contains("401"), "{err}");
    // Elsewhere (no file): the error names the missing token and where it looked.
    let empty = temp_state("empty");
    let (rc, _, err) = up.cli(
        &["--state-dir", empty.to_str().unwrap(), "activities", "ls"],
        &[("HIGHWAY_API_URL", &up.base)],
    );
    assert_ne!(rc, 0);
    assert!(
        err.contains("HIGHWAY_TOKEN") && err.contains("admin.token"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&empty);

    // The banner names the file, never the token.
    let log = up.log();
    assert!(log.contains(token_file.to_str().unwrap()), "{log}");
    no_secret(&token, &[&log]);

    // A restart keeps the token (it is known); stopping removes the URL.
    up.stop().await;
    assert!(!state.join("api.url").exists(), "api.url left after stop");
    let up = Up::start(&db, &state, &deployment).await;
    eventually("api.url written again", WAIT, || async {
        state.join("api.url").exists().then_some(())
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(&token_file).unwrap().trim(),
        token,
        "the restart replaced a valid token"
    );
    let (rc, _, err) = up.cli(
        &["--state-dir", state_s, "audit", "ls", "--limit", "1"],
        &[],
    );
    assert_eq!(rc, 0, "{err}");
    up.stop().await;
    let _ = std::fs::remove_dir_all(&state);
}
