//! The workflow definition format (JSON, documented by the JSON Schema of
//! [`WorkflowDefinition`]): a name, declared inputs and a DAG of `tools.docker.*` steps.
//! This module owns parsing, validation (errors name the field) and the pure parts of
//! resolving a step: `${inputs.NAME}` substitution and the `inputs_from` wiring. The
//! durable driver that stores and advances runs is [`crate::runs`].

use crate::types::{FieldError, RetryPolicy, Timeouts};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The kinds a step may use: workflows only drive docker activities.
pub const STEP_KIND_PREFIX: &str = "tools.docker.";
/// The only kind a `cache` applies to (a miss commits the run's container).
pub const CACHED_STEP_KIND: &str = "tools.docker.run";
/// In a cache key template: the content id of the step's image (`sha256:...`).
pub const IMAGE_DIGEST_PLACEHOLDER: &str = "${image.digest}";

/// A workflow: inputs and steps. Unknown fields are refused so a typo is an error, not
/// a silently ignored setting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDefinition {
    /// Shown in run listings.
    pub name: String,
    /// Declared inputs by name; only declared inputs may be given or referenced.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// The steps; order does not matter, `depends_on` does.
    pub steps: Vec<StepDefinition>,
}

/// One declared input.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Used when the run does not give the input; without it the input is required.
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

/// One step: one activity of a `tools.docker.*` kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepDefinition {
    /// Unique within the workflow: letters, digits, `_` and `-`.
    pub id: String,
    /// `tools.docker.run`, `tools.docker.commit`, ...
    pub kind: String,
    /// The kind's params; every string may use `${inputs.NAME}`.
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Steps that must succeed before this one is enqueued.
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Files from earlier steps' outputs: `{"from": "S:P", "path": D}` places the entry
    /// `P` of step `S`'s output (a file, or a directory with everything under it) at
    /// `D/<last segment of P>`, like `docker cp S:P D/`; nothing else of the output.
    #[serde(default)]
    pub inputs_from: Vec<InputFrom>,
    /// The queue the step's activity is enqueued on (default `default`): steps are
    /// routed to the workers (and so to the Docker hosts) that claim from that queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub retry_policy: Option<RetryPolicy>,
    #[serde(default)]
    #[schemars(with = "Option<Value>")]
    pub timeouts: Option<Timeouts>,
    /// Snapshot cache (`tools.docker.run` steps only): on a hit (a live
    /// `tools.docker.commit` image for the resolved key and image digest) the step does
    /// not run and reuses the snapshot and the output artifact of the run that built it;
    /// on a miss it runs, keeps its container and commits it as the key. When the image
    /// digest cannot be resolved the step runs uncached (`miss-no-commit`).
    #[serde(default)]
    pub cache: Option<CacheSpec>,
}

/// `{"from": "build:/out/app", "path": "/in"}` places build's `/out/app` (a file, or a
/// directory and everything under it) at `/in/app`, and nothing else of build's output:
/// the rule of `docker cp build:/out/app /in/`. `"from": "build:/out"` gives `/in/out/...`.
/// A PATH the producing run did not write fails this step (`InputPathNotFound`), the
/// run's error naming `steps[i].inputs_from[j].from`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputFrom {
    /// `STEP:PATH`: PATH (absolute, normalised) is one of STEP's declared `outputs` or
    /// lies under one; the entry at PATH is what this step receives.
    pub from: String,
    /// Absolute directory in this step's container; the entry lands at
    /// `path/<last segment of PATH>`.
    pub path: String,
}

impl InputFrom {
    /// `(step, path)` of `from`.
    pub fn source(&self) -> Option<(&str, &str)> {
        self.from.split_once(':')
    }
}

/// A cache key template over the inputs and the image digest
/// (`"build-${inputs.version}"`, `"${image.digest}"` allowed). The snapshot tag is a
/// hash of workflow name, step id, the resolved key and the content id of the step's
/// image, always: the same image reference rebuilt misses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Template text: `${inputs.NAME}` and `${image.digest}` are replaced.
    pub key: String,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The JSON Schema of the format (for editors and `workflows/examples/`).
pub fn json_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(WorkflowDefinition)).unwrap_or(Value::Null)
}

