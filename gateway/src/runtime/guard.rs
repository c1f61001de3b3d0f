//! Per-provider protection: a circuit breaker, an outbound concurrency cap, an outbound rate
//! limit and the call timeout — so a failing vendor is skipped fast and a healthy one is never
//! pushed past its documented limits.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use livegate_providers::{CheckRequest, ErrorKind, Provider, ProviderAnswer, ProviderError};
use tokio::sync::Semaphore;

use crate::config::Resilience;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The `livegate_circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is in flight; everyone else is turned away until it reports.
    HalfOpen,
}

/// Opens after `threshold` consecutive failures, lets one probe through after `cooldown`,
/// closes on the probe's success and re-opens on its failure.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
}

/// Permission to call. Dropped without a verdict (the call was cancelled) it is neutral: it
/// frees a half-open probe, so the probe can never wedge the breaker, and says nothing about
/// the provider, so cancelling callers cannot open its circuit for everyone.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    done: bool,
}

impl Ticket<'_> {
    pub fn success(mut self) {
        self.done = true;
        self.breaker.record(true);
    }

    pub fn failure(mut self) {
        self.done = true;
        self.breaker.record(false);
    }

    /// The outcome says nothing about the provider's health (e.g. a bad image).
    pub fn neutral(mut self) {
        self.done = true;
        self.breaker.release_probe();
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.release_probe();
        }
    }
}

impl Breaker {
    pub fn new(name: &str, threshold: u32, cooldown: Duration) -> Self {
        Self {
            name: name.to_owned(),
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> BreakerState {
        match &*self.lock() {
            State::Closed { .. } => BreakerState::Closed,
            State::Open { until } if Instant::now() >= *until => BreakerState::HalfOpen,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen => BreakerState::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves a consistent enum: keep using it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn admit(&self) -> Option<Ticket<'_>> {
        let mut s = self.lock();
        match &*s {
            State::Closed { .. } => {}
            State::Open { until } if Instant::now() >= *until => {
                tracing::info!(provider = %self.name, "circuit half-open: sending one probe");
                *s = State::HalfOpen;
            }
            State::Open { .. } | State::HalfOpen => return None,
        }
        Some(Ticket {
            breaker: self,
            done: false,
        })
    }

    fn record(&self, ok: bool) {
        let mut s = self.lock();
        let next = match (&*s, ok) {
            (State::HalfOpen, true) => {
                tracing::info!(provider = %self.name, "circuit closed: probe succeeded");
                State::Closed { failures: 0 }
            }
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < self.threshold => State::Closed {
                failures: failures + 1,
            },
            (State::Open { until }, false) => State::Open { until: *until },
            (prev, false) => {
                tracing::warn!(
                    provider = %self.name,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    after = if matches!(prev, State::HalfOpen) { "failed probe" } else { "consecutive failures" },
                    "circuit opened"
                );
                State::Open {
                    until: Instant::now() + self.cooldown,
                }
            }
        };
        *s = next;
    }

    fn release_probe(&self) {
        let mut s = self.lock();
        if matches!(*s, State::HalfOpen) {
            // No verdict on health: let the next request probe again.
            *s = State::Open {
                until: Instant::now(),
            };
        }
    }
}

/// A provider behind its breaker, caps and timeout.
#[derive(Debug)]
pub struct Guarded {
    pub provider: Arc<dyn Provider>,
    pub breaker: Breaker,
    pub retries: u32,
    timeout: Duration,
    concurrency: Option<Arc<Semaphore>>,
    rate: Option<DefaultDirectRateLimiter>,
}

impl Guarded {
    pub fn new(provider: Arc<dyn Provider>, timeout: Duration, r: &Resilience) -> Self {
        let rate = r.max_rps.and_then(|rps| {
            // Sub-1 rates become "one every 1/rps seconds"; bursts stay at one request.
            let quota = if rps >= 1.0 {
                Quota::per_second(NonZeroU32::new(rps.round() as u32)?)
            } else {
                Quota::with_period(Duration::try_from_secs_f64(1.0 / rps).ok()?)?
            };
            Some(RateLimiter::direct(quota.allow_burst(NonZeroU32::MIN)))
        });
        Self {
            breaker: Breaker::new(provider.name(), r.breaker_failures, r.breaker_cooldown),
            provider,
            retries: r.retries,
            timeout,
            concurrency: r.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
            rate,
        }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// One call within `deadline`: waits for a concurrency slot and the rate limit, then calls
    /// with the provider's timeout (or what is left of the deadline, if less).
    pub async fn call(
        &self,
        req: &CheckRequest,
        deadline: Instant,
    ) -> Result<ProviderAnswer, ProviderError> {
        let Some(ticket) = self.breaker.admit() else {
            return Err(ProviderError::new(
                ErrorKind::CircuitOpen,
                "the circuit is open after repeated failures",
            ));
        };
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let waited = async {
            let permit = match &self.concurrency {
                Some(s) => Some(s.clone().acquire_owned().await.ok()),
                None => None,
            };
            if let Some(r) = &self.rate {
                r.until_ready().await;
            }
            permit
        };
        let _permit = match tokio::time::timeout(remaining(), waited).await {
            Ok(p) => p,
            Err(_) => {
                ticket.neutral();
                return Err(ProviderError::new(
                    ErrorKind::Overloaded,
                    "no outbound slot became free before the request deadline (max_concurrency / max_rps)",
                ));
            }
        };
        let budget = self.timeout.min(remaining());
        let (result, cut_short) = match tokio::time::timeout(budget, self.provider.check(req)).await
        {
            Ok(r) => (r, false),
            Err(_) => (
                Err(ProviderError::new(
                    ErrorKind::Timeout,
                    format!("no answer within {} ms", budget.as_millis()),
                )),
                // The request's deadline, not the provider's timeout, ended the wait.
                budget < self.timeout,
            ),
        };
        match &result {
            Ok(_) => ticket.success(),
            Err(e) if e.kind.counts_against_provider() && !cut_short => ticket.failure(),
            Err(_) => ticket.neutral(),
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_probes_and_closes() {
        let b = Breaker::new("p", 2, Duration::from_millis(30));
        b.admit().expect("closed").failure();
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().expect("closed").failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.admit().is_none());
        std::thread::sleep(Duration::from_millis(40));
        let probe = b.admit().expect("half-open probe");
        assert!(b.admit().is_none(), "one probe at a time");
        probe.failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        b.admit().expect("probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    /// A provider that never answers in time.
    #[derive(Debug)]
    struct Silent(livegate_providers::Profile);

    #[async_trait::async_trait]
    impl Provider for Silent {
        fn profile(&self) -> &livegate_providers::Profile {
            &self.0
        }

        async fn check(&self, _: &CheckRequest) -> Result<ProviderAnswer, ProviderError> {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Err(ProviderError::new(ErrorKind::Unavailable, "unreachable"))
        }
    }

    fn silent() -> Silent {
        Silent(livegate_providers::Profile {
            name: "silent".into(),
            kind: "didit",
            capabilities: livegate_providers::Capabilities {
                formats: vec![livegate_providers::ImageFormat::Jpeg],
                min_side: 1,
                max_side: 10,
                max_bytes: 10,
            },
        })
    }

    fn request() -> CheckRequest {
        let decoded = image::DynamicImage::new_rgb8(1, 1);
        CheckRequest {
            image: livegate_providers::ImageInput {
                bytes: bytes::Bytes::from_static(b"x"),
                format: livegate_providers::ImageFormat::Jpeg,
                width: 1,
                height: 1,
                decoded: Some(Arc::new(decoded)),
            },
            threshold: 0.5,
            request_id: "r".into(),
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn only_the_providers_own_timeout_counts_against_it() {
        let silent = silent();
        let resilience = Resilience {
            breaker_failures: 1,
            ..Resilience::default()
        };
        let g = Guarded::new(Arc::new(silent), Duration::from_millis(300), &resilience);
        // The request's deadline ends the wait first: ours, not the provider's failure.
        let soon = Instant::now() + Duration::from_millis(30);
        let e = g.call(&request(), soon).await.expect_err("cut short");
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(g.breaker.state(), BreakerState::Closed);
        // The provider's own timeout is its failure.
        let later = Instant::now() + Duration::from_secs(10);
        let e = g.call(&request(), later).await.expect_err("timed out");
        assert_eq!(e.kind, ErrorKind::Timeout);
        assert_eq!(g.breaker.state(), BreakerState::Open);
    }

    #[test]
    fn a_rate_too_slow_for_the_clock_does_not_panic() {
        let r = Resilience {
            max_rps: Some(1e-300),
            ..Resilience::default()
        };
        let g = Guarded::new(Arc::new(silent()), Duration::from_millis(10), &r);
        assert!(g.rate.is_none());
    }

    #[test]
    fn a_dropped_ticket_is_neutral_and_frees_the_probe() {
        let b = Breaker::new("p", 1, Duration::from_millis(30));
        drop(b.admit().expect("closed"));
        assert_eq!(b.state(), BreakerState::Closed);
        b.admit().expect("closed").failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(40));
        drop(b.admit().expect("half-open probe"));
        // The cancelled probe leaves the circuit as it was and lets the next one through.
        b.admit().expect("another probe").success();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
