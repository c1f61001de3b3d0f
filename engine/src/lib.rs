//! livegate's built-in liveness engine: BlazeFace face detection and Silent-Face
//! (MiniFASNet) passive anti-spoofing on CPU with `tract`, following the models' reference
//! pipeline step for step (`engine/README.md`, *Pipeline*).
//!
//! ```no_run
//! # fn main() -> Result<(), livegate_engine::EngineError> {
//! use std::{path::Path, sync::Arc};
//! let engine = Arc::new(livegate_engine::Engine::load(Path::new("/models"))?);
//! let analysis = engine.analyze_bytes(&std::fs::read("selfie.jpg").unwrap_or_default())?;
//! println!("score {:?}, warnings {:?}", analysis.score, analysis.warnings);
//! # Ok(()) }
//! ```
//!
//! An [`Engine`] is `Send + Sync` and cheap to clone (the models sit behind an `Arc`); every
//! call runs single-threaded, so concurrency comes from calling it on several threads.

use std::io::Cursor;
use std::path::Path;
use std::sync::Arc;

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader, RgbImage, metadata::Orientation,
};
use serde::Serialize;

mod align;
mod antispoof;
pub mod convert;
mod detect;
mod embed;
mod error;
mod models;
mod prelu;
mod quality;
mod resize;
pub mod search;
pub mod server;
pub mod synthetic;

pub use embed::{EMBEDDING_DIM, cosine, normalize};
pub use error::{BoxError, EngineError};
pub use models::{
    CHECKSUMS_FILE, DETECTOR_BACK_256, DETECTOR_SHORT_RANGE, FACE_EMBEDDING, MINIFASNET_V1SE,
    MINIFASNET_V2, MODEL_FILES, default_models_dir, user_cache_dir, verify_models,
};

use antispoof::AntiSpoof;
use detect::{Detection, Detector};
use embed::Embedder;

/// Cosine similarity at or above which two faces are taken for the same person: the default
/// `threshold` of identify, verify and compare. Calibrated (README, "Face matching
/// calibration"); dlib's embeddings put different people at about 0.85 already.
pub const MATCH_THRESHOLD: f32 = 0.93;

/// Similarity at or above which livegate reports `DUPLICATED_FACE` / `FACE_IN_BLOCKLIST`: a
/// stricter cut than [`MATCH_THRESHOLD`], since it acts without a person looking.
pub const SAME_PERSON_THRESHOLD: f32 = 0.95;

/// Similarity at or above which livegate reports `POSSIBLE_DUPLICATED_FACE` /
/// `POSSIBLE_FACE_IN_BLOCKLIST`.
pub const POSSIBLE_SAME_PERSON_THRESHOLD: f32 = 0.92;

/// The alignment template the embedding model expects (right eye, left eye, nose tip, mouth
/// center on a 150x150 chip), as in `face_embedding_alignment_template.json`.
pub fn alignment_template() -> [[f64; 2]; 4] {
    align::TEMPLATE
}

/// Default decode cap: 40 megapixels.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// Thresholds and limits of the engine. Every field has a documented default
/// ([`EngineOptions::default`]).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EngineOptions {
    /// Liveness score below which the face is reported as an attack
    /// (`LIVENESS_FACE_ATTACK`, `spoof_type: unknown`). Default 0.5.
    pub attack_threshold: f32,
    /// Face quality below which `LOW_FACE_QUALITY` is reported. Default 0.4.
    pub min_face_quality: f32,
    /// Face luminance below which `LOW_FACE_LUMINANCE` is reported. Default 0.2.
    pub min_face_luminance: f32,
    /// Face luminance above which `HIGH_FACE_LUMINANCE` is reported. Default 0.85.
    pub max_face_luminance: f32,
    /// Minimum detector confidence for a face. Default 0.5 (as the reference).
    pub min_detection_score: f32,
    /// IoU above which overlapping detections are suppressed. Default 0.3 (as the reference).
    pub nms_iou: f32,
    /// Maximum number of faces reported. Default 5 (as the reference).
    pub max_faces: usize,
    /// Pixel cap applied by [`Engine::analyze_bytes`] while decoding. Default
    /// [`DEFAULT_MAX_PIXELS`].
    pub max_pixels: u64,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            attack_threshold: 0.5,
            min_face_quality: 0.4,
            min_face_luminance: 0.2,
            max_face_luminance: 0.85,
            min_detection_score: 0.5,
            nms_iou: 0.3,
            max_faces: 5,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

