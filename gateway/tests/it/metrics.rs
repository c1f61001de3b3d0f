//! `/metrics` after a known mix of requests (exact counts: each gateway has its own registry)
//! and the `Server-Timing` header on every answer.

use std::collections::BTreeMap;

use livegate::config::KeyHash;
use serde_json::json;

use crate::harness::{
    ACME_KEY, COLL_KEY, DIDIT_SECRET, Harness, KAIROS_APP_ID, KAIROS_KEY, Sim, SimUrls, jpeg,
};

const FLAKY_KEY: &str = "lg_test_metrics_flaky_key_77";

/// The default tenants plus `flaky`, whose Didit client opens its circuit on the first failure.
fn metrics_yaml(u: &SimUrls) -> String {
    let (d, k, c) = (u.didit, u.kairos, u.collections);
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{d}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
  flaky: {{ kind: didit, base_url: "{d}", api_key: "{DIDIT_SECRET}", timeout_ms: 1500, circuit_breaker: {{ failures: 1, cooldown_ms: 600000 }} }}
  kairos: {{ kind: kairos, base_url: "{k}", app_id: "{KAIROS_APP_ID}", app_key: "${{TEST_KAIROS_KEY}}", timeout_ms: 1500 }}
  engine: {{ kind: collections, base_url: "{c}", api_key: "${{TEST_COLL_KEY}}", collection_id: "selfies", timeout_ms: 1500 }}
tenants:
  acme: {{ keys: ["{acme}"], threshold: 0.8, routing: {{ strategy: single, providers: [didit] }} }}
  flaky_t: {{ keys: ["{flaky}"], threshold: 0.8, routing: {{ strategy: single, providers: [flaky] }} }}
  kairos_t: {{ keys: ["{kt}"], threshold: 0.8, routing: {{ strategy: single, providers: [kairos] }} }}
  coll_t: {{ keys: ["{ct}"], threshold: 0.8, routing: {{ strategy: single, providers: [engine] }} }}
"#,
        acme = KeyHash::of_key(ACME_KEY),
        flaky = KeyHash::of_key(FLAKY_KEY),
        kt = KeyHash::of_key(KAIROS_KEY),
        ct = KeyHash::of_key(COLL_KEY),
    )
}

/// Sample lines of an exposition, `name{labels}` → value (labels as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

async fn scrape(h: &Harness) -> (String, BTreeMap<String, f64>) {
    let resp = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .expect("scrape");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.expect("body");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    let s = samples(&text);
    (text, s)
}

#[track_caller]
fn expect(s: &BTreeMap<String, f64>, text: &str, key: &str, want: f64) {
    assert_eq!(s.get(key).copied(), Some(want), "{key} in\n{text}");
}

