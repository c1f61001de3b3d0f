//! RFC 9457 problem details: the one error type every handler returns. Internal failures are
//! logged and rendered opaque; client errors carry a stable machine `code`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use livegate_providers::ProviderError;

tokio::task_local! {
    /// The current request's id, set by the request-id middleware for problem bodies.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

/// `application/problem+json` body.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://livegate.dev/problems/unauthorized", "title": "Unauthorized", "status": 401,
    "detail": "missing or unknown API key", "code": "unauthorized", "request_id": "0193a5c0-7f4e-7c9a-9e1b-3f2d1c0b5a49"
}))]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable code.
    pub code: String,
    pub request_id: String,
    /// Provider that caused the failure, for upstream errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The tenant's credit balance, on `insufficient_credits` (402).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<i64>,
}

/// The `code` of a problem answer, left on the response for the errors metric.
#[derive(Debug, Clone)]
pub struct ProblemCode(pub String);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub provider: Option<String>,
    pub retry_after: Option<u64>,
    pub balance: Option<i64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            detail: detail.into(),
            provider: None,
            retry_after: None,
            balance: None,
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or unknown API key",
        )
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// A failure whose details must not reach the client: logged here, opaque there.
    #[track_caller]
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let at = std::panic::Location::caller();
        tracing::error!(error = %err, location = %at, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred",
        )
    }

    pub fn from_provider(provider: &str, e: &ProviderError) -> Self {
        let status = StatusCode::from_u16(e.kind.http_status()).unwrap_or(StatusCode::BAD_GATEWAY);
        Self {
            status,
            code: e.code().to_owned(),
            detail: format!("provider {provider}: {}", e.message),
            provider: Some(provider.to_owned()),
            retry_after: e.retry_after.map(|d| d.as_secs().max(1)),
            balance: None,
        }
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!(
                "https://livegate.dev/problems/{}",
                self.code.replace('_', "-")
            ),
            title: self.status.canonical_reason().unwrap_or("Error").to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.clone(),
            request_id: current_request_id(),
            provider: self.provider.clone(),
            balance: self.balance,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.problem()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        resp.extensions_mut().insert(ProblemCode(self.code.clone()));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

impl From<crate::store::StoreError> for ApiError {
    #[track_caller]
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::NotFound => ApiError::not_found("resource"),
            other => ApiError::internal(other),
        }
    }
}
