//! What the pipeline writes to and reports through.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::check::admission::Admission;
use crate::check::faces::Identity;
use crate::store::DynStore;
use crate::store::spool::Spool;
use crate::store::writers::Writers;
use crate::telemetry::metrics::Metrics;

/// What the pipeline writes to and reports through; shared by every request of an instance.
#[derive(Clone, Debug)]
pub struct Services {
    pub store: DynStore,
    pub writers: Arc<Writers>,
    pub metrics: Arc<Metrics>,
    pub identity: Arc<Identity>,
    /// Where work that outlives its request runs, so that shutdown can wait for it.
    pub background: TaskTracker,
    /// Where results go that the database cannot take before the commit grace ends.
    pub spool: Option<Arc<Spool>>,
    /// The caps on work in flight: verifications, per tenant, decoded image bytes.
    pub admission: Arc<Admission>,
    /// Requests waiting on an `Idempotency-Key` another request of this instance holds.
    pub idempotency_waiters: Arc<crate::check::idempotency::Waiters>,
}
