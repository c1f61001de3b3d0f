//! One verification from request to stored row: intake, routing, policy, storage. Every
//! authenticated request leaves a row, whatever failed.

use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
use tracing::Instrument;
use uuid::Uuid;

use crate::api::views::{CreditsUsed, Verification};
use crate::app::{AppState, Caller};
use crate::config::{Strategy, Tenant};
use crate::credits::{self, Reservation};
use crate::idempotency::{self, Begin};
use crate::intake::{self, Submission};
use crate::policy::{self, Decision};
use crate::problem::{ApiError, current_request_id};
use crate::routing::{self, AttemptLog, RouteInput, ShadowCall};
use crate::store::ledger::{IdempotentAnswer, ResultWrite};
use crate::store::{AttemptRecord, VerificationRecord};
use crate::telemetry;

/// What is known about a verification so far; becomes its row whatever happens.
struct Draft {
    record: VerificationRecord,
    attempts: Vec<AttemptLog>,
    shadows: Vec<ShadowCall>,
    reservation: Option<Reservation>,
    /// The `Idempotency-Key` this request holds.
    idempotency_key: Option<String>,
    /// The stored answer of an earlier request with the same key.
    replay: Option<(StatusCode, String)>,
}

/// A fresh verdict, or the replay of an earlier one.
pub enum Answer {
    Fresh(Box<Verification>),
    Replay { status: StatusCode, body: String },
}

fn attempt_record(verification_id: Uuid, attempt_no: usize, a: &AttemptLog) -> AttemptRecord {
    AttemptRecord {
        verification_id,
        attempt_no: i32::try_from(attempt_no).unwrap_or(i32::MAX),
        provider: a.provider.clone(),
        provider_kind: a.provider_kind.clone(),
        outcome: if a.error_code.is_none() {
            "ok"
        } else {
            "error"
        }
        .to_owned(),
        shadow: a.shadow,
        score: a.score,
        error_code: a.error_code.clone(),
        upstream_status: a.upstream_status.map(i32::from),
        latency_ms: a.latency_ms,
        raw_body: a.raw_body.clone(),
        created_at: a.at,
    }
}

/// Shadow calls finish in the background, after the answer: their attempts are appended to the
/// stored verification when they end, and a failing or slow shadow costs the tenant nothing.
fn store_shadows(
    state: &AppState,
    verification_id: Uuid,
    first_no: usize,
    shadows: Vec<ShadowCall>,
) {
    if shadows.is_empty() {
        return;
    }
    let store = state.store.clone();
    let metrics = state.metrics.clone();
    tokio::spawn(async move {
        let mut next = first_no;
        for call in shadows {
            let Ok(logs) = call.await else { continue };
            metrics.attempts(&logs);
            let records: Vec<AttemptRecord> = logs
                .iter()
                .map(|a| {
                    next += 1;
                    attempt_record(verification_id, next, a)
                })
                .collect();
            if let Err(e) = store.insert_attempts(&records).await {
                tracing::error!(error = %e, %verification_id, "storing a shadow attempt failed");
            }
        }
    });
}

pub async fn verify(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    body: Body,
) -> Result<Answer, ApiError> {
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
            trace_id: telemetry::trace_id(headers),
            created_at: Utc::now(),
        },
        attempts: Vec::new(),
        shadows: Vec::new(),
        reservation: None,
        idempotency_key: None,
        replay: None,
    };

    let outcome = run(state, caller, tenant, headers, body, &mut draft).await;
    if let Some((status, body)) = draft.replay.take() {
        tracing::info!(tenant = %tenant.id, "idempotent replay");
        return Ok(Answer::Replay { status, body });
    }
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
        .map(|(i, a)| attempt_record(rec.id, i + 1, a))
        .collect();
    // Shadows are never charged; a check without a verdict costs nothing.
    let charged = match (&outcome, &rec.provider, &tenant.credits) {
        (Ok(()), Some(p), Some(c)) => c.cost_of(p),
        _ => 0,
    };
    let settlement = draft.reservation.as_ref().map(|r| r.settle(charged));
    let view = match &outcome {
        Ok(()) => {
            let mut v = Verification::from_records(rec, &attempts);
            v.credits = draft.reservation.as_ref().map(|r| CreditsUsed {
                charged: charged.min(r.amount),
                remaining: r.remaining(charged),
            });
            Some(v)
        }
        Err(_) => None,
    };
    let mut idempotency = None;
    let mut idempotency_forget = None;
    if let Some(key) = draft.idempotency_key.take() {
        match &view {
            Some(v) => {
                idempotency = Some(IdempotentAnswer {
                    tenant_id: tenant.id.clone(),
                    key,
                    http_status: 200,
                    response: serde_json::to_string(v).map_err(ApiError::internal)?,
                });
            }
            None => idempotency_forget = Some((tenant.id.clone(), key)),
        }
    }
    // The answer goes out only once its row, its ledger rows and its idempotent answer are
    // committed: nothing is lost, nothing is charged twice.
    state
        .writers
        .results
        .submit(ResultWrite {
            verification: rec.clone(),
            attempts: attempts.clone(),
            settlement,
            idempotency,
            idempotency_forget,
        })
        .instrument(telemetry::store_span(1 + attempts.len()))
        .await
        .map_err(ApiError::internal)?;
    state.metrics.verification(rec, &draft.attempts);
    if let Some(r) = &draft.reservation {
        state
            .metrics
            .set_credit_balance(&tenant.id, r.remaining(charged));
    }
    store_shadows(
        state,
        rec.id,
        attempts.len(),
        std::mem::take(&mut draft.shadows),
    );
    tracing::info!(
        tenant = %rec.tenant_id,
        verification_id = %rec.id,
        provider = rec.provider.as_deref().unwrap_or("-"),
        decision = rec.decision.as_deref().unwrap_or("-"),
        error_code = rec.error_code.as_deref().unwrap_or("-"),
        latency_ms = rec.latency_ms,
        "verification"
    );
    match (outcome, view) {
        (Ok(()), Some(v)) => Ok(Answer::Fresh(Box::new(v))),
        (Err(e), _) => Err(e),
        (Ok(()), None) => Err(ApiError::internal("a verdict without its view")),
    }
}

