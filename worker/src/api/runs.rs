//! `/v1/runs`: start, list, get and cancel workflow runs. A run here is the record that groups
//! activities (`workflow_run_id`). `POST /v1/runs` takes either the bare form (`name`,
//! `input`: records a run that activities are enqueued into) or a definition
//! (`definition`, `inputs`: validated, 422 naming the field, then started through the
//! same driver start as `highway run`, `highway_workflows::runs::start_run`). `GET`
//! shows a definition-driven run's steps. Cancelling cancels every activity of the run
//! through `highway_workflows::Client::cancel_run`. `GET /v1/runs` lists runs newest
//! first (filters `status`, `name` prefix, `tenant` for admins; paged with `before` =
//! the previous answer's `next`); a tenant token sees only its own tenant's runs.

use super::activities::parse_limit;
use super::auth::Caller;
use super::body::{decode, ApiQuery, JsonBytes};
use super::error::{parse_uuid, ApiError};
use super::{admission, store, AppState};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use highway_workflows::definition::{substitute, WorkflowDefinition};
use highway_workflows::runs::{self, RunError, StepStatus};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/runs", post(start).get(list))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/cancel", post(cancel))
}

/// Body of `POST /v1/runs`: a definition to run, or a bare run record.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StartRun {
    Definition(StartDefinitionRun),
    Bare(StartBareRun),
}

/// Starts a run of a workflow definition (the format of `workflows/examples/`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartDefinitionRun {
    /// The workflow definition; a field that does not validate is a 422 naming it
    /// (`definition.steps[1].depends_on[0]`).
    #[schemars(with = "WorkflowDefinition")]
    pub definition: Value,
    /// Values of the definition's declared inputs (defaults fill the rest).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Admin tokens only; a tenant token's own tenant otherwise.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Records a run without a definition, for grouping activities enqueued into it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBareRun {
    /// A name for people (`nightly-build`).
    pub name: String,
    #[serde(default)]
    pub input: Option<Value>,
    /// Admin tokens only; a tenant token's own tenant otherwise.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A run as `GET /v1/runs/{id}` shows it: the run record and, for a definition-driven
/// run, its steps in definition order (`step_id`, `status`, `activity_id`,
/// `activity_status`, `attempt`, `outputs_artifact`, `cache_decision`, `cache_reason`,
/// `image_digest`, `scheduled_at`, `finished_at`).
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct RunView {
    #[serde(flatten)]
    pub run: store::Run,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<Value>>")]
    pub steps: Option<Vec<StepStatus>>,
}

/// Errors of `POST /v1/runs`: the API's, or a definition (or its inputs) that does not
/// validate, a 422 naming the field in the body.
#[derive(Debug)]
enum StartError {
    Api(ApiError),
    Invalid { field: String, reason: String },
}

impl From<ApiError> for StartError {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<sqlx::Error> for StartError {
    fn from(e: sqlx::Error) -> Self {
        Self::Api(e.into())
    }
}

impl IntoResponse for StartError {
    fn into_response(self) -> Response {
        match self {
            Self::Api(e) => e.into_response(),
            Self::Invalid { field, reason } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": {"code": "invalid_definition",
                                      "message": format!("{field}: {reason}"),
                                      "field": field}})),
            )
                .into_response(),
        }
    }
}

fn run_error(e: RunError) -> StartError {
    match e {
        RunError::InvalidField(f) => StartError::Invalid {
            field: f.field,
            reason: f.reason,
        },
        RunError::Database(e) => StartError::Api(ApiError::db(e)),
        RunError::Client(e) => StartError::Api(e.into()),
        RunError::NotFound(_) => StartError::Api(ApiError::NotFound("run")),
        other => StartError::Api(ApiError::Internal(other.to_string())),
    }
}

/// The tenant a run is started for: a tenant token's own, an admin's choice, or the
/// default tenant.
fn tenant_of(caller: &Caller, requested: Option<String>) -> Result<String, ApiError> {
    match (&caller.tenant, requested) {
        (Some(own), Some(t)) if *own != t => Err(ApiError::field(
            "tenant_id",
            "a tenant token can only start runs for its own tenant",
        )),
        (Some(own), _) => Ok(own.clone()),
        (None, Some(t)) => Ok(t),
        (None, None) => Ok(highway_workflows::types::DEFAULT_TENANT.to_string()),
    }
}

