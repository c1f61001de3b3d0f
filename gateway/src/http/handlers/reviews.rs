//! The review queue: `review` decisions waiting for a person, and their resolution, written
//! once (`store/reviews.rs`). Operators see and resolve every tenant's; a tenant sees its own,
//! and resolves them when its config says `reviews: tenant`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::check::decide::Decision;
use crate::check::verdict::{ReviewState, Verification};
use crate::config::ReviewsBy;
use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::{Admin, Caller};
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::store::StoreError;
use crate::store::reviews::{QueueFilter, QueuedReview, Review};

/// A `review` verification in the queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewItem {
    pub verification_id: Uuid,
    pub tenant_id: String,
    pub created_at: DateTime<Utc>,
    /// The provider whose answer was put to review.
    pub provider: Option<String>,
    pub score: Option<f64>,
    pub threshold: f64,
    /// The warnings that led to `review`, as on the verification.
    #[schema(value_type = Vec<Object>)]
    pub warnings: serde_json::Value,
    pub review: ReviewState,
}

impl From<&QueuedReview> for ReviewItem {
    fn from(q: &QueuedReview) -> Self {
        ReviewItem {
            verification_id: q.verification_id,
            tenant_id: q.tenant_id.clone(),
            created_at: q.created_at,
            provider: q.provider.clone(),
            score: q.score,
            threshold: q.threshold,
            warnings: q.warnings.clone(),
            review: ReviewState::of(q.resolution.as_ref()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewPage {
    pub data: Vec<ReviewItem>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueueQuery {
    /// Only this tenant (operators; a tenant key always sees its own).
    pub tenant: Option<String>,
    /// `open` (default), `approved`, `declined` or `all`.
    pub status: Option<String>,
    /// Page size, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"decision": "approved", "reason": "ID checked by phone", "reviewer": "ana@ops"}))]
pub struct ReviewResolve {
    /// `approved` or `declined`.
    pub decision: String,
    /// Why (at most 500 characters).
    pub reason: Option<String>,
    /// Who decided, as the reviewer names themselves (at most 200 characters).
    pub reviewer: Option<String>,
}

fn queue_filter(q: &QueueQuery, tenant: Option<String>) -> Result<QueueFilter, ApiError> {
    let limit = super::paging::limit(q.limit.as_deref())?;
    let before = super::paging::cursor(q.cursor.as_deref())?;
    let status = match q.status.as_deref() {
        None | Some("") | Some("open") => Some("open".to_owned()),
        Some("all") => None,
        Some(s @ ("approved" | "declined")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "status must be open, approved, declined or all",
            ));
        }
    };
    Ok(QueueFilter {
        tenant_id: tenant,
        status,
        before,
        limit,
    })
}

async fn page(state: &AppState, f: QueueFilter) -> Result<Json<ReviewPage>, ApiError> {
    let rows = state.store.review_queue(&f).await?;
    let next_cursor =
        super::paging::next_cursor(rows.len(), f.limit, rows.last().map(|r| r.verification_id));
    Ok(Json(ReviewPage {
        data: rows.iter().map(ReviewItem::from).collect(),
        next_cursor,
    }))
}

/// Optional operator text: blank is none; longer than `max` characters or with control
/// characters is refused with `code`.
fn free_text(
    value: Option<String>,
    max: usize,
    code: ErrorCode,
    name: &str,
) -> Result<Option<String>, ApiError> {
    let value = value.filter(|v| !v.trim().is_empty());
    match value {
        Some(v) if v.chars().count() > max || v.chars().any(char::is_control) => {
            Err(ApiError::new(
                code,
                format!("{name} must be at most {max} characters, without control characters"),
            ))
        }
        v => Ok(v),
    }
}

/// The stored resolution, checked.
fn resolution(
    body: Result<Json<ReviewResolve>, JsonRejection>,
    id: Uuid,
    tenant_id: String,
    resolved_by: String,
) -> Result<Review, ApiError> {
    let Json(b) = body.map_err(|e| ApiError::new(ErrorCode::InvalidBody, e.body_text()))?;
    let decision = match Decision::parse(&b.decision) {
        Some(d @ (Decision::Approved | Decision::Declined)) => d,
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidDecision,
                "decision must be approved or declined",
            ));
        }
    };
    let reason = free_text(b.reason, 500, ErrorCode::InvalidReason, "reason")?;
    let reviewer = free_text(b.reviewer, 200, ErrorCode::InvalidReviewer, "reviewer")?;
    Ok(Review {
        verification_id: id,
        tenant_id,
        decision: decision.as_str().to_owned(),
        reason,
        reviewer,
        resolved_by,
        // Both stores keep microseconds: the answer shows what a later read shows.
        created_at: Utc::now().trunc_subsecs(6),
    })
}

async fn resolve(state: &AppState, r: Review) -> Result<Json<ReviewItem>, ApiError> {
    let rec = match state
        .store
        .get_verification(&r.tenant_id, r.verification_id)
        .await
    {
        Ok(rec) => rec,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("review")),
        Err(e) => return Err(ApiError::store(e)),
    };
    // The webhooks get the verification as `GET /v1/verifications/{id}` will show it.
    let messages = match state.runtime.load().config.tenants.get(&r.tenant_id) {
        Some(t) if !t.webhooks.is_empty() => {
            let attempts = state.store.attempts(r.verification_id).await?;
            let view = Verification::from_records(&rec, &attempts).with_review(Some(&r));
            crate::check::events::messages(t, crate::check::events::REVIEW_RESOLVED, &view)
        }
        _ => Vec::new(),
    };
    let stored = match state.store.resolve_review(&r, &messages).await {
        Ok(s) => s,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("review")),
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(
                ErrorCode::ReviewAlreadyResolved,
                "this review was already resolved; a resolution is never changed",
            ));
        }
        Err(e) => return Err(ApiError::store(e)),
    };
    state
        .metrics
        .review_resolved(&stored.tenant_id, &stored.decision);
    tracing::info!(
        tenant = %stored.tenant_id,
        verification = %stored.verification_id,
        decision = %stored.decision,
        by = %stored.resolved_by,
        "review resolved"
    );
    Ok(Json(ReviewItem {
        verification_id: rec.id,
        tenant_id: rec.tenant_id,
        created_at: rec.created_at,
        provider: rec.provider,
        score: rec.score,
        threshold: rec.threshold,
        warnings: rec.warnings,
        review: ReviewState::of(Some(&stored)),
    }))
}

