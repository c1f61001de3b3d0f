//! Routing strategies, per-provider resilience and tenant policy, over HTTP: fault rules on the
//! simulators in; answers, `verification_attempts` rows, simulator request logs and `/readyz`
//! out. Every case gets its own gateway and simulators, so circuit state never leaks between
//! cases.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use livegate::config::KeyHash;
use livegate::store::AttemptRecord;
use serde_json::{Value, json};

use crate::harness::{COLL_SECRET, DIDIT_SECRET, Harness, Reply, Sim, SimUrls, encode, jpeg};

const FB: &str = "lg_test_route_fallback_01";
const FB_KAIROS: &str = "lg_test_route_fallback_kairos_02";
const FB_DEAD: &str = "lg_test_route_fallback_dead_03";
const FB_CB: &str = "lg_test_route_fallback_breaker_04";
const FB_RETRY: &str = "lg_test_route_fallback_retry_05";
const RETRY: &str = "lg_test_route_single_retry_06";
const BREAKER: &str = "lg_test_route_breaker_07";
const DEADLINE: &str = "lg_test_route_deadline_08";
const WEIGHTED: &str = "lg_test_route_weighted_09";
const WEIGHTED_FB: &str = "lg_test_route_weighted_fb_10";
const WEIGHTED_NOFB: &str = "lg_test_route_weighted_nofb_11";
const SHADOW: &str = "lg_test_route_shadow_12";
const CONC: &str = "lg_test_route_concurrency_13";
const RPS: &str = "lg_test_route_rps_14";
const PLAIN: &str = "lg_test_route_plain_15";
const KAI: &str = "lg_test_route_kairos_16";
const COLL: &str = "lg_test_route_coll_17";
const BAND: &str = "lg_test_route_band_18";
const ACTIONS: &str = "lg_test_route_actions_19";
const GATES: &str = "lg_test_route_gates_20";
const OVERRIDE: &str = "lg_test_route_override_21";

/// Cool-down of `didit_cb`: long enough for a loaded CI box to see the open state, short
/// enough to wait out twice.
const COOLDOWN: Duration = Duration::from_millis(1000);
/// `routing.deadline_ms` of the `deadline` tenant.
const DEADLINE_MS: u64 = 800;

/// A URL where nothing listens: a port the OS just handed out and took back.
fn closed_port_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn tenant(id: &str, key: &str, extra: &str, routing: &str) -> String {
    format!(
        "  {id}:\n    keys: [\"{}\"]\n    threshold: 0.8\n{extra}    routing: {routing}\n",
        KeyHash::of_key(key)
    )
}

/// Every provider and tenant the cases below use, on one gateway's three simulators.
fn routing_yaml(u: &SimUrls) -> String {
    let (d, k, c) = (u.didit, u.kairos, u.collections);
    let dead = closed_port_url();
    // The shared providers never trip their breaker here: the cases count calls instead.
    let calm = "circuit_breaker: { failures: 100 }";
    let didit = |name: &str, url: &str, extra: &str| {
        format!(
            "  {name}: {{ kind: didit, base_url: \"{url}\", api_key: \"{DIDIT_SECRET}\", {extra} }}\n"
        )
    };
    let kairos = |name: &str, extra: &str| {
        format!(
            "  {name}: {{ kind: kairos, base_url: \"{k}\", app_id: \"app\", app_key: \"secret\", {extra} }}\n"
        )
    };
    let providers = [
        didit("didit", d, &format!("timeout_ms: 400, {calm}")),
        kairos("kairos", &format!("timeout_ms: 3000, {calm}")),
        format!(
            "  engine: {{ kind: collections, base_url: \"{c}\", api_key: \"{COLL_SECRET}\", collection_id: \"selfies\", timeout_ms: 1500 }}\n"
        ),
        didit("dead", &dead, &format!("timeout_ms: 1000, {calm}")),
        didit("didit_r", d, &format!("timeout_ms: 1000, retries: 2, {calm}")),
        didit(
            "didit_cb",
            d,
            &format!(
                "timeout_ms: 3000, circuit_breaker: {{ failures: 3, cooldown_ms: {} }}",
                COOLDOWN.as_millis()
            ),
        ),
        didit(
            "didit_cb_long",
            d,
            "timeout_ms: 1000, circuit_breaker: { failures: 2, cooldown_ms: 60000 }",
        ),
        didit("didit_slow", d, &format!("timeout_ms: 300, retries: 5, {calm}")),
        kairos("kairos_slow", &format!("timeout_ms: 300, {calm}")),
        didit("didit_c1", d, "timeout_ms: 3000, max_concurrency: 1"),
        didit("didit_rps", d, "timeout_ms: 3000, max_rps: 5"),
    ]
    .concat();
    let tenants = [
        tenant("fb", FB, "", "{ strategy: fallback, providers: [didit, kairos] }"),
        tenant(
            "fb_kairos",
            FB_KAIROS,
            "",
            "{ strategy: fallback, providers: [kairos, didit] }",
        ),
        tenant(
            "fb_dead",
            FB_DEAD,
            "",
            "{ strategy: fallback, providers: [dead, kairos] }",
        ),
        tenant(
            "fb_cb",
            FB_CB,
            "",
            "{ strategy: fallback, providers: [didit_cb_long, kairos] }",
        ),
        tenant(
            "fb_retry",
            FB_RETRY,
            "",
            "{ strategy: fallback, providers: [didit_r, kairos] }",
        ),
        tenant("retry", RETRY, "", "{ strategy: single, providers: [didit_r] }"),
        tenant("breaker", BREAKER, "", "{ strategy: single, providers: [didit_cb] }"),
        tenant(
            "deadline",
            DEADLINE,
            "",
            &format!(
                "{{ strategy: fallback, providers: [didit_slow, kairos_slow], deadline_ms: {DEADLINE_MS} }}"
            ),
        ),
        tenant(
            "weighted",
            WEIGHTED,
            "",
            "{ strategy: weighted, providers: [didit, kairos], weights: [90, 10] }",
        ),
        tenant(
            "weighted_fb",
            WEIGHTED_FB,
            "",
            "{ strategy: weighted, providers: [didit, kairos], weights: [100, 0], fallback: true }",
        ),
        tenant(
            "weighted_nofb",
            WEIGHTED_NOFB,
            "",
            "{ strategy: weighted, providers: [didit, kairos], weights: [100, 0] }",
        ),
        tenant(
            "shadow",
            SHADOW,
            "",
            "{ strategy: shadow, providers: [didit, kairos] }",
        ),
        tenant("conc", CONC, "", "{ strategy: single, providers: [didit_c1] }"),
        tenant("rps", RPS, "", "{ strategy: single, providers: [didit_rps] }"),
        tenant("plain", PLAIN, "", "{ strategy: single, providers: [didit] }"),
        tenant("kai", KAI, "", "{ strategy: single, providers: [kairos] }"),
        tenant("coll", COLL, "", "{ strategy: single, providers: [engine] }"),
        tenant(
            "band",
            BAND,
            "    review_band: 0.1\n",
            "{ strategy: single, providers: [didit] }",
        ),
        tenant(
            "actions",
            ACTIONS,
            "    warnings: { MULTIPLE_FACES_DETECTED: ignore, NO_FACE_DETECTED: review, DUPLICATED_FACE: decline }\n",
            "{ strategy: single, providers: [didit] }",
        ),
        tenant(
            "gates",
            GATES,
            "    min_face_quality: 0.6\n    luminance: [0.3, 0.7]\n    warnings: { LOW_FACE_QUALITY: review, LOW_FACE_LUMINANCE: decline }\n",
            "{ strategy: single, providers: [didit] }",
        ),
        tenant(
            "override",
            OVERRIDE,
            "    allow_provider_override: true\n",
            "{ strategy: fallback, providers: [didit, kairos] }",
        ),
    ]
    .concat();
    format!("providers:\n{providers}tenants:\n{tenants}")
}

