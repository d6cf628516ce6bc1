//! Validation at the door: `tools.docker.*` params a worker would refuse (syntax or the
//! operator's policy) are a 422 naming the JSON path, from `POST /v1/activities`,
//! `POST /v1/runs` (every step, inputs substituted) and schedule create / replace /
//! patch, and nothing is stored. The router runs on a fresh database with a policy;
//! the last test drives a real `highway up` whose `HIGHWAY_DOCKER_*` settings are the
//! policy its API admits against.

use crate::cli_remote::{spawn_up, stop_up};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use highway_tests::docker::TEST_IMAGE;
use highway_tests::TestDb;
use highway_worker::api::{self, store, AppState};
use highway_worker::config::api::ApiConfig;
use highway_worker::config::docker::SecurityPolicy;
use highway_worker::health::Health;
use serde_json::{json, Value};
use tower::ServiceExt;
use uuid::Uuid;

struct Door {
    db: TestDb,
    app: Router,
    token: String,
}

impl Door {
    /// The router with the default (secure) policy, images limited to the test image's
    /// repository, and the given changes.
    async fn new(change: impl FnOnce(&mut SecurityPolicy)) -> Self {
        let db = TestDb::new().await;
        let mut policy = SecurityPolicy {
            allowed_images: vec!["highway-test/*".into()],
            ..SecurityPolicy::default()
        };
        change(&mut policy);
        let state = AppState::new(Health::default(), db.pool.clone(), ApiConfig::default())
            .with_docker_policy(policy);
        let (_, token) = store::create_token(&db.pool, "a", Some("tenant-a"))
            .await
            .unwrap();
        Self {
            app: api::router(state),
            db,
            token,
        }
    }

