//! Kairos liveness verification (`POST {base}{path}`, path `/v0.2/liveness-verification` by
//! default, `/v0.1/...` on older accounts).
//!
//! Contract: Kairos's liveness document plus the variants its public docs show (`docs/providers.md`):
//! two header spellings, HTTP 200 or 201, two body shapes for the image size, an undocumented
//! `response_code`, integer or float confidences, and no documented error body.

use async_trait::async_trait;
use reqwest::header::{HeaderMap, HeaderName};
use reqwest::multipart::Form;
use serde::{Deserialize, Serialize};

use crate::http::{self, HttpClient};
use crate::settings::{SettingProblem, check_secret, check_url};
use crate::{
    Capabilities, CheckRequest, ErrorKind, Face, ImageFormat, Profile, Provider, ProviderAnswer,
    ProviderError, RawExchange, Secret, UpstreamDecision, Warning, WarningCode,
};

/// Which spelling of the credential headers to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    /// `app_id` / `app_key`, as in Kairos' code samples.
    Underscore,
    /// `app-id` / `app-key`, as in Kairos' newer header table. Survives proxies (nginx among
    /// them) that drop header names containing underscores.
    Hyphen,
    /// All four headers: works whichever spelling the account's gateway reads.
    #[default]
    Both,
}

/// Settings of one Kairos provider entry (`kind: kairos`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub base_url: String,
    /// Appended to `base_url`; Kairos moved the endpoint between versions, so it is config.
    #[serde(default = "default_path")]
    pub path: String,
    pub app_id: Secret,
    pub app_key: Secret,
    #[serde(default)]
    pub header_style: HeaderStyle,
    /// Allow a plain `http://` base URL to a host that is not loopback: credentials and
    /// selfies then cross the network in clear. Off by default.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

fn default_path() -> String {
    Settings::DEFAULT_PATH.to_owned()
}

impl Settings {
    pub const DEFAULT_PATH: &'static str = "/v0.2/liveness-verification";

    /// Settings with the default path and header style.
    pub fn new(base_url: impl Into<String>, app_id: Secret, app_key: Secret) -> Self {
        Self {
            base_url: base_url.into(),
            path: default_path(),
            app_id,
            app_key,
            header_style: HeaderStyle::default(),
            allow_insecure_http: false,
        }
    }

    /// What is wrong with settings that parsed, by field.
    pub fn problems(&self) -> Vec<SettingProblem> {
        let mut p = Vec::new();
        check_url("base_url", &self.base_url, self.allow_insecure_http, &mut p);
        check_secret("app_id", &self.app_id, &mut p);
        check_secret("app_key", &self.app_key, &mut p);
        if !self.path.starts_with('/') {
            p.push(SettingProblem {
                field: "path",
                message: "must start with /".to_owned(),
            });
        }
        p
    }
}

#[derive(Debug)]
pub struct Kairos {
    url: url::Url,
    auth: HeaderMap,
    http: HttpClient,
    profile: Profile,
}

impl Kairos {
    pub fn new(
        name: impl Into<String>,
        settings: Settings,
        http: HttpClient,
    ) -> Result<Self, ProviderError> {
        let path = if settings.path.is_empty() {
            Settings::DEFAULT_PATH
        } else {
            settings.path.as_str()
        };
        let slash = if path.starts_with('/') { "" } else { "/" };
        let url = http::endpoint(
            &format!("{}{slash}{path}", settings.base_url.trim_end_matches('/')),
            "Kairos",
        )?;
        let auth = auth_headers(&settings)?;
        // v0.1 documents 480x480 as the smallest image; v0.2 lowered it to 300 px.
        let min_side = if path.contains("v0.1") { 480 } else { 300 };
        Ok(Self {
            url,
            auth,
            http,
            profile: Profile {
                name: name.into(),
                kind: "kairos",
                capabilities: Capabilities {
                    // Kairos' documents show only JPEG and PNG samples; the gateway transcodes the rest.
                    formats: vec![ImageFormat::Jpeg, ImageFormat::Png],
                    min_side,
                    max_side: 5_000,
                    // Kairos documents no byte limit. 5 MB (decimal) is the smallest limit another
                    // upstream documents (Didit) and, at 5000 px, still leaves room for a JPEG at
                    // high quality: a safe bet that is unlikely to be refused.
                    max_bytes: 5_000_000,
                },
            },
        })
    }
}

