//! Face matching on the engine's collections server (`livegate engine serve`): enrollment
//! stores the embedding, batch enrollment, identify, verify, compare; and livegate's
//! `kind: collections` adapter calling them. Real photos: the models directory's samples and
//! `engine/tests/data/` (public domain, see its LICENSES.md).

use livegate_engine::EMBEDDING_DIM;
use livegate_providers::HttpClient;
use livegate_providers::collections::{Collections, FaceRef, Settings};
use livegate_providers::{ImageInput, Secret};
use serde_json::Value;

use crate::engine_server::{KEY, OTHER_KEY, Srv, assert_error, blank, sample};
use crate::harness::{Backend, Harness, Reply};

pub(crate) fn photo(name: &str) -> Vec<u8> {
    let path = format!("{}/../engine/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Enrollment fields that skip the liveness check: the portrait is a scan of a print, which
/// the anti-spoofing models rightly doubt; matching is what these tests are about.
const NO_LIVENESS: (&str, &str) = ("check_liveness", "false");

crate::backend_matrix!(
    backend;
    enroll_stores_the_embedding_and_identify_finds_the_person,
    verify_by_face_id_and_external_id,
    compare_two_images,
    batch_enrollment_is_partial,
    adapter_matching_calls,
);

async fn identify(s: &Srv, image: Vec<u8>, fields: &[(&str, &str)]) -> Reply {
    s.form(
        Some(KEY),
        "/api/v1/collections/selfies/identify",
        Some(image),
        fields,
    )
    .await
}

fn matches(r: &Reply) -> Vec<Value> {
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["matches"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no matches: {}", r.body))
}

async fn enroll_stores_the_embedding_and_identify_finds_the_person(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let r = s
        .enroll(
            KEY,
            "selfies",
            photo("astronaut.jpg"),
            &[("external_id", "eileen"), NO_LIVENESS],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["data"]["has_embedding"], true);
    let eileen = r.body["data"]["face_id"].as_str().expect("id").to_owned();
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("real.jpg"),
            &[("external_id", "woman")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // The row keeps a unit-length 128-d embedding (and no image).
    let id = uuid::Uuid::parse_str(&eileen).expect("uuid");
    let row = s.store.get_face("selfies", id).await.expect("row");
    let v = row.embedding.expect("embedding stored");
    assert_eq!(v.len(), EMBEDDING_DIM);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "{norm}");

    // A taken external_id is a 409 whatever the face.
    let r = s
        .enroll(
            KEY,
            "selfies",
            photo("astronaut_variant.jpg"),
            &[("external_id", "eileen"), NO_LIVENESS],
        )
        .await;
    assert_error(&r, 409, "DUPLICATE_EXTERNAL_ID");

    // Another photo of her: she comes first, and alone above the threshold.
    let r = identify(&s, photo("astronaut_variant.jpg"), &[]).await;
    let m = matches(&r);
    assert_eq!(m.len(), 1, "{}", r.body);
    assert_eq!(m[0]["face_id"], eileen.as_str());
    assert_eq!(m[0]["external_id"], "eileen");
    assert!(
        m[0]["similarity"].as_f64().is_some_and(|x| x >= 0.93),
        "{}",
        r.body
    );
    assert_eq!(r.body["data"]["threshold"], 0.93);

    // With the threshold lowered both are returned, most similar first; top_k caps.
    let m = matches(&identify(&s, photo("astronaut_variant.jpg"), &[("threshold", "0.5")]).await);
    assert_eq!(m.len(), 2);
    assert_eq!(m[0]["external_id"], "eileen");
    assert!(m[0]["similarity"].as_f64() > m[1]["similarity"].as_f64());
    let m = matches(
        &identify(
            &s,
            photo("astronaut_variant.jpg"),
            &[("threshold", "0.5"), ("top_k", "1")],
        )
        .await,
    );
    assert_eq!(m.len(), 1);

    // Nobody like her in the other collection: an empty list, not an error.
    let r = s
        .form(
            Some(OTHER_KEY),
            "/api/v1/collections/others/identify",
            Some(photo("astronaut_variant.jpg")),
            &[],
        )
        .await;
    assert!(matches(&r).is_empty());

    for (field, value) in [("top_k", "0"), ("top_k", "101"), ("threshold", "2")] {
        let r = identify(&s, photo("astronaut_variant.jpg"), &[(field, value)]).await;
        assert_error(&r, 400, "VALIDATION_ERROR");
    }
    assert_error(&identify(&s, blank(), &[]).await, 422, "FACE_NOT_DETECTED");

    // A deleted face is no longer found.
    let r = s
        .delete(KEY, &format!("/api/v1/collections/selfies/faces/{eileen}"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(matches(&identify(&s, photo("astronaut_variant.jpg"), &[]).await).is_empty());
}

async fn verify_by_face_id_and_external_id(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let r = s
        .enroll(
            KEY,
            "selfies",
            photo("astronaut.jpg"),
            &[("external_id", "eileen"), NO_LIVENESS],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let face_id = r.body["data"]["face_id"].as_str().expect("id").to_owned();
    let verify = |image: Vec<u8>, fields: Vec<(&'static str, String)>| {
        let s = &s;
        async move {
            let f: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            s.form(
                Some(KEY),
                "/api/v1/collections/selfies/verify",
                Some(image),
                &f,
            )
            .await
        }
    };
    let r = verify(
        photo("astronaut_variant.jpg"),
        vec![("external_id", "eileen".into())],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["verified"], true, "{}", r.body);
    assert_eq!(r.body["data"]["face_id"], face_id.as_str());
    let r = verify(
        photo("astronaut_variant.jpg"),
        vec![("face_id", face_id.clone())],
    )
    .await;
    assert_eq!(r.body["data"]["verified"], true, "{}", r.body);

    // Someone else.
    let r = verify(sample("real.jpg"), vec![("face_id", face_id.clone())]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["verified"], false, "{}", r.body);
    assert!(
        r.body["data"]["similarity"]
            .as_f64()
            .is_some_and(|x| x < 0.9)
    );

    let r = verify(sample("real.jpg"), vec![("external_id", "nobody".into())]).await;
    assert_error(&r, 404, "FACE_NOT_FOUND");
    let r = verify(
        sample("real.jpg"),
        vec![
            ("external_id", "eileen".into()),
            ("face_id", face_id.clone()),
        ],
    )
    .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = verify(sample("real.jpg"), vec![]).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    // A face of another collection is not found through this one's key.
    let r = s
        .form(
            Some(OTHER_KEY),
            "/api/v1/collections/others/verify",
            Some(photo("astronaut_variant.jpg")),
            &[("face_id", face_id.as_str())],
        )
        .await;
    assert_error(&r, 404, "FACE_NOT_FOUND");
}

async fn compare_form(s: &Srv, key: Option<&str>, a: Option<Vec<u8>>, b: Option<Vec<u8>>) -> Reply {
    let mut form = reqwest::multipart::Form::new();
    if let Some(a) = a {
        form = form.part(
            "image_a",
            reqwest::multipart::Part::bytes(a).file_name("a.jpg"),
        );
    }
    if let Some(b) = b {
        form = form.part(
            "image_b",
            reqwest::multipart::Part::bytes(b).file_name("b.jpg"),
        );
    }
    let mut req = s
        .client
        .post(format!("{}/api/v1/compare", s.base))
        .multipart(form);
    if let Some(k) = key {
        req = req.header("X-API-Key", k);
    }
    Harness::reply(req.send().await.expect("send")).await
}

async fn compare_two_images(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let same = compare_form(
        &s,
        Some(KEY),
        Some(photo("astronaut.jpg")),
        Some(photo("astronaut_variant.jpg")),
    )
    .await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!(same.body["data"]["match"], true, "{}", same.body);
    let other = compare_form(
        &s,
        Some(OTHER_KEY),
        Some(photo("astronaut.jpg")),
        Some(sample("real.jpg")),
    )
    .await;
    assert_eq!(other.status, 200, "{}", other.body);
    assert_eq!(other.body["data"]["match"], false, "{}", other.body);
    assert!(same.body["data"]["similarity"].as_f64() > other.body["data"]["similarity"].as_f64());

    let r = compare_form(&s, Some(KEY), Some(photo("astronaut.jpg")), None).await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = compare_form(
        &s,
        None,
        Some(photo("astronaut.jpg")),
        Some(sample("real.jpg")),
    )
    .await;
    assert_error(&r, 401, "INVALID_API_KEY");
    let r = compare_form(&s, Some(KEY), Some(photo("astronaut.jpg")), Some(blank())).await;
    assert_error(&r, 422, "FACE_NOT_DETECTED");
}

async fn batch_enrollment_is_partial(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let mut form = reqwest::multipart::Form::new();
    for image in [photo("astronaut.jpg"), blank(), sample("real.jpg")] {
        form = form.part(
            "images",
            reqwest::multipart::Part::bytes(image).file_name("f.png"),
        );
    }
    form = form
        .text("external_ids", r#"["eileen", null, "woman"]"#)
        .text("metadata", r#"[{"source": "nasa"}, null, null]"#)
        .text("check_liveness", "false");
    let resp = s
        .client
        .post(format!("{}/api/v1/collections/selfies/faces/batch", s.base))
        .header("X-API-Key", KEY)
        .multipart(form)
        .send()
        .await
        .expect("send");
    let r = Harness::reply(resp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let d = &r.body["data"];
    assert_eq!(d["enrolled"], 2, "{d}");
    assert_eq!(d["failed"], 1, "{d}");
    let results = d["results"].as_array().expect("results");
    assert_eq!(results[0]["success"], true);
    assert_eq!(results[0]["face"]["external_id"], "eileen");
    assert_eq!(results[0]["face"]["metadata"]["source"], "nasa");
    assert_eq!(results[1]["success"], false);
    assert_eq!(results[1]["error"]["code"], "FACE_NOT_DETECTED");
    assert_eq!(results[2]["face"]["external_id"], "woman");

    // Enrolled faces are searchable at once.
    let m = matches(&identify(&s, photo("astronaut_variant.jpg"), &[]).await);
    assert_eq!(m[0]["external_id"], "eileen");

    // A mismatched list is refused as a whole.
    let form = reqwest::multipart::Form::new()
        .part(
            "images",
            reqwest::multipart::Part::bytes(sample("real.jpg")).file_name("a.jpg"),
        )
        .text("external_ids", r#"["a", "b"]"#);
    let resp = Harness::call(
        s.client
            .post(format!("{}/api/v1/collections/selfies/faces/batch", s.base))
            .header("X-API-Key", KEY)
            .multipart(form),
    )
    .await;
    assert_error(&resp, 400, "VALIDATION_ERROR");
}

fn input(bytes: Vec<u8>) -> ImageInput {
    let limits = livegate::config::Limits::default();
    livegate::check::intake::decode(bytes.into(), &limits).expect("decode")
}

/// livegate's `kind: collections` adapter against the engine server.
async fn adapter_matching_calls(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let client = Collections::new(
        "engine",
        Settings {
            base_url: s.base.clone(),
            api_key: Secret::new(KEY.to_owned()),
            collection_id: "selfies".into(),
            allow_insecure_http: false,
        },
        HttpClient::with_timeout(std::time::Duration::from_secs(60)).expect("client"),
    )
    .expect("adapter");
    let astronaut = input(photo("astronaut.jpg"));
    let variant = input(photo("astronaut_variant.jpg"));
    let real = input(sample("real.jpg"));

    let meta = serde_json::json!({"source": "nasa"});
    let face = client
        .enroll(&astronaut, Some("eileen"), Some(&meta), false)
        .await
        .expect("enroll");
    assert_eq!(face.external_id.as_deref(), Some("eileen"));
    let dup = client
        .enroll(&variant, Some("eileen"), None, false)
        .await
        .expect_err("taken external_id");
    assert!(dup.message.contains("DUPLICATE_EXTERNAL_ID"), "{dup:?}");

    let found = client.identify(&variant, 5, None).await.expect("identify");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].face_id, face.face_id);
    assert_eq!(found[0].metadata, Some(meta));
    assert!(
        client
            .identify(&real, 5, None)
            .await
            .expect("identify")
            .is_empty()
    );

    let v = client
        .verify(&variant, FaceRef::ExternalId("eileen"), None)
        .await
        .expect("verify");
    assert!(v.verified && v.similarity >= 0.93, "{v:?}");
    let v = client
        .verify(&real, FaceRef::FaceId(&face.face_id), None)
        .await
        .expect("verify");
    assert!(!v.verified, "{v:?}");

    let c = client
        .compare(&astronaut, &variant, None)
        .await
        .expect("compare");
    assert!(c.is_match, "{c:?}");
    let c = client
        .compare(&astronaut, &real, None)
        .await
        .expect("compare");
    assert!(!c.is_match, "{c:?}");
}
