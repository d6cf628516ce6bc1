//! Container output: the attach reader task (bounded head + tail capture per stream for
//! the run result) and the log writer task (batched, capped inserts into
//! `highway.activity_logs`, announced with `NOTIFY highway_logs`).
//!
//! Owns: the `activity_logs` SQL and line handling (assembly, redaction, truncation).
//! Must not: ever let the reader wait on the database. The daemon applies backpressure
//! to a slow attached reader (F10, trap 12), so a stalled insert would stall the
//! container itself: the reader hands lines over with `try_send` and counts what
//! did not fit.
//!
//! Sequence numbers are `attempt << 32 | n`, so the lines of every attempt of an
//! activity are ordered and never collide, without reading the table first.

use crate::docker::client::AttachStream;
use crate::docker::secrets::Redactor;
use bollard::container::LogOutput;
use futures::StreamExt;
use serde_json::json;
use sqlx::PgPool;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The channel the NOTIFY goes to; the payload is the activity id.
pub const NOTIFY_CHANNEL: &str = "highway_logs";

/// Limits of output capture and storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// Bytes of each stream kept for the result: half from the start, half from the end.
    pub capture_bytes: usize,
    /// Longest stored line; longer lines are split.
    pub max_line_bytes: usize,
    /// Lines stored per attempt; past it one marker row, then nothing.
    pub max_stored_lines: u64,
    /// Lines buffered between the reader and the writer before lines are dropped.
    pub channel_lines: usize,
    /// Lines per insert, and the longest wait before a partial batch is written.
    pub batch_lines: usize,
    pub batch_interval: Duration,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            capture_bytes: 1024 * 1024,
            max_line_bytes: 16 * 1024,
            max_stored_lines: 10_000,
            channel_lines: 4096,
            batch_lines: 500,
            batch_interval: Duration::from_millis(200),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    System,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::System => "system",
        }
    }
}

/// One line on its way to the table (already redacted).
#[derive(Debug, Clone)]
pub struct LogLine {
    pub stream: Stream,
    pub line: String,
}

// ---------------------------------------------------------------------------------
// Capture for the result.

/// Keeps the first `cap/2` and the last `cap/2` bytes of a stream, in whole lines.
#[derive(Debug)]
struct Capture {
    half: usize,
    head: String,
    head_full: bool,
    tail: VecDeque<String>,
    tail_bytes: usize,
    /// Bytes cut out between head and tail.
    cut_bytes: u64,
    total_bytes: u64,
}

impl Capture {
    fn new(cap: usize) -> Self {
        Self {
            half: cap / 2,
            head: String::new(),
            head_full: false,
            tail: VecDeque::new(),
            tail_bytes: 0,
            cut_bytes: 0,
            total_bytes: 0,
        }
    }

    /// `line` includes its trailing newline when it had one.
    fn push(&mut self, line: &str) {
        self.total_bytes += line.len() as u64;
        if !self.head_full {
            if self.head.len() + line.len() <= self.half {
                self.head.push_str(line);
                return;
            }
            self.head_full = true;
        }
        if line.len() > self.half {
            // A single line bigger than the tail: keep its end only.
            self.cut_bytes += self.tail_bytes as u64;
            self.tail.clear();
            let mut start = line.len() - self.half;
            while !line.is_char_boundary(start) {
                start += 1;
            }
            self.cut_bytes += start as u64;
            self.tail.push_back(line[start..].to_string());
            self.tail_bytes = line.len() - start;
            return;
        }
        self.tail.push_back(line.to_string());
        self.tail_bytes += line.len();
        while self.tail_bytes > self.half {
            if let Some(old) = self.tail.pop_front() {
                self.tail_bytes -= old.len();
                self.cut_bytes += old.len() as u64;
            }
        }
    }

    fn truncated(&self) -> bool {
        self.cut_bytes > 0
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(self.head.len() + self.tail_bytes + 64);
        out.push_str(&self.head);
        if self.truncated() {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!(
                "[... {} bytes truncated by highway ...]\n",
                self.cut_bytes
            ));
        }
        for l in &self.tail {
            out.push_str(l);
        }
        out
    }
}

