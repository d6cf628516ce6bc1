//! The spool between `tario`'s validating tar writer, which writes a `std::fs::File`,
//! and the Postgres uploader, which reads the file back while it grows.
//!
//! Owns: an unnamed temporary file (`O_TMPFILE`: never visible in a directory, gone with
//! the process even after a crash) whose consumed ranges are given back to the file
//! system with `fallocate(PUNCH_HOLE)`, and the backpressure that holds the writer while
//! more than [`MAX_LAG`] bytes wait to be uploaded. So disk and memory use stay about
//! `MAX_LAG` whatever the artifact's size.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Most bytes written to the spool and not yet uploaded before the writer waits. Eight
/// upload chunks: enough to keep the uploader busy while the container's download
/// arrives in bursts, small enough to be nothing on any disk.
pub const MAX_LAG: u64 = 8 << 20;

/// How often a side re-checks the file when no notification came (the tar writer writes
/// on its own thread, some time after it was handed the bytes).
const RECHECK: Duration = Duration::from_millis(10);

/// The shared state of one spool: its file, how far the uploader got, and wake-ups.
#[derive(Debug)]
pub struct Spool {
    file: Arc<File>,
    /// Bytes uploaded and released (the reader's offset).
    consumed: AtomicU64,
    /// The writer closed the tar: every byte is in the file.
    finished: AtomicBool,
    /// One side gave up (upload failed, or the artifact was discarded).
    aborted: AtomicBool,
    /// The uploader released bytes (the writer may go on).
    room: Notify,
    /// The writer handed over bytes (the uploader may look again).
    data: Notify,
    /// Hole punching is not supported by this file system (then the file just grows).
    no_punch: AtomicBool,
}

fn aborted() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "artifact upload stopped")
}

