//! Docker helpers of the integration tests: a checked connection to the real daemon
//! (unreachable = a failing test with a clear message, never a skip), the offline test
//! image, a `DockerRuntime` + `RunHandler` wired to a test database, the labelled
//! containers of an activity, and a private `docker-registry` on loopback for pull tests.

use bollard::models::ContainerSummary;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use bollard::Docker;
use highway_worker::config::docker::DockerConfig;
use highway_worker::docker::runtime::RunSettings;
use highway_worker::docker::secrets::EnvSecretResolver;
use highway_worker::docker::{DockerRuntime, RunHandler};
use highway_worker::executor::{ActivityContext, Handler, HandlerResult};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The image `scripts/build-test-image.sh` builds (static busybox, no registry).
pub const TEST_IMAGE: &str = "highway-test/busybox:1";

/// Prefix of the secret variables the tests' resolver reads (never the real environment).
pub const SECRET_PREFIX: &str = "HIGHWAY_TEST_SECRET_";

/// A connection to the machine's daemon; panics with a clear message when it is down.
pub async fn docker() -> Docker {
    let d = Docker::connect_with_local_defaults().unwrap_or_else(|e| {
        panic!("Docker daemon unreachable (these tests need it; they never skip): {e}")
    });
    if let Err(e) = d.ping().await {
        panic!("Docker daemon unreachable (these tests need it; they never skip): {e}");
    }
    d
}

/// `DOCKER_HOST` of the tests' second daemon ("host B"), which `scripts/test.sh` starts
/// (`scripts/second-docker.sh`); panics with how to get one when it is not set.
pub fn docker_b_host() -> String {
    std::env::var("HIGHWAY_TEST_DOCKER_B_HOST").unwrap_or_else(|_| {
        panic!(
            "HIGHWAY_TEST_DOCKER_B_HOST is not set: run the tests with ./scripts/test.sh, \
             which starts a second Docker daemon of its own (these tests never skip)"
        )
    })
}

/// A connection to the second daemon; panics with a clear message when it is down.
pub async fn docker_b() -> Docker {
    let host = docker_b_host();
    let path = host.trim_start_matches("unix://");
    let d = Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        .unwrap_or_else(|e| panic!("second Docker daemon {host} unreachable: {e}"));
    if let Err(e) = d.ping().await {
        panic!("second Docker daemon {host} unreachable: {e}");
    }
    d
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Builds the test image once per process (the script is idempotent).
pub fn ensure_test_image() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/build-test-image.sh"))
            .output()
            .expect("run scripts/build-test-image.sh");
        assert!(
            out.status.success(),
            "scripts/build-test-image.sh failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// Every container (any state) labelled as ours for this activity.
pub async fn managed_containers(docker: &Docker, activity_id: Uuid) -> Vec<ContainerSummary> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![
            "highway.managed=true".to_string(),
            format!("highway.activity_id={activity_id}"),
        ],
    );
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(opts))
        .await
        .expect("list containers")
}

/// Force-removes whatever a failed test left behind, then fails if anything was left.
pub async fn assert_no_containers(docker: &Docker, activity_id: Uuid) {
    let left = managed_containers(docker, activity_id).await;
    for c in &left {
        if let Some(id) = &c.id {
            let _ = docker
                .remove_container(
                    id,
                    Some(
                        RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .v(true)
                            .build(),
                    ),
                )
                .await;
        }
    }
    assert!(
        left.is_empty(),
        "containers of activity {activity_id} left behind: {:?}",
        left.iter()
            .map(|c| (c.id.clone(), c.state))
            .collect::<Vec<_>>()
    );
}

