//! Operators' reports, computed from what the store keeps: `agreement` answers "how do two
//! providers judge my own traffic?" from shadow calls (`livegate report agreement`,
//! `GET /admin/v1/reports/agreement`).

pub mod agreement;

use chrono::{DateTime, Utc};

/// `7d` back from `now`, or an RFC 3339 time.
pub fn since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    let p = crate::config::retention::Period::parse(text)
        .map_err(|e| format!("since: {e}, or an RFC 3339 time"))?;
    chrono::Duration::from_std(p.0)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("since: {text:?} is too far back"))
}
