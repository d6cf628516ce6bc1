//! Durable cron against a real Postgres: exactly once per slot with several schedulers
//! (in process and as `highway scheduler` children, one killed), a crash mid-tick, catch-up
//! after downtime (R20), DST in Europe/Berlin and America/New_York (R22, fake clock),
//! validation (S22), a clock jumping back, overlap policies with activities that outlive
//! their interval, and a real `tools.docker.run` job every second for 30 s.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use highway_tests::docker::{assert_no_containers, DockerHarness, TEST_IMAGE};
use highway_tests::{eventually, Process, TestDb, TestWorker};
use highway_worker::scheduler::{
    Error, FakeClock, OverlapPolicy, RunCounts, Schedule, ScheduleClient, ScheduleSpec, Scheduler,
    SchedulerOptions, TickFailpoint,
};
use highway_workflows::schedule::{ActivityTemplate, CatchupPolicy, FireOutcome, ScheduleLimits};
use highway_workflows::HumanDuration;
use serde_json::json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const NOOP: &str = "highway.noop";

/// A `schedule_fires` row: (fire_at, outcome, activity_id, reason).
type FireRow = (DateTime<Utc>, String, Option<Uuid>, Option<String>);
/// An activity run: (started_at, finished_at, status).
type RunRow = (Option<DateTime<Utc>>, Option<DateTime<Utc>>, String);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A no-op schedule. `allow`, since no worker drains these activities: under `skip`
/// the first fire's still-scheduled activity would skip every later slot.
fn spec(name: &str, cron: &str) -> ScheduleSpec {
    let mut s = ScheduleSpec::new(
        name,
        cron,
        ActivityTemplate::new(NOOP, json!({"name": name})),
    );
    s.overlap = OverlapPolicy::Allow;
    s
}

fn fake(pool: &PgPool, clock: &FakeClock, opts: SchedulerOptions) -> Scheduler {
    Scheduler::new(pool.clone(), opts, Arc::new(clock.clone()))
}

/// Fire records of a schedule: fire_at → (outcome, activity).
async fn fires(pool: &PgPool, id: Uuid) -> Vec<FireRow> {
    sqlx::query_as(
        "SELECT fire_at, outcome, activity_id, reason FROM highway.schedule_fires \
         WHERE schedule_id = $1 ORDER BY fire_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn fired_at(rows: &[FireRow]) -> Vec<DateTime<Utc>> {
    rows.iter()
        .filter(|r| r.1 == "fired")
        .map(|r| r.0)
        .collect()
}

/// (activities of the schedule, distinct idempotency keys) — equal means no duplicate.
async fn activity_counts(pool: &PgPool, id: Uuid) -> (i64, i64) {
    sqlx::query_as(
        "SELECT count(*), count(DISTINCT idempotency_key) FROM highway.activities \
         WHERE idempotency_key LIKE 'schedule:' || $1::text || ':%'",
    )
    .bind(id)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every fired slot has exactly one activity, and no activity lacks a fired slot.
async fn assert_exactly_once(pool: &PgPool, s: &Schedule) -> usize {
    let rows = fires(pool, s.id).await;
    let fired = rows.iter().filter(|r| r.1 == "fired").count() as i64;
    let (acts, keys) = activity_counts(pool, s.id).await;
    assert_eq!(acts, keys, "{}: duplicate activities for one slot", s.name);
    assert_eq!(acts, fired, "{}: activities vs fired slots", s.name);
    fired as usize
}

/// Whole seconds from `a` to `b` are consecutive: no slot skipped between the ends.
fn assert_consecutive_seconds(name: &str, at: &[DateTime<Utc>]) {
    for w in at.windows(2) {
        assert_eq!(
            (w[1] - w[0]).num_milliseconds(),
            1000,
            "{name}: a gap between fired slots {} and {}",
            w[0],
            w[1]
        );
    }
}

#[tokio::test]
async fn r19_three_schedulers_in_process_fire_each_slot_exactly_once() {
    let db = TestDb::with_max_connections(40).await;
    let c = ScheduleClient::new(db.pool.clone());
    let now = c.db_now().await.unwrap();
    let base = DateTime::from_timestamp(now.timestamp(), 0).unwrap();
    let mut scheds = Vec::new();
    for i in 0..5 {
        let s = spec(&format!("every-second-{i}"), "* * * * * *");
        scheds.push(
            c.create_as_of(&s, &ScheduleLimits::default(), base)
                .await
                .unwrap(),
        );
    }
    // A deterministic race first: three schedulers with one clock, one pass each, at once.
    let clock = FakeClock::new(base + ChronoDuration::milliseconds(3500));
    let racers: Vec<Scheduler> = (0..3)
        .map(|_| fake(&db.pool, &clock, SchedulerOptions::default()))
        .collect();
    let results = futures::future::join_all(racers.iter().map(|s| s.run_once())).await;
    let mut total = RunCounts::default();
    for r in results {
        total.merge(&r.unwrap());
    }
    // 5 schedules × 3 slots each, taken once between the three.
    assert_eq!(total.fired, 15, "{total:?}");
    for s in &scheds {
        assert_eq!(assert_exactly_once(&db.pool, s).await, 3);
    }

    // Then three real schedulers on the database's clock for a few seconds.
    let stop = CancellationToken::new();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let o = SchedulerOptions {
                tick: Duration::from_millis(200),
                ..SchedulerOptions::default()
            };
            tokio::spawn(Scheduler::with_database_clock(db.pool.clone(), o).run(stop.clone()))
        })
        .collect();
    // A few seconds of real time; on a loaded machine, until each schedule has fired at
    // least three more slots (the assertions below are unchanged).
    tokio::time::sleep(Duration::from_secs(5)).await;
    for s in &scheds {
        eventually(
            &format!("{}: 6 fires", s.name),
            Duration::from_secs(30),
            || async { (fired_at(&fires(&db.pool, s.id).await).len() >= 6).then_some(()) },
        )
        .await;
    }
    stop.cancel();
    let mut total = RunCounts::default();
    for h in handles {
        total.merge(&h.await.unwrap());
    }
    assert_eq!(total.errors, 0, "{total:?}");
    for s in &scheds {
        let rows = fires(&db.pool, s.id).await;
        let at = fired_at(&rows);
        assert!(at.len() >= 6, "{}: only {} fires", s.name, at.len());
        assert_consecutive_seconds(&s.name, &at);
        assert_exactly_once(&db.pool, s).await;
    }
}

