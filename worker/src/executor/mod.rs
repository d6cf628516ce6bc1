//! The worker loop: claim → run the handler → heartbeat → record; drain on shutdown.

pub mod registry;

pub use registry::{ActivityContext, CancelReason, Handler, HandlerError, HandlerResult, Registry};
