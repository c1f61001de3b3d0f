//! Kairos and the collections engine through livegate, at the HTTP level: every documented
//! success shape, no face, several faces, spoofs, each error class, timeouts and malformed
//! bodies, with the stored row and attempt checked each time. The Didit tests in
//! `liveness.rs` are the model.

use image::ImageFormat as Fmt;
use serde_json::{Value, json};

use crate::harness::{
    COLL_KEY, COLL_SECRET, Harness, KAIROS_APP_ID, KAIROS_APP_KEY, KAIROS_KEY, Reply, Sim,
    default_yaml, encode, jpeg,
};

crate::backend_matrix!(
    kairos_nested_shape_and_what_kairos_received,
    kairos_flat_shape_201_without_uid,
    kairos_uuid_spelling_and_response_code_not_trusted,
    kairos_below_threshold_is_declined,
    kairos_no_face,
    kairos_several_faces_score_the_largest,
    kairos_spoof_shows_only_as_a_low_score,
    kairos_bad_request,
    kairos_auth_failed,
    kairos_usage_limit,
    kairos_rate_limited,
    kairos_5xx,
    kairos_timeout,
    kairos_malformed_bodies,
    kairos_other_success_status_is_bad_response,
    kairos_image_below_minimum_is_never_sent,
    kairos_oversized_image_is_downscaled,
    kairos_webp_is_transcoded,
    coll_documented_success_and_what_the_engine_received,
    coll_is_live_is_not_trusted,
    coll_no_face,
    coll_several_faces,
    coll_spoof_types,
    coll_face_rejections_are_verdicts,
    coll_error_codes,
    coll_rate_limited,
    coll_timeout,
    coll_malformed_bodies,
    coll_webp_and_tiff_are_transcoded,
    coll_image_below_minimum_is_never_sent,
);

/// A tenant routed to one provider in the default test config.
struct Target {
    sim: Sim,
    key: &'static str,
    tenant: &'static str,
    /// The provider's name in the config (what verdicts and rows call it).
    provider: &'static str,
    /// Its adapter kind (what attempt rows call it).
    kind: &'static str,
}

const KAIROS: Target = Target {
    sim: Sim::Kairos,
    key: KAIROS_KEY,
    tenant: "kairos_t",
    provider: "kairos",
    kind: "kairos",
};

const ENGINE: Target = Target {
    sim: Sim::Collections,
    key: COLL_KEY,
    tenant: "coll_t",
    provider: "engine",
    kind: "collections",
};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

fn codes(warnings: &Value) -> Vec<String> {
    warnings
        .as_array()
        .expect("warnings array")
        .iter()
        .map(|w| w["code"].as_str().expect("code").to_owned())
        .collect()
}