#[tokio::test]
async fn r19_scheduler_crash_mid_tick_then_restart_rederives_the_fires() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let t0 = utc("2026-06-01T12:00:00Z");
    let s = c
        .create_as_of(
            &spec("minutely", "* * * * *"),
            &ScheduleLimits::default(),
            t0,
        )
        .await
        .unwrap();
    let clock = FakeClock::new(t0 + ChronoDuration::seconds(61));
    for fp in [TickFailpoint::AfterCas, TickFailpoint::BeforeCommit] {
        let o = SchedulerOptions {
            failpoint: Some(fp),
            ..SchedulerOptions::default()
        };
        let counts = fake(&db.pool, &clock, o).run_once().await.unwrap();
        assert_eq!((counts.errors, counts.fired), (1, 0), "{fp:?}: {counts:?}");
        // The crash left nothing: no record, no activity, the cursor where it was.
        assert!(fires(&db.pool, s.id).await.is_empty());
        assert_eq!(activity_counts(&db.pool, s.id).await, (0, 0));
        let now = c.get(s.id, None).await.unwrap();
        assert_eq!((now.last_fired_at, now.next_run_at), (None, s.next_run_at));
    }
    // The restarted scheduler derives the same slot again, exactly once.
    let sched = fake(&db.pool, &clock, SchedulerOptions::default());
    assert_eq!(sched.run_once().await.unwrap().fired, 1);
    assert_eq!(sched.run_once().await.unwrap().fired, 0);
    let rows = fires(&db.pool, s.id).await;
    assert_eq!(fired_at(&rows), vec![t0 + ChronoDuration::minutes(1)]);
    assert_exactly_once(&db.pool, &s).await;
}

