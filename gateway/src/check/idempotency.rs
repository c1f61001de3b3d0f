//! `Idempotency-Key` on `POST /v1/liveness`: the first request with a key runs; a repeat with
//! the same request replays its stored answer (same id, no charge, no upstream call); a repeat
//! with a different request is refused (422); a repeat while the first still runs waits for it,
//! up to a bound (then 409). Only verdicts are kept: a request that failed releases its key, so
//! retrying it runs again. Keys live 24 hours.
//!
//! A waiter is woken when a request of this instance ends its key ([`Waiters`]); for a holder
//! on another instance it looks again after a growing pause (25 ms up to 1 s), so a crowd of
//! waiters costs the database little.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};
use crate::store::DynStore;
use crate::store::ledger::{IdemClaim, IdemClaimRequest};

pub const HEADER: &str = "idempotency-key";
pub const KEY_LIFETIME: Duration = Duration::from_secs(24 * 3600);
const FIRST_LOOK: Duration = Duration::from_millis(25);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Requests waiting for a key held by a request of this instance, woken when it ends. Only a
/// request that found its key taken registers here.
#[derive(Debug, Default)]
pub struct Waiters {
    keys: std::sync::Mutex<HashMap<(String, String), Arc<Notify>>>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Arc<Notify>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listen<'a>(&'a self, tenant: &'a str, key: &'a str) -> Listening<'a> {
        let wake = self
            .lock()
            .entry((tenant.to_owned(), key.to_owned()))
            .or_default()
            .clone();
        Listening {
            waiters: self,
            tenant,
            key,
            wake,
        }
    }

    /// The request holding `key` ended (its answer is stored, or the key released).
    pub fn done(&self, tenant: &str, key: &str) {
        if let Some(n) = self.lock().remove(&(tenant.to_owned(), key.to_owned())) {
            n.notify_waiters();
        }
    }
}

/// One waiter's registration; dropped, it forgets the key unless someone else waits on it.
struct Listening<'a> {
    waiters: &'a Waiters,
    tenant: &'a str,
    key: &'a str,
    wake: Arc<Notify>,
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        let mut keys = self.waiters.lock();
        let k = (self.tenant.to_owned(), self.key.to_owned());
        // The map's reference and this one are the only ones left.
        if keys
            .get(&k)
            .is_some_and(|n| Arc::ptr_eq(n, &self.wake) && Arc::strong_count(n) == 2)
        {
            keys.remove(&k);
        }
    }
}

/// The caller's key, checked: 1-255 visible ASCII characters.
pub fn key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(HEADER) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default();
    if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::IdempotencyKeyInvalid,
            "Idempotency-Key must be 1-255 visible ASCII characters",
        ));
    }
    Ok(Some(s.to_owned()))
}

/// What the request means, independent of its framing (a multipart boundary differs between
/// two sends of the same selfie).
pub fn fingerprint(parts: &[(&str, String)]) -> String {
    let mut h = Sha256::new();
    for (name, value) in parts {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

pub enum Begin {
    /// This request holds the key and runs.
    Run,
    /// Replay the answer stored for the key.
    Replay { status: StatusCode, body: String },
}

fn mismatch() -> ApiError {
    ApiError::new(
        ErrorCode::IdempotencyKeyReused,
        "this Idempotency-Key was used with a different request",
    )
}

#[allow(clippy::too_many_arguments)]
pub async fn begin(
    store: &DynStore,
    waiters: &Waiters,
    tenant_id: &str,
    key: &str,
    request_hash: &str,
    owner: uuid::Uuid,
    lock_for: Duration,
    wait: Duration,
) -> Result<Begin, ApiError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = FIRST_LOOK;
    let mut listening: Option<Listening<'_>> = None;
    loop {
        // Listening before looking, so an end between the look and the wait is not missed.
        let wake = listening.as_ref().map(|l| l.wake.clone());
        let mut woken = wake.as_deref().map(|n| Box::pin(n.notified()));
        if let Some(w) = woken.as_mut() {
            w.as_mut().enable();
        }
        let now = Utc::now();
        let req = IdemClaimRequest {
            tenant_id: tenant_id.to_owned(),
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            owner,
            locked_until: now + chrono::Duration::from_std(lock_for).unwrap_or_default(),
            expires_at: now + chrono::Duration::from_std(KEY_LIFETIME).unwrap_or_default(),
        };
        match store.idem_claim(&req).await.map_err(ApiError::store)? {
            IdemClaim::Claimed => return Ok(Begin::Run),
            IdemClaim::Done {
                request_hash: h, ..
            }
            | IdemClaim::Running { request_hash: h }
                if h != request_hash =>
            {
                return Err(mismatch());
            }
            IdemClaim::Done {
                http_status,
                response,
                ..
            } => {
                let status = u16::try_from(http_status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::OK);
                return Ok(Begin::Replay {
                    status,
                    body: response,
                });
            }
            IdemClaim::Running { .. } => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::new(
                        ErrorCode::IdempotencyInProgress,
                        "a request with this Idempotency-Key is still running; retry later",
                    ));
                }
                match woken {
                    // Taken: listen for its end, and look once more before waiting.
                    None => listening = Some(waiters.listen(tenant_id, key)),
                    Some(w) => {
                        let until = deadline.min(tokio::time::Instant::now() + pause);
                        let _ = tokio::time::timeout_at(until, w).await;
                        pause = (pause * 2).min(LONGEST_PAUSE);
                    }
                }
            }
        }
    }
}
