//! Artifacts: the output tars of runs, indexed by `highway.artifacts` (id, tenant,
//! producing attempt, size, sha256) and read back as inputs of later runs. One interface,
//! [`ArtifactStore`], over two backends ([`Backend`]):
//!
//! - **Postgres** (the default, [`pg`]): the tar is cut into 1 MiB chunks in
//!   `highway.artifact_chunks`, written while it streams out of the container and read
//!   back chunk by chunk into the next container, so a run on any host can take the
//!   outputs of a run on another, and no host disk holds artifacts.
//! - **Filesystem** (explicit, [`fs`]): tar files under a directory of this host.
//!
//! Each row says where its bytes are (`storage`), so artifacts written by either backend
//! stay readable: Postgres ones from any worker, filesystem ones from a worker that has
//! the directory.
//!
//! Owns: every write of `highway.artifacts` and `highway.artifact_chunks`, the directory
//! layout of the filesystem backend, and the artifact retention ([`Retention`]: expired
//! artifacts, and Postgres writes a crash abandoned). Must not: extract an artifact on the
//! host (artifacts only ever go from tar to tar, see `tario`).
//!
//! Memory stays bounded whatever the size: outputs go through `tario`'s validating
//! writer into a [`spool`] that is drained into Postgres as it fills (at most
//! [`spool::MAX_LAG`] bytes behind), and inputs are streamed from Postgres through a pipe
//! that `tario` reads like a file, with the checksum verified on the way.

pub mod fs;
pub mod pg;
pub mod spool;

use crate::docker::tario::{OutputSummary, TarError, TarLimits};
use bytes::Bytes;
use highway_workflows::docker::ArtifactRef;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No artifact with that id for this tenant (another tenant's looks the same), or
    /// one this worker cannot read (a filesystem artifact of another host).
    #[error("artifact {0} not found")]
    NotFound(Uuid),
    /// The stored bytes no longer match the row (size, chunks or checksum), or the
    /// artifact was never completed.
    #[error("artifact {id} is corrupt: {reason}")]
    Corrupt { id: Uuid, reason: String },
    #[error("artifact content refused: {0}")]
    Invalid(#[from] TarError),
    #[error("artifact storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("artifact index: {0}")]
    Db(#[from] sqlx::Error),
}

/// Where new artifacts are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// Chunks in `highway.artifact_chunks` (the default).
    Postgres,
    /// Tar files under `dir` on this host.
    Filesystem { dir: PathBuf },
}

/// A stored artifact, as the run handler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub id: Uuid,
    pub tenant_id: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub paths: Vec<String>,
}

impl StoredArtifact {
    pub fn to_ref(&self) -> ArtifactRef {
        ArtifactRef {
            id: self.id,
            size_bytes: self.size_bytes,
            sha256: self.sha256.clone(),
            paths: self.paths.clone(),
        }
    }
}

/// Who produced an artifact.
#[derive(Debug, Clone, Copy)]
pub struct Producer<'a> {
    pub tenant_id: &'a str,
    pub activity_id: Option<Uuid>,
    pub attempt: Option<i32>,
}

/// The artifact store of a worker: the backend new artifacts go to, and the directory
/// filesystem artifacts are read from.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    pool: PgPool,
    backend: Backend,
    /// Where `storage = 'fs'` rows are read from: the filesystem backend's directory, or
    /// with the Postgres backend the worker's artifact directory (artifacts written
    /// before the switch), if any.
    fs_dir: Option<PathBuf>,
}

impl ArtifactStore {
    pub fn new(pool: PgPool, backend: Backend) -> Self {
        let fs_dir = match &backend {
            Backend::Filesystem { dir } => Some(dir.clone()),
            Backend::Postgres => None,
        };
        Self {
            pool,
            backend,
            fs_dir,
        }
    }

