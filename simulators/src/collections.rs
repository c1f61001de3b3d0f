//! The self-hosted collections engine: the standalone liveness check
//! (`POST /api/v1/collections/{id}/liveness`, here), enrollment (`enrollment.rs`) and face
//! matching (`matching.rs`) over the faces kept in memory (`gallery.rs`).
//!
//! Every error is the engine's envelope
//! `{"success": false, "error": {"code", "message"}, "request_id", "timestamp"}`.

mod enrollment;
mod gallery;
mod matching;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::json;

use crate::control::{self, CommonRespond, Rule, Sim, VendorRespond, finish, json_response};
use crate::faces::{self, Bbox};
use crate::inbound::{self, FormError, Format, Inbound, Upload};

const IMAGE_FIELD: &str = "image";
const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
const MIN_SIDE: u32 = 100;
const DEFAULT_THRESHOLD: f64 = 0.6;

/// Error codes with their statuses: the documented ones, then the simulator's own choices for
/// cases the documents leave open (bad form, unsupported image, oversized file).
const CODES: &[(&str, u16, &str)] = &[
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
    ("VALIDATION_ERROR", 400, "The request is invalid."),
    ("INVALID_IMAGE", 400, "The image is invalid."),
    (
        "FILE_TOO_LARGE",
        413,
        "The image exceeds the maximum size of 10 MB.",
    ),
    (
        "SERVICE_UNAVAILABLE",
        503,
        "The service is temporarily unavailable.",
    ),
];

fn code_info(code: &str) -> Option<(u16, &'static str)> {
    CODES
        .iter()
        .find(|(known, _, _)| *known == code)
        .map(|(_, status, message)| (*status, *message))
}

/// The code a bare `status` rule answers with.
fn code_for_status(status: u16) -> &'static str {
    match status {
        400 => "VALIDATION_ERROR",
        401 => "INVALID_API_KEY",
        403 => "IP_NOT_ALLOWED",
        404 => "FACE_NOT_FOUND",
        409 => "DUPLICATE_EXTERNAL_ID",
        413 => "FILE_TOO_LARGE",
        422 => "FACE_NOT_DETECTED",
        429 => "RATE_LIMIT_EXCEEDED",
        500 => "INTERNAL_ERROR",
        501..=599 => "SERVICE_UNAVAILABLE",
        _ => "BAD_REQUEST",
    }
}

/// The collections engine's `respond` fields (see README.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CollectionsRespond {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_message: Option<String>,
    #[serde(default)]
    query_time_ms: Option<u64>,
    #[serde(default)]
    is_live: Option<bool>,
    #[serde(default)]
    multiple_faces_ok: bool,
    /// Identify, verify, compare: the similarity of every pair of faces compared, instead of
    /// the one the image hashes give.
    #[serde(default)]
    similarity: Option<f64>,
}

