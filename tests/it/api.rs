//! The HTTP API through the real router (`oneshot`, no socket) on a fresh database:
//! tokens and tenancy (S1, S2), body limits (S4), unknown fields (S5), content type
//! (S7), idempotency (S15), quotas (S23), ids (S24), `/health` (S25); the log stream;
//! an end-to-end `tools.docker.run` from `POST /v1/activities` to the container result
//! and its log stream; and the CLI against a running `highway up` (S26).
//!
//! Also [`Api`]: the router fixture `api_schedules` shares.

use crate::cli_remote::{run_cli, spawn_up, stop_up};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use highway_tests::docker::{assert_no_containers, docker, ensure_test_image, TEST_IMAGE};
use highway_tests::{eventually, highway_bin, TestDb, TestWorker};
use highway_worker::api::{self, store, AppState};
use highway_worker::config::api::ApiConfig;
use highway_worker::health::Health;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// A router on a fresh database with an admin token and tokens for tenants a and b.
pub(crate) struct Api {
    pub(crate) db: TestDb,
    pub(crate) app: Router,
    pub(crate) admin: String,
    pub(crate) a: String,
    pub(crate) b: String,
}

impl Api {
    async fn new() -> Self {
        Self::with(ApiConfig::default()).await
    }

    pub(crate) async fn with(cfg: ApiConfig) -> Self {
        let db = TestDb::new().await;
        let app = api::router(AppState::new(Health::default(), db.pool.clone(), cfg));
        let (_, admin) = store::create_token(&db.pool, "admin", None).await.unwrap();
        let (_, a) = store::create_token(&db.pool, "a", Some("tenant-a"))
            .await
            .unwrap();
        let (_, b) = store::create_token(&db.pool, "b", Some("tenant-b"))
            .await
            .unwrap();
        Self {
            db,
            app,
            admin,
            a,
            b,
        }
    }

    pub(crate) async fn send(&self, req: Request<Body>) -> (StatusCode, Value, String) {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        )
    }

    pub(crate) async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (s, v, _) = self.send(req).await;
        (s, v)
    }

    pub(crate) async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.post_with(path, token, body, &[]).await
    }

    async fn post_with(
        &self,
        path: &str,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut b = Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (s, v, _) = self
            .send(b.body(Body::from(body.to_string())).unwrap())
            .await;
        (s, v)
    }

    /// A stored activity of `tenant` (straight into the table).
    async fn activity_of(&self, tenant: &str) -> Uuid {
        self.db
            .client()
            .enqueue(
                &highway_workflows::EnqueueRequest::new("highway.noop", json!({})).tenant(tenant),
            )
            .await
            .unwrap()
            .id
    }
}

pub(crate) fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_default()
}

