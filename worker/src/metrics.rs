//! The process's metrics: one Prometheus recorder (the `metrics` facade with
//! `metrics-exporter-prometheus`), the name, type, buckets and help of every metric, the
//! one-line record calls the instrumentation points use, and the label allow-list. The
//! queue gauges are set by `queue::stats::QueueStats`, one periodic task per process (a
//! scrape never queries the database).
//!
//! A leaf: it imports nothing of this crate, so every module may record through it.
//!
//! Every figure is this process's own: two workers answer different numbers, and a
//! restart starts the counters again (Prometheus' `rate()` handles resets).
//!
//! Labels never carry a tenant-controlled string as it is: tenant ids are never a
//! label, and queue names (which any enqueue may invent) pass only when the operator
//! allow-lists them (`--metrics-label-allowlist`, plus the queues this worker claims
//! from); any other value is `other`. Kinds are labels only once claimed (a worker
//! claims only kinds it registered), route labels are axum route templates, never
//! raw paths.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::{BTreeMap, HashSet};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

/// Counters.
pub const ACTIVITIES_CLAIMED: &str = "highway_activities_claimed_total";
pub const ACTIVITIES_FINISHED: &str = "highway_activities_finished_total";
pub const HTTP_REQUESTS: &str = "highway_http_requests_total";
pub const GC_REMOVED: &str = "highway_docker_gc_removed_total";
pub const QUEUE_STATS_ERRORS: &str = "highway_queue_stats_errors_total";
/// Histograms.
pub const CLAIM_DURATION: &str = "highway_claim_duration_seconds";
pub const SCHEDULE_TO_START: &str = "highway_activity_schedule_to_start_seconds";
pub const ACTIVITY_DURATION: &str = "highway_activity_duration_seconds";
pub const DOCKER_CALL: &str = "highway_docker_call_duration_seconds";
pub const DOCKER_PULL: &str = "highway_docker_pull_duration_seconds";
pub const CONTAINER_RUN: &str = "highway_docker_container_run_seconds";
pub const GC_PASS: &str = "highway_docker_gc_pass_duration_seconds";
pub const HTTP_DURATION: &str = "highway_http_request_duration_seconds";
/// Gauges.
pub const UP: &str = "highway_up";
pub const DEPENDENCY_UP: &str = "highway_dependency_up";
pub const DEPENDENCY_FAILURES: &str = "highway_dependency_consecutive_failures";
pub const DOCKER_CIRCUIT: &str = "highway_docker_circuit";
pub const SLOTS: &str = "highway_worker_slots";
pub const SLOTS_BUSY: &str = "highway_worker_slots_busy";
pub const CONTAINERS_RUNNING: &str = "highway_docker_containers_running";
pub const QUEUE_DEPTH: &str = "highway_queue_depth";
pub const QUEUE_LAG: &str = "highway_queue_lag_seconds";

/// The value a label takes when its real value is not allow-listed.
pub const OTHER: &str = "other";

/// Sub-second work: claims, Docker calls, HTTP requests.
const FAST: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Work of seconds to hours: activities, containers, pulls, waits in the queue.
const SLOW: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static ALLOWED: OnceLock<RwLock<HashSet<String>>> = OnceLock::new();

/// Installs the process's recorder (once; later calls return the same handle). `None`
/// when another recorder was installed first, which only a test harness would do.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let mut b = PrometheusBuilder::new();
            for (name, buckets) in [
                (CLAIM_DURATION, FAST),
                (DOCKER_CALL, FAST),
                (HTTP_DURATION, FAST),
                (SCHEDULE_TO_START, SLOW),
                (ACTIVITY_DURATION, SLOW),
                (DOCKER_PULL, SLOW),
                (CONTAINER_RUN, SLOW),
                (GC_PASS, SLOW),
            ] {
                b = b
                    .set_buckets_for_metric(Matcher::Full(name.into()), buckets)
                    .ok()?;
            }
            let recorder = b.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            gauge!(UP).set(1.0);
            Some(handle)
        })
        .as_ref()
}

/// The text exposition of every metric of this process.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

