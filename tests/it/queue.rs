//! The activity queue against a real Postgres: enqueue, claim races, retries, the
//! rescuer, fencing, cancellation, timeouts, connection loss.

use highway_tests::{eventually, status_of, TestDb, TestWorker};
use highway_worker::executor::Rescuer;
use highway_worker::queue::store;
use highway_worker::queue::{Claimed, Completion, Outcome};
use highway_workflows::{CancelOutcome, EnqueueRequest, Error, HumanDuration};
use serde_json::json;
use std::collections::HashSet;
use std::time::Duration;
use uuid::Uuid;

const NOOP: &str = "highway.noop";
const SLEEP: &str = "highway.sleep";
const WAIT: Duration = Duration::from_secs(30);

fn sleep_req(params: serde_json::Value) -> EnqueueRequest {
    EnqueueRequest::new(SLEEP, params)
}

#[tokio::test]
async fn noop_runs_to_success_with_its_result() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(4), |_| {});
    let e = client
        .enqueue(&EnqueueRequest::new(NOOP, json!({"x": 1})))
        .await
        .unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!(a.status, "succeeded");
    assert_eq!(a.attempt, 1);
    assert_eq!(a.result, Some(json!({"echo": {"x": 1}})));
    assert!(a.lease_owner.is_none() && a.finished_at.is_some());
    let s = w.stop().await;
    assert_eq!((s.claimed, s.completed, s.rejected), (1, 1, 0));
}