/// Splits a byte stream into lines of at most `max` bytes.
#[derive(Debug, Default)]
struct Assembler {
    buf: Vec<u8>,
}

impl Assembler {
    fn feed(&mut self, mut data: &[u8], max: usize, mut emit: impl FnMut(&[u8])) {
        while !data.is_empty() {
            match data.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    let (line, rest) = data.split_at(i + 1);
                    if self.buf.is_empty() && line.len() <= max {
                        emit(line);
                    } else {
                        self.buf.extend_from_slice(line);
                        self.flush_long(max, &mut emit);
                        if !self.buf.is_empty() {
                            emit(&self.buf);
                            self.buf.clear();
                        }
                    }
                    data = rest;
                }
                None => {
                    self.buf.extend_from_slice(data);
                    self.flush_long(max, &mut emit);
                    data = &[];
                }
            }
        }
    }

    fn flush_long(&mut self, max: usize, emit: &mut impl FnMut(&[u8])) {
        while self.buf.len() > max {
            let rest = self.buf.split_off(max);
            emit(&self.buf);
            self.buf = rest;
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.buf.is_empty() {
            emit(&self.buf);
            self.buf.clear();
        }
    }
}

/// What the reader captured for the result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub stdout: String,
    pub stderr: String,
    pub truncated: bool,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// Lines not handed to the writer because its channel was full.
    pub lines_dropped: u64,
    /// The attach stream failed (the error text); the capture may be incomplete.
    pub stream_error: Option<String>,
}

/// Handle of the attach reader task.
pub struct Reader {
    stop: CancellationToken,
    handle: JoinHandle<Captured>,
}

impl Reader {
    /// Starts draining `stream` at once (F10: never leave an attach unread).
    pub fn spawn(
        stream: AttachStream,
        redactor: Redactor,
        settings: &LogSettings,
        sink: Option<LogSender>,
    ) -> Self {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(read_loop(
            stream,
            redactor,
            settings.clone(),
            sink,
            stop.clone(),
        ));
        Self { stop, handle }
    }

    /// Waits up to `grace` for the stream to end by itself (it normally ends when the
    /// container exits), then stops it (bollard#251: it may never end) and returns
    /// what was captured.
    pub async fn finish(mut self, grace: Duration) -> Captured {
        if let Ok(res) = tokio::time::timeout(grace, &mut self.handle).await {
            return res.unwrap_or_else(|e| panicked(&e));
        }
        self.stop.cancel();
        match (&mut self.handle).await {
            Ok(c) => c,
            Err(e) => panicked(&e),
        }
    }
}

fn panicked(e: &tokio::task::JoinError) -> Captured {
    Captured {
        stream_error: Some(format!("log reader failed: {e}")),
        ..Captured::default()
    }
}

async fn read_loop(
    mut stream: AttachStream,
    redactor: Redactor,
    settings: LogSettings,
    sink: Option<LogSender>,
    stop: CancellationToken,
) -> Captured {
    let mut caps = [
        Capture::new(settings.capture_bytes),
        Capture::new(settings.capture_bytes),
    ];
    let mut asm = [Assembler::default(), Assembler::default()];
    let mut stream_error = None;
    let handle_line = |idx: usize, raw: &[u8], caps: &mut [Capture; 2]| {
        let mut line = String::from_utf8_lossy(raw).into_owned();
        redactor.redact_in_place(&mut line);
        caps[idx].push(&line);
        if let Some(s) = &sink {
            let trimmed = line.strip_suffix('\n').unwrap_or(&line);
            let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
            s.send(LogLine {
                stream: if idx == 0 {
                    Stream::Stdout
                } else {
                    Stream::Stderr
                },
                line: trimmed.to_string(),
            });
        }
    };
    loop {
        let item = tokio::select! {
            biased;
            item = stream.next() => item,
            _ = stop.cancelled() => break,
        };
        let (idx, bytes) = match item {
            None => break,
            Some(Err(e)) => {
                stream_error = Some(redactor.redact(&e.to_string()));
                break;
            }
            Some(Ok(LogOutput::StdOut { message })) | Some(Ok(LogOutput::Console { message })) => {
                (0, message)
            }
            Some(Ok(LogOutput::StdErr { message })) => (1, message),
            Some(Ok(LogOutput::StdIn { .. })) => continue,
        };
        asm[idx].feed(&bytes, settings.max_line_bytes, |l| {
            handle_line(idx, l, &mut caps)
        });
    }
    for (idx, a) in asm.iter_mut().enumerate() {
        a.finish(|l| handle_line(idx, l, &mut caps));
    }
    let lines_dropped = sink.as_ref().map(|s| s.dropped()).unwrap_or(0);
    Captured {
        stdout: caps[0].render(),
        stderr: caps[1].render(),
        truncated: caps[0].truncated() || caps[1].truncated(),
        stdout_bytes: caps[0].total_bytes,
        stderr_bytes: caps[1].total_bytes,
        lines_dropped,
        stream_error,
    }
}

