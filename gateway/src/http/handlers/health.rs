use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorCode};
use crate::http::state::AppState;

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`, `ready` or `unavailable`.
    pub status: String,
    /// Per-dependency state, e.g. `{"database": "ok"}`.
    pub checks: std::collections::BTreeMap<String, String>,
}

/// Liveness of the process.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        checks: Default::default(),
    })
}

/// Readiness: the database answered its last check (made every second in the background,
/// so this endpoint never queries it).
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, body = Health), (status = 503, body = Health)))]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let mut checks = std::collections::BTreeMap::new();
    // Only until the first background check has ended is the database asked here.
    let db_ok = match state.probe.database_ok() {
        Some(ok) => ok,
        None => matches!(
            tokio::time::timeout(std::time::Duration::from_secs(2), state.store.ping()).await,
            Ok(Ok(()))
        ),
    };
    checks.insert(
        "database".into(),
        if db_ok { "ok" } else { "unavailable" }.into(),
    );
    let rt = state.runtime.load();
    checks.insert("config".into(), rt.config.hash.clone());
    // Redis down degrades rate limiting to this instance's share, not readiness.
    checks.insert("rate_limit".into(), state.limits.mode().describe());
    // Circuit state per provider: an open circuit degrades routing, not readiness.
    for (name, st) in rt.breaker_states() {
        checks.insert(format!("provider:{name}"), st.as_str().to_owned());
    }
    if db_ok {
        (
            StatusCode::OK,
            Json(Health {
                status: "ready".into(),
                checks,
            }),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Health {
                status: "unavailable".into(),
                checks,
            }),
        )
    }
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("route")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}
