//! `Server-Timing: provider;dur=…, overhead;dur=…, total;dur=…` on every answer, so any client
//! sees livegate's own cost apart from the providers'; the same split feeds the overhead
//! histogram, and problem answers feed the errors counter.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::app::AppState;
use crate::problem::ProblemCode;

pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

tokio::task_local! {
    /// Nanoseconds the current request spent waiting on providers.
    static PROVIDER_NANOS: Arc<AtomicU64>;
}

/// Count `d` as time spent waiting on a provider (a call, or the backoff its failure imposed).
/// Outside a request (a shadow call running after the answer) it counts nowhere.
pub fn add_provider_time(d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let _ = PROVIDER_NANOS.try_with(|n| n.fetch_add(nanos, Ordering::Relaxed));
}

/// The header value, in milliseconds with microsecond precision.
pub fn header_value(provider: Duration, total: Duration) -> String {
    let overhead = total.saturating_sub(provider);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    format!(
        "provider;dur={:.3}, overhead;dur={:.3}, total;dur={:.3}",
        ms(provider),
        ms(overhead),
        ms(total)
    )
}

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let is_verification = req.method() == Method::POST && req.uri().path() == "/v1/liveness";
    let provider = Arc::new(AtomicU64::new(0));
    let mut resp = PROVIDER_NANOS.scope(provider.clone(), next.run(req)).await;
    let total = started.elapsed();
    let provider = Duration::from_nanos(provider.load(Ordering::Relaxed)).min(total);
    if is_verification {
        state
            .metrics
            .observe_overhead(total.saturating_sub(provider).as_secs_f64());
    }
    if let Some(code) = resp.extensions().get::<ProblemCode>() {
        state.metrics.error(&code.0);
    }
    if let Ok(v) = HeaderValue::from_str(&header_value(provider, total)) {
        resp.headers_mut().insert(SERVER_TIMING.clone(), v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overhead_is_total_minus_provider_never_negative() {
        assert_eq!(
            header_value(Duration::from_micros(1500), Duration::from_micros(2250)),
            "provider;dur=1.500, overhead;dur=0.750, total;dur=2.250"
        );
        assert_eq!(
            header_value(Duration::from_millis(3), Duration::from_millis(2)),
            "provider;dur=3.000, overhead;dur=0.000, total;dur=2.000"
        );
    }
}
