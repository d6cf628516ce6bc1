//! `GET /v1/openapi.json`: the OpenAPI 3.0 document of the API, built from the code: the
//! route table below is the same list the router is checked against (a test), and the
//! component schemas come from `schemars` derives of the wire types. For the two queue
//! types that live in `highway-workflows` without a schema derive (`EnqueueRequest`,
//! `Activity`), documented mirrors are kept here, and a test fails when a mirror's
//! fields drift from what the real type serializes.

use super::{registries, runs, schedules, secrets, store, tokens, AppState};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use highway_workflows::schedule as sched;
use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde_json::{json, Map, Value};
use std::sync::OnceLock;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/v1/openapi.json",
        get(|| async { Json(document().clone()) }),
    )
}

/// One operation of the API.
#[derive(Debug, Clone, Copy)]
pub struct Op {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    /// Query parameters (all optional strings).
    pub query: &'static [&'static str],
    /// Component name of the JSON body, if any.
    pub body: Option<&'static str>,
    /// Component name (or `None` for a free-form object) of the success answer.
    pub answer: Option<&'static str>,
    pub auth: bool,
}

/// Every operation the router serves.
pub const OPS: &[Op] = &[
    Op { method: "get", path: "/health", summary: "Process and dependency status (no auth; no versions, hosts or URLs)", query: &[], body: None, answer: None, auth: false },
    Op { method: "get", path: "/health/live", summary: "Liveness: 200 while the process serves (no auth)", query: &[], body: None, answer: Some("Liveness"), auth: false },
    Op { method: "get", path: "/health/ready", summary: "Readiness: 200 while Postgres (and Docker, when this worker requires it) is up; 503 naming the failing dependencies, or while draining (no auth)", query: &[], body: None, answer: Some("Readiness"), auth: false },
    Op { method: "get", path: "/metrics", summary: "Prometheus metrics (text exposition)", query: &[], body: None, answer: None, auth: false },
    Op { method: "get", path: "/v1/openapi.json", summary: "This document", query: &[], body: None, answer: None, auth: false },
    Op { method: "post", path: "/v1/activities", summary: "Enqueue an activity (Idempotency-Key header: same key + same body = same activity, 200; different body = 409)", query: &[], body: Some("EnqueueRequest"), answer: Some("Activity"), auth: true },
    Op { method: "get", path: "/v1/activities", summary: "List activities, newest first", query: &["status", "kind", "queue", "run", "tenant", "limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/activities/{id}", summary: "Get an activity; with wait (e.g. 30s, at most 300s) the answer comes once it is terminal or the wait ends (its state either way)", query: &["tenant", "wait"], body: None, answer: Some("Activity"), auth: true },
    Op { method: "post", path: "/v1/activities/{id}/cancel", summary: "Cancel an activity", query: &[], body: None, answer: None, auth: true },
    Op { method: "post", path: "/v1/activities/{id}/retry", summary: "Put a failed, cancelled or timed_out activity back in its queue (attempts extended: max_attempts grows by the attempts counted; 409 in another state or when its run ended)", query: &[], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/activities/{id}/logs", summary: "Log lines as server-sent events (event `log`, id = seq; then `end`); resume with Last-Event-ID or ?after=", query: &["after", "follow"], body: None, answer: Some("LogRow"), auth: true },
    Op { method: "get", path: "/v1/containers", summary: "List tracked containers (view=orphans for orphans)", query: &["status", "tenant", "run", "activity", "image", "older_than", "view", "limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/containers/{id}", summary: "Get a container by id, short id or name", query: &[], body: None, answer: Some("Container"), auth: true },
    Op { method: "post", path: "/v1/runs", summary: "Start a workflow run: from a definition (`definition`, `inputs`; 422 naming the field) or a bare run record (`name`, `input`)", query: &[], body: Some("StartRun"), answer: Some("RunView"), auth: true },
    Op { method: "get", path: "/v1/runs", summary: "List workflow runs, newest first; page with before = the previous answer's next", query: &["status", "name", "tenant", "before", "limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/runs/{id}", summary: "Get a workflow run (with its steps when a definition drives it); with wait (e.g. 30s, at most 300s) the answer comes once it is terminal or the wait ends", query: &["wait"], body: None, answer: Some("RunView"), auth: true },
    Op { method: "post", path: "/v1/runs/{id}/cancel", summary: "Cancel a workflow run and its activities", query: &[], body: None, answer: None, auth: true },
    Op { method: "post", path: "/v1/schedules", summary: "Create a schedule (429 at the tenant's schedules quota; 422 naming a bad cron, timezone or policy)", query: &[], body: Some("ScheduleSpec"), answer: Some("Schedule"), auth: true },
    Op { method: "get", path: "/v1/schedules", summary: "List schedules, oldest first; page with after = the previous answer's next", query: &["paused", "name", "tenant", "after", "limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/schedules/{id}", summary: "Get a schedule", query: &[], body: None, answer: Some("Schedule"), auth: true },
    Op { method: "put", path: "/v1/schedules/{id}", summary: "Replace a schedule's definition (paused and note are left to pause/resume)", query: &[], body: Some("ScheduleSpec"), answer: Some("Schedule"), auth: true },
    Op { method: "patch", path: "/v1/schedules/{id}", summary: "Change a schedule with a JSON merge patch of its ScheduleSpec", query: &[], body: Some("ScheduleSpec"), answer: Some("Schedule"), auth: true },
    Op { method: "delete", path: "/v1/schedules/{id}", summary: "Delete a schedule and its slot records (its activities stay)", query: &[], body: None, answer: None, auth: true },
    Op { method: "post", path: "/v1/schedules/{id}/pause", summary: "Pause (optional body {note}); changed = false when already paused", query: &[], body: Some("PauseRequest"), answer: Some("Schedule"), auth: true },
    Op { method: "post", path: "/v1/schedules/{id}/resume", summary: "Resume from the next slot after now", query: &[], body: None, answer: Some("Schedule"), auth: true },
    Op { method: "post", path: "/v1/schedules/{id}/trigger", summary: "Fire now (optional body {force}); obeys the overlap policy unless forced", query: &[], body: Some("TriggerRequest"), answer: Some("TriggerOutcome"), auth: true },
    Op { method: "post", path: "/v1/schedules/{id}/backfill", summary: "Run the slots of a past range (at most 10000 slots, else 422)", query: &[], body: Some("BackfillRequest"), answer: Some("BackfillReport"), auth: true },
    Op { method: "get", path: "/v1/schedules/{id}/preview", summary: "The next fire times in the schedule's timezone (count 1..1000, default 10)", query: &["count"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/schedules/{id}/fires", summary: "The newest slot records: fired, skipped, missed, deduplicated, buffered", query: &["limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/audit", summary: "Query the audit log, newest first", query: &["tenant", "action", "activity", "run", "container", "since", "until", "before", "limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/workers", summary: "Admin: worker processes (host, daemon, heartbeat age, slots busy/total, version, queues, state); all=true adds stopped and lost ones", query: &["all", "limit"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/queues", summary: "Per queue: depth (due waiting), delayed, oldest waiting age, running; a tenant token counts only its own activities", query: &["tenant"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/tokens", summary: "Admin: list API tokens (never the tokens or their hashes)", query: &[], body: None, answer: None, auth: true },
    Op { method: "post", path: "/v1/tokens", summary: "Admin: create a token; the answer holds it once", query: &[], body: Some("CreateToken"), answer: None, auth: true },
    Op { method: "post", path: "/v1/tokens/{id}/revoke", summary: "Admin: revoke a token", query: &[], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/secrets", summary: "List secret names and metadata (never values)", query: &["tenant"], body: None, answer: None, auth: true },
    Op { method: "put", path: "/v1/secrets/{tenant}/{name}", summary: "Create or replace a secret (body {value}); a tenant token only for its own tenant", query: &[], body: Some("SetSecret"), answer: None, auth: true },
    Op { method: "delete", path: "/v1/secrets/{tenant}/{name}", summary: "Delete a secret", query: &[], body: None, answer: None, auth: true },
    Op { method: "put", path: "/v1/registries/{host}", summary: "Store (or replace) a private registry's username and password, global (admin, no tenant_id) or for a tenant; the password is write-only. 201 new, 200 replaced; 409 without HIGHWAY_SECRETS_KEY on the server", query: &[], body: Some("RegistryPut"), answer: Some("RegistryInfo"), auth: true },
    Op { method: "get", path: "/v1/registries", summary: "List stored registry credentials (host, username, scope, times; never the password)", query: &["tenant"], body: None, answer: None, auth: true },
    Op { method: "delete", path: "/v1/registries/{host}", summary: "Remove stored registry credentials (admin: the global entry, or a tenant's with ?tenant=)", query: &["tenant"], body: None, answer: None, auth: true },
    Op { method: "get", path: "/v1/gc/plan", summary: "Admin: what a garbage-collector pass would remove now and why (containers and expired images); removes nothing", query: &[], body: None, answer: None, auth: true },
];

/// Operations only an admin token may call (403 for a tenant token).
const ADMIN_ONLY: &[&str] = &[
    "/v1/gc/plan",
    "/v1/workers",
    "/v1/tokens",
    "/v1/tokens/{id}/revoke",
];

/// Operations a tenant token may be refused (403) for naming another tenant.
const TENANT_FORBIDDEN: &[&str] = &["/v1/secrets/{tenant}/{name}"];

/// Operations that answer 409 when the resource is in the wrong state.
const CONFLICTS: &[&str] = &["/v1/activities/{id}/retry"];

/// Operations whose body may be left out entirely.
const OPTIONAL_BODY: &[&str] = &["/v1/schedules/{id}/pause", "/v1/schedules/{id}/trigger"];

/// Mirror of `highway_workflows::EnqueueRequest` for the schema.
#[allow(dead_code)] // Only its schema is used.
#[derive(JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct EnqueueRequest {
    /// Registered kind, e.g. `tools.docker.run` (params: `DockerRunParams`).
    pub kind: String,
    /// A JSON object; for `tools.docker.run` see `DockerRunParams`.
    pub params: Option<Value>,
    /// Default `default`; a tenant token's own tenant.
    pub tenant_id: Option<String>,
    pub workflow_run_id: Option<Uuid>,
    /// Default `default`.
    pub queue: Option<String>,
    /// 1 (most urgent) to 9; default 5.
    pub priority: Option<i16>,
    pub run_at: Option<DateTime<Utc>>,
    /// A duration such as `30s`.
    pub delay: Option<String>,
    /// `{initial_interval, backoff_coefficient, maximum_interval, maximum_attempts, non_retryable_error_types}`.
    pub retry_policy: Option<Value>,
    /// `{schedule_to_start, start_to_close, schedule_to_close, heartbeat}` durations.
    pub timeouts: Option<Value>,
    /// Same as the `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

/// Mirror of `highway_workflows::Activity` for the schema.
#[allow(dead_code)] // Only its schema is used.
#[derive(JsonSchema)]
pub struct Activity {
    pub id: Uuid,
    pub workflow_run_id: Option<Uuid>,
    pub tenant_id: String,
    pub kind: String,
    pub params: Value,
    pub queue: String,
    pub priority: i16,
    /// scheduled | running | succeeded | failed | cancelled | timed_out
    pub status: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub uncounted_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub heartbeat_at: Option<DateTime<Utc>>,
    pub heartbeat_details: Option<Value>,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub idempotency_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Only in enqueue answers: whether this call created it.
    pub created: Option<bool>,
}

/// The answer of `/health/live`.
#[allow(dead_code)] // Only its schema is used.
#[derive(JsonSchema)]
pub struct Liveness {
    /// Always `live`.
    pub status: String,
}

/// Mirror of `health::Readiness`, the answer of `/health/ready` (200 and 503).
#[allow(dead_code)] // Only its schema is used.
#[derive(JsonSchema)]
pub struct Readiness {
    /// `ready`, `not_ready` or `draining`.
    pub status: String,
    /// The dependencies that are not up: `postgres`, `docker`.
    pub failing: Vec<String>,
}

/// The error body of every failure.
#[allow(dead_code)] // Only its schema is used.
#[derive(JsonSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[allow(dead_code)] // Only its schema is used.
#[derive(JsonSchema)]
pub struct ErrorDetail {
    /// invalid_field | invalid_json | unauthorized | forbidden | not_found |
    /// idempotency_conflict | conflict | payload_too_large | unsupported_media_type |
    /// unknown_field | invalid_value | quota_exceeded | unavailable | internal
    pub code: String,
    pub message: String,
    /// The offending field, for invalid_field and unknown_field.
    pub field: Option<String>,
}

fn components() -> Map<String, Value> {
    let mut g = SchemaSettings::openapi3().into_generator();
    let named: Vec<(&str, Value)> = vec![
        (
            "EnqueueRequest",
            g.subschema_for::<EnqueueRequest>().to_value(),
        ),
        ("Activity", g.subschema_for::<Activity>().to_value()),
        ("ErrorBody", g.subschema_for::<ErrorBody>().to_value()),
        ("Liveness", g.subschema_for::<Liveness>().to_value()),
        ("Readiness", g.subschema_for::<Readiness>().to_value()),
        (
            "Container",
            g.subschema_for::<store::Container>().to_value(),
        ),
        ("Run", g.subschema_for::<store::Run>().to_value()),
        ("StartRun", g.subschema_for::<runs::StartRun>().to_value()),
        ("RunView", g.subschema_for::<runs::RunView>().to_value()),
        ("AuditRow", g.subschema_for::<store::AuditRow>().to_value()),
        ("LogRow", g.subschema_for::<store::LogRow>().to_value()),
        (
            "RunSummary",
            g.subschema_for::<store::RunSummary>().to_value(),
        ),
        ("Worker", g.subschema_for::<store::WorkerRow>().to_value()),
        ("QueueRow", g.subschema_for::<store::QueueRow>().to_value()),
        (
            "CreateToken",
            g.subschema_for::<tokens::CreateToken>().to_value(),
        ),
        (
            "TokenInfo",
            g.subschema_for::<store::TokenInfo>().to_value(),
        ),
        (
            "SetSecret",
            g.subschema_for::<secrets::SetSecret>().to_value(),
        ),
        (
            "ScheduleSpec",
            g.subschema_for::<sched::ScheduleSpec>().to_value(),
        ),
        ("Schedule", g.subschema_for::<sched::Schedule>().to_value()),
        (
            "ScheduleFire",
            g.subschema_for::<sched::ScheduleFire>().to_value(),
        ),
        (
            "FirePreview",
            g.subschema_for::<sched::FirePreview>().to_value(),
        ),
        (
            "TriggerOutcome",
            g.subschema_for::<sched::TriggerOutcome>().to_value(),
        ),
        (
            "BackfillReport",
            g.subschema_for::<sched::BackfillReport>().to_value(),
        ),
        (
            "PauseRequest",
            g.subschema_for::<schedules::PauseRequest>().to_value(),
        ),
        (
            "TriggerRequest",
            g.subschema_for::<schedules::TriggerRequest>().to_value(),
        ),
        (
            "BackfillRequest",
            g.subschema_for::<schedules::BackfillRequest>().to_value(),
        ),
        (
            "RegistryPut",
            g.subschema_for::<registries::RegistryPut>().to_value(),
        ),
        (
            "RegistryInfo",
            g.subschema_for::<crate::docker::registry_store::RegistryInfo>()
                .to_value(),
        ),
        (
            "DockerRunParams",
            g.subschema_for::<highway_workflows::docker::DockerRunParams>()
                .to_value(),
        ),
    ];
    let mut defs = g.take_definitions(true);
    // Types the generator inlined (rather than referenced) are added under their name.
    for (name, schema) in named {
        if schema.get("$ref").is_none() {
            defs.insert(name.to_string(), schema);
        }
    }
    defs
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The document (built once).
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn build() -> Value {
    let mut paths = Map::new();
    for op in OPS {
        let mut params: Vec<Value> = Vec::new();
        for name in op
            .path
            .split('{')
            .skip(1)
            .filter_map(|p| p.split('}').next())
        {
            // Every id is a UUID (anything else is a 400), except a container's, which may
            // also be a short id or a name.
            let schema = if name == "id" && !op.path.starts_with("/v1/containers/") {
                json!({"type": "string", "format": "uuid"})
            } else {
                json!({"type": "string"})
            };
            params.push(json!({"name": name, "in": "path", "required": true, "schema": schema}));
        }
        for q in op.query {
            params.push(
                json!({"name": q, "in": "query", "required": false, "schema": {"type": "string"}}),
            );
        }
        if op.path == "/v1/activities" && op.method == "post" {
            params.push(json!({"name": "Idempotency-Key", "in": "header", "required": false, "schema": {"type": "string"}}));
        }
        if op.path.ends_with("/logs") {
            // The server reads it as a sequence number (a 400 otherwise).
            params.push(json!({"name": "Last-Event-ID", "in": "header", "required": false, "schema": {"type": "integer", "format": "int64"}}));
        }
        let ok_content = if op.path.ends_with("/logs") {
            json!({"text/event-stream": {"schema": schema_ref("LogRow")}})
        } else if op.path == "/metrics" {
            json!({"text/plain": {"schema": {"type": "string"}}})
        } else {
            match op.answer {
                Some(a) => json!({"application/json": {"schema": schema_ref(a)}}),
                None => json!({"application/json": {"schema": {"type": "object"}}}),
            }
        };
        let err = json!({"description": "error", "content": {"application/json": {"schema": schema_ref("ErrorBody")}}});
        let mut responses = json!({ "200": {"description": "success", "content": ok_content} });
        // Creating posts answer 201; actions on an existing resource (`{id}/...`) 200. A
        // PUT of registry credentials answers 201 when it created the entry.
        if (op.method == "post" && op.body.is_some() && !op.path.contains("{id}"))
            || (op.method == "put" && op.path == "/v1/registries/{host}")
        {
            responses["201"] =
                json!({"description": "created", "content": responses["200"]["content"].clone()});
        }
        if op.auth {
            for code in ["400", "401", "404", "503"] {
                responses[code] = err.clone();
            }
        }
        if op.path == "/health/ready" {
            responses["503"] = json!({"description": "not ready", "content": ok_content});
        }
        if ADMIN_ONLY.contains(&op.path) || TENANT_FORBIDDEN.contains(&op.path) {
            responses["403"] = err.clone();
        }
        if CONFLICTS.contains(&op.path) {
            responses["409"] = err.clone();
        }
        // An unknown query parameter is a 422 naming it.
        if op.auth && !op.query.is_empty() {
            responses["422"] = err.clone();
        }
        if op.body.is_some() {
            for code in ["409", "413", "415", "422", "429"] {
                responses[code] = err.clone();
            }
        }
        let mut o = json!({
            "summary": op.summary,
            "operationId": format!("{}{}", op.method, op.path.replace(['/', '{', '}', '.'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if let Some(b) = op.body {
            let required = !OPTIONAL_BODY.contains(&op.path);
            o["requestBody"] = json!({"required": required, "content": {"application/json": {"schema": schema_ref(b)}}});
        }
        if !op.auth {
            o["security"] = json!([]);
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Highway API", "version": "1"},
        "components": {
            "schemas": components(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn schema_props(name: &str) -> BTreeSet<String> {
        document()["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} has properties"))
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn mirrors_match_the_real_wire_types() {
        let req = highway_workflows::EnqueueRequest::new("k", json!({}));
        let real: BTreeSet<String> = serde_json::to_value(&req)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(schema_props("EnqueueRequest"), real);
        let act: Vec<String> = serde_json::to_value(highway_workflows::Activity {
            id: Uuid::nil(),
            workflow_run_id: None,
            tenant_id: String::new(),
            kind: String::new(),
            params: json!({}),
            queue: String::new(),
            priority: 5,
            status: String::new(),
            attempt: 0,
            max_attempts: 1,
            uncounted_attempts: 0,
            run_at: Utc::now(),
            lease_owner: None,
            lease_expires_at: None,
            heartbeat_at: None,
            heartbeat_details: None,
            result: None,
            error: None,
            idempotency_key: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            cancel_requested_at: None,
        })
        .unwrap()
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
        let ready = serde_json::to_value(crate::health::Health::default().readiness(true)).unwrap();
        let ready: BTreeSet<String> = ready.as_object().unwrap().keys().cloned().collect();
        assert_eq!(schema_props("Readiness"), ready);
        let mut mirror = schema_props("Activity");
        mirror.remove("created");
        assert_eq!(mirror, act.into_iter().collect());
    }

    #[test]
    fn every_op_is_documented_with_components_that_exist() {
        let doc = document();
        assert_eq!(doc["openapi"], "3.0.3");
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for op in OPS {
            assert!(doc["paths"][op.path][op.method].is_object(), "{op:?}");
            for name in op.body.iter().chain(op.answer.iter()) {
                assert!(schemas.contains_key(*name), "missing schema {name}");
            }
        }
        assert!(schemas.contains_key("DockerRunParams"));
        // Refs all resolve.
        let text = doc.to_string();
        for r in text.split("#/components/schemas/").skip(1) {
            let name: String = r.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling $ref {name}");
        }
    }
}
