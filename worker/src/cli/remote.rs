//! The HTTP client of CLI commands that talk to the API (`containers`, `activities
//! logs`): where the API is, the bearer token, JSON calls with the API's error bodies
//! turned into readable errors, and the server-sent-events reader of the log stream.
//!
//! The token comes from `HIGHWAY_TOKEN` or from a file (`--token-file` /
//! `HIGHWAY_TOKEN_FILE`), never from argv (other users see a process's arguments), and
//! is never printed: not in errors, not in `--help`, not in debug output.

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Where the API is and how to find the token.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Base URL of the Highway API.
    #[arg(long, env = "HIGHWAY_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,

    /// A file holding the API token (used when HIGHWAY_TOKEN is not set). There is no
    /// flag for the token itself: arguments are visible to every user of the machine.
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
    /// `HIGHWAY_TOKEN`, else the token file; an error says where to put one.
    pub fn resolve(args: &RemoteArgs) -> anyhow::Result<Token> {
        if let Ok(t) = std::env::var("HIGHWAY_TOKEN") {
            let t = t.trim().to_string();
            if !t.is_empty() {
                return Ok(Token(t));
            }
        }
        if let Some(path) = &args.token_file {
            let raw = std::fs::read_to_string(path)
                .with_context(|| format!("reading the token file {}", path.display()))?;
            warn_if_readable_by_others(path);
            let t = raw.trim().to_string();
            if t.is_empty() {
                bail!("the token file {} is empty", path.display());
            }
            return Ok(Token(t));
        }
        bail!(
            "no API token: set HIGHWAY_TOKEN, or HIGHWAY_TOKEN_FILE / --token-file to a file \
             holding one (create one with `highway tokens create`)"
        )
    }
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
        let token = Token::resolve(args)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: args.api_url.trim_end_matches('/').to_string(),
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
        // reqwest errors carry the URL (never the token: it is a header).
        anyhow::anyhow!(
            "cannot reach the Highway API at {} (HIGHWAY_API_URL): {e}",
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

    #[test]
    fn token_debug_is_redacted() {
        let t = Token("hw_secret".into());
        assert_eq!(format!("{t:?}"), "Token(***)");
    }
}
