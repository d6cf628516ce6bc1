//! Docker settings and the operator's security policy: where the daemon is, the
//! deployment name stamped on every container, default resource limits, capture caps,
//! timeouts, what tenants may ask for (`SecurityPolicy`, secure by default), and the
//! daemon as a soft dependency (`Availability`: optional at start, probe backoff, breaker).
//!
//! Every field is a flag with a `HIGHWAY_DOCKER_*` environment variable; the doc
//! comments become `--help`. Other modules receive this struct; only this file reads
//! the environment for Docker settings.

use clap::{Args, Parser};
use highway_workflows::docker::{ByteSize, Cpus};
use highway_workflows::HumanDuration;

/// How the worker reaches the daemon and runs containers.
#[derive(Args, Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// Docker Engine address: `unix:///path/docker.sock`, `tcp://host:port` or
    /// `http://host:port`. Falls back to `DOCKER_HOST`, then the local socket.
    #[arg(
        help_heading = "Docker connection",
        long = "docker-host",
        env = "HIGHWAY_DOCKER_HOST",
        default_value = "unix:///var/run/docker.sock",
        help_heading = "Docker connection"
    )]
    pub host: String,

    /// TLS to a `tcp://` daemon, verifying its certificate against `ca.pem` and
    /// offering `cert.pem`/`key.pem` from the certificate directory. Also on when
    /// `DOCKER_TLS_VERIFY` is set to anything non-empty (as the docker CLI reads it).
    #[arg(
        long = "docker-tls-verify",
        default_value_t = false,
        help_heading = "Docker connection"
    )]
    pub tls_verify: bool,

    /// Directory of `ca.pem`, `cert.pem` and `key.pem` for `--docker-tls-verify`
    /// [default: `~/.docker`]. Without `cert.pem`/`key.pem` no client certificate is offered.
    #[arg(
        long = "docker-cert-path",
        env = "DOCKER_CERT_PATH",
        help_heading = "Docker connection"
    )]
    pub cert_path: Option<std::path::PathBuf>,

    /// Deployment name, stamped on containers as `highway.deployment` beside the
    /// database's identity (`highway.deployment_id`); the garbage collector and worker
    /// cleanup only touch containers carrying both this name and their own database's
    /// identity.
    #[arg(
        help_heading = "Docker connection",
        long = "deployment",
        env = "HIGHWAY_DEPLOYMENT",
        default_value = "default"
    )]
    pub deployment: String,

    /// Treat containers of this deployment name that carry no deployment identity (made
    /// before identities existed) as this database's: the collector may then remove
    /// them. Off by default: such a container may belong to another stack.
    #[arg(help_heading = "Docker connection", long = "adopt-unlabelled-containers", env = "HIGHWAY_ADOPT_UNLABELLED_CONTAINERS",
          default_value_t = false, value_parser = boolish(), action = clap::ArgAction::Set)]
    pub adopt_unlabelled: bool,

    /// A retry whose previous attempt's container sits on another Docker host waits for
    /// that host's workers to remove it; when no worker of that host has heartbeated for
    /// this long, the host is taken as lost: the old container's row is marked `lost`
    /// and the retry runs (the host's own collector removes the container if it returns).
    #[arg(
        help_heading = "Docker connection",
        long = "host-lost-after",
        env = "HIGHWAY_HOST_LOST_AFTER",
        default_value = "5m"
    )]
    pub host_lost_after: HumanDuration,

    /// Pull timeout for one image (the whole progress stream).
    #[arg(
        help_heading = "Docker connection",
        long = "docker-pull-timeout",
        env = "HIGHWAY_DOCKER_PULL_TIMEOUT",
        default_value = "10m"
    )]
    pub pull_timeout: HumanDuration,

    /// A Docker `config.json` whose `auths` (base64 `auth`, `username`/`password`,
    /// `identitytoken`) are sent with pulls from those registries. Read once at start;
    /// credentials stored with `highway registry add` win over it. Credential helpers
    /// (`credsStore`, `credHelpers`) are not run.
    #[arg(
        long = "docker-config",
        env = "HIGHWAY_DOCKER_CONFIG",
        help_heading = "Docker connection"
    )]
    pub docker_config: Option<std::path::PathBuf>,

    /// Default stop grace (SIGTERM → SIGKILL) when a run does not set `stop_grace`.
    #[arg(
        help_heading = "Shutdown",
        long = "docker-stop-grace",
        env = "HIGHWAY_DOCKER_STOP_GRACE",
        default_value = "10s"
    )]
    pub stop_grace: HumanDuration,

    /// `max-size` of the daemon's json-file log per container (the daemon's own copy;
    /// results and `activity_logs` have their own caps).
    #[arg(
        help_heading = "Limits",
        long = "docker-log-max-size",
        env = "HIGHWAY_DOCKER_LOG_MAX_SIZE",
        default_value = "10m"
    )]
    pub log_max_size: ByteSize,

    /// `max-file` of the daemon's json-file log per container.
    #[arg(
        help_heading = "Limits",
        long = "docker-log-max-file",
        env = "HIGHWAY_DOCKER_LOG_MAX_FILE",
        default_value_t = 2
    )]
    pub log_max_file: u32,

    /// Bytes of stdout and of stderr kept in the result, each split between head and tail.
    #[arg(
        help_heading = "Limits",
        long = "docker-capture-bytes",
        env = "HIGHWAY_DOCKER_CAPTURE_BYTES",
        default_value = "1m"
    )]
    pub capture_bytes: ByteSize,

    /// Lines stored in `activity_logs` per activity attempt before a truncation marker.
    #[arg(
        help_heading = "Limits",
        long = "docker-activity-log-lines",
        env = "HIGHWAY_DOCKER_ACTIVITY_LOG_LINES",
        default_value_t = 10_000
    )]
    pub activity_log_lines: u64,

    /// Most bytes collected from a run's `outputs` (the tar as streamed by the daemon).
    #[arg(
        help_heading = "Limits",
        long = "docker-output-max-bytes",
        env = "HIGHWAY_DOCKER_OUTPUT_MAX_BYTES",
        default_value = "1g"
    )]
    pub output_max_bytes: ByteSize,

    /// Most bytes of a run's `inputs` (inline files plus artifacts, as one tar).
    #[arg(
        help_heading = "Limits",
        long = "docker-input-max-bytes",
        env = "HIGHWAY_DOCKER_INPUT_MAX_BYTES",
        default_value = "1g"
    )]
    pub input_max_bytes: ByteSize,

    /// Where output artifacts are stored. `postgres` (default): as 1 MiB chunks in
    /// `highway.artifact_chunks`, so a run on any host can take them as inputs.
    /// `fs:/path`: tar files under `/path` on this host (`fs` alone: under
    /// `HIGHWAY_ARTIFACT_DIR`, default `<state dir>/artifacts`); only workers that share
    /// that directory can read them. Artifacts already stored either way stay readable
    /// (filesystem ones from the artifact directory).
    #[arg(
        help_heading = "Limits",
        long = "artifact-store",
        env = "HIGHWAY_ARTIFACT_STORE",
        default_value = "postgres"
    )]
    pub artifact_store: ArtifactStoreSetting,

    #[command(flatten)]
    pub policy: SecurityPolicy,

    #[command(flatten)]
    pub availability: Availability,
}

