//! Artifacts in Postgres and the snapshot cache per Docker daemon: outputs stored as
//! chunks and taken as inputs by a worker that has none of them on disk, a corrupted
//! chunk failing the consuming attempt (`ArtifactCorrupt`) with no container left, the
//! filesystem store chosen explicitly, a cache hit recorded on another daemon treated as
//! a miss, and the build container of a cache miss removed as soon as it is committed.

use highway_tests::docker::{assert_no_containers, docker, ensure_test_image, TEST_IMAGE};
use highway_tests::{TestDb, TestWorker};
use highway_worker::config::docker::{ArtifactStoreSetting, DockerConfig};
use highway_worker::docker::client::{ClientSettings, DockerClient};
use highway_worker::docker::{DockerRuntime, RunHandler};
use highway_worker::executor::{ActivityContext, Handler, HandlerResult};
use highway_worker::workflow::DockerDigests;
use highway_workflows::definition::WorkflowDefinition;
use highway_workflows::runs::{self, ImageDigests, RunStatus};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

const TENANT: &str = "tenant-a";
const WAIT: Duration = Duration::from_secs(90);
const CACHED: &str = include_str!("../../workflows/examples/cached.json");

/// 3 MiB and a bit: four chunks, the last one short.
const OUTPUT_BYTES: u64 = 3 * 1024 * 1024 + 4321;

/// A run handler with its own artifact directory, on a shared database.
struct Node {
    handler: RunHandler,
    worker_id: Uuid,
    dir: PathBuf,
}

impl Node {
    fn new(pool: &sqlx::PgPool, store: ArtifactStoreSetting) -> Self {
        let dir = std::env::temp_dir().join(format!("highway-adb-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = DockerConfig {
            artifact_store: store,
            ..DockerConfig::default()
        };
        let worker_id = Uuid::new_v4();
        let runtime = Arc::new(DockerRuntime::new(
            config,
            pool.clone(),
            worker_id,
            dir.clone(),
        ));
        Self {
            handler: RunHandler::new(runtime),
            worker_id,
            dir,
        }
    }

    async fn run(&self, activity: Uuid, params: Value) -> HandlerResult {
        let ctx = ActivityContext::new(
            activity,
            1,
            "tools.docker.run".to_string(),
            TENANT.to_string(),
            None,
            self.worker_id,
            "default".to_string(),
            None,
        );
        self.handler.run(ctx, params).await
    }

    /// Every file under the artifact directory (the partial area included).
    fn files(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.push(p);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.dir, &mut out);
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn activity(pool: &sqlx::PgPool) -> Uuid {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO highway.activities (id, tenant_id, kind, params) VALUES ($1, $2, 'tools.docker.run', '{}')",
    )
    .bind(id)
    .bind(TENANT)
    .execute(pool)
    .await
    .unwrap();
    id
}

/// A run writing `OUTPUT_BYTES` random bytes to `/out/r.bin`; returns (artifact id, sha256).
async fn produce(node: &Node, pool: &sqlx::PgPool) -> (Uuid, String) {
    let a = activity(pool).await;
    let out = node
        .run(
            a,
            json!({"image": TEST_IMAGE, "command": ["sh", "-c",
                   format!("head -c {OUTPUT_BYTES} /dev/urandom > /out/r.bin; sha256sum /out/r.bin | cut -d' ' -f1")],
                   "outputs": ["/out/r.bin"]}),
        )
        .await
        .expect("producer run succeeds");
    assert_no_containers(&docker().await, a).await;
    let id = out["outputs"]["id"].as_str().unwrap().parse().unwrap();
    (id, out["stdout"].as_str().unwrap().trim().to_string())
}

/// A run that takes the artifact at `/in` and prints the file's sha256.
async fn consume(node: &Node, pool: &sqlx::PgPool, artifact: Uuid) -> (Uuid, HandlerResult) {
    let a = activity(pool).await;
    let r = node
        .run(
            a,
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "sha256sum /in/out/r.bin | cut -d' ' -f1"],
                   "inputs": [{"path": "/in", "artifact": artifact}]}),
        )
        .await;
    (a, r)
}

