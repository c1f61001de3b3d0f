//! Credits, idempotency and in-process rate limits, through HTTP, with the ledger checked in
//! the store (SQLite and Postgres).

use std::collections::HashMap;
use std::sync::Arc;

use livegate::config::KeyHash;
use livegate::store::DynStore;
use serde_json::json;

use crate::harness::{Backend, Harness, KAIROS_APP_ID, Sim, SimUrls, get_text, jpeg, small_jpeg};

pub const METERED_KEY: &str = "lg_test_metered_key_314159";
pub const FALLBACK_KEY: &str = "lg_test_metered_fallback_2718";
pub const SHADOW_KEY: &str = "lg_test_metered_shadow_1414";
pub const LIMITED_KEY: &str = "lg_test_limited_key_1732";
pub const LIMITED_KEY_2: &str = "lg_test_limited_key_2_1733";
pub const ADMIN_KEY: &str = "lg_test_admin_key_9999";

/// Covers exactly 137 checks at 2 credits on Didit.
pub const INITIAL: i64 = 274;

pub fn yaml(u: &SimUrls) -> String {
    let (didit, kairos) = (u.didit, u.kairos);
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 3000 }}
  kairos: {{ kind: kairos, base_url: "{kairos}", app_id: "{kid}", app_key: "${{TEST_KAIROS_KEY}}", timeout_ms: 3000 }}
admin: {{ keys: ["{admin}"] }}
limits: {{ max_pixels: 4000000, idempotency_wait_ms: 5000 }}
tenants:
  metered:
    keys: ["{metered}"]
    routing: {{ strategy: single, providers: [didit] }}
    credits: {{ initial: {INITIAL}, cost: {{ didit: 2, kairos: 1 }} }}
  fb:
    keys: ["{fb}"]
    routing: {{ strategy: fallback, providers: [didit, kairos] }}
    credits: {{ initial: 10, cost: {{ didit: 2, kairos: 1 }} }}
  shadowed:
    keys: ["{shadow}"]
    routing: {{ strategy: shadow, providers: [kairos, didit] }}
    credits: {{ initial: 10, cost: {{ didit: 5, kairos: 1 }} }}
  limited:
    keys: ["{limited}", {{ hash: "{limited2}", rate_limit: {{ per_second: 1, burst: 1 }} }}]
    routing: {{ strategy: single, providers: [didit] }}
    rate_limit: {{ per_second: 2, burst: 3 }}
"#,
        kid = KAIROS_APP_ID,
        admin = KeyHash::of_key(ADMIN_KEY),
        metered = KeyHash::of_key(METERED_KEY),
        fb = KeyHash::of_key(FALLBACK_KEY),
        shadow = KeyHash::of_key(SHADOW_KEY),
        limited = KeyHash::of_key(LIMITED_KEY),
        limited2 = KeyHash::of_key(LIMITED_KEY_2),
    )
}

async fn start(backend: Backend) -> Option<Harness> {
    Harness::start_with(backend, yaml).await
}

/// balance == sum(ledger), and no reservation left open.
pub async fn assert_ledger(store: &DynStore, tenant: &str, expected_balance: i64) {
    let balance = store
        .balance(tenant)
        .await
        .expect("balance")
        .expect("account");
    let ledger = store.ledger(tenant).await.expect("ledger");
    let sum: i64 = ledger.iter().map(|e| e.amount).sum();
    assert_eq!(balance, expected_balance, "balance of {tenant}");
    assert_eq!(sum, balance, "sum(ledger) of {tenant}");
    assert_eq!(store.open_reservations(tenant).await.expect("open"), 0);
}

fn kinds(ledger: &[livegate::store::ledger::LedgerEntry]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for e in ledger {
        *m.entry(e.kind.clone()).or_default() += 1;
    }
    m
}

