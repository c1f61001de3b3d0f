//! `livegate engine serve`: the collections API on the built-in engine
//! (`livegate_engine::server`), over HTTP on both stores, and the done-when check: a tenant
//! routed with `kind: collections` to it gets the same verdicts as one on `kind: embedded`.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use livegate::config::{Config, KeyHash};
use livegate::http::{AppState, router as gateway_router};
use livegate::runtime::Runtime;
use livegate::store::{PgStore, SqliteStore, Store};
use livegate_engine::server::{
    FacePage, FaceRecord, FaceStore, FaceStoreError, KeyMode, ServerOptions, hash_key, router,
};
use serde_json::{Value, json};

use crate::harness::{Backend, Harness, Kill, Reply, encode, open_store, postgres_url};

/// Keys of collection `selfies` (one per mode) and of collection `others`.
pub(crate) const KEY: &str = "fr_test_00112233445566778899aabbccddeeff";
const LIVE_KEY: &str = "fr_live_0123456789abcdef0123456789abcdef";
pub(crate) const OTHER_KEY: &str = "fr_test_ffeeddccbbaa99887766554433221100";
/// Well-formed, never bound.
const UNKNOWN_KEY: &str = "fr_test_99999999999999999999999999999999";

pub(crate) fn models_dir() -> String {
    std::env::var("LIVEGATE_MODELS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models").to_owned())
}

pub(crate) fn sample(name: &str) -> Vec<u8> {
    let path = format!("{}/samples/{name}", models_dir());
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

pub(crate) fn png(img: image::RgbImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// A uniform grey 640x480 PNG: no face.
pub(crate) fn blank() -> Vec<u8> {
    png(image::RgbImage::from_pixel(
        640,
        480,
        image::Rgb([128, 128, 128]),
    ))
}

/// The real sample (EXIF-oriented) twice side by side, lossless: two faces.
fn two_faces() -> Vec<u8> {
    let real = livegate_engine::Engine::decode(&sample("real.jpg")).expect("decode");
    let (w, h) = real.dimensions();
    let mut img = image::RgbImage::new(w * 2, h);
    image::imageops::replace(&mut img, &real, 0, 0);
    image::imageops::replace(&mut img, &real, i64::from(w), 0);
    png(img)
}

/// An isolated face store with the migrations applied; Postgres as in `harness::open_store`.
async fn face_store(backend: Backend) -> Option<Arc<dyn FaceStore>> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir()
                .join(format!("livegate-faces-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let url = format!("sqlite:{}", dir.join("f.db").display());
            let s = SqliteStore::connect(&url).await.expect("sqlite");
            s.migrate().await.expect("migrate");
            Some(Arc::new(s))
        }
        Backend::Postgres => {
            let schema = format!("lg_faces_{}", uuid::Uuid::new_v4().simple());
            match PgStore::connect_in_schema(&postgres_url(), &schema).await {
                Ok(s) => {
                    s.migrate().await.expect("migrate");
                    Some(Arc::new(s))
                }
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
                    None
                }
                Err(e) => panic!("Postgres is required under CI: {e}"),
            }
        }
    }
}

/// The collections server on a port-0 listener, with collections `selfies` (keys `KEY`,
/// `LIVE_KEY`) and `others` (`OTHER_KEY`).
pub struct Srv {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) store: Arc<dyn FaceStore>,
}

impl Srv {
    pub(crate) async fn start(backend: Backend) -> Option<Srv> {
        Self::start_with(backend, ServerOptions::default()).await
    }

    async fn start_with(backend: Backend, opts: ServerOptions) -> Option<Srv> {
        let store = face_store(backend).await?;
        Some(Self::start_on(store, opts).await)
    }

    /// On a store the caller opened (collections `selfies` and `others` with the test keys).
    pub(crate) async fn start_on(store: Arc<dyn FaceStore>, opts: ServerOptions) -> Srv {
        for (collection, key, mode) in [
            ("selfies", KEY, KeyMode::Test),
            ("selfies", LIVE_KEY, KeyMode::Live),
            ("others", OTHER_KEY, KeyMode::Test),
        ] {
            store
                .create_collection(collection)
                .await
                .expect("collection");
            // A second server on the same store finds the keys bound already.
            match store.bind_key(collection, &hash_key(key), mode).await {
                Ok(()) | Err(FaceStoreError::Conflict(_)) => {}
                Err(e) => panic!("bind: {e}"),
            }
        }
        let engine = livegate::runtime::engine::engine(std::path::Path::new(&models_dir()))
            .unwrap_or_else(|e| panic!("{e} (set LIVEGATE_MODELS_DIR)"));
        let app = router(engine, store.clone(), opts);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Srv {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store,
        }
    }