/// A tracing subscriber writing everything (TRACE) into a buffer, for "never logged".
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// S1: no, malformed, unknown or revoked token → 401; tokens never in logs or answers.
#[tokio::test]
async fn s1_missing_malformed_and_revoked_tokens_are_401_and_never_logged() {
    let logs = LogBuf::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let api = Api::new().await;
    let (id, revoked) = store::create_token(&api.db.pool, "old", Some("tenant-a"))
        .await
        .unwrap();
    assert!(store::revoke_token(&api.db.pool, id).await.unwrap());
    let unknown = store::generate_token();

    let no_token = Request::get("/v1/activities").body(Body::empty()).unwrap();
    let (s, v, _) = api.send(no_token).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&v), "unauthorized");
    let mut answers = String::new();
    for bad in [
        "Bearer".to_string(),
        "Bearer hw_nothex".to_string(),
        format!("Basic {}", api.a),
        api.a.clone(),
        format!("Bearer {unknown}"),
        format!("Bearer {revoked}"),
    ] {
        let req = Request::get("/v1/activities")
            .header("authorization", bad.as_str())
            .body(Body::empty())
            .unwrap();
        let (s, v, text) = api.send(req).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{bad}: {v}");
        assert_eq!(code(&v), "unauthorized");
        answers.push_str(&text);
    }
    // A live token works, and is also never logged.
    let (s, _) = api.get("/v1/activities", &api.a).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = api
        .post("/v1/activities", &api.a, json!({"kind": "highway.noop"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let logged = logs.text();
    // (Whether this thread's subscriber sees the debug events depends on callsite
    // caching across test threads; the `highway up` test checks a real process's log.)
    for t in [&api.a, &revoked, &unknown, &api.admin] {
        assert!(!logged.contains(t.as_str()), "token logged");
        assert!(!logged.contains(&t[3..]), "token body logged");
        assert!(!answers.contains(&t[3..]), "token echoed");
    }
    // Only the hash is stored.
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.api_tokens WHERE token_sha256 = $1 OR token_sha256 = $2",
    )
    .bind(&api.a)
    .bind(store::token_hash(&api.a))
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

/// S2: another tenant's activity or container answers 404 exactly like a missing one.
#[tokio::test]
async fn s2_other_tenants_ids_are_404_like_missing_ones() {
    let api = Api::new().await;
    let theirs = api.activity_of("tenant-b").await;
    let missing = Uuid::now_v7();
    for path in ["/v1/activities/{}", "/v1/activities/{}/logs", "/v1/runs/{}"] {
        let (s1, v1) = api
            .get(&path.replace("{}", &theirs.to_string()), &api.a)
            .await;
        let (s2, v2) = api
            .get(&path.replace("{}", &missing.to_string()), &api.a)
            .await;
        assert_eq!(s1, StatusCode::NOT_FOUND, "{path}: {v1}");
        assert_eq!(s2, StatusCode::NOT_FOUND);
        assert_eq!(v1, v2, "{path}: other tenant's answer differs from missing");
    }
    let (s1, v1) = api
        .post(
            &format!("/v1/activities/{theirs}/cancel"),
            &api.a,
            json!({}),
        )
        .await;
    let (_, v2) = api
        .post(
            &format!("/v1/activities/{missing}/cancel"),
            &api.a,
            json!({}),
        )
        .await;
    assert_eq!(s1, StatusCode::NOT_FOUND);
    assert_eq!(v1, v2);
    // Still scheduled: the cancel did nothing.
    let (s, v) = api.get(&format!("/v1/activities/{theirs}"), &api.b).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "scheduled");
    // Lists hold only the caller's rows.
    let mine = api.activity_of("tenant-a").await;
    let (_, v) = api.get("/v1/activities?tenant=tenant-b", &api.a).await;
    let ids: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![mine.to_string()]);

    // Containers.
    sqlx::query(
        "INSERT INTO highway.docker_containers (container_id, short_id, activity_id, tenant_id, image, status, name)
         VALUES ('b0b0b0b0b0b0b0b0', 'b0b0b0b0b0b0', $1, 'tenant-b', 'busybox:1', 'running', 'hw-theirs')",
    )
    .bind(theirs)
    .execute(&api.db.pool)
    .await
    .unwrap();
    let (s1, v1) = api.get("/v1/containers/b0b0b0b0b0b0b0b0", &api.a).await;
    let (_, v2) = api.get("/v1/containers/c0c0c0c0c0c0c0c0", &api.a).await;
    assert_eq!(s1, StatusCode::NOT_FOUND);
    assert_eq!(v1, v2);
    let (s, v) = api.get("/v1/containers/hw-theirs", &api.b).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["short_id"], "b0b0b0b0b0b0");
    let (_, v) = api.get("/v1/containers", &api.a).await;
    assert_eq!(v["items"], json!([]));
    let (_, v) = api.get("/v1/containers?tenant=tenant-b", &api.admin).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // A tenant cannot enqueue for another.
    let (s, v) = api
        .post(
            "/v1/activities",
            &api.a,
            json!({"kind": "highway.noop", "tenant_id": "tenant-b"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "tenant_id");
}

/// S4: a body far over the limit is refused with 413 before any of it is read.
#[tokio::test]
async fn s4_body_over_limit_is_413_before_it_is_read() {
    let api = Api::with(ApiConfig {
        api_body_limit: 64 * 1024,
        ..ApiConfig::default()
    })
    .await;
    let polled = Arc::new(AtomicUsize::new(0));
    let p = polled.clone();
    // 100 MB declared; the stream counts every chunk anyone pulls from it.
    let stream = futures::stream::iter((0..1600).map(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes_of(64 * 1024))
    }));
    let req = Request::post("/v1/activities")
        .header("authorization", format!("Bearer {}", api.a))
        .header("content-type", "application/json")
        .header("content-length", (100u64 << 20).to_string())
        .body(Body::from_stream(stream))
        .unwrap();
    let (s, v, _) = api.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(code(&v), "payload_too_large");
    assert_eq!(polled.load(Ordering::SeqCst), 0, "the body was read");

    // Without a declared length: cut off at the limit while streaming, not buffered whole.
    let polled = Arc::new(AtomicUsize::new(0));
    let p = polled.clone();
    let stream = futures::stream::iter((0..1600).map(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
        Ok::<_, std::io::Error>(bytes_of(64 * 1024))
    }));
    let req = Request::post("/v1/activities")
        .header("authorization", format!("Bearer {}", api.a))
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap();
    let (s, v, _) = api.send(req).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert!(
        polled.load(Ordering::SeqCst) <= 3,
        "read far past the limit"
    );
}

