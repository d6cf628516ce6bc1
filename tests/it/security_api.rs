//! What the API and CLI door refuses, through the real router on a fresh database and
//! the real binary: a `workflow_run_id` of another tenant (or of no run) is a 404 like a
//! missing one, never a 500 and never attached, in the API and the Rust client alike;
//! NUL characters, lone surrogate escapes and duplicate keys anywhere in a request body
//! are a 422 naming the JSON path; `highway activities logs` shows container output
//! with its control characters escaped and every line marked by its stream; and the
//! OpenAPI document declares every status the server answers for the probes here
//! (UUID path ids, 403 for admin-only operations, 422 for unknown query parameters).
//!
//! Each test failed on the code before these checks: a cross-tenant run id was 201 and
//! a missing one 500; NUL was 500 and a lone surrogate 400; nested duplicate keys were
//! 201; logs printed raw ESC bytes and unmarked lines; the document typed ids as plain
//! strings and left 403 and 422 out.

use crate::api::{code, Api};
use crate::cli_remote::ApiServer;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use highway_tests::{highway_bin, TestDb};
use highway_worker::config::api::ApiConfig;
use highway_workflows::{EnqueueRequest, Error};
use serde_json::{json, Value};
use std::process::Command;
use uuid::Uuid;

async fn api() -> Api {
    Api::with(ApiConfig::default()).await
}

/// POSTs `body` exactly as given (so it may hold what `serde_json` would never write).
async fn post_raw(api: &Api, path: &str, token: &str, body: &str) -> (StatusCode, Value) {
    let req = Request::post(path)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (s, v, _) = api.send(req).await;
    (s, v)
}

fn field(v: &Value) -> &str {
    v["error"]["field"].as_str().unwrap_or_default()
}

async fn activity_count(api: &Api) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM highway.activities")
        .fetch_one(&api.db.pool)
        .await
        .unwrap()
}

