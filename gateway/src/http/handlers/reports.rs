//! Operators' reports over HTTP (`report/`): the same figures as `livegate report`.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::error::{ApiError, ErrorCode, Problem};
use crate::http::auth::Admin;
use crate::http::extract::Query;
use crate::http::state::AppState;
use crate::report::agreement::{self, AgreementReport};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgreementQuery {
    /// How far back: a period (`7d`, `12h`; default `7d`) or an RFC 3339 time.
    pub since: Option<String>,
    /// Only this tenant (default: every tenant).
    pub tenant: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// How each provider pair agrees on shadow traffic: pairs, agreement, Cohen's kappa, score
/// correlation, where they disagree, latency and cost per decision.
#[utoipa::path(get, path = "/admin/v1/reports/agreement", tag = "admin", params(AgreementQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, body = AgreementReport),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json")))]
pub async fn agreement(
    State(state): State<AppState>,
    _admin: Admin,
    Query(q): Query<AgreementQuery>,
) -> Result<Response, ApiError> {
    let since = crate::report::since(q.since.as_deref().unwrap_or("7d"), Utc::now())
        .map_err(|m| ApiError::new(ErrorCode::InvalidSince, m))?;
    let csv = match q.format.as_deref() {
        None | Some("") | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "format must be json or csv",
            ));
        }
    };
    let tenant = q.tenant.filter(|t| !t.is_empty());
    let pairs = state.store.shadow_pairs(tenant.as_deref(), since).await?;
    let config = state.runtime.load().config.clone();
    let report = agreement::agreement(&pairs, Some(&config), since, tenant);
    if csv {
        let headers = [(header::CONTENT_TYPE, "text/csv; charset=utf-8")];
        return Ok((headers, agreement::csv(&report)).into_response());
    }
    Ok(Json(report).into_response())
}
