//! Three `livegate serve` processes on one Postgres and one Redis, driven together through the
//! Didit simulator: one balance, one rate limit, Redis lost mid-run, an instance killed with
//! reservations in flight.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use livegate::config::KeyHash;
use livegate::store::{DynStore, PgStore};
use serde_json::json;

use crate::credits::assert_ledger;
use crate::harness::{DIDIT_SECRET, Kill, free_port, get_text, postgres_url, small_jpeg};

const METERED: &str = "lg_multi_metered_key_0001";
const LIMITED: &str = "lg_multi_limited_key_0002";
const INITIAL: i64 = 274;

struct Redis {
    child: Kill,
    url: String,
}

fn start_redis() -> Option<Redis> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child {
        Ok(c) => {
            let child = Kill(c);
            let deadline = Instant::now() + Duration::from_secs(10);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(Instant::now() < deadline, "redis-server did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            Some(Redis {
                child,
                url: format!("redis://127.0.0.1:{port}"),
            })
        }
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: redis-server not runnable ({e}); set CI=1 to make this fatal");
            None
        }
        Err(e) => panic!("redis-server is required under CI: {e}"),
    }
}

struct Cluster {
    instances: Vec<(String, Kill)>,
    store: DynStore,
    redis: Redis,
    didit: String,
    client: reqwest::Client,
    dir: PathBuf,
}

impl Cluster {
    async fn start(ttl_ms: u64) -> Option<Cluster> {
        let schema = format!("lg_multi_{}", uuid::Uuid::new_v4().simple());
        let store: DynStore = match PgStore::connect_in_schema(&postgres_url(), &schema).await {
            Ok(s) => Arc::new(s),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
                return None;
            }
            Err(e) => panic!("Postgres is required under CI: {e}"),
        };
        store.migrate().await.expect("migrate");
        let redis = start_redis()?;
        let didit = format!(
            "http://{}",
            livegate_simulators::spawn(livegate_simulators::didit::router())
                .await
                .expect("sim")
        );
        let dir =
            std::env::temp_dir().join(format!("livegate-multi-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let config = dir.join("livegate.yaml");
        // Reservations must outlive every deadline (the config refuses otherwise).
        let deadline_ms = ttl_ms.saturating_sub(500).min(30_000);
        std::fs::write(
            &config,
            format!(
                r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{DIDIT_KEY}}", timeout_ms: 10000 }}
limits: {{ reservation_ttl_ms: {ttl_ms} }}
tenants:
  metered:
    keys: ["{metered}"]
    routing: {{ strategy: single, providers: [didit], deadline_ms: {deadline_ms} }}
    credits: {{ initial: {INITIAL}, cost: {{ didit: 2 }} }}
  limited:
    keys: ["{limited}"]
    routing: {{ strategy: single, providers: [didit], deadline_ms: {deadline_ms} }}
    rate_limit: {{ per_second: 50, burst: 5 }}
"#,
                metered = KeyHash::of_key(METERED),
                limited = KeyHash::of_key(LIMITED),
            ),
        )
        .expect("config");
        let db = format!("{}?options=-c%20search_path%3D{schema}", postgres_url());
        let mut instances = Vec::new();
        for i in 0..3 {
            let port = free_port();
            let log = std::fs::File::create(dir.join(format!("instance-{i}.log"))).expect("log");
            let child = Command::new(env!("CARGO_BIN_EXE_livegate"))
                .arg("serve")
                .arg("--config")
                .arg(&config)
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .env("DATABASE_URL", &db)
                .env("REDIS_URL", &redis.url)
                // Generous for a loaded 2-core CI machine running three instances and the
                // driver; the fallback itself is exercised by stopping Redis.
                .env("LIVEGATE_REDIS_TIMEOUT_MS", "300")
                .env("DIDIT_KEY", DIDIT_SECRET)
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("spawn livegate");
            instances.push((format!("http://127.0.0.1:{port}"), Kill(child)));
        }
        let cluster = Cluster {
            instances,
            store,
            redis,
            didit,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()
                .expect("client"),
            dir,
        };
        for (base, _) in &cluster.instances {
            cluster.wait_ready(base).await;
        }
        Some(cluster)
    }

