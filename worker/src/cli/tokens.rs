//! `highway tokens create|revoke|ls`: API tokens, managed straight in the database (an
//! operator with DATABASE_URL is already trusted; the API has no token endpoints, so a
//! leaked tenant token cannot mint others). `create` prints the token once; only its
//! SHA-256 is stored.

use crate::api::store;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use anyhow::bail;
use clap::Subcommand;
use serde_json::json;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token and print it (once: it cannot be shown again).
    Create {
        /// The tenant the token acts for.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        tenant: Option<String>,
        /// An admin token: sees and acts on every tenant.
        #[arg(long)]
        admin: bool,
        /// A name for people (`ci`, `billing-service`).
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id: it answers 401 from the next request on.
    Revoke { id: Uuid },
    /// List tokens (ids, names, tenants, use; never the tokens).
    Ls {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    db_args: &DatabaseArgs,
    pool_opts: PoolOptions,
    cmd: TokensCommand,
) -> anyhow::Result<ExitCode> {
    let pool = db::connect(&db_args.resolve_url()?, &pool_opts).await?;
    match cmd {
        TokensCommand::Create {
            tenant,
            admin,
            name,
            json,
        } => {
            if name.is_empty() || name.len() > 128 {
                bail!("--name must be 1 to 128 characters");
            }
            let tenant = if admin { None } else { tenant };
            if let Some(t) = &tenant {
                highway_workflows::EnqueueRequest::new("x", json!({}))
                    .tenant(t.clone())
                    .validate()
                    .map_err(|e| anyhow::anyhow!("--tenant: {}", e.reason))?;
            }
            let (id, token) = store::create_token(&pool, &name, tenant.as_deref()).await?;
            if json {
                println!(
                    "{}",
                    json!({"id": id, "name": name, "tenant_id": tenant, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!(
                    "token {id} ({}) created; it is shown only this once",
                    tenant
                        .as_deref()
                        .map_or("admin".to_string(), |t| format!("tenant {t}"))
                );
            }
        }
        TokensCommand::Revoke { id } => {
            if !store::revoke_token(&pool, id).await? {
                bail!("no live token with id {id}");
            }
            println!("{id}: revoked");
        }
        TokensCommand::Ls { json } => {
            let rows = store::list_tokens(&pool).await?;
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<36}  {:<20}  {:<16}  {:<8}  LAST USED",
                    "ID", "NAME", "TENANT", "STATE"
                );
                for t in rows {
                    println!(
                        "{:<36}  {:<20}  {:<16}  {:<8}  {}",
                        t.id,
                        t.name,
                        t.tenant_id.as_deref().unwrap_or("(admin)"),
                        if t.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        },
                        t.last_used_at
                            .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
