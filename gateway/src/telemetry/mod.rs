//! Logs and traces: the process's `tracing` subscriber (JSON or text logs, plus OpenTelemetry
//! export over OTLP/HTTP when an endpoint is configured), the spans of one request, and W3C
//! trace-context propagation in from callers and out to upstreams.
//!
//! Configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; tracing is off when neither is set),
//! `OTEL_SERVICE_NAME` (default `livegate`), `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*`, `OTEL_SDK_DISABLED`.
//! The protocol is always `http/protobuf` (no gRPC stack in the binary).
//!
//! One span tree per request; every span is a child of the HTTP server span. Span names (the
//! tracing name; the server span's OpenTelemetry name is `{method} {route}`):
//! - `request`: HTTP server span, OTel HTTP semantic-convention attributes plus `request_id`
//!   and `tenant`. Its parent is the caller's `traceparent`, when one is sent.
//! - `auth`: API-key lookup (`tenant`, `outcome` = `ok` | `unauthorized`).
//! - `rate_limit`: the key and tenant limits (`tenant`, `outcome` = `ok` | `limited`, `mode` =
//!   `local` | `redis` | `fallback…`).
//! - `credits.reserve`: reserving the request's credits (`tenant`, `amount`, `outcome` =
//!   `reserved` | `insufficient` | `unmetered` | `error`).
//! - `intake`: reading and decoding the image (`image.format`, `image.width`, `image.height`).
//! - `provider.attempt`: one provider call (`provider`, `provider.kind`, `retry`, `shadow`,
//!   `outcome` = `ok` | `error`, `upstream.status_code`, `error.type`). Its context is the
//!   `traceparent` sent to the upstream.
//! - `policy`: the decision (`decision`).
//! - `store.write`: waiting for the group commit of the verification's rows (`rows`).
//!
//! Spans carry no API key, vendor secret or image byte, as the logs don't.

pub mod metrics;
pub mod server_timing;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HeaderExtractor, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("HTTP client for the OTLP exporter: {0}")]
    Client(String),
}

/// Flushes and stops the trace exporter when dropped. Drop it outside async code, while the
/// runtime it was built with is still alive (the exporter's requests run there).
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether the environment asks for trace export.
pub fn tracing_configured() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT") || env_set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// The OTLP exporter's HTTP client: the workspace's reqwest (rustls), with each export run on
/// the tokio runtime — the SDK's batch processor exports from its own thread, which has none.
#[derive(Debug)]
struct ReqwestOnRuntime {
    client: reqwest::Client,
    handle: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for ReqwestOnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let url = reqwest::Url::parse(&parts.uri.to_string())?;
            let resp = client
                .request(parts.method, url)
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let mut out = http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                out = out.header(k, v);
            }
            let body = resp.bytes().await?;
            Ok::<_, HttpError>(out.body(body)?)
        };
        self.handle.spawn(call).await?
    }
}

