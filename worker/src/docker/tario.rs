//! Tar in and out of containers: builds the one uncompressed input tar uploaded before
//! start, and validates + rewrites the output tars downloaded after exit into one
//! artifact tar.
//!
//! Owns: entry validation (no `..`, no absolute paths, no links escaping their root, no
//! devices or fifos, entry-count and byte caps, compressed archives refused), the one
//! entry reader every validator goes through ([`for_each_entry`]: the path, link target
//! and size of an entry are the ones that also delimit its data, whatever header carried
//! them), the model of the tree an archive set builds when extracted in order (links are
//! judged after full resolution against the entries before them, and again once the set
//! is complete) and the
//! bridges between async byte streams and the blocking `tar` crate (every tar is read
//! or written on a blocking thread, fed through a bounded channel so memory stays
//! bounded whatever the size). Must not: talk to Docker or Postgres, or ever extract an
//! archive onto the host file system (archives only go from tar to tar).

use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
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

/// How many symbolic links one path resolution may follow (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

/// What an extracted entry left at a location of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir,
    File,
    /// A symlink with its raw target and the directory it must stay inside.
    Link {
        target: String,
        scope: String,
    },
}

/// The tree an archive set builds when it is extracted in order, keyed by resolved
/// (real) location relative to the root. Extraction follows symlinks in the parent
/// path of every entry (never in its last component, which a later entry replaces), so
/// each entry is judged where it really lands and each link on what it finally points
/// at. Locations the set does not hold are taken as plain directories.
#[derive(Debug, Default)]
struct Tree {
    nodes: BTreeMap<String, Node>,
}

/// Splits a relative path into its segments, `.` and empty ones dropped.
fn segments(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty() && *s != ".")
}

/// Whether `path` (resolved segments) is `scope` or lies under it.
fn is_inside(path: &[String], scope: &str) -> bool {
    let scope: Vec<&str> = segments(scope).collect();
    path.len() >= scope.len() && path.iter().zip(&scope).all(|(a, b)| a == b)
}

impl Tree {
    /// Resolves `rest` from the directory `from` the way the kernel would inside the
    /// extracted tree: every component that is a link of the tree is replaced by its
    /// target (relative to the link's directory), `..` goes up. `follow_last`: a link in
    /// the last component is followed too (a link's target) or not (an entry's own
    /// location). Refuses a walk above the root, an absolute target and loops.
    fn resolve(
        &self,
        from: &[String],
        rest: &str,
        follow_last: bool,
    ) -> Result<Vec<String>, &'static str> {
        let mut stack: Vec<String> = from.to_vec();
        let mut pending: VecDeque<String> = segments(rest).map(str::to_string).collect();
        let mut hops = 0usize;
        while let Some(seg) = pending.pop_front() {
            if seg == ".." {
                if stack.pop().is_none() {
                    return Err("escapes above the root");
                }
                continue;
            }
            stack.push(seg);
            if pending.is_empty() && !follow_last {
                break;
            }
            let node = self.nodes.get(&stack.join("/"));
            if node == Some(&Node::File) && !pending.is_empty() {
                return Err("goes through a regular file");
            }
            if let Some(Node::Link { target, .. }) = node {
                hops += 1;
                if hops > MAX_LINK_HOPS {
                    return Err("goes through too many symbolic links");
                }
                if target.starts_with('/') {
                    return Err("goes through a link to an absolute path");
                }
                stack.pop();
                for s in segments(target).rev() {
                    pending.push_front(s.to_string());
                }
            }
        }
        Ok(stack)
    }

    /// Where an entry named `name` lands: its parent resolved, its own name kept.
    fn locate(&self, name: &str) -> Result<Vec<String>, &'static str> {
        let (parent, base) = name.rsplit_once('/').unwrap_or(("", name));
        let mut at = self.resolve(&[], parent, true)?;
        if !at.is_empty() && self.nodes.get(&at.join("/")) == Some(&Node::File) {
            return Err("goes through a regular file");
        }
        at.push(base.to_string());
        Ok(at)
    }

    /// Where the link at `at` points, fully resolved.
    fn link_destination(&self, at: &[String], target: &str) -> Result<Vec<String>, &'static str> {
        if target.is_empty() {
            return Err("has an empty target");
        }
        if target.starts_with('/') {
            return Err("escapes its directory (an absolute target)");
        }
        if target.contains('\0') {
            return Err("has a NUL byte in its target");
        }
        self.resolve(&at[..at.len().saturating_sub(1)], target, true)
    }

    /// Records what an entry left at `at`. Anything but a directory over a directory
    /// replaces what was there, subtree included (extraction removes it first).
    fn insert(&mut self, at: &[String], node: Node) {
        let key = at.join("/");
        // A location the tree does not hold is a directory already (made on the way to
        // an entry under it), or nothing.
        if node == Node::Dir && matches!(self.nodes.get(&key), None | Some(Node::Dir)) {
            self.nodes.insert(key, node);
            return;
        }
        let prefix = format!("{key}/");
        let under: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in under {
            self.nodes.remove(&k);
        }
        self.nodes.insert(key, node);
    }

    /// Judges every link of the tree again on the tree as it is now: an entry added
    /// after a link can change what the link points at (`b -> c/..` before `c -> .`).
    fn check_links(&self) -> Result<(), TarError> {
        for (path, node) in &self.nodes {
            let Node::Link { target, scope } = node else {
                continue;
            };
            let at: Vec<String> = segments(path).map(str::to_string).collect();
            match self.link_destination(&at, target) {
                Ok(dest) if is_inside(&dest, scope) => {}
                Ok(_) => {
                    return Err(refused(
                        path,
                        format!("symlink to {target:?} escapes its directory"),
                    ))
                }
                Err(r) => return Err(refused(path, format!("symlink to {target:?} {r}"))),
            }
        }
        Ok(())
    }
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

