//! Dependency status shared by the monitors, `/health`, `/health/ready` and `/metrics`:
//! for Postgres and Docker, `unknown | up | down` with the last error, times and
//! counters, and the readiness verdict orchestrators probe. Holds no connection strings,
//! hostnames or versions.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Unknown,
    Up,
    Down,
}

/// A snapshot of one dependency.
#[derive(Debug, Clone, Serialize)]
pub struct DependencyStatus {
    pub status: Status,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    /// A short, classified error (never a connection string).
    pub last_error: Option<String>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub consecutive_failures: u64,
    /// The monitor gave up (its retry budget is spent): no further probes until the
    /// process restarts. The process itself stays up.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retries_exhausted: bool,
    /// Docker only: the circuit breaker guarding every call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<Circuit>,
}

/// State of a circuit breaker, as reported in `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Calls go through.
    Closed,
    /// Calls fail at once; only the monitor's probe is sent.
    Open,
    /// A probe is in flight; its outcome closes or re-opens the circuit.
    HalfOpen,
}

impl Default for DependencyStatus {
    fn default() -> Self {
        Self {
            status: Status::Unknown,
            last_success_at: None,
            last_failure_at: None,
            last_error: None,
            next_retry_at: None,
            consecutive_failures: 0,
            retries_exhausted: false,
            circuit: None,
        }
    }
}

/// A shared, cheap-to-clone cell for one dependency's status.
#[derive(Debug, Clone, Default)]
pub struct Dependency(Arc<RwLock<DependencyStatus>>);

impl Dependency {
    pub fn snapshot(&self) -> DependencyStatus {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_up(&self) -> bool {
        self.snapshot().status == Status::Up
    }

    pub fn success(&self) {
        let mut s = self.0.write().unwrap_or_else(|p| p.into_inner());
        s.status = Status::Up;
        s.last_success_at = Some(Utc::now());
        s.consecutive_failures = 0;
        s.next_retry_at = None;
        s.retries_exhausted = false;
    }

    pub fn failure(&self, error: String, next_retry_at: Option<DateTime<Utc>>) -> u64 {
        let mut s = self.0.write().unwrap_or_else(|p| p.into_inner());
        s.status = Status::Down;
        s.last_failure_at = Some(Utc::now());
        s.last_error = Some(error);
        s.next_retry_at = next_retry_at;
        s.consecutive_failures += 1;
        s.consecutive_failures
    }

    /// The monitor stopped retrying: stays `down` with no next retry.
    pub fn exhausted(&self) {
        let mut s = self.0.write().unwrap_or_else(|p| p.into_inner());
        s.status = Status::Down;
        s.next_retry_at = None;
        s.retries_exhausted = true;
    }

    pub fn set_circuit(&self, circuit: Circuit) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).circuit = Some(circuit);
    }
}

/// Every dependency of the process.
#[derive(Debug, Clone, Default)]
pub struct Health {
    pub postgres: Dependency,
    pub docker: Dependency,
    /// Set once shutdown begins: `/health` answers `draining`.
    pub draining: CancellationToken,
}

/// Names of the dependencies, as `/health` and `/health/ready` spell them.
pub const POSTGRES: &str = "postgres";
pub const DOCKER: &str = "docker";

/// Whether the process should get traffic (`/health/ready`): the dependencies that are
/// not `up`, or draining.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `ready`, `not_ready` or `draining`.
    pub status: &'static str,
    /// The dependencies that keep it from being ready ([`POSTGRES`], [`DOCKER`]).
    pub failing: Vec<&'static str>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Health {
    /// Ready while Postgres is `up` and, when `docker_required`, Docker is `up` too;
    /// `unknown` (no probe answered yet) is not ready. A draining process is never
    /// ready, so an orchestrator stops routing to it while running work finishes.
    pub fn readiness(&self, docker_required: bool) -> Readiness {
        let mut failing = Vec::new();
        if self.postgres.snapshot().status != Status::Up {
            failing.push(POSTGRES);
        }
        if docker_required && self.docker.snapshot().status != Status::Up {
            failing.push(DOCKER);
        }
        let status = if self.draining.is_cancelled() {
            "draining"
        } else if failing.is_empty() {
            "ready"
        } else {
            "not_ready"
        };
        Readiness { status, failing }
    }
}

/// How often the Postgres monitor probes while Postgres is up.
pub const POSTGRES_PROBE_INTERVAL: Duration = Duration::from_secs(5);
/// How often it probes while Postgres is down.
pub const POSTGRES_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe may take before it counts as a failure.
pub const POSTGRES_PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// A short description of a database error without connection details.
pub fn classify_db_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("io: {}", io.kind()),
        sqlx::Error::PoolTimedOut => "pool timed out (database unreachable or overloaded)".into(),
        sqlx::Error::PoolClosed => "pool closed".into(),
        sqlx::Error::Database(db) => format!("database error {}", db.code().unwrap_or_default()),
        sqlx::Error::Tls(_) => "tls error".into(),
        other => format!("{}", other).chars().take(120).collect(),
    }
}

/// Probes Postgres every `interval` while up and every [`POSTGRES_RETRY_INTERVAL`] while
/// down, each probe bounded by [`POSTGRES_PROBE_TIMEOUT`].
pub async fn postgres_monitor(
    pool: PgPool,
    dep: Dependency,
    interval: Duration,
    stop: CancellationToken,
) {
    loop {
        let res = tokio::time::timeout(
            POSTGRES_PROBE_TIMEOUT,
            sqlx::query("SELECT 1").execute(&pool),
        )
        .await;
        let was = dep.snapshot().status;
        let wait = match res {
            Ok(Ok(_)) => {
                if was == Status::Down {
                    info!(dependency = "postgres", "postgres is reachable again");
                }
                dep.success();
                interval
            }
            Ok(Err(e)) => {
                let retry = POSTGRES_RETRY_INTERVAL;
                let n = dep.failure(
                    classify_db_error(&e),
                    Some(Utc::now() + chrono::Duration::from_std(retry).unwrap_or_default()),
                );
                warn!(dependency = "postgres", error_code = "unreachable", message = %classify_db_error(&e),
                      retry_in_ms = retry.as_millis() as u64, consecutive_failures = n, "postgres probe failed");
                retry
            }
            Err(_) => {
                let retry = POSTGRES_RETRY_INTERVAL;
                let n = dep.failure("probe timed out".into(), None);
                warn!(
                    dependency = "postgres",
                    error_code = "timeout",
                    retry_in_ms = retry.as_millis() as u64,
                    consecutive_failures = n,
                    "postgres probe timed out"
                );
                retry
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_postgres_up_and_docker_only_where_required() {
        let h = Health::default();
        // Nothing probed yet: not ready.
        assert_eq!(h.readiness(false).failing, vec![POSTGRES]);
        h.postgres.success();
        h.docker.failure("connection refused".into(), None);
        assert!(h.readiness(false).is_ready(), "optional docker down");
        let r = h.readiness(true);
        assert_eq!((r.status, r.failing), ("not_ready", vec![DOCKER]));
        h.docker.success();
        h.postgres.failure("io: connection refused".into(), None);
        assert_eq!(h.readiness(true).failing, vec![POSTGRES]);
        h.postgres.success();
        assert!(h.readiness(true).is_ready());
        h.draining.cancel();
        let r = h.readiness(true);
        assert_eq!((r.status, r.failing.len()), ("draining", 0));
    }
}
