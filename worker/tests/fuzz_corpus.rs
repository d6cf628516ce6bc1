//! Replays every stored fuzz input (`fuzz/corpus/<target>/`) through the target's entry
//! in `highway_worker::fuzzing`, on the stable toolchain: no input panics, each finishes
//! within a time bound, and the process's peak memory stays bounded. A crash the fuzzer
//! found is kept as a corpus file, so it stays fixed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Far above what any corpus input takes in a debug build; a hang or a blow-up is not.
const PER_INPUT: Duration = Duration::from_secs(10);
/// Peak resident memory of the whole test process after the replay.
const PEAK_RSS_KIB: u64 = 1024 * 1024;

fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "corpus {} holds {} inputs; it is seeded with at least 10",
        dir.display(),
        files.len()
    );
    files
}

fn replay(target: &str, entry: fn(&[u8])) {
    for file in corpus(target) {
        let data = std::fs::read(&file).expect("read corpus input");
        let t0 = Instant::now();
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panic!("{target}: {} panics", file.display());
        }
        let took = t0.elapsed();
        assert!(
            took < PER_INPUT,
            "{target}: {} took {took:?} (bound {PER_INPUT:?})",
            file.display()
        );
    }
    let peak = peak_rss_kib();
    assert!(
        peak < PEAK_RSS_KIB,
        "{target}: peak RSS {peak} KiB after the replay (bound {PEAK_RSS_KIB} KiB)"
    );
}

/// `VmHWM` of this process (Linux), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

#[test]
fn docker_params_corpus() {
    replay("docker_params", highway_worker::fuzzing::docker_params);
}

#[test]
fn workflow_definition_corpus() {
    replay(
        "workflow_definition",
        highway_worker::fuzzing::workflow_definition,
    );
}

#[test]
fn cron_corpus() {
    replay("cron", highway_worker::fuzzing::cron);
}

#[test]
fn tar_input_corpus() {
    replay("tar_input", highway_worker::fuzzing::tar_input);
}

#[test]
fn api_body_corpus() {
    replay("api_body", highway_worker::fuzzing::api_body);
}
