//! The Docker status monitor: one per process (per [`DockerClient`]), it probes the
//! daemon with `ping`, keeps the `docker` [`Dependency`] snapshot of `/health` (`unknown |
//! up | down`, last success and failure, last error, next retry, consecutive failures),
//! drives [`DockerRuntime::set_ready`] (the fetch loop claims `tools.docker.*` only while
//! up) and installs the shared circuit [`Breaker`] on the client.
//!
//! Owns: when to probe. While down: exponential backoff (the `backoff` crate) plus a
//! random jitter, capped; optionally a retry budget after which it stays down and stops
//! probing (the process stays up). While up: a fixed interval, or at once when failing
//! calls open the circuit. Each failure is logged with `dependency`, `docker_host`,
//! `error_code`, `message`, `retry_in_ms`, `next_retry_at`, `consecutive_failures`.
//! Must not: panic, exit the process, or build the client eagerly — the client connects
//! lazily on each probe (F5, trap 17: a missing socket fails at construction).
//!
//! Shape (like the other background services): settings with named defaults,
//! [`DockerMonitor::probe_once`] returning what happened (tests assert on it), and
//! [`DockerMonitor::run`] looping around it until the stop token fires.

use crate::config::docker::Availability;
use crate::docker::breaker::Breaker;
use crate::docker::client::{self, DockerClient};
use crate::docker::runtime::DockerRuntime;
use crate::health::{Dependency, Status};
use backoff::backoff::Backoff;
use backoff::{ExponentialBackoff, ExponentialBackoffBuilder};
use chrono::{DateTime, Utc};
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Why the monitor cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A monitor is already installed on this client: one per process, or two monitors
    /// would fight over the readiness flag and double the probes.
    #[error("a docker monitor already runs for this client")]
    AlreadyRunning,
    /// `HIGHWAY_DOCKER_OPTIONAL=false` and the first probe failed.
    #[error(
        "docker daemon unreachable at {host}: {message} (HIGHWAY_DOCKER_OPTIONAL=false requires \
         it at start; set HIGHWAY_DOCKER_OPTIONAL=true to start without it)"
    )]
    Required { host: String, message: String },
}

/// How the monitor probes. Defaults are the documented `HIGHWAY_DOCKER_*` defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// First delay after a failed probe; doubles per failure.
    pub base_delay: Duration,
    /// Cap of the delay while down.
    pub max_delay: Duration,
    /// Up to this much is added at random to each retry delay.
    pub jitter: Duration,
    /// Probe interval while up.
    pub probe_interval: Duration,
    /// Consecutive failed probes before giving up; 0 = never give up.
    pub max_retries: u32,
    /// Consecutive failed calls that open the circuit.
    pub breaker_threshold: u32,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self::from_config(&Availability::default())
    }
}

impl MonitorSettings {
    pub fn from_config(a: &Availability) -> Self {
        Self {
            base_delay: Duration::from_millis(a.retry_base_delay_ms.max(1)),
            max_delay: Duration::from_millis(a.retry_max_delay_ms.max(a.retry_base_delay_ms)),
            jitter: Duration::from_millis(a.retry_jitter_ms),
            probe_interval: Duration::from_millis(a.probe_interval_ms.max(1)),
            max_retries: a.max_retries,
            breaker_threshold: a.breaker_threshold,
        }
    }
}

/// What one probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The daemon answered; next probe after the up-interval.
    Up,
    /// It did not; next probe after `retry_in`.
    Down {
        error_code: &'static str,
        retry_in: Duration,
    },
    /// It did not, and the retry budget is spent: no more probes.
    GaveUp { error_code: &'static str },
}

/// Counts of a monitor's life, returned by [`DockerMonitor::run`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorSummary {
    pub probes: u64,
    pub failures: u64,
    /// Times the status went from down (or unknown) to up.
    pub recoveries: u64,
    pub gave_up: bool,
}

