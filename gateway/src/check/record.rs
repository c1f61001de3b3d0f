//! The verification's row as it is being written: the draft every stage fills in, the provider
//! attempts, the shadows that finish after the answer, and the one commit that settles credits
//! and completes the idempotency key together with the row.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use chrono::{SubsecRound, Utc};
use tracing::Instrument;
use uuid::Uuid;

use crate::check::credits::Reservation;
use crate::check::route::{AttemptLog, ShadowCall};
use crate::check::services::Services;
use crate::check::verdict::{CreditsUsed, Verification};
use crate::config::{StoreRaw, Tenant};
use crate::error::{ApiError, current_request_id};
use crate::store::ledger::{IdempotentAnswer, KeptFace, ResultWrite};
use crate::store::{AttemptRecord, StoreError, VerificationRecord};
use crate::telemetry;
use crate::telemetry::metrics::Metrics;

/// What is known about a verification so far; becomes its row whatever happens.
pub struct Draft {
    pub record: VerificationRecord,
    pub attempts: Vec<AttemptLog>,
    pub shadows: Vec<ShadowCall>,
    pub reservation: Option<Reservation>,
    /// A reservation whose commit failed unheard (the database went away): released by id
    /// with the failure row, in case the database took it.
    pub unacknowledged: Option<crate::store::ledger::Settlement>,
    /// The `Idempotency-Key` this request holds.
    pub idempotency_key: Option<String>,
    /// The face embedding to keep with the row, and the tenant's face-check turn, held until
    /// the commit.
    pub face: Option<KeptFace>,
    pub face_turn: Option<crate::check::faces::Turn>,
    /// The caller's image while its hash (the row's `image_sha256`) is still to be taken: the
    /// pipeline hashes it while the vendor works, and the commit does if nothing did.
    pub unhashed: Option<bytes::Bytes>,
}

impl Draft {
    pub fn new(tenant: &Tenant, config_hash: &str, headers: &HeaderMap) -> Draft {
        Draft {
            record: VerificationRecord {
                id: Uuid::now_v7(),
                tenant_id: tenant.id.clone(),
                request_id: current_request_id(),
                provider: None,
                provider_request_id: None,
                decision: None,
                provider_decision: None,
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
                config_hash: Some(config_hash.to_owned()),
                trace_id: telemetry::trace_id(headers),
                // Both stores keep microseconds: the answer shows what a read will.
                created_at: Utc::now().trunc_subsecs(6),
                erased_at: None,
            },
            attempts: Vec::new(),
            shadows: Vec::new(),
            reservation: None,
            unacknowledged: None,
            idempotency_key: None,
            face: None,
            face_turn: None,
            unhashed: None,
        }
    }

    /// Take the image's hash now, if it is still to be taken.
    pub fn hash_image(&mut self) {
        if let Some(image) = self.unhashed.take() {
            self.record.image_sha256 = Some(crate::check::intake::sha256_hex(&image));
        }
    }

    /// Record a failure: the row keeps the error instead of a verdict.
    fn fail(&mut self, e: &ApiError) {
        let rec = &mut self.record;
        rec.http_status = i32::from(e.status.as_u16());
        rec.error_code = Some(e.code.as_str().to_owned());
        rec.error_detail = Some(e.detail.clone());
        rec.decision = None;
        rec.is_live = false;
    }
}

/// Commits the results, retrying with backoff while the database is unavailable, for at most
/// `grace` (`limits.commit_grace_ms`): a verdict the vendor was paid for outlives a short
/// outage (a restart, a failover). Past it the result goes to the local spool, committed when
/// the database returns. A retry after a commit whose acknowledgement was lost finds the row
/// already there (the verification id is its key) and counts as done: nothing is stored or
/// charged twice. The write is shared, not copied, between attempts and batch retries: it holds
/// the vendors' raw bodies.
async fn submit_results(
    services: &Services,
    write: &Arc<ResultWrite>,
    grace: Duration,
) -> Result<(), ApiError> {
    let give_up = Instant::now() + grace;
    let mut backoff = Duration::from_millis(100);
    let mut retried = false;
    loop {
        match services.writers.results.submit(Arc::clone(write)).await {
            Ok(()) => return Ok(()),
            Err(StoreError::Conflict(_)) if retried => return Ok(()),
            Err(StoreError::Unavailable(e)) if Instant::now() + backoff < give_up => {
                tracing::warn!(verification = %write.verification.id, error = %e, "results commit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                retried = true;
            }
            Err(StoreError::Unavailable(e)) => return spool(services, write, e).await,
            Err(e) => return Err(ApiError::store(e)),
        }
    }
}

/// The database stayed away past the grace: the result waits in the spool, or, without one
/// (or with a full one), it is lost and the client told to retry.
async fn spool(services: &Services, write: &ResultWrite, error: String) -> Result<(), ApiError> {
    let id = write.verification.id;
    match &services.spool {
        Some(spool) => match spool.append(write).await {
            Ok(()) => {
                tracing::warn!(verification = %id, error = %error, "database away: result spooled");
                return Ok(());
            }
            Err(e) => {
                tracing::error!(verification = %id, error = %e, "the spool refused a result");
            }
        },
        None => tracing::error!(verification = %id, "database away and no spool: result lost"),
    }
    Err(ApiError::store(StoreError::Unavailable(error)))
}

/// The attempt's row; the vendor's body kept as the tenant's `store_raw` says.
pub fn attempt_record(
    verification_id: Uuid,
    attempt_no: usize,
    a: &AttemptLog,
    store_raw: StoreRaw,
) -> AttemptRecord {
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
        raw_body: store_raw.apply(a.raw_body.as_deref()),
        created_at: a.at,
    }
}