impl EngineOptions {
    /// Checks that every threshold is within its range; lists every problem.
    pub fn validate(&self) -> Result<(), EngineError> {
        let mut problems = Vec::new();
        for (name, v) in [
            ("attack_threshold", self.attack_threshold),
            ("min_face_quality", self.min_face_quality),
            ("min_face_luminance", self.min_face_luminance),
            ("max_face_luminance", self.max_face_luminance),
            ("min_detection_score", self.min_detection_score),
            ("nms_iou", self.nms_iou),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{name} = {v} is outside 0..=1"));
            }
        }
        if self.min_face_luminance > self.max_face_luminance {
            problems.push("min_face_luminance is above max_face_luminance".to_string());
        }
        if self.max_faces == 0 {
            problems.push("max_faces must be at least 1".to_string());
        }
        if self.max_pixels == 0 {
            problems.push("max_pixels must be at least 1".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(EngineError::InvalidOptions(problems.join("; ")))
        }
    }
}

/// Warning codes, from livegate's normalized vocabulary (`WarningCode` in `providers/src/model.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum Warning {
    /// No face was found.
    NoFaceDetected,
    /// More than one face was found; the largest was scored.
    MultipleFacesDetected,
    /// The scored face is blurry or small.
    LowFaceQuality,
    /// The scored face is too dark.
    LowFaceLuminance,
    /// The scored face is too bright.
    HighFaceLuminance,
    /// The liveness score is below the attack threshold.
    LivenessFaceAttack,
}

impl Warning {
    /// The normalized code, e.g. `"NO_FACE_DETECTED"`.
    pub const fn code(self) -> &'static str {
        match self {
            Warning::NoFaceDetected => "NO_FACE_DETECTED",
            Warning::MultipleFacesDetected => "MULTIPLE_FACES_DETECTED",
            Warning::LowFaceQuality => "LOW_FACE_QUALITY",
            Warning::LowFaceLuminance => "LOW_FACE_LUMINANCE",
            Warning::HighFaceLuminance => "HIGH_FACE_LUMINANCE",
            Warning::LivenessFaceAttack => "LIVENESS_FACE_ATTACK",
        }
    }

    /// A human-readable message.
    pub const fn message(self) -> &'static str {
        match self {
            Warning::NoFaceDetected => "no face was detected in the image",
            Warning::MultipleFacesDetected => {
                "more than one face was detected; the largest one was checked"
            }
            Warning::LowFaceQuality => "the face is blurry or too small",
            Warning::LowFaceLuminance => "the face is too dark",
            Warning::HighFaceLuminance => "the face is too bright",
            Warning::LivenessFaceAttack => "the face looks like a presentation attack",
        }
    }
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// Kind of presentation attack. The MiniFASNet models have three classes, but which attack
/// each non-real class stands for is not established, so the engine only says `unknown`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SpoofType {
    /// An attack of an unknown kind.
    Unknown,
}

impl SpoofType {
    /// The normalized name, `"unknown"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SpoofType::Unknown => "unknown",
        }
    }
}

/// Which BlazeFace model produced the detections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorModel {
    /// `face_detection_short_range.onnx` (128x128), tried first.
    ShortRange,
    /// `face_detection_back_256.onnx` (256x256), used when the short-range model finds nothing.
    Back256,
}

/// A detected face, in pixels of the (EXIF-oriented) image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Face {
    /// `[x1, y1, x2, y2]`, the detector's tight box clipped to the image.
    pub bbox: [f32; 4],
    /// Detector confidence 0-1.
    pub confidence: f32,
    /// BlazeFace's 6 keypoints `[x, y]`, not clipped: right eye, left eye, nose tip, mouth
    /// center, right ear tragion, left ear tragion ("right" = the subject's right).
    pub landmarks: [[f32; 2]; 6],
}

impl Face {
    /// Box area in pixels.
    pub fn area(&self) -> f32 {
        (self.bbox[2] - self.bbox[0]).max(0.0) * (self.bbox[3] - self.bbox[1]).max(0.0)
    }
}

