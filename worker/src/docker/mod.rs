//! `tools.docker.*`: the bollard client, run spec → Engine API config, the container
//! lifecycle, tar in/out, logs and the tracking table.
