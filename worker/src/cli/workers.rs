//! `highway worker ls` and `highway queue ls`: the workers (admin token) and the
//! queues (a tenant token counts its own activities) through the API.

use super::output::{self, Table};
use super::remote::{Remote, RemoteArgs};
use super::{cell, text};
use clap::Subcommand;
use serde_json::Value;
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// List workers: host, daemon, heartbeat age, slots busy/total, version, queues, state.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Stopped and lost workers too.
        #[arg(long)]
        all: bool,
        #[arg(long, hide = true)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Per queue: depth (due, waiting), delayed, oldest waiting, running.
    Ls {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Admin tokens only; a tenant token counts its own activities.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, hide = true)]
        json: bool,
    },
}

/// Seconds as `1h02m`, `3m05s` or `4.2s`.
fn age(v: &Value) -> String {
    let Some(s) = v.as_f64() else {
        return "-".into();
    };
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!(
            "{}h{:02}m",
            (s / 3600.0) as u64,
            ((s % 3600.0) / 60.0) as u64
        )
    }
}

pub async fn workers(cmd: WorkerCommand) -> anyhow::Result<ExitCode> {
    let WorkerCommand::Ls { remote, all, json } = cmd;
    let api = Remote::new(&remote)?;
    let q: Vec<(&str, String)> = vec![("all", all.to_string())];
    let v = api.get_json("/v1/workers", &q).await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if output::json(json) {
        println!("{}", text::json_for_terminal(&Value::Array(items), false));
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&[
        "ID",
        "HOST",
        "DAEMON",
        "STATE",
        "HEARTBEAT",
        "SLOTS",
        "VERSION",
        "QUEUES",
    ]);
    for w in items {
        let queues = w["queues"]
            .as_array()
            .map(|q| q.iter().map(cell).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        t.row(vec![
            cell(&w["id"]),
            cell(&w["hostname"]),
            cell(&w["daemon_id"]),
            cell(&w["state"]),
            format!("{} ago", age(&w["heartbeat_age_secs"])),
            format!("{}/{}", cell(&w["slots_busy"]), cell(&w["slots_total"])),
            cell(&w["version"]),
            queues,
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}

pub async fn queues(cmd: QueueCommand) -> anyhow::Result<ExitCode> {
    let QueueCommand::Ls {
        remote,
        tenant,
        json,
    } = cmd;
    let api = Remote::new(&remote)?;
    let q: Vec<(&str, String)> = tenant.map(|t| ("tenant", t)).into_iter().collect();
    let v = api.get_json("/v1/queues", &q).await?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    if output::json(json) {
        println!("{}", text::json_for_terminal(&Value::Array(items), false));
        return Ok(ExitCode::SUCCESS);
    }
    let mut t = Table::new(&["QUEUE", "DEPTH", "DELAYED", "OLDEST WAITING", "RUNNING"]);
    for r in items {
        t.row(vec![
            cell(&r["queue"]),
            cell(&r["depth"]),
            cell(&r["delayed"]),
            age(&r["oldest_waiting_secs"]),
            cell(&r["running"]),
        ]);
    }
    t.print();
    Ok(ExitCode::SUCCESS)
}
