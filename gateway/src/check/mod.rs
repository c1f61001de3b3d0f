//! One verification from an authenticated request to its stored row, one module per stage:
//! [`intake`] reads and checks the submission, [`idempotency`] claims its key, [`credits`]
//! reserves what it may cost, [`route`] calls the tenant's providers, [`decide`] applies the
//! tenant's policy and [`faces`] its face checks, [`record`] commits the row, and [`verdict`]
//! is the answer's shape. Every authenticated request leaves a row, whatever failed.
//!
//! The pipeline takes the tenant and the runtime it was authenticated against, never HTTP
//! extractors: `http/handlers/liveness.rs` is its only caller.

pub mod admission;
pub mod credits;
pub mod decide;
pub mod events;
pub mod faces;
pub mod idempotency;
pub mod intake;
pub mod record;
pub mod route;
pub mod services;
pub mod verdict;

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use tracing::Instrument;

use livegate_providers::ImageInput;

use crate::check::decide::Judgement;
use crate::check::idempotency::Begin;
use crate::check::record::Draft;
use crate::check::route::{RouteInput, Routed};
use crate::check::verdict::Verification;
use crate::config::{Strategy, Tenant};
use crate::error::ApiError;
use crate::runtime::Runtime;
use crate::telemetry;
pub use services::Services;

/// A fresh verdict, or the replay of an earlier one.
pub enum Answer {
    Fresh(Box<Verification>),
    Replay { status: StatusCode, body: String },
}

/// The request as the pipeline sees it: who asked, under which runtime, with which headers.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    pub runtime: &'a Arc<Runtime>,
    pub tenant: &'a Tenant,
    pub headers: &'a HeaderMap,
}

/// How a run ended: a verdict to store, or the replay of an earlier answer.
enum Ran {
    Verdict,
    Replay { status: StatusCode, body: String },
}

pub async fn verify(services: &Services, req: Request<'_>, body: Body) -> Result<Answer, ApiError> {
    let started = Instant::now();
    let mut draft = Draft::new(req.tenant, &req.runtime.config.hash, req.headers);
    let outcome = match run(services, req, body, &mut draft).await {
        Ok(Ran::Replay { status, body }) => {
            tracing::info!(tenant = %req.tenant.id, "idempotent replay");
            return Ok(Answer::Replay { status, body });
        }
        Ok(Ran::Verdict) => Ok(()),
        Err(e) => Err(e),
    };
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let grace = req.runtime.config.limits.commit_grace;
    let view = record::commit(services, req.tenant, draft, outcome, latency_ms, grace).await?;
    Ok(Answer::Fresh(Box::new(view)))
}

/// The stages in order; each fills in its part of the draft.
async fn run(
    services: &Services,
    req: Request<'_>,
    body: Body,
    draft: &mut Draft,
) -> Result<Ran, ApiError> {
    let limits = &req.runtime.config.limits;
    let idempotency_key = idempotency::key(req.headers)?;
    let intake_span = telemetry::intake_span();
    let sub = intake::read_submission(req.headers, body, limits)
        .instrument(intake_span.clone())
        .await?;
    let intake::Admitted { sub, image } = intake::admit(req.tenant, sub, &mut draft.record)?;
    draft.unhashed = Some(image.clone());
    if let Some(key) = idempotency_key {
        // The key's fingerprint holds the image's hash.
        draft.hash_image();
        match claim(services, req, &sub, key, draft).await? {
            Begin::Run => {}
            Begin::Replay { status, body } => return Ok(Ran::Replay { status, body }),
        }
    }
    let (image, _decode_grant) = decode(services, req, image, draft)
        .instrument(intake_span)
        .await?;
    draft.reservation = reserve(services, req, sub.provider.as_deref(), draft).await?;
    // The image is hashed while the vendor works: its 0.14 ms per 200 KB (SHA-256 already at
    // the speed of the CPU's SHA extensions) then adds nothing to the answer's latency. The
    // vendor's request goes first: the yield lets its connection task write it before the hash
    // takes the thread.
    let unhashed = draft.unhashed.take();
    let hashing = async move {
        tokio::task::yield_now().await;
        unhashed.map(|image| intake::sha256_hex(&image))
    };
    let (routed, sha256) = tokio::join!(
        call_providers(req, &image, sub.provider.as_deref(), draft),
        hashing
    );
    if sha256.is_some() {
        draft.record.image_sha256 = sha256;
    }
    let routed = routed?;
    let judgement = judge(services, req, &image, &routed, draft).await?;
    record::apply_verdict(
        &mut draft.record,
        &routed.provider,
        &routed.answer,
        &judgement,
    )?;
    Ok(Ran::Verdict)
}