/// A bare run of tenant-a, started through the API.
async fn run_of_a(api: &Api) -> Uuid {
    let (s, v) = api.post("/v1/runs", &api.a, json!({"name": "a-run"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    Uuid::parse_str(v["run"]["id"].as_str().or(v["id"].as_str()).unwrap()).unwrap()
}

/// A tenant cannot attach an activity to another tenant's run, nor learn which run ids
/// exist: both answer 404 like a missing run, nothing is stored, and the owner's
/// cancellation touches only its own activities. The Rust client gives the same typed
/// error on every enqueue path, so schedules and the workflow driver inherit it.
#[tokio::test]
async fn workflow_run_id_must_belong_to_the_callers_tenant() {
    let api = api().await;
    let run = run_of_a(&api).await;
    let body = |run: Uuid| json!({"kind": "highway.noop", "params": {}, "delay": "1h", "workflow_run_id": run});

    let (s, v) = api.post("/v1/activities", &api.b, body(run)).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(code(&v), "not_found");
    let (s2, v2) = api
        .post("/v1/activities", &api.b, body(Uuid::now_v7()))
        .await;
    assert_eq!(
        s2,
        StatusCode::NOT_FOUND,
        "a missing run must not be a 500: {v2}"
    );
    assert_eq!(
        v, v2,
        "another tenant's run answers exactly like a missing one"
    );
    assert_eq!(activity_count(&api).await, 0);

    // The owner attaches its own; an admin naming the wrong tenant is refused too.
    let (s, v) = api.post("/v1/activities", &api.a, body(run)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut wrong = body(run);
    wrong["tenant_id"] = json!("tenant-b");
    let (s, _) = api.post("/v1/activities", &api.admin, wrong).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, list) = api
        .get(&format!("/v1/activities?run={run}"), &api.admin)
        .await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["tenant_id"], "tenant-a");

    // The Rust client: single, in a transaction, batched, all typed.
    let client = api.db.client();
    let theirs = EnqueueRequest::new("highway.noop", json!({}))
        .tenant("tenant-b")
        .workflow_run(run);
    match client.enqueue(&theirs).await {
        Err(Error::RunNotFound(r)) => assert_eq!(r, run),
        other => panic!("enqueue: {other:?}"),
    }
    let missing = Uuid::now_v7();
    let none = EnqueueRequest::new("highway.noop", json!({}))
        .tenant("tenant-a")
        .workflow_run(missing);
    match client.enqueue(&none).await {
        Err(Error::RunNotFound(r)) => assert_eq!(r, missing),
        other => panic!("enqueue of a missing run: {other:?}"),
    }
    let mut tx = api.db.pool.begin().await.unwrap();
    assert!(matches!(
        client.enqueue_tx(&mut tx, &theirs).await,
        Err(Error::RunNotFound(_))
    ));
    drop(tx);
    let ok = EnqueueRequest::new("highway.noop", json!({}))
        .tenant("tenant-a")
        .workflow_run(run);
    match client.enqueue_many(&[ok.clone(), theirs.clone()]).await {
        Err(Error::RunNotFound(r)) => assert_eq!(r, run),
        other => panic!("enqueue_many: {other:?}"),
    }
    assert_eq!(
        activity_count(&api).await,
        1,
        "the refused batch stored nothing"
    );
    client.enqueue_many(&[ok]).await.unwrap();

    // A schedule's activity template cannot name a run at all.
    let (s, v) = api
        .post(
            "/v1/schedules",
            &api.b,
            json!({"name": "n", "cron": "0 3 * * *",
                   "activity": {"kind": "highway.noop", "workflow_run_id": run}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(field(&v), "activity.workflow_run_id");
}

/// NUL characters and lone surrogates, in values and keys, at any depth of any body:
/// 422 naming the JSON path, nothing stored, never a 500.
#[tokio::test]
async fn nul_and_lone_surrogates_are_refused_naming_the_field() {
    let api = api().await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"x":"a\u0000b"}}"#,
            "params.x",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"deep":[1,{"y":["\u0000"]}]}}"#,
            "params.deep[1].y[0]",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"x":"\ud800"}}"#,
            "params.x",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"x":"\udc00 trailing"}}"#,
            "params.x",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","idempotency_key":"k\u0000"}"#,
            "idempotency_key",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"a\u0000b":1}}"#,
            "params.a\\u{0}b",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"\ud800":1}}"#,
            "params",
        ),
        (
            "/v1/runs",
            r#"{"name":"r","input":{"k":"\u0000"}}"#,
            "input.k",
        ),
        (
            "/v1/runs",
            r#"{"definition":{"name":"w","steps":[{"id":"s","kind":"tools.docker.run",
                "params":{"image":"x","inputs":[{"path":"/in\u0000","content":"c"}]}}]}}"#,
            "definition.steps[0].params.inputs[0].path",
        ),
        (
            "/v1/schedules",
            r#"{"name":"n","cron":"0 3 * * *","activity":{"kind":"highway.noop","params":{"x":"\u0000"}}}"#,
            "activity.params.x",
        ),
        (
            "/v1/schedules",
            r#"{"name":"n\u0000","cron":"0 3 * * *","activity":{"kind":"highway.noop"}}"#,
            "name",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = post_raw(&api, path, &api.a, body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {v}");
        assert_eq!(field(&v), *want, "{path} {body}: {v}");
    }
    assert_eq!(activity_count(&api).await, 0);
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.workflow_runs")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(runs, 0);
    // A proper surrogate pair is an ordinary character.
    let (s, v) = post_raw(
        &api,
        "/v1/activities",
        &api.a,
        r#"{"kind":"highway.noop","params":{"x":"\ud83d\ude00"}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["params"]["x"], "\u{1f600}");

    // The Rust client refuses NUL itself, naming the field.
    let client = api.db.client();
    let req = EnqueueRequest::new("highway.noop", json!({"inputs": [{"path": "/a\u{0}"}]}));
    match client.enqueue(&req).await {
        Err(Error::InvalidField(f)) => assert_eq!(f.field, "params.inputs[0].path"),
        other => panic!("{other:?}"),
    }
    match client
        .create_run("tenant-a", "r", &json!({"k": "\u{0}"}))
        .await
    {
        Err(Error::InvalidField(f)) => assert_eq!(f.field, "input.k"),
        other => panic!("{other:?}"),
    }
}

/// A key repeated within one object is refused at every depth (it was refused only at
/// the top level, while `params` kept the last one silently).
#[tokio::test]
async fn duplicate_keys_are_refused_at_every_depth() {
    let api = api().await;
    let cases: &[(&str, &str, &str)] = &[
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"image":"a","image":"b"}}"#,
            "params.image",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","params":{"list":[{"k":1},{"k":1,"k":2}]}}"#,
            "params.list[1].k",
        ),
        (
            "/v1/activities",
            r#"{"kind":"highway.noop","kind":"highway.noop"}"#,
            "kind",
        ),
        (
            "/v1/runs",
            r#"{"name":"r","input":{"a":{"b":1,"b":2}}}"#,
            "input.a.b",
        ),
        (
            "/v1/schedules",
            r#"{"name":"n","cron":"0 3 * * *","activity":{"kind":"highway.noop","params":{"x":1,"x":2}}}"#,
            "activity.params.x",
        ),
    ];
    for (path, body, want) in cases {
        let (s, v) = post_raw(&api, path, &api.a, body).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{path} {body}: {v}");
        assert_eq!(field(&v), *want, "{path} {body}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("duplicate"),
            "{v}"
        );
    }
    assert_eq!(activity_count(&api).await, 0);
    // The same key in two different objects is fine.
    let (s, v) = post_raw(
        &api,
        "/v1/activities",
        &api.a,
        r#"{"kind":"highway.noop","params":{"a":{"x":1},"b":{"x":1}}}"#,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

/// `highway activities logs` on stored lines carrying ESC/OSC/BEL/CR and a line that
/// imitates the worker's own status line: the output holds no raw control character,
/// every line is marked with its stream (so the fake one shows as container stdout, not
/// as `system`), and `--json` keeps the raw text, JSON-escaped.
#[tokio::test]
async fn logs_escape_control_characters_and_mark_container_lines() {
    let db = TestDb::new().await;
    let server = ApiServer::start(&db.url);
    let id = db
        .client()
        .enqueue(&EnqueueRequest::new("highway.noop", json!({})))
        .await
        .unwrap()
        .id;
    let hostile = "\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}[31mred\rover\u{9b}31m\ttab";
    let fake = "highway: container exited with code 0";
    for (seq, stream, line) in [
        (1, "stdout", hostile),
        (2, "stdout", fake),
        (3, "stderr", "\u{1b}[1moops"),
        (4, "system", "highway: container exited with code 1"),
    ] {
        sqlx::query(
            "INSERT INTO highway.activity_logs (activity_id, seq, attempt, stream, line) VALUES ($1, $2, 1, $3, $4)",
        )
        .bind(id)
        .bind(seq as i64)
        .bind(stream)
        .bind(line)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let run = |extra: &[&str]| {
        let mut args = vec!["activities", "logs"];
        let id = id.to_string();
        args.push(&id);
        args.extend_from_slice(extra);
        let out = Command::new(highway_bin())
            .args(&args)
            .env("HIGHWAY_API_URL", &server.base)
            .env("HIGHWAY_TOKEN", &server.admin)
            .env_remove("HIGHWAY_TOKEN_FILE")
            .env("RUST_LOG", "warn")
            .output()
            .expect("run highway");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    let out = run(&[]);
    for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t'),
            "raw control characters on {name}: {text:?}"
        );
    }
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "stdout | \\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\u{1b}[31mred\\u{d}over\\u{9b}31m\ttab",
            "stdout | highway: container exited with code 0",
        ],
        "{stdout}"
    );
    assert!(!stdout.lines().any(|l| l == fake), "{stdout}");
    assert!(stderr.contains("stderr | \\u{1b}[1moops"), "{stderr}");
    assert!(
        stderr.contains("system | highway: container exited with code 1"),
        "{stderr}"
    );

    // --json: one object a line, the raw text intact once decoded.
    let out = run(&["--json"]);
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{stdout:?}"
    );
    let rows: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "{stdout}");
    assert_eq!(rows[0]["line"], hostile);
    assert_eq!(rows[0]["stream"], "stdout");
    assert_eq!(rows[3]["stream"], "system");
}

