//! Tar in and out of containers: builds the one uncompressed input tar uploaded before
//! start, and validates + rewrites the output tars downloaded after exit into one
//! artifact tar.
//!
//! Owns: entry validation (no `..`, no absolute paths, no links escaping their root, no
//! devices or fifos, entry-count and byte caps, compressed archives refused) and the
//! bridges between async byte streams and the blocking `tar` crate (every tar is read
//! or written on a blocking thread, fed through a bounded channel so memory stays
//! bounded whatever the size). Must not: talk to Docker or Postgres, or ever extract an
//! archive onto the host file system (archives only go from tar to tar).

use bytes::Bytes;
use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Caps applied to one archive set (all inputs, or all outputs of a run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Sum of file content bytes.
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// Why a tar was refused. Callers branch: `Io` is infrastructure, the rest are the
/// user's content and are not retried.
#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("tar entry {entry:?} refused: {reason}")]
    Refused { entry: String, reason: String },
    #[error("archive content exceeds the cap of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("compressed archives ({format}) are refused: only uncompressed tar is accepted")]
    Compressed { format: &'static str },
    #[error("input {path:?}: {reason}")]
    InvalidInput { path: String, reason: String },
    /// `inputs[input].select` names an entry the artifact does not hold.
    #[error("`inputs[{input}].select`: {select:?} is not in the artifact")]
    NotInArtifact { input: usize, select: String },
    #[error("tar stream failed: {0}")]
    Io(#[from] io::Error),
}

impl TarError {
    /// True when the archive content itself is at fault (never worth a retry).
    pub fn is_content_error(&self) -> bool {
        !matches!(self, TarError::Io(_))
    }
}

fn refused(entry: &str, reason: impl Into<String>) -> TarError {
    TarError::Refused {
        entry: entry.to_string(),
        reason: reason.into(),
    }
}

/// Normalises a relative archive path: drops `.` and empty segments, refuses `..`,
/// absolute paths and NUL. Returns the segments joined by `/` (empty for the root).
pub fn clean_relative(name: &str) -> Result<String, &'static str> {
    if name.contains('\0') {
        return Err("path contains a NUL byte");
    }
    if name.starts_with('/') {
        return Err("absolute path");
    }
    let mut parts = Vec::new();
    for seg in name.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err("path contains '..'"),
            s => parts.push(s),
        }
    }
    Ok(parts.join("/"))
}

/// Normalises an absolute container path (`/in/data.bin`) into its archive form
/// relative to `/` (`in/data.bin`).
pub fn container_path_to_relative(path: &str) -> Result<String, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("must be an absolute path");
    };
    let rel = clean_relative(rest)?;
    if rel.is_empty() {
        return Err("must not be '/'");
    }
    Ok(rel)
}

/// Resolves `target` (a symlink's target, relative to the link's directory) lexically
/// and checks it stays inside `scope` (a relative directory; empty = archive root).
fn symlink_stays_inside(link: &str, target: &str, scope: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut stack: Vec<&str> = link.split('/').filter(|s| !s.is_empty()).collect();
    stack.pop(); // the link's own name: targets resolve from its directory
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return false;
                }
            }
            s => stack.push(s),
        }
    }
    let scope_parts: Vec<&str> = scope.split('/').filter(|s| !s.is_empty()).collect();
    stack.len() >= scope_parts.len() && stack[..scope_parts.len()] == scope_parts[..]
}