fn describe() {
    describe_counter!(
        ACTIVITIES_CLAIMED,
        "Attempts claimed by this process, by queue."
    );
    describe_counter!(
        ACTIVITIES_FINISHED,
        "Attempts this process finished, by kind and outcome (succeeded, failed, timed_out, cancelled, released, lease_lost)."
    );
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status."
    );
    describe_counter!(
        GC_REMOVED,
        "Containers the garbage collector of this process removed."
    );
    describe_counter!(
        QUEUE_STATS_ERRORS,
        "Queue statistics passes that could not read the database."
    );
    describe_histogram!(
        CLAIM_DURATION,
        metrics::Unit::Seconds,
        "Time of one claim statement, by queue."
    );
    describe_histogram!(
        SCHEDULE_TO_START,
        metrics::Unit::Seconds,
        "From when an attempt was due (enqueue, delay or retry) to its start here, by kind."
    );
    describe_histogram!(
        ACTIVITY_DURATION,
        metrics::Unit::Seconds,
        "Run time of one attempt, by kind and outcome."
    );
    describe_histogram!(
        DOCKER_CALL,
        metrics::Unit::Seconds,
        "Docker Engine API calls (create_container, start_container, remove_container, ...), by op and outcome."
    );
    describe_histogram!(
        DOCKER_PULL,
        metrics::Unit::Seconds,
        "Image pulls, by outcome."
    );
    describe_histogram!(
        CONTAINER_RUN,
        metrics::Unit::Seconds,
        "From container start to its end (exit, timeout or stop)."
    );
    describe_histogram!(
        GC_PASS,
        metrics::Unit::Seconds,
        "One garbage collector pass, by outcome."
    );
    describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request time, by route template, method and status."
    );
    describe_gauge!(UP, "1 while this process serves.");
    describe_gauge!(
        DEPENDENCY_UP,
        "Dependency status: 1 up, 0 down, -1 unknown."
    );
    describe_gauge!(
        DEPENDENCY_FAILURES,
        "Consecutive failed probes of a dependency."
    );
    describe_gauge!(
        DOCKER_CIRCUIT,
        "Docker circuit breaker: 1 for the current state (closed, open, half_open)."
    );
    describe_gauge!(
        SLOTS,
        "Slots of this process's worker (activities it runs at once)."
    );
    describe_gauge!(
        SLOTS_BUSY,
        "Slots of this process's worker holding an attempt now."
    );
    describe_gauge!(
        CONTAINERS_RUNNING,
        "Containers this process started and is waiting on now."
    );
    describe_gauge!(
        QUEUE_DEPTH,
        "Activities due and waiting to be claimed, per queue (read every --metrics-interval)."
    );
    describe_gauge!(
        QUEUE_LAG,
        "How long the oldest due activity has waited, per queue (read every --metrics-interval)."
    );
}

fn allowed() -> &'static RwLock<HashSet<String>> {
    ALLOWED.get_or_init(|| RwLock::new(HashSet::from(["default".to_string()])))
}

/// Adds values that may appear as labels as they are (the operator's allow-list, the
/// worker's own queues).
pub fn allow_labels<I: IntoIterator<Item = S>, S: Into<String>>(values: I) {
    let mut set = allowed().write().unwrap_or_else(|p| p.into_inner());
    set.extend(values.into_iter().map(Into::into));
}

/// `value` when allow-listed, else [`OTHER`].
pub fn label(value: &str) -> String {
    let set = allowed().read().unwrap_or_else(|p| p.into_inner());
    if set.contains(value) {
        value.to_string()
    } else {
        OTHER.to_string()
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "error"
    }
}

/// One claim statement on `queue` took `took` and returned `n` rows.
pub fn claimed(queue: &str, took: Duration, n: usize) {
    let q = label(queue);
    histogram!(CLAIM_DURATION, "queue" => q.clone()).record(secs(took));
    if n > 0 {
        counter!(ACTIVITIES_CLAIMED, "queue" => q).increment(n as u64);
    }
}

/// The worker's slot count.
pub fn slots(n: usize) {
    gauge!(SLOTS).set(n as f64);
}

/// A claimed attempt starting here: the wait since it was due, and a busy slot until
/// the returned guard drops.
pub fn attempt_started(kind: &str, due: chrono::DateTime<chrono::Utc>) -> SlotBusy {
    let waited = (chrono::Utc::now() - due).to_std().unwrap_or_default();
    histogram!(SCHEDULE_TO_START, "kind" => kind.to_string()).record(secs(waited));
    gauge!(SLOTS_BUSY).increment(1.0);
    SlotBusy {
        kind: kind.to_string(),
        started: Instant::now(),
    }
}

/// A busy slot; [`SlotBusy::finish`] records the attempt's outcome, dropping frees it.
#[derive(Debug)]
pub struct SlotBusy {
    kind: String,
    started: Instant,
}

impl SlotBusy {
    /// The attempt ended with `outcome` (`succeeded`, `failed`, ...).
    pub fn finish(&self, outcome: &'static str) {
        let labels = [
            ("kind", self.kind.clone()),
            ("outcome", outcome.to_string()),
        ];
        histogram!(ACTIVITY_DURATION, &labels).record(secs(self.started.elapsed()));
        counter!(ACTIVITIES_FINISHED, &labels).increment(1);
    }
}

