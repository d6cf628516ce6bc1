//! The circuit breaker in front of every Docker call, shared with the status monitor.
//!
//! Owns: the `closed → open → half-open → closed` state of the daemon connection. It is
//! installed as the client's [`CallObserver`], so every request passes [`Breaker::admit`]
//! and reports to [`Breaker::record`]; a rejected call fails at once with
//! `client::Error::Rejected` (a daemon failure: the run handler reports it as
//! infrastructure, no attempt burned).
//! Must not: probe the daemon itself or sleep — the monitor decides when to probe; the
//! breaker only lets that probe ([`PROBE_OP`]) through while open.
//!
//! Why a breaker on top of per-call deadlines: with a hung daemon every call would wait
//! its full deadline (seconds each, R13); once the daemon is known to be gone, callers
//! (the run handler's cleanup, the API) should learn it in microseconds instead.

use crate::docker::client::{CallObserver, Error};
use crate::health::{Circuit, Dependency};
use std::sync::Mutex;
use tokio::sync::Notify;

/// The operation the monitor probes with; the only one admitted while the circuit is
/// open (it half-opens the circuit).
pub const PROBE_OP: &str = "ping";

/// Shared by the client (as its observer) and the monitor.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    state: Mutex<State>,
    /// Wakes the monitor when calls (not its probe) open the circuit, so it probes at
    /// once instead of after its up-interval. `Notify` keeps one permit: a trip while
    /// the monitor is busy is not lost.
    tripped: Notify,
    /// Mirrors the circuit into `/health`.
    status: Option<Dependency>,
}

#[derive(Debug)]
struct State {
    circuit: Circuit,
    consecutive_failures: u32,
    last_error: Option<String>,
    /// How often the circuit opened (tests and metrics).
    opened: u64,
    /// Calls refused while open.
    rejected: u64,
}

/// Whether an outcome says the daemon is unreachable. Only unreachable (connection
/// refused, reset, socket missing) and timed out count: a 4xx or 5xx is an answer, so
/// the daemon is there; a `Rejected` never reached it.
pub fn counts_as_failure(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. } | Error::Timeout { .. })
}

impl Breaker {
    /// Opens after `threshold` consecutive failures (at least 1).
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            state: Mutex::new(State {
                circuit: Circuit::Closed,
                consecutive_failures: 0,
                last_error: None,
                opened: 0,
                rejected: 0,
            }),
            tripped: Notify::new(),
            status: None,
        }
    }

    /// Reports the circuit state in this dependency's snapshot.
    pub fn with_status(mut self, dep: Dependency) -> Self {
        dep.set_circuit(Circuit::Closed);
        self.status = Some(dep);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn circuit(&self) -> Circuit {
        self.lock().circuit
    }

    /// How many times the circuit opened since start.
    pub fn opened_count(&self) -> u64 {
        self.lock().opened
    }

    /// How many calls were refused without being sent.
    pub fn rejected_count(&self) -> u64 {
        self.lock().rejected
    }

    /// Resolves once calls have opened the circuit (a permit is kept if nobody waits).
    pub async fn tripped(&self) {
        self.tripped.notified().await
    }

    /// Opens the circuit now: the monitor's probe failed, the daemon is down.
    pub fn open(&self, reason: &str) {
        let mut s = self.lock();
        s.last_error = Some(reason.to_string());
        if s.circuit != Circuit::Open {
            if s.circuit == Circuit::Closed {
                s.opened += 1;
            }
            s.circuit = Circuit::Open;
            drop(s);
            self.publish(Circuit::Open);
        }
    }

    fn publish(&self, c: Circuit) {
        if let Some(d) = &self.status {
            d.set_circuit(c);
        }
    }
}

impl CallObserver for Breaker {
    fn admit(&self, op: &'static str) -> Result<(), String> {
        let mut s = self.lock();
        match s.circuit {
            Circuit::Closed => Ok(()),
            _ if op == PROBE_OP => {
                let was = s.circuit;
                s.circuit = Circuit::HalfOpen;
                drop(s);
                if was != Circuit::HalfOpen {
                    self.publish(Circuit::HalfOpen);
                }
                Ok(())
            }
            _ => {
                s.rejected += 1;
                Err(match &s.last_error {
                    Some(e) => format!("circuit open: docker daemon unreachable ({e})"),
                    None => "circuit open: docker daemon unreachable".to_string(),
                })
            }
        }
    }

