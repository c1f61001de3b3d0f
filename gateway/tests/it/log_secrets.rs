//! Logs never hold an API key, a vendor secret or an image byte: `livegate serve` with JSON logs
//! at trace level for livegate's crates, driven through successes, fallbacks, vendor and client
//! errors, bad keys and admin calls with distinctive secrets; then its whole output is searched.

use base64::Engine as _;
use livegate::config::KeyHash;
use serde_json::{Value, json};

use crate::harness::{Harness, jpeg, sim_rule_at as rule, spawn_sim as sim};
use crate::served::Served;

const TENANT_KEY: &str = "lgk-tenant-QX7Z-secret-0001";
const FALLBACK_KEY: &str = "lgk-fallbk-QX7Z-secret-0002";
const KAIROS_TENANT_KEY: &str = "lgk-kairos-QX7Z-secret-0003";
const COLL_TENANT_KEY: &str = "lgk-collec-QX7Z-secret-0004";
const WRONG_KEY: &str = "lgk-wrong0-QX7Z-secret-0005";
const ADMIN_KEY: &str = "lgk-admin0-QX7Z-secret-0006";
const WRONG_ADMIN_KEY: &str = "lgk-wradm0-QX7Z-secret-0007";
const DIDIT_SECRET: &str = "didit-vendor-QX7Z-secret-0008";
const KAIROS_APP_KEY: &str = "kairos-vendor-QX7Z-secret-0009";
const COLL_SECRET: &str = "fr_test_9e7a11c0ffee9e7a11c0ffee9e7a11c0";
const IMAGE_MARKER: &[u8] = b"IMGMARK-QX7Z-bytes-0010";

