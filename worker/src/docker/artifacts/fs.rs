//! The filesystem backend: artifact tars stored on this host under a directory.
//!
//! Owns: the directory layout (`<dir>/<id>.tar`, and `<dir>/.partial/<id>.tar` while one
//! is being written, so a crash never leaves a half file under a final name). The row
//! (`storage = 'fs'`) is written after the file got its final name, so an indexed
//! artifact always has its bytes.

use super::{pg, Error, Producer, StoredArtifact};
use crate::docker::tario::{self, OutputSummary, OutputTarWriter, TarError, TarLimits};
use sqlx::PgPool;
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// A tar being written into the partial area.
pub(super) struct FsWriter {
    /// `None` once finished.
    tar: Option<OutputTarWriter>,
    id: Uuid,
    dir: PathBuf,
    partial: PathBuf,
}

fn final_path(dir: &Path, id: Uuid) -> PathBuf {
    dir.join(format!("{id}.tar"))
}

/// Reserves a new artifact file in the partial area.
async fn create_partial(dir: &Path) -> Result<(Uuid, PathBuf, std::fs::File), Error> {
    let partial_dir = dir.join(".partial");
    tokio::fs::create_dir_all(&partial_dir).await?;
    let id = Uuid::now_v7();
    let partial = partial_dir.join(format!("{id}.tar"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&partial)?;
    Ok((id, partial, file))
}

impl FsWriter {
    pub(super) async fn begin(dir: &Path, limits: TarLimits) -> Result<Self, Error> {
        let (id, partial, file) = create_partial(dir).await?;
        Ok(Self {
            tar: Some(OutputTarWriter::spawn(file, limits)),
            id,
            dir: dir.to_path_buf(),
            partial,
        })
    }

    pub(super) fn tar(&self) -> Result<&OutputTarWriter, TarError> {
        self.tar.as_ref().ok_or_else(super::closed)
    }

    pub(super) async fn finish(&mut self) -> Result<OutputSummary, TarError> {
        self.tar.take().ok_or_else(super::closed)?.finish().await
    }

    pub(super) async fn discard(self) {
        let _ = tokio::fs::remove_file(&self.partial).await;
    }

    pub(super) async fn commit(
        self,
        pool: &PgPool,
        producer: Producer<'_>,
        kind: &str,
        summary: &OutputSummary,
        paths: Vec<String>,
    ) -> Result<StoredArtifact, Error> {
        commit_file(
            pool,
            &self.dir,
            self.id,
            &self.partial,
            producer,
            kind,
            summary,
            paths,
        )
        .await
    }
}

/// Moves the file under its final name, then indexes it.
async fn commit_file(
    pool: &PgPool,
    dir: &Path,
    id: Uuid,
    partial: &Path,
    producer: Producer<'_>,
    kind: &str,
    summary: &OutputSummary,
    paths: Vec<String>,
) -> Result<StoredArtifact, Error> {
    let path = final_path(dir, id);
    tokio::fs::rename(partial, &path).await?;
    let stored = format!("{id}.tar");
    if let Err(e) = pg::insert_fs_row(pool, id, producer, kind, summary, &stored, &paths).await {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e.into());
    }
    Ok(StoredArtifact {
        id,
        tenant_id: producer.tenant_id.to_string(),
        size_bytes: summary.tar_bytes,
        sha256: summary.sha256.clone(),
        paths,
    })
}

/// An artifact file open for reading.
#[derive(Debug)]
pub struct OpenFile {
    pub id: Uuid,
    pub path: PathBuf,
}

/// Checks the row's file is there with the recorded size. (The checksum was computed
/// when it was written; rereading a whole file before every use would double the cost.)
pub(super) async fn open(dir: &Path, row: &pg::ArtifactRow) -> Result<OpenFile, Error> {
    let id = row.id;
    let storage_path = row.storage_path.clone().unwrap_or_default();
    // Stored paths are plain file names; refuse anything else so a tampered row
    // cannot point the worker at an arbitrary host file.
    if storage_path.is_empty() || storage_path.contains('/') || storage_path.starts_with('.') {
        return Err(Error::Corrupt {
            id,
            reason: "bad storage path".into(),
        });
    }
    let path = dir.join(&storage_path);
    let meta = match tokio::fs::metadata(&path).await {
        Ok(m) => m,
        // Written on another host (its directory is not here), or deleted.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(id)),
        Err(e) => return Err(e.into()),
    };
    if meta.len() != row.size_bytes {
        return Err(Error::Corrupt {
            id,
            reason: format!("size {} != recorded {}", meta.len(), row.size_bytes),
        });
    }
    Ok(OpenFile { id, path })
}

/// Validates a tar file and stores it under `dir`.
pub(super) async fn import(
    pool: &PgPool,
    dir: &Path,
    producer: Producer<'_>,
    src: std::fs::File,
    limits: TarLimits,
) -> Result<StoredArtifact, Error> {
    let (id, partial, file) = create_partial(dir).await?;
    let res = tokio::task::spawn_blocking(move || tario::import_archive(src, file, &limits))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()));
    let summary = match res {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.into());
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e.into());
        }
    };
    let paths = summary.entries.iter().map(|e| e.path.clone()).collect();
    commit_file(pool, dir, id, &partial, producer, "import", &summary, paths).await
}
