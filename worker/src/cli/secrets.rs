//! `highway secret set|rm|ls`: the tenant secrets store through the API
//! (`/v1/secrets`; the server holds `HIGHWAY_SECRETS_KEY`). A value is read from stdin
//! only — never from argv (it would sit in shell history and `ps`) — and is never
//! printed: `ls` shows names only. The server audits `set` and `rm` (the name, never
//! the value).

use super::output::{self, Table};
use super::remote::{Remote, RemoteArgs};
use super::{cell, cell_time};
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::Read;
use std::process::ExitCode;

/// Path segment escaping for a tenant or secret name (their own grammar keeps them
/// URL-safe; this guards the path against anything else).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[derive(Subcommand, Debug)]
pub enum SecretsCommand {
    /// Create or replace a secret; the value is read from stdin (one trailing newline
    /// is dropped, so `echo value | highway secret set ...` works).
    Set {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// Delete a secret.
    Rm {
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        tenant: String,
        name: String,
    },
    /// List secret names (never values).
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Admin tokens only; a tenant token lists its own.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, hide = true)]
        json: bool,
    },
}

pub async fn run(cmd: SecretsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretsCommand::Set {
            remote,
            tenant,
            name,
        } => {
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
            let api = Remote::new(&remote)?;
            api.send_json(
                reqwest::Method::PUT,
                &format!("/v1/secrets/{}/{}", segment(&tenant), segment(&name)),
                Some(&json!({ "value": value })),
            )
            .await?;
            eprintln!("secret {name:?} of tenant {tenant:?} stored");
        }
        SecretsCommand::Rm {
            remote,
            tenant,
            name,
        } => {
            let api = Remote::new(&remote)?;
            api.send_json(
                reqwest::Method::DELETE,
                &format!("/v1/secrets/{}/{}", segment(&tenant), segment(&name)),
                None,
            )
            .await?;
            eprintln!("secret {name:?} of tenant {tenant:?} removed");
        }
        SecretsCommand::Ls {
            remote,
            tenant,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let q: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
            let v = api.get_json("/v1/secrets", &q).await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if output::json(json) {
                println!("{}", Value::Array(items));
            } else {
                let mut t = Table::new(&["TENANT", "NAME", "KEY", "UPDATED"]);
                for r in items {
                    t.row(vec![
                        cell(&r["tenant_id"]),
                        cell(&r["name"]),
                        cell(&r["key_id"]),
                        cell_time(&r["updated_at"]),
                    ]);
                }
                t.print();
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(super::segment("db_password"), "db_password");
        assert_eq!(super::segment("a/b c"), "a%2Fb%20c");
    }
}
