//! `/metrics` of a real `highway up` after real work (a `tools.docker.run` and a
//! `highway.noop` through the API), parsed with a Prometheus text-format parser: the
//! types and names of every family, counters ending `_total`, histograms (not
//! summaries) where durations are, route templates (never raw paths) as HTTP labels,
//! and queue names outside the allow-list collapsed to `other`.

use crate::cli_remote::{spawn_up, stop_up};
use highway_tests::docker::{assert_no_containers, docker, ensure_test_image, TEST_IMAGE};
use highway_tests::{eventually, TestDb};
use highway_worker::api::store;
use prometheus_parse::{Sample, Scrape, Value as Prom};
use serde_json::{json, Value};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(90);

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn histogram_count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, name, labels).map(|x| &x.value) {
        Some(Prom::Histogram(b)) => b
            .iter()
            .find(|c| c.less_than.is_infinite())
            .map(|c| c.count)
            .unwrap_or(0.0),
        other => panic!("{name}{labels:?}: not a histogram: {other:?}"),
    }
}

fn counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, name, labels).map(|x| &x.value) {
        Some(Prom::Counter(v)) => *v,
        other => panic!("{name}{labels:?}: not a counter: {other:?}"),
    }
}

fn gauge(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    match find(s, name, labels).map(|x| &x.value) {
        Some(Prom::Gauge(v)) => Some(*v),
        None => None,
        other => panic!("{name}{labels:?}: not a gauge: {other:?}"),
    }
}

