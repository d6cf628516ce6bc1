//! The fuzz entry points: one function per fuzz target of `fuzz/` (cargo-fuzz layout),
//! each taking the raw input bytes. The same functions replay the stored corpus
//! (`fuzz/corpus/<target>/`) in the normal test suite, so a crash found by the fuzzer
//! stays fixed on the stable toolchain too.
//!
//! Each entry feeds the bytes to the code that judges untrusted input at the door (the
//! docker params check, the workflow definition parser, cron expressions with their
//! timezone, the input tar validation, the API's JSON body checks) and asserts what must
//! hold for any input: no panic, and the few invariants noted on each function. Every
//! entry bounds its own work (input caps, tar limits), so no input can make it use
//! unbounded memory or time.

use crate::api::body;
use crate::docker::tario::{self, InputData, InputFile, TarLimits};
use chrono::{TimeZone, Utc};
use highway_workflows::definition::{declared_outputs, WorkflowDefinition};
use highway_workflows::docker_params;
use highway_workflows::schedule::{CronTz, ScheduleSpec};
use highway_workflows::EnqueueRequest;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;

/// Inputs longer than this are cut: the door's own body limit is far below it, and a
/// bounded input keeps each run bounded.
pub const MAX_INPUT: usize = 256 * 1024;

/// The caps the tar target runs with: small, so a hostile archive hits them quickly.
pub const TAR_LIMITS: TarLimits = TarLimits {
    max_bytes: 1 << 20,
    max_entries: 1000,
};

/// Every docker kind the params check knows, plus one it does not.
const DOCKER_KINDS: &[&str] = &[
    "tools.docker.run",
    "tools.docker.inspect",
    "tools.docker.stop",
    "tools.docker.remove",
    "tools.docker.logs",
    "tools.docker.exec",
    "tools.docker.pull",
    "tools.docker.images",
    "tools.docker.commit",
    "tools.docker.nope",
];

fn cut(data: &[u8]) -> &[u8] {
    &data[..data.len().min(MAX_INPUT)]
}

/// `docker_params`: the input is a JSON document. An object `{"kind": K, "params": P}`
/// is checked as kind `K`; any other document is checked as the params of every docker
/// kind. A refusal must name a field.
pub fn docker_params(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(cut(data)) else {
        return;
    };
    let one = |kind: &str, params: &Value| {
        if let Err(e) = docker_params::check(kind, params) {
            assert!(
                !docker_params::request_path(&e).is_empty(),
                "a refusal names no field: {e:?}"
            );
        }
    };
    match (v.get("kind").and_then(Value::as_str), v.get("params")) {
        (Some(kind), Some(params)) => one(kind, params),
        _ => DOCKER_KINDS.iter().for_each(|k| one(k, &v)),
    }
}

/// `workflow_definition`: the input is definition JSON. A parsed definition is valid,
/// so every step's ancestors and declared outputs can be computed.
pub fn workflow_definition(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(cut(data)) else {
        return;
    };
    if let Ok(def) = WorkflowDefinition::from_json(text) {
        for s in &def.steps {
            assert!(
                !def.ancestors(&s.id).contains(s.id.as_str()),
                "a valid definition has a cycle through {:?}",
                s.id
            );
            let _ = declared_outputs(s);
        }
    }
}

/// `cron`: the first line is the expression, the second (if any) the timezone (UTC
/// otherwise). A parsed expression fires, and its next fires strictly increase.
pub fn cron(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(&data[..data.len().min(4096)]) else {
        return;
    };
    let (expr, tz) = text.split_once('\n').unwrap_or((text, "UTC"));
    let Ok(c) = CronTz::parse(expr, tz.trim_end_matches('\n')) else {
        return;
    };
    let mut at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
    for _ in 0..4 {
        let Some(next) = c.next_after(at) else {
            break;
        };
        assert!(next > at, "next fire {next} is not after {at}");
        at = next;
    }
    let _ = c.preview(at, 3);
}

/// `tar_input`: the input is an archive, used as a stored artifact placed at `/in` of a
/// run (the input tar path), and read by the one entry reader. Whatever the archive, the
/// input tar built from it holds nothing outside `in/`.
pub fn tar_input(data: &[u8]) {
    let data = cut(data);
    if tario::check_not_compressed(data).is_err() {
        return;
    }
    let mut sink = Vec::new();
    let _ = tario::for_each_entry(data, |_, r| {
        sink.clear();
        r.take(TAR_LIMITS.max_bytes).read_to_end(&mut sink)?;
        Ok(())
    });
    let path = artifact_file();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let inputs = [InputFile {
        path: "/in".into(),
        mode: None,
        owner: None,
        data: InputData::ArtifactTar(path),
    }];
    let built = tario::build_input_tar_bytes(&inputs, &TAR_LIMITS);
    std::fs::remove_file(artifact_file()).ok();
    let Ok(out) = built else {
        return;
    };
    tario::for_each_entry(&out[..], |m, _| {
        assert!(
            m.name == "in" || m.name.starts_with("in/"),
            "input tar entry {:?} lies outside its input's path",
            m.name
        );
        Ok(())
    })
    .expect("the input tar this module built reads back");
}

/// One scratch file per process (and thread) for the artifact tar input, removed after
/// each input.
fn artifact_file() -> PathBuf {
    let dir = std::env::temp_dir();
    let thread = format!("{:?}", std::thread::current().id());
    let thread: String = thread.chars().filter(char::is_ascii_digit).collect();
    dir.join(format!(
        "highway-fuzz-tar-{}-{thread}.tar",
        std::process::id()
    ))
}

/// `api_body`: the input is a request body. It goes through the door's document check
/// and then, as the handlers do, is decoded into the typed bodies. A document the check
/// accepts is JSON.
pub fn api_body(data: &[u8]) {
    let data = cut(data);
    if !data.iter().all(u8::is_ascii_whitespace) && body::check_document(data).is_ok() {
        assert!(
            body::decode::<Value>(data).is_ok(),
            "check_document accepted a body that is not JSON"
        );
    }
    let _ = body::decode::<EnqueueRequest>(data);
    let _ = body::decode::<ScheduleSpec>(data);
}
