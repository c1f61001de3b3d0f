use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::Admin;
use crate::http::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigInfo {
    /// `sha256:` of the live config file; every verification stores the hash it was decided under.
    pub hash: String,
    pub loaded_at: DateTime<Utc>,
    pub providers: Vec<ProviderInfo>,
    pub tenants: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderInfo {
    pub name: String,
    pub kind: String,
    /// Circuit breaker: `closed`, `open` or `half_open`.
    pub circuit: String,
}

/// The live configuration's hash and load time.
#[utoipa::path(get, path = "/admin/v1/config", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = ConfigInfo),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn config(State(state): State<AppState>, _admin: Admin) -> Json<ConfigInfo> {
    let rt = state.runtime.load();
    let providers = rt
        .breaker_states()
        .into_iter()
        .map(|(name, st)| ProviderInfo {
            kind: rt
                .config
                .providers
                .get(&name)
                .map(|p| p.kind.name().to_owned())
                .unwrap_or_default(),
            name,
            circuit: st.as_str().to_owned(),
        })
        .collect();
    Json(ConfigInfo {
        hash: rt.config.hash.clone(),
        loaded_at: rt.loaded_at,
        providers,
        tenants: rt.config.tenants.keys().cloned().collect(),
    })
}

#[derive(Debug, serde::Deserialize, ToSchema)]
#[schema(example = json!({"amount": 500, "reason": "invoice 2026-118 paid"}))]
pub struct CreditChange {
    /// Credits to add (a top-up) or, when negative, to take away (an adjustment). Not 0; at
    /// most 10^12 either way.
    pub amount: i64,
    /// Why, kept on the ledger row (1-500 characters).
    pub reason: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreditBalance {
    pub tenant: String,
    /// `topup` or `adjust`.
    pub kind: String,
    pub amount: i64,
    /// The balance after this change.
    pub balance: i64,
}

/// Top up or adjust a metered tenant's credits; every change is a ledger row with its reason.
#[utoipa::path(post, path = "/admin/v1/tenants/{id}/credits", tag = "admin",
    params(("id" = String, Path, description = "Tenant id")),
    request_body = CreditChange,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = CreditBalance),
        (status = 400, description = "Bad amount or reason", body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tenant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant is not metered (no `credits` in its config)", body = Problem, content_type = "application/problem+json")))]
pub async fn credits(
    State(state): State<AppState>,
    _admin: Admin,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Result<Json<CreditChange>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<CreditBalance>, ApiError> {
    let Json(change) = body.map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.body_text()))?;
    let (kind, balance) =
        change_credits(&state.store, &state.runtime.load().config, &id, &change).await?;
    Ok(Json(CreditBalance {
        tenant: id,
        kind: kind.to_owned(),
        amount: change.amount,
        balance,
    }))
}

/// Far beyond any real top-up, and far from overflowing a balance.
const MAX_CHANGE: u64 = 1_000_000_000_000;

/// Shared by the admin endpoint and `livegate credits add`.
pub async fn change_credits(
    store: &crate::store::DynStore,
    config: &crate::config::Config,
    tenant_id: &str,
    change: &CreditChange,
) -> Result<(&'static str, i64), ApiError> {
    use crate::store::ledger::{Adjustment, kind};
    let tenant = config
        .tenants
        .get(tenant_id)
        .ok_or_else(|| ApiError::not_found("tenant"))?;
    let credits = tenant.credits.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::TenantUnmetered,
            format!("tenant {tenant_id:?} has no `credits` in its config"),
        )
    })?;
    if change.amount == 0 || change.amount.unsigned_abs() > MAX_CHANGE {
        return Err(ApiError::new(
            ErrorCode::InvalidAmount,
            format!("amount must not be 0, and at most {MAX_CHANGE} either way"),
        ));
    }
    let reason = change.reason.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(ApiError::new(
            ErrorCode::InvalidReason,
            "reason must be 1-500 characters",
        ));
    }
    store.ensure_account(tenant_id, credits.initial).await?;
    let kind = if change.amount > 0 {
        kind::TOPUP
    } else {
        kind::ADJUST
    };
    let balance = store
        .adjust_credits(&Adjustment::new(tenant_id, change.amount, kind, reason))
        .await?;
    tracing::info!(
        tenant = tenant_id,
        amount = change.amount,
        kind,
        balance,
        "credits changed"
    );
    Ok((kind, balance))
}