/// Each case on SQLite and on Postgres, against [`routing_yaml`].
macro_rules! routing_cases {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(h) = crate::harness::Harness::start_with(
                        crate::harness::Backend::Sqlite, super::routing_yaml).await
                    {
                        super::$case(h).await;
                    }
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(h) = crate::harness::Harness::start_with(
                        crate::harness::Backend::Postgres, super::routing_yaml).await
                    {
                        super::$case(h).await;
                    }
                }
            )*
        }
    };
}

routing_cases!(
    fallback_on_each_retryable_class,
    fallback_on_open_circuit,
    all_providers_failing_names_the_last_cause,
    no_fallback_on_definitive_answers_or_bad_input,
    retries_then_one_verdict,
    retry_after_beyond_the_deadline_moves_to_the_next_provider,
    overall_deadline_holds,
    circuit_opens_half_opens_and_closes,
    weighted_falls_back_only_when_configured,
    shadow_adds_no_latency_and_is_stored,
    max_concurrency_serializes_calls,
    max_rps_spaces_calls,
    threshold_reapplied_on_every_provider,
    review_band,
    warning_actions,
    quality_gates,
    provider_override_allowed_and_refused,
);

/// The slow one (2,000 requests): SQLite only.
mod sqlite_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn weighted_split_within_3_percent_and_stable_per_request_id() {
        if let Some(h) = crate::harness::Harness::start_with(
            crate::harness::Backend::Sqlite,
            super::routing_yaml,
        )
        .await
        {
            super::weighted_split(h).await;
        }
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// `POST /v1/liveness` (multipart `image`) with extra headers.
async fn send(h: &Harness, key: &str, image: Vec<u8>, headers: &[(&str, &str)]) -> Reply {
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(image).file_name("selfie.jpg"),
    );
    let mut req = h
        .client
        .post(format!("{}/v1/liveness", h.base))
        .bearer_auth(key)
        .multipart(form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Harness::reply(req.send().await.expect("send")).await
}

async fn count(h: &Harness, sim: Sim) -> usize {
    h.sim_requests_on(sim).await.len()
}

async fn clear_rules(h: &Harness, sim: Sim) {
    let resp = h
        .client
        .delete(format!("{}/_sim/rules", h.sim_url(sim)))
        .send()
        .await
        .expect("delete rules");
    assert_eq!(resp.status().as_u16(), 204);
}

async fn readyz(h: &Harness, provider: &str) -> String {
    let r = h.get("", "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["checks"][format!("provider:{provider}")]
        .as_str()
        .unwrap_or_else(|| panic!("no provider:{provider} in {}", r.body))
        .to_owned()
}

fn id_of(r: &Reply) -> &str {
    r.body["id"].as_str().expect("verification id")
}

fn codes(r: &Reply) -> Vec<String> {
    r.body["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["code"].as_str().expect("code").to_owned())
        .collect()
}

/// The answer's `attempts` and the stored rows both say: these providers, these outcomes
/// (`None` = ok, `Some(code)` = that error), in this order, none of them a shadow.
fn assert_attempts(answer: &Value, rows: &[AttemptRecord], expected: &[(&str, Option<&str>)]) {
    let listed = answer["attempts"].as_array().expect("attempts");
    assert_eq!(listed.len(), expected.len(), "answer attempts: {answer}");
    assert_eq!(rows.len(), expected.len(), "stored attempts: {rows:#?}");
    for (i, ((provider, code), (a, row))) in
        expected.iter().zip(listed.iter().zip(rows)).enumerate()
    {
        let outcome = if code.is_some() { "error" } else { "ok" };
        assert_eq!(a["provider"], *provider, "attempt {i}: {answer}");
        assert_eq!(a["outcome"], outcome, "attempt {i}: {answer}");
        assert_eq!(a["error_code"].as_str(), *code, "attempt {i}: {answer}");
        assert_eq!(a["shadow"], false, "attempt {i}: {answer}");
        assert_eq!(row.attempt_no, i as i32 + 1);
        assert_eq!(row.provider, *provider, "row {i}");
        assert_eq!(row.outcome, outcome, "row {i}");
        assert_eq!(row.error_code.as_deref(), *code, "row {i}");
        assert!(!row.shadow, "row {i}");
        assert_eq!(
            a["upstream_status"].as_i64(),
            row.upstream_status.map(i64::from),
            "attempt {i}"
        );
    }
}

// ---- fallback -----------------------------------------------------------------------------

async fn fallback_on_each_retryable_class(h: Harness) {
    // The providers the chains fall back to approve; each fault rule serves one request.
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    struct Case {
        key: &'static str,
        tenant: &'static str,
        primary: (&'static str, Option<Sim>),
        fallback: (&'static str, Sim),
        rule: Option<Value>,
        code: &'static str,
        upstream: Option<i32>,
    }
    let didit_first = |rule: Value, code, upstream| Case {
        key: FB,
        tenant: "fb",
        primary: ("didit", Some(Sim::Didit)),
        fallback: ("kairos", Sim::Kairos),
        rule: Some(rule),
        code,
        upstream,
    };
    let cases = [
        // Timeout: Didit's timeout_ms is 400.
        didit_first(
            json!({"delay_ms": 1500, "times": 1}),
            "provider_timeout",
            None,
        ),
        didit_first(
            json!({"status": 500, "times": 1}),
            "provider_unavailable",
            Some(500),
        ),
        didit_first(
            json!({"status": 503, "times": 1}),
            "provider_unavailable",
            Some(503),
        ),
        didit_first(
            json!({"status": 429, "retry_after": 1, "times": 1}),
            "provider_rate_limited",
            Some(429),
        ),
        // Didit's 403 "Insufficient credits".
        didit_first(
            json!({"status": 403, "times": 1}),
            "provider_out_of_credits",
            Some(403),
        ),
        // Kairos' 403 usage limit, Didit behind it.
        Case {
            key: FB_KAIROS,
            tenant: "fb_kairos",
            primary: ("kairos", Some(Sim::Kairos)),
            fallback: ("didit", Sim::Didit),
            rule: Some(json!({"status": 403, "times": 1})),
            code: "provider_usage_limit",
            upstream: Some(403),
        },
        // Connection refused: nothing listens on `dead`'s port.
        Case {
            key: FB_DEAD,
            tenant: "fb_dead",
            primary: ("dead", None),
            fallback: ("kairos", Sim::Kairos),
            rule: None,
            code: "provider_unreachable",
            upstream: None,
        },
    ];
    for (i, c) in cases.into_iter().enumerate() {
        if let (Some(rule), Some(sim)) = (c.rule, c.primary.1) {
            h.sim_rule_on(sim, rule).await;
        }
        let primary_before = match c.primary.1 {
            Some(sim) => count(&h, sim).await,
            None => 0,
        };
        let fallback_before = count(&h, c.fallback.1).await;
        let r = h.liveness(c.key, "image", jpeg(100 + i as u8), &[]).await;
        assert_eq!(r.status, 200, "{}: {}", c.code, r.body);
        assert_eq!(r.body["decision"], "approved", "{}: {}", c.code, r.body);
        assert_eq!(r.body["provider"], c.fallback.0, "{}: {}", c.code, r.body);
        let (row, attempts) = h.row(c.tenant, id_of(&r)).await;
        assert_eq!(row.provider.as_deref(), Some(c.fallback.0));
        assert_eq!(row.decision.as_deref(), Some("approved"));
        assert_attempts(
            &r.body,
            &attempts,
            &[(c.primary.0, Some(c.code)), (c.fallback.0, None)],
        );
        assert_eq!(attempts[0].upstream_status, c.upstream, "{}", c.code);
        if let Some(sim) = c.primary.1 {
            assert_eq!(
                count(&h, sim).await,
                primary_before + 1,
                "{}: one call, no retry",
                c.code
            );
        }
        assert_eq!(
            count(&h, c.fallback.1).await,
            fallback_before + 1,
            "{}",
            c.code
        );
    }
}

async fn fallback_on_open_circuit(h: Harness) {
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Didit, json!({"status": 500})).await;
    // `didit_cb_long` opens after 2 consecutive failures; each one still falls back.
    for i in 0..2u8 {
        let r = h.liveness(FB_CB, "image", jpeg(110 + i), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["provider"], "kairos");
        let (_, attempts) = h.row("fb_cb", id_of(&r)).await;
        assert_attempts(
            &r.body,
            &attempts,
            &[
                ("didit_cb_long", Some("provider_unavailable")),
                ("kairos", None),
            ],
        );
    }
    assert_eq!(readyz(&h, "didit_cb_long").await, "open");
    assert_eq!(count(&h, Sim::Didit).await, 2);
    let r = h.liveness(FB_CB, "image", jpeg(112), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["provider"], "kairos");
    let (_, attempts) = h.row("fb_cb", id_of(&r)).await;
    assert_attempts(
        &r.body,
        &attempts,
        &[
            ("didit_cb_long", Some("provider_circuit_open")),
            ("kairos", None),
        ],
    );
    assert_eq!(attempts[0].upstream_status, None);
    assert_eq!(
        count(&h, Sim::Didit).await,
        2,
        "an open circuit does not call the provider"
    );
    assert_eq!(count(&h, Sim::Kairos).await, 3);
}

async fn all_providers_failing_names_the_last_cause(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"status": 500})).await;
    h.sim_rule_on(Sim::Kairos, json!({"status": 429, "retry_after": 5}))
        .await;
    let r = h.liveness(FB, "image", jpeg(115), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["code"], "provider_rate_limited");
    assert_eq!(r.body["provider"], "kairos");
    assert_eq!(r.headers["retry-after"], "5");
    let (row, attempts) = h.last_row("fb").await;
    assert_eq!(row.error_code.as_deref(), Some("provider_rate_limited"));
    assert_eq!(row.http_status, 503);
    assert_eq!(row.decision, None);
    let got: Vec<_> = attempts
        .iter()
        .map(|a| (a.provider.as_str(), a.error_code.as_deref()))
        .collect();
    assert_eq!(
        got,
        [
            ("didit", Some("provider_unavailable")),
            ("kairos", Some("provider_rate_limited"))
        ]
    );
}

async fn no_fallback_on_definitive_answers_or_bad_input(h: Harness) {
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    // Definitive answers from the first provider end the chain.
    for (i, (rule, decision)) in [
        (json!({"score": 0.95, "times": 1}), "approved"),
        (json!({"score": 0.1, "times": 1}), "declined"),
        (json!({"faces": 0, "times": 1}), "declined"),
    ]
    .into_iter()
    .enumerate()
    {
        h.sim_rule_on(Sim::Didit, rule).await;
        let r = h.liveness(FB, "image", jpeg(120 + i as u8), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["decision"], decision, "{}", r.body);
        assert_eq!(r.body["provider"], "didit");
        let (_, attempts) = h.row("fb", id_of(&r)).await;
        assert_attempts(&r.body, &attempts, &[("didit", None)]);
    }
    assert_eq!(count(&h, Sim::Kairos).await, 0, "no fallback on a verdict");

    // An image the upstream rejects as bad input: every provider would, so no fallback.
    h.sim_rule_on(Sim::Didit, json!({"status": 400, "times": 1}))
        .await;
    let r = h.liveness(FB, "image", jpeg(125), &[]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["code"], "provider_rejected_input");
    assert_eq!(r.body["provider"], "didit");
    let (row, attempts) = h.last_row("fb").await;
    assert_eq!(row.error_code.as_deref(), Some("provider_rejected_input"));
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].upstream_status, Some(400));
    assert_eq!(count(&h, Sim::Kairos).await, 0);

    // The same from Kairos in front of Didit.
    let didit_before = count(&h, Sim::Didit).await;
    h.sim_rule_on(Sim::Kairos, json!({"status": 400, "times": 1}))
        .await;
    let r = h.liveness(FB_KAIROS, "image", jpeg(126), &[]).await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["code"], "provider_rejected_input");
    assert_eq!(r.body["provider"], "kairos");
    let (_, attempts) = h.last_row("fb_kairos").await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(count(&h, Sim::Didit).await, didit_before);
}