async fn counts_after_a_known_mix(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    for seed in 0..2 {
        let r = h.liveness(ACME_KEY, "image", jpeg(seed), &[]).await;
        assert_eq!(r.body["decision"], "approved", "{}", r.body);
    }
    h.sim_rule_on(Sim::Didit, json!({"score": 0.6, "times": 1}))
        .await;
    let r = h.liveness(ACME_KEY, "image", jpeg(2), &[]).await;
    assert_eq!(r.body["decision"], "declined", "{}", r.body);
    h.sim_rule_on(Sim::Didit, json!({"status": 503, "times": 1}))
        .await;
    let r = h.liveness(FLAKY_KEY, "image", jpeg(3), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "provider_unavailable");
    let r = h.liveness(KAIROS_KEY, "image", jpeg(4), &[]).await;
    assert_eq!(r.body["decision"], "approved", "{}", r.body);
    let r = h
        .liveness("lg_test_nobody_has_this_key", "image", jpeg(5), &[])
        .await;
    assert_eq!(r.status, 401);
    let r = h
        .liveness(COLL_KEY, "image", b"not an image at all".to_vec(), &[])
        .await;
    assert!(r.status >= 400 && r.status < 500, "{}", r.body);
    let bad_image_code = r.body["code"].as_str().expect("code").to_owned();

    // What issue 4's rate limiter, Redis fallback, ledger and store writer report.
    h.state.metrics.rate_limited("acme");
    h.state.metrics.rate_limited("acme");
    h.state.metrics.set_redis_fallback(true);
    h.state.metrics.set_credit_balance("acme", 42);
    h.state.metrics.set_credit_balance("acme", -3);

    let (text, s) = scrape(&h).await;
    let req = |t: &str, d: &str, p: &str| {
        format!("livegate_requests_total{{tenant=\"{t}\",decision=\"{d}\",provider=\"{p}\"}}")
    };
    expect(&s, &text, &req("acme", "approved", "didit"), 2.0);
    expect(&s, &text, &req("acme", "declined", "didit"), 1.0);
    expect(&s, &text, &req("flaky_t", "error", "flaky"), 1.0);
    expect(&s, &text, &req("kairos_t", "approved", "kairos"), 1.0);
    expect(&s, &text, &req("coll_t", "error", "none"), 1.0);
    let requests: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("livegate_requests_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(requests, 6.0, "{text}");

    let lat = |p: &str, o: &str| {
        format!("livegate_provider_latency_seconds_count{{provider=\"{p}\",outcome=\"{o}\"}}")
    };
    expect(&s, &text, &lat("didit", "ok"), 3.0);
    expect(&s, &text, &lat("flaky", "error"), 1.0);
    expect(&s, &text, &lat("kairos", "ok"), 1.0);
    assert!(!s.contains_key(&lat("didit", "error")), "{text}");

    // Every POST /v1/liveness, the unauthorized one included.
    expect(&s, &text, "livegate_overhead_seconds_count", 7.0);

    expect(
        &s,
        &text,
        "livegate_errors_total{code=\"provider_unavailable\"}",
        1.0,
    );
    expect(
        &s,
        &text,
        "livegate_errors_total{code=\"unauthorized\"}",
        1.0,
    );
    expect(
        &s,
        &text,
        &format!("livegate_errors_total{{code=\"{bad_image_code}\"}}"),
        1.0,
    );

    expect(
        &s,
        &text,
        "livegate_circuit_breaker_state{provider=\"flaky\"}",
        2.0,
    );
    expect(
        &s,
        &text,
        "livegate_circuit_breaker_state{provider=\"didit\"}",
        0.0,
    );
    expect(
        &s,
        &text,
        "livegate_circuit_breaker_state{provider=\"kairos\"}",
        0.0,
    );

    expect(
        &s,
        &text,
        "livegate_rate_limited_total{tenant=\"acme\"}",
        2.0,
    );
    expect(&s, &text, "livegate_redis_fallback", 1.0);
    expect(&s, &text, "livegate_credit_balance{tenant=\"acme\"}", -3.0);
    // One write per stored verification (the unauthorized request has no row).
    expect(&s, &text, "livegate_store_batch_size_count", 6.0);
    expect(&s, &text, "livegate_store_batch_size_sum", 6.0);
    expect(&s, &text, "livegate_store_write_seconds_count", 6.0);

    // Scraping counts nothing: a second scrape sees the same requests.
    let (text2, s2) = scrape(&h).await;
    expect(&s2, &text2, &req("acme", "approved", "didit"), 2.0);
    expect(&s2, &text2, "livegate_overhead_seconds_count", 7.0);
}

/// `provider;dur=…, overhead;dur=…, total;dur=…` in milliseconds.
fn timing(r: &reqwest::header::HeaderMap) -> (f64, f64, f64) {
    let v = r
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .expect("Server-Timing header");
    let mut got = BTreeMap::new();
    for part in v.split(',') {
        let (name, dur) = part.trim().split_once(";dur=").expect(v);
        got.insert(name.to_owned(), dur.parse::<f64>().expect(v));
    }
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["overhead", "provider", "total"],
        "{v}"
    );
    (got["provider"], got["overhead"], got["total"])
}

async fn server_timing_on_every_answer(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95, "delay_ms": 250}))
        .await;
    let r = h.liveness(ACME_KEY, "image", jpeg(9), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (provider, overhead, total) = timing(&r.headers);
    assert!(
        provider >= 250.0,
        "provider {provider} ms includes the upstream's 250 ms"
    );
    assert!(total >= provider, "{total} >= {provider}");
    assert!(
        (total - provider - overhead).abs() < 0.002,
        "overhead = total - provider: {provider} {overhead} {total}"
    );

    // No provider involved: all of it is livegate's own time.
    let r = h.liveness("lg_test_wrong_key", "image", jpeg(9), &[]).await;
    assert_eq!(r.status, 401);
    let (provider, overhead, total) = timing(&r.headers);
    assert_eq!(provider, 0.0);
    assert!((overhead - total).abs() < 0.002, "{overhead} {total}");

    for path in ["/healthz", "/readyz", "/metrics", "/openapi.yaml", "/nope"] {
        let r = Harness::call(h.client.get(h.url(path))).await;
        let (provider, _, _) = timing(&r.headers);
        assert_eq!(provider, 0.0, "{path}");
    }
    let r = h.get(ACME_KEY, "/v1/verifications").await;
    assert_eq!(r.status, 200);
    timing(&r.headers);
}

crate::backend_matrix!(yaml = metrics_yaml; counts_after_a_known_mix, server_timing_on_every_answer);
