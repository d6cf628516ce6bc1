//! Every setting of the worker: command-line flags, `HIGHWAY_*` environment variables,
//! their defaults and validation. Other modules receive plain typed values from here.

pub mod docker;