/// The real-class probabilities of each anti-spoofing model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ModelScores {
    /// MiniFASNetV2 on the 2.7x crop.
    pub minifasnet_v2: f32,
    /// MiniFASNetV1SE on the 4.0x crop.
    pub minifasnet_v1se: f32,
}

/// The result of analyzing one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    /// Liveness score 0-1 (higher = more likely live): mean of the two models' real
    /// probabilities for the scored face. `None` when no face was found.
    pub score: Option<f32>,
    /// `Some(Unknown)` when the score is below the attack threshold.
    pub spoof_type: Option<SpoofType>,
    /// Every detected face, by decreasing detector confidence.
    pub faces: Vec<Face>,
    /// Number of faces detected (`faces.len()`).
    pub face_count: usize,
    /// Index in `faces` of the face that was scored (the largest).
    pub scored_face: Option<usize>,
    /// Quality 0-1 of the scored face (sharpness and size; see the README).
    pub quality: Option<f32>,
    /// Mean luma 0-1 of the scored face's box.
    pub luminance: Option<f32>,
    /// Per-model real probabilities of the scored face.
    pub model_scores: Option<ModelScores>,
    /// Which detector found the faces (`None` when none did).
    pub detector: Option<DetectorModel>,
    /// Warning codes, in a fixed order.
    pub warnings: Vec<Warning>,
    /// Width of the analyzed image.
    pub image_width: u32,
    /// Height of the analyzed image.
    pub image_height: u32,
}

impl Analysis {
    /// The scored face.
    pub fn face(&self) -> Option<&Face> {
        self.scored_face.and_then(|i| self.faces.get(i))
    }

    /// True when the score is below the attack threshold that was applied.
    pub fn is_attack(&self) -> bool {
        self.spoof_type.is_some()
    }

    /// True when `warning` was raised.
    pub fn has_warning(&self, warning: Warning) -> bool {
        self.warnings.contains(&warning)
    }
}

struct Models {
    short_range: Detector,
    back_256: Detector,
    v2: AntiSpoof,
    v1se: AntiSpoof,
    embedder: Embedder,
}

/// The liveness engine: the five models loaded once as optimized tract plans, and options.
/// `Send + Sync`; `clone` shares the models.
#[derive(Clone)]
pub struct Engine {
    models: Arc<Models>,
    opts: EngineOptions,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Loads the models from `models_dir` with default options, each file checked against the
    /// directory's `SHA256SUMS` first.
    pub fn load(models_dir: &Path) -> Result<Engine, EngineError> {
        Engine::load_with(models_dir, EngineOptions::default())
    }

    /// Loads the models with the given options.
    pub fn load_with(models_dir: &Path, opts: EngineOptions) -> Result<Engine, EngineError> {
        opts.validate()?;
        let sums = models::Checksums::read(models_dir)?;
        // Verify every file before parsing any, so a bad directory fails fast.
        let short_range = sums.read_verified(models_dir, DETECTOR_SHORT_RANGE)?;
        let back_256 = sums.read_verified(models_dir, DETECTOR_BACK_256)?;
        let v2 = sums.read_verified(models_dir, MINIFASNET_V2)?;
        let v1se = sums.read_verified(models_dir, MINIFASNET_V1SE)?;
        let embedding = sums.read_verified(models_dir, FACE_EMBEDDING)?;
        let models = Models {
            short_range: Detector::load(DETECTOR_SHORT_RANGE, &short_range, 128)?,
            back_256: Detector::load(DETECTOR_BACK_256, &back_256, 256)?,
            v2: AntiSpoof::load(MINIFASNET_V2, &v2, 2.7)?,
            v1se: AntiSpoof::load(MINIFASNET_V1SE, &v1se, 4.0)?,
            embedder: Embedder::load(FACE_EMBEDDING, &embedding)?,
        };
        tracing::debug!(dir = %models_dir.display(), "liveness models loaded");
        Ok(Engine {
            models: Arc::new(models),
            opts,
        })
    }

    /// The same models with other options.
    pub fn with_options(&self, opts: EngineOptions) -> Result<Engine, EngineError> {
        opts.validate()?;
        Ok(Engine {
            models: Arc::clone(&self.models),
            opts,
        })
    }