/// A JPEG that carries the marker after its end-of-image (decoders stop at EOI).
fn marked_jpeg(seed: u8) -> Vec<u8> {
    let mut b = jpeg(seed);
    b.extend_from_slice(IMAGE_MARKER);
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_image_byte_reaches_the_logs() {
    let didit = sim(livegate_simulators::didit::router()).await;
    let kairos = sim(livegate_simulators::kairos::router()).await;
    let collections = sim(livegate_simulators::collections::router()).await;
    let client = reqwest::Client::new();
    rule(&client, &didit, json!({"score": 0.95})).await;
    rule(&client, &kairos, json!({"score": 0.95})).await;
    let config = format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{LG_TEST_DIDIT_KEY}}", timeout_ms: 2000 }}
  kairos: {{ kind: kairos, base_url: "{kairos}", app_id: "app-id-public", app_key: "${{LG_TEST_KAIROS_KEY}}", timeout_ms: 2000 }}
  engine: {{ kind: collections, base_url: "{collections}", api_key: "${{LG_TEST_COLL_KEY}}", collection_id: "selfies", timeout_ms: 2000 }}
admin:
  keys: ["{admin}"]
tenants:
  plain: {{ keys: ["{plain}"], threshold: 0.8, allow_provider_override: true, routing: {{ strategy: single, providers: [didit] }} }}
  fb: {{ keys: ["{fb}"], threshold: 0.8, routing: {{ strategy: fallback, providers: [didit, kairos] }} }}
  kai: {{ keys: ["{kai}"], threshold: 0.8, routing: {{ strategy: single, providers: [kairos] }} }}
  coll: {{ keys: ["{coll}"], threshold: 0.8, routing: {{ strategy: single, providers: [engine] }} }}
"#,
        admin = KeyHash::of_key(ADMIN_KEY),
        plain = KeyHash::of_key(TENANT_KEY),
        fb = KeyHash::of_key(FALLBACK_KEY),
        kai = KeyHash::of_key(KAIROS_TENANT_KEY),
        coll = KeyHash::of_key(COLL_TENANT_KEY),
    );
    let served = Served::start(
        &config,
        &[
            ("LG_TEST_DIDIT_KEY", DIDIT_SECRET),
            ("LG_TEST_KAIROS_KEY", KAIROS_APP_KEY),
            ("LG_TEST_COLL_KEY", COLL_SECRET),
            (
                "LIVEGATE_LOG",
                "info,livegate=trace,livegate_providers=trace,livegate_engine=trace",
            ),
        ],
    )
    .await;
    let base = served.base.clone();
    let multipart = |key: &str, image: Vec<u8>| {
        let form = reqwest::multipart::Form::new()
            .part(
                "image",
                reqwest::multipart::Part::bytes(image).file_name("selfie.jpg"),
            )
            .text("external_id", "ext-1");
        client
            .post(format!("{base}/v1/liveness"))
            .bearer_auth(key)
            .multipart(form)
    };
    let send =
        async |req: reqwest::RequestBuilder| Harness::reply(req.send().await.expect("send")).await;

    let image = marked_jpeg(1);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
    let ok = send(multipart(TENANT_KEY, image.clone())).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let r = send(
        client
            .post(format!("{base}/v1/liveness"))
            .header("x-api-key", TENANT_KEY)
            .json(&json!({ "image_base64": b64 })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        send(multipart(KAIROS_TENANT_KEY, marked_jpeg(2)))
            .await
            .status,
        200
    );
    assert_eq!(
        send(multipart(COLL_TENANT_KEY, marked_jpeg(3)))
            .await
            .status,
        200
    );
    // Fallback: Didit fails once, Kairos answers.
    rule(&client, &didit, json!({"status": 503, "times": 1})).await;
    let r = send(multipart(FALLBACK_KEY, marked_jpeg(4))).await;
    assert_eq!(r.body["provider"], "kairos", "{}", r.body);
    // The vendor refuses livegate's credentials; then a timeout-free server error.
    rule(&client, &didit, json!({"status": 401, "times": 1})).await;
    assert!(send(multipart(TENANT_KEY, marked_jpeg(5))).await.status >= 500);
    rule(&client, &kairos, json!({"status": 500, "times": 1})).await;
    assert!(
        send(multipart(KAIROS_TENANT_KEY, marked_jpeg(6)))
            .await
            .status
            >= 500
    );
    // Client errors: not an image, an unknown key (both headers), no key.
    let mut junk = b"not a picture ".to_vec();
    junk.extend_from_slice(IMAGE_MARKER);
    assert_eq!(send(multipart(TENANT_KEY, junk)).await.status / 100, 4);
    assert_eq!(send(multipart(WRONG_KEY, marked_jpeg(7))).await.status, 401);
    assert_eq!(
        send(
            client
                .post(format!("{base}/v1/liveness"))
                .header("x-api-key", WRONG_KEY)
                .json(&json!({ "image_base64": "AAAA" }))
        )
        .await
        .status,
        401
    );
    assert_eq!(
        send(client.get(format!("{base}/v1/verifications")))
            .await
            .status,
        401
    );
    // Reads and admin calls, right and wrong.
    let id = ok.body["id"].as_str().expect("id").to_owned();
    assert_eq!(
        send(
            client
                .get(format!("{base}/v1/verifications/{id}"))
                .bearer_auth(TENANT_KEY)
        )
        .await
        .status,
        200
    );
    let config = format!("{base}/admin/v1/config");
    for (request, status) in [
        (
            client
                .get(format!("{base}/v1/verifications"))
                .header("x-api-key", TENANT_KEY),
            200,
        ),
        (client.get(&config).bearer_auth(ADMIN_KEY), 200),
        (client.get(&config).bearer_auth(WRONG_ADMIN_KEY), 401),
        (client.get(&config).bearer_auth(TENANT_KEY), 403),
    ] {
        assert_eq!(send(request).await.status, status);
    }
    assert_eq!(
        send(client.get(format!("{base}/metrics"))).await.status,
        200
    );

    let logs = served.stop().await;
    // The capture is real: one line per verification, errors included.
    assert_eq!(
        logs.lines()
            .filter(|l| l.contains("\"message\":\"verification\""))
            .count(),
        8,
        "{logs}"
    );
    assert!(logs.contains("provider attempt failed"), "{logs}");
    for line in logs.lines().filter(|l| l.starts_with('{')) {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    let secrets = [
        TENANT_KEY,
        FALLBACK_KEY,
        KAIROS_TENANT_KEY,
        COLL_TENANT_KEY,
        WRONG_KEY,
        ADMIN_KEY,
        WRONG_ADMIN_KEY,
        DIDIT_SECRET,
        KAIROS_APP_KEY,
        COLL_SECRET,
    ];
    for s in secrets {
        // The distinctive middle part too: a truncated or reformatted secret is still a leak.
        assert!(!logs.contains(s), "the logs hold the secret {s}:\n{logs}");
    }
    assert!(
        !logs.contains("QX7Z"),
        "the logs hold part of a secret or the image marker:\n{logs}"
    );
    let marker = String::from_utf8_lossy(IMAGE_MARKER);
    assert!(!logs.contains(&*marker));
    // No run of the image's bytes, base64 or hex.
    for window in b64.as_bytes().chunks(32).take(50) {
        let w = std::str::from_utf8(window).expect("ascii");
        assert!(!logs.contains(w), "the logs hold image base64 {w}");
    }
    let hex_head = hex::encode(&image[..24]);
    assert!(!logs.contains(&hex_head), "the logs hold image hex");
}