// ---- retries and deadline ---------------------------------------------------------------

async fn retries_then_one_verdict(h: Harness) {
    // `didit_r` has `retries: 2`: two 503s, then the standing approval.
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Didit, json!({"status": 503, "times": 2}))
        .await;
    let r = h.liveness(RETRY, "image", jpeg(130), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "approved");
    assert_eq!(r.body["provider"], "didit_r");
    let (_, attempts) = h.row("retry", id_of(&r)).await;
    assert_attempts(
        &r.body,
        &attempts,
        &[
            ("didit_r", Some("provider_unavailable")),
            ("didit_r", Some("provider_unavailable")),
            ("didit_r", None),
        ],
    );
    assert_eq!(count(&h, Sim::Didit).await, 3);
    assert_eq!(h.row_count("retry").await, 1, "one verdict");

    // Retries run out: three calls, the last cause answers.
    h.sim_rule_on(Sim::Didit, json!({"status": 500, "times": 3}))
        .await;
    let r = h.liveness(RETRY, "image", jpeg(131), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "provider_unavailable");
    let (_, attempts) = h.last_row("retry").await;
    assert_eq!(attempts.len(), 3, "{attempts:#?}");
    assert_eq!(count(&h, Sim::Didit).await, 6);

    // A failure that is not transient is not retried.
    h.sim_rule_on(Sim::Didit, json!({"status": 403, "times": 1}))
        .await;
    let r = h.liveness(RETRY, "image", jpeg(132), &[]).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(r.body["code"], "provider_out_of_credits");
    let (_, attempts) = h.last_row("retry").await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(count(&h, Sim::Didit).await, 7);
}

