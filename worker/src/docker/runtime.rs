//! [`DockerRuntime`]: what every `tools.docker.*` handler shares — the bollard client,
//! the Postgres pool, the Docker settings, this worker's identity and deployment, the
//! secret resolver, the registry credentials, the artifact store, and the tracker of background cleanups.
//!
//! Owns: turning `DockerConfig` into the concrete limits of the run handler
//! ([`RunSettings`]), and the readiness flag the status monitor will drive.
//! Must not: start anything at construction (the daemon may be down, F5).

use crate::config::docker::ArtifactStoreSetting;
use crate::config::docker::DockerConfig;
use crate::docker::artifacts::{ArtifactStore, Backend};
use crate::docker::client::DockerClient;
use crate::docker::deployment::Deployment;
use crate::docker::logs::LogSettings;
use crate::docker::registry_store::RegistryAuth;
use crate::docker::secrets::{EnvSecretResolver, SecretResolver};
use crate::docker::tario::TarLimits;
use sqlx::PgPool;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Limits and intervals of one run, derived from [`DockerConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    pub logs: LogSettings,
    pub input_limits: TarLimits,
    pub output_limits: TarLimits,
    /// After the container exited, how long the attach stream may take to end by itself
    /// (bollard#251) before the reader is stopped.
    pub attach_drain_grace: Duration,
    /// How often the wait loop also inspects the container (a hung wait stream must not
    /// hang the run; the inspect has its own short deadline).
    pub liveness_interval: Duration,
    /// Longest wait for queued log lines to be written at the end of a run.
    pub log_flush_timeout: Duration,
    /// `auto_remove: false` without `retention`: how long the container is kept.
    pub default_retention: Duration,
    /// Default stop grace when a run does not set one.
    pub stop_grace: Duration,
    /// Test hook: make the handler panic at a step, to prove cleanup covers panics.
    /// Always `None` outside tests.
    pub failpoint: Option<Failpoint>,
}

/// Where [`RunSettings::failpoint`] panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Right after the container was created and recorded.
    PanicAfterCreate,
    /// Right after the container started.
    PanicAfterStart,
}

impl RunSettings {
    pub fn from_config(cfg: &DockerConfig) -> Self {
        let capture = usize::try_from(cfg.capture_bytes.0).unwrap_or(usize::MAX);
        Self {
            logs: LogSettings {
                capture_bytes: capture,
                max_stored_lines: cfg.activity_log_lines,
                ..LogSettings::default()
            },
            input_limits: TarLimits {
                max_bytes: cfg.input_max_bytes.0,
                max_entries: 100_000,
            },
            output_limits: TarLimits {
                max_bytes: cfg.output_max_bytes.0,
                max_entries: 100_000,
            },
            attach_drain_grace: Duration::from_secs(2),
            liveness_interval: Duration::from_secs(10),
            log_flush_timeout: Duration::from_secs(10),
            default_retention: Duration::from_secs(3600),
            stop_grace: cfg.stop_grace.0,
            failpoint: None,
        }
    }
}

/// Shared by the `tools.docker.*` handlers; build one per worker and pass an `Arc` to
/// [`crate::docker::register`].
pub struct DockerRuntime {
    pub client: DockerClient,
    pub pool: PgPool,
    pub config: DockerConfig,
    pub worker_id: Uuid,
    /// The deployment name and the database's identity, stamped on every container;
    /// cleanup only touches containers carrying both.
    pub deployment: Deployment,
    pub secrets: Arc<dyn SecretResolver>,
    /// Credentials of private registries, looked up at every pull.
    pub registries: RegistryAuth,
    pub artifacts: ArtifactStore,
    pub settings: RunSettings,
    /// Cleanups that had to outlive their handler (a handler future dropped mid-run).
    /// `drain` waits for them, so none is ever abandoned at shutdown.
    tracker: TaskTracker,
    /// Fires when `drain` begins: background retries make their last try and end.
    stopping: CancellationToken,
    /// False while the daemon is known to be down: the worker stops claiming docker
    /// kinds. Driven by the status monitor; true until it says otherwise.
    ready: AtomicBool,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("client", &self.client)
            .field("worker_id", &self.worker_id)
            .field("deployment", &self.deployment)
            .finish_non_exhaustive()
    }
}

/// The artifact store `config` asks for.
fn artifact_store(config: &DockerConfig, pool: PgPool, artifact_dir: PathBuf) -> ArtifactStore {
    match &config.artifact_store {
        ArtifactStoreSetting::Postgres => ArtifactStore::postgres_reading_fs(pool, artifact_dir),
        ArtifactStoreSetting::Filesystem(dir) => ArtifactStore::new(
            pool,
            Backend::Filesystem {
                dir: dir.clone().unwrap_or(artifact_dir),
            },
        ),
    }
}

impl DockerRuntime {
    /// A runtime with the environment secret resolver. `artifact_dir` is the directory
    /// of filesystem artifacts: where `HIGHWAY_ARTIFACT_STORE=fs` writes them, and where
    /// the Postgres store (the default) still reads those written earlier.
    pub fn new(config: DockerConfig, pool: PgPool, worker_id: Uuid, artifact_dir: PathBuf) -> Self {
        let client = config.client();
        Self::with_client(config, client, pool, worker_id, artifact_dir)
    }

    /// Same, with a client built by the caller (tests point it at a fault proxy).
    pub fn with_client(
        config: DockerConfig,
        client: DockerClient,
        pool: PgPool,
        worker_id: Uuid,
        artifact_dir: PathBuf,
    ) -> Self {
        let artifacts = artifact_store(&config, pool.clone(), artifact_dir);
        Self {
            settings: RunSettings::from_config(&config),
            deployment: Deployment::new(config.deployment.clone(), config.adopt_unlabelled),
            client,
            pool,
            config,
            worker_id,
            secrets: Arc::new(EnvSecretResolver::new()),
            registries: RegistryAuth::default(),
            artifacts,
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            ready: AtomicBool::new(true),
        }
    }

    pub fn with_secrets(mut self, secrets: Arc<dyn SecretResolver>) -> Self {
        self.secrets = secrets;
        self
    }

    pub fn with_registries(mut self, registries: RegistryAuth) -> Self {
        self.registries = registries;
        self
    }

    pub fn with_settings(mut self, settings: RunSettings) -> Self {
        self.settings = settings;
        self
    }

    /// `worker:<id>`, the actor of our audit rows and `removed_by`.
    pub fn actor(&self) -> String {
        format!("worker:{}", self.worker_id)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.stopping
    }

    /// Waits for every background cleanup to finish (call during shutdown); background
    /// retries make one last try.
    pub async fn drain(&self) {
        self.stopping.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}
