//! Kairos liveness verification: `POST /v0.1/liveness-verification` (older pages) and
//! `POST /v0.2/liveness-verification` (newer ones).
//!
//! Kairos documents no error bodies, so every error here is a small JSON object
//! `{"error": <code>, "message": <text>}` of this simulator's own making; clients must not
//! depend on it (a rule `body` can send anything else, an empty string included).

use std::sync::Arc;

use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::{self, CommonRespond, Rule, Sim, VendorRespond, finish, json_response};
use crate::faces;
use crate::inbound::{self, FormError, Inbound};

const IMAGE_FIELD: &str = "selfie";
/// The threshold of the documentation's own examples, used when a client sends none.
const DEFAULT_THRESHOLD: f64 = 0.6;
const TIMESTAMP: &str = "%Y-%m-%d %H:%M:%S";

/// Kairos's `respond` fields (see README.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KairosRespond {
    #[serde(default)]
    shape: Option<Shape>,
    #[serde(default)]
    omit_uid: bool,
    #[serde(default)]
    uid_field: Option<String>,
    #[serde(default)]
    response_code: Option<i64>,
    #[serde(default)]
    int_confidence: bool,
    #[serde(default)]
    http_status: Option<u16>,
    #[serde(default)]
    error_message: Option<String>,
}

impl VendorRespond for KairosRespond {
    fn check(&self, _common: &CommonRespond) -> Result<(), String> {
        match self.http_status {
            Some(status) if !(200..300).contains(&status) => Err(format!(
                "http_status is the success status (200 or 201), got {status}; use status for errors"
            )),
            _ => Ok(()),
        }
    }
}

/// Where the image size goes: `response_data.img {height, width}` or flat
/// `response_data.img_width` / `img_height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Shape {
    Img,
    Flat,
}

/// The documented API versions, which differ in the image sizes they accept.
#[derive(Debug, Clone, Copy)]
enum Version {
    V01,
    V02,
}

impl Version {
    /// Smallest width and height accepted.
    fn min_side(self) -> u32 {
        match self {
            Version::V01 => 480,
            Version::V02 => 300,
        }
    }

    /// Largest width and height accepted; the v0.1 pages give none.
    fn max_side(self) -> Option<u32> {
        match self {
            Version::V01 => None,
            Version::V02 => Some(5000),
        }
    }
}

/// A fresh Kairos simulator with its own rules and request log.
pub fn router() -> Router {
    let sim = Sim::<KairosRespond>::new();
    Router::new()
        .route("/v0.1/liveness-verification", post(verify_v01))
        .route("/v0.2/liveness-verification", post(verify_v02))
        .layer(DefaultBodyLimit::max(inbound::TRANSPORT_LIMIT))
        .with_state(Arc::clone(&sim))
        .merge(control::router(sim))
}

type KairosState = State<Arc<Sim<KairosRespond>>>;

async fn verify_v01(
    State(sim): KairosState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    verify(&sim, Version::V01, &inbound).await
}

async fn verify_v02(
    State(sim): KairosState,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    verify(&sim, Version::V02, &inbound).await
}

async fn verify(sim: &Sim<KairosRespond>, version: Version, inbound: &Inbound) -> Response {
    let rule = sim.intake(inbound).await;
    let response = answer(version, inbound, &rule);
    finish(&rule, response)
}

/// Either spelling of a credential header: code samples use `app_id`, the header table
/// `app-id`, and a client may mix them.
fn credential<'a>(inbound: &'a Inbound, underscored: &str, dashed: &str) -> Option<&'a str> {
    inbound
        .credential(underscored)
        .or_else(|| inbound.credential(dashed))
}

