//! The database: connection pools (work and maintenance), the embedded migrations, and
//! the private Postgres cluster that `highway up` starts ([`embedded`]).
//!
//! Must not know about activities or Docker: it hands out pools and nothing else.
//!
//! TLS follows libpq's URL parameters (`sslmode`, `sslrootcert`, `sslcert`, `sslkey`,
//! or the `PGSSL*` variables), through sqlx with rustls. Failures that waiting cannot
//! fix (a certificate the CA did not sign, a host name the certificate does not name,
//! a server refusing our credentials or our lack of TLS) are [`Error::Tls`] /
//! [`Error::Refused`] and stop the start at once instead of being retried.

pub mod embedded;
pub mod settings;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
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
    /// The TLS connection failed in a way a retry cannot fix: the reason names it (the
    /// CA, the host name, a certificate or key file).
    #[error("TLS connection to Postgres failed: {reason}")]
    Tls { reason: String },
    /// The server refused this client (pg_hba.conf, password, TLS required): not retried.
    #[error("Postgres refused the connection: {reason}")]
    Refused { reason: String },
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
    check_tls_files(url)?;
    let mut connect = PgConnectOptions::from_str(url)
        .map_err(|e| Error::InvalidUrl(redact_url_error(url, &e.to_string())))?;
    // libpq: `require` with a root certificate given verifies the chain, as verify-ca.
    if matches!(connect.get_ssl_mode(), PgSslMode::Require)
        && tls_param(url, "sslrootcert", "PGSSLROOTCERT").is_some()
    {
        connect = connect.ssl_mode(PgSslMode::VerifyCa);
    }
    let connect = connect
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
        .map_err(|e| fatal(&e).unwrap_or(Error::Connect(e)))?;
    Ok(pool)
}

/// Applies every pending migration (idempotent; safe with many workers starting at
/// once: sqlx takes an advisory lock).
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Applies the migrations, waiting with backoff while the database is unreachable (a
/// process may start during an outage). Returns false when `cancel` fired first, and an
/// error at once for what waiting cannot fix (TLS, refused credentials: [`fatal`]).
pub async fn migrate_when_available(
    pool: &PgPool,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<bool, Error> {
    let mut delay = Duration::from_millis(200);
    loop {
        match migrate(pool).await {
            Ok(()) => return Ok(true),
            Err(Error::Migrate(
                sqlx::migrate::MigrateError::Execute(e)
                | sqlx::migrate::MigrateError::ExecuteMigration(e, _),
            )) if fatal(&e).is_some() => return Err(fatal(&e).expect("checked")),
            Err(e) => {
                tracing::warn!(dependency = "postgres", error = %e, retry_in_ms = delay.as_millis() as u64,
                               "migrations not applied yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => return Ok(false),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The error to stop at, for a connection failure that waiting cannot fix: a TLS
/// failure (named: the CA, the host name, a file) or the server refusing this client
/// (SQLSTATE class 28: pg_hba.conf, password). `None` for everything else (an outage).
pub fn fatal(e: &sqlx::Error) -> Option<Error> {
    if let Some(reason) = tls_failure(e) {
        return Some(Error::Tls { reason });
    }
    match e {
        sqlx::Error::Tls(inner) => Some(Error::Tls {
            reason: inner.to_string(),
        }),
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("28")) => {
            let msg = db.message();
            let hint = if msg.contains("no encryption") {
                " (the server accepts only TLS connections: use sslmode=require or stronger)"
            } else {
                ""
            };
            Some(Error::Refused {
                reason: format!("{msg}{hint}"),
            })
        }
        _ => None,
    }
}

/// A rustls failure inside a connection error, explained. The handshake reports it as
/// an I/O error wrapping the rustls error.
fn tls_failure(e: &sqlx::Error) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let found = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = found {
            return Some(explain_tls(tls));
        }
        cur = err.source();
    }
    None
}

fn explain_tls(e: &rustls::Error) -> String {
    use rustls::{CertificateError as C, Error as E};
    match e {
        E::InvalidCertificate(C::UnknownIssuer) => format!(
            "the server's certificate is not signed by a trusted CA (sslrootcert names the CA to trust): {e}"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
            format!("the server's certificate does not name the host connected to (sslmode=verify-full checks it): {e}")
        }
        E::AlertReceived(_) => format!(
            "the server ended the TLS handshake (a client certificate it does not accept? check sslcert and sslkey): {e}"
        ),
        other => other.to_string(),
    }
}

/// The certificate and key files the URL (or the `PGSSL*` variables) names must be
/// readable: checked before connecting, so a typo is an error naming the parameter
/// rather than an I/O error retried as an outage.
fn check_tls_files(url: &str) -> Result<(), Error> {
    for (param, env) in [
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
    ] {
        let Some(path) = tls_param(url, param, env) else {
            continue;
        };
        // sqlx also takes inline PEM here.
        if path.trim_start().starts_with("-----BEGIN") {
            continue;
        }
        if let Err(e) = std::fs::metadata(&path).and_then(|_| std::fs::File::open(&path)) {
            return Err(Error::Tls {
                reason: format!("{param}: cannot read {path}: {e}"),
            });
        }
    }
    Ok(())
}

/// A TLS parameter of the URL's query, else its `PGSSL*` variable (as libpq reads them).
fn tls_param(url: &str, param: &str, env: &str) -> Option<String> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == param)
        .map(|(_, v)| percent_decode(v))
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// A URL with its password (user info or a `password=` parameter) replaced by `***`,
/// for messages and logs.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = redact_userinfo(base);
    match query {
        None => base,
        Some(q) => {
            let q: Vec<String> = q
                .split('&')
                .map(|kv| match kv.split_once('=') {
                    Some((k, _)) if k == "password" => format!("{k}=***"),
                    _ => kv.to_string(),
                })
                .collect();
            format!("{base}?{}", q.join("&"))
        }
    }
}

fn redact_userinfo(url: &str) -> String {
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
        assert_eq!(
            redact_url("postgres://u@h/db?sslmode=require&password=pw"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
    }

    #[test]
    fn tls_files_are_checked_before_connecting_naming_the_parameter() {
        let err = lazy_pool(
            "postgres://u:pw@h/db?sslmode=verify-full&sslrootcert=/nonexistent%2Fca.pem",
            &PoolOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("sslrootcert: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        assert!(!err.contains("pw"), "{err}");
        assert_eq!(percent_decode("a%20b+c%zz%4"), "a b c%zz%4");
    }
}
