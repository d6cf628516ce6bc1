//! The Postgres backend, and the SQL of `highway.artifacts` and `highway.artifact_chunks`
//! for both backends.
//!
//! Writing: the row is inserted `writing` first (the chunks reference it), the tar is
//! validated by `tario` into a [`Spool`] and uploaded from it in [`CHUNK_BYTES`] pieces
//! while the container's archive still downloads, the SHA-256 computed on the way and
//! compared with the tar writer's; the row becomes `complete` only after the last chunk.
//! A crash leaves a `writing` row, which readers refuse and retention deletes (chunks
//! through the cascade). Every chunk insert is fenced on the row still being `writing`.
//!
//! Reading: one query per chunk (the next one fetched while the current one is written),
//! into a pipe the tar reader opens as a file (`/proc/self/fd/N`). The checksum is known
//! only once the last chunk was read, so the last chunk is held back until it matched:
//! a corrupt artifact never reaches the reader complete, and [`OpenChunks::close`] says
//! [`Error::Corrupt`] so the caller discards what it built.
//!
//! Why 1 MiB chunks: Postgres cuts any stored value into ~2 KB TOAST pieces anyway, so
//! the chunk size only sets the statement count and the memory per chunk in flight. At
//! 1 MiB a gigabyte is 1024 statements (their round trips are noise next to the bytes),
//! a couple of chunks in flight cost a few MiB, and each value stays far below bytea's
//! 1 GB limit and any protocol message limit.

use super::spool::Spool;
use super::{Error, Producer, RetentionCounts, StoredArtifact};
use crate::docker::tario::{self, OutputSummary, OutputTarWriter, TarError, TarLimits};
use bytes::Bytes;
use sha2::Digest;
use sqlx::PgPool;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Size of one stored chunk (the last one of an artifact may be shorter).
pub const CHUNK_BYTES: usize = 1 << 20;

/// An artifact row, as readers need it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRow {
    pub id: Uuid,
    pub tenant_id: String,
    pub storage: String,
    pub state: String,
    #[sqlx(try_from = "i64")]
    pub size_bytes: u64,
    pub sha256: Option<String>,
    pub storage_path: Option<String>,
    pub chunk_count: Option<i32>,
    pub paths: Vec<String>,
}

