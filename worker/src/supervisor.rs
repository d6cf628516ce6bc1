//! The supervisor: owns the shutdown tokens and the task tracker of a process, turns
//! SIGTERM/SIGINT into the two shutdown phases, and wires the services (worker, HTTP
//! server, dependency monitors) together. `highway up` and `highway worker` both run
//! through [`run`].

use crate::api::{self, AppState};
use crate::config::docker::DockerConfig;
use crate::db::{self, PoolOptions};
use crate::docker::deployment::Deployment;
use crate::docker::gc::{DockerGarbageCollector, GcOptions};
use crate::docker::{self, DockerRuntime};
use crate::executor::{Registry, Shutdown, Worker, WorkerOptions, WorkerSummary};
use crate::health::{self, Health};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// What to run in this process. `Debug` shows the database URL without its password.
#[derive(Clone)]
pub struct RunOptions {
    pub database_url: String,
    pub pool: PoolOptions,
    /// The worker, or none (an API-only process).
    pub worker: Option<WorkerOptions>,
    /// The HTTP server's address, or none.
    pub listen: Option<SocketAddr>,
    /// HTTPS: the server's certificate and key files (re-read on SIGHUP), or none (HTTP).
    pub tls: Option<crate::api::tls::TlsFiles>,
    /// The API's limits and quotas.
    pub api: crate::config::api::ApiConfig,
    /// Soft phase length: running work may finish within it after the first signal.
    pub shutdown_grace: Duration,
    /// `tools.docker.*`: the Docker settings and the artifact directory, or none (a
    /// worker without Docker kinds).
    pub docker: Option<(DockerConfig, PathBuf)>,
    /// The Docker garbage collector of this worker (needs `docker` and `worker`), or none.
    pub gc: Option<GcOptions>,
    /// The cron scheduler of this worker, or none (`HIGHWAY_SCHEDULER_ENABLED=false`).
    pub scheduler: Option<crate::config::scheduler::SchedulerConfig>,
    /// `highway up`: the state dir where the local admin token and the API URL are
    /// written once the server listens (zero-config CLI); none for `highway worker`.
    pub local_access: Option<PathBuf>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("database_url", &db::redact_url(&self.database_url))
            .field("pool", &self.pool)
            .field("worker", &self.worker)
            .field("listen", &self.listen)
            .field("tls", &self.tls)
            .field("api", &self.api)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("docker", &self.docker)
            .field("gc", &self.gc)
            .field("scheduler", &self.scheduler)
            .field("local_access", &self.local_access)
            .finish()
    }
}

/// How long the services (HTTP API, collector, scheduler, sweeper, monitors) may take to
/// stop once the worker drained.
const SERVICES_STOP: Duration = Duration::from_secs(10);

/// How often the artifact retention looks for expired and abandoned artifacts.
const ARTIFACT_RETENTION_INTERVAL: Duration = Duration::from_secs(60);

/// How long closing the database pools may take at the end.
const POOL_CLOSE: Duration = Duration::from_secs(2);

/// First signal: soft shutdown, then hard after `grace`. Second signal: hard at once.
pub fn handle_signals(
    shutdown: Shutdown,
    grace: Duration,
    tracker: &TaskTracker,
    done: CancellationToken,
) {
    tracker.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
            warn!("cannot install signal handlers");
            return;
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", grace_ms = grace.as_millis() as u64, "shutting down: no new work; running work may finish"),
            _ = int.recv() => info!(signal = "SIGINT", grace_ms = grace.as_millis() as u64, "shutting down: no new work; running work may finish"),
            _ = shutdown.soft.cancelled() => {}
            _ = done.cancelled() => return,
        }
        shutdown.soft.cancel();
        tokio::select! {
            _ = tokio::time::sleep(grace) => info!("shutdown grace over"),
            _ = term.recv() => info!("second signal: stopping running work now"),
            _ = int.recv() => info!("second signal: stopping running work now"),
            _ = shutdown.hard.cancelled() => {}
            _ = done.cancelled() => return,
        }
        shutdown.hard.cancel();
    });
}

