use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::app::AppState;
use crate::metrics::CONTENT_TYPE;
use crate::problem::ApiError;

/// Prometheus metrics.
///
/// OpenMetrics text: requests, provider latency, livegate's own overhead, errors, circuit
/// states, rate limits, credits and store writes. Unauthenticated, like the health checks:
/// expose it to the scraper, not to the internet.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", responses(
    (status = 200, description = "The metrics in the OpenMetrics text format", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn scrape(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let breakers = state.runtime.load().breaker_states();
    let body = state
        .metrics
        .encode(&breakers)
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}
