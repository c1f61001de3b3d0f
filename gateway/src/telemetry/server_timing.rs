//! The provider time of the current request, summed across its calls and backoffs, for
//! `Server-Timing` (`http/server_timing.rs`) and the overhead histogram.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// Run `fut` (a whole request) with a provider-time account; returns its output and the time
/// its provider calls took.
pub async fn with_provider_time<F: Future>(fut: F) -> (F::Output, Duration) {
    let provider = Arc::new(AtomicU64::new(0));
    let out = PROVIDER_NANOS.scope(provider.clone(), fut).await;
    (out, Duration::from_nanos(provider.load(Ordering::Relaxed)))
}

/// `fut`, counting into the current request's account wherever it runs (a spawned task).
pub fn carried<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let account = PROVIDER_NANOS.try_with(Arc::clone).ok();
    async move {
        match account {
            Some(a) => PROVIDER_NANOS.scope(a, fut).await,
            None => fut.await,
        }
    }
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
