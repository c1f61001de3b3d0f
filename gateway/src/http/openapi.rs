//! The OpenAPI document, generated from the handlers and their types. `livegate openapi`
//! prints it; `openapi.yaml` at the repository root is this output, checked by a drift test.

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::Problem;
use crate::http::handlers as api;

#[derive(OpenApi)]
#[openapi(
    info(title = "livegate", description = "One endpoint for passive face-liveness checks across vendors."),
    paths(
        api::liveness::create,
        api::verifications::get_one,
        api::verifications::list,
        api::erasure::erase_verification,
        api::erasure::erase_subject,
        api::erasure::admin_erase_verification,
        api::erasure::admin_erase_subject,
        api::reviews::admin_list,
        api::reviews::admin_resolve,
        api::reviews::tenant_list,
        api::reviews::tenant_resolve,
        api::reports::agreement,
        api::webhooks::list,
        api::webhooks::get_one,
        api::webhooks::redeliver,
        api::health::healthz,
        api::health::readyz,
        api::metrics::scrape,
        api::admin::config,
        api::admin::credits,
        api::tenant::me,
        api::blocklist::add,
        api::blocklist::list,
        api::blocklist::remove,
    ),
    components(schemas(Problem)),
    modifiers(&Security),
    tags(
        (name = "liveness", description = "Liveness checks"),
        (name = "verifications", description = "Stored verifications of the caller's tenant"),
        (name = "tenant", description = "The caller's tenant: credits, rate limit, usage"),
        (name = "operations", description = "Health, readiness and metrics"),
        (name = "admin", description = "Operator endpoints (admin keys)"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The `code` property of `Problem` lists every [`ErrorCode`] with its status, from the one
/// table in `error.rs`, so the document cannot fall behind the codes the gateway answers with.
fn document_error_codes(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{RefOr, schema::Schema};
    let Some(RefOr::T(Schema::Object(problem))) = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("Problem"))
    else {
        return;
    };
    let Some(RefOr::T(Schema::Object(code))) = problem.properties.get_mut("code") else {
        return;
    };
    code.enum_values = Some(
        crate::error::ErrorCode::ALL
            .iter()
            .map(|c| serde_json::Value::from(c.as_str()))
            .collect(),
    );
    let table: Vec<String> = crate::error::ErrorCode::ALL
        .iter()
        .map(|c| format!("`{}` ({})", c.as_str(), c.status().as_u16()))
        .collect();
    code.description = Some(format!(
        "Stable machine-readable code, with the HTTP status it comes with: {}.",
        table.join(", ")
    ));
}

pub fn yaml() -> String {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    document_error_codes(&mut doc);
    doc.to_yaml()
        .unwrap_or_else(|e| format!("# failed to render: {e}\n"))
}

pub async fn serve_yaml() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], yaml())
}
