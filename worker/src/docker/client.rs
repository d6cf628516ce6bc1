//! The one bollard client of the worker: lazy connection, a deadline on every call,
//! idle timeouts and overall deadlines on every stream, and error mapping callers can
//! branch on.
//!
//! Owns: every call into bollard (Architecture Invariant: only `docker/` imports
//! bollard, and inside it only this file issues requests). Every request goes through
//! [`DockerClient::call`] (or [`DockerClient::stream_next`] for stream items), the single
//! place where a status monitor and a circuit breaker hook in via [`CallObserver`].
//! Must not: know about activities, Postgres or retries.
//!
//! Why our own timeouts: bollard's timeout is whole seconds (trap 3), covers only the
//! response head (F2, trap 4) and defaults to 120 s (R13). So bollard's own timeout is
//! set high as a backstop, and each operation gets a `tokio::time::timeout` sized to it.

use crate::docker::registry_auth::RegistryCredentials;
use bollard::auth::DockerCredentials;
use bollard::container::{AttachContainerResults, LogOutput};
use bollard::models::{
    ContainerCreateBody, ContainerCreateResponse, ContainerInspectResponse, ContainerSummary,
    CreateImageInfo, ImageInspect,
};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, ContainerArchiveInfoOptionsBuilder,
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, DownloadFromContainerOptionsBuilder,
    KillContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Exec, logs, commit and image calls of the other `tools.docker.*` handlers.
pub mod tools;