#[tokio::test]
async fn idempotent_enqueue_returns_the_original_and_refuses_a_different_body() {
    let db = TestDb::new().await;
    let client = db.client();
    let req = EnqueueRequest::new(NOOP, json!({"a": 1})).idempotency_key("k1");
    let first = client.enqueue(&req).await.unwrap();
    assert!(first.created);
    // The response was "lost" and the client retries: the same activity.
    let again = client.enqueue(&req).await.unwrap();
    assert_eq!((again.id, again.created), (first.id, false));
    // Same key, different body: refused.
    let other = EnqueueRequest::new(NOOP, json!({"a": 2})).idempotency_key("k1");
    assert!(matches!(
        client.enqueue(&other).await,
        Err(Error::IdempotencyConflict { .. })
    ));
    // Another tenant may use the same key.
    let t2 = client.enqueue(&other.clone().tenant("t2")).await.unwrap();
    assert!(t2.created);
    // Racing retries of one request create exactly one activity.
    let racing = EnqueueRequest::new(NOOP, json!({})).idempotency_key("race");
    let ids: Vec<Uuid> = futures::future::join_all((0..16).map(|_| {
        let c = client.clone();
        let r = racing.clone();
        async move { c.enqueue(&r).await.unwrap().id }
    }))
    .await;
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 1);
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM highway.activities WHERE idempotency_key = 'race'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn bad_requests_name_the_field() {
    let db = TestDb::new().await;
    let client = db.client();
    let mut r = EnqueueRequest::new(NOOP, json!({}));
    r.queue = "no spaces".into();
    match client.enqueue(&r).await {
        Err(Error::InvalidField(f)) => assert_eq!(f.field, "queue"),
        other => panic!("expected InvalidField, got {other:?}"),
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.activities")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test]
async fn batched_enqueue_inside_a_caller_transaction() {
    let db = TestDb::new().await;
    let client = db.client();
    let reqs: Vec<EnqueueRequest> = (0..50)
        .map(|i| EnqueueRequest::new(NOOP, json!({"i": i})))
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    let out = client.enqueue_many_tx(&mut tx, &reqs).await.unwrap();
    assert_eq!(out.len(), 50);
    tx.rollback().await.unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.activities")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "a rolled-back transaction leaves no activity");
    let out = client.enqueue_many(&reqs).await.unwrap();
    assert_eq!(out.iter().map(|e| e.id).collect::<HashSet<_>>().len(), 50);
}

#[tokio::test]
async fn retries_with_backoff_then_fails_with_the_last_error() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let mut req = sleep_req(json!({"duration": "10ms", "fail_with": "Boom"}));
    req.retry_policy.initial_interval = HumanDuration::from_millis(200);
    req.retry_policy.maximum_interval = HumanDuration::from_millis(400);
    req.retry_policy.maximum_attempts = 3;
    let t0 = std::time::Instant::now();
    let e = client.enqueue(&req).await.unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!((a.status.as_str(), a.attempt), ("failed", 3));
    let err = a.error.unwrap();
    assert_eq!(err["type"], "Boom");
    assert_eq!(err["attempt"], 3);
    // Two backoffs: 200 ms then 400 ms.
    assert!(
        t0.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t0.elapsed()
    );

    // A long initial interval: after the first failure the retry waits, by the database's clock.
    let mut req = sleep_req(json!({"duration": "10ms", "fail_with": "Boom"}));
    req.retry_policy.initial_interval = HumanDuration::from_secs(3600);
    req.retry_policy.maximum_interval = HumanDuration::from_secs(7200);
    let e = client.enqueue(&req).await.unwrap();
    let secs: f64 = eventually("first attempt fails and is rescheduled", WAIT, || async {
        sqlx::query_scalar::<_, f64>(
            "SELECT EXTRACT(EPOCH FROM run_at - now())::float8 FROM highway.activities \
             WHERE id = $1 AND status = 'scheduled' AND attempt = 1",
        )
        .bind(e.id)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
    })
    .await;
    assert!((3500.0..=3600.0).contains(&secs), "retry in {secs}s");
    w.stop().await;
}

#[tokio::test]
async fn non_retryable_errors_and_listed_types_fail_at_once() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let e = client
        .enqueue(&sleep_req(
            json!({"duration": "1ms", "fail_with": "Fatal", "retryable": false}),
        ))
        .await
        .unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!((a.status.as_str(), a.attempt), ("failed", 1));
    assert_eq!(a.error.unwrap()["retryable"], false);

    let mut req = sleep_req(json!({"duration": "1ms", "fail_with": "Listed"}));
    req.retry_policy.non_retryable_error_types = vec!["Listed".into()];
    let e = client.enqueue(&req).await.unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!((a.status.as_str(), a.attempt), ("failed", 1));

    // Bad params are non-retryable too, and the message names the field.
    let e = client
        .enqueue(&sleep_req(json!({"durration": "1s"})))
        .await
        .unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    let err = a.error.unwrap();
    assert_eq!(
        (a.status.as_str(), err["type"].as_str()),
        ("failed", Some("InvalidParams"))
    );
    assert!(
        err["message"].as_str().unwrap().contains("durration"),
        "{err}"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_retry_that_succeeds_records_success() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let mut req = sleep_req(json!({"duration": "1ms", "fail_until_attempt": 3}));
    req.retry_policy.initial_interval = HumanDuration::from_millis(10);
    req.retry_policy.maximum_attempts = 5;
    let e = client.enqueue(&req).await.unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!((a.status.as_str(), a.attempt), ("succeeded", 3));
    assert!(a.error.is_none());
    w.stop().await;
}

/// R18: 8 workers race over 1,000 activities; each attempt is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_workers_claim_each_activity_exactly_once() {
    let db = TestDb::with_max_connections(40).await;
    let client = db.client();
    let reqs: Vec<EnqueueRequest> = (0..1000)
        .map(|i| EnqueueRequest::new(NOOP, json!({"i": i})))
        .collect();
    for chunk in reqs.chunks(250) {
        client.enqueue_many(chunk).await.unwrap();
    }
    let workers: Vec<TestWorker> = (0..8)
        .map(|_| {
            let mut o = TestWorker::fast_options(16);
            o.fetch_batch = 7; // small batches: many more racing claims
                               // This test is about claim exclusivity; leases must not expire under load.
            o.lease = Duration::from_secs(30);
            o.heartbeat_interval = Duration::from_secs(5);
            TestWorker::start(&db.pool, o, |_| {})
        })
        .collect();
    eventually("all 1000 succeed", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM highway.activities WHERE status = 'succeeded'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        (n == 1000).then_some(())
    })
    .await;
    let mut claimed = 0;
    let mut active = 0;
    for w in workers {
        let s = w.stop().await;
        claimed += s.claimed;
        active += u64::from(s.claimed > 0);
        assert_eq!(s.rejected, 0);
    }
    assert_eq!(claimed, 1000, "each activity claimed exactly once in all");
    assert!(active >= 2, "the claims were spread over several workers");
    let max_attempt: i32 = sqlx::query_scalar("SELECT max(attempt) FROM highway.activities")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(max_attempt, 1);
}

