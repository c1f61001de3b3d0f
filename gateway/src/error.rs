//! RFC 9457 problem details: the one error type every handler returns. Internal failures are
//! logged and rendered opaque; client errors carry a stable machine `code`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use livegate_providers::{ErrorKind, ProviderError};

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

/// Declares [`ErrorCode`]: one row per code with its HTTP status and wire slug.
macro_rules! error_codes {
    ($($name:ident = ($status:ident, $slug:literal),)*) => {
        /// Every problem `code` livegate answers with. The slug is the wire value (stable:
        /// clients and stored rows rely on it); the status and title come with it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($name,)*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$name => $slug,)*
                }
            }

            pub fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$name => StatusCode::$status,)*
                }
            }
        }
    };
}

error_codes! {
    AlreadyBlocklisted = (CONFLICT, "already_blocklisted"),
    FaceMatchingUnavailable = (SERVICE_UNAVAILABLE, "face_matching_unavailable"),
    FaceNotFound = (NOT_FOUND, "face_not_found"),
    Forbidden = (FORBIDDEN, "forbidden"),
    IdempotencyInProgress = (CONFLICT, "idempotency_in_progress"),
    IdempotencyKeyInvalid = (BAD_REQUEST, "idempotency_key_invalid"),
    IdempotencyKeyReused = (UNPROCESSABLE_ENTITY, "idempotency_key_reused"),
    ImageMissing = (BAD_REQUEST, "image_missing"),
    ImageTooLarge = (PAYLOAD_TOO_LARGE, "image_too_large"),
    ImageTooLargeDecoded = (BAD_REQUEST, "image_too_large_decoded"),
    ImageTooManyPixels = (BAD_REQUEST, "image_too_many_pixels"),
    ImageTruncated = (BAD_REQUEST, "image_truncated"),
    ImageUndecodable = (BAD_REQUEST, "image_undecodable"),
    InsufficientCredits = (PAYMENT_REQUIRED, "insufficient_credits"),
    InternalError = (INTERNAL_SERVER_ERROR, "internal_error"),
    InvalidAmount = (BAD_REQUEST, "invalid_amount"),
    InvalidBase64 = (BAD_REQUEST, "invalid_base64"),
    InvalidBody = (BAD_REQUEST, "invalid_body"),
    InvalidCursor = (BAD_REQUEST, "invalid_cursor"),
    InvalidDecision = (BAD_REQUEST, "invalid_decision"),
    InvalidExternalId = (BAD_REQUEST, "invalid_external_id"),
    InvalidJson = (BAD_REQUEST, "invalid_json"),
    InvalidLimit = (BAD_REQUEST, "invalid_limit"),
    InvalidMetadata = (BAD_REQUEST, "invalid_metadata"),
    InvalidMultipart = (BAD_REQUEST, "invalid_multipart"),
    InvalidPath = (BAD_REQUEST, "invalid_path"),
    InvalidQuery = (BAD_REQUEST, "invalid_query"),
    InvalidReason = (BAD_REQUEST, "invalid_reason"),
    InvalidReviewer = (BAD_REQUEST, "invalid_reviewer"),
    InvalidRequest = (BAD_REQUEST, "invalid_request"),
    InvalidSince = (BAD_REQUEST, "invalid_since"),
    InvalidThreshold = (BAD_REQUEST, "invalid_threshold"),
    MethodNotAllowed = (METHOD_NOT_ALLOWED, "method_not_allowed"),
    NotFound = (NOT_FOUND, "not_found"),
    Overloaded = (SERVICE_UNAVAILABLE, "overloaded"),
    ProviderOverrideNotAllowed = (BAD_REQUEST, "provider_override_not_allowed"),
    RateLimited = (TOO_MANY_REQUESTS, "rate_limited"),
    RequestTimeout = (REQUEST_TIMEOUT, "request_timeout"),
    ReviewAlreadyResolved = (CONFLICT, "review_already_resolved"),
    StoreUnavailable = (SERVICE_UNAVAILABLE, "store_unavailable"),
    TenantUnmetered = (CONFLICT, "tenant_unmetered"),
    ThresholdBelowTenant = (BAD_REQUEST, "threshold_below_tenant"),
    Unauthorized = (UNAUTHORIZED, "unauthorized"),
    UnknownProvider = (BAD_REQUEST, "unknown_provider"),
    UnsupportedImageFormat = (UNSUPPORTED_MEDIA_TYPE, "unsupported_image_format"),
    UnsupportedMediaType = (UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
    ProviderRejectedInput = (UNPROCESSABLE_ENTITY, "provider_rejected_input"),
    ProviderUnsupportedImage = (UNPROCESSABLE_ENTITY, "provider_unsupported_image"),
    ProviderAuthFailed = (BAD_GATEWAY, "provider_auth_failed"),
    ProviderOutOfCredits = (BAD_GATEWAY, "provider_out_of_credits"),
    ProviderUsageLimit = (BAD_GATEWAY, "provider_usage_limit"),
    ProviderUnreachable = (BAD_GATEWAY, "provider_unreachable"),
    ProviderBadResponse = (BAD_GATEWAY, "provider_bad_response"),
    ProviderRateLimited = (SERVICE_UNAVAILABLE, "provider_rate_limited"),
    ProviderUnavailable = (SERVICE_UNAVAILABLE, "provider_unavailable"),
    ProviderOverloaded = (SERVICE_UNAVAILABLE, "provider_overloaded"),
    ProviderCircuitOpen = (SERVICE_UNAVAILABLE, "provider_circuit_open"),
    ProviderTimeout = (GATEWAY_TIMEOUT, "provider_timeout"),
}

impl ErrorCode {
    /// Every code as a Markdown table (code, status, title), in table order: the README's list,
    /// which a test keeps equal to this.
    pub fn markdown_table() -> String {
        let mut out = String::from("| code | status | title |\n|---|---|---|\n");
        for c in ErrorCode::ALL {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                c.as_str(),
                c.status().as_u16(),
                c.title()
            ));
        }
        out
    }

    /// The problem's `title`: the status's reason phrase.
    pub fn title(self) -> &'static str {
        self.status().canonical_reason().unwrap_or("Error")
    }

    /// The code a provider failure of this kind answers with.
    pub fn of_provider(kind: ErrorKind) -> ErrorCode {
        match kind {
            ErrorKind::BadInput => ErrorCode::ProviderRejectedInput,
            ErrorKind::AuthFailed => ErrorCode::ProviderAuthFailed,
            ErrorKind::OutOfCredits => ErrorCode::ProviderOutOfCredits,
            ErrorKind::UsageLimit => ErrorCode::ProviderUsageLimit,
            ErrorKind::RateLimited => ErrorCode::ProviderRateLimited,
            ErrorKind::Unavailable => ErrorCode::ProviderUnavailable,
            ErrorKind::Timeout => ErrorCode::ProviderTimeout,
            ErrorKind::Unreachable => ErrorCode::ProviderUnreachable,
            ErrorKind::BadResponse => ErrorCode::ProviderBadResponse,
            ErrorKind::Unsupported => ErrorCode::ProviderUnsupportedImage,
            ErrorKind::Overloaded => ErrorCode::ProviderOverloaded,
            ErrorKind::CircuitOpen => ErrorCode::ProviderCircuitOpen,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request body stopped: it stalled, or it took longer than the request may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyTimeout {
    #[error("the request body stalled for longer than {0:?}")]
    Idle(Duration),
    #[error("the request did not arrive within {0:?}")]
    Request(Duration),
}

impl BodyTimeout {
    /// The timeout behind a body read error, however deep the error wraps it.
    pub fn find(err: &(dyn std::error::Error + 'static)) -> Option<BodyTimeout> {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if let Some(t) = e.downcast_ref::<BodyTimeout>() {
                return Some(*t);
            }
            cur = e.source();
        }
        None
    }
}

/// The `code` of a problem answer, left on the response for the errors metric.
#[derive(Debug, Clone, Copy)]
pub struct ProblemCode(pub ErrorCode);

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {detail}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub detail: String,
    pub provider: Option<String>,
    pub retry_after: Option<u64>,
    pub balance: Option<i64>,
}