    pub(crate) async fn form(
        &self,
        key: Option<&str>,
        path: &str,
        image: Option<Vec<u8>>,
        fields: &[(&str, &str)],
    ) -> Reply {
        let mut form = reqwest::multipart::Form::new();
        if let Some(bytes) = image {
            form = form.part(
                "image",
                reqwest::multipart::Part::bytes(bytes).file_name("photo.jpg"),
            );
        }
        for (k, v) in fields {
            form = form.text(k.to_string(), v.to_string());
        }
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .multipart(form);
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        Harness::reply(req.send().await.expect("send")).await
    }

    async fn liveness(&self, image: Vec<u8>, fields: &[(&str, &str)]) -> Reply {
        self.form(
            Some(KEY),
            "/api/v1/collections/selfies/liveness",
            Some(image),
            fields,
        )
        .await
    }

    pub(crate) async fn enroll(
        &self,
        key: &str,
        collection: &str,
        image: Vec<u8>,
        fields: &[(&str, &str)],
    ) -> Reply {
        self.form(
            Some(key),
            &format!("/api/v1/collections/{collection}/faces"),
            Some(image),
            fields,
        )
        .await
    }

    async fn call(&self, method: reqwest::Method, key: Option<&str>, path: &str) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("X-API-Key", k);
        }
        Harness::reply(req.send().await.expect("send")).await
    }

    async fn get(&self, key: &str, path: &str) -> Reply {
        self.call(reqwest::Method::GET, Some(key), path).await
    }

    pub(crate) async fn delete(&self, key: &str, path: &str) -> Reply {
        self.call(reqwest::Method::DELETE, Some(key), path).await
    }
}

/// The documented error envelope, with the request id also in `X-Request-Id`.
#[track_caller]
pub(crate) fn assert_error(r: &Reply, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    let b = &r.body;
    assert_eq!(b["success"], false, "{b}");
    assert_eq!(b["error"]["code"], code, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{b}"
    );
    let rid = b["request_id"].as_str().expect("request_id");
    assert!(uuid::Uuid::parse_str(rid).is_ok(), "{rid}");
    assert_eq!(
        r.headers.get("x-request-id").and_then(|v| v.to_str().ok()),
        Some(rid)
    );
    let ts = b["timestamp"].as_str().expect("timestamp");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert_eq!(
        b.as_object().map(|o| o.len()),
        Some(4),
        "only success, error, request_id, timestamp: {b}"
    );
}

fn score(r: &Reply) -> f64 {
    r.body["data"]["liveness_score"]
        .as_f64()
        .unwrap_or_else(|| panic!("no score: {}", r.body))
}

crate::backend_matrix!(
    backend;
    liveness_on_the_samples,
    liveness_threshold_field,
    liveness_no_face_and_two_faces,
    image_validation,
    api_keys,
    enroll_get_delete,
    enroll_rejections,
    list_paging_and_isolation,
    unknown_routes,
    overload_is_a_503_envelope,
    face_store_conformance,
    collections_tenant_matches_embedded_tenant,
);

async fn liveness_on_the_samples(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let r = s.liveness(sample("real.jpg"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["success"], true);
    let d = &r.body["data"];
    let mut keys: Vec<&str> = d
        .as_object()
        .expect("data")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "face",
            "faces_detected",
            "is_live",
            "liveness_score",
            "query_time_ms",
            "spoof_type"
        ]
    );
    assert_eq!(d["is_live"], true);
    assert!(score(&r) >= 0.9, "{d}");
    assert_eq!(d["spoof_type"], Value::Null);
    assert!(d["query_time_ms"].is_u64(), "{d}");
    assert_eq!(d["faces_detected"], 1);
    let bbox = d["face"]["bbox"].as_array().expect("bbox");
    assert_eq!(bbox.len(), 4);
    let c: Vec<f64> = bbox.iter().filter_map(Value::as_f64).collect();
    assert!(c[0] < c[2] && c[1] < c[3], "{c:?}");
    assert!(d["face"]["confidence"].as_f64().is_some_and(|c| c > 0.5));
    assert_eq!(r.body.as_object().map(|o| o.len()), Some(2), "{}", r.body);

    // Both key modes serve the collection.
    let r = s
        .form(
            Some(LIVE_KEY),
            "/api/v1/collections/selfies/liveness",
            Some(sample("real.jpg")),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    for file in ["spoof_print.jpg", "spoof_replay.jpg"] {
        let r = s.liveness(sample(file), &[]).await;
        assert_eq!(r.status, 200, "{file}: {}", r.body);
        let d = &r.body["data"];
        assert_eq!(d["is_live"], false, "{file}");
        assert!(score(&r) <= 0.1, "{file}: {d}");
        // The engine does not tell attack kinds apart; the adapter maps "unknown" as is.
        assert_eq!(d["spoof_type"], "unknown", "{file}");
        assert_eq!(d["faces_detected"], 1, "{file}");
    }
}

