//! Progress on long CLI waits (`highway activity enqueue --wait`, `highway activity logs -f`):
//! a spinner with the activity's status and the time waited, and for an image pull the
//! layers done out of all (from the heartbeat details `tools.docker.pull` records).
//!
//! Drawn only to stderr, only when stderr is a terminal and never in `--json` mode: a
//! pipe, a log file or a machine reading JSON gets exactly the same bytes as without
//! progress. Owns the decision ([`draws`]) and the wording ([`describe`]).

use highway_workflows::Activity;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// True when progress may be drawn: a person is watching stderr and no machine is
/// reading the output.
pub fn draws(json: bool, stderr_is_terminal: bool) -> bool {
    !json && stderr_is_terminal
}

/// A spinner (or pull bar) on stderr, or nothing at all.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    /// Progress for this process: drawn when [`draws`] says so.
    pub fn new(json: bool) -> Self {
        Self::with(draws(json, std::io::stderr().is_terminal()))
    }

    /// Drawn to stderr when `enabled`, else a no-op whose every call does nothing.
    pub fn with(enabled: bool) -> Self {
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(spinner_style());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Self {
            bar,
            started: Instant::now(),
        }
    }

    /// False when nothing is drawn.
    pub fn is_drawing(&self) -> bool {
        self.bar.is_some()
    }

    /// Shows what `a` is doing now.
    pub fn update(&self, a: &Activity) {
        let Some(bar) = &self.bar else { return };
        let (msg, layers) = describe(a, self.started.elapsed());
        match layers {
            Some((done, total)) => {
                if bar.length() != Some(total) {
                    bar.set_style(pull_style());
                    bar.set_length(total);
                }
                bar.set_position(done);
            }
            None if bar.length().is_some() => {
                bar.set_style(spinner_style());
                bar.unset_length();
            }
            None => {}
        }
        bar.set_message(msg);
    }

    /// A free-form message (e.g. while no activity was read yet).
    pub fn message(&self, msg: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(msg);
        }
    }

    /// Removes the line, leaving the terminal as it was.
    pub fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

fn spinner_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

fn pull_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} [{bar:24}] {pos}/{len} layers  {wide_msg}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// The line for `a` after `waited`, and `(layers done, layers)` while it pulls an image.
pub fn describe(a: &Activity, waited: Duration) -> (String, Option<(u64, u64)>) {
    let secs = waited.as_secs();
    // The id is printed when the wait ends; the line stays short enough for 80 columns.
    let mut msg = format!(
        "{}: {}, attempt {}, {}m{:02}s",
        a.kind,
        a.status,
        a.attempt,
        secs / 60,
        secs % 60
    );
    let details = a
        .heartbeat_details
        .as_ref()
        .filter(|_| a.status == "running");
    let pull = details.filter(|d| d["phase"] == "pulling");
    if let Some(d) = pull {
        let total = d["layers"].as_u64().unwrap_or(0);
        let done = d["layers_done"].as_u64().unwrap_or(0).min(total);
        if let Some(image) = d["image"].as_str() {
            msg = format!("pulling {image}: {msg}");
        }
        if let Some(status) = d["status"].as_str() {
            msg.push_str(&format!(" — {status}"));
        }
        return (msg, (total > 0).then_some((done, total)));
    }
    if let Some(phase) = details.and_then(|d| d["phase"].as_str()) {
        msg.push_str(&format!(" — {phase}"));
    }
    (msg, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use serde_json::Value;
    use uuid::Uuid;

    /// Heartbeat details as `tools.docker.pull` records them while pulling.
    fn pull_details(image: &str, layers: u64, done: u64) -> Value {
        json!({"phase": "pulling", "image": image, "status": "Downloading",
               "layers": layers, "layers_done": done})
    }

    fn activity(status: &str, details: Option<Value>) -> Activity {
        Activity {
            id: Uuid::nil(),
            workflow_run_id: None,
            tenant_id: "default".into(),
            kind: "tools.docker.pull".into(),
            params: json!({}),
            queue: "default".into(),
            priority: 5,
            status: status.into(),
            attempt: 1,
            max_attempts: 3,
            uncounted_attempts: 0,
            run_at: Utc::now(),
            lease_owner: None,
            lease_expires_at: None,
            heartbeat_at: None,
            heartbeat_details: details,
            result: None,
            error: None,
            idempotency_key: None,
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            cancel_requested_at: None,
        }
    }

    #[test]
    fn nothing_is_drawn_off_a_terminal_or_in_json_mode() {
        assert!(!draws(true, true), "--json on a terminal");
        assert!(!draws(false, false), "not a terminal");
        assert!(!draws(true, false));
        assert!(draws(false, true));
        let p = Progress::with(false);
        assert!(!p.is_drawing());
        // Every call is a no-op (and must not panic) when nothing is drawn.
        p.update(&activity("running", Some(pull_details("busybox:1", 3, 1))));
        p.message("x".into());
        p.clear();
    }

    #[test]
    fn describe_shows_status_elapsed_and_pull_layers() {
        let (msg, layers) = describe(&activity("scheduled", None), Duration::from_secs(75));
        assert!(msg.contains("scheduled") && msg.contains("1m15s"), "{msg}");
        assert_eq!(layers, None);

        let a = activity("running", Some(pull_details("busybox:1", 4, 3)));
        let (msg, layers) = describe(&a, Duration::from_secs(2));
        assert!(msg.starts_with("pulling busybox:1"), "{msg}");
        assert_eq!(layers, Some((3, 4)));

        // Details left over from a finished attempt are not progress.
        let a = activity("succeeded", Some(pull_details("busybox:1", 4, 4)));
        assert_eq!(describe(&a, Duration::ZERO).1, None);
        let a = activity("running", Some(json!({"phase": "exec"})));
        assert!(describe(&a, Duration::ZERO).0.ends_with("— exec"));
    }
}