/// Fencing: after the rescuer takes an attempt back, that attempt's heartbeat and
/// completion change nothing, and the next attempt is unaffected.
#[tokio::test]
async fn late_completion_after_rescue_is_rejected() {
    let db = TestDb::new().await;
    let client = db.client();
    let mut req = EnqueueRequest::new(NOOP, json!({}));
    req.retry_policy.initial_interval = HumanDuration::from_millis(1);
    let e = client.enqueue(&req).await.unwrap();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let kinds = vec![NOOP.to_string()];
    let claimed = store::claim(&db.pool, a, "default", &kinds, 10, None, 1000)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    // Worker A stops heartbeating ("paused"); its 1 s lease expires by Postgres' clock.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let rescued = Rescuer::new(db.pool.clone(), Duration::from_secs(1))
        .run_once()
        .await
        .unwrap();
    assert_eq!(rescued.retried, 1);
    let err: serde_json::Value =
        sqlx::query_scalar("SELECT error FROM highway.activities WHERE id = $1")
            .bind(e.id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(err["type"], "HeartbeatTimeout");
    let claimed_b = eventually("attempt 2 claimable", WAIT, || async {
        let c = store::claim(&db.pool, b, "default", &kinds, 10, None, 30_000)
            .await
            .unwrap();
        (!c.is_empty()).then_some(c)
    })
    .await;
    assert_eq!(claimed_b[0].attempt, 2);
    // A resumes: its heartbeat and its completion affect 0 rows.
    let held = store::heartbeat(&db.pool, a, 1000, &[(e.id, 1, None)])
        .await
        .unwrap();
    assert!(held.is_empty());
    let done = store::complete(
        &db.pool,
        a,
        20,
        &[Completion {
            id: e.id,
            attempt: 1,
            outcome: Outcome::Succeeded(json!("late")),
        }],
    )
    .await
    .unwrap();
    assert!(done.is_empty(), "late result must not be recorded");
    // Even A presenting attempt 2 is refused: it is not the lease owner.
    let done = store::complete(
        &db.pool,
        a,
        20,
        &[Completion {
            id: e.id,
            attempt: 2,
            outcome: Outcome::Succeeded(json!("late")),
        }],
    )
    .await
    .unwrap();
    assert!(done.is_empty());
    let done = store::complete(
        &db.pool,
        b,
        20,
        &[Completion {
            id: e.id,
            attempt: 2,
            outcome: Outcome::Succeeded(json!("b")),
        }],
    )
    .await
    .unwrap();
    assert_eq!(done.len(), 1);
    let a_row = client.get(e.id, None).await.unwrap();
    assert_eq!(
        (a_row.status.as_str(), a_row.result),
        ("succeeded", Some(json!("b")))
    );
}

#[tokio::test]
async fn cancellation_in_each_state() {
    let db = TestDb::new().await;
    let client = db.client();
    // Scheduled (no worker yet): cancelled at once.
    let queued = client
        .enqueue(&sleep_req(json!({"duration": "60s"})))
        .await
        .unwrap();
    assert_eq!(
        client.cancel(queued.id, None).await.unwrap(),
        CancelOutcome::Cancelled
    );
    assert_eq!(status_of(&db.pool, queued.id).await.0, "cancelled");
    // Another tenant cannot see or cancel it.
    assert!(matches!(
        client.cancel(queued.id, Some("other")).await,
        Err(Error::NotFound(_))
    ));

    let w = TestWorker::start(&db.pool, TestWorker::fast_options(4), |_| {});
    // Running: the worker is told through NOTIFY and stops it.
    let running = client
        .enqueue(&sleep_req(json!({"duration": "60s"})))
        .await
        .unwrap();
    eventually("running", WAIT, || async {
        (status_of(&db.pool, running.id).await.0 == "running").then_some(())
    })
    .await;
    let t0 = std::time::Instant::now();
    assert_eq!(
        client.cancel(running.id, None).await.unwrap(),
        CancelOutcome::Requested
    );
    let a = client.wait(running.id, None, WAIT).await.unwrap();
    assert_eq!(a.status, "cancelled");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "cancel took {:?}",
        t0.elapsed()
    );
    // Finished: nothing changes.
    let done = client
        .enqueue(&EnqueueRequest::new(NOOP, json!({})))
        .await
        .unwrap();
    client.wait(done.id, None, WAIT).await.unwrap();
    assert_eq!(
        client.cancel(done.id, None).await.unwrap(),
        CancelOutcome::AlreadyFinished
    );
    assert_eq!(status_of(&db.pool, done.id).await.0, "succeeded");
    // A workflow run: scheduled and running activities all end cancelled, and the run too.
    let run = client.create_run("default", "r", &json!({})).await.unwrap();
    let r1 = client
        .enqueue(&sleep_req(json!({"duration": "60s"})).workflow_run(run))
        .await
        .unwrap();
    let mut later = sleep_req(json!({"duration": "60s"})).workflow_run(run);
    later.delay = Some(HumanDuration::from_secs(600));
    let r2 = client.enqueue(&later).await.unwrap();
    eventually("run step running", WAIT, || async {
        (status_of(&db.pool, r1.id).await.0 == "running").then_some(())
    })
    .await;
    client.cancel_run(run, None).await.unwrap();
    for id in [r1.id, r2.id] {
        assert_eq!(
            client.wait(id, None, WAIT).await.unwrap().status,
            "cancelled"
        );
    }
    eventually("run cancelled", WAIT, || async {
        let s: String =
            sqlx::query_scalar("SELECT status FROM highway.workflow_runs WHERE id = $1")
                .bind(run)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        (s == "cancelled").then_some(())
    })
    .await;
    w.stop().await;
}

