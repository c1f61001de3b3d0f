//! Didit passive liveness: `POST /v3/passive-liveness/` (Django REST Framework behind it,
//! which is why errors come as `{"detail": …}`, field maps or bare lists).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use axum::routing::post;
use chrono::{SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::control::{self, Rule, Sim, VendorRespond, finish, json_response, override_response};
use crate::faces;
use crate::inbound::{self, FormError, Inbound, Upload};

const IMAGE_FIELD: &str = "user_image";
const THRESHOLD_FIELD: &str = "face_liveness_score_decline_threshold";
const MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
const DEFAULT_THRESHOLD: f64 = 30.0;
/// About 300 writes a minute per key, per the public docs.
const RATE_LIMIT: u32 = 300;
const DEFAULT_RETRY_AFTER: u64 = 60;

const NOT_AUTHENTICATED: &str = "Authentication credentials were not provided.";
const INVALID_IMAGE: &str =
    "Upload a valid image. The file you uploaded was either not an image or a corrupted image.";

/// Didit's `respond` fields (see README.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DiditRespond {
    #[serde(default)]
    decision: Option<String>,
    #[serde(default)]
    error_style: Option<ErrorStyle>,
    #[serde(default)]
    error_detail: Option<String>,
    #[serde(default)]
    error_field: Option<String>,
    #[serde(default, deserialize_with = "control::present")]
    quality: Option<Option<f64>>,
    #[serde(default, deserialize_with = "control::present")]
    luminance: Option<Option<f64>>,
    #[serde(default)]
    warnings: Vec<ExtraWarning>,
    #[serde(default)]
    rate_limit_headers: Option<bool>,
    #[serde(default)]
    score_float: bool,
    #[serde(default)]
    threshold_inclusive: bool,
    #[serde(default)]
    created_at_style: Option<CreatedAtStyle>,
    #[serde(default, deserialize_with = "control::present")]
    race: Option<Option<String>>,
}

impl VendorRespond for DiditRespond {
    fn check(&self, _common: &control::CommonRespond) -> Result<(), String> {
        for (name, value) in [("quality", self.quality), ("luminance", self.luminance)] {
            if let Some(Some(value)) = value
                && !(value.is_finite() && (0.0..=100.0).contains(&value))
            {
                return Err(format!(
                    "{name} must be within 0..=100 or null, got {value}"
                ));
            }
        }
        Ok(())
    }
}

/// The three shapes DRF gives an error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ErrorStyle {
    Detail,
    Fields,
    List,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
enum CreatedAtStyle {
    #[serde(rename = "Z")]
    Zulu,
    #[serde(rename = "+00:00")]
    Offset,
}

/// A warning a rule adds: a tag (described from Didit's catalogue) or a whole object, sent
/// verbatim so that session-style fields and unknown `risk` values can be produced.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ExtraWarning {
    Tag(String),
    Object(Map<String, Value>),
}

/// A fresh Didit simulator with its own rules and request log.
pub fn router() -> Router {
    let sim = Sim::<DiditRespond>::new();
    Router::new()
        .route("/v3/passive-liveness/", post(verify))
        .route("/v3/passive-liveness", post(verify))
        .layer(DefaultBodyLimit::max(inbound::TRANSPORT_LIMIT))
        .with_state(Arc::clone(&sim))
        .merge(control::router(sim))
}

async fn verify(
    State(sim): State<Arc<Sim<DiditRespond>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    let rule = sim.intake(&inbound).await;
    let response = answer(&inbound, &rule);
    let response = rate_limit_headers(&rule, response);
    finish(&rule, response)
}

fn answer(inbound: &Inbound, rule: &Rule<DiditRespond>) -> Response {
    if let Some(response) = override_response(rule) {
        return response;
    }
    if let Some(status) = rule.common.error_status() {
        return rule_error(status, rule);
    }
    // DRF authenticates before it parses the body.
    if inbound.credential("x-api-key").is_none() {
        return drf_error(
            StatusCode::FORBIDDEN,
            ErrorStyle::Detail,
            "",
            NOT_AUTHENTICATED,
        );
    }
    match &inbound.form_error {
        Some(FormError::NotMultipart(content_type)) => {
            let detail = format!("Unsupported media type \"{content_type}\" in request.");
            return drf_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorStyle::Detail,
                "",
                &detail,
            );
        }
        Some(FormError::Malformed(reason)) => {
            let detail = format!("Multipart form parse error - {reason}");
            return drf_error(StatusCode::BAD_REQUEST, ErrorStyle::Detail, "", &detail);
        }
        Some(FormError::TooLarge) => {
            let detail = "Request body is too large.";
            return drf_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorStyle::Detail,
                "",
                detail,
            );
        }
        None => {}
    }
    match Form::validate(inbound) {
        Ok(form) => success(&form, rule),
        Err(errors) => json_response(StatusCode::BAD_REQUEST, &json!(errors)),
    }
}

