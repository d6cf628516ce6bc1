//! Settings of the Docker garbage collector (`HIGHWAY_GC_*`): whether a worker runs one,
//! its period, creation grace, maximum age, per-pass cap, dry-run and cancel takeover.
//! Flattened into `WorkerConfig` and used by `highway gc`; turned into
//! [`GcOptions`] (defaults named there; the collector's own settings) by
//! [`GcConfig::options`].

use highway_workflows::HumanDuration;
use std::time::Duration;

/// The garbage collector of `highway.managed` containers (one per Docker daemon).
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(next_help_heading = "GC")]
pub struct GcConfig {
    /// Run the garbage collector inside this worker (`highway gc` always runs it).
    #[arg(long = "gc-enabled", env = "HIGHWAY_GC_ENABLED", default_value_t = true,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub enabled: bool,

    /// Time between two garbage collector passes.
    #[arg(long = "gc-period", env = "HIGHWAY_GC_PERIOD", default_value = "30s")]
    pub period: HumanDuration,

    /// Containers younger than this (by the Docker daemon's clock) are never collected.
    #[arg(
        long = "gc-creation-grace",
        env = "HIGHWAY_GC_CREATION_GRACE",
        default_value = "60s"
    )]
    pub creation_grace: HumanDuration,

    /// Containers older than this are collected unless protected (`gc_protected_until`
    /// in the future). `0s` disables the rule.
    #[arg(long = "gc-max-age", env = "HIGHWAY_GC_MAX_AGE", default_value = "24h")]
    pub max_age: HumanDuration,

    /// Most containers removed per pass (the rest wait for the next pass).
    #[arg(
        long = "gc-max-per-pass",
        env = "HIGHWAY_GC_MAX_PER_PASS",
        default_value_t = 100
    )]
    pub max_per_pass: usize,

    /// Judge and log, change nothing.
    #[arg(long = "gc-dry-run", env = "HIGHWAY_GC_DRY_RUN", default_value_t = false,
          value_parser = clap::builder::BoolishValueParser::new(), action = clap::ArgAction::Set)]
    pub dry_run: bool,

    /// A cancelled activity whose container still exists this long after the stop grace
    /// is finished by the collector (its owner could not).
    #[arg(
        long = "gc-cancel-takeover",
        env = "HIGHWAY_GC_CANCEL_TAKEOVER",
        default_value = "30s"
    )]
    pub cancel_takeover: HumanDuration,
}

impl Default for GcConfig {
    /// The documented defaults, ignoring the environment.
    fn default() -> Self {
        Self {
            enabled: true,
            period: HumanDuration(GcOptions::DEFAULT_PERIOD),
            creation_grace: HumanDuration(GcOptions::DEFAULT_CREATION_GRACE),
            max_age: HumanDuration(GcOptions::DEFAULT_MAX_AGE),
            max_per_pass: GcOptions::DEFAULT_MAX_PER_PASS,
            dry_run: false,
            cancel_takeover: HumanDuration(GcOptions::DEFAULT_CANCEL_TAKEOVER),
        }
    }
}

impl GcConfig {
    /// The collector's options; `stop_grace` is the Docker stop grace of this process.
    /// Validated (an error names the setting).
    pub fn options(&self, stop_grace: Duration) -> Result<GcOptions, super::ConfigError> {
        let o = GcOptions {
            period: self.period.0,
            creation_grace: self.creation_grace.0,
            max_age: self.max_age.0,
            max_per_pass: self.max_per_pass,
            dry_run: self.dry_run,
            stop_grace,
            cancel_takeover: self.cancel_takeover.0,
            ..GcOptions::default()
        };
        o.validate().map_err(|e| super::ConfigError {
            name: match e.name {
                "period" => "HIGHWAY_GC_PERIOD",
                "max_per_pass" => "HIGHWAY_GC_MAX_PER_PASS",
                "max_age" => "HIGHWAY_GC_MAX_AGE",
                _ => "HIGHWAY_GC_*",
            },
            reason: e.to_string(),
        })?;
        Ok(o)
    }
}

/// A collector option out of range, named as the field of [`GcOptions`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid garbage collector option {name}: {reason}")]
pub struct InvalidGcOption {
    pub name: &'static str,
    pub reason: String,
}

