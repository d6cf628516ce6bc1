//! `highway schedules ...`: durable cron from the command line (create from flags or a
//! JSON spec, ls, show, update, delete, pause, resume, trigger, backfill, preview,
//! fires). Thin: parses, calls [`ScheduleClient`], prints a table or `--json`.

use crate::config::scheduler::SchedulerConfig;
use crate::config::DatabaseArgs;
use crate::db::{self, PoolOptions};
use crate::scheduler::{CronTz, OverlapPolicy, Schedule, ScheduleClient, ScheduleSpec};
use anyhow::{bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use highway_workflows::schedule::{ActivityTemplate, CatchupPolicy};
use highway_workflows::HumanDuration;
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
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Show one schedule (by id, or by name within --tenant).
    Show {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change a schedule: a whole spec with --file, or single fields with flags.
    Update(UpdateArgs),
    /// Delete a schedule and its fire records (its activities stay).
    Delete {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Pause: no slot is taken until resumed.
    Pause {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
        /// Why (shown by `show` and `ls`).
        #[arg(long)]
        note: Option<String>,
    },
    /// Resume from the next slot after now.
    Resume {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Fire now. Obeys the overlap policy unless --force.
    Trigger {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Run the slots of a past time range.
    Backfill {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
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
    /// Give a stored schedule, or --cron (and --timezone) to try an expression.
    Preview {
        schedule: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, conflicts_with = "schedule")]
        cron: Option<String>,
        #[arg(long, default_value = "UTC")]
        timezone: String,
        #[arg(short = 'n', long, default_value_t = 10)]
        count: usize,
        #[arg(long)]
        json: bool,
    },
    /// The newest slot records of a schedule: fired, skipped, missed, deduplicated, buffered.
    Fires {
        schedule: String,
        #[arg(long)]
        tenant: Option<String>,
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
    #[arg(long)]
    pub tenant: Option<String>,
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
    #[arg(long)]
    pub tenant: Option<String>,
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

/// The scheduler settings from the environment (limits applied on create and update).
fn settings() -> anyhow::Result<SchedulerConfig> {
    Ok(SchedulerConfig::from_env()?)
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

fn read_spec(path: &PathBuf) -> anyhow::Result<ScheduleSpec> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    // serde_json's message names an unknown or mistyped field (deny_unknown_fields).
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid schedule spec", path.display()))
}

async fn resolve(c: &ScheduleClient, key: &str, tenant: Option<&str>) -> anyhow::Result<Schedule> {
    Ok(match key.parse::<Uuid>() {
        Ok(id) => c.get(id, tenant).await?,
        Err(_) => {
            c.get_by_name(
                tenant.unwrap_or(highway_workflows::types::DEFAULT_TENANT),
                key,
            )
            .await?
        }
    })
}

fn ts(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_else(|| "-".into())
}

fn print_schedule(s: &Schedule, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        println!("{}", serde_json::to_string(s)?);
    } else {
        println!("{}", serde_json::to_string_pretty(s)?);
    }
    Ok(())
}

/// Runs one `highway schedules` command.
pub async fn run(cmd: SchedulesCommand, db_args: &DatabaseArgs) -> anyhow::Result<ExitCode> {
    if let SchedulesCommand::Preview {
        schedule: None,
        cron: Some(expr),
        timezone,
        count,
        json,
        ..
    } = &cmd
    {
        let c = CronTz::parse(expr, timezone)?;
        let now = Utc::now();
        print_preview(&c.preview(now, (*count).min(1000)), *json)?;
        return Ok(ExitCode::SUCCESS);
    }
    let pool = db::connect(
        &db_args.resolve_url()?,
        &PoolOptions {
            max_connections: 4,
            application_name: "highway-cli".into(),
            ..PoolOptions::default()
        },
    )
    .await?;
    let c = ScheduleClient::new(pool);
    match cmd {
        SchedulesCommand::Create(a) => {
            let limits = settings()?.limits();
            let mut spec = match &a.file {
                Some(p) => read_spec(p)?,
                None => {
                    let (Some(name), Some(cron), Some(kind)) =
                        (a.name.clone(), a.spec.cron.clone(), a.spec.kind.clone())
                    else {
                        bail!("give --name, --cron and --kind (or --file spec.json)");
                    };
                    ScheduleSpec::new(name, cron, ActivityTemplate::new(kind, json!({})))
                }
            };
            if let Some(n) = a.name {
                spec.name = n;
            }
            if let Some(t) = a.tenant {
                spec.tenant_id = t;
            }
            if a.paused {
                spec.paused = true;
            }
            if a.note.is_some() {
                spec.note = a.note;
            }
            apply(&mut spec, a.spec)?;
            let s = c.create(&spec, &limits).await?;
            if a.json {
                print_schedule(&s, true)?;
            } else {
                println!("{} {} next {}", s.id, s.name, ts(s.next_run_at));
            }
        }
        SchedulesCommand::Ls {
            tenant,
            limit,
            json,
        } => {
            let rows = c.list(tenant.as_deref(), limit).await?;
            if json {
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
            json,
        } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            print_schedule(&s, json)?;
        }
        SchedulesCommand::Update(a) => {
            let limits = settings()?.limits();
            let old = resolve(&c, &a.schedule, a.tenant.as_deref()).await?;
            let mut spec = match &a.file {
                Some(p) => {
                    let mut s = read_spec(p)?;
                    s.tenant_id = old.tenant_id.clone();
                    s
                }
                None => old.spec(),
            };
            if let Some(n) = a.name {
                spec.name = n;
            }
            apply(&mut spec, a.spec)?;
            let s = c
                .update(old.id, Some(&old.tenant_id), &spec, &limits)
                .await?;
            if a.json {
                print_schedule(&s, true)?;
            } else {
                println!("{} {} updated; next {}", s.id, s.name, ts(s.next_run_at));
            }
        }
        SchedulesCommand::Delete { schedule, tenant } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            c.delete(s.id, Some(&s.tenant_id)).await?;
            println!("{} {} deleted", s.id, s.name);
        }
        SchedulesCommand::Pause {
            schedule,
            tenant,
            note,
        } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            let (s, changed) = c.pause(s.id, Some(&s.tenant_id), note.as_deref()).await?;
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
        SchedulesCommand::Resume { schedule, tenant } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            let (s, changed) = c.resume(s.id, Some(&s.tenant_id)).await?;
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
            force,
            json,
        } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            let t = c.trigger(s.id, Some(&s.tenant_id), force).await?;
            if json {
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
            from,
            to,
            overlap,
            json,
        } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            let r = c
                .backfill(s.id, Some(&s.tenant_id), from, to, overlap)
                .await?;
            if json {
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
            count,
            json,
            ..
        } => {
            let Some(key) = schedule else {
                bail!("give a schedule, or --cron EXPR [--timezone TZ]");
            };
            let s = resolve(&c, &key, tenant.as_deref()).await?;
            print_preview(&c.preview(s.id, Some(&s.tenant_id), count).await?, json)?;
        }
        SchedulesCommand::Fires {
            schedule,
            tenant,
            limit,
            json,
        } => {
            let s = resolve(&c, &schedule, tenant.as_deref()).await?;
            let rows = c.fires(s.id, Some(&s.tenant_id), limit).await?;
            if json {
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

fn print_preview(
    items: &[highway_workflows::schedule::FirePreview],
    as_json: bool,
) -> anyhow::Result<()> {
    if as_json {
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