/// The validated request, as DRF's serializer would hand it to the view.
struct Form<'a> {
    image: &'a Upload,
    dims: (u32, u32),
    threshold: f64,
    vendor_data: Option<&'a str>,
    metadata: Option<Value>,
}

impl<'a> Form<'a> {
    /// Collects every field's problems at once, as a DRF serializer does.
    fn validate(inbound: &'a Inbound) -> Result<Self, BTreeMap<&'static str, Vec<String>>> {
        let mut errors: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        let mut fail = |field: &'static str, message: &str| {
            errors.entry(field).or_default().push(message.to_owned());
        };

        let image = match inbound.image() {
            None => {
                fail(IMAGE_FIELD, "No file was submitted.");
                None
            }
            // Django files a part without a filename under POST, not FILES.
            Some(upload) if upload.filename.is_none() => {
                fail(
                    IMAGE_FIELD,
                    "The submitted data was not a file. Check the encoding type on the form.",
                );
                None
            }
            Some(upload) if upload.bytes.is_empty() => {
                fail(IMAGE_FIELD, "The submitted file is empty.");
                None
            }
            Some(upload) if upload.bytes.len() > MAX_IMAGE_BYTES => {
                fail(
                    IMAGE_FIELD,
                    "The image exceeds the maximum file size of 5 MB.",
                );
                None
            }
            Some(upload) => {
                let dims = inbound::sniff(&upload.bytes).and(inbound::dimensions(&upload.bytes));
                if dims.is_none() {
                    fail(IMAGE_FIELD, INVALID_IMAGE);
                }
                dims.map(|dims| (upload, dims))
            }
        };

        let threshold = match inbound.field(THRESHOLD_FIELD) {
            None => DEFAULT_THRESHOLD,
            Some(text) => match text.trim().parse::<f64>() {
                Ok(value) if value.is_finite() && value > 100.0 => {
                    fail(
                        THRESHOLD_FIELD,
                        "Ensure this value is less than or equal to 100.",
                    );
                    DEFAULT_THRESHOLD
                }
                Ok(value) if value.is_finite() && value < 0.0 => {
                    fail(
                        THRESHOLD_FIELD,
                        "Ensure this value is greater than or equal to 0.",
                    );
                    DEFAULT_THRESHOLD
                }
                Ok(value) if value.is_finite() => value,
                _ => {
                    fail(THRESHOLD_FIELD, "A valid number is required.");
                    DEFAULT_THRESHOLD
                }
            },
        };

        for field in ["rotate_image", "save_api_request"] {
            if let Some(text) = inbound.field(field)
                && parse_bool(text).is_none()
            {
                fail(field, "Must be a valid boolean.");
            }
        }

        let metadata = match inbound.field("metadata") {
            None => None,
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(value) => Some(value),
                Err(_) => {
                    fail("metadata", "Value must be valid JSON.");
                    None
                }
            },
        };

        match image {
            Some((image, dims)) if errors.is_empty() => Ok(Form {
                image,
                dims,
                threshold,
                vendor_data: inbound.field("vendor_data"),
                metadata,
            }),
            _ => Err(errors),
        }
    }
}

/// DRF's `BooleanField` spellings.
fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "on" | "yes" | "y" | "t" => Some(true),
        "false" | "0" | "off" | "no" | "n" | "f" => Some(false),
        _ => None,
    }
}