/// (storage, state, chunk rows, bytes in chunks, size_bytes) of an artifact.
async fn stored(pool: &sqlx::PgPool, id: Uuid) -> (String, String, i64, i64, i64) {
    sqlx::query_as(
        "SELECT a.storage, a.state, count(c.seq), COALESCE(sum(octet_length(c.data)), 0)::int8, a.size_bytes
           FROM highway.artifacts a LEFT JOIN highway.artifact_chunks c ON c.artifact_id = a.id
          WHERE a.id = $1 GROUP BY a.id",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// By default outputs are stored as chunks in Postgres and nothing on the worker's disk;
/// a worker with another artifact directory (it has none of the first one's files) takes
/// them as input, byte for byte.
#[tokio::test]
async fn outputs_land_in_postgres_and_a_worker_without_them_on_disk_takes_them() {
    ensure_test_image();
    let db = TestDb::new().await;
    let host_a = Node::new(&db.pool, ArtifactStoreSetting::default());
    let host_b = Node::new(&db.pool, ArtifactStoreSetting::default());
    let (id, sha) = produce(&host_a, &db.pool).await;
    let (storage, state, chunks, bytes, size) = stored(&db.pool, id).await;
    assert_eq!((storage.as_str(), state.as_str()), ("postgres", "complete"));
    assert_eq!(bytes, size, "the chunks hold the whole tar");
    assert!(size as u64 > OUTPUT_BYTES);
    assert_eq!(
        chunks,
        (size as u64).div_ceil(1 << 20) as i64,
        "1 MiB chunks"
    );
    assert!(host_a.files().is_empty(), "on disk: {:?}", host_a.files());

    let (a, r) = consume(&host_b, &db.pool, id).await;
    let out = r.expect("the other host's run takes the artifact");
    assert_eq!(out["stdout"].as_str().unwrap().trim(), sha);
    assert!(host_b.files().is_empty(), "on disk: {:?}", host_b.files());
    assert_no_containers(&docker().await, a).await;
}

/// One changed byte in a stored chunk: the consuming attempt fails with the
/// non-retryable `ArtifactCorrupt` before its container starts, and the container is
/// removed. Both a byte of file content (the tar still parses) and one of a tar header
/// (the tar reader fails first) are reported as corruption.
#[tokio::test]
async fn a_corrupted_chunk_fails_the_consuming_attempt_and_leaves_no_container() {
    ensure_test_image();
    let db = TestDb::new().await;
    let node = Node::new(&db.pool, ArtifactStoreSetting::default());
    let d = docker().await;
    // (chunk, offset in it): inside r.bin's content, and inside the first tar header.
    for (seq, offset) in [(2, 4242), (0, 100)] {
        let (id, _) = produce(&node, &db.pool).await;
        let changed = sqlx::query(
            "UPDATE highway.artifact_chunks
                SET data = set_byte(data, $3, (get_byte(data, $3) + 1) % 256)
              WHERE artifact_id = $1 AND seq = $2",
        )
        .bind(id)
        .bind(seq)
        .bind(offset)
        .execute(&db.pool)
        .await
        .unwrap();
        assert_eq!(changed.rows_affected(), 1);
        let (a, r) = consume(&node, &db.pool, id).await;
        let e = r.expect_err("a corrupt artifact must fail the run");
        assert_eq!(e.error_type, "ArtifactCorrupt", "chunk {seq}: {e:?}");
        assert!(!e.retryable, "{e:?}");
        assert!(e.message.contains("corrupt"), "{e:?}");
        assert_no_containers(&d, a).await;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM highway.docker_containers WHERE activity_id = $1 AND removed_at IS NULL",
        )
        .bind(a)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(open, 0, "tracking rows of activity {a} not closed");
    }
}

/// `HIGHWAY_ARTIFACT_STORE=fs:/dir`: outputs are tar files there (no chunks), and read
/// back as inputs.
#[tokio::test]
async fn the_filesystem_store_works_when_chosen() {
    ensure_test_image();
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("highway-adb-fs-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let node = Node::new(
        &db.pool,
        ArtifactStoreSetting::Filesystem(Some(dir.clone())),
    );
    let (id, sha) = produce(&node, &db.pool).await;
    let (storage, state, chunks, _, size) = stored(&db.pool, id).await;
    assert_eq!((storage.as_str(), state.as_str()), ("fs", "complete"));
    assert_eq!(chunks, 0);
    let file = dir.join(format!("{id}.tar"));
    assert_eq!(std::fs::metadata(&file).unwrap().len(), size as u64);
    let (a, r) = consume(&node, &db.pool, id).await;
    assert_eq!(
        r.expect("input from the fs store")["stdout"]
            .as_str()
            .unwrap()
            .trim(),
        sha
    );
    assert_no_containers(&docker().await, a).await;
    // A Postgres-store worker without that directory cannot read it: not found.
    let other = Node::new(&db.pool, ArtifactStoreSetting::default());
    let (a2, r2) = consume(&other, &db.pool, id).await;
    let e = r2.expect_err("the file is on another host's disk");
    assert_eq!(e.error_type, "ArtifactNotFound", "{e:?}");
    assert_no_containers(&docker().await, a2).await;
}

// ---------------------------------------------------------------------------------
// The snapshot cache per daemon

fn fresh_digests() -> Arc<dyn ImageDigests> {
    Arc::new(DockerDigests::with_ttl(
        DockerClient::new(ClientSettings::default()),
        Duration::ZERO,
    ))
}

/// A database and an in-process worker with the docker kinds (Postgres artifacts).
struct Wf {
    db: TestDb,
    worker: Option<TestWorker>,
    dir: PathBuf,
    /// The `version` input: a cache key (and snapshot tag) no other test on this daemon
    /// uses.
    version: String,
}

impl Wf {
    async fn new() -> Self {
        ensure_test_image();
        let db = TestDb::new().await;
        let dir = std::env::temp_dir().join(format!("highway-adb-wf-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut opts = TestWorker::fast_options(4);
        opts.digests = highway_worker::workflow::Digests(fresh_digests());
        let rt = Arc::new(DockerRuntime::new(
            DockerConfig::default(),
            db.pool.clone(),
            opts.id,
            dir.clone(),
        ));
        let worker = TestWorker::start(&db.pool, opts, |r| {
            highway_worker::docker::register(r, rt.clone())
        });
        Self {
            db,
            worker: Some(worker),
            dir,
            version: Uuid::new_v4().simple().to_string(),
        }
    }

    async fn run_cached(&self) -> RunStatus {
        let def = WorkflowDefinition::from_json(CACHED).unwrap();
        let inputs: BTreeMap<String, String> = [
            ("image".to_string(), TEST_IMAGE.to_string()),
            ("version".to_string(), self.version.clone()),
        ]
        .into();
        let run = runs::start_run(
            &self.db.client(),
            TENANT,
            &def,
            &inputs,
            fresh_digests().as_ref(),
        )
        .await
        .expect("run starts");
        runs::wait_run(&self.db.pool, run, Some(TENANT), WAIT)
            .await
            .expect("run finishes")
    }

    /// Removes the snapshots the run's misses committed, and checks no container is left.
    async fn finish(mut self) {
        let d = docker().await;
        let images: Vec<(String,)> = sqlx::query_as(
            "SELECT reference FROM highway.docker_images WHERE daemon_id IS DISTINCT FROM 'another-daemon'",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        for (img,) in images {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &img])
                .output();
        }
        let ids: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM highway.activities")
            .fetch_all(&self.db.pool)
            .await
            .unwrap();
        if let Some(w) = self.worker.take() {
            w.stop().await;
        }
        for (id,) in ids {
            assert_no_containers(&d, id).await;
        }
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

impl Drop for Wf {
    /// The directory goes even when an assertion failed before `finish`.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a directory when dropped (a failed assertion included).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn step<'a>(s: &'a RunStatus, id: &str) -> &'a runs::StepStatus {
    s.steps.iter().find(|x| x.step_id == id).expect("step")
}

/// A snapshot recorded by a worker on another Docker daemon (its `docker_images` row has
/// that daemon's id and an image this daemon does not have) is not a hit here: the step
/// runs and commits its own snapshot, instead of being skipped with an image that is
/// not on this daemon.
#[tokio::test]
async fn a_cache_hit_recorded_on_another_daemon_is_a_miss_here() {
    let wf = Wf::new().await;
    // The snapshot reference the step's key gives on this image.
    let digest = fresh_digests().digest(TENANT, TEST_IMAGE).await.unwrap();
    let tag = runs::cache_tag("cached", "build", &format!("build-{}", wf.version), &digest);
    let reference = format!(
        "highway/{}/{}:{tag}",
        highway_workflows::docker_tools::tenant_namespace(TENANT),
        runs::CACHE_REPOSITORY
    );
    let foreign = format!("sha256:{}", "ab".repeat(32));
    sqlx::query(
        "INSERT INTO highway.docker_images (image_id, tenant_id, reference, daemon_id, expires_at)
         VALUES ($1, $2, $3, 'another-daemon', now() + interval '1 day')",
    )
    .bind(&foreign)
    .bind(TENANT)
    .bind(&reference)
    .execute(&wf.db.pool)
    .await
    .unwrap();
    let s = wf.run_cached().await;
    assert_eq!(s.status, "succeeded", "{s:#?}");
    let b = step(&s, "build");
    assert_eq!(b.cache_decision.as_deref(), Some("miss-build-as"), "{s:#?}");
    assert!(b.activity_id.is_some(), "the step ran: {s:#?}");
    let built = format!("built-v{}\n", wf.version);
    assert_eq!(s.result.as_ref().unwrap()["use"]["stdout"], built.as_str());
    // Its own snapshot is recorded for this daemon, and a second run hits it.
    let own: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.docker_images WHERE reference = $1 AND image_id <> $2",
    )
    .bind(&reference)
    .bind(&foreign)
    .fetch_one(&wf.db.pool)
    .await
    .unwrap();
    assert_eq!(own, 1);
    let s2 = wf.run_cached().await;
    assert_eq!(
        step(&s2, "build").cache_decision.as_deref(),
        Some("hit"),
        "{s2:#?}"
    );
    assert_eq!(s2.result.as_ref().unwrap()["use"]["stdout"], built.as_str());
    wf.finish().await;
}

/// The container a cache miss kept for its commit is removed by the commit itself: gone
/// from the daemon and closed in the tracking table as soon as the run succeeded, not
/// left exited for the retention.
#[tokio::test]
async fn the_build_container_of_a_miss_is_removed_once_committed() {
    let wf = Wf::new().await;
    let d = docker().await;
    let s = wf.run_cached().await;
    assert_eq!(s.status, "succeeded", "{s:#?}");
    let b = step(&s, "build");
    assert_eq!(b.cache_decision.as_deref(), Some("miss-build-as"), "{s:#?}");
    let build = b.activity_id.unwrap();
    let left = highway_tests::docker::managed_containers(&d, build).await;
    assert!(
        left.is_empty(),
        "build container left after the commit: {:?}",
        left.iter()
            .map(|c| (c.id.clone(), c.state))
            .collect::<Vec<_>>()
    );
    let rows: Vec<(Option<chrono::DateTime<chrono::Utc>>,)> =
        sqlx::query_as("SELECT removed_at FROM highway.docker_containers WHERE activity_id = $1")
            .bind(build)
            .fetch_all(&wf.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].0.is_some(), "tracking row not marked removed");
    wf.finish().await;
}

/// Retention deletes expired Postgres artifacts and writes abandoned by a crash (the
/// chunks go through the cascade), and leaves a write in progress alone; readers refuse
/// an artifact that was never completed.
#[tokio::test]
async fn retention_deletes_expired_and_abandoned_artifacts_with_their_chunks() {
    use highway_worker::docker::artifacts::{ArtifactStore, Backend, Retention};
    let db = TestDb::new().await;
    let row = |state: &'static str, touched: &'static str, expires: Option<&'static str>| {
        let pool = db.pool.clone();
        async move {
            let id = Uuid::now_v7();
            sqlx::query(&format!(
                "INSERT INTO highway.artifacts (id, tenant_id, kind, size_bytes, sha256, entry_count,
                     storage, state, chunk_count, touched_at, expires_at)
                 VALUES ($1, $2, 'outputs', 1, CASE WHEN $3 = 'complete' THEN repeat('0', 64) END, 1,
                     'postgres', $3, CASE WHEN $3 = 'complete' THEN 1 END,
                     now() - interval '{touched}', now() + $4::interval)"
            ))
            .bind(id)
            .bind(TENANT)
            .bind(state)
            .bind(expires)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO highway.artifact_chunks (artifact_id, seq, data) VALUES ($1, 0, '\\x00')")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
            id
        }
    };
    let abandoned = row("writing", "2 hours", None).await;
    let in_progress = row("writing", "1 second", None).await;
    let expired = row("complete", "1 day", Some("-1 minute")).await;
    let live = row("complete", "1 day", Some("1 day")).await;
    let store = ArtifactStore::new(db.pool.clone(), Backend::Postgres);
    let e = store.load(TENANT, in_progress).await.unwrap_err();
    assert!(e.to_string().contains("never completed"), "{e}");
    let counts = Retention::new(db.pool.clone(), Duration::from_secs(60))
        .run_once()
        .await
        .unwrap();
    assert_eq!((counts.expired, counts.abandoned), (1, 1), "{counts:?}");
    let left: Vec<(Uuid,)> =
        sqlx::query_as("SELECT artifact_id FROM highway.artifact_chunks ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut want = vec![(in_progress,), (live,)];
    want.sort();
    assert_eq!(left, want, "abandoned {abandoned}, expired {expired}");
}
