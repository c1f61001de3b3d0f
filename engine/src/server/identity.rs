//! The face-matching routes: batch enrollment, identify, verify and compare. Similarities are
//! the cosine of the faces' unit embeddings (`similarity`, -1 to 1; in practice 0.7-1.0).

use std::time::Instant;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};
use uuid::Uuid;

use super::error::ApiError;
use super::{
    AppState, Enrollment, FaceStoreError, Form, Shared, check_image, external_id, face_json, flag,
    index, metadata_object, path_error, px, read_form, threshold,
};
use crate::{FaceEmbedding, cosine};

/// Most `top_k` identify accepts.
const MAX_TOP_K: usize = 100;

/// `top_k` when none is sent.
const DEFAULT_TOP_K: usize = 5;

fn match_threshold(form: &Form, default: f64) -> Result<f64, ApiError> {
    match form.text("threshold") {
        None => Ok(default),
        Some(s) => s
            .parse::<f64>()
            .ok()
            .filter(|t| (-1.0..=1.0).contains(t))
            .ok_or_else(|| ApiError::validation("threshold must be a number between -1 and 1.")),
    }
}

fn top_k(form: &Form) -> Result<usize, ApiError> {
    match form.text("top_k") {
        None => Ok(DEFAULT_TOP_K),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=MAX_TOP_K).contains(k))
            .ok_or_else(|| {
                ApiError::validation(format!("top_k must be between 1 and {MAX_TOP_K}."))
            }),
    }
}

fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

impl AppState {
    /// The embedding of the largest face of a probe image (identify, verify, compare): any
    /// number of faces is accepted, the largest one is matched, as the liveness check scores
    /// the largest.
    async fn probe(&self, image: Bytes) -> Result<FaceEmbedding, ApiError> {
        check_image(&image, self.opts.min_side)?;
        let (analysis, embedding, _) = self.analyze_and_embed(image).await?;
        if analysis.face_count == 0 {
            return Err(ApiError::face_not_detected());
        }
        embedding.ok_or_else(|| {
            ApiError::quality_too_low("The face's landmarks could not be aligned for matching.")
        })
    }
}

fn probe_face(e: &FaceEmbedding) -> Value {
    json!({"bbox": e.face.bbox.map(px), "confidence": f64::from(e.face.confidence)})
}

/// `POST /api/v1/collections/{id}/faces/batch`: repeated `images` file fields, with optional
/// `external_ids` and `metadata` (JSON arrays, one entry per image, `null` for none) and
/// `check_liveness` for all. Each image succeeds or fails on its own: the answer is a 200 with
/// one result per image, in order, each either `face` or `error` (`{code, message}` as in the
/// error envelope).
pub(super) async fn enroll_batch(
    State(st): Shared,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(collection_id) = path.map_err(path_error)?;
    if let Err(e) = st.authorize(req.headers(), &collection_id).await {
        super::discard(req, st.body_limit).await;
        return Err(e);
    }
    let form = read_form(
        req,
        st.opts.max_image_bytes,
        st.body_limit.saturating_mul(st.opts.max_batch.max(2)),
    )
    .await?;
    let images: Vec<Bytes> = form
        .files
        .iter()
        .filter(|(name, _)| name == "images")
        .map(|(_, b)| b.clone())
        .collect();
    if images.is_empty() {
        return Err(ApiError::validation("Send one or more images fields."));
    }
    if images.len() > st.opts.max_batch {
        return Err(ApiError::validation(format!(
            "At most {} images per batch, got {}.",
            st.opts.max_batch,
            images.len()
        )));
    }
    let n = images.len();
    let list = |name: &str| -> Result<Vec<Value>, ApiError> {
        match form.text(name) {
            None => Ok(vec![Value::Null; n]),
            Some(s) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) if items.len() == n => Ok(items),
                _ => Err(ApiError::validation(format!(
                    "{name} must be a JSON array with one entry per image ({n})."
                ))),
            },
        }
    };
    let external_ids = list("external_ids")?;
    let metadata = list("metadata")?;
    let check_liveness = flag(&form, "check_liveness", true)?;
    let liveness_threshold = threshold(&form, st.opts.default_threshold)?;

    let mut results = Vec::with_capacity(n);
    let mut enrolled = 0usize;
    for (i, image) in images.into_iter().enumerate() {
        let outcome = async {
            let ext = match &external_ids[i] {
                Value::Null => None,
                Value::String(s) => external_id(Some(s.trim()).filter(|s| !s.is_empty()))?,
                _ => {
                    return Err(ApiError::validation(
                        "external_ids entries must be strings.",
                    ));
                }
            };
            let meta = match &metadata[i] {
                Value::Null => None,
                v @ Value::Object(_) => Some(v.clone()),
                other => metadata_object(Some(&other.to_string()))?,
            };
            let enrollment = Enrollment {
                external_id: ext,
                metadata: meta,
                check_liveness,
                threshold: liveness_threshold,
            };
            st.enroll_one(&collection_id, image, enrollment).await
        }
        .await;
        results.push(match outcome {
            Ok(record) => {
                enrolled += 1;
                json!({"index": i, "success": true, "face": face_json(&record)})
            }
            Err(e) => json!({
                "index": i,
                "success": false,
                "error": {"code": e.code, "message": e.message},
            }),
        });
    }
    let data = json!({"results": results, "enrolled": enrolled, "failed": n - enrolled});
    Ok(Json(json!({"success": true, "data": data})).into_response())
}

