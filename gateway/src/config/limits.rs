//! `limits:` (what one request may cost the process) and `server:` (what one connection may
//! hold). Every value has a sane default and bounds: a value that would overflow a clock or
//! a size computation is a problem for `check-config`, never a panic at run time.

use std::time::Duration;

use serde::Deserialize;

use super::problems::{Problem, problem};

/// Default image cap: 5 MiB, as the Didit document (the strictest upstream) allows.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Decompression-bomb guard: more pixels than any selfie camera produces.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;
/// Largest image, decoded (width × height × channels × bytes per channel), accepted.
pub const DEFAULT_MAX_DECODED_BYTES: u64 = 64 * 1024 * 1024;
/// Verifications in flight per core, by default: they mostly wait on a vendor.
pub const IN_FLIGHT_PER_CORE: usize = 512;

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_image_bytes: usize,
    pub max_pixels: u64,
    /// Largest decoded image accepted, checked from the header before decoding.
    pub max_decoded_bytes: u64,
    /// Decoded bytes all requests together may hold at once; past it a request waits briefly,
    /// then gets 503 `overloaded`.
    pub max_decoded_in_flight_bytes: u64,
    /// Verifications in flight in this process; past it, 503 `overloaded` at once.
    pub max_in_flight: usize,
    /// Verifications in flight for one tenant, so one tenant's burst leaves room for others.
    pub max_in_flight_per_tenant: usize,
    /// How long a credit reservation lives without being settled: past it, the reservation
    /// belonged to a crashed instance and any instance releases it.
    pub reservation_ttl: Duration,
    /// How long a request waits for another one holding the same `Idempotency-Key` before 409.
    pub idempotency_wait: Duration,
    /// How long a results commit is retried while the database is away before the result
    /// goes to the local spool.
    pub commit_grace: Duration,
}

/// The default process-wide in-flight cap: [`IN_FLIGHT_PER_CORE`] per core.
pub fn default_max_in_flight() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .saturating_mul(IN_FLIGHT_PER_CORE)
}

/// One tenant's default share of the in-flight cap: three quarters, so a burst of one leaves
/// room for the others.
pub fn per_tenant_share(max_in_flight: usize) -> usize {
    max_in_flight.saturating_mul(3).div_ceil(4).max(1)
}