/// The artifact `id` of `tenant_id`, complete and not expired.
pub(super) async fn lookup(pool: &PgPool, tenant_id: &str, id: Uuid) -> Result<ArtifactRow, Error> {
    let row: Option<ArtifactRow> = sqlx::query_as(
        "SELECT id, tenant_id, storage, state, size_bytes, sha256, storage_path, chunk_count, paths
           FROM highway.artifacts
          WHERE id = $1 AND tenant_id = $2 AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(id)
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else {
        return Err(Error::NotFound(id));
    };
    if row.state != "complete" {
        return Err(Error::Corrupt {
            id,
            reason: "it was never completed (its writer stopped half-way)".into(),
        });
    }
    Ok(row)
}

/// Indexes a filesystem artifact (its file already has its final name).
pub(super) async fn insert_fs_row(
    pool: &PgPool,
    id: Uuid,
    producer: Producer<'_>,
    kind: &str,
    summary: &OutputSummary,
    storage_path: &str,
    paths: &[String],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO highway.artifacts
             (id, tenant_id, activity_id, attempt, kind, size_bytes, sha256, entry_count,
              storage_path, paths, storage, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'fs', 'complete')",
    )
    .bind(id)
    .bind(producer.tenant_id)
    .bind(producer.activity_id)
    .bind(producer.attempt)
    .bind(kind)
    .bind(i64::try_from(summary.tar_bytes).unwrap_or(i64::MAX))
    .bind(&summary.sha256)
    .bind(i64::try_from(summary.entry_count).unwrap_or(i64::MAX))
    .bind(storage_path)
    .bind(paths)
    .execute(pool)
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Writing

/// What the uploader stored.
#[derive(Debug, Clone)]
struct Uploaded {
    bytes: u64,
    sha256: String,
    chunks: i32,
}

/// The row, the spool and the task that drains the spool into chunks.
struct Upload {
    id: Uuid,
    spool: Arc<Spool>,
    task: Option<JoinHandle<Result<Uploaded, Error>>>,
    uploaded: Option<Uploaded>,
}

impl Upload {
    /// Inserts the `writing` row and starts the uploader; returns the spool's file for
    /// the tar writer.
    async fn begin(
        pool: &PgPool,
        producer: Producer<'_>,
        kind: &str,
    ) -> Result<(Self, std::fs::File), Error> {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO highway.artifacts
                 (id, tenant_id, activity_id, attempt, kind, size_bytes, entry_count,
                  storage, state)
             VALUES ($1, $2, $3, $4, $5, 0, 0, 'postgres', 'writing')",
        )
        .bind(id)
        .bind(producer.tenant_id)
        .bind(producer.activity_id)
        .bind(producer.attempt)
        .bind(kind)
        .execute(pool)
        .await?;
        let (file, spool) = match Spool::create(&std::env::temp_dir()) {
            Ok(s) => s,
            Err(e) => {
                let _ = delete_writing(pool, id).await;
                return Err(e.into());
            }
        };
        let task = tokio::spawn(upload(pool.clone(), id, spool.clone()));
        Ok((
            Self {
                id,
                spool,
                task: Some(task),
                uploaded: None,
            },
            file,
        ))
    }

    /// The tar writer closed the tar with `summary`: wait for the last chunk and check
    /// that what was stored is exactly what the tar writer wrote.
    async fn finish(&mut self, summary: &OutputSummary) -> Result<(), Error> {
        self.spool.finish();
        let task = self
            .task
            .take()
            .ok_or_else(|| Error::Io(std::io::Error::other("artifact upload already finished")))?;
        let up = task.await.map_err(|e| {
            Error::Io(std::io::Error::other(format!("artifact upload task: {e}")))
        })??;
        if up.bytes != summary.tar_bytes || up.sha256 != summary.sha256 {
            return Err(Error::Corrupt {
                id: self.id,
                reason: format!(
                    "stored {} bytes (sha256 {}), the tar writer wrote {} (sha256 {})",
                    up.bytes, up.sha256, summary.tar_bytes, summary.sha256
                ),
            });
        }
        self.uploaded = Some(up);
        Ok(())
    }

    async fn stop(&mut self) {
        self.spool.abort();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    async fn commit(
        mut self,
        pool: &PgPool,
        producer: Producer<'_>,
        summary: &OutputSummary,
        paths: Vec<String>,
    ) -> Result<StoredArtifact, Error> {
        let Some(up) = self.uploaded.take() else {
            self.stop().await;
            return Err(Error::Io(std::io::Error::other(
                "artifact committed before it was finished",
            )));
        };
        let done = sqlx::query(
            "UPDATE highway.artifacts
                SET state = 'complete', size_bytes = $2, sha256 = $3, entry_count = $4,
                    chunk_count = $5, paths = $6, touched_at = now()
              WHERE id = $1 AND state = 'writing'",
        )
        .bind(self.id)
        .bind(i64::try_from(up.bytes).unwrap_or(i64::MAX))
        .bind(&up.sha256)
        .bind(i64::try_from(summary.entry_count).unwrap_or(i64::MAX))
        .bind(up.chunks)
        .bind(&paths)
        .execute(pool)
        .await?;
        if done.rows_affected() != 1 {
            return Err(Error::Corrupt {
                id: self.id,
                reason:
                    "its row was deleted while it was written (retention took it for abandoned)"
                        .into(),
            });
        }
        Ok(StoredArtifact {
            id: self.id,
            tenant_id: producer.tenant_id.to_string(),
            size_bytes: up.bytes,
            sha256: up.sha256,
            paths,
        })
    }

    async fn discard(mut self, pool: &PgPool) {
        self.stop().await;
        if let Err(e) = delete_writing(pool, self.id).await {
            // Retention deletes it once it has been untouched for a while.
            tracing::warn!(artifact_id = %self.id, error = %e, "could not delete a discarded artifact");
        }
    }
}

impl Drop for Upload {
    /// A writer dropped half-way (its handler was cancelled): stop the uploader; the
    /// `writing` row is left to retention.
    fn drop(&mut self) {
        if self.task.is_some() {
            self.spool.abort();
        }
    }
}

async fn delete_writing(pool: &PgPool, id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM highway.artifacts WHERE id = $1 AND state = 'writing'")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Drains the spool into chunks until the tar writer finished.
async fn upload(pool: PgPool, id: Uuid, spool: Arc<Spool>) -> Result<Uploaded, Error> {
    let res = async {
        let mut hasher = sha2::Sha256::new();
        let mut bytes = 0u64;
        let mut seq: i32 = 0;
        while let Some(chunk) = spool.next_chunk(CHUNK_BYTES).await? {
            hasher.update(&chunk);
            let len = chunk.len() as u64;
            insert_chunk(&pool, id, seq, chunk).await?;
            bytes += len;
            seq += 1;
            spool.release(len);
        }
        Ok(Uploaded {
            bytes,
            sha256: hex::encode(hasher.finalize()),
            chunks: seq,
        })
    }
    .await;
    if res.is_err() {
        // The tar writer must not wait for room that will never come.
        spool.abort();
    }
    res
}

/// One chunk, fenced on the artifact still being written (and its touch time bumped, so
/// retention sees a live write). Committed without waiting for the WAL flush: a chunk
/// lost to a crash only leaves a `writing` artifact (refused, then deleted), and the
/// synchronous commit that completes the row flushes every chunk's WAL before it.
async fn insert_chunk(pool: &PgPool, id: Uuid, seq: i32, data: Vec<u8>) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let r = sqlx::query(
        "WITH a AS (UPDATE highway.artifacts SET touched_at = now()
                     WHERE id = $1 AND state = 'writing' RETURNING id)
         INSERT INTO highway.artifact_chunks (artifact_id, seq, data) SELECT id, $2, $3 FROM a",
    )
    .bind(id)
    .bind(seq)
    .bind(data)
    .execute(&mut *tx)
    .await?;
    if r.rows_affected() != 1 {
        return Err(Error::Corrupt {
            id,
            reason: "its row was deleted while it was written".into(),
        });
    }
    tx.commit().await?;
    Ok(())
}

