//! livegate's `kind: collections` adapter's face-matching calls (`enroll`, `identify`,
//! `verify`, `compare`) against the collections-engine simulator, which is written from the
//! vendor documents alone: what the adapter sends, what it reads back, and how it classifies
//! the documented errors and scripted faults. No database: adapter and simulator only.

use std::time::{Duration, Instant};

use livegate_providers::HttpClient;
use livegate_providers::collections::{Collections, FaceRef, Settings};
use livegate_providers::{ErrorKind, ImageInput, ProviderError, Secret};
use serde_json::{Value, json};

use crate::harness::jpeg;

const KEY: &str = "fr_test_5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";

struct Engine {
    base: String,
    control: reqwest::Client,
    adapter: Collections,
}

impl Engine {
    async fn start() -> Engine {
        let addr = livegate_simulators::spawn(livegate_simulators::collections::router())
            .await
            .expect("simulator");
        let base = format!("http://{addr}");
        let adapter = Collections::new(
            "engine",
            Settings {
                base_url: base.clone(),
                api_key: Secret::new(KEY.to_owned()),
                collection_id: "selfies".into(),
                allow_insecure_http: false,
            },
            HttpClient::with_timeout(Duration::from_secs(1)).expect("client"),
        )
        .expect("adapter");
        Engine {
            base,
            control: reqwest::Client::new(),
            adapter,
        }
    }

    async fn rule(&self, rule: Value) {
        let r = self
            .control
            .post(format!("{}/_sim/rules", self.base))
            .json(&rule)
            .send()
            .await
            .expect("rule");
        assert_eq!(r.status().as_u16(), 201, "{rule}");
    }

    async fn requests(&self) -> Vec<Value> {
        self.control
            .get(format!("{}/_sim/requests", self.base))
            .send()
            .await
            .expect("requests")
            .json()
            .await
            .expect("requests json")
    }
}

fn input(bytes: Vec<u8>) -> ImageInput {
    livegate::check::intake::decode(bytes.into(), &livegate::config::Limits::default())
        .expect("decode")
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes))
}

/// The error envelope's `error.code` in the raw body the adapter kept.
fn wire_code(e: &ProviderError) -> String {
    let body: Value = serde_json::from_str(e.raw_body.as_deref().unwrap_or("null")).expect("body");
    body["error"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn adapter_matching_calls_against_the_simulator() {
    let sim = Engine::start().await;
    let (eileen, other) = (input(jpeg(1)), input(jpeg(2)));

    let meta = json!({"source": "nasa"});
    let face = sim
        .adapter
        .enroll(&eileen, Some("eileen"), Some(&meta), false)
        .await
        .expect("enroll");
    assert_eq!(face.external_id.as_deref(), Some("eileen"));
    assert!(uuid::Uuid::parse_str(&face.face_id).is_ok(), "{face:?}");
    let score =
        (livegate_simulators::default_score_for(&eileen.bytes) * 10_000.0).round() / 10_000.0;
    assert_eq!(face.liveness_score, Some(score));

    // What the simulator received: the documented fields, metadata as a JSON string.
    let log = sim.requests().await;
    let sent = &log[0];
    assert_eq!(sent["path"], "/api/v1/collections/selfies/faces");
    assert_eq!(sent["headers"]["x-api-key"], KEY);
    assert_eq!(sent["fields"]["external_id"], "eileen");
    assert_eq!(sent["fields"]["check_liveness"], "false");
    let sent_meta: Value =
        serde_json::from_str(sent["fields"]["metadata"].as_str().expect("metadata")).expect("json");
    assert_eq!(sent_meta, meta);
    assert_eq!(sent["files"]["image"]["sha256"], sha256(&eileen.bytes));

    // Identify: the same bytes are the same person; anyone else is an empty list.
    let found = sim
        .adapter
        .identify(&eileen, 5, None)
        .await
        .expect("identify");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].face_id, face.face_id);
    assert_eq!(found[0].external_id.as_deref(), Some("eileen"));
    assert_eq!(found[0].metadata, Some(meta));
    assert_eq!(found[0].similarity, 0.99);
    assert!(
        sim.adapter
            .identify(&other, 5, None)
            .await
            .expect("identify")
            .is_empty()
    );
    // The adapter's threshold and top_k reach the engine.
    let low = sim
        .adapter
        .identify(&other, 1, Some(0.1))
        .await
        .expect("identify");
    assert_eq!(low.len(), 1);
    assert_eq!(low[0].similarity, 0.12);
    let sent = sim.requests().await.pop().expect("identify logged");
    assert_eq!(sent["path"], "/api/v1/collections/selfies/identify");
    assert_eq!(
        (&sent["fields"]["top_k"], &sent["fields"]["threshold"]),
        (&json!("1"), &json!("0.1"))
    );

    let v = sim
        .adapter
        .verify(&eileen, FaceRef::ExternalId("eileen"), None)
        .await
        .expect("verify");
    assert!(v.verified && v.similarity == 0.99, "{v:?}");
    let v = sim
        .adapter
        .verify(&other, FaceRef::FaceId(&face.face_id), None)
        .await
        .expect("verify");
    assert!(!v.verified && v.similarity == 0.12, "{v:?}");

    let c = sim
        .adapter
        .compare(&eileen, &input(jpeg(1)), None)
        .await
        .expect("compare");
    assert!(c.is_match && c.similarity == 0.99, "{c:?}");
    let c = sim
        .adapter
        .compare(&eileen, &other, None)
        .await
        .expect("compare");
    assert!(!c.is_match, "{c:?}");
    let sent = sim.requests().await.pop().expect("compare logged");
    assert_eq!(sent["path"], "/api/v1/compare");
    assert_eq!(sent["files"]["image_b"]["sha256"], sha256(&other.bytes));
}