/// A cancellation that races a success: the success is refused, the state is cancelled.
/// Claims up to `n` no-op activities of the default queue for `worker` (30 s lease),
/// as a fetch loop would.
async fn claim_noops(db: &TestDb, worker: Uuid, n: usize) -> Vec<Claimed> {
    store::claim(
        &db.pool,
        worker,
        "default",
        &[NOOP.to_string()],
        n,
        None,
        30_000,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_late_success_after_cancel_is_refused() {
    let db = TestDb::new().await;
    let client = db.client();
    let e = client
        .enqueue(&EnqueueRequest::new(NOOP, json!({})))
        .await
        .unwrap();
    let me = Uuid::new_v4();
    let c = claim_noops(&db, me, 1).await;
    assert_eq!(c.len(), 1);
    assert_eq!(
        client.cancel(e.id, None).await.unwrap(),
        CancelOutcome::Requested
    );
    let held = store::heartbeat(&db.pool, me, 30_000, &[(e.id, 1, None)])
        .await
        .unwrap();
    assert_eq!(
        held,
        vec![(e.id, true)],
        "the heartbeat reports the cancellation"
    );
    store::complete(
        &db.pool,
        me,
        20,
        &[Completion {
            id: e.id,
            attempt: 1,
            outcome: Outcome::Succeeded(json!(1)),
        }],
    )
    .await
    .unwrap();
    let a = client.get(e.id, None).await.unwrap();
    assert_eq!(a.status, "cancelled");
    assert!(a.result.is_none());
}

/// Completion is fenced per row: only the attempt running under this worker changes
/// (not a wrong attempt, another worker's report or a late duplicate), and a batch
/// mixing outcomes gives each row its own.
#[tokio::test]
async fn completion_batches_fence_each_row() {
    let db = TestDb::new().await;
    let client = db.client();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            client
                .enqueue(&EnqueueRequest::new(NOOP, json!({})))
                .await
                .unwrap()
                .id,
        );
    }
    let me = Uuid::new_v4();
    let claimed = claim_noops(&db, me, 4).await;
    assert_eq!(claimed.len(), 4);
    let ok = |id, attempt| Completion {
        id,
        attempt,
        outcome: Outcome::Succeeded(json!({"id": id})),
    };
    // Successes only: a wrong attempt and another worker's result change nothing.
    let done = store::complete(&db.pool, me, 20, &[ok(ids[0], 1), ok(ids[1], 2)])
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!((done[0].0, done[0].1.as_str()), (ids[0], "succeeded"));
    let other = store::complete(&db.pool, Uuid::new_v4(), 20, &[ok(ids[1], 1)])
        .await
        .unwrap();
    assert!(other.is_empty(), "another worker's result is refused");
    // A late duplicate of a recorded success is refused too.
    assert!(store::complete(&db.pool, me, 20, &[ok(ids[0], 1)])
        .await
        .unwrap()
        .is_empty());
    // Mixed: a success, a non-retryable failure, a cancellation report.
    let failed = Completion {
        id: ids[2],
        attempt: 1,
        outcome: Outcome::Failed {
            error: json!({"type": "Boom", "message": "no", "retryable": false, "attempt": 1}),
            error_type: "Boom".into(),
            retryable: false,
            timeout: false,
        },
    };
    let cancelled = Completion {
        id: ids[3],
        attempt: 1,
        outcome: Outcome::Cancelled(json!({"type": "Cancelled", "message": "stop"})),
    };
    let mut done = store::complete(&db.pool, me, 20, &[ok(ids[1], 1), failed, cancelled])
        .await
        .unwrap();
    done.sort_by_key(|d| ids.iter().position(|i| *i == d.0));
    let statuses: Vec<&str> = done.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(statuses, ["succeeded", "failed", "cancelled"]);
    let a = client.get(ids[1], None).await.unwrap();
    assert_eq!(a.result, Some(json!({"id": ids[1]})));
    assert!(a.error.is_none() && a.lease_owner.is_none() && a.finished_at.is_some());
    let f = client.get(ids[2], None).await.unwrap();
    assert_eq!(f.error.unwrap()["type"], "Boom");
    assert!(f.result.is_none());
}

