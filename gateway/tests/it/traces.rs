//! Traces over OTLP/HTTP, received in process: `livegate serve` configured only by the OTEL_*
//! variables, one request that falls back from Didit (503) to Kairos, and the span tree it
//! exports; the `traceparent` sent upstream and the `trace_id` stored on the row.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use livegate::config::KeyHash;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use serde_json::json;

use crate::harness::{Harness, jpeg, sim_requests_at, sim_rule_at as rule, spawn_sim as sim};
use crate::served::Served;

const KEY: &str = "lg_test_traces_fallback_key_31";

#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<ExportTraceServiceRequest>>>);

impl Received {
    fn spans(&self) -> Vec<(Vec<(String, String)>, Span)> {
        let got = self.0.lock().expect("lock");
        let mut out = Vec::new();
        for req in got.iter() {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .as_ref()
                    .map(|r| attrs(&r.attributes))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push((resource.clone(), s.clone()));
                    }
                }
            }
        }
        out
    }
}

async fn receive(State(r): State<Received>, body: Bytes) -> &'static str {
    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    r.0.lock().expect("lock").push(req);
    ""
}

fn attrs(kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> Vec<(String, String)> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => s.clone(),
                Some(AnyValue::IntValue(i)) => i.to_string(),
                Some(AnyValue::BoolValue(b)) => b.to_string(),
                Some(AnyValue::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

#[track_caller]
fn attr(s: &Span, key: &str) -> String {
    attrs(&s.attributes)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("span {} has no attribute {key}: {:?}", s.name, s.attributes))
}

async fn traceparent_seen_by(client: &reqwest::Client, base: &str) -> Vec<String> {
    sim_requests_at(client, base)
        .await
        .iter()
        .map(|r| {
            r["headers"]["traceparent"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_request_exports_one_span_tree() {
    let received = Received::default();
    let receiver = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let otlp = sim(receiver).await;
    let didit = sim(livegate_simulators::didit::router()).await;
    let kairos = sim(livegate_simulators::kairos::router()).await;
    let client = reqwest::Client::new();
    rule(&client, &didit, json!({"status": 503})).await;
    rule(&client, &kairos, json!({"score": 0.95})).await;

    let config = format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "didit-key-traces", timeout_ms: 2000 }}
  kairos: {{ kind: kairos, base_url: "{kairos}", app_id: "app", app_key: "kairos-key-traces", timeout_ms: 2000 }}
tenants:
  fb:
    keys: ["{key}"]
    threshold: 0.8
    routing: {{ strategy: fallback, providers: [didit, kairos] }}
    credits: {{ initial: 10, cost: {{ didit: 2, kairos: 1 }} }}
    rate_limit: {{ per_second: 100, burst: 10 }}
"#,
        key = KeyHash::of_key(KEY)
    );
    let served = Served::start(
        &config,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str()),
            ("OTEL_SERVICE_NAME", "livegate-trace-test"),
            ("OTEL_TRACES_SAMPLER", "parentbased_always_on"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await;

    let post = |traceparent: String, seed: u8| {
        let form = reqwest::multipart::Form::new().part(
            "image",
            reqwest::multipart::Part::bytes(jpeg(seed)).file_name("selfie.jpg"),
        );
        client
            .post(format!("{}/v1/liveness", served.base))
            .bearer_auth(KEY)
            .header("traceparent", traceparent)
            .multipart(form)
            .send()
    };
    // The caller decided not to sample this one: the parent-based sampler exports nothing.
    let unsampled = "1af7651916cd43dd8448eb211c80319c";
    let r = post(format!("00-{unsampled}-c7ad6b7169203331-00"), 1)
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);

    let trace = "0af7651916cd43dd8448eb211c80319c";
    let caller_span = "b7ad6b7169203331";
    let resp = post(format!("00-{trace}-{caller_span}-01"), 2)
        .await
        .expect("send");
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("request id")
        .to_owned();
    let r = Harness::reply(resp).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["provider"], "kairos", "{}", r.body);

    // The server span ends last, after the answer; wait for the whole tree.
    let names = [
        "request",
        "auth",
        "rate_limit",
        "intake",
        "credits.reserve",
        "provider.attempt",
        "provider.attempt",
        "policy",
        "store.write",
    ];
    let until = Instant::now() + Duration::from_secs(20);
    let ours = loop {
        let ours: Vec<_> = received
            .spans()
            .into_iter()
            .filter(|(_, s)| hex::encode(&s.trace_id) == trace)
            .collect();
        if ours.len() >= names.len() && ours.iter().any(|(_, s)| s.name == "POST /v1/liveness") {
            break ours;
        }
        assert!(
            Instant::now() < until,
            "spans of trace {trace} so far: {:?}",
            ours.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut got: Vec<&str> = ours
        .iter()
        .map(|(_, s)| {
            if s.name == "POST /v1/liveness" {
                "request"
            } else {
                s.name.as_str()
            }
        })
        .collect();
    got.sort();
    let mut want = names.to_vec();
    want.sort();
    assert_eq!(got, want);

    let (resource, server) = ours
        .iter()
        .find(|(_, s)| s.name == "POST /v1/liveness")
        .expect("server span");
    assert!(
        resource.contains(&("service.name".into(), "livegate-trace-test".into())),
        "{resource:?}"
    );
    assert_eq!(hex::encode(&server.parent_span_id), caller_span);
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(attr(server, "http.request.method"), "POST");
    assert_eq!(attr(server, "http.route"), "/v1/liveness");
    assert_eq!(attr(server, "url.path"), "/v1/liveness");
    assert_eq!(attr(server, "http.response.status_code"), "200");
    assert_eq!(attr(server, "request_id"), request_id);
    assert_eq!(attr(server, "tenant"), "fb");

    let span = |name: &str| -> Vec<&Span> {
        let mut v: Vec<&Span> = ours
            .iter()
            .map(|(_, s)| s)
            .filter(|s| s.name == name)
            .collect();
        v.sort_by_key(|s| s.start_time_unix_nano);
        v
    };
    for (_, s) in &ours {
        if s.span_id != server.span_id {
            assert_eq!(
                s.parent_span_id, server.span_id,
                "{} is a child of the server span",
                s.name
            );
            // Only the start: a span's end is its last exit, which tracing-opentelemetry may
            // record for the last child a little after the server span's.
            assert!(
                s.start_time_unix_nano >= server.start_time_unix_nano,
                "{} starts within the server span",
                s.name
            );
        }
    }
    let auth = span("auth")[0];
    assert_eq!(attr(auth, "tenant"), "fb");
    assert_eq!(attr(auth, "outcome"), "ok");
    let limit = span("rate_limit")[0];
    assert_eq!(attr(limit, "tenant"), "fb");
    assert_eq!(attr(limit, "outcome"), "ok");
    assert_eq!(attr(limit, "mode"), "local");
    let credits = span("credits.reserve")[0];
    assert_eq!(attr(credits, "amount"), "2");
    assert_eq!(attr(credits, "outcome"), "reserved");
    assert!(credits.start_time_unix_nano >= span("intake")[0].start_time_unix_nano);
    let intake = span("intake")[0];
    assert_eq!(attr(intake, "image.format"), "jpg");
    assert_eq!(attr(intake, "image.width"), "640");

    let attempts = span("provider.attempt");
    let (first, second) = (attempts[0], attempts[1]);
    assert_eq!(attr(first, "provider"), "didit");
    assert_eq!(attr(first, "provider.kind"), "didit");
    assert_eq!(attr(first, "outcome"), "error");
    assert_eq!(attr(first, "upstream.status_code"), "503");
    assert_eq!(attr(first, "error.type"), "provider_unavailable");
    assert_eq!(attr(first, "retry"), "0");
    assert_eq!(first.kind, SpanKind::Client as i32);
    assert_eq!(attr(second, "provider"), "kairos");
    assert_eq!(attr(second, "outcome"), "ok");
    assert_eq!(attr(second, "upstream.status_code"), "200");
    assert_eq!(attr(second, "retry"), "0");
    assert!(first.end_time_unix_nano <= second.start_time_unix_nano);
    assert_eq!(attr(span("policy")[0], "decision"), "approved");
    assert!(span("store.write")[0].start_time_unix_nano >= second.end_time_unix_nano);

    // Each upstream got the trace, with its own attempt span as the parent.
    let didit_tp = traceparent_seen_by(&client, &didit).await;
    let kairos_tp = traceparent_seen_by(&client, &kairos).await;
    assert_eq!(
        didit_tp.last().map(String::as_str),
        Some(format!("00-{trace}-{}-01", hex::encode(&first.span_id)).as_str())
    );
    assert_eq!(
        kairos_tp.last().map(String::as_str),
        Some(format!("00-{trace}-{}-01", hex::encode(&second.span_id)).as_str())
    );
    // The unsampled request still propagated its trace id, marked unsampled.
    assert!(
        didit_tp[0].starts_with(&format!("00-{unsampled}-")) && didit_tp[0].ends_with("-00"),
        "{didit_tp:?}"
    );
    assert!(
        received
            .spans()
            .iter()
            .all(|(_, s)| hex::encode(&s.trace_id) != unsampled),
        "an unsampled trace was exported"
    );

    // The row carries the trace id.
    let store = livegate::store::connect(&served.database_url)
        .await
        .expect("store");
    let rows = store
        .list_verifications(
            "fb",
            &livegate::store::ListFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("rows");
    let ids: Vec<Option<&str>> = rows.iter().map(|r| r.trace_id.as_deref()).collect();
    assert_eq!(ids, [Some(trace), Some(unsampled)]);
    served.stop().await;
}
