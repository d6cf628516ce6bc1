//! Waiting is notified, not polled: every path that ends an activity or a run announces
//! it on the completion channels (and nothing else does); `DoneWaiter` wakes on the
//! announcement itself (not its fallback re-read); the API's long poll
//! (`GET /v1/activities/{id}?wait=`, `GET /v1/runs/{id}?wait=`) answers with the terminal
//! state once it comes, bounds `wait`, and lets go when the server drains.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use highway_tests::{eventually, TestDb, TestWorker};
use highway_worker::api::{self, store, wait::MAX_WAIT_LISTENERS, AppState};
use highway_worker::config::api::ApiConfig;
use highway_worker::health::Health;
use highway_workflows::done::{DoneWaiter, Wake, ACTIVITY_DONE_CHANNEL, RUN_DONE_CHANNEL};
use highway_workflows::EnqueueRequest;
use serde_json::{json, Value};
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tower::ServiceExt;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

async fn scheduled_noop(db: &TestDb) -> Uuid {
    // On a queue no worker of this test serves, so it stays scheduled until ended here.
    let req = EnqueueRequest::new("highway.noop", json!({})).queue("idle");
    db.client().enqueue(&req).await.unwrap().id
}

#[tokio::test]
async fn every_terminal_transition_is_announced_once_and_nothing_else() {
    let db = TestDb::new().await;
    let client = db.client();
    let mut l = PgListener::connect_with(&db.pool).await.unwrap();
    l.listen_all([ACTIVITY_DONE_CHANNEL, RUN_DONE_CHANNEL])
        .await
        .unwrap();

    // Cancelled while scheduled; succeeded through a worker (claimed first: the claim's
    // scheduled → running must not be announced); a run cancelled.
    let cancelled = scheduled_noop(&db).await;
    client.cancel(cancelled, None).await.unwrap();
    let done = client
        .enqueue(&EnqueueRequest::new("highway.noop", json!({"x": 1})))
        .await
        .unwrap()
        .id;
    let worker = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let a = client.wait(done, None, WAIT).await.unwrap();
    assert_eq!(a.status, "succeeded");
    let run = client.create_run("t", "r", &json!({})).await.unwrap();
    client.cancel_run(run, None).await.unwrap();

    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    let expected = [
        (ACTIVITY_DONE_CHANNEL, cancelled),
        (ACTIVITY_DONE_CHANNEL, done),
        (RUN_DONE_CHANNEL, run),
    ];
    let deadline = Instant::now() + WAIT;
    while !expected
        .iter()
        .all(|(c, id)| seen.contains_key(&(c.to_string(), id.to_string())))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, l.recv())
            .await
            .unwrap_or_else(|_| panic!("announcements missing; seen {seen:?}"))
            .unwrap();
        *seen
            .entry((n.channel().to_string(), n.payload().to_string()))
            .or_default() += 1;
    }
    worker.stop().await;
    for (c, id) in expected {
        assert_eq!(
            seen[&(c.to_string(), id.to_string())],
            1,
            "{c} {id} announced more than once (a non-terminal update notified?): {seen:?}"
        );
    }
}

#[tokio::test]
async fn done_waiter_wakes_on_the_announcement_not_the_fallback() {
    let db = TestDb::new().await;
    let client = db.client();
    let id = scheduled_noop(&db).await;
    let other = scheduled_noop(&db).await;
    let mut waiter = DoneWaiter::listen(&db.pool, ACTIVITY_DONE_CHANNEL, id).await;
    assert!(waiter.is_listening());
    // Another activity's end does not wake it; its own does, well before the deadline.
    let (wake, ()) = tokio::join!(waiter.wake(Instant::now() + WAIT), async {
        client.cancel(other, None).await.unwrap();
        client.cancel(id, None).await.unwrap();
    });
    assert_eq!(wake, Wake::Notified);
    // Without an announcement it re-reads on the fallback tick.
    let mut idle = DoneWaiter::listen(&db.pool, ACTIVITY_DONE_CHANNEL, Uuid::now_v7()).await;
    assert_eq!(idle.wake(Instant::now() + WAIT).await, Wake::Recheck);
    assert_eq!(
        idle.wake(Instant::now() + Duration::from_millis(50)).await,
        Wake::Deadline
    );
}

