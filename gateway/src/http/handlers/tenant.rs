use axum::Json;
use axum::extract::State;
use chrono::{TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::RateSpec;
use crate::error::{ApiError, Problem};
use crate::http::auth::Caller;
use crate::http::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitInfo {
    pub per_second: f64,
    pub burst: u32,
}

impl From<RateSpec> for RateLimitInfo {
    fn from(s: RateSpec) -> Self {
        Self {
            per_second: s.per_second,
            burst: s.burst,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"tenant": "acme", "balance": 863, "rate_limit": {"per_second": 50.0, "burst": 10}, "usage_today": 137}))]
pub struct TenantInfo {
    pub tenant: String,
    /// Credits left (open reservations already taken out); `null` for an unmetered tenant.
    pub balance: Option<i64>,
    /// The tenant's limit; `null` when it has none.
    pub rate_limit: Option<RateLimitInfo>,
    /// Verifications that reached a decision since 00:00 UTC.
    pub usage_today: i64,
}

/// The calling tenant: balance, rate limit and today's usage.
#[utoipa::path(get, path = "/v1/tenant", tag = "tenant",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = TenantInfo),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over the rate limit", body = Problem, content_type = "application/problem+json")))]
pub async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TenantInfo>, ApiError> {
    let tenant = caller.tenant()?;
    let balance = match &tenant.credits {
        // The account opens on first use; a read is enough once it exists.
        Some(c) => match state.store.balance(&tenant.id).await? {
            Some(b) => Some(b),
            None => {
                state.store.ensure_account(&tenant.id, c.initial).await?;
                state.store.balance(&tenant.id).await?
            }
        },
        None => None,
    };
    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default();
    let usage_today = state
        .store
        .decided_since(&tenant.id, Utc.from_utc_datetime(&today))
        .await?;
    Ok(Json(TenantInfo {
        tenant: tenant.id.clone(),
        balance,
        rate_limit: tenant.rate_limit.map(Into::into),
        usage_today,
    }))
}
