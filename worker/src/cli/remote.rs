//! The HTTP client of every client command (`activity`, `run`, `container`, `token`,
//! ...): where the API is, the bearer token, JSON calls with the API's error bodies
//! turned into readable errors, and the server-sent-events reader of the log stream.
//!
//! The token comes from `HIGHWAY_TOKEN` or from a file (`--token-file` /
//! `HIGHWAY_TOKEN_FILE`), never from argv (other users see a process's arguments), and
//! is never printed: not in errors, not in `--help`, not in debug output.
//!
//! Zero-config next to a local `highway up`: it writes an admin token to
//! `<state-dir>/admin.token` (mode 0600) and its address to `<state-dir>/api.url`
//! ([`write_local_access`]); without a token or an API URL, the CLI falls back to those
//! files, under the same state dir (`--state-dir` / `HIGHWAY_STATE_DIR`, default
//! `./.highway`) through which server commands find `highway up`'s database.

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::Value;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The local admin token `highway up` writes under its state dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The API's base URL `highway up` writes under its state dir while it runs.
pub const API_URL_FILE: &str = "api.url";
/// Where the API is when neither HIGHWAY_API_URL nor `<state-dir>/api.url` says.
pub const DEFAULT_API_URL: &str = "http://127.0.0.1:8080";

/// The state dir of this invocation (`--state-dir` is a global flag parsed with the
/// database settings; the `highway` entry point records it here once).
static STATE_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Records the invocation's state dir for the zero-config fallbacks.
pub fn set_state_dir(dir: PathBuf) {
    let _ = STATE_DIR.set(dir);
}

fn state_dir() -> PathBuf {
    STATE_DIR.get().cloned().unwrap_or_else(|| {
        std::env::var_os("HIGHWAY_STATE_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".highway"))
    })
}

/// Where the API is and how to find the token.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Base URL of the Highway API [default: `<state-dir>/api.url` when a local
    /// `highway up` wrote it, else http://127.0.0.1:8080].
    #[arg(long, env = "HIGHWAY_API_URL")]
    pub api_url: Option<String>,

    /// A file holding the API token (used when HIGHWAY_TOKEN is not set; without either,
    /// `<state-dir>/admin.token`). There is no flag for the token itself: arguments are
    /// visible to every user of the machine.
    #[arg(long, env = "HIGHWAY_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// A bearer token that never shows itself in `Debug` output.
#[derive(Clone)]
pub struct Token(String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// `HIGHWAY_TOKEN`, else the token file, else the local `highway up`'s admin token
    /// file; an error says where to put one.
    pub fn resolve(args: &RemoteArgs) -> anyhow::Result<Token> {
        Self::resolve_in(args, &state_dir())
    }

    fn resolve_in(args: &RemoteArgs, state_dir: &Path) -> anyhow::Result<Token> {
        if let Ok(t) = std::env::var("HIGHWAY_TOKEN") {
            let t = t.trim().to_string();
            if !t.is_empty() {
                return Ok(Token(t));
            }
        }
        if let Some(path) = &args.token_file {
            return read_token_file(path);
        }
        let local = state_dir.join(ADMIN_TOKEN_FILE);
        if local.is_file() {
            return read_token_file(&local);
        }
        bail!(
            "no API token: set HIGHWAY_TOKEN, or HIGHWAY_TOKEN_FILE / --token-file to a file \
             holding one (an admin creates one with `highway token create`; the first admin \
             token comes from `highway up` or `highway bootstrap-token`); no local `highway up` \
             token at {}",
            local.display()
        )
    }
}

fn read_token_file(path: &Path) -> anyhow::Result<Token> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("reading the token file {}", path.display()))?;
    warn_if_readable_by_others(path);
    let t = raw.trim().to_string();
    if t.is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(Token(t))
}

/// HIGHWAY_API_URL / `--api-url`, else `<state-dir>/api.url`, else the default.
fn resolve_api_url(args: &RemoteArgs, state_dir: &Path) -> String {
    if let Some(u) = args
        .api_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty())
    {
        return u.to_string();
    }
    std::fs::read_to_string(state_dir.join(API_URL_FILE))
        .ok()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_API_URL.to_string())
}

