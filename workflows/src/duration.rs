//! Human-friendly durations for parameters: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"1h30m"`,
//! or a bare number of seconds (`30`, `1.5`), as Docker and Temporal users write them.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration that parses from `"30s"`-style strings or a number of seconds and
/// serialises back to the shortest exact string form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn as_millis_i64(&self) -> i64 {
        i64::try_from(self.0.as_millis()).unwrap_or(i64::MAX)
    }
}

impl From<Duration> for HumanDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl From<HumanDuration> for Duration {
    fn from(d: HumanDuration) -> Self {
        d.0
    }
}

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (examples: \"500ms\", \"30s\", \"5m\", \"1h30m\", 30)"
)]
pub struct ParseDurationError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for HumanDuration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: s.chars().take(64).collect(),
            reason,
        };
        let t = s.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        if let Ok(secs) = t.parse::<f64>() {
            return secs_f64(secs).map(Self).ok_or_else(|| err("out of range"));
        }
        let mut total = Duration::ZERO;
        let mut rest = t;
        while !rest.is_empty() {
            let num_len = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| err("missing unit"))?;
            if num_len == 0 {
                return Err(err("expected a number"));
            }
            let value: f64 = rest[..num_len]
                .parse()
                .map_err(|_| err("malformed number"))?;
            rest = &rest[num_len..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ns" => 1e-9,
                "us" | "µs" => 1e-6,
                "ms" => 1e-3,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
            };
            rest = &rest[unit_len..];
            total = total
                .checked_add(secs_f64(value * factor).ok_or_else(|| err("out of range"))?)
                .ok_or_else(|| err("out of range"))?;
        }
        Ok(Self(total))
    }
}

fn secs_f64(v: f64) -> Option<Duration> {
    if !v.is_finite() || !(0.0..=1e12).contains(&v) {
        return None;
    }
    Some(Duration::from_secs_f64(v))
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if self.0.subsec_nanos() % 1_000_000 != 0 {
            write!(f, "{}us", self.0.as_micros())
        } else if ms % 1000 != 0 {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}s", ms / 1000)
        }
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => secs_f64(n).map(Self).ok_or_else(|| {
                serde::de::Error::custom(format!("invalid duration {n}: out of range"))
            }),
            Raw::Str(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_forms() {
        let p = |s: &str| s.parse::<HumanDuration>().unwrap().0;
        assert_eq!(p("30s"), Duration::from_secs(30));
        assert_eq!(p("500ms"), Duration::from_millis(500));
        assert_eq!(p("1h30m"), Duration::from_secs(5400));
        assert_eq!(p("1.5"), Duration::from_millis(1500));
        assert_eq!(p("2m"), Duration::from_secs(120));
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "s", "10x", "-1s", "1e99h", "ms5"] {
            assert!(bad.parse::<HumanDuration>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn round_trips() {
        for s in ["30s", "1500ms", "0s"] {
            assert_eq!(s.parse::<HumanDuration>().unwrap().to_string(), s);
        }
        let d: HumanDuration = serde_json::from_str("10").unwrap();
        assert_eq!(d.0, Duration::from_secs(10));
    }
}
