//! Settings of the HTTP API (`/v1`): the request body limit, the per-tenant quotas, and
//! what `/metrics` may label and how often it reads the queues.
//! Flattened into [`super::HttpConfig`]; every flag also reads a `HIGHWAY_API_*` variable.

use super::{bad, ConfigError};
use std::time::Duration;

/// The API's limits.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct ApiConfig {
    /// Largest accepted request body in bytes. Larger bodies are refused with 413 from
    /// their Content-Length, before any of it is read; bodies without a length are cut
    /// off at the limit while streaming.
    #[arg(help_heading = "HTTP", long, env = "HIGHWAY_API_BODY_LIMIT", default_value_t = 2 * 1024 * 1024)]
    pub api_body_limit: usize,

    /// Most activities a tenant may have waiting (`scheduled`) at once; 0 = no limit.
    /// An enqueue past it answers 429.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_API_QUOTA_QUEUED",
        default_value_t = 10_000
    )]
    pub api_quota_queued: i64,

    /// Most containers (created or running) a tenant may have at once; 0 = no limit. A
    /// `tools.docker.*` enqueue past it answers 429.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_API_QUOTA_CONTAINERS",
        default_value_t = 100
    )]
    pub api_quota_containers: i64,

    /// Most schedules a tenant may own; 0 = no limit. Creating one past it answers 429.
    #[arg(
        help_heading = "Limits",
        long,
        env = "HIGHWAY_API_QUOTA_SCHEDULES",
        default_value_t = 1_000
    )]
    pub api_quota_schedules: i64,

    /// Values that `/metrics` may show as labels as they are (comma-separated queue
    /// names). Queue names come from whoever enqueues, so any other queue is counted
    /// under `other`; `default` and this worker's own `--queues` are always allowed.
    #[arg(long, env = "HIGHWAY_METRICS_LABEL_ALLOWLIST", value_delimiter = ',')]
    pub metrics_label_allowlist: Vec<String>,

    /// How often this process reads queue depth and the oldest wait for `/metrics` (one
    /// query per interval, whatever the scrape rate).
    #[arg(long, env = "HIGHWAY_METRICS_INTERVAL", default_value = "15s")]
    pub metrics_interval: highway_workflows::HumanDuration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            api_body_limit: 2 * 1024 * 1024,
            api_quota_queued: 10_000,
            api_quota_containers: 100,
            api_quota_schedules: 1_000,
            metrics_label_allowlist: Vec::new(),
            metrics_interval: highway_workflows::HumanDuration::from_secs(15),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1024..=256 * 1024 * 1024).contains(&self.api_body_limit) {
            return Err(bad(
                "HIGHWAY_API_BODY_LIMIT",
                "must be between 1024 and 268435456 bytes",
            ));
        }
        for (name, v) in [
            ("HIGHWAY_API_QUOTA_QUEUED", self.api_quota_queued),
            ("HIGHWAY_API_QUOTA_CONTAINERS", self.api_quota_containers),
            ("HIGHWAY_API_QUOTA_SCHEDULES", self.api_quota_schedules),
        ] {
            if v < 0 {
                return Err(bad(name, "must not be negative (0 = no limit)"));
            }
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(3600))
            .contains(&self.metrics_interval.0)
        {
            return Err(bad(
                "HIGHWAY_METRICS_INTERVAL",
                "must be between 100ms and 1h",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_name_the_setting() {
        ApiConfig::default().validate().unwrap();
        let c = ApiConfig {
            api_body_limit: 10,
            ..ApiConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().name, "HIGHWAY_API_BODY_LIMIT");
        let c = ApiConfig {
            api_quota_queued: -1,
            ..ApiConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().name, "HIGHWAY_API_QUOTA_QUEUED");
    }
}
