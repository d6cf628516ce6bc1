//! Parameters and result of the `tools.docker.run` activity: the wire types shared by the
//! client, the HTTP API and the worker, their human units (`"512m"`, `"1.5"`, `"30s"`),
//! their JSON Schema, and their validation (everything that can be judged without the
//! operator's policy or a Docker daemon).
//!
//! What this module must not do: know the operator's security policy (the worker's
//! `docker::policy` owns that) or talk to a daemon. Secret *values* never pass through
//! these types: the environment and `secrets` carry references only.
//!
//! Validation errors are [`FieldError`]s naming the field (`environment.FOO`,
//! `inputs[2].path`); [`error_code`] gives the stable code an API answers with.

use crate::field::FieldError;
use crate::HumanDuration;
use base64::Engine as _;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;
use uuid::Uuid;

pub mod image_ref;
pub use image_ref::{ImageRef, ImageRefError, INVALID_IMAGE_REFERENCE};

/// The activity kind these parameters belong to.
pub const KIND: &str = "tools.docker.run";
/// The code for every parameter refusal other than a bad image reference.
pub const INVALID_PARAMS: &str = "invalid_params";
/// Label keys under this prefix are ours: the garbage collector trusts them.
pub const RESERVED_LABEL_PREFIX: &str = "highway.";

/// Most arguments in `command` plus `entrypoint`.
pub const MAX_ARGS: usize = 4096;
/// Most bytes in `command` plus `entrypoint` (Linux `MAX_ARG_STRLEN` is 128 KiB too).
pub const MAX_ARGS_BYTES: usize = 128 * 1024;
/// Most environment variables.
pub const MAX_ENV_VARS: usize = 1000;
/// Most bytes of `NAME=value` over all plain environment variables.
pub const MAX_ENV_BYTES: usize = 128 * 1024;
/// Most labels, and their total size in bytes.
pub const MAX_LABELS: usize = 256;
pub const MAX_LABELS_BYTES: usize = 64 * 1024;
/// Most declared inputs, outputs and secrets.
pub const MAX_INPUTS: usize = 1000;
pub const MAX_OUTPUTS: usize = 100;
pub const MAX_SECRETS: usize = 100;
/// Smallest memory limit the daemon accepts (6 MiB since Docker 20.10).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;
/// Longest container run we accept in one activity, and longest stop grace.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86400);
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(3600);
/// Longest a detached container or a retained container may live.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 86400);

/// Default `timeout` (one hour), `stop_grace` (10 s) and `detach_ttl` (one hour).
pub const DEFAULT_TIMEOUT: HumanDuration = HumanDuration::from_secs(3600);
pub const DEFAULT_STOP_GRACE: HumanDuration = HumanDuration::from_secs(10);
pub const DEFAULT_DETACH_TTL: HumanDuration = HumanDuration::from_secs(3600);

fn yes() -> bool {
    true
}
fn default_timeout() -> HumanDuration {
    DEFAULT_TIMEOUT
}
fn default_stop_grace() -> HumanDuration {
    DEFAULT_STOP_GRACE
}
fn default_detach_ttl() -> HumanDuration {
    DEFAULT_DETACH_TTL
}

/// Parameters of `tools.docker.run`. Unknown fields are refused, naming the field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DockerRunParams {
    /// Image reference; normalised to carry a tag (default `latest`) or a digest.
    pub image: String,
    /// Arguments replacing the image's `CMD`. A string is shell form: `["/bin/sh", "-c", s]`.
    #[serde(
        default,
        deserialize_with = "de_argv",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "argv_schema")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's `ENTRYPOINT`. A string is shell form, as for `command`.
    #[serde(
        default,
        deserialize_with = "de_argv",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "argv_schema")]
    pub entrypoint: Option<Vec<String>>,
    /// Environment: plain values, or `{"secret": "name"}` references resolved by the worker.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, EnvValue>,
    /// Mounts: `"/host:/ctr[:ro]"`, `"name:/ctr"`, `"/ctr"` or `{source, target, read_only}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
    /// Published ports: `"8080:80"`, `"127.0.0.1:8080:80/udp"`, `80` or an object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// A user-defined network to join (same as `network_mode` with a network name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `bridge`, `none`, `host` (policy) or a network name. `container:` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_mode: Option<String>,
    /// `"host"` shares the host's PID namespace (policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_mode: Option<String>,
    /// `private`, `shareable`, `none` or `host` (policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipc_mode: Option<String>,
    /// `"host"` shares the host's UTS namespace (policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uts_mode: Option<String>,
    /// `"host"` disables user-namespace remapping (policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns_mode: Option<String>,
    /// CPUs: `"1.5"`, `1.5` or `"1500m"`. Missing: the operator's default, with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<Cpus>,
    /// Memory: `"512m"`, `"1g"` or bytes. Missing: the operator's default, with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<ByteSize>,
    /// `uid[:gid]` or a user name known to the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// User labels; the `highway.` prefix is reserved.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Remove the container once results are collected (by us; never Docker's AutoRemove).
    #[serde(default = "yes")]
    pub auto_remove: bool,
    /// Return right after start; the container belongs to the workflow run until `detach_ttl`.
    #[serde(default)]
    pub detach: bool,
    /// How long a detached container may live.
    #[serde(default = "default_detach_ttl")]
    #[schemars(with = "DurationSchema")]
    pub detach_ttl: HumanDuration,
    /// Deadline for the container, after which it is stopped (default 1 h).
    #[serde(default = "default_timeout")]
    #[schemars(with = "DurationSchema")]
    pub timeout: HumanDuration,
    #[serde(default)]
    pub pull_policy: PullPolicy,
    #[serde(default)]
    pub privileged: bool,
    /// Capabilities to add back after `CapDrop=ALL` (policy allowlist).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Accepted for compatibility; every capability is dropped anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// Host devices: `"/dev/fuse"`, `"/dev/x:/dev/y:rw"` or an object (policy).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSpec>,
    /// Size of `/dev/shm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<ByteSize>,
    /// tmpfs mounts: path → mount options (`"size=64m,mode=1777"`). Invisible to inputs/outputs.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// Read-only root filesystem; inputs and secrets then must sit inside a declared volume.
    #[serde(default)]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// DNS server IP addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// `"name:ip"` entries for `/etc/hosts` (`ip` may be `host-gateway`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<String>,
    /// Run an init process as PID 1 (reaps zombies, forwards signals).
    #[serde(default = "yes")]
    pub init: bool,
    /// Refused by default policy; silently ignored by cgroup v2 daemons anyway.
    #[serde(default)]
    pub oom_kill_disable: bool,
    /// Most processes in the container (> 0). Missing: the operator's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<Ulimit>,
    /// Log driver for the daemon's copy of the logs: `json-file` (default), `local` or `none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Only `no` for managed runs; other policies need `detach: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    /// GPUs and other device-driver requests (policy: devices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_requests: Vec<DeviceRequest>,
    /// `security_opt` entries (`apparmor=…`, `label=…`); unconfined ones are refused by policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Time between SIGTERM and SIGKILL when we stop the container (default 10 s). After
    /// a lease loss it is cut to what is left of the lease, so the container is down
    /// before another worker may start the activity again.
    #[serde(default = "default_stop_grace")]
    #[schemars(with = "DurationSchema")]
    pub stop_grace: HumanDuration,
    /// Files placed before start.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<InputFile>,
    /// Absolute container paths collected after exit into one artifact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<String>,
    /// Secrets delivered as files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretFile>,
    /// With `auto_remove: false`: how long to keep the exited container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<DurationSchema>")]
    pub retention: Option<HumanDuration>,
}

/// When to pull the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    Always,
    Never,
    #[default]
    IfNotPresent,
}

/// An environment value: plain, or a reference to a secret resolved by the worker at create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    Plain(String),
    Secret(String),
}

impl Serialize for EnvValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Plain(v) => s.serialize_str(v),
            Self::Secret(name) => {
                let mut m = BTreeMap::new();
                m.insert("secret", name);
                m.serialize(s)
            }
        }
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Numbers and booleans are accepted as their text, as docker-compose users write them.
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self::Plain(s)),
            serde_json::Value::Number(n) => Ok(Self::Plain(n.to_string())),
            serde_json::Value::Bool(b) => Ok(Self::Plain(b.to_string())),
            serde_json::Value::Object(m) => match (m.len(), m.get("secret")) {
                (1, Some(serde_json::Value::String(name))) => Ok(Self::Secret(name.clone())),
                _ => Err(D::Error::custom(
                    "an object value must be exactly {\"secret\": \"name\"}",
                )),
            },
            _ => Err(D::Error::custom(
                "must be a string or {\"secret\": \"name\"}",
            )),
        }
    }
}

impl JsonSchema for EnvValue {
    fn schema_name() -> Cow<'static, str> {
        "EnvValue".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "oneOf": [
                {"type": ["string", "number", "boolean"]},
                {"type": "object", "properties": {"secret": {"type": "string"}},
                 "required": ["secret"], "additionalProperties": false}
            ]
        })
    }
}

/// A byte count: an integer, or `"512m"`, `"1g"`, `"64MiB"` (binary multiples, as Docker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

/// Why a size, CPU count or mode was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {input:?}: {reason}")]
pub struct ParseUnitError {
    pub what: &'static str,
    pub input: String,
    pub reason: &'static str,
}

