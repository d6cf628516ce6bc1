//! Stored private-registry credentials: `highway.registry_credentials`, one row per
//! (scope, host) where the scope is a tenant or global, the password encrypted like the
//! tenant secrets (ChaCha20-Poly1305 under `HIGHWAY_SECRETS_KEY`, the scope, host and
//! username as associated data, so a ciphertext moved to another row does not open); and
//! [`RegistryAuth`], the lookup every pull makes: the tenant's entry, then the global
//! one, then the `--docker-config` file.
//!
//! Owns: all SQL on `highway.registry_credentials`, the audit rows of its changes
//! (`registry.add`, `registry.rm`, written in the same transaction as the change), and
//! how a failed lookup fails a pull.
//! Must not: log, return or format a password: it enters as a [`SecretValue`] and leaves
//! only inside [`RegistryCredentials`] for the Docker client. Listings carry host,
//! username, scope and times.

use crate::docker::registry_auth::{
    normalize_host, registry_of_image, DockerConfigFile, HostError, RegistryCredentials, Source,
};
use crate::docker::secret_store::{open_by_id, Rotated, SecretsKey, KEY_ENV};
use crate::docker::secrets::SecretValue;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

/// Longest password (or token) accepted.
pub const MAX_PASSWORD_BYTES: usize = 8 * 1024;

/// Why the store refused or failed. Never holds a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{KEY_ENV} is not set: registry credentials cannot be stored")]
    NoKey,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("tenant id must be 1..=128 characters without control characters")]
    BadTenant,
    #[error("username must be 1..=255 characters, without ':' or control characters")]
    BadUsername,
    #[error("password must be 1..={MAX_PASSWORD_BYTES} bytes without control characters")]
    BadPassword,
    #[error(
        "the registry credentials for {host} ({scope}) cannot be decrypted with this \
         HIGHWAY_SECRETS_KEY (they were stored with key id {key_id})"
    )]
    Decrypt {
        host: String,
        scope: Source,
        key_id: String,
    },
    #[error("registry credentials table: {0}")]
    Db(#[from] sqlx::Error),
}

