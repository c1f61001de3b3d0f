//! Rate limits per tenant and per key (GCRA). Without Redis each instance limits in process
//! (`governor`). With `REDIS_URL` every instance asks Redis, in one atomic script, so the limit
//! holds for the whole cluster. When Redis is slow or down, each call gives up after a short
//! timeout and the instance limits in process to its share of the limit (the limit divided by
//! the instances last seen alive in Redis), says so in its log, `/readyz` and metrics, and tries
//! Redis again a second later. It never waits on Redis longer than the timeout.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::Mutex;

use crate::config::RateSpec;

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// After a Redis failure, how long to limit in process before trying Redis again.
const REDIS_RETRY_AFTER: Duration = Duration::from_secs(1);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);
const INSTANCE_STALE_MS: u64 = 10_000;

/// GCRA in Redis, in microseconds: Redis' clock is read as integer microseconds, and the
/// theoretical arrival time is stored with its fraction (`%.3f`), since Lua's default number
/// format keeps 14 digits, a tenth of a millisecond at today's epoch, too coarse above a few
/// thousand calls a second. Answers come back in milliseconds.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, math.ceil((allow_at - now) / 1000), 0, math.ceil((tat - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0, math.floor((tolerance - (new_tat - now)) / interval), math.ceil((new_tat - now) / 1000)}
";

/// One limit's verdict, for the `RateLimit` headers.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub policy: &'static str,
    pub spec: RateSpec,
    pub allowed: bool,
    pub remaining: u32,
    /// Seconds until the next request would be allowed (when refused).
    pub retry_after: Duration,
}

/// Where limits are kept right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Local,
    Redis,
    /// Redis is configured but unreachable: in process, at this instance's share.
    Fallback {
        instances: usize,
    },
}

impl Mode {
    pub fn describe(&self) -> String {
        match self {
            Mode::Local => "local".into(),
            Mode::Redis => "redis".into(),
            Mode::Fallback { instances } => {
                format!(
                    "fallback: redis unavailable, limiting in process at 1/{instances} of each limit"
                )
            }
        }
    }
}

struct RedisLimiter {
    client: redis::Client,
    conn: Mutex<Option<redis::aio::ConnectionManager>>,
    script: redis::Script,
    timeout: Duration,
    instance_id: String,
    retry_at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

type LocalBucket = (RateSpec, usize, Arc<Direct>);

pub struct RateLimits {
    /// Per bucket: the spec and share it was built for, and the limiter.
    local: std::sync::Mutex<HashMap<String, LocalBucket>>,
    redis: Option<RedisLimiter>,
    fallback: AtomicBool,
    instances: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RateLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimits")
            .field("mode", &self.mode())
            .finish_non_exhaustive()
    }
}

impl RateLimits {
    pub fn local() -> Arc<Self> {
        Arc::new(Self {
            local: Default::default(),
            redis: None,
            fallback: AtomicBool::new(false),
            instances: Arc::new(AtomicUsize::new(1)),
        })
    }

