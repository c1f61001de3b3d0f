use image::ImageFormat;
use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::support::{Answer, Sim, answer, form_with, image, jpeg, padded_png, png};

const KEY: &str = "fr_live_0123456789abcdef0123456789abcdef";

async fn start() -> Sim {
    Sim::start(livegate_simulators::collections::router()).await
}

fn path(collection: &str) -> String {
    format!("/api/v1/collections/{collection}/liveness")
}

impl Sim {
    async fn engine_with(&self, collection: &str, key: Option<&str>, form: Form) -> Answer {
        let mut request = self
            .client
            .post(self.url(&path(collection)))
            .multipart(form);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        answer(request).await
    }

    async fn engine(&self, bytes: Vec<u8>) -> Answer {
        self.engine_with("col_1", Some(KEY), form_with("image", bytes))
            .await
    }
}

/// Checks the error envelope and returns (code, message).
fn envelope(a: &Answer) -> (String, String) {
    let body = &a.json;
    assert_eq!(body["success"], false, "{}", a.text);
    assert!(uuid::Uuid::parse_str(body["request_id"].as_str().expect("request_id")).is_ok());
    assert!(
        chrono::DateTime::parse_from_rfc3339(body["timestamp"].as_str().expect("timestamp"))
            .is_ok()
    );
    let error = &body["error"];
    (
        error["code"].as_str().expect("code").to_owned(),
        error["message"].as_str().expect("message").to_owned(),
    )
}

#[tokio::test]
async fn default_answer_is_deterministic_from_the_image() {
    let sim = start().await;
    let selfie = jpeg(1);
    let score = (livegate_simulators::default_score_for(&selfie) * 10_000.0).round() / 10_000.0;
    let a = sim.engine(selfie.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["success"], true);
    let data = &a.json["data"];
    assert_eq!(data["liveness_score"], json!(score));
    assert_eq!(data["is_live"], json!(score >= 0.6));
    assert_eq!(data["spoof_type"], Value::Null);
    assert!(data["query_time_ms"].is_u64());
    assert_eq!(sim.engine(selfie).await.json, a.json);
}

#[tokio::test]
async fn threshold_and_failed_check_is_200() {
    let sim = start().await;
    sim.rule(json!({"respond": {"score": 0.6}})).await;
    let a = sim.engine(jpeg(2)).await;
    assert_eq!(a.json["data"]["is_live"], true);
    let b = sim
        .engine_with(
            "col_1",
            Some(KEY),
            form_with("image", jpeg(2)).text("liveness_threshold", "0.75"),
        )
        .await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.json["data"]["is_live"], false);
    assert_eq!(b.json["data"]["liveness_score"], json!(0.6));

    let c = sim
        .engine_with(
            "col_1",
            Some(KEY),
            form_with("image", jpeg(2)).text("liveness_threshold", "2"),
        )
        .await;
    assert_eq!(c.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        envelope(&c),
        (
            "VALIDATION_ERROR".into(),
            "liveness_threshold must be a number between 0 and 1.".into()
        )
    );
}

#[tokio::test]
async fn api_keys() {
    let sim = start().await;
    let invalid = (
        "INVALID_API_KEY".to_owned(),
        "Invalid or missing API key.".to_owned(),
    );
    for key in [
        None,
        Some("fr_live_short"),
        Some("sk_live_0123456789abcdef0123456789abcdef"),
        Some("fr_live_0123456789ABCDEF0123456789abcdef"),
    ] {
        let a = sim
            .engine_with("col_1", key, form_with("image", jpeg(3)))
            .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(envelope(&a), invalid);
    }
    let test_key = "fr_test_ffffffffffffffffffffffffffffffff";
    assert_eq!(
        sim.engine_with("col_1", Some(test_key), form_with("image", jpeg(3)))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        sim.engine_with("col_1", Some(test_key), form_with("image", jpeg(3)))
            .await
            .status,
        StatusCode::OK
    );
    let other = sim
        .engine_with("col_2", Some(test_key), form_with("image", jpeg(3)))
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        envelope(&other),
        (
            "INVALID_API_KEY".into(),
            "The API key is not valid for this collection.".into()
        )
    );
    // A fresh key may serve col_2.
    assert_eq!(
        sim.engine_with("col_2", Some(KEY), form_with("image", jpeg(3)))
            .await
            .status,
        StatusCode::OK
    );
    // Each router() has its own bindings.
    let fresh = start().await;
    assert_eq!(
        fresh
            .engine_with("col_9", Some(test_key), form_with("image", jpeg(3)))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn faces_and_spoof() {
    let sim = start().await;
    sim.rule(json!({"respond": {"faces": 0}, "times": 1})).await;
    let a = sim.engine(jpeg(4)).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        envelope(&a),
        (
            "FACE_NOT_DETECTED".into(),
            "No face detected in the image.".into()
        )
    );

    sim.rule(json!({"respond": {"faces": 2}, "times": 1})).await;
    let b = sim.engine(jpeg(4)).await;
    assert_eq!(b.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        envelope(&b),
        (
            "MULTIPLE_FACES".into(),
            "Multiple faces detected in the image; exactly one face is required.".into()
        )
    );

    sim.rule(json!({"respond": {"faces": 2, "multiple_faces_ok": true, "score": 0.9}, "times": 1}))
        .await;
    assert_eq!(sim.engine(jpeg(4)).await.json["data"]["is_live"], true);

    for spoof in ["print", "replay", "3d_mask", "mask", "deepfake"] {
        sim.rule(json!({"respond": {"spoof_type": spoof}, "times": 1}))
            .await;
        let c = sim.engine(jpeg(4)).await;
        assert_eq!(c.status, StatusCode::OK);
        assert_eq!(c.json["data"]["spoof_type"], spoof);
        assert_eq!(c.json["data"]["is_live"], false);
        assert!(
            c.json["data"]["liveness_score"]
                .as_f64()
                .is_some_and(|s| s <= 0.2)
        );
    }

    sim.rule(json!({"respond": {"score": 0.1, "is_live": true, "query_time_ms": 999}, "times": 1}))
        .await;
    let d = sim.engine(jpeg(4)).await;
    assert_eq!(
        d.json["data"],
        json!({"is_live": true, "liveness_score": 0.1, "spoof_type": null, "query_time_ms": 999})
    );
}

