//! The one integration test binary. Each module covers one area against real Postgres and Docker.
