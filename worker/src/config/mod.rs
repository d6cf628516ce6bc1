//! Every setting of the worker: command-line flags, `HIGHWAY_*` environment variables,
//! their defaults and validation. Other modules receive plain typed values from here.
//!
//! Each flag's doc comment is its `--help` text; the README's settings table is
//! generated from the same source (`highway worker --help`).

pub mod api;
pub mod docker;
pub mod gc;
pub mod scheduler;

use highway_workflows::HumanDuration;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use uuid::Uuid;

/// Bad configuration, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("invalid setting {name}: {reason}")]
pub struct ConfigError {
    pub name: &'static str,
    pub reason: String,
}

fn bad(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        name,
        reason: reason.into(),
    }
}

/// Where the database is: the flags of the server commands (`up`, `worker`,
/// `scheduler`, `migrate`, `gc`), under the "Database" heading. Client commands have
/// none of them: they talk to the API. `Debug` shows the URL without its password.
#[derive(clap::Args, Clone)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Postgres URL. When unset, the private cluster that `highway up` runs under the
    /// state directory is used.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// State directory of `highway up` (the global `--state-dir`, copied in at start).
    #[arg(skip)]
    pub state_dir: PathBuf,

    /// Connections in the work pool (claims, heartbeats, completions, API).
    #[arg(long, env = "HIGHWAY_DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::db::redact_url),
            )
            .field("state_dir", &self.state_dir)
            .field("db_max_connections", &self.db_max_connections)
            .finish()
    }
}

impl DatabaseArgs {
    /// DATABASE_URL, else the URL `highway up` wrote into the state dir.
    pub fn resolve_url(&self) -> Result<String, ConfigError> {
        if let Some(u) = self.database_url.as_ref().filter(|u| !u.is_empty()) {
            return Ok(u.clone());
        }
        crate::db::embedded::url_from_state_dir(&self.state_dir).ok_or_else(|| {
            bad(
                "DATABASE_URL",
                format!(
                    "not set, and no running `highway up` found under {} (start one, or set DATABASE_URL)",
                    self.state_dir.display()
                ),
            )
        })
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }
}

/// The worker: which queues, how many slots, leases and shutdown.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkerConfig {
    /// Queues to claim from (comma separated).
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_QUEUES",
        value_delimiter = ',',
        default_value = "default"
    )]
    pub queues: Vec<String>,

    /// Activities run at once by this process (slots), across all its queues.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_CONCURRENCY",
        default_value_t = 16
    )]
    pub concurrency: usize,

    /// Most activities claimed by one claim statement.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_FETCH_BATCH",
        default_value_t = 100
    )]
    pub fetch_batch: usize,

    /// Polling fallback when no NOTIFY arrives (jittered by up to 10%).
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_POLL_INTERVAL",
        default_value = "1s"
    )]
    pub poll_interval: HumanDuration,

    /// Lease of a running attempt, renewed by heartbeats every third of it. An
    /// activity's `timeouts.heartbeat` overrides it. A worker that cannot renew within
    /// the lease stops its work and records nothing.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_LEASE",
        default_value = "30s"
    )]
    pub lease: HumanDuration,

    /// After SIGTERM: how long running activities may finish before they are stopped
    /// and released (a second signal skips the wait).
    #[arg(
        help_heading = "Shutdown",
        long,
        env = "HIGHWAY_SHUTDOWN_GRACE",
        default_value = "30s"
    )]
    pub shutdown_grace: HumanDuration,

    /// How often the rescuer looks for expired leases and timed-out waiting activities.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_RESCUE_INTERVAL",
        default_value = "5s"
    )]
    pub rescue_interval: HumanDuration,

    /// How long finished activities (and their logs) are kept before the rescuer
    /// deletes them; `0s` keeps them forever.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_RETENTION",
        default_value = "7d"
    )]
    pub retention: HumanDuration,

    /// Most results written by one completion statement.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_COMPLETE_BATCH",
        default_value_t = 200
    )]
    pub complete_batch: usize,

    /// Longest a result waits to be batched with others.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_COMPLETE_FLUSH",
        default_value = "2ms"
    )]
    pub complete_flush: HumanDuration,

    /// Attempts lost to infrastructure (Docker vanished) or released at shutdown that
    /// may be retried without counting against `maximum_attempts`.
    #[arg(
        help_heading = "Queue",
        long,
        env = "HIGHWAY_MAX_UNCOUNTED_ATTEMPTS",
        default_value_t = 20
    )]
    pub max_uncounted_attempts: i32,

    /// This worker's id (random when unset).
    #[arg(help_heading = "Queue", long, env = "HIGHWAY_WORKER_ID")]
    pub worker_id: Option<Uuid>,

    /// Directory of filesystem artifacts (tars collected from containers): where
    /// `HIGHWAY_ARTIFACT_STORE=fs` stores them, and where filesystem artifacts written
    /// earlier are read from with the Postgres store. Default: `<state dir>/artifacts`.
    #[arg(help_heading = "Limits", long, env = "HIGHWAY_ARTIFACT_DIR")]
    pub artifact_dir: Option<PathBuf>,

    #[command(flatten)]
    pub docker: docker::DockerConfig,

    #[command(flatten)]
    pub gc: gc::GcConfig,

    #[command(flatten)]
    pub scheduler: scheduler::SchedulerConfig,
}

