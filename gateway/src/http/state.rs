//! What every handler shares: the live runtime, the store and its writers, rate limits,
//! metrics and the face-match indexes.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::task::TaskTracker;

use crate::check::admission::Admission;
use crate::check::faces::Identity;
use crate::http::limiter::RateLimits;
use crate::runtime::Runtime;
use crate::store::DynStore;
use crate::store::group_commit::BatchObserver;
use crate::store::spool::Spool;
use crate::store::writers::Writers;
use crate::telemetry::metrics::Metrics;

/// How often the database is checked for `/readyz`.
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone, Debug)]
pub struct AppState {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub store: DynStore,
    /// Group-committed writes (credit reservations, results).
    pub writers: Arc<Writers>,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub identity: Arc<Identity>,
    /// Verifications and shadow calls that run on after their connection; shutdown waits for
    /// them.
    pub background: TaskTracker,
    /// The local spool of results the database could not take (none: they are lost).
    pub spool: Option<Arc<Spool>>,
    /// The caps on work in flight (load shedding).
    pub admission: Arc<Admission>,
    pub idempotency_waiters: Arc<crate::check::idempotency::Waiters>,
    /// Database health and balances as last read in the background, for `/readyz` and
    /// `/metrics`.
    pub probe: Arc<crate::http::probe::Probe>,
}

impl AppState {
    /// In-process rate limits. Must be called inside a Tokio runtime (it starts the writers).
    pub fn new(runtime: Runtime, store: DynStore) -> Self {
        Self::with_limits(runtime, store, RateLimits::local())
    }

    pub fn with_limits(runtime: Runtime, store: DynStore, limits: Arc<RateLimits>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let observer: BatchObserver = Arc::new(move |name, size, took| {
            if name == "results" {
                m.observe_store_batch(size, took.as_secs_f64());
            }
        });
        let writers = Writers::spawn(&store, Some(observer));
        let runtime = Arc::new(ArcSwap::from_pointee(runtime));
        let probe = Arc::new(crate::http::probe::Probe::default());
        crate::http::probe::spawn(&probe, &store, &runtime, &metrics, PROBE_EVERY);
        Self {
            runtime,
            store,
            writers,
            limits,
            metrics,
            identity: Default::default(),
            background: TaskTracker::new(),
            spool: None,
            admission: Default::default(),
            idempotency_waiters: Default::default(),
            probe,
        }
    }

    /// What the verification pipeline writes to and reports through.
    pub fn services(&self) -> crate::check::Services {
        crate::check::Services {
            store: self.store.clone(),
            writers: self.writers.clone(),
            metrics: self.metrics.clone(),
            identity: self.identity.clone(),
            background: self.background.clone(),
            spool: self.spool.clone(),
            admission: self.admission.clone(),
            idempotency_waiters: self.idempotency_waiters.clone(),
        }
    }

    pub fn on_rate_limited(&self, tenant: &str) {
        tracing::info!(tenant, "rate limited");
        self.metrics.rate_limited(tenant);
    }
}
