//! A tenant's `duplicates` and `blocklist` settings: on, off, or with their own similarity
//! cuts. The checks themselves run in `check/faces.rs`.

use livegate_engine::{POSSIBLE_SAME_PERSON_THRESHOLD, SAME_PERSON_THRESHOLD};
use serde::Deserialize;

/// A tenant's setting as written: `true`/`false`, or a map overriding the thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawFaceCheck {
    On(bool),
    Thresholds(RawThresholds),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    /// Cosine similarity for `DUPLICATED_FACE` / `FACE_IN_BLOCKLIST`.
    pub threshold: Option<f64>,
    /// Cosine similarity for the `POSSIBLE_` codes.
    pub possible_threshold: Option<f64>,
}

/// The two similarity cuts of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatchThresholds {
    pub threshold: f64,
    pub possible_threshold: f64,
}

impl Default for MatchThresholds {
    /// The engine's calibrated values (README, "Face matching calibration").
    fn default() -> Self {
        MatchThresholds {
            threshold: round6(SAME_PERSON_THRESHOLD),
            possible_threshold: round6(POSSIBLE_SAME_PERSON_THRESHOLD),
        }
    }
}

/// `f32` constants as the decimals they were written as.
fn round6(v: f32) -> f64 {
    (f64::from(v) * 1e6).round() / 1e6
}

/// A tenant's face checks; both off by default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaceChecks {
    pub duplicates: Option<MatchThresholds>,
    pub blocklist: Option<MatchThresholds>,
}

impl FaceChecks {
    pub fn enabled(&self) -> bool {
        self.duplicates.is_some() || self.blocklist.is_some()
    }

    /// From the tenant's `duplicates` and `blocklist` keys; each problem is `(key, message)`.
    pub fn from_raw(
        duplicates: Option<RawFaceCheck>,
        blocklist: Option<RawFaceCheck>,
    ) -> (FaceChecks, Vec<(&'static str, String)>) {
        let mut problems = Vec::new();
        let mut one = |key: &'static str, raw: Option<RawFaceCheck>| match raw {
            None | Some(RawFaceCheck::On(false)) => None,
            Some(RawFaceCheck::On(true)) => Some(MatchThresholds::default()),
            Some(RawFaceCheck::Thresholds(t)) => {
                let d = MatchThresholds::default();
                let m = MatchThresholds {
                    threshold: t.threshold.unwrap_or(d.threshold),
                    possible_threshold: t.possible_threshold.unwrap_or(d.possible_threshold),
                };
                if !(0.0..=1.0).contains(&m.threshold)
                    || !(0.0..=1.0).contains(&m.possible_threshold)
                {
                    problems.push((key, "thresholds are cosine similarities in 0..=1".into()));
                } else if m.possible_threshold > m.threshold {
                    problems.push((key, "possible_threshold must not exceed threshold".into()));
                }
                Some(m)
            }
        };
        let checks = FaceChecks {
            duplicates: one("duplicates", duplicates),
            blocklist: one("blocklist", blocklist),
        };
        (checks, problems)
    }
}