    async fn send(&self, method: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM highway.{table}"))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// `POST /v1/activities` of a `tools.docker.run` with `params`: must be a 422 naming
    /// `field` with `code`, and store nothing.
    async fn refuses_run(&self, params: Value, field: &str, code: &str) {
        self.refuses("tools.docker.run", params, field, code).await
    }

    async fn refuses(&self, kind: &str, params: Value, field: &str, code: &str) {
        let before = self.count("activities").await;
        let (s, v) = self
            .send(
                "POST",
                "/v1/activities",
                &json!({"kind": kind, "params": params}),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{kind} {params}: {v}");
        assert_eq!(v["error"]["field"], field, "{kind} {params}: {v}");
        assert_eq!(v["error"]["code"], code, "{kind} {params}: {v}");
        assert!(
            !v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{v}"
        );
        assert_eq!(self.count("activities").await, before, "{params}: stored");
    }
}

fn run(extra: Value) -> Value {
    let mut p = json!({"image": TEST_IMAGE});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    p
}

const INVALID: &str = "invalid_params";
const POLICY: &str = "policy_violation";

#[tokio::test]
async fn activities_are_refused_per_class_of_param_and_nothing_is_stored() {
    let d = Door::new(|_| {}).await;
    // Image references and the operator's image allow-list.
    for bad in ["UPPER/case:tag", "a//b", "busybox@sha256:abc"] {
        d.refuses_run(
            json!({"image": bad}),
            "params.image",
            "invalid_image_reference",
        )
        .await;
    }
    let long_tag = format!("highway-test/busybox:{}", "t".repeat(129));
    d.refuses_run(
        json!({"image": long_tag}),
        "params.image",
        "invalid_image_reference",
    )
    .await;
    d.refuses_run(json!({"image": "busybox:1"}), "params.image", POLICY)
        .await;
    // Limits: syntax, and values above the policy's maximums.
    d.refuses_run(
        run(json!({"memory_limit": "lots"})),
        "params.memory_limit",
        INVALID,
    )
    .await;
    d.refuses_run(
        run(json!({"memory_limit": "64g"})),
        "params.memory_limit",
        POLICY,
    )
    .await;
    d.refuses_run(run(json!({"cpu_limit": "-1"})), "params.cpu_limit", INVALID)
        .await;
    d.refuses_run(run(json!({"cpu_limit": "64"})), "params.cpu_limit", POLICY)
        .await;
    d.refuses_run(
        run(json!({"pids_limit": 1000000})),
        "params.pids_limit",
        POLICY,
    )
    .await;
    // Privileged, host namespaces, capabilities.
    d.refuses_run(
        run(json!({"privileged": true})),
        "params.privileged",
        POLICY,
    )
    .await;
    for mode in ["network_mode", "pid_mode", "ipc_mode"] {
        d.refuses_run(
            run(json!({ mode: "host" })),
            &format!("params.{mode}"),
            POLICY,
        )
        .await;
    }
    d.refuses_run(
        run(json!({"cap_add": ["SYS_ADMIN"]})),
        "params.cap_add[0]",
        POLICY,
    )
    .await;
    d.refuses_run(
        run(json!({"cap_add": ["NOT A CAP"]})),
        "params.cap_add[0]",
        INVALID,
    )
    .await;
    // Host binds, devices and the Docker socket.
    d.refuses_run(
        run(json!({"volumes": ["/etc:/host-etc"]})),
        "params.volumes[0].source",
        POLICY,
    )
    .await;
    d.refuses_run(
        run(json!({"volumes": ["/var/run/docker.sock:/var/run/docker.sock"]})),
        "params.volumes[0].source",
        POLICY,
    )
    .await;
    d.refuses_run(
        run(json!({"devices": ["/dev/fuse"]})),
        "params.devices",
        POLICY,
    )
    .await;
    // Environment names, labels under the reserved prefix, unknown fields.
    for (name, path) in [("1X", "1X"), ("A=B", "A=B"), ("", "\"\"")] {
        d.refuses_run(
            run(json!({"environment": { name: "v" }})),
            &format!("params.environment.{path}"),
            INVALID,
        )
        .await;
    }
    d.refuses_run(
        run(json!({"labels": {"highway.activity_id": "x"}})),
        "params.labels.highway.activity_id",
        INVALID,
    )
    .await;
    d.refuses_run(run(json!({"bogus": 1})), "params.bogus", INVALID)
        .await;
    // Commands: NUL bytes (refused by the body pass, naming the path) and too many args.
    let (s, v) = d
        .send(
            "POST",
            "/v1/activities",
            &json!({"kind": "tools.docker.run", "params": run(json!({"command": ["a\u{0}b"]}))}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "params.command[0]", "{v}");
    let many: Vec<String> = (0..5000).map(|i| i.to_string()).collect();
    d.refuses_run(run(json!({"command": many})), "params.command", INVALID)
        .await;
    // Timeouts.
    d.refuses_run(run(json!({"timeout": "30d"})), "params.timeout", INVALID)
        .await;
    d.refuses_run(
        run(json!({"stop_grace": "2h"})),
        "params.stop_grace",
        INVALID,
    )
    .await;
    // The other docker kinds go through their own parsers; an unknown one is refused.
    d.refuses(
        "tools.docker.inspect",
        json!({"container": "../images/x"}),
        "params.container",
        INVALID,
    )
    .await;
    d.refuses(
        "tools.docker.exec",
        json!({"bogus": 1}),
        "params.bogus",
        INVALID,
    )
    .await;
    d.refuses("tools.docker.nope", json!({}), "kind", INVALID)
        .await;
    assert_eq!(d.count("activities").await, 0);

    // What the policy allows passes, and other kinds are not judged.
    let (s, v) = d
        .send(
            "POST",
            "/v1/activities",
            &json!({"kind": "tools.docker.run", "params": run(json!({"memory_limit": "64m"}))}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = d
        .send(
            "POST",
            "/v1/activities",
            &json!({"kind": "highway.noop", "params": {"privileged": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(d.count("activities").await, 2);
}

#[tokio::test]
async fn the_policy_is_the_servers_own() {
    // The same request, admitted once the operator allows it.
    let d = Door::new(|p| {
        p.allow_privileged = true;
        p.allow_host_network = true;
        p.cap_add_allowlist = vec!["SYS_ADMIN".into()];
    })
    .await;
    let (s, v) = d
        .send(
            "POST",
            "/v1/activities",
            &json!({"kind": "tools.docker.run",
                    "params": run(json!({"privileged": true, "network_mode": "host", "cap_add": ["SYS_ADMIN"]}))}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    d.refuses_run(run(json!({"pid_mode": "host"})), "params.pid_mode", POLICY)
        .await;
}

#[tokio::test]
async fn workflow_steps_are_judged_with_their_inputs_before_the_run_is_stored() {
    let d = Door::new(|_| {}).await;
    let def = |steps: Value| {
        json!({"definition": {"name": "w", "inputs": {"mem": {"default": "64m"}}, "steps": steps},
               "inputs": {"mem": "64g"}})
    };
    let ok_step = json!({"id": "a", "kind": "tools.docker.run", "params": {"image": TEST_IMAGE}});
    let cases = [
        (
            json!({"id": "b", "kind": "tools.docker.run", "params": {"image": TEST_IMAGE, "privileged": true}}),
            "definition.steps[1].params.privileged",
            POLICY,
        ),
        // `${inputs.mem}` is judged as the run gives it (64g, above the maximum).
        (
            json!({"id": "b", "kind": "tools.docker.run", "params": {"image": TEST_IMAGE, "memory_limit": "${inputs.mem}"}}),
            "definition.steps[1].params.memory_limit",
            POLICY,
        ),
        (
            json!({"id": "b", "kind": "tools.docker.run", "params": {"image": TEST_IMAGE, "bogus": 1}}),
            "definition.steps[1].params.bogus",
            INVALID,
        ),
        (
            json!({"id": "b", "kind": "tools.docker.exec", "depends_on": ["a"], "params": {"container": "a/b", "command": ["true"]}}),
            "definition.steps[1].params.container",
            INVALID,
        ),
    ];
    for (step, field, code) in cases {
        let (s, v) = d
            .send("POST", "/v1/runs", &def(json!([ok_step, step])))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{step}: {v}");
        assert_eq!(v["error"]["field"], field, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert_eq!(d.count("workflow_runs").await, 0);
        assert_eq!(d.count("activities").await, 0);
    }
    // The Rust client (and `highway run`) refuses the syntax locally with the same parser.
    let definition: highway_workflows::definition::WorkflowDefinition = serde_json::from_value(
        json!({"name": "w", "steps": [{"id": "a", "kind": "tools.docker.run", "params": {"image": TEST_IMAGE, "memory_limit": "lots"}}]}),
    )
    .unwrap();
    let e = highway_workflows::runs::start_run(
        &d.db.client(),
        "tenant-a",
        &definition,
        &Default::default(),
        highway_worker::workflow::Digests::default().0.as_ref(),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("steps[0].params.memory_limit"),
        "{e}"
    );
    assert_eq!(d.count("workflow_runs").await, 0);
}

#[tokio::test]
async fn schedules_are_judged_on_create_replace_and_patch() {
    let d = Door::new(|_| {}).await;
    let spec = |params: Value| {
        json!({"name": "nightly", "cron": "0 3 * * *",
               "activity": {"kind": "tools.docker.run", "params": params}})
    };
    let (s, v) = d
        .send(
            "POST",
            "/v1/schedules",
            &spec(run(json!({"privileged": true}))),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "activity.params.privileged", "{v}");
    assert_eq!(d.count("schedules").await, 0);

    let (s, v) = d.send("POST", "/v1/schedules", &spec(run(json!({})))).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    let stored = || async {
        sqlx::query_scalar::<_, Value>("SELECT template FROM highway.schedules")
            .fetch_one(&d.db.pool)
            .await
            .unwrap()
    };
    let before = stored().await;
    let (s, v) = d
        .send(
            "PUT",
            &format!("/v1/schedules/{id}"),
            &spec(run(json!({"memory_limit": "64g"}))),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["field"], "activity.params.memory_limit", "{v}");
    let (s, v) = d
        .send(
            "PATCH",
            &format!("/v1/schedules/{id}"),
            &json!({"activity": {"params": {"volumes": ["/var/run/docker.sock:/s"]}}}),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["error"]["field"], "activity.params.volumes[0].source",
        "{v}"
    );
    assert_eq!(
        stored().await,
        before,
        "a refused update changed the schedule"
    );
    assert_eq!(d.count("schedules").await, 1);
}

/// A real `highway up`: its API admits against the `HIGHWAY_DOCKER_*` policy its worker
/// runs with, not a default of its own.
#[tokio::test]
async fn a_running_server_admits_against_its_configured_policy() {
    let db = TestDb::new().await;
    let state = std::env::temp_dir().join(format!("highway-door-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&state).unwrap();
    let (mut up, base) = spawn_up(&db.url, &state, |cmd| {
        cmd.env("HIGHWAY_DOCKER_MAX_MEMORY", "1g")
            .env("HIGHWAY_DOCKER_ALLOWED_IMAGES", "highway-test/*")
            .env("HIGHWAY_GC_ENABLED", "false");
    })
    .await;
    let (_, token) = store::create_token(&db.pool, "a", Some("tenant-a"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let post = |params: Value| {
        http.post(format!("{base}/v1/activities"))
            .bearer_auth(&token)
            .json(&json!({"kind": "tools.docker.run", "params": params}))
            .send()
    };
    let r = post(run(json!({"memory_limit": "2g"}))).await.unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    let r = post(json!({"image": "busybox:1"})).await.unwrap();
    let status2 = r.status();
    let v2: Value = r.json().await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.activities")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    stop_up(&mut up).await;
    std::fs::remove_dir_all(&state).ok();
    assert_eq!(status.as_u16(), 422, "{v}");
    assert_eq!(
        (v["error"]["field"].as_str(), v["error"]["code"].as_str()),
        (Some("params.memory_limit"), Some(POLICY)),
        "{v}"
    );
    assert_eq!(status2.as_u16(), 422, "{v2}");
    assert_eq!(v2["error"]["field"], "params.image", "{v2}");
    assert_eq!(stored, 0);
}