/// The monitor; build with [`DockerMonitor::new`], then [`DockerMonitor::start`] (first
/// probe) and [`DockerMonitor::run`] in the supervisor's task tracker.
pub struct DockerMonitor {
    client: DockerClient,
    breaker: Arc<Breaker>,
    dep: Dependency,
    runtime: Option<Arc<DockerRuntime>>,
    settings: MonitorSettings,
    backoff: ExponentialBackoff,
    /// Consecutive failed probes (the retry budget counts these).
    failed_probes: u32,
    summary: MonitorSummary,
}

impl std::fmt::Debug for DockerMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerMonitor")
            .field("host", &self.client.settings().host)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// A short, stable code for logs and branching; never includes the message.
pub fn error_code(e: &client::Error) -> &'static str {
    match e {
        client::Error::Unavailable { message, .. } if message.contains("Socket not found") => {
            "socket_not_found"
        }
        // A certificate problem (the daemon's, or ours refused): no retry will fix it.
        client::Error::Unavailable { message, .. } if message.starts_with("TLS ") => "tls",
        client::Error::Unavailable { .. } => "unreachable",
        client::Error::Timeout { .. } => "timeout",
        client::Error::Rejected { .. } => "circuit_open",
        client::Error::Api { .. } => "daemon_error",
        _ => "unexpected_answer",
    }
}

impl DockerMonitor {
    /// A monitor for `client`, reporting into `dep`. Installs the circuit breaker on the
    /// client; refuses if another monitor already did.
    pub fn new(
        client: DockerClient,
        dep: Dependency,
        settings: MonitorSettings,
    ) -> Result<Self, Error> {
        let breaker = Arc::new(Breaker::new(settings.breaker_threshold).with_status(dep.clone()));
        if !client.set_observer_once(breaker.clone()) {
            return Err(Error::AlreadyRunning);
        }
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_interval(settings.base_delay)
            .with_multiplier(2.0)
            // Our own additive jitter (HIGHWAY_DOCKER_RETRY_JITTER_MS) replaces the
            // crate's proportional one, so the documented delays hold exactly.
            .with_randomization_factor(0.0)
            .with_max_interval(settings.max_delay)
            .with_max_elapsed_time(None)
            .build();
        Ok(Self {
            client,
            breaker,
            dep,
            runtime: None,
            settings,
            backoff,
            failed_probes: 0,
            summary: MonitorSummary::default(),
        })
    }

    /// The monitor of `rt`'s client, which also drives `rt`'s readiness.
    pub fn for_runtime(
        rt: Arc<DockerRuntime>,
        dep: Dependency,
        settings: MonitorSettings,
    ) -> Result<Self, Error> {
        let mut m = Self::new(rt.client.clone(), dep, settings)?;
        m.runtime = Some(rt);
        Ok(m)
    }

    /// The breaker shared with the client.
    pub fn breaker(&self) -> Arc<Breaker> {
        self.breaker.clone()
    }

    fn host(&self) -> &str {
        &self.client.settings().host
    }

    fn set_ready(&self, ready: bool) {
        if let Some(rt) = &self.runtime {
            rt.set_ready(ready);
        }
    }

    /// The first probe, before the worker starts claiming: readiness is right from the
    /// first claim. With `optional == false` an unreachable daemon is an error.
    pub async fn start(&mut self, optional: bool) -> Result<Probe, Error> {
        // Until the first answer nothing may be claimed: a claim would burn an
        // (uncounted) attempt on a daemon we know nothing about.
        self.set_ready(false);
        let first = self.probe_once().await;
        if !optional && first != Probe::Up {
            return Err(Error::Required {
                host: self.host().to_string(),
                message: self.dep.snapshot().last_error.unwrap_or_default(),
            });
        }
        Ok(first)
    }