    /// The Postgres backend, still reading filesystem artifacts from `dir`.
    pub fn postgres_reading_fs(pool: PgPool, dir: impl Into<PathBuf>) -> Self {
        Self {
            fs_dir: Some(dir.into()),
            ..Self::new(pool, Backend::Postgres)
        }
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Starts a new artifact of `producer`: feed it like `tario::OutputTarWriter`
    /// (`start` / `data` / `end` per archive), then [`ArtifactWriter::finish`] and
    /// [`ArtifactWriter::commit`] or [`ArtifactWriter::discard`].
    pub async fn writer(
        &self,
        producer: Producer<'_>,
        kind: &'static str,
        limits: TarLimits,
    ) -> Result<ArtifactWriter, Error> {
        let inner = match &self.backend {
            Backend::Filesystem { dir } => Sink::Fs(fs::FsWriter::begin(dir, limits).await?),
            Backend::Postgres => {
                Sink::Pg(pg::PgWriter::begin(&self.pool, producer, kind, limits).await?)
            }
        };
        Ok(ArtifactWriter {
            pool: self.pool.clone(),
            tenant_id: producer.tenant_id.to_string(),
            activity_id: producer.activity_id,
            attempt: producer.attempt,
            kind,
            sink: Some(inner),
        })
    }

    /// Opens a complete artifact of `tenant_id` for reading: [`OpenArtifact::path`] is
    /// what `tario` reads (a file, or a pipe the Postgres chunks stream into), and
    /// [`OpenArtifact::close`] must be awaited once the reader is done: it reports a
    /// checksum mismatch as [`Error::Corrupt`].
    pub async fn open(&self, tenant_id: &str, id: Uuid) -> Result<OpenArtifact, Error> {
        let row = pg::lookup(&self.pool, tenant_id, id).await?;
        match row.storage.as_str() {
            "postgres" => Ok(OpenArtifact::Pg(pg::open(&self.pool, row)?)),
            _ => {
                let Some(dir) = &self.fs_dir else {
                    // Its bytes are on the disk of the host that wrote it, not here.
                    return Err(Error::NotFound(id));
                };
                Ok(OpenArtifact::Fs(fs::open(dir, &row).await?))
            }
        }
    }

    /// The index entry of a complete artifact of `tenant_id` (nothing is read).
    pub async fn load(&self, tenant_id: &str, id: Uuid) -> Result<StoredArtifact, Error> {
        let row = pg::lookup(&self.pool, tenant_id, id).await?;
        Ok(StoredArtifact {
            id,
            tenant_id: row.tenant_id,
            size_bytes: row.size_bytes,
            sha256: row.sha256.unwrap_or_default(),
            paths: row.paths,
        })
    }

    /// Copies an artifact's tar into `dest` (operators, tests), checking size and
    /// checksum against the row; a mismatch is [`Error::Corrupt`] and `dest` is removed.
    pub async fn export(&self, tenant_id: &str, id: Uuid, dest: &Path) -> Result<(), Error> {
        let stored = self.load(tenant_id, id).await?;
        let opened = self.open(tenant_id, id).await?;
        let (src, dst) = (opened.path(), dest.to_path_buf());
        let copied = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, String)> {
            use sha2::Digest;
            use std::io::{Read, Write};
            let mut f = std::fs::File::open(src)?;
            let mut out = std::io::BufWriter::new(std::fs::File::create(dst)?);
            let mut h = sha2::Sha256::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            loop {
                let k = f.read(&mut buf)?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                out.write_all(&buf[..k])?;
                n += k as u64;
            }
            out.flush()?;
            Ok((n, hex::encode(h.finalize())))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()));
        let closed = opened.close().await;
        let res = match (copied, closed) {
            (_, Err(e)) => Err(e),
            (Err(e), _) | (Ok(Err(e)), _) => Err(e.into()),
            (Ok(Ok((n, sha))), Ok(())) if n != stored.size_bytes || sha != stored.sha256 => {
                Err(Error::Corrupt {
                    id,
                    reason: "checksum mismatch".into(),
                })
            }
            (Ok(Ok(_)), Ok(())) => Ok(()),
        };
        if res.is_err() {
            let _ = tokio::fs::remove_file(dest).await;
        }
        res
    }

    /// Validates a tar file (uncompressed; entries checked like outputs) and stores it
    /// as an artifact of `producer` (operator uploads, benchmarks, tests).
    pub async fn import_tar_file(
        &self,
        producer: Producer<'_>,
        src: &Path,
        limits: TarLimits,
    ) -> Result<StoredArtifact, Error> {
        let src = std::fs::File::open(src)?;
        match &self.backend {
            Backend::Filesystem { dir } => fs::import(&self.pool, dir, producer, src, limits).await,
            Backend::Postgres => pg::import(&self.pool, producer, src, limits).await,
        }
    }
}