#[tokio::test]
async fn r19_three_scheduler_processes_one_killed_mid_run() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let mut scheds = Vec::new();
    for i in 0..3 {
        let mut s = spec(&format!("proc-{i}"), "* * * * * *");
        s.overlap = OverlapPolicy::Allow;
        scheds.push(c.create(&s, &ScheduleLimits::default()).await.unwrap());
    }
    let env = [("HIGHWAY_SCHEDULER_TICK", "200ms")];
    let mut procs: Vec<Process> = (0..3)
        .map(|_| Process::spawn(&db.url, &["scheduler"], &env))
        .collect();
    eventually("the schedulers fire", Duration::from_secs(60), || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.schedule_fires")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        (n >= 9).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    procs[0].signal(9);
    procs[0].wait_exit(Duration::from_secs(10)).await;
    let killed_at = c.db_now().await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    for p in &procs[1..] {
        p.signal(15);
    }
    for p in &mut procs[1..] {
        assert_eq!(p.wait_exit(Duration::from_secs(20)).await, Some(0));
    }
    for s in &scheds {
        let at = fired_at(&fires(&db.pool, s.id).await);
        assert_consecutive_seconds(&s.name, &at);
        assert!(
            at.last()
                .is_some_and(|l| *l > killed_at + ChronoDuration::seconds(2)),
            "{}: the survivors kept firing after the kill",
            s.name
        );
        assert_exactly_once(&db.pool, s).await;
    }
}