    /// One probe: updates the status, readiness and breaker, logs a failure, and says
    /// when to probe next.
    pub async fn probe_once(&mut self) -> Probe {
        self.summary.probes += 1;
        let was = self.dep.snapshot().status;
        match self.client.ping().await {
            Ok(()) => {
                self.dep.success();
                self.set_ready(true);
                self.backoff.reset();
                self.failed_probes = 0;
                if was != Status::Up {
                    self.summary.recoveries += 1;
                    tracing::info!(
                        dependency = "docker",
                        docker_host = %self.host(),
                        "docker daemon is reachable"
                    );
                }
                Probe::Up
            }
            Err(e) => {
                self.summary.failures += 1;
                self.failed_probes = self.failed_probes.saturating_add(1);
                self.set_ready(false);
                self.breaker.open(&e.to_string());
                let code = error_code(&e);
                let message = e.to_string();
                if self.settings.max_retries > 0 && self.failed_probes > self.settings.max_retries {
                    let n = self.dep.failure(message.clone(), None);
                    self.dep.exhausted();
                    self.summary.gave_up = true;
                    tracing::error!(
                        dependency = "docker",
                        docker_host = %self.host(),
                        error_code = code,
                        consecutive_failures = n,
                        max_retries = self.settings.max_retries,
                        // The `message` field is the event's text: it carries the error.
                        message = %format!(
                            "docker daemon still unreachable after HIGHWAY_DOCKER_MAX_RETRIES \
                             retries, giving up (docker activities stay queued; restart the \
                             worker to retry): {message}"
                        ),
                    );
                    return Probe::GaveUp { error_code: code };
                }
                let retry_in = self.next_delay();
                let next_retry_at: DateTime<Utc> =
                    Utc::now() + chrono::Duration::from_std(retry_in).unwrap_or_default();
                let n = self.dep.failure(message.clone(), Some(next_retry_at));
                tracing::warn!(
                    dependency = "docker",
                    docker_host = %self.host(),
                    error_code = code,
                    message = %format!("docker daemon unreachable: {message}"),
                    retry_in_ms = retry_in.as_millis() as u64,
                    next_retry_at = %next_retry_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    consecutive_failures = n,
                );
                Probe::Down {
                    error_code: code,
                    retry_in,
                }
            }
        }
    }

    fn next_delay(&mut self) -> Duration {
        let base = self
            .backoff
            .next_backoff()
            .unwrap_or(self.settings.max_delay)
            .min(self.settings.max_delay);
        let jitter_ms = self.settings.jitter.as_millis() as u64;
        let jitter = if jitter_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms))
        };
        base + jitter
    }

    /// Probes until `stop` fires. `first` is the outcome of [`DockerMonitor::start`], if
    /// it ran; otherwise the first probe happens at once.
    pub async fn run(mut self, first: Option<Probe>, stop: CancellationToken) -> MonitorSummary {
        let mut last = match first {
            Some(p) => p,
            None => tokio::select! {
                p = self.probe_once() => p,
                _ = stop.cancelled() => return self.summary,
            },
        };
        loop {
            match &last {
                Probe::Up => {
                    tokio::select! {
                        _ = tokio::time::sleep(self.settings.probe_interval) => {}
                        // Calls failing while we thought it up: stop claiming docker
                        // work at once (each claim would burn an attempt on a circuit
                        // that refuses every call) and look now; on a hung daemon the
                        // probe itself takes its whole deadline to fail.
                        _ = self.breaker.tripped() => self.set_ready(false),
                        _ = stop.cancelled() => return self.summary,
                    }
                }
                Probe::Down { retry_in, .. } => {
                    tokio::select! {
                        _ = tokio::time::sleep(*retry_in) => {}
                        _ = stop.cancelled() => return self.summary,
                    }
                }
                Probe::GaveUp { .. } => {
                    // Stay down, probe no more, but keep the process up.
                    stop.cancelled().await;
                    return self.summary;
                }
            }
            last = tokio::select! {
                p = self.probe_once() => p,
                _ = stop.cancelled() => return self.summary,
            };
        }
    }
}

