//! The webhook delivery log: every outbox message, its attempts, and a manual redelivery.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::Admin;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::store::StoreError;
use crate::store::webhooks::{OutboxFilter, OutboxRow};

/// One webhook message and where its delivery stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct Delivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: Uuid,
    pub tenant_id: String,
    pub url: String,
    /// `verification.completed` or `review.resolved`.
    pub event: String,
    pub verification_id: Option<Uuid>,
    /// `pending`, `delivered` or `failed` (given up after a day, or the endpoint is gone).
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Every attempt, oldest first (`GET /admin/v1/webhooks/deliveries/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<DeliveryAttempt>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryAttempt {
    pub attempt: i32,
    /// The endpoint's HTTP status, when it answered.
    pub status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    pub tenant: Option<String>,
    /// `pending`, `delivered` or `failed`; every state when absent.
    pub state: Option<String>,
    /// Page size, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    #[param(value_type = Option<String>, format = Uuid)]
    pub cursor: Option<String>,
}

fn delivery(r: &OutboxRow) -> Delivery {
    Delivery {
        id: r.message.id,
        tenant_id: r.message.tenant_id.clone(),
        url: r.message.url.clone(),
        event: r.message.event.clone(),
        verification_id: r.message.verification_id,
        state: r.state.clone(),
        attempts: r.attempts,
        next_attempt_at: r.next_attempt_at,
        last_status: r.last_status,
        last_error: r.last_error.clone(),
        delivered_at: r.delivered_at,
        created_at: r.message.created_at,
        log: None,
    }
}

fn message_id(path: Result<Path<String>, PathRejection>) -> Result<Uuid, ApiError> {
    let Path(raw) = path.map_err(|_| ApiError::not_found("delivery"))?;
    Uuid::parse_str(&raw).map_err(|_| ApiError::not_found("delivery"))
}

/// Webhook messages, newest first.
#[utoipa::path(get, path = "/admin/v1/webhooks/deliveries", tag = "admin", params(DeliveryQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = DeliveryPage),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn list(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = super::paging::limit(q.limit.as_deref())?;
    let before = super::paging::cursor(q.cursor.as_deref())?;
    let state_filter = match q.state.as_deref() {
        None | Some("") => None,
        Some(s @ ("pending" | "delivered" | "failed")) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "state must be pending, delivered or failed",
            ));
        }
    };
    let f = OutboxFilter {
        tenant_id: q.tenant.filter(|t| !t.is_empty()),
        state: state_filter,
        before,
        limit,
    };
    let rows = state.store.outbox(&f).await?;
    let next_cursor =
        super::paging::next_cursor(rows.len(), limit, rows.last().map(|r| r.message.id));
    Ok(Json(DeliveryPage {
        data: rows.iter().map(delivery).collect(),
        next_cursor,
    }))
}

/// One webhook message with every attempt at it.
#[utoipa::path(get, path = "/admin/v1/webhooks/deliveries/{id}", tag = "admin",
    params(("id" = String, Path, description = "The message id (`webhook-id`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = Delivery),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_one(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Delivery>, ApiError> {
    let id = message_id(path)?;
    let row = match state.store.message(id).await {
        Ok(r) => r,
        Err(StoreError::NotFound) => return Err(ApiError::not_found("delivery")),
        Err(e) => return Err(ApiError::store(e)),
    };
    let log = state
        .store
        .deliveries_of(id)
        .await?
        .into_iter()
        .map(
            |(attempt, status, error, duration_ms, at)| DeliveryAttempt {
                attempt,
                status,
                error,
                duration_ms,
                at,
            },
        )
        .collect();
    let mut d = delivery(&row);
    d.log = Some(log);
    Ok(Json(d))
}

/// Send a message again now, whatever its state (e.g. after fixing a receiver).
#[utoipa::path(post, path = "/admin/v1/webhooks/deliveries/{id}/redeliver", tag = "admin",
    params(("id" = String, Path, description = "The message id (`webhook-id`)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 202, description = "Queued for delivery"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn redeliver(
    State(state): State<AppState>,
    _admin: Admin,
    path: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let id = message_id(path)?;
    match state.store.redeliver(id).await {
        Ok(()) => Ok(StatusCode::ACCEPTED),
        Err(StoreError::NotFound) => Err(ApiError::not_found("delivery")),
        Err(e) => Err(ApiError::store(e)),
    }
}
