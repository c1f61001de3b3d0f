//! Calling the tenant's providers as its strategy says — single, ordered fallback, weighted
//! split or shadow — with bounded, jittered retries inside one overall deadline, recording
//! every attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use tracing::Instrument;

use livegate_providers::{
    CheckRequest, ErrorKind, ImageInput, ProviderAnswer, ProviderError, adapt_image,
};

use crate::config::{Routing, Strategy, Tenant};
use crate::runtime::Runtime;
use crate::runtime::guard::Guarded;
use crate::telemetry;
use crate::telemetry::server_timing;

/// One provider call as it will be stored.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub provider: String,
    pub provider_kind: String,
    pub score: Option<f64>,
    /// The problem code of a failed attempt; `None` for an answer.
    pub error_code: Option<String>,
    pub upstream_status: Option<u16>,
    pub latency_ms: i64,
    pub raw_body: Option<String>,
    pub at: DateTime<Utc>,
    /// 0 for the first call to this provider, 1 for its first retry, ...
    pub retry: u32,
    pub shadow: bool,
}

pub struct Routed {
    pub provider: String,
    pub answer: ProviderAnswer,
}

pub struct RouteFailure {
    pub provider: String,
    pub error: ProviderError,
}

pub struct RouteInput<'a> {
    pub runtime: &'a Runtime,
    pub tenant: &'a Tenant,
    pub image: &'a ImageInput,
    pub threshold: f64,
    /// Decides the weighted split: the same id always lands on the same provider.
    pub routing_key: &'a str,
    pub request_id: &'a str,
    pub traceparent: Option<String>,
    /// A provider the request picked (`provider=`), already checked against the tenant.
    pub provider_override: Option<&'a str>,
}

/// A shadow call running in the background; its attempt is stored once it ends.
pub type ShadowCall = tokio::task::JoinHandle<Vec<AttemptLog>>;

/// The providers to try, in order, and the shadows to call on the side.
pub fn plan<'a>(
    routing: &'a Routing,
    routing_key: &str,
    provider_override: Option<&'a str>,
) -> (Vec<&'a str>, Vec<&'a str>) {
    if let Some(p) = provider_override {
        return (vec![p], vec![]);
    }
    let all: Vec<&str> = routing.providers.iter().map(String::as_str).collect();
    match routing.strategy {
        Strategy::Single => (all.into_iter().take(1).collect(), vec![]),
        Strategy::Fallback => (all, vec![]),
        Strategy::Shadow => (
            all[..1.min(all.len())].to_vec(),
            all.get(1..).map(<[_]>::to_vec).unwrap_or_default(),
        ),
        Strategy::Weighted => {
            let chosen = weighted_pick(&routing.weights, routing_key);
            let mut chain = vec![all[chosen]];
            if routing.fallback {
                chain.extend(
                    all.iter()
                        .enumerate()
                        .filter(|(i, _)| *i != chosen)
                        .map(|(_, p)| *p),
                );
            }
            (chain, vec![])
        }
    }
}

/// Index of the provider whose cumulative weight range holds the key's hash: uniform over the
/// keys, and the same for the same key.
pub fn weighted_pick(weights: &[u32], key: &str) -> usize {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return 0;
    }
    let digest = Sha256::digest(key.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let mut point = u64::from_be_bytes(first) % total;
    for (i, w) in weights.iter().enumerate() {
        let w = u64::from(*w);
        if point < w {
            return i;
        }
        point -= w;
    }
    weights.len().saturating_sub(1)
}

/// Try the planned providers; start the shadows. Stops at the first answer, or at a failure
/// no other provider would fix (a bad image), or when the tenant's deadline runs out.
pub async fn route(
    input: RouteInput<'_>,
    log: &mut Vec<AttemptLog>,
) -> (Result<Routed, RouteFailure>, Vec<ShadowCall>) {
    let started = Instant::now();
    let deadline = started + input.tenant.routing.deadline;
    let (chain, shadows) = plan(
        &input.tenant.routing,
        input.routing_key,
        input.provider_override,
    );
    let shadow_calls = start_shadows(&input, shadows);
    let last = match try_chain(&input, chain, deadline, log).await {
        Ok(routed) => return (Ok(routed), shadow_calls),
        Err(last) => last,
    };
    if Instant::now() >= deadline {
        return (Err(deadline_failure(&input, last)), shadow_calls);
    }
    let failure = last.unwrap_or_else(|| RouteFailure {
        provider: String::new(),
        error: ProviderError::new(
            ErrorKind::Unavailable,
            "no provider is configured for this tenant",
        ),
    });
    (Err(failure), shadow_calls)
}

