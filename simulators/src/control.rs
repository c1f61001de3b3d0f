//! The `/_sim/*` control API every simulator shares: fault-injection rules (what the next
//! matching requests get) and the log of requests received on the vendor endpoint.
//!
//! A rule's `respond` object mixes fields common to all simulators ([`CommonRespond`]) with
//! the vendor's own (a [`VendorRespond`] type); both reject unknown fields so that a typo in a
//! test's rule fails loudly instead of silently answering the default.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value, json};

use crate::inbound::{Inbound, Seed};

/// Most faces a rule may ask for; enough for any test, small enough to keep answers small.
const MAX_FACES: u32 = 64;

/// The vendor-specific part of a rule's `respond` object.
pub(crate) trait VendorRespond:
    DeserializeOwned + Clone + Default + Send + Sync + 'static
{
    /// Cross-field checks serde cannot express, run when the rule is created.
    fn check(&self, _common: &CommonRespond) -> Result<(), String> {
        Ok(())
    }
}

/// Presentation-attack kinds a rule may declare. Each simulator shows them its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SpoofType {
    Print,
    Replay,
    #[serde(rename = "3d_mask")]
    Mask3d,
    Mask,
    Deepfake,
}

impl SpoofType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpoofType::Print => "print",
            SpoofType::Replay => "replay",
            SpoofType::Mask3d => "3d_mask",
            SpoofType::Mask => "mask",
            SpoofType::Deepfake => "deepfake",
        }
    }
}

/// `respond` fields every simulator understands.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommonRespond {
    /// Underlying liveness, 0-1; each simulator converts it to its native unit.
    #[serde(default)]
    pub score: Option<f64>,
    #[serde(default)]
    pub faces: Option<u32>,
    #[serde(default)]
    pub spoof_type: Option<SpoofType>,
    #[serde(default)]
    pub bbox: Option<[f64; 4]>,
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub delay_ms: Option<u64>,
    /// Raw body sent verbatim; a JSON `null` here means the four bytes `null`.
    #[serde(default, deserialize_with = "present")]
    pub body: Option<Value>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub retry_after: Option<u64>,
    #[serde(default)]
    pub times: Option<u64>,
}

/// The keys of [`CommonRespond`]; every other `respond` key goes to the vendor type.
const COMMON_FIELDS: &[&str] = &[
    "score",
    "faces",
    "spoof_type",
    "bbox",
    "status",
    "delay_ms",
    "body",
    "content_type",
    "headers",
    "retry_after",
    "times",
];

impl CommonRespond {
    /// The liveness to report. Without a rule score it comes from the image; a declared spoof
    /// then scales it into 0..0.2 so the attack also fails any sane threshold.
    pub(crate) fn liveness(&self, seed: &Seed) -> f64 {
        self.score.unwrap_or_else(|| {
            let score = seed.unit(0);
            if self.spoof_type.is_some() {
                score * 0.2
            } else {
                score
            }
        })
    }

    pub(crate) fn face_count(&self) -> u32 {
        self.faces.unwrap_or(1)
    }

    /// The rule's status when it asks for an error answer.
    pub(crate) fn error_status(&self) -> Option<StatusCode> {
        self.status
            .filter(|s| !(200..300).contains(s))
            .map(status_code)
    }

    /// The rule's status when it asks for a success answer with a particular 2xx.
    pub(crate) fn success_status(&self) -> Option<StatusCode> {
        self.status
            .filter(|s| (200..300).contains(s))
            .map(status_code)
    }