/// The daemon as a soft dependency: whether the worker may start without it, and how
/// the status monitor probes it (exponential backoff plus jitter while down, a fixed
/// interval while up) and when the circuit breaker opens.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
#[command(next_help_heading = "Docker connection")]
pub struct Availability {
    /// Start and stay up while the daemon is unreachable (docker activities wait in the
    /// queue). `false`: refuse to start unless the daemon answers a ping at start.
    #[arg(
        long = "docker-optional",
        env = "HIGHWAY_DOCKER_OPTIONAL",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_parser = boolish()
    )]
    pub optional: bool,

    /// First retry delay after a failed probe, in milliseconds (doubles each failure).
    #[arg(
        long = "docker-retry-base-delay-ms",
        env = "HIGHWAY_DOCKER_RETRY_BASE_DELAY_MS",
        default_value_t = 500
    )]
    pub retry_base_delay_ms: u64,

    /// Longest delay between two probes while the daemon is down, in milliseconds.
    #[arg(
        long = "docker-retry-max-delay-ms",
        env = "HIGHWAY_DOCKER_RETRY_MAX_DELAY_MS",
        default_value_t = 30_000
    )]
    pub retry_max_delay_ms: u64,

    /// Random delay added to each retry (0 to this many milliseconds), so many workers
    /// do not probe a recovering daemon in lockstep.
    #[arg(
        long = "docker-retry-jitter-ms",
        env = "HIGHWAY_DOCKER_RETRY_JITTER_MS",
        default_value_t = 250
    )]
    pub retry_jitter_ms: u64,

    /// Probe interval while the daemon is up, in milliseconds (a failing Docker call
    /// that opens the circuit triggers a probe at once).
    #[arg(
        long = "docker-probe-interval-ms",
        env = "HIGHWAY_DOCKER_PROBE_INTERVAL_MS",
        default_value_t = 30_000
    )]
    pub probe_interval_ms: u64,

    /// Consecutive failed probes after which the monitor gives up (the daemon stays
    /// `down`, the worker stays up without docker kinds). 0: retry forever.
    #[arg(
        long = "docker-max-retries",
        env = "HIGHWAY_DOCKER_MAX_RETRIES",
        default_value_t = 0
    )]
    pub max_retries: u32,

    /// Consecutive failed Docker calls (daemon unreachable or timed out) that open the
    /// circuit breaker; while open, calls fail at once until a probe succeeds.
    #[arg(
        long = "docker-breaker-threshold",
        env = "HIGHWAY_DOCKER_BREAKER_THRESHOLD",
        default_value_t = 3
    )]
    pub breaker_threshold: u32,
}