struct WaitApi {
    db: TestDb,
    app: Router,
    admin: String,
    listeners: Arc<Semaphore>,
    health: Health,
}

impl WaitApi {
    async fn new() -> Self {
        let db = TestDb::new().await;
        let health = Health::default();
        let st = AppState::new(health.clone(), db.pool.clone(), ApiConfig::default());
        let listeners = st.wait_listeners.clone();
        let app = api::router(st);
        let (_, admin) = store::create_token(&db.pool, "admin", None).await.unwrap();
        Self {
            db,
            app,
            admin,
            listeners,
            health,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let req = Request::get(path)
            .header("authorization", format!("Bearer {}", self.admin))
            .body(Body::empty())
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Until a request holds a LISTEN connection (it is inside its wait).
    async fn until_waiting(&self) {
        eventually("a request waiting", WAIT, || async {
            (self.listeners.available_permits() < MAX_WAIT_LISTENERS).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn long_poll_answers_with_the_terminal_state_once_it_comes() {
    let t = Arc::new(WaitApi::new().await);
    let id = scheduled_noop(&t.db).await;
    let path = format!("/v1/activities/{id}?wait=60s");
    let t2 = t.clone();
    let pending = tokio::spawn(async move { t2.get(&path).await });
    t.until_waiting().await;
    t.db.client().cancel(id, None).await.unwrap();
    let (status, body) = tokio::time::timeout(WAIT, pending)
        .await
        .expect("the long poll answers once the activity ends")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
    assert_eq!(t.listeners.available_permits(), MAX_WAIT_LISTENERS);

    // Runs too.
    let run =
        t.db.client()
            .create_run("t", "r", &json!({}))
            .await
            .unwrap();
    let path = format!("/v1/runs/{run}?wait=60s");
    let t2 = t.clone();
    let pending = tokio::spawn(async move { t2.get(&path).await });
    t.until_waiting().await;
    t.db.client().cancel_run(run, None).await.unwrap();
    let (status, body) = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "cancelled", "{body}");
}

#[tokio::test]
async fn long_poll_is_bounded_and_answers_the_current_state_when_it_ends() {
    let t = WaitApi::new().await;
    let id = scheduled_noop(&t.db).await;
    for bad in ["301s", "soon", "-1"] {
        let (status, body) = t.get(&format!("/v1/activities/{id}?wait={bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(body.to_string().contains("wait"), "{bad}: {body}");
    }
    let (status, body) = t.get(&format!("/v1/runs/{}?wait=1h", Uuid::now_v7())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    // A short wait that ends first answers the state as it is.
    let (status, body) = t.get(&format!("/v1/activities/{id}?wait=200ms")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "scheduled", "{body}");
    // An unknown id is 404 at once, not after the wait.
    let (status, _) = t
        .get(&format!("/v1/activities/{}?wait=300s", Uuid::now_v7()))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A terminal one answers at once.
    t.db.client().cancel(id, None).await.unwrap();
    let (status, body) =
        tokio::time::timeout(WAIT, t.get(&format!("/v1/activities/{id}?wait=300s")))
            .await
            .expect("a terminal activity answers without waiting");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "cancelled");
}

#[tokio::test]
async fn draining_ends_a_long_poll() {
    let t = Arc::new(WaitApi::new().await);
    let id = scheduled_noop(&t.db).await;
    let path = format!("/v1/activities/{id}?wait=300s");
    let t2 = t.clone();
    let pending = tokio::spawn(async move { t2.get(&path).await });
    t.until_waiting().await;
    t.health.draining.cancel();
    let (status, body) = tokio::time::timeout(WAIT, pending)
        .await
        .expect("a draining server lets waiting requests go")
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "scheduled", "{body}");
}
