//! Who is calling: a tenant key (`Caller`) or an admin key (`Admin`), from
//! `Authorization: Bearer` or `X-API-Key`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::config::Tenant;
use crate::error::{ApiError, ErrorCode};
use crate::http::state::AppState;
use crate::runtime::Runtime;
use crate::telemetry;

/// The API key from `Authorization: Bearer <key>` or `X-API-Key`.
pub fn presented_key(parts: &Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = v.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (it.next(), it.next())
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_owned());
        }
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The authenticated tenant, with the runtime it was resolved against (so a config reload in
/// the middle of a request does not change its rules).
#[derive(Debug, Clone)]
pub struct Caller {
    pub runtime: Arc<Runtime>,
    pub tenant_id: String,
    /// The presented key's hash (its `id()` names it in audit rows).
    pub key: crate::config::KeyHash,
}

impl Caller {
    /// The pipeline's view of this request.
    pub fn request<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> Result<crate::check::Request<'a>, ApiError> {
        Ok(crate::check::Request {
            runtime: &self.runtime,
            tenant: self.tenant()?,
            headers,
        })
    }

    pub fn tenant(&self) -> Result<&Tenant, ApiError> {
        self.runtime
            .config
            .tenants
            .get(&self.tenant_id)
            .ok_or_else(ApiError::unauthorized)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = telemetry::auth_span();
        let runtime = state.runtime.load_full();
        let hash = presented_key(parts).map(|k| crate::config::KeyHash::of_key(&k));
        let tenant_id = hash
            .as_ref()
            .and_then(|h| runtime.tenant_for_hash(h).map(|t| t.id.clone()));
        telemetry::record_auth(&auth, tenant_id.as_deref());
        let (Some(tenant_id), Some(key)) = (tenant_id, hash) else {
            return Err(ApiError::unauthorized());
        };
        Ok(Caller {
            runtime,
            tenant_id,
            key,
        })
    }
}

/// An operator holding one of the `admin.keys`. A tenant key is recognised and refused (403).
#[derive(Debug, Clone)]
pub struct Admin {
    /// The admin key's id ([`crate::config::KeyHash::id`]), for audit rows.
    pub key_id: String,
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = presented_key(parts).ok_or_else(ApiError::unauthorized)?;
        let hash = crate::config::KeyHash::of_key(&key);
        let rt = state.runtime.load();
        if rt.is_admin_hash(&hash) {
            Ok(Admin { key_id: hash.id() })
        } else if rt.tenant_for_hash(&hash).is_some() {
            Err(ApiError::new(
                ErrorCode::Forbidden,
                "this endpoint needs an admin key",
            ))
        } else {
            Err(ApiError::unauthorized())
        }
    }
}