async fn retry_after_beyond_the_deadline_moves_to_the_next_provider(h: Harness) {
    // `didit_r` may retry, but its 429 asks for 60 s, past the 30 s deadline: the chain moves
    // on to Kairos instead of giving up.
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    h.sim_rule_on(
        Sim::Didit,
        json!({"status": 429, "retry_after": 60, "times": 1}),
    )
    .await;
    let started = Instant::now();
    let r = h.liveness(FB_RETRY, "image", jpeg(135), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["provider"], "kairos");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (_, attempts) = h.row("fb_retry", id_of(&r)).await;
    assert_attempts(
        &r.body,
        &attempts,
        &[("didit_r", Some("provider_rate_limited")), ("kairos", None)],
    );
}

async fn overall_deadline_holds(h: Harness) {
    // Both providers hang; `didit_slow` would retry 5 times at 300 ms each: the 800 ms
    // deadline cuts it all short.
    h.sim_rule_on(Sim::Didit, json!({"delay_ms": 5000})).await;
    h.sim_rule_on(Sim::Kairos, json!({"delay_ms": 5000})).await;
    let started = Instant::now();
    let r = h.liveness(DEADLINE, "image", jpeg(140), &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.body["code"], "provider_timeout");
    assert!(
        elapsed < Duration::from_millis(DEADLINE_MS + 600),
        "answered after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(DEADLINE_MS - 50),
        "gave up early, after {elapsed:?}"
    );
    let (row, attempts) = h.last_row("deadline").await;
    assert_eq!(row.error_code.as_deref(), Some("provider_timeout"));
    assert_eq!(row.http_status, 504);
    assert!(attempts.len() >= 2, "retried: {attempts:#?}");
    assert!(
        attempts
            .iter()
            .all(|a| a.error_code.as_deref() == Some("provider_timeout")),
        "{attempts:#?}"
    );
    let spent: i64 = attempts.iter().map(|a| a.latency_ms).sum();
    assert!(
        spent <= DEADLINE_MS as i64 + 100,
        "attempts ran past the deadline: {spent} ms"
    );
}

