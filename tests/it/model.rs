//! The activity state machine against an in-memory model: random sequences of enqueue,
//! claim (by one of several workers), heartbeat, complete or fail (retryable or not,
//! released, infrastructure), cancel, lease expiry and rescue run against Postgres through
//! the worker's queue store and the producer client, and after every step the database
//! must agree with the model on status, attempt, uncounted attempts, lease owner and
//! liveness, and the cancel flag. Above all fencing: a heartbeat or a result of an attempt
//! that is not the current, live one of that worker changes nothing in the row.
//!
//! Lease expiry is produced by moving `lease_expires_at` into the past: the database's
//! `now()` alone judges leases. Retry backoff is skipped the same way (`run_at` moved to
//! the past before each claim), since the model does not track time.

use highway_tests::TestDb;
use highway_worker::queue::store;
use highway_worker::queue::{Completion, Outcome, RescueCounts};
use highway_workflows::{CancelOutcome, Client, EnqueueRequest};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

const WORKERS: usize = 3;
const KIND: &str = "highway.noop";
/// Far longer than a case runs: a lease only ends when the test expires it.
const LEASE_MS: i64 = 120_000;
const MAX_UNCOUNTED: i32 = 2;

#[derive(Debug, Clone, Copy)]
enum How {
    Succeed,
    FailRetryable,
    FailFatal,
    Release,
    Infra,
}

/// Which attempt a worker reports on.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The worker's latest claim (live unless something took it back since).
    Latest,
    /// One the worker claimed at some point (possibly stale by now).
    Held(Index),
    /// Any activity at its current attempt, whoever owns it.
    Current(Index),
    /// The attempt before the worker's latest claim of that activity: a result of an
    /// earlier attempt arriving while the same worker runs a newer one.
    Earlier,
}

#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        max_attempts: u32,
    },
    Claim {
        worker: usize,
    },
    Heartbeat {
        worker: usize,
        target: Target,
    },
    Complete {
        worker: usize,
        target: Target,
        how: How,
    },
    Cancel {
        pick: Index,
    },
    Expire {
        pick: Index,
    },
    Rescue,
}

fn enqueue() -> impl Strategy<Value = Op> {
    (1u32..4).prop_map(|max_attempts| Op::Enqueue { max_attempts })
}

/// A case: one or two activities first (few activities, so attempts get claimed again
/// and again), then random steps.
fn case() -> impl Strategy<Value = Vec<Op>> {
    (
        prop::collection::vec(enqueue(), 1..3),
        prop::collection::vec(op(), 1..40),
    )
        .prop_map(|(mut first, rest)| {
            first.extend(rest);
            first
        })
}

fn op() -> impl Strategy<Value = Op> {
    // Worker 0 most often: the same worker then claims an activity again, and its
    // earlier attempts become stale while it holds a newer one.
    let worker = prop_oneof![3 => Just(0), 1 => 1..WORKERS];
    let target = prop_oneof![
        3 => Just(Target::Latest),
        2 => any::<Index>().prop_map(Target::Held),
        1 => any::<Index>().prop_map(Target::Current),
        2 => Just(Target::Earlier),
    ];
    // Weighted to outcomes that schedule another attempt.
    let how = prop_oneof![
        1 => Just(How::Succeed),
        2 => Just(How::FailRetryable),
        1 => Just(How::FailFatal),
        2 => Just(How::Release),
        1 => Just(How::Infra),
    ];
    prop_oneof![
        1 => enqueue(),
        4 => worker.clone().prop_map(|worker| Op::Claim { worker }),
        2 => (worker.clone(), target.clone()).prop_map(|(worker, target)| Op::Heartbeat { worker, target }),
        3 => (worker, target, how).prop_map(|(worker, target, how)| Op::Complete { worker, target, how }),
        1 => any::<Index>().prop_map(|pick| Op::Cancel { pick }),
        2 => any::<Index>().prop_map(|pick| Op::Expire { pick }),
        2 => Just(Op::Rescue),
    ]
}

