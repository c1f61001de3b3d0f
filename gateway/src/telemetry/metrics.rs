//! The Prometheus registry behind `/metrics`: one per `AppState`, so two gateways in one process
//! (the integration tests) never share counts.
//!
//! Names as scraped (counters get `_total` when encoded):
//! - `livegate_requests_total{tenant,decision,provider}`: verifications; `decision` is
//!   `approved`, `declined`, `review` or `error`, `provider` is `none` when none answered.
//! - `livegate_provider_latency_seconds{provider,outcome}`: each provider call (`ok`/`error`).
//! - `livegate_overhead_seconds`: a verification's total time minus its time waiting on providers.
//! - `livegate_errors_total{code}`: problem answers by their `code`.
//! - `livegate_circuit_breaker_state{provider}`: 0 closed, 1 half-open, 2 open (read at scrape).
//! - `livegate_rate_limited_total{tenant}`: requests refused by the tenant rate limit.
//! - `livegate_shed_total{scope,tenant}`: verifications refused with 503 `overloaded`:
//!   `scope` is `process` (the instance's in-flight cap), `tenant` (the tenant's share of it)
//!   or `decode` (the budget of decoded image bytes).
//! - `livegate_redis_fallback`: 1 while rate limits run on the local fallback instead of Redis.
//! - `livegate_credit_balance{tenant}`: the tenant's credit balance.
//! - `livegate_store_batch_size`, `livegate_store_write_seconds`: verifications per group
//!   commit of the results writer, and how long that transaction took.
//! - `livegate_runtime_workers`: the threads running async work (`--worker-threads`), read at
//!   scrape.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    tenant: String,
    decision: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    provider: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabels {
    scope: &'static str,
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReviewLabels {
    tenant: String,
    decision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScopeLabels {
    scope: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: String,
}

/// 1 ms to ~16 s.
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    provider_latency: Family<AttemptLabels, Histogram>,
    overhead: Histogram,
    errors: Family<CodeLabels, Counter>,
    breaker: Family<ProviderLabels, Gauge>,
    rate_limited: Family<TenantLabels, Counter>,
    shed: Family<ShedLabels, Counter>,
    redis_fallback: Gauge,
    credit_balance: Family<TenantLabels, Gauge>,
    store_batch_size: Histogram,
    store_write: Histogram,
    purged: Family<KindLabels, Counter>,
    erasures: Family<ScopeLabels, Counter>,
    reviews: Family<ReviewLabels, Counter>,
    webhooks: Family<OutcomeLabels, Counter>,
    workers: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "livegate_requests",
            "Verifications by tenant, decision and provider",
            requests.clone(),
        );
        let provider_latency =
            Family::<AttemptLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> _);
        registry.register(
            "livegate_provider_latency_seconds",
            "Latency of each provider call",
            provider_latency.clone(),
        );
        let overhead = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register(
            "livegate_overhead_seconds",
            "livegate's own time per verification: total minus time waiting on providers",
            overhead.clone(),
        );
        let errors = Family::<CodeLabels, Counter>::default();
        registry.register("livegate_errors", "Problem answers by code", errors.clone());
        let breaker = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "livegate_circuit_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
            breaker.clone(),
        );
        let rate_limited = Family::<TenantLabels, Counter>::default();
        registry.register(
            "livegate_rate_limited",
            "Requests refused by the tenant's rate limit",
            rate_limited.clone(),
        );
        let shed = Family::<ShedLabels, Counter>::default();
        registry.register(
            "livegate_shed",
            "Verifications refused with 503 overloaded, by the cap that refused them",
            shed.clone(),
        );
        let redis_fallback = Gauge::default();
        registry.register(
            "livegate_redis_fallback",
            "1 while rate limiting runs on the in-process fallback because Redis is unreachable",
            redis_fallback.clone(),
        );
        let credit_balance = Family::<TenantLabels, Gauge>::default();
        registry.register(
            "livegate_credit_balance",
            "Credit balance per tenant",
            credit_balance.clone(),
        );
        let store_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "livegate_store_batch_size",
            "Verifications written per store write",
            store_batch_size.clone(),
        );
        let store_write = latency_buckets();
        registry.register(
            "livegate_store_write_seconds",
            "Latency of one store write",
            store_write.clone(),
        );
        let purged = Family::<KindLabels, Counter>::default();
        registry.register(
            "livegate_purged",
            "Rows deleted or emptied by the retention purge, by kind",
            purged.clone(),
        );
        let erasures = Family::<ScopeLabels, Counter>::default();
        registry.register(
            "livegate_erasures",
            "Erasure requests carried out, by scope (verification or subject)",
            erasures.clone(),
        );
        let reviews = Family::<ReviewLabels, Counter>::default();
        registry.register(
            "livegate_reviews_resolved",
            "Review decisions resolved, by tenant and final decision",
            reviews.clone(),
        );
        let webhooks = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "livegate_webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            webhooks.clone(),
        );
        let workers = Gauge::default();
        registry.register(
            "livegate_runtime_workers",
            "Threads running async work (--worker-threads)",
            workers.clone(),
        );
        Self {
            registry,
            requests,
            provider_latency,
            overhead,
            errors,
            breaker,
            rate_limited,
            shed,
            redis_fallback,
            credit_balance,
            store_batch_size,
            store_write,
            purged,
            erasures,
            reviews,
            webhooks,
            workers,
        }
    }

    /// One webhook delivery attempt ended `outcome`.
    pub fn webhook(&self, outcome: &'static str) {
        self.webhooks
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A `review` decision resolved to `decision`.
    pub fn review_resolved(&self, tenant: &str, decision: &str) {
        self.reviews
            .get_or_create(&ReviewLabels {
                tenant: tenant.to_owned(),
                decision: decision.to_owned(),
            })
            .inc();
    }

    /// `n` rows of `kind` purged (`runtime/purge.rs`).
    pub fn purged(&self, kind: &'static str, n: u64) {
        self.purged.get_or_create(&KindLabels { kind }).inc_by(n);
    }

    /// One erasure carried out.
    pub fn erasure(&self, scope: &'static str) {
        self.erasures.get_or_create(&ScopeLabels { scope }).inc();
    }

    /// One finished verification (stored or not) and the provider calls it made.
    /// `decision` is `error` for a stored failure; `provider` `none` when none answered.
    pub fn verification(&self, tenant: &str, decision: &str, provider: &str) {
        self.requests
            .get_or_create(&RequestLabels {
                tenant: tenant.to_owned(),
                decision: decision.to_owned(),
                provider: provider.to_owned(),
            })
            .inc();
    }

    /// One provider call (shadow calls end after their verification).
    pub fn attempt(&self, provider: &str, ok: bool, latency_ms: i64) {
        let outcome = if ok { "ok" } else { "error" };
        self.provider_latency
            .get_or_create(&AttemptLabels {
                provider: provider.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(latency_ms.max(0) as f64 / 1000.0);
    }

    pub fn observe_overhead(&self, secs: f64) {
        self.overhead.observe(secs);
    }

    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabels {
                code: code.to_owned(),
            })
            .inc();
    }

    /// A request refused by the tenant's rate limit.
    pub fn rate_limited(&self, tenant: &str) {
        self.rate_limited
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .inc();
    }

    /// A verification refused by a load-shedding cap (`process`, `tenant` or `decode`).
    pub fn shed(&self, scope: &'static str, tenant: &str) {
        self.shed
            .get_or_create(&ShedLabels {
                scope,
                tenant: tenant.to_owned(),
            })
            .inc();
    }

    /// Whether rate limits currently run on the in-process fallback (Redis unreachable).
    pub fn set_redis_fallback(&self, on: bool) {
        self.redis_fallback.set(i64::from(on));
    }

    pub fn set_credit_balance(&self, tenant: &str, balance: i64) {
        self.credit_balance
            .get_or_create(&TenantLabels {
                tenant: tenant.to_owned(),
            })
            .set(balance);
    }

    /// A balance this instance saw after a charge. Concurrent requests settle in any order, so
    /// a charge only lowers the gauge; the background read (`http::probe`) sets the truth,
    /// top-ups included.
    pub fn charged_credit_balance(&self, tenant: &str, balance: i64) {
        let labels = TenantLabels {
            tenant: tenant.to_owned(),
        };
        if let Some(g) = self.credit_balance.get(&labels) {
            g.inner()
                .fetch_min(balance, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        self.credit_balance.get_or_create(&labels).set(balance);
    }

    /// One store write of `size` verifications that took `secs`.
    pub fn observe_store_batch(&self, size: usize, secs: f64) {
        self.store_batch_size.observe(size as f64);
        self.store_write.observe(secs);
    }

    /// The text exposition, with the circuit states read now.
    /// `breakers` holds each provider's circuit as 0 closed, 1 half-open, 2 open.
    pub fn encode(&self, breakers: &[(String, i64)]) -> Result<String, std::fmt::Error> {
        // Providers removed by a reload must not linger at their last state.
        self.breaker.clear();
        for (name, state) in breakers {
            self.breaker
                .get_or_create(&ProviderLabels {
                    provider: name.clone(),
                })
                .set(*state);
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            self.workers
                .set(i64::try_from(rt.metrics().num_workers()).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
