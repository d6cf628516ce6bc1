//! The one integration test binary. Each module covers one area against a real Postgres
//! (a fresh database per test) and the real Docker daemon.
//!
//! - `queue`: enqueue, claim races, retries, rescuer, fencing, cancellation, timeouts.
//! - `process`: the `highway` binary as a child: SIGTERM drain, kill -9 and rescue.

mod docker_run;
mod process;
mod queue;
