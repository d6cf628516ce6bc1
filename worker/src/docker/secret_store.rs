//! The tenant secrets store: `highway.secrets`, encrypted at rest with ChaCha20-Poly1305
//! under the worker's `HIGHWAY_SECRETS_KEY`, and [`TableSecretResolver`], the
//! [`SecretResolver`] the run handler uses (table first, then the worker's environment).
//!
//! Key rotation: `HIGHWAY_SECRETS_KEY_OLD` lists previous keys (comma separated) that
//! still decrypt the rows they wrote (each row records its key id), and
//! [`SecretStore::rotate`] re-encrypts every row under the current key, in one
//! transaction, after which the old keys can be dropped.
//!
//! Owns: the key format, the encryption (a random 96-bit nonce per write; the tenant and
//! the name are the associated data, so a ciphertext copied to another row or tenant does
//! not decrypt), and all SQL on `highway.secrets`.
//! Must not: log, print, format or return a plaintext value except through
//! [`SecretValue`] (whose `Debug` is `***`). Errors never carry a value.

use crate::docker::secrets::{
    validate_name, EnvSecretResolver, SecretError, SecretResolver, SecretValue,
};
use async_trait::async_trait;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use sha2::Digest as _;
use sqlx::PgPool;
use std::fmt;

/// The environment variable holding the key (32 bytes, hex or base64).
pub const KEY_ENV: &str = "HIGHWAY_SECRETS_KEY";
/// Previous keys, comma separated, that still decrypt (during a rotation).
pub const OLD_KEYS_ENV: &str = "HIGHWAY_SECRETS_KEY_OLD";
/// Largest secret value accepted (the store is for credentials, not files).
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Why the store refused or failed. Never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{KEY_ENV} is not set: the secrets store is disabled")]
    NoKey,
    #[error("{KEY_ENV} must be 32 bytes as 64 hex digits or base64")]
    BadKey,
    #[error("{OLD_KEYS_ENV}: entry {index} must be 32 bytes as 64 hex digits or base64")]
    BadOldKey { index: usize },
    #[error(transparent)]
    Name(#[from] SecretError),
    #[error("tenant id must be 1..=128 characters")]
    BadTenant,
    #[error("secret value must be 1..={MAX_VALUE_BYTES} bytes of UTF-8")]
    BadValue,
    #[error(
        "secret {name:?} of tenant {tenant:?} cannot be decrypted with this key (key id {key_id})"
    )]
    Decrypt {
        tenant: String,
        name: String,
        key_id: String,
    },
    #[error("secrets table: {0}")]
    Db(#[from] sqlx::Error),
}

/// The 32-byte key. `Debug` shows only its id.
#[derive(Clone)]
pub struct SecretsKey {
    key: Key,
    id: String,
}

impl fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretsKey(id {})", self.id)
    }
}

impl SecretsKey {
    /// Parses 64 hex digits or base64 (standard or URL-safe, padded or not) of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let t = text.trim();
        let bytes = if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(t).map_err(|_| StoreError::BadKey)?
        } else {
            let engines = [
                base64::engine::general_purpose::STANDARD,
                base64::engine::general_purpose::STANDARD_NO_PAD,
                base64::engine::general_purpose::URL_SAFE,
                base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            engines
                .iter()
                .find_map(|e| e.decode(t).ok())
                .ok_or(StoreError::BadKey)?
        };
        if bytes.len() != 32 {
            return Err(StoreError::BadKey);
        }
        let digest = sha2::Sha256::digest(&bytes);
        Ok(Self {
            key: *Key::from_slice(&bytes),
            id: hex::encode(&digest[..4]),
        })
    }

    /// From `HIGHWAY_SECRETS_KEY`; `Ok(None)` when unset.
    pub fn from_env() -> Result<Option<Self>, StoreError> {
        match std::env::var(KEY_ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v).map(Some),
            _ => Ok(None),
        }
    }

    /// From `HIGHWAY_SECRETS_KEY_OLD` (comma separated; empty entries ignored).
    pub fn old_from_env() -> Result<Vec<Self>, StoreError> {
        Self::parse_list(&std::env::var(OLD_KEYS_ENV).unwrap_or_default())
    }

    fn parse_list(text: &str) -> Result<Vec<Self>, StoreError> {
        text.split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, k)| Self::parse(k).map_err(|_| StoreError::BadOldKey { index: i + 1 }))
            .collect()
    }

    /// First 8 hex digits of SHA-256(key): which key encrypted a row.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn aad(tenant: &str, name: &str) -> Vec<u8> {
        let mut v = Vec::with_capacity(tenant.len() + name.len() + 1);
        v.extend_from_slice(tenant.as_bytes());
        v.push(0);
        v.extend_from_slice(name.as_bytes());
        v
    }

    /// (nonce, ciphertext) of `value` bound to `tenant`/`name`.
    pub fn seal(&self, tenant: &str, name: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        let cipher = ChaCha20Poly1305::new(&self.key);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::aad(tenant, name);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: value.as_bytes(),
                    aad: &aad,
                },
            )
            // Encryption fails only for messages beyond 256 GiB.
            .expect("chacha20poly1305 encrypt");
        (nonce.to_vec(), ct)
    }

    pub fn open(
        &self,
        tenant: &str,
        name: &str,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Option<SecretValue> {
        if nonce.len() != 12 {
            return None;
        }
        let cipher = ChaCha20Poly1305::new(&self.key);
        let aad = Self::aad(tenant, name);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()?;
        String::from_utf8(plain).ok().map(SecretValue::new)
    }
}