const COMPRESSED_MAGIC: &[(&[u8], &str)] = &[
    (&[0x1f, 0x8b], "gzip"),
    (b"BZh", "bzip2"),
    (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
    (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
    (&[0x04, 0x22, 0x4d, 0x18], "lz4"),
];

/// Refuses a stream whose first bytes are a known compression magic: we never
/// decompress, so a bomb never gets the chance to expand (trap 16).
pub fn check_not_compressed(head: &[u8]) -> Result<(), TarError> {
    for (magic, format) in COMPRESSED_MAGIC {
        if head.len() >= magic.len() && &head[..magic.len()] == *magic {
            return Err(TarError::Compressed { format });
        }
    }
    Ok(())
}

/// Running totals shared by every archive of one set, so caps apply to the set.
#[derive(Debug, Default)]
struct Totals {
    entries: u64,
    bytes: u64,
}

impl Totals {
    fn add_entry(&mut self, limits: &TarLimits) -> Result<(), TarError> {
        self.entries += 1;
        if self.entries > limits.max_entries {
            return Err(TarError::TooManyEntries {
                limit: limits.max_entries,
            });
        }
        Ok(())
    }

    fn add_bytes(&mut self, n: u64, limits: &TarLimits) -> Result<(), TarError> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > limits.max_bytes {
            return Err(TarError::TooLarge {
                limit: limits.max_bytes,
            });
        }
        Ok(())
    }
}

/// One file listed in a run's outputs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EntryInfo {
    /// Absolute path inside the container (`/out/result.txt`).
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
    Hardlink,
}

/// Copies the entries of `src` into `dst`, validated and renamed with `rename` (`None`:
/// the entry is not wanted and is skipped unread). `scope` is the relative directory
/// (after renaming) that symlinks must stay inside. Returns how many entries were
/// copied; the listing is appended to `listing` (capped).
fn copy_validated<R: Read, W: Write>(
    src: R,
    dst: &mut tar::Builder<W>,
    rename: &dyn Fn(&str) -> Option<String>,
    scope: &str,
    limits: &TarLimits,
    totals: &mut Totals,
    seen: &mut HashSet<String>,
    listing: &mut Listing,
    owner: Option<(u64, u64)>,
) -> Result<u64, TarError> {
    let mut archive = tar::Archive::new(src);
    let mut copied = 0u64;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = clean_relative(&raw_name).map_err(|r| refused(&raw_name, r))?;
        let kind = entry.header().entry_type();
        if name.is_empty() {
            // `./` of a directory download: carries nothing worth keeping.
            if kind.is_dir() {
                continue;
            }
            return Err(refused(&raw_name, "empty path"));
        }
        let Some(new_name) = rename(&name) else {
            continue;
        };
        totals.add_entry(limits)?;
        copied += 1;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o777; // no setuid/setgid/sticky
        let mtime = header.mtime().unwrap_or(0);
        let (uid, gid) = owner.unwrap_or((header.uid().unwrap_or(0), header.gid().unwrap_or(0)));
        let mut h = tar::Header::new_gnu();
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(uid);
        h.set_gid(gid);
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size()?;
                totals.add_bytes(size, limits)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                dst.append_data(&mut h, &new_name, &mut entry)?;
                listing.push(&new_name, EntryKind::File, size);
            }
            tar::EntryType::Directory => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                dst.append_data(&mut h, &new_name, io::empty())?;
                listing.push(&new_name, EntryKind::Dir, 0);
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                if !symlink_stays_inside(&new_name, &target, scope) {
                    return Err(refused(
                        &raw_name,
                        format!("symlink to {target:?} escapes its directory"),
                    ));
                }
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                dst.append_link(&mut h, &new_name, &target)?;
                listing.push(&new_name, EntryKind::Symlink, 0);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let clean = clean_relative(&target)
                    .map_err(|r| refused(&raw_name, format!("hard link to {target:?}: {r}")))?;
                // A target outside the selection is outside the archive set.
                let new_target = rename(&clean).unwrap_or_default();
                // A hard link may only point at a regular file already in this archive
                // set, so it can never reach a file outside it.
                if clean.is_empty() || !seen.contains(&new_target) {
                    return Err(refused(
                        &raw_name,
                        format!("hard link to {target:?} outside the archive"),
                    ));
                }
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                dst.append_link(&mut h, &new_name, &new_target)?;
                listing.push(&new_name, EntryKind::Hardlink, 0);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(&raw_name, "device files are not allowed"));
            }
            tar::EntryType::Fifo => {
                return Err(refused(&raw_name, "fifos are not allowed"));
            }
            tar::EntryType::GNUSparse => {
                return Err(refused(&raw_name, "sparse files are not supported"));
            }
            other => {
                return Err(refused(
                    &raw_name,
                    format!("unsupported entry type {other:?}"),
                ));
            }
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            seen.insert(new_name);
        }
    }
    Ok(copied)
}