    /// The options in use.
    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// Decodes a JPEG, PNG, WebP or TIFF image (format from the bytes, not a name), applies
    /// its EXIF orientation and converts it to 8-bit RGB. Capped at [`DEFAULT_MAX_PIXELS`].
    pub fn decode(bytes: &[u8]) -> Result<RgbImage, EngineError> {
        Engine::decode_with_limit(bytes, DEFAULT_MAX_PIXELS)
    }

    /// [`Engine::decode`] with another pixel cap (checked before the pixels are decoded).
    pub fn decode_with_limit(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, EngineError> {
        let reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| EngineError::Decode(image::ImageError::IoError(e)))?;
        match reader.format() {
            Some(ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Tiff) => {}
            _ => return Err(EngineError::UnsupportedFormat),
        }
        let mut decoder = reader.into_decoder().map_err(EngineError::Decode)?;
        let (width, height) = decoder.dimensions();
        if width == 0 || height == 0 {
            return Err(EngineError::EmptyImage { width, height });
        }
        if u64::from(width) * u64::from(height) > max_pixels {
            return Err(EngineError::ImageTooLarge {
                width,
                height,
                max_pixels,
            });
        }
        // A broken EXIF block is no reason to reject the image: keep it as stored.
        let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
        let mut img = DynamicImage::from_decoder(decoder).map_err(EngineError::Decode)?;
        img.apply_orientation(orientation);
        Ok(img.into_rgb8())
    }

    /// Decodes (with the options' pixel cap) and analyzes.
    pub fn analyze_bytes(&self, bytes: &[u8]) -> Result<Analysis, EngineError> {
        let img = Engine::decode_with_limit(bytes, self.opts.max_pixels)?;
        self.analyze(&img)
    }

    /// Detects faces, scores the largest and reports quality, luminance and warnings.
    pub fn analyze(&self, img: &RgbImage) -> Result<Analysis, EngineError> {
        let (width, height) = img.dimensions();
        if width == 0 || height == 0 {
            return Err(EngineError::EmptyImage { width, height });
        }
        let o = &self.opts;
        let m = &self.models;
        let in_image = |d: &Detection| quality::pixel_rect(width, height, &d.bbox).is_some();

        let mut detector = DetectorModel::ShortRange;
        let mut dets = m
            .short_range
            .detect(img, o.min_detection_score, o.nms_iou, o.max_faces)?;
        dets.retain(in_image);
        if dets.is_empty() {
            detector = DetectorModel::Back256;
            dets = m
                .back_256
                .detect(img, o.min_detection_score, o.nms_iou, o.max_faces)?;
            dets.retain(in_image);
        }

        let mut analysis = Analysis {
            score: None,
            spoof_type: None,
            faces: dets.iter().map(|d| to_face(d, width, height)).collect(),
            face_count: dets.len(),
            scored_face: None,
            quality: None,
            luminance: None,
            model_scores: None,
            detector: None,
            warnings: Vec::new(),
            image_width: width,
            image_height: height,
        };
        if dets.is_empty() {
            analysis.warnings.push(Warning::NoFaceDetected);
            return Ok(analysis);
        }
        analysis.detector = Some(detector);
        if dets.len() > 1 {
            analysis.warnings.push(Warning::MultipleFacesDetected);
        }

        // Score the largest face (first one on ties: the most confident).
        let mut idx = 0;
        for (i, f) in analysis.faces.iter().enumerate() {
            if f.area() > analysis.faces[idx].area() {
                idx = i;
            }
        }
        analysis.scored_face = Some(idx);
        let det = &dets[idx];

        if let Some(rect) = quality::pixel_rect(width, height, &det.bbox) {
            let lum = quality::luminance(img, rect);
            let lap = quality::laplacian_variance(img, rect);
            let q = quality::quality(lap, f64::from(rect.w.min(rect.h)));
            analysis.luminance = Some(lum);
            analysis.quality = Some(q);
            if q < o.min_face_quality {
                analysis.warnings.push(Warning::LowFaceQuality);
            }
            if lum < o.min_face_luminance {
                analysis.warnings.push(Warning::LowFaceLuminance);
            } else if lum > o.max_face_luminance {
                analysis.warnings.push(Warning::HighFaceLuminance);
            }
        }

        if let Some((v2, v1se)) = antispoof::real_probabilities(&m.v2, &m.v1se, img, &det.bbox)? {
            let score = (v2 + v1se) / 2.0;
            analysis.score = Some(score);
            analysis.model_scores = Some(ModelScores {
                minifasnet_v2: v2,
                minifasnet_v1se: v1se,
            });
            if score < o.attack_threshold {
                analysis.spoof_type = Some(SpoofType::Unknown);
                analysis.warnings.push(Warning::LivenessFaceAttack);
            }
        }
        tracing::debug!(
            faces = analysis.face_count,
            score = ?analysis.score,
            warnings = ?analysis.warnings,
            "liveness analysis"
        );
        Ok(analysis)
    }
}