/// The providers whose answer can decide (and so be charged): shadows never do.
fn deciding_providers(tenant: &Tenant, provider_override: Option<&str>) -> Vec<String> {
    match (provider_override, tenant.routing.strategy) {
        (Some(p), _) => vec![p.to_owned()],
        (None, Strategy::Shadow) => tenant.routing.providers.iter().take(1).cloned().collect(),
        (None, _) => tenant.routing.providers.clone(),
    }
}

async fn run(
    state: &AppState,
    caller: &Caller,
    tenant: &Tenant,
    headers: &HeaderMap,
    body: Body,
    draft: &mut Draft,
) -> Result<(), ApiError> {
    let limits = caller.runtime.config.limits.clone();
    let idempotency_key = idempotency::key(headers)?;
    let intake_span = telemetry::intake_span();
    let sub: Submission = intake::read_submission(headers, body, &limits)
        .instrument(intake_span.clone())
        .await?;
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
    if let Some(p) = &sub.provider {
        if !tenant.allow_provider_override {
            return Err(ApiError::bad_request(
                "provider_override_not_allowed",
                "this tenant may not choose a provider per request",
            ));
        }
        if !tenant.routing.providers.contains(p) {
            return Err(ApiError::bad_request(
                "unknown_provider",
                format!("provider {p:?} is not one of this tenant's providers"),
            ));
        }
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
    if let Some(key) = idempotency_key {
        let fingerprint = idempotency::fingerprint(&[
            ("image_sha256", rec.image_sha256.clone().unwrap_or_default()),
            ("threshold", format!("{:?}", sub.threshold)),
            ("external_id", format!("{:?}", sub.external_id)),
            ("metadata", format!("{:?}", sub.metadata)),
            ("provider", format!("{:?}", sub.provider)),
        ]);
        match idempotency::begin(
            &state.store,
            &tenant.id,
            &key,
            &fingerprint,
            limits.reservation_ttl,
            limits.idempotency_wait,
        )
        .await?
        {
            Begin::Run => draft.idempotency_key = Some(key),
            Begin::Replay { status, body } => {
                draft.replay = Some((status, body));
                return Ok(());
            }
        }
    }
    let rec = &mut draft.record;
    let decode_limits = limits.clone();
    let image = tokio::task::spawn_blocking(move || intake::decode(bytes, &decode_limits))
        .instrument(intake_span.clone())
        .await
        .map_err(ApiError::internal)??;
    rec.image_width = i32::try_from(image.width).ok();
    rec.image_height = i32::try_from(image.height).ok();
    telemetry::record_intake(&intake_span, rec);
    drop(intake_span);

    let cost = credits::max_cost(tenant, &deciding_providers(tenant, sub.provider.as_deref()));
    let credits_span = telemetry::credits_span(&tenant.id, cost);
    let reserved = credits::reserve(
        &state.store,
        &state.writers,
        tenant,
        cost,
        limits.reservation_ttl,
    )
    .instrument(credits_span.clone())
    .await;
    credits_span.record(
        "outcome",
        match &reserved {
            Ok(Some(_)) => "reserved",
            Ok(None) => "unmetered",
            Err(e) if e.code == "insufficient_credits" => "insufficient",
            Err(_) => "error",
        },
    );
    drop(credits_span);
    draft.reservation = reserved?;
    let rec = &mut draft.record;

    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let threshold = rec.threshold;
    let request_id = rec.request_id.clone();
    // A retried request (same Idempotency-Key or X-Request-Id) lands on the same provider.
    let routing_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{}:{k}", tenant.id))
        .unwrap_or_else(|| request_id.clone());
    let (routed, shadows) = routing::route(
        RouteInput {
            runtime: &caller.runtime,
            tenant,
            image: &image,
            threshold,
            routing_key: &routing_key,
            request_id: &request_id,
            traceparent,
            provider_override: sub.provider.as_deref(),
        },
        &mut draft.attempts,
    )
    .await;
    draft.shadows = shadows;
    let rec = &mut draft.record;
    let routed = match routed {
        Ok(r) => r,
        Err(f) => {
            rec.provider = (!f.provider.is_empty()).then_some(f.provider.clone());
            return Err(ApiError::from_provider(&f.provider, &f.error));
        }
    };
    let policy_span = telemetry::policy_span();
    let judgement = policy_span.in_scope(|| policy::decide(tenant, threshold, &routed.answer));
    let subject = crate::identity::Subject {
        tenant,
        threshold,
        image: &image,
        answer: &routed.answer,
        verification_id: draft.record.id,
        models_dir: caller.runtime.config.models_dir.clone(),
    };
    let judgement = state
        .identity
        .review(&state.store, subject, judgement)
        .instrument(policy_span.clone())
        .await?;
    policy_span.record("decision", judgement.decision.as_str());
    drop(policy_span);
    let rec = &mut draft.record;
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
