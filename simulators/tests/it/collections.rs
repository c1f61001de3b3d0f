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

// ---- enrollment and face matching ----------------------------------------------------------

const OTHER_KEY: &str = "fr_test_fedcba9876543210fedcba9876543210";

impl Sim {
    async fn post(&self, path: &str, key: Option<&str>, form: Form) -> Answer {
        let mut request = self.client.post(self.url(path)).multipart(form);
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        answer(request).await
    }

    async fn enroll_with(&self, collection: &str, key: &str, form: Form) -> Answer {
        self.post(
            &format!("/api/v1/collections/{collection}/faces"),
            Some(key),
            form,
        )
        .await
    }

    /// Enrolls `bytes` in col_1 without the liveness check; returns the face_id.
    async fn enroll_ok(&self, bytes: Vec<u8>, external_id: Option<&str>) -> String {
        let mut form = form_with("image", bytes).text("check_liveness", "false");
        if let Some(external_id) = external_id {
            form = form.text("external_id", external_id.to_owned());
        }
        let a = self.enroll_with("col_1", KEY, form).await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
        a.json["data"]["face_id"]
            .as_str()
            .expect("face_id")
            .to_owned()
    }

    async fn identify(&self, bytes: Vec<u8>, fields: &[(&str, &str)]) -> Answer {
        let mut form = form_with("image", bytes);
        for (name, value) in fields {
            form = form.text((*name).to_owned(), (*value).to_owned());
        }
        self.post("/api/v1/collections/col_1/identify", Some(KEY), form)
            .await
    }

    async fn verify(&self, bytes: Vec<u8>, fields: &[(&str, &str)]) -> Answer {
        let mut form = form_with("image", bytes);
        for (name, value) in fields {
            form = form.text((*name).to_owned(), (*value).to_owned());
        }
        self.post("/api/v1/collections/col_1/verify", Some(KEY), form)
            .await
    }

    async fn compare(&self, key: Option<&str>, a: Vec<u8>, b: Option<Vec<u8>>) -> Answer {
        let mut form = form_with("image_a", a);
        if let Some(b) = b {
            form = form.part(
                "image_b",
                crate::support::file_part(b, "b.jpg", "image/jpeg"),
            );
        }
        self.post("/api/v1/compare", key, form).await
    }
}

/// The `matches` of a 200 identify answer.
fn matches(a: &Answer) -> Vec<Value> {
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(a.json["success"], true);
    a.json["data"]["matches"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no matches: {}", a.text))
}

fn field<'a>(items: &'a [Value], name: &str) -> Vec<&'a Value> {
    items.iter().map(|item| &item[name]).collect()
}

/// The first JPEG variant whose default score is (or is not) at least the 0.6 threshold.
fn jpeg_scoring(live: bool) -> Vec<u8> {
    (0..=255u8)
        .map(jpeg)
        .find(|bytes| (livegate_simulators::default_score_for(bytes) >= 0.6) == live)
        .expect("a variant on each side of 0.6")
}