#[tokio::test]
async fn r20_downtime_catch_up_per_policy_window_and_burst_cap() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let t0 = utc("2026-06-01T12:00:00Z");
    let mut made = HashMap::new();
    for (name, policy) in [
        ("latest", CatchupPolicy::Latest),
        ("all", CatchupPolicy::All),
        ("none", CatchupPolicy::None),
    ] {
        let mut s = spec(name, "* * * * *");
        s.overlap = OverlapPolicy::Allow;
        s.catchup_policy = policy;
        s.catchup_window = Some(HumanDuration::from_secs(3600));
        s.max_catchup_burst = Some(5);
        made.insert(
            name,
            c.create_as_of(&s, &ScheduleLimits::default(), t0)
                .await
                .unwrap(),
        );
    }
    // Down for two hours: 120 slots passed (12:01 .. 14:00); 60 are within the window.
    let clock = FakeClock::new(t0 + ChronoDuration::minutes(120) + ChronoDuration::seconds(30));
    let counts = fake(&db.pool, &clock, SchedulerOptions::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!(counts.fired + counts.missed, 360, "{counts:?}");
    for (name, fired, first_fired) in [("latest", 1, 120), ("all", 5, 116), ("none", 0, 0)] {
        let s = &made[name];
        let rows = fires(&db.pool, s.id).await;
        assert_eq!(rows.len(), 120, "{name}: every slot is recorded");
        let at = fired_at(&rows);
        assert_eq!(at.len(), fired, "{name}");
        if fired > 0 {
            assert_eq!(at[0], t0 + ChronoDuration::minutes(first_fired), "{name}");
            assert_eq!(*at.last().unwrap(), t0 + ChronoDuration::minutes(120));
        }
        let reasons: Vec<&str> = rows
            .iter()
            .filter(|r| r.1 == "missed")
            .filter_map(|r| r.3.as_deref())
            .collect();
        assert_eq!(reasons.len(), 120 - fired);
        assert_eq!(
            reasons
                .iter()
                .filter(|r| r.contains("catch-up window"))
                .count(),
            60,
            "{name}: the hour outside the window"
        );
        if name == "all" {
            assert!(
                reasons.iter().any(|r| r.contains("burst cap")),
                "{reasons:?}"
            );
        }
        assert_exactly_once(&db.pool, s).await;
    }
    // Back to normal: the next slot fires on time for every policy.
    clock.set(t0 + ChronoDuration::minutes(121) + ChronoDuration::seconds(1));
    let counts = fake(&db.pool, &clock, SchedulerOptions::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!((counts.fired, counts.missed), (3, 0), "{counts:?}");
}

/// Steps the fake clock from `from` to `to` by `step`, one pass each; returns the counts.
async fn step_through(
    sched: &Scheduler,
    clock: &FakeClock,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    step: ChronoDuration,
) -> RunCounts {
    let mut total = RunCounts::default();
    let mut t = from;
    while t <= to {
        clock.set(t);
        total.merge(&sched.run_once().await.unwrap());
        t += step;
    }
    total
}

#[tokio::test]
async fn r22_dst_gap_and_overlap_berlin_and_new_york() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let limits = ScheduleLimits::default();
    let start = utc("2026-03-06T12:00:00Z");
    let mut berlin = spec("berlin-0230", "30 2 * * *");
    berlin.timezone = "Europe/Berlin".into();
    let berlin = c.create_as_of(&berlin, &limits, start).await.unwrap();
    let mut ny = spec("ny-0230", "30 2 * * *");
    ny.timezone = "America/New_York".into();
    let ny = c.create_as_of(&ny, &limits, start).await.unwrap();
    let mut ny_fold = spec("ny-0130", "30 1 * * *");
    ny_fold.timezone = "America/New_York".into();
    let ny_fold = c.create_as_of(&ny_fold, &limits, start).await.unwrap();
    let clock = FakeClock::new(start);
    // Ten-minute steps: a slot is up to ten minutes late, still "on time" here.
    let o = SchedulerOptions {
        on_time_grace: Duration::from_secs(900),
        ..SchedulerOptions::default()
    };
    let sched = fake(&db.pool, &clock, o);
    let step = ChronoDuration::minutes(10);

    // Spring: New York 03-08 and Berlin 03-29.
    step_through(&sched, &clock, start, utc("2026-03-31T00:00:00Z"), step).await;
    let at = fired_at(&fires(&db.pool, berlin.id).await);
    let around: Vec<_> = at
        .iter()
        .copied()
        .filter(|t| *t >= utc("2026-03-28T00:00:00Z"))
        .collect();
    assert_eq!(
        around,
        vec![
            utc("2026-03-28T01:30:00Z"),
            utc("2026-03-29T01:00:00Z"), // 02:30 does not exist: 03:00 CEST, right after the gap
            utc("2026-03-30T00:30:00Z"),
        ]
    );
    let at = fired_at(&fires(&db.pool, ny.id).await);
    assert!(at.contains(&utc("2026-03-08T07:00:00Z")), "{at:?}"); // 03:00 EDT
    assert_eq!(
        at.iter()
            .filter(|t| t.date_naive() == utc("2026-03-08T12:00:00Z").date_naive())
            .count(),
        1
    );

    // Autumn: Berlin 10-25 (02:30 twice), New York 11-01 (01:30 twice).
    let autumn = utc("2026-10-24T00:00:00Z");
    step_through(&sched, &clock, autumn, utc("2026-11-02T12:00:00Z"), step).await;
    let at = fired_at(&fires(&db.pool, berlin.id).await);
    let on_day: Vec<_> = at
        .iter()
        .copied()
        .filter(|t| *t >= utc("2026-10-24T23:00:00Z") && *t < utc("2026-10-25T23:00:00Z"))
        .collect();
    assert_eq!(
        on_day,
        vec![utc("2026-10-25T00:30:00Z")],
        "once, at 02:30 CEST"
    );
    let at = fired_at(&fires(&db.pool, ny_fold.id).await);
    let on_day: Vec<_> = at
        .iter()
        .copied()
        .filter(|t| *t >= utc("2026-11-01T04:00:00Z") && *t < utc("2026-11-02T05:00:00Z"))
        .collect();
    assert_eq!(
        on_day,
        vec![utc("2026-11-01T05:30:00Z")],
        "once, at 01:30 EDT"
    );
    for s in [&berlin, &ny, &ny_fold] {
        let rows = fires(&db.pool, s.id).await;
        // Within the stepped ranges every slot fired (between them the clock jumped
        // seven months: that backlog is catch-up, mostly missed).
        let stepped = |t: &DateTime<Utc>| *t <= utc("2026-03-31T00:00:00Z") || *t >= autumn;
        assert!(
            rows.iter()
                .filter(|r| stepped(&r.0))
                .all(|r| r.1 == "fired"),
            "{}: {rows:?}",
            s.name
        );
        assert_exactly_once(&db.pool, s).await;
    }
    // The preview shows the overlap with both offsets.
    let p = highway_workflows::schedule::CronTz::parse("30 2 * * *", "Europe/Berlin")
        .unwrap()
        .preview(utc("2026-10-24T12:00:00Z"), 1);
    let note = p[0].dst.clone().unwrap_or_default();
    assert!(note.contains("+02:00") && note.contains("+01:00"), "{note}");
}