/// A verdict (HTTP 200): checks the answer and its row agree, and returns both.
async fn verdict(
    h: &Harness,
    t: &Target,
    rule: Value,
    image: Vec<u8>,
) -> (
    Reply,
    livegate::store::VerificationRecord,
    livegate::store::AttemptRecord,
) {
    h.sim_rule_on(t.sim, rule).await;
    let sha = sha256(&image);
    let r = h.liveness(t.key, "image", image, &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["provider"], t.provider);
    assert_eq!(b["threshold"], 0.8);
    assert!(b["error"].is_null());
    let (row, attempts) = h.row(t.tenant, b["id"].as_str().expect("id")).await;
    assert_eq!(row.provider.as_deref(), Some(t.provider));
    assert_eq!(row.decision.as_deref(), b["decision"].as_str());
    assert_eq!(row.is_live, b["decision"] == "approved");
    assert_eq!(b["is_live"], row.is_live);
    assert_eq!(row.score, b["score"].as_f64());
    assert_eq!(
        row.faces_detected.map(i64::from),
        b["faces_detected"].as_i64()
    );
    assert_eq!(row.face.clone().unwrap_or(Value::Null), b["face"]);
    assert_eq!(row.spoof_type.as_deref(), b["spoof_type"].as_str());
    assert_eq!(row.warnings, b["warnings"]);
    assert_eq!(
        row.provider_request_id.as_deref(),
        b["provider_request_id"].as_str()
    );
    assert_eq!(row.image_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(row.http_status, 200);
    assert!(row.error_code.is_none());
    assert_eq!(attempts.len(), 1);
    let a = attempts[0].clone();
    assert_eq!(a.outcome, "ok");
    assert_eq!(a.provider, t.provider);
    assert_eq!(a.provider_kind, t.kind);
    assert_eq!(a.score, row.score);
    assert!(a.error_code.is_none());
    assert!(a.raw_body.is_some(), "the raw answer is kept");
    (r, row, a)
}

/// An upstream failure: the problem the tenant sees and the row with its one failed attempt.
async fn failure(
    h: &Harness,
    t: &Target,
    rule: Value,
    status: u16,
    code: &str,
) -> (Reply, livegate::store::AttemptRecord) {
    h.sim_rule_on(t.sim, rule).await;
    let r = h.liveness(t.key, "image", jpeg(50), &[]).await;
    assert_eq!(r.status, status, "{code}: {}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["code"], code);
    assert_eq!(r.body["status"], status);
    assert_eq!(r.body["provider"], t.provider);
    assert!(r.body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    let (row, attempts) = h.last_row(t.tenant).await;
    assert_eq!(row.error_code.as_deref(), Some(code));
    assert_eq!(row.http_status, i32::from(status));
    assert_eq!(row.decision, None);
    assert!(!row.is_live);
    assert_eq!(row.score, None);
    assert_eq!(row.provider.as_deref(), Some(t.provider));
    assert_eq!(row.request_id, r.body["request_id"].as_str().expect("rid"));
    assert_eq!(attempts.len(), 1);
    let a = attempts[0].clone();
    assert_eq!(a.outcome, "error");
    assert_eq!(a.error_code.as_deref(), Some(code));
    assert_eq!(a.provider_kind, t.kind);
    (r, a)
}

/// One successful call, so that a test that provokes many failures in a row stays below the
/// provider's circuit-breaker threshold (consecutive failures open it).
async fn recover(h: &Harness, t: &Target) {
    h.sim_rule_on(t.sim, json!({"score": 0.9, "times": 1}))
        .await;
    let r = h.liveness(t.key, "image", jpeg(99), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

// ---- Kairos ----------------------------------------------------------------------------

async fn kairos_nested_shape_and_what_kairos_received(h: Harness) {
    let img = jpeg(1);
    let (r, row, a) = verdict(
        &h,
        &KAIROS,
        json!({"score": 0.93, "bbox": [100, 90, 300, 330]}),
        img.clone(),
    )
    .await;
    let b = &r.body;
    assert_eq!(b["decision"], "approved");
    assert_eq!(b["score"], 0.93);
    assert_eq!(b["faces_detected"], 1);
    assert_eq!(b["face"]["bbox"], json!([100.0, 90.0, 300.0, 330.0]));
    let conf = b["face"]["confidence"].as_f64().expect("confidence");
    assert!((0.95..=1.0).contains(&conf), "{conf}");
    for absent in ["quality", "luminance", "age", "gender"] {
        assert!(b["face"][absent].is_null(), "Kairos reports no {absent}");
    }
    assert_eq!(b["spoof_type"], Value::Null);
    assert_eq!(b["warnings"], json!([]));
    assert!(
        b["provider_request_id"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
    assert_eq!(b["attempts"][0]["upstream_status"], 200);
    assert_eq!(a.upstream_status, Some(200));
    assert!(a.raw_body.as_deref().is_some_and(|s| s.contains("\"img\"")));
    assert_eq!(row.score, Some(0.93));
    assert_eq!(row.image_width, Some(640));

    // What Kairos received: the documented multipart contract, both header spellings.
    let reqs = h.sim_requests_on(Sim::Kairos).await;
    assert_eq!(reqs.len(), 1);
    let sent = &reqs[0];
    assert_eq!(sent["method"], "POST");
    assert_eq!(sent["path"], "/v0.2/liveness-verification");
    for (name, value) in [
        ("app_id", KAIROS_APP_ID),
        ("app-id", KAIROS_APP_ID),
        ("app_key", KAIROS_APP_KEY),
        ("app-key", KAIROS_APP_KEY),
    ] {
        assert_eq!(sent["headers"][name], value, "{name}");
    }
    assert_eq!(sent["fields"]["threshold"], "0.8");
    assert_eq!(sent["files"]["selfie"]["sha256"], sha256(&img));
    assert_eq!(sent["files"]["selfie"]["content_type"], "image/jpeg");
    assert!(sent["files"].get("image").is_none());

    // A raised request threshold is what Kairos is sent.
    let r = h
        .liveness(KAIROS_KEY, "image", jpeg(1), &[("threshold", "0.95")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "declined");
    let reqs = h.sim_requests_on(Sim::Kairos).await;
    assert_eq!(reqs[1]["fields"]["threshold"], "0.95");
}

async fn kairos_flat_shape_201_without_uid(h: Harness) {
    let rule = json!({
        "score": 0.88, "shape": "flat", "http_status": 201, "omit_uid": true,
        "int_confidence": true, "bbox": [10, 20, 210, 260]
    });
    let (r, row, a) = verdict(&h, &KAIROS, rule, jpeg(2)).await;
    let b = &r.body;
    assert_eq!(b["decision"], "approved");
    assert_eq!(b["score"], 0.88);
    assert_eq!(b["face"]["bbox"], json!([10.0, 20.0, 210.0, 260.0]));
    assert_eq!(b["face"]["confidence"], 1.0);
    assert_eq!(b["provider_request_id"], Value::Null);
    assert_eq!(row.provider_request_id, None);
    assert_eq!(a.upstream_status, Some(201));
    let raw = a.raw_body.expect("raw");
    assert!(
        raw.contains("img_width") && !raw.contains("\"img\""),
        "{raw}"
    );
}

async fn kairos_uuid_spelling_and_response_code_not_trusted(h: Harness) {
    // A high score with the "not live" code Kairos' own sample shows: livegate approves.
    let rule = json!({"score": 0.9, "response_code": 2, "uid_field": "api_req_uuid"});
    let (r, row, a) = verdict(&h, &KAIROS, rule, jpeg(3)).await;
    assert_eq!(r.body["decision"], "approved");
    assert!(
        r.body["provider_request_id"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
    assert_eq!(
        row.provider_request_id,
        r.body["provider_request_id"].as_str().map(str::to_owned)
    );
    // Recorded, not trusted.
    assert!(
        a.raw_body
            .as_deref()
            .is_some_and(|s| s.contains("\"response_code\":2"))
    );
    // A low score with a "live" code: declined.
    let rule = json!({"score": 0.5, "response_code": 1});
    let (r, _, _) = verdict(&h, &KAIROS, rule, jpeg(4)).await;
    assert_eq!(r.body["decision"], "declined");
    assert!(codes(&r.body["warnings"]).contains(&"LOW_LIVENESS_SCORE".to_owned()));
}

async fn kairos_below_threshold_is_declined(h: Harness) {
    // Kairos' threshold is the tenant's (0.8); at exactly the threshold the face is live.
    let (r, _, _) = verdict(&h, &KAIROS, json!({"score": 0.8}), jpeg(5)).await;
    assert_eq!(r.body["decision"], "approved");
    let (r, row, _) = verdict(&h, &KAIROS, json!({"score": 0.79}), jpeg(6)).await;
    assert_eq!(r.body["decision"], "declined");
    assert_eq!(r.body["is_live"], false);
    assert_eq!(r.body["score"], 0.79);
    assert_eq!(codes(&r.body["warnings"]), ["LOW_LIVENESS_SCORE"]);
    assert_eq!(row.decision.as_deref(), Some("declined"));
    // Without a rule, the simulator's deterministic score.
    let img = jpeg(7);
    let expected = livegate_simulators::default_score_for(&img);
    let (r, _, _) = verdict(&h, &KAIROS, json!({}), img).await;
    let got = r.body["score"].as_f64().expect("score");
    assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
}

async fn kairos_no_face(h: Harness) {
    let (r, row, a) = verdict(&h, &KAIROS, json!({"faces": 0}), jpeg(8)).await;
    let b = &r.body;
    assert_eq!(b["decision"], "declined");
    assert_eq!(b["score"], Value::Null, "faces_liveness 0.0 is not a score");
    assert_eq!(b["face"], Value::Null);
    assert_eq!(b["faces_detected"], 0);
    assert_eq!(codes(&b["warnings"]), ["NO_FACE_DETECTED"]);
    assert_eq!(row.score, None);
    assert_eq!(row.faces_detected, Some(0));
    assert!(
        a.raw_body
            .as_deref()
            .is_some_and(|s| s.contains("\"faces_predicted\":[]"))
    );
}

async fn kairos_several_faces_score_the_largest(h: Harness) {
    for faces in [2, 3] {
        let rule = json!({"score": 0.93, "faces": faces, "bbox": [100, 100, 300, 300]});
        let (r, row, _) = verdict(&h, &KAIROS, rule, jpeg(9 + faces)).await;
        let b = &r.body;
        assert_eq!(b["decision"], "review", "{faces} faces");
        assert_eq!(b["score"], 0.93);
        assert_eq!(b["faces_detected"], faces);
        // The simulator lists the largest face second: the largest, not the first, is kept.
        assert_eq!(b["face"]["bbox"], json!([100.0, 100.0, 300.0, 300.0]));
        assert_eq!(codes(&b["warnings"]), ["MULTIPLE_FACES_DETECTED"]);
        assert_eq!(row.decision.as_deref(), Some("review"));
        assert_eq!(row.faces_detected, Some(faces as i32));
    }
}

async fn kairos_spoof_shows_only_as_a_low_score(h: Harness) {
    let img = jpeg(12);
    let expected = livegate_simulators::default_score_for(&img) * 0.2;
    let (r, row, _) = verdict(&h, &KAIROS, json!({"spoof_type": "print"}), img).await;
    let b = &r.body;
    assert_eq!(b["decision"], "declined");
    let got = b["score"].as_f64().expect("score");
    assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
    // Kairos has no attack field: no spoof type, no attack warning.
    assert_eq!(b["spoof_type"], Value::Null);
    assert_eq!(codes(&b["warnings"]), ["LOW_LIVENESS_SCORE"]);
    assert_eq!(row.spoof_type, None);
}

async fn kairos_bad_request(h: Harness) {
    for status in [400, 413, 415, 422] {
        let (_, a) = failure(
            &h,
            &KAIROS,
            json!({"status": status, "times": 1}),
            422,
            "provider_rejected_input",
        )
        .await;
        assert_eq!(a.upstream_status, Some(status));
        assert!(
            a.raw_body
                .as_deref()
                .is_some_and(|s| s.contains("\"error\""))
        );
        recover(&h, &KAIROS).await;
    }
}

async fn kairos_auth_failed(h: Harness) {
    for status in [401, 404] {
        let (_, a) = failure(
            &h,
            &KAIROS,
            json!({"status": status, "times": 1}),
            502,
            "provider_auth_failed",
        )
        .await;
        assert_eq!(a.upstream_status, Some(status));
        recover(&h, &KAIROS).await;
    }
    // Kairos documents no error body: an empty one is fine too.
    failure(
        &h,
        &KAIROS,
        json!({"status": 401, "body": "", "times": 1}),
        502,
        "provider_auth_failed",
    )
    .await;
}

async fn kairos_usage_limit(h: Harness) {
    let (r, a) = failure(
        &h,
        &KAIROS,
        json!({"status": 403}),
        502,
        "provider_usage_limit",
    )
    .await;
    assert_eq!(a.upstream_status, Some(403));
    assert!(
        a.raw_body
            .as_deref()
            .is_some_and(|s| s.contains("usage_limit_exceeded"))
    );
    assert!(
        r.body["detail"]
            .as_str()
            .is_some_and(|d| d.contains("usage limit"))
    );
}

async fn kairos_rate_limited(h: Harness) {
    let (r, a) = failure(
        &h,
        &KAIROS,
        json!({"status": 429, "retry_after": 9}),
        503,
        "provider_rate_limited",
    )
    .await;
    assert_eq!(r.headers["retry-after"], "9");
    assert_eq!(a.upstream_status, Some(429));
}

async fn kairos_5xx(h: Harness) {
    for status in [500, 502, 503] {
        let (_, a) = failure(
            &h,
            &KAIROS,
            json!({"status": status, "times": 1}),
            503,
            "provider_unavailable",
        )
        .await;
        assert_eq!(a.upstream_status, Some(status));
        assert!(
            a.raw_body
                .as_deref()
                .is_some_and(|s| s.contains("server_error"))
        );
        recover(&h, &KAIROS).await;
    }
}

async fn kairos_timeout(h: Harness) {
    let started = std::time::Instant::now();
    let (_, a) = failure(
        &h,
        &KAIROS,
        json!({"delay_ms": 4000}),
        504,
        "provider_timeout",
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3500),
        "timeout_ms was not applied"
    );
    assert_eq!(a.upstream_status, None);
    assert_eq!(a.raw_body, None);
    recover(&h, &KAIROS).await;
    // Kairos timing out on its side.
    let (_, a) = failure(&h, &KAIROS, json!({"status": 408}), 504, "provider_timeout").await;
    assert_eq!(a.upstream_status, Some(408));
}

async fn kairos_malformed_bodies(h: Harness) {
    for body in [
        json!("<html>oops</html>"),
        json!(""),
        json!({"api_req_uid": "x"}),
        json!({"response_data": {"faces_liveness": 0.9}}),
        json!({"response_data": {"faces_predicted": [{"confidence": 1, "top_left": {"x": 1, "y": 1}, "delta": {"x": 5, "y": 5}}]}}),
        json!([1, 2]),
    ] {
        let raw = match &body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let (_, a) = failure(
            &h,
            &KAIROS,
            json!({"status": 200, "body": body, "times": 1}),
            502,
            "provider_bad_response",
        )
        .await;
        assert_eq!(a.upstream_status, Some(200));
        assert_eq!(a.raw_body.as_deref(), Some(raw.as_str()));
        recover(&h, &KAIROS).await;
    }
}

async fn kairos_other_success_status_is_bad_response(h: Harness) {
    let (_, a) = failure(
        &h,
        &KAIROS,
        json!({"status": 202}),
        502,
        "provider_bad_response",
    )
    .await;
    assert_eq!(a.upstream_status, Some(202));
}

async fn kairos_image_below_minimum_is_never_sent(h: Harness) {
    // 320x299: one side below Kairos' 300 px minimum (v0.2).
    let r = h
        .liveness(KAIROS_KEY, "image", encode(320, 299, 1, Fmt::Jpeg), &[])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["code"], "provider_unsupported_image");
    assert_eq!(r.body["provider"], "kairos");
    let detail = r.body["detail"].as_str().expect("detail");
    assert!(detail.contains("300 px"), "the limit is named: {detail}");
    assert!(
        detail.contains("320x299"),
        "the image size is named: {detail}"
    );
    assert!(
        h.sim_requests_on(Sim::Kairos).await.is_empty(),
        "never sent upstream"
    );
    let (row, attempts) = h.last_row("kairos_t").await;
    assert_eq!(
        row.error_code.as_deref(),
        Some("provider_unsupported_image")
    );
    assert_eq!(row.http_status, 422);
    assert_eq!(row.decision, None);
    assert_eq!(row.provider.as_deref(), Some("kairos"));
    assert_eq!(row.image_width, Some(320));
    assert_eq!(row.image_height, Some(299));
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "error");
    assert_eq!(
        attempts[0].error_code.as_deref(),
        Some("provider_unsupported_image")
    );
    assert_eq!(attempts[0].upstream_status, None);

    // Exactly 300 px is accepted.
    h.sim_rule_on(Sim::Kairos, json!({"score": 0.9})).await;
    let r = h
        .liveness(KAIROS_KEY, "image", encode(300, 300, 2, Fmt::Jpeg), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(h.sim_requests_on(Sim::Kairos).await.len(), 1);
}

async fn kairos_oversized_image_is_downscaled(h: Harness) {
    // 5200 px wide: over Kairos' 5000 px maximum (v0.2), so livegate sends a 5000 px copy
    // (the simulator would answer 400 `image_too_large` to the original).
    let img = encode(5200, 600, 4, Fmt::Jpeg);
    let (r, row, a) = verdict(&h, &KAIROS, json!({"score": 0.9}), img.clone()).await;
    assert_eq!(r.body["decision"], "approved");
    assert_eq!(row.image_width, Some(5200));
    let raw: Value = serde_json::from_str(a.raw_body.as_deref().expect("raw")).expect("json");
    assert_eq!(raw["response_data"]["img"]["width"], 5000);
    assert_eq!(raw["response_data"]["img"]["height"], 577);
    let reqs = h.sim_requests_on(Sim::Kairos).await;
    assert_ne!(reqs[0]["files"]["selfie"]["sha256"], sha256(&img));
    assert_eq!(reqs[0]["files"]["selfie"]["content_type"], "image/jpeg");
}

/// `face.bbox` is in pixels of the submitted image even when livegate downscaled the copy it
/// sent: Kairos saw 5000x577 and boxed its middle half; the answer is the middle half of the
/// 5200x600 original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kairos_box_of_a_downscaled_image_is_in_submitted_pixels() {
    let Some(h) = Harness::start(crate::harness::Backend::Sqlite).await else {
        return;
    };
    let img = encode(5200, 600, 4, Fmt::Jpeg);
    let (r, _, _) = verdict(&h, &KAIROS, json!({"score": 0.9}), img).await;
    let bbox: Vec<f64> = r.body["face"]["bbox"]
        .as_array()
        .expect("bbox")
        .iter()
        .map(|v| v.as_f64().expect("number"))
        .collect();
    for (got, want) in bbox.iter().zip([1300.0, 150.0, 3900.0, 450.0]) {
        assert!((got - want).abs() <= 1.5, "{bbox:?}");
    }
}

async fn kairos_webp_is_transcoded(h: Harness) {
    let img = encode(640, 480, 3, Fmt::WebP);
    let (r, _, _) = verdict(&h, &KAIROS, json!({"score": 0.9}), img.clone()).await;
    assert_eq!(r.body["decision"], "approved");
    // Boxes stay in the pixels of the submitted image: the transcode keeps the size.
    assert_eq!(r.body["face"]["bbox"], json!([160.0, 120.0, 480.0, 360.0]));
    let reqs = h.sim_requests_on(Sim::Kairos).await;
    let file = &reqs[0]["files"]["selfie"];
    assert_eq!(file["content_type"], "image/jpeg");
    assert_ne!(file["sha256"], sha256(&img));
}

// ---- collections engine ----------------------------------------------------------------

async fn coll_documented_success_and_what_the_engine_received(h: Harness) {
    let img = jpeg(20);
    let (r, row, a) = verdict(&h, &ENGINE, json!({"score": 0.97}), img.clone()).await;
    let b = &r.body;
    assert_eq!(b["decision"], "approved");
    assert_eq!(b["is_live"], true);
    assert_eq!(b["score"], 0.97);
    assert_eq!(b["spoof_type"], Value::Null);
    // The documented success body has no face box, no face count and no request id.
    assert_eq!(b["face"], Value::Null);
    assert_eq!(b["faces_detected"], 1);
    assert_eq!(b["provider_request_id"], Value::Null);
    assert_eq!(b["warnings"], json!([]));
    assert_eq!(a.upstream_status, Some(200));
    assert!(
        a.raw_body
            .as_deref()
            .is_some_and(|s| s.contains("\"success\":true") && s.contains("query_time_ms"))
    );
    assert_eq!(row.face, None);

    let reqs = h.sim_requests_on(Sim::Collections).await;
    assert_eq!(reqs.len(), 1);
    let sent = &reqs[0];
    assert_eq!(sent["method"], "POST");
    assert_eq!(sent["path"], "/api/v1/collections/selfies/liveness");
    assert_eq!(sent["headers"]["x-api-key"], COLL_SECRET);
    assert_eq!(sent["fields"]["liveness_threshold"], "0.8");
    assert_eq!(sent["files"]["image"]["sha256"], sha256(&img));
    assert_eq!(sent["files"]["image"]["content_type"], "image/jpeg");

    // Without a rule: the simulator's deterministic score; a PNG goes through unchanged.
    let png = encode(320, 240, 21, Fmt::Png);
    let expected = livegate_simulators::default_score_for(&png);
    let (r, _, _) = verdict(&h, &ENGINE, json!({}), png.clone()).await;
    let got = r.body["score"].as_f64().expect("score");
    assert!((got - expected).abs() < 1e-4, "{got} vs {expected}");
    let reqs = h.sim_requests_on(Sim::Collections).await;
    assert_eq!(reqs[1]["files"]["image"]["sha256"], sha256(&png));
    assert_eq!(reqs[1]["files"]["image"]["content_type"], "image/png");
}

async fn coll_is_live_is_not_trusted(h: Harness) {
    // The engine says live below the tenant's threshold: livegate declines.
    let (r, row, _) = verdict(
        &h,
        &ENGINE,
        json!({"score": 0.7, "is_live": true}),
        jpeg(22),
    )
    .await;
    assert_eq!(r.body["decision"], "declined");
    assert_eq!(codes(&r.body["warnings"]), ["LOW_LIVENESS_SCORE"]);
    assert_eq!(row.decision.as_deref(), Some("declined"));
    // The other way round, not live above it, the engine's own decline stands: livegate
    // fails closed on a decline it cannot explain (tests/it/policy.rs).
    let (r, _, _) = verdict(
        &h,
        &ENGINE,
        json!({"score": 0.9, "is_live": false}),
        jpeg(23),
    )
    .await;
    assert_eq!(r.body["decision"], "declined");
    // A plain low score.
    let (r, _, _) = verdict(&h, &ENGINE, json!({"score": 0.42}), jpeg(24)).await;
    assert_eq!(r.body["decision"], "declined");
    assert_eq!(r.body["score"], 0.42);
}

async fn coll_no_face(h: Harness) {
    // The engine answers 422 FACE_NOT_DETECTED: a verdict, not a failure.
    let (r, row, a) = verdict(&h, &ENGINE, json!({"faces": 0}), jpeg(25)).await;
    let b = &r.body;
    assert_eq!(b["decision"], "declined");
    assert_eq!(b["score"], Value::Null);
    assert_eq!(b["face"], Value::Null);
    assert_eq!(b["faces_detected"], 0);
    assert_eq!(codes(&b["warnings"]), ["NO_FACE_DETECTED"]);
    assert_eq!(
        b["warnings"][0]["message"],
        "No face detected in the image."
    );
    // The error envelope's request id.
    assert!(
        b["provider_request_id"]
            .as_str()
            .is_some_and(|s| s.len() == 36)
    );
    assert_eq!(b["attempts"][0]["outcome"], "ok");
    assert_eq!(b["attempts"][0]["upstream_status"], 422);
    assert_eq!(a.upstream_status, Some(422));
    assert!(
        a.raw_body
            .as_deref()
            .is_some_and(|s| s.contains("FACE_NOT_DETECTED"))
    );
    assert_eq!(row.faces_detected, Some(0));
    assert_eq!(row.score, None);
}

async fn coll_several_faces(h: Harness) {
    // The engine refuses to score several faces (422 MULTIPLE_FACES): no score, and the
    // tenant's action for MULTIPLE_FACES_DETECTED (review by default) decides, as with the
    // vendors that do score.
    let rule = json!({"score": 0.93, "faces": 2});
    let (r, row, a) = verdict(&h, &ENGINE, rule, jpeg(26)).await;
    let b = &r.body;
    assert_eq!(b["decision"], "review");
    assert_eq!(b["score"], Value::Null);
    assert_eq!(b["faces_detected"], 2);
    assert_eq!(b["face"], Value::Null);
    assert_eq!(codes(&b["warnings"]), ["MULTIPLE_FACES_DETECTED"]);
    assert_eq!(a.upstream_status, Some(422));
    assert!(
        a.raw_body
            .as_deref()
            .is_some_and(|s| s.contains("MULTIPLE_FACES"))
    );
    assert_eq!(row.faces_detected, Some(2));
}

async fn coll_spoof_types(h: Harness) {
    for (i, (sent, normalized)) in [
        ("print", "print"),
        ("replay", "replay"),
        ("3d_mask", "mask"),
        ("deepfake", "deepfake"),
    ]
    .into_iter()
    .enumerate()
    {
        // Even with a high score, a named attack declines.
        let rule = json!({"score": 0.95, "spoof_type": sent});
        let (r, row, a) = verdict(&h, &ENGINE, rule, jpeg(30 + i as u8)).await;
        let b = &r.body;
        assert_eq!(b["decision"], "declined", "{sent}");
        assert_eq!(b["spoof_type"], normalized, "{sent}");
        assert_eq!(b["score"], 0.95);
        assert_eq!(codes(&b["warnings"]), ["LIVENESS_FACE_ATTACK"], "{sent}");
        assert_eq!(row.spoof_type.as_deref(), Some(normalized));
        assert!(a.raw_body.as_deref().is_some_and(|s| s.contains(sent)));
    }
    // A spoof without a score: the simulator's low score, both warnings.
    let (r, _, _) = verdict(&h, &ENGINE, json!({"spoof_type": "replay"}), jpeg(35)).await;
    assert_eq!(r.body["decision"], "declined");
    assert!(r.body["score"].as_f64().is_some_and(|s| s < 0.2));
    let mut got = codes(&r.body["warnings"]);
    got.sort();
    assert_eq!(got, ["LIVENESS_FACE_ATTACK", "LOW_LIVENESS_SCORE"]);
}

async fn coll_face_rejections_are_verdicts(h: Harness) {
    // Without a score nothing is approved; a warning the tenant sends to review (by default
    // MULTIPLE_FACES_DETECTED) makes it a review.
    for (i, (code, warning, faces, decision)) in [
        ("FACE_QUALITY_TOO_LOW", "LOW_FACE_QUALITY", 1, "declined"),
        ("LIVENESS_CHECK_FAILED", "LOW_LIVENESS_SCORE", 1, "declined"),
        ("MULTIPLE_FACES", "MULTIPLE_FACES_DETECTED", 2, "review"),
        ("FACE_NOT_DETECTED", "NO_FACE_DETECTED", 0, "declined"),
    ]
    .into_iter()
    .enumerate()
    {
        let rule = json!({"error_code": code, "error_message": format!("engine says {code}")});
        let (r, row, a) = verdict(&h, &ENGINE, rule, jpeg(40 + i as u8)).await;
        let b = &r.body;
        assert_eq!(b["decision"], decision, "{code}");
        assert_eq!(b["score"], Value::Null);
        assert_eq!(b["faces_detected"], faces, "{code}");
        assert_eq!(codes(&b["warnings"]), [warning], "{code}");
        assert_eq!(b["warnings"][0]["message"], format!("engine says {code}"));
        assert_eq!(a.upstream_status, Some(422));
        assert_eq!(row.faces_detected, Some(faces));
    }
}

async fn coll_error_codes(h: Harness) {
    let cases: [(&str, i32, u16, &str); 10] = [
        ("VALIDATION_ERROR", 400, 422, "provider_rejected_input"),
        ("INVALID_IMAGE", 400, 422, "provider_rejected_input"),
        ("FILE_TOO_LARGE", 413, 422, "provider_rejected_input"),
        ("INVALID_API_KEY", 401, 502, "provider_auth_failed"),
        ("IP_NOT_ALLOWED", 403, 502, "provider_auth_failed"),
        ("FACE_NOT_FOUND", 404, 502, "provider_auth_failed"),
        ("DUPLICATE_EXTERNAL_ID", 409, 502, "provider_bad_response"),
        ("INTERNAL_ERROR", 500, 503, "provider_unavailable"),
        ("SERVICE_UNAVAILABLE", 503, 503, "provider_unavailable"),
        ("RATE_LIMIT_EXCEEDED", 429, 503, "provider_rate_limited"),
    ];
    for (code, upstream, status, problem) in cases {
        let rule = json!({"error_code": code, "times": 1});
        let (r, a) = failure(&h, &ENGINE, rule, status, problem).await;
        assert_eq!(a.upstream_status, Some(upstream), "{code}");
        let raw = a.raw_body.expect("raw body");
        let env: Value = serde_json::from_str(&raw).expect("envelope");
        assert_eq!(env["success"], false);
        assert_eq!(env["error"]["code"], code);
        // The engine's code reaches the problem detail (and the row), never its raw body.
        let detail = r.body["detail"].as_str().expect("detail");
        if problem != "provider_rate_limited" {
            assert!(detail.contains(code), "{code}: {detail}");
        }
        recover(&h, &ENGINE).await;
    }
    // A bare status without the envelope's fields.
    failure(
        &h,
        &ENGINE,
        json!({"status": 502, "body": "Bad Gateway", "times": 1}),
        503,
        "provider_unavailable",
    )
    .await;
}

async fn coll_rate_limited(h: Harness) {
    let (r, a) = failure(
        &h,
        &ENGINE,
        json!({"error_code": "RATE_LIMIT_EXCEEDED", "retry_after": 11}),
        503,
        "provider_rate_limited",
    )
    .await;
    assert_eq!(r.headers["retry-after"], "11");
    assert_eq!(a.upstream_status, Some(429));
}

async fn coll_timeout(h: Harness) {
    let started = std::time::Instant::now();
    let (_, a) = failure(
        &h,
        &ENGINE,
        json!({"delay_ms": 4000}),
        504,
        "provider_timeout",
    )
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3500),
        "timeout_ms was not applied"
    );
    assert_eq!(a.upstream_status, None);
}

async fn coll_malformed_bodies(h: Harness) {
    for body in [
        json!("<html>oops</html>"),
        json!(""),
        json!({"success": true}),
        json!({"success": true, "data": {"is_live": true}}),
        json!({"success": false, "error": {"code": "INTERNAL_ERROR", "message": "x"}}),
        json!({"data": {"is_live": true, "liveness_score": 0.9}}),
    ] {
        let raw = match &body {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let (_, a) = failure(
            &h,
            &ENGINE,
            json!({"status": 200, "body": body, "times": 1}),
            502,
            "provider_bad_response",
        )
        .await;
        assert_eq!(a.upstream_status, Some(200));
        assert_eq!(a.raw_body.as_deref(), Some(raw.as_str()));
        recover(&h, &ENGINE).await;
    }
    // A 422 whose body is not the envelope is a rejected input, not a verdict.
    let (_, a) = failure(
        &h,
        &ENGINE,
        json!({"status": 422, "body": "nope", "times": 1}),
        422,
        "provider_rejected_input",
    )
    .await;
    assert_eq!(a.raw_body.as_deref(), Some("nope"));
}

async fn coll_webp_and_tiff_are_transcoded(h: Harness) {
    for (i, format) in [Fmt::WebP, Fmt::Tiff].into_iter().enumerate() {
        let img = encode(400, 300, 60 + i as u8, format);
        // No rule: the simulator validates the image itself, and answers 400 INVALID_IMAGE
        // ("use JPEG or PNG") to anything else by its magic number.
        let (r, row, a) = verdict(&h, &ENGINE, json!({}), img.clone()).await;
        assert!(r.body["decision"].is_string(), "{format:?}: {}", r.body);
        assert_eq!(a.upstream_status, Some(200), "{format:?}");
        // The row keeps what the tenant sent.
        let ext = if format == Fmt::WebP { "webp" } else { "tiff" };
        assert_eq!(row.image_format.as_deref(), Some(ext));
        let reqs = h.sim_requests_on(Sim::Collections).await;
        let file = &reqs[i]["files"]["image"];
        assert!(
            matches!(
                file["content_type"].as_str(),
                Some("image/jpeg" | "image/png")
            ),
            "{format:?}: {file}"
        );
        assert!(
            file["filename"]
                .as_str()
                .is_some_and(|f| f.ends_with(".jpg") || f.ends_with(".png")),
            "{file}"
        );
        assert_ne!(file["sha256"], sha256(&img), "{format:?} was sent as is");
    }
}

async fn coll_image_below_minimum_is_never_sent(h: Harness) {
    let r = h
        .liveness(COLL_KEY, "image", encode(120, 99, 1, Fmt::Png), &[])
        .await;
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.body["code"], "provider_unsupported_image");
    assert_eq!(r.body["provider"], "engine");
    let detail = r.body["detail"].as_str().expect("detail");
    assert!(detail.contains("100 px"), "{detail}");
    assert!(h.sim_requests_on(Sim::Collections).await.is_empty());
    let (row, attempts) = h.last_row("coll_t").await;
    assert_eq!(
        row.error_code.as_deref(),
        Some("provider_unsupported_image")
    );
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].upstream_status, None);
}

// ---- configurations beyond the default -------------------------------------------------

/// The default config with `extra` providers and tenants appended.
fn with_extra(u: &crate::harness::SimUrls, providers: &str, tenants: &str) -> String {
    let base = default_yaml(u);
    let base = base.replacen("providers:\n", &format!("providers:\n{providers}"), 1);
    base.replacen("tenants:\n", &format!("tenants:\n{tenants}"), 1)
}

fn tenant_yaml(id: &str, key: &str, provider: &str) -> String {
    format!(
        "  {id}:\n    keys: [\"{}\"]\n    threshold: 0.8\n    routing: {{ strategy: single, providers: [{provider}] }}\n",
        livegate::config::KeyHash::of_key(key)
    )
}

const K_UNDERSCORE: &str = "lg_test_kairos_underscore_key_01";
const K_HYPHEN: &str = "lg_test_kairos_hyphen_key_02";
const K_V01: &str = "lg_test_kairos_v01_key_03";
const K_BADPATH: &str = "lg_test_kairos_badpath_key_04";
const K_DOWN: &str = "lg_test_kairos_down_key_07";

mod configured {
    use super::*;

    async fn kairos_harness(backend: crate::harness::Backend) -> Option<Harness> {
        Harness::start_with(backend, |u| {
            let k = u.kairos;
            let providers = format!(
                "  k_under: {{ kind: kairos, base_url: \"{k}\", app_id: \"id-u\", app_key: \"key-u\", header_style: underscore, timeout_ms: 1500 }}\n\
                 \x20 k_hyph: {{ kind: kairos, base_url: \"{k}\", app_id: \"id-h\", app_key: \"key-h\", header_style: hyphen, timeout_ms: 1500 }}\n\
                 \x20 k_v01: {{ kind: kairos, base_url: \"{k}/\", path: \"/v0.1/liveness-verification\", app_id: \"id-1\", app_key: \"key-1\", timeout_ms: 1500 }}\n\
                 \x20 k_bad: {{ kind: kairos, base_url: \"{k}\", path: \"/v9/liveness\", app_id: \"id-b\", app_key: \"key-b\", timeout_ms: 1500 }}\n\
                 \x20 k_down: {{ kind: kairos, base_url: \"http://127.0.0.1:1\", app_id: \"id-d\", app_key: \"key-d\", timeout_ms: 1500 }}\n"
            );
            let tenants = [
                tenant_yaml("k_under_t", K_UNDERSCORE, "k_under"),
                tenant_yaml("k_hyph_t", K_HYPHEN, "k_hyph"),
                tenant_yaml("k_v01_t", K_V01, "k_v01"),
                tenant_yaml("k_bad_t", K_BADPATH, "k_bad"),
                tenant_yaml("k_down_t", K_DOWN, "k_down"),
            ]
            .concat();
            with_extra(u, &providers, &tenants)
        })
        .await
    }

    async fn kairos_header_style_path_and_version(backend: crate::harness::Backend) {
        let Some(h) = kairos_harness(backend).await else {
            return;
        };
        h.sim_rule_on(Sim::Kairos, json!({"score": 0.9})).await;
        for key in [K_UNDERSCORE, K_HYPHEN] {
            let r = h.liveness(key, "image", jpeg(70), &[]).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["decision"], "approved");
        }
        let reqs = h.sim_requests_on(Sim::Kairos).await;
        assert_eq!(reqs[0]["headers"]["app_id"], "id-u");
        assert_eq!(reqs[0]["headers"]["app_key"], "key-u");
        assert!(reqs[0]["headers"].get("app-id").is_none());
        assert!(reqs[0]["headers"].get("app-key").is_none());
        assert_eq!(reqs[1]["headers"]["app-id"], "id-h");
        assert_eq!(reqs[1]["headers"]["app-key"], "key-h");
        assert!(reqs[1]["headers"].get("app_id").is_none());
        assert!(reqs[1]["headers"].get("app_key").is_none());

        // v0.1: the path is configuration, and its 480 px minimum is enforced before sending.
        let r = h
            .liveness(K_V01, "image", encode(640, 479, 71, Fmt::Jpeg), &[])
            .await;
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body["code"], "provider_unsupported_image");
        assert!(
            r.body["detail"]
                .as_str()
                .is_some_and(|d| d.contains("480 px"))
        );
        assert_eq!(h.sim_requests_on(Sim::Kairos).await.len(), 2);
        let r = h.liveness(K_V01, "image", jpeg(72), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let reqs = h.sim_requests_on(Sim::Kairos).await;
        assert_eq!(reqs[2]["path"], "/v0.1/liveness-verification");
        let (row, _) = h.last_row("k_v01_t").await;
        assert_eq!(row.provider.as_deref(), Some("k_v01"));

        // A wrong path answers 404, which Kairos' 4xx-is-auth reading reports as auth failure.
        let r = h.liveness(K_BADPATH, "image", jpeg(73), &[]).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["code"], "provider_auth_failed");
        let (row, attempts) = h.last_row("k_bad_t").await;
        assert_eq!(row.error_code.as_deref(), Some("provider_auth_failed"));
        assert_eq!(attempts[0].upstream_status, Some(404));

        // Nothing listens: the connection is refused.
        let r = h.liveness(K_DOWN, "image", jpeg(74), &[]).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert_eq!(r.body["code"], "provider_unreachable");
        assert_eq!(r.body["provider"], "k_down");
        let (row, attempts) = h.last_row("k_down_t").await;
        assert_eq!(row.error_code.as_deref(), Some("provider_unreachable"));
        assert_eq!(row.http_status, 502);
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].upstream_status, None);
    }

    const FALLBACK_KEY: &str = "lg_test_kairos_then_others_key_08";

    /// Kairos' 403 (usage limit) and an image below its minimum are failures another provider
    /// may not have: a fallback tenant moves on, and both attempts are stored.
    async fn kairos_failures_fall_over(backend: crate::harness::Backend) {
        let Some(h) = Harness::start_with(backend, |u| {
            let tenant = format!(
                "  fb_t:\n    keys: [\"{}\"]\n    threshold: 0.8\n    routing: {{ strategy: fallback, providers: [kairos, engine] }}\n",
                livegate::config::KeyHash::of_key(FALLBACK_KEY)
            );
            with_extra(u, "", &tenant)
        })
        .await
        else {
            return;
        };
        h.sim_rule_on(Sim::Kairos, json!({"status": 403})).await;
        h.sim_rule_on(Sim::Collections, json!({"score": 0.9})).await;
        let r = h.liveness(FALLBACK_KEY, "image", jpeg(90), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["provider"], "engine");
        assert_eq!(r.body["decision"], "approved");
        let (row, attempts) = h.row("fb_t", r.body["id"].as_str().expect("id")).await;
        assert_eq!(row.provider.as_deref(), Some("engine"));
        let got: Vec<_> = attempts
            .iter()
            .map(|a| {
                (
                    a.provider.as_str(),
                    a.outcome.as_str(),
                    a.error_code.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("kairos", "error", Some("provider_usage_limit")),
                ("engine", "ok", None)
            ]
        );
        assert_eq!(attempts[0].upstream_status, Some(403));

        // 320x240 is below Kairos' minimum but fine for the engine (100 px): Kairos never sees it.
        let before = h.sim_requests_on(Sim::Kairos).await.len();
        let r = h
            .liveness(FALLBACK_KEY, "image", encode(320, 240, 91, Fmt::Jpeg), &[])
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["provider"], "engine");
        assert_eq!(h.sim_requests_on(Sim::Kairos).await.len(), before);
        let (_, attempts) = h.row("fb_t", r.body["id"].as_str().expect("id")).await;
        assert_eq!(attempts.len(), 2);
        assert_eq!(
            attempts[0].error_code.as_deref(),
            Some("provider_unsupported_image")
        );
        assert_eq!(attempts[0].upstream_status, None);
        assert_eq!(attempts[1].outcome, "ok");
    }

    const C_OTHER: &str = "lg_test_coll_other_collection_key_05";
    const C_BADKEY: &str = "lg_test_coll_malformed_key_06";

    async fn coll_key_binding_and_key_format(backend: crate::harness::Backend) {
        let Some(h) = Harness::start_with(backend, |u| {
            let c = u.collections;
            let providers = format!(
                "  other_coll: {{ kind: collections, base_url: \"{c}\", api_key: \"{COLL_SECRET}\", collection_id: \"other\", timeout_ms: 1500 }}\n\
                 \x20 bad_key: {{ kind: collections, base_url: \"{c}\", api_key: \"fr_prod_0123456789abcdef0123456789abcdef\", collection_id: \"selfies\", timeout_ms: 1500 }}\n"
            );
            let tenants = [
                tenant_yaml("other_t", C_OTHER, "other_coll"),
                tenant_yaml("badkey_t", C_BADKEY, "bad_key"),
            ]
            .concat();
            with_extra(u, &providers, &tenants)
        })
        .await
        else {
            return;
        };
        // The key is bound to `selfies` by its first use...
        let r = h.liveness(COLL_KEY, "image", jpeg(80), &[]).await;
        assert_eq!(r.status, 200, "{}", r.body);
        // ...so the same key on another collection is refused by the engine.
        for (key, tenant, message) in [
            (C_OTHER, "other_t", "not valid for this collection"),
            (C_BADKEY, "badkey_t", "Invalid or missing API key"),
        ] {
            let r = h.liveness(key, "image", jpeg(81), &[]).await;
            assert_eq!(r.status, 502, "{}", r.body);
            assert_eq!(r.body["code"], "provider_auth_failed");
            assert!(
                r.body["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("INVALID_API_KEY")),
                "{}",
                r.body
            );
            let (row, attempts) = h.last_row(tenant).await;
            assert_eq!(row.error_code.as_deref(), Some("provider_auth_failed"));
            assert_eq!(attempts[0].upstream_status, Some(401));
            assert!(
                attempts[0]
                    .raw_body
                    .as_deref()
                    .is_some_and(|b| b.contains(message))
            );
        }
        let reqs = h.sim_requests_on(Sim::Collections).await;
        assert_eq!(reqs[1]["path"], "/api/v1/collections/other/liveness");
    }

    mod sqlite {
        use crate::harness::Backend;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kairos_header_style_path_and_version() {
            super::kairos_header_style_path_and_version(Backend::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kairos_failures_fall_over() {
            super::kairos_failures_fall_over(Backend::Sqlite).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn coll_key_binding_and_key_format() {
            super::coll_key_binding_and_key_format(Backend::Sqlite).await;
        }
    }

    mod postgres {
        use crate::harness::Backend;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kairos_header_style_path_and_version() {
            super::kairos_header_style_path_and_version(Backend::Postgres).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn kairos_failures_fall_over() {
            super::kairos_failures_fall_over(Backend::Postgres).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn coll_key_binding_and_key_format() {
            super::coll_key_binding_and_key_format(Backend::Postgres).await;
        }
    }
}