// ---- circuit breaker ----------------------------------------------------------------------

async fn circuit_opens_half_opens_and_closes(h: Harness) {
    let cb = "didit_cb"; // failures: 3, cooldown COOLDOWN
    assert_eq!(readyz(&h, cb).await, "closed");
    h.sim_rule_on(Sim::Didit, json!({"status": 500})).await;
    for i in 0..3u8 {
        let r = h.liveness(BREAKER, "image", jpeg(150 + i), &[]).await;
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(r.body["code"], "provider_unavailable");
    }
    assert_eq!(count(&h, Sim::Didit).await, 3);
    // Open: the provider is not called any more.
    assert_eq!(readyz(&h, cb).await, "open");
    let r = h.liveness(BREAKER, "image", jpeg(153), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "provider_circuit_open");
    assert_eq!(r.body["provider"], cb);
    let (row, attempts) = h.last_row("breaker").await;
    assert_eq!(row.error_code.as_deref(), Some("provider_circuit_open"));
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].error_code.as_deref(),
        Some("provider_circuit_open")
    );
    assert_eq!(count(&h, Sim::Didit).await, 3, "no call while open");

    // After the cool-down: half-open, one probe. It fails: open again.
    tokio::time::sleep(COOLDOWN + Duration::from_millis(100)).await;
    assert_eq!(readyz(&h, cb).await, "half_open");
    let r = h.liveness(BREAKER, "image", jpeg(154), &[]).await;
    assert_eq!(r.body["code"], "provider_unavailable", "{}", r.body);
    assert_eq!(count(&h, Sim::Didit).await, 4, "one probe");
    assert_eq!(readyz(&h, cb).await, "open");
    let r = h.liveness(BREAKER, "image", jpeg(155), &[]).await;
    assert_eq!(r.body["code"], "provider_circuit_open", "{}", r.body);
    assert_eq!(count(&h, Sim::Didit).await, 4);

    // Next cool-down: the provider recovered. While the (slow) probe is out, others are still
    // turned away; its success closes the circuit.
    tokio::time::sleep(COOLDOWN + Duration::from_millis(100)).await;
    clear_rules(&h, Sim::Didit).await;
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95, "delay_ms": 1000}))
        .await;
    let (probe, during) = tokio::join!(h.liveness(BREAKER, "image", jpeg(156), &[]), async {
        // Once the probe is at the provider (and for the second it is held there), another
        // request is turned away without a call.
        let until = Instant::now() + Duration::from_secs(5);
        while count(&h, Sim::Didit).await < 5 {
            assert!(
                Instant::now() < until,
                "the probe never reached the provider"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        h.liveness(BREAKER, "image", jpeg(157), &[]).await
    });
    assert_eq!(probe.status, 200, "{}", probe.body);
    assert_eq!(probe.body["decision"], "approved");
    assert_eq!(during.status, 503, "{}", during.body);
    assert_eq!(during.body["code"], "provider_circuit_open");
    assert_eq!(count(&h, Sim::Didit).await, 5, "exactly one probe");
    assert_eq!(readyz(&h, cb).await, "closed");
    let r = h.liveness(BREAKER, "image", jpeg(158), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(count(&h, Sim::Didit).await, 6);
}

// ---- weighted -----------------------------------------------------------------------------

async fn weighted_split(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    const N: usize = 2000;
    // One small image (Kairos takes 300 px and up): routing depends on the request id only.
    let img = encode(320, 320, 7, image::ImageFormat::Jpeg);
    let hr = &h;
    let results: Vec<(String, String)> = futures::stream::iter(0..N)
        .map(|i| {
            let img = img.clone();
            async move {
                let rid = format!("weighted-{i}");
                let r = send(hr, WEIGHTED, img, &[("x-request-id", rid.as_str())]).await;
                assert_eq!(r.status, 200, "{rid}: {}", r.body);
                assert_eq!(r.headers["x-request-id"], rid.as_str());
                (
                    rid,
                    r.body["provider"].as_str().expect("provider").to_owned(),
                )
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut by_provider: HashMap<&str, usize> = HashMap::new();
    for (_, p) in &results {
        *by_provider.entry(p.as_str()).or_default() += 1;
    }
    let didit = by_provider.get("didit").copied().unwrap_or(0);
    let kairos = by_provider.get("kairos").copied().unwrap_or(0);
    assert_eq!(didit + kairos, N, "{by_provider:?}");
    // 90/10 within ±3 percentage points.
    assert!(
        (N * 87 / 100..=N * 93 / 100).contains(&didit),
        "didit got {didit} of {N}"
    );
    // The simulators saw exactly that split.
    assert_eq!(count(&h, Sim::Didit).await, didit);
    assert_eq!(count(&h, Sim::Kairos).await, kairos);

    // The same request id lands on the same provider again.
    let first: HashMap<&str, &str> = results
        .iter()
        .map(|(id, p)| (id.as_str(), p.as_str()))
        .collect();
    let mut resent = 0;
    for i in (0..N).step_by(N / 40) {
        let rid = format!("weighted-{i}");
        let r = send(&h, WEIGHTED, img.clone(), &[("x-request-id", rid.as_str())]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["provider"], first[rid.as_str()], "{rid}");
        resent += 1;
    }
    // Both providers were among the re-sent ones (or the check proves little).
    let kairos_ids: Vec<&str> = results
        .iter()
        .filter(|(_, p)| p == "kairos")
        .map(|(id, _)| id.as_str())
        .take(5)
        .collect();
    for rid in kairos_ids {
        let r = send(&h, WEIGHTED, img.clone(), &[("x-request-id", rid)]).await;
        assert_eq!(r.body["provider"], "kairos", "{rid}");
        resent += 1;
    }
    // An Idempotency-Key decides instead of the request id, so a client retry with a fresh
    // request id lands where the first try did (and, being a replay, calls nobody).
    for k in 0..10 {
        let key = format!("idem-{k}");
        let a = send(
            &h,
            WEIGHTED,
            img.clone(),
            &[
                ("idempotency-key", key.as_str()),
                ("x-request-id", format!("a-{k}").as_str()),
            ],
        )
        .await;
        let b = send(
            &h,
            WEIGHTED,
            img.clone(),
            &[
                ("idempotency-key", key.as_str()),
                ("x-request-id", format!("b-{k}").as_str()),
            ],
        )
        .await;
        assert_eq!(a.body["provider"], b.body["provider"], "{key}");
        // The second is a replay of the first: one upstream call between them.
        assert_eq!(a.body["id"], b.body["id"], "{key}");
        resent += 1;
    }
    assert_eq!(
        count(&h, Sim::Didit).await + count(&h, Sim::Kairos).await,
        N + resent
    );
}

async fn weighted_falls_back_only_when_configured(h: Harness) {
    // Both tenants weigh [100, 0]: Didit is always picked first.
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Didit, json!({"status": 500})).await;
    let r = h.liveness(WEIGHTED_FB, "image", jpeg(160), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["provider"], "kairos");
    let (_, attempts) = h.row("weighted_fb", id_of(&r)).await;
    assert_attempts(
        &r.body,
        &attempts,
        &[("didit", Some("provider_unavailable")), ("kairos", None)],
    );

    let r = h.liveness(WEIGHTED_NOFB, "image", jpeg(161), &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.body["code"], "provider_unavailable");
    let (_, attempts) = h.last_row("weighted_nofb").await;
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(count(&h, Sim::Kairos).await, 1, "only the fallback tenant");
}

// ---- shadow -------------------------------------------------------------------------------

/// Poll the store until the verification has a shadow attempt (at most ~8 s).
async fn shadow_attempt(
    h: &Harness,
    tenant: &str,
    id: &str,
) -> (Vec<AttemptRecord>, AttemptRecord) {
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let (_, attempts) = h.row(tenant, id).await;
        if let Some(s) = attempts.iter().find(|a| a.shadow).cloned() {
            return (attempts, s);
        }
        assert!(
            Instant::now() < deadline,
            "no shadow attempt stored: {attempts:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn shadow_adds_no_latency_and_is_stored(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    // The shadow takes 2 s and would decline.
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.3, "delay_ms": 2000}))
        .await;
    let started = Instant::now();
    let r = h.liveness(SHADOW, "image", jpeg(170), &[]).await;
    let elapsed = started.elapsed();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        elapsed < Duration::from_secs(1),
        "shadow slowed the answer: {elapsed:?}"
    );
    assert!(
        r.body["latency_ms"].as_i64().expect("latency") < 1000,
        "{}",
        r.body
    );
    assert_eq!(r.body["decision"], "approved");
    assert_eq!(r.body["provider"], "didit");
    assert_eq!(r.body["score"], 0.95);
    let id = id_of(&r).to_owned();
    let (_, attempts) = h.row("shadow", &id).await;
    assert_attempts(&r.body, &attempts, &[("didit", None)]);

    let (all, shadow) = shadow_attempt(&h, "shadow", &id).await;
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(shadow.provider, "kairos");
    assert_eq!(shadow.outcome, "ok");
    assert_eq!(shadow.score, Some(0.3));
    assert_eq!(shadow.attempt_no, 2);
    assert!(shadow.latency_ms >= 2000, "{shadow:#?}");
    assert!(
        shadow
            .raw_body
            .as_deref()
            .is_some_and(|b| b.contains("faces_liveness"))
    );
    // The verdict is still the primary's; the read API lists the shadow attempt.
    let (row, _) = h.row("shadow", &id).await;
    assert_eq!(row.decision.as_deref(), Some("approved"));
    assert_eq!(row.provider.as_deref(), Some("didit"));
    let got = h.get(SHADOW, &format!("/v1/verifications/{id}")).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["decision"], "approved");
    let listed = got.body["attempts"].as_array().expect("attempts");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["provider"], "kairos");
    assert_eq!(listed[1]["shadow"], true);

    // A failing shadow changes nothing either.
    h.sim_rule_on(Sim::Kairos, json!({"status": 500, "times": 1}))
        .await;
    let r = h.liveness(SHADOW, "image", jpeg(171), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "approved");
    assert_eq!(r.body["provider"], "didit");
    let (_, shadow) = shadow_attempt(&h, "shadow", id_of(&r)).await;
    assert_eq!(shadow.outcome, "error");
    assert_eq!(shadow.error_code.as_deref(), Some("provider_unavailable"));
    assert_eq!(shadow.upstream_status, Some(500));
    let (row, _) = h.row("shadow", id_of(&r)).await;
    assert_eq!(row.decision.as_deref(), Some("approved"));
    assert_eq!(row.error_code, None);
    assert_eq!(
        count(&h, Sim::Kairos).await,
        2,
        "the shadow got every image"
    );
}