/// The list of entries reported in a run result: capped so a million-file output does
/// not make a million-line result.
#[derive(Debug, Default)]
struct Listing {
    entries: Vec<EntryInfo>,
    cap: usize,
    omitted: u64,
}

impl Listing {
    fn new(cap: usize) -> Self {
        Self {
            entries: Vec::new(),
            cap,
            omitted: 0,
        }
    }

    fn push(&mut self, rel: &str, kind: EntryKind, size: u64) {
        if self.entries.len() < self.cap {
            self.entries.push(EntryInfo {
                path: format!("/{rel}"),
                kind,
                size,
            });
        } else {
            self.omitted += 1;
        }
    }
}

/// Maximum number of entries listed in a result.
pub const LISTING_CAP: usize = 1000;

// ---------------------------------------------------------------------------------
// Async ⇄ blocking bridges.

/// `Write` half that sends fixed-size chunks into a bounded channel (backpressure:
/// `blocking_send` waits while the consumer is behind).
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 256 * 1024;

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "upload stream closed"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Where an input file's bytes come from.
#[derive(Debug, Clone)]
pub enum InputData {
    /// Inline content (`content` or `base64`), already decoded.
    Bytes(Bytes),
    /// A stored artifact tar (validated when stored, validated again here): its entries
    /// are placed under the input's path.
    ArtifactTar(PathBuf),
    /// One entry of a stored artifact tar: `select` (relative archive path, `out/app`)
    /// and, for a directory, everything under it, placed as `<path>/<last segment>`
    /// (`docker cp` semantics). `index` is the input's position in the run's `inputs`,
    /// named by [`TarError::NotInArtifact`] when the artifact holds no such entry.
    ArtifactEntry {
        tar: PathBuf,
        select: String,
        index: usize,
    },
}

/// One input of a run.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Absolute container path: the file's path, or for an artifact the directory its
    /// entries go under.
    pub path: String,
    /// File mode for inline content (default 0644).
    pub mode: Option<u32>,
    /// Numeric owner `(uid, gid)` of the placed files; default root. Set to the run's
    /// numeric `user` so a non-root process can read a 0400 secret file.
    pub owner: Option<(u64, u64)>,
    pub data: InputData,
}

/// What went into the input tar.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputStats {
    pub entries: u64,
    pub bytes: u64,
}

fn write_input_tar<W: Write>(
    w: W,
    inputs: &[InputFile],
    limits: &TarLimits,
) -> Result<InputStats, TarError> {
    let mut builder = tar::Builder::new(w);
    let mut totals = Totals::default();
    let mut seen = HashSet::new();
    let mut listing = Listing::new(0);
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for input in inputs {
        let rel = container_path_to_relative(&input.path).map_err(|r| TarError::InvalidInput {
            path: input.path.clone(),
            reason: r.to_string(),
        })?;
        match &input.data {
            InputData::Bytes(bytes) => {
                totals.add_entry(limits)?;
                totals.add_bytes(bytes.len() as u64, limits)?;
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(input.mode.unwrap_or(0o644) & 0o777);
                h.set_size(bytes.len() as u64);
                h.set_mtime(mtime);
                let (uid, gid) = input.owner.unwrap_or((0, 0));
                h.set_uid(uid);
                h.set_gid(gid);
                builder.append_data(&mut h, &rel, &bytes[..])?;
                seen.insert(rel);
            }
            InputData::ArtifactTar(file) => {
                let f = std::fs::File::open(file)?;
                let prefix = rel.clone();
                let rename = move |name: &str| Some(format!("{prefix}/{name}"));
                copy_validated(
                    io::BufReader::with_capacity(CHUNK, f),
                    &mut builder,
                    &rename,
                    &rel,
                    limits,
                    &mut totals,
                    &mut seen,
                    &mut listing,
                    input.owner,
                )?;
            }
            InputData::ArtifactEntry { tar, select, index } => {
                let not_found = || TarError::NotInArtifact {
                    input: *index,
                    select: format!("/{select}"),
                };
                let select = clean_relative(select).map_err(|_| not_found())?;
                let base = select.rsplit('/').next().unwrap_or_default().to_string();
                if base.is_empty() {
                    return Err(not_found());
                }
                let f = std::fs::File::open(tar)?;
                let target = format!("{rel}/{base}");
                let sel = select.clone();
                let rename = move |name: &str| {
                    let rest = name.strip_prefix(sel.as_str())?;
                    (rest.is_empty() || rest.starts_with('/')).then(|| format!("{target}{rest}"))
                };
                let copied = copy_validated(
                    io::BufReader::with_capacity(CHUNK, f),
                    &mut builder,
                    &rename,
                    &rel,
                    limits,
                    &mut totals,
                    &mut seen,
                    &mut listing,
                    input.owner,
                )?;
                if copied == 0 {
                    return Err(not_found());
                }
            }
        }
    }
    let mut w = builder.into_inner()?;
    w.flush()?;
    Ok(InputStats {
        entries: totals.entries,
        bytes: totals.bytes,
    })
}