/// One row of `secrets ls`: never the value.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct SecretInfo {
    pub tenant_id: String,
    pub name: String,
    pub key_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `highway.secrets` with its key (which every write uses) and the previous keys that
/// still read.
#[derive(Debug, Clone)]
pub struct SecretStore {
    pool: PgPool,
    key: SecretsKey,
    old: Vec<SecretsKey>,
}

/// Opens a sealed value with the key whose id its row records, among the current key and
/// the previous ones (`HIGHWAY_SECRETS_KEY_OLD`); with no id matching (a row whose id was
/// lost), any key that opens it. `aad` is the pair of associated data it was sealed with.
pub fn open_by_id(
    current: &SecretsKey,
    old: &[SecretsKey],
    key_id: &str,
    aad: (&str, &str),
    nonce: &[u8],
    ct: &[u8],
) -> Option<SecretValue> {
    let keys = std::iter::once(current).chain(old);
    match keys.clone().find(|k| k.id() == key_id) {
        Some(k) => k.open(aad.0, aad.1, nonce, ct),
        None => keys.clone().find_map(|k| k.open(aad.0, aad.1, nonce, ct)),
    }
}

/// A stored row as [`SecretStore::rotate`] reads it: tenant, name, nonce, ciphertext, key id.
type SealedRow = (String, String, Vec<u8>, Vec<u8>, String);

/// What [`SecretStore::rotate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Rotated {
    /// Rows re-encrypted under the current key.
    pub reencrypted: u64,
    /// Rows that already were.
    pub current: u64,
}

fn check_tenant(tenant: &str) -> Result<(), StoreError> {
    if tenant.is_empty() || tenant.chars().count() > 128 {
        return Err(StoreError::BadTenant);
    }
    Ok(())
}

impl SecretStore {
    pub fn new(pool: PgPool, key: SecretsKey) -> Self {
        Self {
            pool,
            key,
            old: Vec::new(),
        }
    }

    /// Previous keys that still decrypt the rows they wrote.
    pub fn with_old_keys(mut self, old: Vec<SecretsKey>) -> Self {
        self.old = old;
        self
    }

    /// The plaintext of a row: opened by the key whose id it records.
    fn open_row(
        &self,
        tenant: &str,
        name: &str,
        nonce: &[u8],
        ct: &[u8],
        key_id: &str,
    ) -> Option<SecretValue> {
        open_by_id(&self.key, &self.old, key_id, (tenant, name), nonce, ct)
    }