/// One archive entry as every reader of this module sees it. The path, link target and
/// size are the effective ones (a GNU long name or link, a PAX `path`, `linkpath` or
/// `size` overrides the ustar fields), and `size` is also exactly what the entry's data
/// reader yields: what is counted against the caps is what is copied.
#[derive(Debug, Clone)]
pub struct EntryMeta {
    /// The effective path as found (lossy UTF-8), for error messages.
    pub raw_name: String,
    /// Its cleaned form ([`clean_relative`]; empty for the root).
    pub name: String,
    pub kind: tar::EntryType,
    pub size: u64,
    /// The effective link target of a symlink or hard link.
    pub link: Option<String>,
    pub mode: u32,
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
}

/// Reads every entry of `src` and hands it to `f` with a reader of its data (exactly
/// `meta.size` bytes unless the archive is truncated). The one place archives are
/// parsed: a path with `..`, an absolute path or a NUL is refused here, before `f`.
pub fn for_each_entry<R: Read>(
    src: R,
    mut f: impl FnMut(&EntryMeta, &mut dyn Read) -> Result<(), TarError>,
) -> Result<(), TarError> {
    let mut archive = tar::Archive::new(src);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = clean_relative(&raw_name).map_err(|r| refused(&raw_name, r))?;
        let header = entry.header();
        let kind = header.entry_type();
        let link = match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => Some(
                entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
            ),
            _ => None,
        };
        let meta = EntryMeta {
            name,
            kind,
            // The tar crate's size: PAX `size` when present, and the length of the data
            // it delimits. The ustar field alone (`header().size()`) may disagree.
            size: entry.size(),
            link,
            mode: header.mode().unwrap_or(0o644),
            mtime: header.mtime().unwrap_or(0),
            uid: header.uid().unwrap_or(0),
            gid: header.gid().unwrap_or(0),
            raw_name,
        };
        f(&meta, &mut entry)?;
    }
    Ok(())
}

