//! `highway schedule preview EXPR --tz TZ -n N`: trying a cron expression offline (no
//! API, no token, no database): the fire times with crontab's rules and the parse errors
//! as users see them.

use highway_tests::highway_bin;
use std::process::Output;

fn highway(args: &[&str]) -> Output {
    std::process::Command::new(highway_bin())
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("HIGHWAY_API_URL")
        .env_remove("HIGHWAY_TOKEN")
        .env_remove("HIGHWAY_TOKEN_FILE")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run highway")
}

fn ok(args: &[&str]) -> Vec<String> {
    let out = highway(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "highway {args:?}: {stderr}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Both day fields restricted: the 1st or any Monday, in Berlin across the spring change.
#[test]
fn preview_positional_expression_with_tz_and_count() {
    let lines = ok(&[
        "schedule",
        "preview",
        "0 0 1 * MON",
        "--tz",
        "Europe/Berlin",
        "-n",
        "4",
        "--after",
        "2026-03-28T12:00:00Z",
    ]);
    assert_eq!(
        lines,
        [
            "2026-03-30T00:00:00+02:00  (2026-03-29T22:00:00.000Z)",
            "2026-04-01T00:00:00+02:00  (2026-03-31T22:00:00.000Z)",
            "2026-04-06T00:00:00+02:00  (2026-04-05T22:00:00.000Z)",
            "2026-04-13T00:00:00+02:00  (2026-04-12T22:00:00.000Z)",
        ]
    );
    // The older spelling still works, under the plural command name too.
    let old = ok(&[
        "schedules",
        "preview",
        "--cron",
        "0 0 1 * MON",
        "--timezone",
        "Europe/Berlin",
        "-n",
        "4",
        "--after",
        "2026-03-28T12:00:00Z",
    ]);
    assert_eq!(old, lines);
    // Shorthands are expressions too; a fold in New York shows both offsets.
    let lines = ok(&[
        "schedule",
        "preview",
        "30 1 * * *",
        "--tz",
        "America/New_York",
        "-n",
        "1",
        "--after",
        "2026-10-31T12:00:00Z",
    ]);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("2026-11-01T01:30:00-04:00  (2026-11-01T05:30:00.000Z)  DST overlap"),
        "{lines:?}"
    );
    assert_eq!(ok(&["schedule", "preview", "@daily", "-n", "10"]).len(), 10);
}

#[test]
fn preview_errors_quote_the_expression_and_name_the_field() {
    for (args, want) in [
        (
            vec!["schedule", "preview", "61 * * * *"],
            r#"invalid cron expression "61 * * * *": minute 61 is out of range 0-59"#,
        ),
        (
            vec!["schedule", "preview", "0 0 * * 8"],
            r#"invalid cron expression "0 0 * * 8": day of week 8 is out of range 0-7 or SUN-SAT (0 and 7 are Sunday)"#,
        ),
        (
            vec!["schedule", "preview", "@daily", "--tz", "Mars/Base"],
            r#"--tz: unknown IANA timezone "Mars/Base""#,
        ),
    ] {
        let out = highway(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}
