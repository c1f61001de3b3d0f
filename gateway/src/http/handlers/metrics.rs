use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::error::ApiError;
use crate::http::state::AppState;
use crate::telemetry::metrics::CONTENT_TYPE;

/// Prometheus metrics.
///
/// OpenMetrics text: requests, provider latency, livegate's own overhead, errors, circuit
/// states, rate limits, credits and store writes. Unauthenticated, like the health checks:
/// expose it to the scraper, not to the internet.
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
    // Balances move on every instance: read them from the store at scrape time, so each
    // instance reports the shared truth rather than what it last saw.
    for t in rt.config.tenants.values().filter(|t| t.credits.is_some()) {
        match state.store.balance(&t.id).await {
            Ok(Some(b)) => state.metrics.set_credit_balance(&t.id, b),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(tenant = %t.id, error = %e, "reading a balance for /metrics failed")
            }
        }
    }
    let body = state
        .metrics
        .encode(&breakers)
        .map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body))
}
