//! `X-Request-Id`: accepted when sane, minted otherwise, echoed back and scoped over the
//! request for problem bodies, logs and the server span.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::REQUEST_ID;
use crate::telemetry;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accept a caller's `X-Request-Id` when it is sane, otherwise mint one; echo it back and make
/// it available to problem bodies and logs.
pub async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = telemetry::server_span(&req, &id);
    let mut resp = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span.clone()),
        )
        .await;
    telemetry::record_response(&span, resp.status());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}