impl ParseUnitError {
    fn new(what: &'static str, input: &str, reason: &'static str) -> Self {
        Self {
            what,
            input: input.chars().take(64).collect(),
            reason,
        }
    }
}

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }
    /// The value as Docker's `i64` fields want it.
    pub fn as_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = ParseUnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |r| ParseUnitError::new("size", s, r);
        let t = s.trim().to_ascii_lowercase();
        let num_len = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        if num_len == 0 {
            return Err(err(
                "expected a number (examples: \"512m\", \"1g\", 1048576)",
            ));
        }
        let value: f64 = t[..num_len].parse().map_err(|_| err("malformed number"))?;
        let unit = t[num_len..].trim();
        let unit = unit
            .strip_suffix("ib")
            .or_else(|| unit.strip_suffix('b'))
            .unwrap_or(unit);
        let factor: f64 = match unit {
            "" => 1.0,
            "k" => 1024.0,
            "m" => 1024.0 * 1024.0,
            "g" => 1024.0 * 1024.0 * 1024.0,
            "t" => 1024f64.powi(4),
            "p" => 1024f64.powi(5),
            _ => return Err(err("unknown unit (use b, k, m, g, t or p)")),
        };
        let bytes = value * factor;
        if !bytes.is_finite() || bytes >= 9.0e18 {
            return Err(err("out of range"));
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, k) in [("g", 1u64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
            if n >= k && n % k == 0 {
                return write!(f, "{}{unit}", n / k);
            }
        }
        write!(f, "{n}")
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(n) => Ok(Self(n)),
            NumOrStr::Float(_) => Err(D::Error::custom(
                "a size in bytes must be a whole number (or a string like \"512m\")",
            )),
            NumOrStr::Str(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "bytes, or a string such as \"512m\" or \"1g\" (binary multiples)",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9.]+\\s*([kKmMgGtTpP]?([iI]?[bB])?)?\\s*$"}
            ]
        })
    }
}

/// A CPU count, stored as billionths of a CPU (Docker's `NanoCpus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpus(pub i64);

impl Cpus {
    pub const fn from_millis(m: i64) -> Self {
        Self(m * 1_000_000)
    }
    pub fn nano_cpus(self) -> i64 {
        self.0
    }
    fn from_f64(v: f64, input: &str) -> Result<Self, ParseUnitError> {
        if !v.is_finite() || v <= 0.0 || v > 1024.0 {
            return Err(ParseUnitError::new(
                "cpus",
                input,
                "must be above 0 and at most 1024",
            ));
        }
        Ok(Self((v * 1e9).round() as i64))
    }
}

impl FromStr for Cpus {
    type Err = ParseUnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        // `"1500m"`: millicores, as Kubernetes users write them.
        let (num, scale) = match t.strip_suffix('m') {
            Some(n) => (n, 1e-3),
            None => (t, 1.0),
        };
        let v: f64 = num.parse().map_err(|_| {
            ParseUnitError::new(
                "cpus",
                s,
                "expected a number (examples: \"1.5\", 2, \"500m\")",
            )
        })?;
        Self::from_f64(v * scale, s)
    }
}

impl fmt::Display for Cpus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / 1_000_000_000;
        let frac = self.0 % 1_000_000_000;
        if frac == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{frac:09}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl Serialize for Cpus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Cpus {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(n) => Self::from_f64(n as f64, &n.to_string()).map_err(D::Error::custom),
            NumOrStr::Float(v) => Self::from_f64(v, &v.to_string()).map_err(D::Error::custom),
            NumOrStr::Str(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

impl JsonSchema for Cpus {
    fn schema_name() -> Cow<'static, str> {
        "Cpus".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "CPUs: a number, or a string such as \"1.5\" or \"500m\"",
            "oneOf": [
                {"type": "number", "exclusiveMinimum": 0},
                {"type": "string"}
            ]
        })
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Int(u64),
    Float(f64),
    Str(String),
}

/// A file mode: an octal string (`"0644"`, `"755"`) or its integer value (`420`).
/// Only permission bits (≤ `0o777`); setuid, setgid and sticky bits are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileMode(pub u32);

impl FromStr for FileMode {
    type Err = ParseUnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let digits = t.strip_prefix("0o").unwrap_or(t);
        let v = u32::from_str_radix(digits, 8).map_err(|_| {
            ParseUnitError::new("mode", s, "expected octal digits such as \"0644\"")
        })?;
        Self::checked(v).ok_or_else(|| {
            ParseUnitError::new("mode", s, "only permission bits (at most 0777) are allowed")
        })
    }
}

impl FileMode {
    fn checked(v: u32) -> Option<Self> {
        (v <= 0o777).then_some(Self(v))
    }
}

impl Serialize for FileMode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{:04o}", self.0))
    }
}

impl<'de> Deserialize<'de> for FileMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match NumOrStr::deserialize(d)? {
            NumOrStr::Int(n) => u32::try_from(n)
                .ok()
                .and_then(Self::checked)
                .ok_or_else(|| {
                    D::Error::custom(
                        "an integer mode is the numeric value (420 = 0644) and must be at most 511 (0777); \
                         write octal as a string such as \"0644\"",
                    )
                }),
            NumOrStr::Float(_) => Err(D::Error::custom("a mode must be a whole number")),
            NumOrStr::Str(s) => s.parse().map_err(D::Error::custom),
        }
    }
}

impl JsonSchema for FileMode {
    fn schema_name() -> Cow<'static, str> {
        "FileMode".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "octal string such as \"0644\", or the integer value (≤ 511)",
            "oneOf": [
                {"type": "integer", "minimum": 0, "maximum": 511},
                {"type": "string", "pattern": "^(0o)?[0-7]{1,4}$"}
            ]
        })
    }
}

/// Schema stand-in for [`HumanDuration`] (which lives in `duration.rs` without a schema).
struct DurationSchema;

impl JsonSchema for DurationSchema {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "seconds, or a string such as \"500ms\", \"30s\", \"5m\", \"1h30m\"",
            "oneOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": "^([0-9.]+(ns|us|µs|ms|s|m|h|d))+$|^[0-9.]+$"}
            ]
        })
    }
}

fn argv_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "exec form (array of strings) or shell form (a string run by /bin/sh -c)",
        "oneOf": [
            {"type": "array", "items": {"type": "string"}},
            {"type": "string"}
        ]
    })
}

fn de_argv<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Argv {
        Exec(Vec<String>),
        Shell(String),
    }
    match Option::<Argv>::deserialize(d).map_err(|_| {
        D::Error::custom("must be an array of strings (exec form) or a string (shell form)")
    })? {
        None => Ok(None),
        Some(Argv::Exec(v)) => Ok(Some(v)),
        Some(Argv::Shell(s)) => Ok(Some(vec!["/bin/sh".into(), "-c".into(), s])),
    }
}

/// One mount. `source` absent: an anonymous volume; absolute: a host bind (policy);
/// otherwise a named volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

/// What a [`VolumeSpec`] mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeKind {
    Anonymous,
    Named,
    Bind,
}

impl VolumeSpec {
    pub fn kind(&self) -> VolumeKind {
        match &self.source {
            None => VolumeKind::Anonymous,
            Some(s) if s.starts_with('/') => VolumeKind::Bind,
            Some(_) => VolumeKind::Named,
        }
    }
}

impl FromStr for VolumeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let mode = |m: &str| match m {
            "ro" => Ok(true),
            "rw" => Ok(false),
            _ => Err(format!("unknown mount mode {m:?} (use ro or rw)")),
        };
        let (source, target, read_only) = match parts.as_slice() {
            [t] => (None, *t, false),
            [a, b] if b.starts_with('/') => (Some(*a), *b, false),
            [t, m] => (None, *t, mode(m)?),
            [a, b, m] => (Some(*a), *b, mode(m)?),
            _ => return Err("expected \"source:target[:ro]\"".into()),
        };
        Ok(Self {
            source: source.map(str::to_string),
            target: target.to_string(),
            read_only,
        })
    }
}

impl<'de> Deserialize<'de> for VolumeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            #[serde(default)]
            source: Option<String>,
            target: String,
            #[serde(default)]
            read_only: bool,
        }
        match StrOr::<Long>::deserialize(d)? {
            StrOr::Str(s) => s.parse().map_err(D::Error::custom),
            StrOr::Obj(l) => Ok(Self {
                source: l.source,
                target: l.target,
                read_only: l.read_only,
            }),
        }
    }
}

/// A string short form, or the long object form (whose own errors, such as unknown fields,
/// are reported as they are rather than as "matched no variant").
enum StrOr<T> {
    Str(String),
    Obj(T),
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for StrOr<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => Ok(Self::Str(s)),
            serde_json::Value::Number(n) => Ok(Self::Str(n.to_string())),
            v @ (serde_json::Value::Object(_) | serde_json::Value::Array(_)) => {
                serde_json::from_value(v)
                    .map(Self::Obj)
                    .map_err(D::Error::custom)
            }
            _ => Err(D::Error::custom("must be a string, an array or an object")),
        }
    }
}

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    /// Absent: the daemon picks a free host port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

impl FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (rest, protocol) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Protocol::Tcp),
            Some((r, "udp")) => (r, Protocol::Udp),
            Some((r, "sctp")) => (r, Protocol::Sctp),
            Some(_) => return Err("unknown protocol (use tcp, udp or sctp)".into()),
            None => (s, Protocol::Tcp),
        };
        let port = |p: &str| {
            p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                format!(
                    "port {:?} must be 1 to 65535",
                    p.chars().take(16).collect::<String>()
                )
            })
        };
        // An IPv6 host address contains colons: split the two ports off the right.
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [c] => (None, None, port(c)?),
            [c, h] => (None, Some(port(h)?), port(c)?),
            [c, h, ip] => {
                let ip = ip.trim_start_matches('[').trim_end_matches(']');
                let host_port = if h.is_empty() { None } else { Some(port(h)?) };
                (Some(ip.to_string()), host_port, port(c)?)
            }
            _ => return Err("expected \"[ip:][host_port:]container_port[/proto]\"".into()),
        };
        Ok(Self {
            container_port,
            protocol,
            host_port,
            host_ip,
        })
    }
}

impl<'de> Deserialize<'de> for PortSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            container_port: u16,
            #[serde(default)]
            protocol: Protocol,
            #[serde(default)]
            host_port: Option<u16>,
            #[serde(default)]
            host_ip: Option<String>,
        }
        match StrOr::<Long>::deserialize(d)? {
            StrOr::Str(s) => s.parse().map_err(D::Error::custom),
            StrOr::Obj(l) => Ok(Self {
                container_port: l.container_port,
                protocol: l.protocol,
                host_port: l.host_port,
                host_ip: l.host_ip,
            }),
        }
    }
}