#[tokio::test]
async fn adapter_duplicate_external_id_is_bad_input() {
    let sim = Engine::start().await;
    sim.adapter
        .enroll(&input(jpeg(3)), Some("user_1"), None, false)
        .await
        .expect("enroll");
    let e = sim
        .adapter
        .enroll(&input(jpeg(4)), Some("user_1"), None, false)
        .await
        .expect_err("taken external_id");
    assert_eq!(e.kind, ErrorKind::BadInput, "{e:?}");
    assert_eq!(e.status, Some(409));
    assert_eq!(wire_code(&e), "DUPLICATE_EXTERNAL_ID");
    assert!(e.message.contains("DUPLICATE_EXTERNAL_ID"), "{e:?}");
}

#[tokio::test]
async fn adapter_failed_enrollment_liveness_is_bad_input() {
    let sim = Engine::start().await;
    sim.rule(json!({"respond": {"score": 0.2}, "times": 1}))
        .await;
    let e = sim
        .adapter
        .enroll(&input(jpeg(5)), None, None, true)
        .await
        .expect_err("liveness");
    assert_eq!(
        (e.kind, e.status),
        (ErrorKind::BadInput, Some(422)),
        "{e:?}"
    );
    assert_eq!(wire_code(&e), "LIVENESS_CHECK_FAILED");
    assert!(e.message.contains("LIVENESS_CHECK_FAILED"), "{e:?}");
    let sent = sim.requests().await.pop().expect("logged");
    assert_eq!(sent["fields"]["check_liveness"], "true");
}

/// A 404 on verify is the documented `FACE_NOT_FOUND`: the caller named a face the collection
/// lacks, not a key/collection mismatch (the liveness call's reading of a 404).
#[tokio::test]
async fn adapter_unknown_face_is_404_face_not_found() {
    let sim = Engine::start().await;
    for face in [
        FaceRef::FaceId("00000000-0000-0000-0000-000000000000"),
        FaceRef::ExternalId("nobody"),
    ] {
        let e = sim
            .adapter
            .verify(&input(jpeg(6)), face, None)
            .await
            .expect_err("unknown face");
        assert_eq!(e.status, Some(404), "{e:?}");
        assert_eq!(wire_code(&e), "FACE_NOT_FOUND");
        assert_eq!(e.kind, ErrorKind::BadInput, "{e:?}");
        assert!(e.message.contains("FACE_NOT_FOUND"), "{e:?}");
    }
}

#[tokio::test]
async fn adapter_scripted_500_429_and_timeout() {
    let sim = Engine::start().await;
    let face = sim
        .adapter
        .enroll(&input(jpeg(7)), Some("f"), None, false)
        .await
        .expect("enroll");
    let image = input(jpeg(7));

    // Every call, each fault: the same classification as the liveness call.
    for call in ["enroll", "identify", "verify", "compare"] {
        let run = async || match call {
            "enroll" => sim
                .adapter
                .enroll(&image, None, None, false)
                .await
                .map(drop),
            "identify" => sim.adapter.identify(&image, 5, None).await.map(drop),
            "verify" => sim
                .adapter
                .verify(&image, FaceRef::FaceId(&face.face_id), None)
                .await
                .map(drop),
            _ => sim.adapter.compare(&image, &image, None).await.map(drop),
        };
        sim.rule(json!({"respond": {"status": 500}, "times": 1}))
            .await;
        let e = run().await.expect_err("500");
        assert_eq!(
            (e.kind, e.status),
            (ErrorKind::Unavailable, Some(500)),
            "{call}: {e:?}"
        );
        assert_eq!(wire_code(&e), "INTERNAL_ERROR");

        sim.rule(json!({"respond": {"status": 429, "retry_after": 9}, "times": 1}))
            .await;
        let e = run().await.expect_err("429");
        assert_eq!(
            (e.kind, e.status),
            (ErrorKind::RateLimited, Some(429)),
            "{call}: {e:?}"
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(9)), "{call}");

        // Longer than the adapter's 1 s timeout.
        sim.rule(json!({"respond": {"delay_ms": 1500}, "times": 1}))
            .await;
        let started = Instant::now();
        let e = run().await.expect_err("timeout");
        assert_eq!(e.kind, ErrorKind::Timeout, "{call}: {e:?}");
        assert!(started.elapsed() < Duration::from_millis(1400), "{call}");

        // The faults are used up: the call works again.
        run()
            .await
            .unwrap_or_else(|e| panic!("{call} after the faults: {e:?}"));
    }
}