// ---- outbound caps ------------------------------------------------------------------------

async fn max_concurrency_serializes_calls(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95, "delay_ms": 300}))
        .await;
    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        h.liveness(CONC, "image", jpeg(180), &[]),
        h.liveness(CONC, "image", jpeg(181), &[]),
        h.liveness(CONC, "image", jpeg(182), &[]),
    );
    let elapsed = started.elapsed();
    for r in [&a, &b, &c] {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // One call at a time at 300 ms each.
    assert!(
        elapsed >= Duration::from_millis(900),
        "calls overlapped: {elapsed:?}"
    );
    assert_eq!(count(&h, Sim::Didit).await, 3);
}

async fn max_rps_spaces_calls(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    // max_rps 5: one call every 200 ms, no burst.
    let started = Instant::now();
    let replies =
        futures::future::join_all((0..5u8).map(|i| h.liveness(RPS, "image", jpeg(185 + i), &[])))
            .await;
    let elapsed = started.elapsed();
    for r in &replies {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert!(
        elapsed >= Duration::from_millis(750),
        "5 calls at 5 rps took only {elapsed:?}"
    );
}

// ---- policy -------------------------------------------------------------------------------

async fn threshold_reapplied_on_every_provider(h: Harness) {
    // Didit approves 0.7 (its own status says so) under a 0.8 tenant threshold.
    h.sim_rule_on(Sim::Didit, json!({"score": 0.7, "decision": "Approved"}))
        .await;
    // Kairos says "pass" (response_code 1) for 0.7.
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.7, "response_code": 1}))
        .await;
    // The collections engine says is_live for 0.7.
    h.sim_rule_on(Sim::Collections, json!({"score": 0.7, "is_live": true}))
        .await;
    for (key, i) in [(PLAIN, 0u8), (KAI, 1), (COLL, 2)] {
        let r = h.liveness(key, "image", jpeg(190 + i), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["decision"], "declined", "{}", r.body);
        assert_eq!(r.body["is_live"], false);
        assert_eq!(r.body["score"], 0.7);
        assert_eq!(r.body["threshold"], 0.8);
        assert!(
            codes(&r).contains(&"LOW_LIVENESS_SCORE".to_owned()),
            "{}",
            r.body
        );
    }
    // Each upstream got the tenant threshold in its own unit.
    let d = h.sim_requests_on(Sim::Didit).await;
    assert_eq!(
        d[0]["fields"]["face_liveness_score_decline_threshold"],
        "80"
    );
    let k = h.sim_requests_on(Sim::Kairos).await;
    assert_eq!(k[0]["fields"]["threshold"], "0.8");
    let c = h.sim_requests_on(Sim::Collections).await;
    assert_eq!(c[0]["fields"]["liveness_threshold"], "0.8");

    // At or above the threshold it approves.
    h.sim_rule_on(Sim::Collections, json!({"score": 0.8})).await;
    let r = h.liveness(COLL, "image", jpeg(193), &[]).await;
    assert_eq!(r.body["decision"], "approved", "{}", r.body);
}