/// The receiving end of the input tar: chunks to upload, or the error that aborted it.
pub type InputTarBody = mpsc::Receiver<Result<Bytes, io::Error>>;

/// Builds the input tar on a blocking thread. Returns the byte stream to upload and the
/// task's handle, which the caller must await (after the upload finished or failed) for
/// the stats or the validation error.
pub fn spawn_input_tar(
    inputs: Vec<InputFile>,
    limits: TarLimits,
) -> (InputTarBody, JoinHandle<Result<InputStats, TarError>>) {
    let (tx, rx) = mpsc::channel(4);
    let handle = tokio::task::spawn_blocking(move || {
        let err_tx = tx.clone();
        let writer = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let res = write_input_tar(writer, &inputs, &limits);
        if let Err(e) = &res {
            // Fail the upload body too, so the daemon never extracts a partial tar.
            let _ = err_tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
        res
    });
    (rx, handle)
}

/// Validates a complete input tar in memory (unit tests and small checks).
pub fn build_input_tar_bytes(
    inputs: &[InputFile],
    limits: &TarLimits,
) -> Result<Vec<u8>, TarError> {
    let mut out = Vec::new();
    write_input_tar(&mut out, inputs, limits)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Outputs: many downloaded tars → one validated artifact tar on disk.

enum OutMsg {
    Start { declared_rel: String },
    Data(Bytes),
    End,
    Fail(String),
}

/// Reads the bytes of the current archive from the channel; `End` is EOF.
struct ArchiveReader<'a> {
    rx: &'a mut mpsc::Receiver<OutMsg>,
    cur: Bytes,
    ended: bool,
    first: bool,
    /// Set when the archive starts with a compression magic (reported as
    /// [`TarError::Compressed`] rather than as an I/O error).
    compressed: Option<&'static str>,
}

impl Read for ArchiveReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.cur.is_empty() {
                let n = self.cur.len().min(out.len());
                out[..n].copy_from_slice(&self.cur[..n]);
                let _ = self.cur.split_to(n);
                return Ok(n);
            }
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(OutMsg::Data(b)) => {
                    if self.first {
                        self.first = false;
                        if let Err(TarError::Compressed { format }) = check_not_compressed(&b) {
                            self.compressed = Some(format);
                            return Err(io::Error::other("compressed archive"));
                        }
                    }
                    self.cur = b;
                }
                Some(OutMsg::End) => self.ended = true,
                Some(OutMsg::Fail(reason)) => return Err(io::Error::other(reason)),
                Some(OutMsg::Start { .. }) | None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "output stream ended before the archive did",
                    ))
                }
            }
        }
    }
}