/// Waits until a container of the activity is running; returns its id.
pub async fn wait_running(docker: &Docker, activity_id: Uuid, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        for c in managed_containers(docker, activity_id).await {
            if c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING) {
                return c.id.expect("container id");
            }
        }
        assert!(
            Instant::now() < deadline,
            "no running container for activity {activity_id} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A run handler on a fresh database, with a private artifact directory.
pub struct DockerHarness {
    pub db: crate::TestDb,
    pub runtime: Arc<DockerRuntime>,
    pub handler: RunHandler,
    pub docker: Docker,
    pub worker_id: Uuid,
    pub tenant: String,
    artifact_dir: PathBuf,
    /// The test database's deployment identity: every container this harness's runtime
    /// creates carries it, and no other test's does.
    deployment_id: Uuid,
}

impl DockerHarness {
    pub async fn new() -> Self {
        Self::with(|_, _| {}).await
    }

    /// `tweak` adjusts the config and run settings before the runtime is built.
    pub async fn with(tweak: impl FnOnce(&mut DockerConfig, &mut RunSettings)) -> Self {
        let docker = docker().await;
        ensure_test_image();
        let db = crate::TestDb::new().await;
        let worker_id = Uuid::new_v4();
        let artifact_dir =
            std::env::temp_dir().join(format!("highway-artifacts-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&artifact_dir).expect("artifact dir");
        let mut config = DockerConfig::default();
        let mut settings = RunSettings::from_config(&config);
        tweak(&mut config, &mut settings);
        let runtime = DockerRuntime::new(config, db.pool.clone(), worker_id, artifact_dir.clone())
            .with_secrets(Arc::new(EnvSecretResolver::with_prefix(SECRET_PREFIX)))
            .with_settings(settings);
        let runtime = Arc::new(runtime);
        let deployment_id = db.deployment_id().await;
        Self {
            handler: RunHandler::new(runtime.clone()),
            runtime,
            db,
            docker,
            worker_id,
            tenant: "tenant-a".to_string(),
            artifact_dir,
            deployment_id,
        }
    }

    /// Inserts an activity row (log lines reference it) and returns its id.
    pub async fn activity(&self) -> Uuid {
        let id = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO highway.activities (id, tenant_id, kind, params) VALUES ($1, $2, $3, '{}')",
        )
        .bind(id)
        .bind(&self.tenant)
        .bind("tools.docker.run")
        .execute(&self.db.pool)
        .await
        .expect("insert activity");
        id
    }

    pub fn ctx(&self, activity_id: Uuid, attempt: i32) -> ActivityContext {
        ActivityContext::new(
            activity_id,
            attempt,
            "tools.docker.run".to_string(),
            self.tenant.clone(),
            None,
            self.worker_id,
            "default".to_string(),
            None,
        )
    }

    pub async fn run(&self, ctx: ActivityContext, params: serde_json::Value) -> HandlerResult {
        self.handler.run(ctx, params).await
    }

    /// Lines stored for an activity, in order: (stream, line).
    pub async fn log_lines(&self, activity_id: Uuid) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT stream, line FROM highway.activity_logs WHERE activity_id = $1 ORDER BY seq",
        )
        .bind(activity_id)
        .fetch_all(&self.db.pool)
        .await
        .expect("read activity_logs")
    }
}

/// Force-removes every container labelled with `deployment` or named after `name_prefix`
/// (a test's unlabelled helpers): what a failed test leaves must not leak into the
/// machine. Synchronous (the docker CLI), for `Drop`.
pub fn remove_leftovers(deployment: &str, name_prefix: Option<&str>) {
    remove_leftovers_on(None, deployment, name_prefix)
}

/// [`remove_leftovers`] on the daemon at `host` (`None`: the machine's).
pub fn remove_leftovers_on(host: Option<&str>, deployment: &str, name_prefix: Option<&str>) {
    let cli = || {
        let mut c = Command::new("docker");
        if let Some(h) = host {
            c.env("DOCKER_HOST", h);
        }
        c
    };
    let mut filters = vec![format!("label=highway.deployment={deployment}")];
    filters.extend(name_prefix.map(|p| format!("name={p}")));
    for filter in filters {
        let Ok(out) = cli().args(["ps", "-aq", "--filter", &filter]).output() else {
            continue;
        };
        for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = cli().args(["rm", "-f", id]).output();
        }
    }
}

impl Drop for DockerHarness {
    /// A failed test must not leak containers into the machine: remove every container
    /// of this test database's identity (no other test's or stack's carries it).
    fn drop(&mut self) {
        let filter = format!("label=highway.deployment_id={}", self.deployment_id);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("docker").args(["rm", "-f", id]).output();
            }
        }
        let _ = std::fs::remove_dir_all(&self.artifact_dir);
    }
}

/// A private `docker-registry` (Debian package) on 127.0.0.1 with its own config and
/// storage; stopped (by its pid) and deleted on drop. [`LocalRegistry::start`] serves
/// plain HTTP without auth; [`LocalRegistry::start_private`] serves HTTPS (the run's
/// test server certificate) with htpasswd basic auth and logs every request.
pub struct LocalRegistry {
    child: Child,
    dir: PathBuf,
    pub addr: String,
    /// Images this registry's tests pushed or pulled on the machine's daemon: removed
    /// (only these) on drop.
    made: std::sync::Mutex<Vec<String>>,
}

impl LocalRegistry {
    pub async fn start() -> Self {
        Self::spawn("log:\n  level: error\n", "", None).await
    }

