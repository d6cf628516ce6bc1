//! `highway secrets set|rm|ls`: the tenant secrets store (`highway.secrets`, encrypted
//! with `HIGHWAY_SECRETS_KEY`). A value is read from stdin only — never from argv (it
//! would sit in shell history and `ps`) — and is never printed: `ls` shows names only.
//! `set` and `rm` are operator actions: each writes one `highway.audit_log` row (the
//! name, never the value).
//!
//! `rotate-key` re-encrypts every secret under `HIGHWAY_SECRETS_KEY`, reading rows
//! written under a previous key with `HIGHWAY_SECRETS_KEY_OLD`.

use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use crate::docker::secret_store::{SecretStore, SecretsKey, StoreError};
use crate::docker::tracking::{self, AuditEvent};
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::json;
use sqlx::PgPool;
use std::io::Read;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Create or replace a secret; the value is read from stdin (one trailing newline
    /// is dropped, so `echo value | highway secrets set ...` works).
    Set {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Delete a secret.
    Rm {
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Re-encrypt every secret under HIGHWAY_SECRETS_KEY (the new key), reading rows
    /// of previous keys with HIGHWAY_SECRETS_KEY_OLD; all rows or none.
    RotateKey {
        #[arg(long)]
        json: bool,
    },
    /// List secret names (never values).
    Ls {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    db_args: &DatabaseArgs,
    pool_opts: PoolOptions,
    cmd: SecretsCommand,
) -> anyhow::Result<ExitCode> {
    let key = match SecretsKey::from_env() {
        Ok(Some(k)) => k,
        Ok(None) => return Err(StoreError::NoKey.into()),
        Err(e) => return Err(e.into()),
    };
    let pool = db::connect(&db_args.resolve_url()?, &pool_opts).await?;
    let store =
        SecretStore::new(pool.clone(), key.clone()).with_old_keys(SecretsKey::old_from_env()?);
    match cmd {
        SecretsCommand::Set { tenant, name } => {
            let mut value = String::new();
            std::io::stdin()
                .take(crate::docker::secret_store::MAX_VALUE_BYTES as u64 + 2)
                .read_to_string(&mut value)
                .context("reading the secret value from stdin (UTF-8)")?;
            if let Some(v) = value.strip_suffix('\n') {
                value = v.strip_suffix('\r').unwrap_or(v).to_string();
            }
            if value.is_empty() {
                bail!("no value on stdin");
            }
            store.set(&tenant, &name, &value).await?;
            audit(&pool, &tenant, "secret.set", &name, key.id()).await?;
            eprintln!("secret {name:?} of tenant {tenant:?} stored");
        }
        SecretsCommand::Rm { tenant, name } => {
            if !store.remove(&tenant, &name).await? {
                bail!("tenant {tenant:?} has no secret {name:?}");
            }
            audit(&pool, &tenant, "secret.rm", &name, key.id()).await?;
            eprintln!("secret {name:?} of tenant {tenant:?} removed");
        }
        SecretsCommand::RotateKey { json: as_json } => {
            let done = store.rotate().await?;
            audit(&pool, "*", "secret.rotate_key", "*", key.id()).await?;
            if as_json {
                println!(
                    "{}",
                    json!({"key_id": key.id(), "reencrypted": done.reencrypted, "current": done.current})
                );
            } else {
                eprintln!(
                    "{} secret(s) re-encrypted under key {} ({} already were); HIGHWAY_SECRETS_KEY_OLD may now be dropped",
                    done.reencrypted,
                    key.id(),
                    done.current
                );
            }
        }
        SecretsCommand::Ls { tenant, json } => {
            let rows = store.list(tenant.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!("{:<24}  {:<32}  {:<8}  UPDATED", "TENANT", "NAME", "KEY");
                for r in rows {
                    println!(
                        "{:<24}  {:<32}  {:<8}  {}",
                        r.tenant_id,
                        r.name,
                        r.key_id,
                        r.updated_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The operator is whoever holds DATABASE_URL on this machine: name the OS user.
async fn audit(
    pool: &PgPool,
    tenant: &str,
    action: &str,
    name: &str,
    key_id: &str,
) -> anyhow::Result<()> {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let actor = format!("cli:{user}");
    tracking::audit(
        pool,
        &AuditEvent {
            tenant_id: tenant,
            actor: &actor,
            action,
            target: Some(name),
            activity_id: None,
            workflow_run_id: None,
            outcome: "ok",
            details: json!({"key_id": key_id}),
        },
    )
    .await?;
    Ok(())
}