impl Drop for SlotBusy {
    fn drop(&mut self) {
        gauge!(SLOTS_BUSY).decrement(1.0);
    }
}

/// One Docker Engine API call (`op` is the client's static name of it).
pub fn docker_call(op: &'static str, took: Duration, ok: bool) {
    histogram!(DOCKER_CALL, "op" => op, "outcome" => outcome(ok)).record(secs(took));
}

/// One image pull.
pub fn docker_pull(took: Duration, ok: bool) {
    histogram!(DOCKER_PULL, "outcome" => outcome(ok)).record(secs(took));
}

/// A container this process started: counted as running until the guard drops, when
/// its run time is recorded.
pub fn container_started() -> ContainerRunning {
    gauge!(CONTAINERS_RUNNING).increment(1.0);
    ContainerRunning(Instant::now())
}

/// See [`container_started`].
#[derive(Debug)]
pub struct ContainerRunning(Instant);

impl Drop for ContainerRunning {
    fn drop(&mut self) {
        gauge!(CONTAINERS_RUNNING).decrement(1.0);
        histogram!(CONTAINER_RUN).record(secs(self.0.elapsed()));
    }
}

/// One garbage collector pass that began at `started`; `removed` when it succeeded.
pub fn gc_pass(started: Instant, removed: Option<u64>) {
    histogram!(GC_PASS, "outcome" => outcome(removed.is_some())).record(secs(started.elapsed()));
    if let Some(n) = removed.filter(|n| *n > 0) {
        counter!(GC_REMOVED).increment(n);
    }
}

/// One HTTP request; `route` is the matched route template (`/v1/activities/{id}`).
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status.to_string()),
    ];
    histogram!(HTTP_DURATION, &labels).record(secs(took));
    counter!(HTTP_REQUESTS, &labels).increment(1);
}

/// Axum middleware timing every request under its route template (`MatchedPath`, as
/// `/v1/activities/:id`; `unmatched` for a request no route took), never its raw path.
pub async fn track_http(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        // `{id}` written `:id`: braces inside a label value trip up text-format parsers.
        .map(|p| p.as_str().replace('{', ":").replace('}', ""))
        .unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let resp = next.run(req).await;
    http_request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

/// Sets a gauge family from the health cells (read at scrape: in memory, no I/O).
pub fn dependency(name: &'static str, up: f64, failures: u64) {
    gauge!(DEPENDENCY_UP, "dependency" => name).set(up);
    gauge!(DEPENDENCY_FAILURES, "dependency" => name).set(failures as f64);
}

/// The circuit breaker's state as one gauge per state (1 for the current one).
pub fn circuit(state: &'static str, current: bool) {
    gauge!(DOCKER_CIRCUIT, "state" => state).set(if current { 1.0 } else { 0.0 });
}

/// Queue depth and the oldest wait per queue label, as one pass read them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct QueueFigures {
    /// label → (due activities waiting, seconds the oldest has waited).
    pub queues: BTreeMap<String, (i64, f64)>,
}

/// Sets [`QUEUE_DEPTH`] and [`QUEUE_LAG`] from `(queue, depth, oldest wait)` rows.
/// Queues that are not allow-listed are summed into `other` (lag: the largest); a label
/// in `seen` that is gone now is set to 0 rather than left at its last value.
pub fn queues(rows: Vec<(String, i64, f64)>, seen: &mut HashSet<String>) -> QueueFigures {
    let mut out = QueueFigures::default();
    for (queue, depth, lag) in rows {
        let e = out.queues.entry(label(&queue)).or_insert((0, 0.0));
        e.0 += depth;
        e.1 = e.1.max(lag);
    }
    for gone in seen.iter().filter(|q| !out.queues.contains_key(*q)) {
        gauge!(QUEUE_DEPTH, "queue" => gone.clone()).set(0.0);
        gauge!(QUEUE_LAG, "queue" => gone.clone()).set(0.0);
    }
    for (q, (depth, lag)) in &out.queues {
        gauge!(QUEUE_DEPTH, "queue" => q.clone()).set(*depth as f64);
        gauge!(QUEUE_LAG, "queue" => q.clone()).set(*lag);
        seen.insert(q.clone());
    }
    out
}

/// A queue statistics pass failed.
pub fn queue_stats_failed() {
    counter!(QUEUE_STATS_ERRORS).increment(1);
}

/// Between scrapes: drains histogram samples into their buckets.
pub fn upkeep() {
    if let Some(h) = install() {
        h.run_upkeep();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_outside_the_allow_list_collapse() {
        allow_labels(["builds"]);
        assert_eq!(label("builds"), "builds");
        assert_eq!(label("default"), "default");
        assert_eq!(label("tenant-invented-queue"), OTHER);
    }
}
