use std::path::PathBuf;

/// Boxed source error (tract reports `anyhow` errors).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The checksum list (`SHA256SUMS`) of the models directory cannot be read.
    #[error("cannot read the model checksum list {path}: {source}")]
    ChecksumsUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The checksum list has no entry for a model file the engine needs.
    #[error("model file {file} has no entry in {path}")]
    ChecksumMissing { file: &'static str, path: PathBuf },

    /// A model file is missing or unreadable.
    #[error(
        "model file {file} is missing or unreadable at {path} (expected sha256 {expected}): {source}"
    )]
    ModelMissing {
        file: &'static str,
        path: PathBuf,
        expected: String,
        #[source]
        source: std::io::Error,
    },

    /// A model file does not have the pinned SHA-256 (corrupt, truncated or another version).
    #[error(
        "model file {file} at {path} has sha256 {actual}, expected {expected} (corrupt or wrong version)"
    )]
    ChecksumMismatch {
        file: &'static str,
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// tract could not parse, type or optimize a (checksum-verified) model.
    #[error("model file {file} failed to load: {source}")]
    ModelLoad {
        file: &'static str,
        #[source]
        source: BoxError,
    },

    /// A model's inputs or outputs do not have the shapes the pipeline expects.
    #[error("model file {file} has an unexpected signature: {detail}")]
    ModelSignature { file: &'static str, detail: String },

    /// Running a model failed.
    #[error("inference with {file} failed: {source}")]
    Inference {
        file: &'static str,
        #[source]
        source: BoxError,
    },

    /// The bytes are not a JPEG, PNG, WebP or TIFF image.
    #[error("unsupported image format (accepted: JPEG, PNG, WebP, TIFF)")]
    UnsupportedFormat,

    /// The image is larger than the pixel cap.
    #[error("image is {width}x{height} pixels, over the cap of {max_pixels} pixels")]
    ImageTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },

    /// The image has a zero width or height.
    #[error("image is empty ({width}x{height})")]
    EmptyImage { width: u32, height: u32 },

    /// The image could not be decoded.
    #[error("image could not be decoded: {0}")]
    Decode(#[source] image::ImageError),

    /// The options are out of range.
    #[error("invalid engine options: {0}")]
    InvalidOptions(String),
}

impl EngineError {
    /// True when the error is about the input image (a client error), false when it is
    /// about the engine itself (models, inference).
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            EngineError::UnsupportedFormat
                | EngineError::ImageTooLarge { .. }
                | EngineError::EmptyImage { .. }
                | EngineError::Decode(_)
        )
    }
}
