//! `highway container ls|show|logs`: the container tracking table through the API (a
//! table by default, `--output json` for machines); `logs` prints the log lines of the
//! container's activity attempt (the worker stores them per activity).

use super::cell;
use super::remote::{Remote, RemoteArgs};
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum ContainersCommand {
    /// List tracked containers, newest first.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        /// created | running | exited | removed | missing
        #[arg(long)]
        status: Option<String>,
        /// Admin tokens only.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        run: Option<String>,
        #[arg(long)]
        activity: Option<String>,
        /// Image reference prefix.
        #[arg(long)]
        image: Option<String>,
        /// Created at least this long ago (e.g. `1h`).
        #[arg(long)]
        older_than: Option<String>,
        /// Only orphans: managed containers whose activity is terminal or missing.
        #[arg(long)]
        orphans: bool,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Show one container (id, short id or name).
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        id: String,
        #[arg(long, hide = true)]
        json: bool,
    },
    /// Print the log lines of the container's activity; `-f` follows until it finishes.
    Logs {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Container id, short id or name.
        id: String,
        #[arg(short, long)]
        follow: bool,
        #[arg(long, hide = true)]
        json: bool,
    },
}

fn age(v: &Value) -> String {
    let Some(t) = v.as_str().and_then(|s| s.parse::<DateTime<Utc>>().ok()) else {
        return "-".into();
    };
    let s = (Utc::now() - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

pub async fn run(cmd: ContainersCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ContainersCommand::Ls {
            remote,
            status,
            tenant,
            run,
            activity,
            image,
            older_than,
            orphans,
            limit,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("status", status),
                ("tenant", tenant),
                ("run", run),
                ("activity", activity),
                ("image", image),
                ("older_than", older_than),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            if orphans {
                q.push(("view", "orphans".into()));
            }
            let body = api.get_json("/v1/containers", &q).await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if super::output::json(json) {
                println!("{}", serde_json::to_string(&items)?);
                return Ok(ExitCode::SUCCESS);
            }
            let mut t = super::output::Table::new(&[
                "CONTAINER",
                "STATUS",
                "TENANT",
                "IMAGE",
                "ACTIVITY",
                "ATT",
                "EXIT",
                "AGE",
            ]);
            for c in items {
                t.row(vec![
                    cell(&c["short_id"]),
                    cell(&c["status"]),
                    cell(&c["tenant_id"]),
                    cell(&c["image"]),
                    cell(&c["activity_id"]),
                    cell(&c["attempt"]),
                    cell(&c["exit_code"]),
                    age(&c["created_at"]),
                ]);
            }
            t.print();
        }
        ContainersCommand::Show { remote, id, json } => {
            let api = Remote::new(&remote)?;
            let c = api.get_json(&format!("/v1/containers/{id}"), &[]).await?;
            if super::output::json(json) {
                println!("{}", serde_json::to_string(&c)?);
            } else if let Some(obj) = c.as_object() {
                for (k, v) in obj {
                    println!("{k:<20} {}", cell(v));
                }
            }
        }
        ContainersCommand::Logs {
            remote,
            id,
            follow,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let c = api.get_json(&format!("/v1/containers/{id}"), &[]).await?;
            let Some(activity) = c["activity_id"].as_str() else {
                anyhow::bail!("container {id} belongs to no activity: no stored log lines");
            };
            return super::logs::run(super::logs::LogsArgs {
                remote,
                id: activity.to_string(),
                follow,
                after: None,
                seq: false,
                json,
            })
            .await;
        }
    }
    Ok(ExitCode::SUCCESS)
}