#[tokio::test]
async fn a_real_process_exports_typed_metrics_after_a_docker_run_and_a_noop() {
    ensure_test_image();
    let db = TestDb::new().await;
    let state = std::env::temp_dir().join(format!("highway-metrics-{}", Uuid::new_v4()));
    std::fs::create_dir_all(&state).unwrap();
    let (mut up, base) = spawn_up(&db.url, &state, |cmd| {
        cmd.env("HIGHWAY_METRICS_INTERVAL", "200ms")
            .env("HIGHWAY_METRICS_LABEL_ALLOWLIST", "nightly")
            .env("HIGHWAY_GC_PERIOD", "1s");
    })
    .await;
    let (_, token) = store::create_token(&db.pool, "m", Some("tenant-m"))
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let enqueue = |body: Value| {
        let http = http.clone();
        let (base, token) = (base.clone(), token.clone());
        async move {
            let r = http
                .post(format!("{base}/v1/activities"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 201);
            let v: Value = r.json().await.unwrap();
            Uuid::parse_str(v["id"].as_str().unwrap()).unwrap()
        }
    };
    let run = enqueue(json!({"kind": "tools.docker.run",
                             "params": {"image": TEST_IMAGE, "command": ["true"]}}))
    .await;
    let noop = enqueue(json!({"kind": "highway.noop"})).await;
    // Never claimed here (this worker takes `default`): they wait, and show as depth.
    enqueue(json!({"kind": "highway.noop", "queue": "nightly"})).await;
    enqueue(json!({"kind": "highway.noop", "queue": "tenant-made-up-queue"})).await;
    for id in [run, noop] {
        eventually("the activity succeeds", WAIT, || {
            let http = http.clone();
            let url = format!("{base}/v1/activities/{id}");
            let token = token.clone();
            async move {
                let v: Value = http
                    .get(url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                assert!(
                    !["failed", "timed_out", "cancelled"].contains(&v["status"].as_str()?),
                    "{v}"
                );
                (v["status"] == "succeeded").then_some(())
            }
        })
        .await;
    }

    // Poll until the queue statistics and a GC pass have run since the work.
    let text = eventually("queue gauges and a GC pass", WAIT, || {
        let http = http.clone();
        let url = format!("{base}/metrics");
        async move {
            let text = http.get(url).send().await.ok()?.text().await.ok()?;
            let s = parse(&text);
            let ready = gauge(&s, "highway_queue_depth", &[("queue", "other")]) == Some(1.0)
                && gauge(&s, "highway_queue_depth", &[("queue", "nightly")]) == Some(1.0)
                && find(&s, "highway_docker_gc_pass_duration_seconds", &[]).is_some();
            ready.then_some(text)
        }
    })
    .await;
    stop_up(&mut up).await;
    std::fs::remove_dir_all(&state).ok();
    let s = parse(&text);

    // Types: counters end `_total`, no summaries, every family documented.
    for x in &s.samples {
        match &x.value {
            Prom::Counter(_) => assert!(x.metric.ends_with("_total"), "{}", x.metric),
            Prom::Summary(_) => panic!("{} is a summary", x.metric),
            Prom::Untyped(_) => assert!(
                x.metric.ends_with("_sum") || x.metric.ends_with("_count"),
                "{} has no type",
                x.metric
            ),
            _ => {}
        }
        assert!(x.metric.starts_with("highway_"), "{} is not ours", x.metric);
        let base = x.metric.trim_end_matches("_sum").trim_end_matches("_count");
        assert!(s.docs.contains_key(base), "{} has no HELP", x.metric);
        // No tenant-controlled value as a label.
        for v in x.labels.values() {
            assert!(
                !v.contains("tenant-made-up-queue") && !v.contains("tenant-m"),
                "{}: label {v}",
                x.metric
            );
        }
        if let Some(route) = x.labels.get("route") {
            assert!(
                !route.contains(&run.to_string()) && !route.contains(&noop.to_string()),
                "raw path as a route label: {route}"
            );
        }
    }

    // Histograms of the durations operators alert on.
    assert!(
        histogram_count(
            &s,
            "highway_claim_duration_seconds",
            &[("queue", "default")]
        ) >= 1.0
    );
    for kind in ["tools.docker.run", "highway.noop"] {
        assert!(
            histogram_count(
                &s,
                "highway_activity_schedule_to_start_seconds",
                &[("kind", kind)]
            ) >= 1.0
        );
        assert!(
            histogram_count(
                &s,
                "highway_activity_duration_seconds",
                &[("kind", kind), ("outcome", "succeeded")]
            ) >= 1.0
        );
        assert!(
            counter(
                &s,
                "highway_activities_finished_total",
                &[("kind", kind), ("outcome", "succeeded")]
            ) >= 1.0
        );
    }
    for op in ["create_container", "start_container", "remove_container"] {
        assert!(
            histogram_count(
                &s,
                "highway_docker_call_duration_seconds",
                &[("op", op), ("outcome", "ok")]
            ) >= 1.0,
            "{op}"
        );
    }
    assert!(histogram_count(&s, "highway_docker_container_run_seconds", &[]) >= 1.0);
    assert!(histogram_count(&s, "highway_docker_gc_pass_duration_seconds", &[]) >= 1.0);
    let post = [
        ("route", "/v1/activities"),
        ("method", "POST"),
        ("status", "201"),
    ];
    assert_eq!(
        histogram_count(&s, "highway_http_request_duration_seconds", &post),
        4.0
    );
    assert_eq!(counter(&s, "highway_http_requests_total", &post), 4.0);
    assert!(
        counter(
            &s,
            "highway_http_requests_total",
            &[("route", "/v1/activities/:id"), ("method", "GET")]
        ) >= 2.0
    );
    assert!(
        counter(
            &s,
            "highway_activities_claimed_total",
            &[("queue", "default")]
        ) >= 2.0
    );

    // Gauges of this process.
    assert_eq!(gauge(&s, "highway_up", &[]), Some(1.0));
    assert_eq!(gauge(&s, "highway_worker_slots", &[]), Some(16.0));
    assert_eq!(gauge(&s, "highway_worker_slots_busy", &[]), Some(0.0));
    assert_eq!(
        gauge(&s, "highway_docker_containers_running", &[]),
        Some(0.0)
    );
    assert_eq!(
        gauge(&s, "highway_dependency_up", &[("dependency", "postgres")]),
        Some(1.0)
    );
    assert!(gauge(&s, "highway_queue_lag_seconds", &[("queue", "other")]).unwrap() > 0.0);
    assert!(gauge(
        &s,
        "highway_queue_depth",
        &[("queue", "tenant-made-up-queue")]
    )
    .is_none());
    assert_no_containers(&docker().await, run).await;
}