fn auth_headers(settings: &Settings) -> Result<HeaderMap, ProviderError> {
    let names: &[(&str, &str)] = match settings.header_style {
        HeaderStyle::Underscore => &[("app_id", "app_key")],
        HeaderStyle::Hyphen => &[("app-id", "app-key")],
        HeaderStyle::Both => &[("app_id", "app_key"), ("app-id", "app-key")],
    };
    let id = http::secret_header(&settings.app_id, "Kairos app_id")?;
    let key = http::secret_header(&settings.app_key, "Kairos app_key")?;
    let mut headers = HeaderMap::new();
    for (id_name, key_name) in names {
        headers.insert(HeaderName::from_static(id_name), id.clone());
        headers.insert(HeaderName::from_static(key_name), key.clone());
    }
    Ok(headers)
}

#[async_trait]
impl Provider for Kairos {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    async fn check(&self, req: &CheckRequest) -> Result<ProviderAnswer, ProviderError> {
        http::require_format(&self.profile.capabilities, &req.image, "Kairos")?;
        let form = Form::new()
            .part("selfie", http::image_part(&req.image, "selfie")?)
            .text("threshold", http::unit_decimal(req.threshold));
        let call = self
            .http
            .post(self.url.clone())
            .headers(self.auth.clone())
            .multipart(form);
        let ex = http::exchange(call, req.traceparent.as_deref()).await?;
        let submitted = (req.image.width, req.image.height);
        let read = read(ex.status, &ex.body, req.threshold, submitted);
        read.map_err(|e| {
            if matches!(ex.status, 200 | 201) {
                e
            } else {
                ex.into_error(e)
            }
        })
    }
}

/// Kairos' answer as a call reads it, for a threshold and an image of `submitted` size.
pub(crate) fn read(
    status: u16,
    body: &str,
    threshold: f64,
    submitted: (u32, u32),
) -> Result<ProviderAnswer, ProviderError> {
    if matches!(status, 200 | 201) {
        parse_answer(status, body, threshold, submitted)
    } else {
        Err(classify_error(status))
    }
}

/// Kairos documents no error body, so the status alone decides; the body is kept verbatim by
/// the caller for the attempt row.
fn classify_error(status: u16) -> ProviderError {
    let (kind, message) = match status {
        // Kairos' own words: "403 ... you have reached a usage limit".
        403 => (
            ErrorKind::UsageLimit,
            "the Kairos account reached a usage limit (HTTP 403)".to_owned(),
        ),
        408 => (
            ErrorKind::Timeout,
            "Kairos timed out reading the request (HTTP 408)".to_owned(),
        ),
        // Kairos documents every other 4xx as an authentication failure.
        401..=499 if !matches!(status, 413 | 415 | 422 | 429) => (
            ErrorKind::AuthFailed,
            format!("Kairos refused the app_id/app_key (HTTP {status})"),
        ),
        _ => return http::classify_status(status, "Kairos", None),
    };
    ProviderError::new(kind, message)
}

/// `threshold` is the one sent upstream: Kairos calls a face live when its score is at least
/// that, and its `response_code` is undocumented, so the decision is recomputed here.
/// `submitted` is the size of the image that was sent, to bring boxes back into its pixels.
fn parse_answer(
    status: u16,
    body: &str,
    threshold: f64,
    submitted: (u32, u32),
) -> Result<ProviderAnswer, ProviderError> {
    let bad = |msg: String| {
        ProviderError::new(ErrorKind::BadResponse, msg).with_response(status, body.to_owned())
    };
    let answer: wire::Answer =
        serde_json::from_str(body).map_err(|e| bad(format!("unreadable Kairos answer: {e}")))?;
    let data = answer.response_data;
    let faces_detected = u32::try_from(data.faces_predicted.len()).unwrap_or(u32::MAX);

    let score = if faces_detected == 0 {
        None
    } else {
        let s = data
            .faces_liveness
            .ok_or_else(|| bad("Kairos reported a face but no faces_liveness".into()))?;
        Some(s.clamp(0.0, 1.0))
    };
    let upstream_decision = score.map(|s| {
        if s >= threshold {
            UpstreamDecision::Approved
        } else {
            UpstreamDecision::Declined
        }
    });

    let scale = frame_scale(data.frame(), submitted);
    let face = data
        .faces_predicted
        .iter()
        .filter_map(|p| Some((p, p.top_left.as_ref()?, p.delta.as_ref()?)))
        .max_by(|a, b| (a.2.x * a.2.y).abs().total_cmp(&(b.2.x * b.2.y).abs()))
        .map(|(p, tl, d)| Face {
            bbox: [
                tl.x * scale.0,
                tl.y * scale.1,
                (tl.x + d.x) * scale.0,
                (tl.y + d.y) * scale.1,
            ],
            confidence: p.confidence,
            quality: None,
            luminance: None,
            age: None,
            gender: None,
        });

    let mut warnings = Vec::new();
    if faces_detected == 0 {
        warnings.push(Warning::new(WarningCode::NoFaceDetected));
    }
    if faces_detected > 1 {
        warnings.push(Warning::new(WarningCode::MultipleFacesDetected));
    }

    Ok(ProviderAnswer {
        score,
        upstream_decision,
        // Kairos names no attack type.
        spoof_type: None,
        face,
        faces_detected,
        warnings,
        provider_request_id: answer
            .api_req_uid
            .and_then(wire::id_text)
            .or_else(|| answer.api_req_uuid.and_then(wire::id_text)),
        raw: RawExchange {
            status: Some(status),
            body: Some(body.to_owned()),
        },
    })
}