impl Default for Availability {
    fn default() -> Self {
        Self {
            optional: true,
            retry_base_delay_ms: 500,
            retry_max_delay_ms: 30_000,
            retry_jitter_ms: 250,
            probe_interval_ms: 30_000,
            max_retries: 0,
            breaker_threshold: 3,
        }
    }
}

/// What tenants may ask for. Everything dangerous is refused unless allowed here.
#[derive(Args, Debug, Clone, PartialEq)]
#[command(next_help_heading = "Docker policy")]
pub struct SecurityPolicy {
    /// Allow `privileged: true`.
    #[arg(long, env = "HIGHWAY_DOCKER_ALLOW_PRIVILEGED", default_value_t = false, value_parser = boolish())]
    pub allow_privileged: bool,

    /// Allow `network_mode: host`.
    #[arg(
        long,
        env = "HIGHWAY_DOCKER_ALLOW_HOST_NETWORK",
        default_value_t = false,
        value_parser = boolish()
    )]
    pub allow_host_network: bool,

    /// Allow `pid_mode: host`.
    #[arg(long, env = "HIGHWAY_DOCKER_ALLOW_HOST_PID", default_value_t = false, value_parser = boolish())]
    pub allow_host_pid: bool,

    /// Allow `ipc_mode: host`.
    #[arg(long, env = "HIGHWAY_DOCKER_ALLOW_HOST_IPC", default_value_t = false, value_parser = boolish())]
    pub allow_host_ipc: bool,

    /// Allow `uts_mode: host`.
    #[arg(long, env = "HIGHWAY_DOCKER_ALLOW_HOST_UTS", default_value_t = false, value_parser = boolish())]
    pub allow_host_uts: bool,

    /// Allow `userns_mode: host`.
    #[arg(
        long,
        env = "HIGHWAY_DOCKER_ALLOW_HOST_USERNS",
        default_value_t = false,
        value_parser = boolish()
    )]
    pub allow_host_userns: bool,

    /// Capabilities tenants may add back after `CapDrop=ALL` (comma-separated, e.g.
    /// `NET_BIND_SERVICE,CHOWN`). Empty: none.
    #[arg(long, env = "HIGHWAY_DOCKER_CAP_ADD_ALLOWLIST", value_delimiter = ',')]
    pub cap_add_allowlist: Vec<String>,

    /// Host directories tenants may bind-mount from (comma-separated absolute paths).
    /// Empty: no host binds. The Docker socket is refused whatever this says.
    #[arg(
        long,
        env = "HIGHWAY_DOCKER_BIND_ALLOWED_PREFIXES",
        value_delimiter = ','
    )]
    pub bind_allowed_prefixes: Vec<String>,

    /// Allow named volumes (`"name:/path"`). Off by default: they outlive the run and
    /// any tenant on the host can mount them by name. Anonymous volumes are always allowed.
    #[arg(
        long,
        env = "HIGHWAY_DOCKER_ALLOW_NAMED_VOLUMES",
        default_value_t = false,
        value_parser = boolish()
    )]
    pub allow_named_volumes: bool,

    /// Allow host `devices` and `device_requests` (GPUs).
    #[arg(long, env = "HIGHWAY_DOCKER_ALLOW_DEVICES", default_value_t = false, value_parser = boolish())]
    pub allow_devices: bool,

    /// Image patterns tenants may run (comma-separated; `*` matches any run of
    /// characters, `?` one). Matched against the normalised reference and the bare
    /// repository name. Empty: any image.
    #[arg(long, env = "HIGHWAY_DOCKER_ALLOWED_IMAGES", value_delimiter = ',')]
    pub allowed_images: Vec<String>,

    /// Allow `security_opt` entries beyond `apparmor=<profile>`, `label=<...>` and
    /// `no-new-privileges` (`seccomp=…`, `*=unconfined`, `label=disable`, ...).
    #[arg(
        long,
        env = "HIGHWAY_DOCKER_ALLOW_UNCONFINED_SECURITY_OPTS",
        default_value_t = false,
        value_parser = boolish()
    )]
    pub allow_unconfined_security_opts: bool,

    /// Allow `oom_kill_disable: true`.
    #[arg(
        long,
        env = "HIGHWAY_DOCKER_ALLOW_OOM_KILL_DISABLE",
        default_value_t = false,
        value_parser = boolish()
    )]
    pub allow_oom_kill_disable: bool,

    /// Memory limit applied, with a warning, when a run sets none.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_DOCKER_DEFAULT_MEMORY",
        default_value = "512m"
    )]
    pub default_memory: ByteSize,

    /// CPU limit applied, with a warning, when a run sets none.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_DOCKER_DEFAULT_CPUS",
        default_value = "1.0"
    )]
    pub default_cpus: Cpus,

    /// Process limit applied when a run sets none (a fork-bomb guard; always on).
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_DOCKER_DEFAULT_PIDS",
        default_value_t = 512
    )]
    pub default_pids: i64,

    /// Largest memory limit a run may ask for.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_DOCKER_MAX_MEMORY",
        default_value = "8g"
    )]
    pub max_memory: ByteSize,

    /// Largest CPU limit a run may ask for.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_DOCKER_MAX_CPUS",
        default_value = "4"
    )]
    pub max_cpus: Cpus,

    /// Largest process limit a run may ask for.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_DOCKER_MAX_PIDS",
        default_value_t = 4096
    )]
    pub max_pids: i64,
}

