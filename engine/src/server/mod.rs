//! The collections HTTP API on the built-in engine (`livegate engine serve`): the self-hosted
//! face API of the `collections-engine-liveness` seed, which livegate's `kind: collections`
//! provider speaks.
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/collections/{id}/liveness` | standalone liveness check |
//! | `POST /api/v1/collections/{id}/faces` | enroll a face (liveness checked by default) |
//! | `GET /api/v1/collections/{id}/faces` | list enrolled faces, paged |
//! | `GET /api/v1/collections/{id}/faces/{face_id}` | one face |
//! | `DELETE /api/v1/collections/{id}/faces/{face_id}` | delete a face |
//! | `POST /api/v1/collections/{id}/faces/batch` | enroll several faces (partial success) |
//! | `POST /api/v1/collections/{id}/identify` | the enrolled faces most like the image's |
//! | `POST /api/v1/collections/{id}/verify` | is the image's face this enrolled face? |
//! | `POST /api/v1/compare` | are the faces of two images the same person? |
//! | `GET /healthz` | liveness of the server itself (no key) |
//!
//! Every `/api` route needs `X-API-Key: fr_(live|test)_<32 hex>` bound to the collection in
//! the path (`/api/v1/compare` has no collection: any valid key). Errors use the documented
//! envelope ([`ApiError`]). Enrolled faces keep their embedding, never the image.

mod error;
mod identity;
mod index;
mod keys;
mod store;

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::multipart::MultipartError;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use bytes::{Bytes, BytesMut};
use chrono::{SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::search::IndexOptions;
use crate::{Analysis, Engine, FaceEmbedding, Warning};

pub use error::{ApiError, REQUEST_ID_HEADER};
pub use keys::{KeyMode, format_key, hash_key, key_mode};
pub use store::{
    Collection, CollectionKey, FacePage, FaceRecord, FaceStore, FaceStoreError, FaceStoreResult,
    embedding_from_bytes, embedding_to_bytes,
};

/// "up to 10 MB": the binary reading, so that anything a client sized by either reading
/// (livegate's adapter uses the stricter 10,000,000) is accepted.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;

/// Room for the multipart framing and the text fields around the image.
const FORM_OVERHEAD_BYTES: usize = 256 * 1024;

/// Cap on one text field (`metadata` is the only long one).
const MAX_TEXT_FIELD_BYTES: usize = 64 * 1024;

/// Longest accepted `external_id`.
const MAX_EXTERNAL_ID_CHARS: usize = 255;

/// `threshold` of identify, verify and compare when a request sends none: the engine's
/// calibrated [`crate::MATCH_THRESHOLD`]. The documented default of 0.55 belongs to another
/// model's scale; on dlib's embeddings different people already score about 0.85.
pub const DEFAULT_MATCH_THRESHOLD: f64 = 0.93;

/// Settings of the collections server. Every field has a documented default
/// ([`ServerOptions::default`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerOptions {
    /// `liveness_threshold` when a request sends none. Default 0.6, as documented.
    pub default_threshold: f64,
    /// Largest accepted image. Default [`DEFAULT_MAX_IMAGE_BYTES`].
    pub max_image_bytes: usize,
    /// Smallest accepted width and height. Default 100, as documented.
    pub min_side: u32,
    /// Inferences running at once. Default: the number of cores.
    pub workers: usize,
    /// Requests allowed to wait for a worker; one more is answered 503. Default 64.
    pub max_queue: usize,
    /// Page size of the face list when `limit` is not given. Default 20.
    pub default_page_size: u32,
    /// Largest accepted `limit`. Default 100.
    pub max_page_size: u32,
    /// `threshold` of identify, verify and compare when a request sends none. Default
    /// [`DEFAULT_MATCH_THRESHOLD`].
    pub match_threshold: f64,
    /// Most images in one `faces/batch` request. Default 20.
    pub max_batch: usize,
    /// When a collection's search switches from an exact scan to the HNSW graph, and the
    /// graph's tuning. Default [`IndexOptions::default`].
    pub index: IndexOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            default_threshold: 0.6,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            min_side: 100,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_queue: 64,
            default_page_size: 20,
            max_page_size: 100,
            match_threshold: DEFAULT_MATCH_THRESHOLD,
            max_batch: 20,
            index: IndexOptions::default(),
        }
    }
}

/// True for ids `keys new` accepts: 1-128 of ASCII letters, digits, `_`, `-`, `.`, not `.`
/// or `..`. Any id would survive the URL (livegate's adapter percent-encodes it), but ids
/// that need no encoding are easier to type, log and query.
pub fn valid_collection_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// The collections API on `engine`, storing through `store`. Serve it with `axum::serve`.
pub fn router(engine: Engine, store: Arc<dyn FaceStore>, opts: ServerOptions) -> Router {
    let workers = opts.workers.max(1);
    let body_limit = opts.max_image_bytes.saturating_add(FORM_OVERHEAD_BYTES);
    let pair_limit = opts
        .max_image_bytes
        .saturating_mul(2)
        .saturating_add(FORM_OVERHEAD_BYTES);
    let batch_limit = opts
        .max_image_bytes
        .saturating_mul(opts.max_batch.max(1))
        .saturating_add(FORM_OVERHEAD_BYTES);
    let state = Arc::new(AppState {
        engine,
        store,
        limiter: Limiter::new(workers, opts.max_queue),
        indexes: index::Indexes::new(opts.index),
        opts: ServerOptions { workers, ..opts },
        body_limit,
    });
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/collections/{id}/liveness", post(liveness))
        .route(
            "/api/v1/collections/{id}/faces",
            post(enroll).get(list_faces),
        )
        .route(
            "/api/v1/collections/{id}/faces/{face_id}",
            get(get_face).delete(delete_face),
        )
        .route(
            "/api/v1/collections/{id}/subjects/{external_id}",
            axum::routing::delete(erase_subject),
        )
        .route(
            "/api/v1/collections/{id}/faces/batch",
            post(identity::enroll_batch).layer(DefaultBodyLimit::max(batch_limit)),
        )
        .route(
            "/api/v1/collections/{id}/identify",
            post(identity::identify),
        )
        .route("/api/v1/collections/{id}/verify", post(identity::verify))
        .route(
            "/api/v1/compare",
            post(identity::compare).layer(DefaultBodyLimit::max(pair_limit)),
        )
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(error::envelope))
        .with_state(state)
}

struct AppState {
    engine: Engine,
    store: Arc<dyn FaceStore>,
    limiter: Limiter,
    /// Each collection's search index, loaded from the store on first use.
    indexes: index::Indexes,
    opts: ServerOptions,
    /// The whole request body's cap: the image cap plus room for the form around it.
    body_limit: usize,
}

type Shared = State<Arc<AppState>>;

// ---- inference admission ---------------------------------------------------------------

/// At most `workers` inferences at once, at most `max_queue` more waiting; beyond that a
/// request is refused at once, so a burst costs a 503 rather than unbounded memory.
struct Limiter {
    running: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    limit: usize,
}

/// Releases an admission slot however the request ends (including a dropped connection).
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Limiter {
    fn new(workers: usize, max_queue: usize) -> Limiter {
        Limiter {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(AtomicUsize::new(0)),
            limit: workers.saturating_add(max_queue),
        }
    }

    fn admit(&self) -> Result<Admission, ApiError> {
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(ApiError::unavailable(format!(
                "The liveness engine is busy ({} checks in progress or queued); retry shortly.",
                self.limit
            )));
        }
        Ok(Admission(Arc::clone(&self.admitted)))
    }
}

impl AppState {
    /// Decodes (EXIF orientation applied) and analyzes on the blocking pool; returns the
    /// analysis and the milliseconds it took (the wait for a worker is not counted).
    async fn analyze(&self, image: Bytes) -> Result<(Analysis, u64), ApiError> {
        self.run_engine(image, false)
            .await
            .map(|(a, _, ms)| (a, ms))
    }

    /// [`AppState::analyze`] plus the embedding of the scored face.
    async fn analyze_and_embed(
        &self,
        image: Bytes,
    ) -> Result<(Analysis, Option<FaceEmbedding>, u64), ApiError> {
        self.run_engine(image, true).await
    }

    async fn run_engine(
        &self,
        image: Bytes,
        embed: bool,
    ) -> Result<(Analysis, Option<FaceEmbedding>, u64), ApiError> {
        let _admission = self.limiter.admit()?;
        let _permit = Arc::clone(&self.limiter.running)
            .acquire_owned()
            .await
            .map_err(|_| ApiError::unavailable("The liveness engine is shutting down."))?;
        let engine = self.engine.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let img = Engine::decode_with_limit(&image, engine.options().max_pixels)?;
            let (analysis, embedding) = if embed {
                engine.analyze_and_embed(&img)?
            } else {
                (engine.analyze(&img)?, None)
            };
            let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            Ok::<_, crate::EngineError>((analysis, embedding, ms))
        })
        .await
        .map_err(|e| ApiError::internal(format!("engine task failed: {e}")))?;
        joined.map_err(|e| {
            if e.is_input_error() {
                ApiError::invalid_image(format!("The image could not be decoded: {e}."))
            } else {
                ApiError::internal(e)
            }
        })
    }

    /// The form of an upload route, once the key is accepted; a refused key's body is
    /// discarded unread (see [`discard`]), so no unauthenticated image is ever decoded.
    async fn authorized_form(&self, collection_id: &str, req: Request) -> Result<Form, ApiError> {
        if let Err(e) = self.authorize(req.headers(), collection_id).await {
            discard(req, self.body_limit).await;
            return Err(e);
        }
        read_form(req, self.opts.max_image_bytes, self.body_limit).await
    }

    /// The key's collection must be the one in the path; every failure is the same 401
    /// family, so a caller cannot probe which collections exist.
    async fn authorize(&self, headers: &HeaderMap, collection_id: &str) -> Result<(), ApiError> {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::invalid_key)?;
        if key_mode(key).is_none() {
            return Err(ApiError::invalid_key());
        }
        match self.store.collection_for_key(&hash_key(key)).await? {
            Some(k) if k.collection_id == collection_id => Ok(()),
            Some(_) => Err(ApiError::key_not_for_collection()),
            None => Err(ApiError::invalid_key()),
        }
    }
}

impl AppState {
    /// Any valid key (for `/api/v1/compare`, which names no collection).
    async fn authorize_any(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(ApiError::invalid_key)?;
        if key_mode(key).is_none() {
            return Err(ApiError::invalid_key());
        }
        match self.store.collection_for_key(&hash_key(key)).await? {
            Some(_) => Ok(()),
            None => Err(ApiError::invalid_key()),
        }
    }
}

// ---- request parsing -------------------------------------------------------------------

/// Fields read as files (bytes up to the image cap); every other field is UTF-8 text.
/// `images` may repeat (batch enrollment); the others may appear once.
const FILE_FIELDS: [&str; 4] = ["image", "image_a", "image_b", "images"];

#[derive(Default)]
struct Form {
    image: Option<Bytes>,
    /// File fields other than `image`, in the order sent.
    files: Vec<(String, Bytes)>,
    fields: HashMap<String, String>,
}

impl Form {
    fn text(&self, name: &str) -> Option<&str> {
        self.fields
            .get(name)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
    }
}

fn multipart_error(e: &MultipartError, max_image_bytes: usize) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(max_image_bytes)
    } else {
        ApiError::validation(format!(
            "The multipart body could not be read: {}",
            e.body_text()
        ))
    }
}

/// Reads the body to its end and drops it. An answer sent while the client is still uploading
/// makes the server close the connection, and the client then sees a broken pipe instead of the
/// answer (livegate's adapter would report a transport failure, not the refused key). Bounded
/// by the body limit, and nothing is kept: multipart bodies are discarded chunk by chunk.
async fn discard(req: Request, body_limit: usize) {
    if is_multipart(&req) {
        if let Ok(mut mp) = Multipart::from_request(req, &()).await {
            drain(&mut mp).await;
        }
    } else {
        let _ = axum::body::to_bytes(req.into_body(), body_limit).await;
    }
}

/// Discards the rest of a multipart body (see [`discard`]); stops at the first read error.
async fn drain(mp: &mut Multipart) {
    while let Ok(Some(mut field)) = mp.next_field().await {
        while let Ok(Some(_)) = field.chunk().await {}
    }
}

fn is_multipart(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// Reads the whole form: `image` with the image cap (a 413 as soon as it is passed), text
/// fields with a small cap. Unknown fields are read and ignored, as a form server would. On an
/// error the rest of the body is discarded before answering (see [`discard`]).
async fn read_form(
    req: Request,
    max_image_bytes: usize,
    body_limit: usize,
) -> Result<Form, ApiError> {
    let not_multipart = || ApiError::validation("The request must be multipart/form-data.");
    if !is_multipart(&req) {
        discard(req, body_limit).await;
        return Err(not_multipart());
    }
    let mut mp = Multipart::from_request(req, &())
        .await
        .map_err(|_| not_multipart())?;
    match read_fields(&mut mp, max_image_bytes).await {
        Ok(form) => Ok(form),
        Err(e) => {
            drain(&mut mp).await;
            Err(e)
        }
    }
}

async fn read_fields(mp: &mut Multipart, max_image_bytes: usize) -> Result<Form, ApiError> {
    let mut form = Form::default();
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(&e, max_image_bytes)),
        };
        let name = field.name().unwrap_or_default().to_owned();
        let is_image = FILE_FIELDS.contains(&name.as_str());
        let repeated = match name.as_str() {
            "image" => form.image.is_some(),
            "images" => false,
            other => form.files.iter().any(|(n, _)| n == other),
        };
        if is_image && repeated {
            return Err(ApiError::validation(format!(
                "Send exactly one {name} field."
            )));
        }
        let cap = if is_image {
            max_image_bytes
        } else {
            MAX_TEXT_FIELD_BYTES
        };
        let mut buf = BytesMut::new();
        loop {
            match field.chunk().await {
                Ok(Some(chunk)) => {
                    if buf.len().saturating_add(chunk.len()) > cap {
                        return Err(if is_image {
                            ApiError::too_large(max_image_bytes)
                        } else {
                            ApiError::validation(format!(
                                "The field {name} exceeds {MAX_TEXT_FIELD_BYTES} bytes."
                            ))
                        });
                    }
                    buf.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => return Err(multipart_error(&e, max_image_bytes)),
            }
        }
        if name == "image" {
            form.image = Some(buf.freeze());
        } else if is_image {
            form.files.push((name, buf.freeze()));
        } else {
            let text = String::from_utf8(buf.to_vec()).map_err(|_| {
                ApiError::validation(format!("The field {name} must be UTF-8 text."))
            })?;
            form.fields.insert(name, text);
        }
    }
    Ok(form)
}

fn threshold(form: &Form, default: f64) -> Result<f64, ApiError> {
    match form.text("liveness_threshold") {
        None => Ok(default),
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|t| (0.0..=1.0).contains(t))
            .ok_or_else(|| {
                ApiError::validation("liveness_threshold must be a number between 0 and 1.")
            }),
    }
}

fn flag(form: &Form, name: &str, default: bool) -> Result<bool, ApiError> {
    match form.text(name).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(ApiError::validation(format!(
            "{name} must be true or false."
        ))),
    }
}

/// The documented image rules, checked on the bytes and the header before any decoding work:
/// JPEG or PNG by magic number, a readable header, both sides at least `min_side`.
fn check_image(bytes: &[u8], min_side: u32) -> Result<(), ApiError> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (image::ImageFormat::Jpeg | image::ImageFormat::Png)) => f,
        _ => {
            return Err(ApiError::invalid_image(
                "Unsupported image format; use JPEG or PNG.",
            ));
        }
    };
    let (w, h) = image::ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|_| ApiError::invalid_image("The image could not be decoded."))?;
    if w < min_side || h < min_side {
        return Err(ApiError::invalid_image(format!(
            "The image must be at least {min_side}x{min_side} pixels, got {w}x{h}."
        )));
    }
    Ok(())
}

/// A box coordinate in pixels with two decimals: the f32 digits beyond carry no information and
/// would show as widened-f64 noise in the JSON.
fn px(v: f32) -> f64 {
    (f64::from(v) * 100.0).round() / 100.0
}

fn path_error(_: PathRejection) -> ApiError {
    ApiError::validation("The URL path could not be read.")
}

// ---- handlers --------------------------------------------------------------------------

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("No route for {method} {}.", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not allowed on {}.", uri.path()),
    )
}

/// `POST /api/v1/collections/{id}/liveness`.
///
/// No face is a 422 `FACE_NOT_DETECTED`, as documented. Several faces are NOT the
/// documented 422 `MULTIPLE_FACES`: the largest face is scored and `faces_detected` says how
/// many there were, exactly what the in-process engine reports, so that a tenant gets the
/// same verdict through this server as through `kind: embedded` (the seed does not forbid a
/// scored answer; livegate's adapter turns `faces_detected > 1` into
/// `MULTIPLE_FACES_DETECTED`).
async fn liveness(
    State(st): Shared,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(collection_id) = path.map_err(path_error)?;
    let form = st.authorized_form(&collection_id, req).await?;
    let threshold = threshold(&form, st.opts.default_threshold)?;
    let image = form
        .image
        .ok_or_else(|| ApiError::validation("The image field is required."))?;
    check_image(&image, st.opts.min_side)?;
    let (analysis, query_time_ms) = st.analyze(image).await?;
    let Some(face) = analysis.face() else {
        return Err(ApiError::face_not_detected());
    };
    // The engine scores every face it keeps; no score means the crops fell outside the image.
    let Some(score) = analysis.score else {
        return Err(ApiError::quality_too_low(
            "The face is too close to the image border to be checked.",
        ));
    };
    let score = f64::from(score);
    let data = json!({
        "is_live": score >= threshold,
        "liveness_score": score,
        // The engine's attack verdict (score below its attack threshold), independent of
        // `liveness_threshold`; it names no attack kind, so it says "unknown".
        "spoof_type": analysis.spoof_type.map(|s| s.as_str()),
        "query_time_ms": query_time_ms,
        "face": {"bbox": face.bbox.map(px), "confidence": f64::from(face.confidence)},
        "faces_detected": analysis.face_count,
    });
    Ok(Json(json!({"success": true, "data": data})).into_response())
}

/// What one enrollment carries besides the image.
struct Enrollment {
    external_id: Option<String>,
    metadata: Option<Value>,
    check_liveness: bool,
    threshold: f64,
}

fn external_id(raw: Option<&str>) -> Result<Option<String>, ApiError> {
    match raw {
        Some(e) if e.chars().count() > MAX_EXTERNAL_ID_CHARS => Err(ApiError::validation(format!(
            "external_id must be at most {MAX_EXTERNAL_ID_CHARS} characters."
        ))),
        other => Ok(other.map(str::to_owned)),
    }
}

fn metadata_object(raw: Option<&str>) -> Result<Option<Value>, ApiError> {
    match raw {
        None => Ok(None),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err(ApiError::validation("metadata must be a JSON object.")),
        },
    }
}

/// `POST /api/v1/collections/{id}/faces`: enrollment needs exactly one usable face, and by
/// default a live one.
async fn enroll(
    State(st): Shared,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(collection_id) = path.map_err(path_error)?;
    let form = st.authorized_form(&collection_id, req).await?;
    let enrollment = Enrollment {
        threshold: threshold(&form, st.opts.default_threshold)?,
        check_liveness: flag(&form, "check_liveness", true)?,
        external_id: external_id(form.text("external_id"))?,
        metadata: metadata_object(form.text("metadata"))?,
    };
    let image = form
        .image
        .ok_or_else(|| ApiError::validation("The image field is required."))?;
    let record = st.enroll_one(&collection_id, image, enrollment).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"success": true, "data": face_json(&record)})),
    )
        .into_response())
}

impl AppState {
    /// Checks, analyzes, embeds and stores one face; the search index follows.
    async fn enroll_one(
        &self,
        collection_id: &str,
        image: Bytes,
        e: Enrollment,
    ) -> Result<FaceRecord, ApiError> {
        check_image(&image, self.opts.min_side)?;
        // Checked before inference so a retried enrollment costs no CPU; the insert below
        // still catches a concurrent duplicate.
        if let Some(ext) = &e.external_id {
            match self.store.face_by_external_id(collection_id, ext).await {
                Ok(_) => return Err(ApiError::duplicate_external_id()),
                Err(FaceStoreError::NotFound) => {}
                Err(err) => return Err(err.into()),
            }
        }

        let image_sha256 = hex::encode(Sha256::digest(&image));
        let (analysis, embedding, _) = self.analyze_and_embed(image).await?;
        let face = match analysis.face_count {
            0 => return Err(ApiError::face_not_detected()),
            1 => analysis.face().cloned(),
            n => return Err(ApiError::multiple_faces(n)),
        };
        let (Some(face), Some(score)) = (face, analysis.score) else {
            return Err(ApiError::quality_too_low(
                "The face is too close to the image border to be checked.",
            ));
        };
        // An enrolled face is the reference for later matching: a blurry or tiny one is refused.
        if analysis.has_warning(Warning::LowFaceQuality) {
            return Err(ApiError::quality_too_low(format!(
                "Face quality is too low ({:.2}); use a sharper photo with a larger face.",
                analysis.quality.unwrap_or(0.0)
            )));
        }
        let Some(embedding) = embedding else {
            return Err(ApiError::quality_too_low(
                "The face's landmarks could not be aligned for matching.",
            ));
        };
        let score = f64::from(score);
        if e.check_liveness && score < e.threshold {
            return Err(ApiError::liveness_failed(score, e.threshold));
        }

        let record = FaceRecord {
            id: Uuid::now_v7(),
            collection_id: collection_id.to_owned(),
            external_id: e.external_id,
            metadata: e.metadata,
            liveness_score: Some(score),
            bbox: face.bbox.map(px),
            confidence: f64::from(face.confidence),
            quality: analysis.quality.map(f64::from),
            image_sha256,
            embedding: Some(embedding.vector),
            created_at: Utc::now().trunc_subsecs(6),
        };
        match self.store.insert_face(&record).await {
            Ok(()) => {}
            Err(FaceStoreError::Conflict(_)) => return Err(ApiError::duplicate_external_id()),
            Err(err) => return Err(err.into()),
        }
        if let Some(v) = &record.embedding {
            let database = self.store.vector_index();
            self.indexes
                .inserted(collection_id, record.id, v, database)
                .await;
        }
        tracing::info!(collection = %record.collection_id, face = %record.id, "face enrolled");
        Ok(record)
    }
}

fn face_json(f: &FaceRecord) -> Value {
    json!({
        "face_id": f.id,
        "collection_id": f.collection_id,
        "external_id": f.external_id,
        "metadata": f.metadata,
        "liveness_score": f.liveness_score,
        "face": {"bbox": f.bbox, "confidence": f.confidence},
        "quality": f.quality,
        // Faces enrolled before embeddings existed cannot be matched until re-enrolled.
        "has_embedding": f.embedding.is_some(),
        "created_at": f.created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
}

#[derive(Deserialize)]
struct ListParams {
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /api/v1/collections/{id}/faces?limit=N&cursor=FACE_ID`: oldest first; `next_cursor`
/// is the id to pass for the next page, `null` on the last one.
async fn list_faces(
    State(st): Shared,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(collection_id) = path.map_err(path_error)?;
    st.authorize(&headers, &collection_id).await?;
    let Query(params) =
        query.map_err(|_| ApiError::validation("The query string could not be read."))?;
    let max = st.opts.max_page_size;
    let limit = match params.limit.as_deref().map(str::trim) {
        None | Some("") => st.opts.default_page_size,
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::validation(format!("limit must be between 1 and {max}.")))?,
    };
    let after = match params.cursor.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => Some(
            Uuid::parse_str(s)
                .map_err(|_| ApiError::validation("cursor must be a face_id from next_cursor."))?,
        ),
    };
    // One more than asked tells whether another page exists without a count query.
    let mut faces = st
        .store
        .list_faces(
            &collection_id,
            &FacePage {
                limit: limit.saturating_add(1),
                after,
            },
        )
        .await?;
    let more = faces.len() > limit as usize;
    faces.truncate(limit as usize);
    let next_cursor = if more {
        faces.last().map(|f| f.id)
    } else {
        None
    };
    let data = json!({
        "faces": faces.iter().map(face_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    });
    Ok(Json(json!({"success": true, "data": data})).into_response())
}