/// The OpenAPI document declares what the server answers: path ids are UUIDs (a
/// non-UUID is 400), admin-only operations answer 403 to a tenant token, list endpoints
/// answer 422 to an unknown query parameter. Each probe's status must be documented for
/// its operation. (`scripts/schemathesis.sh` fuzzes the whole document.)
#[tokio::test]
async fn openapi_document_declares_the_statuses_the_server_answers() {
    let api = api().await;
    let (s, doc) = api.get("/v1/openapi.json", &api.a).await;
    assert_eq!(s, StatusCode::OK);
    let documented = |path: &str, method: &str, status: StatusCode| -> bool {
        doc["paths"][path][method]["responses"]
            .get(status.as_str())
            .is_some()
    };
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().unwrap() {
                // A container is named by id, short id or name; every other id is a UUID.
                if p["in"] == "path" && p["name"] == "id" && !path.starts_with("/v1/containers/") {
                    assert_eq!(p["schema"]["format"], "uuid", "{method} {path}");
                }
            }
            if !path.contains("{id}") {
                continue;
            }
            let concrete = path.replace("{id}", "not-a-uuid");
            let req = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&concrete)
                .header("authorization", format!("Bearer {}", api.a))
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let (s, v, _) = api.send(req).await;
            assert!(
                documented(path, method, s),
                "{method} {concrete} answered {s} ({v}), undocumented"
            );
        }
    }
    // Admin only.
    let (s, _) = api.get("/v1/gc/plan", &api.a).await;
    assert!(
        [StatusCode::FORBIDDEN].contains(&s),
        "a tenant token on /v1/gc/plan: {s}"
    );
    assert!(documented("/v1/gc/plan", "get", s));
    // Unknown query parameters on every GET.
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if ops.get("get").is_none() || !path.starts_with("/v1/") || path.contains("{id}") {
            continue;
        }
        let (s, v) = api.get(&format!("{path}?bogus=1"), &api.admin).await;
        if s.is_success() {
            continue;
        }
        assert!(
            documented(path, "get", s),
            "GET {path}?bogus=1 answered {s} ({v}), undocumented"
        );
    }
    let (s, _) = api.get("/v1/activities?bogus=1", &api.a).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}