async fn liveness_threshold_field(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    // A spoof passes a threshold of 0: is_live follows the request's threshold, and the
    // engine's own attack verdict stays in spoof_type.
    let r = s
        .liveness(sample("spoof_print.jpg"), &[("liveness_threshold", "0")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["is_live"], true);
    assert_eq!(r.body["data"]["spoof_type"], "unknown");

    let r = s
        .liveness(sample("real.jpg"), &[("liveness_threshold", "1.0")])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["is_live"], score(&r) >= 1.0);

    let r = s
        .liveness(sample("real.jpg"), &[("liveness_threshold", "0.6")])
        .await;
    assert_eq!(r.body["data"]["is_live"], true);

    for bad in ["1.5", "-0.1", "abc", "NaN"] {
        let r = s
            .liveness(sample("real.jpg"), &[("liveness_threshold", bad)])
            .await;
        assert_error(&r, 400, "VALIDATION_ERROR");
    }
}

async fn liveness_no_face_and_two_faces(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let r = s.liveness(blank(), &[]).await;
    assert_error(&r, 422, "FACE_NOT_DETECTED");

    // Several faces: the largest is scored, as the in-process engine does (see the README).
    let r = s.liveness(two_faces(), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["faces_detected"], 2);
    assert!(score(&r) >= 0.5, "{}", r.body);
    assert_eq!(
        r.body["data"]["face"]["bbox"].as_array().map(Vec::len),
        Some(4)
    );
}

async fn image_validation(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    for (what, bytes) in [
        ("webp", encode(200, 200, 1, image::ImageFormat::WebP)),
        ("tiff", encode(200, 200, 1, image::ImageFormat::Tiff)),
        ("gif", b"GIF89a not an accepted format".to_vec()),
        (
            "broken jpeg",
            b"\xff\xd8\xff\xe0 not really a jpeg".to_vec(),
        ),
        ("99 wide", encode(99, 300, 1, image::ImageFormat::Png)),
        ("99 high", encode(300, 99, 1, image::ImageFormat::Jpeg)),
    ] {
        let r = s.liveness(bytes.clone(), &[]).await;
        assert_error(&r, 400, "INVALID_IMAGE");
        assert!(
            !r.body["error"]["message"].as_str().unwrap_or("").is_empty(),
            "{what}"
        );
        let r = s.enroll(KEY, "selfies", bytes, &[]).await;
        assert_error(&r, 400, "INVALID_IMAGE");
    }
    let r = s
        .liveness(encode(99, 300, 1, image::ImageFormat::Png), &[])
        .await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("99x300")),
        "{}",
        r.body
    );
    // 100x100 is the documented minimum: accepted (no face in it).
    let r = s
        .liveness(encode(100, 100, 1, image::ImageFormat::Png), &[])
        .await;
    assert_error(&r, 422, "FACE_NOT_DETECTED");

    // Over 10 MB (binary reading): 413, on both upload routes.
    let mut big = vec![0u8; 10 * 1024 * 1024 + 1];
    big[..3].copy_from_slice(b"\xff\xd8\xff");
    let r = s.liveness(big.clone(), &[]).await;
    assert_error(&r, 413, "FILE_TOO_LARGE");
    let r = s.enroll(KEY, "selfies", big, &[]).await;
    assert_error(&r, 413, "FILE_TOO_LARGE");

    // No image field; not multipart at all.
    let r = s
        .form(
            Some(KEY),
            "/api/v1/collections/selfies/liveness",
            None,
            &[("liveness_threshold", "0.5")],
        )
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let r = s
        .form(Some(KEY), "/api/v1/collections/selfies/faces", None, &[])
        .await;
    assert_error(&r, 400, "VALIDATION_ERROR");
    let resp = Harness::call(
        s.client
            .post(format!("{}/api/v1/collections/selfies/liveness", s.base))
            .header("X-API-Key", KEY)
            .json(&json!({"image": "x"})),
    )
    .await;
    assert_error(&resp, 400, "VALIDATION_ERROR");
}