/// A failed Docker call. `op` names the operation (`create_container`, ...).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The daemon cannot be reached (socket missing, connection refused or reset).
    #[error("docker daemon unavailable during {op}: {message}")]
    Unavailable { op: &'static str, message: String },
    /// Our deadline for the call passed (a hung daemon or a stalled stream).
    #[error("docker {op} timed out after {after:?}")]
    Timeout { op: &'static str, after: Duration },
    /// 404: no such container/image/path.
    #[error("docker {op}: not found: {message}")]
    NotFound { op: &'static str, message: String },
    /// 409: name in use, removal in progress, container not running, ...
    #[error("docker {op}: conflict: {message}")]
    Conflict { op: &'static str, message: String },
    /// Any other answer of the daemon (4xx is our request's fault, 5xx the daemon's).
    #[error("docker {op} failed with status {status}: {message}")]
    Api {
        op: &'static str,
        status: u16,
        message: String,
    },
    /// An error reported inside a stream (pull progress, wait).
    #[error("docker {op}: {message}")]
    Stream { op: &'static str, message: String },
    /// The circuit breaker refused the call without trying it.
    #[error("docker {op} not attempted: {reason}")]
    Rejected { op: &'static str, reason: String },
    /// A registry refused a pull for want of (valid) credentials. The daemon answered,
    /// so this is not a daemon failure, and retrying cannot help.
    #[error("docker {op}: the registry refused access (unauthorized): {message}")]
    Unauthorized { op: &'static str, message: String },
}

impl Error {
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. })
    }

    /// True when the daemon (not our request) is at fault: the monitor counts these,
    /// and the run handler reports them as infrastructure failures (no attempt burned).
    pub fn is_daemon_failure(&self) -> bool {
        match self {
            Error::Unavailable { .. } | Error::Timeout { .. } | Error::Rejected { .. } => true,
            Error::Api { status, .. } => *status >= 500,
            _ => false,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Error::Unavailable { message, .. }
            | Error::NotFound { message, .. }
            | Error::Conflict { message, .. }
            | Error::Api { message, .. }
            | Error::Stream { message, .. }
            | Error::Unauthorized { message, .. } => message,
            Error::Rejected { reason, .. } => reason,
            Error::Timeout { .. } => "timed out",
        }
    }

    fn from_bollard(op: &'static str, e: bollard::errors::Error) -> Self {
        use bollard::errors::Error as B;
        match e {
            B::DockerResponseServerError {
                status_code,
                message,
            } => match status_code {
                404 => Error::NotFound { op, message },
                409 => Error::Conflict { op, message },
                status => Error::Api {
                    op,
                    status,
                    message,
                },
            },
            B::RequestTimeoutError => Error::Timeout {
                op,
                after: Duration::ZERO,
            },
            B::DockerStreamError { error } => Error::Stream { op, message: error },
            B::DockerContainerWaitError { error, code } => Error::Stream {
                op,
                message: format!("wait error (code {code}): {error}"),
            },
            e @ (B::SocketNotFoundError(_)
            | B::IOError { .. }
            | B::HyperResponseError { .. }
            | B::HyperLegacyError { .. }) => Error::Unavailable {
                op,
                message: transport_message(&e),
            },
            // The TLS files of DOCKER_CERT_PATH could not be used.
            e @ (B::CertPathError { .. }
            | B::CertMultipleKeys { .. }
            | B::CertParseError { .. }
            | B::NoNativeCertsError { .. }
            | B::LoadNativeCertsErrors { .. }) => Error::Unavailable {
                op,
                message: format!("TLS setup failed: {e}"),
            },
            other => Error::Api {
                op,
                status: 0,
                message: other.to_string(),
            },
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Texts rustls gives its certificate and handshake failures.
fn looks_like_tls(text: &str) -> bool {
    [
        "invalid peer certificate",
        "received fatal alert",
        "peer sent no certificates",
        "peer is incompatible",
        "peer misbehaved",
    ]
    .iter()
    .any(|m| text.contains(m))
}

/// A transport failure with its causes: hyper's own text ("client error (Connect)")
/// names none, and a TLS failure (a certificate the CA did not sign, a client
/// certificate the daemon refused) is only in the chain.
fn transport_message(e: &bollard::errors::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut tls = None;
    let mut cur = std::error::Error::source(e);
    while let Some(err) = cur {
        let found = err.downcast_ref::<rustls::Error>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        let text = err.to_string();
        if let Some(t) = found {
            tls = Some(t.to_string());
        } else if tls.is_none() && looks_like_tls(&text) {
            // Some layers box the rustls error where no downcast reaches it; its text
            // still says what failed.
            tls = Some(text.clone());
        }
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    match tls {
        Some(t) => format!(
            "TLS handshake with the daemon failed: {t} ({})",
            parts.join(": ")
        ),
        None => parts.join(": "),
    }
}

/// Hook for the Docker status monitor and circuit breaker (issue: soft dependencies).
/// `admit` may refuse a call before it is sent; `record` sees every outcome.
pub trait CallObserver: Send + Sync + 'static {
    fn admit(&self, op: &'static str) -> std::result::Result<(), String>;
    fn record(&self, op: &'static str, outcome: std::result::Result<(), &Error>);
}

/// The client side of Docker's TLS (`DOCKER_TLS_VERIFY`): the CA that signed the
/// daemon's certificate and this client's certificate and key. A missing certificate or
/// key file means no client certificate is offered (as the docker CLI does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `cert.pem` and `key.pem` in a `DOCKER_CERT_PATH` directory.
    pub fn in_dir(dir: &std::path::Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// Timeouts of the client. Defaults follow DOCKER-NOTES "Per-call clients".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSettings {
    /// `unix:///var/run/docker.sock`, a plain socket path, or `tcp://host:port`.
    pub host: String,
    /// TLS for a `tcp://` (or `https://`) host, verifying the daemon against `ca`; none:
    /// plain HTTP. Ignored for unix sockets.
    pub tls: Option<TlsFiles>,
    /// Deadline of short calls: ping, inspect, list, create, start, kill, remove.
    pub call_timeout: Duration,
    /// Added to the stop grace for the stop call's deadline (F9: the daemon answers
    /// only once the container stopped).
    pub stop_margin: Duration,
    /// Longest silence between two items of a stream (pull progress, downloads).
    pub stream_idle_timeout: Duration,
    /// Deadline of an image pull, progress included.
    pub pull_timeout: Duration,
    /// Deadline of one archive upload or download.
    pub transfer_timeout: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            host: "unix:///var/run/docker.sock".to_string(),
            tls: None,
            call_timeout: Duration::from_secs(5),
            stop_margin: Duration::from_secs(15),
            stream_idle_timeout: Duration::from_secs(60),
            pull_timeout: Duration::from_secs(600),
            transfer_timeout: Duration::from_secs(600),
        }
    }
}

/// The exit reported by `wait`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitExit {
    pub code: i64,
    /// The daemon's wait error message, if any (not the process's stderr).
    pub error: Option<String>,
}

/// What [`DockerClient::daemon_clock`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonClock {
    pub id: String,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// What `remove` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// We removed it (or a removal already in progress finished).
    Removed,
    /// It was already gone (404).
    AlreadyGone,
}

/// A container's state as inspect reports it, reduced to what its end means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerEnd {
    /// Running, restarting or paused: not ended.
    pub running: bool,
    /// Created and never started (`StartedAt` is the zero time).
    pub never_started: bool,
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The daemon's own error text of the run (start failures), if any.
    pub error: Option<String>,
}

/// The daemon writes `0001-01-01T00:00:00Z` for "never": that is no time.
fn daemon_time(s: Option<&str>) -> Option<chrono::DateTime<chrono::Utc>> {
    let t = chrono::DateTime::parse_from_rfc3339(s?).ok()?;
    use chrono::Datelike;
    (t.year() > 1970).then(|| t.with_timezone(&chrono::Utc))
}

impl ContainerEnd {
    pub fn of(c: &ContainerInspectResponse) -> Self {
        let st = c.state.clone().unwrap_or_default();
        let running = st.running.unwrap_or(false)
            || st.restarting.unwrap_or(false)
            || st.paused.unwrap_or(false);
        let started_at = daemon_time(st.started_at.as_deref());
        let finished_at = daemon_time(st.finished_at.as_deref());
        Self {
            running,
            never_started: !running && started_at.is_none(),
            exit_code: if running || started_at.is_none() {
                None
            } else {
                st.exit_code
            },
            oom_killed: st.oom_killed.unwrap_or(false),
            started_at,
            finished_at: if running { None } else { finished_at },
            error: st.error.filter(|e| !e.is_empty()),
        }
    }

    /// Ran and ended by now.
    pub fn exited(&self) -> bool {
        !self.running && !self.never_started && self.finished_at.is_some()
    }

    /// What the tracking row records of this end (nothing for a running or never
    /// started container).
    pub fn evidence(&self) -> crate::docker::tracking::ExitEvidence {
        if self.exited() {
            crate::docker::tracking::ExitEvidence {
                exit_code: self.exit_code,
                oom_killed: Some(self.oom_killed),
                finished_at: self.finished_at,
            }
        } else {
            crate::docker::tracking::ExitEvidence::default()
        }
    }
}

/// A boxed byte stream of a download.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;
/// The output half of an attach.
pub type AttachStream =
    Pin<Box<dyn Stream<Item = std::result::Result<LogOutput, bollard::errors::Error>> + Send>>;

/// Cheap to clone; every clone shares the lazily built connection.
#[derive(Clone)]
pub struct DockerClient {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ClientSettings,
    /// Built on first use, not at startup (F5, trap 17): the worker starts while the
    /// daemon is down. Rebuilt after a failure to build; `Docker` clones are cheap.
    docker: Mutex<Option<Docker>>,
    daemon_id: Mutex<Option<String>>,
    observer: Mutex<Option<Arc<dyn CallObserver>>>,
}

impl std::fmt::Debug for DockerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerClient")
            .field("host", &self.inner.settings.host)
            .finish_non_exhaustive()
    }
}

/// bollard's own timeout: a backstop far above ours, in whole seconds (trap 3).
const BOLLARD_BACKSTOP_SECS: u64 = 24 * 3600;

impl DockerClient {
    pub fn new(settings: ClientSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                docker: Mutex::new(None),
                daemon_id: Mutex::new(None),
                observer: Mutex::new(None),
            }),
        }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.inner.settings
    }

    /// Installs the monitor / circuit breaker hook.
    pub fn set_observer(&self, observer: Arc<dyn CallObserver>) {
        *lock(&self.inner.observer) = Some(observer);
    }

    /// Installs the hook unless one is installed already (one monitor per client);
    /// returns whether it was installed.
    pub fn set_observer_once(&self, observer: Arc<dyn CallObserver>) -> bool {
        let mut slot = lock(&self.inner.observer);
        if slot.is_some() {
            return false;
        }
        *slot = Some(observer);
        true
    }

    /// Connects for a call that does not go through [`DockerClient::call`] (streams),
    /// reporting a failure to connect to the observer like any other failure.
    fn connect_observed(
        &self,
        op: &'static str,
        obs: &Option<Arc<dyn CallObserver>>,
    ) -> Result<Docker> {
        self.connect(op).inspect_err(|e| {
            Self::record(obs, op, &Err::<(), _>(e.clone()));
        })
    }

    fn connect(&self, op: &'static str) -> Result<Docker> {
        let mut slot = lock(&self.inner.docker);
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let host = self.inner.settings.host.as_str();
        let tcp = host.starts_with("tcp://") || host.starts_with("https://");
        let built = if let (true, Some(tls)) = (tcp, &self.inner.settings.tls) {
            // bollard loads the client key through the process's rustls provider: make
            // sure one (ring, the only one built in) is installed; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
            Docker::connect_with_ssl(
                host,
                &tls.key,
                &tls.cert,
                &tls.ca,
                BOLLARD_BACKSTOP_SECS,
                bollard::API_DEFAULT_VERSION,
            )
        } else if tcp || host.starts_with("http://") {
            Docker::connect_with_http(host, BOLLARD_BACKSTOP_SECS, bollard::API_DEFAULT_VERSION)
        } else {
            let path = host.strip_prefix("unix://").unwrap_or(host);
            Docker::connect_with_unix(path, BOLLARD_BACKSTOP_SECS, bollard::API_DEFAULT_VERSION)
        };
        let docker = built.map_err(|e| Error::from_bollard(op, e))?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    fn observer(&self) -> Option<Arc<dyn CallObserver>> {
        lock(&self.inner.observer).clone()
    }

    fn admit(&self, op: &'static str) -> Result<Option<Arc<dyn CallObserver>>> {
        let obs = self.observer();
        if let Some(o) = &obs {
            o.admit(op)
                .map_err(|reason| Error::Rejected { op, reason })?;
        }
        Ok(obs)
    }

    fn record<T>(obs: &Option<Arc<dyn CallObserver>>, op: &'static str, r: &Result<T>) {
        if let Some(o) = obs {
            o.record(op, r.as_ref().map(|_| ()));
        }
    }

    /// Runs one request with a deadline. Every non-stream call goes through here.
    pub async fn call<T, F, Fut>(&self, op: &'static str, timeout: Duration, f: F) -> Result<T>
    where
        F: FnOnce(Docker) -> Fut,
        Fut: Future<Output = std::result::Result<T, bollard::errors::Error>>,
    {
        let obs = self.admit(op)?;
        let started = Instant::now();
        let res = match self.connect(op) {
            Err(e) => Err(e),
            Ok(docker) => match tokio::time::timeout(timeout, f(docker)).await {
                Err(_) => Err(Error::Timeout { op, after: timeout }),
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(match Error::from_bollard(op, e) {
                    Error::Timeout { op, .. } => Error::Timeout { op, after: timeout },
                    other => other,
                }),
            },
        };
        Self::record(&obs, op, &res);
        crate::metrics::docker_call(op, started.elapsed(), res.is_ok());
        res
    }

    /// Next item of a stream, within `idle` of the previous one and before `deadline`.
    /// `Ok(None)` is the end of the stream.
    pub async fn stream_next<S, T>(
        &self,
        op: &'static str,
        stream: &mut S,
        idle: Duration,
        deadline: Instant,
    ) -> Result<Option<T>>
    where
        S: Stream<Item = std::result::Result<T, bollard::errors::Error>> + Unpin,
    {
        let now = Instant::now();
        let budget = idle.min(deadline.saturating_duration_since(now));
        let res = match tokio::time::timeout(budget, stream.next()).await {
            Err(_) => Err(Error::Timeout { op, after: budget }),
            Ok(None) => Ok(None),
            Ok(Some(Ok(v))) => Ok(Some(v)),
            Ok(Some(Err(e))) => Err(Error::from_bollard(op, e)),
        };
        // Only failures and the end of a stream are worth reporting to the monitor;
        // per-item successes would flood it.
        if let Err(e) = &res {
            if let Some(o) = self.observer() {
                o.record(op, Err(e));
            }
        }
        res
    }

    // ---------------------------------------------------------------- system

    pub async fn ping(&self) -> Result<()> {
        let t = self.inner.settings.call_timeout;
        self.call("ping", t, |d| async move { d.ping().await.map(|_| ()) })
            .await
    }

    /// The daemon's ID (stable across daemon restarts): identifies which daemon a
    /// container lives on, for the GC and the tracking table. Cached after first success.
    pub async fn daemon_id(&self) -> Result<String> {
        if let Some(id) = lock(&self.inner.daemon_id).clone() {
            return Ok(id);
        }
        let t = self.inner.settings.call_timeout;
        let info = self
            .call("info", t, |d| async move { d.info().await })
            .await?;
        let id = info.id.filter(|s| !s.is_empty()).ok_or(Error::Api {
            op: "info",
            status: 0,
            message: "daemon reported no ID".into(),
        })?;
        *lock(&self.inner.daemon_id) = Some(id.clone());
        Ok(id)
    }

    /// The daemon's ID and its current time (`info().system_time`), for the garbage
    /// collector: container ages are measured on the daemon's clock, never the host's
    /// (trap 28). Not cached: the time is read at every call.
    pub async fn daemon_clock(&self) -> Result<DaemonClock> {
        let t = self.inner.settings.call_timeout;
        let info = self
            .call("info", t, |d| async move { d.info().await })
            .await?;
        let bad = |message: String| Error::Api {
            op: "info",
            status: 0,
            message,
        };
        let id = info
            .id
            .filter(|s| !s.is_empty())
            .ok_or_else(|| bad("daemon reported no ID".into()))?;
        let raw = info
            .system_time
            .ok_or_else(|| bad("daemon reported no system time".into()))?;
        let now = chrono::DateTime::parse_from_rfc3339(&raw)
            .map_err(|e| bad(format!("daemon system time {raw:?}: {e}")))?
            .with_timezone(&chrono::Utc);
        *lock(&self.inner.daemon_id) = Some(id.clone());
        Ok(DaemonClock { id, now })
    }

    // ---------------------------------------------------------------- images

    /// `Ok(None)` when the image is absent.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageInspect>> {
        let t = self.inner.settings.call_timeout;
        let r = reference.to_string();
        match self
            .call(
                "inspect_image",
                t,
                |d| async move { d.inspect_image(&r).await },
            )
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Pulls `reference` (always with a tag or digest, trap 23), consuming the whole
    /// progress stream; `progress` sees each item (for heartbeat details). `auth` goes
    /// to the daemon as `X-Registry-Auth` (bollard never logs that header). A refusal
    /// for want of credentials is [`Error::Unauthorized`], never a daemon failure.
    pub async fn pull_image(
        &self,
        reference: &str,
        auth: Option<&RegistryCredentials>,
        mut progress: impl FnMut(&CreateImageInfo) + Send,
    ) -> Result<()> {
        let op = "pull_image";
        let (name, tag) = split_reference(reference);
        let opts = CreateImageOptionsBuilder::default()
            .from_image(&name)
            .tag(&tag)
            .build();
        let obs = self.admit(op)?;
        let docker = self.connect_observed(op, &obs)?;
        let credentials = auth.map(docker_credentials);
        let mut stream = docker.create_image(Some(opts), None, credentials).boxed();
        let started = Instant::now();
        let deadline = started + self.inner.settings.pull_timeout;
        let idle = self.inner.settings.stream_idle_timeout;
        let now = Instant::now();
        let mut budget = idle.min(deadline.saturating_duration_since(now));
        loop {
            let item = match tokio::time::timeout(budget, stream.next()).await {
                Err(_) => Err(Error::Timeout { op, after: budget }),
                Ok(None) => break,
                Ok(Some(Ok(v))) => Ok(v),
                Ok(Some(Err(e))) => Err(pull_refusal(Error::from_bollard(op, e))),
            };
            match item {
                Ok(info) => progress(&info),
                Err(e) => {
                    let e = match e {
                        Error::Api { .. } | Error::Stream { .. } => {
                            self.diagnose_pull(reference, auth, e).await
                        }
                        other => other,
                    };
                    crate::metrics::docker_pull(started.elapsed(), false);
                    Self::record(&obs, op, &Err::<(), _>(e.clone()));
                    return Err(e);
                }
            }
            budget = idle.min(deadline.saturating_duration_since(Instant::now()));
        }
        crate::metrics::docker_pull(started.elapsed(), true);
        Self::record(&obs, op, &Ok(()));
        Ok(())
    }

    /// A pull the daemon failed for an unclear reason: when a registry refuses a pull
    /// for want of credentials over HTTPS, a daemon that may also use plain HTTP for it
    /// (loopback and other insecure registries) tries that next and reports only that
    /// attempt's failure (a reset, "HTTP request to an HTTPS server"), and the retry
    /// would do the same. One manifest inspect with the same credentials, which does not
    /// fall back, tells a refusal apart: then the pull fails as
    /// [`Error::Unauthorized`] with the inspect's words; otherwise the pull's error stands.
    async fn diagnose_pull(
        &self,
        reference: &str,
        auth: Option<&RegistryCredentials>,
        pull_error: Error,
    ) -> Error {
        let t = self.inner.settings.call_timeout;
        let r = reference.to_string();
        let credentials = auth.map(docker_credentials);
        match self
            .call("inspect_distribution", t, |d| async move {
                d.inspect_registry_image(&r, credentials).await
            })
            .await
        {
            Err(e) => match pull_refusal(e) {
                Error::Unauthorized { message, .. } => Error::Unauthorized {
                    op: "pull_image",
                    message,
                },
                _ => pull_error,
            },
            Ok(_) => pull_error,
        }
    }

    // ---------------------------------------------------------------- containers

    pub async fn create_container(
        &self,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<ContainerCreateResponse> {
        let t = self.inner.settings.call_timeout;
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        self.call("create_container", t, |d| async move {
            d.create_container(Some(opts), body).await
        })
        .await
    }

    /// `Ok(None)` when the container does not exist.
    pub async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInspectResponse>> {
        let t = self.inner.settings.call_timeout;
        let id = id.to_string();
        match self
            .call("inspect_container", t, |d| async move {
                d.inspect_container(&id, None).await
            })
            .await
        {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every container (all states, trap 9) matching the label filters (`k=v` or `k`).
    pub async fn list_by_labels(&self, labels: &[String]) -> Result<Vec<ContainerSummary>> {
        let t = self.inner.settings.call_timeout;
        let mut filters = HashMap::new();
        filters.insert("label".to_string(), labels.to_vec());
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        self.call("list_containers", t, |d| async move {
            d.list_containers(Some(opts)).await
        })
        .await
    }

    /// Attaches to stdout/stderr before start (`logs=false`: nothing is replayed).
    pub async fn attach(&self, id: &str) -> Result<AttachStream> {
        let t = self.inner.settings.call_timeout;
        let id = id.to_string();
        let opts = AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdout(true)
            .stderr(true)
            .logs(false)
            .build();
        let AttachContainerResults { output, input } = self
            .call("attach_container", t, |d| async move {
                d.attach_container(&id, Some(opts)).await
            })
            .await?;
        // We never write to stdin; dropping the writer does not close the read half.
        drop(input);
        Ok(output)
    }

    /// The daemon's copy of stdout and stderr, not followed and without timestamps: the
    /// output of a container whose attach is gone (an exited container adopted by a
    /// retry). Read it like an attach stream; it ends after the last line.
    pub fn output_of(&self, id: &str) -> Result<AttachStream> {
        let op = "logs";
        let obs = self.admit(op)?;
        let docker = self.connect_observed(op, &obs)?;
        let opts = bollard::query_parameters::LogsOptionsBuilder::default()
            .follow(false)
            .stdout(true)
            .stderr(true)
            .timestamps(false)
            .tail("all")
            .build();
        Ok(docker.logs(id, Some(opts)).boxed())
    }

    /// How the container stands, read by inspect: `Ok(None)` when it does not exist.
    /// The evidence of its end (exit code, `FinishedAt`) that the tracking row records
    /// before the container is removed.
    pub async fn container_end(&self, id: &str) -> Result<Option<ContainerEnd>> {
        Ok(self
            .inspect_container(id)
            .await?
            .map(|c| ContainerEnd::of(&c)))
    }

    pub async fn start_container(&self, id: &str) -> Result<()> {
        let t = self.inner.settings.call_timeout;
        let id = id.to_string();
        self.call("start_container", t, |d| async move {
            d.start_container(&id, None).await
        })
        .await
    }

    /// Waits for the container to stop (`not-running`, only after start: trap 2).
    /// A non-zero exit is a normal result here, not an error (trap 1). Bounded by
    /// `max`: the caller races it with its own deadline and cancellation anyway.
    pub async fn wait_container(&self, id: &str, max: Duration) -> Result<WaitExit> {
        let op = "wait_container";
        let obs = self.admit(op)?;
        let docker = self.connect_observed(op, &obs)?;
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut stream = docker.wait_container(id, Some(opts)).boxed();
        let res = match tokio::time::timeout(max, stream.next()).await {
            Err(_) => Err(Error::Timeout { op, after: max }),
            Ok(None) => Err(Error::Stream {
                op,
                message: "wait stream ended without a status".into(),
            }),
            Ok(Some(Ok(r))) => Ok(WaitExit {
                code: r.status_code,
                error: r.error.and_then(|e| e.message).filter(|m| !m.is_empty()),
            }),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { error, code }))) => {
                Ok(WaitExit {
                    code,
                    error: Some(error).filter(|m| !m.is_empty()),
                })
            }
            Ok(Some(Err(e))) => Err(Error::from_bollard(op, e)),
        };
        Self::record(&obs, op, &res);
        res
    }

    /// SIGTERM, then SIGKILL after `grace` (done by the daemon). The deadline is
    /// `grace + stop_margin` (trap 5); a 304 (not running) is success.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        // Round up: a grace of 1.5 s must not become 1 s.
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let t = Duration::from_secs(secs) + self.inner.settings.stop_margin;
        let id = id.to_string();
        let opts = StopContainerOptionsBuilder::default()
            .t(i32::try_from(secs).unwrap_or(i32::MAX))
            .build();
        match self
            .call("stop_container", t, |d| async move {
                d.stop_container(&id, Some(opts)).await
            })
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    /// SIGKILL; "not running" (409) and "no such container" (404) are success.
    pub async fn kill_container(&self, id: &str) -> Result<()> {
        let t = self.inner.settings.call_timeout;
        let id = id.to_string();
        let opts = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self
            .call("kill_container", t, |d| async move {
                d.kill_container(&id, Some(opts)).await
            })
            .await
        {
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            other => other,
        }
    }

    /// `force=true, v=true` (trap 7). 404 = already gone; 409 "removal already in
    /// progress" = poll until gone (trap 8). Confirms with inspect.
    pub async fn remove_container(&self, id: &str) -> Result<Removed> {
        let t = self.inner.settings.call_timeout;
        let deadline = Instant::now() + t * 6;
        let mut outcome = Removed::Removed;
        loop {
            let idc = id.to_string();
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self
                .call("remove_container", t, |d| async move {
                    d.remove_container(&idc, Some(opts)).await
                })
                .await
            {
                Ok(()) => {}
                Err(e) if e.is_not_found() => outcome = Removed::AlreadyGone,
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            match self.inspect_container(id).await? {
                None => return Ok(outcome),
                Some(_) if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        op: "remove_container",
                        after: t * 6,
                    })
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    // ---------------------------------------------------------------- archives

    /// Uploads an uncompressed tar (trap 16) extracted at `path` (an existing dir).
    /// Bounded by the transfer deadline overall and by the stream idle timeout between
    /// two chunks taken by the connection (and after the last one, for the answer): a
    /// daemon that stops reading fails the upload in seconds, not at the deadline.
    pub async fn upload_archive(
        &self,
        id: &str,
        path: &str,
        body: impl Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + 'static,
    ) -> Result<()> {
        let t = self.inner.settings.transfer_timeout;
        let idle = self.inner.settings.stream_idle_timeout;
        let id = id.to_string();
        let opts = UploadToContainerOptionsBuilder::default()
            .path(path)
            .no_overwrite_dir_non_dir("true")
            .build();
        let progress = Arc::new(Mutex::new(Instant::now()));
        let seen = progress.clone();
        let body = body.inspect(move |_| *lock(&seen) = Instant::now());
        let started = Instant::now();
        let res = self
            .call("upload_archive", t, |d| async move {
                let upload = d.upload_to_container(&id, Some(opts), bollard::body_try_stream(body));
                tokio::pin!(upload);
                let mut check = tokio::time::interval(idle.min(Duration::from_secs(1)));
                loop {
                    tokio::select! {
                        r = &mut upload => return r,
                        _ = check.tick() => {
                            if lock(&progress).elapsed() >= idle {
                                // Mapped to `Timeout` by `call`.
                                return Err(bollard::errors::Error::RequestTimeoutError);
                            }
                        }
                    }
                }
            })
            .await;
        match res {
            // The idle watchdog fired, not the overall deadline: say which.
            Err(Error::Timeout { op, .. }) if started.elapsed() < t => {
                Err(Error::Timeout { op, after: idle })
            }
            other => other,
        }
    }

    /// Whether `path` exists in the container (HEAD on the archive endpoint).
    pub async fn path_exists(&self, id: &str, path: &str) -> Result<bool> {
        let t = self.inner.settings.call_timeout;
        let id = id.to_string();
        let opts = ContainerArchiveInfoOptionsBuilder::default()
            .path(path)
            .build();
        match self
            .call("archive_info", t, |d| async move {
                d.get_container_archive_info(&id, Some(opts)).await
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The tar of `path`: each chunk within the idle timeout, the whole within the
    /// transfer deadline. Drop the stream to abort (trap 15: never leave it half read
    /// and alive, it holds the container lock).
    pub fn download_archive(&self, id: &str, path: &str) -> Result<ByteStream> {
        let op = "download_archive";
        let obs = self.admit(op)?;
        let docker = self.connect_observed(op, &obs)?;
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let inner = docker.download_from_container(id, Some(opts)).boxed();
        let idle = self.inner.settings.stream_idle_timeout;
        let deadline = Instant::now() + self.inner.settings.transfer_timeout;
        let client = self.clone();
        let state = (inner, client, obs, false);
        let s = futures::stream::unfold(state, move |(mut inner, client, obs, done)| async move {
            if done {
                return None;
            }
            match client.stream_next(op, &mut inner, idle, deadline).await {
                Ok(Some(b)) => Some((Ok(b), (inner, client, obs, false))),
                Ok(None) => {
                    Self::record(&obs, op, &Ok(()));
                    None
                }
                Err(e) => Some((Err(e), (inner, client, obs, true))),
            }
        });
        Ok(Box::pin(s))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The Engine API's form of our credentials (sent as `X-Registry-Auth`).
fn docker_credentials(a: &RegistryCredentials) -> DockerCredentials {
    DockerCredentials {
        username: a.username.clone(),
        password: a.password.as_ref().map(|p| p.expose().to_string()),
        identitytoken: a.identity_token.as_ref().map(|t| t.expose().to_string()),
        serveraddress: Some(a.server.clone()),
        ..Default::default()
    }
}

/// A pull error that says the registry refused access becomes [`Error::Unauthorized`].
/// The daemon reports these as a 500 with the registry's words: `unauthorized`,
/// `authentication required`, `no basic auth credentials`, `denied`.
fn pull_refusal(e: Error) -> Error {
    let (op, message) = match &e {
        Error::Api { op, message, .. } | Error::Stream { op, message } => (*op, message),
        _ => return e,
    };
    let lower = message.to_ascii_lowercase();
    let refused = [
        "unauthorized",
        "authentication required",
        "no basic auth credentials",
        "denied",
    ]
    .iter()
    .any(|p| lower.contains(p));
    if refused {
        Error::Unauthorized {
            op,
            message: message.clone(),
        }
    } else {
        e
    }
}

/// Splits `name[:tag][@digest]` into the `fromImage` and `tag` parameters of a pull.
/// A digest wins over a tag; a bare name gets `latest` (never "all tags", trap 23).
pub fn split_reference(reference: &str) -> (String, String) {
    if let Some((name, digest)) = reference.rsplit_once('@') {
        // `name:tag@digest`: the digest identifies the image; drop the tag.
        let name = strip_tag(name);
        return (name.to_string(), digest.to_string());
    }
    let last_slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            reference[..last_slash + i].to_string(),
            reference[last_slash + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "latest".to_string()),
    }
}

fn strip_tag(name: &str) -> &str {
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let s = |r: &str| split_reference(r);
        assert_eq!(s("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(s("busybox:1.36"), ("busybox".into(), "1.36".into()));
        assert_eq!(
            s("127.0.0.1:5000/highway-test/busybox:1"),
            ("127.0.0.1:5000/highway-test/busybox".into(), "1".into())
        );
        assert_eq!(
            s("127.0.0.1:5000/x"),
            ("127.0.0.1:5000/x".into(), "latest".into())
        );
        assert_eq!(s("a/b:1@sha256:abcd"), ("a/b".into(), "sha256:abcd".into()));
    }

    #[tokio::test]
    async fn missing_socket_is_unavailable_not_a_panic() {
        let c = DockerClient::new(ClientSettings {
            host: "unix:///nonexistent/docker.sock".into(),
            ..ClientSettings::default()
        });
        let err = c.ping().await.unwrap_err();
        assert!(matches!(err, Error::Unavailable { .. }), "{err}");
        assert!(err.is_daemon_failure());
    }
}