/// The longest `detail` an answer (and the stored row) carries: a detail can quote what a
/// client or a vendor sent, and neither may make livegate echo or store megabytes.
pub const MAX_DETAIL_CHARS: usize = 1000;

/// `detail` cut to [`MAX_DETAIL_CHARS`] characters, marked when cut.
fn bounded(detail: String) -> String {
    match detail.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((at, _)) => format!("{}… (cut)", &detail[..at]),
        None => detail,
    }
}

impl ApiError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            detail: bounded(detail.into()),
            provider: None,
            retry_after: None,
            balance: None,
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "missing or unknown API key")
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// A failure whose details must not reach the client: logged here, opaque there.
    #[track_caller]
    pub fn internal(err: impl std::fmt::Display) -> Self {
        let at = std::panic::Location::caller();
        tracing::error!(error = %err, location = %at, "internal error");
        Self::new(ErrorCode::InternalError, "an internal error occurred")
    }

    /// A store failure on the request path: the database being away is a 503 the client may
    /// retry (`store_unavailable`, `Retry-After`); anything else is internal.
    #[track_caller]
    pub fn store(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Unavailable(m) => {
                tracing::warn!(error = %m, "database unavailable");
                let mut err = Self::new(
                    ErrorCode::StoreUnavailable,
                    "the database is unavailable; retry shortly",
                );
                err.retry_after = Some(1);
                err
            }
            other => Self::internal(other),
        }
    }

    /// More work than this process takes at once: refused at once, to be retried shortly.
    pub fn overloaded(detail: impl Into<String>) -> Self {
        let mut err = Self::new(ErrorCode::Overloaded, detail);
        err.retry_after = Some(1);
        err
    }

    /// A request body that failed to arrive: 408 when it was too slow, 400 otherwise.
    pub fn body_read(err: &(dyn std::error::Error + 'static)) -> Self {
        match BodyTimeout::find(err) {
            Some(t) => Self::new(ErrorCode::RequestTimeout, t.to_string()),
            None => Self::new(
                ErrorCode::InvalidRequest,
                format!("reading the request body failed: {err}"),
            ),
        }
    }

    pub fn from_provider(provider: &str, e: &ProviderError) -> Self {
        let code = ErrorCode::of_provider(e.kind);
        Self {
            status: code.status(),
            code,
            detail: bounded(format!("provider {provider}: {}", e.message)),
            provider: Some(provider.to_owned()),
            retry_after: e.retry_after.map(|d| d.as_secs().max(1)),
            balance: None,
        }
    }

    pub fn problem(&self) -> Problem {
        Problem {
            type_: format!(
                "https://livegate.dev/problems/{}",
                self.code.as_str().replace('_', "-")
            ),
            title: self.code.title().to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            code: self.code.as_str().to_owned(),
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
        resp.extensions_mut().insert(ProblemCode(self.code));
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
            other => ApiError::store(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_cut_on_a_character_boundary() {
        let long = bounded("é".repeat(MAX_DETAIL_CHARS + 5));
        assert!(long.starts_with(&"é".repeat(MAX_DETAIL_CHARS)));
        assert!(long.ends_with("… (cut)"));
        assert_eq!(bounded("short".into()), "short");
    }

    #[test]
    fn slugs_are_unique_snake_case_and_provider_codes_match_the_adapters() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert!(
                c.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            );
        }
        for kind in [
            ErrorKind::BadInput,
            ErrorKind::AuthFailed,
            ErrorKind::OutOfCredits,
            ErrorKind::UsageLimit,
            ErrorKind::RateLimited,
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Unreachable,
            ErrorKind::BadResponse,
            ErrorKind::Unsupported,
            ErrorKind::Overloaded,
            ErrorKind::CircuitOpen,
        ] {
            let code = ErrorCode::of_provider(kind);
            assert_eq!(code.as_str(), kind.code());
            assert_eq!(code.status().as_u16(), kind.http_status());
        }
    }
}
