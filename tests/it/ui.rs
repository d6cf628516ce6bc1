//! The web console (`/ui`) in a real browser: headless Debian `chromium` driven over
//! WebDriver (`chromedriver`, started here on a free loopback port with its own profile
//! directory, and killed when the test ends) through `fantoccini`. Each test saves a
//! screenshot of every page it visits under `target/ui-screenshots/<test>-<page>.png`.
//!
//! Log in; an activity appears and finishes without a reload; a running container's log
//! lines arrive live; a workflow run cancelled from its page leaves zero containers; a
//! schedule paused from its page (and audited as the token); a tenant opening another
//! tenant's activity by URL gets the 404 page; a form POST without the CSRF token is
//! refused (403, and nothing happens) while the same POST with it works.
//!
//! Without chromium or chromedriver the tests fail saying so: they never skip.

use fantoccini::{Client, ClientBuilder, Locator};
use highway_tests::docker::{
    assert_no_containers, docker, ensure_test_image, wait_running, TEST_IMAGE,
};
use highway_tests::{eventually, TestDb, TestWorker};
use highway_worker::api::{store, AppState};
use highway_workflows::definition::WorkflowDefinition;
use highway_workflows::EnqueueRequest;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(60);
const SLOW: &str = include_str!("../../workflows/examples/slow.json");

/// Where screenshots go: `target/ui-screenshots/` of the workspace.
fn screenshot_dir() -> PathBuf {
    let d = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../target/ui-screenshots"
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A `chromedriver` of this test: own port, own Chromium profile; killed on drop.
struct Driver {
    child: Child,
    port: u16,
    profile: PathBuf,
}

impl Driver {
    async fn start() -> Self {
        for bin in ["chromedriver", "chromium"] {
            let found = Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                found,
                "`{bin}` is not installed: the console's browser tests need Debian's \
                 chromium and chromium-driver (scripts/test.sh installs them)"
            );
        }
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let profile = std::env::temp_dir().join(format!("highway-ui-chrome-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            // The browser's zone differs from UTC, so pages must show the viewer's time.
            .env("TZ", "Asia/Tokyo")
            // Chromium's own files (crash database, caches) stay in this test's directory.
            .env("HOME", &profile)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Self {
            child,
            port,
            profile,
        };
        let http = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/status");
        eventually("chromedriver answers", Duration::from_secs(20), || async {
            http.get(&url)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
        })
        .await;
        d
    }

    async fn browser(&self) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1400,1000", "--no-first-run", "--no-default-browser-check",
                    format!("--user-data-dir={}", self.profile.display()),
                ]
            }),
        );
        let conn = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(conn)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session through chromedriver")
    }
}