impl WorkerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queues.is_empty() || self.queues.iter().any(|q| q.is_empty() || q.len() > 64) {
            return Err(bad(
                "HIGHWAY_QUEUES",
                "give 1 or more queue names of 1 to 64 characters",
            ));
        }
        if !(1..=10_000).contains(&self.concurrency) {
            return Err(bad("HIGHWAY_CONCURRENCY", "must be between 1 and 10000"));
        }
        if !(1..=10_000).contains(&self.fetch_batch) {
            return Err(bad("HIGHWAY_FETCH_BATCH", "must be between 1 and 10000"));
        }
        if self.lease.0 < Duration::from_secs(3) {
            return Err(bad("HIGHWAY_LEASE", "must be at least 3s"));
        }
        if self.poll_interval.0 < Duration::from_millis(10) {
            return Err(bad("HIGHWAY_POLL_INTERVAL", "must be at least 10ms"));
        }
        if self.rescue_interval.0 < Duration::from_millis(100) {
            return Err(bad("HIGHWAY_RESCUE_INTERVAL", "must be at least 100ms"));
        }
        if !(1..=10_000).contains(&self.complete_batch) {
            return Err(bad("HIGHWAY_COMPLETE_BATCH", "must be between 1 and 10000"));
        }
        self.docker
            .check_tls()
            .map_err(|reason| bad("DOCKER_CERT_PATH", reason))?;
        if self.max_uncounted_attempts < 0 {
            return Err(bad(
                "HIGHWAY_MAX_UNCOUNTED_ATTEMPTS",
                "must not be negative",
            ));
        }
        Ok(())
    }

    /// Heartbeats renew leases three times per lease.
    pub fn heartbeat_interval(&self) -> Duration {
        self.lease.0 / 3
    }
}

/// The HTTP server.
#[derive(clap::Args, Debug, Clone)]
pub struct HttpConfig {
    /// Address of the HTTP server (`/health`, `/metrics`, `/v1/...`). Beyond loopback
    /// without `--tls-cert`, a warning is logged at start (tokens would cross in clear).
    #[arg(
        long,
        env = "HIGHWAY_LISTEN",
        default_value = "127.0.0.1:8080",
        help_heading = "HTTP"
    )]
    pub listen: SocketAddr,

    /// Serve HTTPS with this PEM certificate chain (with `--tls-key`). Both files are
    /// re-read on SIGHUP: new connections get the new pair; a pair that fails to load
    /// is logged and the current one kept.
    #[arg(
        long,
        env = "HIGHWAY_TLS_CERT",
        requires = "tls_key",
        help_heading = "HTTP"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "HIGHWAY_TLS_KEY",
        requires = "tls_cert",
        help_heading = "HTTP"
    )]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub api: api::ApiConfig,
}

impl HttpConfig {
    /// The HTTPS certificate pair, when given.
    pub fn tls_files(&self) -> Option<crate::api::tls::TlsFiles> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(crate::api::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

/// Logging.
#[derive(clap::Args, Debug, Clone)]
pub struct LogConfig {
    /// Log format: `text` or `json`. Levels come from RUST_LOG (default `info`).
    #[arg(
        long,
        env = "HIGHWAY_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_args_debug_hides_the_password() {
        let a = DatabaseArgs {
            database_url: Some("postgres://u:hunter2@h/db?sslmode=verify-full".into()),
            state_dir: ".highway".into(),
            db_max_connections: 20,
        };
        let d = format!("{a:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("u:***@h/db?sslmode=verify-full"), "{d}");
    }
}
