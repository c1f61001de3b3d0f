//! The self-hosted collections engine's standalone liveness check:
//! `POST /api/v1/collections/{id}/liveness`.
//!
//! Every error is the engine's envelope
//! `{"success": false, "error": {"code", "message"}, "request_id", "timestamp"}`.

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
use crate::inbound::{self, FormError, Format, Inbound};

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
}

impl VendorRespond for CollectionsRespond {
    fn check(&self, common: &CommonRespond) -> Result<(), String> {
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
}

/// A fresh collections-engine simulator with its own rules, request log and key bindings.
pub fn router() -> Router {
    let sim = Sim::<CollectionsRespond>::new();
    let engine = Engine {
        sim: Arc::clone(&sim),
        bindings: Arc::default(),
    };
    Router::new()
        .route("/api/v1/collections/{id}/liveness", post(liveness))
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
    let rule = engine.sim.intake(&inbound).await;
    let response = answer(&engine, &collection, &inbound, &rule);
    finish(&rule, response)
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
}

fn answer(
    engine: &Engine,
    collection: &str,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
) -> Response {
    if let Some(response) = control::override_response(rule) {
        return response;
    }
    if let Some(response) = rule_error(rule) {
        return response;
    }
    match inbound.header("x-api-key") {
        Some(key) if well_formed_key(key) => {
            if !engine.authorize(key, collection) {
                return error(
                    StatusCode::UNAUTHORIZED,
                    "INVALID_API_KEY",
                    "The API key is not valid for this collection.",
                );
            }
        }
        _ => {
            return error(
                StatusCode::UNAUTHORIZED,
                "INVALID_API_KEY",
                "Invalid or missing API key.",
            );
        }
    }
    let invalid = |code: &str, message: &str| {
        let status =
            code_info(code).map_or(StatusCode::BAD_REQUEST, |(s, _)| control::status_code(s));
        error(status, code, message)
    };
    match &inbound.form_error {
        Some(FormError::NotMultipart(_)) => {
            return invalid(
                "VALIDATION_ERROR",
                "The request must be multipart/form-data.",
            );
        }
        Some(FormError::Malformed(reason)) => {
            return invalid(
                "VALIDATION_ERROR",
                &format!("The multipart body could not be read: {reason}"),
            );
        }
        Some(FormError::TooLarge) => {
            return invalid(
                "FILE_TOO_LARGE",
                "The image exceeds the maximum size of 10 MB.",
            );
        }
        None => {}
    }
    let Some(image) = inbound.image() else {
        return invalid("VALIDATION_ERROR", "The image field is required.");
    };
    if image.bytes.len() > MAX_IMAGE_BYTES {
        return invalid(
            "FILE_TOO_LARGE",
            "The image exceeds the maximum size of 10 MB.",
        );
    }
    match inbound::sniff(&image.bytes) {
        Some(Format::Jpeg | Format::Png) => {}
        _ => {
            return invalid(
                "INVALID_IMAGE",
                "Unsupported image format; use JPEG or PNG.",
            );
        }
    }
    let Some((width, height)) = inbound::dimensions(&image.bytes) else {
        return invalid("INVALID_IMAGE", "The image could not be decoded.");
    };
    if width < MIN_SIDE || height < MIN_SIDE {
        let message = format!(
            "The image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}."
        );
        return invalid("INVALID_IMAGE", &message);
    }
    let threshold = match inbound.field("liveness_threshold") {
        None => DEFAULT_THRESHOLD,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => value,
            _ => {
                return invalid(
                    "VALIDATION_ERROR",
                    "liveness_threshold must be a number between 0 and 1.",
                );
            }
        },
    };

    let (common, engine_rule) = (&rule.common, &rule.vendor);
    let faces = common.face_count();
    if faces == 0 {
        return invalid("FACE_NOT_DETECTED", "No face detected in the image.");
    }
    if faces > 1 && !engine_rule.multiple_faces_ok {
        return invalid(
            "MULTIPLE_FACES",
            "Multiple faces detected in the image; exactly one face is required.",
        );
    }
    let seed = image.seed;
    let score = match common.score {
        Some(score) => score,
        None => (common.liveness(&seed) * 10_000.0).round() / 10_000.0,
    };
    let body = json!({
        "success": true,
        "data": {
            "is_live": engine_rule.is_live.unwrap_or(score >= threshold),
            "liveness_score": score,
            "spoof_type": common.spoof_type.map(control::SpoofType::as_str),
            "query_time_ms": engine_rule
                .query_time_ms
                .unwrap_or_else(|| 10 + u64::from(seed.byte(28) % 20)),
        },
    });
    json_response(common.success_status().unwrap_or(StatusCode::OK), &body)
}

/// The error a rule asks for through `error_code` and/or a non-2xx `status`.
fn rule_error(rule: &Rule<CollectionsRespond>) -> Option<Response> {
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
    Some(error(status, code, &message))
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