enum Sink {
    Fs(fs::FsWriter),
    Pg(pg::PgWriter),
}

/// An artifact being written. Dropping it without `commit` or `discard` leaves a
/// `.partial` file (filesystem) or a `writing` row (Postgres) that retention removes.
pub struct ArtifactWriter {
    pool: PgPool,
    tenant_id: String,
    activity_id: Option<Uuid>,
    attempt: Option<i32>,
    kind: &'static str,
    sink: Option<Sink>,
}

impl std::fmt::Debug for ArtifactWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactWriter")
            .field("tenant_id", &self.tenant_id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

fn closed() -> TarError {
    TarError::Io(std::io::Error::other("artifact writer already finished"))
}

impl ArtifactWriter {
    /// Begins the archive of one declared output path (absolute container path).
    pub async fn start(&self, declared: &str) -> Result<(), TarError> {
        match &self.sink {
            Some(Sink::Fs(w)) => w.tar()?.start(declared).await,
            Some(Sink::Pg(w)) => w.start(declared).await,
            None => Err(closed()),
        }
    }

    /// Bytes of the current archive. The Postgres backend waits here while its spool is
    /// full (backpressure into the container's download).
    pub async fn data(&self, chunk: Bytes) -> Result<(), TarError> {
        match &self.sink {
            Some(Sink::Fs(w)) => w.tar()?.data(chunk).await,
            Some(Sink::Pg(w)) => w.data(chunk).await,
            None => Err(closed()),
        }
    }

    pub async fn end(&self) -> Result<(), TarError> {
        match &self.sink {
            Some(Sink::Fs(w)) => w.tar()?.end().await,
            Some(Sink::Pg(w)) => w.end().await,
            None => Err(closed()),
        }
    }

    /// The download of the current archive failed; the writer stops with this reason.
    pub async fn fail(&self, reason: String) {
        match &self.sink {
            Some(Sink::Fs(w)) => {
                if let Ok(t) = w.tar() {
                    t.fail(reason).await
                }
            }
            Some(Sink::Pg(w)) => w.fail(reason).await,
            None => {}
        }
    }

    /// Closes the tar and waits until every byte is stored (Postgres: the last chunk
    /// written and its checksum checked against the tar's). The artifact is not readable
    /// until [`ArtifactWriter::commit`].
    pub async fn finish(&mut self) -> Result<OutputSummary, TarError> {
        match &mut self.sink {
            Some(Sink::Fs(w)) => w.finish().await,
            Some(Sink::Pg(w)) => w.finish().await,
            None => Err(closed()),
        }
    }

    /// Makes a finished artifact readable: the row is completed (Postgres) or written
    /// (filesystem) last, so a readable artifact always has all its bytes.
    pub async fn commit(
        mut self,
        summary: &OutputSummary,
        paths: Vec<String>,
    ) -> Result<StoredArtifact, Error> {
        let producer = Producer {
            tenant_id: &self.tenant_id,
            activity_id: self.activity_id,
            attempt: self.attempt,
        };
        match self.sink.take() {
            Some(Sink::Fs(w)) => {
                w.commit(&self.pool, producer, self.kind, summary, paths)
                    .await
            }
            Some(Sink::Pg(w)) => w.commit(&self.pool, producer, summary, paths).await,
            None => Err(Error::Io(std::io::Error::other(
                "artifact writer already finished",
            ))),
        }
    }

    /// Drops a pending artifact (failed or refused content, or no output found).
    pub async fn discard(mut self) {
        match self.sink.take() {
            Some(Sink::Fs(w)) => w.discard().await,
            Some(Sink::Pg(w)) => w.discard(&self.pool).await,
            None => {}
        }
    }
}

/// An artifact open for reading (see [`ArtifactStore::open`]).
#[derive(Debug)]
pub enum OpenArtifact {
    Fs(fs::OpenFile),
    Pg(pg::OpenChunks),
}

impl OpenArtifact {
    pub fn id(&self) -> Uuid {
        match self {
            OpenArtifact::Fs(f) => f.id,
            OpenArtifact::Pg(p) => p.id(),
        }
    }

    /// The path the tar reader opens (once).
    pub fn path(&self) -> PathBuf {
        match self {
            OpenArtifact::Fs(f) => f.path.clone(),
            OpenArtifact::Pg(p) => p.path(),
        }
    }

    /// Call once the reader finished (or failed): ends the stream and reports whether
    /// the bytes matched the recorded size and checksum. With the Postgres backend the
    /// bytes were already handed to the reader when the checksum is known; the caller
    /// must then discard what it built from them (the run handler fails the attempt
    /// before the container starts, and its cleanup removes the container).
    pub async fn close(self) -> Result<(), Error> {
        match self {
            OpenArtifact::Fs(_) => Ok(()),
            OpenArtifact::Pg(p) => p.close().await,
        }
    }
}

// ---------------------------------------------------------------------------------
// Retention

/// How long a Postgres artifact may stay `writing` without a new chunk before retention
/// takes it for abandoned (a worker that crashed or lost its database mid-write).
pub const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// Rows deleted per statement.
const RETENTION_BATCH: i64 = 100;

/// What one retention pass deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionCounts {
    /// Past their `expires_at` (their chunks go with them through the cascade).
    pub expired: u64,
    /// Postgres writes left `writing` for longer than [`ABANDONED_AFTER`].
    pub abandoned: u64,
}