impl DockerConfig {
    /// A Docker client for these settings (the effective host, the pull deadline); every
    /// command and service that talks to the daemon builds its client here.
    pub fn client(&self) -> crate::docker::client::DockerClient {
        crate::docker::client::DockerClient::new(crate::docker::client::ClientSettings {
            host: self.effective_host(),
            tls: self.tls_files(),
            pull_timeout: self.pull_timeout.0,
            ..Default::default()
        })
    }

    /// The TLS files when TLS is on (`--docker-tls-verify` or `DOCKER_TLS_VERIFY`
    /// non-empty) and the host is `tcp://`/`https://`; none otherwise (a unix socket
    /// never uses TLS, as with the docker CLI).
    pub fn tls_files(&self) -> Option<crate::docker::client::TlsFiles> {
        self.tls_files_with(
            &self.effective_host(),
            std::env::var("DOCKER_TLS_VERIFY").ok(),
            std::env::var_os("HOME").map(std::path::PathBuf::from),
        )
    }

    fn tls_files_with(
        &self,
        host: &str,
        verify_env: Option<String>,
        home: Option<std::path::PathBuf>,
    ) -> Option<crate::docker::client::TlsFiles> {
        let on = self.tls_verify || verify_env.is_some_and(|v| !v.is_empty());
        let tcp = host.starts_with("tcp://") || host.starts_with("https://");
        if !on || !tcp {
            return None;
        }
        let dir = self
            .cert_path
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .or_else(|| home.map(|h| h.join(".docker")))
            .unwrap_or_else(|| std::path::PathBuf::from(".docker"));
        Some(crate::docker::client::TlsFiles::in_dir(&dir))
    }

