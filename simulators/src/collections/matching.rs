//! Face matching: `POST /api/v1/collections/{id}/identify`, `.../verify` and
//! `POST /api/v1/compare`.
//!
//! The documents give the fields (`top_k` 1-100, `threshold` default 0.55, `image` plus
//! `face_id` or `external_id`, `image_a` and `image_b`), that no match is an empty list and
//! that an unknown face is a 404 `FACE_NOT_FOUND`; the answers' shapes, which they leave open,
//! are those of livegate's engine server. Similarities come from the image hashes
//! (`gallery.rs`) unless a rule's `similarity` sets them.

use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::json;

use super::gallery::{self, FaceKey};
use super::{
    Analysis, CollectionsRespond, Engine, IMAGE_FIELD, Refusal, analyze, check_form, check_image,
    collection_route, no_face, query_time_ms, required_file, rule_error, scripted, success, text,
};
use crate::control::{Rule, finish};
use crate::inbound::{Inbound, Upload};

/// The documented default `threshold` of identify, verify and compare.
const DEFAULT_MATCH_THRESHOLD: f64 = 0.55;

/// `top_k` when none is sent (the documents give only the range).
const DEFAULT_TOP_K: usize = 5;
const MAX_TOP_K: usize = 100;

const IMAGE_A: &str = "image_a";
const IMAGE_B: &str = "image_b";

/// Similarities are cosines, so the whole -1..=1 range is a valid threshold.
fn match_threshold(inbound: &Inbound) -> Result<f64, Refusal> {
    match text(inbound, "threshold") {
        None => Ok(DEFAULT_MATCH_THRESHOLD),
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|t| (-1.0..=1.0).contains(t))
            .ok_or_else(|| Refusal::validation("threshold must be a number between -1 and 1.")),
    }
}

fn top_k(inbound: &Inbound) -> Result<usize, Refusal> {
    match text(inbound, "top_k") {
        None => Ok(DEFAULT_TOP_K),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=MAX_TOP_K).contains(k))
            .ok_or_else(|| {
                Refusal::validation(format!("top_k must be between 1 and {MAX_TOP_K}."))
            }),
    }
}

/// The face of a probe image (identify, verify, compare). Several faces are no error here:
/// the largest is matched, as livegate's engine server does (the documents are silent).
fn probe(rule: &Rule<CollectionsRespond>, image: &Upload) -> Result<Analysis, Refusal> {
    let found = analyze(rule, image, check_image(image)?);
    if found.faces == 0 {
        return Err(no_face());
    }
    Ok(found)
}

pub(super) async fn identify(
    State(engine): State<Engine>,
    Path(collection): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    collection_route(&engine, &collection, &inbound, identify_answer).await
}

fn identify_answer(
    engine: &Engine,
    collection: &str,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
) -> Result<Response, Refusal> {
    let k = top_k(inbound)?;
    let threshold = match_threshold(inbound)?;
    let image = required_file(inbound, IMAGE_FIELD)?;
    let found = probe(rule, image)?;

    let mut hits: Vec<(f64, gallery::StoredFace)> = engine
        .gallery
        .faces(collection)
        .into_iter()
        .map(|face| {
            let similarity = rule
                .vendor
                .similarity
                .unwrap_or_else(|| gallery::similarity(&image.sha256_hex, &face.image_sha256));
            (similarity, face)
        })
        .filter(|(similarity, _)| *similarity >= threshold)
        .collect();
    // Stable: equally similar faces stay in enrollment order.
    hits.sort_by(|a, b| b.0.total_cmp(&a.0));
    hits.truncate(k);
    let matches: Vec<_> = hits
        .into_iter()
        .map(|(similarity, face)| {
            json!({
                "face_id": face.face_id,
                "external_id": face.external_id,
                "metadata": face.metadata,
                "similarity": similarity,
            })
        })
        .collect();
    let data = json!({
        "matches": matches,
        "threshold": threshold,
        "face": found.face_json(),
        "query_time_ms": query_time_ms(rule, image),
        "search_time_ms": u64::from(image.seed.byte(29) % 5),
    });
    Ok(success(rule, StatusCode::OK, data))
}

