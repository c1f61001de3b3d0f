//! `Server-Timing: provider;dur=…, overhead;dur=…, total;dur=…` on every answer, so any client
//! sees livegate's own cost apart from the providers'; the same split feeds the overhead
//! histogram, and problem answers feed the errors counter.

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;

use crate::error::ProblemCode;
use crate::http::state::AppState;
use crate::telemetry::server_timing::{header_value, with_provider_time};

pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

pub async fn layer(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let is_verification = req.method() == Method::POST && req.uri().path() == "/v1/liveness";
    let (mut resp, provider) = with_provider_time(next.run(req)).await;
    let total = started.elapsed();
    let provider = provider.min(total);
    if is_verification {
        state
            .metrics
            .observe_overhead(total.saturating_sub(provider).as_secs_f64());
    }
    if let Some(code) = resp.extensions().get::<ProblemCode>() {
        state.metrics.error(code.0.as_str());
    }
    if let Ok(v) = HeaderValue::from_str(&header_value(provider, total)) {
        resp.headers_mut().insert(SERVER_TIMING.clone(), v);
    }
    resp
}
