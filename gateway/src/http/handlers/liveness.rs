use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::check::verdict::Verification;
use crate::check::{self, Answer};
use crate::error::{ApiError, Problem, REQUEST_ID, current_request_id};
use crate::http::auth::Caller;
use crate::http::state::AppState;
use crate::telemetry::server_timing;

/// Multipart form of `POST /v1/liveness` (documentation only; the body is streamed).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LivenessForm {
    /// The selfie: JPEG, PNG, WebP or TIFF, at most 5 MiB. Aliases: `user_image`, `selfie`.
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// 0-1; may raise the tenant's threshold, never lower it.
    threshold: Option<f64>,
    /// Your reference for this check (1-256 characters).
    external_id: Option<String>,
    /// A JSON object, as a string, stored with the verification.
    metadata: Option<String>,
}

/// JSON form of `POST /v1/liveness`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LivenessJson {
    /// The selfie, base64 (a `data:` URL is accepted too).
    image_base64: String,
    /// 0-1; may raise the tenant's threshold, never lower it.
    threshold: Option<f64>,
    external_id: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

/// Check one selfie for liveness and return the normalized verdict. Every authenticated request
/// is stored, failures included.
#[utoipa::path(post, path = "/v1/liveness", tag = "liveness",
    request_body(description = "The selfie and options", content(
        (LivenessForm = "multipart/form-data"),
        (LivenessJson = "application/json"))),
    params(("Idempotency-Key" = Option<String>, Header,
        description = "1-255 visible ASCII characters. A repeat with the same request replays the stored verdict (same id, no charge, no upstream call; header `Idempotent-Replayed: true`); with a different request: 422. Keys last 24 h; a request that failed releases its key.")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The verdict (approved, declined or review)", body = Verification),
        (status = 400, description = "Bad input: an undecodable (`image_undecodable`), truncated (`image_truncated`) or oversized image (`image_too_many_pixels`, `image_too_large_decoded`), an invalid threshold, external_id, metadata or multipart", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown API key", body = Problem, content_type = "application/problem+json"),
        (status = 402, description = "Not enough credits (`insufficient_credits`, with the balance)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A request with this Idempotency-Key is still running", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit (see Retry-After and RateLimit)", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Image over the size cap", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not JPEG/PNG/WebP/TIFF, or an unsupported content type", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The provider cannot take this image, or the Idempotency-Key was used with a different request", body = Problem, content_type = "application/problem+json"),
        (status = 408, description = "The request body stalled or did not arrive in time (`request_timeout`)", body = Problem, content_type = "application/problem+json"),
        (status = 500, description = "Internal error", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "The provider failed (auth, credits, bad answer)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The provider is unavailable, the database is (`store_unavailable`), or this instance is at its limit of work in flight (`overloaded`); all with Retry-After", body = Problem, content_type = "application/problem+json"),
        (status = 504, description = "The provider timed out", body = Problem, content_type = "application/problem+json")))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // The verification runs in a task of its own: a client that hangs up does not cancel it,
    // so its row, its credits, its idempotency key and its vendor attempts end exactly as if
    // it had waited (the route's deadline bounds the work).
    let services = state.services();
    let background = services.background.clone();
    // Refused here, before any work, when the instance or this tenant is at its cap; the
    // ticket goes with the task, so a request whose client left still counts.
    let ticket = services.admission.enter(
        &caller.tenant_id,
        &caller.runtime.config.limits,
        &services.metrics,
    )?;
    let run = async move {
        let req = caller.request(&headers)?;
        let answer = check::verify(&services, req, body).await;
        drop(ticket);
        answer
    };
    // The task keeps the request's id, span and provider-time account.
    let detached = REQUEST_ID
        .scope(current_request_id(), server_timing::carried(run))
        .instrument(tracing::Span::current());
    let answer = background
        .spawn(detached)
        .await
        .map_err(ApiError::internal)??;
    Ok(match answer {
        Answer::Fresh(v) => Json(*v).into_response(),
        Answer::Replay { status, body } => {
            let mut resp = (status, body).into_response();
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert("idempotent-replayed", HeaderValue::from_static("true"));
            resp
        }
    })
}