#[tokio::test]
async fn s22_bad_schedules_are_refused_naming_the_field() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let limits = ScheduleLimits {
        min_interval: Duration::from_secs(60),
        ..ScheduleLimits::default()
    };
    let cases: Vec<(ScheduleSpec, &str, &str)> = vec![
        (spec("a", "* * * *"), "cron", "4 fields"),
        (spec("a", "0 0 1 1 * * 2030"), "cron", "7 fields"),
        (spec("a", "0 0 30 2 *"), "cron", "never fires"),
        (spec("a", "0 24 * * *"), "cron", "hour"),
        (spec("a", "60 * * * *"), "cron", "minute"),
        (spec("a", "0 0 0 * *"), "cron", "day of month"),
        (spec("a", "0 0 * 13 *"), "cron", "month"),
        (spec("a", "0 0 * * 9"), "cron", "day of week"),
        (spec("a", "*/10 * * * * *"), "cron", "minimum interval"),
        (
            ScheduleSpec {
                timezone: "Europe/Atlantis".into(),
                ..spec("a", "0 0 * * *")
            },
            "timezone",
            "Europe/Atlantis",
        ),
        (spec("bad name", "0 0 * * *"), "name", ""),
    ];
    for (s, field, needle) in cases {
        match c.create(&s, &limits).await {
            Err(Error::InvalidField(f)) => {
                assert_eq!(f.field, field, "{s:?}: {f}");
                assert!(f.reason.contains(needle), "{}: {}", s.cron, f.reason);
            }
            other => panic!(
                "{}: expected a refusal naming {field}, got {other:?}",
                s.cron
            ),
        }
    }
    // Unknown fields in a spec file are named too.
    let e = serde_json::from_value::<ScheduleSpec>(json!({
        "name": "x", "cron": "0 0 * * *", "activity": {"kind": NOOP}, "crn": "typo"
    }))
    .unwrap_err()
    .to_string();
    assert!(e.contains("crn"), "{e}");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM highway.schedules")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
    // The name is unique per tenant.
    c.create(&spec("dup", "0 0 * * *"), &limits).await.unwrap();
    assert!(matches!(
        c.create(&spec("dup", "0 0 * * *"), &limits).await,
        Err(Error::NameTaken { .. })
    ));
}

#[tokio::test]
async fn a_clock_jumping_back_never_refires() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let t0 = utc("2026-06-01T12:00:00Z");
    let s = c
        .create_as_of(
            &spec("minutely", "* * * * *"),
            &ScheduleLimits::default(),
            t0,
        )
        .await
        .unwrap();
    let clock = FakeClock::new(t0);
    let sched = fake(&db.pool, &clock, SchedulerOptions::default());
    let fired = step_through(
        &sched,
        &clock,
        t0,
        t0 + ChronoDuration::minutes(3) + ChronoDuration::seconds(1),
        ChronoDuration::seconds(1),
    )
    .await
    .fired;
    assert_eq!(fired, 3);
    // An hour back, then forward again over the same minutes: nothing fires twice.
    let back = step_through(
        &sched,
        &clock,
        t0 - ChronoDuration::hours(1),
        t0 + ChronoDuration::minutes(3) + ChronoDuration::seconds(1),
        ChronoDuration::minutes(1),
    )
    .await;
    assert_eq!(
        (back.fired, back.missed, back.errors),
        (0, 0, 0),
        "{back:?}"
    );
    clock.set(t0 + ChronoDuration::minutes(4));
    assert_eq!(sched.run_once().await.unwrap().fired, 1);
    let at = fired_at(&fires(&db.pool, s.id).await);
    assert_eq!(
        at,
        (1..=4)
            .map(|m| t0 + ChronoDuration::minutes(m))
            .collect::<Vec<_>>()
    );
    assert_exactly_once(&db.pool, &s).await;
    // An operator change while the clock is behind keeps the cursor monotone.
    let cur = c.get(s.id, None).await.unwrap();
    let upd = c
        .update_as_of(
            s.id,
            None,
            &cur.spec(),
            &ScheduleLimits::default(),
            t0 - ChronoDuration::hours(5),
        )
        .await
        .unwrap();
    assert!(upd.next_run_at.unwrap() > cur.last_fired_at.unwrap());
}

