//! How client commands print: `--output table|json` (a global flag; the older
//! per-command `--json` still means `json`), tables sized to the terminal, colour only
//! for people, and the exit codes every command shares.
//!
//! Tables take the width from `COLUMNS`, else the terminal's size, else 120 columns
//! (a pipe); when the columns do not fit, the widest ones are cut with `…` until they
//! do, so one long image name cannot push the ids off the screen. Cells come in
//! already escaped (`super::cell`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::OnceLock;

/// What a command prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// JSON for machines: the API's answer, or one object a line for streams.
    Json,
}

static OUTPUT: OnceLock<Output> = OnceLock::new();

/// Records the invocation's `--output` (once, at start).
pub fn set(o: Option<Output>) {
    if let Some(o) = o {
        let _ = OUTPUT.set(o);
    }
}

/// True when the command prints JSON: `--output json`, or its own `--json` flag.
pub fn json(flag: bool) -> bool {
    flag || OUTPUT.get() == Some(&Output::Json)
}

/// The exit codes of every command (also in `--help` and the README). Clap's usage
/// errors keep their code 2; nothing else uses it.
pub mod exit {
    /// Done; an awaited activity or run succeeded.
    pub const OK: u8 = 0;
    /// An error: the API refused, could not be reached, bad input found by the CLI.
    pub const ERROR: u8 = 1;
    /// A usage error (clap's).
    pub const USAGE: u8 = 2;
    /// The awaited activity or run failed (or timed out by its own timeouts).
    pub const FAILED: u8 = 3;
    /// The CLI's wait (`--timeout`) ran out; the activity or run goes on.
    pub const WAIT_TIMED_OUT: u8 = 4;
    /// The awaited activity or run was cancelled.
    pub const CANCELLED: u8 = 5;
}

/// The exit-code table for `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  ok (an awaited activity or run succeeded)
  1  error
  2  usage error
  3  the awaited activity or run failed or timed out
  4  waiting timed out (--timeout); it goes on
  5  the awaited activity or run was cancelled";

/// The exit code for an activity's or a run's final status.
pub fn for_status(status: &str) -> ExitCode {
    ExitCode::from(match status {
        "succeeded" => exit::OK,
        "cancelled" => exit::CANCELLED,
        _ => exit::FAILED,
    })
}

/// True when colour may be written to this stream: a terminal, and `NO_COLOR` unset
/// or empty (<https://no-color.org>).
pub fn colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Colour on stderr (the logs).
pub fn stderr_colour() -> bool {
    colour(std::io::stderr().is_terminal())
}

/// The width tables fit in.
pub fn width() -> usize {
    if let Some(n) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    terminal_width().unwrap_or(120)
}

fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size_of(std::io::stdout())
        .map(|(w, _)| usize::from(w.0))
        .filter(|w| *w > 0)
}

/// Columns separated by two spaces, fitted to `width` by cutting the widest.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The lines of the table in `width` columns.
    pub fn render(&self, width: usize) -> Vec<String> {
        let n = self.headers.len();
        let len = |s: &str| s.chars().count();
        let mut w: Vec<usize> = self.headers.iter().map(|h| len(h)).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(len(c));
            }
        }
        let gaps = 2 * n.saturating_sub(1);
        // Narrowest a cut column gets: its header, or 8.
        let floor: Vec<usize> = self.headers.iter().map(|h| len(h).max(8)).collect();
        while w.iter().sum::<usize>() + gaps > width {
            let Some((i, _)) = w
                .iter()
                .enumerate()
                .filter(|(i, v)| **v > floor[*i])
                .max_by_key(|(_, v)| **v)
            else {
                break;
            };
            w[i] -= 1;
        }
        let fmt = |cells: &[String]| {
            let mut line = String::new();
            for (i, width) in w.iter().enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let cell = if len(c) > *width {
                    let cut: String = c.chars().take(width.saturating_sub(1)).collect();
                    format!("{cut}…")
                } else {
                    c.to_string()
                };
                if i + 1 == n {
                    line.push_str(&cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            line.trim_end().to_string()
        };
        let mut out = vec![fmt(&self.headers)];
        out.extend(self.rows.iter().map(|r| fmt(r)));
        out
    }

    /// Prints it to stdout, fitted to the terminal.
    pub fn print(&self) {
        for l in self.render(width()) {
            println!("{l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_fit_the_width_by_cutting_the_widest_column() {
        let mut t = Table::new(&["ID", "IMAGE", "STATUS"]);
        t.row(vec!["a1".into(), "x".repeat(60), "running".into()]);
        let wide = t.render(200);
        assert_eq!(wide[1], format!("a1  {}  running", "x".repeat(60)));
        let narrow = t.render(40);
        for l in &narrow {
            assert!(l.chars().count() <= 40, "{l:?}");
        }
        assert!(narrow[1].contains('…') && narrow[1].ends_with("running"));
    }

    #[test]
    fn statuses_map_to_the_documented_exit_codes() {
        assert_eq!(for_status("succeeded"), ExitCode::from(0));
        assert_eq!(for_status("failed"), ExitCode::from(3));
        assert_eq!(for_status("timed_out"), ExitCode::from(3));
        assert_eq!(for_status("cancelled"), ExitCode::from(5));
        assert!(!colour(false));
    }
}
