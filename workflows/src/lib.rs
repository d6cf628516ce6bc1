//! The Highway client library: the wire types of the activity queue and the typed
//! client that enqueues, reads, waits for and cancels activities.
//!
//! # Layout
//! - [`types`]: requests and views shared by the client, the worker, the CLI and the
//!   HTTP API (`EnqueueRequest`, `RetryPolicy`, `Activity`, `ActivityStatus`, ...).
//! - [`field`]: `FieldError` (bad input naming its field), the crate's ground floor.
//! - [`duration`]: human-friendly durations (`"30s"`, `"5m"`, `1500` ms is written `"1500ms"`).
//! - [`definition`]: the workflow definition format (JSON Schema, validation naming the
//!   field); [`runs`]: the durable run driver over `highway.workflow_steps` (start, advance,
//!   status, wait).
//! - [`docker`], [`docker_tools`]: params of the `tools.docker.*` kinds;
//!   [`docker_params`]: the one syntax check of them, by kind.
//! - [`done`]: completion notifications that wake waiters (LISTEN, polling as fallback).
//! - [`client`]: [`Client`], the producer side of the queue. Like River's `Insert`/`InsertTx`
//!   it writes straight into Postgres, so an enqueue can join the caller's transaction.
//!   This module owns the enqueue, read and cancel SQL; claiming and completing belong to
//!   the worker crate.
//!
//! This crate knows nothing of Docker beyond parameter types; it never talks to a daemon.

pub mod client;
pub mod definition;
pub mod docker;
pub mod docker_params;
pub mod docker_tools;
pub mod done;
pub mod duration;
pub mod field;
pub mod runs;
pub mod schedule;
pub mod types;

pub use client::{Client, Error};
pub use duration::HumanDuration;
pub use types::*;
