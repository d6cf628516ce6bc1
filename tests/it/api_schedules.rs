//! `/v1/schedules` through the real router (`oneshot`) on a fresh database: create, get,
//! list (filters, pages), PUT and PATCH, pause/resume, preview, fires, trigger (its
//! activity run by a worker), backfill (and its size cap), delete, with one audit row per
//! mutation; tenancy (another tenant's id is 404 like a missing one), the schedules quota
//! (429), 422 naming a bad cron, timezone, policy or unknown field, 400 for a non-UUID
//! id; and `highway schedules create/ls/pause/trigger` against a running `highway up`.

use crate::api::{code, Api};
use crate::cli_remote::{spawn_up, stop_up};
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use chrono::{Duration as ChronoDuration, DurationRound, SecondsFormat, Utc};
use highway_tests::{eventually, highway_bin, TestDb, TestWorker};
use highway_worker::api::store;
use highway_worker::config::api::ApiConfig;
use serde_json::{json, Value};
use std::time::Duration;
use tower::ServiceExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);

/// More of the router fixture for schedules: other methods and the audit trail.
impl Api {
    /// One request; `body` is sent as JSON when given.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {token}"));
        let body = match body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let (s, v, _) = self.send(b.body(body).unwrap()).await;
        (s, v)
    }

    async fn audit_actions(&self, target: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT action FROM highway.audit_log WHERE target = $1 ORDER BY id")
            .bind(target)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
    }
}

