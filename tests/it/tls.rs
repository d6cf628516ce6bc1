//! TLS wherever a connection leaves the process, with the certificates of this test run
//! (`scripts/test-certs.sh`, `HIGHWAY_TEST_CERTS_DIR`): Postgres (a private cluster of
//! the test's own with `ssl = on` and only `hostssl` lines in pg_hba.conf), a Docker
//! daemon with `--tlsverify` (the second test daemon, its TLS listener bridged out of
//! its network namespace to a unix socket, and a TCP proxy on loopback in front), and
//! the API over HTTPS with the CLI and a certificate rotated by SIGHUP. Also the
//! secrets key rotation (`HIGHWAY_SECRETS_KEY_OLD`, `highway rotate-secrets-key`).

use highway_tests::docker::{DockerHarness, TEST_IMAGE};
use highway_tests::fault_proxy::{FaultProxy, Target};
use highway_tests::{eventually, highway_bin, Process, TestDb};
use highway_worker::db::embedded::Cluster;
use highway_worker::db::{self, PoolOptions};
use highway_worker::docker::client::{ClientSettings, DockerClient, TlsFiles};
use highway_worker::docker::monitor::{DockerMonitor, MonitorSettings, Probe};
use highway_worker::docker::registry_store::RegistryStore;
use highway_worker::docker::secret_store::{SecretStore, SecretsKey, StoreError};
use highway_worker::docker::secrets::SecretValue;
use highway_worker::health::Dependency;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn certs() -> PathBuf {
    PathBuf::from(std::env::var("HIGHWAY_TEST_CERTS_DIR").expect(
        "HIGHWAY_TEST_CERTS_DIR is not set: run the tests with scripts/test.sh, which makes the test certificates",
    ))
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("highway-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn sh(script: &str) {
    let out = Command::new("sh").arg("-c").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------------------------------------ Postgres

/// A private cluster serving only TLS: `ssl = on` with the test server certificate,
/// listening on 127.0.0.1 and 127.0.0.2 (the certificate names only the first), and a
/// pg_hba.conf whose only TCP lines are `hostssl`. Stopped and removed on drop.
struct TlsPostgres {
    cluster: Cluster,
    state: PathBuf,
}

impl TlsPostgres {
    async fn start() -> Self {
        let state = temp_dir("tls-pg");
        let s = state.clone();
        let cluster = tokio::task::spawn_blocking(move || {
            let first = Cluster::start(&s).expect("private cluster starts");
            first.stop().expect("private cluster stops");
            let data = &first.data_dir;
            for (from, to) in [
                ("server.pem", "server.pem"),
                ("server-key.pem", "server-key.pem"),
                ("ca.pem", "ca.pem"),
            ] {
                std::fs::copy(certs().join(from), data.join(to)).unwrap();
            }
            // Postgres refuses a key file others can read, or that it does not own.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                data.join("server-key.pem"),
                std::fs::Permissions::from_mode(0o600),
            )
            .unwrap();
            if is_root() {
                sh(&format!("chown postgres: {}/server*.pem {}/ca.pem", data.display(), data.display()));
            }
            let mut conf = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
            conf.push_str(
                "\n# tls test\nssl = on\nssl_cert_file = 'server.pem'\nssl_key_file = 'server-key.pem'\n\
                 ssl_ca_file = 'ca.pem'\nlisten_addresses = '127.0.0.1,127.0.0.2'\n",
            );
            std::fs::write(data.join("postgresql.conf"), conf).unwrap();
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all scram-sha-256\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostssl all all 127.0.0.2/32 scram-sha-256\n",
            )
            .unwrap();
            Cluster::start(&s).expect("the TLS cluster starts")
        })
        .await
        .unwrap();
        Self { cluster, state }
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres:{}@{host}:{}/highway?{params}",
            self.cluster.password, self.cluster.port
        )
    }

    fn verify_full(&self, host: &str, ca: &Path) -> String {
        self.url(
            host,
            &format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        )
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = Cluster::stop_dir(&self.cluster.bindir, &self.cluster.data_dir);
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

async fn connect_err(url: &str) -> db::Error {
    match db::connect(url, &PoolOptions::default()).await {
        Ok(_) => panic!("connected to {}", db::redact_url(url)),
        Err(e) => e,
    }
}

#[tokio::test]
async fn postgres_verify_full_connects_and_a_wrong_ca_host_or_plain_connection_fails_clearly() {
    let pg = TlsPostgres::start().await;
    let ca = certs().join("ca.pem");
    let pw = pg.cluster.password.clone();

    let pool = db::connect(&pg.verify_full("localhost", &ca), &PoolOptions::default())
        .await
        .expect("verify-full against the test CA connects");
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(ssl, "the connection is not encrypted");
    pool.close().await;

    // A client certificate (sslcert, sslkey) is offered and accepted.
    let with_client = format!(
        "{}&sslcert={}&sslkey={}",
        pg.verify_full("127.0.0.1", &ca),
        certs().join("client.pem").display(),
        certs().join("client-key.pem").display()
    );
    db::connect(&with_client, &PoolOptions::default())
        .await
        .expect("verify-full with a client certificate connects")
        .close()
        .await;
    // require: encrypted, the certificate not checked (libpq without a root CA).
    db::connect(
        &pg.url("127.0.0.1", "sslmode=require"),
        &PoolOptions::default(),
    )
    .await
    .expect("sslmode=require connects")
    .close()
    .await;
    // require with a root certificate verifies the chain, as libpq does: the wrong CA fails.
    let e = connect_err(&pg.url(
        "localhost",
        &format!(
            "sslmode=require&sslrootcert={}",
            certs().join("other-ca.pem").display()
        ),
    ))
    .await;
    let msg = e.to_string();
    assert!(matches!(e, db::Error::Tls { .. }), "{msg}");
    assert!(msg.contains("not signed by a trusted CA"), "{msg}");

    // The wrong CA.
    let e = connect_err(&pg.verify_full("localhost", &certs().join("other-ca.pem"))).await;
    let msg = e.to_string();
    assert!(matches!(e, db::Error::Tls { .. }), "{msg}");
    assert!(msg.contains("not signed by a trusted CA"), "{msg}");
    assert!(!msg.contains(&pw), "the password leaked: {msg}");

    // A host name the certificate does not name (it names localhost and 127.0.0.1).
    let e = connect_err(&pg.verify_full("127.0.0.2", &ca)).await;
    let msg = e.to_string();
    assert!(matches!(e, db::Error::Tls { .. }), "{msg}");
    assert!(msg.contains("does not name the host"), "{msg}");
    assert!(msg.contains("127.0.0.2"), "{msg}");
    assert!(!msg.contains(&pw), "the password leaked: {msg}");

    // No TLS at all: pg_hba.conf has only hostssl lines.
    let e = connect_err(&pg.url("localhost", "sslmode=disable")).await;
    let msg = e.to_string();
    assert!(matches!(e, db::Error::Refused { .. }), "{msg}");
    assert!(msg.contains("no encryption"), "{msg}");
    assert!(msg.contains("accepts only TLS connections"), "{msg}");

    // A CA file that is not there is named before any connection is tried.
    let e = connect_err(&pg.verify_full("localhost", Path::new("/nonexistent/ca.pem"))).await;
    assert!(
        e.to_string()
            .contains("sslrootcert: cannot read /nonexistent/ca.pem"),
        "{e}"
    );
}

#[tokio::test]
async fn worker_starts_against_tls_postgres_and_stops_at_once_on_a_wrong_ca() {
    let pg = TlsPostgres::start().await;
    let ca = certs().join("ca.pem");
    let state = temp_dir("tls-worker");
    let env = [
        ("HIGHWAY_STATE_DIR", state.to_str().unwrap()),
        (
            "HIGHWAY_DOCKER_HOST",
            "unix:///nonexistent/highway-tls-test.sock",
        ),
    ];
    let url = pg.verify_full("localhost", &ca);
    let mut worker = Process::spawn(&url, &["worker", "--no-http"], &env);
    // It migrated the database over TLS.
    let pool = db::lazy_pool(&url, &PoolOptions::default()).unwrap();
    eventually(
        "the worker migrated over TLS",
        Duration::from_secs(60),
        || {
            let pool = pool.clone();
            async move {
                let r: Option<(Option<String>,)> =
                    sqlx::query_as("SELECT to_regclass('highway.activities')::text")
                        .fetch_one(&pool)
                        .await
                        .ok();
                r.and_then(|(t,)| t).map(|_| ())
            }
        },
    )
    .await;
    pool.close().await;
    worker.signal(libc::SIGTERM);
    assert_eq!(worker.wait_exit(Duration::from_secs(30)).await, Some(0));

    // The wrong CA: the start fails at once, saying why (no retry loop hiding it).
    let bad = pg.verify_full("localhost", &certs().join("other-ca.pem"));
    let child = tokio::process::Command::new(highway_bin())
        .args(["worker", "--no-http"])
        .env("DATABASE_URL", &bad)
        .envs(env)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("a worker with the wrong CA must exit at once, not retry")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("not signed by a trusted CA"), "{stderr}");
    assert!(
        !stderr.contains(&pg.cluster.password),
        "the password leaked: {stderr}"
    );
    let _ = std::fs::remove_dir_all(&state);
}

