//! The collections engine's face-matching calls, beside the liveness check the `Provider`
//! trait covers: enroll (`POST .../faces`), identify, verify and compare (`docs/providers.md`).
//! Errors use the same classification as the liveness call; a 409 is
//! `DUPLICATE_EXTERNAL_ID` and a 404 `FACE_NOT_FOUND` names a face the collection lacks, both
//! caller mistakes ([`ErrorKind::BadInput`]). Any other 404 keeps the liveness call's reading.

use reqwest::multipart::Form;
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::{Collections, api_url, classify_error, wire};
use crate::http::{self, image_part, unit_decimal};
use crate::{ErrorKind, ImageInput, ProviderError};

/// An enrolled face, as the engine reports it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EnrolledFace {
    pub face_id: String,
    pub external_id: Option<String>,
    pub liveness_score: Option<f64>,
}

/// One identify hit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FaceMatch {
    pub face_id: String,
    pub external_id: Option<String>,
    pub metadata: Option<Value>,
    /// Cosine similarity (livegate's engine) or the vendor's score.
    pub similarity: f64,
}

/// Which enrolled face a verify call is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaceRef<'a> {
    FaceId(&'a str),
    ExternalId(&'a str),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Verified {
    pub verified: bool,
    pub similarity: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Compared {
    #[serde(rename = "match")]
    pub is_match: bool,
    pub similarity: f64,
}

#[derive(Deserialize)]
struct Matches {
    matches: Vec<FaceMatch>,
}

/// The error envelope's `error.code`, when the body is one.
fn error_code(body: &str) -> Option<String> {
    serde_json::from_str::<wire::Envelope>(body)
        .ok()?
        .error?
        .code
}

impl Collections {
    fn collection_url(&self, route: &str) -> Result<Url, ProviderError> {
        api_url(
            &self.settings.base_url,
            &["collections", &self.settings.collection_id, route],
        )
    }

    /// Sends a form and returns the envelope's `data` as `T`.
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        url: Url,
        form: Form,
    ) -> Result<T, ProviderError> {
        let call = self
            .http
            .post(url)
            .header("X-API-Key", self.api_key.clone())
            .multipart(form);
        let ex = http::exchange(call, None).await?;
        if !ex.is_success() {
            let err = if ex.status == 409 {
                ProviderError::new(
                    ErrorKind::BadInput,
                    "DUPLICATE_EXTERNAL_ID: the external_id is taken in the collection",
                )
            } else if ex.status == 404 && error_code(&ex.body).as_deref() == Some("FACE_NOT_FOUND")
            {
                ProviderError::new(
                    ErrorKind::BadInput,
                    "FACE_NOT_FOUND: no such face in the collection",
                )
            } else {
                classify_error(ex.status, &ex.body)
            };
            return Err(ex.into_error(err));
        }
        let envelope: wire::Generic = serde_json::from_str(&ex.body)
            .map_err(|e| ex.unreadable(format!("unreadable collections engine answer: {e}")))?;
        if !envelope.success {
            return Err(ex.unreadable("the collections engine answered success: false".into()));
        }
        serde_json::from_value(envelope.data.unwrap_or(Value::Null))
            .map_err(|e| ex.unreadable(format!("unexpected collections engine data: {e}")))
    }

    /// Enrolls a face in the provider's collection (`check_liveness` as the engine's
    /// default, true, unless told otherwise).
    pub async fn enroll(
        &self,
        image: &ImageInput,
        external_id: Option<&str>,
        metadata: Option<&Value>,
        check_liveness: bool,
    ) -> Result<EnrolledFace, ProviderError> {
        let mut form = Form::new()
            .part("image", image_part(image, "face")?)
            .text("check_liveness", check_liveness.to_string());
        if let Some(e) = external_id {
            form = form.text("external_id", e.to_owned());
        }
        if let Some(m) = metadata {
            form = form.text("metadata", m.to_string());
        }
        self.call(self.collection_url("faces")?, form).await
    }

    /// The enrolled faces most similar to the image's, best first; empty when none reaches
    /// `threshold` (the engine's default when `None`).
    pub async fn identify(
        &self,
        image: &ImageInput,
        top_k: u32,
        threshold: Option<f64>,
    ) -> Result<Vec<FaceMatch>, ProviderError> {
        let mut form = Form::new()
            .part("image", image_part(image, "probe")?)
            .text("top_k", top_k.clamp(1, 100).to_string());
        if let Some(t) = threshold {
            form = form.text("threshold", unit_decimal(t));
        }
        let m: Matches = self.call(self.collection_url("identify")?, form).await?;
        Ok(m.matches)
    }

    /// Whether the image's face is the enrolled face `face`.
    pub async fn verify(
        &self,
        image: &ImageInput,
        face: FaceRef<'_>,
        threshold: Option<f64>,
    ) -> Result<Verified, ProviderError> {
        let mut form = Form::new().part("image", image_part(image, "probe")?);
        form = match face {
            FaceRef::FaceId(id) => form.text("face_id", id.to_owned()),
            FaceRef::ExternalId(id) => form.text("external_id", id.to_owned()),
        };
        if let Some(t) = threshold {
            form = form.text("threshold", unit_decimal(t));
        }
        self.call(self.collection_url("verify")?, form).await
    }

    /// Whether two images show the same person (`POST /api/v1/compare`).
    pub async fn compare(
        &self,
        a: &ImageInput,
        b: &ImageInput,
        threshold: Option<f64>,
    ) -> Result<Compared, ProviderError> {
        let mut form = Form::new()
            .part("image_a", image_part(a, "a")?)
            .part("image_b", image_part(b, "b")?);
        if let Some(t) = threshold {
            form = form.text("threshold", unit_decimal(t));
        }
        self.call(api_url(&self.settings.base_url, &["compare"])?, form)
            .await
    }
}