// ---------------------------------------------------------------------------------
// The writer.

/// The non-blocking sending side; cheap to clone.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::Sender<LogLine>,
    dropped: Arc<AtomicU64>,
}

impl LogSender {
    /// Hands a line over, or counts it as dropped when the writer is behind.
    pub fn send(&self, line: LogLine) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A line of our own (`stream = system`), e.g. "stopping: timeout".
    pub fn system(&self, line: impl Into<String>) {
        self.send(LogLine {
            stream: Stream::System,
            line: line.into(),
        });
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// What the writer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterStats {
    pub lines_stored: u64,
    /// Lines past `max_stored_lines`.
    pub lines_over_cap: u64,
    /// Lines the reader could not hand over (channel full).
    pub lines_dropped: u64,
    /// Lines lost to failed inserts.
    pub lines_failed: u64,
}

/// Handle of the log writer task.
pub struct Writer {
    sender: LogSender,
    handle: JoinHandle<WriterStats>,
}

impl Writer {
    pub fn spawn(pool: PgPool, activity_id: Uuid, attempt: i32, settings: &LogSettings) -> Self {
        let (tx, rx) = mpsc::channel(settings.channel_lines.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(write_loop(
            pool,
            activity_id,
            attempt,
            settings.clone(),
            rx,
            dropped.clone(),
        ));
        Self {
            sender: LogSender { tx, dropped },
            handle,
        }
    }

    pub fn sender(&self) -> LogSender {
        self.sender.clone()
    }

    /// Closes our sender and waits (up to `max`) for every queued line to be written.
    /// Other clones of the sender must be dropped first, or this waits the full `max`
    /// and then abandons what is still queued.
    pub async fn finish(self, max: Duration) -> WriterStats {
        let Writer { sender, mut handle } = self;
        drop(sender);
        match tokio::time::timeout(max, &mut handle).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "log writer task failed");
                WriterStats::default()
            }
            Err(_) => {
                // Postgres is stuck: give up on the queued lines, but still join the task.
                handle.abort();
                let _ = handle.await;
                tracing::warn!("log writer did not finish in time; queued lines abandoned");
                WriterStats::default()
            }
        }
    }
}

