//! Admission of `tools.docker.*` params, the one judgement shared by the door (the API,
//! before anything is stored) and the worker (the run handler, before any side effect):
//! the workflows crate's syntax check (`docker_params::check`, the parser every handler
//! uses), then for `tools.docker.run` the operator's policy ([`policy::check`]).
//!
//! Pure: no I/O. Fields are named within the params (`memory_limit`, `privileged`);
//! callers add their own prefix (`params.`, `steps[2].params.`).

use super::policy::{self, PolicyError};
use crate::config::docker::SecurityPolicy;
use highway_workflows::docker::{error_code, DockerRunParams};
use highway_workflows::docker_params::{self, Checked};
use highway_workflows::FieldError;
use serde_json::Value;

/// Params refused at admission. Non-retryable wherever it is found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The params do not parse or validate (what the handler would call `InvalidParams`).
    #[error("`{}`: {}", .0.field, .0.reason)]
    Invalid(FieldError),
    /// Valid, but the operator's policy does not allow them.
    #[error(transparent)]
    Policy(PolicyError),
}

impl Refused {
    /// The stable code: `invalid_params`, `invalid_image_reference` or
    /// `policy_violation`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid(e) => error_code(e),
            Self::Policy(e) => e.code(),
        }
    }

    /// The refused field as a path from the request's root (`params.memory_limit`,
    /// `kind` for an unknown docker kind).
    pub fn request_path(&self) -> String {
        let e = match self {
            Self::Invalid(e) => e.clone(),
            Self::Policy(p) => FieldError::new(p.field.clone(), String::new()),
        };
        docker_params::request_path(&e)
    }

    pub fn reason(&self) -> &str {
        match self {
            Self::Invalid(e) => &e.reason,
            Self::Policy(p) => &p.reason,
        }
    }
}

/// What passed admission.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// `tools.docker.run`: the parsed params.
    pub run: Option<DockerRunParams>,
    /// Warnings of the policy (limits that will be defaulted).
    pub warnings: Vec<String>,
}

/// Judges `params` of `kind` against `policy`; any kind outside `tools.docker.*` passes
/// unjudged.
pub fn admit(kind: &str, params: &Value, policy: &SecurityPolicy) -> Result<Admitted, Refused> {
    match docker_params::check(kind, params).map_err(Refused::Invalid)? {
        Checked::NotDocker | Checked::Tool => Ok(Admitted::default()),
        Checked::Run(p) => {
            let warnings = policy::check(&p, policy).map_err(Refused::Policy)?;
            Ok(Admitted {
                run: Some(*p),
                warnings,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn syntax_then_policy_with_paths() {
        let p = SecurityPolicy::default();
        let run = highway_workflows::docker::KIND;
        let e = admit(run, &json!({"image": "b", "privileged": true}), &p).unwrap_err();
        assert_eq!(
            (e.code(), e.request_path().as_str()),
            ("policy_violation", "params.privileged")
        );
        let e = admit(run, &json!({"image": "UPPER/x"}), &p).unwrap_err();
        assert_eq!(
            (e.code(), e.request_path().as_str()),
            ("invalid_image_reference", "params.image")
        );
        let ok = admit(run, &json!({"image": "busybox"}), &p).unwrap();
        assert!(ok.run.is_some() && !ok.warnings.is_empty());
        assert!(admit("highway.noop", &json!({"privileged": true}), &p).is_ok());
    }
}