pub(super) async fn verify(
    State(engine): State<Engine>,
    Path(collection): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound = Inbound::read(&method, &uri, &headers, form, IMAGE_FIELD).await;
    collection_route(&engine, &collection, &inbound, verify_answer).await
}

fn verify_answer(
    engine: &Engine,
    collection: &str,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
) -> Result<Response, Refusal> {
    let threshold = match_threshold(inbound)?;
    let key = match (text(inbound, "face_id"), text(inbound, "external_id")) {
        (Some(id), None) => FaceKey::FaceId(id),
        (None, Some(id)) => FaceKey::ExternalId(id),
        _ => {
            return Err(Refusal::validation(
                "Send exactly one of face_id and external_id.",
            ));
        }
    };
    let enrolled = engine
        .gallery
        .find(collection, key)
        .ok_or_else(|| Refusal::new("FACE_NOT_FOUND", "Face not found."))?;
    let image = required_file(inbound, IMAGE_FIELD)?;
    let found = probe(rule, image)?;
    let similarity = rule
        .vendor
        .similarity
        .unwrap_or_else(|| gallery::similarity(&image.sha256_hex, &enrolled.image_sha256));
    let data = json!({
        "verified": similarity >= threshold,
        "similarity": similarity,
        "threshold": threshold,
        "face_id": enrolled.face_id,
        "external_id": enrolled.external_id,
        "face": found.face_json(),
        "query_time_ms": query_time_ms(rule, image),
    });
    Ok(success(rule, StatusCode::OK, data))
}

/// `POST /api/v1/compare`. The request's rule is matched on `image_a`; a rule naming
/// `image_b`'s hash applies to `image_b`, otherwise a rule without `match` applies to both.
pub(super) async fn compare(
    State(engine): State<Engine>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    form: Result<Multipart, MultipartRejection>,
) -> Response {
    let inbound =
        Inbound::read_with_files(&method, &uri, &headers, form, IMAGE_A, &[IMAGE_B]).await;
    let rule = engine.sim.intake(&inbound).await;
    let rule_b = match inbound.file(IMAGE_B) {
        Some(b) => engine.sim.image_rule(&b.sha256_hex).await,
        None => None,
    }
    .unwrap_or_else(|| {
        if rule.is_image_specific() {
            Rule::default()
        } else {
            rule.clone()
        }
    });
    let response =
        compare_answer(&engine, &inbound, &rule, &rule_b).unwrap_or_else(Refusal::into_response);
    finish(&rule, response)
}

fn compare_answer(
    engine: &Engine,
    inbound: &Inbound,
    rule: &Rule<CollectionsRespond>,
    rule_b: &Rule<CollectionsRespond>,
) -> Result<Response, Refusal> {
    if let Some(response) = scripted(rule) {
        return Ok(response);
    }
    if let Some(refusal) = rule_error(rule_b) {
        return Err(refusal);
    }
    engine.check_key(inbound, None)?;
    check_form(inbound)?;
    let threshold = match_threshold(inbound)?;
    let (a, b) = (
        required_file(inbound, IMAGE_A)?,
        required_file(inbound, IMAGE_B)?,
    );
    let (found_a, found_b) = (probe(rule, a)?, probe(rule_b, b)?);
    let similarity = rule
        .vendor
        .similarity
        .or(rule_b.vendor.similarity)
        .unwrap_or_else(|| gallery::similarity(&a.sha256_hex, &b.sha256_hex));
    let data = json!({
        "match": similarity >= threshold,
        "similarity": similarity,
        "threshold": threshold,
        "face_a": found_a.face_json(),
        "face_b": found_b.face_json(),
        "query_time_ms": query_time_ms(rule, a),
    });
    Ok(success(rule, StatusCode::OK, data))
}