    /// Cluster-wide limits in the Redis at `url`; starts the instance heartbeat.
    pub fn redis(url: &str, timeout: Duration) -> Result<Arc<Self>, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let me = Arc::new(Self {
            local: Default::default(),
            redis: Some(RedisLimiter {
                client,
                conn: Mutex::new(None),
                script: redis::Script::new(GCRA),
                timeout,
                instance_id: uuid::Uuid::new_v4().to_string(),
                retry_at: std::sync::Mutex::new(None),
            }),
            fallback: AtomicBool::new(false),
            instances: Arc::new(AtomicUsize::new(1)),
        });
        let weak = Arc::downgrade(&me);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
            loop {
                tick.tick().await;
                let Some(me) = weak.upgrade() else { return };
                me.heartbeat().await;
            }
        });
        Ok(me)
    }

    pub fn mode(&self) -> Mode {
        match (&self.redis, self.fallback.load(Ordering::Relaxed)) {
            (None, _) => Mode::Local,
            (Some(_), false) => Mode::Redis,
            (Some(_), true) => Mode::Fallback {
                instances: self.instances.load(Ordering::Relaxed).max(1),
            },
        }
    }

    /// Instances seen alive in Redis (1 without Redis).
    pub fn instances(&self) -> usize {
        self.instances.load(Ordering::Relaxed).max(1)
    }

    /// Check one limit. `id` names the bucket (`tenant:acme`, `key:sha256:…`).
    pub async fn check(&self, policy: &'static str, id: &str, spec: RateSpec) -> Verdict {
        if let Some(r) = &self.redis
            && let Some(probe) = self.redis_due(r)
        {
            match self.check_redis(r, id, spec).await {
                Ok(v) => {
                    // Only the probe ends a fallback: a call that started before the failure
                    // and succeeded late says nothing about Redis now.
                    if probe {
                        if let Ok(mut at) = r.retry_at.lock() {
                            *at = None;
                        }
                        if self.fallback.swap(false, Ordering::Relaxed) {
                            tracing::warn!("redis is back: rate limits are cluster-wide again");
                        }
                    }
                    return Verdict { policy, ..v };
                }
                Err(e) => {
                    if let Ok(mut at) = r.retry_at.lock() {
                        *at = Some(tokio::time::Instant::now() + REDIS_RETRY_AFTER);
                    }
                    if !self.fallback.swap(true, Ordering::Relaxed) {
                        tracing::error!(
                            error = %e,
                            instances = self.instances(),
                            "redis unavailable: limiting in process at this instance's share of each limit"
                        );
                    }
                }
            }
        }
        let share = match self.redis {
            Some(_) => self.instances(),
            None => 1,
        };
        Verdict {
            policy,
            ..self.check_local(id, spec, share)
        }
    }

    /// Whether to ask Redis: `None` = stay local, `Some(true)` = this call probes Redis after
    /// a failure, `Some(false)` = Redis is in use.
    fn redis_due(&self, r: &RedisLimiter) -> Option<bool> {
        let Ok(mut at) = r.retry_at.lock() else {
            return None;
        };
        match *at {
            Some(t) if tokio::time::Instant::now() < t => None,
            Some(_) => {
                // One request probes; the others stay local until it succeeds.
                *at = Some(tokio::time::Instant::now() + REDIS_RETRY_AFTER);
                Some(true)
            }
            None => Some(false),
        }
    }

    async fn connection(&self, r: &RedisLimiter) -> Result<redis::aio::ConnectionManager, String> {
        let mut guard = r.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok(c.clone());
        }
        let cfg = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(r.timeout))
            .set_response_timeout(Some(r.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let c = tokio::time::timeout(
            r.timeout * 2,
            r.client.get_connection_manager_with_config(cfg),
        )
        .await
        .map_err(|_| "connecting to redis timed out".to_owned())?
        .map_err(|e| e.to_string())?;
        *guard = Some(c.clone());
        Ok(c)
    }

    async fn check_redis(
        &self,
        r: &RedisLimiter,
        id: &str,
        spec: RateSpec,
    ) -> Result<Verdict, String> {
        let mut conn = self.connection(r).await?;
        let interval_us = 1_000_000.0 / spec.per_second;
        let mut inv = r.script.prepare_invoke();
        // A key of its own: an instance still on the millisecond script must not read these.
        inv.key(format!("livegate:rl:us:{id}"))
            .arg(interval_us)
            .arg(spec.burst);
        let out: Vec<i64> = tokio::time::timeout(r.timeout, inv.invoke_async(&mut conn))
            .await
            .map_err(|_| format!("redis did not answer within {:?}", r.timeout))?
            .map_err(|e| e.to_string())?;
        let [allowed, retry_ms, remaining, _reset_ms] = out[..] else {
            return Err(format!("unexpected script answer {out:?}"));
        };
        Ok(Verdict {
            policy: "",
            spec,
            allowed: allowed == 1,
            remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
            retry_after: Duration::from_millis(u64::try_from(retry_ms.max(0)).unwrap_or(0)),
        })
    }

    fn check_local(&self, id: &str, spec: RateSpec, share: usize) -> Verdict {
        let limiter = {
            let Ok(mut map) = self.local.lock() else {
                // A poisoned map means a panic elsewhere; refusing nothing is the safe side.
                return Verdict {
                    policy: "",
                    spec,
                    allowed: true,
                    remaining: 0,
                    retry_after: Duration::ZERO,
                };
            };
            match map.get(id) {
                Some((s, n, l)) if *s == spec && *n == share => l.clone(),
                _ => {
                    let l = Arc::new(direct(spec, share));
                    map.insert(id.to_owned(), (spec, share, l.clone()));
                    l
                }
            }
        };
        match limiter.check() {
            Ok(snapshot) => Verdict {
                policy: "",
                spec,
                allowed: true,
                remaining: snapshot.remaining_burst_capacity(),
                retry_after: Duration::ZERO,
            },
            Err(not_until) => Verdict {
                policy: "",
                spec,
                allowed: false,
                remaining: 0,
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            },
        }
    }

    async fn heartbeat(&self) {
        let Some(r) = &self.redis else { return };
        let Ok(mut conn) = self.connection(r).await else {
            return;
        };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zadd("livegate:instances", &r.instance_id, now_ms)
            .ignore()
            .zrembyscore(
                "livegate:instances",
                "-inf",
                now_ms - i64::try_from(INSTANCE_STALE_MS).unwrap_or(10_000),
            )
            .ignore()
            .zcard("livegate:instances");
        let res: Result<Result<(usize,), _>, _> =
            tokio::time::timeout(r.timeout * 4, pipe.query_async(&mut conn)).await;
        if let Ok(Ok((n,))) = res {
            let before = self.instances.swap(n.max(1), Ordering::Relaxed);
            if before != n.max(1) {
                tracing::info!(instances = n, "instances sharing the rate limits");
            }
        }
    }
}

fn direct(spec: RateSpec, share: usize) -> Direct {
    let share = share.max(1) as f64;
    let per_second = (spec.per_second / share).max(1e-6);
    let burst = ((f64::from(spec.burst) / share).floor() as u32).max(1);
    let period = Duration::from_secs_f64(1.0 / per_second).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}