/// Activity ids of fired slots, with their (started_at, finished_at, status).
async fn runs_of(pool: &PgPool, id: Uuid) -> Vec<RunRow> {
    sqlx::query_as(
        "SELECT a.started_at, a.finished_at, a.status FROM highway.schedule_fires f \
         JOIN highway.activities a ON a.id = f.activity_id WHERE f.schedule_id = $1 \
         ORDER BY f.fire_at",
    )
    .bind(id)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn max_concurrent(runs: &[RunRow]) -> usize {
    let mut ev: Vec<(DateTime<Utc>, i32)> = Vec::new();
    for (s, f, _) in runs {
        if let (Some(s), Some(f)) = (s, f) {
            ev.push((*s, 1));
            ev.push((*f, -1));
        }
    }
    ev.sort();
    let (mut cur, mut best) = (0, 0);
    for (_, d) in ev {
        cur += d;
        best = best.max(cur);
    }
    best as usize
}

#[tokio::test]
async fn overlap_policies_with_an_activity_that_outlives_its_interval() {
    let db = TestDb::with_max_connections(40).await;
    let c = ScheduleClient::new(db.pool.clone());
    let mut made = HashMap::new();
    for policy in [
        OverlapPolicy::Skip,
        OverlapPolicy::Allow,
        OverlapPolicy::BufferOne,
        OverlapPolicy::CancelOther,
    ] {
        let mut s = ScheduleSpec::new(
            policy.as_str(),
            "* * * * * *",
            ActivityTemplate::new("highway.sleep", json!({"duration": "3s"})),
        );
        s.overlap = policy;
        s.activity.retry_policy.maximum_attempts = 1;
        made.insert(
            policy,
            c.create(&s, &ScheduleLimits::default()).await.unwrap(),
        );
    }
    let w = TestWorker::start(&db.pool, TestWorker::fast_options(16), |_| {});
    let stop = CancellationToken::new();
    let o = SchedulerOptions {
        tick: Duration::from_millis(200),
        ..SchedulerOptions::default()
    };
    let h = tokio::spawn(Scheduler::with_database_clock(db.pool.clone(), o).run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(8)).await;
    stop.cancel();
    let counts = h.await.unwrap();
    for s in made.values() {
        c.pause(s.id, None, Some("test over")).await.unwrap();
    }
    eventually(
        "every fired activity is finished",
        Duration::from_secs(30),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM highway.activities WHERE status IN ('scheduled', 'running')",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap();
            (n == 0).then_some(())
        },
    )
    .await;
    w.stop().await;
    assert!(counts.cancelled > 0 && counts.skipped > 0, "{counts:?}");

    let outcomes = |rows: &[FireRow], o: &str| rows.iter().filter(|r| r.1 == o).count();
    // skip: never two at once; the slots in between are skipped with the reason.
    let s = &made[&OverlapPolicy::Skip];
    let rows = fires(&db.pool, s.id).await;
    assert!(outcomes(&rows, "skipped") >= 3, "{rows:?}");
    assert!(rows.iter().filter(|r| r.1 == "skipped").all(|r| r
        .3
        .as_deref()
        .unwrap_or("")
        .contains("still")));
    assert_eq!(max_concurrent(&runs_of(&db.pool, s.id).await), 1);
    assert_exactly_once(&db.pool, s).await;
    // allow: side by side.
    let s = &made[&OverlapPolicy::Allow];
    assert!(outcomes(&fires(&db.pool, s.id).await, "fired") >= 6);
    assert!(max_concurrent(&runs_of(&db.pool, s.id).await) >= 2);
    assert_exactly_once(&db.pool, s).await;
    // buffer_one: one slot waits and runs after; never two at once; no buffered left.
    let s = &made[&OverlapPolicy::BufferOne];
    let rows = fires(&db.pool, s.id).await;
    assert!(
        rows.iter()
            .any(|r| r.1 == "fired" && r.3.as_deref() == Some("buffered slot released")),
        "{rows:?}"
    );
    assert!(outcomes(&rows, "skipped") >= 1, "{rows:?}");
    assert_eq!(max_concurrent(&runs_of(&db.pool, s.id).await), 1);
    assert_exactly_once(&db.pool, s).await;
    // cancel_other: each new slot cancels the running one.
    let s = &made[&OverlapPolicy::CancelOther];
    let runs = runs_of(&db.pool, s.id).await;
    assert!(
        runs.iter().filter(|r| r.2 == "cancelled").count() >= 3,
        "{runs:?}"
    );
    assert_exactly_once(&db.pool, s).await;
}