#[derive(Debug, Clone)]
struct Act {
    id: Uuid,
    status: &'static str,
    attempt: i32,
    uncounted: i32,
    max_attempts: i32,
    owner: Option<usize>,
    lease_live: bool,
    cancel_requested: bool,
}

impl Act {
    /// The fence of heartbeat and complete: the worker's current attempt, lease live.
    fn held_by(&self, worker: usize, attempt: i32) -> bool {
        self.status == "running"
            && self.attempt == attempt
            && self.owner == Some(worker)
            && self.lease_live
    }
}

#[derive(Debug, Default)]
struct Model {
    acts: Vec<Act>,
    /// Every (activity index, attempt) each worker claimed, stale ones included.
    held: [Vec<(usize, i32)>; WORKERS],
}

impl Model {
    fn target(&self, worker: usize, t: Target) -> Option<(usize, i32)> {
        match t {
            Target::Latest => self.held[worker].last().copied(),
            Target::Earlier => self.held[worker]
                .last()
                .filter(|(_, attempt)| *attempt > 1)
                .map(|&(a, attempt)| (a, attempt - 1)),
            Target::Held(i) if !self.held[worker].is_empty() => {
                Some(self.held[worker][i.index(self.held[worker].len())])
            }
            Target::Current(i) if !self.acts.is_empty() => {
                let a = i.index(self.acts.len());
                Some((a, self.acts[a].attempt))
            }
            _ => None,
        }
    }

    /// The status a fenced-in result leads to, and whether it counts as uncounted: the
    /// documented order (cancel requested wins, then success, then the retry rules).
    fn decide(a: &Act, how: How) -> (&'static str, bool) {
        if a.cancel_requested {
            return ("cancelled", false);
        }
        match how {
            How::Succeed => ("succeeded", false),
            How::Release => ("scheduled", true),
            How::Infra if a.uncounted < MAX_UNCOUNTED => ("scheduled", true),
            How::FailRetryable if a.attempt - a.uncounted < a.max_attempts => ("scheduled", false),
            _ => ("failed", false),
        }
    }
}

fn outcome(how: How) -> Outcome {
    let failed = |retryable| Outcome::Failed {
        error: json!({"type": "Boom", "message": "model failure", "retryable": retryable}),
        error_type: "Boom".into(),
        retryable,
        timeout: false,
    };
    match how {
        How::Succeed => Outcome::Succeeded(json!({"ok": true})),
        How::FailRetryable => failed(true),
        How::FailFatal => failed(false),
        How::Release => Outcome::Release,
        How::Infra => Outcome::Infrastructure(json!({"type": "Infrastructure"})),
    }
}