impl VendorRespond for CollectionsRespond {
    fn check(&self, common: &CommonRespond) -> Result<(), String> {
        if let Some(similarity) = self.similarity
            && !(similarity.is_finite() && (-1.0..=1.0).contains(&similarity))
        {
            return Err(format!(
                "similarity must be within -1..=1, got {similarity}"
            ));
        }
        let Some(code) = &self.error_code else {
            return Ok(());
        };
        if common.success_status().is_some() {
            return Err(format!("error_code {code} cannot go with a 2xx status"));
        }
        if code_info(code).is_none() && common.status.is_none() {
            return Err(format!(
                "error_code {code} is not one the simulator knows; give its status too"
            ));
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Engine {
    sim: Arc<Sim<CollectionsRespond>>,
    /// Key → the collection it was first used with; a key serves one collection.
    bindings: Arc<Mutex<HashMap<String, String>>>,
    gallery: Arc<gallery::Gallery>,
}

/// A fresh collections-engine simulator with its own rules, request log, key bindings and
/// enrolled faces.
pub fn router() -> Router {
    let sim = Sim::<CollectionsRespond>::new();
    let engine = Engine {
        sim: Arc::clone(&sim),
        bindings: Arc::default(),
        gallery: Arc::default(),
    };
    Router::new()
        .route("/api/v1/collections/{id}/liveness", post(liveness))
        .route("/api/v1/collections/{id}/faces", post(enrollment::enroll))
        .route(
            "/api/v1/collections/{id}/faces/batch",
            post(enrollment::enroll_batch),
        )
        .route(
            "/api/v1/collections/{id}/identify",
            post(matching::identify),
        )
        .route("/api/v1/collections/{id}/verify", post(matching::verify))
        .route("/api/v1/compare", post(matching::compare))
        .layer(DefaultBodyLimit::max(inbound::TRANSPORT_LIMIT))
        .with_state(engine)
        .merge(control::router(sim))
}

async fn liveness(
    State(engine): State<Engine>,
    Path(collection): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    collection_route(&engine, &collection, &inbound, answer).await
}

/// What a route of one collection answers once the request is admitted ([`admit`]).
type Answer = fn(&Engine, &str, &Inbound, &Rule<CollectionsRespond>) -> Result<Response, Refusal>;

/// The frame of a route of one collection with one image: the rule the image matches, a
/// scripted answer or the key and form checks, the route's own answer (or its refusal), and
/// the rule's delay and headers.
async fn collection_route(
    engine: &Engine,
    collection: &str,
    inbound: &Inbound,
    answer: Answer,
) -> Response {
    let rule = engine.sim.intake(inbound).await;
    let response = match admit(engine, inbound, &rule, Some(collection)) {
        Ok(Some(scripted)) => scripted,
        Ok(None) => {
            answer(engine, collection, inbound, &rule).unwrap_or_else(Refusal::into_response)
        }
        Err(refusal) => refusal.into_response(),
    };
    finish(&rule, response)
}

/// What every route checks first, in this order: a scripted answer (`Some`), the key (bound
/// to `collection` when one is given) and the form's transport errors.
fn admit(
    engine: &Engine,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
    collection: Option<&str>,
) -> Result<Option<Response>, Refusal> {
    if let Some(response) = scripted(rule) {
        return Ok(Some(response));
    }
    engine.check_key(inbound, collection)?;
    check_form(inbound)?;
    Ok(None)
}

/// `fr_live_` or `fr_test_` and 32 lowercase hex digits.
fn well_formed_key(key: &str) -> bool {
    let Some(secret) = key
        .strip_prefix("fr_live_")
        .or_else(|| key.strip_prefix("fr_test_"))
    else {
        return false;
    };
    secret.len() == 32
        && secret
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Engine {
    /// Binds a new key to `collection`; false when the key belongs to another one.
    fn authorize(&self, key: &str, collection: &str) -> bool {
        let mut bindings = self.bindings.lock().unwrap_or_else(PoisonError::into_inner);
        bindings
            .entry(key.to_owned())
            .or_insert_with(|| collection.to_owned())
            == collection
    }

    /// The key check of every route: well formed and, for a route under a collection, bound to
    /// it. `/api/v1/compare` names no collection, so any well-formed key passes there.
    fn check_key(&self, inbound: &Inbound, collection: Option<&str>) -> Result<(), Refusal> {
        match inbound.header("x-api-key") {
            Some(key) if well_formed_key(key) => match collection {
                Some(collection) if !self.authorize(key, collection) => Err(Refusal::with_status(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_API_KEY",
                    "The API key is not valid for this collection.",
                )),
                _ => Ok(()),
            },
            _ => Err(Refusal::with_status(
                StatusCode::UNAUTHORIZED,
                "INVALID_API_KEY",
                "Invalid or missing API key.",
            )),
        }
    }
}

/// An error answer before it becomes the envelope: batch enrollment reports it per image.
#[derive(Debug, Clone)]
struct Refusal {
    status: StatusCode,
    code: String,
    message: String,
}

impl Refusal {
    /// A known code at its status (400 for a code the table lacks).
    fn new(code: &str, message: impl Into<String>) -> Refusal {
        let status =
            code_info(code).map_or(StatusCode::BAD_REQUEST, |(s, _)| control::status_code(s));
        Refusal::with_status(status, code, message)
    }

    fn with_status(status: StatusCode, code: &str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn validation(message: impl Into<String>) -> Refusal {
        Refusal::new("VALIDATION_ERROR", message)
    }

    /// `{"code", "message"}`, the `error` object of the envelope and of a batch result.
    fn error_json(&self) -> serde_json::Value {
        json!({ "code": self.code, "message": self.message })
    }

    fn into_response(self) -> Response {
        error(self.status, &self.code, &self.message)
    }
}

/// The verbatim `body` or the error a rule asks for; these win over everything the request
/// itself would cause (README: order of evaluation).
fn scripted(rule: &Rule<CollectionsRespond>) -> Option<Response> {
    control::override_response(rule).or_else(|| rule_error(rule).map(Refusal::into_response))
}

/// The form could not be read at all.
fn check_form(inbound: &Inbound) -> Result<(), Refusal> {
    match &inbound.form_error {
        Some(FormError::NotMultipart(_)) => Err(Refusal::validation(
            "The request must be multipart/form-data.",
        )),
        Some(FormError::Malformed(reason)) => Err(Refusal::validation(format!(
            "The multipart body could not be read: {reason}"
        ))),
        Some(FormError::TooLarge) => Err(too_large()),
        None => Ok(()),
    }
}

fn too_large() -> Refusal {
    Refusal::new(
        "FILE_TOO_LARGE",
        "The image exceeds the maximum size of 10 MB.",
    )
}

/// The documented image rules (JPEG or PNG, at least 100x100, up to 10 MB); the image's
/// width and height when it passes.
fn check_image(image: &Upload) -> Result<(u32, u32), Refusal> {
    if image.bytes.len() > MAX_IMAGE_BYTES {
        return Err(too_large());
    }
    match inbound::sniff(&image.bytes) {
        Some(Format::Jpeg | Format::Png) => {}
        _ => {
            return Err(Refusal::new(
                "INVALID_IMAGE",
                "Unsupported image format; use JPEG or PNG.",
            ));
        }
    }
    let Some((width, height)) = inbound::dimensions(&image.bytes) else {
        return Err(Refusal::new(
            "INVALID_IMAGE",
            "The image could not be decoded.",
        ));
    };
    if width < MIN_SIDE || height < MIN_SIDE {
        return Err(Refusal::new(
            "INVALID_IMAGE",
            format!(
                "The image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}."
            ),
        ));
    }
    Ok((width, height))
}

/// The file part `field`, required.
fn required_file<'a>(inbound: &'a Inbound, field: &str) -> Result<&'a Upload, Refusal> {
    inbound
        .file(field)
        .ok_or_else(|| Refusal::validation(format!("The {field} field is required.")))
}

/// A text field, trimmed; blank counts as absent, as a form server reads it.
fn text<'a>(inbound: &'a Inbound, name: &str) -> Option<&'a str> {
    inbound.field(name).map(str::trim).filter(|v| !v.is_empty())
}

fn liveness_threshold(inbound: &Inbound) -> Result<f64, Refusal> {
    match inbound.field("liveness_threshold") {
        None => Ok(DEFAULT_THRESHOLD),
        Some(text) => match text.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
            _ => Err(Refusal::validation(
                "liveness_threshold must be a number between 0 and 1.",
            )),
        },
    }
}