/// Runs the configured services until shutdown completes.
pub async fn run(
    opts: RunOptions,
    mut registry: Registry,
    health: Health,
    shutdown: Shutdown,
) -> anyhow::Result<WorkerSummary> {
    opts.api.validate()?;
    // One recorder per process; queue names become labels only when allow-listed.
    crate::metrics::install();
    crate::metrics::allow_labels(opts.api.metrics_label_allowlist.iter().cloned());
    if let Some(w) = &opts.worker {
        crate::metrics::allow_labels(w.queues.iter().cloned());
    }
    let pool = db::lazy_pool(&opts.database_url, &opts.pool)?;
    let maint_pool = db::lazy_pool(
        &opts.database_url,
        &PoolOptions {
            max_connections: 4,
            application_name: format!("{}-maintenance", opts.pool.application_name),
            ..opts.pool.clone()
        },
    )?;
    let tracker = TaskTracker::new();
    let stop = CancellationToken::new();
    handle_signals(
        shutdown.clone(),
        opts.shutdown_grace,
        &tracker,
        stop.clone(),
    );

    // Migrations at start; a database that is down at start is waited for.
    // A database that refuses us (TLS, credentials) stops the start here, with the reason.
    let migrated = match db::migrate_when_available(&pool, &shutdown.soft).await {
        Ok(m) => m,
        Err(e) => {
            stop.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(anyhow::Error::new(e).context("database unusable at start"));
        }
    };
    if !migrated {
        stop.cancel();
        tracker.close();
        tracker.wait().await;
        return Ok(WorkerSummary::default());
    }

    tracker.spawn(health::postgres_monitor(
        maint_pool.clone(),
        health.postgres.clone(),
        health::POSTGRES_PROBE_INTERVAL,
        stop.clone(),
    ));
    // Durable cron: every worker runs a scheduler (no leader needed) on its own small
    // pool, so it cannot starve the rescuer; HIGHWAY_SCHEDULER_ENABLED=false turns it off.
    if let Some(sched) = opts
        .scheduler
        .as_ref()
        .filter(|s| s.enabled && opts.worker.is_some())
    {
        let sched_pool = db::lazy_pool(
            &opts.database_url,
            &PoolOptions {
                max_connections: sched.concurrency as u32 + 2,
                application_name: format!("{}-scheduler", opts.pool.application_name),
                ..opts.pool.clone()
            },
        )?;
        let s = crate::scheduler::Scheduler::with_database_clock(
            sched_pool,
            crate::scheduler::SchedulerOptions::from_config(sched),
        );
        tracker.spawn(s.run(stop.clone()));
    }
    {
        let draining = health.draining.clone();
        let soft = shutdown.soft.clone();
        let stop = stop.clone();
        tracker.spawn(async move {
            tokio::select! {
                _ = soft.cancelled() => draining.cancel(),
                _ = stop.cancelled() => {}
            }
        });
    }
    // The Docker runtime connects lazily: a daemon that is down does not stop the start.
    let docker_runtime = match (&opts.docker, &opts.worker) {
        (Some((cfg, artifacts)), Some(w)) => {
            // Secrets come from `highway.secrets` (when HIGHWAY_SECRETS_KEY is set), then
            // HIGHWAY_SECRET_* variables; a malformed key is a configuration error.
            let secrets = crate::docker::secret_store::TableSecretResolver::from_env(pool.clone())
                .map_err(|e| anyhow::anyhow!("secrets store: {e}"))?;
            let registries = registry_auth(cfg, &pool)?;
            let rt = Arc::new(
                DockerRuntime::new(cfg.clone(), pool.clone(), w.id, artifacts.clone())
                    .with_secrets(Arc::new(secrets))
                    .with_registries(registries),
            );
            docker::register(&mut registry, rt.clone());
            Some(rt)
        }
        _ => None,
    };
    // One Docker client for the process: the runtime's when this process runs docker
    // activities (the monitor puts its circuit breaker in front of it, so the API and a
    // digest lookup inside a completion fail fast while the daemon is down).
    let docker_client = docker_runtime
        .as_ref()
        .map(|rt| rt.client.clone())
        .or_else(|| opts.docker.as_ref().map(|(cfg, _)| cfg.client()));
    // Cache keys of workflow steps carry the image digest: one resolver (bounded and
    // cached, since the completer's hook calls it inside its transaction) for the API,
    // the worker and the sweeper.
    let digests = docker_client
        .clone()
        .map(crate::workflow::Digests::docker)
        .unwrap_or_default();
    if let Some(addr) = opts.listen {
        // A certificate pair that does not load stops the start, naming the file.
        let tls = match &opts.tls {
            Some(files) => {
                let f = files.clone();
                let config = tokio::task::spawn_blocking(move || api::tls::server_config(&f))
                    .await?
                    .map_err(|e| anyhow::Error::new(e).context("HTTPS (--tls-cert, --tls-key)"))?;
                let config = axum_server::tls_rustls::RustlsConfig::from_config(config);
                api::tls::reload_on_sighup(config.clone(), files.clone(), &tracker, stop.clone());
                Some(config)
            }
            None => None,
        };
        let listener = api::bind(addr).await?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        info!(listen = %listener.local_addr()?, scheme, "http server listening");
        if tls.is_none() && !addr.ip().is_loopback() {
            warn!(
                listen = %addr,
                "the API listens beyond loopback without TLS: tokens cross the network in clear text (set --tls-cert and --tls-key)"
            );
        }
        if let Some(dir) = &opts.local_access {
            // A CLI without a token still works here; failing to write only costs that.
            if let Err(e) = crate::cli::remote::write_local_access(
                &pool,
                dir,
                listener.local_addr()?,
                tls.is_some(),
            )
            .await
            {
                warn!(
                    error = format!("{e:#}"),
                    "local admin token / API URL not written"
                );
            }
        }
        let planner = opts
            .docker
            .as_ref()
            .zip(docker_client)
            .map(|((cfg, _), client)| api::gc::GcPlanner {
                client,
                deployment: docker_runtime
                    .as_ref()
                    .map(|rt| rt.deployment.clone())
                    .unwrap_or_else(|| {
                        Deployment::new(cfg.deployment.clone(), cfg.adopt_unlabelled)
                    }),
                opts: opts.gc.clone().unwrap_or_default(),
            });
        let secrets_key = crate::docker::secret_store::SecretsKey::from_env()
            .map_err(|e| anyhow::anyhow!("secrets store: {e}"))?;
        let policy = opts
            .docker
            .as_ref()
            .map(|(cfg, _)| cfg.policy.clone())
            .unwrap_or_default();
        let state = AppState::new(health.clone(), pool.clone(), opts.api.clone())
            .with_docker_policy(policy)
            .with_secrets(secrets_key)
            .with_gc(planner)
            .with_digests(digests.clone())
            .with_https(tls.is_some())
            .with_docker_required(
                docker_runtime.is_some()
                    && opts
                        .docker
                        .as_ref()
                        .is_some_and(|(cfg, _)| !cfg.availability.optional),
            );
        // Queue depth and the oldest wait: one reader per serving process, not per scrape.
        tracker.spawn(
            crate::queue::stats::QueueStats::new(maint_pool.clone(), opts.api.metrics_interval.0)
                .run(stop.clone()),
        );
        let stop = stop.clone();
        tracker.spawn(async move {
            let shutdown = async move { stop.cancelled().await };
            let served = match tls {
                Some(config) => api::serve_tls(listener, state, config, shutdown).await,
                None => api::serve(listener, state, shutdown).await,
            };
            if let Err(e) = served {
                warn!(error = %e, "http server failed");
            }
        });
    }
    // Docker is a soft dependency: the monitor probes once now (the first claim already
    // knows whether docker kinds may run), then keeps probing, drives readiness and
    // guards every call with the circuit breaker. HIGHWAY_DOCKER_OPTIONAL=false: refuse
    // to start without the daemon.
    if let Some(rt) = &docker_runtime {
        let started = docker::monitor::start_for_runtime(
            rt.clone(),
            health.docker.clone(),
            &tracker,
            stop.clone(),
        )
        .await;
        if let Err(e) = started {
            stop.cancel();
            tracker.close();
            tracker.wait().await;
            return Err(anyhow::Error::new(e).context("docker is required at start"));
        }
    }
    // The garbage collector works on the same daemon through the same client (and its
    // circuit breaker); it stops with the other services, after the worker drained.
    if let (Some(rt), Some(gc_opts)) = (&docker_runtime, &opts.gc) {
        match DockerGarbageCollector::new(
            rt.client.clone(),
            maint_pool.clone(),
            rt.deployment.clone(),
            rt.worker_id,
            Some(rt.worker_id),
            gc_opts.clone(),
        ) {
            Ok(gc) => {
                tracker.spawn(gc.run(stop.clone()));
            }
            Err(e) => warn!(error = %e, "garbage collector not started"),
        }
    }
    // Artifact retention: expired artifacts and writes a crash abandoned (their chunks
    // go with them), by any worker with Docker kinds (safe with many).
    if docker_runtime.is_some() {
        let retention = crate::docker::artifacts::Retention::new(
            maint_pool.clone(),
            ARTIFACT_RETENTION_INTERVAL,
        );
        tracker.spawn(retention.run(stop.clone()));
    }
    // Workflow runs: every worker sweeps live runs left with nothing in flight, so a run
    // whose driver crashed continues on whichever worker is alive (safe with many).
    if let Some(w) = &opts.worker {
        let sweeper =
            crate::workflow::Sweeper::new(maint_pool.clone(), w.rescue_interval, digests.clone());
        tracker.spawn(sweeper.run(stop.clone()));
    }
    let summary = match opts.worker {
        Some(mut w) => {
            w.digests = digests;
            Worker::new(w, pool.clone(), maint_pool.clone(), registry)
                .run(shutdown.clone())
                .await
        }
        None => {
            shutdown.soft.cancelled().await;
            WorkerSummary::default()
        }
    };
    // Cleanups that outlived their handler finish before the pools close.
    if let Some(rt) = &docker_runtime {
        rt.drain().await;
    }
    stop.cancel();
    tracker.close();
    // Every service gives way to `stop` (a pass gets PASS_GRACE_AT_STOP to finish, HTTP
    // requests are drained): the bound only keeps a request stuck on a dead connection
    // from holding the process forever.
    if tokio::time::timeout(SERVICES_STOP, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            timeout_ms = SERVICES_STOP.as_millis() as u64,
            "services did not stop in time (a request or pass stuck on a dead connection); exiting without them"
        );
    }
    // Closing waits for every connection to come back, and a connection released on a
    // dead network is still being checked (its ping never answers).
    let close = async {
        pool.close().await;
        maint_pool.close().await;
    };
    if tokio::time::timeout(POOL_CLOSE, close).await.is_err() {
        warn!(
            dependency = "postgres",
            "database connections did not close in time; dropped"
        );
    }
    if let Some(dir) = &opts.local_access {
        // Nobody should find the URL of a stopped server (the token stays valid).
        std::fs::remove_file(dir.join(crate::cli::remote::API_URL_FILE)).ok();
    }
    Ok(summary)
}

/// Registry credentials of the pulls: the table (with HIGHWAY_SECRETS_KEY) and the
/// `--docker-config` file, read now so that a bad file stops the start, naming it.
fn registry_auth(
    cfg: &crate::config::docker::DockerConfig,
    pool: &sqlx::PgPool,
) -> anyhow::Result<crate::docker::registry_store::RegistryAuth> {
    use crate::docker::registry_auth::DockerConfigFile;
    use crate::docker::registry_store::{RegistryAuth, RegistryStore};
    let store = RegistryStore::from_env(pool.clone())
        .map_err(|e| anyhow::anyhow!("registry credentials: {e}"))?;
    let file = match &cfg.docker_config {
        None => None,
        Some(path) => {
            let f = DockerConfigFile::load(path)?;
            let hosts: Vec<&str> = f.hosts().collect();
            info!(path = %path.display(), registries = ?hosts, "docker config read");
            if f.uses_helpers {
                warn!(
                    path = %path.display(),
                    "docker config names a credential helper (credsStore/credHelpers): \
                     not run; only its auths entries are used"
                );
            }
            Some(f)
        }
    };
    Ok(RegistryAuth::new(Some(store), file))
}
