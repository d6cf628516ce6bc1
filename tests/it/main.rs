//! The one integration test binary. Each module covers one area against a real Postgres
//! (a fresh database per test) and the real Docker daemon.
//!
//! - `queue`: enqueue, claim races, retries, rescuer, fencing, cancellation, timeouts.
//! - `process`: the `highway` binary as a child: SIGTERM drain, kill -9 and rescue, CLI.
//! - `docker_run`: `tools.docker.run` end to end: lifecycle, limits, I/O, cleanup paths.
//! - `docker_tools`: exec, stop, remove, logs, inspect, pull, images, commit; tenancy; secrets.
//! - `gc`: the garbage collector and the crash / pause / cut-off / cancel scenarios.
//! - `many_hosts`: deployment identity and daemon-scoped ownership across two daemons.
//! - `soft_deps`: Docker and Postgres outages through fault proxies.
//! - `health_ready`: `/health/live` and `/health/ready` of a worker process while its
//!   own Postgres cluster stops and its Docker socket refuses.
//! - `scheduler`: durable cron: exactly-once fires, catch-up, overlap, DST.
//! - `api`: the HTTP API: auth, tenancy, limits, log streams, CLI against `highway up`.
//! - `api_schedules`: `/v1/schedules` (tenancy, quota, 422s) and `highway schedules` over it.
//! - `cron_cli`: `highway schedule preview EXPR --tz TZ -n N`, offline.
//! - `cli_remote`: the CLI over the API (activities, audit, gc plan), zero-config token.
//! - `cli_api`: every client command with only HIGHWAY_API_URL + HIGHWAY_TOKEN: exit
//!   codes, older aliases, table against JSON, tokens, secrets, completions.
//! - `workflow`: multi-step runs with files passed between steps.
//! - `security_docker`: secrets never baked into commits, image listings per tenant,
//!   symlink chains refused in outputs and inputs.
//! - `security_api`: what the door refuses (cross-tenant run ids, NUL, lone surrogates,
//!   duplicate keys), escaped CLI log lines, the OpenAPI document against the server.
//! - `tls`: Postgres over TLS (verify-full, wrong CA, wrong host, hostssl only), Docker
//!   over TCP with `--tlsverify`, the API over HTTPS with the CLI and SIGHUP rotation,
//!   the secrets key rotation.
//! - `door`: `tools.docker.*` params judged at the API's door (syntax and policy, 422
//!   naming the JSON path, nothing stored) for activities, run steps and schedules.
//! - `metrics`: `/metrics` of a real `highway up` after a docker run and a noop, parsed
//!   as Prometheus text (types, names, histograms, label allow-list).
//! - `registry`: private registries (htpasswd + TLS): stored and `config.json`
//!   credentials, one unauthorized failure without them, the credentials canary.
//! - `wait`: completion notifications (every terminal path announces, nothing else),
//!   `DoneWaiter`, and the API's long poll (`?wait=`: answer at the end, bounds, drain).
//! - `soak_findings`: what an outside soak found, each fault produced for real: a retry
//!   taking over a dead attempt's exited container, a frozen worker's late success, the
//!   daemon's exit code and finish time on the tracking row, no start after the lease,
//!   a removal record lost to a Postgres crash.
//! - `model`: the queue's state machine (claim, heartbeat, complete, cancel, lease
//!   expiry, rescue across several workers) against an in-memory model, fencing above all.
//! - `artifacts_db`: artifacts stored in Postgres across hosts, corruption, the fs store;
//!   the snapshot cache per Docker daemon.
//! - `ui`: the web console in headless Chromium over WebDriver: login, live activity
//!   list and log follow, cancelling a run from its page, pausing a schedule, tenancy
//!   (404), CSRF; screenshots under `target/ui-screenshots/`.

mod api;
mod api_schedules;
mod artifacts_db;
mod cli_api;
mod cli_remote;
mod cron_cli;
mod docker_run;
mod docker_tools;
mod door;
mod gc;
mod health_ready;
mod many_hosts;
mod metrics;
mod model;
mod process;
mod queue;
mod registry;
mod scheduler;
mod security_api;
mod security_docker;
mod soak_findings;
mod soft_deps;
mod tls;
mod ui;
mod wait;
mod workflow;
