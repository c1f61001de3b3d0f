use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::http::state::AppState;
use crate::telemetry::metrics::CONTENT_TYPE;

/// Prometheus metrics.
///
/// OpenMetrics text: requests, provider latency, livegate's own overhead, errors, circuit
/// states, rate limits, load shedding, credits and store writes. Unauthenticated, like the
/// health checks: expose it to the scraper, not to the internet. It reads no database: credit
/// balances are those last read in the background (every second).
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", responses(
    (status = 200, description = "The metrics in the OpenMetrics text format", body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")))]
pub async fn scrape(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let rt = state.runtime.load();
    let breakers: Vec<(String, i64)> = rt
        .breaker_states()
        .into_iter()
        .map(|(name, state)| (name, state.gauge()))
        .collect();
    // Balances are read in the background (`http::probe`), never per scrape.
    let body = state
        .metrics
        .encode(&breakers)
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}
