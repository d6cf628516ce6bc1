//! The scheduler's clock, taken as a parameter: [`DatabaseClock`] reads the database's
//! `now()` (due slots are judged by the database's time, never a host's), and
//! [`FakeClock`] lets tests set and move time, backwards included.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

/// Where "now" comes from.
#[async_trait]
pub trait Clock: Send + Sync + Debug {
    async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error>;
}

/// The database's clock: `SELECT now()`.
#[derive(Debug, Clone)]
pub struct DatabaseClock {
    pool: PgPool,
}

impl DatabaseClock {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

#[async_trait]
impl Clock for DatabaseClock {
    async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
    }
}

/// A clock tests set by hand. Clones share the time.
#[derive(Debug, Clone)]
pub struct FakeClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl FakeClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(at)),
        }
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(|p| p.into_inner()) = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        let mut g = self.now.lock().unwrap_or_else(|p| p.into_inner());
        *g += by;
    }

    pub fn get(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Clock for FakeClock {
    async fn now(&self) -> Result<DateTime<Utc>, sqlx::Error> {
        Ok(self.get())
    }
}
