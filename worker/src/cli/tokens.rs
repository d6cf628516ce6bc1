//! `highway token create|revoke|ls`: API tokens through the API's admin routes
//! (`/v1/tokens`, admin token). `create` prints the token once, on stdout alone, so
//! `highway token create ... > file` captures it and nothing else; only its SHA-256 is
//! stored. The first admin token of a deployment comes from `highway up` (written to
//! `<state-dir>/admin.token`) or, on a server with DATABASE_URL, `highway
//! bootstrap-token`.

use super::output::{self, Table};
use super::remote::{Remote, RemoteArgs};
use super::{cell, cell_time};
use crate::api::store;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use anyhow::bail;
use clap::Subcommand;
use serde_json::{json, Value};
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Subcommand, Debug)]
pub enum TokensCommand {
    /// Create a token and print it (once: it cannot be shown again).
    Create {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The tenant the token acts for.
        #[arg(long, conflicts_with = "admin", required_unless_present = "admin")]
        tenant: Option<String>,
        /// An admin token: sees and acts on every tenant.
        #[arg(long)]
        admin: bool,
        /// A name for people (`ci`, `billing-service`).
        #[arg(long)]
        name: String,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Revoke a token by id: it answers 401 from the next request on.
    Revoke {
        #[command(flatten)]
        remote: RemoteArgs,
        id: Uuid,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// List tokens (ids, names, tenants, use; never the tokens).
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long, hide = true)]
        json: bool,
    },
}

pub async fn run(cmd: TokensCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TokensCommand::Create {
            remote,
            tenant,
            admin,
            name,
            json,
        } => {
            if name.is_empty() || name.chars().count() > 128 {
                bail!("--name must be 1 to 128 characters");
            }
            let mut body = json!({"name": name, "admin": admin});
            if !admin {
                body["tenant_id"] = json!(tenant);
            }
            let api = Remote::new(&remote)?;
            let v = api.post_json("/v1/tokens", &body).await?;
            if output::json(json) {
                println!("{v}");
            } else {
                println!("{}", v["token"].as_str().unwrap_or_default());
                eprintln!(
                    "token {} ({}) created; it is shown only this once",
                    cell(&v["id"]),
                    v["tenant_id"]
                        .as_str()
                        .map_or("admin".to_string(), |t| format!(
                            "tenant {}",
                            cell(&json!(t))
                        ))
                );
            }
        }
        TokensCommand::Revoke { remote, id, json } => {
            let api = Remote::new(&remote)?;
            let v = api
                .post_json(&format!("/v1/tokens/{id}/revoke"), &json!({}))
                .await?;
            if output::json(json) {
                println!("{v}");
            } else {
                println!("{id}: revoked");
            }
        }
        TokensCommand::Ls { remote, json } => {
            let api = Remote::new(&remote)?;
            let v = api.get_json("/v1/tokens", &[]).await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if output::json(json) {
                println!("{}", Value::Array(items));
            } else {
                let mut t = Table::new(&["ID", "NAME", "TENANT", "STATE", "LAST USED"]);
                for r in items {
                    t.row(vec![
                        cell(&r["id"]),
                        cell(&r["name"]),
                        r["tenant_id"]
                            .as_str()
                            .map_or("(admin)".to_string(), |_| cell(&r["tenant_id"])),
                        if r["revoked_at"].is_null() {
                            "live".into()
                        } else {
                            "revoked".into()
                        },
                        cell_time(&r["last_used_at"]),
                    ]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `highway bootstrap-token --name NAME`: a server command (DATABASE_URL) that creates
/// an admin token and prints it once — the way in for a deployment without a local
/// `highway up`. Every other token operation goes through the API.
#[derive(clap::Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// A name for people (`ops`, `ci-admin`).
    #[arg(long)]
    pub name: String,
}

pub async fn bootstrap(a: BootstrapArgs, pool_opts: PoolOptions) -> anyhow::Result<ExitCode> {
    if a.name.is_empty() || a.name.chars().count() > 128 {
        bail!("--name must be 1 to 128 characters");
    }
    let pool = db::connect(&a.db.resolve_url()?, &pool_opts).await?;
    let (id, token) = store::create_token(&pool, &a.name, None).await?;
    store::audit(
        &pool,
        None,
        &format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        ),
        "token.create",
        Some(&id.to_string()),
        None,
        None,
        "ok",
    )
    .await?;
    println!("{token}");
    eprintln!("admin token {id} created; it is shown only this once");
    Ok(ExitCode::SUCCESS)
}