    async fn wait_ready(&self, base: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = self.client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{base} did not become ready; logs in {}",
                self.dir.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn rule(&self, respond: serde_json::Value) {
        let r = self
            .client
            .post(format!("{}/_sim/rules", self.didit))
            .json(&json!({ "respond": respond }))
            .send()
            .await
            .expect("rule");
        assert_eq!(r.status().as_u16(), 201);
    }

    fn base(&self, i: usize) -> &str {
        &self.instances[i % self.instances.len()].0
    }

    async fn readyz(&self, i: usize) -> serde_json::Value {
        self.client
            .get(format!("{}/readyz", self.base(i)))
            .send()
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json")
    }
}

async fn post(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    seed: u8,
) -> (u16, serde_json::Value) {
    let r = crate::harness::post_selfie(client, base, key, small_jpeg(seed), "s.jpg").await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_balance() {
    let Some(c) = Cluster::start(120_000).await else {
        return;
    };
    c.rule(json!({"score": 0.95, "delay_ms": 20})).await;
    let c = Arc::new(c);
    let mut tasks = Vec::new();
    for i in 0..500usize {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            post(&c.client, c.base(i), METERED, (i % 251) as u8).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for t in tasks {
        let (status, body) = t.await.expect("task");
        match status {
            200 => ok += 1,
            402 => {
                assert_eq!(body["code"], "insufficient_credits");
                refused += 1
            }
            s => panic!("unexpected {s}: {body}"),
        }
    }
    assert_eq!((ok, refused), (137, 363));
    assert_ledger(&c.store, "metered", INITIAL - 137 * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_one_rate_limit_and_survive_losing_redis() {
    let Some(mut c) = Cluster::start(120_000).await else {
        return;
    };
    c.rule(json!({"score": 0.95})).await;
    // Let every instance see the others in Redis (heartbeats every 2 s).
    tokio::time::sleep(Duration::from_secs(5)).await;

    async fn drive(
        c: &Cluster,
        seconds: f64,
        kill_redis_at: Option<f64>,
    ) -> (usize, usize, f64, Duration) {
        let rate = 300.0;
        let total = (rate * seconds) as usize;
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total);
        let mut killed = false;
        for i in 0..total {
            let at = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(at).await;
            if let Some(k) = kill_redis_at
                && !killed
                && i as f64 / rate >= k
            {
                // Not Drop: the test still owns the guard; a SIGKILL mid-run.
                let _ = std::process::Command::new("kill")
                    .args(["-9", &c.redis.child.0.id().to_string()])
                    .status();
                killed = true;
            }
            let client = c.client.clone();
            let base = c.base(i).to_owned();
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let (status, _) = post(&client, &base, LIMITED, (i % 251) as u8).await;
                (status, t.elapsed())
            }));
        }
        let window = started.elapsed().as_secs_f64();
        let (mut ok, mut limited, mut slowest) = (0, 0, Duration::ZERO);
        for t in tasks {
            let (status, took) = t.await.expect("task");
            slowest = slowest.max(took);
            match status {
                200 => ok += 1,
                429 => limited += 1,
                s => panic!("unexpected status {s}"),
            }
        }
        (ok, limited, window, slowest)
    }

    let (ok, limited, window, slowest) = drive(&c, 10.0, None).await;
    eprintln!("redis: {ok} ok, {limited} limited in {window:.2} s, slowest {slowest:?}");
    assert!(window < 11.0, "the driver fell behind: {window:.2} s");
    // 50/s for 10 s plus the burst of 5: 505 ± 10%. The limit counts arrivals at Redis: on an
    // overloaded machine the last requests arrive late, stretching the window by up to the
    // slowest request, so the upper bound allows for what was measured.
    let allowed = |secs: f64| 50.0 * secs + 5.0;
    let upper = allowed(window + slowest.as_secs_f64()).max(allowed(10.0)) * 1.1;
    assert!(
        ok as f64 >= allowed(10.0) * 0.9 && ok as f64 <= upper,
        "{ok} successes at 50/s over {window:.2} s (slowest {slowest:?}); expected 505 ± 10%"
    );
    for i in 0..3 {
        assert_eq!(c.readyz(i).await["checks"]["rate_limit"], "redis");
    }

    // Redis dies after one second: every instance keeps answering, within its timeout, and
    // limits in process at its third of the limit.
    let with_redis = slowest;
    let (ok, limited, window, slowest) = drive(&c, 4.0, Some(1.0)).await;
    eprintln!("redis lost: {ok} ok, {limited} limited in {window:.2} s, slowest {slowest:?}");
    // Losing Redis costs a request at most its Redis timeout (300 ms here), never a hang.
    assert!(
        slowest < with_redis.max(Duration::from_millis(500)) + Duration::from_secs(1),
        "a request waited {slowest:?} (at most {with_redis:?} with Redis up)"
    );
    assert!(
        (150..=300).contains(&ok),
        "{ok} successes over 4 s at ~50/s"
    );
    for i in 0..3 {
        let r = c.readyz(i).await;
        let mode = r["checks"]["rate_limit"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(mode.starts_with("fallback"), "{r}");
        assert!(mode.contains("1/3"), "{r}");
        let metrics = get_text(&c.client, &format!("{}/metrics", c.base(i))).await;
        assert!(metrics.contains("livegate_redis_fallback 1\n"), "{metrics}");
    }
    c.redis.child.0.kill().ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instances_reservations_expire() {
    let Some(mut c) = Cluster::start(2_000).await else {
        return;
    };
    c.rule(json!({"score": 0.95, "delay_ms": 8000})).await;
    let client = c.client.clone();
    let victim = c.base(0).to_owned();
    for i in 0..5u8 {
        let client = client.clone();
        let victim = victim.clone();
        tokio::spawn(async move {
            // The instance dies under this request: its error is the point.
            let form = reqwest::multipart::Form::new().part(
                "image",
                reqwest::multipart::Part::bytes(small_jpeg(i)).file_name("s.jpg"),
            );
            let _ = client
                .post(format!("{victim}/v1/liveness"))
                .bearer_auth(METERED)
                .multipart(form)
                .send()
                .await;
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.store.open_reservations("metered").await.expect("open") < 10 {
        assert!(Instant::now() < deadline, "reservations never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        c.store.balance("metered").await.expect("b"),
        Some(INITIAL - 10)
    );
    let (_, mut victim_proc) = c.instances.remove(0);
    let _ = Command::new("kill")
        .args(["-9", &victim_proc.0.id().to_string()])
        .status();
    let _ = victim_proc.0.wait();
    // The other instances' sweepers release them once they expire (2 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.store.open_reservations("metered").await.expect("open") > 0 {
        assert!(
            Instant::now() < deadline,
            "reservations were never released"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ledger(&c.store, "metered", INITIAL).await;
    let ledger = c.store.ledger("metered").await.expect("ledger");
    assert_eq!(ledger.iter().filter(|e| e.kind == "expire").count(), 5);
    // No verification was stored for them: the instance died before answering.
    assert_eq!(ledger.iter().filter(|e| e.kind == "charge").count(), 0);
}

/// The Redis limiter keeps Redis' microseconds: at 30 calls a second (an interval of 33333.33 µs)
/// sixty calls in a burst move the stored arrival time by sixty intervals, to a few
/// microseconds. Lua's default number format would round each stored value to 100 µs and lose
/// ~2 ms over the run. (The burst takes far less than the two seconds it books, so the arrival
/// time never falls back to the clock.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_limiter_keeps_microseconds() {
    let Some(redis) = start_redis() else {
        return;
    };
    let limits = livegate::http::limiter::RateLimits::redis(&redis.url, Duration::from_secs(2))
        .expect("redis url");
    let spec = livegate::config::RateSpec {
        per_second: 30.0,
        burst: 100,
    };
    let client = ::redis::Client::open(redis.url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let stored = |v: String| v.parse::<f64>().expect("a number");
    assert!(limits.check("tenant", "precise", spec).await.allowed);
    let first: String = ::redis::cmd("GET")
        .arg("livegate:rl:us:precise")
        .query_async(&mut conn)
        .await
        .expect("get");
    for _ in 0..60 {
        assert!(limits.check("tenant", "precise", spec).await.allowed);
    }
    let last: String = ::redis::cmd("GET")
        .arg("livegate:rl:us:precise")
        .query_async(&mut conn)
        .await
        .expect("get");
    let moved = stored(last) - stored(first);
    let expected = 60.0 * 1_000_000.0 / 30.0;
    assert!(
        // A double holds today's epoch in microseconds to a quarter of one.
        (moved - expected).abs() < 20.0,
        "moved {moved} µs, expected {expected} µs"
    );
    drop(redis.child);
}
