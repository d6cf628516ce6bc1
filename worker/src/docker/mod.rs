//! `tools.docker.*`: the bollard client, run spec → Engine API config, the container
//! lifecycle, tar in/out, logs and the tracking table.
//!
//! # Layout
//! - [`client`]: the one bollard client; every call has a deadline and goes through
//!   `DockerClient::call` (where the monitor / circuit breaker hook in).
//! - [`secrets`]: resolving `{"secret": name}` references and redacting their values.
//! - [`tario`]: input tar building, output tar validation (never extracted on the host).
//! - [`logs`]: attach reader (bounded head/tail capture) and the `activity_logs` writer.
//!
//! Architecture Invariant: only this module imports bollard, and inside it only
//! `client.rs` issues requests.

pub mod client;
pub mod logs;
pub mod policy;
pub mod secrets;
pub mod spec;
pub mod tario;