/// What the simulated engine finds in one image: from the image's hash, unless the rule that
/// applies to the image says otherwise.
#[derive(Debug, Clone, Copy)]
struct Analysis {
    faces: u32,
    score: f64,
    /// The largest face.
    bbox: Bbox,
    confidence: f64,
    quality: f64,
}

fn analyze(rule: &Rule<CollectionsRespond>, image: &Upload, dims: (u32, u32)) -> Analysis {
    let common = &rule.common;
    let seed = image.seed;
    Analysis {
        faces: common.face_count(),
        score: common
            .score
            .unwrap_or_else(|| round4(common.liveness(&seed))),
        bbox: common.bbox.unwrap_or_else(|| faces::default_bbox(dims)),
        confidence: round4(0.9 + 0.0999 * seed.unit(8)),
        quality: round4(0.6 + 0.39 * seed.unit(12)),
    }
}

impl Analysis {
    /// The `face` object of the engine's answers.
    fn face_json(&self) -> serde_json::Value {
        json!({ "bbox": self.bbox, "confidence": self.confidence })
    }
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn query_time_ms(rule: &Rule<CollectionsRespond>, image: &Upload) -> u64 {
    rule.vendor
        .query_time_ms
        .unwrap_or_else(|| 10 + u64::from(image.seed.byte(28) % 20))
}

/// The success envelope, at the rule's 2xx status or `status`.
fn success(
    rule: &Rule<CollectionsRespond>,
    status: StatusCode,
    data: serde_json::Value,
) -> Response {
    let body = json!({ "success": true, "data": data });
    json_response(rule.common.success_status().unwrap_or(status), &body)
}

/// The liveness check of an admitted request (the key already named the collection).
fn answer(
    _engine: &Engine,
    _collection: &str,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
) -> Result<Response, Refusal> {
    let image = required_file(inbound, IMAGE_FIELD)?;
    let dims = check_image(image)?;
    let threshold = liveness_threshold(inbound)?;

    let engine_rule = &rule.vendor;
    let found = analyze(rule, image, dims);
    if found.faces == 0 {
        return Err(no_face());
    }
    if found.faces > 1 && !engine_rule.multiple_faces_ok {
        return Err(multiple_faces());
    }
    let data = json!({
        "is_live": engine_rule.is_live.unwrap_or(found.score >= threshold),
        "liveness_score": found.score,
        "spoof_type": rule.common.spoof_type.map(control::SpoofType::as_str),
        "query_time_ms": query_time_ms(rule, image),
    });
    Ok(success(rule, StatusCode::OK, data))
}

fn no_face() -> Refusal {
    Refusal::new("FACE_NOT_DETECTED", "No face detected in the image.")
}

fn multiple_faces() -> Refusal {
    Refusal::new(
        "MULTIPLE_FACES",
        "Multiple faces detected in the image; exactly one face is required.",
    )
}

/// The error a rule asks for through `error_code` and/or a non-2xx `status`.
fn rule_error(rule: &Rule<CollectionsRespond>) -> Option<Refusal> {
    let (common, engine_rule) = (&rule.common, &rule.vendor);
    let status = common.error_status();
    let (status, code) = match (&engine_rule.error_code, status) {
        (None, None) => return None,
        (Some(code), Some(status)) => (status, code.as_str()),
        (Some(code), None) => {
            let status = code_info(code).map_or(StatusCode::INTERNAL_SERVER_ERROR, |(s, _)| {
                control::status_code(s)
            });
            (status, code.as_str())
        }
        (None, Some(status)) => (status, code_for_status(status.as_u16())),
    };
    let message = engine_rule.error_message.clone().unwrap_or_else(|| {
        code_info(code).map_or_else(
            || status.canonical_reason().unwrap_or("Error").to_owned(),
            |(_, message)| message.to_owned(),
        )
    });
    Some(Refusal::with_status(status, code, message))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "success": false,
        "error": { "code": code, "message": message },
        "request_id": uuid::Uuid::new_v4().to_string(),
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    });
    json_response(status, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_format() {
        assert!(well_formed_key("fr_live_0123456789abcdef0123456789abcdef"));
        assert!(well_formed_key("fr_test_0123456789abcdef0123456789abcdef"));
        assert!(!well_formed_key("fr_live_0123456789ABCDEF0123456789abcdef"));
        assert!(!well_formed_key("fr_prod_0123456789abcdef0123456789abcdef"));
        assert!(!well_formed_key("fr_live_0123456789abcdef0123456789abcde"));
        assert!(!well_formed_key(""));
    }

    #[test]
    fn bare_statuses_map_to_codes_of_that_status() {
        for status in [400, 401, 403, 404, 409, 413, 422, 429, 500, 503] {
            let code = code_for_status(status);
            assert_eq!(code_info(code).map(|(s, _)| s), Some(status), "{code}");
        }
    }
}
