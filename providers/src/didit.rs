//! Didit passive liveness (`POST {base}/v3/passive-liveness/`).
//!
//! Contract: Didit's passive-liveness document plus the variants its public docs show
//! (`docs/providers.md`) (integer or float scores, 0-100 quality and luminance, several DRF error
//! body styles, and a 403 that means either "bad key" or "out of credits").

use async_trait::async_trait;
use reqwest::header::HeaderValue;
use reqwest::multipart::Form;
use serde::Deserialize;

use crate::http::{self, HttpClient};
use crate::settings::{SettingProblem, url_and_secret};
use crate::{
    Capabilities, CheckRequest, ErrorKind, Face, ImageFormat, Profile, Provider, ProviderAnswer,
    ProviderError, RawExchange, Secret, UpstreamDecision, Warning, WarningCode,
};

/// Settings of one Didit provider entry (`kind: didit`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub base_url: String,
    pub api_key: Secret,
    /// Didit stores every call as a session in its console unless told not to; livegate
    /// defaults to not storing (privacy first), an operator may opt in.
    #[serde(default)]
    pub save_api_request: bool,
    #[serde(default)]
    pub rotate_image: Option<bool>,
    /// Allow a plain `http://` base URL to a host that is not loopback: credentials and
    /// selfies then cross the network in clear. Off by default.
    #[serde(default)]
    pub allow_insecure_http: bool,
}

impl Settings {
    /// A Didit entry needs an http(s) `base_url` and a non-empty `api_key`.
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
pub struct Didit {
    settings: Settings,
    url: url::Url,
    api_key: HeaderValue,
    http: HttpClient,
    profile: Profile,
}

impl Didit {
    pub fn new(
        name: impl Into<String>,
        settings: Settings,
        http: HttpClient,
    ) -> Result<Self, ProviderError> {
        let url = http::endpoint(
            &format!(
                "{}/v3/passive-liveness/",
                settings.base_url.trim_end_matches('/')
            ),
            "Didit",
        )?;
        let api_key = http::secret_header(&settings.api_key, "Didit api_key")?;
        Ok(Self {
            settings,
            url,
            api_key,
            http,
            profile: Profile {
                name: name.into(),
                kind: "didit",
                capabilities: Capabilities {
                    formats: ImageFormat::ALL.to_vec(),
                    min_side: 1,
                    max_side: 10_000,
                    // "5MB" in the document: the decimal reading is the stricter one.
                    max_bytes: 5_000_000,
                },
            },
        })
    }
}

#[async_trait]
impl Provider for Didit {
    fn profile(&self) -> &Profile {
        &self.profile
    }

