//! Cron expressions as crontab users write them: the parser of the six fields (seconds
//! optional), the `@` shorthands, the error messages (the expression quoted as written,
//! the field named with its allowed range), and the wall-clock fire times with Vixie
//! cron's day rule. Timezones and DST are the caller's ([`super::CronTz`]).
//!
//! Day-of-week numbers are crontab's: `0` and `7` are Sunday, `1` is Monday. The `cron`
//! crate, which enumerates the fire times, counts Sunday as `1`; it is only ever given
//! explicit number lists built here, so its numbering never shows.
//!
//! Day rule (Vixie cron, cronie, Kubernetes CronJob): when both day-of-month and
//! day-of-week are restricted, a day matches if *either* matches; when one of them is
//! unrestricted (`*` or `?`, without a step other than 1), the other alone decides. The
//! crate only knows "both must match", so the either-case is enumerated as two crate
//! schedules (one per day field) whose fire times are merged.

use chrono::{DateTime, Utc};
use std::iter::Peekable;
use std::str::FromStr;

/// The longest expression accepted.
const MAX_LEN: usize = 256;

/// One cron field: its name in messages, its values and the names it accepts.
struct FieldSpec {
    name: &'static str,
    min: u32,
    /// Largest value a number may have (7 for day of week: Sunday again).
    max: u32,
    /// Largest value `*` and `N/step` run up to (6 for day of week).
    span_max: u32,
    range: &'static str,
    names: &'static [(&'static str, u32)],
    /// Accepts `?` as a synonym of `*` (the day fields).
    any: bool,
}

const MONTH_NAMES: &[(&str, u32)] = &[
    ("jan", 1),
    ("january", 1),
    ("feb", 2),
    ("february", 2),
    ("mar", 3),
    ("march", 3),
    ("apr", 4),
    ("april", 4),
    ("may", 5),
    ("jun", 6),
    ("june", 6),
    ("jul", 7),
    ("july", 7),
    ("aug", 8),
    ("august", 8),
    ("sep", 9),
    ("september", 9),
    ("oct", 10),
    ("october", 10),
    ("nov", 11),
    ("november", 11),
    ("dec", 12),
    ("december", 12),
];

const DAY_NAMES: &[(&str, u32)] = &[
    ("sun", 0),
    ("sunday", 0),
    ("mon", 1),
    ("monday", 1),
    ("tue", 2),
    ("tues", 2),
    ("tuesday", 2),
    ("wed", 3),
    ("wednesday", 3),
    ("thu", 4),
    ("thurs", 4),
    ("thursday", 4),
    ("fri", 5),
    ("friday", 5),
    ("sat", 6),
    ("saturday", 6),
];

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    span_max: 59,
    range: "0-59",
    names: &[],
    any: false,
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    ..SECOND
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    span_max: 23,
    range: "0-23",
    names: &[],
    any: false,
};
const DAY_OF_MONTH: FieldSpec = FieldSpec {
    name: "day of month",
    min: 1,
    max: 31,
    span_max: 31,
    range: "1-31",
    names: &[],
    any: true,
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    span_max: 12,
    range: "1-12 or JAN-DEC",
    names: MONTH_NAMES,
    any: false,
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day of week",
    min: 0,
    max: 7,
    span_max: 6,
    range: "0-7 or SUN-SAT (0 and 7 are Sunday)",
    names: DAY_NAMES,
    any: true,
};

/// The fields in the order of a 6-field expression.
const FIELDS: [&FieldSpec; 6] = [&SECOND, &MINUTE, &HOUR, &DAY_OF_MONTH, &MONTH, &DAY_OF_WEEK];

/// A parsed expression: each field as a bit set of its values (day of week 0-6,
/// Sunday = 0), and whether each day field was written unrestricted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fields {
    pub second: u64,
    pub minute: u64,
    pub hour: u64,
    pub day_of_month: u64,
    pub month: u64,
    pub day_of_week: u64,
    pub dom_star: bool,
    pub dow_star: bool,
}

