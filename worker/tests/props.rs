//! Property tests of pure code, against references written here from the documented
//! rules (never by calling the code under test):
//! - the collector's `judge` against a rule table built from the collector's docs;
//! - cron next-fire against brute-force minute enumeration across DST changes in
//!   several timezones, with the documented gap and overlap rules;
//! - input and artifact tars: random trees of files and directories packed, validated
//!   and read back give the same tree.

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, TimeZone, Timelike, Utc};
use chrono::{Datelike, NaiveDateTime, Offset};
use chrono_tz::Tz;
use highway_worker::docker::gc::{judge, GcOptions, Listed, Reason, Verdict};
use highway_worker::docker::gc_store::Facts;
use highway_worker::docker::spec::labels;
use highway_worker::docker::tario::{self, InputData, InputFile, TarLimits};
use highway_workflows::schedule::CronTz;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

// ---------------------------------------------------------------------------------
// The collector's judge.

/// The collector's rules as an ordered table: the first rule whose condition holds
/// decides. Written from the collector's documentation: grace for untracked containers,
/// protection and retention, `max_age`, then ownership by activity and attempt, the live
/// lease (with the cancel takeover), detached containers (TTL, run end, success), and
/// last the finished or taken-back attempt. A container that exited by itself (no stop
/// of ours may have reached it) is kept while its result can still be taken over: an
/// older attempt's while the current attempt holds its lease, the current attempt's while
/// the activity is not over.
fn reference_judge(c: &Listed, f: &Facts, o: &GcOptions) -> Verdict {
    let terminal = |s: &str| matches!(s, "succeeded" | "failed" | "cancelled" | "timed_out");
    let young = !f.tracked && c.age < o.creation_grace;
    let too_old = o.max_age != Duration::ZERO && c.age > o.max_age;
    // Ownership: the activity the labels name, at which attempt.
    let owner = match (&f.activity_status, f.activity_attempt, c.attempt) {
        (Some(s), Some(cur), Some(mine)) => Some((s.as_str(), cur, mine)),
        _ => None,
    };
    let rules: Vec<(bool, Verdict)> = vec![
        (young, Verdict::Young),
        (f.protected == Some(true), Verdict::Protected),
        (
            f.protection_passed == Some(true),
            Verdict::Remove(Reason::RetentionExpired),
        ),
        (too_old, Verdict::Remove(Reason::MaxAge)),
        (owner.is_none(), Verdict::Remove(Reason::Orphan)),
    ];
    if let Some((_, v)) = rules.into_iter().find(|(hit, _)| *hit) {
        return v;
    }
    let (status, current, mine) = owner.expect("ruled out above");
    let own_exit = c.exited && f.stop_sent != Some(true);
    if mine < current {
        let current_live = status == "running" && f.lease_live == Some(true);
        return if own_exit && current_live {
            Verdict::Live
        } else {
            Verdict::Remove(Reason::OlderAttempt)
        };
    }
    if mine > current {
        return Verdict::Unsure;
    }
    if status == "running" && f.lease_live == Some(true) {
        let takeover_after = o.stop_grace.as_secs_f64() + o.cancel_takeover.as_secs_f64();
        let cancel_stale = f.cancel_age_s.is_some_and(|a| a > takeover_after);
        return if cancel_stale {
            Verdict::Remove(Reason::CancelTakeover)
        } else {
            Verdict::Live
        };
    }
    let detached = c.detached || f.detached == Some(true);
    if detached {
        let label_ttl = c
            .labels
            .get(labels::TTL_SECONDS)
            .and_then(|v| v.parse::<u64>().ok());
        let ttl_passed = match f.detach_expired {
            Some(e) => e,
            None => label_ttl.is_some_and(|t| c.age > Duration::from_secs(t)),
        };
        if ttl_passed {
            return Verdict::Remove(Reason::DetachedExpired);
        }
        let run_gone = if f.run_exists {
            f.run_status.as_deref().is_some_and(|s| s != "running")
        } else {
            c.run_id.is_some()
        };
        if run_gone {
            return Verdict::Remove(Reason::DetachedRunEnded);
        }
        return if status == "succeeded" {
            Verdict::Live
        } else if terminal(status) {
            Verdict::Remove(Reason::Terminal)
        } else {
            Verdict::Remove(Reason::LeaseExpired)
        };
    }
    if terminal(status) {
        Verdict::Remove(Reason::Terminal)
    } else if own_exit {
        Verdict::Live
    } else {
        Verdict::Remove(Reason::LeaseExpired)
    }
}

