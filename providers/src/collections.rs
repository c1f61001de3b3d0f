//! The collections engine's standalone liveness check
//! (`POST {base}/api/v1/collections/{id}/liveness`): the self-hosted face API, and livegate's
//! own engine server, which speaks the same contract. Its face-matching calls (enroll,
//! identify, verify, compare) are in `collections/matching.rs`.
//!
//! Contract: the collections engine's liveness document plus its public docs (`docs/providers.md`): the
//! `{success, error: {code, message}, request_id}` envelope, JPEG/PNG only, and 422 codes that
//! describe the face rather than a broken request.

mod matching;

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use reqwest::multipart::Form;
use serde::Deserialize;
use url::Url;

use crate::http::{self, HttpClient};
use crate::settings::{SettingProblem, url_and_secret};
use crate::{
    Capabilities, CheckRequest, ErrorKind, Face, ImageFormat, Profile, Provider, ProviderAnswer,
    ProviderError, RawExchange, Secret, SpoofType, UpstreamDecision, Warning, WarningCode,
};

pub use matching::{Compared, EnrolledFace, FaceMatch, FaceRef, Verified};

/// Settings of one collections-engine provider entry (`kind: collections`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub base_url: String,
    /// A key serves one collection, so the collection is part of the provider's identity.
    pub api_key: Secret,
    pub collection_id: String,
    /// Allow a plain `http://` base URL to a host that is not loopback: credentials and
    /// selfies then cross the network in clear. Off by default.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl Settings {
    /// The engine needs an http(s) `base_url` and a non-empty `api_key`; the
    /// `collection_id` is checked when the provider is built.
    pub fn problems(&self) -> Vec<SettingProblem> {
        url_and_secret(
            &self.base_url,
            self.allow_insecure_http,
            "api_key",
            &self.api_key,
        )
    }
}

#[derive(Debug)]
pub struct Collections {
    settings: Settings,
    url: Url,
    api_key: HeaderValue,
    http: HttpClient,
    profile: Profile,
}

impl Collections {
    pub fn new(
        name: impl Into<String>,
        settings: Settings,
        http: HttpClient,
    ) -> Result<Self, ProviderError> {
        let url = liveness_url(&settings.base_url, &settings.collection_id)?;
        let api_key = http::secret_header(&settings.api_key, "collections api_key")?;
        let capabilities = Capabilities {
            formats: vec![ImageFormat::Jpeg, ImageFormat::Png],
            min_side: 100,
            // Not documented; a generous bound that still keeps decoding on the engine sane.
            max_side: 10_000,
            // "up to 10 MB": the decimal reading is the stricter one.
            max_bytes: 10_000_000,
        };
        Ok(Self {
            profile: Profile {
                name: name.into(),
                kind: "collections",
                capabilities,
            },
            url,
            api_key,
            settings,
            http,
        })
    }
}

/// The id goes in as one percent-encoded path segment, so an id with `/`, `?` or spaces can
/// never address another route; a base URL with a path prefix keeps it.
fn liveness_url(base: &str, collection_id: &str) -> Result<Url, ProviderError> {
    if collection_id.is_empty() || collection_id == "." || collection_id == ".." {
        return Err(ProviderError::new(
            ErrorKind::Unreachable,
            format!("{collection_id:?} is not a usable collection_id"),
        ));
    }
    api_url(base, &["collections", collection_id, "liveness"])
}

/// `{base}/api/v1/{tail...}`, each part of `tail` one encoded path segment.
fn api_url(base: &str, tail: &[&str]) -> Result<Url, ProviderError> {
    let invalid = |why: String| ProviderError::new(ErrorKind::Unreachable, why);
    let mut url =
        Url::parse(base).map_err(|e| invalid(format!("invalid collections base_url: {e}")))?;
    url.path_segments_mut()
        .map_err(|()| invalid("the collections base_url cannot take a path".to_owned()))?
        .pop_if_empty()
        .extend(["api", "v1"])
        .extend(tail);
    Ok(url)
}

