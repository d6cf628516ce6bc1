//! `highway schedules ...`: durable cron from the command line (create from flags or a
//! JSON spec, ls, show, update, delete, pause, resume, trigger, backfill, preview,
//! fires), through the API (`/v1/schedules`, [`Remote`]: HIGHWAY_API_URL and the token
//! from HIGHWAY_TOKEN or a token file, never argv). Thin: parses, calls the API, prints
//! a table or `--output json`. Only `preview --cron` (trying an expression) runs locally.

use super::remote::{Remote, RemoteArgs};
use crate::scheduler::{CronTz, OverlapPolicy, Schedule, ScheduleSpec};
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use highway_workflows::schedule::{
    ActivityTemplate, BackfillReport, CatchupPolicy, FirePreview, ScheduleFire, TriggerOutcome,
};
use highway_workflows::HumanDuration;
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(clap::Subcommand, Debug)]
pub enum SchedulesCommand {
    /// Create a schedule from flags, or from a JSON spec with --file.
    Create(CreateArgs),
    /// List schedules.
    Ls {
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only paused (`true`) or only running (`false`) schedules.
        #[arg(long)]
        paused: Option<bool>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule (by id, or by name within --tenant).
    Show {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        json: bool,
    },
    /// Change a schedule: a whole spec with --file, or single fields with flags.
    Update(UpdateArgs),
    /// Delete a schedule and its fire records (its activities stay).
    Delete {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Pause: no slot is taken until resumed.
    Pause {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// Why (shown by `show` and `ls`).
        #[arg(long)]
        note: Option<String>,
    },
    /// Resume from the next slot after now.
    Resume {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
    },
    /// Fire now. Obeys the overlap policy unless --force.
    Trigger {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the slots of a past time range.
    Backfill {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// First instant (RFC 3339), inclusive.
        #[arg(long)]
        from: DateTime<Utc>,
        /// Last instant (RFC 3339), inclusive; not in the future.
        #[arg(long)]
        to: DateTime<Utc>,
        /// The backfill's own overlap policy: allow, skip or cancel_other.
        #[arg(long, default_value = "allow")]
        overlap: OverlapPolicy,
        #[arg(long)]
        json: bool,
    },
    /// The next fire times in the schedule's timezone (DST gaps and overlaps noted).
    /// Give a stored schedule, or an expression to try it offline:
    /// `preview "0 0 1 * MON" --tz Europe/Berlin -n 10` (or `--cron EXPR`).
    Preview {
        /// A stored schedule (id or name), or a cron expression (quoted: it has spaces,
        /// or starts with `@`), which needs neither the API nor a token.
        schedule: Option<String>,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        /// A cron expression to try (the same as giving it in place of a schedule).
        #[arg(long, conflicts_with = "schedule")]
        cron: Option<String>,
        /// IANA timezone of a tried expression.
        #[arg(long, visible_alias = "tz", default_value = "UTC")]
        timezone: String,
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
        /// Fires after this instant (RFC 3339; default now). Tried expressions only.
        #[arg(long)]
        after: Option<DateTime<Utc>>,
        #[arg(long)]
        json: bool,
    },
    /// The newest slot records of a schedule: fired, skipped, missed, deduplicated, buffered.
    Fires {
        schedule: String,
        /// Admin tokens only (a tenant token acts for its own tenant).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

/// Fields of a schedule as flags (every one optional so `update` can patch).
#[derive(clap::Args, Debug, Default)]
pub struct SpecFlags {
    /// Cron: 5 fields, or 6 with seconds first.
    #[arg(long)]
    pub cron: Option<String>,
    /// IANA timezone (default UTC).
    #[arg(long)]
    pub timezone: Option<String>,
    /// Activity kind, e.g. `tools.docker.run`.
    #[arg(long)]
    pub kind: Option<String>,
    /// Activity parameters, a JSON object.
    #[arg(long)]
    pub params: Option<String>,
    #[arg(long)]
    pub queue: Option<String>,
    #[arg(long)]
    pub priority: Option<i16>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    #[arg(long)]
    pub start_to_close: Option<HumanDuration>,
    /// skip (default), allow, buffer_one, cancel_other.
    #[arg(long)]
    pub overlap: Option<OverlapPolicy>,
    #[arg(long)]
    pub catchup_window: Option<HumanDuration>,
    /// latest (default), all, none.
    #[arg(long)]
    pub catchup_policy: Option<CatchupPolicy>,
    #[arg(long)]
    pub max_catchup_burst: Option<u32>,
    #[arg(long)]
    pub jitter: Option<HumanDuration>,
    #[arg(long)]
    pub start_at: Option<DateTime<Utc>>,
    #[arg(long)]
    pub end_at: Option<DateTime<Utc>>,
}

#[derive(clap::Args, Debug)]
pub struct CreateArgs {
    /// Name, unique per tenant (required unless --file).
    #[arg(long)]
    pub name: Option<String>,
    /// Admin tokens only (a tenant token acts for its own tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// A whole spec as JSON (ScheduleSpec); other flags override its fields.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub spec: SpecFlags,
    /// Create it paused.
    #[arg(long)]
    pub paused: bool,
    #[arg(long)]
    pub note: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    pub schedule: String,
    /// Admin tokens only (a tenant token acts for its own tenant).
    #[arg(long)]
    pub tenant: Option<String>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// A whole spec as JSON (replaces the definition); other flags override its fields.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Rename.
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub spec: SpecFlags,
    #[arg(long)]
    pub json: bool,
}

fn apply(spec: &mut ScheduleSpec, f: SpecFlags) -> anyhow::Result<()> {
    if let Some(v) = f.cron {
        spec.cron = v;
    }
    if let Some(v) = f.timezone {
        spec.timezone = v;
    }
    if let Some(v) = f.kind {
        spec.activity.kind = v;
    }
    if let Some(v) = f.params {
        spec.activity.params = serde_json::from_str(&v).context("--params is not valid JSON")?;
    }
    if let Some(v) = f.queue {
        spec.activity.queue = v;
    }
    if let Some(v) = f.priority {
        spec.activity.priority = v;
    }
    if let Some(v) = f.max_attempts {
        spec.activity.retry_policy.maximum_attempts = v;
    }
    if let Some(v) = f.start_to_close {
        spec.activity.timeouts.start_to_close = Some(v);
    }
    if let Some(v) = f.overlap {
        spec.overlap = v;
    }
    if let Some(v) = f.catchup_window {
        spec.catchup_window = Some(v);
    }
    if let Some(v) = f.catchup_policy {
        spec.catchup_policy = v;
    }
    if let Some(v) = f.max_catchup_burst {
        spec.max_catchup_burst = Some(v);
    }
    if let Some(v) = f.jitter {
        spec.jitter = Some(v);
    }
    if let Some(v) = f.start_at {
        spec.start_at = Some(v);
    }
    if let Some(v) = f.end_at {
        spec.end_at = Some(v);
    }
    Ok(())
}

/// A spec file, and whether it names a tenant (the type defaults one, and a tenant
/// token may only send its own).
fn read_spec(path: &PathBuf) -> anyhow::Result<(ScheduleSpec, bool)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // serde_json's message names an unknown or mistyped field (deny_unknown_fields).
    let spec = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid schedule spec", path.display()))?;
    let named = serde_json::from_str::<Value>(&text)
        .ok()
        .is_some_and(|v| v.get("tenant_id").is_some());
    Ok((spec, named))
}

/// The wire form of a spec; without `tenant_id` unless one was asked for (the API then
/// uses the token's tenant, or `default` for an admin token).
fn spec_body(spec: &ScheduleSpec, with_tenant: bool) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(spec)?;
    if !with_tenant {
        if let Some(o) = v.as_object_mut() {
            o.remove("tenant_id");
        }
    }
    Ok(v)
}

fn parse<T: DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).context("unexpected answer from the API")
}

fn items<T: DeserializeOwned>(v: Value) -> anyhow::Result<Vec<T>> {
    parse(v["items"].clone())
}

/// `/v1/schedules/<id>` of a schedule given by id, or by name (within `--tenant` for
/// admin tokens; a name several tenants use needs `--tenant`).
async fn resolve(api: &Remote, key: &str, tenant: Option<&str>) -> anyhow::Result<Schedule> {
    if let Ok(id) = key.parse::<Uuid>() {
        return parse(api.get_json(&format!("/v1/schedules/{id}"), &[]).await?);
    }
    let mut q = vec![("name", key.to_string()), ("limit", "2".to_string())];
    if let Some(t) = tenant {
        q.push(("tenant", t.to_string()));
    }
    let mut found: Vec<Schedule> = items(api.get_json("/v1/schedules", &q).await?)?;
    match found.len() {
        0 => bail!("no schedule named {key:?}"),
        1 => Ok(found.remove(0)),
        _ => bail!("several tenants have a schedule named {key:?}; give --tenant or the id"),
    }
}

fn path(s: &Schedule, action: &str) -> String {
    format!("/v1/schedules/{}{action}", s.id)
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn print_schedule(s: &Schedule, as_json: bool) -> anyhow::Result<()> {
    if super::output::json(as_json) {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!("{}", serde_json::to_string_pretty(s)?);
    }
    Ok(())
}

/// Runs one `highway schedules` command.
pub async fn run(cmd: SchedulesCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SchedulesCommand::Create(a) => {
            let api = Remote::new(&a.remote)?;
            let (mut spec, mut named) = match &a.file {
                Some(p) => read_spec(p)?,
                None => {
                    let (Some(name), Some(cron), Some(kind)) =
                        (a.name.clone(), a.spec.cron.clone(), a.spec.kind.clone())
                    else {
                        bail!("give --name, --cron and --kind (or --file spec.json)");
                    };
                    let s = ScheduleSpec::new(name, cron, ActivityTemplate::new(kind, json!({})));
                    (s, false)
                }
            };
            if let Some(n) = a.name {
                spec.name = n;
            }
            if let Some(t) = a.tenant {
                spec.tenant_id = t;
                named = true;
            }
            if a.paused {
                spec.paused = true;
            }
            if a.note.is_some() {
                spec.note = a.note;
            }
            apply(&mut spec, a.spec)?;
            let s: Schedule = parse(
                api.post_json("/v1/schedules", &spec_body(&spec, named)?)
                    .await?,
            )?;
            if super::output::json(a.json) {
                print_schedule(&s, true)?;
            } else {
                println!("{} {} next {}", s.id, s.name, ts(s.next_run_at));
            }
        }
        SchedulesCommand::Ls {
            tenant,
            remote,
            paused,
            limit,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let mut rows: Vec<Schedule> = Vec::new();
            let mut after: Option<String> = None;
            // Pages of at most 1000 (the API's cap) until `limit` or the last page.
            while (rows.len() as i64) < limit.max(1) {
                let page = (limit.max(1) - rows.len() as i64).min(1000);
                let mut q = vec![("limit", page.to_string())];
                for (k, v) in [
                    ("tenant", tenant.clone()),
                    ("paused", paused.map(|p| p.to_string())),
                    ("after", after.clone()),
                ] {
                    if let Some(v) = v {
                        q.push((k, v));
                    }
                }
                let body = api.get_json("/v1/schedules", &q).await?;
                after = body["next"].as_str().map(str::to_owned);
                rows.extend(items::<Schedule>(body)?);
                if after.is_none() {
                    break;
                }
            }
            if super::output::json(json) {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<36}  {:<10}  {:<24}  {:<20}  {:<16}  {:<12}  {:<24}  NOTE",
                    "ID", "TENANT", "NAME", "CRON", "TIMEZONE", "OVERLAP", "NEXT"
                );
                for s in rows {
                    println!(
                        "{:<36}  {:<10}  {:<24}  {:<20}  {:<16}  {:<12}  {:<24}  {}",
                        s.id,
                        s.tenant_id,
                        s.name,
                        s.cron,
                        s.timezone,
                        s.overlap,
                        if s.paused {
                            "paused".into()
                        } else {
                            ts(s.next_run_at)
                        },
                        s.note.unwrap_or_default()
                    );
                }
            }
        }
        SchedulesCommand::Show {
            schedule,
            tenant,
            remote,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            print_schedule(&s, json)?;
        }
        SchedulesCommand::Update(a) => {
            let api = Remote::new(&a.remote)?;
            let old = resolve(&api, &a.schedule, a.tenant.as_deref()).await?;
            let mut spec = match &a.file {
                Some(p) => read_spec(p)?.0,
                None => old.spec(),
            };
            // A schedule keeps its tenant.
            spec.tenant_id = old.tenant_id.clone();
            if let Some(n) = a.name {
                spec.name = n;
            }
            apply(&mut spec, a.spec)?;
            let s: Schedule = parse(
                api.send_json(Method::PUT, &path(&old, ""), Some(&spec_body(&spec, true)?))
                    .await?,
            )?;
            if super::output::json(a.json) {
                print_schedule(&s, true)?;
            } else {
                println!("{} {} updated; next {}", s.id, s.name, ts(s.next_run_at));
            }
        }
        SchedulesCommand::Delete {
            schedule,
            tenant,
            remote,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            api.send_json(Method::DELETE, &path(&s, ""), None).await?;
            println!("{} {} deleted", s.id, s.name);
        }
        SchedulesCommand::Pause {
            schedule,
            tenant,
            remote,
            note,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            let v = api
                .post_json(&path(&s, "/pause"), &json!({ "note": note }))
                .await?;
            let changed = v["changed"].as_bool().unwrap_or(false);
            let s: Schedule = parse(v)?;
            println!(
                "{} {} {}",
                s.id,
                s.name,
                if changed {
                    "paused"
                } else {
                    "was already paused"
                }
            );
        }
        SchedulesCommand::Resume {
            schedule,
            tenant,
            remote,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            let v = api.post_json(&path(&s, "/resume"), &json!({})).await?;
            let changed = v["changed"].as_bool().unwrap_or(false);
            let s: Schedule = parse(v)?;
            println!(
                "{} {} {}; next {}",
                s.id,
                s.name,
                if changed { "resumed" } else { "was not paused" },
                ts(s.next_run_at)
            );
        }
        SchedulesCommand::Trigger {
            schedule,
            tenant,
            remote,
            force,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            let v = api
                .post_json(&path(&s, "/trigger"), &json!({ "force": force }))
                .await?;
            let t: TriggerOutcome = parse(v)?;
            if super::output::json(json) {
                println!("{}", serde_json::to_string(&t)?);
            } else {
                println!(
                    "{} {} at {}{}",
                    s.name,
                    t.outcome.as_str(),
                    ts(Some(t.fire_at)),
                    t.activity_id
                        .map(|a| format!(" activity {a}"))
                        .or(t.reason.map(|r| format!(" ({r})")))
                        .unwrap_or_default()
                );
            }
        }
        SchedulesCommand::Backfill {
            schedule,
            tenant,
            remote,
            from,
            to,
            overlap,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            let body = json!({ "from": from, "to": to, "overlap": overlap });
            let r: BackfillReport = parse(api.post_json(&path(&s, "/backfill"), &body).await?)?;
            if super::output::json(json) {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{}: {} slots: {} fired, {} skipped, {} already done",
                    s.name, r.slots, r.fired, r.skipped, r.deduplicated
                );
            }
        }
        SchedulesCommand::Preview {
            schedule,
            tenant,
            remote,
            cron,
            timezone,
            count,
            after,
            json,
        } => {
            // Schedule names have neither spaces nor `@`; expressions have one of them.
            let expr = cron.or_else(|| schedule.clone().filter(|s| looks_like_cron(s)));
            if let Some(expr) = expr {
                // Trying an expression needs neither the API nor a token.
                // The cron reason quotes the expression already; a timezone one names the flag.
                let c = CronTz::parse(&expr, &timezone).map_err(|e| match e.field.as_str() {
                    "cron" => anyhow::anyhow!(e.reason),
                    _ => anyhow::anyhow!("--tz: {}", e.reason),
                })?;
                let from = after.unwrap_or_else(Utc::now);
                print_preview(&c.preview(from, count.min(1000)), json)?;
                return Ok(ExitCode::SUCCESS);
            }
            let Some(key) = schedule else {
                bail!("give a schedule, or a cron expression: preview \"EXPR\" [--tz TZ] [-n N]");
            };
            if after.is_some() {
                bail!("--after works only when trying an expression, not with a stored schedule");
            }
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &key, tenant.as_deref()).await?;
            let q = [("count", count.clamp(1, 1000).to_string())];
            let rows: Vec<FirePreview> = items(api.get_json(&path(&s, "/preview"), &q).await?)?;
            print_preview(&rows, json)?;
        }
        SchedulesCommand::Fires {
            schedule,
            tenant,
            remote,
            limit,
            json,
        } => {
            let api = Remote::new(&remote)?;
            let s = resolve(&api, &schedule, tenant.as_deref()).await?;
            let q = [("limit", limit.clamp(1, 1000).to_string())];
            let rows: Vec<ScheduleFire> = items(api.get_json(&path(&s, "/fires"), &q).await?)?;
            if super::output::json(json) {
                println!("{}", serde_json::to_string(&rows)?);
            } else {
                println!(
                    "{:<26}  {:<12}  {:<8}  {:<36}  REASON",
                    "FIRE_AT", "OUTCOME", "SOURCE", "ACTIVITY"
                );
                for f in rows {
                    println!(
                        "{:<26}  {:<12}  {:<8}  {:<36}  {}",
                        ts(Some(f.fire_at)),
                        f.outcome.as_str(),
                        f.source,
                        f.activity_id
                            .map(|a| a.to_string())
                            .unwrap_or_else(|| "-".into()),
                        f.reason.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A cron expression rather than a schedule id or name (which are letters, digits,
/// `_`, `-` and `.` only).
fn looks_like_cron(s: &str) -> bool {
    s.trim_start().starts_with('@') || s.trim().contains(char::is_whitespace)
}

fn print_preview(items: &[FirePreview], as_json: bool) -> anyhow::Result<()> {
    if super::output::json(as_json) {
        let v: Vec<Value> = items
            .iter()
            .map(|p| json!({"at": p.at, "local": p.local, "dst": p.dst}))
            .collect();
        println!("{}", serde_json::to_string(&v)?);
    } else {
        for p in items {
            match &p.dst {
                Some(n) => println!("{}  ({})  {n}", p.local, ts(Some(p.at))),
                None => println!("{}  ({})", p.local, ts(Some(p.at))),
            }
        }
    }
    Ok(())
}