    fn record(&self, _op: &'static str, outcome: Result<(), &Error>) {
        let mut s = self.lock();
        match outcome {
            Err(e) if counts_as_failure(e) => {
                s.consecutive_failures = s.consecutive_failures.saturating_add(1);
                s.last_error = Some(e.to_string());
                let open = match s.circuit {
                    Circuit::HalfOpen => true,
                    Circuit::Closed => s.consecutive_failures >= self.threshold,
                    Circuit::Open => false,
                };
                if open {
                    let from = s.circuit;
                    s.circuit = Circuit::Open;
                    if from == Circuit::Closed {
                        s.opened += 1;
                    }
                    drop(s);
                    self.publish(Circuit::Open);
                    if from == Circuit::Closed {
                        tracing::warn!(
                            dependency = "docker",
                            error_code = "circuit_open",
                            threshold = self.threshold,
                            message = %format!(
                                "docker circuit opened, calls fail fast until a probe succeeds: {e}"
                            ),
                        );
                        self.tripped.notify_one();
                    }
                }
            }
            // Any answer proves the daemon is reachable: close.
            _ => {
                s.consecutive_failures = 0;
                if s.circuit != Circuit::Closed {
                    s.circuit = Circuit::Closed;
                    drop(s);
                    self.publish(Circuit::Closed);
                    tracing::info!(dependency = "docker", "docker circuit closed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn down() -> Error {
        Error::Unavailable {
            op: "inspect_container",
            message: "connection refused".into(),
        }
    }

    #[test]
    fn opens_after_threshold_and_rejects_until_a_probe_succeeds() {
        let dep = Dependency::default();
        let b = Breaker::new(3).with_status(dep.clone());
        for _ in 0..2 {
            b.admit("inspect_container").unwrap();
            b.record("inspect_container", Err(&down()));
        }
        assert_eq!(b.circuit(), Circuit::Closed);
        b.record("inspect_container", Err(&down()));
        assert_eq!(b.circuit(), Circuit::Open);
        assert_eq!(dep.snapshot().circuit, Some(Circuit::Open));
        let refused = b.admit("create_container").unwrap_err();
        assert!(refused.contains("circuit open"), "{refused}");
        assert_eq!(b.rejected_count(), 1);

        // The probe half-opens; its failure re-opens without counting a new opening.
        b.admit(PROBE_OP).unwrap();
        assert_eq!(b.circuit(), Circuit::HalfOpen);
        assert!(b.admit("create_container").is_err());
        b.record(PROBE_OP, Err(&down()));
        assert_eq!(b.circuit(), Circuit::Open);
        assert_eq!(b.opened_count(), 1);

        b.admit(PROBE_OP).unwrap();
        b.record(PROBE_OP, Ok(()));
        assert_eq!(b.circuit(), Circuit::Closed);
        assert_eq!(dep.snapshot().circuit, Some(Circuit::Closed));
        b.admit("create_container").unwrap();
    }

    #[test]
    fn answers_are_not_failures() {
        let b = Breaker::new(1);
        let conflict = Error::Conflict {
            op: "create_container",
            message: "name in use".into(),
        };
        let server = Error::Api {
            op: "start_container",
            status: 500,
            message: "oci runtime".into(),
        };
        b.record("create_container", Err(&conflict));
        b.record("start_container", Err(&server));
        assert_eq!(b.circuit(), Circuit::Closed);
        b.record(
            "ping",
            Err(&Error::Timeout {
                op: "ping",
                after: Duration::from_secs(5),
            }),
        );
        assert_eq!(b.circuit(), Circuit::Open);
    }

    #[tokio::test]
    async fn tripping_wakes_the_monitor_even_if_it_was_not_waiting() {
        let b = Breaker::new(1);
        b.record("inspect_container", Err(&down()));
        tokio::time::timeout(Duration::from_secs(1), b.tripped())
            .await
            .expect("a permit was stored");
    }
}
