//! Settings of the Docker garbage collector (`HIGHWAY_GC_*`): whether a worker runs one,
//! its period, creation grace, maximum age, per-pass cap, dry-run and cancel takeover.
//! Flattened into `WorkerConfig` and used by `highway gc`; turned into
//! [`crate::docker::gc::GcOptions`] (defaults named there) by [`GcConfig::options`].

use crate::docker::gc::GcOptions;
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
            name: match &e {
                crate::docker::gc::Error::InvalidOptions { name: "period", .. } => {
                    "HIGHWAY_GC_PERIOD"
                }
                crate::docker::gc::Error::InvalidOptions {
                    name: "max_per_pass",
                    ..
                } => "HIGHWAY_GC_MAX_PER_PASS",
                crate::docker::gc::Error::InvalidOptions {
                    name: "max_age", ..
                } => "HIGHWAY_GC_MAX_AGE",
                _ => "HIGHWAY_GC_*",
            },
            reason: e.to_string(),
        })?;
        Ok(o)
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
