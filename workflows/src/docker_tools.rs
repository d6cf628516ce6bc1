//! Parameters and results of the `tools.docker.*` kinds other than `run`: inspect, stop,
//! remove, logs, exec, pull, images and commit. Wire types shared by the client, the API
//! and the worker, with their JSON Schema and their validation.
//!
//! What this module must not do: talk to a daemon or decide ownership. Containers and
//! images are named by the caller (`container`: an id, a 12+ hex short id, or a name) and
//! the worker resolves that name through its tracking tables, within the caller's tenant.
//! Every name is validated strictly here first: bollard puts ids into URL paths without
//! escaping them (DOCKER-NOTES trap 29), so `../images/x` must never get that far.

use crate::docker::{ImageRef, PullPolicy, INVALID_IMAGE_REFERENCE, MAX_STOP_GRACE, MAX_TTL};
use crate::field::FieldError;
use crate::HumanDuration;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub const KIND_INSPECT: &str = "tools.docker.inspect";
pub const KIND_STOP: &str = "tools.docker.stop";
pub const KIND_REMOVE: &str = "tools.docker.remove";
pub const KIND_LOGS: &str = "tools.docker.logs";
pub const KIND_EXEC: &str = "tools.docker.exec";
pub const KIND_PULL: &str = "tools.docker.pull";
pub const KIND_IMAGES: &str = "tools.docker.images";
pub const KIND_COMMIT: &str = "tools.docker.commit";

/// Most bytes of stdin an exec may carry (it is stored with the params).
pub const MAX_EXEC_STDIN: usize = 1024 * 1024;
/// Longest an exec may run before it is reported as timed out.
pub const MAX_EXEC_TIMEOUT: Duration = Duration::from_secs(3600);
/// Most log lines a `tools.docker.logs` call returns.
pub const MAX_LOG_LINES: u64 = 10_000;

fn default_grace() -> HumanDuration {
    HumanDuration::from_secs(10)
}
fn default_exec_timeout() -> HumanDuration {
    HumanDuration::from_secs(60)
}
fn default_image_ttl() -> HumanDuration {
    HumanDuration::from_secs(86_400)
}
fn yes() -> bool {
    true
}

/// Parses params of any kind of this module, naming the failing field, then validates.
pub trait ToolParams: DeserializeOwned {
    fn validate(&self) -> Result<(), FieldError>;

    fn from_json(v: &serde_json::Value) -> Result<Self, FieldError> {
        let p: Self = serde_path_to_error::deserialize(v).map_err(|e| {
            crate::field::deserialize_error(&e.path().to_string(), e.into_inner().to_string())
        })?;
        p.validate()?;
        Ok(p)
    }
}

/// Checks a container reference: a full id (64 hex), a short id (12..64 hex) or a
/// container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}`, Docker's own rule, minus the
/// leading `/`). Nothing else ever reaches a URL path.
pub fn validate_container_ref(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be a container id or name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters)",
        ))
    }
}

/// Checks a commit repository path: lowercase components `[a-z0-9]+([._-][a-z0-9]+)*`
/// joined by `/`, at most 128 bytes. The worker prefixes it with the tenant namespace.
pub fn validate_repository(field: &str, s: &str) -> Result<(), FieldError> {
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
            })
            && c.as_bytes()[0].is_ascii_alphanumeric()
            && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
    };
    if s.len() <= 128 && s.split('/').all(component_ok) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be lowercase path components ([a-z0-9] with '.', '_' or '-' inside) joined by '/'",
        ))
    }
}

/// Checks a tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (Docker's rule).
pub fn validate_tag(field: &str, s: &str) -> Result<(), FieldError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && (s.as_bytes()[0].is_ascii_alphanumeric() || s.starts_with('_'))
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
        ))
    }
}

fn max_duration(field: &str, d: HumanDuration, max: Duration) -> Result<(), FieldError> {
    if d.0 > max {
        Err(FieldError::new(
            field,
            format!("must be at most {}", HumanDuration(max)),
        ))
    } else {
        Ok(())
    }
}

// ------------------------------------------------------------------------ inspect

/// `tools.docker.inspect`: state, config, network and mounts of one of the tenant's
/// containers. Result: [`InspectResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InspectParams {
    pub container: String,
}

impl ToolParams for InspectParams {
    fn validate(&self) -> Result<(), FieldError> {
        validate_container_ref("container", &self.container)
    }
}

