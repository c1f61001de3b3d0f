//! Enrollment: `POST /api/v1/collections/{id}/faces` (one face) and `.../faces/batch`
//! (several, each succeeding or failing on its own).
//!
//! The documents give the fields (`image`, `external_id`, `metadata` as a JSON string,
//! `check_liveness` default true, `liveness_threshold` default 0.6) and the errors (409
//! `DUPLICATE_EXTERNAL_ID`, 422 `LIVENESS_CHECK_FAILED` and the face errors of the liveness
//! call); the answers' shapes and the batch fields, which they leave open, are those of
//! livegate's engine server, which implements the same API.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use chrono::Utc;
use serde_json::{Value, json};

use super::gallery::StoredFace;
use super::{
    CollectionsRespond, Engine, IMAGE_FIELD, Refusal, admit, analyze, check_image,
    collection_route, liveness_threshold, multiple_faces, no_face, required_file, rule_error,
    success, text,
};
use crate::control::{Rule, finish};
use crate::inbound::{Inbound, Upload};

/// The file field of batch enrollment, once per image.
const BATCH_FIELD: &str = "images";

/// Most images in one batch.
const MAX_BATCH: usize = 20;

/// Longest accepted `external_id`.
const MAX_EXTERNAL_ID_CHARS: usize = 255;

/// What one enrollment carries besides the image.
struct Enrollment {
    external_id: Option<String>,
    metadata: Option<Value>,
    check_liveness: bool,
    threshold: f64,
}

pub(super) async fn enroll(
    State(engine): State<Engine>,
    Path(collection): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    collection_route(&engine, &collection, &inbound, enroll_answer).await
}

fn enroll_answer(
    engine: &Engine,
    collection: &str,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
) -> Result<Response, Refusal> {
    let enrollment = Enrollment {
        threshold: liveness_threshold(inbound)?,
        check_liveness: flag(inbound, "check_liveness", true)?,
        external_id: external_id(text(inbound, "external_id"))?,
        metadata: metadata_object(text(inbound, "metadata"))?,
    };
    let image = required_file(inbound, IMAGE_FIELD)?;
    let face = enroll_one(engine, collection, image, rule, enrollment)?;
    Ok(success(rule, StatusCode::CREATED, face.to_json()))
}

/// Checks and stores one face. The duplicate check comes before the face analysis, as a
/// retried enrollment is refused without the engine looking at the image again.
fn enroll_one(
    engine: &Engine,
    collection: &str,
    image: &Upload,
    rule: &Rule<CollectionsRespond>,
    e: Enrollment,
) -> Result<StoredFace, Refusal> {
    let dims = check_image(image)?;
    if let Some(external_id) = &e.external_id
        && engine.gallery.external_id_taken(collection, external_id)
    {
        return Err(duplicate());
    }
    let found = analyze(rule, image, dims);
    match found.faces {
        0 => return Err(no_face()),
        1 => {}
        _ if rule.vendor.multiple_faces_ok => {}
        _ => return Err(multiple_faces()),
    }
    let live = rule.vendor.is_live.unwrap_or(found.score >= e.threshold);
    if e.check_liveness && !live {
        return Err(Refusal::new(
            "LIVENESS_CHECK_FAILED",
            format!(
                "Liveness check failed: score {:.4}, threshold {}.",
                found.score, e.threshold
            ),
        ));
    }
    let face = StoredFace {
        face_id: uuid::Uuid::new_v4().to_string(),
        collection_id: collection.to_owned(),
        external_id: e.external_id,
        metadata: e.metadata,
        image_sha256: image.sha256_hex.clone(),
        liveness_score: found.score,
        bbox: found.bbox,
        confidence: found.confidence,
        quality: found.quality,
        created_at: Utc::now(),
    };
    engine
        .gallery
        .insert(face.clone())
        .map_err(|_| duplicate())?;
    Ok(face)
}

fn duplicate() -> Refusal {
    Refusal::new(
        "DUPLICATE_EXTERNAL_ID",
        "A face with this external_id already exists in the collection.",
    )
}

/// Form booleans as a form server reads them, any case.
fn flag(inbound: &Inbound, name: &str, default: bool) -> Result<bool, Refusal> {
    match text(inbound, name).map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(_) => Err(Refusal::validation(format!(
            "{name} must be true or false."
        ))),
    }
}

fn external_id(raw: Option<&str>) -> Result<Option<String>, Refusal> {
    match raw {
        Some(e) if e.chars().count() > MAX_EXTERNAL_ID_CHARS => Err(Refusal::validation(format!(
            "external_id must be at most {MAX_EXTERNAL_ID_CHARS} characters."
        ))),
        other => Ok(other.map(str::to_owned)),
    }
}