/// Each shadow runs on its own task with its own deadline: a slow shadow never holds the
/// answer or the primary's budget.
fn start_shadows(input: &RouteInput<'_>, shadows: Vec<&str>) -> Vec<ShadowCall> {
    shadows
        .into_iter()
        .filter_map(|name| input.runtime.provider(name).cloned())
        .map(|g| {
            let image = input.image.clone();
            let req_threshold = input.threshold;
            let request_id = input.request_id.to_owned();
            let traceparent = input.traceparent.clone();
            let shadow_deadline = Instant::now() + shadow_budget(&g);
            tokio::spawn(
                async move {
                    let mut log = Vec::new();
                    let _ = attempt(
                        &g,
                        &image,
                        req_threshold,
                        &request_id,
                        traceparent,
                        shadow_deadline,
                        0,
                        true,
                        &mut log,
                    )
                    .await;
                    log
                }
                .in_current_span(),
            )
        })
        .collect()
}

/// The chain in order, each provider with its retries; the last failure when none answered.
async fn try_chain(
    input: &RouteInput<'_>,
    chain: Vec<&str>,
    deadline: Instant,
    log: &mut Vec<AttemptLog>,
) -> Result<Routed, Option<RouteFailure>> {
    let mut last: Option<RouteFailure> = None;
    'providers: for name in chain {
        let Some(g) = input.runtime.provider(name) else {
            last = Some(RouteFailure {
                provider: name.to_owned(),
                error: ProviderError::new(ErrorKind::Unavailable, "provider is not configured"),
            });
            continue;
        };
        for retry in 0..=g.retries {
            if Instant::now() >= deadline {
                break 'providers;
            }
            let result = attempt(
                g,
                input.image,
                input.threshold,
                input.request_id,
                input.traceparent.clone(),
                deadline,
                retry,
                false,
                log,
            )
            .await;
            let error = match result {
                Ok(answer) => {
                    return Ok(Routed {
                        provider: name.to_owned(),
                        answer,
                    });
                }
                Err(error) => error,
            };
            let kind = error.kind;
            let retry_after = error.retry_after;
            last = Some(RouteFailure {
                provider: name.to_owned(),
                error,
            });
            if !kind.retryable() {
                break 'providers;
            }
            if !kind.transient() || retry == g.retries {
                continue 'providers;
            }
            let wait = backoff(retry, retry_after);
            // An absurd `Retry-After` must not overflow the clock: it is just too long.
            if Instant::now()
                .checked_add(wait)
                .is_none_or(|t| t >= deadline)
            {
                // No time to wait for this provider (e.g. a long Retry-After): the
                // next one in the chain may still answer within the deadline.
                continue 'providers;
            }
            tokio::time::sleep(wait).await;
            server_timing::add_provider_time(wait);
        }
    }
    Err(last)
}

/// The tenant's deadline ran out: a timeout naming the last provider tried and its failure.
fn deadline_failure(input: &RouteInput<'_>, last: Option<RouteFailure>) -> RouteFailure {
    let (provider, cause) = last
        .map(|f| (f.provider, f.error.message))
        .unwrap_or_default();
    RouteFailure {
        provider,
        error: ProviderError::new(
            ErrorKind::Timeout,
            format!(
                "the request deadline of {} ms ran out (last: {cause})",
                input.tenant.routing.deadline.as_millis()
            ),
        ),
    }
}

fn shadow_budget(g: &Arc<Guarded>) -> Duration {
    // Shadows get the provider's own timeout plus the wait for its caps.
    g.timeout() + Duration::from_secs(1)
}