    fn check(&self) -> Result<(), String> {
        if let Some(score) = self.score
            && !(score.is_finite() && (0.0..=1.0).contains(&score))
        {
            return Err(format!("score must be within 0..=1, got {score}"));
        }
        if let Some(faces) = self.faces
            && faces > MAX_FACES
        {
            return Err(format!("faces must be at most {MAX_FACES}, got {faces}"));
        }
        if let Some([x1, y1, x2, y2]) = self.bbox {
            let finite = [x1, y1, x2, y2].iter().all(|v| v.is_finite() && *v >= 0.0);
            if !finite || x2 <= x1 || y2 <= y1 {
                return Err(
                    "bbox must be [x1, y1, x2, y2] with 0 <= x1 < x2 and 0 <= y1 < y2".into(),
                );
            }
        }
        if let Some(status) = self.status
            && !(200..=599).contains(&status)
        {
            return Err(format!("status must be within 200..=599, got {status}"));
        }
        if self.times == Some(0) {
            return Err("times must be at least 1 (null means unlimited)".into());
        }
        if let Some(content_type) = &self.content_type {
            HeaderValue::from_str(content_type).map_err(|_| {
                format!("content_type {content_type:?} is not a valid header value")
            })?;
        }
        for (name, value) in &self.headers {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers: {name:?} is not a valid header name"))?;
            HeaderValue::from_str(value)
                .map_err(|_| format!("headers: {value:?} is not a valid header value"))?;
        }
        Ok(())
    }
}

/// Lets `null` through as `Some(null)` so that "absent" and "null" stay different.
pub(crate) fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// One stored rule; the all-default rule stands for "no rule matched".
#[derive(Debug, Clone, Default)]
pub(crate) struct Rule<E> {
    id: u64,
    image_sha256: Option<String>,
    remaining: Option<u64>,
    /// The rule as posted, for `GET /_sim/rules`.
    posted: Value,
    pub common: CommonRespond,
    pub vendor: E,
}

impl<E> Rule<E> {
    fn matches(&self, sha256: Option<&str>) -> bool {
        match &self.image_sha256 {
            None => true,
            Some(wanted) => sha256 == Some(wanted.as_str()),
        }
    }

