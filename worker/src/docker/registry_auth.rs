//! Credentials for private registries, as the pulls see them: which registry an image
//! reference names (docker's rules), the plain [`RegistryCredentials`] handed down to the
//! Docker client for one pull, and the Docker `config.json` of `--docker-config`. The
//! stored entries and the lookup of every pull are `registry_store`'s.
//!
//! Owns: host normalisation (`https://index.docker.io/v1/` for Docker Hub, `host[:port]`
//! otherwise, as the docker CLI keys its `auths`) and the config file format.
//! Must not: log, print or format a password, an `auth` string or an identity token:
//! they live in [`SecretValue`]s (whose `Debug` is `***`) and every error names only the
//! file, the registry host and the field.

use crate::docker::secrets::SecretValue;
use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The key docker uses for Docker Hub in `config.json` and in `serveraddress`.
pub const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// Where a pull's credentials came from (said in errors, never the values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Stored for the pulling tenant.
    Tenant,
    /// Stored for every tenant.
    Global,
    /// The Docker `config.json` of `--docker-config`.
    DockerConfig,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Tenant => "stored for the tenant",
            Source::Global => "stored globally",
            Source::DockerConfig => "from --docker-config",
        })
    }
}

/// The credentials of one registry for one pull. Plain data: the Docker client turns it
/// into the Engine API's `X-Registry-Auth`. `Debug` never shows a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredentials {
    /// Normalised host ([`normalize_host`]): the `serveraddress` sent to the daemon.
    pub server: String,
    pub username: Option<String>,
    pub password: Option<SecretValue>,
    /// An OAuth refresh token (`identitytoken` of `config.json`), instead of a password.
    pub identity_token: Option<SecretValue>,
    pub source: Source,
}

impl fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// A registry host that cannot be used. Never holds a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("registry host {host:?} is invalid: {reason}")]
pub struct HostError {
    pub host: String,
    pub reason: &'static str,
}

/// `docker.io`, `index.docker.io`, `registry-1.docker.io` (with or without a scheme or a
/// path) are Docker Hub, keyed [`DOCKER_HUB`]; anything else loses its scheme and path
/// and is lowercased to `host[:port]`, as the docker CLI normalises `auths` keys.
pub fn normalize_host(raw: &str) -> Result<String, HostError> {
    let bad = |reason| HostError {
        host: raw.chars().take(255).collect(),
        reason,
    };
    let t = raw.trim();
    let t = t
        .strip_prefix("https://")
        .or_else(|| t.strip_prefix("http://"))
        .unwrap_or(t);
    let host = t.split('/').next().unwrap_or("").to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad("empty"));
    }
    if host.len() > 255 {
        return Err(bad("longer than 255 characters"));
    }
    if matches!(
        host.as_str(),
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        return Ok(DOCKER_HUB.to_string());
    }
    let (name, port) = match host.strip_prefix('[') {
        // An IPv6 literal: `[::1]:5000`.
        Some(rest) => {
            let (addr, after) = rest.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                return Err(bad("not an IPv6 address inside [ ]"));
            }
            match after {
                "" => (None, None),
                p => (
                    None,
                    Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?),
                ),
            }
        }
        None => match host.rsplit_once(':') {
            Some((n, p)) => (Some(n), Some(p)),
            None => (Some(host.as_str()), None),
        },
    };
    if let Some(n) = name {
        if n.is_empty()
            || n.starts_with(['-', '.'])
            || n.ends_with(['-', '.'])
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return Err(bad(
                "a host name has only letters, digits, '.' and '-' (and an optional :port)",
            ));
        }
    }
    if let Some(p) = port {
        if !p.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(bad("the port must be 1..=65535"));
        }
    }
    Ok(host)
}

/// The registry an image reference pulls from, normalised: the first path component
/// when it looks like a host (has a `.` or a `:`, is `localhost`, or has an uppercase
/// letter, which a repository name cannot), Docker Hub otherwise.
pub fn registry_of_image(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            normalize_host(first).unwrap_or_else(|_| first.to_ascii_lowercase())
        }
        _ => DOCKER_HUB.to_string(),
    }
}