async fn concurrent_requests_never_overspend(h: Harness) {
    h.sim_rule(json!({"score": 0.95, "delay_ms": 20})).await;
    let h = Arc::new(h);
    // Encoded up front: 500 JPEG encodings inside the tasks would stall the runtime that also
    // serves the gateway.
    let images: Vec<Vec<u8>> = (0..=250u8).map(small_jpeg).collect();
    let mut tasks = Vec::new();
    for i in 0..500usize {
        let h = h.clone();
        let image = images[i % images.len()].clone();
        tasks.push(tokio::spawn(async move {
            h.liveness(METERED_KEY, "image", image, &[]).await
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        let r = t.await.expect("task");
        *by_status.entry(r.status).or_default() += 1;
        match r.status {
            200 => {
                assert!(matches!(
                    r.body["decision"].as_str(),
                    Some("approved" | "declined")
                ));
                assert_eq!(r.body["credits"]["charged"], 2, "{}", r.body);
            }
            402 => {
                assert_eq!(r.body["code"], "insufficient_credits", "{}", r.body);
                assert!(r.body["balance"].as_i64().expect("balance") < 2);
            }
            other => panic!("unexpected status {other}: {}", r.body),
        }
    }
    assert_eq!(by_status.get(&200), Some(&137), "{by_status:?}");
    let metrics = get_text(&h.client, &format!("{}/metrics", h.base)).await;
    assert!(
        metrics.contains("livegate_credit_balance{tenant=\"metered\"} 0\n"),
        "{metrics}"
    );
    assert_eq!(by_status.get(&402), Some(&363), "{by_status:?}");
    assert_ledger(&h.store, "metered", INITIAL - 137 * 2).await;
    let ledger = h.store.ledger("metered").await.expect("ledger");
    let k = kinds(&ledger);
    assert_eq!(k.get("charge"), Some(&137));
    assert_eq!(k.get("reserve"), Some(&137));
    assert_eq!(k.get("initial"), Some(&1));
    // Every charge points at its stored verification.
    for e in ledger.iter().filter(|e| e.kind == "charge") {
        let vid = e.verification_id.expect("verification id");
        let v = h.store.get_verification("metered", vid).await.expect("row");
        assert!(v.decision.is_some());
    }
}

async fn the_provider_that_answered_is_charged(h: Harness) {
    // Didit fails, Kairos answers: 2 reserved, 1 kept.
    h.sim_rule_on(Sim::Didit, json!({"status": 500})).await;
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    let r = h.liveness(FALLBACK_KEY, "image", jpeg(1), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["provider"], "kairos");
    assert_eq!(r.body["credits"], json!({"charged": 1, "remaining": 9}));
    assert_ledger(&h.store, "fb", 9).await;
    let ledger = h.store.ledger("fb").await.expect("ledger");
    let moves: Vec<(&str, i64)> = ledger.iter().map(|e| (e.kind.as_str(), e.amount)).collect();
    assert_eq!(
        moves,
        [
            ("initial", 10),
            ("reserve", -2),
            ("release", 2),
            ("charge", -1)
        ]
    );

    // Both fail: no verdict, no charge.
    h.sim_rule_on(Sim::Kairos, json!({"status": 500})).await;
    let r = h.liveness(FALLBACK_KEY, "image", jpeg(2), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_ledger(&h.store, "fb", 9).await;

    // A shadow call is never charged: kairos (1) decides, didit (5) only shadows.
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    let r = h.liveness(SHADOW_KEY, "image", jpeg(3), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["credits"]["charged"], 1);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_ledger(&h.store, "shadowed", 9).await;
}

async fn admin_top_up_and_tenant_view(h: Harness) {
    let url = format!("{}/admin/v1/tenants/metered/credits", h.base);
    let body = json!({"amount": 26, "reason": "invoice 42"});
    // A tenant key is recognised and refused.
    let r = Harness::reply(
        h.client
            .post(&url)
            .bearer_auth(METERED_KEY)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = Harness::reply(
        h.client
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["balance"], INITIAL + 26);
    assert_eq!(r.body["kind"], "topup");
    let r = Harness::reply(
        h.client
            .post(&url)
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"amount": -6, "reason": "goodwill reversal"}))
            .send()
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(r.body["kind"], "adjust", "{}", r.body);
    assert_eq!(r.body["balance"], INITIAL + 20);
    for (bad, code) in [
        (json!({"amount": 0, "reason": "x"}), "invalid_amount"),
        (json!({"amount": 5, "reason": " "}), "invalid_reason"),
        (json!({"amount": "five"}), "invalid_body"),
    ] {
        let r = Harness::reply(
            h.client
                .post(&url)
                .bearer_auth(ADMIN_KEY)
                .json(&bad)
                .send()
                .await
                .expect("send"),
        )
        .await;
        assert_eq!((r.status, r.body["code"].as_str()), (400, Some(code)));
    }
    let r = Harness::call(
        h.client
            .post(h.url("/admin/v1/tenants/nobody/credits"))
            .bearer_auth(ADMIN_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = Harness::call(
        h.client
            .post(h.url("/admin/v1/tenants/limited/credits"))
            .bearer_auth(ADMIN_KEY)
            .json(&body),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("tenant_unmetered"))
    );
    let ledger = h.store.ledger("metered").await.expect("ledger");
    let last = ledger.last().expect("rows");
    assert_eq!(
        (last.kind.as_str(), last.amount, last.reason.as_deref()),
        ("adjust", -6, Some("goodwill reversal"))
    );
    assert_ledger(&h.store, "metered", INITIAL + 20).await;

    h.sim_rule(json!({"score": 0.95})).await;
    let r = h.liveness(METERED_KEY, "image", jpeg(9), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = h.get(METERED_KEY, "/v1/tenant").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({"tenant": "metered", "balance": INITIAL + 18, "rate_limit": null, "usage_today": 1})
    );
    let r = h.get(LIMITED_KEY, "/v1/tenant").await;
    assert_eq!(
        r.body,
        json!({"tenant": "limited", "balance": null, "rate_limit": {"per_second": 2.0, "burst": 3}, "usage_today": 0})
    );
}

async fn post_with_key(
    h: &Harness,
    idem: &str,
    image: Vec<u8>,
    threshold: &str,
) -> crate::harness::Reply {
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(image).file_name("a.jpg"),
        )
        .text("threshold", threshold.to_owned());
    Harness::call(
        h.client
            .post(h.url("/v1/liveness"))
            .bearer_auth(METERED_KEY)
            .header("Idempotency-Key", idem)
            .multipart(form),
    )
    .await
}

async fn idempotency_replays_without_charging(h: Harness) {
    h.sim_rule(json!({"score": 0.95})).await;
    let first = post_with_key(&h, "order-1", jpeg(5), "0.6").await;
    assert_eq!(first.status, 200, "{}", first.body);
    let calls = h.sim_requests().await.len();
    // Same key, same request (a new multipart boundary): the same answer, no new call or charge.
    let again = post_with_key(&h, "order-1", jpeg(5), "0.6").await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, first.body);
    let (row, _) = h
        .row("metered", first.body["id"].as_str().expect("id"))
        .await;
    assert_eq!(
        row.image_sha256,
        Some(hex::encode(<sha2::Sha256 as sha2::Digest>::digest(jpeg(5))))
    );
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(h.sim_requests().await.len(), calls);
    assert_eq!(h.row_count("metered").await, 1);
    assert_ledger(&h.store, "metered", INITIAL - 2).await;
    // Same key, another request: refused, nothing charged.
    for (image, threshold) in [(jpeg(6), "0.6"), (jpeg(5), "0.7")] {
        let r = post_with_key(&h, "order-1", image, threshold).await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["code"], "idempotency_key_reused");
    }
    assert_eq!(h.sim_requests().await.len(), calls);
    assert_ledger(&h.store, "metered", INITIAL - 2).await;
    // Malformed key.
    let r = post_with_key(&h, "", jpeg(5), "0.6").await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("idempotency_key_invalid"))
    );

    // A failed request releases its key: the retry runs and is charged once.
    h.sim_rule(json!({"status": 500, "times": 1})).await;
    let r = post_with_key(&h, "order-2", jpeg(7), "0.6").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_ledger(&h.store, "metered", INITIAL - 2).await;
    let r = post_with_key(&h, "order-2", jpeg(7), "0.6").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ledger(&h.store, "metered", INITIAL - 4).await;
}