#[tokio::test]
async fn start_to_close_timeout_retries_then_times_out() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let mut req = sleep_req(json!({"duration": "30s"}));
    req.timeouts.start_to_close = Some(HumanDuration::from_millis(300));
    req.retry_policy.initial_interval = HumanDuration::from_millis(10);
    req.retry_policy.maximum_attempts = 2;
    let e = client.enqueue(&req).await.unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!((a.status.as_str(), a.attempt), ("timed_out", 2));
    assert_eq!(a.error.unwrap()["type"], "StartToCloseTimeout");
    w.stop().await;
}

#[tokio::test]
async fn schedule_to_start_and_schedule_to_close_timeouts() {
    let db = TestDb::new().await;
    let client = db.client();
    // No worker serves this queue: schedule-to-start expires.
    let mut req = EnqueueRequest::new(NOOP, json!({})).queue("nobody");
    req.timeouts.schedule_to_start = Some(HumanDuration::from_millis(200));
    let e = client.enqueue(&req).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let c = Rescuer::new(db.pool.clone(), Duration::from_secs(1))
        .run_once()
        .await
        .unwrap();
    assert_eq!(c.expired_waiting, 1);
    let a = client.get(e.id, None).await.unwrap();
    assert_eq!(
        (a.status.as_str(), a.error.unwrap()["type"].as_str()),
        ("timed_out", Some("ScheduleToStartTimeout"))
    );

    // Retries keep failing; the whole activity is bounded by schedule-to-close.
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let mut req = sleep_req(json!({"duration": "100ms", "fail_with": "Flaky"}));
    req.retry_policy.initial_interval = HumanDuration::from_millis(100);
    req.retry_policy.maximum_attempts = 1000;
    req.timeouts.schedule_to_close = Some(HumanDuration::from_millis(1500));
    let t0 = std::time::Instant::now();
    let e = client.enqueue(&req).await.unwrap();
    let a = client.wait(e.id, None, WAIT).await.unwrap();
    assert_eq!(a.status, "timed_out");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(a.attempt >= 2 && a.attempt < 1000);
    w.stop().await;
}

