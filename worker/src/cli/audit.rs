//! `highway audit ls`: the append-only audit log through the API (`GET /v1/audit`),
//! filtered by tenant, action, target (container or image id, or a prefix of one) and
//! time range, as a table or JSON lines. A tenant token sees its own rows only; more
//! rows than one page are fetched page by page (`before`). Read-only.

use super::cell_time;
use super::remote::{Remote, RemoteArgs};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;
use std::process::ExitCode;

/// Rows per API page (the API's maximum).
const PAGE: i64 = 1000;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Newest first.
    Ls(AuditFilter),
}

#[derive(clap::Args, Debug, Clone)]
pub struct AuditFilter {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Admin tokens only (a tenant token sees its own tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    /// e.g. `container.remove`, `image.commit`; a trailing `*` matches a prefix (`image.*`).
    #[arg(long)]
    pub action: Option<String>,
    /// A container (or image) id, or a prefix of at least 4 characters.
    #[arg(long)]
    pub container: Option<String>,
    /// RFC 3339 time; rows at or after it.
    #[arg(long)]
    pub since: Option<DateTime<Utc>>,
    /// RFC 3339 time; rows before it.
    #[arg(long)]
    pub until: Option<DateTime<Utc>>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// The query of the first page (`before` is added for the next ones).
fn query(f: &AuditFilter, page: i64) -> Vec<(&'static str, String)> {
    let mut q = vec![("limit", page.to_string())];
    for (k, v) in [
        ("tenant", f.tenant.clone()),
        ("action", f.action.clone()),
        ("container", f.container.clone()),
        ("since", f.since.map(|t| t.to_rfc3339())),
        ("until", f.until.map(|t| t.to_rfc3339())),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    q
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

pub async fn run(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    let AuditCommand::Ls(f) = cmd;
    if f.limit < 1 {
        anyhow::bail!("--limit must be at least 1");
    }
    if f.container.as_ref().is_some_and(|c| c.len() < 4) {
        anyhow::bail!("--container needs at least 4 characters");
    }
    let api = Remote::new(&f.remote)?;
    let mut rows: Vec<Value> = Vec::new();
    while (rows.len() as i64) < f.limit {
        let page = (f.limit - rows.len() as i64).min(PAGE);
        let mut q = query(&f, page);
        if let Some(last) = rows.last() {
            q.push(("before", last["id"].to_string()));
        }
        let body = api.get_json("/v1/audit", &q).await?;
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let short = (items.len() as i64) < page;
        rows.extend(items);
        if short {
            break;
        }
    }
    if super::output::json(f.json) {
        for r in rows {
            println!("{}", serde_json::to_string(&r)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<19}  {:<14}  {:<18}  {:<9}  {:<14}  ACTOR",
        "AT", "TENANT", "ACTION", "OUTCOME", "TARGET"
    );
    for r in rows {
        let at = cell_time(&r["at"]);
        let target: String = s(&r["target"]).chars().take(14).collect();
        println!(
            "{:<19}  {:<14}  {:<18}  {:<9}  {:<14}  {}",
            at,
            s(&r["tenant_id"]),
            s(&r["action"]),
            s(&r["outcome"]),
            target,
            s(&r["actor"])
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(subcommand)]
        c: AuditCommand,
    }

    #[test]
    fn every_flag_reaches_the_api_query() {
        let Cmd {
            c: AuditCommand::Ls(f),
        } = Cmd::try_parse_from([
            "x",
            "ls",
            "--tenant",
            "t",
            "--action",
            "image.*",
            "--container",
            "abcd12",
            "--since",
            "2026-01-01T00:00:00Z",
            "--until",
            "2026-01-02T00:00:00Z",
        ])
        .unwrap();
        let q = query(&f, 100);
        let keys: Vec<&str> = q.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            ["limit", "tenant", "action", "container", "since", "until"]
        );
        assert_eq!(q[4].1, "2026-01-01T00:00:00+00:00");
    }
}