/// `POST /api/v1/collections/{id}/identify`: `image`, `top_k` (1-100, default 5) and
/// `threshold` (default the server's calibrated match threshold). `matches` holds the enrolled
/// faces at or above the threshold, most similar first; an empty list when none is.
pub(super) async fn identify(
    State(st): Shared,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(collection_id) = path.map_err(path_error)?;
    let form = st.authorized_form(&collection_id, req).await?;
    let k = top_k(&form)?;
    let threshold = match_threshold(&form, st.opts.match_threshold)?;
    let image = form
        .image
        .ok_or_else(|| ApiError::validation("The image field is required."))?;
    let started = Instant::now();
    let probe = st.probe(image).await?;
    let index = st.indexes.get(st.store.as_ref(), &collection_id).await?;
    let searched = Instant::now();
    let hits = index::search(
        index,
        st.store.as_ref(),
        &collection_id,
        probe.vector.clone(),
        k,
        threshold as f32,
    )
    .await?;
    let search_ms = elapsed_ms(searched);
    let mut matches = Vec::with_capacity(hits.len());
    for hit in hits {
        // A face deleted since the search is simply left out.
        match st.store.get_face(&collection_id, hit.id).await {
            Ok(f) => matches.push(json!({
                "face_id": f.id,
                "external_id": f.external_id,
                "metadata": f.metadata,
                "similarity": f64::from(hit.similarity),
            })),
            Err(FaceStoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let data = json!({
        "matches": matches,
        "threshold": threshold,
        "face": probe_face(&probe),
        "query_time_ms": elapsed_ms(started),
        "search_time_ms": search_ms,
    });
    Ok(Json(json!({"success": true, "data": data})).into_response())
}

/// `POST /api/v1/collections/{id}/verify`: `image` and one of `face_id` or `external_id`,
/// optional `threshold`. `verified` is `similarity >= threshold`.
pub(super) async fn verify(
    State(st): Shared,
    path: Result<Path<String>, PathRejection>,
    req: Request,
) -> Result<Response, ApiError> {
    let Path(collection_id) = path.map_err(path_error)?;
    let form = st.authorized_form(&collection_id, req).await?;
    let threshold = match_threshold(&form, st.opts.match_threshold)?;
    let enrolled = match (form.text("face_id"), form.text("external_id")) {
        (Some(_), Some(_)) | (None, None) => {
            return Err(ApiError::validation(
                "Send exactly one of face_id and external_id.",
            ));
        }
        (Some(id), None) => {
            let id = Uuid::parse_str(id).map_err(|_| ApiError::face_not_found())?;
            st.store.get_face(&collection_id, id).await
        }
        (None, Some(ext)) => st.store.face_by_external_id(&collection_id, ext).await,
    };
    let enrolled = match enrolled {
        Ok(f) => f,
        Err(FaceStoreError::NotFound) => return Err(ApiError::face_not_found()),
        Err(e) => return Err(e.into()),
    };
    let Some(reference) = enrolled.embedding.as_deref() else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "FACE_NOT_MATCHABLE",
            "The enrolled face has no embedding (enrolled before matching existed); re-enroll it.",
        ));
    };
    let image = form
        .image
        .ok_or_else(|| ApiError::validation("The image field is required."))?;
    let started = Instant::now();
    let probe = st.probe(image).await?;
    let similarity = f64::from(cosine(&probe.vector, reference));
    let data = json!({
        "verified": similarity >= threshold,
        "similarity": similarity,
        "threshold": threshold,
        "face_id": enrolled.id,
        "external_id": enrolled.external_id,
        "face": probe_face(&probe),
        "query_time_ms": elapsed_ms(started),
    });
    Ok(Json(json!({"success": true, "data": data})).into_response())
}

/// `POST /api/v1/compare`: `image_a`, `image_b`, optional `threshold`; the largest face of
/// each. Needs a valid key of any collection; nothing is stored.
pub(super) async fn compare(State(st): Shared, req: Request) -> Result<Response, ApiError> {
    if let Err(e) = st.authorize_any(req.headers()).await {
        super::discard(req, st.body_limit).await;
        return Err(e);
    }
    let form = read_form(
        req,
        st.opts.max_image_bytes,
        st.body_limit.saturating_mul(st.opts.max_batch.max(2)),
    )
    .await?;
    let threshold = match_threshold(&form, st.opts.match_threshold)?;
    let file = |name: &str| {
        form.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.clone())
            .ok_or_else(|| ApiError::validation(format!("The {name} field is required.")))
    };
    let (a, b) = (file("image_a")?, file("image_b")?);
    let started = Instant::now();
    let (pa, pb) = tokio::join!(st.probe(a), st.probe(b));
    let (pa, pb) = (pa?, pb?);
    let similarity = f64::from(cosine(&pa.vector, &pb.vector));
    let data = json!({
        "match": similarity >= threshold,
        "similarity": similarity,
        "threshold": threshold,
        "face_a": probe_face(&pa),
        "face_b": probe_face(&pb),
        "query_time_ms": elapsed_ms(started),
    });
    Ok(Json(json!({"success": true, "data": data})).into_response())
}