/// A `config.json` that cannot be used. Names the file and the entry, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("docker config {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("docker config {path}: not a docker config.json: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("docker config {path}: auths.{key:?}: {reason}")]
    Entry {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

#[derive(serde::Deserialize)]
struct FileShape {
    #[serde(default)]
    auths: BTreeMap<String, EntryShape>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<serde_json::Value>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: Option<serde_json::Value>,
}

/// One `auths` entry. Other keys docker writes (`email`, ...) are ignored.
#[derive(serde::Deserialize)]
struct EntryShape {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The `auths` of a Docker `config.json`, by normalised host.
#[derive(Clone, Default)]
pub struct DockerConfigFile {
    path: PathBuf,
    entries: BTreeMap<String, RegistryCredentials>,
    /// The file names a credential helper or store, which the worker does not run.
    pub uses_helpers: bool,
}

impl fmt::Debug for DockerConfigFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerConfigFile")
            .field("path", &self.path)
            .field("hosts", &self.entries.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl DockerConfigFile {
    /// Reads and checks the file: every `auths` entry must give `auth` (base64 of
    /// `user:password`), `username` + `password`, or `identitytoken`; an entry with none
    /// (docker leaves `{}` when a credential store holds the secret) is skipped.
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, ConfigFileError> {
        // serde_json's messages can quote a value; only its position is kept.
        let shape: FileShape =
            serde_json::from_slice(text).map_err(|e| ConfigFileError::Format {
                path: path.to_path_buf(),
                reason: format!(
                    "invalid JSON or shape at line {} column {}",
                    e.line(),
                    e.column()
                ),
            })?;
        let mut entries = BTreeMap::new();
        for (key, e) in shape.auths {
            let entry_err = |reason: &str| ConfigFileError::Entry {
                path: path.to_path_buf(),
                key: key.clone(),
                reason: reason.to_string(),
            };
            let server = normalize_host(&key).map_err(|h| entry_err(h.reason))?;
            let (mut username, mut password) = (e.username, e.password.map(SecretValue::new));
            if let Some(auth) = e.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| entry_err("`auth` is not base64 of user:password"))?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| entry_err("`auth` is not base64 of user:password"))?;
                username = Some(u.to_string());
                password = Some(SecretValue::new(p));
            }
            let identity_token = e
                .identitytoken
                .filter(|t| !t.is_empty())
                .map(SecretValue::new);
            let username = username.filter(|u| !u.is_empty());
            let password = password.filter(|p| !p.expose().is_empty());
            if identity_token.is_none() && password.is_none() {
                if username.is_some() {
                    return Err(entry_err("`username` without `password`"));
                }
                continue;
            }
            entries.insert(
                server.clone(),
                RegistryCredentials {
                    server,
                    username,
                    password,
                    identity_token,
                    source: Source::DockerConfig,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            entries,
            uses_helpers: shape.creds_store.is_some() || shape.cred_helpers.is_some(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hosts it has credentials for.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn get(&self, host: &str) -> Option<&RegistryCredentials> {
        self.entries.get(host)
    }
}

/// The error text of a pull the registry refused (unauthorized): which registry, and
/// whether credentials were sent and where they came from; never their values.
pub fn refusal_text(image: &str, creds: Option<&RegistryCredentials>, daemon: &str) -> String {
    let host = registry_of_image(image);
    let why = match creds {
        None => format!(
            "no credentials are configured for {host} (highway registry add, or \
             --docker-config)"
        ),
        Some(c) => format!(
            "the credentials {} for {host} (user {:?}) were refused",
            c.source,
            c.username.as_deref().unwrap_or("-")
        ),
    };
    format!("pulling {image} failed: unauthorized: {why}; the daemon said: {daemon}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised_like_docker() {
        for hub in [
            "docker.io",
            "https://index.docker.io/v1/",
            "index.docker.io",
            "registry-1.docker.io",
        ] {
            assert_eq!(normalize_host(hub).unwrap(), DOCKER_HUB, "{hub}");
        }
        assert_eq!(
            normalize_host("https://Registry.Example.com:5000/v2/").unwrap(),
            "registry.example.com:5000"
        );
        assert_eq!(normalize_host("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(normalize_host("[::1]:5000").unwrap(), "[::1]:5000");
        assert!(normalize_host("").is_err());
        assert!(normalize_host("a b").is_err());
        assert!(normalize_host("host:0").is_err());
        assert!(normalize_host("host:99999").is_err());
        assert!(normalize_host("-bad").is_err());
    }

    #[test]
    fn image_references_name_their_registry() {
        assert_eq!(registry_of_image("busybox:1"), DOCKER_HUB);
        assert_eq!(registry_of_image("library/busybox:1"), DOCKER_HUB);
        assert_eq!(registry_of_image("highway-test/busybox:1"), DOCKER_HUB);
        assert_eq!(registry_of_image("docker.io/library/busybox"), DOCKER_HUB);
        assert_eq!(
            registry_of_image("127.0.0.1:5000/priv/x:1"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_of_image("localhost/x"), "localhost");
        assert_eq!(registry_of_image("ghcr.io/o/x@sha256:ab"), "ghcr.io");
    }

    #[test]
    fn config_json_entries() {
        let auth = base64::engine::general_purpose::STANDARD.encode("u1:p:w1");
        let text = format!(
            r#"{{"auths": {{
                "https://index.docker.io/v1/": {{"auth": "{auth}", "email": "x"}},
                "http://Reg.example:5000/v2/": {{"username": "u2", "password": "p2"}},
                "ghcr.io": {{"identitytoken": "tok"}},
                "helper.example": {{}}
              }}, "credsStore": "desktop"}}"#
        );
        let f = DockerConfigFile::parse(Path::new("c.json"), text.as_bytes()).unwrap();
        let hub = f.get(DOCKER_HUB).unwrap();
        assert_eq!(hub.username.as_deref(), Some("u1"));
        assert_eq!(hub.password.as_ref().unwrap().expose(), "p:w1");
        assert_eq!(
            f.get("reg.example:5000")
                .unwrap()
                .password
                .as_ref()
                .unwrap()
                .expose(),
            "p2"
        );
        assert_eq!(
            f.get("ghcr.io")
                .unwrap()
                .identity_token
                .as_ref()
                .unwrap()
                .expose(),
            "tok"
        );
        assert!(f.get("helper.example").is_none());
        assert!(f.uses_helpers);
        let dbg = format!("{f:?} {hub:?}");
        assert!(!dbg.contains("p:w1") && !dbg.contains(&auth), "{dbg}");
    }

    #[test]
    fn bad_config_json_names_the_entry_not_the_value() {
        let e = DockerConfigFile::parse(
            Path::new("c.json"),
            br#"{"auths": {"reg.example": {"auth": "c2VjcmV0LW5vLWNvbG9u"}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("reg.example") && e.contains("auth"), "{e}");
        assert!(
            !e.contains("secret-no-colon") && !e.contains("c2VjcmV0"),
            "{e}"
        );
        let e = DockerConfigFile::parse(
            Path::new("c.json"),
            br#"{"auths": {"reg.example": {"auth": 12345678}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(!e.contains("12345678"), "{e}");
    }
}