fn success(form: &Form<'_>, rule: &Rule<DiditRespond>) -> Response {
    let (common, didit) = (&rule.common, &rule.vendor);
    let seed = form.image.seed;
    let face_count = common.face_count();
    let liveness = common.liveness(&seed);

    let score = (face_count > 0).then(|| {
        if didit.score_float {
            Score::Float((liveness * 10_000.0).round() / 100.0)
        } else {
            Score::Int((liveness * 100.0).round() as i64)
        }
    });

    let largest = common
        .bbox
        .unwrap_or_else(|| faces::default_bbox(form.dims));
    let entities: Vec<Value> = faces::layout(face_count, form.dims, largest)
        .iter()
        .map(|face| entity(face, &seed, didit))
        .collect();

    let mut warnings = Vec::new();
    if face_count == 0 {
        warnings.push(catalogue_warning("NO_FACE_DETECTED"));
    }
    if face_count > 1 {
        warnings.push(catalogue_warning("MULTIPLE_FACES_DETECTED"));
    }
    if face_count > 0 && common.spoof_type.is_some() {
        warnings.push(catalogue_warning("LIVENESS_FACE_ATTACK"));
    }
    if let Some(score) = score {
        let value = score.as_f64();
        let below =
            value < form.threshold || (didit.threshold_inclusive && value == form.threshold);
        if below {
            warnings.push(catalogue_warning("LOW_LIVENESS_SCORE"));
        }
    }
    for extra in &didit.warnings {
        warnings.push(match extra {
            ExtraWarning::Tag(tag) => catalogue_warning(tag),
            ExtraWarning::Object(object) => Value::Object(object.clone()),
        });
    }

    let status = didit.decision.clone().unwrap_or_else(|| {
        let declined = warnings
            .iter()
            .any(|w| w.get("log_type").and_then(Value::as_str) == Some("error"));
        if declined { "Declined" } else { "Approved" }.to_owned()
    });

    let made_up = |offset: usize, base: f64, span: f64| {
        (face_count > 0).then(|| round_to(base + seed.unit(offset) * span, 2))
    };
    let quality = didit.quality.unwrap_or_else(|| made_up(20, 50.0, 49.0));
    let luminance = didit.luminance.unwrap_or_else(|| made_up(24, 30.0, 40.0));

    let now = Utc::now();
    let created_at = match didit.created_at_style {
        Some(CreatedAtStyle::Offset) => now.to_rfc3339_opts(SecondsFormat::Micros, false),
        _ => now.to_rfc3339_opts(SecondsFormat::Micros, true),
    };

    let mut body = json!({
        "request_id": uuid::Uuid::new_v4().to_string(),
        "liveness": {
            "status": status,
            "method": "PASSIVE",
            "score": score.map(Score::to_json),
            "user_image": { "entities": entities, "best_angle": 0 },
            "warnings": warnings,
            "face_quality": quality,
            "face_luminance": luminance,
        },
        "created_at": created_at,
    });
    // Echoed only when sent, so both the older and the newer response shapes occur.
    if let Some(object) = body.as_object_mut() {
        if let Some(vendor_data) = form.vendor_data {
            object.insert("vendor_data".into(), json!(vendor_data));
        }
        if let Some(metadata) = &form.metadata {
            object.insert("metadata".into(), metadata.clone());
        }
    }
    json_response(common.success_status().unwrap_or(StatusCode::OK), &body)
}

#[derive(Debug, Clone, Copy)]
enum Score {
    Int(i64),
    Float(f64),
}

impl Score {
    fn as_f64(self) -> f64 {
        match self {
            Score::Int(value) => value as f64,
            Score::Float(value) => value,
        }
    }

    fn to_json(self) -> Value {
        match self {
            Score::Int(value) => json!(value),
            Score::Float(value) => json!(value),
        }
    }
}

fn entity(face: &faces::Face, seed: &inbound::Seed, didit: &DiditRespond) -> Value {
    let rank = face.rank as usize;
    let confidence = if face.largest {
        0.7 + seed.unit(4) * 0.29
    } else {
        0.3 + seed.unit(4 + rank) * 0.3
    };
    let gender = if seed.byte(16 + rank).is_multiple_of(2) {
        "male"
    } else {
        "female"
    };
    let [x1, y1, x2, y2] = face.bbox.map(|v| v.round() as i64);
    let mut entity = json!({
        "age": round_to(18.0 + seed.unit(8 + rank) * 50.0, 2),
        "bbox": [x1, y1, x2, y2],
        "confidence": round_to(confidence, 3),
        "gender": gender,
    });
    if let (Some(race), Some(object)) = (&didit.race, entity.as_object_mut()) {
        object.insert("race".into(), json!(race));
    }
    entity
}

fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10_f64.powi(decimals);
    (value * scale).round() / scale
}

