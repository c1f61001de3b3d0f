use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a provider reported, on livegate's scales. The gateway's policy turns this into the
/// tenant's decision; nothing here is the final word.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderAnswer {
    /// Liveness 0-1, higher = more likely live; `None` when the provider saw no face.
    pub score: Option<f64>,
    /// What the upstream itself decided, when it says so (recorded, re-checked by policy).
    pub upstream_decision: Option<UpstreamDecision>,
    pub spoof_type: Option<SpoofType>,
    /// The face that was scored (the largest one).
    pub face: Option<Face>,
    pub faces_detected: u32,
    pub warnings: Vec<Warning>,
    pub provider_request_id: Option<String>,
    pub raw: RawExchange,
}

/// The upstream's HTTP status and body, kept for the attempt row (never returned to tenants).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawExchange {
    pub status: Option<u16>,
    pub body: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamDecision {
    Approved,
    Declined,
    Review,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SpoofType {
    Print,
    Replay,
    Mask,
    Deepfake,
    Unknown,
}

impl SpoofType {
    pub fn as_str(self) -> &'static str {
        match self {
            SpoofType::Print => "print",
            SpoofType::Replay => "replay",
            SpoofType::Mask => "mask",
            SpoofType::Deepfake => "deepfake",
            SpoofType::Unknown => "unknown",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "print" => SpoofType::Print,
            "replay" => SpoofType::Replay,
            "mask" => SpoofType::Mask,
            "deepfake" => SpoofType::Deepfake,
            "unknown" => SpoofType::Unknown,
            _ => return None,
        })
    }
}

/// The face a provider scored. Every metric is optional because no vendor reports all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Face {
    /// `[x1, y1, x2, y2]` in pixels of the submitted image.
    pub bbox: [f64; 4],
    /// Detector confidence 0-1.
    pub confidence: Option<f64>,
    /// Face image quality 0-1.
    pub quality: Option<f64>,
    /// Face luminance 0-1.
    pub luminance: Option<f64>,
    /// Estimated age in years.
    pub age: Option<f64>,
    pub gender: Option<String>,
}

/// A warning code of the normalized vocabulary (Didit's tags are the base). Codes an upstream
/// invents are kept verbatim rather than dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum WarningCode {
    NoFaceDetected,
    MultipleFacesDetected,
    LivenessFaceAttack,
    LowLivenessScore,
    LowFaceQuality,
    LowFaceLuminance,
    HighFaceLuminance,
    FaceInBlocklist,
    PossibleFaceInBlocklist,
    DuplicatedFace,
    PossibleDuplicatedFace,
    Other(String),
}

impl WarningCode {
    pub const KNOWN: [WarningCode; 11] = [
        WarningCode::NoFaceDetected,
        WarningCode::MultipleFacesDetected,
        WarningCode::LivenessFaceAttack,
        WarningCode::LowLivenessScore,
        WarningCode::LowFaceQuality,
        WarningCode::LowFaceLuminance,
        WarningCode::HighFaceLuminance,
        WarningCode::FaceInBlocklist,
        WarningCode::PossibleFaceInBlocklist,
        WarningCode::DuplicatedFace,
        WarningCode::PossibleDuplicatedFace,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            WarningCode::NoFaceDetected => "NO_FACE_DETECTED",
            WarningCode::MultipleFacesDetected => "MULTIPLE_FACES_DETECTED",
            WarningCode::LivenessFaceAttack => "LIVENESS_FACE_ATTACK",
            WarningCode::LowLivenessScore => "LOW_LIVENESS_SCORE",
            WarningCode::LowFaceQuality => "LOW_FACE_QUALITY",
            WarningCode::LowFaceLuminance => "LOW_FACE_LUMINANCE",
            WarningCode::HighFaceLuminance => "HIGH_FACE_LUMINANCE",
            WarningCode::FaceInBlocklist => "FACE_IN_BLOCKLIST",
            WarningCode::PossibleFaceInBlocklist => "POSSIBLE_FACE_IN_BLOCKLIST",
            WarningCode::DuplicatedFace => "DUPLICATED_FACE",
            WarningCode::PossibleDuplicatedFace => "POSSIBLE_DUPLICATED_FACE",
            WarningCode::Other(s) => s,
        }
    }

    /// The message livegate uses when the upstream gave none.
    pub fn default_message(&self) -> &'static str {
        match self {
            WarningCode::NoFaceDetected => "No face was detected in the image.",
            WarningCode::MultipleFacesDetected => {
                "More than one face was detected; the largest one was scored."
            }
            WarningCode::LivenessFaceAttack => {
                "The image looks like a presentation attack (print, screen, mask or deepfake)."
            }
            WarningCode::LowLivenessScore => "The liveness score is below the threshold.",
            WarningCode::LowFaceQuality => "The face image quality is too low.",
            WarningCode::LowFaceLuminance => "The face is too dark.",
            WarningCode::HighFaceLuminance => "The face is too bright or overexposed.",
            WarningCode::FaceInBlocklist => "The face matches a blocklisted face.",
            WarningCode::PossibleFaceInBlocklist => "The face may match a blocklisted face.",
            WarningCode::DuplicatedFace => "The face matches an earlier approved verification.",
            WarningCode::PossibleDuplicatedFace => {
                "The face may match an earlier approved verification."
            }
            WarningCode::Other(_) => "Warning reported by the provider.",
        }
    }
}

impl utoipa::PartialSchema for WarningCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        // A plain string: upstream codes outside the vocabulary are passed through verbatim.
        let known: Vec<&str> = WarningCode::KNOWN.iter().map(|c| c.as_str()).collect();
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(format!(
                "Warning code. Known codes: {}. Codes an upstream adds are passed through.",
                known.join(", ")
            )))
            .examples(["LOW_LIVENESS_SCORE"])
            .into()
    }
}

impl ToSchema for WarningCode {}

impl From<String> for WarningCode {
    fn from(s: String) -> Self {
        WarningCode::KNOWN
            .iter()
            .find(|k| k.as_str() == s)
            .cloned()
            .unwrap_or(WarningCode::Other(s))
    }
}

impl From<&str> for WarningCode {
    fn from(s: &str) -> Self {
        WarningCode::from(s.to_owned())
    }
}

impl From<WarningCode> for String {
    fn from(c: WarningCode) -> Self {
        c.as_str().to_owned()
    }
}

impl std::fmt::Display for WarningCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Warning {
    pub code: WarningCode,
    pub message: String,
    /// Face matches (`DUPLICATED_FACE`, `FACE_IN_BLOCKLIST` and their `POSSIBLE_` forms): the
    /// earlier verification whose face this one matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_verification_id: Option<String>,
    /// Face matches: the cosine similarity of the two faces' embeddings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f64>,
}

impl Warning {
    pub fn new(code: WarningCode) -> Self {
        let message = code.default_message().to_owned();
        Self::with_message(code, message)
    }

    pub fn with_message(code: WarningCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            matched_verification_id: None,
            similarity: None,
        }
    }

    /// A face-match warning pointing at the matched verification.
    pub fn face_match(code: WarningCode, matched_verification_id: String, similarity: f64) -> Self {
        Self {
            matched_verification_id: Some(matched_verification_id),
            similarity: Some(similarity),
            ..Self::new(code)
        }
    }
}
