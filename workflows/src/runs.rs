//! Workflow runs driven from a [`WorkflowDefinition`]: the durable driver state
//! (`highway.workflow_steps`) and every SQL statement on it. [`start_run`] stores a run
//! and enqueues its ready steps in one transaction; [`advance`] (called by the worker's
//! completer in the completion's transaction, and by its sweeper) moves a run forward
//! from the database alone, so any worker can continue any run. Also the read side for
//! clients and the CLI: [`run_status`], [`wait_run`], [`step_logs`].
//!
//! Activities are enqueued through [`Client::enqueue_many_tx`] with the idempotency key
//! `run:<run>:<step>`, so an advance repeated after a crash never runs a step twice.
//!
//! Cache keys include the content id of the step's image, resolved through an
//! [`ImageDigests`] the caller passes (the driver itself never talks to Docker): the same
//! reference rebuilt is another key, and an image whose digest cannot be resolved runs
//! the step uncached (`miss-no-commit` with a recorded reason), never a hit.

use crate::client::{Client, CANCEL_CHANNEL};
use crate::definition::{substitute, WorkflowDefinition};
use crate::types::{EnqueueRequest, FieldError};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::{json, Map, Value};
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    InvalidField(#[from] FieldError),
    #[error("workflow run {0} not found")]
    NotFound(Uuid),
    #[error("timed out after {0:?} waiting for the workflow run to finish")]
    WaitTimeout(Duration),
    #[error("stored definition of run {run} is unreadable: {reason}")]
    BadDefinition { run: Uuid, reason: String },
    #[error(transparent)]
    Client(#[from] crate::client::Error),
    #[error("database unavailable: {0}")]
    Database(#[from] sqlx::Error),
}

pub type Result<T, E = RunError> = std::result::Result<T, E>;

/// Why an image's digest could not be resolved (image missing, Docker down, timeout);
/// the step then runs uncached and this text is its recorded `cache_reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DigestError(pub String);

/// Resolves the image a cached step runs to its content id (`sha256:...`), which every
/// cache tag mixes in. [`advance`] may call it inside the completion transaction, so an
/// implementation must answer quickly (bounded, cached); the worker's uses the Docker
/// client with a 2 s timeout and a short in-process TTL.
pub trait ImageDigests: Send + Sync {
    fn digest<'a>(
        &'a self,
        tenant: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<String, DigestError>>;
}

/// Stores the run (definition, resolved inputs, one `pending` row per step) and enqueues
/// the steps without dependencies, all in one transaction. `digests` resolves the image
/// of cached steps (see [`ImageDigests`]).
pub async fn start_run(
    client: &Client,
    tenant: &str,
    def: &WorkflowDefinition,
    inputs: &BTreeMap<String, String>,
    digests: &dyn ImageDigests,
) -> Result<Uuid> {
    def.validate()?;
    // Postgres stores neither in jsonb with a NUL character in it.
    crate::types::check_storable("inputs", &json!(inputs))?;
    let stored_def = serde_json::to_value(def).expect("definition serializes");
    crate::types::check_storable("definition", &stored_def)?;
    let inputs = def.resolve_inputs(inputs)?;
    // Each step's params as they will be enqueued, through the worker's parser: a step
    // that could never run fails the start instead of the run halfway.
    for (i, s) in def.steps.iter().enumerate() {
        crate::docker_params::check(&s.kind, &substitute(&s.params, &inputs)).map_err(|e| {
            FieldError::new(
                format!("steps[{i}].{}", crate::docker_params::request_path(&e)),
                e.reason,
            )
        })?;
    }
    crate::types::check_tenant(tenant)?;
    let id = Uuid::now_v7();
    let mut tx = client.pool().begin().await?;
    sqlx::query(
        "INSERT INTO highway.workflow_runs (id, tenant_id, name, input, definition) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(tenant)
    .bind(&def.name)
    .bind(json!(inputs))
    .bind(stored_def)
    .execute(&mut *tx)
    .await?;
    let steps: Vec<String> = def.steps.iter().map(|s| s.id.clone()).collect();
    sqlx::query(
        "INSERT INTO highway.workflow_steps (run_id, step_id) SELECT $1, unnest($2::text[])",
    )
    .bind(id)
    .bind(&steps)
    .execute(&mut *tx)
    .await?;
    advance(client, &mut tx, id, digests).await?;
    tx.commit().await?;
    Ok(id)
}

/// What one [`advance`] did (tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Advanced {
    pub enqueued: Vec<String>,
    /// The run's status afterwards (`None`: not a definition-driven run).
    pub run_status: Option<String>,
}

/// Moves a run forward; idempotent and safe to call from many workers (the run row is
/// locked `FOR UPDATE`). Syncs finished activities into their steps, enqueues steps whose
/// dependencies all succeeded, fails the run (skipping what is left and cancelling what
/// still runs) when a step failed, and ends it `succeeded` when every step did.
pub async fn advance(
    client: &Client,
    conn: &mut PgConnection,
    run_id: Uuid,
    digests: &dyn ImageDigests,
) -> Result<Advanced> {
    let run: Option<(String, String, Option<Value>, Value)> = sqlx::query_as(
        "SELECT tenant_id, status, definition, input FROM highway.workflow_runs WHERE id = $1 FOR UPDATE",
    )
    .bind(run_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((tenant, status, Some(def), input)) = run else {
        return Ok(Advanced::default());
    };
    // Steps whose activity ended take its outcome (fenced: only `scheduled` steps move).
    // A cached step's successful run is not done yet: its container is committed first.
    sqlx::query(
        "UPDATE highway.workflow_steps s \
         SET status = CASE a.status WHEN 'succeeded' THEN 'succeeded' WHEN 'cancelled' THEN 'cancelled' ELSE 'failed' END, \
             outputs_artifact = CASE WHEN a.status = 'succeeded' THEN (a.result->'outputs'->>'id')::uuid END, \
             finished_at = COALESCE(a.finished_at, now()) \
         FROM highway.activities a \
         WHERE s.run_id = $1 AND s.status = 'scheduled' AND a.id = s.activity_id \
           AND s.commit_activity_id IS NULL \
           AND (a.status IN ('failed', 'cancelled', 'timed_out') \
                OR (a.status = 'succeeded' AND s.cache_key IS NULL))",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    // The commit of a cache miss ended: the step is done either way (a failed commit
    // only means the next run misses again).
    sqlx::query(
        "UPDATE highway.workflow_steps s \
         SET status = 'succeeded', \
             outputs_artifact = (a.result->'outputs'->>'id')::uuid, \
             cache_image = CASE WHEN c.status = 'succeeded' THEN c.result->>'reference' END, \
             cache_decision = CASE WHEN c.status = 'succeeded' THEN 'miss-build-as' ELSE 'miss-no-commit' END, \
             cache_reason = CASE WHEN c.status = 'succeeded' THEN NULL ELSE 'the commit of the container ' || c.status END, \
             finished_at = COALESCE(c.finished_at, now()) \
         FROM highway.activities a, highway.activities c \
         WHERE s.run_id = $1 AND s.status = 'scheduled' AND a.id = s.activity_id \
           AND c.id = s.commit_activity_id \
           AND c.status IN ('succeeded', 'failed', 'cancelled', 'timed_out')",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    let mut out = Advanced {
        run_status: Some(status.clone()),
        ..Default::default()
    };
    match status.as_str() {
        "running" => {}
        "cancelling" | "cancelled" => {
            // Nothing new starts in a cancelled run.
            sqlx::query(
                "UPDATE highway.workflow_steps SET status = 'cancelled', finished_at = now() \
                 WHERE run_id = $1 AND status = 'pending'",
            )
            .bind(run_id)
            .execute(&mut *conn)
            .await?;
            return Ok(out);
        }
        _ => return Ok(out),
    }
    let def: WorkflowDefinition =
        serde_json::from_value(def).map_err(|e| RunError::BadDefinition {
            run: run_id,
            reason: e.to_string(),
        })?;
    let inputs: BTreeMap<String, String> = serde_json::from_value(input).unwrap_or_default();
    // A cache hit finishes a step without an activity, which may make others ready:
    // loop until a pass changes nothing.
    loop {
        let rows: Vec<StepRow> = sqlx::query_as(
            "SELECT s.step_id, s.status, s.activity_id, s.outputs_artifact, s.cache_key, s.cache_image, \
                    s.commit_activity_id, a.status AS activity_status, a.result, a.error \
             FROM highway.workflow_steps s LEFT JOIN highway.activities a ON a.id = s.activity_id \
             WHERE s.run_id = $1",
        )
        .bind(run_id)
        .fetch_all(&mut *conn)
        .await?;
        let steps: HashMap<&str, &StepRow> = rows.iter().map(|r| (r.step_id.as_str(), r)).collect();

        if let Some(bad) = rows
            .iter()
            .find(|r| r.status == "failed" || r.status == "cancelled")
        {
            let mut error = json!({"type": "StepFailed", "step": bad.step_id, "step_status": bad.status,
                               "activity_id": bad.activity_id, "error": bad.error});
            if let Some((field, message)) = missing_input_field(&def, &inputs, bad) {
                error["field"] = json!(field);
                error["message"] = json!(message);
            }
            fail_run(&mut *conn, run_id, &error).await?;
            out.run_status = Some("failed".into());
            return Ok(out);
        }

        // Cache misses whose run succeeded: commit the kept container as the key.
        let mut commits = Vec::new();
        let mut commit_ids = Vec::new();
        for r in &rows {
            if r.status == "scheduled"
                && r.cache_key.is_some()
                && r.commit_activity_id.is_none()
                && r.activity_status.as_deref() == Some("succeeded")
            {
                let container = r
                    .result
                    .as_ref()
                    .and_then(|v| v.get("container_id"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let req = EnqueueRequest::new(
                    crate::docker_tools::KIND_COMMIT,
                    json!({"container": container, "repository": CACHE_REPOSITORY,
                           "tag": r.cache_key, "comment": format!("workflow cache of step {}", r.step_id),
                           "remove_container": true}),
                )
                .tenant(&tenant)
                .workflow_run(run_id)
                .idempotency_key(format!("run:{run_id}:{}:commit", r.step_id))
                .max_attempts(2);
                commits.push(req);
                commit_ids.push(r.step_id.clone());
            }
        }
        if !commits.is_empty() {
            let enq = client.enqueue_many_tx(&mut *conn, &commits).await?;
            let ids: Vec<Uuid> = enq.iter().map(|e| e.id).collect();
            sqlx::query(
                "UPDATE highway.workflow_steps s SET commit_activity_id = u.activity_id \
                 FROM unnest($2::text[], $3::uuid[]) AS u(step_id, activity_id) \
                 WHERE s.run_id = $1 AND s.step_id = u.step_id AND s.commit_activity_id IS NULL",
            )
            .bind(run_id)
            .bind(&commit_ids)
            .bind(&ids)
            .execute(&mut *conn)
            .await?;
        }

        let mut reqs = Vec::new();
        let mut ready_ids = Vec::new();
        let mut keys: Vec<Option<String>> = Vec::new();
        let mut decisions: Vec<Option<&str>> = Vec::new();
        let mut reasons: Vec<Option<String>> = Vec::new();
        let mut image_digests: Vec<Option<String>> = Vec::new();
        let mut hit = false;
        for s in &def.steps {
            if steps.get(s.id.as_str()).map(|r| r.status.as_str()) != Some("pending") {
                continue;
            }
            let deps_done = s.depends_on.iter().all(|d| {
                matches!(
                    steps.get(d.as_str()).map(|r| r.status.as_str()),
                    Some("succeeded" | "cached")
                )
            });
            if !deps_done {
                continue;
            }
            let mut key = None;
            let mut decision = None;
            let mut reason = None;
            let mut image_digest = None;
            if let Some(c) = &s.cache {
                let params = substitute(&s.params, &inputs);
                let image = params.get("image").and_then(Value::as_str).unwrap_or("");
                let secrets = received_secrets(&params);
                match digests.digest(&tenant, image).await {
                    // A snapshot would carry the secrets, and the worker refuses to
                    // commit such a container: never a hit, never a commit.
                    _ if secrets.is_some() => {
                        decision = Some("miss-no-commit");
                        reason = secrets;
                    }
                    Ok(d) => {
                        let tag =
                            cache_tag(&def.name, &s.id, &substitute_key(&c.key, &inputs, &d), &d);
                        if cache_hit(&mut *conn, digests, &tenant, run_id, &s.id, &tag, &d).await? {
                            hit = true;
                            continue;
                        }
                        key = Some(tag);
                        decision = Some("miss-build-as");
                        image_digest = Some(d);
                    }
                    Err(e) => {
                        // Never a hit without the digest: run uncached, say why.
                        decision = Some("miss-no-commit");
                        reason = Some(format!("image digest of {image:?} unavailable: {e}"));
                    }
                }
            }
            let req = match step_request(&def, s, &steps, &inputs, &tenant, run_id) {
                Ok(mut r) => {
                    if key.is_some() {
                        // Keep the exited container for the commit; the GC removes it
                        // after the retention.
                        r.params["auto_remove"] = json!(false);
                        r.params["retention"] = json!(CACHE_CONTAINER_RETENTION);
                    }
                    r
                }
                Err(e) => {
                    // A step that cannot even be enqueued fails the run, naming the field.
                    let error = json!({"type": "StepInvalid", "step": s.id, "field": e.field, "message": e.reason});
                    fail_run(&mut *conn, run_id, &error).await?;
                    out.run_status = Some("failed".into());
                    return Ok(out);
                }
            };
            reqs.push(req);
            ready_ids.push(s.id.clone());
            keys.push(key);
            decisions.push(decision);
            reasons.push(reason);
            image_digests.push(image_digest);
        }
        if !reqs.is_empty() {
            let enq = client.enqueue_many_tx(&mut *conn, &reqs).await?;
            let ids: Vec<Uuid> = enq.iter().map(|e| e.id).collect();
            sqlx::query(
                "UPDATE highway.workflow_steps s SET status = 'scheduled', activity_id = u.activity_id, \
                        scheduled_at = now(), cache_key = u.cache_key, cache_decision = u.decision, \
                        cache_reason = u.reason, image_digest = u.digest \
                 FROM unnest($2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[]) \
                      AS u(step_id, activity_id, cache_key, decision, reason, digest) \
                 WHERE s.run_id = $1 AND s.step_id = u.step_id AND s.status = 'pending'",
            )
            .bind(run_id)
            .bind(&ready_ids)
            .bind(&ids)
            .bind(&keys)
            .bind(&decisions)
            .bind(&reasons)
            .bind(&image_digests)
            .execute(&mut *conn)
            .await?;
            out.enqueued.extend(ready_ids);
        }
        if hit {
            continue;
        }
        if !out.enqueued.is_empty() || !commits.is_empty() {
            return Ok(out);
        }
        if rows
            .iter()
            .all(|r| r.status == "succeeded" || r.status == "cached")
        {
            let result: Map<String, Value> = rows
                .iter()
                .map(|r| {
                    let v = if r.status == "cached" {
                        json!({"cached": true, "image": r.cache_image,
                               "outputs": r.outputs_artifact.map(|id| json!({"id": id}))})
                    } else {
                        r.result.clone().unwrap_or(Value::Null)
                    };
                    (r.step_id.clone(), v)
                })
                .collect();
            sqlx::query(
                "UPDATE highway.workflow_runs SET status = 'succeeded', result = $2, finished_at = now() \
                 WHERE id = $1 AND status = 'running'",
            )
            .bind(run_id)
            .bind(Value::Object(result))
            .execute(&mut *conn)
            .await?;
            out.run_status = Some("succeeded".into());
        }
        return Ok(out);
    }
}

/// Why a step's container receives secrets (an environment value `{"secret": ..}` or a
/// `secrets` entry), as the `cache_reason` of a step that is then never cached.
fn received_secrets(params: &Value) -> Option<String> {
    let env: Vec<&str> = params
        .get("environment")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, v)| v.get("secret").is_some())
                .map(|(k, _)| k.as_str())
                .collect()
        })
        .unwrap_or_default();
    let files = params
        .get("secrets")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if env.is_empty() && files == 0 {
        return None;
    }
    Some(format!(
        "the step receives secrets (environment {env:?}, {files} secret file(s)); \
         a snapshot of its container would carry them, so it is never cached"
    ))
}

#[cfg(test)]
mod secret_steps {
    use super::*;

    #[test]
    fn steps_receiving_secrets_are_named() {
        assert_eq!(received_secrets(&json!({"image": "x"})), None);
        assert_eq!(
            received_secrets(&json!({"environment": {"A": "plain"}, "secrets": []})),
            None
        );
        let r = received_secrets(&json!({"environment": {"TOK": {"secret": "s"}}})).unwrap();
        assert!(r.contains("TOK"), "{r}");
        let r = received_secrets(&json!({"secrets": [{"name": "s"}]})).unwrap();
        assert!(r.contains("1 secret file"), "{r}");
    }
}

/// The repository (under the tenant's image namespace) of workflow cache snapshots.
pub const CACHE_REPOSITORY: &str = "wfcache";
/// How long the container of a cache miss is kept for its commit (the commit removes it
/// at once; this bounds how long it stays when the commit never ran or failed).
const CACHE_CONTAINER_RETENTION: &str = "10m";

/// The key template resolved: `${inputs.NAME}` and `${image.digest}`.
fn substitute_key(key: &str, inputs: &BTreeMap<String, String>, digest: &str) -> String {
    let key = key.replace(crate::definition::IMAGE_DIGEST_PLACEHOLDER, digest);
    match substitute(&Value::String(key.clone()), inputs) {
        Value::String(s) => s,
        _ => key,
    }
}

/// The image tag of a cache key: a hash of the workflow, the step, the resolved key and
/// the image digest (any text may be a key; a tag may not). The digest is always mixed
/// in, so the same image reference rebuilt never hits an older snapshot.
pub fn cache_tag(workflow: &str, step: &str, key: &str, image_digest: &str) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(format!("{workflow}\0{step}\0{key}\0{image_digest}").as_bytes());
    format!("k{}", hex::encode(&h[..20]))
}

/// A live snapshot for `tag` in the tenant's namespace marks the step `cached` (reusing
/// the image and the output artifact of the run that committed it). Reads the image
/// table of `tools.docker.commit` (only it writes there).
///
/// Snapshots are per Docker daemon: a row recorded by a worker on another host names an
/// image this daemon does not have, so it is a hit only if the daemon behind `digests`
/// (the one of the process deciding) resolves the snapshot's reference to the very image
/// a row recorded. Otherwise the step runs (and commits its own snapshot here) instead
/// of reusing an image that is not there.
async fn cache_hit(
    conn: &mut PgConnection,
    digests: &dyn ImageDigests,
    tenant: &str,
    run_id: Uuid,
    step: &str,
    tag: &str,
    image_digest: &str,
) -> Result<bool> {
    let reference = format!(
        "highway/{}/{CACHE_REPOSITORY}:{tag}",
        crate::docker_tools::tenant_namespace(tenant)
    );
    let rows: Vec<(String, Option<Uuid>)> = sqlx::query_as(
        "SELECT i.image_id, \
                (SELECT s.outputs_artifact FROM highway.workflow_steps s \
                 WHERE s.cache_image = i.reference AND s.cache_decision = 'miss-build-as' \
                 ORDER BY s.finished_at DESC LIMIT 1) \
         FROM highway.docker_images i \
         WHERE i.tenant_id = $1 AND i.reference = $2 AND i.removed_at IS NULL \
           AND (i.expires_at IS NULL OR i.expires_at > now()) \
         ORDER BY i.created_at DESC",
    )
    .bind(tenant)
    .bind(&reference)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(false);
    }
    let Ok(local) = digests.digest(tenant, &reference).await else {
        return Ok(false);
    };
    let Some((_, artifact)) = rows.into_iter().find(|(id, _)| *id == local) else {
        return Ok(false);
    };
    sqlx::query(
        "UPDATE highway.workflow_steps SET status = 'cached', cache_decision = 'hit', cache_key = $3, \
                cache_image = $4, outputs_artifact = $5, image_digest = $6, finished_at = now() \
         WHERE run_id = $1 AND step_id = $2 AND status = 'pending'",
    )
    .bind(run_id)
    .bind(step)
    .bind(tag)
    .bind(&reference)
    .bind(artifact)
    .bind(image_digest)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

#[derive(Debug, sqlx::FromRow)]
struct StepRow {
    step_id: String,
    status: String,
    activity_id: Option<Uuid>,
    outputs_artifact: Option<Uuid>,
    cache_key: Option<String>,
    cache_image: Option<String>,
    commit_activity_id: Option<Uuid>,
    activity_status: Option<String>,
    result: Option<Value>,
    error: Option<Value>,
}

/// A step whose run failed because an `inputs_from` entry names a path its source's
/// output artifact does not hold (`InputPathNotFound` of `params.inputs[k]`): the field
/// `steps[i].inputs_from[j].from` and a message. `inputs_from[j]` is `params.inputs[n +
/// j]`, `n` being the inputs the step's own params declare (see [`step_request`]).
fn missing_input_field(
    def: &WorkflowDefinition,
    inputs: &BTreeMap<String, String>,
    row: &StepRow,
) -> Option<(String, String)> {
    let err = row.error.as_ref()?;
    if err.get("type").and_then(Value::as_str) != Some("InputPathNotFound") {
        return None;
    }
    let k = err.pointer("/details/input").and_then(Value::as_u64)? as usize;
    let idx = def.steps.iter().position(|s| s.id == row.step_id)?;
    let s = &def.steps[idx];
    let own = substitute(&s.params, inputs)
        .get("inputs")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let j = k.checked_sub(own)?;
    let inp = s.inputs_from.get(j)?;
    let (from, path) = inp.source()?;
    Some((
        format!("steps[{idx}].inputs_from[{j}].from"),
        format!("{path:?} is not in the output artifact of step {from:?}"),
    ))
}

/// The enqueue request of a ready step: inputs substituted, artifacts of earlier steps
/// appended to `params.inputs`, each selecting its `from` path (placed under `path` by
/// its last segment, see [`crate::definition::InputFrom`]).
fn step_request(
    def: &WorkflowDefinition,
    s: &crate::definition::StepDefinition,
    steps: &HashMap<&str, &StepRow>,
    inputs: &BTreeMap<String, String>,
    tenant: &str,
    run_id: Uuid,
) -> Result<EnqueueRequest, FieldError> {
    let idx = def.steps.iter().position(|x| x.id == s.id).unwrap_or(0);
    let mut params = substitute(&s.params, inputs);
    for (j, inp) in s.inputs_from.iter().enumerate() {
        let field = format!("steps[{idx}].inputs_from[{j}].from");
        let (from, from_path) = inp
            .source()
            .ok_or_else(|| FieldError::new(&field, "must be STEP:PATH"))?;
        let artifact = steps
            .get(from)
            .and_then(|r| r.outputs_artifact)
            .ok_or_else(|| {
                FieldError::new(&field, format!("step {from:?} produced no output artifact"))
            })?;
        let list = params
            .as_object_mut()
            .ok_or_else(|| FieldError::new(format!("steps[{idx}].params"), "must be an object"))?
            .entry("inputs")
            .or_insert_with(|| json!([]));
        list.as_array_mut()
            .ok_or_else(|| {
                FieldError::new(format!("steps[{idx}].params.inputs"), "must be an array")
            })?
            .push(json!({"path": inp.path, "artifact": artifact, "select": from_path}));
    }
    let mut req = EnqueueRequest::new(s.kind.clone(), params)
        .tenant(tenant)
        .workflow_run(run_id)
        .idempotency_key(format!("run:{run_id}:{}", s.id));
    if let Some(q) = &s.queue {
        req = req.queue(q.clone());
    }
    if let Some(rp) = &s.retry_policy {
        req.retry_policy = rp.clone();
    }
    if let Some(t) = &s.timeouts {
        req.timeouts = t.clone();
    }
    req.validate()
        .map_err(|e| FieldError::new(format!("steps[{idx}].{}", e.field), e.reason))?;
    Ok(req)
}

/// Fails the run: pending steps are skipped, waiting activities cancelled at once and
/// running ones told to stop (the semantics of `Client::cancel_run`, inside our
/// transaction so the failure and the cancellations commit together).
async fn fail_run(conn: &mut PgConnection, run_id: Uuid, error: &Value) -> Result<()> {
    sqlx::query(
        "UPDATE highway.workflow_runs SET status = 'failed', error = $2, finished_at = now() \
         WHERE id = $1 AND status = 'running'",
    )
    .bind(run_id)
    .bind(error)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE highway.workflow_steps SET status = 'skipped', finished_at = now() \
         WHERE run_id = $1 AND status = 'pending'",
    )
    .bind(run_id)
    .execute(&mut *conn)
    .await?;
    let running =
        crate::client::cancel_run_activities(&mut *conn, run_id, "workflow run failed").await?;
    for id in running {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(CANCEL_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Of `runs`, those a definition drives and that are still live: the completer advances
/// only these, so runs without a definition cost one indexed lookup and nothing else.
pub async fn driven_runs(conn: &mut PgConnection, runs: &[Uuid]) -> Result<Vec<Uuid>> {
    if runs.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM highway.workflow_runs WHERE id = ANY($1) AND definition IS NOT NULL \
           AND status IN ('running', 'cancelling') ORDER BY id",
    )
    .bind(runs)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Live definition-driven runs with no activity waiting or running: a driver crashed
/// between a completion and its advance, or the rescuer ended an activity. The sweeper
/// advances them.
pub async fn stalled_runs(pool: &PgPool, limit: i64) -> Result<Vec<Uuid>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT r.id FROM highway.workflow_runs r \
         WHERE r.status IN ('running', 'cancelling') AND r.definition IS NOT NULL \
           AND NOT EXISTS (SELECT 1 FROM highway.activities a \
                           WHERE a.workflow_run_id = r.id AND a.status IN ('scheduled', 'running')) \
         ORDER BY r.created_at LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// One step as seen by clients.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepStatus {
    pub step_id: String,
    pub status: String,
    pub activity_id: Option<Uuid>,
    pub activity_status: Option<String>,
    pub attempt: Option<i32>,
    pub outputs_artifact: Option<Uuid>,
    /// `hit`, `miss-build-as` or `miss-no-commit` (cached steps only).
    pub cache_decision: Option<String>,
    /// Why a cached step ran uncached (`miss-no-commit` before it ran).
    pub cache_reason: Option<String>,
    /// The content id of the image a cached step's key was built with.
    pub image_digest: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A run and its steps.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub id: Uuid,
    pub tenant_id: String,
    pub name: String,
    pub status: String,
    pub result: Option<Value>,
    pub error: Option<Value>,
    pub steps: Vec<StepStatus>,
}

impl RunStatus {
    pub fn is_terminal(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// Reads a run and its steps (in definition order when it has one). With `tenant`,
/// another tenant's run is `NotFound`.
pub async fn run_status(pool: &PgPool, run_id: Uuid, tenant: Option<&str>) -> Result<RunStatus> {
    type RunRow = (
        String,
        String,
        String,
        Option<Value>,
        Option<Value>,
        Option<Value>,
    );
    let row: Option<RunRow> = sqlx::query_as(
        "SELECT tenant_id, name, status, result, error, definition FROM highway.workflow_runs \
         WHERE id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
    )
    .bind(run_id)
    .bind(tenant)
    .fetch_optional(pool)
    .await?;
    let Some((tenant_id, name, status, result, error, def)) = row else {
        return Err(RunError::NotFound(run_id));
    };
    let mut steps: Vec<StepStatus> = sqlx::query_as(
        "SELECT s.step_id, s.status, s.activity_id, a.status AS activity_status, a.attempt, \
                s.outputs_artifact, s.cache_decision, s.cache_reason, s.image_digest, \
                s.scheduled_at, s.finished_at \
         FROM highway.workflow_steps s LEFT JOIN highway.activities a ON a.id = s.activity_id \
         WHERE s.run_id = $1",
    )
    .bind(run_id)
    .fetch_all(pool)
    .await?;
    let order: Vec<String> = def
        .and_then(|d| serde_json::from_value::<WorkflowDefinition>(d).ok())
        .map(|d| d.steps.into_iter().map(|s| s.id).collect())
        .unwrap_or_default();
    steps.sort_by_key(|s| order.iter().position(|o| o == &s.step_id));
    Ok(RunStatus {
        id: run_id,
        tenant_id,
        name,
        status,
        result,
        error,
        steps,
    })
}

/// Waits until the run is terminal, woken by its completion notification
/// ([`crate::done`]; polling 10 ms to 250 ms when LISTEN is unavailable).
pub async fn wait_run(
    pool: &PgPool,
    run_id: Uuid,
    tenant: Option<&str>,
    timeout: Duration,
) -> Result<RunStatus> {
    let deadline = Instant::now() + timeout;
    // LISTEN before the first read: a completion in between still wakes us.
    let mut waiter =
        crate::done::DoneWaiter::listen(pool, crate::done::RUN_DONE_CHANNEL, run_id).await;
    loop {
        match run_status(pool, run_id, tenant).await {
            Ok(s) if s.is_terminal() => return Ok(s),
            Ok(_) => {}
            Err(e @ RunError::NotFound(_)) => return Err(e),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::debug!(error = %e, "wait_run: transient database error"),
        }
        if Instant::now() >= deadline {
            return Err(RunError::WaitTimeout(timeout));
        }
        waiter.wake(deadline).await;
    }
}

/// One stored log line of a step's activity.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogLine {
    pub seq: i64,
    pub attempt: i32,
    pub stream: String,
    pub line: String,
}

/// Log lines of an activity after `after_seq` (for following a run).
pub async fn step_logs(pool: &PgPool, activity_id: Uuid, after_seq: i64) -> Result<Vec<LogLine>> {
    Ok(sqlx::query_as(
        "SELECT seq, attempt, stream, line FROM highway.activity_logs \
         WHERE activity_id = $1 AND seq > $2 ORDER BY seq LIMIT 1000",
    )
    .bind(activity_id)
    .bind(after_seq)
    .fetch_all(pool)
    .await?)
}
