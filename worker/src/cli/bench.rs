//! `highway bench ...`: benchmark programs that print a table (or JSON with `--json`).

use crate::config::DatabaseArgs;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Queue throughput and latency against raw-SQL ceilings on the same cluster.
    Queue {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(cmd: BenchCommand, _db: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        BenchCommand::Queue { .. } => anyhow::bail!("not built yet"),
    }
}