/// R9: our connections are terminated mid-run; nothing surfaces and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminated_connections_do_not_surface_errors() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(8), |_| {});
    let mut ids = Vec::new();
    for round in 0..5 {
        let reqs: Vec<EnqueueRequest> = (0..40)
            .map(|_| sleep_req(json!({"duration": "20ms"})))
            .collect();
        ids.extend(
            client
                .enqueue_many(&reqs)
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id),
        );
        // Kill every backend of this database but none of the cluster's others.
        let killer = TestDb::admin_pool().await;
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()) t",
        )
        .bind(&db.name)
        .fetch_one(&killer)
        .await
        .unwrap();
        assert!(round > 0 || killed > 0, "nothing was terminated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The test's own pool lost its connections too; reads still work.
    for id in &ids {
        let a = client
            .wait(*id, None, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(a.status, "succeeded", "{a:?}");
    }
    w.stop().await;
}

/// The rescuer deletes finished activities after the retention period, and nothing else.
#[tokio::test]
async fn finished_activities_are_deleted_after_the_retention() {
    let db = TestDb::new().await;
    let client = db.client();
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(2), |_| {});
    let done = client
        .enqueue(&EnqueueRequest::new(NOOP, json!({})))
        .await
        .unwrap();
    client.wait(done.id, None, WAIT).await.unwrap();
    w.stop().await;
    let mut later = EnqueueRequest::new(NOOP, json!({}));
    later.delay = Some(HumanDuration::from_secs(3600));
    let waiting = client.enqueue(&later).await.unwrap();
    let keep = Rescuer::new(db.pool.clone(), Duration::from_secs(1)).with_retention(None);
    assert_eq!(keep.run_once().await.unwrap().deleted, 0);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let clean = Rescuer::new(db.pool.clone(), Duration::from_secs(1))
        .with_retention(Some(Duration::from_millis(10)));
    assert_eq!(clean.run_once().await.unwrap().deleted, 1);
    assert!(matches!(
        client.get(done.id, None).await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(status_of(&db.pool, waiting.id).await.0, "scheduled");
}

/// Concurrent single enqueues share statements (`Client`'s group insert): each caller
/// still gets its own answer. Keyless requests all land once; one key with one body
/// yields one activity for all its callers; a second body under that key is refused;
/// a request that breaks a constraint (an unknown workflow run) fails alone without
/// failing the requests that shared its statement.
#[tokio::test]
async fn concurrent_single_enqueues_share_statements_without_mixing_answers() {
    let db = TestDb::new().await;
    let client = db.client();
    let mut calls = Vec::new();
    for i in 0..240usize {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            let req = match i % 8 {
                // Same key, same body.
                0 => EnqueueRequest::new("highway.noop", json!({"k": "same"}))
                    .idempotency_key("shared-key"),
                // Same key, another body: refused (unless it came first, see below).
                1 if i == 1 => EnqueueRequest::new("highway.noop", json!({"k": "other"}))
                    .idempotency_key("conflict-key"),
                1 => EnqueueRequest::new("highway.noop", json!({"k": "first"}))
                    .idempotency_key("conflict-key"),
                // A run that does not exist: a foreign-key violation.
                2 => EnqueueRequest::new("highway.noop", json!({})).workflow_run(Uuid::new_v4()),
                _ => EnqueueRequest::new("highway.noop", json!({"i": i})),
            };
            (i, c.enqueue(&req).await)
        }));
    }
    let mut keyless = HashSet::new();
    let mut shared_ids = HashSet::new();
    let mut shared_created = 0;
    let (mut conflict_ok, mut conflict_refused) = (HashSet::new(), 0);
    let mut fk_failed = 0;
    for h in calls {
        let (i, res) = h.await.unwrap();
        match i % 8 {
            0 => {
                let e = res.expect("same key, same body");
                shared_ids.insert(e.id);
                shared_created += usize::from(e.created);
            }
            1 => match res {
                Ok(e) => {
                    conflict_ok.insert(e.id);
                }
                Err(Error::IdempotencyConflict { key }) => {
                    assert_eq!(key, "conflict-key");
                    conflict_refused += 1;
                }
                Err(e) => panic!("request {i}: {e}"),
            },
            2 => {
                assert!(
                    matches!(res, Err(Error::RunNotFound(_))),
                    "request {i} names an unknown run: {res:?}"
                );
                fk_failed += 1;
            }
            _ => {
                let e = res.expect("keyless");
                assert!(e.created);
                assert!(keyless.insert(e.id), "an id answered twice");
            }
        }
    }
    assert_eq!(keyless.len(), 150);
    assert_eq!((shared_ids.len(), shared_created), (1, 1));
    assert_eq!(
        conflict_ok.len(),
        1,
        "one activity holds the conflicting key"
    );
    // Whichever body came first owns the key; the other body's calls are refused.
    assert!(
        conflict_refused == 1 || conflict_refused == 29,
        "refused {conflict_refused}"
    );
    assert_eq!(fk_failed, 30);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.activities")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 152, "150 keyless + one per key, nothing duplicated");
}