async fn write_loop(
    pool: PgPool,
    activity_id: Uuid,
    attempt: i32,
    settings: LogSettings,
    mut rx: mpsc::Receiver<LogLine>,
    dropped: Arc<AtomicU64>,
) -> WriterStats {
    let mut stats = WriterStats::default();
    let mut next: u64 = 0;
    let mut cap_marker_written = false;
    let base = (i64::from(attempt.max(0))) << 32;
    let mut batch: Vec<LogLine> = Vec::with_capacity(settings.batch_lines);
    let mut closed = false;
    while !closed {
        match rx.recv().await {
            None => break,
            Some(l) => batch.push(l),
        }
        let deadline = tokio::time::Instant::now() + settings.batch_interval;
        while batch.len() < settings.batch_lines {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(l)) => batch.push(l),
                Ok(None) => {
                    closed = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let room = settings.max_stored_lines.saturating_sub(stats.lines_stored) as usize;
        if batch.len() > room {
            stats.lines_over_cap += (batch.len() - room) as u64;
            batch.truncate(room);
            if !cap_marker_written {
                cap_marker_written = true;
                batch.push(LogLine {
                    stream: Stream::System,
                    line: format!(
                        "[highway: log limit of {} lines reached; further lines are not stored]",
                        settings.max_stored_lines
                    ),
                });
            }
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len() as u64;
        match insert_batch(&pool, activity_id, attempt, base, next, &batch).await {
            Ok(()) => stats.lines_stored += n,
            Err(e) => {
                stats.lines_failed += n;
                tracing::warn!(%activity_id, error = %e, lines = n, "storing log lines failed");
            }
        }
        next += n;
        batch.clear();
    }
    stats.lines_dropped = dropped.load(Ordering::Relaxed);
    if stats.lines_dropped > 0 {
        let marker = [LogLine {
            stream: Stream::System,
            line: format!(
                "[highway: {} lines dropped because the log writer fell behind]",
                stats.lines_dropped
            ),
        }];
        if insert_batch(&pool, activity_id, attempt, base, next, &marker)
            .await
            .is_ok()
        {
            stats.lines_stored += 1;
        }
    }
    stats
}

async fn insert_batch(
    pool: &PgPool,
    activity_id: Uuid,
    attempt: i32,
    base: i64,
    first: u64,
    batch: &[LogLine],
) -> Result<(), sqlx::Error> {
    let seqs: Vec<i64> = (0..batch.len() as i64)
        .map(|i| base + first as i64 + i)
        .collect();
    let streams: Vec<&str> = batch.iter().map(|l| l.stream.as_str()).collect();
    // Postgres text cannot hold NUL.
    let lines: Vec<String> = batch
        .iter()
        .map(|l| l.line.replace('\0', "\u{fffd}"))
        .collect();
    // One statement: the NOTIFY is sent only if the insert commits.
    sqlx::query(
        "WITH ins AS (
             INSERT INTO highway.activity_logs (activity_id, seq, attempt, stream, line)
             SELECT $1, t.seq, $2, t.stream, t.line
               FROM UNNEST($3::bigint[], $4::text[], $5::text[]) AS t(seq, stream, line)
             ON CONFLICT (activity_id, seq) DO NOTHING
             RETURNING 1)
         SELECT pg_notify($6, $1::text) FROM (SELECT count(*) FROM ins) AS c",
    )
    .bind(activity_id)
    .bind(attempt)
    .bind(&seqs)
    .bind(&streams)
    .bind(&lines)
    .bind(NOTIFY_CHANNEL)
    .execute(pool)
    .await?;
    Ok(())
}

/// A summary of capture and storage for the heartbeat details / result warnings.
pub fn summary_json(c: &Captured, w: &WriterStats) -> serde_json::Value {
    json!({
        "stdout_bytes": c.stdout_bytes,
        "stderr_bytes": c.stderr_bytes,
        "truncated": c.truncated,
        "lines_stored": w.lines_stored,
        "lines_over_cap": w.lines_over_cap,
        "lines_dropped": w.lines_dropped,
        "lines_failed": w.lines_failed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_keeps_head_and_tail() {
        let mut c = Capture::new(20);
        for i in 0..100 {
            c.push(&format!("l{i}\n"));
        }
        let out = c.render();
        assert!(c.truncated());
        assert!(out.starts_with("l0\nl1\nl2\n"));
        assert!(out.ends_with("l98\nl99\n"));
        assert!(out.contains("bytes truncated"));
        let mut small = Capture::new(1000);
        small.push("a\n");
        small.push("b");
        assert_eq!(small.render(), "a\nb");
        assert!(!small.truncated());
    }

    #[test]
    fn huge_single_line_is_cut_to_the_tail() {
        let mut c = Capture::new(10);
        c.push(&"x".repeat(100));
        assert!(c.truncated());
        assert!(c.render().ends_with("xxxxx"));
    }

    #[test]
    fn assembler_splits_lines_and_long_lines() {
        let mut a = Assembler::default();
        let mut got = Vec::new();
        a.feed(b"ab\ncd", 4, |l| got.push(l.to_vec()));
        a.feed(b"ef\n0123456789", 4, |l| got.push(l.to_vec()));
        a.finish(|l| got.push(l.to_vec()));
        let got: Vec<String> = got
            .into_iter()
            .map(|v| String::from_utf8(v).unwrap())
            .collect();
        assert_eq!(got, vec!["ab\n", "cdef", "\n", "0123", "4567", "89"]);
    }
}
