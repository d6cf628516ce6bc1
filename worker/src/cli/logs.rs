//! `highway activity logs ID [-f]`: an activity's stored log lines through the API's
//! server-sent-events stream; with `-f` it follows live until the activity finishes,
//! resuming after the last line seen if the connection drops. While following and no
//! line came yet, a spinner on stderr (terminals only) shows the activity's status.
//!
//! Every line is marked with the stream it came from (`stdout | `, `stderr | `, and
//! `system | ` for the worker's own lines) and shown with its control characters
//! escaped ([`super::text::for_terminal`]): a container can neither drive the
//! operator's terminal nor print a line that passes for the CLI's or the worker's own.
//! Container stdout goes to stdout, the rest to stderr; the CLI's own notes start with
//! `# ` on stderr. `--json` prints each line as one JSON object instead.

use super::progress::Progress;
use super::remote::{Remote, RemoteArgs};
use super::text;
use serde_json::Value;
use std::io::Write;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// Activity id.
    pub id: String,
    /// Follow: keep streaming until the activity is finished.
    #[arg(short, long)]
    pub follow: bool,
    /// Start after this sequence number (as printed with --seq).
    #[arg(long)]
    pub after: Option<i64>,
    /// Prefix each line with its sequence number too.
    #[arg(long)]
    pub seq: bool,
    /// One JSON object a line (`seq`, `attempt`, `stream`, `line`, ...) on stdout, the
    /// line's text unaltered but JSON-escaped.
    #[arg(long, hide = true)]
    pub json: bool,
}

/// Exit code: 0 when the activity succeeded (or is still running without `-f`),
/// 3 when it failed or timed out, 5 when it was cancelled (`output::exit`).
pub async fn run(mut a: LogsArgs) -> anyhow::Result<ExitCode> {
    a.json = super::output::json(a.json);
    let api = Remote::new(&a.remote)?;
    let q = vec![("follow", a.follow.to_string())];
    let mut final_status: Option<String> = None;
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    if a.follow {
        eprintln!("# following logs of {} (Ctrl-C stops)", a.id);
    }
    let progress = Progress::new(!a.follow || a.json);
    let poller = progress
        .is_drawing()
        .then(|| tokio::spawn(show_status(api.clone(), a.id.clone(), progress.clone())));
    let mut waiting = progress.is_drawing();
    let res = api
        .follow_sse(
            &format!("/v1/activities/{}/logs", a.id),
            &q,
            a.after.map(|n| n.to_string()),
            |event, _id, data| {
                let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                if waiting && matches!(event, "log" | "end") {
                    waiting = false;
                    if let Some(p) = &poller {
                        p.abort();
                    }
                    progress.clear();
                }
                match event {
                    "log" => {
                        let line = v["line"].as_str().unwrap_or_default();
                        let stream = match v["stream"].as_str().unwrap_or("stdout") {
                            s @ ("stdout" | "stderr" | "system") => s,
                            _ => "?",
                        };
                        let line = text::for_terminal(line);
                        let out = if a.json {
                            text::json_for_terminal(&v, false)
                        } else if a.seq {
                            format!("{} {stream} | {line}", v["seq"])
                        } else {
                            format!("{stream} | {line}")
                        };
                        // Errors writing (a closed pipe) end the command quietly.
                        let ok = if a.json || stream == "stdout" {
                            writeln!(stdout.lock(), "{out}").is_ok()
                        } else {
                            writeln!(stderr.lock(), "{out}").is_ok()
                        };
                        ok
                    }
                    "end" => {
                        final_status = v["status"].as_str().map(str::to_owned);
                        false
                    }
                    _ => true,
                }
            },
        )
        .await;
    if let Some(p) = &poller {
        p.abort();
    }
    progress.clear();
    res?;
    Ok(match final_status.as_deref() {
        Some("succeeded") | Some("running") | Some("scheduled") | None => ExitCode::SUCCESS,
        Some(other) => {
            eprintln!("# activity {}: {other}", a.id);
            super::output::for_status(other)
        }
    })
}

/// Until aborted: the spinner's line, from the activity as the API shows it.
async fn show_status(api: Remote, id: String, progress: Progress) {
    loop {
        let status = match api.get_json(&format!("/v1/activities/{id}"), &[]).await {
            Ok(v) => v["status"].as_str().unwrap_or("?").to_string(),
            Err(_) => "?".to_string(),
        };
        let secs = progress.elapsed().as_secs();
        progress.message(format!(
            "waiting for the first log line ({status}, {}m{:02}s)",
            secs / 60,
            secs % 60
        ));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