#[tokio::test]
async fn every_error_code() {
    let sim = start().await;
    let cases = [
        ("INVALID_API_KEY", 401, "Invalid or missing API key."),
        (
            "IP_NOT_ALLOWED",
            403,
            "Requests from this IP address are not allowed for this API key.",
        ),
        ("FACE_NOT_FOUND", 404, "Face not found."),
        (
            "DUPLICATE_EXTERNAL_ID",
            409,
            "A face with this external_id already exists in the collection.",
        ),
        ("FACE_NOT_DETECTED", 422, "No face detected in the image."),
        (
            "MULTIPLE_FACES",
            422,
            "Multiple faces detected in the image; exactly one face is required.",
        ),
        ("FACE_QUALITY_TOO_LOW", 422, "Face quality is too low."),
        ("LIVENESS_CHECK_FAILED", 422, "Liveness check failed."),
        (
            "RATE_LIMIT_EXCEEDED",
            429,
            "Rate limit exceeded for this API key.",
        ),
        ("INTERNAL_ERROR", 500, "Internal server error."),
    ];
    for (code, status, message) in cases {
        sim.rule(json!({"respond": {"error_code": code}, "times": 1}))
            .await;
        let a = sim.engine(jpeg(5)).await;
        assert_eq!(a.status.as_u16(), status, "{code}");
        assert_eq!(envelope(&a), (code.to_owned(), message.to_owned()));
    }
    let bare = [
        (401, "INVALID_API_KEY"),
        (403, "IP_NOT_ALLOWED"),
        (422, "FACE_NOT_DETECTED"),
        (429, "RATE_LIMIT_EXCEEDED"),
        (500, "INTERNAL_ERROR"),
        (503, "SERVICE_UNAVAILABLE"),
    ];
    for (status, code) in bare {
        sim.rule(json!({"respond": {"status": status}, "times": 1}))
            .await;
        let a = sim.engine(jpeg(5)).await;
        assert_eq!(a.status.as_u16(), status);
        assert_eq!(envelope(&a).0, code);
    }
    sim.rule(json!({"respond": {"error_code": "NEW_CODE", "status": 418, "error_message": "teapot", "retry_after": 5}, "times": 1})).await;
    let a = sim.engine(jpeg(5)).await;
    assert_eq!(a.status.as_u16(), 418);
    assert_eq!(envelope(&a), ("NEW_CODE".into(), "teapot".into()));
    assert_eq!(a.headers.get("retry-after").unwrap(), "5");

    assert!(
        sim.bad_rule(r#"{"respond": {"error_code": "NEW_CODE"}}"#)
            .await
            .contains("NEW_CODE")
    );
    assert!(
        sim.bad_rule(r#"{"respond": {"error_code": "INTERNAL_ERROR", "status": 200}}"#)
            .await
            .contains("2xx")
    );
}

#[tokio::test]
async fn formats_and_size_limits() {
    let sim = start().await;
    assert_eq!(sim.engine(png(100, 100, 6)).await.status, StatusCode::OK);
    for format in [ImageFormat::WebP, ImageFormat::Tiff] {
        let a = sim.engine(image(640, 480, 6, format)).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{format:?}");
        assert_eq!(
            envelope(&a),
            (
                "INVALID_IMAGE".into(),
                "Unsupported image format; use JPEG or PNG.".into()
            )
        );
    }
    let small = sim.engine(png(99, 200, 6)).await;
    assert_eq!(small.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        envelope(&small),
        (
            "INVALID_IMAGE".into(),
            "The image must be at least 100x100 pixels, got 99x200.".into()
        )
    );
    let broken = sim
        .engine(vec![0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, 0, 0])
        .await;
    assert_eq!(
        envelope(&broken),
        (
            "INVALID_IMAGE".into(),
            "The image could not be decoded.".into()
        )
    );

    assert_eq!(
        sim.engine(padded_png(10 * 1024 * 1024)).await.status,
        StatusCode::OK
    );
    let big = sim.engine(padded_png(10 * 1024 * 1024 + 1)).await;
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        envelope(&big),
        (
            "FILE_TOO_LARGE".into(),
            "The image exceeds the maximum size of 10 MB.".into()
        )
    );

    let missing = sim
        .engine_with(
            "col_1",
            Some(KEY),
            Form::new().text("liveness_threshold", "0.5"),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        envelope(&missing),
        (
            "VALIDATION_ERROR".into(),
            "The image field is required.".into()
        )
    );

    let not_multipart = answer(
        sim.client
            .post(sim.url(&path("col_1")))
            .header("X-API-Key", KEY)
            .json(&json!({"image": "x"})),
    )
    .await;
    assert_eq!(not_multipart.status, StatusCode::BAD_REQUEST);
    assert_eq!(envelope(&not_multipart).0, "VALIDATION_ERROR");
}