fn observe_attempts(metrics: &Metrics, attempts: &[AttemptLog]) {
    for a in attempts {
        metrics.attempt(&a.provider, a.error_code.is_none(), a.latency_ms);
    }
}

/// Shadow calls finish in the background, after the answer: their attempts are appended to the
/// stored verification when they end, and a failing or slow shadow costs the tenant nothing.
fn store_shadows(
    services: &Services,
    verification_id: Uuid,
    first_no: usize,
    shadows: Vec<ShadowCall>,
    store_raw: StoreRaw,
) {
    if shadows.is_empty() {
        return;
    }
    let store = services.store.clone();
    let metrics = services.metrics.clone();
    services.background.spawn(async move {
        let mut next = first_no;
        for call in shadows {
            let Ok(logs) = call.await else { continue };
            observe_attempts(&metrics, &logs);
            let records: Vec<AttemptRecord> = logs
                .iter()
                .map(|a| {
                    next += 1;
                    attempt_record(verification_id, next, a, store_raw)
                })
                .collect();
            if let Err(e) = store.insert_attempts(&records).await {
                tracing::error!(error = %e, %verification_id, "storing a shadow attempt failed");
            }
        }
    });
}

/// What the tenant is charged: the answering provider's cost; shadows never, and a check
/// without a verdict costs nothing.
fn charge(outcome: &Result<(), ApiError>, rec: &VerificationRecord, tenant: &Tenant) -> i64 {
    match (outcome, &rec.provider, &tenant.credits) {
        (Ok(()), Some(p), Some(c)) => c.cost_of(p),
        _ => 0,
    }
}

/// What the commit does with the request's key: keep its answer, or release `(tenant, key)`.
type KeyOutcome = (Option<IdempotentAnswer>, Option<(String, String)>);

/// The idempotent answer to keep (a verdict), or the key to release (a failure).
fn idempotency_outcome(
    tenant: &Tenant,
    key: Option<String>,
    view: Option<&Verification>,
) -> Result<KeyOutcome, ApiError> {
    let Some(key) = key else {
        return Ok((None, None));
    };
    Ok(match view {
        Some(v) => (
            Some(IdempotentAnswer {
                tenant_id: tenant.id.clone(),
                key,
                http_status: 200,
                response: serde_json::to_string(v).map_err(ApiError::internal)?,
            }),
            None,
        ),
        None => (None, Some((tenant.id.clone(), key))),
    })
}

