//! Settings of the durable cron scheduler (`HIGHWAY_SCHEDULER_*`): whether this process
//! runs one, how often it looks for due slots, and the limits and defaults applied to
//! schedules when they are created. Only this file reads these variables.

use super::ConfigError;
use highway_workflows::schedule::ScheduleLimits;
use highway_workflows::HumanDuration;
use std::time::Duration;

/// The scheduler service (every worker runs one unless disabled; `highway scheduler`
/// runs one alone).
#[derive(clap::Args, Debug, Clone, PartialEq)]
#[command(next_help_heading = "Queue")]
pub struct SchedulerConfig {
    /// Run the scheduler in this process. Many may run at once: no leader is needed.
    #[arg(
        long = "scheduler-enabled",
        id = "scheduler_enabled",
        env = "HIGHWAY_SCHEDULER_ENABLED",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub enabled: bool,

    /// Longest sleep between passes. The scheduler also wakes at the next due slot, so
    /// this bounds the delay of a schedule created or changed elsewhere.
    #[arg(
        long = "scheduler-tick",
        id = "scheduler_tick",
        env = "HIGHWAY_SCHEDULER_TICK",
        default_value = "1s"
    )]
    pub tick: HumanDuration,

    /// Cron expressions that fire more often than this are refused.
    #[arg(
        long = "scheduler-min-interval",
        id = "scheduler_min_interval",
        env = "HIGHWAY_SCHEDULER_MIN_INTERVAL",
        default_value = "1s"
    )]
    pub min_interval: HumanDuration,

    /// Default cap of catch-up fires per schedule per pass (a schedule may set its own).
    #[arg(
        long = "scheduler-max-catchup-burst",
        id = "scheduler_max_catchup_burst",
        env = "HIGHWAY_SCHEDULER_MAX_CATCHUP_BURST",
        default_value_t = 10
    )]
    pub max_catchup_burst: u32,

    /// Default catch-up window of a schedule that does not set one.
    #[arg(
        long = "scheduler-catchup-window",
        id = "scheduler_catchup_window",
        env = "HIGHWAY_SCHEDULER_CATCHUP_WINDOW",
        default_value = "1h"
    )]
    pub catchup_window: HumanDuration,

    /// Slots at most this late are on time and fire whatever the catch-up policy.
    #[arg(
        long = "scheduler-on-time-grace",
        id = "scheduler_on_time_grace",
        env = "HIGHWAY_SCHEDULER_ON_TIME_GRACE",
        default_value = "5s"
    )]
    pub on_time_grace: HumanDuration,

    /// Schedules handled at once within a pass (each uses one connection).
    #[arg(
        long = "scheduler-concurrency",
        id = "scheduler_concurrency",
        env = "HIGHWAY_SCHEDULER_CONCURRENCY",
        default_value_t = 8
    )]
    pub concurrency: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            tick: HumanDuration::from_secs(1),
            min_interval: HumanDuration::from_secs(1),
            max_catchup_burst: highway_workflows::schedule::DEFAULT_MAX_CATCHUP_BURST,
            catchup_window: HumanDuration(highway_workflows::schedule::DEFAULT_CATCHUP_WINDOW),
            on_time_grace: HumanDuration::from_secs(5),
            concurrency: 8,
        }
    }
}

fn bad(name: &'static str, reason: &str) -> ConfigError {
    ConfigError {
        name,
        reason: reason.to_owned(),
    }
}

impl SchedulerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tick.0 < Duration::from_millis(10) || self.tick.0 > Duration::from_secs(60) {
            return Err(bad(
                "HIGHWAY_SCHEDULER_TICK",
                "must be between 10ms and 60s",
            ));
        }
        if self.min_interval.0 < Duration::from_secs(1) {
            // Cron has one-second resolution; anything below would be meaningless.
            return Err(bad("HIGHWAY_SCHEDULER_MIN_INTERVAL", "must be at least 1s"));
        }
        if !(1..=10_000).contains(&self.max_catchup_burst) {
            return Err(bad(
                "HIGHWAY_SCHEDULER_MAX_CATCHUP_BURST",
                "must be between 1 and 10000",
            ));
        }
        if self.catchup_window.0 > highway_workflows::schedule::MAX_CATCHUP_WINDOW {
            return Err(bad(
                "HIGHWAY_SCHEDULER_CATCHUP_WINDOW",
                "must be at most 7d",
            ));
        }
        if self.on_time_grace.0 > Duration::from_secs(3600) {
            return Err(bad("HIGHWAY_SCHEDULER_ON_TIME_GRACE", "must be at most 1h"));
        }
        if !(1..=64).contains(&self.concurrency) {
            return Err(bad(
                "HIGHWAY_SCHEDULER_CONCURRENCY",
                "must be between 1 and 64",
            ));
        }
        Ok(())
    }

    /// The settings from `HIGHWAY_SCHEDULER_*` alone (for processes whose command line
    /// does not carry the scheduler flags), validated.
    pub fn from_env() -> Result<Self, ConfigError> {
        use clap::Parser;
        #[derive(Parser)]
        struct Env {
            #[command(flatten)]
            s: SchedulerConfig,
        }
        let c = Env::try_parse_from(["highway"])
            .map_err(|e| bad("HIGHWAY_SCHEDULER_*", &e.to_string()))?
            .s;
        c.validate()?;
        Ok(c)
    }

    /// The limits and defaults schedules are validated and created with.
    pub fn limits(&self) -> ScheduleLimits {
        ScheduleLimits {
            min_interval: self.min_interval.0,
            default_catchup_window: self.catchup_window.0,
            default_max_catchup_burst: self.max_catchup_burst,
            ..ScheduleLimits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        s: SchedulerConfig,
    }

    #[test]
    fn defaults_match_and_validate() {
        let t = T::parse_from(["t"]);
        assert_eq!(t.s, SchedulerConfig::default());
        t.s.validate().unwrap();
        let t = T::parse_from([
            "t",
            "--scheduler-enabled",
            "false",
            "--scheduler-tick",
            "5ms",
        ]);
        assert!(!t.s.enabled);
        assert_eq!(t.s.validate().unwrap_err().name, "HIGHWAY_SCHEDULER_TICK");
    }
}
