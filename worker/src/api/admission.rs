//! The door for `tools.docker.*` params: every route that stores params a worker will run
//! (`POST /v1/activities`, workflow runs, schedule create and update) admits them here
//! first, through the worker's own [`crate::docker::door::admit`] against this process's
//! Docker policy, so a run that could never start is a 422 naming its JSON path instead
//! of a stored activity that fails when claimed.

use super::error::ApiError;
use super::AppState;
use crate::docker::door;
use serde_json::Value;

/// Admits `params` of `kind`; `prefix` locates them in the body (`""` for an enqueue,
/// `"activity."` for a schedule, `"definition.steps[2]."` for a step), so the error's
/// field is a path from the body's root (`definition.steps[2].params.privileged`).
pub fn admit(st: &AppState, prefix: &str, kind: &str, params: &Value) -> Result<(), ApiError> {
    door::admit(kind, params, &st.docker_policy)
        .map(|_| ())
        .map_err(|r| ApiError::Refused {
            code: r.code(),
            field: format!("{prefix}{}", r.request_path()),
            reason: r.reason().to_string(),
        })
}
