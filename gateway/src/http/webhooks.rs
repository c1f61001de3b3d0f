//! The webhook sender every instance runs: claims due outbox messages (`store/webhooks.rs`),
//! signs them as Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature:
//! v1,<base64 HMAC-SHA256 of "id.timestamp.body">`), posts them, and retries with backoff for
//! a day. An endpoint failing again and again has its circuit opened for a while; a target
//! that resolves to a private or loopback address is refused unless its webhook allows it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::webhooks::{Webhook, is_private};
use crate::runtime::Runtime;
use crate::store::DynStore;
use crate::store::webhooks::{AttemptResult, OutboxRow};
use crate::telemetry::metrics::Metrics;

/// `v1,<base64>`: the signature of `{id}.{timestamp}.{body}` under `secret`.
pub fn sign(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        // HMAC takes a key of any length.
        Err(_) => return String::new(),
    };
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// When messages are retried, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The wait after the first failure; each next one is five times longer, up to `cap`.
    pub first_retry: Duration,
    pub cap: Duration,
    /// Past this age a message is given up (`failed`).
    pub give_up_after: Duration,
    /// How often the outbox is polled when it had nothing due.
    pub poll: Duration,
    /// Failures in a row that open an endpoint's circuit, and for how long.
    pub circuit_after: u32,
    pub circuit_open: Duration,
    /// One attempt's time limit.
    pub timeout: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            first_retry: Duration::from_secs(5),
            cap: Duration::from_secs(4 * 3600),
            give_up_after: Duration::from_secs(24 * 3600),
            poll: Duration::from_secs(1),
            circuit_after: 5,
            circuit_open: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Schedule {
    /// The wait after the `attempts`-th failed attempt: 5 s, 25 s, 2 min, 10 min, … up to
    /// `cap` by default.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let n = u32::try_from(attempts.saturating_sub(1))
            .unwrap_or(0)
            .min(16);
        self.first_retry
            .checked_mul(5_u32.saturating_pow(n))
            .unwrap_or(self.cap)
            .min(self.cap)
    }
}

#[derive(Debug, Default)]
struct Circuit {
    failures: u32,
    open_until: Option<Instant>,
}

/// Why one attempt did not deliver.
struct Failure {
    status: Option<i32>,
    error: String,
    /// Worth trying again later.
    retry: bool,
}

pub struct Sender {
    store: DynStore,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
    circuits: Mutex<HashMap<String, Circuit>>,
}

/// Starts the sender on this instance.
pub fn spawn(
    store: DynStore,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    schedule: Schedule,
) -> tokio::task::JoinHandle<()> {
    let sender = Arc::new(Sender {
        store,
        runtime,
        metrics,
        schedule,
        circuits: Mutex::default(),
    });
    tokio::spawn(async move { sender.run().await })
}

