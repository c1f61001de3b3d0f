//! Application state, the router and the cross-cutting layers (request id, auth extractor).

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::config::Tenant;
use crate::credits::Writers;
use crate::metrics::Metrics;
use crate::problem::{ApiError, REQUEST_ID};
use crate::ratelimit::{self, RateLimits};
use crate::runtime::Runtime;
use crate::store::DynStore;
use crate::{api, openapi, server_timing, telemetry};

#[derive(Clone, Debug)]
pub struct AppState {
    pub runtime: Arc<ArcSwap<Runtime>>,
    pub store: DynStore,
    /// Group-committed writes (credit reservations, results).
    pub writers: Arc<Writers>,
    pub limits: Arc<RateLimits>,
    pub metrics: Arc<Metrics>,
    pub identity: Arc<crate::identity::Identity>,
}

impl AppState {
    /// In-process rate limits. Must be called inside a Tokio runtime (it starts the writers).
    pub fn new(runtime: Runtime, store: DynStore) -> Self {
        Self::with_limits(runtime, store, RateLimits::local())
    }

    pub fn with_limits(runtime: Runtime, store: DynStore, limits: Arc<RateLimits>) -> Self {
        let metrics = Arc::new(Metrics::new());
        let m = metrics.clone();
        let observer: crate::group_commit::BatchObserver = Arc::new(move |name, size, took| {
            if name == "results" {
                m.observe_store_batch(size, took.as_secs_f64());
            }
        });
        let writers = Writers::spawn(&store, Some(observer));
        Self {
            runtime: Arc::new(ArcSwap::from_pointee(runtime)),
            store,
            writers,
            limits,
            metrics,
            identity: Default::default(),
        }
    }

    pub fn on_rate_limited(&self, tenant: &str) {
        tracing::info!(tenant, "rate limited");
        self.metrics.rate_limited(tenant);
    }
}

pub fn router(state: AppState) -> Router {
    let tenant_api = Router::new()
        .route("/v1/liveness", post(api::liveness::create))
        .route("/v1/verifications", get(api::verifications::list))
        .route("/v1/verifications/{id}", get(api::verifications::get_one))
        .route("/v1/tenant", get(api::tenant::me))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::enforce,
        ));
    Router::new()
        .merge(tenant_api)
        .route("/admin/v1/tenants/{id}/credits", post(api::admin::credits))
        .route("/admin/v1/config", get(api::admin::config))
        .merge(api::blocklist::routes())
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route("/openapi.yaml", get(openapi::serve_yaml))
        .route("/metrics", get(api::metrics::scrape))
        .fallback(api::health::not_found)
        .method_not_allowed_fallback(api::health::method_not_allowed)
        .layer(middleware::from_fn(request_id))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            server_timing::layer,
        ))
        .with_state(state)
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Accept a caller's `X-Request-Id` when it is sane, otherwise mint one; echo it back and make
/// it available to problem bodies and logs.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let span = telemetry::server_span(&req, &id);
    let mut resp = REQUEST_ID
        .scope(
            id.clone(),
            tracing::Instrument::instrument(next.run(req), span.clone()),
        )
        .await;
    telemetry::record_response(&span, resp.status());
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    resp
}

/// The API key from `Authorization: Bearer <key>` or `X-API-Key`.
pub fn presented_key(parts: &Parts) -> Option<String> {
    if let Some(v) = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let mut it = v.splitn(2, ' ');
        if let (Some(scheme), Some(token)) = (it.next(), it.next())
            && scheme.eq_ignore_ascii_case("bearer")
            && !token.trim().is_empty()
        {
            return Some(token.trim().to_owned());
        }
    }
    parts
        .headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The authenticated tenant, with the runtime it was resolved against (so a config reload in
/// the middle of a request does not change its rules).
#[derive(Debug, Clone)]
pub struct Caller {
    pub runtime: Arc<Runtime>,
    pub tenant_id: String,
}

impl Caller {
    pub fn tenant(&self) -> Result<&Tenant, ApiError> {
        self.runtime
            .config
            .tenants
            .get(&self.tenant_id)
            .ok_or_else(ApiError::unauthorized)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let auth = telemetry::auth_span();
        let runtime = state.runtime.load_full();
        let tenant_id =
            presented_key(parts).and_then(|key| runtime.tenant_for_key(&key).map(|t| t.id.clone()));
        telemetry::record_auth(&auth, tenant_id.as_deref());
        let tenant_id = tenant_id.ok_or_else(ApiError::unauthorized)?;
        Ok(Caller { runtime, tenant_id })
    }
}
