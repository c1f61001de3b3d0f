//! Erasure: a tenant erases one of its verifications or every verification of a subject (its
//! `external_id`), an operator does the same for any tenant. The personal data goes; a
//! tombstone row keeps the counts and the ledger right, and the receipt is kept in `erasures`
//! (`store/retention.rs`).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::{Admin, Caller};
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::store::StoreError;
use crate::store::retention::{Erasure, ErasureRequest, Requester, Target};

/// What an erasure removed. Holds no personal data: the subject's external id is not echoed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErasureReceipt {
    /// The receipt: the same for every repeat of a verification's erasure.
    pub receipt_id: Uuid,
    pub tenant_id: String,
    /// `verification` or `subject`.
    pub scope: String,
    /// The erased verification (scope `verification`).
    pub verification_id: Option<Uuid>,
    /// Verifications made tombstones (decision, score and timing kept; personal data gone).
    pub verifications: i64,
    /// Face embeddings deleted.
    pub faces: i64,
    /// Blocklist entries deleted (only when asked with `blocklist=true`).
    pub blocklist: i64,
    /// `tenant` or `admin`.
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
}

impl From<&Erasure> for ErasureReceipt {
    fn from(e: &Erasure) -> Self {
        ErasureReceipt {
            receipt_id: e.id,
            tenant_id: e.tenant_id.clone(),
            scope: e.scope.clone(),
            verification_id: e.verification_id,
            verifications: e.verifications,
            faces: e.faces,
            blocklist: e.blocklist,
            requested_by: e.requested_by.clone(),
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EraseQuery {
    /// Also remove the erased verifications' faces from the tenant's blocklist (default
    /// false: a blocklist entry is the operator's, kept unless asked).
    #[param(value_type = Option<bool>)]
    pub blocklist: Option<String>,
}

fn blocklist_flag(q: &EraseQuery) -> Result<bool, ApiError> {
    match q.blocklist.as_deref() {
        None | Some("") | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidQuery,
            "blocklist must be true or false",
        )),
    }
}

fn bad_path(_: PathRejection) -> ApiError {
    ApiError::new(ErrorCode::InvalidPath, "the path is not valid")
}

/// The same bounds as on `POST /v1/liveness`: no stored external id falls outside them.
fn subject(external_id: String) -> Result<Target, ApiError> {
    use livegate_intake::MAX_EXTERNAL_ID;
    if external_id.is_empty() || external_id.len() > MAX_EXTERNAL_ID {
        return Err(ApiError::new(
            ErrorCode::InvalidExternalId,
            format!("external_id must be 1-{MAX_EXTERNAL_ID} bytes"),
        ));
    }
    Ok(Target::Subject(external_id))
}

fn verification(raw: &str) -> Result<Target, ApiError> {
    Uuid::parse_str(raw)
        .map(Target::Verification)
        .map_err(|_| ApiError::not_found("verification"))
}

async fn erase(
    state: &AppState,
    tenant_id: String,
    target: Target,
    requested_by: Requester,
    blocklist: bool,
) -> Result<(StatusCode, Json<ErasureReceipt>), ApiError> {
    let req = ErasureRequest {
        tenant_id,
        target,
        requested_by,
        blocklist,
    };
    let done = match state.store.erase(&req).await {
        Ok(e) => e,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("verification")),
        Err(e) => return Err(ApiError::store(e)),
    };
    state
        .identity
        .forget(&req.tenant_id, &done.erased_ids)
        .await;
    let scope = match req.target {
        Target::Verification(_) => "verification",
        Target::Subject(_) => "subject",
    };
    state.metrics.erasure(scope);
    tracing::info!(
        tenant = %req.tenant_id,
        receipt = %done.id,
        scope,
        verifications = done.verifications,
        faces = done.faces,
        blocklist = done.blocklist,
        by = requested_by.as_str(),
        "erasure"
    );
    Ok((StatusCode::ACCEPTED, Json(ErasureReceipt::from(&done))))
}

/// Erase one of the caller's verifications: its raw vendor bodies, metadata, external id,
/// image hash and face embedding go; the row stays as a tombstone. Idempotent (the same
/// receipt again); another tenant's id is 404.
#[utoipa::path(delete, path = "/v1/verifications/{id}", tag = "verifications",
    params(("id" = String, Path, description = "Verification id"), EraseQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, body = ErasureReceipt),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn erase_verification(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<EraseQuery>,
) -> Result<(StatusCode, Json<ErasureReceipt>), ApiError> {
    let blocklist = blocklist_flag(&q)?;
    let target = verification(&id)?;
    erase(
        &state,
        caller.tenant_id,
        target,
        Requester::Tenant,
        blocklist,
    )
    .await
}

/// Erase every verification of the caller's with this `external_id`. Idempotent: a subject
/// already erased (or never seen) answers 202 with nothing removed.
#[utoipa::path(delete, path = "/v1/subjects/{external_id}", tag = "verifications",
    params(("external_id" = String, Path, description = "The `external_id` given on POST /v1/liveness"), EraseQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, body = ErasureReceipt),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn erase_subject(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    Query(q): Query<EraseQuery>,
) -> Result<(StatusCode, Json<ErasureReceipt>), ApiError> {
    let Path(external_id) = path.map_err(bad_path)?;
    let blocklist = blocklist_flag(&q)?;
    erase(
        &state,
        caller.tenant_id,
        subject(external_id)?,
        Requester::Tenant,
        blocklist,
    )
    .await
}

/// An operator erases one verification of any tenant (also one no longer configured).
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/verifications/{id}", tag = "admin",
    params(("tenant_id" = String, Path, description = "Tenant id"),
        ("id" = String, Path, description = "Verification id"), EraseQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, body = ErasureReceipt),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_erase_verification(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
    Query(q): Query<EraseQuery>,
) -> Result<(StatusCode, Json<ErasureReceipt>), ApiError> {
    let Path((tenant_id, id)) = path.map_err(bad_path)?;
    let blocklist = blocklist_flag(&q)?;
    let target = verification(&id)?;
    erase(&state, tenant_id, target, Requester::Admin, blocklist).await
}

/// An operator erases every verification of a subject of any tenant.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant_id}/subjects/{external_id}", tag = "admin",
    params(("tenant_id" = String, Path, description = "Tenant id"),
        ("external_id" = String, Path, description = "The subject's `external_id`"), EraseQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, body = ErasureReceipt),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_erase_subject(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<(String, String)>, PathRejection>,
    Query(q): Query<EraseQuery>,
) -> Result<(StatusCode, Json<ErasureReceipt>), ApiError> {
    let Path((tenant_id, external_id)) = path.map_err(bad_path)?;
    let blocklist = blocklist_flag(&q)?;
    erase(
        &state,
        tenant_id,
        subject(external_id)?,
        Requester::Admin,
        blocklist,
    )
    .await
}
