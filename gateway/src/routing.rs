//! Calling the tenant's providers in the order its strategy says, recording every attempt.

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};

use livegate_providers::{
    CheckRequest, ErrorKind, ImageInput, Provider, ProviderAnswer, ProviderError, adapt_image,
};

use crate::config::{Strategy, Tenant};
use crate::runtime::Runtime;

/// One provider call as it will be stored.
#[derive(Debug, Clone)]
pub struct AttemptLog {
    pub provider: String,
    pub provider_kind: String,
    pub score: Option<f64>,
    /// The problem code of a failed attempt; `None` for an answer.
    pub error_code: Option<String>,
    pub upstream_status: Option<u16>,
    pub latency_ms: i64,
    pub raw_body: Option<String>,
    pub at: DateTime<Utc>,
}

pub struct Routed {
    pub provider: String,
    pub answer: ProviderAnswer,
}

pub struct RouteFailure {
    pub provider: String,
    pub error: ProviderError,
}

pub struct RouteInput<'a> {
    pub runtime: &'a Runtime,
    pub tenant: &'a Tenant,
    pub image: &'a ImageInput,
    pub threshold: f64,
    pub request_id: &'a str,
    pub traceparent: Option<String>,
}

/// Try the tenant's providers: `single` calls one; `fallback` moves on after a retryable
/// failure and stops at the first answer or at a failure no other provider would fix.
pub async fn route(
    input: RouteInput<'_>,
    log: &mut Vec<AttemptLog>,
) -> Result<Routed, RouteFailure> {
    let names: Vec<&String> = match input.tenant.routing.strategy {
        Strategy::Single => input.tenant.routing.providers.iter().take(1).collect(),
        Strategy::Fallback => input.tenant.routing.providers.iter().collect(),
    };
    let mut last: Option<RouteFailure> = None;
    for name in names {
        let Some(provider) = input.runtime.provider(name) else {
            // Validation makes this unreachable; fail like an unavailable provider if not.
            last = Some(RouteFailure {
                provider: name.clone(),
                error: ProviderError::new(ErrorKind::Unavailable, "provider is not configured"),
            });
            continue;
        };
        match attempt(provider, &input, log).await {
            Ok(answer) => {
                return Ok(Routed {
                    provider: name.clone(),
                    answer,
                });
            }
            Err(error) => {
                let retryable = error.kind.retryable();
                last = Some(RouteFailure {
                    provider: name.clone(),
                    error,
                });
                if !retryable {
                    break;
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| RouteFailure {
        provider: String::new(),
        error: ProviderError::new(
            ErrorKind::Unavailable,
            "no provider is configured for this tenant",
        ),
    }))
}

async fn attempt(
    provider: &Arc<dyn Provider>,
    input: &RouteInput<'_>,
    log: &mut Vec<AttemptLog>,
) -> Result<ProviderAnswer, ProviderError> {
    let started = Instant::now();
    let at = Utc::now();
    let result = call(provider, input).await;
    let latency_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    let entry = match &result {
        Ok(a) => AttemptLog {
            provider: provider.name().to_owned(),
            provider_kind: provider.kind().to_owned(),
            score: a.score,
            error_code: None,
            upstream_status: a.raw.status,
            latency_ms,
            raw_body: a.raw.body.clone(),
            at,
        },
        Err(e) => AttemptLog {
            provider: provider.name().to_owned(),
            provider_kind: provider.kind().to_owned(),
            score: None,
            error_code: Some(e.code().to_owned()),
            upstream_status: e.status,
            latency_ms,
            raw_body: e.raw_body.clone(),
            at,
        },
    };
    if let Err(e) = &result {
        tracing::warn!(provider = provider.name(), code = e.code(), status = ?e.status, latency_ms, "provider attempt failed: {}", e.message);
    }
    log.push(entry);
    result
}

async fn call(
    provider: &Arc<dyn Provider>,
    input: &RouteInput<'_>,
) -> Result<ProviderAnswer, ProviderError> {
    let caps = provider.capabilities().clone();
    let original = input.image.clone();
    // Re-encoding is CPU work: keep it off the async workers.
    let image = tokio::task::spawn_blocking(move || adapt_image(&original, &caps))
        .await
        .map_err(|e| {
            ProviderError::new(
                ErrorKind::Unavailable,
                format!("image adaptation failed: {e}"),
            )
        })?
        .map_err(|e| ProviderError::new(ErrorKind::Unsupported, e.to_string()))?;
    let req = CheckRequest {
        image,
        threshold: input.threshold,
        request_id: input.request_id.to_owned(),
        traceparent: input.traceparent.clone(),
    };
    provider.check(&req).await
}
