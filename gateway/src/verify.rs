//! One verification from request to stored row: intake, routing, policy, storage. Every
//! authenticated request leaves a row, whatever failed.

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use uuid::Uuid;

use crate::api::views::Verification;
use crate::app::{AppState, Caller};
use crate::config::Tenant;
use crate::intake::{self, Submission};
use crate::policy::{self, Decision};
use crate::problem::{ApiError, current_request_id};
use crate::routing::{self, AttemptLog, RouteInput};
use crate::store::{AttemptRecord, VerificationRecord};

/// What is known about a verification so far; becomes its row whatever happens.
struct Draft {
    record: VerificationRecord,
    attempts: Vec<AttemptLog>,
}

pub async fn verify(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Verification, ApiError> {
    let started = Instant::now();
    let tenant = caller.tenant()?;
    let mut draft = Draft {
        record: VerificationRecord {
            id: Uuid::now_v7(),
            tenant_id: tenant.id.clone(),
            request_id: current_request_id(),
            provider: None,
            provider_request_id: None,
            decision: None,
            is_live: false,
            score: None,
            threshold: tenant.threshold,
            spoof_type: None,
            warnings: serde_json::json!([]),
            face: None,
            faces_detected: None,
            image_sha256: None,
            image_format: None,
            image_width: None,
            image_height: None,
            external_id: None,
            metadata: None,
            http_status: 200,
            error_code: None,
            error_detail: None,
            latency_ms: 0,
            config_hash: Some(caller.runtime.config.hash.clone()),
            trace_id: None,
            created_at: Utc::now(),
        },
        attempts: Vec::new(),
    };

    let outcome = run(caller, tenant, headers, body, &mut draft).await;
    let rec = &mut draft.record;
    rec.latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    if let Err(e) = &outcome {
        rec.http_status = i32::from(e.status.as_u16());
        rec.error_code = Some(e.code.clone());
        rec.error_detail = Some(e.detail.clone());
        rec.decision = None;
        rec.is_live = false;
    }
    let attempts: Vec<AttemptRecord> = draft
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| AttemptRecord {
            verification_id: rec.id,
            attempt_no: i32::try_from(i + 1).unwrap_or(i32::MAX),
            provider: a.provider.clone(),
            provider_kind: a.provider_kind.clone(),
            outcome: if a.error_code.is_none() {
                "ok"
            } else {
                "error"
            }
            .to_owned(),
            shadow: false,
            score: a.score,
            error_code: a.error_code.clone(),
            upstream_status: a.upstream_status.map(i32::from),
            latency_ms: a.latency_ms,
            raw_body: a.raw_body.clone(),
            created_at: a.at,
        })
        .collect();
    // The answer goes out only once its row is committed: nothing is lost.
    state
        .store
        .insert_verification(rec, &attempts)
        .await
        .map_err(ApiError::internal)?;
    tracing::info!(
        tenant = %rec.tenant_id,
        verification_id = %rec.id,
        provider = rec.provider.as_deref().unwrap_or("-"),
        decision = rec.decision.as_deref().unwrap_or("-"),
        error_code = rec.error_code.as_deref().unwrap_or("-"),
        latency_ms = rec.latency_ms,
        "verification"
    );
    outcome.map(|()| Verification::from_records(rec, &attempts))
}

async fn run(
    caller: &Caller,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: Body,
    draft: &mut Draft,
) -> Result<(), ApiError> {
    let limits = caller.runtime.config.limits.clone();
    let sub: Submission = intake::read_submission(headers, body, &limits).await?;
    let rec = &mut draft.record;
    rec.external_id = sub.external_id.clone();
    rec.metadata = sub.metadata.clone();
    if let Some(t) = sub.threshold {
        if t < tenant.threshold {
            return Err(ApiError::bad_request(
                "threshold_below_tenant",
                format!(
                    "threshold {t} is below the tenant's threshold {}; a request may only raise it",
                    tenant.threshold
                ),
            ));
        }
        rec.threshold = t;
    }
    if sub.provider.is_some() {
        return Err(ApiError::bad_request(
            "provider_override_not_allowed",
            "this tenant may not choose a provider per request",
        ));
    }
    let bytes = sub.image.ok_or_else(|| {
        ApiError::bad_request(
            "image_missing",
            "send the image as multipart field `image` or JSON `image_base64`",
        )
    })?;
    let facts = intake::facts(&bytes);
    rec.image_sha256 = Some(facts.sha256);
    rec.image_format = facts.format.map(|f| f.extension().to_owned());
    let image = tokio::task::spawn_blocking(move || intake::decode(bytes, &limits))
        .await
        .map_err(ApiError::internal)??;
    rec.image_width = i32::try_from(image.width).ok();
    rec.image_height = i32::try_from(image.height).ok();

    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let threshold = rec.threshold;
    let request_id = rec.request_id.clone();
    let routed = routing::route(
        RouteInput {
            runtime: &caller.runtime,
            tenant,
            image: &image,
            threshold,
            request_id: &request_id,
            traceparent,
        },
        &mut draft.attempts,
    )
    .await;
    let rec = &mut draft.record;
    let routed = match routed {
        Ok(r) => r,
        Err(f) => {
            rec.provider = (!f.provider.is_empty()).then_some(f.provider.clone());
            return Err(ApiError::from_provider(&f.provider, &f.error));
        }
    };
    let judgement = policy::decide(tenant, threshold, &routed.answer);
    let a = &routed.answer;
    rec.provider = Some(routed.provider.clone());
    rec.provider_request_id = a.provider_request_id.clone();
    rec.score = a.score;
    rec.spoof_type = a.spoof_type.map(|s| s.as_str().to_owned());
    rec.face = a.face.as_ref().and_then(|f| serde_json::to_value(f).ok());
    rec.faces_detected = i32::try_from(a.faces_detected).ok();
    rec.warnings = serde_json::to_value(&judgement.warnings).map_err(ApiError::internal)?;
    rec.decision = Some(judgement.decision.as_str().to_owned());
    rec.is_live = judgement.decision == Decision::Approved;
    rec.http_status = i32::from(StatusCode::OK.as_u16());
    Ok(())
}