/// A warning object for `tag`, worded after Didit's tag table; unknown tags become
/// warning-level entries so rules can send tags the catalogue does not know.
fn catalogue_warning(tag: &str) -> Value {
    let (log_type, short, long) = match tag {
        "NO_FACE_DETECTED" => (
            "error",
            "No face detected",
            "The system couldn't detect a face in the image.",
        ),
        "LIVENESS_FACE_ATTACK" => (
            "error",
            "Potential spoofing attempt",
            "The system detected a potential presentation attack (printed photo, screen or mask).",
        ),
        "LOW_LIVENESS_SCORE" => (
            "error",
            "Low liveness score",
            "The liveness score is below the decline threshold.",
        ),
        "FACE_IN_BLOCKLIST" => (
            "error",
            "Face in blocklist",
            "The face matches an entry in your blocklist.",
        ),
        "POSSIBLE_FACE_IN_BLOCKLIST" => (
            "error",
            "Possible face in blocklist",
            "The face possibly matches an entry in your blocklist.",
        ),
        "MULTIPLE_FACES_DETECTED" => (
            "warning",
            "Multiple faces detected",
            "More than one face was detected; the largest face was used for the liveness check.",
        ),
        "LOW_FACE_QUALITY" => (
            "warning",
            "Low face quality",
            "The quality of the face image is below the threshold.",
        ),
        "LOW_FACE_LUMINANCE" => (
            "warning",
            "Low face luminance",
            "The face image is too dark.",
        ),
        "HIGH_FACE_LUMINANCE" => (
            "warning",
            "High face luminance",
            "The face image is too bright or overexposed.",
        ),
        "DUPLICATED_FACE" => (
            "information",
            "Duplicated face",
            "The face matches another approved session.",
        ),
        "POSSIBLE_DUPLICATED_FACE" => (
            "information",
            "Possible duplicated face",
            "The face may match another user.",
        ),
        _ => ("warning", tag, tag),
    };
    json!({
        "risk": tag,
        "log_type": log_type,
        "short_description": short,
        "long_description": long,
    })
}

fn rule_error(status: StatusCode, rule: &Rule<DiditRespond>) -> Response {
    let didit = &rule.vendor;
    let bad_request = status == StatusCode::BAD_REQUEST;
    let style = didit.error_style.unwrap_or(if bad_request {
        ErrorStyle::Fields
    } else {
        ErrorStyle::Detail
    });
    let field = didit.error_field.as_deref().unwrap_or(if bad_request {
        IMAGE_FIELD
    } else {
        "non_field_errors"
    });
    let detail = didit.error_detail.clone().unwrap_or_else(|| {
        let retry_after = rule.common.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        default_detail(status, retry_after)
    });
    drf_error(status, style, field, &detail)
}

fn default_detail(status: StatusCode, retry_after: u64) -> String {
    match status.as_u16() {
        400 => INVALID_IMAGE.to_owned(),
        401 => "Invalid API key.".to_owned(),
        403 => {
            "Insufficient credits. Please top up your balance to continue using the API.".to_owned()
        }
        404 => "Not found.".to_owned(),
        429 => format!("Request was throttled. Expected available in {retry_after} seconds."),
        500 => "A server error occurred.".to_owned(),
        503 => "Service temporarily unavailable, try again later.".to_owned(),
        _ => status.canonical_reason().unwrap_or("Error").to_owned(),
    }
}

fn drf_error(status: StatusCode, style: ErrorStyle, field: &str, detail: &str) -> Response {
    let body = match style {
        ErrorStyle::Detail => json!({ "detail": detail }),
        ErrorStyle::Fields => json!({ field: [detail] }),
        ErrorStyle::List => json!([detail]),
    };
    json_response(status, &body)
}

/// Didit's rate-limit headers: always on a 429 (unless the rule turns them off), on any
/// other answer only when the rule asks.
fn rate_limit_headers(rule: &Rule<DiditRespond>, mut response: Response) -> Response {
    let throttled = response.status() == StatusCode::TOO_MANY_REQUESTS;
    if !rule.vendor.rate_limit_headers.unwrap_or(throttled) {
        return response;
    }
    let retry_after = rule.common.retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
    let reset = Utc::now().timestamp().saturating_add_unsigned(retry_after);
    let remaining = if throttled { 0 } else { RATE_LIMIT - 1 };
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(RATE_LIMIT));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    if throttled {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_follow_drf() {
        assert_eq!(parse_bool("True"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool(""), None);
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn catalogue_levels_match_the_documents() {
        let level = |tag| {
            catalogue_warning(tag)["log_type"]
                .as_str()
                .map(str::to_owned)
        };
        for tag in [
            "NO_FACE_DETECTED",
            "LOW_LIVENESS_SCORE",
            "LIVENESS_FACE_ATTACK",
            "FACE_IN_BLOCKLIST",
            "POSSIBLE_FACE_IN_BLOCKLIST",
        ] {
            assert_eq!(level(tag).as_deref(), Some("error"), "{tag}");
        }
        assert_eq!(level("MULTIPLE_FACES_DETECTED").as_deref(), Some("warning"));
        assert_eq!(level("DUPLICATED_FACE").as_deref(), Some("information"));
        assert_eq!(
            level("POSSIBLE_DUPLICATED_FACE").as_deref(),
            Some("information")
        );
    }
}