#[tokio::test]
async fn enroll_returns_the_stored_face() {
    let sim = start().await;
    let selfie = jpeg_scoring(true);
    let score = (livegate_simulators::default_score_for(&selfie) * 10_000.0).round() / 10_000.0;
    let a = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", selfie)
                .text("external_id", "user_123")
                .text("metadata", r#"{"plan": "gold", "n": 3}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.text);
    assert_eq!(a.json["success"], true);
    let data = &a.json["data"];
    assert!(uuid::Uuid::parse_str(data["face_id"].as_str().expect("face_id")).is_ok());
    assert_eq!(data["collection_id"], "col_1");
    assert_eq!(data["external_id"], "user_123");
    assert_eq!(data["metadata"], json!({"plan": "gold", "n": 3}));
    assert_eq!(data["liveness_score"], json!(score));
    assert_eq!(data["face"]["bbox"], json!([160.0, 120.0, 480.0, 360.0]));
    assert!(
        data["face"]["confidence"]
            .as_f64()
            .is_some_and(|c| c >= 0.9)
    );
    assert!(
        data["quality"]
            .as_f64()
            .is_some_and(|q| (0.6..1.0).contains(&q))
    );
    assert_eq!(data["has_embedding"], true);
    assert!(chrono::DateTime::parse_from_rfc3339(data["created_at"].as_str().expect("at")).is_ok());

    // Without external_id or metadata both are null; every enrollment gets its own id.
    let b = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", jpeg(40)).text("check_liveness", "false"),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text);
    assert_eq!(b.json["data"]["external_id"], Value::Null);
    assert_eq!(b.json["data"]["metadata"], Value::Null);
    assert_ne!(b.json["data"]["face_id"], data["face_id"]);

    // What was sent is in the request log, fields included.
    let log = sim.requests().await;
    assert_eq!(log[0]["path"], "/api/v1/collections/col_1/faces");
    assert_eq!(log[0]["fields"]["external_id"], "user_123");
}

#[tokio::test]
async fn enroll_duplicate_external_id_is_409() {
    let sim = start().await;
    sim.enroll_ok(jpeg(41), Some("user_1")).await;
    let a = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", jpeg(42))
                .text("external_id", "user_1")
                .text("check_liveness", "false"),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{}", a.text);
    assert_eq!(
        envelope(&a),
        (
            "DUPLICATE_EXTERNAL_ID".into(),
            "A face with this external_id already exists in the collection.".into()
        )
    );
    // Unique per collection only.
    let b = sim
        .enroll_with(
            "col_2",
            OTHER_KEY,
            form_with("image", jpeg(42))
                .text("external_id", "user_1")
                .text("check_liveness", "false"),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text);
}

#[tokio::test]
async fn enroll_checks_liveness_by_default() {
    let sim = start().await;
    let spoof = jpeg_scoring(false);
    let a = sim
        .enroll_with("col_1", KEY, form_with("image", spoof.clone()))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.text);
    assert_eq!(envelope(&a).0, "LIVENESS_CHECK_FAILED");

    // Skipped on request: enrolled with its (low) score.
    let b = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", spoof.clone()).text("check_liveness", "false"),
        )
        .await;
    assert_eq!(b.status, StatusCode::CREATED, "{}", b.text);

    // The threshold is the request's; a declared attack fails it.
    sim.rule(json!({"respond": {"score": 0.5}, "times": 2}))
        .await;
    let c = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", jpeg(43)).text("liveness_threshold", "0.4"),
        )
        .await;
    assert_eq!(c.status, StatusCode::CREATED, "{}", c.text);
    assert_eq!(c.json["data"]["liveness_score"], json!(0.5));
    let d = sim
        .enroll_with("col_1", KEY, form_with("image", jpeg(43)))
        .await;
    assert_eq!(envelope(&d).0, "LIVENESS_CHECK_FAILED");
    sim.rule(json!({"respond": {"spoof_type": "print"}, "times": 1}))
        .await;
    let e = sim
        .enroll_with("col_1", KEY, form_with("image", jpeg_scoring(true)))
        .await;
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(envelope(&e).0, "LIVENESS_CHECK_FAILED");

    // Refused enrollments stored nothing.
    let m = matches(&sim.identify(spoof, &[]).await);
    assert_eq!(m.len(), 1, "only the check_liveness=false one: {m:?}");
}