/// An output artifact being written (see [`super::ArtifactWriter`]).
pub(super) struct PgWriter {
    tar: Option<OutputTarWriter>,
    upload: Upload,
}

fn store_error(e: Error) -> TarError {
    match e {
        Error::Invalid(t) => t,
        Error::Io(io) => TarError::Io(io),
        other => TarError::Io(std::io::Error::other(other.to_string())),
    }
}

impl PgWriter {
    pub(super) async fn begin(
        pool: &PgPool,
        producer: Producer<'_>,
        kind: &str,
        limits: TarLimits,
    ) -> Result<Self, Error> {
        let (upload, file) = Upload::begin(pool, producer, kind).await?;
        Ok(Self {
            tar: Some(OutputTarWriter::spawn(file, limits)),
            upload,
        })
    }

    fn tar(&self) -> Result<&OutputTarWriter, TarError> {
        self.tar.as_ref().ok_or_else(super::closed)
    }

    pub(super) async fn start(&self, declared: &str) -> Result<(), TarError> {
        self.tar()?.start(declared).await
    }

    pub(super) async fn data(&self, chunk: Bytes) -> Result<(), TarError> {
        // Backpressure: the download waits while the uploader is behind.
        self.upload.spool.wait_for_room().await?;
        self.tar()?.data(chunk).await?;
        self.upload.spool.wrote();
        Ok(())
    }