// ------------------------------------------------------------------ Docker

/// A loopback TCP port forwarding to the second test daemon's `--tlsverify` listener.
async fn docker_tls_proxy() -> (FaultProxy, String) {
    let sock = std::env::var("HIGHWAY_TEST_DOCKER_B_TLS_SOCK").expect(
        "HIGHWAY_TEST_DOCKER_B_TLS_SOCK is not set: run the tests with scripts/test.sh (second Docker daemon with TLS)",
    );
    let proxy = FaultProxy::tcp(Target::Unix(PathBuf::from(sock)))
        .await
        .unwrap();
    let host = format!("tcp://127.0.0.1:{}", proxy.port());
    (proxy, host)
}

#[tokio::test]
async fn docker_run_through_a_tlsverify_daemon_succeeds() {
    let (_proxy, host) = docker_tls_proxy().await;
    let h = DockerHarness::with(|cfg, _| {
        cfg.host = host.clone();
        cfg.tls_verify = true;
        cfg.cert_path = Some(certs().join("docker"));
    })
    .await;
    let id = h.activity().await;
    let out = h
        .run(
            h.ctx(id, 1),
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo over-tls"]}),
        )
        .await
        .expect("tools.docker.run over TLS succeeds");
    assert_eq!(out["stdout"], "over-tls\n", "{out}");
}