#[tokio::test]
async fn enroll_face_image_and_form_errors() {
    let sim = start().await;
    let no_liveness = || form_with("image", jpeg(44)).text("check_liveness", "false");
    for (respond, code) in [
        (json!({"faces": 0}), "FACE_NOT_DETECTED"),
        (json!({"faces": 2}), "MULTIPLE_FACES"),
        (
            json!({"error_code": "FACE_QUALITY_TOO_LOW"}),
            "FACE_QUALITY_TOO_LOW",
        ),
    ] {
        sim.rule(json!({"respond": respond, "times": 1})).await;
        let a = sim.enroll_with("col_1", KEY, no_liveness()).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{code}");
        assert_eq!(envelope(&a).0, code);
    }
    sim.rule(json!({"respond": {"faces": 3, "multiple_faces_ok": true}, "times": 1}))
        .await;
    assert_eq!(
        sim.enroll_with("col_1", KEY, no_liveness()).await.status,
        StatusCode::CREATED
    );

    let webp = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", image(640, 480, 44, ImageFormat::WebP)),
        )
        .await;
    assert_eq!(
        envelope(&webp),
        (
            "INVALID_IMAGE".into(),
            "Unsupported image format; use JPEG or PNG.".into()
        )
    );
    let small = sim
        .enroll_with("col_1", KEY, form_with("image", png(99, 200, 44)))
        .await;
    assert_eq!(small.status, StatusCode::BAD_REQUEST);
    assert_eq!(envelope(&small).0, "INVALID_IMAGE");

    for (name, value, message) in [
        ("metadata", "not json", "metadata must be a JSON object."),
        ("metadata", "[1, 2]", "metadata must be a JSON object."),
        (
            "check_liveness",
            "maybe",
            "check_liveness must be true or false.",
        ),
        (
            "liveness_threshold",
            "1.5",
            "liveness_threshold must be a number between 0 and 1.",
        ),
    ] {
        let a = sim
            .enroll_with("col_1", KEY, form_with("image", jpeg(44)).text(name, value))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}={value}");
        assert_eq!(envelope(&a), ("VALIDATION_ERROR".into(), message.into()));
    }
    let long = "x".repeat(256);
    let a = sim
        .enroll_with(
            "col_1",
            KEY,
            form_with("image", jpeg(44)).text("external_id", long),
        )
        .await;
    assert_eq!(envelope(&a).0, "VALIDATION_ERROR");
    let missing = sim
        .enroll_with("col_1", KEY, Form::new().text("external_id", "u"))
        .await;
    assert_eq!(
        envelope(&missing),
        (
            "VALIDATION_ERROR".into(),
            "The image field is required.".into()
        )
    );

    // Keys as on the liveness call: missing, malformed, bound to another collection.
    let none = sim
        .post("/api/v1/collections/col_1/faces", None, no_liveness())
        .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(envelope(&none).0, "INVALID_API_KEY");
    let other = sim.enroll_with("col_2", KEY, no_liveness()).await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        envelope(&other).1,
        "The API key is not valid for this collection."
    );
    sim.rule(json!({"respond": {"status": 403}, "times": 1}))
        .await;
    let ip = sim.enroll_with("col_1", KEY, no_liveness()).await;
    assert_eq!(ip.status, StatusCode::FORBIDDEN);
    assert_eq!(envelope(&ip).0, "IP_NOT_ALLOWED");
}

fn batch_part(bytes: Vec<u8>) -> reqwest::multipart::Part {
    crate::support::file_part(bytes, "face.jpg", "image/jpeg")
}