async fn start(
    State(st): State<AppState>,
    caller: Caller,
    JsonBytes(bytes): JsonBytes,
) -> Result<(StatusCode, Json<RunView>), StartError> {
    let doc: Value = decode(&bytes)?;
    let (id, tenant, name) = if doc.get("definition").is_some() {
        let body: StartDefinitionRun = decode(&bytes)?;
        let def = WorkflowDefinition::from_json(&body.definition.to_string()).map_err(|e| {
            let inner = e.field.trim_start_matches('.');
            StartError::Invalid {
                field: if inner.is_empty() {
                    "definition".into()
                } else {
                    format!("definition.{inner}")
                },
                reason: e.reason,
            }
        })?;
        let tenant = tenant_of(&caller, body.tenant_id)?;
        // Every step's params as they will be enqueued (inputs substituted), judged
        // now: a step that could never run fails the start, not the run halfway.
        let inputs = def
            .resolve_inputs(&body.inputs)
            .map_err(|e| StartError::Invalid {
                field: e.field,
                reason: e.reason,
            })?;
        for (i, s) in def.steps.iter().enumerate() {
            admission::admit(
                &st,
                &format!("definition.steps[{i}]."),
                &s.kind,
                &substitute(&s.params, &inputs),
            )?;
        }
        let id = runs::start_run(
            &st.client,
            &tenant,
            &def,
            &body.inputs,
            st.digests.0.as_ref(),
        )
        .await
        .map_err(run_error)?;
        (id, tenant, def.name)
    } else {
        let body: StartBareRun = decode(&bytes)?;
        if body.name.is_empty() || body.name.len() > 200 || body.name.chars().any(char::is_control)
        {
            return Err(ApiError::field("name", "must be 1 to 200 printable characters").into());
        }
        let tenant = tenant_of(&caller, body.tenant_id)?;
        let input = body.input.unwrap_or_else(|| json!({}));
        let id = st
            .client
            .create_run(&tenant, &body.name, &input)
            .await
            .map_err(ApiError::from)?;
        (id, tenant, body.name)
    };
    store::audit(
        &st.pool,
        Some(&tenant),
        &caller.actor(),
        "run.start",
        Some(&name),
        None,
        Some(id),
        "ok",
    )
    .await?;
    let view = view(&st, id, None)
        .await?
        .ok_or(ApiError::Internal("run vanished after insert".into()))?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The run and, when a definition drives it, its steps.
pub async fn view(
    st: &AppState,
    id: Uuid,
    tenant: Option<&str>,
) -> Result<Option<RunView>, ApiError> {
    let Some(run) = store::get_run(&st.pool, id, tenant).await? else {
        return Ok(None);
    };
    let steps = match runs::run_status(&st.pool, id, tenant).await {
        Ok(s) if s.steps.is_empty() => None,
        Ok(s) => Some(s.steps),
        Err(RunError::NotFound(_)) => return Ok(None),
        Err(RunError::Database(e)) => return Err(ApiError::db(e)),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    Ok(Some(RunView { run, steps }))
}

/// Query of `GET /v1/runs/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Long poll: answer once the run is terminal or this long has passed (`"30s"`, at
    /// most 300 s), with its state either way.
    pub wait: Option<String>,
}

async fn show(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ShowQuery>,
) -> Result<Json<RunView>, ApiError> {
    let id = parse_uuid("id", &id)?;
    let wait = super::wait::parse_wait(q.wait.as_deref())?;
    let scope = caller.scope(None);
    let read = |st: &AppState| {
        let st = st.clone();
        async move { view(&st, id, scope).await?.ok_or(ApiError::NotFound("run")) }
    };
    let mut v = read(&st).await?;
    if let (Some(wait), false) = (wait, run_terminal(&v.run.status)) {
        let channel = highway_workflows::done::RUN_DONE_CHANNEL;
        let mut w = super::wait::Wait::start(&st, channel, id, wait).await;
        // Read again once listening: it may have ended before the LISTEN.
        v = read(&st).await?;
        while !run_terminal(&v.run.status) && w.next().await {
            v = read(&st).await?;
        }
    }
    Ok(Json(v))
}

/// A run in one of its final states (no step changes after).
fn run_terminal(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

async fn cancel(
    State(st): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_uuid("id", &id)?;
    cancel_run(&st, &caller, id).await.map(Json)
}

/// Cancels a run as `caller` and audits it: the one path of `POST /v1/runs/{id}/cancel`
/// and the web console's cancel button.
pub async fn cancel_run(st: &AppState, caller: &Caller, id: Uuid) -> Result<Value, ApiError> {
    let outcome = match st.client.cancel_run(id, caller.scope(None)).await {
        Ok(o) => o,
        Err(highway_workflows::Error::NotFound(_)) => return Err(ApiError::NotFound("run")),
        Err(e) => return Err(e.into()),
    };
    let tenant = store::get_run(&st.pool, id, None)
        .await?
        .map(|r| r.tenant_id);
    store::audit(
        &st.pool,
        tenant.as_deref(),
        &caller.actor(),
        "run.cancel",
        None,
        None,
        Some(id),
        serde_json::to_value(outcome)?.as_str().unwrap_or("ok"),
    )
    .await?;
    Ok(json!({ "id": id, "outcome": outcome }))
}

/// Query of `GET /v1/runs`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    /// A prefix of the run's name.
    pub name: Option<String>,
    /// Admin tokens only; a tenant token's own tenant otherwise.
    pub tenant: Option<String>,
    /// The previous answer's `next`: runs older than that one.
    pub before: Option<String>,
    pub limit: Option<String>,
}

/// The run states a filter may name.
const RUN_STATES: &[&str] = &["running", "succeeded", "failed", "cancelling", "cancelled"];

async fn list(
    State(st): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(s) = q.status.as_deref() {
        if !RUN_STATES.contains(&s) {
            return Err(ApiError::field(
                "status",
                format!("must be one of {}", RUN_STATES.join(", ")),
            ));
        }
    }
    let limit = parse_limit(q.limit.as_deref(), 50, 1000)?;
    let f = store::RunFilter {
        tenant: caller.scope(q.tenant.as_deref()).map(str::to_owned),
        status: q.status,
        name: q.name,
        before: q
            .before
            .as_deref()
            .map(|b| parse_uuid("before", b))
            .transpose()?,
        limit,
    };
    let items = store::list_runs(&st.pool, &f).await?;
    // A full page may have more after it; a short one is the last.
    let next = (items.len() as i64 == limit)
        .then(|| items.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({ "items": items, "next": next })))
}