/// What `tools.docker.inspect` returns. Environment values that came from secrets are
/// `***` (and when the worker cannot tell which ones did, every value is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InspectResult {
    pub container_id: String,
    pub name: String,
    pub image: String,
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    pub status: String,
    pub running: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub command: Vec<String>,
    pub entrypoint: Vec<String>,
    /// `KEY=value` entries, secret values replaced by `***`.
    pub env: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub network_mode: Option<String>,
    /// Network name → IP address.
    pub networks: BTreeMap<String, String>,
    pub mounts: Vec<MountView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct MountView {
    /// `bind`, `volume`, `tmpfs`.
    pub kind: String,
    pub source: Option<String>,
    pub destination: String,
    pub read_only: bool,
}

// ------------------------------------------------------------------------ stop / remove

/// `tools.docker.stop`: SIGTERM, then SIGKILL after `grace` (the daemon does both).
/// Result: [`StopResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StopParams {
    pub container: String,
    /// Time between SIGTERM and SIGKILL (default 10 s, at most 1 h).
    #[serde(default = "default_grace")]
    #[schemars(with = "String")]
    pub grace: HumanDuration,
}

impl ToolParams for StopParams {
    fn validate(&self) -> Result<(), FieldError> {
        validate_container_ref("container", &self.container)?;
        max_duration("grace", self.grace, MAX_STOP_GRACE)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct StopResult {
    pub container_id: String,
    /// False when it was not running (a no-op).
    pub was_running: bool,
    pub exit_code: Option<i64>,
    /// The grace ran out and we sent SIGKILL ourselves after the stop call failed.
    pub killed: bool,
}

/// `tools.docker.remove`. Result: [`RemoveResult`]. The tracking row is closed with
/// `removed_by` = the worker and `removed_reason` = `tool:<activity id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    pub container: String,
    /// Remove a running container (SIGKILL, no grace). Without it a running container
    /// is refused (`ContainerRunning`): stop it first.
    #[serde(default)]
    pub force: bool,
    /// Remove anonymous volumes too (default true: they would leak otherwise, trap 7).
    #[serde(default = "yes")]
    pub volumes: bool,
}

impl ToolParams for RemoveParams {
    fn validate(&self) -> Result<(), FieldError> {
        validate_container_ref("container", &self.container)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RemoveResult {
    pub container_id: String,
    /// False when the container was already gone from the daemon.
    pub removed: bool,
}

// ------------------------------------------------------------------------ logs

/// `tools.docker.logs`: from the daemon while the container exists, from
/// `highway.activity_logs` (what the run captured, secrets as `***`) after it is gone.
/// Result: [`LogsResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogsParams {
    pub container: String,
    /// Only the last `tail` lines (at most 10 000; default: all, capped by `max_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only lines at or after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only lines before this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

impl ToolParams for LogsParams {
    fn validate(&self) -> Result<(), FieldError> {
        validate_container_ref("container", &self.container)?;
        if let Some(t) = self.tail {
            if t == 0 || t > MAX_LOG_LINES {
                return Err(FieldError::new(
                    "tail",
                    format!("must be 1..={MAX_LOG_LINES}"),
                ));
            }
        }
        if let (Some(s), Some(u)) = (self.since, self.until) {
            if u <= s {
                return Err(FieldError::new("until", "must be after `since`"));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogLine {
    /// `stdout`, `stderr` or `system`.
    pub stream: String,
    pub line: String,
    #[schemars(with = "Option<String>")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LogsResult {
    pub container_id: String,
    /// `docker` (the daemon's copy) or `activity_logs` (stored, the container is gone).
    pub source: String,
    pub lines: Vec<LogLine>,
    /// Lines were dropped to stay under the worker's capture cap.
    pub truncated: bool,
}

// ------------------------------------------------------------------------ exec

/// `tools.docker.exec`: a command in a running container of the same tenant. Result:
/// [`ExecResult`].
///
/// The Engine API cannot kill an exec (moby#9098): when `timeout` passes we stop
/// reading and report `timed_out: true`, but the process keeps running inside the
/// container until it ends or the container stops. Wrap long commands in the image's
/// own `timeout` if that matters, or stop the container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    pub container: String,
    /// argv (exec form; no shell unless you name one).
    pub command: Vec<String>,
    /// Written to the process's stdin, which is then closed. Plain text; no secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Extra plain environment of the process.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Default 60 s, at most 1 h.
    #[serde(default = "default_exec_timeout")]
    #[schemars(with = "String")]
    pub timeout: HumanDuration,
}

impl ToolParams for ExecParams {
    fn validate(&self) -> Result<(), FieldError> {
        validate_container_ref("container", &self.container)?;
        if self.command.is_empty() {
            return Err(FieldError::new("command", "must not be empty"));
        }
        if self.command.len() > crate::docker::MAX_ARGS
            || self.command.iter().map(String::len).sum::<usize>() > crate::docker::MAX_ARGS_BYTES
        {
            return Err(FieldError::new("command", "too many arguments or bytes"));
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return Err(FieldError::new("command", "must not contain NUL bytes"));
        }
        if self
            .stdin
            .as_ref()
            .is_some_and(|s| s.len() > MAX_EXEC_STDIN)
        {
            return Err(FieldError::new(
                "stdin",
                format!("at most {MAX_EXEC_STDIN} bytes"),
            ));
        }
        for (k, v) in &self.environment {
            let key_ok = !k.is_empty()
                && !k.as_bytes()[0].is_ascii_digit()
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok || v.contains('\0') {
                return Err(FieldError::new(
                    format!("environment.{k}"),
                    "names are [A-Za-z_][A-Za-z0-9_]*, values without NUL",
                ));
            }
        }
        if let Some(d) = &self.working_dir {
            if !d.starts_with('/') || d.contains('\0') {
                return Err(FieldError::new("working_dir", "must be an absolute path"));
            }
        }
        if let Some(u) = &self.user {
            if u.is_empty()
                || u.len() > 64
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
            {
                return Err(FieldError::new(
                    "user",
                    "must be `user[:group]` or `uid[:gid]`",
                ));
            }
        }
        if self.timeout.0.is_zero() {
            return Err(FieldError::new("timeout", "must be positive"));
        }
        max_duration("timeout", self.timeout, MAX_EXEC_TIMEOUT)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ExecResult {
    pub container_id: String,
    /// None when the exec timed out (still running: see [`ExecParams`]).
    pub exit_code: Option<i64>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// Output beyond the worker's capture cap was dropped (head and tail kept).
    pub truncated: bool,
    pub duration_ms: u64,
}

// ------------------------------------------------------------------------ images

/// `tools.docker.pull`. Progress goes to heartbeat details (`phase`, `status`,
/// `layers`). Result: [`PullResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PullParams {
    /// Normalised to carry a tag (default `latest`) or a digest.
    pub image: String,
    /// `always` or `if_not_present` (default); `never` only checks presence.
    #[serde(default)]
    pub policy: PullPolicy,
}

impl ToolParams for PullParams {
    fn validate(&self) -> Result<(), FieldError> {
        ImageRef::parse(&self.image)
            .map(|_| ())
            .map_err(|e| FieldError::new("image", format!("{INVALID_IMAGE_REFERENCE}: {e}")))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PullResult {
    pub image: String,
    pub image_id: String,
    /// False when the image was present and the policy did not ask for a pull.
    pub pulled: bool,
}

/// `tools.docker.images`: images on the daemon, without those committed by other
/// tenants. Result: [`ImagesResult`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesParams {
    /// Docker's `reference` filter (`busybox`, `highway-test/*:1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// `key` or `key=value` label filters (all must match).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dangling: Option<bool>,
}

impl ToolParams for ImagesParams {
    fn validate(&self) -> Result<(), FieldError> {
        if let Some(r) = &self.reference {
            let ok = !r.is_empty()
                && r.len() <= 256
                && r.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'/' | b':' | b'.' | b'_' | b'-' | b'*' | b'@')
                });
            if !ok {
                return Err(FieldError::new("reference", "not a reference pattern"));
            }
        }
        if self.labels.len() > 32 {
            return Err(FieldError::new("labels", "at most 32 filters"));
        }
        for (i, l) in self.labels.iter().enumerate() {
            if l.is_empty() || l.len() > 512 || l.contains('\0') {
                return Err(FieldError::new(
                    format!("labels[{i}]"),
                    "must be `key` or `key=value`",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImageView {
    pub image_id: String,
    pub repo_tags: Vec<String>,
    pub size: i64,
    /// Unix seconds (daemon clock).
    pub created: i64,
    pub labels: BTreeMap<String, String>,
    /// Committed by this tenant through `tools.docker.commit`.
    pub owned: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ImagesResult {
    pub images: Vec<ImageView>,
}

/// `tools.docker.commit`: snapshot a container of the tenant into an image
/// `highway/<tenant namespace>/<repository>:<tag>`. Secrets and `highway.*` labels are
/// never baked in: every environment key that came from a secret is overridden with an
/// empty value and every `highway.*` label with an empty value (Docker cannot remove a
/// key at commit, F6); when the worker cannot tell which keys came from secrets, the
/// commit is refused (`CommitRefused`). Result: [`CommitResult`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitParams {
    pub container: String,
    pub repository: String,
    #[serde(default = "default_tag")]
    pub tag: String,
    /// A pinned image is never removed by the garbage collector.
    #[serde(default)]
    pub pinned: bool,
    /// Removed by the garbage collector this long after creation unless pinned
    /// (default 24 h, at most 30 days).
    #[serde(default = "default_image_ttl")]
    #[schemars(with = "String")]
    pub ttl: HumanDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Remove the container once its image is committed and recorded (what a workflow
    /// cache miss asks: its kept container has no other use). A failed removal does not
    /// fail the commit; the garbage collector removes the container after its retention.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove_container: bool,
}

fn default_tag() -> String {
    "latest".into()
}

impl ToolParams for CommitParams {
    fn validate(&self) -> Result<(), FieldError> {
        validate_container_ref("container", &self.container)?;
        validate_repository("repository", &self.repository)?;
        validate_tag("tag", &self.tag)?;
        if self.ttl.0.is_zero() {
            return Err(FieldError::new("ttl", "must be positive"));
        }
        max_duration("ttl", self.ttl, MAX_TTL)?;
        if self.comment.as_ref().is_some_and(|c| c.len() > 1024) {
            return Err(FieldError::new("comment", "at most 1024 bytes"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CommitResult {
    pub image_id: String,
    /// `highway/<tenant namespace>/<repository>:<tag>`.
    pub reference: String,
    pub pinned: bool,
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Environment keys overridden because they came from secrets.
    pub scrubbed_env: Vec<String>,
    /// `highway.*` labels overridden.
    pub scrubbed_labels: Vec<String>,
}

/// Whether `reference` names an image in another tenant's commit namespace
/// (`highway/<namespace>/...`, with or without Docker Hub's implicit domain). For
/// `tools.docker.run` too: it must treat such an image as absent.
pub fn in_foreign_namespace(tenant_id: &str, reference: &str) -> bool {
    let r = reference
        .strip_prefix("docker.io/")
        .or_else(|| reference.strip_prefix("index.docker.io/"))
        .unwrap_or(reference);
    let ours = format!("highway/{}/", tenant_namespace(tenant_id));
    r.starts_with("highway/") && !r.starts_with(&ours)
}

/// The image namespace of a tenant: lowercase, `[a-z0-9-]`, plus a hash of the exact
/// tenant id so two tenants never share a namespace.
pub fn tenant_namespace(tenant_id: &str) -> String {
    use sha2::Digest as _;
    let mut slug: String = tenant_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    slug = slug.trim_matches('-').to_string();
    let hash = sha2::Sha256::digest(tenant_id.as_bytes());
    let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
    if slug.is_empty() {
        format!("t-{short}")
    } else {
        format!("{slug}-{short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_refs_are_strict() {
        assert!(validate_container_ref("c", "highway-abc-1").is_ok());
        assert!(validate_container_ref("c", &"a".repeat(64)).is_ok());
        for bad in ["", "../images/x", "a/b", "-x", "a b", "x?y", "x%2f"] {
            assert!(validate_container_ref("c", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_fields_name_the_field() {
        let e = ExecParams::from_json(&json!({"container": "x", "command": ["a"], "bogus": 1}))
            .unwrap_err();
        assert!(e.reason.contains("bogus"), "{e:?}");
        let e = StopParams::from_json(&json!({"container": "../x"})).unwrap_err();
        assert_eq!(e.field, "container");
        let e = CommitParams::from_json(&json!({"container": "x", "repository": "A"})).unwrap_err();
        assert_eq!(e.field, "repository");
    }

    #[test]
    fn namespaces_differ_per_tenant() {
        assert_ne!(tenant_namespace("Tenant A"), tenant_namespace("tenant-a"));
        assert!(tenant_namespace("Tenant A").starts_with("tenant-a-"));
        assert!(validate_repository("r", &tenant_namespace("!!")).is_ok());
    }
}
