//! The worker side of definition-driven workflow runs: the completer hook that advances
//! the runs of finished activities inside the completion's transaction, and the sweeper
//! that advances live runs left with nothing in flight (a crashed driver, an activity the
//! rescuer ended), so another worker continues any run from the database. The driver
//! logic and all `workflow_steps` SQL live in `highway_workflows::runs`.
//!
//! Also the image digest resolver of cache keys ([`DockerDigests`], carried as
//! [`Digests`] by the worker's options, the sweeper and the API). Why resolve inside the completion
//! transaction rather than leave the step for the sweeper: a cached step would otherwise
//! wait a sweep interval (and the sweeper only sees runs with nothing in flight); the
//! call is bounded by [`DIGEST_TIMEOUT`] and cached for [`DIGEST_TTL`], so the locks of
//! the batch are held at most that long, and usually not at all.

use crate::docker::client::DockerClient;
use futures::future::BoxFuture;
use highway_workflows::runs::{self, DigestError, ImageDigests, RunError};
use highway_workflows::Client;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

/// Longest a digest lookup may take (it may run while the completion holds row locks).
pub const DIGEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a resolved digest (or a failure) is reused: an image rebuilt under the same
/// reference is seen at most this late.
pub const DIGEST_TTL: Duration = Duration::from_secs(3);

/// Resolves image references to content ids with the worker's Docker client: the
/// image's `Id` (`sha256:...`, what a local build changes; `RepoDigests` are absent for
/// local images and name the registry manifest, not the content). Bounded by
/// [`DIGEST_TIMEOUT`], cached per reference for [`DIGEST_TTL`] (failures too, so a down
/// daemon costs one timeout per TTL, not one per step).
#[derive(Debug)]
pub struct DockerDigests {
    client: DockerClient,
    ttl: Duration,
    cache: Mutex<HashMap<String, Resolved>>,
}

/// A lookup's answer and when it was made.
type Resolved = (Instant, Result<String, DigestError>);

impl DockerDigests {
    pub fn new(client: DockerClient) -> Self {
        Self::with_ttl(client, DIGEST_TTL)
    }

    pub fn with_ttl(client: DockerClient, ttl: Duration) -> Self {
        Self {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn lookup(&self, image: &str) -> Result<String, DigestError> {
        let r = image.to_string();
        let inspected = self
            .client
            .call("inspect_image", DIGEST_TIMEOUT, |d| async move {
                d.inspect_image(&r).await
            })
            .await;
        match inspected {
            Ok(i) => {
                i.id.filter(|id| !id.is_empty())
                    .ok_or_else(|| DigestError(format!("image {image} has no id")))
            }
            Err(e) if e.is_not_found() => Err(DigestError(format!(
                "image {image} is not present on the Docker daemon"
            ))),
            Err(e) => Err(DigestError(format!("docker: {}", e.message()))),
        }
    }
}

impl ImageDigests for DockerDigests {
    fn digest<'a>(
        &'a self,
        tenant: &'a str,
        image: &'a str,
    ) -> BoxFuture<'a, Result<String, DigestError>> {
        Box::pin(async move {
            if image.is_empty() {
                return Err(DigestError("the step has no params.image".into()));
            }
            // Another tenant's snapshot answers like a missing image (as in the run).
            if highway_workflows::docker_tools::in_foreign_namespace(tenant, image) {
                return Err(DigestError(format!(
                    "image {image} is not present on the Docker daemon"
                )));
            }
            let now = Instant::now();
            if let Some((at, r)) = lock(&self.cache).get(image) {
                if now.duration_since(*at) < self.ttl {
                    return r.clone();
                }
            }
            let r = self.lookup(image).await;
            let mut cache = lock(&self.cache);
            cache.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            cache.insert(image.to_string(), (now, r.clone()));
            r
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The resolver of a process without Docker settings: every cached step runs uncached.
#[derive(Debug, Clone, Copy)]
pub struct NoDigests;

impl ImageDigests for NoDigests {
    fn digest<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, Result<String, DigestError>> {
        Box::pin(async {
            Err(DigestError(
                "no Docker client in this process to resolve image digests".into(),
            ))
        })
    }
}

/// The resolver a process uses, handed to whoever advances runs: the worker (its
/// completer hook, through `WorkerOptions::digests`), the sweeper and the API. Without
/// Docker settings it is [`NoDigests`].
#[derive(Clone)]
pub struct Digests(pub Arc<dyn ImageDigests>);

impl Default for Digests {
    fn default() -> Self {
        Self(Arc::new(NoDigests))
    }
}

impl std::fmt::Debug for Digests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digests(..)")
    }
}

impl Digests {
    /// The resolver that asks the daemon behind `client`.
    pub fn docker(client: crate::docker::client::DockerClient) -> Self {
        Self(Arc::new(DockerDigests::new(client)))
    }
}

/// Runs advanced per sweeper pass.
const SWEEP_BATCH: i64 = 100;

/// Advances the definition-driven runs among `runs` (the runs of activities that just
/// finished) on the caller's transaction. Runs without a definition are filtered out by
/// one indexed lookup, so the plain activity path pays nothing more.
pub async fn advance_finished(
    pool: &PgPool,
    conn: &mut PgConnection,
    runs: &[Uuid],
    digests: &dyn ImageDigests,
) -> Result<usize, RunError> {
    let driven = runs::driven_runs(conn, runs).await?;
    if driven.is_empty() {
        return Ok(0);
    }
    let client = Client::new(pool.clone());
    for run in &driven {
        let a = runs::advance(&client, conn, *run, digests).await?;
        debug!(workflow_run_id = %run, enqueued = ?a.enqueued, status = ?a.run_status, "run advanced");
    }
    Ok(driven.len())
}

/// The sweeper service (every worker runs one; safe with many: `advance` locks the run).
#[derive(Debug, Clone)]
pub struct Sweeper {
    pool: PgPool,
    interval: Duration,
    digests: Digests,
}

impl Sweeper {
    pub fn new(pool: PgPool, interval: Duration, digests: Digests) -> Self {
        Self {
            pool,
            interval,
            digests,
        }
    }

    /// One pass: advances every stalled run, each in its own transaction (one bad run
    /// does not hold back the others). Returns how many were advanced.
    pub async fn run_once(&self) -> Result<usize, RunError> {
        let stalled = runs::stalled_runs(&self.pool, SWEEP_BATCH).await?;
        let client = Client::new(self.pool.clone());
        let digests = self.digests.0.as_ref();
        let mut n = 0;
        for run in stalled {
            let res = async {
                let mut tx = self.pool.begin().await?;
                let a = runs::advance(&client, &mut tx, run, digests).await?;
                // A cancelling run with nothing left running ends here too.
                sqlx::query(highway_workflows::client::FINISH_CANCELLED_RUN)
                    .bind(run)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, RunError>(a)
            }
            .await;
            match res {
                Ok(a) => {
                    n += 1;
                    debug!(workflow_run_id = %run, enqueued = ?a.enqueued, status = ?a.run_status, "sweeper advanced run");
                }
                Err(e) => {
                    warn!(workflow_run_id = %run, error = %e, "sweeper could not advance run")
                }
            }
        }
        Ok(n)
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
            let Some(pass) = crate::periodic::pass_or_stop(&stop, self.run_once()).await else {
                return;
            };
            match pass {
                Ok(0) => {}
                Ok(n) => info!(runs = n, "workflow sweeper advanced stalled runs"),
                Err(e) => {
                    warn!(dependency = "postgres", error = %e, "workflow sweeper pass failed")
                }
            }
        }
    }
}