/// Wires a monitor for `rt` (what the supervisor calls): the first probe now, then the
/// loop in `tracker` until `stop`. With `HIGHWAY_DOCKER_OPTIONAL=false` an unreachable
/// daemon is an error and nothing is spawned.
pub async fn start_for_runtime(
    rt: Arc<DockerRuntime>,
    dep: Dependency,
    tracker: &TaskTracker,
    stop: CancellationToken,
) -> Result<(), Error> {
    let a = rt.config.availability.clone();
    let mut m = DockerMonitor::for_runtime(rt, dep, MonitorSettings::from_config(&a))?;
    let first = m.start(a.optional).await?;
    tracker.spawn(m.run(Some(first), stop));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::client::ClientSettings;
    use crate::health::Circuit;

    fn unreachable_client() -> DockerClient {
        DockerClient::new(ClientSettings {
            host: "unix:///nonexistent/highway-monitor-test.sock".into(),
            ..ClientSettings::default()
        })
    }

    fn fast(max_retries: u32) -> MonitorSettings {
        MonitorSettings {
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(400),
            jitter: Duration::ZERO,
            probe_interval: Duration::from_secs(30),
            max_retries,
            breaker_threshold: 3,
        }
    }

    #[tokio::test]
    async fn backoff_doubles_up_to_the_cap_and_the_status_is_down() {
        let dep = Dependency::default();
        let mut m = DockerMonitor::new(unreachable_client(), dep.clone(), fast(0)).unwrap();
        let mut delays = Vec::new();
        for _ in 0..5 {
            match m.probe_once().await {
                Probe::Down {
                    retry_in,
                    error_code,
                } => {
                    assert_eq!(error_code, "socket_not_found");
                    delays.push(retry_in.as_millis());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [100, 200, 400, 400, 400]);
        let s = dep.snapshot();
        assert_eq!(s.status, Status::Down);
        assert_eq!(s.consecutive_failures, 5);
        assert!(s.next_retry_at.is_some() && s.last_error.is_some());
        assert_eq!(s.circuit, Some(Circuit::Open));
    }

    #[tokio::test]
    async fn jitter_stays_within_its_bound() {
        let mut settings = fast(0);
        settings.jitter = Duration::from_millis(50);
        let mut m =
            DockerMonitor::new(unreachable_client(), Dependency::default(), settings).unwrap();
        let Probe::Down { retry_in, .. } = m.probe_once().await else {
            panic!("expected down")
        };
        assert!((100..=150).contains(&retry_in.as_millis()), "{retry_in:?}");
    }

    #[tokio::test]
    async fn gives_up_after_max_retries_and_run_returns_only_on_stop() {
        let dep = Dependency::default();
        let m = DockerMonitor::new(unreachable_client(), dep.clone(), fast(2)).unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(m.run(None, stop.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !dep.snapshot().retries_exhausted {
            assert!(tokio::time::Instant::now() < deadline, "never gave up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // It keeps running (and probing no more) until stopped.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!task.is_finished());
        assert_eq!(dep.snapshot().consecutive_failures, 3);
        stop.cancel();
        let summary = task.await.unwrap();
        assert!(summary.gave_up);
        assert_eq!(summary.probes, 3);
        assert_eq!(dep.snapshot().status, Status::Down);
    }

    #[tokio::test]
    async fn one_monitor_per_client_and_required_fails_fast() {
        let c = unreachable_client();
        let mut m = DockerMonitor::new(c.clone(), Dependency::default(), fast(0)).unwrap();
        assert!(matches!(
            DockerMonitor::new(c, Dependency::default(), fast(0)),
            Err(Error::AlreadyRunning)
        ));
        let e = m.start(false).await.unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("HIGHWAY_DOCKER_OPTIONAL"), "{msg}");
        assert!(
            msg.contains("/nonexistent/highway-monitor-test.sock"),
            "{msg}"
        );
    }
}