/// A face's identity vector: [`EMBEDDING_DIM`] `f32`s of unit length; the cosine
/// similarity of two faces is [`cosine`] of their embeddings.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceEmbedding {
    /// The unit-length vector.
    pub vector: Vec<f32>,
    /// The face it was computed from (the analysis' scored face: the largest).
    pub face: Face,
}

impl Engine {
    /// The embedding of `face` (a face [`Engine::analyze`] found in `img`): the face aligned
    /// onto the template by its landmarks, through the embedding model, L2-normalized.
    /// `None` when the landmarks are degenerate.
    pub fn embed(&self, img: &RgbImage, face: &Face) -> Result<Option<Vec<f32>>, EngineError> {
        self.models.embedder.embed(img, &face.landmarks)
    }

    /// Analyzes `img` and computes the embedding of the scored (largest) face, if any.
    pub fn analyze_and_embed(
        &self,
        img: &RgbImage,
    ) -> Result<(Analysis, Option<FaceEmbedding>), EngineError> {
        let analysis = self.analyze(img)?;
        let embedding = match analysis.face() {
            Some(face) => self.embed(img, face)?.map(|vector| FaceEmbedding {
                vector,
                face: face.clone(),
            }),
            None => None,
        };
        Ok((analysis, embedding))
    }
}

fn to_face(d: &Detection, width: u32, height: u32) -> Face {
    let (w, h) = (f64::from(width), f64::from(height));
    let b = d.bbox;
    Face {
        bbox: [
            b[0].clamp(0.0, w) as f32,
            b[1].clamp(0.0, h) as f32,
            b[2].clamp(0.0, w) as f32,
            b[3].clamp(0.0, h) as f32,
        ],
        confidence: d.score,
        landmarks: d.landmarks.map(|p| [p[0] as f32, p[1] as f32]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_sync() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Engine>();
        check::<Analysis>();
    }

    #[test]
    fn default_options_are_valid() {
        assert!(EngineOptions::default().validate().is_ok());
        let bad = EngineOptions {
            attack_threshold: 1.5,
            max_faces: 0,
            ..EngineOptions::default()
        };
        let msg = bad
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            msg.contains("attack_threshold") && msg.contains("max_faces"),
            "{msg}"
        );
    }

    #[test]
    fn warning_codes_serialize_as_codes() {
        for w in [
            Warning::NoFaceDetected,
            Warning::MultipleFacesDetected,
            Warning::LowFaceQuality,
            Warning::LowFaceLuminance,
            Warning::HighFaceLuminance,
            Warning::LivenessFaceAttack,
        ] {
            assert_eq!(
                serde_json::to_string(&w).unwrap_or_default(),
                format!("\"{}\"", w.code())
            );
        }
        assert_eq!(
            serde_json::to_string(&SpoofType::Unknown).unwrap_or_default(),
            "\"unknown\""
        );
    }

    #[test]
    fn rejects_non_images() {
        assert!(matches!(
            Engine::decode(b"GIF89a not accepted"),
            Err(EngineError::UnsupportedFormat)
        ));
        assert!(matches!(
            Engine::decode(b"hello"),
            Err(EngineError::UnsupportedFormat)
        ));
    }

    #[test]
    fn decode_applies_orientation_and_cap() {
        // A 3x2 PNG: no orientation, plain decode.
        let img = RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]));
        let mut png = Vec::new();
        let ok = img
            .write_to(&mut Cursor::new(&mut png), ImageFormat::Png)
            .is_ok();
        assert!(ok);
        let back = Engine::decode(&png).map(|i| i.dimensions()).ok();
        assert_eq!(back, Some((3, 2)));
        assert!(matches!(
            Engine::decode_with_limit(&png, 5),
            Err(EngineError::ImageTooLarge { .. })
        ));
    }
}