/// A `Read` that counts what went through it.
struct Counting<'a> {
    inner: &'a mut dyn Read,
    n: u64,
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Copies the entries of `src` into `dst`, validated and renamed with `rename` (`None`:
/// the entry is not wanted and is skipped unread). `scope` is the relative directory
/// (after renaming) that every entry must land in and every symlink point into, judged
/// on `tree` (the set's entries so far). Returns how many entries were copied; the
/// listing is appended to `listing` (capped).
fn copy_validated<R: Read, W: Write>(
    src: R,
    dst: &mut tar::Builder<W>,
    rename: &dyn Fn(&str) -> Option<String>,
    scope: &str,
    limits: &TarLimits,
    totals: &mut Totals,
    tree: &mut Tree,
    listing: &mut Listing,
    owner: Option<(u64, u64)>,
) -> Result<u64, TarError> {
    let mut copied = 0u64;
    for_each_entry(src, |e, data| {
        let raw_name = e.raw_name.as_str();
        if e.name.is_empty() {
            // `./` of a directory download: carries nothing worth keeping.
            if e.kind.is_dir() {
                return Ok(());
            }
            return Err(refused(raw_name, "empty path"));
        }
        let Some(new_name) = rename(&e.name) else {
            return Ok(());
        };
        totals.add_entry(limits)?;
        copied += 1;
        // Where the entry really lands once the links before it are followed.
        let at = tree
            .locate(&new_name)
            .map_err(|r| refused(raw_name, format!("its parent path {r}")))?;
        if !is_inside(&at, scope) {
            return Err(refused(
                raw_name,
                "its parent path leads outside its directory through a symlink",
            ));
        }
        let (uid, gid) = owner.unwrap_or((e.uid, e.gid));
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode & 0o777); // no setuid/setgid/sticky
        h.set_mtime(e.mtime);
        h.set_uid(uid);
        h.set_gid(gid);
        let target = e.link.clone().unwrap_or_default();
        match e.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                totals.add_bytes(e.size, limits)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(e.size);
                let mut counting = Counting { inner: data, n: 0 };
                dst.append_data(&mut h, &new_name, &mut counting)?;
                if counting.n != e.size {
                    return Err(refused(
                        raw_name,
                        format!("truncated: {} of {} bytes", counting.n, e.size),
                    ));
                }
                listing.push(&new_name, EntryKind::File, e.size);
                tree.insert(&at, Node::File);
            }
            tar::EntryType::Directory => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                dst.append_data(&mut h, &new_name, io::empty())?;
                listing.push(&new_name, EntryKind::Dir, 0);
                tree.insert(&at, Node::Dir);
            }
            tar::EntryType::Symlink => {
                match tree.link_destination(&at, &target) {
                    Ok(dest) if is_inside(&dest, scope) => {}
                    Ok(_) => {
                        return Err(refused(
                            raw_name,
                            format!("symlink to {target:?} escapes its directory"),
                        ))
                    }
                    Err(r) => return Err(refused(raw_name, format!("symlink to {target:?} {r}"))),
                }
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                dst.append_link(&mut h, &new_name, &target)?;
                listing.push(&new_name, EntryKind::Symlink, 0);
                tree.insert(
                    &at,
                    Node::Link {
                        target: target.clone(),
                        scope: scope.to_string(),
                    },
                );
            }
            tar::EntryType::Link => {
                let clean = clean_relative(&target)
                    .map_err(|r| refused(raw_name, format!("hard link to {target:?}: {r}")))?;
                // A target outside the selection is outside the archive set.
                let new_target = rename(&clean).unwrap_or_default();
                // A hard link may only point at a regular file already in this archive
                // set (where it really is: `link(2)` follows the target's parent path,
                // not its last component), so it never reaches a file outside the set,
                // nor copies a symlink into another directory.
                let points_at_file = !clean.is_empty()
                    && !new_target.is_empty()
                    && tree
                        .locate(&new_target)
                        .is_ok_and(|t| tree.nodes.get(&t.join("/")) == Some(&Node::File));
                if !points_at_file {
                    return Err(refused(
                        raw_name,
                        format!("hard link to {target:?} outside the archive"),
                    ));
                }
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                dst.append_link(&mut h, &new_name, &new_target)?;
                listing.push(&new_name, EntryKind::Hardlink, 0);
                tree.insert(&at, Node::File);
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                return Err(refused(raw_name, "device files are not allowed"));
            }
            tar::EntryType::Fifo => {
                return Err(refused(raw_name, "fifos are not allowed"));
            }
            tar::EntryType::GNUSparse => {
                return Err(refused(raw_name, "sparse files are not supported"));
            }
            other => {
                return Err(refused(
                    raw_name,
                    format!("unsupported entry type {other:?}"),
                ));
            }
        }
        Ok(())
    })?;
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
    let mut tree = Tree::default();
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
                // An earlier input's links may lie on the path: judge where it lands.
                let at = tree.locate(&rel).map_err(|r| TarError::InvalidInput {
                    path: input.path.clone(),
                    reason: format!("its parent path {r}"),
                })?;
                builder.append_data(&mut h, &rel, &bytes[..])?;
                tree.insert(&at, Node::File);
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
                    &mut tree,
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
                    &mut tree,
                    &mut listing,
                    input.owner,
                )?;
                if copied == 0 {
                    return Err(not_found());
                }
            }
        }
        // Each input can change what an earlier one's links point at.
        tree.check_links()?;
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
    let mut tree = Tree::default();
    copy_validated(
        src,
        &mut builder,
        &|n: &str| Some(n.to_string()),
        "",
        limits,
        &mut totals,
        &mut tree,
        &mut listing,
        None,
    )?;
    tree.check_links()?;
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
            let mut tree = Tree::default();
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
                    &mut tree,
                    &mut listing,
                    None,
                )
                .and_then(|n| tree.check_links().map(|()| n));
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
        validate_with(bytes, scope, &LIM).map(|(listing, _, _)| listing)
    }

    /// Validates like an import does (links checked again at the end); returns the
    /// listing, the rewritten archive and the content bytes counted.
    fn validate_with(
        bytes: &[u8],
        scope: &str,
        limits: &TarLimits,
    ) -> Result<(Vec<EntryInfo>, Vec<u8>, u64), TarError> {
        let mut out = tar::Builder::new(Vec::new());
        let mut listing = Listing::new(1000);
        let mut tree = Tree::default();
        let mut totals = Totals::default();
        copy_validated(
            bytes,
            &mut out,
            &|n: &str| Some(n.to_string()),
            scope,
            limits,
            &mut totals,
            &mut tree,
            &mut listing,
            None,
        )?;
        tree.check_links()?;
        Ok((listing.entries, out.into_inner()?, totals.bytes))
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
        let tree = Tree::default();
        let at = |p: &str| -> Vec<String> { segments(p).map(str::to_string).collect() };
        let dest = tree.link_destination(&at("out/x/l"), "../y").unwrap();
        assert!(is_inside(&dest, "out"));
        let dest = tree.link_destination(&at("out/l"), "../y").unwrap();
        assert!(!is_inside(&dest, "out"));
        assert!(tree.link_destination(&at("l"), "../y").is_err());
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

    // ---------------------------------------------------------------------------
    // Hostile archives built by hand, byte by byte: the `tar` crate's Builder refuses
    // most of them. The corpus below is the regression suite; the property test
    // generates more from the same grammar.

    /// One entry as written: its ustar fields, optional GNU long name/link entries and
    /// a PAX header before it, and the bytes that follow its header (whatever length).
    #[derive(Debug, Clone, Default)]
    struct Raw {
        name: String,
        kind: u8,
        data: Vec<u8>,
        ustar_size: u64,
        link: String,
        gnu_long_name: bool,
        gnu_long_link: bool,
        pax: Vec<(String, String)>,
    }

    impl Raw {
        fn file(name: &str, data: &[u8]) -> Self {
            Raw {
                name: name.into(),
                kind: b'0',
                data: data.to_vec(),
                ustar_size: data.len() as u64,
                ..Default::default()
            }
        }
        fn dir(name: &str) -> Self {
            Raw {
                name: name.into(),
                kind: b'5',
                ..Default::default()
            }
        }
        fn symlink(name: &str, target: &str) -> Self {
            Raw {
                name: name.into(),
                kind: b'2',
                link: target.into(),
                ..Default::default()
            }
        }
        fn hardlink(name: &str, target: &str) -> Self {
            Raw {
                name: name.into(),
                kind: b'1',
                link: target.into(),
                ..Default::default()
            }
        }
    }

    fn octal(field: &mut [u8], v: u64) {
        let s = format!("{v:0w$o}", w = field.len() - 1);
        let s = &s.as_bytes()[s.len() - (field.len() - 1)..];
        field[..s.len()].copy_from_slice(s);
        field[s.len()] = 0;
    }

    fn header_block(name: &[u8], kind: u8, size: u64, link: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 512];
        let n = name.len().min(100);
        b[..n].copy_from_slice(&name[..n]);
        octal(&mut b[100..108], 0o644);
        octal(&mut b[108..116], 0);
        octal(&mut b[116..124], 0);
        octal(&mut b[124..136], size);
        octal(&mut b[136..148], 0);
        b[156] = kind;
        let l = link.len().min(100);
        b[157..157 + l].copy_from_slice(&link[..l]);
        b[257..263].copy_from_slice(b"ustar\0");
        b[263..265].copy_from_slice(b"00");
        b[148..156].copy_from_slice(b"        ");
        let sum: u32 = b.iter().map(|x| *x as u32).sum();
        let s = format!("{sum:06o}\0 ");
        b[148..156].copy_from_slice(s.as_bytes());
        b
    }

    fn padded(mut data: Vec<u8>) -> Vec<u8> {
        let rem = data.len() % 512;
        if rem != 0 {
            data.resize(data.len() + 512 - rem, 0);
        }
        data
    }

    fn pax_records(records: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in records {
            let body = format!(" {k}={v}\n");
            // The length counts its own digits.
            let mut len = body.len() + 1;
            while format!("{len}").len() + body.len() != len {
                len += 1;
            }
            out.extend_from_slice(format!("{len}{body}").as_bytes());
        }
        out
    }

    fn raw_archive(entries: &[Raw]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in entries {
            if e.gnu_long_name {
                let mut n = e.name.as_bytes().to_vec();
                n.push(0);
                out.extend(header_block(b"././@LongLink", b'L', n.len() as u64, b""));
                out.extend(padded(n));
            }
            if e.gnu_long_link {
                let mut n = e.link.as_bytes().to_vec();
                n.push(0);
                out.extend(header_block(b"././@LongLink", b'K', n.len() as u64, b""));
                out.extend(padded(n));
            }
            if !e.pax.is_empty() {
                let recs = pax_records(&e.pax);
                out.extend(header_block(b"PaxHeader", b'x', recs.len() as u64, b""));
                out.extend(padded(recs));
            }
            out.extend(header_block(
                e.name.as_bytes(),
                e.kind,
                e.ustar_size,
                e.link.as_bytes(),
            ));
            out.extend(padded(e.data.clone()));
        }
        out.extend(vec![0u8; 1024]);
        out
    }

    /// Reads a rewritten archive back and checks what a consumer would see: every
    /// entry lands inside `scope` and every symlink finally points inside it (judged by
    /// a resolver written independently of [`Tree`]), file data lengths match their
    /// headers and add up to `counted`, and the caps hold.
    fn assert_safe_output(out: &[u8], scope: &str, counted: u64, limits: &TarLimits) {
        use std::collections::HashMap;
        fn resolve(
            links: &HashMap<String, String>,
            path: &str,
            follow_last: bool,
            depth: u32,
        ) -> Option<Vec<String>> {
            let comps: Vec<&str> = path
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .collect();
            let mut cur: Vec<String> = Vec::new();
            for (i, c) in comps.iter().enumerate() {
                if *c == ".." {
                    cur.pop()?;
                    continue;
                }
                cur.push(c.to_string());
                let last = i + 1 == comps.len();
                if last && !follow_last {
                    continue;
                }
                if let Some(t) = links.get(&cur.join("/")) {
                    if depth > 40 || t.starts_with('/') {
                        return None;
                    }
                    let base = cur[..cur.len() - 1].join("/");
                    let rest = comps[i + 1..].join("/");
                    let joined = format!("{base}/{t}/{rest}");
                    return resolve(links, &joined, follow_last, depth + 1);
                }
            }
            Some(cur)
        }
        let inside = |p: &[String]| {
            let s: Vec<&str> = scope.split('/').filter(|c| !c.is_empty()).collect();
            p.len() >= s.len() && p.iter().zip(&s).all(|(a, b)| a == b)
        };
        let mut links: HashMap<String, String> = HashMap::new();
        let mut files = 0u64;
        let mut bytes = 0u64;
        let mut entries = 0u64;
        let mut a = tar::Archive::new(out);
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            entries += 1;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            assert!(clean_relative(&name).is_ok(), "output entry {name:?}");
            let kind = e.header().entry_type();
            let at = resolve(&links, &name, false, 0)
                .unwrap_or_else(|| panic!("{name:?} does not resolve"));
            assert!(inside(&at), "{name:?} lands at {at:?}, outside {scope:?}");
            let key = at.join("/");
            // Extraction replaces what was there (a directory over a directory aside),
            // removing its subtree.
            if kind != tar::EntryType::Directory || links.contains_key(&key) {
                let prefix = format!("{key}/");
                links.retain(|k, _| !k.starts_with(&prefix));
            }
            match kind {
                tar::EntryType::Regular => {
                    let mut data = Vec::new();
                    e.read_to_end(&mut data).unwrap();
                    assert_eq!(data.len() as u64, e.header().size().unwrap());
                    bytes += data.len() as u64;
                    files += 1;
                    links.remove(&key);
                }
                tar::EntryType::Directory | tar::EntryType::Link => {
                    links.remove(&key);
                }
                tar::EntryType::Symlink => {
                    let t = String::from_utf8_lossy(&e.link_name_bytes().unwrap()).into_owned();
                    links.insert(key, t);
                }
                other => panic!("{name:?}: {other:?} in the output"),
            }
        }
        for (at, t) in &links {
            let parent = at.rsplit_once('/').map(|p| p.0).unwrap_or("");
            let dest = resolve(&links, &format!("{parent}/{t}"), true, 0)
                .unwrap_or_else(|| panic!("link {at:?} -> {t:?} does not resolve"));
            assert!(inside(&dest), "link {at:?} -> {t:?} ends at {dest:?}");
        }
        assert_eq!(bytes, counted, "counted bytes differ from copied bytes");
        assert!(counted <= limits.max_bytes);
        assert!(entries <= limits.max_entries);
        let _ = files;
    }

    /// A PAX `size` larger than the ustar size: the data it delimits holds headers of a
    /// `../../evil` file and a symlink to `/`, which a reader trusting the ustar size
    /// (here: size 0) would take as entries. Counted and copied as one 1536-byte file.
    #[test]
    fn pax_size_disagreeing_with_ustar_size_is_counted_and_copied_once() {
        let mut smuggled = header_block(b"../../evil", b'0', 0, b"");
        smuggled.extend(header_block(b"root", b'2', 0, b"/"));
        smuggled.extend(header_block(b"pad", b'0', 0, b""));
        assert_eq!(smuggled.len(), 1536);
        let entry = Raw {
            name: "out/a".into(),
            kind: b'0',
            data: smuggled,
            ustar_size: 0,
            pax: vec![("size".into(), "1536".into())],
            ..Default::default()
        };
        let bytes = raw_archive(&[Raw::dir("out"), entry]);
        let (listing, out, counted) = validate_with(&bytes, "out", &LIM).unwrap();
        assert_eq!(counted, 1536);
        assert_eq!(listing.len(), 2);
        assert_eq!(listing[1].size, 1536);
        assert_safe_output(&out, "out", counted, &LIM);
        // The cap sees the PAX size too.
        let small = TarLimits {
            max_bytes: 1000,
            max_entries: 10,
        };
        assert!(matches!(
            validate_with(&bytes, "out", &small),
            Err(TarError::TooLarge { .. })
        ));
    }

    /// A truncated archive (the header promises more than follows) is refused, never
    /// rewritten with a header that disagrees with its data.
    #[test]
    fn truncated_data_is_refused() {
        let mut bytes = header_block(b"out/a", b'0', 4096, b"");
        bytes.extend(vec![b'x'; 512]);
        assert!(validate_with(&bytes, "out", &LIM).is_err());
    }

    #[test]
    fn hostile_long_names_and_pax_paths_are_refused() {
        let long = format!("out/{}/../../../etc/passwd", "d".repeat(120));
        let cases = vec![
            (
                Raw {
                    gnu_long_name: true,
                    ..Raw::file(&long, b"x")
                },
                "..",
            ),
            (
                Raw {
                    pax: vec![("path".into(), "/etc/passwd".into())],
                    ..Raw::file("out/ok", b"x")
                },
                "absolute",
            ),
            (
                Raw {
                    pax: vec![("path".into(), "out/../../x".into())],
                    ..Raw::file("out/ok", b"x")
                },
                "..",
            ),
            (
                Raw {
                    pax: vec![("linkpath".into(), "/".into())],
                    ..Raw::symlink("out/l", "ok")
                },
                "absolute",
            ),
            (
                Raw {
                    gnu_long_link: true,
                    ..Raw::symlink("out/l", &format!("{}../../../..", "x/../".repeat(30)))
                },
                "escapes",
            ),
            (
                Raw {
                    pax: vec![("linkpath".into(), "/etc/shadow".into())],
                    ..Raw::hardlink("out/h", "out/a")
                },
                "absolute",
            ),
            (Raw::symlink("out/l", ""), "empty target"),
            (
                Raw {
                    kind: b'4',
                    ..Raw::file("out/blk", b"")
                },
                "device",
            ),
            (
                Raw {
                    kind: b'S',
                    ..Raw::file("out/sparse", b"")
                },
                "sparse",
            ),
        ];
        for (entry, want) in cases {
            let bytes = raw_archive(&[Raw::dir("out"), Raw::file("out/a", b"a"), entry.clone()]);
            let err = validate_with(&bytes, "out", &LIM)
                .map(|(l, _, _)| l)
                .expect_err(&format!("{entry:?} accepted"))
                .to_string();
            assert!(err.contains(want), "{err} should mention {want:?}");
        }
    }

    /// `c -> .` makes `c/c/c/../..` climb out although it looks balanced: links are
    /// resolved against the entries, in either order, and with a hop limit.
    #[test]
    fn symlink_chains_are_judged_after_full_resolution() {
        let b = "c/c/c/c/c/c/../../../../../..";
        for entries in [
            vec![Raw::symlink("out/c", "."), Raw::symlink("out/b", b)],
            vec![Raw::symlink("out/b", b), Raw::symlink("out/c", ".")],
            vec![
                Raw::symlink("out/b", "c/c/.."),
                Raw::symlink("out/c", "."),
                Raw::file("out/b/x", b"through b"),
            ],
            vec![Raw::symlink("out/l1", "l2"), Raw::symlink("out/l2", "l1/x")],
        ] {
            let bytes = raw_archive(&entries);
            let err = validate_with(&bytes, "out", &LIM)
                .map(|(l, _, _)| l)
                .expect_err(&format!("{entries:?} accepted"));
            assert!(err.is_content_error(), "{err}");
        }
        let self_loop = raw_archive(&[Raw::symlink("out/l", "l"), Raw::file("out/l/x", b"")]);
        let err = validate_with(&self_loop, "out", &LIM)
            .unwrap_err()
            .to_string();
        assert!(err.contains("too many symbolic links"), "{err}");
    }

    /// An entry under a symlink is judged where it lands: inside is fine, outside (the
    /// link itself pointing in, another input's scope out) refused.
    #[test]
    fn entries_under_a_symlink_are_judged_on_the_resolved_path() {
        let ok = raw_archive(&[
            Raw::dir("out"),
            Raw::dir("out/sub"),
            Raw::symlink("out/d", "sub"),
            Raw::file("out/d/f", b"in sub"),
            Raw::hardlink("out/h", "out/d/f"),
        ]);
        let (listing, out, counted) = validate_with(&ok, "out", &LIM).unwrap();
        assert_eq!(listing.len(), 5);
        assert_safe_output(&out, "out", counted, &LIM);
        // A link inside the scope that points at a sibling scope (`..` is fine from a
        // deeper directory): an entry through it lands outside `out/x`.
        let out_of_scope = raw_archive(&[
            Raw::symlink("out/x/up", ".."),
            Raw::file("out/x/up/f", b"lands in out/f"),
        ]);
        let err = validate_with(&out_of_scope, "out/x", &LIM)
            .unwrap_err()
            .to_string();
        assert!(err.contains("escapes"), "{err}");
        // A hard link to a symlink would copy the link into another directory.
        let hard_to_link = raw_archive(&[
            Raw::symlink("out/a/l", "../x"),
            Raw::hardlink("out/h", "out/a/l"),
        ]);
        let err = validate_with(&hard_to_link, "out", &LIM)
            .unwrap_err()
            .to_string();
        assert!(err.contains("hard link"), "{err}");
    }

    /// Input placement: an artifact stored with the chain (before it was refused) at
    /// `/in`, and an inline file under it, never lands outside `/in`.
    #[test]
    fn input_placement_refuses_a_chain_escaping_the_input() {
        let artifact = raw_archive(&[
            Raw::dir("out"),
            Raw::symlink("out/b", "c/c/c/c/c/c/../../../../../.."),
            Raw::symlink("out/c", "."),
        ]);
        let file = std::env::temp_dir().join(format!("tario-chain-{}.tar", uuid::Uuid::new_v4()));
        std::fs::write(&file, &artifact).unwrap();
        let inputs = vec![
            InputFile {
                path: "/in".into(),
                mode: None,
                owner: None,
                data: InputData::ArtifactTar(file.clone()),
            },
            InputFile {
                path: "/in/out/b/etc/x".into(),
                mode: None,
                owner: None,
                data: InputData::Bytes(Bytes::from_static(b"pwned")),
            },
        ];
        let err = build_input_tar_bytes(&inputs, &LIM).unwrap_err();
        assert!(err.is_content_error(), "{err}");
        assert!(err.to_string().contains("in/out/b"), "{err}");
        // A link that loops is refused, and so is anything placed through it.
        let looping = raw_archive(&[Raw::symlink("l", "l")]);
        std::fs::write(&file, &looping).unwrap();
        let inputs = vec![
            InputFile {
                path: "/in".into(),
                mode: None,
                owner: None,
                data: InputData::ArtifactTar(file.clone()),
            },
            InputFile {
                path: "/in/l/x".into(),
                mode: None,
                owner: None,
                data: InputData::Bytes(Bytes::from_static(b"x")),
            },
        ];
        let err = build_input_tar_bytes(&inputs, &LIM).unwrap_err();
        assert!(err.to_string().contains("too many symbolic links"), "{err}");
        std::fs::remove_file(&file).ok();
    }

    mod hostile_grammar {
        use super::*;
        use proptest::prelude::*;

        fn segment() -> impl Strategy<Value = &'static str> {
            prop::sample::select(vec!["a", "b", "c", "out", "..", ".", ""])
        }

        fn path() -> impl Strategy<Value = String> {
            (
                prop::collection::vec(segment(), 1..5),
                prop::bool::weighted(0.1),
            )
                .prop_map(|(segs, abs)| {
                    let p = segs.join("/");
                    if abs {
                        format!("/{p}")
                    } else {
                        p
                    }
                })
        }

        /// Data that parses as headers if a reader trusts the wrong size.
        fn data() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..700),
                (path(), path()).prop_map(|(a, b)| {
                    let mut d = header_block(a.as_bytes(), b'0', 0, b"");
                    d.extend(header_block(b.as_bytes(), b'2', 0, b"/"));
                    d
                }),
            ]
        }

        fn entry() -> impl Strategy<Value = Raw> {
            let kind = prop::sample::select(vec![
                b'0', b'0', b'5', b'2', b'2', b'1', b'3', b'4', b'6', b'7', b'S', b'g', b'L',
            ]);
            (
                (path(), kind, data(), path()),
                (0u8..4, prop::bool::ANY, prop::bool::ANY),
                (
                    prop::option::of(path()),
                    prop::option::of(0u64..2000),
                    prop::option::of(path()),
                ),
            )
                .prop_map(
                    |((name, kind, data, link), (size_mode, gl_name, gl_link), pax)| {
                        let ustar_size = match size_mode {
                            0 | 1 => data.len() as u64,
                            2 => 0,
                            _ => (data.len() as u64).saturating_sub(512),
                        };
                        let (pax_path, pax_size, pax_link) = pax;
                        let mut recs = Vec::new();
                        if let Some(p) = pax_path {
                            recs.push(("path".to_string(), p));
                        }
                        if let Some(s) = pax_size {
                            recs.push(("size".to_string(), s.to_string()));
                        }
                        if let Some(l) = pax_link {
                            recs.push(("linkpath".to_string(), l));
                        }
                        Raw {
                            name,
                            kind,
                            data,
                            ustar_size,
                            link,
                            gnu_long_name: gl_name,
                            gnu_long_link: gl_link,
                            pax: recs,
                        }
                    },
                )
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

            /// Whatever the archive: no panic; if accepted, nothing lands or points
            /// outside the scope after full resolution, counted bytes are copied bytes,
            /// and the caps hold.
            #[test]
            fn hostile_archives_never_escape(
                entries in prop::collection::vec(entry(), 1..8),
                scope in prop::sample::select(vec!["", "out", "out/a"]),
            ) {
                let limits = TarLimits { max_bytes: 2048, max_entries: 6 };
                let bytes = raw_archive(&entries);
                if let Ok((_, out, counted)) = validate_with(&bytes, scope, &limits) {
                    assert_safe_output(&out, scope, counted, &limits);
                }
            }

            /// The same for well-formed archives of links, directories and files, which
            /// are accepted far more often (the hostile grammar is mostly refused early).
            #[test]
            fn link_forests_never_escape(
                entries in prop::collection::vec(
                    (prop::sample::select(vec!["out/a", "out/b", "out/c", "out/a/b", "out/b/c", "out/c/a"]),
                     0u8..3,
                     prop::sample::select(vec![".", "..", "a", "b", "c", "../a", "a/..", "c/c/..", "../..", "b/../.."])),
                    1..8),
            ) {
                let limits = TarLimits { max_bytes: 2048, max_entries: 16 };
                let raws: Vec<Raw> = entries
                    .iter()
                    .map(|(name, k, target)| match k {
                        0 => Raw::symlink(name, target),
                        1 => Raw::dir(name),
                        _ => Raw::file(name, b"x"),
                    })
                    .collect();
                let bytes = raw_archive(&raws);
                if let Ok((_, out, counted)) = validate_with(&bytes, "out", &limits) {
                    assert_safe_output(&out, "out", counted, &limits);
                }
            }
        }
    }
}
