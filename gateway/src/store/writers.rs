//! The instance's write paths: group-committed reservations and results, and the sweeper
//! that releases what crashed instances left reserved.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::store::DynStore;
use crate::store::group_commit::{BatchObserver, Batcher};
use crate::store::ledger::{ReserveOutcome, ReserveRequest, ResultWrite};

/// The write paths shared by every request of this instance.
#[derive(Debug)]
pub struct Writers {
    pub reserve: Batcher<ReserveRequest, ReserveOutcome>,
    pub results: Batcher<Arc<ResultWrite>, ()>,
}

impl Writers {
    pub fn spawn(store: &DynStore, observer: Option<BatchObserver>) -> Arc<Self> {
        let workers = store.write_concurrency();
        let s = store.clone();
        // Reservations of one tenant serialize on its balance row anyway: fewer, bigger batches.
        let reserve = Batcher::spawn(
            "reserve",
            workers.div_ceil(2),
            512,
            observer.clone(),
            move |items: Vec<ReserveRequest>| {
                let s = s.clone();
                async move { s.reserve_batch(&items).await }
            },
        );
        let s = store.clone();
        let results = Batcher::spawn(
            "results",
            workers,
            512,
            observer,
            move |items: Vec<Arc<ResultWrite>>| {
                let s = s.clone();
                async move {
                    let n = items.len();
                    s.commit_results(&items).await.map(|()| vec![(); n])
                }
            },
        );
        Arc::new(Self { reserve, results })
    }
}

/// Release what crashed instances left reserved, and drop expired idempotency keys; every
/// instance runs this, and the store makes each release happen once.
pub fn spawn_sweeper(store: DynStore, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = Utc::now();
            match store.expire_reservations(now).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(released = n, "expired credit reservations released"),
                Err(e) => tracing::error!(error = %e, "releasing expired reservations failed"),
            }
            if let Err(e) = store.idem_sweep(now).await {
                tracing::error!(error = %e, "dropping expired idempotency keys failed");
            }
        }
    })
}