fn answer(version: Version, inbound: &Inbound, rule: &Rule<KairosRespond>) -> Response {
    if let Some(response) = control::override_response(rule) {
        return response;
    }
    if let Some(status) = rule.common.error_status() {
        return rule_error(status, rule);
    }
    let app_id = credential(inbound, "app_id", "app-id");
    let app_key = credential(inbound, "app_key", "app-key");
    if app_id.is_none() || app_key.is_none() {
        return error(
            StatusCode::UNAUTHORIZED,
            "missing_credentials",
            "The app_id and app_key headers are required.",
        );
    }
    match &inbound.form_error {
        Some(FormError::NotMultipart(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "The request must be multipart/form-data.",
            );
        }
        Some(FormError::Malformed(reason)) => {
            let message = format!("The multipart body could not be read: {reason}");
            return error(StatusCode::BAD_REQUEST, "invalid_request", &message);
        }
        Some(FormError::TooLarge) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "The request body is too large.",
            );
        }
        None => {}
    }
    let Some(selfie) = inbound.image() else {
        return error(
            StatusCode::BAD_REQUEST,
            "missing_selfie",
            "The selfie file is required.",
        );
    };
    let dims = inbound::sniff(&selfie.bytes).and(inbound::dimensions(&selfie.bytes));
    let Some((width, height)) = dims else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_image",
            "The selfie could not be read as an image.",
        );
    };
    let min = version.min_side();
    if width < min || height < min {
        let message =
            format!("The selfie must be at least {min}x{min} pixels, got {width}x{height}.");
        return error(StatusCode::BAD_REQUEST, "image_too_small", &message);
    }
    if let Some(max) = version.max_side()
        && (width > max || height > max)
    {
        let message =
            format!("The selfie must be at most {max}x{max} pixels, got {width}x{height}.");
        return error(StatusCode::BAD_REQUEST, "image_too_large", &message);
    }
    let threshold = match inbound.field("threshold") {
        None => DEFAULT_THRESHOLD,
        Some(text) => match text.trim().parse::<f64>() {
            Ok(value) if (0.0..=1.0).contains(&value) => value,
            _ => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_threshold",
                    "The threshold must be a number between 0 and 1.",
                );
            }
        },
    };
    success(
        inbound.received_at,
        (width, height),
        threshold,
        &selfie.seed,
        rule,
    )
}

fn success(
    requested_at: DateTime<Utc>,
    dims: (u32, u32),
    threshold: f64,
    seed: &inbound::Seed,
    rule: &Rule<KairosRespond>,
) -> Response {
    let (common, kairos) = (&rule.common, &rule.vendor);
    let face_count = common.face_count();
    let liveness = if face_count == 0 {
        common.score.unwrap_or(0.0)
    } else if common.score.is_some() {
        common.liveness(seed)
    } else {
        round4(common.liveness(seed))
    };

    let largest = common.bbox.unwrap_or_else(|| faces::default_bbox(dims));
    let predicted: Vec<Value> = faces::layout(face_count, dims, largest)
        .iter()
        .map(|face| {
            let [x1, y1, x2, y2] = face.bbox;
            let confidence = if kairos.int_confidence {
                json!(1)
            } else if face.largest {
                json!(round4(0.95 + seed.unit(4) * 0.0499))
            } else {
                json!(round4(0.5 + seed.unit(4 + face.rank as usize) * 0.4))
            };
            json!({
                "confidence": confidence,
                "delta": { "x": x2 - x1, "y": y2 - y1 },
                "top_left": { "x": x1, "y": y1 },
            })
        })
        .collect();

    // Undocumented upstream; this simulator's reading: 0 no face, 1 live, 2 not live.
    let response_code = kairos.response_code.unwrap_or(match face_count {
        0 => 0,
        _ if liveness >= threshold => 1,
        _ => 2,
    });

    let (width, height) = dims;
    let response_data = match kairos.shape.unwrap_or(Shape::Img) {
        Shape::Img => json!({
            "faces_liveness": liveness,
            "faces_predicted": predicted,
            "img": { "height": height, "width": width },
        }),
        Shape::Flat => json!({
            "img_width": width,
            "img_height": height,
            "faces_predicted": predicted,
            "faces_liveness": liveness,
        }),
    };
    let mut body = json!({
        "processed_at": Utc::now().format(TIMESTAMP).to_string(),
        "requested_at": requested_at.format(TIMESTAMP).to_string(),
        "response_code": response_code,
        "response_data": response_data,
    });
    if !kairos.omit_uid
        && let Some(object) = body.as_object_mut()
    {
        let field = kairos
            .uid_field
            .clone()
            .unwrap_or_else(|| "api_req_uid".into());
        object.insert(field, json!(uuid::Uuid::new_v4().to_string()));
    }
    let status = common
        .success_status()
        .or(kairos.http_status.map(control::status_code))
        .unwrap_or(StatusCode::OK);
    json_response(status, &body)
}

fn round4(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

fn rule_error(status: StatusCode, rule: &Rule<KairosRespond>) -> Response {
    let (code, message) = match status.as_u16() {
        400 => ("bad_request", "The request is invalid."),
        401 => (
            "invalid_credentials",
            "Authentication failed: invalid app_id or app_key.",
        ),
        403 => (
            "usage_limit_exceeded",
            "Usage limit reached for this application.",
        ),
        429 => ("too_many_requests", "Too many requests."),
        500..=599 => (
            "server_error",
            "The server could not process the request; try again later.",
        ),
        _ => ("error", status.canonical_reason().unwrap_or("Error")),
    };
    let message = rule.vendor.error_message.as_deref().unwrap_or(message);
    error(status, code, message)
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, &json!({ "error": code, "message": message }))
}
