//! `tools.docker.*`: the bollard client, run spec → Engine API config, the container
//! lifecycle, tar in/out, logs and the tracking table.
//!
//! # Layout
//! - [`client`]: the one bollard client; every call has a deadline and goes through
//!   `DockerClient::call` (where the monitor / circuit breaker hook in).
//! - [`monitor`]: the daemon status monitor (probes with backoff, `/health`, readiness)
//!   and [`breaker`], the circuit breaker it shares with every call.
//! - [`deployment`]: whose container is this (deployment name + database identity).
//! - [`policy`]: the operator's security policy (what tenants may ask for); [`door`]:
//!   the admission of params (syntax, then policy) that the API and the worker share.
//! - [`spec`]: validated params → the Engine API create body, labels, container name.
//! - [`run`]: the `tools.docker.run` handler (the whole lifecycle, cleanup on every path).
//! - [`runtime`]: [`DockerRuntime`], what the handlers share.
//! - [`tracking`]: SQL of `highway.docker_containers` and the audit rows of our Docker
//!   operations.
//! - [`gc`]: the garbage collector (per daemon, every worker and `highway gc`), and the
//!   shared stop/remove sequence with its timestamped steps; its SQL is [`gc_store`].
//! - [`logs`]: attach reader (bounded head/tail capture) and the `activity_logs` writer.
//! - [`tario`]: input tar building, output tar validation (never extracted on the host).
//! - [`artifacts`]: output tars in Postgres chunks (default) or on disk, indexed by
//!   `highway.artifacts`, read back as inputs.
//! - [`tools`]: the other `tools.docker.*` kinds (inspect, stop, remove, logs, exec,
//!   pull, images, commit) and the expiry of committed images.
//! - [`secrets`]: resolving `{"secret": name}` references and redacting their values.
//! - [`secret_store`]: `highway.secrets`, encrypted at rest, and its resolver.
//! - [`registry_auth`]: which registry an image names, the credentials of one pull, the
//!   Docker `config.json` of `--docker-config`.
//! - [`registry_store`]: `highway.registry_credentials` (encrypted like secrets, per
//!   tenant or global, audited) and the lookup of every pull.
//!
//! Architecture Invariant: only this module imports bollard, and inside it only
//! `client.rs` issues requests.

pub mod artifacts;
pub mod breaker;
pub mod client;
pub mod deployment;
pub mod door;
pub mod gc;
pub mod gc_store;
pub mod logs;
pub mod monitor;
pub mod policy;
pub mod registry_auth;
pub mod registry_store;
pub mod run;
pub mod runtime;
pub mod secret_store;
pub mod secrets;
pub mod spec;
pub mod tario;
pub mod tools;
pub mod tracking;

pub use run::RunHandler;
pub use runtime::DockerRuntime;

use crate::executor::Registry;
use std::sync::Arc;

/// Registers the `tools.docker.*` kinds.
pub fn register(registry: &mut Registry, runtime: Arc<DockerRuntime>) {
    registry.register(
        highway_workflows::docker::KIND,
        RunHandler::new(runtime.clone()),
    );
    tools::register(registry, runtime);
}
