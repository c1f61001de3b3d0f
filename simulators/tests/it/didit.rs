use std::time::{Duration, Instant};

use image::ImageFormat;
use reqwest::StatusCode;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

use crate::support::{
    Answer, Sim, answer, file_part, form_with, image, jpeg, padded_png, png, sha256_hex,
};

const PATH: &str = "/v3/passive-liveness/";

async fn start() -> Sim {
    Sim::start(livegate_simulators::didit::router()).await
}

impl Sim {
    async fn didit(&self, form: Form) -> Answer {
        answer(
            self.client
                .post(self.url(PATH))
                .header("x-api-key", "test-key")
                .multipart(form),
        )
        .await
    }

    async fn didit_image(&self, bytes: Vec<u8>) -> Answer {
        self.didit(form_with("user_image", bytes)).await
    }
}

fn warning_tags(body: &Value) -> Vec<String> {
    body["liveness"]["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| w["risk"].as_str().expect("risk").to_owned())
        .collect()
}

#[tokio::test]
async fn default_answer_is_deterministic_from_the_image() {
    let sim = start().await;
    let selfie = jpeg(1);
    let expected = (livegate_simulators::default_score_for(&selfie) * 100.0).round() as i64;

    let first = sim.didit_image(selfie.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let body = &first.json;
    let liveness = &body["liveness"];
    assert_eq!(liveness["score"], json!(expected));
    assert!(liveness["score"].is_i64());
    assert_eq!(liveness["method"], "PASSIVE");
    let approved = if expected >= 30 {
        "Approved"
    } else {
        "Declined"
    };
    assert_eq!(liveness["status"], approved);
    let entities = liveness["user_image"]["entities"]
        .as_array()
        .expect("entities");
    assert_eq!(entities.len(), 1);
    assert_eq!(entities[0]["bbox"], json!([160, 120, 480, 360]));
    assert!(entities[0]["age"].is_f64());
    assert!(
        entities[0]["confidence"]
            .as_f64()
            .is_some_and(|c| (0.0..=1.0).contains(&c))
    );
    assert!(matches!(
        entities[0]["gender"].as_str(),
        Some("male" | "female")
    ));
    assert!(entities[0].get("race").is_none());
    assert_eq!(liveness["user_image"]["best_angle"], 0);
    assert!(
        liveness["face_quality"]
            .as_f64()
            .is_some_and(|q| (0.0..=100.0).contains(&q))
    );
    assert!(
        liveness["face_luminance"]
            .as_f64()
            .is_some_and(|q| (0.0..=100.0).contains(&q))
    );
    assert!(uuid::Uuid::parse_str(body["request_id"].as_str().expect("request_id")).is_ok());
    let created_at = body["created_at"].as_str().expect("created_at");
    assert!(created_at.ends_with('Z'), "{created_at}");
    assert!(chrono::DateTime::parse_from_rfc3339(created_at).is_ok());
    assert!(body.get("vendor_data").is_none() && body.get("metadata").is_none());

    let second = sim.didit_image(selfie).await;
    assert_eq!(second.json["liveness"]["score"], liveness["score"]);
    assert_eq!(
        second.json["liveness"]["face_quality"],
        liveness["face_quality"]
    );
    assert_eq!(
        second.json["liveness"]["user_image"],
        liveness["user_image"]
    );
    assert_ne!(second.json["request_id"], body["request_id"]);
}

#[tokio::test]
async fn path_without_trailing_slash_is_accepted() {
    let sim = start().await;
    let a = answer(
        sim.client
            .post(sim.url("/v3/passive-liveness"))
            .header("x-api-key", "k")
            .multipart(form_with("user_image", jpeg(2))),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
}

#[tokio::test]
async fn threshold_below_is_declined_and_the_inclusive_variant() {
    let sim = start().await;
    sim.rule(json!({"respond": {"score": 0.5}})).await;
    let with_threshold = |t: &str| {
        form_with("user_image", jpeg(3)).text("face_liveness_score_decline_threshold", t.to_owned())
    };

    let at = sim.didit(with_threshold("50")).await;
    assert_eq!(at.json["liveness"]["score"], 50);
    assert_eq!(at.json["liveness"]["status"], "Approved");
    assert!(warning_tags(&at.json).is_empty());

    let above = sim.didit(with_threshold("50.5")).await;
    assert_eq!(above.json["liveness"]["status"], "Declined");
    assert_eq!(warning_tags(&above.json), ["LOW_LIVENESS_SCORE"]);
    assert_eq!(above.json["liveness"]["warnings"][0]["log_type"], "error");

    sim.rule(json!({"respond": {"score": 0.5, "threshold_inclusive": true}}))
        .await;
    let inclusive = sim.didit(with_threshold("50")).await;
    assert_eq!(inclusive.json["liveness"]["status"], "Declined");

    // The default threshold is 30.
    sim.rule(json!({"respond": {"score": 0.29}})).await;
    let low = sim.didit_image(jpeg(3)).await;
    assert_eq!(low.json["liveness"]["status"], "Declined");
    sim.rule(json!({"respond": {"score": 0.30}})).await;
    let ok = sim.didit_image(jpeg(3)).await;
    assert_eq!(ok.json["liveness"]["status"], "Approved");
}

#[tokio::test]
async fn float_score_variant() {
    let sim = start().await;
    sim.rule(json!({"respond": {"score": 0.8992, "score_float": true}}))
        .await;
    let a = sim.didit_image(jpeg(4)).await;
    assert_eq!(a.json["liveness"]["score"], json!(89.92));
    assert!(a.json["liveness"]["score"].is_f64());
}

#[tokio::test]
async fn no_face() {
    let sim = start().await;
    sim.rule(json!({"respond": {"faces": 0}})).await;
    let a = sim.didit_image(jpeg(5)).await;
    assert_eq!(a.status, StatusCode::OK);
    let liveness = &a.json["liveness"];
    assert_eq!(liveness["score"], Value::Null);
    assert_eq!(liveness["user_image"]["entities"], json!([]));
    assert_eq!(liveness["face_quality"], Value::Null);
    assert_eq!(liveness["face_luminance"], Value::Null);
    assert_eq!(liveness["status"], "Declined");
    assert_eq!(warning_tags(&a.json), ["NO_FACE_DETECTED"]);
    let warning = &liveness["warnings"][0];
    assert_eq!(warning["log_type"], "error");
    assert!(warning["short_description"].is_string() && warning["long_description"].is_string());
}

#[tokio::test]
async fn several_faces_put_the_largest_second() {
    let sim = start().await;
    sim.rule(json!({"respond": {"faces": 3, "score": 0.9}}))
        .await;
    let a = sim.didit_image(jpeg(6)).await;
    let liveness = &a.json["liveness"];
    assert_eq!(liveness["status"], "Approved");
    assert_eq!(warning_tags(&a.json), ["MULTIPLE_FACES_DETECTED"]);
    assert_eq!(liveness["warnings"][0]["log_type"], "warning");
    let entities = liveness["user_image"]["entities"]
        .as_array()
        .expect("entities");
    assert_eq!(entities.len(), 3);
    let area = |e: &Value| {
        let b: Vec<i64> = e["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        (b[2] - b[0]) * (b[3] - b[1])
    };
    assert_eq!(entities[1]["bbox"], json!([160, 120, 480, 360]));
    assert!(area(&entities[0]) < area(&entities[1]));
    assert!(area(&entities[2]) < area(&entities[1]));

    // The same image gives the same boxes.
    let again = sim.didit_image(jpeg(6)).await;
    assert_eq!(again.json["liveness"]["user_image"], liveness["user_image"]);
}

#[tokio::test]
async fn custom_bbox() {
    let sim = start().await;
    sim.rule(json!({"respond": {"bbox": [10, 20, 210, 320]}}))
        .await;
    let a = sim.didit_image(jpeg(6)).await;
    assert_eq!(
        a.json["liveness"]["user_image"]["entities"][0]["bbox"],
        json!([10, 20, 210, 320])
    );
}

#[tokio::test]
async fn spoof_is_a_face_attack() {
    let sim = start().await;
    sim.rule(json!({"respond": {"spoof_type": "print", "score": 0.95}}))
        .await;
    let a = sim.didit_image(jpeg(7)).await;
    assert_eq!(a.json["liveness"]["status"], "Declined");
    assert_eq!(a.json["liveness"]["score"], 95);
    assert_eq!(warning_tags(&a.json), ["LIVENESS_FACE_ATTACK"]);

    // Without a rule score, a spoof also gets a low score.
    sim.rule(json!({"respond": {"spoof_type": "deepfake"}}))
        .await;
    let b = sim.didit_image(jpeg(7)).await;
    assert!(
        b.json["liveness"]["score"]
            .as_i64()
            .is_some_and(|s| s <= 20)
    );
    assert!(warning_tags(&b.json).contains(&"LIVENESS_FACE_ATTACK".to_owned()));
}

#[tokio::test]
async fn decision_warnings_quality_and_echoes() {
    let sim = start().await;
    sim.rule(json!({"respond": {
        "score": 0.9,
        "decision": "In Review",
        "quality": null,
        "luminance": 12.5,
        "race": null,
        "created_at_style": "+00:00",
        "warnings": [
            "DUPLICATED_FACE",
            {"risk": "SOMETHING_NEW", "log_type": "information", "short_description": "s",
             "long_description": "l", "feature": "LIVENESS", "additional_data": null, "node_id": "n1"}
        ]
    }}))
    .await;
    let form = form_with("user_image", jpeg(8))
        .text("vendor_data", "user-42")
        .text("metadata", r#"{"a": [1, 2]}"#)
        .text("rotate_image", "true")
        .text("save_api_request", "false");
    let a = sim.didit(form).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    let liveness = &a.json["liveness"];
    assert_eq!(liveness["status"], "In Review");
    assert_eq!(liveness["face_quality"], Value::Null);
    assert_eq!(liveness["face_luminance"], json!(12.5));
    assert_eq!(liveness["user_image"]["entities"][0]["race"], Value::Null);
    assert_eq!(warning_tags(&a.json), ["DUPLICATED_FACE", "SOMETHING_NEW"]);
    assert_eq!(liveness["warnings"][0]["log_type"], "information");
    assert_eq!(liveness["warnings"][1]["node_id"], "n1");
    assert_eq!(a.json["vendor_data"], "user-42");
    assert_eq!(a.json["metadata"], json!({"a": [1, 2]}));
    let created_at = a.json["created_at"].as_str().unwrap();
    assert!(created_at.ends_with("+00:00"), "{created_at}");

    // An error-level extra warning declines on its own.
    sim.rule(json!({"respond": {"score": 0.9, "warnings": ["FACE_IN_BLOCKLIST"]}}))
        .await;
    let b = sim.didit_image(jpeg(8)).await;
    assert_eq!(b.json["liveness"]["status"], "Declined");

    sim.rule(json!({"respond": {"decision": "Not Finished"}}))
        .await;
    let c = sim.didit_image(jpeg(8)).await;
    assert_eq!(c.json["liveness"]["status"], "Not Finished");
}

#[tokio::test]
async fn missing_or_blank_key_is_403_not_authenticated() {
    let sim = start().await;
    for key in [None, Some(""), Some("  ")] {
        let mut request = sim
            .client
            .post(sim.url(PATH))
            .multipart(form_with("user_image", jpeg(9)));
        if let Some(key) = key {
            request = request.header("x-api-key", key);
        }
        let a = answer(request).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
        assert_eq!(
            a.json,
            json!({"detail": "Authentication credentials were not provided."})
        );
    }
}

#[tokio::test]
async fn rule_errors_in_every_drf_style() {
    let sim = start().await;
    let cases = [
        (
            json!({"status": 401}),
            401,
            json!({"detail": "Invalid API key."}),
        ),
        (
            json!({"status": 403}),
            403,
            json!({"detail": "Insufficient credits. Please top up your balance to continue using the API."}),
        ),
        (
            json!({"status": 403, "error_detail": "You do not have permission to perform this action."}),
            403,
            json!({"detail": "You do not have permission to perform this action."}),
        ),
        (
            json!({"status": 400}),
            400,
            json!({"user_image": ["Upload a valid image. The file you uploaded was either not an image or a corrupted image."]}),
        ),
        (
            json!({"status": 400, "error_style": "fields", "error_field": "face_liveness_score_decline_threshold", "error_detail": "Bad."}),
            400,
            json!({"face_liveness_score_decline_threshold": ["Bad."]}),
        ),
        (
            json!({"status": 400, "error_style": "list", "error_detail": "Oops."}),
            400,
            json!(["Oops."]),
        ),
        (
            json!({"status": 401, "error_style": "list"}),
            401,
            json!(["Invalid API key."]),
        ),
        (
            json!({"status": 500}),
            500,
            json!({"detail": "A server error occurred."}),
        ),
        (
            json!({"status": 500, "error_style": "fields"}),
            500,
            json!({"non_field_errors": ["A server error occurred."]}),
        ),
        (
            json!({"status": 503}),
            503,
            json!({"detail": "Service temporarily unavailable, try again later."}),
        ),
        (
            json!({"status": 502}),
            502,
            json!({"detail": "Bad Gateway"}),
        ),
    ];
    for (respond, status, body) in cases {
        sim.rule(json!({"respond": respond, "times": 1})).await;
        let a = sim.didit_image(jpeg(10)).await;
        assert_eq!(a.status.as_u16(), status, "{respond}");
        assert_eq!(a.json, body, "{respond}");
        assert!(a.headers.get("x-ratelimit-limit").is_none());
    }
    // Rules win over validation: even without a key.
    sim.rule(json!({"respond": {"status": 500}, "times": 1}))
        .await;
    let a = answer(
        sim.client
            .post(sim.url(PATH))
            .multipart(form_with("user_image", jpeg(10))),
    )
    .await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn throttled_answers_carry_rate_limit_headers() {
    let sim = start().await;
    sim.rule(json!({"respond": {"status": 429, "retry_after": 17}, "times": 1}))
        .await;
    let before = chrono::Utc::now().timestamp();
    let a = sim.didit_image(jpeg(11)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        a.json,
        json!({"detail": "Request was throttled. Expected available in 17 seconds."})
    );
    let header = |name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("x-ratelimit-limit").as_deref(), Some("300"));
    assert_eq!(header("x-ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(header("retry-after").as_deref(), Some("17"));
    let reset: i64 = header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!((before + 17..=before + 19).contains(&reset), "{reset}");

    sim.rule(json!({"respond": {"status": 429, "rate_limit_headers": false}, "times": 1}))
        .await;
    let b = sim.didit_image(jpeg(11)).await;
    assert_eq!(b.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(b.headers.get("x-ratelimit-limit").is_none() && b.headers.get("retry-after").is_none());

    sim.rule(json!({"respond": {"rate_limit_headers": true}, "times": 1}))
        .await;
    let c = sim.didit_image(jpeg(11)).await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.headers.get("x-ratelimit-remaining").unwrap(), "299");
    assert!(c.headers.get("retry-after").is_none());
}

#[tokio::test]
async fn body_override_is_sent_verbatim() {
    let sim = start().await;
    sim.rule(json!({"respond": {"body": "{\"liveness\": {\"status\": ", "times": 1}}))
        .await;
    let a = sim.didit_image(jpeg(12)).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.text, "{\"liveness\": {\"status\": ");
    assert_eq!(a.headers.get("content-type").unwrap(), "application/json");

    sim.rule(
        json!({"respond": {"body": {"liveness": {"status": "Weird"}}, "status": 202, "times": 1}}),
    )
    .await;
    let b = sim.didit_image(jpeg(12)).await;
    assert_eq!(b.status, StatusCode::ACCEPTED);
    assert_eq!(b.json, json!({"liveness": {"status": "Weird"}}));

    sim.rule(
        json!({"respond": {"body": "<html>bad gateway</html>", "status": 502,
        "content_type": "text/html", "headers": {"x-extra": "1"}, "times": 1}}),
    )
    .await;
    let c = sim.didit_image(jpeg(12)).await;
    assert_eq!(c.status, StatusCode::BAD_GATEWAY);
    assert_eq!(c.text, "<html>bad gateway</html>");
    assert_eq!(c.headers.get("content-type").unwrap(), "text/html");
    assert_eq!(c.headers.get("x-extra").unwrap(), "1");
}

#[tokio::test]
async fn delay_and_times() {
    let sim = start().await;
    sim.rule(json!({"respond": {"delay_ms": 300, "times": 1}}))
        .await;
    let started = Instant::now();
    let a = sim.didit_image(jpeg(13)).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(a.status, StatusCode::OK);

    sim.rule(json!({"respond": {"status": 500}, "times": 2}))
        .await;
    assert_eq!(
        sim.didit_image(jpeg(13)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        sim.didit_image(jpeg(13)).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(sim.didit_image(jpeg(13)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn rules_match_by_image_hash_newest_first() {
    let sim = start().await;
    let (a_img, b_img) = (jpeg(14), jpeg(15));
    sim.rule(json!({"respond": {"score": 0.1}})).await;
    sim.rule(json!({"match": {"image_sha256": sha256_hex(&a_img).to_uppercase()}, "respond": {"status": 500}})).await;
    assert_eq!(
        sim.didit_image(a_img).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let b = sim.didit_image(b_img).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(b.json["liveness"]["score"], 10);

    sim.delete("/_sim/rules").await;
    let c = sim.didit_image(jpeg(15)).await;
    assert_ne!(c.json["liveness"]["score"], 10);
}

#[tokio::test]
async fn field_validation_errors() {
    let sim = start().await;
    let threshold = |t: &str| {
        form_with("user_image", jpeg(16))
            .text("face_liveness_score_decline_threshold", t.to_owned())
    };

    let a = sim.didit(threshold("101")).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json,
        json!({"face_liveness_score_decline_threshold": ["Ensure this value is less than or equal to 100."]})
    );
    let a = sim.didit(threshold("-1")).await;
    assert_eq!(
        a.json,
        json!({"face_liveness_score_decline_threshold": ["Ensure this value is greater than or equal to 0."]})
    );
    let a = sim.didit(threshold("high")).await;
    assert_eq!(
        a.json,
        json!({"face_liveness_score_decline_threshold": ["A valid number is required."]})
    );
    let a = sim.didit(threshold("0")).await;
    assert_eq!(a.status, StatusCode::OK);

    let a = sim
        .didit(Form::new().text("face_liveness_score_decline_threshold", "500"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        a.json,
        json!({
            "user_image": ["No file was submitted."],
            "face_liveness_score_decline_threshold": ["Ensure this value is less than or equal to 100."],
        })
    );

    let a = sim
        .didit(Form::new().part("user_image", Part::bytes(jpeg(16))))
        .await;
    assert_eq!(
        a.json,
        json!({"user_image": ["The submitted data was not a file. Check the encoding type on the form."]})
    );

    let a = sim
        .didit(form_with("user_image", jpeg(16)).text("rotate_image", "maybe"))
        .await;
    assert_eq!(
        a.json,
        json!({"rotate_image": ["Must be a valid boolean."]})
    );
    let a = sim
        .didit(form_with("user_image", jpeg(16)).text("metadata", "{oops"))
        .await;
    assert_eq!(a.json, json!({"metadata": ["Value must be valid JSON."]}));
}

#[tokio::test]
async fn formats_and_size_limit() {
    let sim = start().await;
    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Tiff,
    ] {
        let a = sim.didit_image(image(320, 240, 17, format)).await;
        assert_eq!(a.status, StatusCode::OK, "{format:?}: {}", a.text);
        assert_eq!(
            a.json["liveness"]["user_image"]["entities"][0]["bbox"],
            json!([80, 60, 240, 180])
        );
    }
    let invalid = json!({"user_image": ["Upload a valid image. The file you uploaded was either not an image or a corrupted image."]});
    let gif = b"GIF89a\x01\x00\x01\x00\x80\x00\x00".to_vec();
    let a = sim.didit_image(gif).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.json, invalid);
    // Right magic number, broken header.
    let a = sim.didit_image(vec![0xFF, 0xD8, 0xFF, 0x00, 0x01]).await;
    assert_eq!(a.json, invalid);
    let a = sim.didit_image(Vec::new()).await;
    assert_eq!(
        a.json,
        json!({"user_image": ["The submitted file is empty."]})
    );

    let at_cap = sim.didit_image(padded_png(5 * 1024 * 1024)).await;
    assert_eq!(at_cap.status, StatusCode::OK);
    let over = sim.didit_image(padded_png(5 * 1024 * 1024 + 1)).await;
    assert_eq!(over.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        over.json,
        json!({"user_image": ["The image exceeds the maximum file size of 5 MB."]})
    );

    // Small images are fine for Didit.
    assert_eq!(sim.didit_image(png(20, 20, 1)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_bodies_are_4xx() {
    let sim = start().await;
    let a = answer(
        sim.client
            .post(sim.url(PATH))
            .header("x-api-key", "k")
            .json(&json!({"user_image": "base64?"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        a.json,
        json!({"detail": "Unsupported media type \"application/json\" in request."})
    );

    let a = answer(
        sim.client
            .post(sim.url(PATH))
            .header("x-api-key", "k")
            .header("content-type", "multipart/form-data; boundary=XYZ")
            .body("--XYZ\r\nContent-Disposition: form-data; name=\"user_image\"; filename=\"a.jpg\"\r\n\r\nabc"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.text);
    let detail = a.json["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with("Multipart form parse error - "),
        "{detail}"
    );
}

#[tokio::test]
async fn requests_are_logged_without_image_bytes() {
    let sim = start().await;
    let selfie = jpeg(18);
    let form = Form::new()
        .part(
            "user_image",
            file_part(selfie.clone(), "me.jpg", "image/jpeg"),
        )
        .text("vendor_data", "v1")
        .text("face_liveness_score_decline_threshold", "80");
    sim.didit(form).await;
    sim.didit(Form::new()).await;

    let log = sim.requests().await;
    assert_eq!(log.len(), 2);
    let first = &log[0];
    assert_eq!(first["method"], "POST");
    assert_eq!(first["path"], PATH);
    assert_eq!(first["headers"]["x-api-key"], "test-key");
    assert!(
        first["headers"]["content-type"]
            .as_str()
            .unwrap()
            .starts_with("multipart/form-data")
    );
    assert_eq!(
        first["fields"],
        json!({"vendor_data": "v1", "face_liveness_score_decline_threshold": "80"})
    );
    assert_eq!(
        first["files"],
        json!({"user_image": {"sha256": sha256_hex(&selfie), "size": selfie.len(), "content_type": "image/jpeg", "filename": "me.jpg"}})
    );
    assert_eq!(log[1]["files"], json!({}));

    sim.delete("/_sim/requests").await;
    assert!(sim.requests().await.is_empty());
}
