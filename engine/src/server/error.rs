//! The documented error envelope:
//! `{"success": false, "error": {"code", "message"}, "request_id", "timestamp"}`.
//!
//! Handlers return [`ApiError`], which travels in the response's extensions; the
//! [`envelope`] middleware renders it with the request's id. The same middleware turns any
//! other error response (axum's own, a layer's) into the envelope, so that no client ever sees
//! a bare text error from this server.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::store::FaceStoreError;

/// Header carrying the request id on every answer (errors also carry it in the body).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// An error answer: status, stable code and message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 401: missing, malformed or unknown key.
    pub fn invalid_key() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
            "Invalid or missing API key.",
        )
    }

    /// 401: a valid key of another collection.
    pub fn key_not_for_collection() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "INVALID_API_KEY",
            "The API key is not valid for this collection.",
        )
    }

    /// 400 `VALIDATION_ERROR`.
    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }

    /// 400 `INVALID_IMAGE`.
    pub fn invalid_image(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_IMAGE", message)
    }

    /// 413 `FILE_TOO_LARGE`.
    pub fn too_large(max_bytes: usize) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "FILE_TOO_LARGE",
            format!("The image exceeds the maximum size of {max_bytes} bytes (10 MB)."),
        )
    }

    /// 422 `FACE_NOT_DETECTED`.
    pub fn face_not_detected() -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "FACE_NOT_DETECTED",
            "No face detected in the image.",
        )
    }

    /// 422 `MULTIPLE_FACES`.
    pub fn multiple_faces(count: usize) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "MULTIPLE_FACES",
            format!("{count} faces detected in the image; exactly one face is required."),
        )
    }

    /// 422 `FACE_QUALITY_TOO_LOW`.
    pub fn quality_too_low(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "FACE_QUALITY_TOO_LOW",
            message,
        )
    }

    /// 422 `LIVENESS_CHECK_FAILED`.
    pub fn liveness_failed(score: f64, threshold: f64) -> ApiError {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "LIVENESS_CHECK_FAILED",
            format!("Liveness check failed: score {score:.4} is below the threshold {threshold}."),
        )
    }

    /// 409 `DUPLICATE_EXTERNAL_ID`.
    pub fn duplicate_external_id() -> ApiError {
        ApiError::new(
            StatusCode::CONFLICT,
            "DUPLICATE_EXTERNAL_ID",
            "A face with this external_id already exists in the collection.",
        )
    }

    /// 404 `FACE_NOT_FOUND`.
    pub fn face_not_found() -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "FACE_NOT_FOUND", "Face not found.")
    }

    /// 503 `SERVICE_UNAVAILABLE`.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SERVICE_UNAVAILABLE",
            message,
        )
    }

    /// 500 `INTERNAL_ERROR`; the detail goes to the log, never to the client.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "collections server internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "Internal server error.",
        )
    }

    /// The envelope for an error response that did not come from a handler.
    pub fn from_status(status: StatusCode) -> ApiError {
        let code = match status.as_u16() {
            400 => "VALIDATION_ERROR",
            401 => "INVALID_API_KEY",
            404 => "NOT_FOUND",
            405 => "METHOD_NOT_ALLOWED",
            413 => "FILE_TOO_LARGE",
            415 => "VALIDATION_ERROR",
            429 => "RATE_LIMIT_EXCEEDED",
            503 => "SERVICE_UNAVAILABLE",
            s if s >= 500 => "INTERNAL_ERROR",
            _ => "BAD_REQUEST",
        };
        let message = status.canonical_reason().unwrap_or("Error").to_owned();
        ApiError::new(status, code, message)
    }

    /// The JSON answer.
    pub fn render(&self, request_id: &str) -> Response {
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = json!({
            "success": false,
            "error": {"code": self.code, "message": self.message},
            "request_id": request_id,
            "timestamp": timestamp,
        });
        (self.status, Json(body)).into_response()
    }
}

impl From<FaceStoreError> for ApiError {
    /// Only for store failures no handler expects; handlers map `NotFound` and `Conflict`
    /// themselves, since what they mean depends on the call.
    fn from(e: FaceStoreError) -> ApiError {
        ApiError::internal(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = self.status.into_response();
        resp.extensions_mut().insert(self);
        resp
    }
}

/// Gives every request an id, renders [`ApiError`]s as the envelope and wraps any other error
/// response in it too.
pub async fn envelope(req: Request, next: Next) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if let Some(err) = resp.extensions_mut().remove::<ApiError>() {
        resp = err.render(&request_id);
    } else if (resp.status().is_client_error() || resp.status().is_server_error()) && !is_json {
        resp = ApiError::from_status(resp.status()).render(&request_id);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fallbacks_have_codes() {
        assert_eq!(
            ApiError::from_status(StatusCode::NOT_FOUND).code,
            "NOT_FOUND"
        );
        assert_eq!(
            ApiError::from_status(StatusCode::METHOD_NOT_ALLOWED).code,
            "METHOD_NOT_ALLOWED"
        );
        assert_eq!(
            ApiError::from_status(StatusCode::PAYLOAD_TOO_LARGE).code,
            "FILE_TOO_LARGE"
        );
        assert_eq!(
            ApiError::from_status(StatusCode::BAD_GATEWAY).code,
            "INTERNAL_ERROR"
        );
        assert_eq!(
            ApiError::from_status(StatusCode::IM_A_TEAPOT).code,
            "BAD_REQUEST"
        );
    }
}
