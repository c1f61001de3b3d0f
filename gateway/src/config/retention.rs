//! `retention:` — how long each kind of stored data lives, at the top level (the default for
//! every tenant, and for rows of tenants no longer configured) and per tenant (any subset of
//! the keys). The purge job (`runtime/purge.rs`) enforces it; `0` means never stored at all.

use std::time::Duration;

use serde::Deserialize;

use super::problems::{Problem, problem};

/// One period: `7d`, `12h`, `30m`, `90s`, or `0` (never stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period(pub Duration);

impl Period {
    pub const fn days(d: u64) -> Period {
        Period(Duration::from_secs(d * 86_400))
    }

    /// `0`: the data is not stored in the first place.
    pub fn is_never_stored(self) -> bool {
        self.0.is_zero()
    }

    /// `7d` style, as written in the config.
    pub fn display(self) -> String {
        let s = self.0.as_secs();
        match s {
            0 => "0".to_owned(),
            s if s % 86_400 == 0 => format!("{}d", s / 86_400),
            s if s % 3_600 == 0 => format!("{}h", s / 3_600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }

    /// `7d`, `12h`, `30m`, `90s` or `0`; a message naming what is wrong otherwise.
    pub fn parse(text: &str) -> Result<Period, String> {
        let t = text.trim();
        if t == "0" {
            return Ok(Period(Duration::ZERO));
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?} is not a period: write e.g. 7d, 12h, 30m or 0"))?;
        let per = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => {
                return Err(format!(
                    "{text:?} has no known unit: use d, h, m or s (e.g. 400d), or 0"
                ));
            }
        };
        // Past 100 years is a typo, and would overflow a timestamp's arithmetic.
        match n.checked_mul(per) {
            Some(secs) if secs <= 100 * 365 * 86_400 => Ok(Period(Duration::from_secs(secs))),
            _ => Err(format!("{text:?} is longer than 100 years")),
        }
    }
}

/// What a tenant's rows keep, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The verification rows and their attempts.
    pub verifications: Period,
    /// Vendors' answer bodies (`verification_attempts.raw_body`).
    pub raw_bodies: Period,
    /// The caller's `metadata` and `external_id`.
    pub metadata: Period,
    /// Face embeddings kept for duplicate checks (`verification_faces`).
    pub embeddings: Period,
}

impl Default for Retention {
    /// A verification row is audit evidence for a little over a year; a vendor's raw body is
    /// only needed to investigate a recent dispute; embeddings are biometric data, kept a
    /// year at most.
    fn default() -> Self {
        Retention {
            verifications: Period::days(400),
            raw_bodies: Period::days(30),
            metadata: Period::days(400),
            embeddings: Period::days(365),
        }
    }
}

/// How the purge job runs (top level only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurgeSchedule {
    /// Between two passes of the purge job.
    pub every: Duration,
    /// Rows one statement deletes or changes at most.
    pub batch: u32,
}