fn bytes_of(n: usize) -> axum::body::Bytes {
    axum::body::Bytes::from(vec![b' '; n])
}

/// S5: unknown fields (body and query) are refused naming the field.
#[tokio::test]
async fn s5_unknown_fields_are_422_naming_the_field() {
    let api = Api::new().await;
    let (s, v) = api
        .post(
            "/v1/activities",
            &api.a,
            json!({"kind": "highway.noop", "bogus": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "bogus");
    let (s, v) = api
        .post(
            "/v1/activities",
            &api.a,
            json!({"kind": "highway.noop", "retry_policy": {"max_attempt": 2}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "retry_policy.max_attempt");
    let (s, v) = api.get("/v1/activities?colour=red", &api.a).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "colour");
    let (s, v) = api
        .post("/v1/runs", &api.a, json!({"name": "r", "inputs": {}}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "inputs");
    // Bad values name their field too (400).
    let (s, v) = api
        .post(
            "/v1/activities",
            &api.a,
            json!({"kind": "highway.noop", "priority": 42}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["field"], "priority");
    let (s, v) = api.get("/v1/activities?status=done", &api.a).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "status");
}

/// S7: anything but JSON is 415.
#[tokio::test]
async fn s7_wrong_content_type_is_415() {
    let api = Api::new().await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut b =
            Request::post("/v1/activities").header("authorization", format!("Bearer {}", api.a));
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let (s, v, _) = api
            .send(b.body(Body::from(r#"{"kind":"highway.noop"}"#)).unwrap())
            .await;
        assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
        assert_eq!(code(&v), "unsupported_media_type");
    }
    let req = Request::post("/v1/activities")
        .header("authorization", format!("Bearer {}", api.a))
        .header("content-type", "application/json; charset=utf-8")
        .body(Body::from(r#"{"kind":"highway.noop"}"#))
        .unwrap();
    assert_eq!(api.send(req).await.0, StatusCode::CREATED);
}

/// S15 / R11: the same key and body return the same activity; another body is 409.
#[tokio::test]
async fn s15_idempotency_key_reused_with_another_body_is_409() {
    let api = Api::new().await;
    let body = json!({"kind": "highway.noop", "params": {"n": 1}});
    let key = [("idempotency-key", "order-42")];
    let (s1, v1) = api
        .post_with("/v1/activities", &api.a, body.clone(), &key)
        .await;
    assert_eq!(s1, StatusCode::CREATED, "{v1}");
    assert_eq!(v1["created"], true);
    let (s2, v2) = api.post_with("/v1/activities", &api.a, body, &key).await;
    assert_eq!(s2, StatusCode::OK);
    assert_eq!(v2["created"], false);
    assert_eq!(v1["id"], v2["id"]);
    let (s3, v3) = api
        .post_with(
            "/v1/activities",
            &api.a,
            json!({"kind": "highway.noop", "params": {"n": 2}}),
            &key,
        )
        .await;
    assert_eq!(s3, StatusCode::CONFLICT, "{v3}");
    assert_eq!(code(&v3), "idempotency_conflict");
    // Keys are per tenant: b may use the same key.
    let (s4, v4) = api
        .post_with(
            "/v1/activities",
            &api.b,
            json!({"kind": "highway.noop"}),
            &key,
        )
        .await;
    assert_eq!(s4, StatusCode::CREATED);
    assert_ne!(v4["id"], v1["id"]);
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.activities")
        .fetch_one(&api.db.pool)
        .await
        .unwrap();
    assert_eq!(n, 2);
}

/// S23: per-tenant quotas of queued activities and running containers → 429.
#[tokio::test]
async fn s23_quotas_answer_429() {
    let api = Api::with(ApiConfig {
        api_quota_queued: 2,
        api_quota_containers: 1,
        ..ApiConfig::default()
    })
    .await;
    for i in 0..2 {
        let (s, v) = api
            .post_with(
                "/v1/activities",
                &api.a,
                json!({"kind": "highway.noop"}),
                &[("idempotency-key", &format!("k{i}"))],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let (s, v) = api
        .post("/v1/activities", &api.a, json!({"kind": "highway.noop"}))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(code(&v), "quota_exceeded");
    // A retry of an accepted request still gets its answer.
    let (s, _) = api
        .post_with(
            "/v1/activities",
            &api.a,
            json!({"kind": "highway.noop"}),
            &[("idempotency-key", "k1")],
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Another tenant has its own quota.
    sqlx::query(
        "INSERT INTO highway.docker_containers (container_id, short_id, tenant_id, image, status, name)
         VALUES ('c1c1c1c1c1c1c1c1', 'c1c1c1c1c1c1', 'tenant-b', 'busybox:1', 'running', 'hw-c1')",
    )
    .execute(&api.db.pool)
    .await
    .unwrap();
    let (s, v) = api
        .post(
            "/v1/activities",
            &api.b,
            json!({"kind": "tools.docker.run", "params": {"image": TEST_IMAGE}}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("containers"));
    let (s, _) = api
        .post("/v1/activities", &api.b, json!({"kind": "highway.noop"}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

/// S24: non-UUID ids in paths are 400 naming the parameter.
#[tokio::test]
async fn s24_non_uuid_ids_are_400() {
    let api = Api::new().await;
    for path in [
        "/v1/activities/42",
        "/v1/activities/not-a-uuid/logs",
        "/v1/runs/x",
        "/v1/activities?run=nope",
        "/v1/containers?activity=nope",
        "/v1/audit?run=1",
    ] {
        let (s, v) = api.get(path, &api.a).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(code(&v), "invalid_field", "{path}");
    }
    let (s, v) = api
        .post("/v1/activities/zzz/cancel", &api.a, json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["field"], "id");
    let (s, _) = api.get("/v1/containers/a%2Fb", &api.a).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// S25: `/health` answers without a token, with status only.
#[tokio::test]
async fn s25_health_without_token_has_status_only() {
    let api = Api::new().await;
    let (s, v, text) = api
        .send(Request::get("/health").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["status"].is_string());
    assert!(v["dependencies"]["postgres"]["status"].is_string());
    assert!(v["dependencies"]["docker"]["status"].is_string());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    for leak in [
        "postgres://",
        api.db.name.as_str(),
        env!("CARGO_PKG_VERSION"),
        "127.0.0.1",
        host.trim(),
    ] {
        if !leak.is_empty() {
            assert!(!text.contains(leak), "/health leaks {leak}: {text}");
        }
    }
    // /metrics and the OpenAPI document need no token either.
    let (s, _, text) = api
        .send(Request::get("/metrics").body(Body::empty()).unwrap())
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.contains("highway_up 1"), "{text}");
    let (s, v, _) = api
        .send(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["paths"]["/v1/activities"]["post"].is_object());
}

/// Reads an SSE body into `(event, id, data)` triples.
async fn sse(
    api: &Api,
    path: &str,
    token: &str,
    last_id: Option<&str>,
) -> Vec<(String, Option<String>, Value)> {
    let mut b = Request::get(path).header("authorization", format!("Bearer {token}"));
    if let Some(id) = last_id {
        b = b.header("last-event-id", id);
    }
    let resp = api
        .app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = tokio::time::timeout(WAIT, axum::body::to_bytes(resp.into_body(), 64 << 20))
        .await
        .expect("the log stream ends")
        .unwrap();
    let mut p = highway_worker::cli::remote::SseParser::default();
    p.push(&bytes)
        .into_iter()
        .map(|e| {
            (
                e.event,
                e.id,
                serde_json::from_str(&e.data).unwrap_or(Value::Null),
            )
        })
        .collect()
}

/// The log stream: stored lines in order, resumable from a sequence number, ending
/// with the final status once the activity is terminal.
#[tokio::test]
async fn log_stream_is_resumable_from_a_sequence_number() {
    let api = Api::new().await;
    let id = api.activity_of("tenant-a").await;
    for n in 1..=5i64 {
        sqlx::query(
            "INSERT INTO highway.activity_logs (activity_id, seq, attempt, stream, line) VALUES ($1, $2, 1, 'stdout', $3)",
        )
        .bind(id)
        .bind((1i64 << 32) | n)
        .bind(format!("line {n}"))
        .execute(&api.db.pool)
        .await
        .unwrap();
    }
    let path = format!("/v1/activities/{id}/logs?follow=false");
    let evs = sse(&api, &path, &api.a, None).await;
    let lines: Vec<&str> = evs
        .iter()
        .filter(|e| e.0 == "log")
        .map(|e| e.2["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 1", "line 2", "line 3", "line 4", "line 5"]);
    assert_eq!(evs.last().unwrap().0, "end");
    let third = evs[2].1.clone().unwrap();
    let evs = sse(&api, &path, &api.a, Some(&third)).await;
    let lines: Vec<&str> = evs
        .iter()
        .filter(|e| e.0 == "log")
        .map(|e| e.2["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 4", "line 5"]);
    let evs = sse(
        &api,
        &format!("/v1/activities/{id}/logs?follow=false&after={third}"),
        &api.a,
        None,
    )
    .await;
    assert_eq!(evs.iter().filter(|e| e.0 == "log").count(), 2);

    // Following: a line written later arrives, then the end once the activity is done.
    let app_api = &api;
    let follow = async {
        sse(
            app_api,
            &format!("/v1/activities/{id}/logs?after={third}"),
            &app_api.a,
            None,
        )
        .await
    };
    let write = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query(
            "INSERT INTO highway.activity_logs (activity_id, seq, attempt, stream, line) VALUES ($1, $2, 1, 'stderr', 'late'); ",
        )
        .bind(id)
        .bind((1i64 << 32) | 6)
        .execute(&api.db.pool)
        .await
        .unwrap();
        sqlx::query("SELECT pg_notify('highway_logs', $1)")
            .bind(id.to_string())
            .execute(&api.db.pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        api.db.client().cancel(id, None).await.unwrap();
    };
    let (evs, ()) = tokio::join!(follow, write);
    let lines: Vec<&str> = evs
        .iter()
        .filter(|e| e.0 == "log")
        .map(|e| e.2["line"].as_str().unwrap())
        .collect();
    assert_eq!(lines, ["line 4", "line 5", "late"]);
    let end = evs.last().unwrap();
    assert_eq!(end.0, "end");
    assert_eq!(end.2["status"], "cancelled");
}

/// End to end: `POST /v1/activities` (tools.docker.run) → an in-process worker runs the
/// container → the result, the container row and the log stream through the API.
#[tokio::test]
async fn e2e_docker_run_from_post_to_result_and_log_stream() {
    let d = docker().await;
    ensure_test_image();
    let api = Api::new().await;
    let artifacts = std::env::temp_dir().join(format!("highway-api-e2e-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&artifacts).unwrap();
    let opts = TestWorker::fast_options(2);
    let rt = Arc::new(highway_worker::docker::DockerRuntime::new(
        highway_worker::config::docker::DockerConfig::default(),
        api.db.pool.clone(),
        opts.id,
        artifacts.clone(),
    ));
    let worker = TestWorker::start(&api.db.pool, opts, |r| {
        highway_worker::docker::register(r, rt.clone())
    });

    let (s, v) = api
        .post_with(
            "/v1/activities",
            &api.a,
            json!({
                "kind": "tools.docker.run",
                "params": {"image": TEST_IMAGE, "command": ["sh", "-c", "echo hello from api; sleep 1; echo bye >&2"]},
                "retry_policy": {"maximum_attempts": 1}
            }),
            &[("idempotency-key", "e2e-1")],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["tenant_id"], "tenant-a");

    // Follow the stream from the start; it ends when the activity is terminal.
    let evs = sse(&api, &format!("/v1/activities/{id}/logs"), &api.a, None).await;
    let logged: Vec<(String, String)> = evs
        .iter()
        .filter(|e| e.0 == "log")
        .map(|e| {
            (
                e.2["stream"].as_str().unwrap().to_string(),
                e.2["line"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        logged.contains(&("stdout".into(), "hello from api".into())),
        "{logged:?}"
    );
    assert!(
        logged.contains(&("stderr".into(), "bye".into())),
        "{logged:?}"
    );
    assert_eq!(evs.last().unwrap().2["status"], "succeeded", "{evs:?}");

    let v = eventually("activity succeeded", WAIT, || async {
        let (_, v) = api.get(&format!("/v1/activities/{id}"), &api.a).await;
        (v["status"] == "succeeded").then_some(v)
    })
    .await;
    assert_eq!(v["result"]["exit_code"], 0, "{v}");
    assert_eq!(v["result"]["stdout"], "hello from api\n");

    let (s, c) = api
        .get(&format!("/v1/containers?activity={id}"), &api.a)
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = c["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{c}");
    assert_eq!(items[0]["status"], "removed");
    assert_eq!(items[0]["exit_code"], 0);
    let cid = items[0]["container_id"].as_str().unwrap();
    let (s, _) = api.get(&format!("/v1/containers/{cid}"), &api.b).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // The enqueue is in the audit log under the token's id, never the token.
    let (_, audit) = api
        .get(
            &format!("/v1/audit?activity={id}&action=activity.enqueue"),
            &api.a,
        )
        .await;
    let rows = audit["items"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{audit}");
    assert!(rows[0]["actor"].as_str().unwrap().starts_with("token:"));

    worker.stop().await;
    rt.drain().await;
    assert_no_containers(&d, id.parse().unwrap()).await;
    let _ = std::fs::remove_dir_all(&artifacts);
}

/// Runs `highway ARGS` to completion with the given environment (and none of the
/// caller's HIGHWAY_TOKEN*); returns (exit code, stdout, stderr).
fn cli(db_url: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(highway_bin());
    cmd.args(args)
        .env("DATABASE_URL", db_url)
        .env_remove("HIGHWAY_TOKEN")
        .env_remove("HIGHWAY_TOKEN_FILE")
        .env("RUST_LOG", "warn");
    run_cli(cmd, env)
}

/// S26 and the CLI against a running `highway up`: `tokens create` prints the token
/// once; `containers ls` / `activities logs` take it from HIGHWAY_TOKEN or a file, never
/// argv, and never print it.
#[tokio::test]
async fn s26_cli_against_highway_up_token_from_env_or_file_never_argv() {
    let db = TestDb::new().await;
    let state = std::env::temp_dir().join(format!("highway-api-cli-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&state).unwrap();
    let log_path = state.join("up.log");
    let (mut up, base) = spawn_up(&db.url, &state, |cmd| {
        cmd.env("RUST_LOG", "debug,sqlx=warn");
    })
    .await;
    let http = reqwest::Client::new();

    // Through the API now (the admin token `highway up` wrote to its state dir).
    let state_s = state.to_str().unwrap();
    let (rc, token, err) = cli(
        &db.url,
        &[
            "--state-dir",
            state_s,
            "tokens",
            "create",
            "--tenant",
            "tenant-a",
            "--name",
            "cli",
        ],
        &[],
    );
    assert_eq!(rc, 0, "{err}");
    let token = token.trim().to_string();
    assert!(token.starts_with("hw_"), "{token}");
    assert!(!err.contains(&token));
    let (rc, ls, _) = cli(&db.url, &["--state-dir", state_s, "tokens", "ls"], &[]);
    assert_eq!(rc, 0);
    assert!(ls.contains("tenant-a") && !ls.contains(&token[3..]), "{ls}");

    // Enqueue through the API, then read it back with the CLI.
    let resp = http
        .post(format!("{base}/v1/activities"))
        .bearer_auth(&token)
        .json(&json!({"kind": "highway.noop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let act: Value = resp.json().await.unwrap();
    let id = act["id"].as_str().unwrap().to_string();
    sqlx::query(
        "INSERT INTO highway.activity_logs (activity_id, seq, attempt, stream, line) VALUES ($1, 1, 1, 'stdout', 'from the cli')",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO highway.docker_containers (container_id, short_id, activity_id, tenant_id, image, status, name)
         VALUES ('d1d1d1d1d1d1d1d1', 'd1d1d1d1d1d1', $1, 'tenant-a', 'highway-test/busybox:1', 'running', 'hw-d1')",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .execute(&db.pool)
    .await
    .unwrap();

    let api_env = ("HIGHWAY_API_URL", base.as_str());
    // From the environment.
    let (rc, out, err) = cli(
        &db.url,
        &["containers", "ls"],
        &[api_env, ("HIGHWAY_TOKEN", &token)],
    );
    assert_eq!(rc, 0, "{err}");
    assert!(
        out.contains("d1d1d1d1d1d1") && out.contains("running"),
        "{out}"
    );
    assert!(!out.contains(&token[3..]) && !err.contains(&token[3..]));
    let (rc, out, err) = cli(
        &db.url,
        &["containers", "show", "hw-d1", "--json"],
        &[api_env, ("HIGHWAY_TOKEN", &token)],
    );
    assert_eq!(rc, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["container_id"], "d1d1d1d1d1d1d1d1");

    // From a file.
    let file = state.join("token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (rc, out, err) = cli(
        &db.url,
        &["activities", "logs", &id],
        &[api_env, ("HIGHWAY_TOKEN_FILE", file.to_str().unwrap())],
    );
    assert_eq!(rc, 0, "{err}");
    assert_eq!(out.trim(), "stdout | from the cli");
    assert!(!out.contains(&token[3..]) && !err.contains(&token[3..]));
    let (rc, out, _) = cli(
        &db.url,
        &[
            "containers",
            "ls",
            "--json",
            "--token-file",
            file.to_str().unwrap(),
        ],
        &[api_env],
    );
    assert_eq!(rc, 0);
    assert!(out.starts_with('['), "{out}");

    // Never argv: there is no flag for it.
    let (rc, _, err) = cli(
        &db.url,
        &["containers", "ls", "--token", &token],
        &[api_env],
    );
    assert_ne!(rc, 0);
    assert!(
        !err.contains(&token[3..]),
        "the rejected token was echoed: {err}"
    );
    // No token at all: a clear error; a wrong one: 401, named.
    let (rc, _, err) = cli(&db.url, &["containers", "ls"], &[api_env]);
    assert_ne!(rc, 0);
    assert!(err.contains("HIGHWAY_TOKEN"), "{err}");
    let bad = store::generate_token();
    let (rc, _, err) = cli(
        &db.url,
        &["containers", "ls"],
        &[api_env, ("HIGHWAY_TOKEN", &bad)],
    );
    assert_ne!(rc, 0);
    assert!(err.contains("401") && !err.contains(&bad[3..]), "{err}");

    // The server never logged a token (debug level).
    stop_up(&mut up).await;
    let logged = std::fs::read_to_string(&log_path).unwrap();
    assert!(!logged.contains(&token[3..]), "token in server log");
    assert!(!logged.contains(&bad[3..]), "token in server log");
    let _ = std::fs::remove_dir_all(&state);
}

/// R8 over HTTP: with Postgres unreachable, `/health` stays 200 and says degraded, and an
/// enqueue answers 503 `postgres_not_ready` at once instead of hanging.
#[tokio::test]
async fn postgres_down_enqueue_answers_503_fast_and_health_is_degraded() {
    // A port nothing listens on: the pool connects lazily and every query fails.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://postgres:x@127.0.0.1:{port}/highway");
    let pool = highway_worker::db::lazy_pool(&url, &Default::default()).unwrap();
    let health = Health::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let monitor = tokio::spawn(highway_worker::health::postgres_monitor(
        pool.clone(),
        health.postgres.clone(),
        Duration::from_secs(5),
        stop.clone(),
    ));
    eventually("postgres seen down", Duration::from_secs(10), || async {
        (!health.postgres.is_up() && health.postgres.snapshot().consecutive_failures > 0)
            .then_some(())
    })
    .await;
    let app = api::router(AppState::new(health.clone(), pool, ApiConfig::default()));
    let t0 = std::time::Instant::now();
    let resp = app
        .clone()
        .oneshot(
            Request::post("/v1/activities")
                .header("content-type", "application/json")
                .header("authorization", "Bearer hw_whatever")
                .body(Body::from(r#"{"kind":"highway.noop","params":{}}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(t0.elapsed() < Duration::from_secs(1), "{:?}", t0.elapsed());
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["error"]["code"], "postgres_not_ready");
    let resp = app
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["dependencies"]["postgres"]["status"], "down");
    assert!(
        !body.to_string().contains(&port.to_string()),
        "no connection details: {body}"
    );
    stop.cancel();
    monitor.await.unwrap();
}