impl Default for Limits {
    fn default() -> Self {
        let max_in_flight = default_max_in_flight();
        Self {
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
            max_decoded_bytes: DEFAULT_MAX_DECODED_BYTES,
            max_decoded_in_flight_bytes: 8 * DEFAULT_MAX_DECODED_BYTES,
            max_in_flight,
            max_in_flight_per_tenant: per_tenant_share(max_in_flight),
            reservation_ttl: Duration::from_secs(120),
            idempotency_wait: Duration::from_secs(35),
            commit_grace: Duration::from_secs(10),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    max_image_bytes: Option<u64>,
    max_pixels: Option<u64>,
    max_decoded_bytes: Option<u64>,
    max_decoded_in_flight_bytes: Option<u64>,
    max_in_flight: Option<u64>,
    max_in_flight_per_tenant: Option<u64>,
    reservation_ttl_ms: Option<u64>,
    idempotency_wait_ms: Option<u64>,
    commit_grace_ms: Option<u64>,
}

const DAY_MS: u64 = 24 * 3600 * 1000;
const GIB: u64 = 1024 * 1024 * 1024;

/// `value` within `min..=max`, or a problem naming the range.
fn within(
    value: Option<u64>,
    path: &str,
    min: u64,
    max: u64,
    problems: &mut Vec<Problem>,
) -> Option<u64> {
    let v = value?;
    if (min..=max).contains(&v) {
        Some(v)
    } else {
        problems.push(problem(path, format!("must be from {min} to {max}")));
        None
    }
}

fn millis(
    value: Option<u64>,
    path: &str,
    min: u64,
    max: u64,
    problems: &mut Vec<Problem>,
) -> Option<Duration> {
    within(value, path, min, max, problems).map(Duration::from_millis)
}

fn count(value: Option<u64>, path: &str, max: u64, problems: &mut Vec<Problem>) -> Option<usize> {
    within(value, path, 1, max, problems).and_then(|v| usize::try_from(v).ok())
}

pub(super) fn limits(raw: RawLimits, problems: &mut Vec<Problem>) -> Limits {
    let mut l = Limits::default();
    let p = problems;
    if let Some(b) = count(raw.max_image_bytes, "limits.max_image_bytes", GIB, p) {
        l.max_image_bytes = b;
    }
    if let Some(n) = within(raw.max_pixels, "limits.max_pixels", 1, 1_000_000_000, p) {
        l.max_pixels = n;
    }
    if let Some(b) = within(
        raw.max_decoded_bytes,
        "limits.max_decoded_bytes",
        1,
        16 * GIB,
        p,
    ) {
        l.max_decoded_bytes = b;
    }
    let in_flight_bytes = within(
        raw.max_decoded_in_flight_bytes,
        "limits.max_decoded_in_flight_bytes",
        1,
        1024 * GIB,
        p,
    );
    l.max_decoded_in_flight_bytes =
        in_flight_bytes.unwrap_or(l.max_decoded_bytes.saturating_mul(8));
    if l.max_decoded_in_flight_bytes < l.max_decoded_bytes {
        p.push(problem(
            "limits.max_decoded_in_flight_bytes",
            "must be at least limits.max_decoded_bytes, or no image of that size could ever run",
        ));
    }
    if let Some(n) = count(raw.max_in_flight, "limits.max_in_flight", 1_000_000, p) {
        l.max_in_flight = n;
        l.max_in_flight_per_tenant = per_tenant_share(n);
    }
    if let Some(n) = count(
        raw.max_in_flight_per_tenant,
        "limits.max_in_flight_per_tenant",
        1_000_000,
        p,
    ) {
        l.max_in_flight_per_tenant = n;
    }
    let ttl = millis(
        raw.reservation_ttl_ms,
        "limits.reservation_ttl_ms",
        1_000,
        DAY_MS,
        p,
    );
    if let Some(d) = ttl {
        l.reservation_ttl = d;
    }
    let wait = millis(
        raw.idempotency_wait_ms,
        "limits.idempotency_wait_ms",
        0,
        3_600_000,
        p,
    );
    if let Some(d) = wait {
        l.idempotency_wait = d;
    }
    if let Some(d) = millis(
        raw.commit_grace_ms,
        "limits.commit_grace_ms",
        0,
        3_600_000,
        p,
    ) {
        l.commit_grace = d;
    }
    l
}

/// The listener's limits (`server:` in the config). Read at start: a reload does not change
/// them. `http::server` enforces them.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLimits {
    pub header_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub request_timeout: Duration,
    pub keep_alive_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_connections: usize,
}

/// hyper refuses a read buffer smaller than this.
pub const MIN_HEADER_BYTES: usize = 8192;

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(60),
            keep_alive_timeout: Duration::from_secs(75),
            max_header_bytes: 32 * 1024,
            max_connections: 10_000,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    header_timeout_ms: Option<u64>,
    body_idle_timeout_ms: Option<u64>,
    request_timeout_ms: Option<u64>,
    keep_alive_timeout_ms: Option<u64>,
    max_header_bytes: Option<u64>,
    max_connections: Option<u64>,
}

pub(super) fn server(raw: RawServer, problems: &mut Vec<Problem>) -> ServerLimits {
    let mut s = ServerLimits::default();
    let p = problems;
    let hour = 3_600_000;
    if let Some(d) = millis(
        raw.header_timeout_ms,
        "server.header_timeout_ms",
        1,
        hour,
        p,
    ) {
        s.header_timeout = d;
    }
    let body_idle = millis(
        raw.body_idle_timeout_ms,
        "server.body_idle_timeout_ms",
        1,
        hour,
        p,
    );
    if let Some(d) = body_idle {
        s.body_idle_timeout = d;
    }
    if let Some(d) = millis(
        raw.request_timeout_ms,
        "server.request_timeout_ms",
        1,
        hour,
        p,
    ) {
        s.request_timeout = d;
    }
    let keep_alive = millis(
        raw.keep_alive_timeout_ms,
        "server.keep_alive_timeout_ms",
        1,
        hour,
        p,
    );
    if let Some(d) = keep_alive {
        s.keep_alive_timeout = d;
    }
    let header_bytes = within(
        raw.max_header_bytes,
        "server.max_header_bytes",
        MIN_HEADER_BYTES as u64,
        1024 * 1024,
        p,
    );
    if let Some(b) = header_bytes.and_then(|b| usize::try_from(b).ok()) {
        s.max_header_bytes = b;
    }
    if let Some(n) = count(raw.max_connections, "server.max_connections", 1_000_000, p) {
        s.max_connections = n;
    }
    s
}