/// The artifact retention service (every worker with Docker kinds runs one; safe with
/// many): deletes expired Postgres artifacts and abandoned writes, chunks included.
/// Filesystem artifacts are left to the host that holds their directory.
#[derive(Debug, Clone)]
pub struct Retention {
    pool: PgPool,
    interval: Duration,
    abandoned_after: Duration,
}

impl Retention {
    pub fn new(pool: PgPool, interval: Duration) -> Self {
        Self {
            pool,
            interval,
            abandoned_after: ABANDONED_AFTER,
        }
    }

    pub fn with_abandoned_after(mut self, d: Duration) -> Self {
        self.abandoned_after = d;
        self
    }

    /// One pass; the counts are what tests assert on.
    pub async fn run_once(&self) -> Result<RetentionCounts, sqlx::Error> {
        pg::delete_retired(&self.pool, self.abandoned_after, RETENTION_BATCH).await
    }

    pub async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(jitter(self.interval)) => {}
                _ = stop.cancelled() => return,
            }
            let Some(pass) = crate::periodic::pass_or_stop(&stop, self.run_once()).await else {
                return;
            };
            match pass {
                Ok(c) if c.expired + c.abandoned > 0 => info!(
                    expired = c.expired,
                    abandoned = c.abandoned,
                    "artifact retention deleted artifacts"
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!(dependency = "postgres", error = %e, "artifact retention pass failed")
                }
            }
        }
    }
}

/// `d` shortened by up to a fifth, so the workers' passes spread out.
fn jitter(d: Duration) -> Duration {
    use rand::Rng;
    d.mul_f64(rand::thread_rng().gen_range(0.8..=1.0))
}