/// `metadata` travels as a JSON string; only an object is accepted, as the engine server does.
fn metadata_object(raw: Option<&str>) -> Result<Option<Value>, Refusal> {
    match raw {
        None => Ok(None),
        Some(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => Ok(Some(v)),
            _ => Err(Refusal::validation("metadata must be a JSON object.")),
        },
    }
}

/// `POST /api/v1/collections/{id}/faces/batch`: repeated `images` file fields, optional
/// `external_ids` and `metadata` (JSON arrays with one entry per image, `null` for none),
/// `check_liveness` and `liveness_threshold` for all. A 200 with one result per image.
pub(super) async fn enroll_batch(
    State(engine): State<Engine>,
    Path(collection): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, BATCH_FIELD).await;
    // No single image stands for the request: only a rule without `match` applies to all
    // of it; a rule naming an image applies to that image alone (see `batch_answer`).
    let rule = engine.sim.intake_for(&inbound, None).await;
    let response = batch_answer(&engine, &collection, &inbound, &rule)
        .await
        .unwrap_or_else(Refusal::into_response);
    finish(&rule, response)
}

async fn batch_answer(
    engine: &Engine,
    collection: &str,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
) -> Result<Response, Refusal> {
    if let Some(response) = admit(engine, inbound, rule, Some(collection))? {
        return Ok(response);
    }
    let images: Vec<&Upload> = inbound
        .uploads
        .iter()
        .filter(|(name, _)| name == BATCH_FIELD)
        .map(|(_, upload)| upload)
        .collect();
    if images.is_empty() {
        return Err(Refusal::validation("Send one or more images fields."));
    }
    if images.len() > MAX_BATCH {
        return Err(Refusal::validation(format!(
            "At most {MAX_BATCH} images per batch, got {}.",
            images.len()
        )));
    }
    let n = images.len();
    let list = |name: &str| -> Result<Vec<Value>, Refusal> {
        match text(inbound, name) {
            None => Ok(vec![Value::Null; n]),
            Some(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) if items.len() == n => Ok(items),
                _ => Err(Refusal::validation(format!(
                    "{name} must be a JSON array with one entry per image ({n})."
                ))),
            },
        }
    };
    let external_ids = list("external_ids")?;
    let metadata = list("metadata")?;
    let check_liveness = flag(inbound, "check_liveness", true)?;
    let threshold = liveness_threshold(inbound)?;

    let enroll_item = |image: &Upload,
                       item_rule: &Rule<CollectionsRespond>,
                       ext: Value,
                       meta: Value|
     -> Result<StoredFace, Refusal> {
        if let Some(refusal) = rule_error(item_rule) {
            return Err(refusal);
        }
        let enrollment = Enrollment {
            external_id: batch_external_id(ext)?,
            metadata: batch_metadata(meta)?,
            check_liveness,
            threshold,
        };
        enroll_one(engine, collection, image, item_rule, enrollment)
    };

    let mut results = Vec::with_capacity(n);
    let mut enrolled = 0usize;
    for (index, ((image, ext), meta)) in images
        .into_iter()
        .zip(external_ids)
        .zip(metadata)
        .enumerate()
    {
        let item_rule = match engine.sim.image_rule(&image.sha256_hex).await {
            Some(own) => own,
            None => rule.clone(),
        };
        results.push(match enroll_item(image, &item_rule, ext, meta) {
            Ok(face) => {
                enrolled += 1;
                json!({ "index": index, "success": true, "face": face.to_json() })
            }
            Err(refusal) => {
                json!({ "index": index, "success": false, "error": refusal.error_json() })
            }
        });
    }
    let data = json!({ "results": results, "enrolled": enrolled, "failed": n - enrolled });
    Ok(success(rule, StatusCode::OK, data))
}

fn batch_external_id(entry: Value) -> Result<Option<String>, Refusal> {
    match entry {
        Value::Null => Ok(None),
        Value::String(s) => external_id(Some(s.trim()).filter(|s| !s.is_empty())),
        _ => Err(Refusal::validation("external_ids entries must be strings.")),
    }
}

fn batch_metadata(entry: Value) -> Result<Option<Value>, Refusal> {
    match entry {
        Value::Null => Ok(None),
        v @ Value::Object(_) => Ok(Some(v)),
        _ => Err(Refusal::validation(
            "metadata entries must be JSON objects.",
        )),
    }
}