#[async_trait]
impl Provider for Collections {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    async fn check(&self, req: &CheckRequest) -> Result<ProviderAnswer, ProviderError> {
        http::require_format(
            &self.profile.capabilities,
            &req.image,
            "the collections engine",
        )?;
        let form = Form::new()
            .part("image", http::image_part(&req.image, "selfie")?)
            .text("liveness_threshold", http::unit_decimal(req.threshold));
        let call = self
            .http
            .post(self.url.clone())
            .header("X-API-Key", self.api_key.clone())
            .multipart(form);
        let ex = http::exchange(call, req.traceparent.as_deref()).await?;
        let read = read(ex.status, &ex.body);
        read.map_err(|e| if ex.is_success() { e } else { ex.into_error(e) })
    }
}

/// The engine's answer as a call reads it: a verdict (a refused enrollment is one too), or the
/// error its status and body mean.
pub(crate) fn read(status: u16, body: &str) -> Result<ProviderAnswer, ProviderError> {
    if (200..300).contains(&status) {
        return parse_answer(status, body);
    }
    match rejection_verdict(status, body) {
        Some(answer) => Ok(answer),
        None => Err(classify_error(status, body)),
    }
}

fn parse_answer(status: u16, body: &str) -> Result<ProviderAnswer, ProviderError> {
    let bad = |msg: String| {
        ProviderError::new(ErrorKind::BadResponse, msg).with_response(status, body.to_owned())
    };
    let envelope: wire::Envelope = serde_json::from_str(body)
        .map_err(|e| bad(format!("unreadable collections engine answer: {e}")))?;
    if !envelope.success {
        return Err(bad(format!(
            "the collections engine answered HTTP {status} with success: false{}",
            envelope
                .error
                .map(|e| format!(" ({})", e.text()))
                .unwrap_or_default()
        )));
    }
    let data = envelope
        .data
        .ok_or_else(|| bad("the collections engine answered without data".into()))?;

    // The documented engine reports no face count (it answers 422 instead); livegate's own
    // engine adds one, and a count of zero means the score describes nothing.
    let faces_detected = data.faces_detected.unwrap_or(1);
    let score = match (faces_detected, data.liveness_score) {
        (0, _) => None,
        (_, Some(s)) => Some(s.clamp(0.0, 1.0)),
        (_, None) => return Err(bad("the collections engine answered without a score".into())),
    };
    let face = data
        .face
        .filter(|_| faces_detected > 0)
        .and_then(|f| match f.bbox.as_slice() {
            [x1, y1, x2, y2] => Some(Face {
                bbox: [*x1, *y1, *x2, *y2],
                confidence: f.confidence,
                quality: None,
                luminance: None,
                age: None,
                gender: None,
            }),
            _ => None,
        });
    let spoof_type = data.spoof_type.as_deref().and_then(spoof_type);

    let mut warnings = Vec::new();
    if faces_detected == 0 {
        warnings.push(Warning::new(WarningCode::NoFaceDetected));
    }
    if faces_detected > 1 {
        warnings.push(Warning::new(WarningCode::MultipleFacesDetected));
    }
    if spoof_type.is_some() {
        warnings.push(Warning::new(WarningCode::LivenessFaceAttack));
    }

    Ok(ProviderAnswer {
        score,
        upstream_decision: Some(if data.is_live {
            UpstreamDecision::Approved
        } else {
            UpstreamDecision::Declined
        }),
        spoof_type,
        face,
        faces_detected,
        warnings,
        provider_request_id: envelope.request_id,
        raw: RawExchange {
            status: Some(status),
            body: Some(body.to_owned()),
        },
    })
}

/// The documented names, then livegate's own vocabulary (its engine may use it); any other
/// name still says "attack", so it is kept as `Unknown` rather than dropped.
fn spoof_type(name: &str) -> Option<SpoofType> {
    match name {
        "" => None,
        "print" => Some(SpoofType::Print),
        "replay" => Some(SpoofType::Replay),
        "3d_mask" => Some(SpoofType::Mask),
        other => Some(SpoofType::parse(other).unwrap_or(SpoofType::Unknown)),
    }
}