/// Claim the `Idempotency-Key` for this exact request, or learn the answer of the one that had it.
async fn claim(
    services: &Services,
    req: Request<'_>,
    sub: &intake::Submission,
    key: String,
    draft: &mut Draft,
) -> Result<Begin, ApiError> {
    let fingerprint = idempotency::fingerprint(&[
        (
            "image_sha256",
            draft.record.image_sha256.clone().unwrap_or_default(),
        ),
        ("threshold", format!("{:?}", sub.threshold)),
        ("external_id", format!("{:?}", sub.external_id)),
        ("metadata", format!("{:?}", sub.metadata)),
        ("provider", format!("{:?}", sub.provider)),
    ]);
    let limits = &req.runtime.config.limits;
    let begin = idempotency::begin(
        &services.store,
        &services.idempotency_waiters,
        &req.tenant.id,
        &key,
        &fingerprint,
        draft.record.id,
        limits.reservation_ttl,
        limits.idempotency_wait,
    )
    .await?;
    if matches!(begin, Begin::Run) {
        draft.idempotency_key = Some(key);
    }
    Ok(begin)
}

/// Check the image from its header; decode it only when pixels are needed (see
/// [`needs_pixels`]), once, after waiting for room in the decoded-bytes budget, off the async
/// threads. The row gets the image's dimensions. The grant is held as long as the decoded
/// image lives.
async fn decode(
    services: &Services,
    req: Request<'_>,
    bytes: bytes::Bytes,
    draft: &mut Draft,
) -> Result<(ImageInput, Option<admission::DecodeGrant>), ApiError> {
    let limits = &req.runtime.config.limits;
    let header = intake::inspect(&bytes, limits)?;
    let (image, grant) = if needs_pixels(req, &header, bytes.len()) {
        let grant = services
            .admission
            .decode_room(
                header.decode_cost(),
                &req.tenant.id,
                limits,
                &services.metrics,
                admission::DECODE_WAIT,
            )
            .await?;
        let limits = limits.clone();
        let image =
            tokio::task::spawn_blocking(move || intake::decode_with(bytes, &header, &limits))
                .await
                .map_err(ApiError::internal)??;
        (image, Some(grant))
    } else {
        (intake::undecoded(bytes, &header), None)
    };
    let rec = &mut draft.record;
    rec.image_width = i32::try_from(image.width).ok();
    rec.image_height = i32::try_from(image.height).ok();
    telemetry::record_intake(
        &tracing::Span::current(),
        rec.image_format.as_deref(),
        rec.image_width,
        rec.image_height,
    );
    Ok((image, grant))
}

/// Whether anything on this request's way needs the image's pixels: the tenant decodes every
/// image (`intake.decode: always`), checks faces, or routes to the built-in engine or to a
/// provider (shadows included) that cannot take the image as sent. An image only forwarded is
/// never decoded: its header and structure were checked, and the vendor judges the rest.
fn needs_pixels(req: Request<'_>, header: &intake::Header, len: usize) -> bool {
    let tenant = req.tenant;
    if tenant.decode == crate::config::Decode::Always || tenant.face_checks.enabled() {
        return true;
    }
    let (w, h) = header.oriented_size();
    // Every provider of the route, whichever the request names: shadows still run beside an
    // override, and the override is one of them.
    tenant
        .routing
        .providers
        .iter()
        .any(|name| match req.runtime.provider(name) {
            Some(g) => {
                g.provider.kind() == "embedded"
                    || !g
                        .provider
                        .capabilities()
                        .takes_as_is(header.format, w, h, len)
            }
            // Unknown here means the route refuses it later; decoding would not help.
            None => false,
        })
}