/// A `Write` that hashes and counts what goes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: sha2::Sha256,
    written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.write(data)?;
        self.hasher.update(&data[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the output artifact holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSummary {
    /// Size of the artifact tar.
    pub tar_bytes: u64,
    pub sha256: String,
    pub entry_count: u64,
    pub content_bytes: u64,
    pub entries: Vec<EntryInfo>,
    /// Entries not listed in `entries` (over [`LISTING_CAP`]).
    pub entries_omitted: u64,
}

type ArtifactBuilder = tar::Builder<HashingWriter<io::BufWriter<std::fs::File>>>;

fn new_artifact_builder(file: std::fs::File) -> ArtifactBuilder {
    tar::Builder::new(HashingWriter {
        inner: io::BufWriter::with_capacity(CHUNK, file),
        hasher: <sha2::Sha256 as sha2::Digest>::new(),
        written: 0,
    })
}

/// Writes the end-of-archive marker, syncs the file and reports what it holds.
fn finish_artifact(
    builder: ArtifactBuilder,
    totals: Totals,
    listing: Listing,
) -> Result<OutputSummary, TarError> {
    use sha2::Digest;
    let mut hw = builder.into_inner()?;
    hw.flush()?;
    let sha = hex::encode(hw.hasher.finalize_reset());
    hw.inner
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(OutputSummary {
        tar_bytes: hw.written,
        sha256: sha,
        entry_count: totals.entries,
        content_bytes: totals.bytes,
        entries: listing.entries,
        entries_omitted: listing.omitted,
    })
}

/// Validates a tenant-supplied tar and rewrites it into `dst` (blocking; run it on a
/// blocking thread). Compressed archives are refused, not decompressed (S19).
pub fn import_archive<R: Read>(
    src: R,
    dst: std::fs::File,
    limits: &TarLimits,
) -> Result<OutputSummary, TarError> {
    use io::BufRead;
    let mut src = io::BufReader::with_capacity(CHUNK, src);
    check_not_compressed(src.fill_buf()?)?;
    let mut builder = new_artifact_builder(dst);
    let mut totals = Totals::default();
    let mut listing = Listing::new(LISTING_CAP);
    copy_validated(
        src,
        &mut builder,
        &|n: &str| Some(n.to_string()),
        "",
        limits,
        &mut totals,
        &mut HashSet::new(),
        &mut listing,
        None,
    )?;
    finish_artifact(builder, totals, listing)
}

/// The blocking task that turns downloaded archives into one artifact tar.
/// Feed it with `start` / `data` / `end` per declared output, then `finish`.
pub struct OutputTarWriter {
    tx: mpsc::Sender<OutMsg>,
    handle: JoinHandle<Result<OutputSummary, TarError>>,
}

impl OutputTarWriter {
    pub fn spawn(file: std::fs::File, limits: TarLimits) -> Self {
        let (tx, mut rx) = mpsc::channel::<OutMsg>(8);
        let handle = tokio::task::spawn_blocking(move || {
            let mut builder = new_artifact_builder(file);
            let mut totals = Totals::default();
            let mut seen = HashSet::new();
            let mut listing = Listing::new(LISTING_CAP);
            while let Some(msg) = rx.blocking_recv() {
                let declared_rel = match msg {
                    OutMsg::Start { declared_rel } => declared_rel,
                    // Stray data without a start: a bug on the sending side.
                    _ => return Err(TarError::Io(io::Error::other("output protocol error"))),
                };
                // The daemon names entries after the declared path's last segment;
                // re-root them under its parent so the artifact mirrors container paths.
                let parent = match declared_rel.rsplit_once('/') {
                    Some((p, _)) => p.to_string(),
                    None => String::new(),
                };
                let rename = {
                    let parent = parent.clone();
                    move |name: &str| {
                        Some(if parent.is_empty() {
                            name.to_string()
                        } else {
                            format!("{parent}/{name}")
                        })
                    }
                };
                let mut reader = ArchiveReader {
                    rx: &mut rx,
                    cur: Bytes::new(),
                    ended: false,
                    first: true,
                    compressed: None,
                };
                let copied = copy_validated(
                    &mut reader,
                    &mut builder,
                    &rename,
                    &declared_rel,
                    &limits,
                    &mut totals,
                    &mut seen,
                    &mut listing,
                    None,
                );
                if let Err(e) = copied {
                    return Err(match reader.compressed {
                        Some(format) => TarError::Compressed { format },
                        None => e,
                    });
                }
                // Trailing padding after the end-of-archive marker still counts, and
                // must be consumed up to `End` so the next archive starts cleanly.
                let mut sink = [0u8; 8192];
                let mut trailing: u64 = 0;
                loop {
                    let n = reader.read(&mut sink)?;
                    if n == 0 {
                        break;
                    }
                    trailing += n as u64;
                    if trailing > 1024 * 1024 {
                        return Err(refused(&declared_rel, "data after the end of the archive"));
                    }
                }
            }
            finish_artifact(builder, totals, listing)
        });
        Self { tx, handle }
    }

    /// Begins the archive of one declared output path (absolute container path).
    pub async fn start(&self, declared: &str) -> Result<(), TarError> {
        let declared_rel =
            container_path_to_relative(declared).map_err(|r| TarError::InvalidInput {
                path: declared.to_string(),
                reason: r.to_string(),
            })?;
        self.send(OutMsg::Start { declared_rel }).await
    }

    pub async fn data(&self, chunk: Bytes) -> Result<(), TarError> {
        self.send(OutMsg::Data(chunk)).await
    }

    pub async fn end(&self) -> Result<(), TarError> {
        self.send(OutMsg::End).await
    }

    /// The download of the current archive failed; the writer stops with this reason.
    pub async fn fail(&self, reason: String) {
        let _ = self.tx.send(OutMsg::Fail(reason)).await;
    }

    async fn send(&self, msg: OutMsg) -> Result<(), TarError> {
        // A closed channel means the blocking side already stopped with an error;
        // `finish` returns it.
        self.tx
            .send(msg)
            .await
            .map_err(|_| TarError::Io(io::Error::new(io::ErrorKind::BrokenPipe, "closed")))
    }

    /// Closes the artifact and waits for the blocking task.
    pub async fn finish(self) -> Result<OutputSummary, TarError> {
        drop(self.tx);
        match self.handle.await {
            Ok(r) => r,
            Err(e) => Err(TarError::Io(io::Error::other(format!(
                "output tar task failed: {e}"
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIM: TarLimits = TarLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    fn raw_tar(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(0o644);
            h.set_size(data.len() as u64);
            // Bypass the builder's own path checks so hostile names reach the validator.
            let name_bytes = name.as_bytes();
            h.as_old_mut().name[..name_bytes.len()].copy_from_slice(name_bytes);
            if let Some(l) = link {
                h.set_link_name(l).unwrap();
            }
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn validate(bytes: &[u8], scope: &str) -> Result<Vec<EntryInfo>, TarError> {
        let mut out = tar::Builder::new(Vec::new());
        let mut listing = Listing::new(100);
        copy_validated(
            bytes,
            &mut out,
            &|n: &str| Some(n.to_string()),
            scope,
            &LIM,
            &mut Totals::default(),
            &mut HashSet::new(),
            &mut listing,
            None,
        )?;
        Ok(listing.entries)
    }

    #[test]
    fn refuses_hostile_entries() {
        use tar::EntryType as T;
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (raw_tar(&[("../evil", T::Regular, b"x", None)]), ".."),
            (raw_tar(&[("out/../../evil", T::Regular, b"x", None)]), ".."),
            (
                raw_tar(&[("/etc/passwd", T::Regular, b"x", None)]),
                "absolute",
            ),
            (
                raw_tar(&[("out/l", T::Symlink, b"", Some("../../etc"))]),
                "escapes",
            ),
            (
                raw_tar(&[("out/l", T::Symlink, b"", Some("/etc/passwd"))]),
                "escapes",
            ),
            (
                raw_tar(&[("out/h", T::Link, b"", Some("etc/passwd"))]),
                "outside",
            ),
            (raw_tar(&[("out/dev", T::Char, b"", None)]), "device"),
            (raw_tar(&[("out/fifo", T::Fifo, b"", None)]), "fifo"),
        ];
        for (bytes, want) in cases {
            let err = validate(&bytes, "out").unwrap_err().to_string();
            assert!(err.contains(want), "{err} should mention {want}");
        }
    }

    #[test]
    fn accepts_inner_links_and_caps() {
        use tar::EntryType as T;
        let ok = raw_tar(&[
            ("out", T::Directory, b"", None),
            ("out/a", T::Regular, b"hello", None),
            ("out/l", T::Symlink, b"", Some("a")),
            ("out/h", T::Link, b"", Some("out/a")),
        ]);
        let listed = validate(&ok, "out").unwrap();
        assert_eq!(listed.len(), 4);
        let many: Vec<(String, tar::EntryType, &[u8], Option<&str>)> = (0..150)
            .map(|i| (format!("f{i}"), T::Regular, &b""[..], None))
            .collect();
        let many_ref: Vec<_> = many
            .iter()
            .map(|(n, t, d, l)| (n.as_str(), *t, *d, *l))
            .collect();
        assert!(matches!(
            validate(&raw_tar(&many_ref), ""),
            Err(TarError::TooManyEntries { .. })
        ));
        let big = vec![0u8; (LIM.max_bytes + 1) as usize];
        assert!(matches!(
            validate(&raw_tar(&[("big", T::Regular, &big, None)]), ""),
            Err(TarError::TooLarge { .. })
        ));
    }

    #[test]
    fn compressed_magic() {
        assert!(check_not_compressed(&[0x1f, 0x8b, 8, 0]).is_err());
        assert!(check_not_compressed(b"BZh91AY").is_err());
        assert!(check_not_compressed(b"out/\0\0\0").is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(container_path_to_relative("/in//a/./b").unwrap(), "in/a/b");
        assert!(container_path_to_relative("in/a").is_err());
        assert!(container_path_to_relative("/in/../etc").is_err());
        assert!(container_path_to_relative("/").is_err());
        assert!(symlink_stays_inside("out/x/l", "../y", "out"));
        assert!(!symlink_stays_inside("out/l", "../y", "out"));
    }

    #[test]
    fn input_tar_roundtrip() {
        let inputs = vec![InputFile {
            path: "/in/data.bin".into(),
            mode: Some(0o755),
            owner: None,
            data: InputData::Bytes(Bytes::from_static(&[0, 1, 2, 255])),
        }];
        let bytes = build_input_tar_bytes(&inputs, &LIM).unwrap();
        let mut a = tar::Archive::new(&bytes[..]);
        let mut e = a.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), b"in/data.bin");
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        assert_eq!(data, vec![0, 1, 2, 255]);
    }

    /// `select` places one entry (a directory subtree or a file) under the input path
    /// by its last segment, and nothing else; a missing entry names the input.
    #[test]
    fn artifact_entry_selects_one_subtree() {
        use tar::EntryType as T;
        let artifact = raw_tar(&[
            ("out", T::Directory, b"", None),
            ("out/app", T::Directory, b"", None),
            ("out/app/bin", T::Regular, b"exe", None),
            ("out/apple", T::Regular, b"no", None),
            ("out/sibling", T::Regular, b"no", None),
        ]);
        let file = std::env::temp_dir().join(format!("tario-select-{}.tar", uuid::Uuid::new_v4()));
        std::fs::write(&file, &artifact).unwrap();
        let names = |select: &str| -> Result<Vec<String>, TarError> {
            let inputs = vec![InputFile {
                path: "/in".into(),
                mode: None,
                owner: None,
                data: InputData::ArtifactEntry {
                    tar: file.clone(),
                    select: select.into(),
                    index: 2,
                },
            }];
            let bytes = build_input_tar_bytes(&inputs, &LIM)?;
            let mut a = tar::Archive::new(&bytes[..]);
            Ok(a.entries()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    String::from_utf8_lossy(&e.path_bytes())
                        .trim_end_matches('/')
                        .to_string()
                })
                .collect())
        };
        assert_eq!(names("out/app").unwrap(), ["in/app", "in/app/bin"]);
        assert_eq!(names("out/sibling").unwrap(), ["in/sibling"]);
        let e = names("out/missing").unwrap_err();
        assert!(
            matches!(&e, TarError::NotInArtifact { input: 2, select } if select == "/out/missing"),
            "{e:?}"
        );
        assert!(e.is_content_error());
        std::fs::remove_file(&file).ok();
    }
}