impl Fields {
    /// Parses `expr` (5 fields, 6 with seconds first, or an `@` shorthand). The error is
    /// the whole message: ``invalid cron expression "61 * * * *": minute 61 is out of range 0-59``.
    pub fn parse(expr: &str) -> Result<Self, String> {
        let fail = |why: String| format!("invalid cron expression {}: {why}", quote(expr));
        let t = expr.trim();
        if t.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        if t.len() > MAX_LEN {
            return Err(fail(format!("it is longer than {MAX_LEN} characters")));
        }
        let expanded;
        let text = if t.starts_with('@') {
            expanded = shorthand(t).ok_or_else(|| {
                fail(
                    "unknown shorthand (@yearly, @annually, @monthly, @weekly, @daily, \
                     @midnight, @hourly)"
                        .to_owned(),
                )
            })?;
            expanded
        } else {
            t
        };
        let mut parts: Vec<&str> = text.split_whitespace().collect();
        match parts.len() {
            5 => parts.insert(0, "0"),
            6 => {}
            n => {
                return Err(fail(format!(
                    "it has {n} fields; expected 5 (minute hour day-of-month month \
                     day-of-week) or 6 (second first)"
                )))
            }
        }
        let mut sets = [0u64; 6];
        let mut stars = [false; 6];
        for (i, spec) in FIELDS.iter().enumerate() {
            let (bits, star) = parse_field(spec, parts[i]).map_err(fail)?;
            sets[i] = bits;
            stars[i] = star;
        }
        // Sunday written as 7 is Sunday.
        if sets[5] & (1 << 7) != 0 {
            sets[5] = (sets[5] & !(1 << 7)) | 1;
        }
        Ok(Self {
            second: sets[0],
            minute: sets[1],
            hour: sets[2],
            day_of_month: sets[3],
            month: sets[4],
            day_of_week: sets[5],
            dom_star: stars[3],
            dow_star: stars[5],
        })
    }

    /// Every hour is in the hour field: the job follows real time across DST.
    pub fn every_hour(&self) -> bool {
        self.hour == full(&HOUR)
    }

    /// Both day fields restricted: a day matches if either matches.
    pub fn days_either(&self) -> bool {
        !self.dom_star && !self.dow_star
    }
}

/// `"expr"`, escaped, cut to 64 characters.
fn quote(expr: &str) -> String {
    let mut s: String = expr.chars().take(64).collect();
    if s.len() < expr.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// The 6-field form of a shorthand (Vixie cron's list; `@reboot` has no meaning here).
fn shorthand(t: &str) -> Option<&'static str> {
    Some(match t {
        "@yearly" | "@annually" => "0 0 0 1 1 *",
        "@monthly" => "0 0 0 1 * *",
        "@weekly" => "0 0 0 * * 0",
        "@daily" | "@midnight" => "0 0 0 * * *",
        "@hourly" => "0 0 * * * *",
        _ => return None,
    })
}

fn full(spec: &FieldSpec) -> u64 {
    (spec.min..=spec.span_max).fold(0, |b, v| b | 1 << v)
}

