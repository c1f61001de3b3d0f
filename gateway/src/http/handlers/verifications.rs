use axum::Json;
use axum::extract::{Path, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::check::decide::Decision;
use crate::check::verdict::{Verification, VerificationPage};
use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::Caller;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::store::{ListFilter, StoreError};

/// One verification of the caller's tenant. Another tenant's id is 404.
#[utoipa::path(get, path = "/v1/verifications/{id}", tag = "verifications",
    params(("id" = String, Path, description = "Verification id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = Verification),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_one(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found("verification"))?;
    let rec = match state.store.get_verification(&caller.tenant_id, id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("verification")),
        Err(e) => return Err(e.into()),
    };
    let attempts = state.store.attempts(id).await?;
    let view = Verification::from_records(&rec, &attempts);
    if rec.decision.as_deref() != Some("review") {
        return Ok(Json(view));
    }
    let reviews = state.store.reviews_of(&[id]).await?;
    Ok(Json(view.with_review(reviews.first())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size, 1-200 (default 50).
    // Read as text so that a bad value answers `invalid_limit`, not a generic rejection.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
    /// Only this decision: `approved`, `declined` or `review`.
    #[param(value_type = Option<Decision>)]
    pub decision: Option<String>,
    /// Only verifications created at or after this RFC 3339 time.
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<String>,
}

/// The caller's verifications, newest first, with cursor pagination.
#[utoipa::path(get, path = "/v1/verifications", tag = "verifications", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = VerificationPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<VerificationPage>, ApiError> {
    let limit = super::paging::limit(q.limit.as_deref())?;
    let before = super::paging::cursor(q.cursor.as_deref())?;
    let decision = match q.decision.as_deref() {
        None | Some("") => None,
        Some(d) => Some(
            Decision::parse(d)
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::InvalidDecision,
                        "decision must be approved, declined or review",
                    )
                })?
                .as_str()
                .to_owned(),
        ),
    };
    let since = match q.since.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            DateTime::parse_from_rfc3339(s)
                .map_err(|_| {
                    ApiError::new(
                        ErrorCode::InvalidSince,
                        "since must be an RFC 3339 timestamp",
                    )
                })?
                .with_timezone(&Utc),
        ),
    };
    let filter = ListFilter {
        limit,
        before,
        decision,
        since,
    };
    let rows = state
        .store
        .list_with_attempts(&caller.tenant_id, &filter)
        .await?;
    let in_review: Vec<Uuid> = rows
        .iter()
        .filter(|(r, _)| r.decision.as_deref() == Some("review"))
        .map(|(r, _)| r.id)
        .collect();
    let reviews = if in_review.is_empty() {
        Vec::new()
    } else {
        state.store.reviews_of(&in_review).await?
    };
    let data: Vec<Verification> = rows
        .iter()
        .map(|(r, attempts)| {
            let review = reviews.iter().find(|x| x.verification_id == r.id);
            Verification::from_records(r, attempts).with_review(review)
        })
        .collect();
    let next_cursor = super::paging::next_cursor(rows.len(), limit, rows.last().map(|(r, _)| r.id));
    Ok(Json(VerificationPage { data, next_cursor }))
}
