//! Artifacts: output tars of runs stored on disk under the artifact directory, indexed by
//! `highway.artifacts` (id, tenant, producing attempt, size, sha256), and read back as
//! inputs of later runs.
//!
//! Owns: the artifact directory layout (`<dir>/<id>.tar`, and `<dir>/.partial/<id>.tar`
//! while one is being written, so a crash never leaves a half file under a final name)
//! and the `highway.artifacts` SQL. Must not: extract an artifact on the host (artifacts
//! only ever go from tar to tar, see `tario`).

use crate::docker::tario::{self, OutputSummary, TarError, TarLimits};
use highway_workflows::docker::ArtifactRef;
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No artifact with that id for this tenant (another tenant's looks the same).
    #[error("artifact {0} not found")]
    NotFound(Uuid),
    /// The stored bytes no longer match the row (size or checksum).
    #[error("artifact {id} is corrupt: {reason}")]
    Corrupt { id: Uuid, reason: String },
    #[error("artifact content refused: {0}")]
    Invalid(#[from] TarError),
    #[error("artifact storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("artifact index: {0}")]
    Db(#[from] sqlx::Error),
}

/// A stored artifact, as the run handler needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredArtifact {
    pub id: Uuid,
    pub tenant_id: String,
    pub size_bytes: u64,
    pub sha256: String,
    pub path: PathBuf,
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

/// A file being written; `commit` moves it under its final name and indexes it.
#[derive(Debug)]
pub struct PendingArtifact {
    pub id: Uuid,
    partial: PathBuf,
}

impl PendingArtifact {
    pub fn open(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&self.partial)
    }
}

/// Who produced an artifact.
#[derive(Debug, Clone, Copy)]
pub struct Producer<'a> {
    pub tenant_id: &'a str,
    pub activity_id: Option<Uuid>,
    pub attempt: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

impl ArtifactStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn final_path(&self, id: Uuid) -> PathBuf {
        self.dir.join(format!("{id}.tar"))
    }

    /// Reserves a new artifact file in the partial area.
    pub async fn begin(&self) -> Result<PendingArtifact, Error> {
        let partial_dir = self.dir.join(".partial");
        tokio::fs::create_dir_all(&partial_dir).await?;
        let id = Uuid::now_v7();
        Ok(PendingArtifact {
            id,
            partial: partial_dir.join(format!("{id}.tar")),
        })
    }

    /// Drops a pending artifact (failed or refused content).
    pub async fn discard(&self, pending: PendingArtifact) {
        let _ = tokio::fs::remove_file(&pending.partial).await;
    }

    /// Moves the file under its final name, then indexes it. The row is written last so
    /// an indexed artifact always has its bytes.
    pub async fn commit(
        &self,
        pool: &PgPool,
        pending: PendingArtifact,
        producer: Producer<'_>,
        kind: &str,
        summary: &OutputSummary,
        paths: Vec<String>,
    ) -> Result<StoredArtifact, Error> {
        let path = self.final_path(pending.id);
        tokio::fs::rename(&pending.partial, &path).await?;
        let stored = format!("{}.tar", pending.id);
        let insert = sqlx::query(
            "INSERT INTO highway.artifacts
                 (id, tenant_id, activity_id, attempt, kind, size_bytes, sha256, entry_count,
                  storage_path, paths)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(pending.id)
        .bind(producer.tenant_id)
        .bind(producer.activity_id)
        .bind(producer.attempt)
        .bind(kind)
        .bind(i64::try_from(summary.tar_bytes).unwrap_or(i64::MAX))
        .bind(&summary.sha256)
        .bind(i64::try_from(summary.entry_count).unwrap_or(i64::MAX))
        .bind(&stored)
        .bind(&paths)
        .execute(pool)
        .await;
        if let Err(e) = insert {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e.into());
        }
        Ok(StoredArtifact {
            id: pending.id,
            tenant_id: producer.tenant_id.to_string(),
            size_bytes: summary.tar_bytes,
            sha256: summary.sha256.clone(),
            path,
            paths,
        })
    }

    /// Looks an artifact up for `tenant_id` and checks its file is there with the
    /// recorded size. (The checksum is verified by [`ArtifactStore::verify`], which
    /// reads the whole file; callers choose when that cost is worth it.)
    pub async fn load(
        &self,
        pool: &PgPool,
        tenant_id: &str,
        id: Uuid,
    ) -> Result<StoredArtifact, Error> {
        let row: Option<(String, i64, String, String, Vec<String>)> = sqlx::query_as(
            "SELECT tenant_id, size_bytes, sha256, storage_path, paths
               FROM highway.artifacts
              WHERE id = $1 AND tenant_id = $2 AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(id)
        .bind(tenant_id)
        .fetch_optional(pool)
        .await?;
        let Some((tenant, size, sha256, storage_path, paths)) = row else {
            return Err(Error::NotFound(id));
        };
        // Stored paths are plain file names; refuse anything else so a tampered row
        // cannot point the worker at an arbitrary host file.
        if storage_path.contains('/') || storage_path.starts_with('.') {
            return Err(Error::Corrupt {
                id,
                reason: "bad storage path".into(),
            });
        }
        let path = self.dir.join(&storage_path);
        let meta = match tokio::fs::metadata(&path).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Corrupt {
                    id,
                    reason: "file missing".into(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        if meta.len() != size as u64 {
            return Err(Error::Corrupt {
                id,
                reason: format!("size {} != recorded {size}", meta.len()),
            });
        }
        Ok(StoredArtifact {
            id,
            tenant_id: tenant,
            size_bytes: size as u64,
            sha256,
            path,
            paths,
        })
    }

    /// Recomputes the checksum of a stored artifact.
    pub async fn verify(&self, artifact: &StoredArtifact) -> Result<(), Error> {
        let path = artifact.path.clone();
        let sha = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            use sha2::Digest;
            let mut f = std::fs::File::open(path)?;
            let mut h = sha2::Sha256::new();
            std::io::copy(&mut f, &mut h)?;
            Ok(hex::encode(h.finalize()))
        })
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))??;
        if sha != artifact.sha256 {
            return Err(Error::Corrupt {
                id: artifact.id,
                reason: "checksum mismatch".into(),
            });
        }
        Ok(())
    }

    /// Validates a tar file (uncompressed; entries checked like outputs) and stores it
    /// as an artifact of `producer` (operator uploads, tests).
    pub async fn import_tar_file(
        &self,
        pool: &PgPool,
        producer: Producer<'_>,
        src: &Path,
        limits: TarLimits,
    ) -> Result<StoredArtifact, Error> {
        let pending = self.begin().await?;
        let file = pending.open()?;
        let src_file = std::fs::File::open(src)?;
        let res =
            tokio::task::spawn_blocking(move || tario::import_archive(src_file, file, &limits))
                .await
                .map_err(|e| std::io::Error::other(e.to_string()));
        let summary = match res {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.discard(pending).await;
                return Err(e.into());
            }
            Err(e) => {
                self.discard(pending).await;
                return Err(e.into());
            }
        };
        let paths = summary.entries.iter().map(|e| e.path.clone()).collect();
        self.commit(pool, pending, producer, "import", &summary, paths)
            .await
    }
}
