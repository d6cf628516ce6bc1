//! The CLI as a remote operator uses it: the spawned `highway` binary with only
//! HIGHWAY_API_URL and HIGHWAY_TOKEN (no DATABASE_URL, a state dir with nothing in it)
//! against a real API server and an in-process worker. Every client command: activity
//! ls|show|logs|enqueue|cancel|retry, run start|ls|show|logs|cancel, container ls, worker
//! ls, queue ls, token create|ls|revoke, secret set|ls|rm, audit ls, completions; the
//! exit codes (3 failed, 4 wait timed out, 5 cancelled, clap's 2); the older names as
//! aliases; table against json output; tenant scoping.

use crate::cli_remote::ApiServer;
use highway_tests::docker::{ensure_test_image, TEST_IMAGE};
use highway_tests::{eventually, highway_bin, TestDb, TestWorker};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
/// A queue no test worker claims from: activities there wait.
const PARKED: &str = "cli-api-parked";
const SECRETS_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// The environment of a remote operator: API URL and token, nothing else of ours.
struct Operator {
    base: String,
    state: PathBuf,
}

impl Operator {
    fn new(base: &str) -> Self {
        let state = std::env::temp_dir().join(format!("highway-cli-api-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&state).unwrap();
        Self {
            base: base.to_string(),
            state,
        }
    }

    fn command(&self, token: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(highway_bin());
        cmd.args(args)
            .env_remove("DATABASE_URL")
            .env_remove("HIGHWAY_TOKEN_FILE")
            .env_remove("HIGHWAY_OUTPUT")
            .env("HIGHWAY_STATE_DIR", &self.state)
            .env("HIGHWAY_API_URL", &self.base)
            .env("HIGHWAY_TOKEN", token)
            .env("COLUMNS", "200")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `highway ARGS`; (exit code, stdout, stderr).
    fn run(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.command(token, args).output().expect("run highway");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs it and parses stdout as JSON, asserting exit code `rc`.
    fn json(&self, token: &str, args: &[&str], rc: i32) -> Value {
        let (code, out, err) = self.run(token, args);
        assert_eq!(code, rc, "highway {args:?}\nstdout: {out}\nstderr: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// Runs it and parses stdout as JSON lines (streams and `audit ls`).
    fn json_lines(&self, token: &str, args: &[&str]) -> Vec<Value> {
        let (code, out, err) = self.run(token, args);
        assert_eq!(code, 0, "highway {args:?}\nstderr: {err}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{args:?}: {e}: {l}")))
            .collect()
    }

    fn with_stdin(&self, token: &str, args: &[&str], input: &str) -> (i32, String, String) {
        let mut child = self
            .command(token, args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().expect("an id").to_string()
}

/// Activities end to end with exit codes 0/3/4/5, retry, the older aliases, and table
/// against JSON output.
// Multi-threaded: the CLI runs as a blocking child process while the in-process worker
// must keep claiming on another thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_commands_and_exit_codes_over_the_api_only() {
    let db = TestDb::new().await;
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let api = ApiServer::start(&db.url);
    let op = Operator::new(&api.base);
    let admin = api.admin.as_str();

    // enqueue --wait: 0 on success, the result printed.
    let ok = op.json(
        admin,
        &[
            "activity",
            "enqueue",
            "highway.noop",
            "--params",
            r#"{"a":1}"#,
            "--wait",
            "--output",
            "json",
        ],
        0,
    );
    assert_eq!(
        (ok["status"].as_str(), ok["attempt"].as_i64()),
        (Some("succeeded"), Some(1))
    );
    assert_eq!(ok["result"], json!({"echo": {"a": 1}}));
    // The older `enqueue --json` still works, through the API too.
    let old = op.json(admin, &["enqueue", "highway.noop", "--wait", "--json"], 0);
    assert_eq!(old["status"], "succeeded");

    // A failed activity: exit 3.
    let failed = op.json(
        admin,
        &[
            "activity",
            "enqueue",
            "highway.sleep",
            "--params",
            r#"{"duration":"1ms","fail_with":"X","retryable":false}"#,
            "--wait",
            "--output",
            "json",
        ],
        3,
    );
    assert_eq!(failed["status"], "failed");
    let failed_id = id_of(&failed);

    // A wait that runs out: exit 4, the activity still waiting.
    let (rc, _, err) = op.run(
        admin,
        &[
            "activity",
            "enqueue",
            "highway.noop",
            "--queue",
            PARKED,
            "--wait",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(rc, 4, "{err}");

    // A cancelled activity: the waiter exits 5 once another command cancels it.
    let parked = op.json(
        admin,
        &[
            "activity",
            "enqueue",
            "highway.noop",
            "--queue",
            PARKED,
            "--output",
            "json",
        ],
        0,
    );
    let parked_id = id_of(&parked);
    let waiter = op
        .command(
            admin,
            &[
                "activity",
                "enqueue",
                "highway.noop",
                "--queue",
                PARKED,
                "--idempotency-key",
                "cli-api-cancel",
                "--wait",
                "--timeout",
                "60s",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let waited_id: String = eventually("the waiter's activity exists", WAIT, || async {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM highway.activities WHERE idempotency_key = 'cli-api-cancel'",
        )
        .fetch_optional(&db.pool)
        .await
        .unwrap()
        .map(|u| u.to_string())
    })
    .await;
    let (rc, out, err) = op.run(admin, &["activity", "cancel", &waited_id]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("cancelled"), "{out}");
    let waited = tokio::task::spawn_blocking(move || waiter.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        waited.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&waited.stderr)
    );
    // The older `cancel ID`.
    let (rc, out, err) = op.run(admin, &["cancel", &parked_id, "--json"]);
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["outcome"],
        "cancelled"
    );

    // Retry: the failed one is queued again with its budget extended by the attempts
    // it used, and runs again as attempt 2.
    let before = op.json(
        admin,
        &["activity", "show", &failed_id, "--output", "json"],
        0,
    );
    let r = op.json(
        admin,
        &["activity", "retry", &failed_id, "--output", "json"],
        0,
    );
    assert_eq!(r["outcome"], "requeued", "{r}");
    assert_eq!(r["previous_status"], "failed");
    assert_eq!(
        r["activity"]["max_attempts"].as_i64(),
        Some(before["max_attempts"].as_i64().unwrap() + 1),
        "{r}"
    );
    let again: Value = eventually("the retried activity ran again", WAIT, || async {
        let v = op.json(
            admin,
            &["activity", "show", &failed_id, "--output", "json"],
            0,
        );
        (v["status"] == "failed" && v["attempt"] == 2).then_some(v)
    })
    .await;
    assert_eq!(again["error"]["type"], "X");
    // A succeeded one cannot be retried: a 409, exit 1.
    let (rc, _, err) = op.run(admin, &["activity", "retry", &id_of(&ok)]);
    assert_eq!(rc, 1, "{err}");
    assert!(err.contains("409"), "{err}");

    // ls: JSON against the table; the older `activities ls --json`.
    let items = op.json(admin, &["activity", "ls", "--output", "json"], 0);
    let ids: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["id"].as_str())
        .collect();
    assert!(ids.contains(&failed_id.as_str()) && ids.contains(&parked_id.as_str()));
    let (rc, table, _) = op.run(admin, &["activity", "ls"]);
    assert_eq!(rc, 0);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("ID") && header.contains("STATUS") && header.contains("KIND"),
        "{table}"
    );
    assert!(table.contains(&failed_id), "{table}");
    assert!(serde_json::from_str::<Value>(&table).is_err());
    let old = op.json(admin, &["activities", "ls", "--json", "--queue", PARKED], 0);
    assert!(old.as_array().unwrap().len() >= 3, "{old}");
    // A narrow terminal cuts the widest column instead of wrapping.
    let out = op
        .command(admin, &["activity", "ls"])
        .env("COLUMNS", "60")
        .output()
        .unwrap();
    let narrow = String::from_utf8_lossy(&out.stdout);
    assert!(narrow.lines().all(|l| l.chars().count() <= 60), "{narrow}");
    // logs of a finished activity: its stored lines and the outcome's exit code.
    let (rc, _, err) = op.run(admin, &["activity", "logs", &failed_id]);
    assert_eq!(rc, 3, "{err}");

    // queue ls: the parked queue waits, nothing runs there.
    let queues = op.json(admin, &["queue", "ls", "--output", "json"], 0);
    let q = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == PARKED)
        .unwrap_or_else(|| panic!("{queues}"));
    assert_eq!(
        (q["depth"].as_i64(), q["running"].as_i64()),
        (Some(1), Some(0)),
        "{q}"
    );
    let (rc, table, _) = op.run(admin, &["queue", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        table.starts_with("QUEUE") && table.contains(PARKED),
        "{table}"
    );

    // worker ls: the in-process worker, its slots and queues.
    let workers = op.json(admin, &["worker", "ls", "--output", "json"], 0);
    let me = workers
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == w.id.to_string())
        .unwrap_or_else(|| panic!("{workers}"))
        .clone();
    assert_eq!(me["slots_total"], 2);
    assert_eq!(me["state"], "running");
    assert_eq!(me["queues"], json!(["default"]));
    assert!(me["heartbeat_age_secs"].as_f64().unwrap() < 60.0);
    let (rc, table, _) = op.run(admin, &["worker", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        table.contains(&w.id.to_string()) && table.contains("0/2"),
        "{table}"
    );

    // container ls: none here, an empty list either way.
    assert_eq!(
        op.json(admin, &["container", "ls", "--output", "json"], 0),
        json!([])
    );
    let (rc, _, err) = op.run(admin, &["containers", "ls"]);
    assert_eq!(rc, 0, "{err}");

    // audit ls sees the retry and the cancels.
    let audit = op.json_lines(admin, &["audit", "ls", "--output", "json"]);
    let actions: Vec<&str> = audit.iter().filter_map(|r| r["action"].as_str()).collect();
    assert!(
        actions.contains(&"activity.retry") && actions.contains(&"activity.cancel"),
        "{actions:?}"
    );

    // Clap's usage errors keep code 2, distinct from a failed activity's 3.
    let (rc, _, err) = op.run(admin, &["activity", "ls", "--no-such-flag"]);
    assert_eq!(rc, 2, "{err}");
    w.stop().await;
}

/// Runs: start (--wait, --follow, the older `runs start`), ls, show, logs, cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_commands_over_the_api_only() {
    ensure_test_image();
    let db = TestDb::new().await;
    let artifacts = std::env::temp_dir().join(format!("highway-cli-api-art-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&artifacts).unwrap();
    let opts = TestWorker::fast_options(2);
    let rt = std::sync::Arc::new(highway_worker::docker::DockerRuntime::new(
        highway_worker::config::docker::DockerConfig::default(),
        db.pool.clone(),
        opts.id,
        artifacts.clone(),
    ));
    let w = TestWorker::start(&db.pool, opts, |r| {
        highway_worker::docker::register(r, rt.clone())
    });
    let api = ApiServer::start(&db.url);
    let op = Operator::new(&api.base);
    let admin = api.admin.as_str();
    let file = op.state.join("two.json");
    std::fs::write(
        &file,
        json!({"name": "two-steps", "steps": [
            {"id": "first", "kind": "tools.docker.run",
             "params": {"image": TEST_IMAGE, "command": ["echo", "one"]}},
            {"id": "second", "kind": "tools.docker.run", "depends_on": ["first"],
             "params": {"image": TEST_IMAGE, "command": ["echo", "two"]}}
        ]})
        .to_string(),
    )
    .unwrap();
    let file_s = file.to_str().unwrap();
    let (rc, out, err) = op.run(admin, &["run", "start", file_s, "--wait"]);
    assert_eq!(rc, 0, "{out}\n{err}");
    assert!(
        out.contains("first") && out.contains("second") && out.contains("succeeded"),
        "{out}"
    );
    let (rc, out, err) = op.run(
        admin,
        &["run", "start", file_s, "--follow", "--output", "json"],
    );
    assert_eq!(rc, 0, "{err}");
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["event"].as_str(), last["status"].as_str()),
        (Some("finished"), Some("succeeded"))
    );
    let run_id = last["run_id"].as_str().unwrap().to_string();

    // A run that cannot finish (its step waits on a parked queue): a wait that runs
    // out exits 4; cancelling it ends it.
    let parked = op.state.join("parked.json");
    std::fs::write(
        &parked,
        json!({"name": "parked", "steps": [
            {"id": "only", "kind": "tools.docker.run", "queue": PARKED,
             "params": {"image": TEST_IMAGE, "command": ["true"]}}
        ]})
        .to_string(),
    )
    .unwrap();
    let (rc, _, err) = op.run(
        admin,
        &[
            "run",
            "start",
            parked.to_str().unwrap(),
            "--wait",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(rc, 4, "{err}");
    let started = op.json(
        admin,
        &["runs", "start", parked.to_str().unwrap(), "--json"],
        0,
    );
    let parked_run = id_of(&started);

    let runs = op.json(admin, &["run", "ls", "--output", "json"], 0);
    assert_eq!(runs["items"].as_array().unwrap().len(), 4, "{runs}");
    let page = op.json(admin, &["run", "ls", "--limit", "2", "--output", "json"], 0);
    let next = page["next"].as_str().expect("a next page").to_string();
    let rest = op.json(
        admin,
        &["run", "ls", "--before", &next, "--output", "json"],
        0,
    );
    assert_eq!(rest["items"].as_array().unwrap().len(), 2, "{rest}");
    let running = op.json(
        admin,
        &["run", "ls", "--status", "running", "--output", "json"],
        0,
    );
    assert!(
        running["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "running"),
        "{running}"
    );
    let (rc, table, _) = op.run(admin, &["run", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        table.starts_with("ID") && table.contains("two-steps"),
        "{table}"
    );

    let show = op.json(admin, &["run", "show", &run_id, "--output", "json"], 0);
    assert_eq!(show["steps"].as_array().unwrap().len(), 2);
    let (rc, out, _) = op.run(admin, &["run", "show", &run_id]);
    assert_eq!(rc, 0);
    assert!(out.contains("STEP") && out.contains("second"), "{out}");
    let (rc, out, err) = op.run(admin, &["run", "logs", &run_id]);
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("[first] stdout | one") && out.contains("[second] stdout | two"),
        "{out}"
    );

    // container ls|show|logs: the steps' containers, tracked after their removal.
    let containers = op.json(admin, &["container", "ls", "--output", "json"], 0);
    let first = containers
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["activity_id"] == show["steps"][0]["activity_id"])
        .unwrap_or_else(|| panic!("{containers}"))
        .clone();
    let short = first["short_id"].as_str().unwrap();
    let one = op.json(admin, &["container", "show", short, "--output", "json"], 0);
    assert_eq!(one["container_id"], first["container_id"]);
    let (rc, out, err) = op.run(admin, &["container", "logs", short]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains("stdout | one"), "{out}");
    let (rc, table, _) = op.run(admin, &["container", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        table.starts_with("CONTAINER") && table.contains(short),
        "{table}"
    );

    let (rc, out, err) = op.run(admin, &["run", "cancel", &parked_run]);
    assert_eq!(rc, 0, "{err}");
    assert!(out.contains(&parked_run), "{out}");
    let (rc, _, err) = op.run(admin, &["run", "logs", &parked_run, "-f"]);
    assert_eq!(rc, 5, "{err}");
    w.stop().await;
    let _ = std::fs::remove_dir_all(&artifacts);
}

/// Tokens and secrets through the admin routes, tenant scoping with a token made by the
/// CLI, values and tokens never in listings, completions.
#[tokio::test]
async fn token_secret_and_completion_commands_over_the_api_only() {
    let db = TestDb::new().await;
    let api = ApiServer::start_with_secrets(&db.url, Some(SECRETS_KEY));
    let op = Operator::new(&api.base);
    let admin = api.admin.as_str();

    let (rc, token_a, err) = op.run(
        admin,
        &["token", "create", "--tenant", "tenant-a", "--name", "ci"],
    );
    assert_eq!(rc, 0, "{err}");
    let token_a = token_a.trim().to_string();
    assert!(token_a.starts_with("hw_"), "{token_a}");
    let b = op.json(
        admin,
        &[
            "tokens", "create", "--tenant", "tenant-b", "--name", "b", "--json",
        ],
        0,
    );
    let token_b = b["token"].as_str().unwrap().to_string();

    let listed = op.json(admin, &["token", "ls", "--output", "json"], 0);
    let text = listed.to_string();
    assert!(
        !text.contains(&token_a) && !text.contains(&token_b),
        "tokens listed: {text}"
    );
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "ci" && t["tenant_id"] == "tenant-a"));
    let (rc, table, _) = op.run(admin, &["token", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        table.contains("(admin)") && table.contains("tenant-a"),
        "{table}"
    );
    // A tenant token may not manage tokens or list workers.
    let (rc, _, err) = op.run(&token_a, &["token", "ls"]);
    assert_eq!(rc, 1);
    assert!(err.contains("403"), "{err}");
    let (rc, _, err) = op.run(&token_a, &["worker", "ls"]);
    assert!(rc == 1 && err.contains("403"), "{err}");

    // Tenant scoping: B's activity is not found for A; A's queue counts only A's.
    let b_act = op.json(
        &token_b,
        &[
            "activity",
            "enqueue",
            "highway.noop",
            "--queue",
            PARKED,
            "--output",
            "json",
        ],
        0,
    );
    let (rc, _, err) = op.run(&token_a, &["activity", "show", &id_of(&b_act)]);
    assert!(rc == 1 && err.contains("404"), "{err}");
    assert_eq!(
        op.json(&token_a, &["queue", "ls", "--output", "json"], 0),
        json!([])
    );
    assert_eq!(
        op.json(&token_a, &["activity", "ls", "--output", "json"], 0),
        json!([])
    );

    // Secrets: the value from stdin, never printed back.
    let canary = format!("canary-{}", Uuid::new_v4());
    let (rc, out, err) = op.with_stdin(
        &token_a,
        &["secret", "set", "--tenant", "tenant-a", "db_password"],
        &format!("{canary}\n"),
    );
    assert_eq!(rc, 0, "{err}");
    assert!(!out.contains(&canary) && !err.contains(&canary));
    let (rc, _, err) = op.with_stdin(
        &token_a,
        &["secret", "set", "--tenant", "tenant-b", "x"],
        "v",
    );
    assert!(
        rc == 1 && err.contains("403"),
        "another tenant's secret: {err}"
    );
    let (rc, _, err) = op.with_stdin(
        admin,
        &["secrets", "set", "--tenant", "tenant-b", "api_key"],
        "v2",
    );
    assert_eq!(rc, 0, "{err}");
    let mine = op.json(&token_a, &["secret", "ls", "--output", "json"], 0);
    assert_eq!(mine.as_array().unwrap().len(), 1, "{mine}");
    assert_eq!(mine[0]["name"], "db_password");
    let all = op.json(admin, &["secret", "ls", "--output", "json"], 0);
    assert_eq!(all.as_array().unwrap().len(), 2, "{all}");
    let (rc, table, _) = op.run(admin, &["secret", "ls"]);
    assert_eq!(rc, 0);
    assert!(
        table.starts_with("TENANT") && table.contains("api_key") && !table.contains(&canary),
        "{table}"
    );
    let stored: String = sqlx::query_scalar(
        "SELECT encode(ciphertext, 'escape') FROM highway.secrets WHERE name = 'db_password'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!stored.contains(&canary), "stored in clear");
    let (rc, _, err) = op.run(
        &token_a,
        &["secret", "rm", "--tenant", "tenant-a", "db_password"],
    );
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = op.run(
        &token_a,
        &["secret", "rm", "--tenant", "tenant-a", "db_password"],
    );
    assert!(rc == 1 && err.contains("404"), "{err}");
    let audit = op.json_lines(admin, &["audit", "ls", "--output", "json"]);
    let text = Value::Array(audit).to_string();
    assert!(
        text.contains("secret.set") && text.contains("token.create"),
        "{text}"
    );
    assert!(!text.contains(&canary) && !text.contains(&token_a));

    // Revoke: the token answers 401 from then on.
    let (rc, _, err) = op.run(admin, &["token", "revoke", b["id"].as_str().unwrap()]);
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = op.run(&token_b, &["activity", "ls"]);
    assert!(rc == 1 && err.contains("401"), "{err}");
    assert!(!err.contains(&token_b));

    // Completions: non-empty for each shell, and valid bash.
    for shell in ["bash", "zsh", "fish"] {
        let (rc, out, err) = op.run(admin, &["completions", shell]);
        assert_eq!(rc, 0, "{err}");
        assert!(
            out.contains("highway") && out.len() > 1000,
            "{shell}: {out}"
        );
        if shell == "bash" {
            let script = op.state.join("highway.bash");
            std::fs::write(&script, &out).unwrap();
            let st = Command::new("bash")
                .arg("-n")
                .arg(&script)
                .status()
                .unwrap();
            assert!(st.success(), "bash -n refused the completions");
            for word in ["activity", "retry", "worker", "queue"] {
                assert!(
                    out.contains(word),
                    "{word} missing from the bash completions"
                );
            }
        }
    }
    let (rc, _, err) = op.run(admin, &["completions", "tcsh-nope"]);
    assert_eq!(rc, 2, "{err}");

    // `worker --help`: its flags under the headings; a client command's help has no
    // server flag.
    let (rc, help, _) = op.run(admin, &["worker", "--help"]);
    assert_eq!(rc, 0);
    for h in [
        "Queue:",
        "Docker policy:",
        "Limits:",
        "HTTP:",
        "GC:",
        "Shutdown:",
        "Database:",
        "Docker connection:",
    ] {
        assert!(help.contains(h), "{h} missing from worker --help");
    }
    let (_, help, _) = op.run(admin, &["activity", "enqueue", "--help"]);
    assert!(
        !help.contains("--database-url") && !help.contains("--allow-privileged"),
        "{help}"
    );
    assert!(help.contains("Exit codes:"), "{help}");
}