/// What [`write_local_access`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalAccess {
    /// A new admin token was created (and written) at this start.
    pub token_created: bool,
}

/// `highway up`'s zero-config: writes `<state_dir>/api.url` (where the server listens,
/// loopback when it listens on every address; `https://` when `https`), and creates an admin token into
/// `<state_dir>/admin.token` (mode 0600) unless that file already holds a token this
/// database knows. A revoked local token is left alone (and the CLI gets 401): an
/// operator's revoke must not be undone by a restart.
pub async fn write_local_access(
    pool: &sqlx::PgPool,
    state_dir: &Path,
    listen: SocketAddr,
    https: bool,
) -> anyhow::Result<LocalAccess> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("creating the state dir {}", state_dir.display()))?;
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    let scheme = if https { "https" } else { "http" };
    write_private(
        &state_dir.join(API_URL_FILE),
        &format!("{scheme}://{addr}\n"),
    )?;

    let path = state_dir.join(ADMIN_TOKEN_FILE);
    let existing = std::fs::read_to_string(&path)
        .ok()
        .map(|t| t.trim().to_string());
    if let Some(t) = existing.filter(|t| !t.is_empty()) {
        let known = crate::api::store::token_known(pool, &crate::api::store::token_hash(&t))
            .await
            .context("looking up the local admin token")?;
        if known {
            return Ok(LocalAccess {
                token_created: false,
            });
        }
    }
    let (_, token) = crate::api::store::create_token(pool, "highway-up-local", None)
        .await
        .context("creating the local admin token")?;
    write_private(&path, &format!("{token}\n"))?;
    Ok(LocalAccess {
        token_created: true,
    })
}

/// Writes `text` to `path` with mode 0600 from the first byte (a temporary file renamed
/// into place, so a reader never sees half a token and no other user ever can read it).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    // A leftover of a crashed write keeps its mode through `truncate`: start afresh.
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn warn_if_readable_by_others(path: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by other users; `chmod 600` it",
                path.display()
            );
        }
    }
}

/// A client of the API.
#[derive(Debug, Clone)]
pub struct Remote {
    base: String,
    token: Token,
    http: reqwest::Client,
}

impl Remote {
    pub fn new(args: &RemoteArgs) -> anyhow::Result<Self> {
        let state = state_dir();
        let token = Token::resolve_in(args, &state)?;
        let http = http_client()?;
        Ok(Self {
            base: resolve_api_url(args, &state)
                .trim_end_matches('/')
                .to_string(),
            token,
            http,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token.0)
    }

    /// GET returning JSON; API errors become `anyhow` errors with code and message.
    pub async fn get_json(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let resp = self
            .request(reqwest::Method::GET, path)
            .query(query)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        json_or_error(resp).await
    }

    /// POST with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .request(reqwest::Method::POST, path)
            .json(body)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        json_or_error(resp).await
    }