/// A host device passed into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceSpec {
    pub host_path: String,
    /// Defaults to `host_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_path: Option<String>,
    /// Subset of `rwm` (default `rwm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permissions: Option<String>,
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let (host, ctr, perms) = match parts.as_slice() {
            [h] => (*h, None, None),
            [h, c] if c.starts_with('/') => (*h, Some(*c), None),
            [h, p] => (*h, None, Some(*p)),
            [h, c, p] => (*h, Some(*c), Some(*p)),
            _ => return Err("expected \"/dev/host[:/dev/container][:rwm]\"".into()),
        };
        Ok(Self {
            host_path: host.into(),
            container_path: ctr.map(str::to_string),
            permissions: perms.map(str::to_string),
        })
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            host_path: String,
            #[serde(default)]
            container_path: Option<String>,
            #[serde(default)]
            permissions: Option<String>,
        }
        match StrOr::<Long>::deserialize(d)? {
            StrOr::Str(s) => s.parse().map_err(D::Error::custom),
            StrOr::Obj(l) => Ok(Self {
                host_path: l.host_path,
                container_path: l.container_path,
                permissions: l.permissions,
            }),
        }
    }
}

/// A resource limit (`nofile`, `core`, ...). `nproc` is per host user: use `pids_limit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

const ULIMIT_NAMES: &[&str] = &[
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// Log driver for the daemon's own copy of the output (ours comes through attach).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    #[serde(rename = "type")]
    pub driver: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
}

/// Allowed log drivers: only local ones, so output cannot be shipped elsewhere by the daemon.
pub const LOG_DRIVERS: &[&str] = &["json-file", "local", "none"];

/// A health check, as in a Dockerfile's `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Healthcheck {
    /// `["CMD", "arg", ...]`, `["CMD-SHELL", "cmd"]`, `["NONE"]`; a string is CMD-SHELL.
    #[serde(deserialize_with = "de_health_test")]
    #[schemars(schema_with = "argv_schema")]
    pub test: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<DurationSchema>")]
    pub interval: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<DurationSchema>")]
    pub timeout: Option<HumanDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<DurationSchema>")]
    pub start_period: Option<HumanDuration>,
}

fn de_health_test<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match StrOr::<Vec<String>>::deserialize(d) {
        Ok(StrOr::Str(s)) => Ok(vec!["CMD-SHELL".into(), s]),
        Ok(StrOr::Obj(v)) => Ok(v),
        Err(_) => Err(D::Error::custom("must be a string or an array of strings")),
    }
}

/// Docker restart policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicyName {
    #[default]
    No,
    Always,
    UnlessStopped,
    OnFailure,
}

/// A restart policy: `"no"`, `"on-failure"` or `{name, maximum_retry_count}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestartPolicy {
    pub name: RestartPolicyName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maximum_retry_count: Option<i64>,
}

impl<'de> Deserialize<'de> for RestartPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Long {
            name: RestartPolicyName,
            #[serde(default)]
            maximum_retry_count: Option<i64>,
        }
        match StrOr::<Long>::deserialize(d)? {
            StrOr::Str(s) => {
                let name = serde_json::from_value(serde_json::Value::String(s)).map_err(|_| {
                    D::Error::custom("use no, always, unless-stopped or on-failure")
                })?;
                Ok(Self {
                    name,
                    maximum_retry_count: None,
                })
            }
            StrOr::Obj(l) => Ok(Self {
                name: l.name,
                maximum_retry_count: l.maximum_retry_count,
            }),
        }
    }
}

/// A device-driver request (GPUs): `{"driver": "nvidia", "count": -1, "capabilities": [["gpu"]]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// `-1` means all devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
}

/// Where an input file's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputSource {
    /// UTF-8 text given inline.
    Content(String),
    /// Bytes given inline as base64 (decoded when the parameters are parsed).
    Base64(Vec<u8>),
    /// A tar stored by an earlier activity's `outputs`, unpacked at `path`.
    Artifact(Uuid),
}

/// A file (or, for artifacts, a directory tree) placed in the container before start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: String,
    pub source: InputSource,
    pub mode: Option<FileMode>,
    /// Artifacts only: the one entry of the artifact to place (an absolute path as the
    /// producing run saw it, `/out/app`, a file or a directory subtree). It lands at
    /// `path` + `/` + its last segment (`/in/app`), like `docker cp S:/out/app /in/`;
    /// an entry missing from the artifact fails the run (`InputPathNotFound`).
    pub select: Option<String>,
}

impl InputFile {
    /// The inline bytes (content or decoded base64); `None` for artifacts.
    pub fn inline_bytes(&self) -> Option<&[u8]> {
        match &self.source {
            InputSource::Content(s) => Some(s.as_bytes()),
            InputSource::Base64(b) => Some(b),
            InputSource::Artifact(_) => None,
        }
    }
}

/// The wire form of [`InputFile`]: exactly one of `content`, `base64`, `artifact`.
#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "InputFile")]
struct RawInput {
    /// Absolute container path.
    path: String,
    /// UTF-8 text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    /// Bytes, base64 (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    base64: Option<String>,
    /// Id of an artifact produced by an earlier activity's `outputs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    artifact: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<FileMode>,
    /// With `artifact`: place only this entry of it (absolute path as the producing run
    /// saw it, e.g. `/out/app`) at `path`/`app`, like `docker cp`. Without it the whole
    /// artifact is unpacked under `path` (`/in/out/app`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    select: Option<String>,
}

impl Serialize for InputFile {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut raw = RawInput {
            path: self.path.clone(),
            content: None,
            base64: None,
            artifact: None,
            mode: self.mode,
            select: self.select.clone(),
        };
        match &self.source {
            InputSource::Content(c) => raw.content = Some(c.clone()),
            InputSource::Base64(b) => {
                raw.base64 = Some(base64::engine::general_purpose::STANDARD.encode(b))
            }
            InputSource::Artifact(id) => raw.artifact = Some(*id),
        }
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for InputFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawInput::deserialize(d)?;
        let source = match (raw.content, raw.base64, raw.artifact) {
            (Some(c), None, None) => InputSource::Content(c),
            (None, Some(b), None) => InputSource::Base64(
                base64::engine::general_purpose::STANDARD
                    .decode(b.trim())
                    .map_err(|e| D::Error::custom(format!("`base64` is not valid base64: {e}")))?,
            ),
            (None, None, Some(a)) => InputSource::Artifact(a),
            _ => {
                return Err(D::Error::custom(
                    "give exactly one of `content`, `base64` or `artifact`",
                ))
            }
        };
        if raw.select.is_some() && !matches!(source, InputSource::Artifact(_)) {
            return Err(D::Error::custom("`select` is only valid with `artifact`"));
        }
        Ok(Self {
            path: raw.path,
            source,
            mode: raw.mode,
            select: raw.select,
        })
    }
}

impl JsonSchema for InputFile {
    fn schema_name() -> Cow<'static, str> {
        RawInput::schema_name()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        RawInput::json_schema(g)
    }
}

/// A secret delivered as a file (never through the environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    /// The secret's name in the secrets store.
    pub name: String,
    /// Absolute container path; default `/run/secrets/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Default `0400`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<FileMode>,
}

impl SecretFile {
    pub fn target(&self) -> String {
        self.path
            .clone()
            .unwrap_or_else(|| format!("/run/secrets/{}", self.name))
    }
}

/// How the container ended (or that it was left running, for detached runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// The process exited on its own (any exit code).
    Exited,
    /// Stopped by us at `timeout`.
    TimedOut,
    /// Stopped by us because the activity or run was cancelled.
    Cancelled,
    /// Detached: started and left running.
    Running,
}

/// The outputs of a run, stored as one tar that later activities take as an input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ArtifactRef {
    pub id: Uuid,
    pub size_bytes: u64,
    /// Hex SHA-256 of the stored tar.
    pub sha256: String,
    /// The declared output paths that were found.
    pub paths: Vec<String>,
}

/// The result of `tools.docker.run`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DockerRunResult {
    pub container_id: String,
    pub short_id: String,
    pub status: RunStatus,
    /// `None` for detached runs.
    pub exit_code: Option<i64>,
    /// Head and tail of stdout (capped by the worker's config), with a marker where cut.
    pub stdout: String,
    pub stderr: String,
    pub logs_truncated: bool,
    pub duration_ms: u64,
    /// The normalised image reference that ran.
    pub image: String,
    pub oom_killed: bool,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<ArtifactRef>,
}

/// The JSON Schema of [`DockerRunParams`], generated from the types.
pub fn params_json_schema() -> serde_json::Value {
    schemars::schema_for!(DockerRunParams).to_value()
}

/// The stable code for a validation error from this module: `invalid_image_reference`
/// for the image, `invalid_params` for everything else.
pub fn error_code(e: &FieldError) -> &'static str {
    if e.field == "image" && e.reason.starts_with(INVALID_IMAGE_REFERENCE) {
        INVALID_IMAGE_REFERENCE
    } else {
        INVALID_PARAMS
    }
}

impl DockerRunParams {
    /// A run of `image` with every default.
    pub fn new(image: impl Into<String>) -> Self {
        Self {
            image: image.into(),
            command: None,
            entrypoint: None,
            environment: BTreeMap::new(),
            volumes: Vec::new(),
            ports: Vec::new(),
            network: None,
            network_mode: None,
            pid_mode: None,
            ipc_mode: None,
            uts_mode: None,
            userns_mode: None,
            cpu_limit: None,
            memory_limit: None,
            user: None,
            working_dir: None,
            labels: BTreeMap::new(),
            auto_remove: true,
            detach: false,
            detach_ttl: DEFAULT_DETACH_TTL,
            timeout: DEFAULT_TIMEOUT,
            pull_policy: PullPolicy::IfNotPresent,
            privileged: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            devices: Vec::new(),
            shm_size: None,
            tmpfs: BTreeMap::new(),
            read_only: false,
            hostname: None,
            dns: Vec::new(),
            extra_hosts: Vec::new(),
            init: true,
            oom_kill_disable: false,
            pids_limit: None,
            ulimits: Vec::new(),
            log_config: None,
            healthcheck: None,
            restart_policy: None,
            device_requests: Vec::new(),
            security_opt: Vec::new(),
            stop_grace: DEFAULT_STOP_GRACE,
            inputs: Vec::new(),
            outputs: Vec::new(),
            secrets: Vec::new(),
            retention: None,
        }
    }