fn status() -> impl Strategy<Value = Option<String>> {
    // Weighted to `running`, where the live-lease and cancel rules sit.
    prop_oneof![
        1 => Just(None),
        5 => Just(Some("running")),
        5 => prop::sample::select(vec!["scheduled", "succeeded", "failed", "cancelled", "timed_out"]).prop_map(Some),
    ]
    .prop_map(|s| s.map(str::to_string))
}

/// `Some(true)` mostly: lease and protection facts are then the common case.
fn mostly(v: bool) -> impl Strategy<Value = Option<bool>> {
    prop_oneof![3 => Just(Some(v)), 1 => Just(Some(!v)), 1 => Just(None)]
}

fn listed_and_facts() -> impl Strategy<Value = (Listed, Facts)> {
    let listed = (
        0u64..400,
        prop::option::of(1i32..3),
        (any::<bool>(), any::<bool>()),
        prop::option::of(any::<u128>()),
        prop::option::of(prop_oneof![
            (0u64..400).prop_map(|t| t.to_string()),
            Just("junk".to_string())
        ]),
    )
        .prop_map(|(age, attempt, (detached, exited), run, ttl)| {
            let mut l = HashMap::new();
            if let Some(t) = ttl {
                l.insert(labels::TTL_SECONDS.to_string(), t);
            }
            Listed {
                id: "c1".into(),
                name: "n".into(),
                image: "alpine".into(),
                age: Duration::from_secs(age),
                running: !exited,
                exited,
                activity_id: Some(uuid::Uuid::nil()),
                run_id: run.map(uuid::Uuid::from_u128),
                attempt,
                tenant_id: "t".into(),
                detached,
                labels: l,
            }
        });
    let facts = (
        (
            status(),
            prop::option::of(1i32..3),
            mostly(true),
            prop::option::of(0.0f64..100.0),
        ),
        (
            prop::option::of(prop::sample::select(vec!["running", "succeeded", "failed"])),
            any::<bool>(),
            any::<bool>(),
            prop::option::of(any::<bool>()),
        ),
        (
            prop::option::of(any::<bool>()),
            mostly(false),
            mostly(false),
            prop::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (activity_status, activity_attempt, lease_live, cancel_age_s),
                (run_status, run_exists, tracked, detached),
                (detach_expired, protected, protection_passed, stop_sent),
            )| Facts {
                container_id: "c1".into(),
                activity_status,
                activity_attempt,
                lease_live,
                cancel_age_s,
                run_status: run_status.map(str::to_string),
                run_exists,
                tracked,
                row_status: None,
                detached,
                detach_expired,
                protected,
                protection_passed,
                stop_sent,
            },
        );
    (listed, facts)
}

fn gc_options() -> impl Strategy<Value = GcOptions> {
    (
        prop::sample::select(vec![0u64, 150, 300]),
        0u64..30,
        0u64..60,
    )
        .prop_map(|(max_age, stop_grace, takeover)| GcOptions {
            creation_grace: Duration::from_secs(60),
            max_age: Duration::from_secs(max_age),
            stop_grace: Duration::from_secs(stop_grace),
            cancel_takeover: Duration::from_secs(takeover),
            ..GcOptions::default()
        })
}

proptest! {
    #![proptest_config(Config { cases: 5000, ..Config::default() })]

    #[test]
    fn judge_agrees_with_the_documented_rules(((c, f), o) in (listed_and_facts(), gc_options())) {
        prop_assert_eq!(judge(&c, &f, &o), reference_judge(&c, &f, &o), "container {:?}\nfacts {:?}", c, f);
    }
}

// ---------------------------------------------------------------------------------
// Cron next-fire across DST.

/// One cron field as generated: the values it allows.
#[derive(Debug, Clone)]
enum Field {
    Star,
    Values(Vec<u32>),
    /// `*/n`
    Every(u32),
    /// `a-b`
    Range(u32, u32),
}

impl Field {
    fn text(&self) -> String {
        match self {
            Field::Star => "*".into(),
            Field::Values(v) => v.iter().map(u32::to_string).collect::<Vec<_>>().join(","),
            Field::Every(n) => format!("*/{n}"),
            Field::Range(a, b) => format!("{a}-{b}"),
        }
    }

