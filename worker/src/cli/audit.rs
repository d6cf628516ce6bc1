//! `highway audit ls`: the append-only `highway.audit_log`, filtered by tenant, action,
//! target (container or image id, or a prefix of one) and time range, as a table or
//! JSON lines. Read-only: nothing ever updates or deletes an audit row.

use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;
use sqlx::PgPool;
use std::process::ExitCode;
use uuid::Uuid;

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

/// One audit row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub tenant_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub activity_id: Option<Uuid>,
    pub workflow_run_id: Option<Uuid>,
    pub outcome: String,
    pub details: Value,
}

/// The rows matching `f`, newest first.
pub async fn list(pool: &PgPool, f: &AuditFilter) -> sqlx::Result<Vec<AuditRow>> {
    let action_like = f.action.as_ref().map(|a| match a.strip_suffix('*') {
        Some(prefix) => format!("{}%", prefix.replace('%', "\\%").replace('_', "\\_")),
        None => a.replace('%', "\\%").replace('_', "\\_"),
    });
    let target_like = f
        .container
        .as_ref()
        .map(|c| format!("{}%", c.replace('%', "\\%").replace('_', "\\_")));
    sqlx::query_as(
        "SELECT id, at, tenant_id, actor, action, target, activity_id, workflow_run_id,
                outcome, details
           FROM highway.audit_log
          WHERE ($1::text IS NULL OR tenant_id = $1)
            AND ($2::text IS NULL OR action LIKE $2)
            AND ($3::text IS NULL OR target LIKE $3)
            AND ($4::timestamptz IS NULL OR at >= $4)
            AND ($5::timestamptz IS NULL OR at < $5)
          ORDER BY at DESC, id DESC
          LIMIT $6",
    )
    .bind(&f.tenant)
    .bind(action_like)
    .bind(target_like)
    .bind(f.since)
    .bind(f.until)
    .bind(f.limit.clamp(1, 100_000))
    .fetch_all(pool)
    .await
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
    let rows = list(&pool, &f).await?;
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