    /// The daemon address, honouring `DOCKER_HOST` when `HIGHWAY_DOCKER_HOST` and
    /// `--docker-host` were not given (clap cannot express a second env fallback).
    pub fn effective_host(&self) -> String {
        self.effective_host_with(
            std::env::var("HIGHWAY_DOCKER_HOST").ok(),
            std::env::var("DOCKER_HOST").ok(),
        )
    }

    fn effective_host_with(&self, highway: Option<String>, docker: Option<String>) -> String {
        let explicit = highway.is_some() || self.host != DEFAULT_HOST;
        match docker {
            Some(d) if !explicit && !d.trim().is_empty() => d,
            _ => self.host.clone(),
        }
    }

    /// With Docker TLS on, the CA file must be readable (checked at start: a missing CA
    /// is a configuration error, not an outage); a missing client pair only warns.
    pub fn check_tls(&self) -> Result<(), String> {
        if let Some(tls) = self.tls_files() {
            // The CA is required; the client pair is optional (the daemon decides).
            if let Err(e) = std::fs::File::open(&tls.ca) {
                return Err(format!(
                    "cannot read the CA certificate {}: {e}",
                    tls.ca.display()
                ));
            }
            if !tls.cert.exists() || !tls.key.exists() {
                tracing::warn!(
                    cert = %tls.cert.display(),
                    key = %tls.key.display(),
                    "docker TLS: no client certificate and key; none is offered to the daemon"
                );
            }
        }
        Ok(())
    }

    /// Refuses settings that cannot work together; called once at startup.
    pub fn validate(&self) -> Result<(), String> {
        let p = &self.policy;
        self.check_tls()
            .map_err(|e| format!("DOCKER_CERT_PATH: {e}"))?;
        if self.deployment.is_empty()
            || self.deployment.len() > 64
            || !self
                .deployment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            return Err("HIGHWAY_DEPLOYMENT must be 1 to 64 characters of [A-Za-z0-9_.-]".into());
        }
        if self.host_lost_after.0 < std::time::Duration::from_secs(1) {
            return Err("HIGHWAY_HOST_LOST_AFTER must be at least 1s".into());
        }
        if p.default_memory > p.max_memory {
            return Err("HIGHWAY_DOCKER_DEFAULT_MEMORY exceeds HIGHWAY_DOCKER_MAX_MEMORY".into());
        }
        if p.default_memory.0 < highway_workflows::docker::MIN_MEMORY_BYTES {
            return Err("HIGHWAY_DOCKER_DEFAULT_MEMORY must be at least 6m".into());
        }
        if p.default_cpus > p.max_cpus {
            return Err("HIGHWAY_DOCKER_DEFAULT_CPUS exceeds HIGHWAY_DOCKER_MAX_CPUS".into());
        }
        if p.default_pids <= 0 || p.default_pids > p.max_pids {
            return Err(
                "HIGHWAY_DOCKER_DEFAULT_PIDS must be between 1 and HIGHWAY_DOCKER_MAX_PIDS".into(),
            );
        }
        // An empty environment variable reads as one empty entry: ignore those.
        for c in p.cap_add_allowlist.iter().filter(|c| !c.trim().is_empty()) {
            if highway_workflows::docker::normalize_capability(c).is_none()
                && !c.eq_ignore_ascii_case("ALL")
            {
                return Err(format!(
                    "HIGHWAY_DOCKER_CAP_ADD_ALLOWLIST: unknown capability {c:?}"
                ));
            }
        }
        for b in p
            .bind_allowed_prefixes
            .iter()
            .filter(|b| !b.trim().is_empty())
        {
            if !b.starts_with('/') || b.split('/').any(|c| c == "..") {
                return Err(format!(
                    "HIGHWAY_DOCKER_BIND_ALLOWED_PREFIXES: {b:?} must be an absolute path without `..`"
                ));
            }
        }
        if self.capture_bytes.0 < 2 {
            return Err(
                "HIGHWAY_DOCKER_CAPTURE_BYTES must be at least 2 bytes (head and tail)".into(),
            );
        }
        if self.pull_timeout.0.as_secs() < 1 {
            return Err("HIGHWAY_DOCKER_PULL_TIMEOUT must be at least 1s".into());
        }
        let a = &self.availability;
        if a.retry_base_delay_ms == 0 {
            return Err("HIGHWAY_DOCKER_RETRY_BASE_DELAY_MS must be at least 1".into());
        }
        if a.retry_max_delay_ms < a.retry_base_delay_ms {
            return Err(
                "HIGHWAY_DOCKER_RETRY_MAX_DELAY_MS must not be below HIGHWAY_DOCKER_RETRY_BASE_DELAY_MS"
                    .into(),
            );
        }
        if a.probe_interval_ms < 100 {
            return Err("HIGHWAY_DOCKER_PROBE_INTERVAL_MS must be at least 100".into());
        }
        if a.breaker_threshold == 0 {
            return Err("HIGHWAY_DOCKER_BREAKER_THRESHOLD must be at least 1".into());
        }
        Ok(())
    }
}