    pub(super) async fn end(&self) -> Result<(), TarError> {
        self.tar()?.end().await
    }

    pub(super) async fn fail(&self, reason: String) {
        if let Ok(t) = self.tar() {
            t.fail(reason).await;
        }
    }

    pub(super) async fn finish(&mut self) -> Result<OutputSummary, TarError> {
        let tar = self.tar.take().ok_or_else(super::closed)?;
        let summary = match tar.finish().await {
            Ok(s) => s,
            Err(e) => {
                self.upload.stop().await;
                return Err(e);
            }
        };
        self.upload.finish(&summary).await.map_err(store_error)?;
        Ok(summary)
    }

    pub(super) async fn commit(
        self,
        pool: &PgPool,
        producer: Producer<'_>,
        summary: &OutputSummary,
        paths: Vec<String>,
    ) -> Result<StoredArtifact, Error> {
        self.upload.commit(pool, producer, summary, paths).await
    }

    pub(super) async fn discard(self, pool: &PgPool) {
        self.upload.discard(pool).await;
    }
}

/// Reads the source of an import, waiting whenever the spool is full (the import runs
/// on a blocking thread and would otherwise write the whole tar to the spool at once).
struct GatedRead<R> {
    inner: R,
    spool: Arc<Spool>,
}

impl<R: Read> Read for GatedRead<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.spool.wait_for_room_blocking()?;
        let n = self.inner.read(buf)?;
        self.spool.wrote();
        Ok(n)
    }
}

/// Validates a tar file and stores it as chunks.
pub(super) async fn import(
    pool: &PgPool,
    producer: Producer<'_>,
    src: std::fs::File,
    limits: TarLimits,
) -> Result<StoredArtifact, Error> {
    let (mut upload, file) = Upload::begin(pool, producer, "import").await?;
    let src = GatedRead {
        inner: src,
        spool: upload.spool.clone(),
    };
    let res = tokio::task::spawn_blocking(move || tario::import_archive(src, file, &limits))
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())));
    let summary = match res {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            upload.discard(pool).await;
            return Err(e.into());
        }
        Err(e) => {
            upload.discard(pool).await;
            return Err(e);
        }
    };
    if let Err(e) = upload.finish(&summary).await {
        upload.discard(pool).await;
        return Err(e);
    }
    let paths = summary.entries.iter().map(|e| e.path.clone()).collect();
    upload.commit(pool, producer, &summary, paths).await
}

// ---------------------------------------------------------------------------------
// Reading

/// A Postgres artifact streaming into a pipe (see [`super::OpenArtifact`]).
#[derive(Debug)]
pub struct OpenChunks {
    id: Uuid,
    /// Our read end, kept open until `close` so the reader can open it by path and the
    /// feeder never writes into a pipe nobody holds.
    read_end: Option<OwnedFd>,
    feeder: Option<JoinHandle<Result<(), Error>>>,
}

impl OpenChunks {
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// `/proc/self/fd/N`: opening it opens the pipe's read side, like a file.
    pub fn path(&self) -> PathBuf {
        let fd = self.read_end.as_ref().map(|f| f.as_raw_fd()).unwrap_or(-1);
        PathBuf::from(format!("/proc/self/fd/{fd}"))
    }

    pub(super) async fn close(mut self) -> Result<(), Error> {
        // With the reader done, a feeder still writing gets EPIPE and only hashes the rest.
        drop(self.read_end.take());
        match self.feeder.take() {
            Some(f) => f
                .await
                .map_err(|e| Error::Io(std::io::Error::other(format!("artifact feeder: {e}"))))?,
            None => Ok(()),
        }
    }
}

impl Drop for OpenChunks {
    fn drop(&mut self) {
        if let Some(f) = self.feeder.take() {
            f.abort();
        }
    }
}