/// The 422 codes that describe the face, not the request: they are verdicts without a score,
/// so the policy declines them under the tenant's warning rules instead of failing over to a
/// provider that would find the same face.
fn rejection_verdict(status: u16, body: &str) -> Option<ProviderAnswer> {
    if !matches!(status, 400 | 422) {
        return None;
    }
    let envelope: wire::Envelope = serde_json::from_str(body).ok()?;
    let error = envelope.error?;
    let (faces_detected, code, upstream_decision, fallback) = match error.code.as_deref()? {
        "FACE_NOT_DETECTED" => (0, WarningCode::NoFaceDetected, None, None),
        "MULTIPLE_FACES" => (
            2,
            WarningCode::MultipleFacesDetected,
            None,
            Some("More than one face was detected; the provider scored none of them."),
        ),
        "FACE_QUALITY_TOO_LOW" => (1, WarningCode::LowFaceQuality, None, None),
        // Documented for enrollment only; should the liveness route send it, it is a failed
        // liveness check, not a malformed request.
        "LIVENESS_CHECK_FAILED" => (
            1,
            WarningCode::LowLivenessScore,
            Some(UpstreamDecision::Declined),
            None,
        ),
        _ => return None,
    };
    let message = error
        .message
        .filter(|m| !m.trim().is_empty())
        .or(fallback.map(str::to_owned))
        .unwrap_or_else(|| code.default_message().to_owned());
    Some(ProviderAnswer {
        score: None,
        upstream_decision,
        spoof_type: None,
        face: None,
        faces_detected,
        warnings: vec![Warning::with_message(code, message)],
        provider_request_id: envelope.request_id,
        raw: RawExchange {
            status: Some(status),
            body: Some(body.to_owned()),
        },
    })
}

fn classify_error(status: u16, body: &str) -> ProviderError {
    let detail = serde_json::from_str::<wire::Envelope>(body)
        .ok()
        .and_then(|e| e.error)
        .map(|e| e.text())
        .unwrap_or_else(|| "(no detail)".to_owned());
    let (kind, message) = match status {
        401 => (
            ErrorKind::AuthFailed,
            format!("the collections engine refused the API key: {detail}"),
        ),
        // `IP_NOT_ALLOWED`: the key is bound to other addresses, a credential problem too.
        403 => (
            ErrorKind::AuthFailed,
            format!("the collections engine refused access: {detail}"),
        ),
        // A key serves one collection: an unknown collection is a mismatch of key and config.
        404 => (
            ErrorKind::AuthFailed,
            format!("the collection is unknown to this API key: {detail}"),
        ),
        _ => return http::classify_status(status, "the collections engine", Some(&detail)),
    };
    ProviderError::new(kind, message)
}