    /// Parses stored or submitted params, naming the failing field by its path
    /// (`inputs[0].mode`, or the unknown field), then validates them.
    pub fn from_json(v: &serde_json::Value) -> Result<Self, FieldError> {
        let params: Self = serde_path_to_error::deserialize(v).map_err(|e| {
            crate::field::deserialize_error(&e.path().to_string(), e.into_inner().to_string())
        })?;
        params.validate()?;
        Ok(params)
    }

    /// The parsed, normalised image reference.
    pub fn image_ref(&self) -> Result<ImageRef, ImageRefError> {
        ImageRef::parse(&self.image)
    }

    /// The names of every secret referenced (environment and files), deduplicated.
    pub fn secret_names(&self) -> BTreeSet<&str> {
        let env = self.environment.values().filter_map(|v| match v {
            EnvValue::Secret(n) => Some(n.as_str()),
            EnvValue::Plain(_) => None,
        });
        env.chain(self.secrets.iter().map(|s| s.name.as_str()))
            .collect()
    }

    /// Everything that can be judged without the operator's policy. The first problem
    /// found is returned, naming the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.image_ref()
            .map_err(|e| FieldError::new("image", format!("{INVALID_IMAGE_REFERENCE}: {e}")))?;
        self.validate_argv()?;
        self.validate_env()?;
        self.validate_labels()?;
        self.validate_mounts()?;
        self.validate_network()?;
        self.validate_limits()?;
        self.validate_process()?;
        self.validate_lifecycle()?;
        self.validate_files()?;
        Ok(())
    }

    fn validate_argv(&self) -> Result<(), FieldError> {
        let mut count = 0;
        let mut bytes = 0;
        for (field, argv) in [("command", &self.command), ("entrypoint", &self.entrypoint)] {
            let Some(argv) = argv else { continue };
            for (i, a) in argv.iter().enumerate() {
                if a.contains('\0') {
                    return Err(FieldError::new(
                        format!("{field}[{i}]"),
                        "contains a NUL byte",
                    ));
                }
                bytes += a.len() + 1;
            }
            count += argv.len();
            if count > MAX_ARGS {
                return Err(FieldError::new(
                    field,
                    format!("has more than {MAX_ARGS} arguments (command and entrypoint together)"),
                ));
            }
            if bytes > MAX_ARGS_BYTES {
                return Err(FieldError::new(
                    field,
                    format!(
                        "arguments total more than {MAX_ARGS_BYTES} bytes (command and entrypoint together)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_env(&self) -> Result<(), FieldError> {
        if self.environment.len() > MAX_ENV_VARS {
            return Err(FieldError::new(
                "environment",
                format!(
                    "has {} variables; the limit is {MAX_ENV_VARS}",
                    self.environment.len()
                ),
            ));
        }
        let mut total = 0;
        for (name, value) in &self.environment {
            let field = format!("environment.{}", printable(name));
            if !is_env_name(name) {
                return Err(FieldError::new(
                    field,
                    "variable names must match [A-Za-z_][A-Za-z0-9_]* (no `=`, not empty)",
                ));
            }
            match value {
                // The value itself never goes into an error: it may be sensitive.
                EnvValue::Plain(v) => {
                    if v.contains('\0') {
                        return Err(FieldError::new(field, "value contains a NUL byte"));
                    }
                    total += name.len() + 1 + v.len();
                }
                EnvValue::Secret(s) => {
                    check_secret_name(&field, s)?;
                    total += name.len() + 1;
                }
            }
            if total > MAX_ENV_BYTES {
                return Err(FieldError::new(
                    field,
                    format!("the environment totals more than {MAX_ENV_BYTES} bytes"),
                ));
            }
        }
        Ok(())
    }

    fn validate_labels(&self) -> Result<(), FieldError> {
        if self.labels.len() > MAX_LABELS {
            return Err(FieldError::new(
                "labels",
                format!(
                    "has {} labels; the limit is {MAX_LABELS}",
                    self.labels.len()
                ),
            ));
        }
        let mut total = 0;
        for (k, v) in &self.labels {
            let field = format!("labels.{}", printable(k));
            if k.is_empty() || k.len() > 255 || k.chars().any(|c| c.is_control() || c == '=') {
                return Err(FieldError::new(
                    field,
                    "label keys must be 1 to 255 printable characters without `=`",
                ));
            }
            if k.to_ascii_lowercase().starts_with(RESERVED_LABEL_PREFIX) {
                return Err(FieldError::new(
                    field,
                    format!("the `{RESERVED_LABEL_PREFIX}` prefix is reserved for Highway"),
                ));
            }
            if v.contains('\0') {
                return Err(FieldError::new(field, "value contains a NUL byte"));
            }
            total += k.len() + v.len();
        }
        if total > MAX_LABELS_BYTES {
            return Err(FieldError::new(
                "labels",
                format!("labels total more than {MAX_LABELS_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    fn validate_mounts(&self) -> Result<(), FieldError> {
        let mut targets = BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let field = format!("volumes[{i}]");
            check_container_path(&format!("{field}.target"), &v.target)?;
            if !targets.insert(normal_path(&v.target)) {
                return Err(FieldError::new(
                    format!("{field}.target"),
                    "is mounted twice",
                ));
            }
            match v.kind() {
                VolumeKind::Anonymous => {}
                VolumeKind::Bind => {
                    let src = v.source.as_deref().unwrap_or_default();
                    check_abs_path(&format!("{field}.source"), src, true)?;
                }
                VolumeKind::Named => {
                    let src = v.source.as_deref().unwrap_or_default();
                    if !is_object_name(src) {
                        return Err(FieldError::new(
                            format!("{field}.source"),
                            "a volume name must match [a-zA-Z0-9][a-zA-Z0-9_.-]* (or give an absolute host path)",
                        ));
                    }
                }
            }
        }
        for (p, opts) in &self.tmpfs {
            let field = format!("tmpfs.{}", printable(p));
            check_container_path(&field, p)?;
            if !targets.insert(normal_path(p)) {
                return Err(FieldError::new(field, "is mounted twice"));
            }
            if opts.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(FieldError::new(
                    field,
                    "options must be comma-separated without spaces (\"size=64m,mode=1777\")",
                ));
            }
        }
        for (i, d) in self.devices.iter().enumerate() {
            let field = format!("devices[{i}]");
            check_abs_path(&format!("{field}.host_path"), &d.host_path, false)?;
            if let Some(c) = &d.container_path {
                check_container_path(&format!("{field}.container_path"), c)?;
            }
            if let Some(p) = &d.permissions {
                let ok = !p.is_empty()
                    && p.len() <= 3
                    && p.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
                    && p.chars().collect::<BTreeSet<_>>().len() == p.len();
                if !ok {
                    return Err(FieldError::new(
                        format!("{field}.permissions"),
                        "must be a combination of r, w and m",
                    ));
                }
            }
        }
        for (i, r) in self.device_requests.iter().enumerate() {
            let field = format!("device_requests[{i}]");
            if r.count.is_some_and(|c| c < -1) {
                return Err(FieldError::new(
                    format!("{field}.count"),
                    "must be -1 (all) or a positive count",
                ));
            }
            if let Some(d) = &r.driver {
                if !is_object_name(d) {
                    return Err(FieldError::new(
                        format!("{field}.driver"),
                        "is not a valid driver name",
                    ));
                }
            }
        }
        if let Some(s) = self.shm_size {
            if s.0 == 0 {
                return Err(FieldError::new("shm_size", "must be greater than 0"));
            }
        }
        Ok(())
    }

    fn validate_network(&self) -> Result<(), FieldError> {
        if let Some(n) = &self.network {
            if !is_object_name(n) {
                return Err(FieldError::new(
                    "network",
                    "a network name must match [a-zA-Z0-9][a-zA-Z0-9_.-]*",
                ));
            }
            if matches!(n.as_str(), "host" | "none") {
                return Err(FieldError::new(
                    "network",
                    "use network_mode for `host` or `none`",
                ));
            }
            if self.network_mode.as_ref().is_some_and(|m| m != n) {
                return Err(FieldError::new(
                    "network",
                    "give network or network_mode, not both",
                ));
            }
        }
        if let Some(m) = &self.network_mode {
            if m.starts_with("container:") {
                return Err(FieldError::new(
                    "network_mode",
                    "sharing another container's network namespace is not supported",
                ));
            }
            if !is_object_name(m) {
                return Err(FieldError::new(
                    "network_mode",
                    "must be bridge, none, host or a network name",
                ));
            }
            if m == "none" && !self.ports.is_empty() {
                return Err(FieldError::new(
                    "ports",
                    "cannot publish ports with network_mode none",
                ));
            }
        }
        for (field, value, allowed) in [
            ("pid_mode", &self.pid_mode, &["host"][..]),
            (
                "ipc_mode",
                &self.ipc_mode,
                &["private", "shareable", "none", "host"][..],
            ),
            ("uts_mode", &self.uts_mode, &["host"][..]),
            ("userns_mode", &self.userns_mode, &["host"][..]),
        ] {
            if let Some(v) = value {
                if !allowed.contains(&v.as_str()) {
                    return Err(FieldError::new(
                        field,
                        format!("must be one of: {}", allowed.join(", ")),
                    ));
                }
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            if let Some(ip) = &p.host_ip {
                if ip.parse::<IpAddr>().is_err() {
                    return Err(FieldError::new(
                        format!("ports[{i}].host_ip"),
                        "must be an IP address",
                    ));
                }
            }
            if p.container_port == 0 || p.host_port == Some(0) {
                return Err(FieldError::new(
                    format!("ports[{i}]"),
                    "ports must be 1 to 65535",
                ));
            }
        }
        if let Some(h) = &self.hostname {
            if !is_hostname(h) {
                return Err(FieldError::new(
                    "hostname",
                    "must be a valid RFC 1123 host name (letters, digits, `-`, `.`; at most 253 characters)",
                ));
            }
        }
        for (i, d) in self.dns.iter().enumerate() {
            if d.parse::<IpAddr>().is_err() {
                return Err(FieldError::new(
                    format!("dns[{i}]"),
                    "must be an IP address",
                ));
            }
        }
        for (i, e) in self.extra_hosts.iter().enumerate() {
            let ok = e.split_once(':').is_some_and(|(h, ip)| {
                is_hostname(h) && (ip == "host-gateway" || ip.parse::<IpAddr>().is_ok())
            });
            if !ok {
                return Err(FieldError::new(
                    format!("extra_hosts[{i}]"),
                    "must be \"name:ip\" (ip may be host-gateway)",
                ));
            }
        }
        Ok(())
    }

    fn validate_limits(&self) -> Result<(), FieldError> {
        if let Some(m) = self.memory_limit {
            if m.0 < MIN_MEMORY_BYTES {
                return Err(FieldError::new(
                    "memory_limit",
                    "must be at least 6m (the daemon's minimum)",
                ));
            }
        }
        if let Some(c) = self.cpu_limit {
            if c.0 <= 0 {
                return Err(FieldError::new("cpu_limit", "must be greater than 0"));
            }
        }
        if let Some(p) = self.pids_limit {
            if p <= 0 {
                return Err(FieldError::new(
                    "pids_limit",
                    "must be greater than 0 (unlimited is not allowed)",
                ));
            }
        }
        let mut names = BTreeSet::new();
        for (i, u) in self.ulimits.iter().enumerate() {
            let field = format!("ulimits[{i}]");
            if !ULIMIT_NAMES.contains(&u.name.as_str()) {
                return Err(FieldError::new(
                    format!("{field}.name"),
                    format!("unknown ulimit; use one of {}", ULIMIT_NAMES.join(", ")),
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(FieldError::new(format!("{field}.name"), "is given twice"));
            }
            if u.soft < -1 || u.hard < -1 || (u.hard != -1 && (u.soft == -1 || u.soft > u.hard)) {
                return Err(FieldError::new(
                    field,
                    "soft must not exceed hard (-1 means unlimited)",
                ));
            }
        }
        Ok(())
    }

    fn validate_process(&self) -> Result<(), FieldError> {
        if let Some(u) = &self.user {
            let ok = !u.is_empty()
                && u.len() <= 256
                && u.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | ':'))
                && u.matches(':').count() <= 1;
            if !ok {
                return Err(FieldError::new(
                    "user",
                    "must be `user`, `uid`, `user:group` or `uid:gid`",
                ));
            }
        }
        if let Some(w) = &self.working_dir {
            check_abs_path("working_dir", w, true)?;
        }
        for (i, c) in self.cap_add.iter().enumerate() {
            if normalize_capability(c).is_none() && !c.eq_ignore_ascii_case("ALL") {
                return Err(FieldError::new(
                    format!("cap_add[{i}]"),
                    "unknown capability",
                ));
            }
        }
        for (i, c) in self.cap_drop.iter().enumerate() {
            if normalize_capability(c).is_none() && !c.eq_ignore_ascii_case("ALL") {
                return Err(FieldError::new(
                    format!("cap_drop[{i}]"),
                    "unknown capability",
                ));
            }
        }
        for (i, s) in self.security_opt.iter().enumerate() {
            if s.is_empty() || s.len() > 4096 || s.contains('\0') {
                return Err(FieldError::new(
                    format!("security_opt[{i}]"),
                    "must be 1 to 4096 characters without NUL",
                ));
            }
        }
        if let Some(l) = &self.log_config {
            if !LOG_DRIVERS.contains(&l.driver.as_str()) {
                return Err(FieldError::new(
                    "log_config.type",
                    format!("use one of {}", LOG_DRIVERS.join(", ")),
                ));
            }
            for (k, v) in &l.config {
                if k.is_empty() || k.contains('\0') || v.contains('\0') {
                    return Err(FieldError::new(
                        format!("log_config.config.{}", printable(k)),
                        "keys must be non-empty and nothing may contain NUL",
                    ));
                }
            }
        }
        if let Some(h) = &self.healthcheck {
            let ok = match h.test.first().map(String::as_str) {
                Some("NONE") => h.test.len() == 1,
                Some("CMD") | Some("CMD-SHELL") => h.test.len() >= 2,
                _ => false,
            };
            if !ok {
                return Err(FieldError::new(
                    "healthcheck.test",
                    "must be [\"NONE\"], [\"CMD\", args...] or [\"CMD-SHELL\", command]",
                ));
            }
            if h.test.iter().any(|a| a.contains('\0')) {
                return Err(FieldError::new("healthcheck.test", "contains a NUL byte"));
            }
            for (f, d) in [
                ("healthcheck.interval", h.interval),
                ("healthcheck.timeout", h.timeout),
                ("healthcheck.start_period", h.start_period),
            ] {
                if d.is_some_and(|d| d.0 < Duration::from_millis(1)) {
                    return Err(FieldError::new(f, "must be at least 1ms"));
                }
            }
            if h.retries.is_some_and(|r| r < 0) {
                return Err(FieldError::new(
                    "healthcheck.retries",
                    "must not be negative",
                ));
            }
        }
        Ok(())
    }

    fn validate_lifecycle(&self) -> Result<(), FieldError> {
        let between = |field: &str, d: HumanDuration, min: Duration, max: Duration| {
            if d.0 < min || d.0 > max {
                Err(FieldError::new(
                    field,
                    format!(
                        "must be between {} and {}",
                        HumanDuration(min),
                        HumanDuration(max)
                    ),
                ))
            } else {
                Ok(())
            }
        };
        between("timeout", self.timeout, Duration::from_secs(1), MAX_TIMEOUT)?;
        between(
            "stop_grace",
            self.stop_grace,
            Duration::ZERO,
            MAX_STOP_GRACE,
        )?;
        between(
            "detach_ttl",
            self.detach_ttl,
            Duration::from_secs(1),
            MAX_TTL,
        )?;
        if let Some(r) = self.retention {
            if self.auto_remove {
                return Err(FieldError::new(
                    "retention",
                    "applies only with auto_remove: false",
                ));
            }
            between("retention", r, Duration::ZERO, MAX_TTL)?;
        }
        if let Some(rp) = &self.restart_policy {
            if rp.name != RestartPolicyName::No && !self.detach {
                return Err(FieldError::new(
                    "restart_policy",
                    "only `no` is allowed unless detach is true: a restarted managed container would lose its result",
                ));
            }
            match rp.maximum_retry_count {
                Some(n) if rp.name != RestartPolicyName::OnFailure || n < 0 => {
                    return Err(FieldError::new(
                        "restart_policy.maximum_retry_count",
                        "is only valid, as a count ≥ 0, with on-failure",
                    ))
                }
                _ => {}
            }
        }
        if self.detach && !self.outputs.is_empty() {
            return Err(FieldError::new(
                "outputs",
                "cannot be collected from a detached run (it returns right after start)",
            ));
        }
        Ok(())
    }

    fn validate_files(&self) -> Result<(), FieldError> {
        if self.inputs.len() > MAX_INPUTS {
            return Err(FieldError::new(
                "inputs",
                format!("the limit is {MAX_INPUTS} entries"),
            ));
        }
        if self.outputs.len() > MAX_OUTPUTS {
            return Err(FieldError::new(
                "outputs",
                format!("the limit is {MAX_OUTPUTS} entries"),
            ));
        }
        if self.secrets.len() > MAX_SECRETS {
            return Err(FieldError::new(
                "secrets",
                format!("the limit is {MAX_SECRETS} entries"),
            ));
        }
        let tmpfs: Vec<String> = self.tmpfs.keys().map(|p| normal_path(p)).collect();
        let volumes: Vec<String> = self
            .volumes
            .iter()
            .map(|v| normal_path(&v.target))
            .collect();
        let under = |p: &str, roots: &[String]| roots.iter().any(|r| is_under(p, r));
        // Files are written through the archive API, which cannot see tmpfs mounts and
        // refuses a read-only rootfs outside volumes (DOCKER-NOTES F4).
        let placed = |field: String, p: &str| -> Result<(), FieldError> {
            check_container_path(&field, p)?;
            if under(p, &tmpfs) {
                return Err(FieldError::new(
                    field,
                    "is inside a tmpfs mount, which the archive API cannot reach",
                ));
            }
            if self.read_only && !under(p, &volumes) {
                return Err(FieldError::new(
                    field,
                    "with read_only, files can only be placed inside a declared volume",
                ));
            }
            Ok(())
        };
        let mut seen = BTreeSet::new();
        for (i, f) in self.inputs.iter().enumerate() {
            if let Some(sel) = &f.select {
                let clean = sel.strip_prefix('/').is_some_and(|rest| {
                    !rest.is_empty()
                        && !rest.contains('\0')
                        && rest
                            .split('/')
                            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
                });
                if !clean {
                    return Err(FieldError::new(
                        format!("inputs[{i}].select"),
                        "must be a normalised absolute path other than '/' (no '.', '..' or '//')",
                    ));
                }
            }
            let field = format!("inputs[{i}].path");
            placed(field.clone(), &f.path)?;
            if !seen.insert(normal_path(&f.path)) {
                return Err(FieldError::new(field, "is given twice"));
            }
        }
        for (i, s) in self.secrets.iter().enumerate() {
            check_secret_name(&format!("secrets[{i}].name"), &s.name)?;
            let field = format!("secrets[{i}].path");
            let target = s.target();
            placed(field.clone(), &target)?;
            if !seen.insert(normal_path(&target)) {
                return Err(FieldError::new(
                    field,
                    "collides with another input or secret",
                ));
            }
        }
        let mut outs = BTreeSet::new();
        for (i, p) in self.outputs.iter().enumerate() {
            let field = format!("outputs[{i}]");
            check_container_path(&field, p)?;
            if under(p, &tmpfs) {
                return Err(FieldError::new(
                    field,
                    "is inside a tmpfs mount, which the archive API cannot reach",
                ));
            }
            if !outs.insert(normal_path(p)) {
                return Err(FieldError::new(field, "is given twice"));
            }
        }
        Ok(())
    }
}

/// Names for errors: bounded and with control characters escaped, so a hostile key
/// cannot forge log lines.
fn printable(s: &str) -> String {
    let t: String = s.chars().take(64).collect();
    if t.chars().all(|c| !c.is_control()) && !t.is_empty() {
        t
    } else {
        format!("{t:?}")
    }
}

fn is_env_name(n: &str) -> bool {
    let mut b = n.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Names of secrets in the store: `[A-Za-z0-9_.-]{1,128}`, not starting with `.`.
pub fn is_secret_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_secret_name(field: &str, n: &str) -> Result<(), FieldError> {
    if is_secret_name(n) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "secret names must be 1 to 128 characters of [A-Za-z0-9_.-], not starting with `.`",
        ))
    }
}

/// Docker object names (volumes, networks, drivers): `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
fn is_object_name(n: &str) -> bool {
    let mut b = n.bytes();
    n.len() <= 255
        && b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn is_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
        })
}

/// Absolute, no NUL, no `..`; `/` itself only when `root_ok`.
fn check_abs_path(field: &str, p: &str, root_ok: bool) -> Result<(), FieldError> {
    if !p.starts_with('/') {
        return Err(FieldError::new(field, "must be an absolute path"));
    }
    if p.len() > 4096 || p.contains('\0') || p.contains(':') && field.ends_with("source") {
        return Err(FieldError::new(
            field,
            "must be at most 4096 bytes without NUL (or `:` in a mount source)",
        ));
    }
    if p.split('/').any(|c| c == "..") {
        return Err(FieldError::new(field, "must not contain `..`"));
    }
    if !root_ok && normal_path(p) == "/" {
        return Err(FieldError::new(field, "must not be `/`"));
    }
    Ok(())
}

/// A path inside the container that we mount onto or copy to/from: never `/`.
fn check_container_path(field: &str, p: &str) -> Result<(), FieldError> {
    check_abs_path(field, p, false)?;
    if p.contains(':') {
        return Err(FieldError::new(field, "must not contain `:`"));
    }
    Ok(())
}

/// `/a//b/./c/` → `/a/b/c` (lexically; `..` is refused before this is used).
pub fn normal_path(p: &str) -> String {
    let parts: Vec<&str> = p
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// `p` equals `root` or lies below it (both lexically normalised first).
pub fn is_under(p: &str, root: &str) -> bool {
    let (p, root) = (normal_path(p), normal_path(root));
    root == "/" || p == root || p.starts_with(&format!("{root}/"))
}

/// Linux capabilities Docker knows, without the `CAP_` prefix.
pub const CAPABILITIES: &[&str] = &[
    "AUDIT_CONTROL",
    "AUDIT_READ",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "BPF",
    "CHECKPOINT_RESTORE",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "PERFMON",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYSLOG",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "WAKE_ALARM",
];

/// `"cap_net_admin"`, `"NET_ADMIN"` → `Some("NET_ADMIN")`; unknown → `None`.
pub fn normalize_capability(c: &str) -> Option<&'static str> {
    let up = c.to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    CAPABILITIES.iter().copied().find(|k| *k == bare)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<DockerRunParams, FieldError> {
        DockerRunParams::from_json(&v)
    }

    fn base() -> serde_json::Value {
        json!({"image": "busybox"})
    }

    fn with(extra: serde_json::Value) -> serde_json::Value {
        let mut v = base();
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    /// Asserts a refusal naming `field` (exactly) and whose reason contains `needle`.
    fn refused(v: serde_json::Value, field: &str, needle: &str) {
        let e = parse(v.clone()).expect_err(&v.to_string());
        assert_eq!(e.field, field, "{e} for {v}");
        assert!(e.reason.contains(needle), "{e:?} lacks {needle:?}");
    }

    #[test]
    fn defaults() {
        let p = parse(base()).unwrap();
        assert_eq!(p, DockerRunParams::new("busybox"));
        assert!(p.auto_remove && p.init && !p.detach && !p.privileged && !p.read_only);
        assert_eq!(p.timeout.0, Duration::from_secs(3600));
        assert_eq!(p.stop_grace.0, Duration::from_secs(10));
        assert_eq!(p.detach_ttl.0, Duration::from_secs(3600));
        assert_eq!(p.pull_policy, PullPolicy::IfNotPresent);
        assert!(p.memory_limit.is_none() && p.cpu_limit.is_none() && p.pids_limit.is_none());
        assert_eq!(p.image_ref().unwrap().to_string(), "busybox:latest");
    }

    #[test]
    fn every_parameter_parses_and_round_trips() {
        let v = serde_json::from_str::<serde_json::Value>(
            r#"{
            "image": "localhost:5000/highway-test/busybox:1",
            "command": [
                "sh",
                "-c",
                "echo hi"
            ],
            "entrypoint": "exec env",
            "environment": {
                "A": "1",
                "B": {
                    "secret": "db_password"
                },
                "C": 3,
                "D": true
            },
            "volumes": [
                "/srv/data:/data:ro",
                "cache:/cache",
                "/scratch",
                {
                    "target": "/out"
                }
            ],
            "ports": [
                "8080:80",
                "127.0.0.1:9000:9000/udp",
                81,
                {
                    "container_port": 82
                }
            ],
            "network": "backend",
            "pid_mode": "host",
            "ipc_mode": "private",
            "uts_mode": "host",
            "userns_mode": "host",
            "cpu_limit": "1.5",
            "memory_limit": "512m",
            "user": "65534:65534",
            "working_dir": "/work",
            "labels": {
                "team": "data"
            },
            "auto_remove": false,
            "retention": "2h",
            "detach": false,
            "detach_ttl": 60,
            "timeout": "30s",
            "pull_policy": "never",
            "privileged": false,
            "cap_add": [
                "NET_BIND_SERVICE"
            ],
            "cap_drop": [
                "ALL"
            ],
            "devices": [
                "/dev/fuse",
                "/dev/a:/dev/b:rw"
            ],
            "shm_size": "64m",
            "tmpfs": {
                "/tmp": "size=64m"
            },
            "read_only": false,
            "hostname": "job-1",
            "dns": [
                "1.1.1.1"
            ],
            "extra_hosts": [
                "db:10.0.0.5",
                "h:host-gateway"
            ],
            "init": false,
            "oom_kill_disable": false,
            "pids_limit": 100,
            "ulimits": [
                {
                    "name": "nofile",
                    "soft": 1024,
                    "hard": 2048
                }
            ],
            "log_config": {
                "type": "json-file",
                "config": {
                    "max-size": "1m"
                }
            },
            "healthcheck": {
                "test": "true",
                "interval": "5s",
                "retries": 3
            },
            "restart_policy": "no",
            "device_requests": [
                {
                    "driver": "nvidia",
                    "count": -1,
                    "capabilities": [
                        [
                            "gpu"
                        ]
                    ]
                }
            ],
            "security_opt": [
                "apparmor=docker-default"
            ],
            "stop_grace": "5s",
            "inputs": [
                {
                    "path": "/in/a.txt",
                    "content": "hello",
                    "mode": "0644"
                },
                {
                    "path": "/in/b.bin",
                    "base64": "AAEC/w==",
                    "mode": 384
                },
                {
                    "path": "/in/dir",
                    "artifact": "7f1d0b4e-5a3c-4c1e-9f7a-2b8f7c3d9e10"
                }
            ],
            "outputs": [
                "/out"
            ],
            "secrets": [
                {
                    "name": "db_password",
                    "path": "/run/secrets/db"
                }
            ]
        }"#,
        )
        .unwrap();
        let p = parse(v).unwrap();
        assert_eq!(
            p.entrypoint.as_deref().unwrap(),
            ["/bin/sh", "-c", "exec env"]
        );
        assert_eq!(p.environment["B"], EnvValue::Secret("db_password".into()));
        assert_eq!(p.environment["C"], EnvValue::Plain("3".into()));
        assert_eq!(p.volumes[0].kind(), VolumeKind::Bind);
        assert!(p.volumes[0].read_only);
        assert_eq!(p.volumes[1].kind(), VolumeKind::Named);
        assert_eq!(p.volumes[2].kind(), VolumeKind::Anonymous);
        assert_eq!(p.ports[1].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(p.ports[1].protocol, Protocol::Udp);
        assert_eq!(p.ports[2].container_port, 81);
        assert_eq!(p.devices[1].container_path.as_deref(), Some("/dev/b"));
        assert_eq!(p.cpu_limit.unwrap().nano_cpus(), 1_500_000_000);
        assert_eq!(p.memory_limit.unwrap().0, 512 << 20);
        assert_eq!(p.healthcheck.as_ref().unwrap().test, ["CMD-SHELL", "true"]);
        assert_eq!(p.inputs[0].mode, Some(FileMode(0o644)));
        assert_eq!(p.inputs[1].mode, Some(FileMode(0o600)));
        assert_eq!(p.inputs[1].inline_bytes().unwrap(), [0, 1, 2, 255]);
        assert!(matches!(p.inputs[2].source, InputSource::Artifact(_)));
        assert_eq!(
            p.secret_names().into_iter().collect::<Vec<_>>(),
            ["db_password"]
        );
        // What we store is what we parse back: no information lost, no secret values.
        let stored = serde_json::to_value(&p).unwrap();
        assert_eq!(stored["environment"]["B"], json!({"secret": "db_password"}));
        assert_eq!(DockerRunParams::from_json(&stored).unwrap(), p);
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = parse(with(json!({"privilegd": true}))).unwrap_err();
        assert!(e.reason.contains("unknown field `privilegd`"), "{e}");
        let e = parse(with(
            json!({"inputs": [{"path": "/a", "content": "x", "owner": 1}]}),
        ))
        .unwrap_err();
        assert!(e.field.starts_with("inputs[0]"), "{e}");
        assert!(e.reason.contains("owner"), "{e}");
        let e = parse(with(json!({"volumes": [{"target": "/a", "bogus": 1}]}))).unwrap_err();
        assert!(
            e.field.starts_with("volumes[0]") && e.reason.contains("bogus"),
            "{e}"
        );
        let e = parse(with(json!({"healthcheck": {"test": "x", "every": 1}}))).unwrap_err();
        assert!(e.reason.contains("every"), "{e}");
        let e = parse(json!({})).unwrap_err();
        assert!(e.reason.contains("image"), "{e}");
    }

    #[test]
    fn bad_shapes_name_the_field() {
        refused(
            with(json!({"environment": {"A": {"secret": "x", "y": 1}}})),
            "environment.A",
            "secret",
        );
        refused(
            with(json!({"environment": {"A": [1]}})),
            "environment.A",
            "string",
        );
        refused(
            with(json!({"inputs": [{"path": "/a"}]})),
            "inputs[0]",
            "exactly one",
        );
        refused(
            with(json!({"inputs": [{"path": "/a", "content": "x", "base64": "eA=="}]})),
            "inputs[0]",
            "exactly one",
        );
        refused(
            with(json!({"inputs": [{"path": "/a", "base64": "!!"}]})),
            "inputs[0]",
            "base64",
        );
        refused(
            with(json!({"inputs": [{"path": "/a", "content": "", "mode": "4755"}]})),
            "inputs[0].mode",
            "permission bits",
        );
        refused(
            with(json!({"inputs": [{"path": "/a", "content": "", "mode": 644}]})),
            "inputs[0].mode",
            "0644",
        );
        refused(
            with(json!({"inputs": [{"path": "/a", "content": "x", "select": "/out"}]})),
            "inputs[0]",
            "only valid with `artifact`",
        );
        for bad in ["out/app", "/", "/out/../etc", "/out//app", "/out/./app"] {
            refused(
                with(json!({"inputs": [{"path": "/a", "artifact": Uuid::nil(), "select": bad}]})),
                "inputs[0].select",
                "normalised absolute path",
            );
        }
        let ok = parse(with(
            json!({"inputs": [{"path": "/a", "artifact": Uuid::nil(), "select": "/out/app"}]}),
        ))
        .unwrap();
        assert_eq!(ok.inputs[0].select.as_deref(), Some("/out/app"));
        refused(
            with(json!({"memory_limit": "12zb"})),
            "memory_limit",
            "unknown unit",
        );
        refused(
            with(json!({"memory_limit": 1.5})),
            "memory_limit",
            "whole number",
        );
        refused(with(json!({"cpu_limit": 0})), "cpu_limit", "above 0");
        refused(
            with(json!({"cpu_limit": "lots"})),
            "cpu_limit",
            "expected a number",
        );
        refused(
            with(json!({"timeout": "soon"})),
            "timeout",
            "invalid duration",
        );
        refused(
            with(json!({"pull_policy": "sometimes"})),
            "pull_policy",
            "unknown variant",
        );
        refused(with(json!({"ports": ["70000"]})), "ports[0]", "1 to 65535");
        refused(
            with(json!({"volumes": ["a:b:c:d"]})),
            "volumes[0]",
            "source:target",
        );
        refused(
            with(json!({"volumes": ["/a:/b:rx"]})),
            "volumes[0]",
            "mount mode",
        );
        refused(
            with(json!({"command": [1, 2]})),
            "command",
            "array of strings",
        );
        refused(
            with(json!({"restart_policy": "sometimes"})),
            "restart_policy",
            "on-failure",
        );
    }

    #[test]
    fn units() {
        let b = |s: &str| s.parse::<ByteSize>().unwrap().0;
        assert_eq!(b("512m"), 512 << 20);
        assert_eq!(b("1g"), 1 << 30);
        assert_eq!(b("1GiB"), 1 << 30);
        assert_eq!(b("64MB"), 64 << 20);
        assert_eq!(b("1.5k"), 1536);
        assert_eq!(b("100"), 100);
        assert_eq!(b("100b"), 100);
        for bad in ["", "m", "1x", "-1m", "1e30g", "99999999p"] {
            assert!(bad.parse::<ByteSize>().is_err(), "{bad}");
        }
        assert_eq!(ByteSize(512 << 20).to_string(), "512m");
        assert_eq!(ByteSize(1 << 30).to_string(), "1g");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let c = |s: &str| s.parse::<Cpus>().unwrap().nano_cpus();
        assert_eq!(c("1.5"), 1_500_000_000);
        assert_eq!(c("500m"), 500_000_000);
        assert_eq!(c("2"), 2_000_000_000);
        for bad in ["0", "-1", "x", "2000", "NaN", "inf"] {
            assert!(bad.parse::<Cpus>().is_err(), "{bad}");
        }
        assert_eq!(Cpus(1_500_000_000).to_string(), "1.5");
        assert_eq!(Cpus(2_000_000_000).to_string(), "2");
        let v: Cpus = serde_json::from_value(json!(0.25)).unwrap();
        assert_eq!(v.nano_cpus(), 250_000_000);
        let m: ByteSize = serde_json::from_value(json!(1048576)).unwrap();
        assert_eq!(m.to_string(), "1m");
        assert_eq!("0755".parse::<FileMode>().unwrap(), FileMode(0o755));
        assert_eq!("0o600".parse::<FileMode>().unwrap(), FileMode(0o600));
        assert!("0999".parse::<FileMode>().is_err());
        assert!("1777".parse::<FileMode>().is_err());
        assert_eq!(
            serde_json::to_value(FileMode(0o644)).unwrap(),
            json!("0644")
        );
    }

    #[test]
    fn image_reference_errors_carry_the_code() {
        for (img, needle) in [
            ("UPPER/case:tag", "lowercase"),
            ("a//b", "empty component"),
            (
                &format!("busybox:{}", "t".repeat(129)) as &str,
                "limit is 128",
            ),
            (&"a".repeat(256), "limit is 255"),
            ("busybox@sha256:abcd", "64 lowercase hex"),
            ("busybox@sha512:abcd", "not supported"),
        ] {
            let e = parse(json!({ "image": img })).unwrap_err();
            assert_eq!(e.field, "image");
            assert!(e.reason.starts_with("invalid_image_reference: "), "{e}");
            assert!(e.reason.contains(needle), "{e}");
            assert_eq!(error_code(&e), INVALID_IMAGE_REFERENCE);
        }
        let e = parse(with(json!({"pids_limit": 0}))).unwrap_err();
        assert_eq!(error_code(&e), INVALID_PARAMS);
    }

    #[test]
    fn argv_limits() {
        refused(
            with(json!({"command": ["ok", "a\u{0}b"]})),
            "command[1]",
            "NUL",
        );
        refused(
            with(json!({"entrypoint": ["a\u{0}"]})),
            "entrypoint[0]",
            "NUL",
        );
        let many: Vec<String> = (0..4097).map(|i| i.to_string()).collect();
        refused(
            with(json!({ "command": many })),
            "command",
            "4096 arguments",
        );
        let split: Vec<String> = (0..3000).map(|i| i.to_string()).collect();
        refused(
            with(json!({ "command": split, "entrypoint": split })),
            "entrypoint",
            "4096 arguments",
        );
        let big = "x".repeat(64 * 1024);
        refused(with(json!({ "command": [big, big] })), "command", "bytes");
        let ok: Vec<String> = (0..4096).map(|_| "a".into()).collect();
        parse(with(json!({ "command": ok }))).unwrap();
    }

    #[test]
    fn environment_rules() {
        for name in ["A=B", "1X", "", "has space", "é"] {
            let e = parse(with(json!({ "environment": { name: "v" } }))).unwrap_err();
            assert!(e.field.starts_with("environment."), "{e}");
            assert!(e.reason.contains("[A-Za-z_]"), "{e}");
        }
        let e = parse(with(json!({"environment": {"A=B": "v"}}))).unwrap_err();
        assert_eq!(e.field, "environment.A=B");
        let e = parse(with(json!({"environment": {"": "v"}}))).unwrap_err();
        assert_eq!(e.field, "environment.\"\"");
        refused(
            with(json!({"environment": {"GOOD": "a\u{0}b"}})),
            "environment.GOOD",
            "NUL",
        );
        // The value must never appear in the error (it may be sensitive).
        let e = parse(with(json!({"environment": {"TOKEN": "s3cr3t\u{0}"}}))).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"));
        refused(
            with(json!({"environment": {"S": {"secret": "../etc"}}})),
            "environment.S",
            "secret names",
        );
        let many: serde_json::Map<String, serde_json::Value> =
            (0..1001).map(|i| (format!("V{i}"), json!("x"))).collect();
        refused(
            with(json!({ "environment": many })),
            "environment",
            "limit is 1000",
        );
        let big: serde_json::Map<String, serde_json::Value> = (0..3)
            .map(|i| (format!("V{i}"), json!("x".repeat(50 * 1024))))
            .collect();
        refused(
            with(json!({ "environment": big })),
            "environment.V2",
            "bytes",
        );
        parse(with(json!({"environment": {"_OK": "", "a1": "x"}}))).unwrap();
    }

    #[test]
    fn reserved_labels() {
        for key in [
            "highway.managed",
            "highway.activity_id",
            "HIGHWAY.tenant_id",
            "highway.",
        ] {
            let e = parse(with(json!({ "labels": { key: "x" } }))).unwrap_err();
            assert_eq!(e.field, format!("labels.{key}"));
            assert!(e.reason.contains("reserved"), "{e}");
        }
        refused(
            with(json!({"labels": {"": "x"}})),
            "labels.\"\"",
            "1 to 255",
        );
        refused(with(json!({"labels": {"a": "x\u{0}"}})), "labels.a", "NUL");
        parse(with(
            json!({"labels": {"highwayman": "ok", "com.example.x": "y"}}),
        ))
        .unwrap();
    }

    #[test]
    fn paths() {
        for (field, v) in [
            ("outputs[0]", json!({"outputs": ["relative"]})),
            ("outputs[0]", json!({"outputs": ["/"]})),
            ("outputs[0]", json!({"outputs": ["//./"]})),
            ("outputs[0]", json!({"outputs": ["/a/../etc"]})),
            ("outputs[1]", json!({"outputs": ["/out", "/out/"]})),
            (
                "inputs[0].path",
                json!({"inputs": [{"path": "in", "content": ""}]}),
            ),
            (
                "inputs[0].path",
                json!({"inputs": [{"path": "/", "artifact": Uuid::nil()}]}),
            ),
            (
                "inputs[0].path",
                json!({"inputs": [{"path": "/../x", "content": ""}]}),
            ),
            (
                "inputs[1].path",
                json!({"inputs": [{"path": "/a", "content": ""}, {"path": "/a", "content": ""}]}),
            ),
            (
                "secrets[0].path",
                json!({"secrets": [{"name": "s", "path": "run/s"}]}),
            ),
            ("secrets[0].name", json!({"secrets": [{"name": "a/b"}]})),
            (
                "secrets[0].path",
                json!({"secrets": [{"name": "s", "path": "/in/a"}], "inputs": [{"path": "/in/a", "content": ""}]}),
            ),
            ("volumes[0].target", json!({"volumes": ["/"]})),
            ("volumes[0].target", json!({"volumes": [{"target": "rel"}]})),
            ("volumes[0].source", json!({"volumes": ["/a/../b:/c"]})),
            (
                "volumes[0].source",
                json!({"volumes": [{"source": "bad name", "target": "/c"}]}),
            ),
            ("volumes[1].target", json!({"volumes": ["/c", "/c/"]})),
            ("tmpfs./", json!({"tmpfs": {"/": ""}})),
            ("working_dir", json!({"working_dir": "rel"})),
            ("devices[0].host_path", json!({"devices": ["dev/x"]})),
            ("devices[0].permissions", json!({"devices": ["/dev/x:rwx"]})),
        ] {
            let e = parse(with(v.clone())).expect_err(&v.to_string());
            assert_eq!(e.field, field, "{e} for {v}");
        }
    }

    #[test]
    fn archive_api_constraints() {
        // tmpfs is invisible to the archive API (DOCKER-NOTES F4).
        refused(
            with(json!({"tmpfs": {"/scratch": ""}, "outputs": ["/scratch/x"]})),
            "outputs[0]",
            "tmpfs",
        );
        refused(
            with(json!({"tmpfs": {"/in": ""}, "inputs": [{"path": "/in/a", "content": ""}]})),
            "inputs[0].path",
            "tmpfs",
        );
        refused(
            with(json!({"tmpfs": {"/run/secrets": ""}, "secrets": [{"name": "a"}]})),
            "secrets[0].path",
            "tmpfs",
        );
        // A read-only rootfs refuses uploads outside volumes.
        refused(
            with(json!({"read_only": true, "inputs": [{"path": "/in/a", "content": ""}]})),
            "inputs[0].path",
            "read_only",
        );
        parse(with(json!({
            "read_only": true, "volumes": ["/in", "/run/secrets"],
            "inputs": [{"path": "/in/a", "content": ""}], "secrets": [{"name": "a"}]
        })))
        .unwrap();
    }

    #[test]
    fn limits_and_lifecycle() {
        refused(
            with(json!({"pids_limit": 0})),
            "pids_limit",
            "greater than 0",
        );
        refused(
            with(json!({"pids_limit": -1})),
            "pids_limit",
            "greater than 0",
        );
        refused(with(json!({"memory_limit": "5m"})), "memory_limit", "6m");
        parse(with(json!({"memory_limit": "6m"}))).unwrap();
        refused(with(json!({"shm_size": 0})), "shm_size", "greater than 0");
        refused(with(json!({"timeout": 0})), "timeout", "between");
        refused(with(json!({"timeout": "8d"})), "timeout", "between");
        refused(with(json!({"stop_grace": "2h"})), "stop_grace", "between");
        refused(with(json!({"detach_ttl": "31d"})), "detach_ttl", "between");
        refused(
            with(json!({"retention": "1h"})),
            "retention",
            "auto_remove: false",
        );
        refused(
            with(json!({"restart_policy": "always"})),
            "restart_policy",
            "detach",
        );
        parse(with(json!({"restart_policy": "always", "detach": true}))).unwrap();
        refused(
            with(
                json!({"restart_policy": {"name": "always", "maximum_retry_count": 3}, "detach": true}),
            ),
            "restart_policy.maximum_retry_count",
            "on-failure",
        );
        refused(
            with(json!({"detach": true, "outputs": ["/out"]})),
            "outputs",
            "detached",
        );
        refused(
            with(json!({"ulimits": [{"name": "bogus", "soft": 1, "hard": 1}]})),
            "ulimits[0].name",
            "unknown",
        );
        refused(
            with(json!({"ulimits": [{"name": "nofile", "soft": 10, "hard": 1}]})),
            "ulimits[0]",
            "soft",
        );
        refused(
            with(
                json!({"ulimits": [{"name": "core", "soft": 0, "hard": 0}, {"name": "core", "soft": 0, "hard": 0}]}),
            ),
            "ulimits[1].name",
            "twice",
        );
        refused(
            with(json!({"log_config": {"type": "syslog"}})),
            "log_config.type",
            "json-file",
        );
        refused(
            with(json!({"healthcheck": {"test": ["BOGUS"]}})),
            "healthcheck.test",
            "CMD",
        );
        refused(
            with(json!({"healthcheck": {"test": ["CMD"]}})),
            "healthcheck.test",
            "CMD",
        );
        refused(
            with(json!({"healthcheck": {"test": "x", "retries": -1}})),
            "healthcheck.retries",
            "negative",
        );
        refused(
            with(json!({"cap_add": ["NOT_A_CAP"]})),
            "cap_add[0]",
            "unknown capability",
        );
        refused(
            with(json!({"cap_drop": ["BOGUS"]})),
            "cap_drop[0]",
            "unknown capability",
        );
        parse(with(json!({"cap_add": ["cap_net_admin", "chown"]}))).unwrap();
        refused(
            with(json!({"device_requests": [{"count": -2}]})),
            "device_requests[0].count",
            "-1",
        );
        refused(with(json!({"user": "root; rm"})), "user", "uid");
        refused(with(json!({"user": "a:b:c"})), "user", "uid");
        refused(
            with(json!({"security_opt": [""]})),
            "security_opt[0]",
            "1 to 4096",
        );
    }

    #[test]
    fn network_rules() {
        refused(
            with(json!({"network_mode": "container:abc"})),
            "network_mode",
            "not supported",
        );
        refused(
            with(json!({"network_mode": "bad name"})),
            "network_mode",
            "bridge",
        );
        refused(with(json!({"network": "host"})), "network", "network_mode");
        refused(
            with(json!({"network": "a", "network_mode": "b"})),
            "network",
            "not both",
        );
        refused(
            with(json!({"network_mode": "none", "ports": ["80"]})),
            "ports",
            "none",
        );
        refused(with(json!({"pid_mode": "container:x"})), "pid_mode", "host");
        refused(
            with(json!({"ipc_mode": "container:x"})),
            "ipc_mode",
            "shareable",
        );
        refused(with(json!({"uts_mode": "private"})), "uts_mode", "host");
        refused(with(json!({"userns_mode": "x"})), "userns_mode", "host");
        refused(
            with(json!({"ports": [{"container_port": 80, "host_ip": "nope"}]})),
            "ports[0].host_ip",
            "IP",
        );
        refused(with(json!({"hostname": "-bad"})), "hostname", "RFC 1123");
        refused(with(json!({"dns": ["dns.google"]})), "dns[0]", "IP");
        refused(
            with(json!({"extra_hosts": ["nohost"]})),
            "extra_hosts[0]",
            "name:ip",
        );
        refused(
            with(json!({"extra_hosts": ["a:notip"]})),
            "extra_hosts[0]",
            "name:ip",
        );
        let p = parse(with(json!({"ports": ["[::1]:8080:80/tcp", ":80"]})));
        assert!(p.is_err(), "empty host ip must not parse as an IP");
        let p = parse(with(json!({"ports": ["[::1]:8080:80/tcp"]}))).unwrap();
        assert_eq!(p.ports[0].host_ip.as_deref(), Some("::1"));
        assert_eq!(p.ports[0].host_port, Some(8080));
    }

    #[test]
    fn schema_is_generated() {
        let s = params_json_schema();
        assert_eq!(s["additionalProperties"], json!(false));
        assert_eq!(s["required"], json!(["image"]));
        let props = s["properties"].as_object().unwrap();
        for f in [
            "image",
            "command",
            "environment",
            "memory_limit",
            "cpu_limit",
            "inputs",
            "outputs",
            "secrets",
            "timeout",
            "stop_grace",
            "pull_policy",
            "retention",
            "detach_ttl",
        ] {
            assert!(props.contains_key(f), "schema lacks {f}");
        }
        let text = s.to_string();
        assert!(text.contains("\"artifact\""), "input file schema present");
    }

    #[test]
    fn result_shape() {
        let r = DockerRunResult {
            container_id: "c".repeat(64),
            short_id: "c".repeat(12),
            status: RunStatus::TimedOut,
            exit_code: Some(137),
            stdout: "out".into(),
            stderr: String::new(),
            logs_truncated: false,
            duration_ms: 12,
            image: "busybox:latest".into(),
            oom_killed: false,
            warnings: vec!["w".into()],
            outputs: Some(ArtifactRef {
                id: Uuid::nil(),
                size_bytes: 10,
                sha256: "0".repeat(64),
                paths: vec!["/out".into()],
            }),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], json!("timed_out"));
        assert_eq!(v["outputs"]["size_bytes"], json!(10));
        assert_eq!(serde_json::from_value::<DockerRunResult>(v).unwrap(), r);
    }

    #[test]
    fn path_helpers() {
        assert_eq!(normal_path("/a//b/./c/"), "/a/b/c");
        assert_eq!(normal_path("/"), "/");
        assert!(is_under("/a/b", "/a"));
        assert!(is_under("/a", "/a/"));
        assert!(!is_under("/ab", "/a"));
        assert!(is_under("/anything", "/"));
        assert_eq!(normalize_capability("cap_net_admin"), Some("NET_ADMIN"));
        assert_eq!(normalize_capability("NET_ADMIN"), Some("NET_ADMIN"));
        assert_eq!(normalize_capability("ALL"), None);
    }
}