async fn review_band(h: Harness) {
    // threshold 0.8, review_band 0.1: [0.7, 0.8) is review.
    for (i, (score, decision)) in [
        (0.85, "approved"),
        (0.8, "approved"),
        (0.79, "review"),
        (0.75, "review"),
        (0.7, "review"),
        (0.69, "declined"),
        (0.4, "declined"),
    ]
    .into_iter()
    .enumerate()
    {
        h.sim_rule_on(Sim::Didit, json!({"score": score, "times": 1}))
            .await;
        let r = h.liveness(BAND, "image", jpeg(200 + i as u8), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["decision"], decision, "score {score}: {}", r.body);
        assert_eq!(r.body["is_live"], decision == "approved");
        let (row, _) = h.row("band", id_of(&r)).await;
        assert_eq!(row.decision.as_deref(), Some(decision));
    }
    // The same scores without a band: below the threshold is declined.
    h.sim_rule_on(Sim::Didit, json!({"score": 0.75, "times": 1}))
        .await;
    let r = h.liveness(PLAIN, "image", jpeg(210), &[]).await;
    assert_eq!(r.body["decision"], "declined", "{}", r.body);
}

async fn warning_actions(h: Harness) {
    // `actions`: MULTIPLE_FACES_DETECTED ignore, NO_FACE_DETECTED review, DUPLICATED_FACE
    // decline. `plain` has the defaults: review, decline, nothing.
    let cases = [
        (
            json!({"score": 0.95, "faces": 2}),
            "MULTIPLE_FACES_DETECTED",
            "approved",
            "review",
        ),
        (
            json!({"faces": 0}),
            "NO_FACE_DETECTED",
            "review",
            "declined",
        ),
        (
            json!({"score": 0.95, "warnings": ["DUPLICATED_FACE"]}),
            "DUPLICATED_FACE",
            "declined",
            "approved",
        ),
    ];
    for (i, (rule, code, configured, default)) in cases.into_iter().enumerate() {
        let mut rule = rule;
        rule["times"] = json!(2);
        h.sim_rule_on(Sim::Didit, rule).await;
        for (key, tenant, expected) in [(ACTIONS, "actions", configured), (PLAIN, "plain", default)]
        {
            let r = h.liveness(key, "image", jpeg(220 + i as u8), &[]).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["decision"], expected, "{tenant} {code}: {}", r.body);
            assert!(codes(&r).contains(&code.to_owned()), "{tenant}: {}", r.body);
            let (row, _) = h.row(tenant, id_of(&r)).await;
            assert_eq!(row.decision.as_deref(), Some(expected));
        }
    }
    // A face attack declines by default even with a high score.
    h.sim_rule_on(
        Sim::Didit,
        json!({"score": 0.95, "spoof_type": "print", "times": 1}),
    )
    .await;
    let r = h.liveness(PLAIN, "image", jpeg(230), &[]).await;
    assert_eq!(r.body["decision"], "declined", "{}", r.body);
    assert!(codes(&r).contains(&"LIVENESS_FACE_ATTACK".to_owned()));
}