    /// Re-encrypts every row not under the current key, in one transaction: all or none
    /// (a row no known key decrypts stops it, naming the row). Safe to run again, and
    /// while workers run (they read with the old keys until the commit, then with the new).
    pub async fn rotate(&self) -> Result<Rotated, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<SealedRow> = sqlx::query_as(
            "SELECT tenant_id, name, nonce, ciphertext, key_id FROM highway.secrets
              ORDER BY tenant_id, name FOR UPDATE",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut done = Rotated {
            reencrypted: 0,
            current: 0,
        };
        for (tenant, name, nonce, ct, key_id) in rows {
            if key_id == self.key.id() && self.key.open(&tenant, &name, &nonce, &ct).is_some() {
                done.current += 1;
                continue;
            }
            let value = self
                .open_row(&tenant, &name, &nonce, &ct, &key_id)
                .ok_or_else(|| StoreError::Decrypt {
                    tenant: tenant.clone(),
                    name: name.clone(),
                    key_id: key_id.clone(),
                })?;
            let (nonce, ct) = self.key.seal(&tenant, &name, value.expose());
            sqlx::query(
                "UPDATE highway.secrets SET nonce = $3, ciphertext = $4, key_id = $5
                  WHERE tenant_id = $1 AND name = $2",
            )
            .bind(&tenant)
            .bind(&name)
            .bind(nonce)
            .bind(ct)
            .bind(self.key.id())
            .execute(&mut *tx)
            .await?;
            done.reencrypted += 1;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// Creates or replaces a secret.
    pub async fn set(&self, tenant: &str, name: &str, value: &str) -> Result<(), StoreError> {
        check_tenant(tenant)?;
        validate_name(name)?;
        if value.is_empty() || value.len() > MAX_VALUE_BYTES {
            return Err(StoreError::BadValue);
        }
        let (nonce, ct) = self.key.seal(tenant, name, value);
        sqlx::query(
            "INSERT INTO highway.secrets (tenant_id, name, nonce, ciphertext, key_id)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant_id, name) DO UPDATE
                SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext,
                    key_id = EXCLUDED.key_id, updated_at = now()",
        )
        .bind(tenant)
        .bind(name)
        .bind(nonce)
        .bind(ct)
        .bind(self.key.id())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes a secret; false when there was none.
    pub async fn remove(&self, tenant: &str, name: &str) -> Result<bool, StoreError> {
        check_tenant(tenant)?;
        validate_name(name)?;
        let r = sqlx::query("DELETE FROM highway.secrets WHERE tenant_id = $1 AND name = $2")
            .bind(tenant)
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Names and metadata (never values), of one tenant or all.
    pub async fn list(&self, tenant: Option<&str>) -> Result<Vec<SecretInfo>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT tenant_id, name, key_id, created_at, updated_at FROM highway.secrets
              WHERE $1::text IS NULL OR tenant_id = $1
              ORDER BY tenant_id, name",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The value, `Ok(None)` when the tenant has no such secret.
    pub async fn get(&self, tenant: &str, name: &str) -> Result<Option<SecretValue>, StoreError> {
        validate_name(name)?;
        let row: Option<(Vec<u8>, Vec<u8>, String)> = sqlx::query_as(
            "SELECT nonce, ciphertext, key_id FROM highway.secrets
              WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        match row {
            None => Ok(None),
            Some((nonce, ct, key_id)) => self
                .open_row(tenant, name, &nonce, &ct, &key_id)
                .map(Some)
                .ok_or_else(|| StoreError::Decrypt {
                    tenant: tenant.into(),
                    name: name.into(),
                    key_id,
                }),
        }
    }
}

/// The table first (per tenant), then the worker's environment ([`EnvSecretResolver`],
/// shared by every tenant). Without a key only the environment is used.
#[derive(Debug, Clone)]
pub struct TableSecretResolver {
    store: Option<SecretStore>,
    fallback: EnvSecretResolver,
}

impl TableSecretResolver {
    pub fn new(store: Option<SecretStore>, fallback: EnvSecretResolver) -> Self {
        Self { store, fallback }
    }

    /// The worker's resolver: `HIGHWAY_SECRETS_KEY` (if set, with the previous keys of
    /// `HIGHWAY_SECRETS_KEY_OLD`) and `HIGHWAY_SECRET_*`.
    pub fn from_env(pool: PgPool) -> Result<Self, StoreError> {
        let old = SecretsKey::old_from_env()?;
        let store = SecretsKey::from_env()?.map(|k| SecretStore::new(pool, k).with_old_keys(old));
        Ok(Self::new(store, EnvSecretResolver::new()))
    }
}

#[async_trait]
impl SecretResolver for TableSecretResolver {
    async fn resolve(&self, tenant_id: &str, name: &str) -> Result<SecretValue, SecretError> {
        validate_name(name)?;
        if let Some(store) = &self.store {
            match store.get(tenant_id, name).await {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                // A row we cannot decrypt is a misconfiguration, not "absent": falling
                // back to the environment would silently use another value.
                Err(e @ StoreError::Decrypt { .. }) => {
                    return Err(SecretError::Unavailable(e.to_string()))
                }
                Err(StoreError::Name(e)) => return Err(e),
                Err(e) => return Err(SecretError::Unavailable(e.to_string())),
            }
        }
        self.fallback.resolve(tenant_id, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_roundtrip_bound_to_tenant_and_name() {
        let k = SecretsKey::parse(&"11".repeat(32)).unwrap();
        let (n, ct) = k.seal("t1", "db", "hunter2");
        assert!(!ct.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(k.open("t1", "db", &n, &ct).unwrap().expose(), "hunter2");
        assert!(k.open("t2", "db", &n, &ct).is_none());
        assert!(k.open("t1", "other", &n, &ct).is_none());
        let k2 = SecretsKey::parse(&"22".repeat(32)).unwrap();
        assert!(k2.open("t1", "db", &n, &ct).is_none());
        assert!(!format!("{k:?}").contains("1111"));
    }

    #[test]
    fn key_formats() {
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            SecretsKey::parse(&b64).unwrap().id(),
            SecretsKey::parse(&"07".repeat(32)).unwrap().id()
        );
        assert!(SecretsKey::parse("short").is_err());
        assert!(SecretsKey::parse(&"0".repeat(62)).is_err());
        let old = SecretsKey::parse_list(&format!(" {},, {b64} ", "01".repeat(32))).unwrap();
        assert_eq!(old.len(), 2);
        let err = SecretsKey::parse_list(&format!("{},oops", "01".repeat(32))).unwrap_err();
        assert!(err.to_string().contains("entry 2"), "{err}");
        assert!(!err.to_string().contains("oops"), "{err}");
    }
}
