//! Highway's docker activity worker.
//!
//! # Layout
//! - [`config`]: every setting (flags, `HIGHWAY_*` environment, defaults, validation).
//! - [`executor`]: the registry of activity kinds and the worker loop.
//! - [`docker`]: `tools.docker.*`: bollard client, run spec, container lifecycle, tracking.

pub mod config;
pub mod docker;
pub mod executor;