#[tokio::test]
async fn batch_enrollment_is_partial() {
    let sim = start().await;
    let no_face = jpeg(51);
    sim.rule(json!({
        "match": {"image_sha256": crate::support::sha256_hex(&no_face)},
        "respond": {"faces": 0},
    }))
    .await;
    let quality = jpeg(52);
    sim.rule(json!({
        "match": {"image_sha256": crate::support::sha256_hex(&quality)},
        "respond": {"error_code": "FACE_QUALITY_TOO_LOW", "error_message": "blurry"},
        "times": 1,
    }))
    .await;
    let form = Form::new()
        .part("images", batch_part(jpeg(50)))
        .part("images", batch_part(jpeg(53)))
        .part("images", batch_part(no_face))
        .part("images", batch_part(quality))
        .part("images", batch_part(image(640, 480, 54, ImageFormat::WebP)))
        .part("images", batch_part(jpeg(55)))
        .text("external_ids", r#"["a", "a", "c", null, "e", 7]"#)
        .text("metadata", r#"[{"k": 1}, null, null, null, null, null]"#)
        .text("check_liveness", "false");
    let a = sim
        .post("/api/v1/collections/col_1/faces/batch", Some(KEY), form)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let data = &a.json["data"];
    assert_eq!(
        (data["enrolled"].as_u64(), data["failed"].as_u64()),
        (Some(1), Some(5)),
        "{}",
        a.text
    );
    let results = data["results"].as_array().expect("results");
    assert_eq!(
        field(results, "index"),
        [
            &json!(0),
            &json!(1),
            &json!(2),
            &json!(3),
            &json!(4),
            &json!(5)
        ]
    );
    assert_eq!(results[0]["success"], true);
    assert_eq!(results[0]["face"]["external_id"], "a");
    assert_eq!(results[0]["face"]["metadata"], json!({"k": 1}));
    let codes: Vec<&Value> = results[1..].iter().map(|r| &r["error"]["code"]).collect();
    assert_eq!(
        codes,
        [
            "DUPLICATE_EXTERNAL_ID",
            "FACE_NOT_DETECTED",
            "FACE_QUALITY_TOO_LOW",
            "INVALID_IMAGE",
            "VALIDATION_ERROR"
        ]
    );
    assert_eq!(results[3]["error"]["message"], "blurry");
    assert!(
        results[1..]
            .iter()
            .all(|r| r["success"] == false && r.get("face").is_none())
    );

    // Only the one success is stored.
    let m = matches(&sim.identify(jpeg(50), &[("threshold", "0")]).await);
    assert_eq!(field(&m, "external_id"), [&json!("a")]);

    // Request-level problems refuse the whole batch.
    let empty = sim
        .post(
            "/api/v1/collections/col_1/faces/batch",
            Some(KEY),
            Form::new().text("check_liveness", "false"),
        )
        .await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    assert_eq!(envelope(&empty).0, "VALIDATION_ERROR");
    let mismatched = sim
        .post(
            "/api/v1/collections/col_1/faces/batch",
            Some(KEY),
            Form::new()
                .part("images", batch_part(jpeg(56)))
                .text("external_ids", r#"["x", "y"]"#),
        )
        .await;
    assert_eq!(
        envelope(&mismatched),
        (
            "VALIDATION_ERROR".into(),
            "external_ids must be a JSON array with one entry per image (1).".into()
        )
    );
    let mut too_many = Form::new();
    for variant in 0..21 {
        too_many = too_many.part("images", batch_part(png(100, 100, variant)));
    }
    let a = sim
        .post("/api/v1/collections/col_1/faces/batch", Some(KEY), too_many)
        .await;
    assert_eq!(
        envelope(&a),
        (
            "VALIDATION_ERROR".into(),
            "At most 20 images per batch, got 21.".into()
        )
    );
    let first_use = sim
        .post(
            "/api/v1/collections/col_1/faces/batch",
            Some(OTHER_KEY),
            Form::new().part("images", batch_part(jpeg(57))),
        )
        .await;
    assert_eq!(
        first_use.status,
        StatusCode::OK,
        "OTHER_KEY binds to col_1 on first use"
    );
    let wrong = sim
        .post(
            "/api/v1/collections/col_2/faces/batch",
            Some(KEY),
            Form::new().part("images", batch_part(jpeg(57))),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);

    // A rule without match fails the whole request.
    sim.rule(json!({"respond": {"status": 500}, "times": 1}))
        .await;
    let failed = sim
        .post(
            "/api/v1/collections/col_1/faces/batch",
            Some(KEY),
            Form::new().part("images", batch_part(jpeg(58))),
        )
        .await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(envelope(&failed).0, "INTERNAL_ERROR");
}

#[tokio::test]
async fn identify_top_k_threshold_and_empty_list() {
    let sim = start().await;
    // Nothing enrolled yet: an empty list, not an error.
    let empty = sim.identify(jpeg(60), &[]).await;
    assert!(matches(&empty).is_empty());
    assert_eq!(empty.json["data"]["threshold"], json!(0.55));

    let first = sim.enroll_ok(jpeg(60), Some("p1")).await;
    let second = sim.enroll_ok(jpeg(60), Some("p2")).await;
    let other = sim.enroll_ok(jpeg(61), Some("q")).await;

    // The same bytes are the same person (0.99); most similar first, then enrollment order.
    let a = sim.identify(jpeg(60), &[]).await;
    let m = matches(&a);
    assert_eq!(field(&m, "face_id"), [&json!(first), &json!(second)]);
    assert_eq!(field(&m, "similarity"), [&json!(0.99), &json!(0.99)]);
    assert_eq!(m[0]["external_id"], "p1");
    assert_eq!(m[0]["metadata"], Value::Null);
    let data = &a.json["data"];
    assert_eq!(data["face"]["bbox"], json!([160.0, 120.0, 480.0, 360.0]));
    assert!(data["query_time_ms"].is_u64() && data["search_time_ms"].is_u64());

    let m = matches(&sim.identify(jpeg(60), &[("top_k", "1")]).await);
    assert_eq!(field(&m, "face_id"), [&json!(first)]);
    // Different bytes are another person (0.12): found only under a lower threshold.
    let m = matches(&sim.identify(jpeg(60), &[("threshold", "0.1")]).await);
    assert_eq!(
        field(&m, "face_id"),
        [&json!(first), &json!(second), &json!(other)]
    );
    assert_eq!(m[2]["similarity"], json!(0.12));
    assert!(matches(&sim.identify(jpeg(60), &[("threshold", "0.995")]).await).is_empty());
    assert!(matches(&sim.identify(jpeg(62), &[]).await).is_empty());

    // A rule sets every similarity.
    sim.rule(json!({"respond": {"similarity": 0.7}, "times": 1}))
        .await;
    let m = matches(&sim.identify(jpeg(62), &[("top_k", "2")]).await);
    assert_eq!(field(&m, "similarity"), [&json!(0.7), &json!(0.7)]);

    for (name, value, message) in [
        ("top_k", "0", "top_k must be between 1 and 100."),
        ("top_k", "101", "top_k must be between 1 and 100."),
        ("top_k", "many", "top_k must be between 1 and 100."),
        (
            "threshold",
            "2",
            "threshold must be a number between -1 and 1.",
        ),
    ] {
        let a = sim.identify(jpeg(60), &[(name, value)]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{name}={value}");
        assert_eq!(envelope(&a), ("VALIDATION_ERROR".into(), message.into()));
    }
    assert_eq!(
        matches(&sim.identify(jpeg(60), &[("top_k", "100")]).await).len(),
        2
    );

    sim.rule(json!({"respond": {"faces": 0}, "times": 1})).await;
    let none = sim.identify(jpeg(60), &[]).await;
    assert_eq!(none.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(envelope(&none).0, "FACE_NOT_DETECTED");
    // Several faces in a probe: the largest is matched.
    sim.rule(json!({"respond": {"faces": 2}, "times": 1})).await;
    assert_eq!(matches(&sim.identify(jpeg(60), &[]).await).len(), 2);

    // Each collection has its own faces.
    let elsewhere = sim
        .post(
            "/api/v1/collections/col_2/identify",
            Some(OTHER_KEY),
            form_with("image", jpeg(60)),
        )
        .await;
    assert!(matches(&elsewhere).is_empty());
}

#[tokio::test]
async fn verify_by_face_id_or_external_id() {
    let sim = start().await;
    let face_id = sim.enroll_ok(jpeg(70), Some("eileen")).await;

    let a = sim.verify(jpeg(70), &[("face_id", face_id.as_str())]).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let data = &a.json["data"];
    assert_eq!(data["verified"], true);
    assert_eq!(data["similarity"], json!(0.99));
    assert_eq!(data["threshold"], json!(0.55));
    assert_eq!(data["face_id"], face_id.as_str());
    assert_eq!(data["external_id"], "eileen");
    assert!(data["face"]["bbox"].is_array());

    let b = sim.verify(jpeg(71), &[("external_id", "eileen")]).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.text);
    assert_eq!(b.json["data"]["verified"], false);
    assert_eq!(b.json["data"]["similarity"], json!(0.12));
    let c = sim
        .verify(jpeg(71), &[("external_id", "eileen"), ("threshold", "0.1")])
        .await;
    assert_eq!(c.json["data"]["verified"], true);

    for fields in [
        vec![("face_id", "00000000-0000-0000-0000-000000000000")],
        vec![("face_id", "not-a-uuid")],
        vec![("external_id", "nobody")],
    ] {
        let a = sim.verify(jpeg(70), &fields).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{fields:?}");
        assert_eq!(
            envelope(&a),
            ("FACE_NOT_FOUND".into(), "Face not found.".into())
        );
    }
    for fields in [
        vec![],
        vec![("face_id", face_id.as_str()), ("external_id", "eileen")],
    ] {
        let a = sim.verify(jpeg(70), &fields).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{fields:?}");
        assert_eq!(
            envelope(&a),
            (
                "VALIDATION_ERROR".into(),
                "Send exactly one of face_id and external_id.".into()
            )
        );
    }
    // A face of another collection is not found there.
    let elsewhere = sim
        .post(
            "/api/v1/collections/col_2/verify",
            Some(OTHER_KEY),
            form_with("image", jpeg(70)).text("face_id", face_id.clone()),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);

    sim.rule(json!({"respond": {"similarity": 0.6}, "times": 1}))
        .await;
    let forced = sim.verify(jpeg(71), &[("face_id", face_id.as_str())]).await;
    assert_eq!(
        (
            &forced.json["data"]["verified"],
            &forced.json["data"]["similarity"]
        ),
        (&json!(true), &json!(0.6))
    );
}

#[tokio::test]
async fn compare_two_images() {
    let sim = start().await;
    let a = sim.compare(Some(KEY), jpeg(80), Some(jpeg(80))).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let data = &a.json["data"];
    assert_eq!(data["match"], true);
    assert_eq!(data["similarity"], json!(0.99));
    assert_eq!(data["threshold"], json!(0.55));
    assert!(data["face_a"]["bbox"].is_array() && data["face_b"]["bbox"].is_array());

    let b = sim.compare(Some(KEY), jpeg(80), Some(jpeg(81))).await;
    assert_eq!(b.json["data"]["match"], false);
    assert_eq!(b.json["data"]["similarity"], json!(0.12));

    // No collection in the path: any well-formed key, whatever collection it serves.
    sim.engine_with("col_9", Some(OTHER_KEY), form_with("image", jpeg(80)))
        .await;
    assert_eq!(
        sim.compare(Some(OTHER_KEY), jpeg(80), Some(jpeg(80)))
            .await
            .status,
        StatusCode::OK
    );
    let unkeyed = sim.compare(None, jpeg(80), Some(jpeg(80))).await;
    assert_eq!(unkeyed.status, StatusCode::UNAUTHORIZED);
    assert_eq!(envelope(&unkeyed).0, "INVALID_API_KEY");

    let missing = sim.compare(Some(KEY), jpeg(80), None).await;
    assert_eq!(
        envelope(&missing),
        (
            "VALIDATION_ERROR".into(),
            "The image_b field is required.".into()
        )
    );
    // A rule naming image_b applies to image_b only.
    let blank = jpeg(82);
    sim.rule(json!({
        "match": {"image_sha256": crate::support::sha256_hex(&blank)},
        "respond": {"faces": 0},
        "times": 1,
    }))
    .await;
    let c = sim.compare(Some(KEY), jpeg(80), Some(blank.clone())).await;
    assert_eq!(c.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", c.text);
    assert_eq!(envelope(&c).0, "FACE_NOT_DETECTED");
    assert_eq!(
        sim.compare(Some(KEY), jpeg(80), Some(blank)).await.status,
        StatusCode::OK
    );
    let webp = sim
        .compare(
            Some(KEY),
            jpeg(80),
            Some(image(640, 480, 83, ImageFormat::WebP)),
        )
        .await;
    assert_eq!(envelope(&webp).0, "INVALID_IMAGE");

    sim.rule(json!({"respond": {"similarity": 0.8}, "times": 1}))
        .await;
    let forced = sim.compare(Some(KEY), jpeg(80), Some(jpeg(81))).await;
    assert_eq!(forced.json["data"]["match"], true);
    assert_eq!(forced.json["data"]["similarity"], json!(0.8));
}

/// Builds a fresh form for one call (a form is consumed by sending it).
type MakeForm = fn() -> Form;

#[tokio::test]
async fn matching_calls_take_scripted_faults() {
    let sim = start().await;
    let face_id = sim.enroll_ok(jpeg(90), Some("f")).await;
    let calls: [(&str, MakeForm); 5] = [
        ("/api/v1/collections/col_1/faces", || {
            form_with("image", jpeg(91))
        }),
        ("/api/v1/collections/col_1/faces/batch", || {
            Form::new().part("images", batch_part(jpeg(91)))
        }),
        ("/api/v1/collections/col_1/identify", || {
            form_with("image", jpeg(90))
        }),
        ("/api/v1/collections/col_1/verify", || {
            form_with("image", jpeg(90)).text("external_id", "f")
        }),
        ("/api/v1/compare", || {
            form_with("image_a", jpeg(90)).part("image_b", batch_part(jpeg(90)))
        }),
    ];
    for (path, form) in calls {
        sim.rule(json!({"respond": {"status": 500}, "times": 1}))
            .await;
        let a = sim.post(path, Some(KEY), form()).await;
        assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        assert_eq!(
            envelope(&a),
            ("INTERNAL_ERROR".into(), "Internal server error.".into())
        );

        sim.rule(json!({"respond": {"status": 429, "retry_after": 7}, "times": 1}))
            .await;
        let a = sim.post(path, Some(KEY), form()).await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert_eq!(envelope(&a).0, "RATE_LIMIT_EXCEEDED");
        assert_eq!(
            a.headers.get("retry-after").map(|v| v.as_bytes()),
            Some(&b"7"[..])
        );

        sim.rule(json!({"respond": {"error_code": "IP_NOT_ALLOWED"}, "times": 1}))
            .await;
        let a = sim.post(path, Some(KEY), form()).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{path}");

        sim.rule(json!({"respond": {"body": "<html>oops</html>", "status": 502}, "times": 1}))
            .await;
        let a = sim.post(path, Some(KEY), form()).await;
        assert_eq!(
            (a.status.as_u16(), a.text.as_str()),
            (502, "<html>oops</html>"),
            "{path}"
        );

        sim.rule(json!({"respond": {"delay_ms": 300, "status": 503}, "times": 1}))
            .await;
        let started = std::time::Instant::now();
        let a = sim.post(path, Some(KEY), form()).await;
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(300),
            "{path}"
        );
        assert_eq!(envelope(&a).0, "SERVICE_UNAVAILABLE");
    }
    // With the faults used up, every call answers normally again.
    assert_eq!(
        sim.verify(jpeg(90), &[("face_id", face_id.as_str())])
            .await
            .json["data"]["verified"],
        true
    );
    assert!(
        sim.bad_rule(r#"{"respond": {"similarity": 1.5}}"#)
            .await
            .contains("similarity")
    );
}
