//! `highway.settings`: facts about the database itself, written once by the migrations.
//! Today one: the deployment identity, a uuid that tells this database's containers from
//! every other stack's on a shared Docker daemon.
//!
//! Owns: the reads of `highway.settings`. Nothing at run time writes it: the migration
//! that creates the table creates the identity, once.

use sqlx::PgExecutor;
use uuid::Uuid;

/// The `highway.settings` name of the deployment identity.
pub const DEPLOYMENT_ID: &str = "deployment_id";

/// Errors reading the identity.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the deployment identity: {0}")]
    Db(#[from] sqlx::Error),
    /// The migrations did not run (or someone deleted the row): refusing to guess.
    #[error("the database has no deployment identity (run `highway migrate`)")]
    Missing,
    #[error("the deployment identity {0:?} in highway.settings is not a uuid")]
    Malformed(String),
}

/// This database's deployment identity.
pub async fn deployment_id(db: impl PgExecutor<'_>) -> Result<Uuid, Error> {
    let v: Option<String> =
        sqlx::query_scalar("SELECT value FROM highway.settings WHERE name = $1")
            .bind(DEPLOYMENT_ID)
            .fetch_optional(db)
            .await?;
    let v = v.ok_or(Error::Missing)?;
    v.parse().map_err(|_| Error::Malformed(v))
}