    async fn check(&self, req: &CheckRequest) -> Result<ProviderAnswer, ProviderError> {
        let threshold = (req.threshold * 100.0).round().clamp(0.0, 100.0) as i64;
        let mut form = Form::new()
            .part("user_image", http::image_part(&req.image, "selfie")?)
            .text(
                "face_liveness_score_decline_threshold",
                threshold.to_string(),
            )
            .text(
                "save_api_request",
                self.settings.save_api_request.to_string(),
            )
            .text("vendor_data", req.request_id.clone());
        if let Some(rotate) = self.settings.rotate_image {
            form = form.text("rotate_image", rotate.to_string());
        }
        let call = self
            .http
            .post(self.url.clone())
            .header("x-api-key", self.api_key.clone())
            .multipart(form);
        let ex = http::exchange(call, req.traceparent.as_deref()).await?;
        let read = read(ex.status, &ex.body);
        read.map_err(|e| if ex.is_success() { e } else { ex.into_error(e) })
    }
}

/// Didit's answer as a call reads it: a verdict, or the error its status and body mean.
pub(crate) fn read(status: u16, body: &str) -> Result<ProviderAnswer, ProviderError> {
    if (200..300).contains(&status) {
        parse_answer(status, body)
    } else {
        Err(classify_error(status, body))
    }
}

fn classify_error(status: u16, body: &str) -> ProviderError {
    let detail = wire::error_text(body);
    match status {
        401 => ProviderError::new(
            ErrorKind::AuthFailed,
            format!("Didit refused the API key: {detail}"),
        ),
        // 403 means "no credits" or, on some versions, a bad or unauthorised key: the detail
        // text is the only way to tell them apart.
        403 if mentions_credits(&detail) => ProviderError::new(
            ErrorKind::OutOfCredits,
            format!("the Didit account is out of credits: {detail}"),
        ),
        403 => ProviderError::new(
            ErrorKind::AuthFailed,
            format!("Didit refused access: {detail}"),
        ),
        _ => http::classify_status(status, "Didit", Some(&detail)),
    }
}

fn mentions_credits(detail: &str) -> bool {
    let d = detail.to_ascii_lowercase();
    [
        "credit",
        "balance",
        "top up",
        "top-up",
        "insufficient funds",
        "payment",
    ]
    .iter()
    .any(|k| d.contains(k))
}

fn parse_answer(status: u16, body: &str) -> Result<ProviderAnswer, ProviderError> {
    let bad = |msg: String| {
        ProviderError::new(ErrorKind::BadResponse, msg).with_response(status, body.to_owned())
    };
    let answer: wire::Answer =
        serde_json::from_str(body).map_err(|e| bad(format!("unreadable Didit answer: {e}")))?;
    let l = answer.liveness;
    let upstream_decision = match l.status {
        wire::Status::Approved => UpstreamDecision::Approved,
        wire::Status::Declined => UpstreamDecision::Declined,
        wire::Status::InReview => UpstreamDecision::Review,
        wire::Status::NotFinished => return Err(bad("Didit answered \"Not Finished\"".into())),
        wire::Status::Unknown => return Err(bad("Didit answered an unknown status".into())),
    };

    let entities = l.user_image.and_then(|u| u.entities).unwrap_or_default();
    let faces_detected = u32::try_from(entities.len()).unwrap_or(u32::MAX);
    let largest = entities
        .iter()
        .filter_map(|e| e.bbox.as_ref().and_then(|b| bbox4(b)).map(|b| (e, b)))
        .max_by(|a, b| area(&a.1).total_cmp(&area(&b.1)));
    let face = largest.map(|(e, bbox)| Face {
        bbox,
        confidence: e.confidence,
        quality: l.face_quality.map(percent),
        luminance: l.face_luminance.map(percent),
        age: e.age,
        gender: e.gender.clone(),
    });

    let mut warnings: Vec<Warning> = Vec::new();
    for w in l.warnings.unwrap_or_default() {
        let code = WarningCode::from(w.risk);
        if warnings.iter().any(|x| x.code == code) {
            continue;
        }
        let message = w
            .short_description
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| code.default_message().to_owned());
        warnings.push(Warning::with_message(code, message));
    }
    let score = l.score.map(percent);
    let mut ensure = |code: WarningCode| {
        if !warnings.iter().any(|w| w.code == code) {
            warnings.push(Warning::new(code));
        }
    };
    if faces_detected == 0 && score.is_none() {
        ensure(WarningCode::NoFaceDetected);
    }
    if faces_detected > 1 {
        ensure(WarningCode::MultipleFacesDetected);
    }
    // Didit names no attack type: an attack is "unknown" kind.
    let spoof_type = warnings
        .iter()
        .any(|w| w.code == WarningCode::LivenessFaceAttack)
        .then_some(crate::SpoofType::Unknown);

    Ok(ProviderAnswer {
        score,
        upstream_decision: Some(upstream_decision),
        spoof_type,
        face,
        faces_detected,
        warnings,
        provider_request_id: answer.request_id,
        raw: RawExchange {
            status: Some(status),
            body: Some(body.to_owned()),
        },
    })
}

fn percent(v: f64) -> f64 {
    (v / 100.0).clamp(0.0, 1.0)
}

fn bbox4(b: &[f64]) -> Option<[f64; 4]> {
    match b {
        [x1, y1, x2, y2] => Some([*x1, *y1, *x2, *y2]),
        _ => None,
    }
}

fn area(b: &[f64; 4]) -> f64 {
    (b[2] - b[0]).abs() * (b[3] - b[1]).abs()
}

/// Didit's JSON, reduced to what livegate reads. Unknown fields are ignored; unknown status
/// values land in `Unknown` and become a provider error, never a silent verdict.
mod wire {
    use serde::Deserialize;

    #[derive(Deserialize)]
    pub struct Answer {
        pub request_id: Option<String>,
        pub liveness: Liveness,
    }

    #[derive(Deserialize)]
    pub struct Liveness {
        pub status: Status,
        pub score: Option<f64>,
        pub user_image: Option<UserImage>,
        pub warnings: Option<Vec<WireWarning>>,
        pub face_quality: Option<f64>,
        pub face_luminance: Option<f64>,
    }

    #[derive(Deserialize)]
    pub enum Status {
        Approved,
        Declined,
        #[serde(rename = "In Review")]
        InReview,
        #[serde(rename = "Not Finished")]
        NotFinished,
        #[serde(other)]
        Unknown,
    }

    #[derive(Deserialize)]
    pub struct UserImage {
        pub entities: Option<Vec<Entity>>,
    }