    /// Any method (PUT, PATCH, DELETE, ...) with an optional JSON body.
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self.request(method, path).timeout(Duration::from_secs(30));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| self.transport_error(e))?;
        json_or_error(resp).await
    }

    fn transport_error(&self, e: reqwest::Error) -> anyhow::Error {
        // reqwest errors carry the URL (never the token: it is a header); the cause (a
        // refused connection, a certificate not signed by a trusted CA) is in the chain.
        let mut text = e.to_string();
        let mut cur = std::error::Error::source(&e);
        while let Some(c) = cur {
            let part = c.to_string();
            if !text.contains(&part) {
                text = format!("{text}: {part}");
            }
            cur = c.source();
        }
        anyhow::anyhow!(
            "cannot reach the Highway API at {} (HIGHWAY_API_URL): {text}",
            self.base
        )
    }

    /// Follows an SSE endpoint, calling `on_event(event, id, data)` per event, and
    /// reconnecting with `Last-Event-ID` when the connection drops. Returns when
    /// `on_event` returns `false` (the `end` event) or reconnecting keeps failing.
    pub async fn follow_sse(
        &self,
        path: &str,
        query: &[(&str, String)],
        mut last_id: Option<String>,
        mut on_event: impl FnMut(&str, Option<&str>, &str) -> bool,
    ) -> anyhow::Result<()> {
        let mut failures = 0u32;
        loop {
            let mut req = self
                .request(reqwest::Method::GET, path)
                .query(query)
                .header(reqwest::header::ACCEPT, "text/event-stream");
            if let Some(id) = &last_id {
                req = req.header("Last-Event-ID", id);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) if failures < 5 => {
                    failures += 1;
                    eprintln!("# connection lost ({e}); reconnecting");
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(failures))).await;
                    continue;
                }
                Err(e) => return Err(self.transport_error(e)),
            };
            if !resp.status().is_success() {
                return Err(json_or_error(resp).await.unwrap_err());
            }
            failures = 0;
            let mut parser = SseParser::default();
            let mut body = resp.bytes_stream();
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else { break };
                for ev in parser.push(&chunk) {
                    if let Some(id) = &ev.id {
                        last_id = Some(id.clone());
                    }
                    if !on_event(&ev.event, ev.id.as_deref(), &ev.data) {
                        return Ok(());
                    }
                }
            }
            // The stream ended without an `end` event: the server went away. Resume.
            failures += 1;
            if failures > 5 {
                bail!("the log stream keeps dropping; giving up");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// The HTTP client of every API command: system roots, plus the CA certificates of the
/// PEM file `HIGHWAY_API_CA` names (an API served with a private CA's certificate).
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .use_rustls_tls();
    if let Some(path) = std::env::var_os("HIGHWAY_API_CA").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        let pem = std::fs::read(&path)
            .with_context(|| format!("HIGHWAY_API_CA: cannot read {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("HIGHWAY_API_CA: {} is not PEM", path.display()))?;
        if certs.is_empty() {
            bail!("HIGHWAY_API_CA: {} holds no certificate", path.display());
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("building the HTTP client")
}

async fn json_or_error(resp: reqwest::Response) -> anyhow::Result<Value> {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let code = body["error"]["code"].as_str().unwrap_or("error");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    match status.as_u16() {
        401 => bail!("API refused the token (401 {code}): check HIGHWAY_TOKEN / the token file"),
        _ => bail!("API error {} {code}: {msg}", status.as_u16()),
    }
}

/// One server-sent event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// An incremental `text/event-stream` parser (lines may split across chunks).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    cur: SseEvent,
    has_data: bool,
}

impl SseParser {
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if self.has_data {
                    let mut ev = std::mem::take(&mut self.cur);
                    if ev.event.is_empty() {
                        ev.event = "message".into();
                    }
                    out.push(ev);
                }
                self.cur = SseEvent::default();
                self.has_data = false;
                continue;
            }
            if line.starts_with(':') {
                continue; // keep-alive comment
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.cur.event = value.to_string(),
                "id" => self.cur.id = Some(value.to_string()),
                "data" => {
                    if self.has_data {
                        self.cur.data.push('\n');
                    }
                    self.cur.data.push_str(value);
                    self.has_data = true;
                }
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_handles_split_chunks_and_comments() {
        let mut p = SseParser::default();
        assert!(p.push(b": keep-alive\n\nevent: log\nid: 4").is_empty());
        let evs = p.push(b"2\ndata: {\"a\":1}\n\nevent: end\ndata: x\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "log".into(),
                    id: Some("42".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: "end".into(),
                    id: None,
                    data: "x".into()
                },
            ]
        );
    }

    fn args(api_url: Option<&str>) -> RemoteArgs {
        RemoteArgs {
            api_url: api_url.map(str::to_owned),
            token_file: None,
        }
    }

    #[test]
    fn api_url_from_the_flag_then_the_state_dir_then_the_default() {
        let dir = std::env::temp_dir().join(format!("highway-remote-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(resolve_api_url(&args(None), &dir), DEFAULT_API_URL);
        write_private(&dir.join(API_URL_FILE), "http://127.0.0.1:9999\n").unwrap();
        assert_eq!(resolve_api_url(&args(None), &dir), "http://127.0.0.1:9999");
        assert_eq!(
            resolve_api_url(&args(Some("http://h:1")), &dir),
            "http://h:1"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_files_are_0600_even_over_a_readable_leftover() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("highway-remote-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(ADMIN_TOKEN_FILE);
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "new\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token("hw_secret".into());
        assert_eq!(format!("{t:?}"), "Token(***)");
    }
}
