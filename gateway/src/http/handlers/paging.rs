//! Keyset pages, the same on every list endpoint: `limit` (1-200, default 50), `cursor` (the
//! previous page's `next_cursor`, an id) and the next cursor of a page.

use uuid::Uuid;

use crate::error::{ApiError, ErrorCode};

/// `limit`, read as text so a bad value answers `invalid_limit`, not a generic rejection.
pub fn limit(raw: Option<&str>) -> Result<u32, ApiError> {
    match raw {
        None | Some("") => Ok(50),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=200).contains(n))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidLimit,
                    "limit must be an integer from 1 to 200",
                )
            }),
    }
}

/// `cursor`: the id the page starts after.
pub fn cursor(raw: Option<&str>) -> Result<Option<Uuid>, ApiError> {
    match raw {
        None | Some("") => Ok(None),
        Some(c) => Uuid::parse_str(c)
            .map(Some)
            .map_err(|_| ApiError::new(ErrorCode::InvalidCursor, "unknown cursor")),
    }
}

/// The next page's cursor: the last id of a full page; none after a short one.
pub fn next_cursor(len: usize, limit: u32, last: Option<Uuid>) -> Option<String> {
    (u32::try_from(len).ok() == Some(limit))
        .then(|| last.map(|id| id.to_string()))
        .flatten()
}