    /// Whether the rule names one image (`match.image_sha256`) rather than every request.
    pub(crate) fn is_image_specific(&self) -> bool {
        self.image_sha256.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostedRule {
    #[serde(default, rename = "match")]
    matcher: Option<Matcher>,
    #[serde(default)]
    respond: Option<Map<String, Value>>,
    #[serde(default)]
    times: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Matcher {
    #[serde(default)]
    image_sha256: Option<String>,
}

fn parse_rule<E: VendorRespond>(body: &[u8]) -> Result<Rule<E>, String> {
    let posted: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    // serde would also read a struct from an array.
    if !posted.is_object() {
        return Err("rule: expected a JSON object".into());
    }
    let rule: PostedRule =
        serde_json::from_value(posted.clone()).map_err(|e| format!("rule: {e}"))?;

    let image_sha256 = match rule.matcher.and_then(|m| m.image_sha256) {
        None => None,
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Some(hex.to_ascii_lowercase())
        }
        Some(hex) => {
            return Err(format!(
                "match.image_sha256 must be 64 hex digits, got {hex:?}"
            ));
        }
    };

    let (mut common_keys, mut vendor_keys) = (Map::new(), Map::new());
    for (key, value) in rule.respond.unwrap_or_default() {
        if COMMON_FIELDS.contains(&key.as_str()) {
            common_keys.insert(key, value);
        } else {
            vendor_keys.insert(key, value);
        }
    }
    let common: CommonRespond =
        serde_json::from_value(Value::Object(common_keys)).map_err(|e| format!("respond: {e}"))?;
    let vendor: E =
        serde_json::from_value(Value::Object(vendor_keys)).map_err(|e| format!("respond: {e}"))?;
    common.check().map_err(|e| format!("respond: {e}"))?;
    vendor.check(&common).map_err(|e| format!("respond: {e}"))?;

    let remaining = match (rule.times, common.times) {
        (Some(_), Some(_)) => return Err("give times either at the top level or in respond".into()),
        (Some(0), None) => return Err("times must be at least 1 (null means unlimited)".into()),
        (top, inner) => top.or(inner),
    };
    Ok(Rule {
        id: 0,
        image_sha256,
        remaining,
        posted,
        common,
        vendor,
    })
}

/// Rules and the request log of one simulator instance.
#[derive(Debug, Default)]
pub(crate) struct Sim<E> {
    inner: Mutex<Inner<E>>,
}

#[derive(Debug, Default)]
struct Inner<E> {
    next_id: u64,
    rules: Vec<Rule<E>>,
    requests: Vec<Value>,
}

impl<E: VendorRespond> Sim<E> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Sim {
            inner: Mutex::new(Inner {
                next_id: 1,
                rules: Vec::new(),
                requests: Vec::new(),
            }),
        })
    }

    /// A handler that panicked while holding the lock left consistent data behind (every
    /// mutation is a single push, remove or clear), so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner<E>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logs the request, picks the newest matching rule (using up one of its `times`, whatever
    /// the outcome of the request) and waits its `delay_ms`. Returns the default rule when
    /// none matches.
    pub(crate) async fn intake(&self, inbound: &Inbound) -> Rule<E> {
        let sha256 = inbound.image().map(|upload| upload.sha256_hex.as_str());
        self.intake_for(inbound, sha256).await
    }

    /// [`Sim::intake`] with the request's rule matched against `sha256` rather than the image
    /// part's hash; `None` (a batch of images) leaves only the rules without `match`.
    pub(crate) async fn intake_for(&self, inbound: &Inbound, sha256: Option<&str>) -> Rule<E> {
        let rule = {
            let mut inner = self.lock();
            inner.requests.push(inbound.log_entry());
            take_rule(&mut inner.rules, |rule| rule.matches(sha256))
        };
        if let Some(delay) = rule.common.delay_ms {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        rule
    }

    /// The newest rule naming exactly this image (`match.image_sha256`), for the images of a
    /// request beyond the one [`Sim::intake`] matched on: the second image of a pair, each
    /// image of a batch. Uses up one of its `times` and waits its `delay_ms`, as `intake` does.
    pub(crate) async fn image_rule(&self, sha256: &str) -> Option<Rule<E>> {
        let rule = take_rule(&mut self.lock().rules, |rule| {
            rule.image_sha256.as_deref() == Some(sha256)
        });
        if rule.id == 0 {
            return None;
        }
        if let Some(delay) = rule.common.delay_ms {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        Some(rule)
    }
}

/// Stored rules have ids from 1, so the default rule's id 0 means "none matched".
fn take_rule<E: Clone + Default>(
    rules: &mut Vec<Rule<E>>,
    wanted: impl Fn(&Rule<E>) -> bool,
) -> Rule<E> {
    let Some(index) = rules.iter().rposition(wanted) else {
        return Rule::default();
    };
    let rule = &mut rules[index];
    match rule.remaining {
        Some(1) => rules.remove(index),
        Some(n) => {
            rule.remaining = Some(n - 1);
            rule.clone()
        }
        None => rule.clone(),
    }
}

/// The `/_sim` routes for one simulator's state.
pub(crate) fn router<E: VendorRespond>(sim: Arc<Sim<E>>) -> Router {
    Router::new()
        .route(
            "/_sim/rules",
            get(list_rules::<E>)
                .post(add_rule::<E>)
                .delete(clear_rules::<E>),
        )
        .route(
            "/_sim/requests",
            get(list_requests::<E>).delete(clear_requests::<E>),
        )
        .with_state(sim)
}

async fn add_rule<E: VendorRespond>(State(sim): State<Arc<Sim<E>>>, body: Bytes) -> Response {
    match parse_rule::<E>(&body) {
        Ok(mut rule) => {
            let mut inner = sim.lock();
            rule.id = inner.next_id;
            inner.next_id += 1;
            let id = rule.id;
            inner.rules.push(rule);
            (StatusCode::CREATED, axum::Json(json!({ "id": id }))).into_response()
        }
        Err(error) => (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({ "error": error })),
        )
            .into_response(),
    }
}