/// Factors that bring a box from the frame Kairos reports (`img`) into the submitted image.
/// Kairos may analyse a resized copy; boxes are only rescaled when both frames have the same
/// aspect ratio, because a swapped width and height (an EXIF rotation applied on one side
/// only) cannot be undone by scaling.
fn frame_scale(frame: Option<(f64, f64)>, submitted: (u32, u32)) -> (f64, f64) {
    let (sw, sh) = (f64::from(submitted.0), f64::from(submitted.1));
    match frame {
        Some((fw, fh)) if fw > 0.0 && fh > 0.0 && sw > 0.0 && sh > 0.0 => {
            let (kx, ky) = (sw / fw, sh / fh);
            let same_aspect = (kx / ky - 1.0).abs() < 0.02;
            if same_aspect { (kx, ky) } else { (1.0, 1.0) }
        }
        _ => (1.0, 1.0),
    }
}

/// Kairos' JSON, reduced to what livegate reads. `response_code` and the zone-less
/// timestamps are deliberately not read: the first is undocumented, the second unused.
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Answer {
        // Other Kairos endpoints spell it `api_req_uuid`; both are read rather than aliased,
        // because an alias makes a body carrying both spellings a parse error.
        pub api_req_uid: Option<serde_json::Value>,
        pub api_req_uuid: Option<serde_json::Value>,
        pub response_data: Data,
    }

    #[derive(Deserialize)]
    pub struct Data {
        pub faces_liveness: Option<f64>,
        // Required: a body without it is not an answer, and reading it as "no face" would
        // decline the user instead of failing over.
        pub faces_predicted: Vec<Prediction>,
        pub img: Option<Size>,
        pub img_width: Option<f64>,
        pub img_height: Option<f64>,
    }

    impl Data {
        /// The analysed frame's width and height, from either documented shape.
        pub fn frame(&self) -> Option<(f64, f64)> {
            if let Some(nested) = self.img.as_ref().and_then(|i| Some((i.width?, i.height?))) {
                return Some(nested);
            }
            Some((self.img_width?, self.img_height?))
        }
    }

    #[derive(Deserialize)]
    pub struct Size {
        pub width: Option<f64>,
        pub height: Option<f64>,
    }

    #[derive(Deserialize)]
    pub struct Prediction {
        pub confidence: Option<f64>,
        pub top_left: Option<Point>,
        /// Width (`x`) and height (`y`) of the box.
        pub delta: Option<Point>,
    }

    #[derive(Deserialize)]
    pub struct Point {
        pub x: f64,
        pub y: f64,
    }

    /// Request ids are strings in every sample; a number is kept rather than failing the call.
    pub fn id_text(v: serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) if !s.is_empty() => Some(s),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_upstream::{self, upstream};

    const SUBMITTED: (u32, u32) = (95, 71);

    fn parse(status: u16, body: &str, threshold: f64) -> ProviderAnswer {
        parse_answer(status, body, threshold, SUBMITTED).expect("parse")
    }

    #[test]
    fn maps_documented_example() {
        let body = r#"{
          "api_req_uid": "c6bb825f-871c-4323-8c06-8e5fd3517747",
          "processed_at": "2024-04-01 20:05:17",
          "requested_at": "2024-04-01 20:05:17",
          "response_code": 2,
          "response_data": {
            "faces_liveness": 0.0,
            "faces_predicted": [
              {"confidence": 0.9885, "delta": {"x": 18.9982, "y": 25.3957},
               "top_left": {"x": 38.0577, "y": 4.0824}}
            ],
            "img": {"height": 71, "width": 95}
          }
        }"#;
        let a = parse(200, body, 0.6);
        assert_eq!(a.score, Some(0.0));
        assert_eq!(a.upstream_decision, Some(UpstreamDecision::Declined));
        assert_eq!(a.faces_detected, 1);
        assert!(a.warnings.is_empty());
        assert_eq!(a.spoof_type, None);
        let f = a.face.expect("face");
        let want = [38.0577, 4.0824, 38.0577 + 18.9982, 4.0824 + 25.3957];
        for (got, want) in f.bbox.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{:?}", f.bbox);
        }
        assert_eq!(f.confidence, Some(0.9885));
        assert_eq!(
            a.provider_request_id.as_deref(),
            Some("c6bb825f-871c-4323-8c06-8e5fd3517747")
        );
        assert_eq!(a.raw.status, Some(200));
        assert_eq!(a.raw.body.as_deref(), Some(body));
    }

    #[test]
    fn flat_shape_201_integer_confidence_and_no_request_id() {
        let body = r#"{"response_data":{"img_width":95,"img_height":71,
          "faces_predicted":[{"confidence":1,"top_left":{"x":1,"y":2},"delta":{"x":10,"y":20}}],
          "faces_liveness":0.93}}"#;
        let a = parse(201, body, 0.6);
        assert_eq!(a.score, Some(0.93));
        assert_eq!(a.upstream_decision, Some(UpstreamDecision::Approved));
        let f = a.face.expect("face");
        assert_eq!(f.bbox, [1.0, 2.0, 11.0, 22.0]);
        assert_eq!(f.confidence, Some(1.0));
        assert_eq!(a.provider_request_id, None);
        assert_eq!(a.raw.status, Some(201));
    }

    #[test]
    fn score_equal_to_threshold_is_live() {
        let body = r#"{"response_data":{"faces_liveness":0.6,
          "faces_predicted":[{"confidence":0.9,"top_left":{"x":0,"y":0},"delta":{"x":5,"y":5}}]}}"#;
        assert_eq!(
            parse(200, body, 0.6).upstream_decision,
            Some(UpstreamDecision::Approved)
        );
        assert_eq!(
            parse(200, body, 0.61).upstream_decision,
            Some(UpstreamDecision::Declined)
        );
    }

    #[test]
    fn response_code_and_timestamps_are_not_trusted() {
        // The same answer with each response_code seen (and none, and an odd type) maps alike.
        for code in [
            r#""response_code":0,"#,
            r#""response_code":1,"#,
            r#""response_code":2,"#,
            r#""response_code":"x","#,
            "",
        ] {
            let body = format!(
                r#"{{{code}"processed_at":"2024-04-01 20:05:17","requested_at":"not a date",
                "response_data":{{"faces_liveness":0.8,"faces_predicted":[{{"top_left":{{"x":0,"y":0}},"delta":{{"x":1,"y":1}}}}]}}}}"#
            );
            let a = parse(200, &body, 0.5);
            assert_eq!(a.score, Some(0.8), "{body}");
            assert_eq!(a.upstream_decision, Some(UpstreamDecision::Approved));
        }
    }

    #[test]
    fn empty_faces_is_no_face() {
        let body = r#"{"api_req_uuid":"u-1","response_code":0,
          "response_data":{"faces_liveness":0.0,"faces_predicted":[],"img":{"height":71,"width":95}}}"#;
        let a = parse(200, body, 0.6);
        assert_eq!(a.score, None);
        assert_eq!(a.upstream_decision, None);
        assert_eq!(a.faces_detected, 0);
        assert_eq!(a.face, None);
        assert_eq!(a.warnings, [Warning::new(WarningCode::NoFaceDetected)]);
        assert_eq!(a.provider_request_id.as_deref(), Some("u-1"));
    }

    #[test]
    fn several_faces_score_the_largest_not_the_first() {
        let body = r#"{"api_req_uid":"r","response_data":{"faces_liveness":0.7,"faces_predicted":[
          {"confidence":0.99,"top_left":{"x":0,"y":0},"delta":{"x":10,"y":10}},
          {"confidence":0.8,"top_left":{"x":40,"y":5},"delta":{"x":30,"y":40}},
          {"confidence":0.7,"top_left":{"x":20,"y":20},"delta":{"x":20,"y":20}}],
          "img":{"width":95,"height":71}}}"#;
        let a = parse(200, body, 0.6);
        assert_eq!(a.faces_detected, 3);
        let f = a.face.expect("face");
        assert_eq!(f.bbox, [40.0, 5.0, 70.0, 45.0]);
        assert_eq!(f.confidence, Some(0.8));
        assert_eq!(
            a.warnings,
            [Warning::new(WarningCode::MultipleFacesDetected)]
        );
    }

    #[test]
    fn boxes_come_back_to_the_submitted_frame() {
        let body = r#"{"response_data":{"faces_liveness":0.9,"img":{"width":500,"height":400},
          "faces_predicted":[{"top_left":{"x":100,"y":50},"delta":{"x":50,"y":100}}]}}"#;
        let a = parse_answer(200, body, 0.5, (1000, 800)).expect("parse");
        assert_eq!(a.face.expect("face").bbox, [200.0, 100.0, 300.0, 300.0]);
        // Width and height swapped (EXIF applied on one side only): left as reported.
        let a = parse_answer(200, body, 0.5, (800, 1000)).expect("parse");
        assert_eq!(a.face.expect("face").bbox, [100.0, 50.0, 150.0, 150.0]);
    }

    #[test]
    fn unreadable_answers_are_bad_responses() {
        for body in [
            "",
            "<html>ok</html>",
            r#"{"api_req_uid":"x"}"#,
            r#"{"response_data":{"faces_liveness":0.9}}"#,
            r#"{"response_data":{"faces_predicted":[{"confidence":1}]}}"#,
        ] {
            let e = parse_answer(200, body, 0.5, SUBMITTED).expect_err(body);
            assert_eq!(e.kind, ErrorKind::BadResponse, "{body}");
            assert_eq!(e.status, Some(200));
            assert_eq!(e.raw_body.as_deref(), Some(body));
        }
    }

    #[test]
    fn errors_by_status() {
        let cases = [
            (400, ErrorKind::BadInput),
            (413, ErrorKind::BadInput),
            (415, ErrorKind::BadInput),
            (422, ErrorKind::BadInput),
            (401, ErrorKind::AuthFailed),
            (404, ErrorKind::AuthFailed),
            (403, ErrorKind::UsageLimit),
            (408, ErrorKind::Timeout),
            (429, ErrorKind::RateLimited),
            (500, ErrorKind::Unavailable),
            (503, ErrorKind::Unavailable),
            (302, ErrorKind::BadResponse),
        ];
        for (status, kind) in cases {
            assert_eq!(classify_error(status).kind, kind, "HTTP {status}");
        }
        assert_eq!(classify_error(403).code(), "provider_usage_limit");
        assert!(classify_error(403).kind.retryable());
    }

    #[test]
    fn capabilities_follow_the_path_version() {
        let mut cfg = config("http://127.0.0.1:1".into(), HeaderStyle::Both);
        let k = kairos(cfg.clone()).expect("new");
        assert_eq!(k.capabilities().min_side, 300);
        assert_eq!(k.capabilities().max_side, 5_000);
        assert_eq!(
            k.capabilities().formats,
            [ImageFormat::Jpeg, ImageFormat::Png]
        );
        assert_eq!(
            k.url.as_str(),
            "http://127.0.0.1:1/v0.2/liveness-verification"
        );
        cfg.path = "/v0.1/liveness-verification".into();
        cfg.base_url.push('/');
        let k = kairos(cfg).expect("new");
        assert_eq!(k.capabilities().min_side, 480);
        assert_eq!(
            k.url.as_str(),
            "http://127.0.0.1:1/v0.1/liveness-verification"
        );
        assert_eq!(k.kind(), "kairos");
        assert!(!format!("{k:?}").contains("key-secret"));
    }

    #[test]
    fn credentials_that_cannot_be_headers_fail_at_startup() {
        let mut cfg = config("http://127.0.0.1:1".into(), HeaderStyle::Both);
        cfg.app_key = Secret::new("line\nbreak");
        assert_eq!(
            kairos(cfg).expect_err("bad header").kind,
            ErrorKind::AuthFailed
        );
    }

    // ---- on the wire -------------------------------------------------------------------

    fn config(base_url: String, header_style: HeaderStyle) -> Settings {
        Settings {
            header_style,
            ..Settings::new(base_url, Secret::new("id-123"), Secret::new("key-secret"))
        }
    }

    fn kairos(settings: Settings) -> Result<Kairos, ProviderError> {
        Kairos::new("kairos-eu", settings, HttpClient::new().expect("client"))
    }

    fn request(threshold: f64) -> CheckRequest {
        test_upstream::request(ImageFormat::Jpeg, 320, 300, threshold)
    }

    const OK: &str = r#"{"api_req_uid":"abc","response_code":1,"response_data":{"faces_liveness":0.91,
      "faces_predicted":[{"confidence":0.99,"top_left":{"x":100,"y":80},"delta":{"x":60,"y":70}}],
      "img":{"width":320,"height":300}}}"#;

    #[tokio::test]
    async fn sends_selfie_threshold_and_both_header_spellings() {
        let (base, mut rx) = upstream(201, vec![], OK).await;
        let k = kairos(config(base, HeaderStyle::Both)).expect("new");
        let req = request(0.75);
        let a = k.check(&req).await.expect("check");
        assert_eq!(a.score, Some(0.91));
        assert_eq!(a.upstream_decision, Some(UpstreamDecision::Approved));
        assert_eq!(a.face.expect("face").bbox, [100.0, 80.0, 160.0, 150.0]);
        assert_eq!(a.provider_request_id.as_deref(), Some("abc"));

        let seen = rx.recv().await.expect("seen");
        assert_eq!(seen.path, "/v0.2/liveness-verification");
        for (name, value) in [
            ("app_id", "id-123"),
            ("app_key", "key-secret"),
            ("app-id", "id-123"),
            ("app-key", "key-secret"),
        ] {
            assert_eq!(
                seen.headers.get(name).map(|v| v.as_bytes()),
                Some(value.as_bytes()),
                "{name}"
            );
        }
        seen.assert_image_form(&req, &["selfie", "threshold"], "selfie.jpg", "image/jpeg");
        assert_eq!(seen.fields[1].bytes, b"0.75");
    }

    #[tokio::test]
    async fn header_style_selects_the_spelling() {
        for (style, sent, absent) in [
            (
                HeaderStyle::Underscore,
                ["app_id", "app_key"],
                ["app-id", "app-key"],
            ),
            (
                HeaderStyle::Hyphen,
                ["app-id", "app-key"],
                ["app_id", "app_key"],
            ),
        ] {
            let (base, mut rx) = upstream(200, vec![], OK).await;
            let k = kairos(config(base, style)).expect("new");
            k.check(&request(0.5)).await.expect("check");
            let seen = rx.recv().await.expect("seen");
            for name in sent {
                assert!(seen.headers.contains_key(name), "{style:?} sends {name}");
            }
            for name in absent {
                assert!(!seen.headers.contains_key(name), "{style:?} omits {name}");
            }
        }
    }

    #[tokio::test]
    async fn errors_keep_status_body_and_retry_after() {
        let (base, _rx) = upstream(429, vec![("retry-after", "7")], "slow down").await;
        let k = kairos(config(base, HeaderStyle::Both)).expect("new");
        let e = k.check(&request(0.5)).await.expect_err("429");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(e.status, Some(429));
        assert_eq!(e.raw_body.as_deref(), Some("slow down"));

        let body = r#"{"message":"limit exceeded"}"#;
        let (base, _rx) = upstream(403, vec![], body).await;
        let k = kairos(config(base, HeaderStyle::Both)).expect("new");
        let e = k.check(&request(0.5)).await.expect_err("403");
        assert_eq!(e.kind, ErrorKind::UsageLimit);
        assert_eq!(e.raw_body.as_deref(), Some(body));
    }

    #[tokio::test]
    async fn refuses_formats_kairos_does_not_document() {
        let k = kairos(config("http://127.0.0.1:1".into(), HeaderStyle::Both)).expect("new");
        let mut req = request(0.5);
        req.image.format = ImageFormat::Webp;
        assert_eq!(
            k.check(&req).await.expect_err("webp").kind,
            ErrorKind::Unsupported
        );
    }

    #[tokio::test]
    async fn transport_failures_are_classified() {
        // Port 1 on loopback refuses connections.
        let k = kairos(config("http://127.0.0.1:1".into(), HeaderStyle::Both)).expect("new");
        assert_eq!(
            k.check(&request(0.5)).await.expect_err("refused").kind,
            ErrorKind::Unreachable
        );
    }
}
