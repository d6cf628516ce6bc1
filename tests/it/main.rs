//! The one integration test binary. Each module covers one area against a real Postgres
//! (a fresh database per test) and the real Docker daemon.
//!
//! - `api`: the HTTP API through the router (tokens, tenancy, limits), e2e, the CLI.
//! - `queue`: enqueue, claim races, retries, rescuer, fencing, cancellation, timeouts.
//! - `process`: the `highway` binary as a child: SIGTERM drain, kill -9 and rescue.
//! - `soft_deps`: Docker and Postgres outages through the fault proxy and a private
//!   cluster: monitor, circuit breaker, readiness, recovery (R8, R12, R13, R15).
//! - `scheduler`: durable cron: exactly once with many schedulers, catch-up, DST, overlap.

mod api;
mod docker_run;
mod docker_tools;
mod gc;
mod process;
mod queue;
mod soft_deps;
mod scheduler;
mod workflow;