/// The whole row, to show a fenced-out write changed nothing.
async fn row(pool: &PgPool, id: Uuid) -> Value {
    sqlx::query_scalar("SELECT to_jsonb(a) FROM highway.activities a WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

type Observed = (String, i32, i32, Option<Uuid>, Option<bool>, bool);

/// The database agrees with the model on every activity.
async fn check(
    pool: &PgPool,
    m: &Model,
    workers: &[Uuid; WORKERS],
    step: usize,
) -> Result<(), TestCaseError> {
    for a in &m.acts {
        let got: Observed = sqlx::query_as(
            "SELECT status, attempt, uncounted_attempts, lease_owner, lease_expires_at > now(), \
                    cancel_requested_at IS NOT NULL \
               FROM highway.activities WHERE id = $1",
        )
        .bind(a.id)
        .fetch_one(pool)
        .await
        .unwrap();
        let running = a.status == "running";
        let want: Observed = (
            a.status.to_string(),
            a.attempt,
            a.uncounted,
            a.owner.map(|w| workers[w]),
            running.then_some(a.lease_live),
            a.cancel_requested,
        );
        prop_assert_eq!(got, want, "after step {} activity {}", step, a.id);
    }
    Ok(())
}

/// What the cases exercised, so the test shows it reached the interesting paths.
#[derive(Debug, Default)]
struct Seen {
    fenced_out: std::cell::Cell<u32>,
    rescued: std::cell::Cell<u64>,
    recorded: std::cell::Cell<u32>,
}

fn bump(c: &std::cell::Cell<u32>) {
    c.set(c.get() + 1);
}

async fn run_case(
    pool: &PgPool,
    client: &Client,
    ops: Vec<Op>,
    seen: &Seen,
) -> Result<(), TestCaseError> {
    // One database for all cases: start each from an empty table.
    sqlx::query("DELETE FROM highway.activities")
        .execute(pool)
        .await
        .unwrap();
    let queue = format!("model-{}", Uuid::new_v4().simple());
    let workers: [Uuid; WORKERS] = std::array::from_fn(|_| Uuid::new_v4());
    let kinds = [KIND.to_string()];
    let mut m = Model::default();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Enqueue { max_attempts } => {
                let req = EnqueueRequest::new(KIND, json!({"step": step}))
                    .queue(queue.as_str())
                    .max_attempts(max_attempts);
                let e = client.enqueue(&req).await.unwrap();
                m.acts.push(Act {
                    id: e.id,
                    status: "scheduled",
                    attempt: 0,
                    uncounted: 0,
                    max_attempts: max_attempts as i32,
                    owner: None,
                    lease_live: false,
                    cancel_requested: false,
                });
            }
            Op::Claim { worker } => {
                sqlx::query(
                    "UPDATE highway.activities SET run_at = now() - interval '1 second' \
                     WHERE queue = $1 AND status = 'scheduled' AND run_at > now()",
                )
                .bind(&queue)
                .execute(pool)
                .await
                .unwrap();
                let got = store::claim(pool, workers[worker], &queue, &kinds, 1, None, LEASE_MS)
                    .await
                    .unwrap();
                let waiting: Vec<usize> = (0..m.acts.len())
                    .filter(|&i| m.acts[i].status == "scheduled")
                    .collect();
                if waiting.is_empty() {
                    prop_assert!(
                        got.is_empty(),
                        "step {}: claimed {:?} with nothing waiting",
                        step,
                        got
                    );
                    continue;
                }
                prop_assert_eq!(got.len(), 1, "step {}: one claim expected", step);
                let c = &got[0];
                let i = waiting.iter().copied().find(|&i| m.acts[i].id == c.id);
                let Some(i) = i else {
                    return Err(TestCaseError::fail(format!(
                        "step {step}: claimed {} which is not waiting",
                        c.id
                    )));
                };
                let a = &mut m.acts[i];
                prop_assert_eq!(c.attempt, a.attempt + 1, "step {}: claimed attempt", step);
                a.status = "running";
                a.attempt += 1;
                a.owner = Some(worker);
                a.lease_live = true;
                m.held[worker].push((i, a.attempt));
            }
            Op::Heartbeat { worker, target } => {
                let Some((i, attempt)) = m.target(worker, target) else {
                    continue;
                };
                let id = m.acts[i].id;
                let before = row(pool, id).await;
                let beat = vec![(id, attempt, Some(json!({"step": step})))];
                let got = store::heartbeat(pool, workers[worker], LEASE_MS, &beat)
                    .await
                    .unwrap();
                if m.acts[i].held_by(worker, attempt) {
                    prop_assert_eq!(got, vec![(id, m.acts[i].cancel_requested)], "step {}", step);
                } else {
                    bump(&seen.fenced_out);
                    prop_assert!(got.is_empty(), "step {}: a stale heartbeat was taken", step);
                    prop_assert_eq!(
                        row(pool, id).await,
                        before,
                        "step {}: a stale heartbeat wrote",
                        step
                    );
                }
            }
            Op::Complete {
                worker,
                target,
                how,
            } => {
                let Some((i, attempt)) = m.target(worker, target) else {
                    continue;
                };
                let id = m.acts[i].id;
                let before = row(pool, id).await;
                let item = Completion {
                    id,
                    attempt,
                    outcome: outcome(how),
                };
                let got = store::complete(pool, workers[worker], MAX_UNCOUNTED, &[item])
                    .await
                    .unwrap();
                let a = &mut m.acts[i];
                if a.held_by(worker, attempt) {
                    let (status, uncounted) = Model::decide(a, how);
                    prop_assert_eq!(got, vec![(id, status.to_string(), None)], "step {}", step);
                    bump(&seen.recorded);
                    a.status = status;
                    a.uncounted += i32::from(uncounted);
                    a.owner = None;
                    a.lease_live = false;
                } else {
                    bump(&seen.fenced_out);
                    prop_assert!(got.is_empty(), "step {}: a stale result was taken", step);
                    prop_assert_eq!(
                        row(pool, id).await,
                        before,
                        "step {}: a stale result wrote",
                        step
                    );
                }
            }
            Op::Cancel { pick } => {
                if m.acts.is_empty() {
                    continue;
                }
                let n = m.acts.len();
                let a = &mut m.acts[pick.index(n)];
                let got = client.cancel(a.id, None).await.unwrap();
                let want = match a.status {
                    "scheduled" => {
                        a.status = "cancelled";
                        a.cancel_requested = true;
                        CancelOutcome::Cancelled
                    }
                    "running" => {
                        a.cancel_requested = true;
                        CancelOutcome::Requested
                    }
                    _ => CancelOutcome::AlreadyFinished,
                };
                prop_assert_eq!(got, want, "step {}", step);
            }
            Op::Expire { pick } => {
                if m.acts.is_empty() {
                    continue;
                }
                let n = m.acts.len();
                let a = &mut m.acts[pick.index(n)];
                sqlx::query(
                    "UPDATE highway.activities SET lease_expires_at = now() - interval '1 second' \
                     WHERE id = $1 AND status = 'running'",
                )
                .bind(a.id)
                .execute(pool)
                .await
                .unwrap();
                if a.status == "running" {
                    a.lease_live = false;
                }
            }
            Op::Rescue => {
                let (counts, _) = store::rescue(pool, 1000).await.unwrap();
                let mut want = RescueCounts::default();
                for a in m
                    .acts
                    .iter_mut()
                    .filter(|a| a.status == "running" && !a.lease_live)
                {
                    a.status = if a.cancel_requested {
                        want.cancelled += 1;
                        "cancelled"
                    } else if a.attempt - a.uncounted >= a.max_attempts {
                        want.timed_out += 1;
                        "timed_out"
                    } else {
                        want.retried += 1;
                        "scheduled"
                    };
                    a.owner = None;
                }
                seen.rescued
                    .set(seen.rescued.get() + want.retried + want.timed_out + want.cancelled);
                prop_assert_eq!(counts, want, "step {}: rescue counts", step);
            }
        }
        check(pool, &m, &workers, step).await?;
    }
    Ok(())
}

#[test]
fn queue_state_machine_agrees_with_the_model() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = rt.block_on(TestDb::new());
    let client = db.client();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        ..Config::default()
    });
    let seen = Seen::default();
    let result = runner.run(&case(), |ops| {
        rt.block_on(run_case(&db.pool, &client, ops, &seen))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let (fenced, rescued, recorded) = (
        seen.fenced_out.get(),
        seen.rescued.get(),
        seen.recorded.get(),
    );
    eprintln!(
        "model: {recorded} results recorded, {fenced} stale writes fenced out, {rescued} rescued"
    );
    assert!(
        fenced > 0 && rescued > 0 && recorded > 0,
        "the cases never reached a fenced write ({fenced}), a rescue ({rescued}) or a result ({recorded})"
    );
}