/// An id that is not a UUID names no face: the same 404 as an unknown one.
fn face_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::face_not_found())
}

/// `GET /api/v1/collections/{id}/faces/{face_id}`.
async fn get_face(
    State(st): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((collection_id, raw_id)) = path.map_err(path_error)?;
    st.authorize(&headers, &collection_id).await?;
    let id = face_id(&raw_id)?;
    match st.store.get_face(&collection_id, id).await {
        Ok(f) => Ok(Json(json!({"success": true, "data": face_json(&f)})).into_response()),
        Err(FaceStoreError::NotFound) => Err(ApiError::face_not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/collections/{id}/faces/{face_id}`.
async fn delete_face(
    State(st): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((collection_id, raw_id)) = path.map_err(path_error)?;
    st.authorize(&headers, &collection_id).await?;
    let id = face_id(&raw_id)?;
    match st.store.delete_face(&collection_id, id).await {
        Ok(()) => {
            st.indexes.removed(&collection_id, id).await;
            tracing::info!(collection = %collection_id, face = %id, "face deleted");
            Ok(
                Json(json!({"success": true, "data": {"face_id": id, "deleted": true}}))
                    .into_response(),
            )
        }
        Err(FaceStoreError::NotFound) => Err(ApiError::face_not_found()),
        Err(e) => Err(e.into()),
    }
}

/// `DELETE /api/v1/collections/{id}/subjects/{external_id}`: erasure of a person's enrolled
/// face (embedding, metadata, image hash: the whole row). Idempotent: a subject with no face
/// answers `deleted: 0`.
async fn erase_subject(
    State(st): Shared,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Path((collection_id, external_id)) = path.map_err(path_error)?;
    st.authorize(&headers, &collection_id).await?;
    let deleted = match st
        .store
        .face_by_external_id(&collection_id, &external_id)
        .await
    {
        Ok(face) => match st.store.delete_face(&collection_id, face.id).await {
            Ok(()) => {
                st.indexes.removed(&collection_id, face.id).await;
                1
            }
            // Deleted by a concurrent request in between: erased either way.
            Err(FaceStoreError::NotFound) => 0,
            Err(e) => return Err(e.into()),
        },
        Err(FaceStoreError::NotFound) => 0,
        Err(e) => return Err(e.into()),
    };
    // The external id is personal data: not logged.
    tracing::info!(collection = %collection_id, deleted, "subject erased");
    Ok(Json(json!({"success": true, "data": {"deleted": deleted}})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_match_threshold_is_the_engines() {
        assert!((DEFAULT_MATCH_THRESHOLD - f64::from(crate::MATCH_THRESHOLD)).abs() < 1e-6);
    }

    #[test]
    fn collection_ids() {
        for ok in ["selfies", "team-a_1", "a.b", "x"] {
            assert!(valid_collection_id(ok), "{ok}");
        }
        let long = "a".repeat(129);
        for bad in ["", ".", "..", "a/b", "a b", "ü", long.as_str()] {
            assert!(!valid_collection_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn limiter_refuses_beyond_workers_plus_queue() {
        let l = Limiter::new(1, 1);
        let a = l.admit();
        let b = l.admit();
        assert!(a.is_ok() && b.is_ok());
        let refused = l.admit().err().map(|e| (e.status, e.code));
        assert_eq!(
            refused,
            Some((StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"))
        );
        drop(a);
        assert!(l.admit().is_ok());
    }

    #[test]
    fn form_values() {
        let mut form = Form::default();
        assert_eq!(threshold(&form, 0.6).ok(), Some(0.6));
        for (raw, want) in [("0.75", Some(0.75)), (" 1 ", Some(1.0)), ("0", Some(0.0))] {
            form.fields.insert("liveness_threshold".into(), raw.into());
            assert_eq!(threshold(&form, 0.6).ok(), want, "{raw}");
        }
        for raw in ["1.5", "-0.1", "abc", "NaN"] {
            form.fields.insert("liveness_threshold".into(), raw.into());
            assert!(threshold(&form, 0.6).is_err(), "{raw}");
        }
        assert_eq!(flag(&form, "check_liveness", true).ok(), Some(true));
        for (raw, want) in [
            ("false", false),
            ("TRUE", true),
            ("0", false),
            ("yes", true),
        ] {
            form.fields.insert("check_liveness".into(), raw.into());
            assert_eq!(
                flag(&form, "check_liveness", true).ok(),
                Some(want),
                "{raw}"
            );
        }
        form.fields.insert("check_liveness".into(), "maybe".into());
        assert!(flag(&form, "check_liveness", true).is_err());
    }

    #[test]
    fn image_rules() {
        let encode = |w: u32, h: u32, format: image::ImageFormat| {
            let img = image::RgbImage::from_pixel(w, h, image::Rgb([9, 9, 9]));
            let mut out = Cursor::new(Vec::new());
            let ok = image::DynamicImage::ImageRgb8(img)
                .write_to(&mut out, format)
                .is_ok();
            assert!(ok);
            out.into_inner()
        };
        assert!(check_image(&encode(100, 120, image::ImageFormat::Png), 100).is_ok());
        assert!(check_image(&encode(120, 100, image::ImageFormat::Jpeg), 100).is_ok());
        let code = |b: &[u8]| check_image(b, 100).err().map(|e| e.message);
        let small = code(&encode(99, 300, image::ImageFormat::Png));
        assert!(small.is_some_and(|m| m.contains("99x300")));
        let tiff = code(&encode(200, 200, image::ImageFormat::Tiff));
        assert!(tiff.is_some_and(|m| m.contains("JPEG or PNG")));
        let broken = code(b"\x89PNG\r\n\x1a\n not really");
        assert!(broken.is_some_and(|m| m.contains("decoded")));
    }
}
