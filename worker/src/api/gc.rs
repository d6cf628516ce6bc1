//! `GET /v1/gc/plan` (admin only): what one garbage-collector pass would remove now and
//! why, without removing anything. It runs the collector's own pass in dry-run mode
//! (same listing, same [`crate::docker::gc::judge`], same options as this server's
//! collector), so the plan cannot drift from what the collector does; and it lists the
//! expired snapshot images the pass would reap.
//!
//! Owns: [`GcPlanner`] (what the server needs to plan: a Docker client, the deployment
//! and the collector's options) and the answer's shape. Tenant tokens get 403, like
//! every admin-only operation (`Caller::require_admin`).

use super::auth::Caller;
use super::error::ApiError;
use super::AppState;
use crate::docker::client::DockerClient;
use crate::docker::deployment::Deployment;
use crate::docker::gc::{DockerGarbageCollector, Error as GcError, GcOptions};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/gc/plan", get(plan))
}

/// What a server with Docker needs to plan a pass. Servers without Docker have none,
/// and the endpoint answers 503.
#[derive(Debug, Clone)]
pub struct GcPlanner {
    pub client: DockerClient,
    pub deployment: Deployment,
    /// The collector's settings (grace, max age, per-pass cap); `dry_run` is forced on.
    pub opts: GcOptions,
}

async fn plan(State(st): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    plan_of(&st, &caller).await.map(Json)
}

/// The plan of one dry-run pass (admin only): `GET /v1/gc/plan` and the web console's
/// GC view.
pub async fn plan_of(st: &AppState, caller: &Caller) -> Result<Value, ApiError> {
    caller.require_admin()?;
    let Some(planner) = st.gc.as_ref() else {
        return Err(ApiError::Unavailable("docker"));
    };
    let opts = GcOptions {
        dry_run: true,
        ..planner.opts.clone()
    };
    let gc = DockerGarbageCollector::new(
        planner.client.clone(),
        st.pool.clone(),
        planner.deployment.clone(),
        Uuid::new_v4(),
        None,
        opts.clone(),
    )
    .map_err(gc_error)?;
    let counts = gc.run_once().await.map_err(gc_error)?;
    let deployment_id = planner.deployment.id(&st.pool).await.ok();
    let daemon_id = planner
        .client
        .daemon_id()
        .await
        .map_err(|_| ApiError::Unavailable("docker"))?;
    let images =
        crate::docker::tools::expired_images(&st.pool, &daemon_id, opts.max_per_pass as i64)
            .await?;
    let containers: Vec<Value> = counts
        .planned
        .iter()
        .map(|p| {
            json!({
                "container_id": p.container_id,
                "name": p.name,
                "image": p.image,
                "tenant_id": p.tenant_id,
                "activity_id": p.activity_id,
                "attempt": p.attempt,
                "age_s": p.age.as_secs(),
                "running": p.running,
                "reason": p.reason.as_str(),
            })
        })
        .collect();
    Ok(json!({
        "deployment": planner.deployment.name(),
        "deployment_id": deployment_id,
        "containers": containers,
        "images": images,
        "counts": {
            "listed": counts.listed, "young": counts.young, "live": counts.live,
            "protected": counts.protected, "unsure": counts.unsure,
            "remove": counts.removed_total(), "deferred": counts.deferred,
            // Other stacks' containers on this daemon: never touched, never described.
            "foreign": counts.foreign, "unlabelled": counts.unlabelled,
        },
    }))
}

/// A pass that could not read both sides changed nothing; say which side was down.
fn gc_error(e: GcError) -> ApiError {
    match e {
        GcError::Docker(_) => ApiError::Unavailable("docker"),
        GcError::Database(e) => ApiError::db(e),
        GcError::DatabaseTimeout(_) => ApiError::Unavailable("postgres"),
        other @ GcError::Identity(_) => ApiError::Internal(other.to_string()),
        other @ GcError::InvalidOptions { .. } => ApiError::Internal(other.to_string()),
    }
}