async fn api_keys(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let face = uuid::Uuid::now_v7();
    let routes: Vec<(reqwest::Method, String)> = vec![
        (
            reqwest::Method::POST,
            "/api/v1/collections/selfies/liveness".into(),
        ),
        (
            reqwest::Method::POST,
            "/api/v1/collections/selfies/faces".into(),
        ),
        (
            reqwest::Method::GET,
            "/api/v1/collections/selfies/faces".into(),
        ),
        (
            reqwest::Method::GET,
            format!("/api/v1/collections/selfies/faces/{face}"),
        ),
        (
            reqwest::Method::DELETE,
            format!("/api/v1/collections/selfies/faces/{face}"),
        ),
    ];
    let bad_keys = [
        None,
        Some(""),
        Some("fr_test_123"),
        Some("fr_prod_00112233445566778899aabbccddeeff"),
        Some("fr_test_00112233445566778899AABBCCDDEEFF"),
        Some("lg_test_acme_key_0123456789"),
        Some(UNKNOWN_KEY),
    ];
    for (method, path) in &routes {
        for key in bad_keys {
            // No body at all: the key is checked before the request is read.
            let r = s.call(method.clone(), key, path).await;
            assert_error(&r, 401, "INVALID_API_KEY");
            assert_eq!(
                r.body["error"]["message"], "Invalid or missing API key.",
                "{method} {path} {key:?}"
            );
        }
        // A valid key of another collection.
        let r = s.call(method.clone(), Some(OTHER_KEY), path).await;
        assert_error(&r, 401, "INVALID_API_KEY");
        assert_eq!(
            r.body["error"]["message"],
            "The API key is not valid for this collection."
        );
    }
    // A collection nobody has a key for.
    let r = s
        .form(
            Some(KEY),
            "/api/v1/collections/nobody/liveness",
            Some(sample("real.jpg")),
            &[],
        )
        .await;
    assert_error(&r, 401, "INVALID_API_KEY");
    // A refused key's upload is read to its end and dropped before the 401, so even a large
    // body gets the answer rather than a reset connection.
    let mut big = vec![0u8; 6 * 1024 * 1024];
    big[..3].copy_from_slice(b"\xff\xd8\xff");
    let r = s
        .form(
            Some(UNKNOWN_KEY),
            "/api/v1/collections/selfies/liveness",
            Some(big.clone()),
            &[],
        )
        .await;
    assert_error(&r, 401, "INVALID_API_KEY");
    let resp = Harness::call(
        s.client
            .post(format!("{}/api/v1/collections/selfies/faces", s.base))
            .header("X-API-Key", OTHER_KEY)
            .body(big),
    )
    .await;
    assert_error(&resp, 401, "INVALID_API_KEY");
    // With an image too: still 401, and nothing enrolled.
    let r = s
        .enroll(UNKNOWN_KEY, "selfies", sample("real.jpg"), &[])
        .await;
    assert_error(&r, 401, "INVALID_API_KEY");
    let page = FacePage {
        limit: 10,
        after: None,
    };
    assert!(
        s.store
            .list_faces("selfies", &page)
            .await
            .expect("list")
            .is_empty()
    );
}