/// One field: a comma list of `*`, `?` (day fields), `N`, `A-B`, each optionally `/STEP`
/// (`N/STEP` runs from N to the end of the range). Returns the values and whether the
/// field counts as unrestricted for the day rule (an item `*` or `?` with step 1).
fn parse_field(spec: &FieldSpec, text: &str) -> Result<(u64, bool), String> {
    let name = spec.name;
    let mut bits = 0u64;
    let mut star = false;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{name} {text:?} has an empty list item"));
        }
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let step_max = spec.span_max - spec.min + 1;
        let step = match step {
            None => 1,
            Some(s) => match number(s) {
                Some(n) if (1..=u64::from(step_max)).contains(&n) => n as u32,
                Some(_) => {
                    return Err(format!(
                        "{name} step {} is out of range 1-{step_max}",
                        cut(s)
                    ))
                }
                None => {
                    return Err(format!(
                        "{name} step {:?} is not a number (1-{step_max})",
                        cut(s)
                    ))
                }
            },
        };
        let (lo, hi) = if base == "*" || base == "?" {
            if base == "?" && !spec.any {
                return Err(format!(
                    "{name} does not take \"?\" (only day of month and day of week do); \
                     use \"*\""
                ));
            }
            star |= step == 1;
            (spec.min, spec.span_max)
        } else if let Some((a, b)) = base.split_once('-') {
            let lo = value(spec, a)?;
            let mut hi = value(spec, b)?;
            // `FRI-SUN`: Sunday ends the week as 7.
            if spec.names == DAY_NAMES && hi == 0 && lo > 0 {
                hi = 7;
            }
            if lo > hi {
                return Err(format!(
                    "{name} range {}-{} runs backwards (allowed {})",
                    cut(a),
                    cut(b),
                    spec.range
                ));
            }
            (lo, hi)
        } else {
            let v = value(spec, base)?;
            if item.contains('/') {
                (v, spec.span_max.max(v))
            } else {
                (v, v)
            }
        };
        for v in (lo..=hi).step_by(step as usize) {
            bits |= 1 << v;
        }
    }
    Ok((bits, star))
}

/// A number or (month, day of week) a name, checked against the field's range.
fn value(spec: &FieldSpec, tok: &str) -> Result<u32, String> {
    let name = spec.name;
    if let Some(n) = number(tok) {
        return if (u64::from(spec.min)..=u64::from(spec.max)).contains(&n) {
            Ok(n as u32)
        } else {
            Err(format!(
                "{name} {} is out of range {}",
                cut(tok),
                spec.range
            ))
        };
    }
    if tok.is_empty() {
        return Err(format!(
            "{name} has a range with a missing bound (allowed {})",
            spec.range
        ));
    }
    let lower = tok.to_ascii_lowercase();
    if let Some((_, v)) = spec.names.iter().find(|(n, _)| *n == lower) {
        return Ok(*v);
    }
    Err(if spec.names.is_empty() {
        format!(
            "{name} {:?} is not a number (allowed {})",
            cut(tok),
            spec.range
        )
    } else {
        format!(
            "{name} {:?} is not a number or a name (allowed {})",
            cut(tok),
            spec.range
        )
    })
}

/// Digits only (saturating, so a huge number is "out of range", not "not a number").
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| {
        n.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

fn cut(s: &str) -> String {
    s.chars().take(32).collect()
}

/// The wall-clock fire times of an expression (naive local times carried as UTC, the
/// `cron` crate's way of enumerating without a timezone).
#[derive(Debug, Clone)]
pub(crate) struct WallCron {
    /// Day-of-month arm (or the only schedule).
    first: cron::Schedule,
    /// Day-of-week arm, when both day fields are restricted.
    second: Option<cron::Schedule>,
    every_hour: bool,
}

impl WallCron {
    pub fn parse(expr: &str) -> Result<Self, String> {
        let f = Fields::parse(expr)?;
        let build = |dom: &str, dow: &str| -> Result<cron::Schedule, String> {
            let text = format!(
                "{} {} {} {dom} {} {dow}",
                list(f.second, &SECOND, 0),
                list(f.minute, &MINUTE, 0),
                list(f.hour, &HOUR, 0),
                list(f.month, &MONTH, 0),
            );
            cron::Schedule::from_str(&text)
                .map_err(|e| format!("invalid cron expression {}: {e}", quote(expr)))
        };
        let dom = list(f.day_of_month, &DAY_OF_MONTH, 0);
        // The crate counts Sunday as 1.
        let dow = list(f.day_of_week, &DAY_OF_WEEK, 1);
        let (first, second) = if f.days_either() {
            (build(&dom, "*")?, Some(build("*", &dow)?))
        } else {
            (build(&dom, &dow)?, None)
        };
        Ok(Self {
            first,
            second,
            every_hour: f.every_hour(),
        })
    }

    /// The hour field holds every hour.
    pub fn every_hour(&self) -> bool {
        self.every_hour
    }

    /// Wall times strictly after `from`, ascending, each once.
    pub fn after<'a>(&'a self, from: &DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + 'a {
        Merge {
            a: self.first.after(from).peekable(),
            b: self.second.as_ref().map(|s| s.after(from).peekable()),
        }
    }
}