fn review_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::not_found("review"))?;
    Uuid::parse_str(&raw).map_err(|_| ApiError::not_found("review"))
}

/// Every tenant's review queue (open by default), newest first.
#[utoipa::path(get, path = "/admin/v1/reviews", tag = "admin", params(QueueQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = ReviewPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn admin_list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<QueueQuery>,
) -> Result<Json<ReviewPage>, ApiError> {
    let f = queue_filter(&q, q.tenant.clone())?;
    page(&state, f).await
}

/// Resolve a `review` decision of any tenant, once; the admin key's id is recorded.
#[utoipa::path(post, path = "/admin/v1/reviews/{id}", tag = "admin",
    params(("id" = String, Path, description = "The verification's id")),
    request_body = ReviewResolve,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = ReviewItem),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No `review` verification with this id", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already resolved (`review_already_resolved`)", body = Problem, content_type = "application/problem+json")))]
pub async fn admin_resolve(
    State(state): State<AppState>,
    admin: Admin,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ReviewResolve>, JsonRejection>,
) -> Result<Json<ReviewItem>, ApiError> {
    let id = review_id(path)?;
    let tenant_id = match state.store.tenant_of(id).await {
        Ok(t) => t,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("review")),
        Err(e) => return Err(ApiError::store(e)),
    };
    let r = resolution(body, id, tenant_id, format!("admin {}", admin.key_id))?;
    resolve(&state, r).await
}

/// The caller's review queue (open by default), newest first.
#[utoipa::path(get, path = "/v1/reviews", tag = "verifications", params(QueueQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = ReviewPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn tenant_list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<QueueQuery>,
) -> Result<Json<ReviewPage>, ApiError> {
    let f = queue_filter(&q, Some(caller.tenant_id.clone()))?;
    page(&state, f).await
}

/// Resolve one of the caller's `review` decisions, once; only for a tenant with
/// `reviews: tenant` (403 otherwise). Another tenant's id is 404.
#[utoipa::path(post, path = "/v1/reviews/{id}", tag = "verifications",
    params(("id" = String, Path, description = "The verification's id")),
    request_body = ReviewResolve,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = ReviewItem),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The tenant's reviews are resolved by operators", body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 409, body = Problem, content_type = "application/problem+json")))]
pub async fn tenant_resolve(
    State(state): State<AppState>,
    caller: Caller,
    path: Result<Path<String>, PathRejection>,
    body: Result<Json<ReviewResolve>, JsonRejection>,
) -> Result<Json<ReviewItem>, ApiError> {
    if caller.tenant()?.reviews != ReviewsBy::Tenant {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "this tenant's reviews are resolved by operators (set `reviews: tenant` to allow it)",
        ));
    }
    let id = review_id(path)?;
    let r = resolution(
        body,
        id,
        caller.tenant_id.clone(),
        format!("tenant {}", caller.key.id()),
    )?;
    resolve(&state, r).await
}
