//! Why a submission is refused: a stable code (the gateway's problem `code` of the same name)
//! and a detail for the caller, or the body that failed to arrive.

/// The error a body stream failed with, kept whole so the gateway can tell a timeout.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// What is wrong with a submission, by the problem code it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    UnsupportedMediaType,
    InvalidMultipart,
    InvalidRequest,
    InvalidJson,
    InvalidBase64,
    InvalidThreshold,
    InvalidExternalId,
    InvalidMetadata,
    ImageTooLarge,
    UnsupportedImageFormat,
    ImageTruncated,
    ImageUndecodable,
    ImageTooManyPixels,
    ImageTooLargeDecoded,
}

impl Code {
    /// The wire slug, as the gateway's problem `code`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::InvalidMultipart => "invalid_multipart",
            Code::InvalidRequest => "invalid_request",
            Code::InvalidJson => "invalid_json",
            Code::InvalidBase64 => "invalid_base64",
            Code::InvalidThreshold => "invalid_threshold",
            Code::InvalidExternalId => "invalid_external_id",
            Code::InvalidMetadata => "invalid_metadata",
            Code::ImageTooLarge => "image_too_large",
            Code::UnsupportedImageFormat => "unsupported_image_format",
            Code::ImageTruncated => "image_truncated",
            Code::ImageUndecodable => "image_undecodable",
            Code::ImageTooManyPixels => "image_too_many_pixels",
            Code::ImageTooLargeDecoded => "image_too_large_decoded",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The caller sent something livegate does not take.
    #[error("{code:?}: {detail}")]
    Input { code: Code, detail: String },
    /// The body did not arrive (the connection broke, or a server timeout cut it).
    #[error("reading the request body failed: {0}")]
    Body(BodyError),
}

impl Refused {
    pub fn new(code: Code, detail: impl Into<String>) -> Self {
        Refused::Input {
            code,
            detail: detail.into(),
        }
    }
}