/// The engine's JSON, reduced to what livegate reads. `timestamp` and `query_time_ms` are not
/// read: nothing depends on them.
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Envelope {
        pub success: bool,
        pub data: Option<Data>,
        pub error: Option<Error>,
        pub request_id: Option<String>,
    }

    /// Any answer: the envelope with its `data` left as JSON (the face-matching calls).
    #[derive(Deserialize)]
    pub struct Generic {
        pub success: bool,
        pub data: Option<serde_json::Value>,
    }

    #[derive(Deserialize)]
    pub struct Data {
        pub is_live: bool,
        pub liveness_score: Option<f64>,
        pub spoof_type: Option<String>,
        /// Not in the vendor's document; livegate's engine server adds it.
        pub faces_detected: Option<u32>,
        /// Not in the vendor's document; livegate's engine server adds it.
        pub face: Option<WireFace>,
    }

    #[derive(Deserialize)]
    pub struct WireFace {
        pub bbox: Vec<f64>,
        pub confidence: Option<f64>,
    }

    #[derive(Deserialize)]
    pub struct Error {
        pub code: Option<String>,
        pub message: Option<String>,
    }

    impl Error {
        pub fn text(&self) -> String {
            let message: String = self
                .message
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            match (self.code.as_deref(), message.is_empty()) {
                (Some(code), false) => format!("{code}: {message}"),
                (Some(code), true) => code.to_owned(),
                (None, false) => message,
                (None, true) => "(no detail)".to_owned(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_upstream::{self, upstream};

    fn error_body(code: &str, message: &str) -> String {
        format!(
            r#"{{"success":false,"error":{{"code":"{code}","message":"{message}"}},"request_id":"req_9","timestamp":"2025-01-01T00:00:00Z"}}"#
        )
    }

    #[test]
    fn maps_documented_example() {
        let body = r#"{"success":true,"data":{"is_live":true,"liveness_score":0.97,"spoof_type":null,"query_time_ms":15}}"#;
        let a = parse_answer(200, body).expect("parse");
        assert_eq!(a.score, Some(0.97));
        assert_eq!(a.upstream_decision, Some(UpstreamDecision::Approved));
        assert_eq!(a.spoof_type, None);
        assert_eq!(a.faces_detected, 1);
        assert_eq!(a.face, None);
        assert!(a.warnings.is_empty());
        assert_eq!(a.provider_request_id, None);
        assert_eq!(a.raw.status, Some(200));
        assert_eq!(a.raw.body.as_deref(), Some(body));
    }

    #[test]
    fn spoof_types_map_and_add_an_attack_warning() {
        let cases = [
            ("\"print\"", Some(SpoofType::Print)),
            ("\"replay\"", Some(SpoofType::Replay)),
            ("\"3d_mask\"", Some(SpoofType::Mask)),
            ("\"deepfake\"", Some(SpoofType::Deepfake)),
            ("\"silicone\"", Some(SpoofType::Unknown)),
            ("null", None),
        ];
        for (json, want) in cases {
            let body = format!(
                r#"{{"success":true,"request_id":"r1","data":{{"is_live":false,"liveness_score":0.12,"spoof_type":{json},"query_time_ms":14}}}}"#
            );
            let a = parse_answer(200, &body).expect("parse");
            assert_eq!(a.spoof_type, want, "{json}");
            assert_eq!(a.upstream_decision, Some(UpstreamDecision::Declined));
            assert_eq!(a.score, Some(0.12));
            let attack = a
                .warnings
                .iter()
                .any(|w| w.code == WarningCode::LivenessFaceAttack);
            assert_eq!(attack, want.is_some(), "{json}");
            assert_eq!(a.provider_request_id.as_deref(), Some("r1"));
        }
    }

    #[test]
    fn engine_extensions_face_and_count_are_used() {
        let body = r#"{"success":true,"data":{"is_live":true,"liveness_score":0.88,"spoof_type":null,
          "query_time_ms":20,"faces_detected":2,"face":{"bbox":[10,20,110,140],"confidence":0.97}}}"#;
        let a = parse_answer(200, body).expect("parse");
        assert_eq!(a.faces_detected, 2);
        let f = a.face.expect("face");
        assert_eq!(f.bbox, [10.0, 20.0, 110.0, 140.0]);
        assert_eq!(f.confidence, Some(0.97));
        assert_eq!(
            a.warnings,
            [Warning::new(WarningCode::MultipleFacesDetected)]
        );

        let body = r#"{"success":true,"data":{"is_live":false,"liveness_score":null,"spoof_type":null,"faces_detected":0}}"#;
        let a = parse_answer(200, body).expect("parse");
        assert_eq!((a.score, a.faces_detected), (None, 0));
        assert_eq!(a.warnings, [Warning::new(WarningCode::NoFaceDetected)]);
    }

    #[test]
    fn unreadable_or_unsuccessful_2xx_is_a_bad_response() {
        for body in [
            "",
            "not json",
            r#"{"success":true}"#,
            r#"{"success":false,"error":{"code":"X","message":"y"}}"#,
            r#"{"success":true,"data":{"is_live":true}}"#,
            r#"{"success":true,"data":{"liveness_score":0.9}}"#,
        ] {
            let e = parse_answer(200, body).expect_err(body);
            assert_eq!(e.kind, ErrorKind::BadResponse, "{body}");
            assert_eq!(e.status, Some(200));
            assert_eq!(e.raw_body.as_deref(), Some(body));
        }
    }

    #[test]
    fn face_rejections_are_verdicts() {
        let body = error_body("FACE_NOT_DETECTED", "No face detected in image");
        let a = rejection_verdict(422, &body).expect("verdict");
        assert_eq!((a.score, a.faces_detected, a.face.clone()), (None, 0, None));
        assert_eq!(a.warnings.len(), 1);
        assert_eq!(a.warnings[0].code, WarningCode::NoFaceDetected);
        assert_eq!(a.warnings[0].message, "No face detected in image");
        assert_eq!(a.provider_request_id.as_deref(), Some("req_9"));
        assert_eq!(a.raw.status, Some(422));
        assert_eq!(a.raw.body.as_deref(), Some(body.as_str()));

        let a = rejection_verdict(422, &error_body("MULTIPLE_FACES", "")).expect("verdict");
        assert_eq!((a.score, a.faces_detected), (None, 2));
        assert_eq!(a.warnings[0].code, WarningCode::MultipleFacesDetected);
        assert!(a.warnings[0].message.contains("none of them"));
        assert_eq!(a.raw.status, Some(422));

        let a =
            rejection_verdict(422, &error_body("FACE_QUALITY_TOO_LOW", "blurry")).expect("verdict");
        assert_eq!((a.score, a.faces_detected), (None, 1));
        assert_eq!(a.warnings[0].code, WarningCode::LowFaceQuality);

        let a =
            rejection_verdict(422, &error_body("LIVENESS_CHECK_FAILED", "spoof")).expect("verdict");
        assert_eq!(a.upstream_decision, Some(UpstreamDecision::Declined));
        assert_eq!(a.warnings[0].code, WarningCode::LowLivenessScore);

        // Other codes, statuses and bodies are not verdicts.
        assert!(rejection_verdict(422, &error_body("INVALID_IMAGE", "x")).is_none());
        assert!(rejection_verdict(500, &error_body("FACE_NOT_DETECTED", "x")).is_none());
        assert!(rejection_verdict(422, "<html>").is_none());
    }

    #[test]
    fn errors_by_status_and_code() {
        let cases = [
            (400, "VALIDATION_ERROR", ErrorKind::BadInput),
            (413, "FILE_TOO_LARGE", ErrorKind::BadInput),
            (422, "INVALID_IMAGE", ErrorKind::BadInput),
            (401, "INVALID_API_KEY", ErrorKind::AuthFailed),
            (403, "IP_NOT_ALLOWED", ErrorKind::AuthFailed),
            (404, "COLLECTION_NOT_FOUND", ErrorKind::AuthFailed),
            (429, "RATE_LIMITED", ErrorKind::RateLimited),
            (500, "INTERNAL_ERROR", ErrorKind::Unavailable),
            (503, "UNAVAILABLE", ErrorKind::Unavailable),
            (302, "X", ErrorKind::BadResponse),
        ];
        for (status, code, kind) in cases {
            let e = classify_error(status, &error_body(code, "because"));
            assert_eq!(e.kind, kind, "{status} {code}");
            assert!(
                e.message.contains(code) || status == 429 || status == 302,
                "{}",
                e.message
            );
        }
        // A proxy's HTML error page is still classified by status.
        assert_eq!(
            classify_error(502, "<html>bad gateway</html>").kind,
            ErrorKind::Unavailable
        );
    }

    #[test]
    fn collection_id_is_one_encoded_segment() {
        let u = liveness_url("http://h:8080", "team a/b?c").expect("url");
        assert_eq!(
            u.as_str(),
            "http://h:8080/api/v1/collections/team%20a%2Fb%3Fc/liveness"
        );
        let u = liveness_url("http://h/engine/", "col_1").expect("url");
        assert_eq!(
            u.as_str(),
            "http://h/engine/api/v1/collections/col_1/liveness"
        );
        for id in ["", ".", ".."] {
            assert!(liveness_url("http://h", id).is_err(), "{id:?}");
        }
        assert!(liveness_url("not a url", "c").is_err());
        assert!(liveness_url("mailto:a@b", "c").is_err());
    }

    #[test]
    fn capabilities_and_secret_hygiene() {
        let c = collections(config("http://127.0.0.1:1".into(), "c1")).expect("new");
        assert_eq!(c.kind(), "collections");
        assert_eq!(c.name(), "engine");
        let caps = c.capabilities();
        assert_eq!(caps.formats, [ImageFormat::Jpeg, ImageFormat::Png]);
        assert_eq!(
            (caps.min_side, caps.max_side, caps.max_bytes),
            (100, 10_000, 10_000_000)
        );
        assert!(!format!("{c:?}").contains("fr_test_"));

        let mut cfg = config("http://127.0.0.1:1".into(), "c1");
        cfg.api_key = Secret::new("bad\nkey");
        assert_eq!(
            collections(cfg).expect_err("bad").kind,
            ErrorKind::AuthFailed
        );
    }

    // ---- on the wire -------------------------------------------------------------------

    fn config(base_url: String, collection_id: &str) -> Settings {
        Settings {
            base_url,
            api_key: Secret::new("fr_test_0123456789abcdef0123456789abcdef"),
            collection_id: collection_id.into(),
            allow_insecure_http: false,
        }
    }

    fn collections(settings: Settings) -> Result<Collections, ProviderError> {
        Collections::new("engine", settings, HttpClient::new().expect("client"))
    }

    fn request(format: ImageFormat, threshold: f64) -> CheckRequest {
        test_upstream::request(format, 120, 110, threshold)
    }

    #[tokio::test]
    async fn sends_image_threshold_key_and_encoded_path() {
        let ok = r#"{"success":true,"data":{"is_live":true,"liveness_score":0.97,"spoof_type":null,"query_time_ms":15}}"#;
        let (base, mut rx) = upstream(200, vec![], ok).await;
        let c = collections(config(format!("{base}/"), "team a/1")).expect("new");
        let req = request(ImageFormat::Png, 0.6);
        let a = c.check(&req).await.expect("check");
        assert_eq!(a.score, Some(0.97));

        let seen = rx.recv().await.expect("seen");
        assert_eq!(seen.path, "/api/v1/collections/team%20a%2F1/liveness");
        assert_eq!(
            seen.headers.get("x-api-key").map(|v| v.as_bytes()),
            Some(&b"fr_test_0123456789abcdef0123456789abcdef"[..])
        );
        seen.assert_image_form(
            &req,
            &["image", "liveness_threshold"],
            "selfie.png",
            "image/png",
        );
        assert_eq!(seen.fields[1].bytes, b"0.6");
    }

    #[tokio::test]
    async fn no_face_422_is_a_verdict_on_the_wire() {
        let body = error_body("FACE_NOT_DETECTED", "No face detected");
        let (base, _rx) = upstream(422, vec![], body.clone()).await;
        let c = collections(config(base, "c1")).expect("new");
        let a = c
            .check(&request(ImageFormat::Jpeg, 0.6))
            .await
            .expect("verdict");
        assert_eq!((a.score, a.faces_detected), (None, 0));
        assert_eq!(a.raw.status, Some(422));
        assert_eq!(a.raw.body, Some(body));
    }

    #[tokio::test]
    async fn errors_keep_status_body_and_retry_after() {
        let body = error_body("RATE_LIMITED", "Too many requests");
        let (base, _rx) = upstream(429, vec![("retry-after", "12")], body.clone()).await;
        let c = collections(config(base, "c1")).expect("new");
        let e = c
            .check(&request(ImageFormat::Jpeg, 0.6))
            .await
            .expect_err("429");
        assert_eq!(e.kind, ErrorKind::RateLimited);
        assert_eq!(e.retry_after, Some(Duration::from_secs(12)));
        assert_eq!((e.status, e.raw_body), (Some(429), Some(body)));

        let body = error_body("INVALID_API_KEY", "Invalid API key");
        let (base, _rx) = upstream(401, vec![], body.clone()).await;
        let c = collections(config(base, "c1")).expect("new");
        let e = c
            .check(&request(ImageFormat::Jpeg, 0.6))
            .await
            .expect_err("401");
        assert_eq!(e.kind, ErrorKind::AuthFailed);
        assert_eq!(e.raw_body, Some(body));
    }

    #[tokio::test]
    async fn refuses_formats_the_engine_does_not_take() {
        let c = collections(config("http://127.0.0.1:1".into(), "c1")).expect("new");
        let e = c
            .check(&request(ImageFormat::Webp, 0.6))
            .await
            .expect_err("webp");
        assert_eq!(e.kind, ErrorKind::Unsupported);
    }
}
