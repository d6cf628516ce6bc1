//! Highway's docker activity worker.
//!
//! # Layout
//! - [`config`]: every setting (flags, `HIGHWAY_*` environment, defaults, validation).
//! - [`db`]: pools, migrations, the private Postgres cluster of `highway up`.
//! - [`queue`]: the activity table seen from the worker: claim, heartbeat, complete,
//!   rescue (the producer side is `highway_workflows::Client`).
//! - [`executor`]: the registry of activity kinds and the worker loop.
//! - [`docker`]: `tools.docker.*`: bollard client, run spec, container lifecycle, tracking.
//! - [`api`]: the HTTP server: `/health`, `/metrics`, the `/v1` API and the web console
//!   under `/ui` ([`api::ui`]).
//! - [`metrics`]: the process's Prometheus recorder and its record calls (a leaf).
//! - [`periodic`]: one pass of a background service under a stop, and its grace (a leaf).
//! - [`signals`]: SIGTERM/SIGINT → a cancelled token for single-phase services (a leaf).
//! - [`supervisor`]: signals, the two shutdown phases, and wiring of the services.
//! - [`cli`]: the `highway` commands (thin; they call the library).
//! - [`fuzzing`]: the fuzz entry points (`fuzz/` targets and the corpus replay test).
//!
//! Dependencies flow one way: `cli`/`api` → `executor` → `queue`/`docker` → `db`/`config`.

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod docker;
pub mod executor;
pub mod fuzzing;
pub mod health;
pub mod metrics;
pub mod periodic;
pub mod queue;
pub mod scheduler;
pub mod signals;
pub mod supervisor;
pub mod workflow;
