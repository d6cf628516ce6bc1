//! `highway audit ls`: the append-only `highway.audit_log`, filtered by tenant, action,
//! target (container or image id, or a prefix of one) and time range, as a table or
//! JSON lines. Read-only: nothing ever updates or deletes an audit row.

use crate::api::store;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Newest first.
    Ls(AuditFilter),
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct AuditFilter {
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

/// The filter of the one audit query (`api::store::list_audit`).
fn to_store_filter(f: &AuditFilter) -> store::AuditFilter {
    store::AuditFilter {
        tenant: f.tenant.clone(),
        action: f.action.clone(),
        target_prefix: f.container.clone(),
        since: f.since,
        until: f.until,
        limit: f.limit,
        ..Default::default()
    }
}

pub async fn run(
    db_args: &DatabaseArgs,
    pool_opts: PoolOptions,
    cmd: AuditCommand,
) -> anyhow::Result<ExitCode> {
    let AuditCommand::Ls(f) = cmd;
    if f.container.as_ref().is_some_and(|c| c.len() < 4) {
        anyhow::bail!("--container needs at least 4 characters");
    }
    let pool = db::connect(&db_args.resolve_url()?, &pool_opts).await?;
    let rows = store::list_audit(&pool, &to_store_filter(&f)).await?;
    if f.json {
        for r in rows {
            println!("{}", serde_json::to_string(&r)?);
        }
    } else {
        println!(
            "{:<19}  {:<14}  {:<18}  {:<9}  {:<14}  ACTOR",
            "AT", "TENANT", "ACTION", "OUTCOME", "TARGET"
        );
        for r in rows {
            let target: String = r
                .target
                .as_deref()
                .unwrap_or("-")
                .chars()
                .take(14)
                .collect();
            println!(
                "{:<19}  {:<14}  {:<18}  {:<9}  {:<14}  {}",
                r.at.format("%Y-%m-%d %H:%M:%S"),
                r.tenant_id.as_deref().unwrap_or("-"),
                r.action,
                r.outcome,
                target,
                r.actor
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