/// `*` for a full set, else the values as a comma list, shifted by `shift`.
fn list(bits: u64, spec: &FieldSpec, shift: u32) -> String {
    if bits == full(spec) {
        return "*".to_owned();
    }
    (0..64)
        .filter(|v| bits & (1u64 << v) != 0)
        .map(|v| (v + shift).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Two ascending streams merged, equal items once.
struct Merge<I: Iterator> {
    a: Peekable<I>,
    b: Option<Peekable<I>>,
}

impl<I: Iterator<Item = DateTime<Utc>>> Iterator for Merge<I> {
    type Item = DateTime<Utc>;
    fn next(&mut self) -> Option<DateTime<Utc>> {
        let Some(b) = self.b.as_mut() else {
            return self.a.next();
        };
        match (self.a.peek(), b.peek()) {
            (Some(x), Some(y)) if x < y => self.a.next(),
            (Some(x), Some(y)) if y < x => b.next(),
            (Some(_), Some(_)) => {
                b.next();
                self.a.next()
            }
            (Some(_), None) => self.a.next(),
            (None, _) => b.next(),
        }
    }
}

#[cfg(test)]
impl Fields {
    /// Whether a wall time matches, by the crontab rules directly (the reference the
    /// enumeration is checked against).
    pub fn matches(&self, t: chrono::NaiveDateTime) -> bool {
        use chrono::{Datelike, Timelike};
        let has = |bits: u64, v: u32| bits & (1u64 << v) != 0;
        let dom = has(self.day_of_month, t.day());
        let dow = has(self.day_of_week, t.weekday().num_days_from_sunday());
        let day = if self.days_either() {
            dom || dow
        } else {
            dom && dow
        };
        day && has(self.second, t.second())
            && has(self.minute, t.minute())
            && has(self.hour, t.hour())
            && has(self.month, t.month())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(expr: &str) -> String {
        Fields::parse(expr).unwrap_err()
    }

    #[test]
    fn errors_quote_the_expression_and_name_the_field_and_range() {
        let cases = [
            (
                "61 * * * *",
                r#"invalid cron expression "61 * * * *": minute 61 is out of range 0-59"#,
            ),
            (
                "0 24 * * *",
                r#"invalid cron expression "0 24 * * *": hour 24 is out of range 0-23"#,
            ),
            (
                "0 0 0 * *",
                r#"invalid cron expression "0 0 0 * *": day of month 0 is out of range 1-31"#,
            ),
            (
                "0 0 * 13 *",
                r#"invalid cron expression "0 0 * 13 *": month 13 is out of range 1-12 or JAN-DEC"#,
            ),
            (
                "0 0 * * 8",
                r#"invalid cron expression "0 0 * * 8": day of week 8 is out of range 0-7 or SUN-SAT (0 and 7 are Sunday)"#,
            ),
            (
                "60 0 0 * * *",
                r#"invalid cron expression "60 0 0 * * *": second 60 is out of range 0-59"#,
            ),
            (
                "  0 0 * * FRX ",
                r#"invalid cron expression "  0 0 * * FRX ": day of week "FRX" is not a number or a name (allowed 0-7 or SUN-SAT (0 and 7 are Sunday))"#,
            ),
            (
                "x * * * *",
                r#"invalid cron expression "x * * * *": minute "x" is not a number (allowed 0-59)"#,
            ),
            (
                "0 17-9 * * *",
                r#"invalid cron expression "0 17-9 * * *": hour range 17-9 runs backwards (allowed 0-23)"#,
            ),
            (
                "*/0 * * * *",
                r#"invalid cron expression "*/0 * * * *": minute step 0 is out of range 1-60"#,
            ),
            (
                "? * * * *",
                r#"invalid cron expression "? * * * *": minute does not take "?" (only day of month and day of week do); use "*""#,
            ),
            (
                "1,,2 * * * *",
                r#"invalid cron expression "1,,2 * * * *": minute "1,,2" has an empty list item"#,
            ),
            (
                "* * * *",
                r#"invalid cron expression "* * * *": it has 4 fields; expected 5 (minute hour day-of-month month day-of-week) or 6 (second first)"#,
            ),
            (
                "@reboot",
                r#"invalid cron expression "@reboot": unknown shorthand (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"#,
            ),
            ("", r#"invalid cron expression "": it is empty"#),
            (
                "0 9- * * *",
                r#"invalid cron expression "0 9- * * *": hour has a range with a missing bound (allowed 0-23)"#,
            ),
            (
                "99999999999999999999999 * * * *",
                r#"invalid cron expression "99999999999999999999999 * * * *": minute 99999999999999999999999 is out of range 0-59"#,
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(err(expr), want, "{expr}");
        }
        assert!(err("0 0 1 1 * * 2030").contains("7 fields"));
    }

    #[test]
    fn accepted_syntax() {
        // Everything the previous parser took stays valid: stored schedules compile.
        for ok in [
            "*/15 9-17 * * MON-FRI",
            "0 0 ? * MON",
            "0 0 1 * ?",
            "5/15 * * * *",
            "0 0 * JAN-MAR,DEC *",
            "0 0 * * monday,Tues,THURS",
            "0 0 * * 1-5/2",
            "0 0 * * MON-FRI/2",
            "0 0 * * 5-7",
            "0 0 * * FRI-SUN",
            "0 0 * * 0-7",
            "*/59 * * * *",
            "0 */23 * * *",
            "*/10 * * * * *",
            "@yearly",
            "@annually",
            "@monthly",
            "@weekly",
            "@daily",
            "@midnight",
            "@hourly",
        ] {
            WallCron::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn day_of_week_numbers_are_crontab() {
        let dow = |e: &str| Fields::parse(e).unwrap().day_of_week;
        assert_eq!(dow("0 0 * * 0"), 1);
        assert_eq!(dow("0 0 * * 7"), 1);
        assert_eq!(dow("0 0 * * SUN"), 1);
        assert_eq!(dow("0 0 * * 1"), 1 << 1);
        assert_eq!(dow("0 0 * * 6"), 1 << 6);
        assert_eq!(dow("0 0 * * 5-7"), 1 | 1 << 5 | 1 << 6);
        assert_eq!(dow("0 0 * * FRI-SUN"), 1 | 1 << 5 | 1 << 6);
        assert_eq!(dow("0 0 * * 7-7"), 1);
        assert_eq!(dow("0 0 * * */2"), 1 | 1 << 2 | 1 << 4 | 1 << 6);
        assert_eq!(dow("0 0 * * 1-5/2"), 1 << 1 | 1 << 3 | 1 << 5);
    }

    #[test]
    fn unrestricted_day_fields() {
        let f = |e: &str| {
            let f = Fields::parse(e).unwrap();
            (f.dom_star, f.dow_star)
        };
        assert_eq!(f("0 0 * * *"), (true, true));
        assert_eq!(f("0 0 ? * ?"), (true, true));
        assert_eq!(f("0 0 1 * MON"), (false, false));
        assert_eq!(f("0 0 */1 * MON"), (true, false));
        // A step makes a field restricted (Kubernetes CronJob's reading).
        assert_eq!(f("0 0 */2 * MON"), (false, false));
        assert_eq!(f("0 0 1-31 * 0-6"), (false, false));
        assert_eq!(f("@weekly"), (true, false));
    }
}