    /// HTTPS with `$HIGHWAY_TEST_CERTS_DIR/server.pem` and basic auth for one user
    /// (`htpasswd -Bbn`); requests are logged to `registry.log` in its directory.
    pub async fn start_private(username: &str, password: &str) -> Self {
        let certs = PathBuf::from(std::env::var("HIGHWAY_TEST_CERTS_DIR").expect(
            "HIGHWAY_TEST_CERTS_DIR is not set: run the tests with scripts/test.sh, which \
             makes the test certificates",
        ));
        let out = Command::new("htpasswd")
            .args(["-Bbn", username, password])
            .output()
            .expect("run htpasswd (apache2-utils; scripts/test.sh installs it)");
        assert!(out.status.success(), "htpasswd failed");
        let extra = format!(
            "  tls:\n    certificate: {}\n    key: {}\nauth:\n  htpasswd:\n    realm: highway-test\n    path: HTPASSWD\n",
            certs.join("server.pem").display(),
            certs.join("server-key.pem").display(),
        );
        Self::spawn("log:\n  level: info\n", &extra, Some(&out.stdout)).await
    }

    /// `htpasswd`: the password file of a private registry (which also gets a log).
    async fn spawn(log: &str, http_extra: &str, htpasswd: Option<&[u8]>) -> Self {
        let bin = "/usr/bin/docker-registry";
        assert!(
            Path::new(bin).exists(),
            "{bin} missing: install the Debian package docker-registry (scripts/test.sh does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = std::env::temp_dir().join(format!("highway-registry-{}", Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data")).expect("registry dir");
        let addr = format!("127.0.0.1:{port}");
        let http_extra =
            http_extra.replace("HTPASSWD", &dir.join("htpasswd").display().to_string());
        let config = format!(
            "version: 0.1\n{log}storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{http_extra}",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        if let Some(h) = htpasswd {
            std::fs::write(dir.join("htpasswd"), h).expect("write htpasswd");
        }
        let (stdout, stderr) = if htpasswd.is_some() {
            let f = std::fs::File::create(dir.join("registry.log")).expect("registry log");
            (Stdio::from(f.try_clone().unwrap()), Stdio::from(f))
        } else {
            (Stdio::null(), Stdio::null())
        };
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .expect("start docker-registry");
        let reg = Self {
            child,
            dir,
            addr,
            made: Default::default(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if tokio::net::TcpStream::connect(&reg.addr).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}",
                reg.addr
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reg
    }

    /// Pushes the test image as `ADDR/REPO:TAG`, logging in with a temporary
    /// DOCKER_CONFIG (the machine's `~/.docker` is never touched), then removes the local
    /// tag so the image must be pulled. Returns the reference; it is removed on drop.
    pub fn push_test_image(&self, repo: &str, tag: &str, login: Option<(&str, &str)>) -> String {
        let remote = format!("{}/{repo}:{tag}", self.addr);
        let cfg = self
            .dir
            .join(format!("docker-cli-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&cfg).unwrap();
        let cli = |args: &[&str], stdin: Option<&str>| {
            let mut cmd = Command::new("docker");
            cmd.env("DOCKER_CONFIG", &cfg).args(args);
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("run the docker CLI");
            if let Some(input) = stdin {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .unwrap()
                    .write_all(input.as_bytes())
                    .unwrap();
            }
            drop(child.stdin.take());
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "docker {:?} failed: {}",
                args.first(),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        if let Some((user, password)) = login {
            cli(
                &["login", "--username", user, "--password-stdin", &self.addr],
                Some(password),
            );
        }
        self.made.lock().unwrap().push(remote.clone());
        cli(&["tag", TEST_IMAGE, &remote], None);
        cli(&["push", &remote], None);
        cli(&["rmi", &remote], None);
        let _ = std::fs::remove_dir_all(&cfg);
        remote
    }

    /// A Docker `config.json` made by `docker login` (base64 `auth` entry) in a fresh
    /// DOCKER_CONFIG directory under this registry's (the machine's `~/.docker` is never
    /// touched); deleted with the registry.
    pub fn login_config(&self, username: &str, password: &str) -> PathBuf {
        let cfg = self
            .dir
            .join(format!("docker-config-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&cfg).unwrap();
        let mut child = Command::new("docker")
            .env("DOCKER_CONFIG", &cfg)
            .args([
                "login",
                "--username",
                username,
                "--password-stdin",
                &self.addr,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run docker login");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(password.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "docker login failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cfg.join("config.json")
    }

    /// Sessions of the daemon with the registry: each pull (or manifest inspect) begins
    /// with one `GET /v2/` (the version check that brings the auth challenge); 0 for a
    /// registry started without a log.
    pub fn pulls(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/ HTTP"))
            .count()
    }

    /// The registry's own log (requests, auth failures).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        for image in self.made.lock().unwrap().iter() {
            // Present only when a test pulled it; absent is fine.
            let _ = Command::new("docker")
                .args(["rmi", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs the docker CLI (tests only; the worker never shells out) and returns stdout.
pub fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sha256sum` of a host file (the host's coreutils).
pub fn sha256_file(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