impl Sender {
    async fn run(self: Arc<Self>) {
        loop {
            let now = Utc::now();
            let lock = self.schedule.timeout.saturating_mul(3);
            let lock_until = now + chrono::Duration::from_std(lock).unwrap_or_default();
            let due = match self.store.claim_messages(now, lock_until, 32).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook outbox unreadable; retried shortly");
                    Vec::new()
                }
            };
            if due.is_empty() {
                tokio::time::sleep(self.schedule.poll).await;
                continue;
            }
            futures::stream::iter(due)
                .for_each_concurrent(8, |row| {
                    let me = self.clone();
                    async move { me.deliver(row).await }
                })
                .await;
        }
    }

    fn circuit_open(&self, url: &str) -> bool {
        let circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        circuits
            .get(url)
            .and_then(|c| c.open_until)
            .is_some_and(|t| t > Instant::now())
    }

    fn after(&self, url: &str, ok: bool) {
        let mut circuits = self.circuits.lock().unwrap_or_else(|p| p.into_inner());
        let c = circuits.entry(url.to_owned()).or_default();
        if ok {
            *c = Circuit::default();
        } else {
            c.failures = c.failures.saturating_add(1);
            if c.failures >= self.schedule.circuit_after {
                c.open_until = Some(Instant::now() + self.schedule.circuit_open);
                tracing::warn!(url, failures = c.failures, "webhook endpoint circuit open");
            }
        }
    }

    async fn deliver(&self, row: OutboxRow) {
        let started = Instant::now();
        let webhook = self
            .runtime
            .load()
            .config
            .tenants
            .get(&row.message.tenant_id)
            .and_then(|t| {
                t.webhooks
                    .iter()
                    .find(|w| w.url.as_str() == row.message.url)
                    .cloned()
            });
        let outcome = match webhook {
            None => Err(Failure {
                status: None,
                error: "the endpoint is no longer configured".to_owned(),
                retry: false,
            }),
            Some(_) if self.circuit_open(&row.message.url) => Err(Failure {
                status: None,
                error: "the endpoint's circuit is open after repeated failures".to_owned(),
                retry: true,
            }),
            Some(w) => {
                let sent = self.post(&w, &row).await;
                self.after(&row.message.url, sent.is_ok());
                sent
            }
        };
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let result = match outcome {
            Ok(status) => {
                self.metrics.webhook("delivered");
                AttemptResult {
                    status: Some(status),
                    error: None,
                    duration_ms,
                    retry_at: None,
                    failed: false,
                }
            }
            Err(f) => {
                let retry_at = Utc::now()
                    + chrono::Duration::from_std(self.schedule.backoff(row.attempts))
                        .unwrap_or_default();
                let too_old = expired(row.message.created_at, retry_at, self.schedule);
                let failed = !f.retry || too_old;
                self.metrics
                    .webhook(if failed { "failed" } else { "retry" });
                tracing::info!(
                    message = %row.message.id,
                    tenant = %row.message.tenant_id,
                    attempt = row.attempts,
                    error = %f.error,
                    failed,
                    "webhook not delivered"
                );
                AttemptResult {
                    status: f.status,
                    error: Some(f.error),
                    duration_ms,
                    retry_at: Some(retry_at),
                    failed,
                }
            }
        };
        if let Err(e) = self.store.record_attempt(&row, &result).await {
            // The lock lapses and the message is tried again: at least once, never lost.
            tracing::warn!(message = %row.message.id, error = %e, "webhook attempt not recorded");
        }
    }

    /// The addresses the URL's host may be reached at, each allowed.
    async fn targets(&self, w: &Webhook) -> Result<(String, Vec<SocketAddr>), Failure> {
        let fail = |error: String| Failure {
            status: None,
            error,
            retry: true,
        };
        let host = w
            .url
            .host_str()
            .ok_or_else(|| fail("the URL has no host".to_owned()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = w.url.port_or_known_default().unwrap_or(443);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| fail(format!("cannot resolve {host}: {e}")))?
            .collect();
        if addrs.is_empty() {
            return Err(fail(format!("{host} resolves to no address")));
        }
        if !w.allow_private_targets && addrs.iter().any(|a| is_private(a.ip())) {
            return Err(fail(format!(
                "{host} resolves to a private or loopback address: refused (allow_private_targets is off)"
            )));
        }
        Ok((host, addrs))
    }

    async fn post(&self, w: &Webhook, row: &OutboxRow) -> Result<i32, Failure> {
        let (host, addrs) = self.targets(w).await?;
        // The checked addresses, and only them: a DNS answer cannot change between the
        // check and the connection.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(self.schedule.timeout)
            .resolve_to_addrs(&host, &addrs)
            .build()
            .map_err(|e| Failure {
                status: None,
                error: format!("http client: {e}"),
                retry: true,
            })?;
        let id = row.message.id.to_string();
        let timestamp = Utc::now().timestamp();
        let signature = sign(&w.secret, &id, timestamp, &row.message.payload);
        let sent = client
            .post(w.url.clone())
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .header(
                "user-agent",
                concat!("livegate/", env!("CARGO_PKG_VERSION")),
            )
            .body(row.message.payload.clone())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(i32::from(r.status().as_u16())),
            Ok(r) => Err(Failure {
                status: Some(i32::from(r.status().as_u16())),
                error: format!("the endpoint answered {}", r.status()),
                retry: true,
            }),
            Err(e) => Err(Failure {
                status: None,
                error: format!("not delivered: {e}"),
                retry: true,
            }),
        }
    }
}

fn expired(created: DateTime<Utc>, next: DateTime<Utc>, s: Schedule) -> bool {
    let window = chrono::Duration::from_std(s.give_up_after).unwrap_or_default();
    next > created + window
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification.
    #[test]
    fn signs_as_the_specification_example() {
        let secret = crate::config::webhooks::secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .expect("secret");
        let sig = sign(
            &secret,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn backoff_grows_to_its_cap() {
        let s = Schedule::default();
        assert_eq!(s.backoff(1), Duration::from_secs(5));
        assert_eq!(s.backoff(2), Duration::from_secs(25));
        assert_eq!(s.backoff(3), Duration::from_secs(125));
        assert_eq!(s.backoff(40), s.cap);
    }
}