    #[derive(Deserialize)]
    pub struct Entity {
        pub age: Option<f64>,
        pub bbox: Option<Vec<f64>>,
        pub confidence: Option<f64>,
        pub gender: Option<String>,
    }

    #[derive(Deserialize)]
    pub struct WireWarning {
        pub risk: String,
        pub short_description: Option<String>,
    }

    /// The human text of a DRF error body: `{"detail": ...}`, a field map of string lists,
    /// or a bare list of strings. Falls back to a bounded prefix of the raw body.
    pub fn error_text(body: &str) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
        let mut parts = Vec::new();
        match parsed {
            Some(serde_json::Value::Object(map)) => {
                for (k, v) in map {
                    let text = flatten(&v);
                    if k == "detail" || k == "non_field_errors" {
                        parts.push(text);
                    } else {
                        parts.push(format!("{k}: {text}"));
                    }
                }
            }
            Some(v @ serde_json::Value::Array(_)) => parts.push(flatten(&v)),
            Some(serde_json::Value::String(s)) => parts.push(s),
            _ => parts.push(body.chars().take(200).collect()),
        }
        parts.retain(|p| !p.is_empty());
        if parts.is_empty() {
            "(no detail)".into()
        } else {
            parts.join("; ")
        }
    }

    fn flatten(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => {
                items.iter().map(flatten).collect::<Vec<_>>().join(" ")
            }
            other => other.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_documented_example() {
        let body = r#"{"request_id":"a1b2","liveness":{"status":"Approved","method":"PASSIVE","score":95,
          "user_image":{"entities":[{"age":22.16,"bbox":[156,234,679,898],"confidence":0.717,"gender":"male"}],"best_angle":0},
          "warnings":[],"face_quality":85.0,"face_luminance":50.0},"created_at":"2025-05-01T13:11:07.977806Z"}"#;
        let a = parse_answer(200, body).expect("parse");
        assert_eq!(a.score, Some(0.95));
        assert_eq!(a.faces_detected, 1);
        let f = a.face.expect("face");
        assert_eq!(f.bbox, [156.0, 234.0, 679.0, 898.0]);
        assert_eq!(f.quality, Some(0.85));
        assert_eq!(f.luminance, Some(0.5));
        assert_eq!(a.provider_request_id.as_deref(), Some("a1b2"));
    }

    #[test]
    fn float_score_unknown_fields_and_session_style_warnings() {
        let body = r#"{"liveness":{"status":"In Review","score":89.92,"extra":1,
          "user_image":{"entities":[{"bbox":[0,0,10,10],"race":null},{"bbox":[0,0,50,40]}]},
          "warnings":[{"risk":"MULTIPLE_FACES_DETECTED","log_type":"warning","short_description":"two","long_description":"x","feature":"LIVENESS","additional_data":null,"node_id":"n"},
                      {"risk":"SOMETHING_NEW","log_type":"information"}],
          "face_quality":null,"face_luminance":null},"created_at":"2025-05-01T13:11:07+00:00"}"#;
        let a = parse_answer(200, body).expect("parse");
        assert!((a.score.expect("score") - 0.8992).abs() < 1e-9);
        assert_eq!(a.upstream_decision, Some(UpstreamDecision::Review));
        assert_eq!(a.faces_detected, 2);
        assert_eq!(a.face.expect("face").bbox, [0.0, 0.0, 50.0, 40.0]);
        let codes: Vec<_> = a
            .warnings
            .iter()
            .map(|w| w.code.as_str().to_owned())
            .collect();
        assert_eq!(codes, ["MULTIPLE_FACES_DETECTED", "SOMETHING_NEW"]);
    }

    #[test]
    fn unknown_status_is_an_error() {
        let body = r#"{"liveness":{"status":"Maybe","score":50}}"#;
        assert_eq!(
            parse_answer(200, body).expect_err("err").kind,
            ErrorKind::BadResponse
        );
    }

    #[test]
    fn error_bodies_in_every_drf_style() {
        assert_eq!(
            wire::error_text(r#"{"detail":"Invalid API key."}"#),
            "Invalid API key."
        );
        assert_eq!(
            wire::error_text(r#"{"user_image":["Too big."]}"#),
            "user_image: Too big."
        );
        assert_eq!(wire::error_text(r#"["a","b"]"#), "a b");
        assert_eq!(
            classify_error(403, r#"{"detail":"You do not have enough credits."}"#).kind,
            ErrorKind::OutOfCredits
        );
        assert_eq!(
            classify_error(
                403,
                r#"{"detail":"Authentication credentials were not provided."}"#
            )
            .kind,
            ErrorKind::AuthFailed
        );
    }
}
