use serde_json::json;

use crate::harness::{ACME_KEY, DIDIT_SECRET, Harness, encode, jpeg};

fn sha256(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

crate::backend_matrix!(
    approved_and_threshold_reaches_didit,
    upstream_approval_below_tenant_threshold_is_declined,
    no_face,
    several_faces_review,
    upstream_bad_request,
    upstream_auth_failed,
    upstream_out_of_credits,
    upstream_403_without_credit_text_is_auth,
    upstream_rate_limited,
    upstream_5xx,
    upstream_timeout,
    malformed_upstream_body,
    unknown_upstream_status,
    json_base64_and_aliases,
    request_threshold_may_raise_never_lower,
    bad_inputs_leave_rows,
    unauthenticated_requests_leave_no_row,
);

async fn approved_and_threshold_reaches_didit(h: Harness) {
    h.sim_rule(json!({"score": 0.95})).await;
    let img = jpeg(1);
    let r = h
        .liveness(
            ACME_KEY,
            "image",
            img.clone(),
            &[
                ("external_id", "user-42"),
                ("metadata", r#"{"flow":"signup"}"#),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["decision"], "approved");
    assert_eq!(b["is_live"], true);
    assert_eq!(b["score"], 0.95);
    assert_eq!(b["threshold"], 0.8);
    assert_eq!(b["provider"], "didit");
    assert_eq!(b["faces_detected"], 1);
    assert!(b["face"]["bbox"].is_array());
    assert_eq!(b["warnings"], json!([]));
    assert_eq!(b["attempts"][0]["outcome"], "ok");
    assert_eq!(b["external_id"], "user-42");
    for field in [
        "id",
        "spoof_type",
        "provider_request_id",
        "latency_ms",
        "created_at",
    ] {
        assert!(b.get(field).is_some(), "missing {field}");
    }

    // What Didit received: the documented multipart contract.
    let reqs = h.sim_requests().await;
    assert_eq!(reqs.len(), 1);
    let sent = &reqs[0];
    assert_eq!(
        sent["fields"]["face_liveness_score_decline_threshold"],
        "80"
    );
    assert_eq!(sent["fields"]["save_api_request"], "false");
    assert_eq!(sent["headers"]["x-api-key"], DIDIT_SECRET);
    let sha = sha256(&img);
    assert_eq!(sent["files"]["user_image"]["sha256"], sha);

    let (row, attempts) = h.row("acme", b["id"].as_str().expect("id")).await;
    assert_eq!(row.decision.as_deref(), Some("approved"));
    assert_eq!(row.score, Some(0.95));
    assert_eq!(row.provider.as_deref(), Some("didit"));
    assert_eq!(row.image_sha256.as_deref(), Some(sha.as_str()));
    assert_eq!(row.external_id.as_deref(), Some("user-42"));
    assert_eq!(row.metadata, Some(json!({"flow": "signup"})));
    assert_eq!(row.http_status, 200);
    assert!(row.error_code.is_none());
    assert!(
        row.config_hash
            .as_deref()
            .is_some_and(|c| c.starts_with("sha256:"))
    );
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "ok");
    assert_eq!(attempts[0].upstream_status, Some(200));
    assert!(
        attempts[0]
            .raw_body
            .as_deref()
            .is_some_and(|b| b.contains("\"liveness\""))
    );
}

async fn upstream_approval_below_tenant_threshold_is_declined(h: Harness) {
    h.sim_rule(json!({"score": 0.7, "decision": "Approved"}))
        .await;
    let r = h.liveness(ACME_KEY, "image", jpeg(2), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "declined");
    assert_eq!(r.body["is_live"], false);
    assert_eq!(r.body["score"], 0.7);
    let codes: Vec<_> = r.body["warnings"]
        .as_array()
        .expect("w")
        .iter()
        .map(|w| w["code"].clone())
        .collect();
    assert!(codes.contains(&json!("LOW_LIVENESS_SCORE")), "{codes:?}");
    let (row, _) = h.row("acme", r.body["id"].as_str().expect("id")).await;
    assert_eq!(row.decision.as_deref(), Some("declined"));
    assert!(row.warnings.to_string().contains("LOW_LIVENESS_SCORE"));
}

async fn no_face(h: Harness) {
    h.sim_rule(json!({"faces": 0})).await;
    let r = h.liveness(ACME_KEY, "image", jpeg(3), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "declined");
    assert_eq!(r.body["score"], serde_json::Value::Null);
    assert_eq!(r.body["face"], serde_json::Value::Null);
    assert_eq!(r.body["faces_detected"], 0);
    assert!(r.body["warnings"].to_string().contains("NO_FACE_DETECTED"));
    let (row, _) = h.row("acme", r.body["id"].as_str().expect("id")).await;
    assert_eq!(row.score, None);
    assert_eq!(row.faces_detected, Some(0));
    assert!(row.warnings.to_string().contains("NO_FACE_DETECTED"));
}

async fn several_faces_review(h: Harness) {
    h.sim_rule(json!({"score": 0.93, "faces": 2, "bbox": [100, 100, 300, 300]}))
        .await;
    let r = h.liveness(ACME_KEY, "image", jpeg(4), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "review");
    assert_eq!(r.body["faces_detected"], 2);
    assert_eq!(r.body["face"]["bbox"], json!([100.0, 100.0, 300.0, 300.0]));
    assert!(
        r.body["warnings"]
            .to_string()
            .contains("MULTIPLE_FACES_DETECTED")
    );
}

/// An upstream failure: the problem the tenant sees and the row with the attempt.
async fn upstream_failure(
    h: &Harness,
    rule: serde_json::Value,
    status: u16,
    code: &str,
) -> serde_json::Value {
    h.sim_rule(rule).await;
    let r = h.liveness(ACME_KEY, "image", jpeg(5), &[]).await;
    assert_eq!(r.status, status, "{}", r.body);
    assert_eq!(r.headers["content-type"], "application/problem+json");
    assert_eq!(r.body["code"], code);
    assert_eq!(r.body["provider"], "didit");
    assert!(r.body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    let (row, attempts) = h.last_row("acme").await;
    assert_eq!(row.error_code.as_deref(), Some(code));
    assert_eq!(row.http_status, i32::from(status));
    assert_eq!(row.decision, None);
    // Hashed while the vendor worked, whatever the vendor answered.
    assert_eq!(row.image_sha256, Some(sha256(&jpeg(5))));
    assert_eq!(row.request_id, r.body["request_id"].as_str().expect("rid"));
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, "error");
    assert_eq!(attempts[0].error_code.as_deref(), Some(code));
    r.body.clone()
}

async fn upstream_bad_request(h: Harness) {
    upstream_failure(&h, json!({"status": 400}), 422, "provider_rejected_input").await;
    let (_, attempts) = h.last_row("acme").await;
    assert_eq!(attempts[0].upstream_status, Some(400));
    assert!(
        attempts[0]
            .raw_body
            .as_deref()
            .is_some_and(|b| b.contains("user_image"))
    );
}

async fn upstream_auth_failed(h: Harness) {
    upstream_failure(&h, json!({"status": 401}), 502, "provider_auth_failed").await;
}

async fn upstream_out_of_credits(h: Harness) {
    upstream_failure(&h, json!({"status": 403}), 502, "provider_out_of_credits").await;
}

async fn upstream_403_without_credit_text_is_auth(h: Harness) {
    let rule = json!({"status": 403, "error_detail": "You do not have permission to perform this action."});
    upstream_failure(&h, rule, 502, "provider_auth_failed").await;
}

async fn upstream_rate_limited(h: Harness) {
    h.sim_rule(json!({"status": 429, "retry_after": 7})).await;
    let r = h.liveness(ACME_KEY, "image", jpeg(6), &[]).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["code"], "provider_rate_limited");
    assert_eq!(r.headers["retry-after"], "7");
}

async fn upstream_5xx(h: Harness) {
    upstream_failure(&h, json!({"status": 500}), 503, "provider_unavailable").await;
}

async fn upstream_timeout(h: Harness) {
    let started = std::time::Instant::now();
    upstream_failure(&h, json!({"delay_ms": 4000}), 504, "provider_timeout").await;
    assert!(
        started.elapsed() < std::time::Duration::from_millis(3500),
        "timeout_ms was not applied"
    );
}

async fn malformed_upstream_body(h: Harness) {
    upstream_failure(
        &h,
        json!({"status": 200, "body": "<html>oops</html>"}),
        502,
        "provider_bad_response",
    )
    .await;
    let (_, attempts) = h.last_row("acme").await;
    assert_eq!(attempts[0].raw_body.as_deref(), Some("<html>oops</html>"));
}

async fn unknown_upstream_status(h: Harness) {
    upstream_failure(
        &h,
        json!({"decision": "Not Finished"}),
        502,
        "provider_bad_response",
    )
    .await;
}

async fn json_base64_and_aliases(h: Harness) {
    h.sim_rule(json!({"score": 0.9})).await;
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(jpeg(7));
    let resp = h
        .client
        .post(format!("{}/v1/liveness", h.base))
        .header("x-api-key", ACME_KEY)
        .json(&json!({"image_base64": b64, "metadata": {"a": 1}, "threshold": 0.85}))
        .send()
        .await
        .expect("send");
    let r = Harness::reply(resp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "approved");
    assert_eq!(r.body["threshold"], 0.85);
    for alias in ["user_image", "selfie"] {
        let r = h.liveness(ACME_KEY, alias, jpeg(8), &[]).await;
        assert_eq!(r.status, 200, "{alias}: {}", r.body);
    }
    // WebP, PNG and TIFF are accepted at the door.
    for (i, f) in [
        image::ImageFormat::Png,
        image::ImageFormat::WebP,
        image::ImageFormat::Tiff,
    ]
    .into_iter()
    .enumerate()
    {
        let r = h
            .liveness(ACME_KEY, "image", encode(320, 240, 30 + i as u8, f), &[])
            .await;
        assert_eq!(r.status, 200, "{f:?}: {}", r.body);
    }
}

async fn request_threshold_may_raise_never_lower(h: Harness) {
    h.sim_rule(json!({"score": 0.9})).await;
    let r = h
        .liveness(ACME_KEY, "image", jpeg(9), &[("threshold", "0.95")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "declined");
    assert_eq!(r.body["threshold"], 0.95);
    let reqs = h.sim_requests().await;
    assert_eq!(
        reqs[0]["fields"]["face_liveness_score_decline_threshold"],
        "95"
    );

    let r = h
        .liveness(ACME_KEY, "image", jpeg(9), &[("threshold", "0.5")])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["code"], "threshold_below_tenant");
    let (row, attempts) = h.last_row("acme").await;
    assert_eq!(row.error_code.as_deref(), Some("threshold_below_tenant"));
    assert!(attempts.is_empty());
    assert_eq!(h.sim_requests().await.len(), 1, "nothing was sent upstream");
}

/// An image, extra form fields, the expected status and problem code.
type BadInput = (
    Vec<u8>,
    Vec<(&'static str, &'static str)>,
    u16,
    &'static str,
);

async fn bad_inputs_leave_rows(h: Harness) {
    let cases: Vec<BadInput> = vec![
        (
            b"GIF89a not an image we take".to_vec(),
            vec![],
            415,
            "unsupported_image_format",
        ),
        (
            vec![0xFF; 5 * 1024 * 1024 + 1],
            vec![],
            413,
            "image_too_large",
        ),
        (jpeg(10)[..600].to_vec(), vec![], 400, "image_truncated"),
        // Whole in structure (SOI, EOI) but with no frame to decode.
        (
            vec![0xFF, 0xD8, 0xFF, 0xD9],
            vec![],
            400,
            "image_undecodable",
        ),
        (
            encode(2100, 2000, 1, image::ImageFormat::Png),
            vec![],
            400,
            "image_too_many_pixels",
        ),
        (
            jpeg(11),
            vec![("threshold", "1.5")],
            400,
            "invalid_threshold",
        ),
        (
            jpeg(11),
            vec![("threshold", "abc")],
            400,
            "invalid_threshold",
        ),
        (
            jpeg(11),
            vec![("metadata", "[1,2]")],
            400,
            "invalid_metadata",
        ),
        (
            jpeg(11),
            vec![("metadata", "{not json")],
            400,
            "invalid_metadata",
        ),
    ];
    let mut expected_rows = 0;
    for (img, fields, status, code) in cases {
        // An image refused after it was read whole keeps its hash on the row.
        let read_whole = !matches!(
            code,
            "image_too_large" | "invalid_threshold" | "invalid_metadata"
        );
        let sha = read_whole.then(|| sha256(&img));
        let r = h.liveness(ACME_KEY, "image", img, &fields).await;
        assert_eq!(r.status, status, "{code}: {}", r.body);
        assert_eq!(r.body["code"], code);
        assert_eq!(r.headers["content-type"], "application/problem+json");
        expected_rows += 1;
        let (row, attempts) = h.last_row("acme").await;
        assert_eq!(row.error_code.as_deref(), Some(code));
        assert_eq!(row.http_status, i32::from(status));
        assert_eq!(row.image_sha256, sha, "{code}");
        assert!(attempts.is_empty());
    }
    // No image at all, and a content type livegate does not take.
    let form = reqwest::multipart::Form::new().text("external_id", "x");
    let r = Harness::call(
        h.client
            .post(h.url("/v1/liveness"))
            .bearer_auth(ACME_KEY)
            .multipart(form),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("image_missing"))
    );
    let r = Harness::call(
        h.client
            .post(h.url("/v1/liveness"))
            .bearer_auth(ACME_KEY)
            .body("hello")
            .header("content-type", "text/plain"),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let r = Harness::call(
        h.client
            .post(h.url("/v1/liveness"))
            .bearer_auth(ACME_KEY)
            .body("{\"image_base64\": 12}")
            .header("content-type", "application/json"),
    )
    .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (400, Some("invalid_json"))
    );
    expected_rows += 3;
    assert_eq!(h.row_count("acme").await, expected_rows);
    assert!(
        h.sim_requests().await.is_empty(),
        "bad input never reaches the provider"
    );
}

async fn unauthenticated_requests_leave_no_row(h: Harness) {
    let r = h.liveness("not-a-key", "image", jpeg(12), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.body["code"], "unauthorized");
    // A fresh connection: the 401 above left before its body was read, so the server closes
    // that connection, and reusing it from the pool races the close (broken pipe).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("client");
    let resp = fresh
        .post(format!("{}/v1/liveness", h.base))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(h.row_count("acme").await, 0);
    assert_eq!(h.row_count("beta").await, 0);
}