/// Store the row, its attempts, the settlement and the idempotent answer in one group commit,
/// then answer. The answer goes out only once all of that is committed: nothing is lost,
/// nothing is charged twice.
pub async fn commit(
    services: &Services,
    tenant: &Tenant,
    mut draft: Draft,
    outcome: Result<(), ApiError>,
    latency_ms: i64,
    grace: Duration,
) -> Result<Verification, ApiError> {
    draft.record.latency_ms = latency_ms;
    draft.hash_image();
    if let Err(e) = &outcome {
        draft.fail(e);
    }
    let rec = &draft.record;
    let attempts: Vec<AttemptRecord> = draft
        .attempts
        .iter()
        .enumerate()
        .map(|(i, a)| attempt_record(rec.id, i + 1, a, tenant.store_raw))
        .collect();
    let charged = charge(&outcome, rec, tenant);
    let view = outcome.is_ok().then(|| {
        let mut v = Verification::from_records(rec, &attempts);
        v.credits = draft.reservation.as_ref().map(|r| CreditsUsed {
            charged: charged.min(r.amount),
            remaining: r.remaining(charged),
        });
        v
    });
    let held_key = draft.idempotency_key.take();
    let (idempotency, idempotency_forget) =
        idempotency_outcome(tenant, held_key.clone(), view.as_ref())?;
    let settlement = draft
        .reservation
        .as_ref()
        .map(|r| r.settle(charged))
        .or_else(|| draft.unacknowledged.take());
    // `retention: 0`: answered to the caller, never stored.
    if tenant.retention.metadata.is_never_stored() {
        draft.record.external_id = None;
        draft.record.metadata = None;
    }
    let face = draft
        .face
        .take()
        .filter(|_| !tenant.retention.embeddings.is_never_stored());
    // A verdict tells the tenant's webhooks, in the same commit (failures have no verdict).
    let webhooks = match &view {
        Some(v) if !tenant.webhooks.is_empty() => {
            let mut told = v.clone();
            // The outbox is stored: it keeps only what the row keeps.
            if tenant.retention.metadata.is_never_stored() {
                told.external_id = None;
                told.metadata = None;
            }
            crate::check::events::messages(
                tenant,
                crate::check::events::VERIFICATION_COMPLETED,
                &told,
            )
        }
        _ => Vec::new(),
    };
    let write = Arc::new(ResultWrite {
        verification: draft.record,
        attempts,
        settlement,
        idempotency,
        idempotency_forget,
        face,
        webhooks,
    });
    let submitted = submit_results(services, &write, grace)
        .instrument(telemetry::store_span(1 + write.attempts.len()))
        .await;
    // The face is stored (or never will be): the tenant's next face check may run.
    if let Some(turn) = draft.face_turn.take() {
        turn.release().await;
    }
    // Whether stored or spooled, the key's holder is done: wake whoever waits on it.
    if let Some(key) = &held_key {
        services.idempotency_waiters.done(&tenant.id, key);
    }
    submitted?;
    let rec = &write.verification;
    observe(&services.metrics, rec, &draft.attempts);
    if let Some(r) = &draft.reservation {
        services
            .metrics
            .charged_credit_balance(&tenant.id, r.remaining(charged));
    }
    store_shadows(
        services,
        rec.id,
        write.attempts.len(),
        draft.shadows,
        tenant.store_raw,
    );
    log(rec);
    match (outcome, view) {
        (Ok(()), Some(v)) => Ok(v),
        (Err(e), _) => Err(e),
        (Ok(()), None) => Err(ApiError::internal("a verdict without its view")),
    }
}

fn observe(metrics: &Metrics, rec: &VerificationRecord, attempts: &[AttemptLog]) {
    let decision = match (&rec.decision, &rec.error_code) {
        (Some(d), None) => d.as_str(),
        _ => "error",
    };
    metrics.verification(
        &rec.tenant_id,
        decision,
        rec.provider.as_deref().unwrap_or("none"),
    );
    observe_attempts(metrics, attempts);
}

fn log(rec: &VerificationRecord) {
    tracing::info!(
        tenant = %rec.tenant_id,
        verification_id = %rec.id,
        provider = rec.provider.as_deref().unwrap_or("-"),
        decision = rec.decision.as_deref().unwrap_or("-"),
        error_code = rec.error_code.as_deref().unwrap_or("-"),
        latency_ms = rec.latency_ms,
        "verification"
    );
}

/// The row's fields for a successful verification: the answering provider's verdict under
/// the tenant's policy.
pub fn apply_verdict(
    rec: &mut VerificationRecord,
    provider: &str,
    answer: &livegate_providers::ProviderAnswer,
    judgement: &crate::check::decide::Judgement,
) -> Result<(), ApiError> {
    rec.provider = Some(provider.to_owned());
    rec.provider_request_id = answer.provider_request_id.clone();
    rec.score = answer.score;
    rec.spoof_type = answer.spoof_type.map(|s| s.as_str().to_owned());
    rec.face = answer
        .face
        .as_ref()
        .and_then(|f| serde_json::to_value(f).ok());
    rec.faces_detected = i32::try_from(answer.faces_detected).ok();
    rec.warnings = serde_json::to_value(&judgement.warnings).map_err(ApiError::internal)?;
    rec.decision = Some(judgement.decision.as_str().to_owned());
    rec.provider_decision = answer.upstream_decision.map(|d| {
        match d {
            livegate_providers::UpstreamDecision::Approved => "approved",
            livegate_providers::UpstreamDecision::Declined => "declined",
            livegate_providers::UpstreamDecision::Review => "review",
        }
        .to_owned()
    });
    rec.is_live = judgement.decision == crate::check::decide::Decision::Approved;
    rec.http_status = i32::from(StatusCode::OK.as_u16());
    Ok(())
}