    fn allows(&self, x: u32) -> bool {
        match self {
            Field::Star => true,
            Field::Values(v) => v.contains(&x),
            Field::Every(n) => x % n == 0,
            Field::Range(a, b) => (*a..=*b).contains(&x),
        }
    }

    fn is_star(&self) -> bool {
        matches!(self, Field::Star)
    }
}

#[derive(Debug, Clone)]
struct Cron {
    minute: Field,
    hour: Field,
    dom: Field,
    dow: Field,
}

impl Cron {
    fn text(&self) -> String {
        format!(
            "{} {} {} * {}",
            self.minute.text(),
            self.hour.text(),
            self.dom.text(),
            self.dow.text()
        )
    }

    /// Vixie cron: both day fields restricted, either may match.
    fn matches(&self, w: NaiveDateTime) -> bool {
        let dow = w.weekday().num_days_from_sunday();
        let day = match (self.dom.is_star(), self.dow.is_star()) {
            (true, true) => true,
            (false, true) => self.dom.allows(w.day()),
            (true, false) => self.dow.allows(dow),
            (false, false) => self.dom.allows(w.day()) || self.dow.allows(dow),
        };
        day && self.minute.allows(w.minute()) && self.hour.allows(w.hour())
    }
}

fn cron_strategy() -> impl Strategy<Value = Cron> {
    let minute = prop_oneof![
        Just(Field::Star),
        prop::collection::btree_set(0u32..60, 1..4)
            .prop_map(|s| Field::Values(s.into_iter().collect())),
        prop::sample::select(vec![5u32, 7, 15, 20, 30]).prop_map(Field::Every),
        (0u32..50).prop_map(|a| Field::Range(a, a + 9)),
    ];
    // Hours near the DST changes (they happen between 00:00 and 04:00 in these zones).
    let hour = prop_oneof![
        2 => Just(Field::Star),
        3 => prop::collection::btree_set(0u32..5, 1..3).prop_map(|s| Field::Values(s.into_iter().collect())),
        1 => (0u32..4).prop_map(|a| Field::Range(a, a + 1)),
        1 => Just(Field::Every(2)),
    ];
    let dom = prop_oneof![
        4 => Just(Field::Star),
        1 => prop::collection::btree_set(1u32..29, 1..8).prop_map(|s| Field::Values(s.into_iter().collect())),
    ];
    let dow = prop_oneof![
        4 => Just(Field::Star),
        1 => prop::collection::btree_set(0u32..7, 1..4).prop_map(|s| Field::Values(s.into_iter().collect())),
    ];
    (minute, hour, dom, dow).prop_map(|(minute, hour, dom, dow)| Cron {
        minute,
        hour,
        dom,
        dow,
    })
}

const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kolkata",
    "UTC",
];

/// Instants where the zone's UTC offset changes in 2025-2027 (none for fixed zones:
/// then a few arbitrary instants), found by scanning every 15 minutes.
fn transitions(tz: Tz) -> Vec<DateTime<Utc>> {
    let off = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix();
    let mut out = Vec::new();
    let mut t = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let end = Utc.with_ymd_and_hms(2027, 12, 31, 0, 0, 0).unwrap();
    while t < end {
        let n = t + ChronoDuration::minutes(15);
        if off(t) != off(n) {
            out.push(n);
        }
        t = n;
    }
    if out.is_empty() {
        out.push(Utc.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap());
        out.push(Utc.with_ymd_and_hms(2026, 10, 25, 1, 0, 0).unwrap());
    }
    out
}

