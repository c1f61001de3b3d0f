//! The tenant API's rate-limit middleware: every limit of the caller's key and tenant is
//! checked (`http/limiter.rs`), refusals answer 429 `rate_limited` with `Retry-After`, and
//! every answer carries the `RateLimit-Policy` / `RateLimit` headers of a configured limit.

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::config::{KeyHash, Tenant};
use crate::error::{ApiError, ErrorCode};
use crate::http::auth::presented_key;
use crate::http::limiter::{Mode, Verdict};
use crate::http::state::AppState;

static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

fn policy_item(v: &Verdict) -> String {
    // draft-ietf-httpapi-ratelimit-headers: quota units per window of 1 s, plus the burst.
    format!(
        "\"{}\";q={};w=1;burst={}",
        v.policy,
        v.spec.per_second.ceil() as u64,
        v.spec.burst
    )
}

fn headers(resp: &mut Response, verdicts: &[Verdict]) {
    if verdicts.is_empty() {
        return;
    }
    let policies = verdicts
        .iter()
        .map(policy_item)
        .collect::<Vec<_>>()
        .join(", ");
    // The binding limit is the one closest to refusing.
    let tight = verdicts
        .iter()
        .min_by_key(|v| (v.allowed, v.remaining))
        .unwrap_or(&verdicts[0]);
    let reset = tight.retry_after.as_secs_f64().ceil() as u64;
    let current = format!("\"{}\";r={};t={reset}", tight.policy, tight.remaining);
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&policies) {
        h.insert(POLICY.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(&current) {
        h.insert(RATELIMIT.clone(), v);
    }
}

async fn check_all(state: &AppState, tenant: &Tenant, hash: &KeyHash) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    // The key's own limit first: a key over it does not spend its tenant's budget.
    if let Some(spec) = tenant.key_rate_limits.get(hash) {
        let id = format!("key:{}", &hash.to_string()[7..23]);
        verdicts.push(state.limits.check("key", &id, *spec).await);
    }
    if verdicts.iter().all(|v| v.allowed)
        && let Some(spec) = tenant.rate_limit
    {
        let id = format!("tenant:{}", tenant.id);
        verdicts.push(state.limits.check("tenant", &id, spec).await);
    }
    state
        .metrics
        .set_redis_fallback(matches!(state.limits.mode(), Mode::Fallback { .. }));
    verdicts
}

/// Middleware for the tenant API: check the caller's key and tenant limits before the handler,
/// refuse with 429 when over, and put the `RateLimit` headers on every answer.
pub async fn enforce(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    let key = presented_key(&parts);
    let req = Request::from_parts(parts, body);
    let Some(key) = key else {
        return next.run(req).await;
    };
    let rt = state.runtime.load_full();
    let Some(tenant) = rt.tenant_for_key(&key) else {
        return next.run(req).await;
    };
    let hash = KeyHash::of_key(&key);
    let span = crate::telemetry::rate_limit_span(&tenant.id);
    let verdicts = check_all(&state, tenant, &hash)
        .instrument(span.clone())
        .await;
    span.record("mode", state.limits.mode().describe());
    span.record(
        "outcome",
        if verdicts.iter().all(|v| v.allowed) {
            "ok"
        } else {
            "limited"
        },
    );
    drop(span);
    if let Some(refused) = verdicts.iter().find(|v| !v.allowed) {
        state.on_rate_limited(&tenant.id);
        let secs = refused.retry_after.as_secs_f64().ceil().max(1.0) as u64;
        let mut e = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "over the {} rate limit of {}/s (burst {}); retry in {secs} s",
                refused.policy, refused.spec.per_second, refused.spec.burst
            ),
        );
        e.retry_after = Some(secs);
        let mut resp = e.into_response();
        headers(&mut resp, &verdicts);
        return resp;
    }
    let mut resp = next.run(req).await;
    headers(&mut resp, &verdicts);
    resp
}