async fn quality_gates(h: Harness) {
    // `gates`: min_face_quality 0.6, luminance [0.3, 0.7]; LOW_FACE_QUALITY reviews,
    // LOW_FACE_LUMINANCE declines, HIGH_FACE_LUMINANCE has no action.
    let cases = [
        (json!({"quality": 90, "luminance": 50}), None, "approved"),
        (
            json!({"quality": 40, "luminance": 50}),
            Some("LOW_FACE_QUALITY"),
            "review",
        ),
        (
            json!({"quality": 90, "luminance": 20}),
            Some("LOW_FACE_LUMINANCE"),
            "declined",
        ),
        (
            json!({"quality": 90, "luminance": 85}),
            Some("HIGH_FACE_LUMINANCE"),
            "approved",
        ),
        // A provider that reports no metric gets no gate warning.
        (
            json!({"quality": null, "luminance": null}),
            None,
            "approved",
        ),
    ];
    for (i, (mut rule, warning, decision)) in cases.into_iter().enumerate() {
        rule["score"] = json!(0.95);
        rule["times"] = json!(2);
        h.sim_rule_on(Sim::Didit, rule.clone()).await;
        let r = h.liveness(GATES, "image", jpeg(240 + i as u8), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["decision"], decision, "{rule}: {}", r.body);
        let got = codes(&r);
        match warning {
            Some(w) => assert_eq!(got, [w], "{rule}"),
            None => assert!(got.is_empty(), "{rule}: {got:?}"),
        }
        // Without gates the same answer carries no quality warning.
        let r = h.liveness(PLAIN, "image", jpeg(240 + i as u8), &[]).await;
        assert_eq!(r.body["decision"], "approved", "{rule}: {}", r.body);
        assert!(codes(&r).is_empty(), "{rule}: {}", r.body);
    }
}

async fn provider_override_allowed_and_refused(h: Harness) {
    h.sim_rule_on(Sim::Didit, json!({"score": 0.95})).await;
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.9})).await;
    // `override` routes didit first, but may ask for kairos.
    let r = h
        .liveness(OVERRIDE, "image", jpeg(250), &[("provider", "kairos")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["provider"], "kairos");
    assert_eq!(r.body["score"], 0.9);
    let (_, attempts) = h.row("override", id_of(&r)).await;
    assert_attempts(&r.body, &attempts, &[("kairos", None)]);
    assert_eq!(count(&h, Sim::Didit).await, 0);
    let r = h.liveness(OVERRIDE, "image", jpeg(251), &[]).await;
    assert_eq!(r.body["provider"], "didit", "{}", r.body);

    // A provider that exists but is not the tenant's, and one that does not exist.
    for p in ["engine", "nope"] {
        let r = h
            .liveness(OVERRIDE, "image", jpeg(252), &[("provider", p)])
            .await;
        assert_eq!(r.status, 400, "{}", r.body);
        assert_eq!(r.body["code"], "unknown_provider");
        assert_eq!(r.headers["content-type"], "application/problem+json");
        let (row, attempts) = h.last_row("override").await;
        assert_eq!(row.error_code.as_deref(), Some("unknown_provider"));
        assert_eq!(row.http_status, 400);
        assert!(attempts.is_empty());
    }
    // A tenant without allow_provider_override.
    let r = h
        .liveness(PLAIN, "image", jpeg(253), &[("provider", "didit")])
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "provider_override_not_allowed");
    let (row, attempts) = h.last_row("plain").await;
    assert_eq!(
        row.error_code.as_deref(),
        Some("provider_override_not_allowed")
    );
    assert!(attempts.is_empty());
    assert_eq!(count(&h, Sim::Collections).await, 0);
    assert_eq!(count(&h, Sim::Didit).await, 1);
    assert_eq!(count(&h, Sim::Kairos).await, 1);
}