const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// `HIGHWAY_ARTIFACT_STORE`: where output artifacts go (see the flag's help).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ArtifactStoreSetting {
    /// Chunks in Postgres, readable from any host.
    #[default]
    Postgres,
    /// Tar files in this directory, or in the artifact directory when `None`.
    Filesystem(Option<std::path::PathBuf>),
}

impl std::str::FromStr for ArtifactStoreSetting {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "postgres" | "pg" => Ok(Self::Postgres),
            "fs" => Ok(Self::Filesystem(None)),
            _ => match s.strip_prefix("fs:") {
                Some(dir) if dir.starts_with('/') => Ok(Self::Filesystem(Some(dir.into()))),
                Some(_) => Err(
                    "`fs:` needs an absolute directory (`fs:/var/lib/highway/artifacts`)".into(),
                ),
                None => Err("expected `postgres`, `fs` or `fs:/absolute/dir`".into()),
            },
        }
    }
}

/// Boolean flags also read `1`/`0`, `yes`/`no`, `on`/`off` from the environment, as
/// operators write them in compose files and unit files.
fn boolish() -> clap::builder::BoolishValueParser {
    clap::builder::BoolishValueParser::new()
}

/// Parses only the Docker flags, for `Default` and tests.
#[derive(Parser)]
struct DockerOnly {
    #[command(flatten)]
    docker: DockerConfig,
}

impl DockerConfig {
    /// The configuration from these arguments alone (no environment is consulted
    /// beyond what clap reads for `env` fallbacks).
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        DockerOnly::try_parse_from(
            std::iter::once("highway".into()).chain(args.into_iter().map(Into::into)),
        )
        .map(|d| d.docker)
    }
}

impl Default for DockerConfig {
    /// The documented defaults, ignoring the environment, so tests are reproducible.
    fn default() -> Self {
        Self {
            host: DEFAULT_HOST.into(),
            tls_verify: false,
            cert_path: None,
            deployment: "default".into(),
            adopt_unlabelled: false,
            host_lost_after: HumanDuration::from_secs(300),
            pull_timeout: HumanDuration::from_secs(600),
            docker_config: None,
            stop_grace: HumanDuration::from_secs(10),
            log_max_size: ByteSize::mib(10),
            log_max_file: 2,
            capture_bytes: ByteSize::mib(1),
            activity_log_lines: 10_000,
            output_max_bytes: ByteSize::mib(1024),
            input_max_bytes: ByteSize::mib(1024),
            artifact_store: ArtifactStoreSetting::Postgres,
            policy: SecurityPolicy::default(),
            availability: Availability::default(),
        }
    }
}