/// Settings of a collector (`crate::docker::gc`). Defaults are the named constants
/// below. Kept here, beside the flags that fill them, so that settings never import the
/// collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcOptions {
    /// Time between two passes (jittered by up to 10%).
    pub period: Duration,
    /// A container younger than this (on the daemon's clock) with no tracking row is
    /// never touched: its creator may not have recorded it yet. Tracked containers are
    /// judged at once.
    pub creation_grace: Duration,
    /// Any container older than this is removed unless `gc_protected_until` is in the
    /// future. `Duration::ZERO` disables the rule.
    pub max_age: Duration,
    /// Most removals per pass; the rest wait for the next pass.
    pub max_per_pass: usize,
    /// Judge and count, change nothing.
    pub dry_run: bool,
    /// SIGTERM → SIGKILL grace when the collector stops a running container.
    pub stop_grace: Duration,
    /// A live attempt whose cancellation was requested this long ago (plus the stop
    /// grace) and whose container still exists: the collector finishes the cancel.
    pub cancel_takeover: Duration,
    /// Removals in flight at once.
    pub concurrency: usize,
    /// Deadline of each Postgres read (a blackholed connection must not hang a pass).
    pub db_timeout: Duration,
}

impl GcOptions {
    pub const DEFAULT_PERIOD: Duration = Duration::from_secs(30);
    pub const DEFAULT_CREATION_GRACE: Duration = Duration::from_secs(60);
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
    pub const DEFAULT_MAX_PER_PASS: usize = 100;
    pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
    pub const DEFAULT_CANCEL_TAKEOVER: Duration = Duration::from_secs(30);
    pub const DEFAULT_CONCURRENCY: usize = 4;
    pub const DEFAULT_DB_TIMEOUT: Duration = Duration::from_secs(10);

    /// Checks every option; the error names the first bad one.
    pub fn validate(&self) -> Result<(), InvalidGcOption> {
        let bad = |name, reason: &str| {
            Err(InvalidGcOption {
                name,
                reason: reason.into(),
            })
        };
        if self.period < Duration::from_millis(100) {
            return bad("period", "must be at least 100ms");
        }
        if self.max_per_pass == 0 {
            return bad("max_per_pass", "must be at least 1");
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1");
        }
        if !self.max_age.is_zero() && self.max_age <= self.creation_grace {
            return bad(
                "max_age",
                "must exceed the creation grace (or be 0 to disable)",
            );
        }
        if self.db_timeout < Duration::from_millis(100) {
            return bad("db_timeout", "must be at least 100ms");
        }
        Ok(())
    }
}

impl Default for GcOptions {
    fn default() -> Self {
        Self {
            period: Self::DEFAULT_PERIOD,
            creation_grace: Self::DEFAULT_CREATION_GRACE,
            max_age: Self::DEFAULT_MAX_AGE,
            max_per_pass: Self::DEFAULT_MAX_PER_PASS,
            dry_run: false,
            stop_grace: Self::DEFAULT_STOP_GRACE,
            cancel_takeover: Self::DEFAULT_CANCEL_TAKEOVER,
            concurrency: Self::DEFAULT_CONCURRENCY,
            db_timeout: Self::DEFAULT_DB_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Only {
        #[command(flatten)]
        gc: GcConfig,
    }

    #[test]
    fn defaults_and_flags() {
        let d = Only::parse_from(["x"]).gc;
        assert_eq!(d.period.0, GcOptions::DEFAULT_PERIOD);
        assert!(d.enabled && !d.dry_run);
        let c = Only::parse_from([
            "x",
            "--gc-enabled",
            "false",
            "--gc-period",
            "500ms",
            "--gc-dry-run",
            "1",
        ])
        .gc;
        assert!(!c.enabled && c.dry_run);
        assert_eq!(c.period.0, Duration::from_millis(500));
        let o = c.options(Duration::from_secs(1)).unwrap();
        assert_eq!(o.stop_grace, Duration::from_secs(1));
        let bad = GcConfig {
            max_per_pass: 0,
            ..GcConfig::default()
        };
        assert_eq!(
            bad.options(Duration::from_secs(1)).unwrap_err().name,
            "HIGHWAY_GC_MAX_PER_PASS"
        );
    }
}