/// Opens an unnamed temporary file in `dir`; where `O_TMPFILE` is not supported, a named
/// one removed at once.
fn unnamed_file(dir: &Path) -> io::Result<File> {
    let tmp = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmp {
        Ok(f) => Ok(f),
        Err(_) => {
            let path = dir.join(format!(".highway-spool-{}", uuid::Uuid::new_v4()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
    }
}

impl Spool {
    /// A new spool in `dir`: the file handle the tar writer writes through, and the
    /// shared state.
    pub fn create(dir: &Path) -> io::Result<(File, Arc<Spool>)> {
        let file = unnamed_file(dir)?;
        let writer = file.try_clone()?;
        Ok((
            writer,
            Arc::new(Spool {
                file: Arc::new(file),
                consumed: AtomicU64::new(0),
                finished: AtomicBool::new(false),
                aborted: AtomicBool::new(false),
                room: Notify::new(),
                data: Notify::new(),
                no_punch: AtomicBool::new(false),
            }),
        ))
    }

    fn written(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn has_room(&self) -> io::Result<bool> {
        if self.aborted.load(Ordering::Acquire) {
            return Err(aborted());
        }
        let waiting = self
            .written()?
            .saturating_sub(self.consumed.load(Ordering::Acquire));
        Ok(waiting <= MAX_LAG)
    }

    // ----------------------------------------------------------- writer side

    /// Waits while more than [`MAX_LAG`] bytes wait for the uploader.
    pub async fn wait_for_room(&self) -> io::Result<()> {
        while !self.has_room()? {
            tokio::select! {
                _ = self.room.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
        Ok(())
    }

    /// The same for a writer on a blocking thread.
    pub fn wait_for_room_blocking(&self) -> io::Result<()> {
        while !self.has_room()? {
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Bytes were handed to the tar writer.
    pub fn wrote(&self) {
        self.data.notify_one();
    }

    /// The tar is closed and synced: the uploader drains the rest and stops.
    pub fn finish(&self) {
        self.finished.store(true, Ordering::Release);
        self.data.notify_one();
    }

    /// Either side stops: the other one's next wait fails.
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.room.notify_one();
        self.data.notify_one();
    }

    // ----------------------------------------------------------- uploader side

    /// The next `max` bytes (fewer at the end), once they are in the file; `None` when
    /// everything was read.
    pub async fn next_chunk(&self, max: usize) -> io::Result<Option<Vec<u8>>> {
        loop {
            if self.aborted.load(Ordering::Acquire) {
                return Err(aborted());
            }
            // `finished` first: once it is set, the length read after it is final.
            let finished = self.finished.load(Ordering::Acquire);
            let offset = self.consumed.load(Ordering::Acquire);
            let available = self.written()?.saturating_sub(offset);
            if available >= max as u64 || (finished && available > 0) {
                let n = available.min(max as u64) as usize;
                let file = self.file.clone();
                let buf = tokio::task::spawn_blocking(move || -> io::Result<Vec<u8>> {
                    let mut buf = vec![0u8; n];
                    file.read_exact_at(&mut buf, offset)?;
                    Ok(buf)
                })
                .await
                .map_err(|e| io::Error::other(e.to_string()))??;
                return Ok(Some(buf));
            }
            if finished {
                return Ok(None);
            }
            tokio::select! {
                _ = self.data.notified() => {}
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }

    /// The `len` bytes after the offset are uploaded: free their space, let the writer on.
    pub fn release(&self, len: u64) {
        let offset = self.consumed.load(Ordering::Acquire);
        if !self.no_punch.load(Ordering::Relaxed) {
            use rustix::fs::FallocateFlags as F;
            if let Err(e) =
                rustix::fs::fallocate(&*self.file, F::PUNCH_HOLE | F::KEEP_SIZE, offset, len)
            {
                // Correct either way; only the bounded disk use is lost.
                tracing::warn!(error = %e, "artifact spool: cannot punch holes; the spool file grows");
                self.no_punch.store(true, Ordering::Relaxed);
            }
        }
        self.consumed.store(offset + len, Ordering::Release);
        self.room.notify_one();
    }

    /// Disk blocks the spool holds now (tests: the bound on disk use).
    pub fn allocated_bytes(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.file.metadata()?.blocks() * 512)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Bytes come out in order and complete, and the writer is held back so the spool
    /// never holds much more than `MAX_LAG` on disk, however much goes through it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_in_order_with_bounded_disk() {
        let (file, spool) = Spool::create(&std::env::temp_dir()).unwrap();
        let total: u64 = 64 << 20;
        let s = spool.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let mut w = std::io::BufWriter::with_capacity(256 * 1024, file);
            let mut x: u8 = 0;
            let mut written = 0u64;
            while written < total {
                s.wait_for_room_blocking().unwrap();
                let block: Vec<u8> = (0..65536)
                    .map(|_| {
                        x = x.wrapping_add(1);
                        x
                    })
                    .collect();
                w.write_all(&block).unwrap();
                written += block.len() as u64;
            }
            w.flush().unwrap();
            s.finish();
        });
        let mut expect: u8 = 0;
        let mut got = 0u64;
        let mut peak = 0u64;
        while let Some(chunk) = spool.next_chunk(1 << 20).await.unwrap() {
            for b in &chunk {
                expect = expect.wrapping_add(1);
                assert_eq!(*b, expect, "byte {got}");
                got += 1;
            }
            peak = peak.max(spool.allocated_bytes().unwrap());
            spool.release(chunk.len() as u64);
        }
        writer.await.unwrap();
        assert_eq!(got, total);
        assert!(
            peak <= MAX_LAG + (2 << 20),
            "spool held {peak} bytes on disk"
        );
    }

    #[tokio::test]
    async fn abort_stops_a_waiting_writer() {
        let (mut file, spool) = Spool::create(&std::env::temp_dir()).unwrap();
        file.write_all(&vec![0u8; (MAX_LAG + 1) as usize]).unwrap();
        let s = spool.clone();
        let waiting = tokio::spawn(async move { s.wait_for_room().await });
        spool.abort();
        assert!(waiting.await.unwrap().is_err());
    }
}