fn spec(name: &str, cron: &str) -> Value {
    json!({"name": name, "cron": cron, "activity": {"kind": "highway.noop", "params": {"n": 1}}})
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// CRUD and every operation through the router, one audit row per mutation, and a
/// trigger whose activity a worker runs.
#[tokio::test]
async fn schedules_crud_operations_and_audit_over_http() {
    let api = Api::with(ApiConfig::default()).await;
    let mut body = spec("nightly", "0 3 * * *");
    body["timezone"] = json!("Europe/Berlin");
    body["overlap"] = json!("allow");
    let (s, v) = api.post("/v1/schedules", &api.a, body).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["tenant_id"], "tenant-a");
    assert_eq!(v["timezone"], "Europe/Berlin");
    assert!(v["next_run_at"].is_string(), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let one = format!("/v1/schedules/{id}");

    let (s, v) = api.get(&one, &api.a).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["name"], "nightly");

    // PUT replaces the definition; PATCH merges into it.
    let mut put = spec("nightly", "30 2 * * *");
    put["overlap"] = json!("allow");
    let (s, v) = api.call(Method::PUT, &one, &api.a, Some(put)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["cron"].as_str(), v["timezone"].as_str()),
        (Some("30 2 * * *"), Some("UTC"))
    );
    let (s, v) = api
        .call(
            Method::PATCH,
            &one,
            &api.a,
            Some(json!({"cron": "* * * * *", "activity": {"priority": 2}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["cron"], "* * * * *");
    assert_eq!(v["activity"]["priority"], 2);
    assert_eq!(
        v["activity"]["params"],
        json!({"n": 1}),
        "patch keeps the rest"
    );
    assert_eq!(v["version"], 3);

    // Pause with a note (twice: the second changes nothing), list by paused, resume.
    let (s, v) = api
        .post(
            &format!("{one}/pause"),
            &api.a,
            json!({"note": "maintenance"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["paused"].as_bool(), v["changed"].as_bool()),
        (Some(true), Some(true))
    );
    assert_eq!(v["note"], "maintenance");
    let (s, v) = api
        .call(Method::POST, &format!("{one}/pause"), &api.a, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["changed"], false);
    let (_, v) = api.get("/v1/schedules?paused=true", &api.a).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1, "{v}");
    let (_, v) = api.get("/v1/schedules?paused=false", &api.a).await;
    assert!(v["items"].as_array().unwrap().is_empty(), "{v}");
    let (s, v) = api
        .call(Method::POST, &format!("{one}/resume"), &api.a, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["paused"].as_bool(), v["changed"].as_bool()),
        (Some(false), Some(true))
    );

    let (s, v) = api.get(&format!("{one}/preview?count=3"), &api.a).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let at: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["at"].as_str().unwrap())
        .collect();
    assert_eq!(at.len(), 3, "{v}");
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{at:?}");
    let (s, v) = api.get(&format!("{one}/preview?count=0"), &api.a).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("count"))
    );

    // Trigger: one activity, which a worker runs.
    let (s, v) = api
        .call(Method::POST, &format!("{one}/trigger"), &api.a, None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["outcome"], "fired", "{v}");
    let act = v["activity_id"].as_str().unwrap().to_string();
    let worker = TestWorker::start(&api.db.pool, TestWorker::fast_options(2), |_| {});
    let done = eventually("the triggered activity ran", WAIT, || async {
        let (_, a) = api.get(&format!("/v1/activities/{act}"), &api.a).await;
        (a["status"] == "succeeded").then_some(a)
    })
    .await;
    assert_eq!(done["kind"], "highway.noop");
    assert_eq!(done["result"], json!({"echo": {"n": 1}}));
    worker.stop().await;
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.activities WHERE idempotency_key LIKE 'schedule:' || $1 || ':%'",
    )
    .bind(&id)
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1, "one trigger, one activity");

    // Backfill three past minutes (allow); then a range over the cap is a clear 422.
    let now = Utc::now();
    let from = (now - ChronoDuration::minutes(10))
        .duration_trunc(ChronoDuration::minutes(1))
        .unwrap();
    let to = from + ChronoDuration::minutes(2);
    let (s, v) = api
        .post(
            &format!("{one}/backfill"),
            &api.a,
            json!({"from": rfc3339(from), "to": rfc3339(to)}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["slots"].as_u64(), v["fired"].as_u64()),
        (Some(3), Some(3)),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("{one}/backfill"),
            &api.a,
            json!({"from": rfc3339(now - ChronoDuration::days(30)), "to": rfc3339(to)}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "to");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("10000"),
        "{v}"
    );
    let (s, v) = api
        .post(
            &format!("{one}/backfill"),
            &api.a,
            json!({"from": rfc3339(from), "to": rfc3339(now + ChronoDuration::hours(1))}),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("to"))
    );

    let (s, v) = api.get(&format!("{one}/fires?limit=10"), &api.a).await;
    assert_eq!(s, StatusCode::OK);
    let sources: Vec<&str> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["source"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources.iter().filter(|s| **s == "backfill").count(),
        3,
        "{v}"
    );
    assert_eq!(
        sources.iter().filter(|s| **s == "trigger").count(),
        1,
        "{v}"
    );

    // Pages: three more schedules, listed two at a time.
    for n in ["p1", "p2", "p3"] {
        let (s, v) = api
            .post("/v1/schedules", &api.a, spec(n, "0 0 * * *"))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let mut names = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let (s, page) = api
            .get(&format!("/v1/schedules?limit=2{after}"), &api.a)
            .await;
        assert_eq!(s, StatusCode::OK, "{page}");
        pages += 1;
        for item in page["items"].as_array().unwrap() {
            names.push(item["name"].as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = format!("&after={n}"),
            None => break,
        }
    }
    assert_eq!(names, ["nightly", "p1", "p2", "p3"]);
    assert_eq!(pages, 3, "two full pages, then an empty last one");
    let (_, v) = api.get("/v1/schedules?name=p2", &api.a).await;
    assert_eq!(v["items"][0]["name"], "p2");

    // The OpenAPI document describes every operation, with schemas from the types.
    let (s, doc) = api.get("/v1/openapi.json", &api.a).await;
    assert_eq!(s, StatusCode::OK);
    for (path, method) in [
        ("/v1/schedules", "post"),
        ("/v1/schedules", "get"),
        ("/v1/schedules/{id}", "put"),
        ("/v1/schedules/{id}", "patch"),
        ("/v1/schedules/{id}", "delete"),
        ("/v1/schedules/{id}/backfill", "post"),
        ("/v1/schedules/{id}/preview", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path}");
    }
    let spec_props = &doc["components"]["schemas"]["ScheduleSpec"]["properties"];
    for f in [
        "name",
        "cron",
        "timezone",
        "activity",
        "overlap",
        "catchup_window",
    ] {
        assert!(spec_props[f].is_object(), "ScheduleSpec.{f}: {spec_props}");
    }
    assert!(doc["components"]["schemas"]["Schedule"]["properties"]["next_run_at"].is_object());

    let (s, v) = api.call(Method::DELETE, &one, &api.a, None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = api.get(&one, &api.a).await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "not_found"));

    assert_eq!(
        api.audit_actions(&id).await,
        [
            "schedule.create",
            "schedule.update",
            "schedule.update",
            "schedule.pause",
            "schedule.pause",
            "schedule.resume",
            "schedule.trigger",
            "schedule.backfill",
            "schedule.delete",
        ]
    );
    let (tenant, actor, activity): (Option<String>, String, Option<Uuid>) = sqlx::query_as(
        "SELECT tenant_id, actor, activity_id FROM highway.audit_log WHERE action = 'schedule.trigger'",
    )
    .fetch_one(&api.db.pool)
    .await
    .unwrap();
    assert_eq!(tenant.as_deref(), Some("tenant-a"));
    assert!(actor.starts_with("token:"), "{actor}");
    assert_eq!(activity.map(|a| a.to_string()), Some(act));
}