fn tracer_provider(handle: tokio::runtime::Handle) -> Result<SdkTracerProvider, TelemetryError> {
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| TelemetryError::Client(e.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_timeout(timeout)
        .with_http_client(ReqwestOnRuntime { client, handle })
        .build()
        .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
    let service =
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| env!("CARGO_PKG_NAME").to_owned());
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    // The sampler comes from OTEL_TRACES_SAMPLER(_ARG) through the SDK's default config.
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Install the process's subscriber: logs on stderr (JSON lines, or text with
/// `LIVEGATE_LOG_FORMAT=text`; level from `LIVEGATE_LOG`, default `info`) and, when an OTLP
/// endpoint is set, livegate's spans exported there whatever the log level.
pub fn init(handle: tokio::runtime::Handle) -> TracingGuard {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, fmt};

    let filter = EnvFilter::try_from_env("LIVEGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let text = std::env::var("LIVEGATE_LOG_FORMAT").is_ok_and(|v| v == "text");
    let logs = if text {
        fmt::layer().with_writer(std::io::stderr).boxed()
    } else {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    let mut problem = None;
    let provider = if tracing_configured() {
        match tracer_provider(handle) {
            Ok(p) => Some(p),
            Err(e) => {
                problem = Some(e);
                None
            }
        }
    } else {
        None
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("livegate"))
            .with_threads(false)
            .with_location(false)
            .with_filter(
                Targets::new()
                    .with_target("livegate", LevelFilter::INFO)
                    .with_default(LevelFilter::OFF),
            )
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .init();
    if let Some(e) = problem {
        tracing::warn!(error = %e, "trace export is off");
    }
    TracingGuard { provider }
}

/// The known route of a path, for the span name and `http.route` (the raw path may carry ids).
fn route_of(path: &str) -> Option<&'static str> {
    const ROUTES: [&str; 8] = [
        "/v1/liveness",
        "/v1/verifications",
        "/admin/v1/config",
        "/healthz",
        "/readyz",
        "/openapi.yaml",
        "/metrics",
        "/v1/verifications/{id}",
    ];
    if let Some(id) = path.strip_prefix("/v1/verifications/") {
        return (!id.is_empty() && !id.contains('/')).then_some(ROUTES[7]);
    }
    ROUTES[..7].iter().copied().find(|r| *r == path)
}

/// The HTTP server span of one request, a child of the caller's `traceparent` when valid.
pub fn server_span(req: &Request, request_id: &str) -> Span {
    let method = req.method().as_str();
    let route = route_of(req.uri().path());
    let name = match route {
        Some(r) => format!("{method} {r}"),
        None => method.to_owned(),
    };
    let version = match req.version() {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "",
    };
    let user_agent = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let span = tracing::info_span!(
        "request",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = Empty,
        request_id = %request_id,
        tenant = Empty,
        "http.request.method" = %method,
        "http.route" = route,
        "url.path" = %req.uri().path(),
        "url.scheme" = "http",
        "network.protocol.version" = version,
        "user_agent.original" = user_agent,
        "http.response.status_code" = Empty,
        "error.type" = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

/// Close the server span's story: status code, and error status on a 5xx (semantic
/// conventions: a 4xx is the client's error, not the server's).
pub fn record_response(span: &Span, status: StatusCode) {
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "error");
        span.record("error.type", status.as_str());
    }
}

pub fn auth_span() -> Span {
    tracing::info_span!("auth", tenant = Empty, outcome = Empty)
}

/// The authenticated tenant, on the auth span and on the current (request) span, so every log
/// line of the request names it.
pub fn record_auth(auth: &Span, tenant: Option<&str>) {
    match tenant {
        Some(t) => {
            auth.record("tenant", t);
            auth.record("outcome", "ok");
            Span::current().record("tenant", t);
        }
        None => {
            auth.record("outcome", "unauthorized");
        }
    }
}

pub fn intake_span() -> Span {
    tracing::info_span!(
        "intake",
        "image.format" = Empty,
        "image.width" = Empty,
        "image.height" = Empty
    )
}

pub fn record_intake(span: &Span, format: Option<&str>, width: Option<i32>, height: Option<i32>) {
    if let Some(f) = format {
        span.record("image.format", f);
    }
    if let (Some(w), Some(h)) = (width, height) {
        span.record("image.width", w);
        span.record("image.height", h);
    }
}

pub fn attempt_span(provider: &str, kind: &str, retry: u32, shadow: bool) -> Span {
    tracing::info_span!(
        "provider.attempt",
        otel.kind = "client",
        otel.status_code = Empty,
        provider = %provider,
        "provider.kind" = %kind,
        retry,
        shadow,
        outcome = Empty,
        "upstream.status_code" = Empty,
        "error.type" = Empty,
    )
}

pub fn record_attempt(span: &Span, upstream_status: Option<u16>, error_code: Option<&str>) {
    if let Some(s) = upstream_status {
        span.record("upstream.status_code", s);
    }
    match error_code {
        None => {
            span.record("outcome", "ok");
        }
        Some(code) => {
            span.record("outcome", "error");
            span.record("error.type", code);
            span.record("otel.status_code", "error");
        }
    }
}

pub fn rate_limit_span(tenant: &str) -> Span {
    tracing::info_span!("rate_limit", tenant, outcome = Empty, mode = Empty)
}

pub fn credits_span(tenant: &str, amount: i64) -> Span {
    tracing::info_span!("credits.reserve", tenant, amount, outcome = Empty)
}

pub fn policy_span() -> Span {
    tracing::info_span!("policy", decision = Empty)
}

pub fn store_span(rows: usize) -> Span {
    tracing::info_span!("store.write", rows)
}

/// The `traceparent` to send upstream for a call made in `span`: the span's own context when
/// traces are on, otherwise the caller's header passed through unchanged.
pub fn outbound_traceparent(span: &Span, caller: Option<String>) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return caller;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent").or(caller)
}

/// The trace id stored on a verification: the current trace's when traces are on, otherwise
/// the one in the caller's `traceparent`, if any.
pub fn trace_id(headers: &HeaderMap) -> Option<String> {
    let cx = Span::current().context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        return Some(sc.trace_id().to_string());
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    let sc = parent.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_not_raw_paths() {
        assert_eq!(route_of("/v1/liveness"), Some("/v1/liveness"));
        assert_eq!(
            route_of("/v1/verifications/0193a5c0-7f4e"),
            Some("/v1/verifications/{id}")
        );
        assert_eq!(route_of("/v1/verifications/a/b"), None);
        assert_eq!(route_of("/nope"), None);
    }

    #[test]
    fn trace_id_falls_back_to_the_callers_header() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_id(&h).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(trace_id(&HeaderMap::new()), None);
        assert_eq!(
            outbound_traceparent(&Span::none(), Some("x".into())).as_deref(),
            Some("x")
        );
    }
}