async fn list_rules<E: VendorRespond>(State(sim): State<Arc<Sim<E>>>) -> Response {
    let inner = sim.lock();
    let rules: Vec<Value> = inner
        .rules
        .iter()
        .rev()
        .map(|rule| json!({ "id": rule.id, "remaining": rule.remaining, "rule": rule.posted }))
        .collect();
    axum::Json(rules).into_response()
}

async fn clear_rules<E: VendorRespond>(State(sim): State<Arc<Sim<E>>>) -> StatusCode {
    sim.lock().rules.clear();
    StatusCode::NO_CONTENT
}

async fn list_requests<E: VendorRespond>(State(sim): State<Arc<Sim<E>>>) -> Response {
    axum::Json(sim.lock().requests.clone()).into_response()
}

async fn clear_requests<E: VendorRespond>(State(sim): State<Arc<Sim<E>>>) -> StatusCode {
    sim.lock().requests.clear();
    StatusCode::NO_CONTENT
}

/// Statuses are checked when a rule is created; 500 only guards against a future bug.
pub(crate) fn status_code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A JSON answer.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The rule's verbatim `body`, if it has one: strings go out byte for byte, other JSON values
/// serialized, with the rule's status (200 without one).
pub(crate) fn override_response<E>(rule: &Rule<E>) -> Option<Response> {
    let body = rule.common.body.as_ref()?;
    let bytes = match body {
        Value::String(text) => text.clone().into_bytes(),
        other => other.to_string().into_bytes(),
    };
    let status = rule.common.status.map_or(StatusCode::OK, status_code);
    let mut response = (status, Body::from(bytes)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(response)
}

/// Applies the rule's header fields to whatever answer the simulator produced.
pub(crate) fn finish<E>(rule: &Rule<E>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    if let Some(seconds) = rule.common.retry_after {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    if let Some(content_type) = &rule.common.content_type
        && let Ok(value) = HeaderValue::from_str(content_type)
    {
        headers.insert(header::CONTENT_TYPE, value);
    }
    for (name, value) in &rule.common.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NoExtra {}
    impl VendorRespond for NoExtra {}

    #[test]
    fn every_common_field_name_is_a_real_field() {
        for field in COMMON_FIELDS {
            let mut map = Map::new();
            map.insert((*field).to_owned(), Value::Null);
            let parsed: Result<CommonRespond, _> = serde_json::from_value(Value::Object(map));
            let unknown = parsed
                .err()
                .is_some_and(|e| e.to_string().contains("unknown field"));
            assert!(!unknown, "{field} is listed but not a field");
        }
    }

    #[test]
    fn rejects_bad_rules() {
        for body in [
            "not json",
            "[]",
            r#"{"respond": {"scroe": 0.5}}"#,
            r#"{"respond": {"score": 1.5}}"#,
            r#"{"respond": {"status": 42}}"#,
            r#"{"respond": {"bbox": [10, 10, 5, 20]}}"#,
            r#"{"respond": {"times": 0}}"#,
            r#"{"times": 1, "respond": {"times": 2}}"#,
            r#"{"match": {"image_sha256": "abc"}}"#,
            r#"{"match": {"path": "/x"}}"#,
            r#"{"respond": {"headers": {"bad name": "x"}}}"#,
            r#"{"respond": {"spoof_type": "paper"}}"#,
        ] {
            assert!(parse_rule::<NoExtra>(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn times_counts_down_and_drops_the_rule() {
        let mut rules =
            vec![parse_rule::<NoExtra>(br#"{"respond": {"score": 0.5}, "times": 2}"#).unwrap()];
        rules[0].id = 1;
        let any = |rule: &Rule<NoExtra>| rule.matches(None);
        assert_eq!(take_rule(&mut rules, any).id, 1);
        assert_eq!(take_rule(&mut rules, any).id, 1);
        assert_eq!(take_rule(&mut rules, any).id, 0);
        assert!(rules.is_empty());
    }
}