/// One entry as listed: never the password.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
pub struct RegistryInfo {
    pub host: String,
    pub username: String,
    /// `global`, or `tenant`.
    pub scope: String,
    /// The tenant of a `tenant` entry; null for `global`.
    pub tenant_id: Option<String>,
    /// Which key encrypted the password (first 8 hex digits of its SHA-256).
    pub key_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct InfoRow {
    tenant_id: Option<String>,
    host: String,
    username: String,
    key_id: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

fn info(r: InfoRow) -> RegistryInfo {
    RegistryInfo {
        scope: if r.tenant_id.is_some() {
            "tenant"
        } else {
            "global"
        }
        .into(),
        host: r.host,
        username: r.username,
        tenant_id: r.tenant_id,
        key_id: r.key_id,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

/// What a pull needs of a row.
#[derive(sqlx::FromRow)]
struct SealedRow {
    tenant_id: Option<String>,
    username: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
}

/// Which entries a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listing {
    All,
    Global,
    Tenant(String),
}

fn check_tenant(t: &str) -> Result<(), StoreError> {
    if t.is_empty() || t.chars().count() > 128 || t.chars().any(char::is_control) {
        return Err(StoreError::BadTenant);
    }
    Ok(())
}

/// Checks what `add` takes: the host normalised, the username and password shapes.
pub fn check_entry(
    tenant: Option<&str>,
    host: &str,
    username: &str,
    password: &str,
) -> Result<String, StoreError> {
    if let Some(t) = tenant {
        check_tenant(t)?;
    }
    let host = normalize_host(host)?;
    if username.is_empty()
        || username.chars().count() > 255
        || username.contains(':')
        || username.chars().any(char::is_control)
    {
        return Err(StoreError::BadUsername);
    }
    if password.is_empty()
        || password.len() > MAX_PASSWORD_BYTES
        || password.chars().any(char::is_control)
    {
        return Err(StoreError::BadPassword);
    }
    Ok(host)
}

/// The associated data of a row's ciphertext: a "registry" domain (so a secrets row's
/// ciphertext never opens here), the scope, the host and the username.
fn aad(tenant: Option<&str>, host: &str, username: &str) -> (String, String) {
    (
        format!("registry\0{}", tenant.unwrap_or("")),
        format!("{host}\0{username}"),
    )
}

/// `highway.registry_credentials`. Listing and removal work without a key; storing and
/// reading passwords need it.
#[derive(Debug, Clone)]
pub struct RegistryStore {
    pool: PgPool,
    key: Option<SecretsKey>,
    /// Previous keys (`HIGHWAY_SECRETS_KEY_OLD`) that still read the rows they wrote.
    old: Vec<SecretsKey>,
}

/// A row as [`RegistryStore::rotate`] reads it.
#[derive(sqlx::FromRow)]
struct RotateRow {
    tenant_id: Option<String>,
    host: String,
    username: String,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
    key_id: String,
}

impl RegistryStore {
    pub fn new(pool: PgPool, key: Option<SecretsKey>) -> Self {
        Self {
            pool,
            key,
            old: Vec::new(),
        }
    }

    /// Previous keys that still decrypt the rows they wrote (during a key rotation).
    pub fn with_old_keys(mut self, old: Vec<SecretsKey>) -> Self {
        self.old = old;
        self
    }

    /// With the key of `HIGHWAY_SECRETS_KEY` (if set; a malformed one is an error) and
    /// the previous keys of `HIGHWAY_SECRETS_KEY_OLD`.
    pub fn from_env(pool: PgPool) -> Result<Self, crate::docker::secret_store::StoreError> {
        Ok(Self::new(pool, SecretsKey::from_env()?).with_old_keys(SecretsKey::old_from_env()?))
    }

    /// Re-encrypts every entry not under the current key, in one transaction: all or
    /// none (an entry no known key opens stops it, naming the entry). Safe to run again
    /// and while workers pull: they read with the old keys until the commit.
    pub async fn rotate(&self) -> Result<Rotated, StoreError> {
        let key = self.key.as_ref().ok_or(StoreError::NoKey)?;
        let mut tx = self.pool.begin().await?;
        let rows: Vec<RotateRow> = sqlx::query_as(
            "SELECT tenant_id, host, username, nonce, ciphertext, key_id
               FROM highway.registry_credentials
              ORDER BY host, tenant_id NULLS FIRST FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut done = Rotated {
            reencrypted: 0,
            current: 0,
        };
        for r in rows {
            let aad = aad(r.tenant_id.as_deref(), &r.host, &r.username);
            if r.key_id == key.id() && key.open(&aad.0, &aad.1, &r.nonce, &r.ciphertext).is_some() {
                done.current += 1;
                continue;
            }
            let scope = if r.tenant_id.is_some() {
                Source::Tenant
            } else {
                Source::Global
            };
            let password = open_by_id(
                key,
                &self.old,
                &r.key_id,
                (&aad.0, &aad.1),
                &r.nonce,
                &r.ciphertext,
            )
            .ok_or_else(|| StoreError::Decrypt {
                host: r.host.clone(),
                scope,
                key_id: r.key_id.clone(),
            })?;
            let (nonce, ct) = key.seal(&aad.0, &aad.1, password.expose());
            sqlx::query(
                "UPDATE highway.registry_credentials
                    SET nonce = $4, ciphertext = $5, key_id = $6
                  WHERE tenant_id IS NOT DISTINCT FROM $1 AND host = $2 AND username = $3",
            )
            .bind(&r.tenant_id)
            .bind(&r.host)
            .bind(&r.username)
            .bind(nonce)
            .bind(ct)
            .bind(key.id())
            .execute(&mut *tx)
            .await?;
            done.reencrypted += 1;
        }
        tx.commit().await?;
        Ok(done)
    }

    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// Creates or replaces the entry of (`tenant` or global, `host`), and audits it with
    /// `actor`. Returns the entry and whether one was replaced.
    pub async fn add(
        &self,
        tenant: Option<&str>,
        host: &str,
        username: &str,
        password: &SecretValue,
        actor: &str,
    ) -> Result<(RegistryInfo, bool), StoreError> {
        let key = self.key.as_ref().ok_or(StoreError::NoKey)?;
        let host = check_entry(tenant, host, username, password.expose())?;
        let (a, b) = aad(tenant, &host, username);
        let (nonce, ct) = key.seal(&a, &b, password.expose());
        let conflict = if tenant.is_some() {
            "(tenant_id, host) WHERE tenant_id IS NOT NULL"
        } else {
            "(host) WHERE tenant_id IS NULL"
        };
        let mut tx = self.pool.begin().await?;
        let row: InfoRow = sqlx::query_as(&format!(
            "INSERT INTO highway.registry_credentials
                 (tenant_id, host, username, nonce, ciphertext, key_id)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT {conflict} DO UPDATE
                SET username = EXCLUDED.username, nonce = EXCLUDED.nonce,
                    ciphertext = EXCLUDED.ciphertext, key_id = EXCLUDED.key_id,
                    updated_at = clock_timestamp()
             RETURNING tenant_id, host, username, key_id, created_at, updated_at"
        ))
        .bind(tenant)
        .bind(&host)
        .bind(username)
        .bind(nonce)
        .bind(ct)
        .bind(key.id())
        .fetch_one(&mut *tx)
        .await?;
        // A new row has both times from the same `now()`; a replaced one a later update.
        let replaced = row.updated_at != row.created_at;
        audit(
            &mut tx,
            tenant,
            actor,
            "registry.add",
            &host,
            json!({"username": username, "key_id": key.id(), "replaced": replaced,
                   "scope": if tenant.is_some() { "tenant" } else { "global" }}),
        )
        .await?;
        tx.commit().await?;
        Ok((info(row), replaced))
    }

    /// Deletes the entry of (`tenant` or global, `host`) and audits it; false when there
    /// was none (nothing audited then).
    pub async fn remove(
        &self,
        tenant: Option<&str>,
        host: &str,
        actor: &str,
    ) -> Result<bool, StoreError> {
        if let Some(t) = tenant {
            check_tenant(t)?;
        }
        let host = normalize_host(host)?;
        let mut tx = self.pool.begin().await?;
        let gone: Option<String> = sqlx::query_scalar(
            "DELETE FROM highway.registry_credentials
              WHERE host = $2 AND tenant_id IS NOT DISTINCT FROM $1
              RETURNING username",
        )
        .bind(tenant)
        .bind(&host)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(username) = gone else {
            return Ok(false);
        };
        audit(
            &mut tx,
            tenant,
            actor,
            "registry.rm",
            &host,
            json!({"username": username,
                   "scope": if tenant.is_some() { "tenant" } else { "global" }}),
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Entries (never passwords), global first, then by tenant and host.
    pub async fn list(&self, which: &Listing) -> Result<Vec<RegistryInfo>, StoreError> {
        let (mode, tenant) = match which {
            Listing::All => ("all", None),
            Listing::Global => ("global", None),
            Listing::Tenant(t) => ("tenant", Some(t.as_str())),
        };
        let rows: Vec<InfoRow> = sqlx::query_as(
            "SELECT tenant_id, host, username, key_id, created_at, updated_at
               FROM highway.registry_credentials
              WHERE $1 = 'all'
                 OR ($1 = 'global' AND tenant_id IS NULL)
                 OR ($1 = 'tenant' AND tenant_id = $2)
              ORDER BY tenant_id NULLS FIRST, host",
        )
        .bind(mode)
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(info).collect())
    }

    /// The credentials a pull by `tenant` from `host` (normalised) uses: the tenant's
    /// entry, else the global one. `Ok(None)` without a key or without an entry.
    pub async fn lookup(
        &self,
        tenant: &str,
        host: &str,
    ) -> Result<Option<RegistryCredentials>, StoreError> {
        let Some(key) = &self.key else {
            return Ok(None);
        };
        let row: Option<SealedRow> = sqlx::query_as(
            "SELECT tenant_id, username, nonce, ciphertext, key_id
               FROM highway.registry_credentials
              WHERE host = $2 AND (tenant_id = $1 OR tenant_id IS NULL)
              ORDER BY tenant_id NULLS LAST
              LIMIT 1",
        )
        .bind(tenant)
        .bind(host)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let scope = if row.tenant_id.is_some() {
            Source::Tenant
        } else {
            Source::Global
        };
        let aad = aad(row.tenant_id.as_deref(), host, &row.username);
        let password = open_by_id(
            key,
            &self.old,
            &row.key_id,
            (&aad.0, &aad.1),
            &row.nonce,
            &row.ciphertext,
        )
        .ok_or_else(|| StoreError::Decrypt {
            host: host.to_string(),
            scope,
            key_id: row.key_id,
        })?;
        let username = row.username;
        Ok(Some(RegistryCredentials {
            server: host.to_string(),
            username: Some(username),
            password: Some(password),
            identity_token: None,
            source: scope,
        }))
    }
}

/// The audit row of a change, in the change's transaction: the host and the username,
/// never the password. `tenant` NULL for a global entry.
async fn audit(
    tx: &mut sqlx::PgConnection,
    tenant: Option<&str>,
    actor: &str,
    action: &str,
    host: &str,
    details: serde_json::Value,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO highway.audit_log (tenant_id, actor, action, target, outcome, details)
         VALUES ($1, $2, $3, $4, 'ok', $5)",
    )
    .bind(tenant)
    .bind(actor)
    .bind(action)
    .bind(host)
    .bind(details)
    .execute(tx)
    .await?;
    Ok(())
}

/// Why no credentials could be looked up for a pull. Never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// A stored row this worker's key cannot open: a misconfiguration, not "absent"
    /// (falling back to the file would silently use other credentials). Not retried.
    #[error(transparent)]
    Undecryptable(StoreError),
    /// Postgres could not be read: retried.
    #[error("registry credentials table: {0}")]
    Db(sqlx::Error),
}

/// The lookup of every pull: the tenant's stored entry for the image's registry, then
/// the global stored entry, then the `--docker-config` file (stored entries win over
/// the file). Without a secrets key the table is not read.
#[derive(Debug, Clone, Default)]
pub struct RegistryAuth {
    store: Option<RegistryStore>,
    file: Option<DockerConfigFile>,
}

impl RegistryAuth {
    pub fn new(store: Option<RegistryStore>, file: Option<DockerConfigFile>) -> Self {
        Self { store, file }
    }

    pub fn file(&self) -> Option<&DockerConfigFile> {
        self.file.as_ref()
    }

    /// The credentials to send with a pull of `image` by `tenant`; `None`: pull without.
    pub async fn for_image(
        &self,
        tenant: &str,
        image: &str,
    ) -> Result<Option<RegistryCredentials>, LookupError> {
        let host = registry_of_image(image);
        if let Some(store) = &self.store {
            match store.lookup(tenant, &host).await {
                Ok(Some(c)) => return Ok(Some(c)),
                Ok(None) => {}
                Err(StoreError::Db(e)) => return Err(LookupError::Db(e)),
                Err(e) => return Err(LookupError::Undecryptable(e)),
            }
        }
        Ok(self.file.as_ref().and_then(|f| f.get(&host)).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_without_echoing_the_password() {
        assert_eq!(
            check_entry(None, "docker.io", "u", "p").unwrap(),
            crate::docker::registry_auth::DOCKER_HUB
        );
        assert!(matches!(
            check_entry(None, "h", "a:b", "p"),
            Err(StoreError::BadUsername)
        ));
        let e = check_entry(Some("t"), "h", "u", "pw\nwith-newline").unwrap_err();
        assert!(!e.to_string().contains("with-newline"));
        assert!(matches!(
            check_entry(Some(""), "h", "u", "p"),
            Err(StoreError::BadTenant)
        ));
    }

    #[test]
    fn ciphertexts_are_bound_to_scope_host_and_user() {
        let k = SecretsKey::parse(&"11".repeat(32)).unwrap();
        let (a, b) = aad(Some("t1"), "h:5000", "u");
        let (n, ct) = k.seal(&a, &b, "pw-canary");
        assert_eq!(k.open(&a, &b, &n, &ct).unwrap().expose(), "pw-canary");
        for (t, h, u) in [
            (None, "h:5000", "u"),
            (Some("t2"), "h:5000", "u"),
            (Some("t1"), "h", "u"),
            (Some("t1"), "h:5000", "v"),
        ] {
            let (a2, b2) = aad(t, h, u);
            assert!(k.open(&a2, &b2, &n, &ct).is_none(), "{t:?} {h} {u}");
        }
    }
}
