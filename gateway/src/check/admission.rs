//! What the process takes on at once. Past its caps a verification is refused at once with 503
//! `overloaded` and `Retry-After`, instead of queueing without bound until every request is
//! late: `limits.max_in_flight` verifications in all, `limits.max_in_flight_per_tenant` for
//! any one tenant (so one tenant's burst leaves room for the others), and
//! `limits.max_decoded_in_flight_bytes` of decoded images (a request waits briefly for room).
//! The caps are read per request, so a reload changes them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::config::Limits;
use crate::error::ApiError;
use crate::telemetry::metrics::Metrics;

/// How long a request waits for room in the decoded-bytes budget before 503.
pub const DECODE_WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Admission {
    in_flight: AtomicUsize,
    per_tenant: Mutex<HashMap<String, usize>>,
    decoded: AtomicU64,
    freed: Notify,
}

/// A verification admitted: it counts against the caps until dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    tenant: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.in_flight.fetch_sub(1, Ordering::AcqRel);
        let mut map = self
            .admission
            .per_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

/// Decoded image bytes held by one request, returned to the budget when dropped.
#[derive(Debug)]
pub struct DecodeGrant {
    admission: Arc<Admission>,
    bytes: u64,
}

impl Drop for DecodeGrant {
    fn drop(&mut self) {
        self.admission
            .decoded
            .fetch_sub(self.bytes, Ordering::AcqRel);
        self.admission.freed.notify_waiters();
    }
}

impl Admission {
    /// Verifications in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Admit one verification of `tenant`, or refuse it (counted in `livegate_shed_total`).
    pub fn enter(
        self: &Arc<Self>,
        tenant: &str,
        limits: &Limits,
        metrics: &Metrics,
    ) -> Result<Ticket, ApiError> {
        let taken = self.in_flight.fetch_add(1, Ordering::AcqRel);
        if taken >= limits.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics.shed("process", tenant);
            tracing::warn!(
                tenant,
                in_flight = taken,
                "overloaded: verification refused"
            );
            return Err(ApiError::overloaded(
                "this instance is at its limit of verifications in flight; retry shortly",
            ));
        }
        let mut map = self.per_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let mine = map.entry(tenant.to_owned()).or_insert(0);
        if *mine >= limits.max_in_flight_per_tenant {
            drop(map);
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics.shed("tenant", tenant);
            tracing::warn!(
                tenant,
                "overloaded: tenant at its share of verifications in flight"
            );
            return Err(ApiError::overloaded(
                "this tenant is at its limit of verifications in flight; retry shortly",
            ));
        }
        *mine += 1;
        Ok(Ticket {
            admission: self.clone(),
            tenant: tenant.to_owned(),
        })
    }

    /// Room for `bytes` of decoded image within the process budget, waiting up to `wait`.
    pub async fn decode_room(
        self: &Arc<Self>,
        bytes: u64,
        tenant: &str,
        limits: &Limits,
        metrics: &Metrics,
        wait: Duration,
    ) -> Result<DecodeGrant, ApiError> {
        let cap = limits.max_decoded_in_flight_bytes;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before trying, so a release between the try and the wait is not missed.
            let freed = self.freed.notified();
            let mut current = self.decoded.load(Ordering::Acquire);
            loop {
                let next = current.saturating_add(bytes);
                if next > cap {
                    break;
                }
                match self.decoded.compare_exchange_weak(
                    current,
                    next,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        return Ok(DecodeGrant {
                            admission: self.clone(),
                            bytes,
                        });
                    }
                    Err(seen) => current = seen,
                }
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                metrics.shed("decode", tenant);
                tracing::warn!(tenant, bytes, "overloaded: no room to decode the image");
                return Err(ApiError::overloaded(
                    "this instance is decoding as many images as its memory budget allows; \
                     retry shortly",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_tenant: usize) -> Limits {
        Limits {
            max_in_flight: total,
            max_in_flight_per_tenant: per_tenant,
            max_decoded_in_flight_bytes: 100,
            ..Limits::default()
        }
    }

    #[test]
    fn caps_refuse_and_release() {
        let a = Arc::new(Admission::default());
        let m = Metrics::new();
        let l = limits(3, 2);
        let t1 = a.enter("a", &l, &m).expect("first");
        let _t2 = a.enter("a", &l, &m).expect("second");
        let e = a.enter("a", &l, &m).expect_err("tenant share");
        assert_eq!(e.code.as_str(), "overloaded");
        assert_eq!(e.retry_after, Some(1));
        let _t3 = a.enter("b", &l, &m).expect("another tenant fits");
        a.enter("c", &l, &m).expect_err("process cap");
        drop(t1);
        let _t4 = a.enter("c", &l, &m).expect("room again");
        assert_eq!(a.in_flight(), 3);
    }

    #[tokio::test]
    async fn the_decode_budget_waits_then_refuses() {
        let a = Arc::new(Admission::default());
        let m = Metrics::new();
        let l = limits(10, 10);
        let g = a
            .decode_room(80, "a", &l, &m, Duration::ZERO)
            .await
            .expect("fits");
        a.decode_room(30, "a", &l, &m, Duration::from_millis(20))
            .await
            .expect_err("no room");
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move {
                let m = Metrics::new();
                a.decode_room(30, "a", &limits(10, 10), &m, Duration::from_secs(5))
                    .await
                    .map(|_| ())
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(g);
        waiter.await.expect("join").expect("room after the release");
    }
}
