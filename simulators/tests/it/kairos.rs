use image::ImageFormat;
use reqwest::StatusCode;
use reqwest::multipart::Form;
use serde_json::{Value, json};

use crate::support::{Answer, Sim, answer, form_with, image, jpeg, png};

const V2: &str = "/v0.2/liveness-verification";
const V1: &str = "/v0.1/liveness-verification";

async fn start() -> Sim {
    Sim::start(livegate_simulators::kairos::router()).await
}

impl Sim {
    async fn kairos_at(&self, path: &str, form: Form) -> Answer {
        answer(
            self.client
                .post(self.url(path))
                .header("app_id", "id")
                .header("app_key", "key")
                .multipart(form),
        )
        .await
    }

    async fn kairos(&self, bytes: Vec<u8>) -> Answer {
        self.kairos_at(V2, form_with("selfie", bytes).text("threshold", "0.6"))
            .await
    }
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn is_kairos_timestamp(value: &Value) -> bool {
    value
        .as_str()
        .is_some_and(|s| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").is_ok())
}

#[tokio::test]
async fn default_answer_is_deterministic_from_the_image() {
    let sim = start().await;
    let selfie = jpeg(1);
    let expected = round4(livegate_simulators::default_score_for(&selfie));

    let a = sim.kairos(selfie.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let body = &a.json;
    assert!(uuid::Uuid::parse_str(body["api_req_uid"].as_str().expect("uid")).is_ok());
    assert!(
        is_kairos_timestamp(&body["requested_at"]),
        "{}",
        body["requested_at"]
    );
    assert!(is_kairos_timestamp(&body["processed_at"]));
    assert_eq!(body["response_code"], if expected >= 0.6 { 1 } else { 2 });
    let data = &body["response_data"];
    assert_eq!(data["faces_liveness"], json!(expected));
    assert_eq!(data["img"], json!({"height": 480, "width": 640}));
    let faces = data["faces_predicted"].as_array().expect("faces");
    assert_eq!(faces.len(), 1);
    assert_eq!(faces[0]["top_left"], json!({"x": 160.0, "y": 120.0}));
    assert_eq!(faces[0]["delta"], json!({"x": 320.0, "y": 240.0}));
    assert!(
        faces[0]["confidence"]
            .as_f64()
            .is_some_and(|c| (0.9..=1.0).contains(&c))
    );

    let again = sim.kairos(selfie).await;
    assert_eq!(again.json["response_data"], *data);
}

#[tokio::test]
async fn both_header_spellings_and_missing_credentials() {
    let sim = start().await;
    let dashed = answer(
        sim.client
            .post(sim.url(V2))
            .header("app-id", "id")
            .header("app-key", "key")
            .multipart(form_with("selfie", jpeg(2))),
    )
    .await;
    assert_eq!(dashed.status, StatusCode::OK, "{}", dashed.text);
    let mixed = answer(
        sim.client
            .post(sim.url(V1))
            .header("app_id", "id")
            .header("app-key", "key")
            .multipart(form_with("selfie", jpeg(2))),
    )
    .await;
    assert_eq!(mixed.status, StatusCode::OK, "{}", mixed.text);

    let missing_body = json!({"error": "missing_credentials", "message": "The app_id and app_key headers are required."});
    let none = answer(
        sim.client
            .post(sim.url(V2))
            .multipart(form_with("selfie", jpeg(2))),
    )
    .await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.json, missing_body);
    let only_id = answer(
        sim.client
            .post(sim.url(V2))
            .header("app_id", "id")
            .header("app_key", "")
            .multipart(form_with("selfie", jpeg(2))),
    )
    .await;
    assert_eq!(only_id.status, StatusCode::UNAUTHORIZED);
    assert_eq!(only_id.json, missing_body);

    let log = sim.requests().await;
    assert_eq!(log[0]["headers"]["app-id"], "id");
    assert_eq!(log[1]["headers"]["app_id"], "id");
    assert_eq!(log[1]["path"], V1);
}

#[tokio::test]
async fn image_size_limits_per_version() {
    let sim = start().await;
    let at = |path: &'static str, bytes: Vec<u8>| {
        let sim = &sim;
        async move { sim.kairos_at(path, form_with("selfie", bytes)).await }
    };
    // 480x480 is v0.1's floor, 300 px v0.2's.
    assert_eq!(at(V1, png(480, 480, 1)).await.status, StatusCode::OK);
    let small_v1 = at(V1, png(400, 480, 1)).await;
    assert_eq!(small_v1.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        small_v1.json,
        json!({"error": "image_too_small", "message": "The selfie must be at least 480x480 pixels, got 400x480."})
    );
    assert_eq!(at(V2, png(400, 300, 1)).await.status, StatusCode::OK);
    let small_v2 = at(V2, png(400, 299, 1)).await;
    assert_eq!(small_v2.status, StatusCode::BAD_REQUEST);
    assert_eq!(small_v2.json["error"], "image_too_small");

    let wide = png(5001, 300, 1);
    let large_v2 = at(V2, wide.clone()).await;
    assert_eq!(large_v2.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        large_v2.json,
        json!({"error": "image_too_large", "message": "The selfie must be at most 5000x5000 pixels, got 5001x300."})
    );
    assert_eq!(at(V2, png(5000, 300, 1)).await.status, StatusCode::OK);
    // v0.1 documents no maximum.
    assert_eq!(at(V1, png(5001, 480, 1)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn formats_and_bad_input() {
    let sim = start().await;
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Tiff,
    ] {
        let a = sim.kairos(image(640, 480, 3, format)).await;
        assert_eq!(a.status, StatusCode::OK, "{format:?}: {}", a.text);
    }
    let a = sim.kairos(b"not an image".to_vec()).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json,
        json!({"error": "invalid_image", "message": "The selfie could not be read as an image."})
    );

    let a = sim
        .kairos_at(V2, Form::new().text("threshold", "0.5"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json,
        json!({"error": "missing_selfie", "message": "The selfie file is required."})
    );

    for bad in ["1.5", "-0.1", "x", "NaN"] {
        let a = sim
            .kairos_at(V2, form_with("selfie", jpeg(3)).text("threshold", bad))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(a.json["error"], "invalid_threshold");
    }

    let a = answer(
        sim.client
            .post(sim.url(V2))
            .header("app_id", "id")
            .header("app_key", "key")
            .body("selfie=abc"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json["error"], "invalid_request");
}

#[tokio::test]
async fn threshold_drives_response_code() {
    let sim = start().await;
    sim.rule(json!({"respond": {"score": 0.7}})).await;
    let at = |t: &'static str| {
        let sim = &sim;
        async move {
            sim.kairos_at(V2, form_with("selfie", jpeg(4)).text("threshold", t))
                .await
        }
    };
    let live = at("0.7").await;
    assert_eq!(live.json["response_code"], 1);
    assert_eq!(live.json["response_data"]["faces_liveness"], json!(0.7));
    assert_eq!(at("0.71").await.json["response_code"], 2);
}

#[tokio::test]
async fn several_faces_list_the_largest_second() {
    let sim = start().await;
    sim.rule(json!({"respond": {"faces": 3}})).await;
    let a = sim.kairos(jpeg(5)).await;
    let faces = a.json["response_data"]["faces_predicted"]
        .as_array()
        .expect("faces")
        .clone();
    assert_eq!(faces.len(), 3);
    let area = |f: &Value| f["delta"]["x"].as_f64().unwrap() * f["delta"]["y"].as_f64().unwrap();
    assert_eq!(faces[1]["top_left"], json!({"x": 160.0, "y": 120.0}));
    assert!(area(&faces[0]) < area(&faces[1]));
    assert!(area(&faces[2]) < area(&faces[1]));
    let again = sim.kairos(jpeg(5)).await;
    assert_eq!(again.json["response_data"]["faces_predicted"], json!(faces));
}

#[tokio::test]
async fn no_face_and_spoof() {
    let sim = start().await;
    sim.rule(json!({"respond": {"faces": 0}, "times": 1})).await;
    let a = sim.kairos(jpeg(6)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json["response_data"]["faces_predicted"], json!([]));
    assert_eq!(a.json["response_data"]["faces_liveness"], json!(0.0));
    assert_eq!(a.json["response_code"], 0);

    sim.rule(json!({"respond": {"spoof_type": "replay"}, "times": 1}))
        .await;
    let b = sim.kairos(jpeg(6)).await;
    assert!(
        b.json["response_data"]["faces_liveness"]
            .as_f64()
            .is_some_and(|s| s <= 0.2)
    );
    assert_eq!(b.json["response_code"], 2);
}

#[tokio::test]
async fn documented_variants() {
    let sim = start().await;
    sim.rule(
        json!({"respond": {"shape": "flat", "omit_uid": true, "int_confidence": true,
        "response_code": 7, "http_status": 201, "score": 0.5}, "times": 1}),
    )
    .await;
    let a = sim.kairos(jpeg(7)).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(a.json.get("api_req_uid").is_none());
    assert_eq!(a.json["response_code"], 7);
    let data = &a.json["response_data"];
    assert_eq!(data["img_width"], 640);
    assert_eq!(data["img_height"], 480);
    assert!(data.get("img").is_none());
    assert_eq!(data["faces_predicted"][0]["confidence"], json!(1));
    assert!(data["faces_predicted"][0]["confidence"].is_u64());
    assert_eq!(data["faces_liveness"], json!(0.5));

    sim.rule(json!({"respond": {"uid_field": "api_req_uuid", "status": 201}, "times": 1}))
        .await;
    let b = sim.kairos(jpeg(7)).await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert!(b.json.get("api_req_uid").is_none());
    assert!(b.json["api_req_uuid"].is_string());
}

#[tokio::test]
async fn rule_errors() {
    let sim = start().await;
    let cases = [
        (
            json!({"status": 401}),
            json!({"error": "invalid_credentials", "message": "Authentication failed: invalid app_id or app_key."}),
        ),
        (
            json!({"status": 403}),
            json!({"error": "usage_limit_exceeded", "message": "Usage limit reached for this application."}),
        ),
        (
            json!({"status": 500}),
            json!({"error": "server_error", "message": "The server could not process the request; try again later."}),
        ),
        (
            json!({"status": 503, "error_message": "maintenance"}),
            json!({"error": "server_error", "message": "maintenance"}),
        ),
        (
            json!({"status": 400}),
            json!({"error": "bad_request", "message": "The request is invalid."}),
        ),
        (
            json!({"status": 429}),
            json!({"error": "too_many_requests", "message": "Too many requests."}),
        ),
        (
            json!({"status": 404}),
            json!({"error": "error", "message": "Not Found"}),
        ),
    ];
    for (respond, body) in cases {
        let status = respond["status"].as_u64().unwrap();
        sim.rule(json!({"respond": respond, "times": 1})).await;
        let a = sim.kairos(jpeg(8)).await;
        assert_eq!(u64::from(a.status.as_u16()), status);
        assert_eq!(a.json, body);
    }
    sim.rule(json!({"respond": {"status": 502, "body": ""}, "times": 1}))
        .await;
    let a = sim.kairos(jpeg(8)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.text, "");

    assert!(
        sim.bad_rule(r#"{"respond": {"http_status": 500}}"#)
            .await
            .contains("http_status")
    );
}