async fn concurrent_duplicates_run_once(h: Harness) {
    h.sim_rule(json!({"score": 0.95, "delay_ms": 400})).await;
    let h = Arc::new(h);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            post_with_key(&h, "same-key", jpeg(8), "0.6").await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        let r = t.await.expect("task");
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.body["id"].clone());
    }
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
    assert_eq!(h.sim_requests().await.len(), 1);
    assert_eq!(h.row_count("metered").await, 1);
    assert_ledger(&h.store, "metered", INITIAL - 2).await;
}

/// A repeat waiting on a key held by a request of this instance is woken when that request
/// ends, not at its next look: by the time the holder ends (1.8 s) the waiter's pause between
/// looks has grown to a second, yet its answer follows the holder's at once.
async fn a_waiter_is_woken_when_the_key_is_done(h: Harness) {
    h.sim_rule(json!({"score": 0.95, "delay_ms": 1800})).await;
    let h = Arc::new(h);
    let first = {
        let h = h.clone();
        tokio::spawn(async move {
            let r = post_with_key(&h, "wake-key", jpeg(21), "0.6").await;
            (r, std::time::Instant::now())
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let repeat = post_with_key(&h, "wake-key", jpeg(21), "0.6").await;
    let repeated_at = std::time::Instant::now();
    let (first, first_at) = first.await.expect("task");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(repeat.status, 200, "{}", repeat.body);
    assert_eq!(repeat.body["id"], first.body["id"]);
    let gap = repeated_at.saturating_duration_since(first_at);
    assert!(
        gap < std::time::Duration::from_millis(400),
        "the waiter answered {gap:?} after the holder"
    );
}

async fn rate_limits_in_process(h: Harness) {
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..6 {
        let r = h.get(LIMITED_KEY, "/v1/tenant").await;
        assert!(
            r.headers.contains_key("ratelimit-policy"),
            "{:?}",
            r.headers
        );
        assert!(r.headers.contains_key("ratelimit"), "{:?}", r.headers);
        statuses.push(r.status);
        last = Some(r);
    }
    // Burst 3 at 2/s: three pass at once, the rest are refused.
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let r = last.expect("reply");
    assert_eq!(r.body["code"], "rate_limited");
    let retry: u64 = r.headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("n");
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(
        r.headers["ratelimit-policy"].to_str().expect("ascii"),
        "\"tenant\";q=2;w=1;burst=3"
    );
    assert!(
        r.headers["ratelimit"]
            .to_str()
            .expect("ascii")
            .starts_with("\"tenant\";r=0;t="),
        "{:?}",
        r.headers["ratelimit"]
    );
    // Another tenant is not affected.
    let r = h.get(METERED_KEY, "/v1/tenant").await;
    assert_eq!(r.status, 200);
    assert!(!r.headers.contains_key("ratelimit-policy"));
    // After a second, one more is allowed.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(h.get(LIMITED_KEY, "/v1/tenant").await.status, 200);

    // A key with its own limit (1/s, burst 1) is held to it, within its tenant's.
    tokio::time::sleep(std::time::Duration::from_millis(1600)).await;
    let a = h.get(LIMITED_KEY_2, "/v1/tenant").await;
    let b = h.get(LIMITED_KEY_2, "/v1/tenant").await;
    assert_eq!((a.status, b.status), (200, 429), "{}", b.body);
    assert!(
        b.headers["ratelimit"]
            .to_str()
            .expect("ascii")
            .starts_with("\"key\";r=0"),
        "{:?}",
        b.headers["ratelimit"]
    );
    // The key's refusal did not spend the tenant's budget.
    assert_eq!(h.get(LIMITED_KEY, "/v1/tenant").await.status, 200);
    let metrics = get_text(&h.client, &format!("{}/metrics", h.base)).await;
    assert!(
        metrics.contains("livegate_rate_limited_total{tenant=\"limited\"} 4\n"),
        "{metrics}"
    );
    assert!(metrics.contains("livegate_redis_fallback 0\n"), "{metrics}");
}

async fn expired_reservations_are_released(h: Harness) {
    use livegate::store::ledger::{ReserveOutcome, ReserveRequest};
    h.store
        .ensure_account("metered", INITIAL)
        .await
        .expect("account");
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    let out = h
        .store
        .reserve_batch(&[ReserveRequest {
            id: uuid::Uuid::now_v7(),
            tenant_id: "metered".into(),
            amount: 7,
            expires_at: past,
        }])
        .await
        .expect("reserve");
    assert_eq!(
        out,
        [ReserveOutcome::Reserved {
            balance: INITIAL - 7
        }]
    );
    assert_eq!(h.store.open_reservations("metered").await.expect("open"), 7);
    assert_eq!(
        h.store
            .expire_reservations(chrono::Utc::now())
            .await
            .expect("sweep"),
        1
    );
    assert_eq!(
        h.store
            .expire_reservations(chrono::Utc::now())
            .await
            .expect("sweep"),
        0
    );
    assert_ledger(&h.store, "metered", INITIAL).await;
    let k = kinds(&h.store.ledger("metered").await.expect("ledger"));
    assert_eq!(k.get("expire"), Some(&1));
}

mod sqlite {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_never_overspend() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::concurrent_requests_never_overspend(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_provider_that_answered_is_charged() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::the_provider_that_answered_is_charged(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_top_up_and_tenant_view() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::admin_top_up_and_tenant_view(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotency_replays_without_charging() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::idempotency_replays_without_charging(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_duplicates_run_once() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::concurrent_duplicates_run_once(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_woken_when_the_key_is_done() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::a_waiter_is_woken_when_the_key_is_done(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rate_limits_in_process() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::rate_limits_in_process(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_reservations_are_released() {
        if let Some(h) = start(Backend::Sqlite).await {
            super::expired_reservations_are_released(h).await;
        }
    }
}

mod postgres {
    use super::*;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_never_overspend() {
        if let Some(h) = start(Backend::Postgres).await {
            super::concurrent_requests_never_overspend(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_provider_that_answered_is_charged() {
        if let Some(h) = start(Backend::Postgres).await {
            super::the_provider_that_answered_is_charged(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_top_up_and_tenant_view() {
        if let Some(h) = start(Backend::Postgres).await {
            super::admin_top_up_and_tenant_view(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idempotency_replays_without_charging() {
        if let Some(h) = start(Backend::Postgres).await {
            super::idempotency_replays_without_charging(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_duplicates_run_once() {
        if let Some(h) = start(Backend::Postgres).await {
            super::concurrent_duplicates_run_once(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_waiter_is_woken_when_the_key_is_done() {
        if let Some(h) = start(Backend::Postgres).await {
            super::a_waiter_is_woken_when_the_key_is_done(h).await;
        }
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn expired_reservations_are_released() {
        if let Some(h) = start(Backend::Postgres).await {
            super::expired_reservations_are_released(h).await;
        }
    }
}