async fn enroll_get_delete(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("real.jpg"),
            &[
                ("external_id", "user_123"),
                ("metadata", r#"{"name":"Ada","tier":2}"#),
            ],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["success"], true);
    let f = r.body["data"].clone();
    let id = f["face_id"].as_str().expect("face_id").to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).map(|u| u.get_version_num()).ok(),
        Some(7)
    );
    assert_eq!(f["collection_id"], "selfies");
    assert_eq!(f["external_id"], "user_123");
    assert_eq!(f["metadata"], json!({"name": "Ada", "tier": 2}));
    assert!(
        f["liveness_score"].as_f64().is_some_and(|v| v >= 0.9),
        "{f}"
    );
    assert_eq!(f["face"]["bbox"].as_array().map(Vec::len), Some(4));
    assert!(
        f["quality"]
            .as_f64()
            .is_some_and(|q| (0.0..=1.0).contains(&q))
    );
    assert!(f["created_at"].as_str().is_some());

    // Stored as answered; the image itself is not, its hash is.
    let path = format!("/api/v1/collections/selfies/faces/{id}");
    let r = s.get(KEY, &path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"], f);
    let rec = s
        .store
        .get_face("selfies", uuid::Uuid::parse_str(&id).expect("uuid"))
        .await
        .expect("row");
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(sample("real.jpg")));
    assert_eq!(rec.image_sha256, sha);
    // The face's embedding is kept in place of the image.
    assert_eq!(rec.embedding.map(|v| v.len()), Some(128));

    // The external id is unique in the collection, not across collections.
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("real.jpg"),
            &[("external_id", "user_123")],
        )
        .await;
    assert_error(&r, 409, "DUPLICATE_EXTERNAL_ID");
    let r = s
        .enroll(
            OTHER_KEY,
            "others",
            sample("real.jpg"),
            &[("external_id", "user_123")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let others_id = r.body["data"]["face_id"].as_str().expect("id").to_owned();

    // Another collection's face is not found through this one, even by id.
    let r = s
        .get(
            KEY,
            &format!("/api/v1/collections/selfies/faces/{others_id}"),
        )
        .await;
    assert_error(&r, 404, "FACE_NOT_FOUND");
    let r = s
        .delete(
            KEY,
            &format!("/api/v1/collections/selfies/faces/{others_id}"),
        )
        .await;
    assert_error(&r, 404, "FACE_NOT_FOUND");

    let r = s.delete(KEY, &path).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"], json!({"face_id": id, "deleted": true}));
    assert_error(&s.get(KEY, &path).await, 404, "FACE_NOT_FOUND");
    assert_error(&s.delete(KEY, &path).await, 404, "FACE_NOT_FOUND");
    for bad in ["not-a-uuid", "123"] {
        let p = format!("/api/v1/collections/selfies/faces/{bad}");
        assert_error(&s.get(KEY, &p).await, 404, "FACE_NOT_FOUND");
        assert_error(&s.delete(KEY, &p).await, 404, "FACE_NOT_FOUND");
    }

    // A deleted face frees its external id.
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("real.jpg"),
            &[("external_id", "user_123")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    // The other collection still has its face.
    let r = s
        .get(
            OTHER_KEY,
            &format!("/api/v1/collections/others/faces/{others_id}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Erasure of a subject takes its enrolled face, embedding and all; only in this
    // collection, and again is a no-op.
    let subject = "/api/v1/collections/selfies/subjects/user_123";
    let r = s.delete(KEY, subject).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"], json!({"deleted": 1}));
    let r = s.delete(KEY, subject).await;
    assert_eq!(r.body["data"], json!({"deleted": 0}), "{}", r.body);
    assert!(
        s.store
            .face_by_external_id("selfies", "user_123")
            .await
            .is_err()
    );
    assert!(
        s.store
            .face_by_external_id("others", "user_123")
            .await
            .is_ok()
    );
    let r = s
        .delete(OTHER_KEY, "/api/v1/collections/selfies/subjects/user_123")
        .await;
    assert!(
        r.status == 401 || r.status == 403 || r.status == 404,
        "{}",
        r.body
    );
}

async fn enroll_rejections(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    // Liveness is checked by default: a spoof is refused...
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("spoof_print.jpg"),
            &[("external_id", "p1")],
        )
        .await;
    assert_error(&r, 422, "LIVENESS_CHECK_FAILED");
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("spoof_replay.jpg"),
            &[("check_liveness", "true")],
        )
        .await;
    assert_error(&r, 422, "LIVENESS_CHECK_FAILED");
    // ... unless the check is skipped, or the threshold lowered.
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("spoof_print.jpg"),
            &[("external_id", "p1"), ("check_liveness", "false")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(score(&r) <= 0.1, "{}", r.body);
    let r = s
        .enroll(
            KEY,
            "selfies",
            sample("spoof_replay.jpg"),
            &[("liveness_threshold", "0")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    let r = s.enroll(KEY, "selfies", blank(), &[]).await;
    assert_error(&r, 422, "FACE_NOT_DETECTED");
    let r = s.enroll(KEY, "selfies", two_faces(), &[]).await;
    assert_error(&r, 422, "MULTIPLE_FACES");

    let long_id = "x".repeat(256);
    for fields in [
        vec![("metadata", "[1, 2]")],
        vec![("metadata", "{not json")],
        vec![("metadata", "\"text\"")],
        vec![("check_liveness", "maybe")],
        vec![("liveness_threshold", "2")],
        vec![("external_id", long_id.as_str())],
    ] {
        let r = s.enroll(KEY, "selfies", sample("real.jpg"), &fields).await;
        assert_error(&r, 400, "VALIDATION_ERROR");
    }

    // Only the two accepted enrollments were stored.
    let r = s.get(KEY, "/api/v1/collections/selfies/faces").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["data"]["faces"].as_array().map(Vec::len), Some(2));
}

async fn list_paging_and_isolation(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    let mut ids = Vec::new();
    // Two without an external id: NULLs never conflict.
    for ext in [Some("a"), None, None] {
        let fields: Vec<(&str, &str)> = ext.map(|e| ("external_id", e)).into_iter().collect();
        let r = s.enroll(KEY, "selfies", sample("real.jpg"), &fields).await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["data"]["face_id"].as_str().expect("id").to_owned());
    }
    let r = s.enroll(OTHER_KEY, "others", sample("real.jpg"), &[]).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let listed = |r: &Reply| -> Vec<String> {
        r.body["data"]["faces"]
            .as_array()
            .expect("faces")
            .iter()
            .map(|f| f["face_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let r = s.get(KEY, "/api/v1/collections/selfies/faces").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(listed(&r), ids, "oldest first, this collection only");
    assert_eq!(r.body["data"]["next_cursor"], Value::Null);

    let r = s
        .get(KEY, "/api/v1/collections/selfies/faces?limit=2")
        .await;
    assert_eq!(listed(&r), ids[..2]);
    let cursor = r.body["data"]["next_cursor"]
        .as_str()
        .expect("next_cursor")
        .to_owned();
    assert_eq!(cursor, ids[1]);
    let r = s
        .get(
            KEY,
            &format!("/api/v1/collections/selfies/faces?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(listed(&r), ids[2..]);
    assert_eq!(r.body["data"]["next_cursor"], Value::Null);

    let r = s.get(OTHER_KEY, "/api/v1/collections/others/faces").await;
    assert_eq!(listed(&r).len(), 1);

    for q in ["limit=0", "limit=101", "limit=abc", "cursor=nope"] {
        let r = s
            .get(KEY, &format!("/api/v1/collections/selfies/faces?{q}"))
            .await;
        assert_error(&r, 400, "VALIDATION_ERROR");
    }
}

async fn unknown_routes(backend: Backend) {
    let Some(s) = Srv::start(backend).await else {
        return;
    };
    for path in [
        "/",
        "/nope",
        "/api/v1/collections/selfies",
        "/api/v1/comparisons",
    ] {
        let r = s.get(KEY, path).await;
        assert_error(&r, 404, "NOT_FOUND");
    }
    for path in ["/api/v1/collections/selfies/liveness", "/api/v1/compare"] {
        let r = s.get(KEY, path).await;
        assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    }
    let r = s
        .call(
            reqwest::Method::PUT,
            Some(KEY),
            "/api/v1/collections/selfies/faces",
        )
        .await;
    assert_error(&r, 405, "METHOD_NOT_ALLOWED");
    let r = s.call(reqwest::Method::GET, None, "/healthz").await;
    assert_eq!((r.status, r.body.clone()), (200, json!({"status": "ok"})));
}

async fn overload_is_a_503_envelope(backend: Backend) {
    // One worker and no queue: concurrent checks beyond the first may be refused at once.
    let opts = ServerOptions {
        workers: 1,
        max_queue: 0,
        ..ServerOptions::default()
    };
    let Some(s) = Srv::start_with(backend, opts).await else {
        return;
    };
    let s = Arc::new(s);
    // Collected first, so that all are in flight before the first is awaited.
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { s.liveness(sample("real.jpg"), &[]).await })
        })
        .collect();
    let mut ok = 0;
    let mut refused = 0;
    for c in calls {
        let r = c.await.expect("join");
        if r.status == 200 {
            ok += 1;
        } else {
            assert_error(&r, 503, "SERVICE_UNAVAILABLE");
            refused += 1;
        }
    }
    eprintln!("overload: {ok} answered, {refused} refused");
    assert!(ok >= 1);
}

async fn face_store_conformance(backend: Backend) {
    let Some(store) = face_store(backend).await else {
        return;
    };
    let a = store.create_collection("a").await.expect("create");
    let again = store.create_collection("a").await.expect("create again");
    assert_eq!(a, again, "creating is idempotent");
    store.create_collection("b").await.expect("create b");

    assert!(matches!(
        store.bind_key("missing", "h0", KeyMode::Live).await,
        Err(FaceStoreError::NotFound)
    ));
    store
        .bind_key("a", "h1", KeyMode::Live)
        .await
        .expect("bind");
    assert!(matches!(
        store.bind_key("b", "h1", KeyMode::Test).await,
        Err(FaceStoreError::Conflict(_))
    ));
    let k = store.collection_for_key("h1").await.expect("lookup");
    assert_eq!(
        k.map(|k| (k.collection_id, k.mode)),
        Some(("a".to_owned(), KeyMode::Live))
    );
    assert_eq!(store.collection_for_key("h2").await.expect("lookup"), None);

    let face = |collection: &str, external_id: Option<&str>| FaceRecord {
        id: uuid::Uuid::now_v7(),
        collection_id: collection.to_owned(),
        external_id: external_id.map(str::to_owned),
        metadata: Some(json!({"k": [1, "two", null], "nested": {"x": 1.5}})),
        liveness_score: Some(0.93),
        bbox: [1.25, 2.5, 100.75, 120.0],
        confidence: 0.97,
        quality: Some(0.8),
        image_sha256: "ab".repeat(32),
        embedding: None,
        created_at: chrono::SubsecRound::trunc_subsecs(chrono::Utc::now(), 6),
    };
    // An embedding (the identity issue's column) survives the round trip on both backends.
    let mut f1 = face("a", Some("u1"));
    f1.embedding = Some((0..128).map(|i| i as f32 / 7.0 - 9.0).collect());
    store.insert_face(&f1).await.expect("insert");
    assert_eq!(store.get_face("a", f1.id).await.expect("get"), f1);
    assert_eq!(
        store.face_by_external_id("a", "u1").await.expect("by ext"),
        f1
    );
    assert!(matches!(
        store.face_by_external_id("b", "u1").await,
        Err(FaceStoreError::NotFound)
    ));

    assert!(matches!(
        store.insert_face(&face("a", Some("u1"))).await,
        Err(FaceStoreError::Conflict(_))
    ));
    let mut f2 = face("a", None);
    f2.metadata = None;
    f2.liveness_score = None;
    f2.quality = None;
    let f3 = face("a", None);
    let fb = face("b", Some("u1"));
    for f in [&f2, &f3, &fb] {
        store.insert_face(f).await.expect("insert");
    }
    let page = |limit, after| FacePage { limit, after };
    let all = store.list_faces("a", &page(10, None)).await.expect("list");
    assert_eq!(all, vec![f1.clone(), f2.clone(), f3.clone()]);
    let rest = store
        .list_faces("a", &page(10, Some(f1.id)))
        .await
        .expect("list");
    assert_eq!(rest, vec![f2.clone(), f3.clone()]);
    let one = store.list_faces("a", &page(1, None)).await.expect("list");
    assert_eq!(one, vec![f1.clone()]);

    assert!(matches!(
        store.get_face("b", f1.id).await,
        Err(FaceStoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_face("b", f1.id).await,
        Err(FaceStoreError::NotFound)
    ));
    store.delete_face("a", f1.id).await.expect("delete");
    assert!(matches!(
        store.delete_face("a", f1.id).await,
        Err(FaceStoreError::NotFound)
    ));
    assert!(matches!(
        store.get_face("a", f1.id).await,
        Err(FaceStoreError::NotFound)
    ));
    assert_eq!(
        store.get_face("b", fb.id).await.expect("b's face stays"),
        fb
    );
}

/// The done-when check: two tenants of one gateway, one routed with `kind: collections` to
/// this server, one with `kind: embedded`, get the same verdicts.
async fn collections_tenant_matches_embedded_tenant(backend: Backend) {
    let Some(srv) = Srv::start(backend).await else {
        return;
    };
    let Some(gateway_store) = open_store(backend).await else {
        return;
    };
    const HTTP_TENANT_KEY: &str = "lg_test_engine_over_http_0001";
    const LOCAL_TENANT_KEY: &str = "lg_test_engine_in_process_02";
    let yaml = format!(
        r#"
providers:
  over_http: {{ kind: collections, base_url: "{base}", api_key: "${{TEST_ENGINE_KEY}}", collection_id: "selfies", timeout_ms: 60000 }}
  in_process: {{ kind: embedded, models_dir: "{models}" }}
tenants:
  http_t:
    keys: ["{http_key}"]
    threshold: 0.6
    routing: {{ strategy: single, providers: [over_http] }}
  local_t:
    keys: ["{local_key}"]
    threshold: 0.6
    routing: {{ strategy: single, providers: [in_process] }}
"#,
        base = srv.base,
        models = models_dir(),
        http_key = KeyHash::of_key(HTTP_TENANT_KEY),
        local_key = KeyHash::of_key(LOCAL_TENANT_KEY),
    );
    let config = Config::parse(&yaml, &|name| {
        (name == "TEST_ENGINE_KEY").then(|| KEY.to_owned())
    })
    .expect("config");
    let runtime =
        Runtime::build(config, Some(&livegate::runtime::engine::factory)).expect("runtime");
    let state = AppState::new(runtime, gateway_store);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let app = gateway_router(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let client = reqwest::Client::new();
    let check = |key: &'static str, image: Vec<u8>| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let resp = crate::harness::post_selfie(&client, &base, key, image, "selfie").await;
            Harness::reply(resp).await
        }
    };
    let codes = |b: &Value| -> Vec<String> {
        let mut c: Vec<String> = b["warnings"]
            .as_array()
            .expect("warnings")
            .iter()
            .map(|w| w["code"].as_str().unwrap_or_default().to_owned())
            .collect();
        c.sort();
        c
    };

    let cases = [
        ("real.jpg", sample("real.jpg"), "approved"),
        ("spoof_print.jpg", sample("spoof_print.jpg"), "declined"),
        ("spoof_replay.jpg", sample("spoof_replay.jpg"), "declined"),
        ("blank", blank(), "declined"),
        ("two faces", two_faces(), ""),
    ];
    for (what, image, expected) in cases {
        let over_http = check(HTTP_TENANT_KEY, image.clone()).await;
        let local = check(LOCAL_TENANT_KEY, image).await;
        assert_eq!(over_http.status, 200, "{what}: {}", over_http.body);
        assert_eq!(local.status, 200, "{what}: {}", local.body);
        let (h, l) = (&over_http.body, &local.body);
        eprintln!("{what}: over http {h}\n{what}: in process {l}");
        assert_eq!(h["provider"], "over_http", "{what}");
        assert_eq!(l["provider"], "in_process", "{what}");
        assert_eq!(h["decision"], l["decision"], "{what}");
        if !expected.is_empty() {
            assert_eq!(l["decision"], expected, "{what}");
        }
        match (h["score"].as_f64(), l["score"].as_f64()) {
            (Some(a), Some(b)) => assert!((a - b).abs() <= 1e-6, "{what}: {a} vs {b}"),
            (None, None) => {}
            other => panic!("{what}: scores {other:?}"),
        }
        assert_eq!(h["spoof_type"], l["spoof_type"], "{what}");
        assert_eq!(h["faces_detected"], l["faces_detected"], "{what}");
        assert_eq!(codes(h), codes(l), "{what}");
        assert_eq!(h["is_live"], l["is_live"], "{what}");
    }
}

// ---- the CLI ---------------------------------------------------------------------------

fn livegate(db: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"));
    c.env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .env("LIVEGATE_MODELS_DIR", models_dir())
        .env("LIVEGATE_LOG", "warn");
    c
}

fn new_key(db: &std::path::Path, args: &[&str]) -> std::process::Output {
    livegate(db)
        .args(["engine", "keys", "new"])
        .args(args)
        .output()
        .expect("run livegate")
}

fn printed_key(out: &std::process::Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key printed: {stdout}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_keys_new_and_serve() {
    let dir = std::env::temp_dir().join(format!(
        "livegate-engine-cli-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("e.db");

    let out = new_key(&db, &["--collection", "selfies", "--test"]);
    assert!(out.status.success(), "{out:?}");
    let test_key = printed_key(&out);
    assert_eq!(
        livegate_engine::server::key_mode(&test_key),
        Some(KeyMode::Test)
    );
    // Default mode is live; a second key for the same collection is fine.
    let out = new_key(&db, &["--collection", "selfies"]);
    assert!(out.status.success(), "{out:?}");
    let live_key = printed_key(&out);
    assert_eq!(
        livegate_engine::server::key_mode(&live_key),
        Some(KeyMode::Live)
    );
    let out = new_key(&db, &["--collection", "selfies", "--live"]);
    assert!(out.status.success(), "{out:?}");
    // Only hashes are stored.
    let raw = std::fs::read(&db).expect("db");
    for k in [&test_key, &live_key] {
        let needle = k.as_bytes();
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "plain key in the database"
        );
    }
    for bad in [
        vec!["--collection", "a/b"],
        vec!["--collection", ""],
        vec!["--collection", "x", "--live", "--test"],
    ] {
        let out = new_key(&db, &bad);
        assert!(!out.status.success(), "{bad:?}: {out:?}");
    }

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let child = livegate(&db)
        .args(["engine", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let _guard = Kill(child);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "engine serve did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for key in [&test_key, &live_key] {
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(sample("real.jpg")).file_name("real.jpg"),
        );
        let resp = reqwest::Client::new()
            .post(format!("{base}/api/v1/collections/selfies/liveness"))
            .header("X-API-Key", key.as_str())
            .multipart(form)
            .send()
            .await
            .expect("send");
        let r = Harness::reply(resp).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["data"]["is_live"], true);
    }
}