/// Tenancy, the schedules quota, and the 4xx answers.
#[tokio::test]
async fn schedules_tenancy_quota_and_bad_input() {
    let api = Api::with(ApiConfig {
        api_quota_schedules: 2,
        ..ApiConfig::default()
    })
    .await;
    let (s, v) = api
        .post("/v1/schedules", &api.a, spec("a1", "0 * * * *"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();

    // Tenant b: a's schedule answers exactly like a missing one, for every operation.
    let missing = Uuid::now_v7().to_string();
    let ops: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::GET, "", None),
        (Method::PUT, "", Some(spec("a1", "0 * * * *"))),
        (Method::PATCH, "", Some(json!({"cron": "0 0 * * *"}))),
        (Method::POST, "/pause", None),
        (Method::POST, "/resume", None),
        (Method::POST, "/trigger", None),
        (
            Method::POST,
            "/backfill",
            Some(json!({"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z"})),
        ),
        (Method::GET, "/preview", None),
        (Method::GET, "/fires", None),
        (Method::DELETE, "", None),
    ];
    for (m, suffix, body) in &ops {
        let theirs = api
            .call(
                m.clone(),
                &format!("/v1/schedules/{id}{suffix}"),
                &api.b,
                body.clone(),
            )
            .await;
        let none = api
            .call(
                m.clone(),
                &format!("/v1/schedules/{missing}{suffix}"),
                &api.b,
                body.clone(),
            )
            .await;
        assert_eq!(
            theirs.0,
            StatusCode::NOT_FOUND,
            "{m} {suffix}: {:?}",
            theirs.1
        );
        assert_eq!(theirs, none, "{m} {suffix}");
    }
    let (_, v) = api.get("/v1/schedules?tenant=tenant-a", &api.b).await;
    assert!(v["items"].as_array().unwrap().is_empty(), "{v}");
    // Still there and untouched; admin sees it.
    let (s, v) = api.get(&format!("/v1/schedules/{id}"), &api.admin).await;
    assert_eq!((s, v["paused"].as_bool()), (StatusCode::OK, Some(false)));
    let (_, v) = api.get("/v1/schedules?tenant=tenant-a", &api.admin).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 1);
    // A tenant token cannot create for another tenant.
    let mut other = spec("x", "0 * * * *");
    other["tenant_id"] = json!("tenant-b");
    let (s, v) = api.post("/v1/schedules", &api.a, other).await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("tenant_id"))
    );

    // 422 naming the field: cron, timezone, policy, unknown field.
    let mut bad_tz = spec("tz", "0 * * * *");
    bad_tz["timezone"] = json!("Europe/Atlantis");
    let mut bad_policy = spec("pol", "0 * * * *");
    bad_policy["overlap"] = json!("sometimes");
    let mut unknown = spec("unk", "0 * * * *");
    unknown["crn"] = json!("typo");
    for (body, field, want_code) in [
        (spec("c", "61 * * * *"), "cron", "invalid_value"),
        (spec("c", "* * * *"), "cron", "invalid_value"),
        (bad_tz, "timezone", "invalid_value"),
        (bad_policy, "overlap", "invalid_value"),
        (unknown, "crn", "unknown_field"),
    ] {
        let (s, v) = api.post("/v1/schedules", &api.a, body.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {v}");
        assert_eq!(v["error"]["field"], field, "{body}: {v}");
        assert_eq!(code(&v), want_code, "{body}: {v}");
    }
    let (s, v) = api
        .call(
            Method::PATCH,
            &format!("/v1/schedules/{id}"),
            &api.a,
            Some(json!({"cron": "0 0 31 2 *"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("cron"))
    );

    // 400 for a non-UUID id; 409 for a taken name; 415 for another content type.
    for path in [
        "/v1/schedules/42",
        "/v1/schedules/nope/fires",
        "/v1/schedules?after=x",
    ] {
        let (s, v) = api.get(path, &api.a).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(code(&v), "invalid_field", "{path}");
    }
    let (s, v) = api
        .post("/v1/schedules/zzz/trigger", &api.a, json!({}))
        .await;
    assert_eq!(
        (s, v["error"]["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    let (s, v) = api
        .post("/v1/schedules", &api.a, spec("a1", "0 0 * * *"))
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "conflict"), "{v}");
    let req = Request::post("/v1/schedules")
        .header("authorization", format!("Bearer {}", api.a))
        .header("content-type", "text/plain")
        .body(Body::from(spec("t", "0 0 * * *").to_string()))
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // The quota (2): a's second is accepted, its third is 429; b has its own.
    let (s, v) = api
        .post("/v1/schedules", &api.a, spec("a2", "0 * * * *"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = api
        .post("/v1/schedules", &api.a, spec("a3", "0 * * * *"))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("schedules"),
        "{v}"
    );
    let (s, v) = api
        .post("/v1/schedules", &api.b, spec("b1", "0 * * * *"))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM highway.schedules WHERE tenant_id = 'tenant-a'")
            .fetch_one(&api.db.pool)
            .await
            .unwrap();
    assert_eq!(n, 2);
}

/// `highway schedules ...` against a running `highway up`, with the token from the
/// environment: create, ls (table and --json), pause, trigger (its activity runs).
#[tokio::test]
async fn cli_schedules_against_highway_up() {
    let db = TestDb::new().await;
    let state = std::env::temp_dir().join(format!("highway-sched-cli-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&state).unwrap();
    let (mut up, base) = spawn_up(&db.url, &state, |cmd| {
        cmd.env("RUST_LOG", "info,sqlx=warn");
    })
    .await;
    let (_, token) = store::create_token(&db.pool, "cli", Some("tenant-a"))
        .await
        .unwrap();
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(highway_bin())
            .args(["schedules"])
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("HIGHWAY_TOKEN_FILE")
            .env("HIGHWAY_API_URL", &base)
            .env("HIGHWAY_TOKEN", &token)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run highway");
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        );
        assert!(out.status.success(), "highway schedules {args:?}: {e}");
        assert!(!o.contains(&token[3..]) && !e.contains(&token[3..]));
        o
    };

    let out = cli(&[
        "create",
        "--name",
        "nightly",
        "--cron",
        "0 3 * * *",
        "--kind",
        "highway.noop",
        "--params",
        r#"{"from":"cli"}"#,
    ]);
    assert!(out.contains("nightly") && out.contains("next"), "{out}");
    let out = cli(&["ls"]);
    assert!(
        out.starts_with("ID") && out.contains("tenant-a") && out.contains("0 3 * * *"),
        "{out}"
    );
    let out = cli(&["pause", "nightly", "--note", "maintenance"]);
    assert!(out.contains("paused"), "{out}");
    let rows: Value = serde_json::from_str(&cli(&["ls", "--json"])).unwrap();
    assert_eq!(rows[0]["name"], "nightly");
    assert_eq!(
        (rows[0]["paused"].as_bool(), rows[0]["note"].as_str()),
        (Some(true), Some("maintenance"))
    );
    let t: Value = serde_json::from_str(&cli(&["trigger", "nightly", "--json"])).unwrap();
    assert_eq!(t["outcome"], "fired", "{t}");
    let act = Uuid::parse_str(t["activity_id"].as_str().unwrap()).unwrap();
    eventually("highway up ran the triggered activity", WAIT, || async {
        let (status, result): (String, Option<Value>) =
            sqlx::query_as("SELECT status, result FROM highway.activities WHERE id = $1")
                .bind(act)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        (status == "succeeded" && result == Some(json!({"echo": {"from": "cli"}}))).then_some(())
    })
    .await;
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE action LIKE 'schedule.%' AND tenant_id = 'tenant-a'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 3, "create, pause, trigger");

    stop_up(&mut up).await;
    let _ = std::fs::remove_dir_all(&state);
}