#[tokio::test]
async fn docker_without_a_client_certificate_or_with_the_wrong_ca_is_unavailable_naming_tls() {
    let (_proxy, host) = docker_tls_proxy().await;
    // Only the CA: no client certificate is offered, and the daemon refuses.
    let only_ca = temp_dir("tls-docker-noclient");
    std::fs::copy(certs().join("ca.pem"), only_ca.join("ca.pem")).unwrap();
    // The client pair, but the daemon's certificate checked against an unrelated CA.
    let wrong_ca = temp_dir("tls-docker-wrongca");
    std::fs::copy(certs().join("other-ca.pem"), wrong_ca.join("ca.pem")).unwrap();
    std::fs::copy(certs().join("client.pem"), wrong_ca.join("cert.pem")).unwrap();
    std::fs::copy(certs().join("client-key.pem"), wrong_ca.join("key.pem")).unwrap();

    for (dir, mention) in [(&only_ca, "BadCertificate"), (&wrong_ca, "UnknownIssuer")] {
        let client = DockerClient::new(ClientSettings {
            host: host.clone(),
            tls: Some(TlsFiles::in_dir(dir)),
            ..ClientSettings::default()
        });
        let err = client.ping().await.expect_err("the daemon must refuse");
        assert!(
            matches!(
                err,
                highway_worker::docker::client::Error::Unavailable { .. }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("TLS"), "{err}");
        assert!(err.to_string().contains(mention), "{err}");

        // The status monitor counts it as a failed probe, coded `tls`.
        let dep = Dependency::default();
        let mut monitor = DockerMonitor::new(
            client,
            dep.clone(),
            MonitorSettings::from_config(&Default::default()),
        )
        .unwrap();
        let probe = monitor.probe_once().await;
        assert!(
            matches!(
                probe,
                Probe::Down {
                    error_code: "tls",
                    ..
                }
            ),
            "{probe:?}"
        );
        let snap = dep.snapshot();
        assert_eq!(snap.consecutive_failures, 1);
        assert!(
            snap.last_error.as_deref().unwrap_or("").contains("TLS"),
            "{snap:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&only_ca);
    let _ = std::fs::remove_dir_all(&wrong_ca);
}

// ------------------------------------------------------------------ HTTPS API

/// The DER of the certificate the server at `url` presents on a new connection.
async fn presented_certificate(url: &str) -> Vec<u8> {
    let ca =
        reqwest::Certificate::from_pem(&std::fs::read(certs().join("ca.pem")).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(ca)
        .tls_info(true)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let resp = client
        .get(format!("{url}/health"))
        .send()
        .await
        .expect("GET /health over HTTPS");
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a peer certificate")
        .to_vec()
}

fn der_of(pem: &Path) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn cli(state: &Path, env: &[(&str, &Path)]) -> std::process::Output {
    let mut c = Command::new(highway_bin());
    c.args(["activities", "ls"])
        .env("HIGHWAY_STATE_DIR", state)
        .env_remove("HIGHWAY_TOKEN")
        .env_remove("HIGHWAY_API_URL")
        .env_remove("HIGHWAY_API_CA");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[tokio::test]
async fn api_over_https_with_the_cli_trusting_the_ca_and_a_certificate_rotated_by_sighup() {
    let db = TestDb::new().await;
    let dir = temp_dir("tls-api");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::copy(certs().join("server.pem"), &cert).unwrap();
    std::fs::copy(certs().join("server-key.pem"), &key).unwrap();
    let state = dir.join("state");
    let mut up = Process::spawn(
        &db.url,
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "up",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
        &[(
            "HIGHWAY_DOCKER_HOST",
            "unix:///nonexistent/highway-tls-test.sock",
        )],
    );
    // `highway up` writes api.url, then the admin token.
    let url = eventually(
        "api.url and admin.token written",
        Duration::from_secs(60),
        || {
            let (f, token) = (state.join("api.url"), state.join("admin.token"));
            async move {
                std::fs::read_to_string(f)
                    .ok()
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty() && token.exists())
            }
        },
    )
    .await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    // The CLI trusts the test CA through HIGHWAY_API_CA...
    let ok = cli(&state, &[("HIGHWAY_API_CA", &certs().join("ca.pem"))]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // ...and without it refuses the server, naming the certificate problem.
    let refused = cli(&state, &[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert!(stderr.contains("UnknownIssuer"), "{stderr}");

    // Rotation: a second certificate from the same CA, swapped in, then SIGHUP.
    assert_eq!(presented_certificate(&url).await, der_of(&cert));
    let c = certs();
    sh(&format!(
        "cd {d} && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out new-key.pem 2>/dev/null \
         && openssl req -new -key new-key.pem -subj /CN=highway-rotated -out new.csr 2>/dev/null \
         && printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth\\n' >new.ext \
         && openssl x509 -req -in new.csr -CA {c}/ca.pem -CAkey {c}/ca-key.pem -CAserial {d}/ca.srl \
            -CAcreateserial -days 1 -sha256 -extfile new.ext -out new.pem 2>/dev/null",
        d = dir.display(),
        c = c.display()
    ));
    let new_der = der_of(&dir.join("new.pem"));
    assert_ne!(new_der, der_of(&cert));
    std::fs::copy(dir.join("new-key.pem"), &key).unwrap();
    std::fs::copy(dir.join("new.pem"), &cert).unwrap();
    up.signal(libc::SIGHUP);
    eventually(
        "new connections get the new certificate",
        Duration::from_secs(20),
        || {
            let (url, want) = (url.clone(), new_der.clone());
            async move { (presented_certificate(&url).await == want).then_some(()) }
        },
    )
    .await;

    // A broken pair is refused: the server keeps serving the current one.
    std::fs::write(&key, "not a key\n").unwrap();
    up.signal(libc::SIGHUP);
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while tokio::time::Instant::now() < until {
        assert_eq!(presented_certificate(&url).await, new_der);
    }
    let ok = cli(&state, &[("HIGHWAY_API_CA", &certs().join("ca.pem"))]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    up.signal(libc::SIGTERM);
    assert_eq!(up.wait_exit(Duration::from_secs(60)).await, Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ secrets key

#[tokio::test]
async fn secrets_key_rotation_reencrypts_every_row_while_the_old_key_still_reads() {
    let db = TestDb::new().await;
    let old = SecretsKey::parse(&"11".repeat(32)).unwrap();
    let new = SecretsKey::parse(&"22".repeat(32)).unwrap();
    let under_old = SecretStore::new(db.pool.clone(), old.clone());
    under_old.set("t1", "db", "hunter2").await.unwrap();
    under_old.set("t2", "api", "s3cret").await.unwrap();

    // The new key alone cannot read them; with the old key listed it can.
    assert!(matches!(
        SecretStore::new(db.pool.clone(), new.clone())
            .get("t1", "db")
            .await,
        Err(StoreError::Decrypt { .. })
    ));
    let rotating = SecretStore::new(db.pool.clone(), new.clone()).with_old_keys(vec![old.clone()]);
    assert_eq!(
        rotating.get("t1", "db").await.unwrap().unwrap().expose(),
        "hunter2"
    );
    let done = rotating.rotate().await.unwrap();
    assert_eq!((done.reencrypted, done.current), (2, 0));
    assert_eq!(rotating.rotate().await.unwrap().reencrypted, 0);

    // Afterwards the new key alone reads every row, and the old one none.
    let new_only = SecretStore::new(db.pool.clone(), new.clone());
    assert_eq!(
        new_only.get("t2", "api").await.unwrap().unwrap().expose(),
        "s3cret"
    );
    assert!(new_only
        .list(None)
        .await
        .unwrap()
        .iter()
        .all(|r| r.key_id == new.id()));
    assert!(matches!(
        under_old.get("t1", "db").await,
        Err(StoreError::Decrypt { .. })
    ));

    // A row no known key reads stops the rotation, and nothing changes.
    under_old.set("t3", "x", "v").await.unwrap();
    new_only.set("t1", "db", "hunter3").await.unwrap();
    let third = SecretsKey::parse(&"33".repeat(32)).unwrap();
    let e = SecretStore::new(db.pool.clone(), third.clone())
        .with_old_keys(vec![new.clone()])
        .rotate()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, StoreError::Decrypt { tenant, .. } if tenant == "t3"),
        "{e}"
    );
    assert_eq!(
        new_only.get("t1", "db").await.unwrap().unwrap().expose(),
        "hunter3"
    );

    // Registry passwords are sealed with the same key and rotate with the secrets.
    let registries_old = RegistryStore::new(db.pool.clone(), Some(old.clone()));
    registries_old
        .add(
            None,
            "registry.example:5000",
            "ci",
            &SecretValue::new("reg-pass"),
            "test",
        )
        .await
        .unwrap();
    assert!(RegistryStore::new(db.pool.clone(), Some(new.clone()))
        .lookup("t1", "registry.example:5000")
        .await
        .is_err());

    // The command: `highway rotate-secrets-key` with the old key in HIGHWAY_SECRETS_KEY_OLD.
    let out = Command::new(highway_bin())
        .args(["rotate-secrets-key", "--output", "json"])
        .env("DATABASE_URL", &db.url)
        .env("HIGHWAY_SECRETS_KEY", "22".repeat(32))
        .env("HIGHWAY_SECRETS_KEY_OLD", "11".repeat(32))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["secrets"]["reencrypted"], 1, "{v}");
    assert_eq!(v["secrets"]["current"], 2, "{v}");
    assert_eq!(v["registry_credentials"]["reencrypted"], 1, "{v}");
    assert_eq!(
        new_only.get("t3", "x").await.unwrap().unwrap().expose(),
        "v"
    );
    let creds = RegistryStore::new(db.pool.clone(), Some(new.clone()))
        .lookup("t1", "registry.example:5000")
        .await
        .unwrap()
        .expect("the global entry");
    assert_eq!(creds.password.unwrap().expose(), "reg-pass");
}
