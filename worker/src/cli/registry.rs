//! `highway registry add|ls|rm`: credentials of private registries through the API
//! (`/v1/registries`, HIGHWAY_API_URL and HIGHWAY_TOKEN). The password is read from
//! stdin only (`--password-stdin`, as `docker login` does): never from argv, where it
//! would sit in shell history and `ps`. Nothing here prints it.

use super::remote::{Remote, RemoteArgs};
use super::{cell, cell_time};
use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};
use std::io::Read;
use std::process::ExitCode;

/// Longest password read from stdin (the server refuses longer ones anyway).
const MAX_PASSWORD_BYTES: u64 = crate::docker::registry_store::MAX_PASSWORD_BYTES as u64;

#[derive(Subcommand, Debug)]
pub enum RegistryCommand {
    /// Store (or replace) credentials for HOST (`docker.io`, `registry.example.com`,
    /// `127.0.0.1:5000`); every pull from HOST then sends them. Without --tenant (admin
    /// token) they serve every tenant, a tenant's own entry winning; a tenant token
    /// stores for its own tenant. Stored entries win over the worker's --docker-config.
    Add {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Registry host: `docker.io` (Docker Hub), `host` or `host:port`.
        host: String,
        /// Registry user name (listed by `ls`).
        #[arg(long)]
        username: String,
        /// Read the password (or token) from stdin; one trailing newline is dropped.
        #[arg(long, required = true)]
        password_stdin: bool,
        /// Admin tokens: store for this tenant only (a tenant token's own tenant).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List stored credentials: host, username, scope (never the password).
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Admin tokens only: that tenant's entries.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Remove stored credentials for HOST (admin: the global entry, or --tenant's).
    Rm {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Registry host, as given to `add` or listed by `ls`.
        host: String,
        /// Admin tokens: remove that tenant's entry instead of the global one.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// HOST as one path segment (Docker Hub's `https://index.docker.io/v1/` has slashes).
fn segment(host: &str) -> String {
    let mut out = String::with_capacity(host.len());
    for b in host.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn read_password() -> anyhow::Result<String> {
    let mut value = String::new();
    std::io::stdin()
        .take(MAX_PASSWORD_BYTES + 2)
        .read_to_string(&mut value)
        .context("reading the password from stdin (UTF-8)")?;
    if let Some(v) = value.strip_suffix('\n') {
        value = v.strip_suffix('\r').unwrap_or(v).to_string();
    }
    if value.is_empty() {
        bail!("no password on stdin");
    }
    Ok(value)
}

pub async fn run(cmd: RegistryCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        RegistryCommand::Add {
            remote,
            host,
            username,
            password_stdin: _,
            tenant,
        } => {
            let password = read_password()?;
            let api = Remote::new(&remote)?;
            let mut body = json!({"username": username, "password": password});
            if let Some(t) = &tenant {
                body["tenant_id"] = json!(t);
            }
            let v = api
                .send_json(
                    reqwest::Method::PUT,
                    &format!("/v1/registries/{}", segment(&host)),
                    Some(&body),
                )
                .await?;
            eprintln!(
                "registry credentials for {} ({}) {}",
                cell(&v["host"]),
                scope(&v),
                if v["replaced"] == json!(true) {
                    "replaced"
                } else {
                    "stored"
                }
            );
        }
        RegistryCommand::Ls {
            remote,
            tenant,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let mut q = Vec::new();
            if let Some(t) = tenant {
                q.push(("tenant", t));
            }
            let v = api.get_json("/v1/registries", &q).await?;
            let items = v["items"].as_array().cloned().unwrap_or_default();
            if json {
                for i in &items {
                    println!("{i}");
                }
            } else {
                println!(
                    "{:<32}  {:<24}  {:<24}  {:<8}  UPDATED",
                    "HOST", "USERNAME", "SCOPE", "KEY"
                );
                for i in &items {
                    println!(
                        "{:<32}  {:<24}  {:<24}  {:<8}  {}",
                        cell(&i["host"]),
                        cell(&i["username"]),
                        scope(i),
                        cell(&i["key_id"]),
                        cell_time(&i["updated_at"])
                    );
                }
            }
        }
        RegistryCommand::Rm {
            remote,
            host,
            tenant,
        } => {
            let api = Remote::new(&remote)?;
            let mut path = format!("/v1/registries/{}", segment(&host));
            if let Some(t) = &tenant {
                path.push_str(&format!("?tenant={}", segment(t)));
            }
            let v = api.send_json(reqwest::Method::DELETE, &path, None).await?;
            eprintln!(
                "registry credentials for {} ({}) removed",
                cell(&v["host"]),
                scope(&v)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `global` or `tenant T`.
fn scope(v: &Value) -> String {
    match v["tenant_id"].as_str() {
        Some(_) => format!("tenant {}", cell(&v["tenant_id"])),
        None => "global".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_become_one_path_segment() {
        assert_eq!(segment("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(
            segment("https://index.docker.io/v1/"),
            "https:%2F%2Findex.docker.io%2Fv1%2F"
        );
        assert_eq!(segment("a b"), "a%20b");
    }
}
