//! What the unauthenticated endpoints report, refreshed in the background: `/readyz` and
//! `/metrics` read this, never the database, so however often anyone calls them they cost no
//! query and cannot drain the pool that verifications need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::runtime::Runtime;
use crate::store::{DynStore, Store};
use crate::telemetry::metrics::Metrics;

/// How long one database check may take before it counts as down.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Probe {
    database_ok: AtomicBool,
    checked: AtomicBool,
}

impl Probe {
    /// The database answered the last check (`None` before the first one ended).
    pub fn database_ok(&self) -> Option<bool> {
        self.checked
            .load(Ordering::Acquire)
            .then(|| self.database_ok.load(Ordering::Acquire))
    }

    fn set(&self, ok: bool) {
        self.database_ok.store(ok, Ordering::Release);
        self.checked.store(true, Ordering::Release);
    }
}

/// Checks the database and reads the metered tenants' balances every `every`, until the state
/// that owns `probe` is gone.
pub fn spawn(
    probe: &Arc<Probe>,
    store: &DynStore,
    runtime: &Arc<ArcSwap<Runtime>>,
    metrics: &Arc<Metrics>,
    every: Duration,
) {
    let probe = Arc::downgrade(probe);
    let store: Weak<dyn Store> = Arc::downgrade(store);
    let runtime = Arc::downgrade(runtime);
    let metrics = Arc::downgrade(metrics);
    tokio::spawn(async move {
        loop {
            let (Some(probe), Some(store)) = (probe.upgrade(), store.upgrade()) else {
                return;
            };
            let ok = match tokio::time::timeout(PING_TIMEOUT, store.ping()).await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness: database check failed");
                    false
                }
                Err(_) => {
                    tracing::warn!("readiness: database check timed out");
                    false
                }
            };
            probe.set(ok);
            if ok && let (Some(rt), Some(m)) = (runtime.upgrade(), metrics.upgrade()) {
                balances(&store, &rt.load(), &m).await;
            }
            drop((probe, store));
            tokio::time::sleep(every).await;
        }
    });
}

/// Balances move on every instance: each instance reports the shared truth, as of its last
/// read, rather than only what it charged itself. One query, however many tenants.
async fn balances(store: &Arc<dyn Store>, rt: &Runtime, metrics: &Metrics) {
    let metered = |id: &str| {
        rt.config
            .tenants
            .get(id)
            .is_some_and(|t| t.credits.is_some())
    };
    match store.balances().await {
        Ok(all) => {
            for (tenant, b) in all.iter().filter(|(t, _)| metered(t)) {
                metrics.set_credit_balance(tenant, *b);
            }
        }
        Err(e) => tracing::warn!(error = %e, "reading the balances failed"),
    }
}
