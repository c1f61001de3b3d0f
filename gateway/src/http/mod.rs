//! The HTTP edge: the router with its layers, authentication, request ids, rate limits,
//! Server-Timing, the OpenAPI document and one handler module per resource.

pub mod auth;
pub mod extract;
pub mod handlers;
pub mod limiter;
pub mod openapi;
pub mod probe;
pub mod rate_limit;
pub mod request_id;
pub mod server;
pub mod server_timing;
pub mod state;
pub mod webhooks;

use axum::Router;
use axum::middleware;
use axum::routing::{delete, get, post};

pub use auth::{Caller, presented_key};
pub use state::AppState;

pub fn router(state: AppState) -> Router {
    let tenant_api = Router::new()
        .route("/v1/liveness", post(handlers::liveness::create))
        .route("/v1/verifications", get(handlers::verifications::list))
        .route(
            "/v1/verifications/{id}",
            get(handlers::verifications::get_one).delete(handlers::erasure::erase_verification),
        )
        .route(
            "/v1/subjects/{external_id}",
            delete(handlers::erasure::erase_subject),
        )
        .route("/v1/tenant", get(handlers::tenant::me))
        .route("/v1/reviews", get(handlers::reviews::tenant_list))
        .route("/v1/reviews/{id}", post(handlers::reviews::tenant_resolve))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            rate_limit::enforce,
        ));
    Router::new()
        .merge(tenant_api)
        .route(
            "/admin/v1/tenants/{id}/credits",
            post(handlers::admin::credits),
        )
        .route("/admin/v1/config", get(handlers::admin::config))
        .route("/admin/v1/reviews", get(handlers::reviews::admin_list))
        .route(
            "/admin/v1/reviews/{id}",
            post(handlers::reviews::admin_resolve),
        )
        .route(
            "/admin/v1/reports/agreement",
            get(handlers::reports::agreement),
        )
        .route(
            "/admin/v1/webhooks/deliveries",
            get(handlers::webhooks::list),
        )
        .route(
            "/admin/v1/webhooks/deliveries/{id}",
            get(handlers::webhooks::get_one),
        )
        .route(
            "/admin/v1/webhooks/deliveries/{id}/redeliver",
            post(handlers::webhooks::redeliver),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/verifications/{id}",
            delete(handlers::erasure::admin_erase_verification),
        )
        .route(
            "/admin/v1/tenants/{tenant_id}/subjects/{external_id}",
            delete(handlers::erasure::admin_erase_subject),
        )
        .merge(handlers::blocklist::routes())
        .route("/healthz", get(handlers::health::healthz))
        .route("/readyz", get(handlers::health::readyz))
        .route("/openapi.yaml", get(openapi::serve_yaml))
        .route("/metrics", get(handlers::metrics::scrape))
        .fallback(handlers::health::not_found)
        .method_not_allowed_fallback(handlers::health::method_not_allowed)
        .layer(middleware::from_fn(request_id::request_id))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            server_timing::layer,
        ))
        .with_state(state)
}