/// Pids of the Chromium processes of this driver's session: those started with our own
/// profile directory (no other process on the machine has it).
fn our_chromium(profile: &std::path::Path) -> Vec<i32> {
    let flag = format!("--user-data-dir={}", profile.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|arg| arg == flag.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A test that panicked never closed its session: end its Chromium by pid (only the
        // processes with this test's profile), then our chromedriver child.
        for pid in our_chromium(&self.profile) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A fresh database, an in-process server (API + console) on a loopback port, tokens,
/// optionally a worker with the docker kinds, and a browser.
struct Console {
    db: TestDb,
    base: String,
    admin: String,
    a: String,
    a_id: Uuid,
    b: String,
    stop: CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    worker: Option<TestWorker>,
    artifacts: PathBuf,
    driver: Driver,
    browser: Option<Client>,
    test: &'static str,
}

impl Console {
    async fn new(test: &'static str, with_worker: bool) -> Self {
        let driver = Driver::start().await;
        let db = TestDb::new().await;
        let (_, admin) = store::create_token(&db.pool, "ops-admin", None)
            .await
            .unwrap();
        let (a_id, a) = store::create_token(&db.pool, "team-a", Some("tenant-a"))
            .await
            .unwrap();
        let (_, b) = store::create_token(&db.pool, "team-b", Some("tenant-b"))
            .await
            .unwrap();
        let artifacts = std::env::temp_dir().join(format!("highway-ui-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&artifacts).unwrap();
        let worker = with_worker.then(|| {
            ensure_test_image();
            let opts = TestWorker::fast_options(4);
            let rt = Arc::new(highway_worker::docker::DockerRuntime::new(
                highway_worker::config::docker::DockerConfig::default(),
                db.pool.clone(),
                opts.id,
                artifacts.clone(),
            ));
            TestWorker::start(&db.pool, opts, |r| {
                highway_worker::docker::register(r, rt.clone())
            })
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let health = highway_worker::health::Health::default();
        health.postgres.success();
        // The GC dry run of the containers page: the collector's own pass with
        // `dry_run` forced, on the machine's daemon (it removes nothing).
        let planner = highway_worker::api::gc::GcPlanner {
            client: highway_worker::docker::client::DockerClient::new(
                highway_worker::docker::client::ClientSettings::default(),
            ),
            deployment: highway_worker::docker::deployment::Deployment::new("default", false),
            opts: highway_worker::docker::gc::GcOptions::default(),
        };
        let state = AppState::new(
            health,
            db.pool.clone(),
            highway_worker::config::api::ApiConfig::default(),
        )
        .with_gc(Some(planner));
        let server = {
            let stop = stop.clone();
            tokio::spawn(highway_worker::api::serve(listener, state, async move {
                stop.cancelled().await
            }))
        };
        let browser = driver.browser().await;
        Self {
            db,
            base,
            admin,
            a,
            a_id,
            b,
            stop,
            server: Some(server),
            worker,
            artifacts,
            driver,
            browser: Some(browser),
            test,
        }
    }

    fn b(&self) -> &Client {
        self.browser.as_ref().unwrap()
    }

    async fn goto(&self, path: &str) {
        self.b()
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap();
    }

    async fn shot(&self, page: &str) {
        let png = self.b().screenshot().await.expect("screenshot");
        let path = screenshot_dir().join(format!("{}-{page}.png", self.test));
        std::fs::write(&path, png).unwrap();
    }

    async fn login(&self, token: &str) {
        self.goto("/ui/login").await;
        self.shot("login").await;
        let input = self
            .b()
            .find(Locator::Css("input[name=token]"))
            .await
            .unwrap();
        input.send_keys(token).await.unwrap();
        self.b()
            .find(Locator::Css("form.login button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.wait_css("h1", "the overview after login").await;
        let url = self.b().current_url().await.unwrap();
        assert!(url.path() == "/ui", "after login the browser is on {url}");
    }

    /// Waits until `css` matches an element.
    async fn wait_css(&self, css: &str, what: &str) -> fantoccini::elements::Element {
        let b = self.b();
        eventually(what, WAIT, || async {
            b.find(Locator::Css(css)).await.ok()
        })
        .await
    }

    /// Runs `script` (a `return ...` body) in the page.
    async fn js(&self, script: &str) -> Value {
        self.b().execute(script, vec![]).await.unwrap()
    }

    async fn text_of(&self, css: &str) -> String {
        match self.b().find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn page_source(&self) -> String {
        self.b().source().await.unwrap()
    }

    async fn enqueue(&self, tenant: &str, kind: &str, params: Value) -> Uuid {
        self.db
            .client()
            .enqueue(&EnqueueRequest::new(kind, params).tenant(tenant))
            .await
            .unwrap()
            .id
    }

    /// A plain HTTP client that keeps redirects to itself, logged in as `token`: the
    /// session cookie's value.
    async fn http_login(&self, token: &str) -> (reqwest::Client, String) {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let resp = http
            .post(format!("{}/ui/login", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 303);
        let cookie = resp
            .headers()
            .get("set-cookie")
            .expect("a session cookie")
            .to_str()
            .unwrap()
            .to_string();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/ui"] {
            assert!(cookie.contains(attr), "{attr} missing: {cookie}");
        }
        assert!(
            !cookie.contains(token),
            "the cookie carries the token: {cookie}"
        );
        let value = cookie.split(';').next().unwrap().to_string();
        (http, value)
    }

    async fn stop(mut self) {
        if let Some(b) = self.browser.take() {
            let _ = b.close().await;
        }
        if let Some(w) = self.worker.take() {
            w.stop().await;
        }
        self.stop.cancel();
        if let Some(s) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), s).await;
        }
        std::fs::remove_dir_all(&self.artifacts).ok();
        drop(self.driver);
    }
}

/// The hidden CSRF field's value in a page.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    html[at..at + 64].to_string()
}

#[tokio::test]
async fn ui_login_shows_the_overview_and_no_token() {
    let c = Console::new("login", false).await;
    // Without a session every page sends the browser to the login form.
    c.goto("/ui/activities").await;
    c.wait_css("form.login", "the login form").await;
    // A wrong token: an error, still on the login form.
    c.b()
        .find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("hw_nope")
        .await
        .unwrap();
    c.b()
        .find(Locator::Css("form.login button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css("p.error", "the login error").await;
    c.shot("login-refused").await;

    c.enqueue("tenant-a", "highway.noop", json!({})).await;
    c.login(&c.admin).await;
    c.wait_css("#h-queues", "the queues section").await;
    assert!(c.text_of("main").await.contains("Recent failures"));
    assert_eq!(
        c.js("return document.documentElement.getAttribute('data-js')")
            .await,
        "ready"
    );
    c.shot("overview").await;
    let html = c.page_source().await;
    assert!(!html.contains(&c.admin), "the token is in the page");
    assert!(!html.contains(&c.admin[3..]), "the token is in the page");
    // Every page of the navigation opens.
    for (path, page) in [
        ("/ui/activities", "activities"),
        ("/ui/runs", "runs"),
        ("/ui/containers", "containers"),
        ("/ui/schedules", "schedules"),
        ("/ui/audit", "audit"),
    ] {
        c.goto(path).await;
        c.wait_css("main h1", page).await;
        c.shot(page).await;
        assert!(!c.page_source().await.contains(&c.admin[3..]));
    }
    // The garbage collector's dry run (admin): a plan, nothing removed.
    c.goto("/ui/containers").await;
    c.b()
        .find(Locator::Css("a[href='/ui/containers/gc']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css("table.counts", "the dry run's counts").await;
    assert!(c.text_of("main").await.contains("Nothing was removed"));
    c.shot("gc-dry-run").await;
    // Logging out ends the session.
    c.goto("/ui").await;
    c.b()
        .find(Locator::Css(".who form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css("form.login", "the login form after logout")
        .await;
    c.goto("/ui/activities").await;
    c.wait_css("form.login", "the login form: the session is gone")
        .await;
    c.stop().await;
}

#[tokio::test]
async fn ui_an_activity_appears_and_finishes_live() {
    let c = Console::new("activity_live", true).await;
    c.login(&c.a).await;
    c.goto("/ui/activities").await;
    c.wait_css("#activities", "the activity list").await;
    c.shot("activities-empty").await;
    // A marker that a reload would wipe.
    c.js("window.__same_page = 'yes'; return null").await;
    let id = c
        .enqueue(
            "tenant-a",
            "tools.docker.run",
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo hello; sleep 2"]}),
        )
        .await;
    let row = format!("#activities tr[data-id='{id}']");
    c.wait_css(&row, "the new activity's row, without a reload")
        .await;
    c.shot("activities-appeared").await;
    c.wait_css(
        &format!("{row}[data-state='succeeded']"),
        "the row turning succeeded, without a reload",
    )
    .await;
    c.shot("activities-finished").await;
    assert_eq!(
        c.js("return window.__same_page || null").await,
        "yes",
        "the page was reloaded"
    );
    // The activity's page: result with stdout, its container removed.
    c.goto(&format!("/ui/activities/{id}")).await;
    c.wait_css("#h-result", "the result section").await;
    assert!(c.text_of("#activity").await.contains("hello"));
    c.wait_css(
        "#activity tr[data-state='removed']",
        "its container, removed",
    )
    .await;
    c.shot("activity").await;
    // A failure shows on the admin's overview, beside the worker that ran it.
    let failed =
        c.db.client()
            .enqueue(
                &EnqueueRequest::new(
                    "tools.docker.run",
                    json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo boom >&2; exit 3"]}),
                )
                .tenant("tenant-a")
                .max_attempts(1),
            )
            .await
            .unwrap()
            .id;
    let b = c.b().find(Locator::Css(".who form button")).await.unwrap();
    b.click().await.unwrap();
    c.wait_css("form.login", "logged out").await;
    c.login(&c.admin).await;
    c.wait_css(
        &format!("#overview a[href='/ui/activities/{failed}']"),
        "the failure on the overview, live",
    )
    .await;
    c.wait_css("#overview td .state-running", "the running worker")
        .await;
    c.shot("overview").await;
    c.stop().await;
}

#[tokio::test]
async fn ui_follows_a_running_containers_logs() {
    let c = Console::new("logs_follow", true).await;
    let id = c
        .enqueue(
            "tenant-a",
            "tools.docker.run",
            json!({"image": TEST_IMAGE, "command": ["sh", "-c",
                "i=0; while [ $i -lt 12 ]; do i=$((i+1)); echo tick-$i; sleep 1; done"]}),
        )
        .await;
    wait_running(&docker().await, id, WAIT).await;
    c.login(&c.a).await;
    c.goto(&format!("/ui/activities/{id}")).await;
    c.wait_css("#log", "the log").await;
    c.js("window.__same_page = 'yes'; return null").await;
    let first = eventually("a first tick", WAIT, || async {
        let t = c.text_of("#log").await;
        t.contains("tick-").then_some(t)
    })
    .await;
    // A line the page did not have at load arrives while the container still runs.
    let want = (1..=12)
        .find(|n| !first.contains(&format!("tick-{n}\n")) && !first.ends_with(&format!("tick-{n}")))
        .map(|n| (n + 1).min(12))
        .unwrap_or(12);
    eventually(&format!("tick-{want} arriving live"), WAIT, || async {
        c.text_of("#log")
            .await
            .contains(&format!("tick-{want}"))
            .then_some(())
    })
    .await;
    let (status, _) = highway_tests::status_of(&c.db.pool, id).await;
    c.shot("activity-following").await;
    assert_eq!(status, "running", "the line arrived only after the end");
    eventually("the last tick", WAIT, || async {
        c.text_of("#log").await.contains("tick-12").then_some(())
    })
    .await;
    eventually("the stream's end", WAIT, || async {
        c.text_of("#log-status")
            .await
            .contains("succeeded")
            .then_some(())
    })
    .await;
    assert_eq!(
        c.js("return window.__same_page || null").await,
        "yes",
        "the page was reloaded"
    );
    c.shot("activity-finished").await;
    c.stop().await;
}

#[tokio::test]
async fn ui_cancelling_a_run_from_its_page_leaves_zero_containers() {
    let c = Console::new("run_cancel", true).await;
    let def = WorkflowDefinition::from_json(SLOW).unwrap();
    let inputs: BTreeMap<String, String> = [("image".to_string(), TEST_IMAGE.to_string())].into();
    let run = highway_workflows::runs::start_run(
        &c.db.client(),
        "tenant-a",
        &def,
        &inputs,
        &highway_worker::workflow::NoDigests,
    )
    .await
    .unwrap();
    let wait = eventually("step `wait` scheduled", WAIT, || async {
        let s = highway_workflows::runs::run_status(&c.db.pool, run, None)
            .await
            .unwrap();
        s.steps
            .iter()
            .find(|s| s.step_id == "wait")
            .and_then(|s| s.activity_id)
    })
    .await;
    wait_running(&docker().await, wait, WAIT).await;
    c.login(&c.a).await;
    c.goto(&format!("/ui/runs/{run}")).await;
    c.wait_css(
        "svg.dag g.node.state-running[data-step='wait']",
        "the running step in the graph",
    )
    .await;
    c.wait_css(
        "svg.dag g.node.state-succeeded[data-step='first']",
        "the finished step",
    )
    .await;
    assert!(
        c.text_of("#run").await.contains("/out → /in")
            || c.page_source().await.contains("/out → /in")
    );
    c.shot("run").await;
    c.b()
        .find(Locator::Css(&format!(
            "form[action='/ui/runs/{run}/cancel'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css("p.notice", "the cancel notice").await;
    c.wait_css(
        "#run .summary .state-cancelled",
        "the run cancelled on its page",
    )
    .await;
    c.shot("run-cancelled").await;
    let d = docker().await;
    eventually("zero containers of the run's activities", WAIT, || async {
        let ids: Vec<(Uuid,)> =
            sqlx::query_as("SELECT id FROM highway.activities WHERE workflow_run_id = $1")
                .bind(run)
                .fetch_all(&c.db.pool)
                .await
                .unwrap();
        let mut left = 0;
        for (id,) in &ids {
            left += highway_tests::docker::managed_containers(&d, *id)
                .await
                .len();
        }
        (left == 0).then_some(())
    })
    .await;
    assert_no_containers(&d, wait).await;
    // Audited like the API's cancel: the session's token is the actor.
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM highway.audit_log WHERE action = 'run.cancel' AND workflow_run_id = $1",
    )
    .bind(run)
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(actor, format!("token:{}", c.a_id));
    c.stop().await;
}

#[tokio::test]
async fn ui_pausing_a_schedule_from_its_page() {
    let c = Console::new("schedule_pause", false).await;
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/v1/schedules", c.base))
        .bearer_auth(&c.a)
        .json(
            &json!({"name": "nightly", "cron": "0 3 * * *", "timezone": "Europe/Berlin",
                      "activity": {"kind": "highway.noop", "params": {}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let id: Uuid = resp.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    c.login(&c.a).await;
    c.goto("/ui/schedules").await;
    c.wait_css(&format!("tr[data-id='{id}']"), "the schedule in the list")
        .await;
    c.shot("schedules").await;
    c.goto(&format!("/ui/schedules/{id}")).await;
    c.wait_css("#h-next", "the next fires").await;
    // Next fires in the schedule's own zone (03:00 local, +01:00 in winter).
    assert!(
        c.text_of("main").await.contains("T03:00:00+01:00"),
        "{}",
        c.text_of("main").await
    );
    c.shot("schedule").await;
    c.b()
        .find(Locator::Css("input[name=note]"))
        .await
        .unwrap()
        .send_keys("maintenance")
        .await
        .unwrap();
    c.b()
        .find(Locator::Css(&format!(
            "form[action='/ui/schedules/{id}/pause'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css("p.notice", "the pause notice").await;
    assert!(c.text_of("main").await.contains("maintenance"));
    c.shot("schedule-paused").await;
    let (paused, note): (bool, Option<String>) =
        sqlx::query_as("SELECT paused, paused_note FROM highway.schedules WHERE id = $1")
            .bind(id)
            .fetch_one(&c.db.pool)
            .await
            .unwrap();
    assert!(paused);
    assert_eq!(note.as_deref(), Some("maintenance"));
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM highway.audit_log WHERE action = 'schedule.pause' AND target = $1",
    )
    .bind(id.to_string())
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(actor, format!("token:{}", c.a_id));
    // Resume is offered now, and works.
    c.b()
        .find(Locator::Css(&format!(
            "form[action='/ui/schedules/{id}/resume'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css(
        &format!("form[action='/ui/schedules/{id}/pause']"),
        "pause offered again",
    )
    .await;
    // Trigger now: one slot fired, in the history, audited.
    c.b()
        .find(Locator::Css(&format!(
            "form[action='/ui/schedules/{id}/trigger'] button"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait_css(
        "#h-fires + table .state-fired",
        "the fired slot in the history",
    )
    .await;
    c.shot("schedule-triggered").await;
    let fired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE action = 'schedule.trigger' AND target = $1",
    )
    .bind(id.to_string())
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(fired, 1);
    c.stop().await;
}

#[tokio::test]
async fn ui_a_tenant_cannot_open_another_tenants_activity() {
    let c = Console::new("tenant_404", false).await;
    let theirs = c.enqueue("tenant-b", "highway.noop", json!({})).await;
    let mine = c.enqueue("tenant-a", "highway.noop", json!({})).await;
    c.login(&c.a).await;
    c.goto(&format!("/ui/activities/{mine}")).await;
    c.wait_css("#activity", "my own activity").await;
    c.shot("own-activity").await;
    c.goto(&format!("/ui/activities/{theirs}")).await;
    let h1 = c
        .wait_css("main h1", "a heading")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(h1, "Not found");
    assert!(!c.page_source().await.contains("tenant-b"));
    c.shot("other-tenants-activity").await;
    // The same as a missing id, at the HTTP level too.
    let (http, cookie) = c.http_login(&c.a).await;
    for (id, want) in [(mine, 200), (theirs, 404), (Uuid::new_v4(), 404)] {
        let r = http
            .get(format!("{}/ui/activities/{id}", c.base))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "activity {id}");
    }
    let r = http
        .get(format!("{}/ui/live/activity?id={theirs}", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "the live fragment of another tenant's activity"
    );
    let r = http
        .get(format!("{}/ui/activities/{theirs}/logs", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "the log stream of another tenant's activity"
    );
    // The other tenant's own token sees it.
    let (http_b, cookie_b) = c.http_login(&c.b).await;
    let r = http_b
        .get(format!("{}/ui/activities/{theirs}", c.base))
        .header("cookie", &cookie_b)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    c.stop().await;
}

#[tokio::test]
async fn ui_a_form_post_without_the_csrf_token_is_refused() {
    let c = Console::new("csrf", false).await;
    let id = c.enqueue("tenant-a", "highway.noop", json!({})).await;
    c.login(&c.a).await;
    c.goto(&format!("/ui/activities/{id}")).await;
    c.wait_css("form[action$='/cancel']", "the cancel button")
        .await;
    c.shot("activity").await;
    let (http, cookie) = c.http_login(&c.a).await;
    let page = http
        .get(format!("{}/ui/activities/{id}", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let h = page.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "same-origin");
    let csrf = csrf_of(&page.text().await.unwrap());
    let cancel = format!("{}/ui/activities/{id}/cancel", c.base);
    let post = |body: String| {
        http.post(&cancel)
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    for body in [
        String::new(),
        "csrf=".into(),
        format!("csrf={}", "0".repeat(64)),
    ] {
        let r = post(body.clone()).await.unwrap();
        assert_eq!(r.status().as_u16(), 403, "body {body:?}");
    }
    let (status, _) = highway_tests::status_of(&c.db.pool, id).await;
    assert_eq!(status, "scheduled", "a refused form changed the activity");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.audit_log WHERE action = 'activity.cancel'",
    )
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 0);
    // Another session's token does not pass either.
    let (_, other_cookie) = c.http_login(&c.a).await;
    let other_page = http
        .get(format!("{}/ui/activities/{id}", c.base))
        .header("cookie", &other_cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let r = post(format!("csrf={}", csrf_of(&other_page)))
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "another session's CSRF token");
    // With its own token the same POST works and is audited as the token.
    let r = post(format!("csrf={csrf}")).await.unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let (status, _) = highway_tests::status_of(&c.db.pool, id).await;
    assert_eq!(status, "cancelled");
    let actor: String = sqlx::query_scalar(
        "SELECT actor FROM highway.audit_log WHERE action = 'activity.cancel' AND activity_id = $1",
    )
    .bind(id)
    .fetch_one(&c.db.pool)
    .await
    .unwrap();
    assert_eq!(actor, format!("token:{}", c.a_id));
    c.goto(&format!("/ui/activities/{id}")).await;
    c.wait_css("#activity .state-cancelled", "the cancelled state")
        .await;
    c.shot("activity-cancelled").await;
    // A login posted from another site's page is refused (no session for it).
    let r = http
        .post(format!("{}/ui/login", c.base))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", c.a))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a cross-site login");
    assert!(r.headers().get("set-cookie").is_none());
    // Revoking the token ends its sessions at once: back to the login form.
    assert!(store::revoke_token(&c.db.pool, c.a_id).await.unwrap());
    let r = http
        .get(format!("{}/ui/activities/{id}", c.base))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    let r = post(format!("csrf={csrf}")).await.unwrap();
    assert_eq!(
        r.status().as_u16(),
        303,
        "an action of a revoked token's session"
    );
    assert_eq!(r.headers()["location"], "/ui/login");
    c.stop().await;
}