#[tokio::test]
async fn operations_trigger_backfill_pause_resume_preview() {
    let db = TestDb::new().await;
    let c = ScheduleClient::new(db.pool.clone());
    let t0 = utc("2026-06-01T12:00:00Z");
    let mut s = spec("ops", "* * * * *");
    s.overlap = OverlapPolicy::Skip;
    s.catchup_policy = CatchupPolicy::None;
    let s = c
        .create_as_of(&s, &ScheduleLimits::default(), t0)
        .await
        .unwrap();
    // Missed slots (policy none), then backfilled: they become fired, once.
    let clock = FakeClock::new(t0 + ChronoDuration::minutes(10) + ChronoDuration::seconds(30));
    let counts = fake(&db.pool, &clock, SchedulerOptions::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!((counts.fired, counts.missed), (0, 10));
    let r = c
        .backfill(
            s.id,
            None,
            t0 + ChronoDuration::minutes(2),
            t0 + ChronoDuration::minutes(4),
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    assert_eq!((r.slots, r.fired), (3, 3));
    let again = c
        .backfill(
            s.id,
            None,
            t0,
            t0 + ChronoDuration::minutes(4),
            OverlapPolicy::Allow,
        )
        .await
        .unwrap();
    // 12:00 (before the first slot) and 12:01 (missed) run now; 12:02-12:04 are done.
    assert_eq!((again.fired, again.deduplicated), (2, 3), "{again:?}");
    assert_exactly_once(&db.pool, &s).await;
    // Trigger obeys skip while the last fire's activity is still scheduled; force fires.
    let t = c.trigger(s.id, None, false).await.unwrap();
    assert_eq!(t.outcome, FireOutcome::Skipped);
    let t = c.trigger(s.id, None, true).await.unwrap();
    assert_eq!(t.outcome, FireOutcome::Fired);
    // Pause stops the scheduler from taking slots; resume starts after now.
    let (p, changed) = c.pause(s.id, None, Some("maintenance")).await.unwrap();
    assert!(changed && p.paused && p.note.as_deref() == Some("maintenance"));
    clock.set(t0 + ChronoDuration::minutes(30));
    let counts = fake(&db.pool, &clock, SchedulerOptions::default())
        .run_once()
        .await
        .unwrap();
    assert_eq!(counts.schedules, 0);
    let (r, changed) = c
        .resume_as_of(s.id, None, t0 + ChronoDuration::minutes(30))
        .await
        .unwrap();
    assert!(changed && !r.paused);
    assert_eq!(r.next_run_at, Some(t0 + ChronoDuration::minutes(31)));
    assert_eq!(c.preview(s.id, None, 3).await.unwrap().len(), 3);
    assert!(c.delete(s.id, None).await.unwrap());
    assert!(fires(&db.pool, s.id).await.is_empty());
}

#[tokio::test]
async fn docker_cron_job_every_second_for_30s_no_duplicates_no_leaks() {
    let h = DockerHarness::new().await;
    let c = ScheduleClient::new(h.db.pool.clone());
    let mut s = ScheduleSpec::new(
        "docker-tick",
        "* * * * * *",
        ActivityTemplate::new(
            "tools.docker.run",
            json!({"image": TEST_IMAGE, "command": ["sh", "-c", "echo tick"]}),
        ),
    );
    s.tenant_id = h.tenant.clone();
    s.overlap = OverlapPolicy::Allow;
    let s = c.create(&s, &ScheduleLimits::default()).await.unwrap();
    let runtime = h.runtime.clone();
    let w = TestWorker::start(&h.db.pool, TestWorker::fast_options(8), move |r| {
        highway_worker::docker::register(r, runtime)
    });
    let stop = CancellationToken::new();
    let sched = tokio::spawn(
        Scheduler::with_database_clock(h.db.pool.clone(), SchedulerOptions::default())
            .run(stop.clone()),
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    c.pause(s.id, None, Some("test over")).await.unwrap();
    stop.cancel();
    sched.await.unwrap();
    eventually(
        "every container job finished",
        Duration::from_secs(120),
        || async {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM highway.activities WHERE status IN ('scheduled', 'running')",
            )
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
            (n == 0).then_some(())
        },
    )
    .await;
    w.stop().await;
    let at = fired_at(&fires(&h.db.pool, s.id).await);
    assert!(at.len() >= 28, "only {} fires in 30 s", at.len());
    assert_consecutive_seconds(&s.name, &at);
    assert_exactly_once(&h.db.pool, &s).await;
    let acts: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM highway.activities WHERE kind = 'tools.docker.run'")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    let ok = acts.iter().filter(|a| a.1 == "succeeded").count();
    assert_eq!(ok, acts.len(), "{acts:?}");
    for (id, _) in &acts {
        assert_no_containers(&h.docker, *id).await;
    }
}