/// The providers whose answer can decide (and so be charged): shadows never do.
fn deciding_providers(tenant: &Tenant, provider_override: Option<&str>) -> Vec<String> {
    match (provider_override, tenant.routing.strategy) {
        (Some(p), _) => vec![p.to_owned()],
        (None, Strategy::Shadow) => tenant.routing.providers.iter().take(1).cloned().collect(),
        (None, _) => tenant.routing.providers.clone(),
    }
}

/// Reserve the cost of the dearest provider the route can end on.
async fn reserve(
    services: &Services,
    req: Request<'_>,
    provider_override: Option<&str>,
    draft: &mut Draft,
) -> Result<Option<credits::Reservation>, ApiError> {
    let tenant = req.tenant;
    let cost = credits::max_cost(tenant, &deciding_providers(tenant, provider_override));
    let span = telemetry::credits_span(&tenant.id, cost);
    let id = uuid::Uuid::now_v7();
    let reserved = credits::reserve(
        &services.store,
        &services.writers,
        tenant,
        id,
        cost,
        req.runtime.config.limits.reservation_ttl,
    )
    .instrument(span.clone())
    .await;
    span.record("outcome", credits::outcome_label(&reserved));
    // The database went away mid-reservation: it may have taken it without anyone hearing.
    // The failure row releases it by id (a release of nothing is nothing), so credits are not
    // held until the reservation expires.
    if let Err(e) = &reserved
        && e.code == crate::error::ErrorCode::StoreUnavailable
        && tenant.credits.is_some()
    {
        draft.unacknowledged = Some(crate::store::ledger::Settlement {
            reservation_id: id,
            tenant_id: tenant.id.clone(),
            reserved: cost,
            charged: 0,
        });
    }
    reserved
}

/// Route to the tenant's providers; the attempts and shadows go on the draft.
async fn call_providers(
    req: Request<'_>,
    image: &ImageInput,
    provider_override: Option<&str>,
    draft: &mut Draft,
) -> Result<Routed, ApiError> {
    let traceparent = req
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let request_id = draft.record.request_id.clone();
    // A retried request (same Idempotency-Key or X-Request-Id) lands on the same provider.
    let routing_key = req
        .headers
        .get(idempotency::HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{}:{k}", req.tenant.id))
        .unwrap_or_else(|| request_id.clone());
    let (routed, shadows) = route::route(
        RouteInput {
            runtime: req.runtime,
            tenant: req.tenant,
            image,
            threshold: draft.record.threshold,
            routing_key: &routing_key,
            request_id: &request_id,
            traceparent,
            provider_override,
        },
        &mut draft.attempts,
    )
    .await;
    draft.shadows = shadows;
    routed.map_err(|f| {
        draft.record.provider = (!f.provider.is_empty()).then_some(f.provider.clone());
        ApiError::from_provider(&f.provider, &f.error)
    })
}

/// The tenant's policy on the provider's answer, then its face checks.
async fn judge(
    services: &Services,
    req: Request<'_>,
    image: &ImageInput,
    routed: &Routed,
    draft: &mut Draft,
) -> Result<Judgement, ApiError> {
    let threshold = draft.record.threshold;
    let span = telemetry::policy_span();
    let judgement = span.in_scope(|| decide::decide(req.tenant, threshold, &routed.answer));
    let subject = faces::Subject {
        tenant: req.tenant,
        threshold,
        image,
        answer: &routed.answer,
        verification_id: draft.record.id,
        models_dir: req.runtime.config.models_dir.clone(),
    };
    let reviewed = services
        .identity
        .review(&services.store, subject, judgement)
        .instrument(span.clone())
        .await?;
    draft.face = reviewed.face;
    draft.face_turn = reviewed.turn;
    span.record("decision", reviewed.judgement.decision.as_str());
    Ok(reviewed.judgement)
}