/// Exponential backoff with full jitter (100 ms base, 2 s cap); an upstream `Retry-After` is a
/// floor.
fn backoff(retry: u32, retry_after: Option<Duration>) -> Duration {
    let cap =
        Duration::from_millis(100u64.saturating_mul(1 << retry.min(5))).min(Duration::from_secs(2));
    let jittered = Duration::from_millis(rand::rng().random_range(0..=cap.as_millis() as u64));
    jittered.max(retry_after.unwrap_or_default())
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    g: &Arc<Guarded>,
    image: &ImageInput,
    threshold: f64,
    request_id: &str,
    traceparent: Option<String>,
    deadline: Instant,
    retry: u32,
    shadow: bool,
    log: &mut Vec<AttemptLog>,
) -> Result<ProviderAnswer, ProviderError> {
    let started = Instant::now();
    let at = Utc::now();
    let span = telemetry::attempt_span(g.provider.name(), g.provider.kind(), retry, shadow);
    let traceparent = telemetry::outbound_traceparent(&span, traceparent);
    let request = |sent| CheckRequest {
        image: sent,
        threshold,
        request_id: request_id.to_owned(),
        traceparent,
    };
    let result = call_adapted(g, image, deadline, request)
        .instrument(span.clone())
        .await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let entry = attempt_log(g, &result, at, latency_ms, retry, shadow);
    telemetry::record_attempt(&span, entry.upstream_status, entry.error_code.as_deref());
    log.push(entry);
    result
}

/// One call with the image adapted to the provider; a face box comes back in the caller's
/// pixels.
async fn call_adapted(
    g: &Arc<Guarded>,
    image: &ImageInput,
    deadline: Instant,
    request: impl FnOnce(ImageInput) -> CheckRequest,
) -> Result<ProviderAnswer, ProviderError> {
    let sent = adapted(g, image).await?;
    let (sent_w, sent_h) = (sent.width, sent.height);
    let req = request(sent);
    let call_started = Instant::now();
    let called = g.call(&req, deadline).await;
    server_timing::add_provider_time(call_started.elapsed());
    let mut answer = called?;
    // The provider saw a downscaled copy: report the box in the caller's pixels.
    if (sent_w, sent_h) != (image.width, image.height)
        && let Some(face) = answer.face.as_mut()
    {
        let sx = f64::from(image.width) / f64::from(sent_w.max(1));
        let sy = f64::from(image.height) / f64::from(sent_h.max(1));
        let [x1, y1, x2, y2] = face.bbox;
        face.bbox = [x1 * sx, y1 * sy, x2 * sx, y2 * sy];
    }
    Ok(answer)
}

/// The attempt row of one call, logged when it failed.
fn attempt_log(
    g: &Guarded,
    result: &Result<ProviderAnswer, ProviderError>,
    at: chrono::DateTime<Utc>,
    latency_ms: i64,
    retry: u32,
    shadow: bool,
) -> AttemptLog {
    let provider = g.provider.name().to_owned();
    let provider_kind = g.provider.kind().to_owned();
    match result {
        Ok(a) => AttemptLog {
            provider,
            provider_kind,
            score: a.score,
            error_code: None,
            upstream_status: a.raw.status,
            latency_ms,
            raw_body: a.raw.body.clone(),
            at,
            retry,
            shadow,
        },
        Err(e) => {
            tracing::warn!(provider = %provider, code = e.code(), status = ?e.status, retry, shadow, latency_ms, "provider attempt failed: {}", e.message);
            AttemptLog {
                provider,
                provider_kind,
                score: None,
                error_code: Some(e.code().to_owned()),
                upstream_status: e.status,
                latency_ms,
                raw_body: e.raw_body.clone(),
                at,
                retry,
                shadow,
            }
        }
    }
}

/// The image as this provider accepts it (transcoded or downscaled when needed).
async fn adapted(g: &Arc<Guarded>, image: &ImageInput) -> Result<ImageInput, ProviderError> {
    let caps = g.provider.capabilities();
    // The usual case, an image the provider takes as sent, is a clone of a few handles: sending
    // it to the blocking pool would cost two thread hand-offs per attempt for nothing.
    if caps.takes_as_is(image.format, image.width, image.height, image.bytes.len()) {
        return Ok(image.clone());
    }
    let caps = caps.clone();
    let original = image.clone();
    // Re-encoding is CPU work: keep it off the async workers.
    tokio::task::spawn_blocking(move || adapt_image(&original, &caps))
        .await
        .map_err(|e| {
            ProviderError::new(
                ErrorKind::Unavailable,
                format!("image adaptation failed: {e}"),
            )
        })?
        .map_err(|e| ProviderError::new(ErrorKind::Unsupported, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_pick_is_stable_and_proportional() {
        let w = [90, 10];
        let mut counts = [0usize; 2];
        for i in 0..10_000 {
            counts[weighted_pick(&w, &format!("req-{i}"))] += 1;
        }
        assert!((8_700..=9_300).contains(&counts[0]), "{counts:?}");
        assert_eq!(weighted_pick(&w, "abc"), weighted_pick(&w, "abc"));
        assert_eq!(weighted_pick(&[0, 5], "x"), 1);
    }
}