/// Starts streaming a complete Postgres artifact into a pipe.
pub(super) fn open(pool: &PgPool, row: ArtifactRow) -> Result<OpenChunks, Error> {
    let (tx, rx) = tokio::net::unix::pipe::pipe()?;
    let read_end = rx.into_blocking_fd()?;
    let id = row.id;
    let feeder = tokio::spawn(feed(pool.clone(), row, tx));
    Ok(OpenChunks {
        id,
        read_end: Some(read_end),
        feeder: Some(feeder),
    })
}

async fn fetch_chunk(pool: &PgPool, id: Uuid, seq: i32) -> Result<Vec<u8>, Error> {
    let data: Option<Vec<u8>> = sqlx::query_scalar(
        "SELECT data FROM highway.artifact_chunks WHERE artifact_id = $1 AND seq = $2",
    )
    .bind(id)
    .bind(seq)
    .fetch_optional(pool)
    .await?;
    data.ok_or_else(|| Error::Corrupt {
        id,
        reason: format!("chunk {seq} is missing"),
    })
}

/// Writes the chunks in order into `tx`, fetching the next while writing the current,
/// and holds the last one back unless size and checksum match the row.
async fn feed(
    pool: PgPool,
    row: ArtifactRow,
    mut tx: tokio::net::unix::pipe::Sender,
) -> Result<(), Error> {
    let id = row.id;
    let n = row.chunk_count.unwrap_or(0);
    let corrupt = |reason: String| Error::Corrupt { id, reason };
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    // False once the reader went away (it finished, or failed): keep hashing so the
    // caller still learns whether the artifact was intact.
    let mut writing = true;
    let mut current = if n > 0 {
        Some(fetch_chunk(&pool, id, 0).await?)
    } else {
        None
    };
    let mut seq = 0;
    while let Some(data) = current.take() {
        hasher.update(&data);
        total += data.len() as u64;
        let last = seq + 1 == n;
        if last {
            let sha = hex::encode(hasher.clone().finalize());
            if total != row.size_bytes {
                return Err(corrupt(format!(
                    "its chunks hold {total} bytes, the row says {}",
                    row.size_bytes
                )));
            }
            if Some(sha.as_str()) != row.sha256.as_deref() {
                return Err(corrupt("checksum mismatch".into()));
            }
        }
        let write = async {
            if !writing {
                return Ok(true);
            }
            match tx.write_all(&data).await {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
                Err(e) => Err(Error::Io(e)),
            }
        };
        let next = async {
            if last {
                Ok(None)
            } else {
                fetch_chunk(&pool, id, seq + 1).await.map(Some)
            }
        };
        let (wrote, next) = tokio::join!(write, next);
        writing = wrote?;
        current = next?;
        seq += 1;
    }
    if n == 0 {
        return Err(corrupt("it has no chunks".into()));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Retention

/// Deletes expired Postgres artifacts and writes abandoned for `abandoned_after` (their
/// chunks go through the cascade); a batch each per call.
pub(super) async fn delete_retired(
    pool: &PgPool,
    abandoned_after: Duration,
    batch: i64,
) -> sqlx::Result<RetentionCounts> {
    let expired = sqlx::query(
        "DELETE FROM highway.artifacts WHERE id IN (
             SELECT id FROM highway.artifacts
              WHERE storage = 'postgres' AND expires_at <= now()
              LIMIT $1 FOR UPDATE SKIP LOCKED)
           AND expires_at <= now()",
    )
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected();
    let abandoned = sqlx::query(
        "DELETE FROM highway.artifacts WHERE id IN (
             SELECT id FROM highway.artifacts
              WHERE state = 'writing' AND storage = 'postgres'
                AND touched_at < now() - make_interval(secs => $2)
              LIMIT $1 FOR UPDATE SKIP LOCKED)
           AND state = 'writing' AND touched_at < now() - make_interval(secs => $2)",
    )
    .bind(batch)
    .bind(abandoned_after.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(RetentionCounts { expired, abandoned })
}