impl WorkflowDefinition {
    /// Parses and validates JSON; the error names the field (`steps[2].depends_on[0]`).
    pub fn from_json(text: &str) -> Result<Self, FieldError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let def: Self = serde_path_to_error::deserialize(de)
            .map_err(|e| FieldError::new(e.path().to_string(), e.inner().to_string()))?;
        def.validate()?;
        Ok(def)
    }

    pub fn step(&self, id: &str) -> Option<&StepDefinition> {
        self.steps.iter().find(|s| s.id == id)
    }

    /// Checks ids, kinds, dependencies (known, acyclic), `inputs_from` (a transitive
    /// dependency and one of its declared outputs) and every `${inputs.X}` reference.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.name.trim().is_empty() || self.name.len() > 128 {
            return Err(FieldError::new("name", "must be 1 to 128 characters"));
        }
        if self.steps.is_empty() {
            return Err(FieldError::new("steps", "must have at least one step"));
        }
        let mut seen = HashSet::new();
        for (i, s) in self.steps.iter().enumerate() {
            let f = |name: &str| format!("steps[{i}].{name}");
            if s.id.is_empty()
                || s.id.len() > 64
                || !s
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(FieldError::new(
                    f("id"),
                    "must be 1 to 64 letters, digits, '_' or '-'",
                ));
            }
            if !seen.insert(s.id.as_str()) {
                return Err(FieldError::new(
                    f("id"),
                    format!("duplicate step id {:?}", s.id),
                ));
            }
            if !s.kind.starts_with(STEP_KIND_PREFIX) {
                return Err(FieldError::new(
                    f("kind"),
                    format!("must be a {STEP_KIND_PREFIX}* kind"),
                ));
            }
            if !s.params.is_object() {
                return Err(FieldError::new(f("params"), "must be a JSON object"));
            }
            if let Some(q) = &s.queue {
                // The same rule as an enqueue's `queue`, judged before anything is stored.
                crate::types::check_queue(q).map_err(|e| FieldError::new(f("queue"), e.reason))?;
            }
            check_templates(&s.params, &self.inputs, &f("params"))?;
            if let Some(c) = &s.cache {
                if s.kind != CACHED_STEP_KIND {
                    return Err(FieldError::new(
                        f("cache"),
                        format!("only {CACHED_STEP_KIND} steps can be cached"),
                    ));
                }
                check_templates(&Value::String(c.key.clone()), &self.inputs, &f("cache.key"))?;
                let rest = c.key.replace(IMAGE_DIGEST_PLACEHOLDER, "");
                if let Some(p) = rest.split("${").skip(1).find(|p| !p.starts_with("inputs.")) {
                    let name = p.split('}').next().unwrap_or(p);
                    return Err(FieldError::new(
                        f("cache.key"),
                        format!("unknown placeholder ${{{name}}}: use ${{inputs.NAME}} or {IMAGE_DIGEST_PLACEHOLDER}"),
                    ));
                }
            }
        }
        for (i, s) in self.steps.iter().enumerate() {
            for (j, d) in s.depends_on.iter().enumerate() {
                if !seen.contains(d.as_str()) {
                    return Err(FieldError::new(
                        format!("steps[{i}].depends_on[{j}]"),
                        format!("unknown step {d:?}"),
                    ));
                }
                if d == &s.id {
                    return Err(FieldError::new(
                        format!("steps[{i}].depends_on[{j}]"),
                        "a step cannot depend on itself",
                    ));
                }
                // Refused rather than taken for a cycle (the ordering counts each entry).
                if s.depends_on[..j].contains(d) {
                    return Err(FieldError::new(
                        format!("steps[{i}].depends_on[{j}]"),
                        format!("step {d:?} is listed twice"),
                    ));
                }
            }
        }
        self.check_acyclic()?;
        for (i, s) in self.steps.iter().enumerate() {
            let ancestors = self.ancestors(&s.id);
            for (j, inp) in s.inputs_from.iter().enumerate() {
                let field = format!("steps[{i}].inputs_from[{j}]");
                let Some((from_step, from_path)) = inp.source() else {
                    return Err(FieldError::new(
                        format!("{field}.from"),
                        "must be STEP:PATH",
                    ));
                };
                let normalised = from_path.strip_prefix('/').is_some_and(|rest| {
                    !rest.is_empty()
                        && rest
                            .split('/')
                            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                });
                if !normalised {
                    return Err(FieldError::new(
                        format!("{field}.from"),
                        "PATH must be absolute and normalised (no '.', '..', '//' or trailing '/')",
                    ));
                }
                if !ancestors.contains(from_step) {
                    return Err(FieldError::new(
                        format!("{field}.from"),
                        format!(
                            "step {from_step:?} is not among this step's (transitive) depends_on"
                        ),
                    ));
                }
                let outputs = self
                    .step(from_step)
                    .map(declared_outputs)
                    .unwrap_or_default();
                let covered = outputs.iter().any(|o| {
                    from_path == o
                        || from_path
                            .strip_prefix(o.as_str())
                            .is_some_and(|rest| rest.starts_with('/') || o.ends_with('/'))
                });
                if !covered {
                    return Err(FieldError::new(
                        format!("{field}.from"),
                        format!("{from_path:?} is not among the outputs of step {from_step:?} ({outputs:?})"),
                    ));
                }
                if !inp.path.starts_with('/') {
                    return Err(FieldError::new(
                        format!("{field}.path"),
                        "must be an absolute path",
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_acyclic(&self) -> Result<(), FieldError> {
        // Kahn's algorithm: whatever cannot be ordered sits on a cycle.
        let mut indegree: HashMap<&str, usize> = self
            .steps
            .iter()
            .map(|s| (s.id.as_str(), s.depends_on.len()))
            .collect();
        let mut ready: Vec<&str> = indegree
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(k, _)| *k)
            .collect();
        let mut done = 0;
        while let Some(id) = ready.pop() {
            done += 1;
            for s in &self.steps {
                if s.depends_on.iter().any(|d| d == id) {
                    let n = indegree.get_mut(s.id.as_str()).expect("known step");
                    *n -= 1;
                    if *n == 0 {
                        ready.push(s.id.as_str());
                    }
                }
            }
        }
        if done < self.steps.len() {
            let (i, s) = self
                .steps
                .iter()
                .enumerate()
                .find(|(_, s)| indegree[s.id.as_str()] > 0)
                .expect("a step on the cycle");
            return Err(FieldError::new(
                format!("steps[{i}].depends_on"),
                format!("step {:?} is on a dependency cycle", s.id),
            ));
        }
        Ok(())
    }

    /// Every step `id` depends on, directly or not.
    pub fn ancestors(&self, id: &str) -> HashSet<&str> {
        let mut out = HashSet::new();
        let mut stack: Vec<&str> = vec![id];
        while let Some(cur) = stack.pop() {
            if let Some(s) = self.step(cur) {
                for d in &s.depends_on {
                    if out.insert(d.as_str()) {
                        stack.push(d.as_str());
                    }
                }
            }
        }
        out
    }

    /// The run's input values: given ones plus defaults; unknown or missing ones are
    /// refused, naming the input.
    pub fn resolve_inputs(
        &self,
        given: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, FieldError> {
        for k in given.keys() {
            if !self.inputs.contains_key(k) {
                return Err(FieldError::new(
                    format!("inputs.{k}"),
                    "is not declared by the workflow",
                ));
            }
        }
        let mut out = BTreeMap::new();
        for (k, spec) in &self.inputs {
            match given.get(k).or(spec.default.as_ref()) {
                Some(v) => {
                    out.insert(k.clone(), v.clone());
                }
                None => {
                    return Err(FieldError::new(
                        format!("inputs.{k}"),
                        "is required (no default)",
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// The `outputs` a step declares in its params.
pub fn declared_outputs(s: &StepDefinition) -> Vec<String> {
    s.params
        .get("outputs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Replaces `${inputs.NAME}` in every string of `v` (keys untouched).
pub fn substitute(v: &Value, inputs: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(s) => Value::String(substitute_str(s, inputs)),
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, inputs)).collect()),
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| (k.clone(), substitute(x, inputs)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute_str(s: &str, inputs: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${inputs.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 9..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                // Validation guarantees the name is declared; keep the text otherwise.
                match inputs.get(name) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&rest[start..start + 9 + end + 1]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn template_names(s: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("${inputs.") {
        let after = &rest[start + 9..];
        match after.find('}') {
            Some(end) => {
                names.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    names
}

fn check_templates(
    v: &Value,
    inputs: &BTreeMap<String, InputSpec>,
    field: &str,
) -> Result<(), FieldError> {
    match v {
        Value::String(s) => {
            for n in template_names(s) {
                if !inputs.contains_key(n) {
                    return Err(FieldError::new(
                        field,
                        format!("references undeclared input {n:?}"),
                    ));
                }
            }
            Ok(())
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_templates(x, inputs, &format!("{field}[{i}]"))),
        Value::Object(m) => m
            .iter()
            .try_for_each(|(k, x)| check_templates(x, inputs, &format!("{field}.{k}"))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(steps: Value) -> Result<WorkflowDefinition, FieldError> {
        WorkflowDefinition::from_json(
            &json!({"name": "t", "inputs": {"image": {}}, "steps": steps}).to_string(),
        )
    }

    fn step(id: &str, deps: &[&str]) -> Value {
        json!({"id": id, "kind": "tools.docker.run", "params": {"image": "${inputs.image}", "outputs": ["/out"]}, "depends_on": deps})
    }

    #[test]
    fn validation_names_the_field() {
        let e = def(json!([step("a", &[]), step("a", &[])])).unwrap_err();
        assert_eq!(e.field, "steps[1].id");
        let e = def(json!([step("a", &["zz"])])).unwrap_err();
        assert_eq!(e.field, "steps[0].depends_on[0]");
        let e = def(json!([step("a", &["b"]), step("b", &["a"])])).unwrap_err();
        assert!(e.reason.contains("cycle"), "{e}");
        let e = def(json!([step("a", &[]), step("b", &["a", "a"])])).unwrap_err();
        assert_eq!(e.field, "steps[1].depends_on[1]");
        assert!(e.reason.contains("listed twice"), "{e}");
        let mut c = step("c", &["a"]);
        c["inputs_from"] = json!([{"from": "b:/out", "path": "/in"}]);
        let e = def(json!([step("a", &[]), step("b", &[]), c])).unwrap_err();
        assert_eq!(e.field, "steps[2].inputs_from[0].from");
        let mut c = step("c", &["a"]);
        c["inputs_from"] = json!([{"from": "a:/elsewhere", "path": "/in"}]);
        let e = def(json!([step("a", &[]), c])).unwrap_err();
        assert_eq!(e.field, "steps[1].inputs_from[0].from");
        let e = def(
            json!([{"id": "a", "kind": "tools.docker.run", "params": {"image": "${inputs.nope}"}}]),
        )
        .unwrap_err();
        assert_eq!(e.field, "steps[0].params.image");
        let e = def(json!([{"id": "a", "kind": "tools.docker.run", "bogus": 1}])).unwrap_err();
        assert!(e.reason.contains("bogus"), "{e}");
        let mut c = step("c", &["a"]);
        c["inputs_from"] = json!([{"from": "a:/out/", "path": "/in"}]);
        let e = def(json!([step("a", &[]), c])).unwrap_err();
        assert_eq!(e.field, "steps[1].inputs_from[0].from");
        assert!(e.reason.contains("normalised"), "{e}");
    }

    #[test]
    fn cache_keys_take_inputs_and_the_image_digest_only() {
        let mut a = step("a", &[]);
        a["cache"] = json!({"key": "k-${inputs.image}-${image.digest}"});
        assert!(def(json!([a.clone()])).is_ok());
        a["cache"] = json!({"key": "k-${image.tag}"});
        let e = def(json!([a.clone()])).unwrap_err();
        assert_eq!(e.field, "steps[0].cache.key");
        assert!(e.reason.contains("image.tag"), "{e}");
        a["cache"] = json!({"key": "k"});
        a["kind"] = json!("tools.docker.exec");
        let e = def(json!([a])).unwrap_err();
        assert_eq!(e.field, "steps[0].cache");
    }

    #[test]
    fn transitive_inputs_from_and_substitution() {
        let mut c = step("c", &["b"]);
        c["inputs_from"] = json!([{"from": "a:/out/x", "path": "/in"}]);
        let d = def(json!([step("a", &[]), step("b", &["a"]), c])).unwrap();
        let inputs: BTreeMap<String, String> =
            [("image".to_string(), "busybox".to_string())].into();
        let p = substitute(&d.steps[0].params, &inputs);
        assert_eq!(p["image"], "busybox");
        assert_eq!(
            substitute_str("a${inputs.image}b${x}", &inputs),
            "abusyboxb${x}"
        );
        assert!(d.resolve_inputs(&BTreeMap::new()).is_err());
        assert!(json_schema()["properties"]["steps"].is_object());
    }
}
