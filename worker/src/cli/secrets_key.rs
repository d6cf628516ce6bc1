//! `highway rotate-secrets-key`: a server command (it needs `DATABASE_URL` and the keys,
//! which only servers hold) that re-encrypts everything `HIGHWAY_SECRETS_KEY` protects —
//! tenant secrets and private registry passwords — under the current key, reading rows
//! written under a previous key with `HIGHWAY_SECRETS_KEY_OLD`. Each table is rotated
//! in one transaction (all its rows or none); the rotation is audited once per table,
//! with the key id, never a key or a value.

use crate::api::store;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use crate::docker::registry_store::RegistryStore;
use crate::docker::secret_store::{SecretStore, SecretsKey, StoreError};
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args, Debug, Clone)]
pub struct RotateArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
}

pub async fn run(a: RotateArgs, pool_opts: PoolOptions) -> anyhow::Result<ExitCode> {
    let key = SecretsKey::from_env()?.ok_or(StoreError::NoKey)?;
    let old = SecretsKey::old_from_env()?;
    let pool = db::connect(&a.db.resolve_url()?, &pool_opts).await?;
    let secrets = SecretStore::new(pool.clone(), key.clone())
        .with_old_keys(old.clone())
        .rotate()
        .await?;
    let actor = format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    );
    store::audit(
        &pool,
        None,
        &actor,
        "secret.rotate_key",
        Some(key.id()),
        None,
        None,
        "ok",
    )
    .await?;
    let registries = RegistryStore::new(pool.clone(), Some(key.clone()))
        .with_old_keys(old)
        .rotate()
        .await?;
    store::audit(
        &pool,
        None,
        &actor,
        "registry.rotate_key",
        Some(key.id()),
        None,
        None,
        "ok",
    )
    .await?;
    if crate::cli::output::json(false) {
        println!(
            "{}",
            json!({"key_id": key.id(), "secrets": secrets, "registry_credentials": registries})
        );
    } else {
        eprintln!(
            "under key {}: {} secret(s) re-encrypted ({} already were), {} registry \
             password(s) re-encrypted ({} already were); HIGHWAY_SECRETS_KEY_OLD may now be dropped",
            key.id(),
            secrets.reencrypted,
            secrets.current,
            registries.reencrypted,
            registries.current
        );
    }
    Ok(ExitCode::SUCCESS)
}
