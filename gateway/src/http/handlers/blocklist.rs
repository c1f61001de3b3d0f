//! Operator endpoints for a tenant's face blocklist: add the face of one of the tenant's
//! verifications, list, remove. Checked on every later verification of a tenant with
//! `blocklist` on (`identity.rs`).

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::Admin;
use crate::http::state::AppState;
use crate::store::StoreError;
use crate::store::identity::BlockedFace;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/admin/v1/tenants/{tenant_id}/blocklist",
            get(list).post(add),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/blocklist/{verification_id}",
            delete(remove),
        )
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlocklistAdd {
    /// A verification of the tenant whose face livegate kept (the tenant had `duplicates` or
    /// `blocklist` on when it was made, and a face was found).
    pub verification_id: Uuid,
    /// Free text for operators.
    pub reason: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlocklistEntry {
    /// The verification whose face is blocklisted.
    pub verification_id: Uuid,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Blocklist {
    pub tenant_id: String,
    pub data: Vec<BlocklistEntry>,
}

fn entry(f: &BlockedFace) -> BlocklistEntry {
    BlocklistEntry {
        verification_id: f.verification_id,
        reason: f.reason.clone(),
        created_at: f.created_at,
    }
}

fn known_tenant(state: &AppState, tenant_id: &str) -> Result<(), ApiError> {
    if state.runtime.load().config.tenants.contains_key(tenant_id) {
        Ok(())
    } else {
        Err(ApiError::not_found("tenant"))
    }
}

fn bad_path(_: PathRejection) -> ApiError {
    ApiError::new(
        ErrorCode::InvalidPath,
        "the path has an invalid verification id",
    )
}

/// Blocklist the face of one of the tenant's verifications.
#[utoipa::path(post, path = "/admin/v1/tenants/{tenant_id}/blocklist", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("tenant_id" = String, Path, description = "Tenant id")),
    request_body = BlocklistAdd,
    responses(
        (status = 201, body = BlocklistEntry),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown tenant, or no face kept for that verification", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already blocklisted", body = Problem, content_type = "application/problem+json")))]
pub async fn add(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<BlocklistAdd>, JsonRejection>,
) -> Result<(StatusCode, Json<BlocklistEntry>), ApiError> {
    let Path(tenant_id) = path.map_err(bad_path)?;
    known_tenant(&state, &tenant_id)?;
    let Json(req) = body.map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.body_text()))?;
    let face = match state
        .store
        .verification_face(&tenant_id, req.verification_id)
        .await
    {
        Ok(f) => f,
        Err(StoreError::NotFound) => {
            return Err(ApiError::new(
                ErrorCode::FaceNotFound,
                "no face was kept for that verification of this tenant (was duplicates or \
                 blocklist on, and was a face found?)",
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    };
    let blocked = BlockedFace {
        verification_id: face.verification_id,
        embedding: face.embedding,
        reason: req.reason,
        created_at: Utc::now().trunc_subsecs(6),
    };
    match state.store.insert_blocked(&tenant_id, &blocked).await {
        Ok(()) => {}
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                ErrorCode::AlreadyBlocklisted,
                "that verification's face is already on the blocklist",
            ));
        }
        Err(e) => return Err(ApiError::internal(e)),
    }
    tracing::info!(tenant = %tenant_id, verification_id = %blocked.verification_id, "face blocklisted");
    Ok((StatusCode::CREATED, Json(entry(&blocked))))
}

/// The tenant's blocklist, oldest first.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant_id}/blocklist", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, body = Blocklist),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Blocklist>, ApiError> {
    let Path(tenant_id) = path.map_err(bad_path)?;
    known_tenant(&state, &tenant_id)?;
    let faces = state
        .store
        .blocklist(&tenant_id)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(Blocklist {
        data: faces.iter().map(entry).collect(),
        tenant_id,
    }))
}

/// Take a verification's face off the tenant's blocklist.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/blocklist/{verification_id}", tag = "admin",
    security(("bearer" = []), ("api_key" = [])),
    params(
        ("tenant_id" = String, Path, description = "Tenant id"),
        ("verification_id" = Uuid, Path, description = "The blocklisted verification")),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn remove(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<(String, Uuid)>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path((tenant_id, verification_id)) = path.map_err(bad_path)?;
    known_tenant(&state, &tenant_id)?;
    match state
        .store
        .delete_blocked(&tenant_id, verification_id)
        .await
    {
        Ok(()) => {
            tracing::info!(tenant = %tenant_id, %verification_id, "face removed from blocklist");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(StoreError::NotFound) => Err(ApiError::not_found("blocklist entry")),
        Err(e) => Err(ApiError::internal(e)),
    }
}
