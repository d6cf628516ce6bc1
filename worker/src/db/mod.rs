//! The database: connection pools (work and maintenance), the embedded migrations, and
//! the private Postgres cluster that `highway up` starts ([`embedded`]).
//!
//! Must not know about activities or Docker: it hands out pools and nothing else.

pub mod embedded;
pub mod settings;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use std::str::FromStr;
use std::time::Duration;

/// The migrations at the workspace root, embedded at build time (`build.rs` re-runs on change).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Errors callers branch on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("private Postgres cluster: {0}")]
    Embedded(String),
}

/// Pool settings.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long a caller waits for a connection before the call fails fast (an outage
    /// answers 503 quickly instead of hanging).
    pub acquire_timeout: Duration,
    pub application_name: String,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(3),
            application_name: "highway".into(),
        }
    }
}

/// Parses the URL without connecting: the pool connects lazily, so the process starts
/// (and `/health` answers "down") while Postgres is unreachable.
pub fn lazy_pool(url: &str, opts: &PoolOptions) -> Result<PgPool, Error> {
    let connect = PgConnectOptions::from_str(url)
        .map_err(|e| Error::InvalidUrl(redact_url_error(url, &e.to_string())))?
        .application_name(&opts.application_name)
        // Statements that hang (a blackholed network) must not hold a worker forever.
        .options([
            ("statement_timeout", "30s"),
            ("idle_in_transaction_session_timeout", "60s"),
        ]);
    Ok(PgPoolOptions::new()
        .max_connections(opts.max_connections)
        .min_connections(0)
        .acquire_timeout(opts.acquire_timeout)
        // A connection idle for a while is pinged before use, so one killed by
        // pg_terminate_backend or a restart is replaced instead of surfacing an error.
        // Busy connections are not pinged (a round trip per query would halve
        // throughput); callers retry a connection lost mid-call.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for < Duration::from_millis(500) {
                    return Ok(true);
                }
                use sqlx::Connection;
                Ok(conn.ping().await.is_ok())
            })
        })
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
        .connect_lazy_with(connect))
}

/// Connects and checks the connection now.
pub async fn connect(url: &str, opts: &PoolOptions) -> Result<PgPool, Error> {
    let pool = lazy_pool(url, opts)?;
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .map_err(Error::Connect)?;
    Ok(pool)
}

/// Applies every pending migration (idempotent; safe with many workers starting at
/// once: sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Applies the migrations, waiting with backoff while the database is unreachable (a
/// process may start during an outage). Returns false when `cancel` fired first.
pub async fn migrate_when_available(
    pool: &PgPool,
    cancel: &tokio_util::sync::CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match migrate(pool).await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(dependency = "postgres", error = %e, retry_in_ms = delay.as_millis() as u64,
                               "migrations not applied yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// True for errors that mean "the database is unreachable right now".
pub fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            // 57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now, 08xxx connection exceptions
            db.code()
                .map(|c| c.starts_with("57P0") || c.starts_with("08"))
                .unwrap_or(false)
        }
        _ => false,
    }
}

/// A URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                if userinfo.contains(':') {
                    format!("{scheme}://{user}:***@{host}")
                } else {
                    format!("{scheme}://{user}@{host}")
                }
            }
            None => url.to_owned(),
        },
        None => "***".to_owned(),
    }
}

fn redact_url_error(url: &str, msg: &str) -> String {
    msg.replace(url, &redact_url(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_password() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }
}