/// Every fire in `(from, until]` by brute force over each UTC minute, from the rules:
/// an interval job (hour `*`) fires at every instant whose wall time matches (gap times
/// never, overlap times twice); a fixed-time job fires at the first instant of a
/// matching wall time, and once right after a gap that swallowed a matching wall time.
fn brute_force(c: &Cron, tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
    let interval = c.hour.is_star();
    let wall = |t: DateTime<Utc>| t.with_timezone(&tz).naive_local();
    let mut out = Vec::new();
    let mut t =
        from.with_second(0).unwrap().with_nanosecond(0).unwrap() + ChronoDuration::minutes(1);
    while t <= until {
        let w = wall(t);
        let first_of_wall = tz
            .from_local_datetime(&w)
            .earliest()
            .is_some_and(|e| e.with_timezone(&Utc) == t);
        let fires = if interval {
            c.matches(w)
        } else {
            let direct = c.matches(w) && first_of_wall;
            // The wall clock jumped forward just before t: the skipped wall minutes.
            let prev = wall(t - ChronoDuration::minutes(1));
            let mut skipped = prev + ChronoDuration::minutes(1);
            let mut after_gap = false;
            while skipped < w {
                if c.matches(skipped) {
                    after_gap = true;
                }
                skipped += ChronoDuration::minutes(1);
            }
            direct || after_gap
        };
        if fires {
            out.push(t);
        }
        t += ChronoDuration::minutes(1);
    }
    out
}

#[test]
fn cron_next_fire_agrees_with_minute_enumeration_across_dst() {
    let zones: Vec<(Tz, Vec<DateTime<Utc>>)> = ZONES
        .iter()
        .map(|z| {
            let tz: Tz = z.parse().unwrap();
            (tz, transitions(tz))
        })
        .collect();
    let mut runner = TestRunner::new(Config {
        cases: 160,
        ..Config::default()
    });
    let strategy = (
        cron_strategy(),
        0usize..ZONES.len(),
        any::<prop::sample::Index>(),
        0i64..(36 * 60),
    );
    let (overlap_cases, gap_cases) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner
        .run(&strategy, |(cron, zone, which, before_min)| {
            let (tz, trans) = &zones[zone];
            let at = trans[which.index(trans.len())];
            let from = at - ChronoDuration::minutes(before_min);
            let until = from + ChronoDuration::hours(60);
            let expected = brute_force(&cron, *tz, from, until);
            let c = CronTz::compile(&cron.text(), tz.name())
                .map_err(|e| TestCaseError::fail(format!("{}: {e:?}", cron.text())))?;
            let got = c.fires_between(from, until, 10_000);
            // Count the cases that exercise the DST rules, so the test shows it did.
            let wall = |t: &DateTime<Utc>| t.with_timezone(tz).naive_local();
            if expected
                .iter()
                .any(|t| !matches!(tz.from_local_datetime(&wall(t)), LocalResult::Single(_)))
            {
                overlap_cases.set(overlap_cases.get() + 1);
            }
            if !cron.hour.is_star() && expected.iter().any(|t| !cron.matches(wall(t))) {
                gap_cases.set(gap_cases.get() + 1);
            }
            prop_assert_eq!(
                &got,
                &expected,
                "cron {:?} in {} from {}",
                cron.text(),
                tz.name(),
                from
            );
            Ok(())
        })
        .unwrap();
    let (overlap_cases, gap_cases) = (overlap_cases.get(), gap_cases.get());
    assert!(
        overlap_cases > 0 && gap_cases > 0,
        "cases with fires in an overlap: {overlap_cases}, shifted past a gap: {gap_cases}"
    );
    eprintln!(
        "cron cases with fires in an overlap: {overlap_cases}, shifted past a gap: {gap_cases}"
    );
}

// ---------------------------------------------------------------------------------
// Tar round trips.

/// A tree as read back: path → `None` for a directory, `Some(content)` for a file.
type Tree = BTreeMap<String, Option<Vec<u8>>>;

/// Random trees: directories then files under them, distinct names.
fn tree_strategy() -> impl Strategy<Value = Tree> {
    let name = "[a-z0-9._-]{1,12}".prop_filter("not a dot name", |n| n != "." && n != "..");
    let dirs = prop::collection::vec(prop::collection::vec(name.clone(), 1..4), 0..6);
    let files = prop::collection::vec(
        (
            any::<prop::sample::Index>(),
            name,
            prop::collection::vec(any::<u8>(), 0..300),
        ),
        1..12,
    );
    (dirs, files).prop_map(|(dirs, files)| {
        let mut tree = Tree::new();
        let mut dir_paths = vec![String::new()];
        for segs in dirs {
            let mut p = String::new();
            for s in segs {
                p = if p.is_empty() { s } else { format!("{p}/{s}") };
                if matches!(tree.get(&p), Some(Some(_))) {
                    break;
                }
                tree.insert(p.clone(), None);
                dir_paths.push(p.clone());
            }
        }
        for (at, n, data) in files {
            let d = &dir_paths[at.index(dir_paths.len())];
            let p = if d.is_empty() { n } else { format!("{d}/{n}") };
            tree.entry(p).or_insert(Some(data));
        }
        tree
    })
}