impl Default for PurgeSchedule {
    fn default() -> Self {
        PurgeSchedule {
            every: Duration::from_secs(3_600),
            batch: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawPeriod {
    Number(u64),
    Text(String),
}

/// A tenant's `retention:` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetention {
    verifications: Option<RawPeriod>,
    raw_bodies: Option<RawPeriod>,
    metadata: Option<RawPeriod>,
    embeddings: Option<RawPeriod>,
}

/// The top-level `retention:`: the same keys, and the purge job's schedule.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRootRetention {
    verifications: Option<RawPeriod>,
    raw_bodies: Option<RawPeriod>,
    metadata: Option<RawPeriod>,
    embeddings: Option<RawPeriod>,
    purge_every: Option<RawPeriod>,
    purge_batch: Option<u32>,
}

fn period(raw: &RawPeriod, path: &str, problems: &mut Vec<Problem>) -> Option<Period> {
    let parsed = match raw {
        RawPeriod::Number(0) => Ok(Period(Duration::ZERO)),
        RawPeriod::Number(n) => Err(format!(
            "{n} has no unit: write e.g. {n}d, {n}h or {n}m (only 0 stands alone)"
        )),
        RawPeriod::Text(t) => Period::parse(t),
    };
    parsed.map_err(|m| problems.push(problem(path, m))).ok()
}

/// `raw` over `base`: each key given replaces the base's.
pub fn retention(
    raw: &RawRetention,
    base: Retention,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Retention {
    let mut r = base;
    let fields: [(&str, &Option<RawPeriod>, &mut Period); 4] = [
        ("verifications", &raw.verifications, &mut r.verifications),
        ("raw_bodies", &raw.raw_bodies, &mut r.raw_bodies),
        ("metadata", &raw.metadata, &mut r.metadata),
        ("embeddings", &raw.embeddings, &mut r.embeddings),
    ];
    for (key, value, slot) in fields {
        if let Some(v) = value
            && let Some(p) = period(v, &format!("{path}.{key}"), problems)
        {
            *slot = p;
        }
    }
    if r.verifications.is_never_stored() {
        problems.push(problem(
            format!("{path}.verifications"),
            "cannot be 0: every answer is stored before it is sent (the ledger and audit \
             depend on it); give a period such as 30d",
        ));
    }
    r
}

/// The top-level defaults and the purge schedule.
pub fn root_retention(
    raw: &RawRootRetention,
    problems: &mut Vec<Problem>,
) -> (Retention, PurgeSchedule) {
    let periods = RawRetention {
        verifications: raw.verifications.clone(),
        raw_bodies: raw.raw_bodies.clone(),
        metadata: raw.metadata.clone(),
        embeddings: raw.embeddings.clone(),
    };
    let defaults = retention(&periods, Retention::default(), "retention", problems);
    let mut schedule = PurgeSchedule::default();
    if let Some(v) = &raw.purge_every
        && let Some(p) = period(v, "retention.purge_every", problems)
    {
        if p.0 < Duration::from_secs(60) {
            problems.push(problem(
                "retention.purge_every",
                "must be at least 1m: a pass scans every tenant",
            ));
        } else {
            schedule.every = p.0;
        }
    }
    if let Some(b) = raw.purge_batch {
        if (1..=100_000).contains(&b) {
            schedule.batch = b;
        } else {
            problems.push(problem(
                "retention.purge_batch",
                "must be between 1 and 100000",
            ));
        }
    }
    (defaults, schedule)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_with_units() {
        assert_eq!(Period::parse("7d"), Ok(Period::days(7)));
        assert_eq!(
            Period::parse("12h"),
            Ok(Period(Duration::from_secs(43_200)))
        );
        assert_eq!(Period::parse("0"), Ok(Period(Duration::ZERO)));
        assert!(Period::parse("7").is_err());
        assert!(Period::parse("7w").is_err());
        assert!(Period::parse("d").is_err());
        assert!(Period::parse("99999999999999d").is_err());
        assert_eq!(Period::days(400).display(), "400d");
        assert_eq!(Period(Duration::from_secs(90)).display(), "90s");
    }

    #[test]
    fn tenant_keys_override_the_defaults() {
        let raw: RawRetention =
            serde_yaml_ng::from_str("raw_bodies: 7d\nembeddings: 0").expect("yaml");
        let mut problems = Vec::new();
        let r = retention(&raw, Retention::default(), "t", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(r.raw_bodies, Period::days(7));
        assert!(r.embeddings.is_never_stored());
        assert_eq!(r.verifications, Period::days(400));
    }

    #[test]
    fn verifications_zero_is_refused() {
        let raw: RawRetention = serde_yaml_ng::from_str("verifications: 0").expect("yaml");
        let mut problems = Vec::new();
        retention(&raw, Retention::default(), "t", &mut problems);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].path, "t.verifications");
    }
}
