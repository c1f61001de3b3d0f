use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::{AppState, presented_key};
use crate::problem::{ApiError, Problem};

/// An operator holding one of the `admin.keys`. A tenant key is recognised and refused (403).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(parts).ok_or_else(ApiError::unauthorized)?;
        let rt = state.runtime.load();
        if rt.is_admin_key(&key) {
            Ok(Admin)
        } else if rt.tenant_for_key(&key).is_some() {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this endpoint needs an admin key",
            ))
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

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
