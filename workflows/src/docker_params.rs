//! The one syntax check of `tools.docker.*` params, for every kind: the Rust client
//! (through `EnqueueRequest::validate`), the API's door and the worker's handlers parse
//! params through [`check`] (or the `from_json` it calls), so what a worker would refuse
//! as `InvalidParams` is refused before anything is stored.
//!
//! What this module must not do: judge what the operator *allows* (privileged, host
//! modes, allow-lists, limit maximums). That is the worker's `docker::policy`, which the
//! API applies at the door on top of this.

use crate::docker::{DockerRunParams, KIND};
use crate::docker_tools::{
    CommitParams, ExecParams, ImagesParams, InspectParams, LogsParams, PullParams, RemoveParams,
    StopParams, ToolParams, KIND_COMMIT, KIND_EXEC, KIND_IMAGES, KIND_INSPECT, KIND_LOGS,
    KIND_PULL, KIND_REMOVE, KIND_STOP,
};
use crate::field::FieldError;
use serde_json::Value;

/// The prefix of every docker kind.
pub const PREFIX: &str = "tools.docker.";

/// Params that passed [`check`].
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// Not a `tools.docker.*` kind: nothing was judged.
    NotDocker,
    /// `tools.docker.run`, parsed (the policy judges these).
    Run(Box<DockerRunParams>),
    /// Another docker kind, valid.
    Tool,
}

/// Parses and validates `params` as the params of `kind`. Errors name the field within
/// the params (`memory_limit`, `environment.1X`, `params` for the object itself); an
/// unknown `tools.docker.*` kind is an error on `kind`.
pub fn check(kind: &str, params: &Value) -> Result<Checked, FieldError> {
    fn tool<P: ToolParams>(v: &Value) -> Result<Checked, FieldError> {
        P::from_json(v).map(|_| Checked::Tool)
    }
    if !kind.starts_with(PREFIX) {
        return Ok(Checked::NotDocker);
    }
    match kind {
        KIND => DockerRunParams::from_json(params).map(|p| Checked::Run(Box::new(p))),
        KIND_INSPECT => tool::<InspectParams>(params),
        KIND_STOP => tool::<StopParams>(params),
        KIND_REMOVE => tool::<RemoveParams>(params),
        KIND_LOGS => tool::<LogsParams>(params),
        KIND_EXEC => tool::<ExecParams>(params),
        KIND_PULL => tool::<PullParams>(params),
        KIND_IMAGES => tool::<ImagesParams>(params),
        KIND_COMMIT => tool::<CommitParams>(params),
        _ => Err(FieldError::new(
            "kind",
            format!("unknown docker kind {kind:?}"),
        )),
    }
}

/// The field of a params error as a path from the request's root: `params.memory_limit`
/// (`params` alone for the object itself); `kind` stays `kind`.
pub fn request_path(e: &FieldError) -> String {
    match e.field.as_str() {
        "params" | "kind" => e.field.clone(),
        f if f.starts_with('[') => format!("params{f}"),
        f => format!("params.{f}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_kind_is_judged_and_fields_are_paths() {
        assert_eq!(
            check("highway.noop", &json!({"x": 1})),
            Ok(Checked::NotDocker)
        );
        assert!(matches!(
            check(KIND, &json!({"image": "busybox"})),
            Ok(Checked::Run(_))
        ));
        let e = check(KIND, &json!({"image": "busybox", "bogus": 1})).unwrap_err();
        assert_eq!(request_path(&e), "params.bogus");
        let e = check(KIND, &json!({"image": "busybox", "memory_limit": "lots"})).unwrap_err();
        assert_eq!(request_path(&e), "params.memory_limit");
        let e = check(KIND_INSPECT, &json!({"container": "../x"})).unwrap_err();
        assert_eq!(request_path(&e), "params.container");
        let e = check(KIND_IMAGES, &json!({"bogus": 1})).unwrap_err();
        assert_eq!(request_path(&e), "params.bogus");
        let e = check("tools.docker.nope", &json!({})).unwrap_err();
        assert_eq!(request_path(&e), "kind");
    }
}