impl Default for SecurityPolicy {
    /// Secure by default: nothing dangerous allowed.
    fn default() -> Self {
        Self {
            allow_privileged: false,
            allow_host_network: false,
            allow_host_pid: false,
            allow_host_ipc: false,
            allow_host_uts: false,
            allow_host_userns: false,
            cap_add_allowlist: Vec::new(),
            bind_allowed_prefixes: Vec::new(),
            allow_named_volumes: false,
            allow_devices: false,
            allowed_images: Vec::new(),
            allow_unconfined_security_opts: false,
            allow_oom_kill_disable: false,
            default_memory: ByteSize::mib(512),
            default_cpus: Cpus::from_millis(1000),
            default_pids: 512,
            max_memory: ByteSize::mib(8 * 1024),
            max_cpus: Cpus::from_millis(4000),
            max_pids: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_is_clean() -> bool {
        !std::env::vars()
            .any(|(k, _)| k.starts_with("HIGHWAY_DOCKER_") || k == "HIGHWAY_DEPLOYMENT")
    }

    #[test]
    fn defaults_are_secure_and_documented() {
        let c = DockerConfig::default();
        assert_eq!(c.host, "unix:///var/run/docker.sock");
        assert_eq!(c.deployment, "default");
        assert_eq!(c.capture_bytes, ByteSize::mib(1));
        assert_eq!(c.stop_grace, HumanDuration::from_secs(10));
        let p = &c.policy;
        assert!(!p.allow_privileged && !p.allow_host_network && !p.allow_host_pid);
        assert!(!p.allow_host_ipc && !p.allow_host_uts && !p.allow_host_userns);
        assert!(!p.allow_devices && !p.allow_named_volumes);
        assert!(!p.allow_unconfined_security_opts && !p.allow_oom_kill_disable);
        assert!(p.cap_add_allowlist.is_empty() && p.bind_allowed_prefixes.is_empty());
        assert!(p.allowed_images.is_empty());
        assert_eq!(p.default_memory, ByteSize::mib(512));
        assert_eq!(p.default_cpus.nano_cpus(), 1_000_000_000);
        assert_eq!(p.default_pids, 512);
        c.validate().unwrap();
    }

    #[test]
    fn docker_tls_is_read_the_way_the_docker_cli_reads_it() {
        let c = DockerConfig::default();
        let home = Some(std::path::PathBuf::from("/home/u"));
        // Off without DOCKER_TLS_VERIFY, and never for a unix socket.
        assert_eq!(c.tls_files_with("tcp://h:2376", None, home.clone()), None);
        assert_eq!(
            c.tls_files_with(
                "unix:///var/run/docker.sock",
                Some("1".into()),
                home.clone()
            ),
            None
        );
        // Any non-empty value turns it on; the default directory is ~/.docker.
        let t = c
            .tls_files_with("tcp://h:2376", Some("0".into()), home.clone())
            .unwrap();
        assert_eq!(t.ca, std::path::Path::new("/home/u/.docker/ca.pem"));
        assert_eq!(t.key, std::path::Path::new("/home/u/.docker/key.pem"));
        assert_eq!(
            c.tls_files_with("tcp://h:2376", Some(String::new()), home.clone()),
            None
        );
        let c = DockerConfig {
            tls_verify: true,
            cert_path: Some("/certs".into()),
            ..DockerConfig::default()
        };
        let t = c.tls_files_with("tcp://h:2376", None, home).unwrap();
        assert_eq!(t.cert, std::path::Path::new("/certs/cert.pem"));
    }

    #[test]
    fn clap_defaults_match_default() {
        if !env_is_clean() {
            return; // the surrounding environment overrides some settings
        }
        assert_eq!(
            DockerConfig::from_args(Vec::<String>::new()).unwrap(),
            DockerConfig::default()
        );
    }

    #[test]
    fn flags_parse_human_units_and_lists() {
        let c = DockerConfig::from_args([
            "--docker-host=tcp://127.0.0.1:2375",
            "--deployment=staging",
            "--docker-capture-bytes=64k",
            "--docker-pull-timeout=30s",
            "--allow-privileged",
            "--cap-add-allowlist=NET_BIND_SERVICE,chown",
            "--bind-allowed-prefixes=/srv/data,/mnt/shared",
            "--allowed-images=highway-test/*,busybox:*",
            "--default-memory=256m",
            "--default-cpus=0.5",
            "--max-memory=2g",
        ])
        .unwrap();
        assert_eq!(c.host, "tcp://127.0.0.1:2375");
        assert_eq!(c.deployment, "staging");
        assert_eq!(c.capture_bytes.0, 64 * 1024);
        assert_eq!(c.pull_timeout, HumanDuration::from_secs(30));
        assert!(c.policy.allow_privileged);
        assert_eq!(c.policy.cap_add_allowlist, ["NET_BIND_SERVICE", "chown"]);
        assert_eq!(c.policy.bind_allowed_prefixes, ["/srv/data", "/mnt/shared"]);
        assert_eq!(c.policy.allowed_images, ["highway-test/*", "busybox:*"]);
        assert_eq!(c.policy.default_memory, ByteSize::mib(256));
        assert_eq!(c.policy.default_cpus.nano_cpus(), 500_000_000);
        c.validate().unwrap();
        assert!(DockerConfig::from_args(["--default-memory=lots"]).is_err());
        let soft = DockerConfig::from_args([
            "--docker-optional=false",
            "--docker-retry-base-delay-ms=100",
            "--docker-max-retries=3",
        ])
        .unwrap();
        assert!(!soft.availability.optional);
        assert_eq!(soft.availability.retry_base_delay_ms, 100);
        assert_eq!(soft.availability.max_retries, 3);
    }

    #[test]
    fn artifact_store_setting() {
        use ArtifactStoreSetting as S;
        assert_eq!(DockerConfig::default().artifact_store, S::Postgres);
        assert_eq!("postgres".parse::<S>().unwrap(), S::Postgres);
        assert_eq!("fs".parse::<S>().unwrap(), S::Filesystem(None));
        assert_eq!(
            "fs:/srv/a".parse::<S>().unwrap(),
            S::Filesystem(Some("/srv/a".into()))
        );
        assert!("fs:rel".parse::<S>().unwrap_err().contains("absolute"));
        assert!("s3".parse::<S>().unwrap_err().contains("postgres"));
        let c = DockerConfig::from_args(["--artifact-store", "fs:/x"]).unwrap();
        assert_eq!(c.artifact_store, S::Filesystem(Some("/x".into())));
        assert!(DockerConfig::from_args(["--artifact-store", "nope"]).is_err());
    }

    #[test]
    fn docker_host_fallback() {
        let c = DockerConfig::default();
        let d = Some("tcp://10.0.0.1:2375".to_string());
        assert_eq!(
            c.effective_host_with(None, d.clone()),
            "tcp://10.0.0.1:2375"
        );
        assert_eq!(
            c.effective_host_with(Some(c.host.clone()), d.clone()),
            c.host
        );
        assert_eq!(c.effective_host_with(None, None), c.host);
        assert_eq!(c.effective_host_with(None, Some(" ".into())), c.host);
        let explicit = DockerConfig {
            host: "unix:///tmp/d.sock".into(),
            ..DockerConfig::default()
        };
        assert_eq!(explicit.effective_host_with(None, d), "unix:///tmp/d.sock");
    }

    #[test]
    fn validate_refuses_inconsistent_settings() {
        let bad = |f: &dyn Fn(&mut DockerConfig)| {
            let mut c = DockerConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(&|c| c.deployment = "a b".into()).contains("HIGHWAY_DEPLOYMENT"));
        assert!(bad(&|c| c.deployment = String::new()).contains("HIGHWAY_DEPLOYMENT"));
        assert!(bad(&|c| c.policy.default_memory = ByteSize::mib(9000)).contains("MAX_MEMORY"));
        assert!(bad(&|c| {
            c.policy.default_memory = ByteSize::mib(1);
        })
        .contains("6m"));
        assert!(bad(&|c| c.policy.default_cpus = Cpus::from_millis(8000)).contains("MAX_CPUS"));
        assert!(bad(&|c| c.policy.default_pids = 0).contains("DEFAULT_PIDS"));
        assert!(bad(&|c| c.policy.cap_add_allowlist = vec!["NOPE".into()]).contains("NOPE"));
        assert!(bad(&|c| c.policy.bind_allowed_prefixes = vec!["srv".into()]).contains("absolute"));
        assert!(
            bad(&|c| c.policy.bind_allowed_prefixes = vec!["/srv/../etc".into()])
                .contains("absolute")
        );
        assert!(bad(&|c| c.capture_bytes = ByteSize(1)).contains("CAPTURE"));
        assert!(bad(&|c| c.pull_timeout = HumanDuration::from_millis(10)).contains("PULL_TIMEOUT"));
        assert!(bad(&|c| c.availability.retry_base_delay_ms = 0).contains("BASE_DELAY"));
        assert!(bad(&|c| c.availability.retry_max_delay_ms = 10).contains("MAX_DELAY"));
        assert!(bad(&|c| c.availability.probe_interval_ms = 1).contains("PROBE_INTERVAL"));
        assert!(bad(&|c| c.availability.breaker_threshold = 0).contains("BREAKER"));
    }
}