fn pack(tree: &Tree) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, v) in tree {
        let mut h = tar::Header::new_gnu();
        match v {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Some(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Reads a tar with the module's one entry reader.
fn unpack(tar_bytes: &[u8]) -> Tree {
    let mut tree = Tree::new();
    tario::for_each_entry(tar_bytes, |m, r| {
        let v = match m.kind {
            tar::EntryType::Directory => None,
            tar::EntryType::Regular => {
                let mut d = Vec::new();
                r.read_to_end(&mut d)?;
                Some(d)
            }
            k => panic!("unexpected entry kind {k:?} at {}", m.name),
        };
        assert!(tree.insert(m.name.clone(), v).is_none(), "{} twice", m.name);
        Ok(())
    })
    .expect("read back");
    tree
}

const LIMITS: TarLimits = TarLimits {
    max_bytes: 1 << 24,
    max_entries: 10_000,
};

fn scratch(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "highway-props-{}-{tag}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

proptest! {
    #![proptest_config(Config { cases: 64, ..Config::default() })]

    /// An artifact tar placed at `/in` of a run: the input tar holds the same tree under
    /// `in/` (and nothing else but the `in` directory itself).
    #[test]
    fn artifact_input_round_trips(tree in tree_strategy()) {
        let src = scratch("artifact.tar");
        std::fs::write(&src, pack(&tree)).unwrap();
        let inputs = [InputFile {
            path: "/in".into(),
            mode: None,
            owner: None,
            data: InputData::ArtifactTar(src.clone()),
        }];
        let out = tario::build_input_tar_bytes(&inputs, &LIMITS);
        std::fs::remove_file(&src).ok();
        let mut back = unpack(&out.expect("a plain tree is a valid input"));
        // The `in` directory itself may or may not be an entry; never a file.
        prop_assert!(matches!(back.remove("in"), None | Some(None)));
        let back: Tree = back
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("in/").expect("under in/").to_string(), v))
            .collect();
        prop_assert_eq!(back, tree);
    }

    /// Inline files given as inputs: the input tar holds each at its path, with its
    /// content and mode.
    #[test]
    fn inline_inputs_round_trip(tree in tree_strategy(), mode in prop::sample::select(vec![0o400u32, 0o644, 0o755])) {
        let files: Vec<(&String, &Vec<u8>)> =
            tree.iter().filter_map(|(p, v)| v.as_ref().map(|d| (p, d))).collect();
        let inputs: Vec<InputFile> = files
            .iter()
            .map(|(p, d)| InputFile {
                path: format!("/in/{p}"),
                mode: Some(mode),
                owner: Some((1000, 1000)),
                data: InputData::Bytes(bytes::Bytes::from((*d).clone())),
            })
            .collect();
        let out = tario::build_input_tar_bytes(&inputs, &LIMITS).expect("valid inputs");
        let mut seen = Tree::new();
        tario::for_each_entry(&out[..], |m, r| {
            assert_eq!((m.mode & 0o777, m.uid, m.gid), (mode, 1000, 1000), "{}", m.name);
            let mut d = Vec::new();
            r.read_to_end(&mut d)?;
            seen.insert(m.name.clone(), Some(d));
            Ok(())
        })
        .unwrap();
        let want: Tree = files
            .iter()
            .map(|(p, d)| (format!("in/{p}"), Some((*d).clone())))
            .collect();
        prop_assert_eq!(seen, want);
    }

    /// A tenant's archive imported as an artifact: validated, rewritten, and read back
    /// as the same tree.
    #[test]
    fn imported_archive_round_trips(tree in tree_strategy()) {
        let dst = scratch("import.tar");
        let summary = tario::import_archive(
            &pack(&tree)[..],
            std::fs::File::create(&dst).unwrap(),
            &LIMITS,
        );
        let written = std::fs::read(&dst).unwrap();
        std::fs::remove_file(&dst).ok();
        let summary = summary.expect("a plain tree imports");
        let files = tree.values().flatten();
        prop_assert_eq!(summary.content_bytes, files.map(|d| d.len() as u64).sum::<u64>());
        prop_assert_eq!(unpack(&written), tree);
    }
}
