//! Taking the image: the submission read and checked by `livegate-intake` (multipart or JSON,
//! caps enforced while reading; format, structure and size caps from the header before
//! decoding), the tenant's rules applied, and a full decode to 8-bit RGB with EXIF
//! orientation applied.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;
use sha2::{Digest, Sha256};

use livegate_intake::{Code, HeaderCaps, Refused, SubmissionCaps};
pub use livegate_intake::{Header, IMAGE_FIELDS, MAX_EXTERNAL_ID, MAX_METADATA_BYTES, Submission};
use livegate_providers::{ImageFormat, ImageInput};

use crate::config::{Limits, Tenant};
use crate::error::{ApiError, ErrorCode};
use crate::store::VerificationRecord;

/// The problem a refusal answers with: the same code, or 408/400 for a body that did not
/// arrive.
fn refused(r: Refused) -> ApiError {
    match r {
        Refused::Body(e) => ApiError::body_read(&*e),
        Refused::Input { code, detail } => ApiError::new(error_code(code), detail),
    }
}

fn error_code(c: Code) -> ErrorCode {
    match c {
        Code::UnsupportedMediaType => ErrorCode::UnsupportedMediaType,
        Code::InvalidMultipart => ErrorCode::InvalidMultipart,
        Code::InvalidRequest => ErrorCode::InvalidRequest,
        Code::InvalidJson => ErrorCode::InvalidJson,
        Code::InvalidBase64 => ErrorCode::InvalidBase64,
        Code::InvalidThreshold => ErrorCode::InvalidThreshold,
        Code::InvalidExternalId => ErrorCode::InvalidExternalId,
        Code::InvalidMetadata => ErrorCode::InvalidMetadata,
        Code::ImageTooLarge => ErrorCode::ImageTooLarge,
        Code::UnsupportedImageFormat => ErrorCode::UnsupportedImageFormat,
        Code::ImageTruncated => ErrorCode::ImageTruncated,
        Code::ImageUndecodable => ErrorCode::ImageUndecodable,
        Code::ImageTooManyPixels => ErrorCode::ImageTooManyPixels,
        Code::ImageTooLargeDecoded => ErrorCode::ImageTooLargeDecoded,
    }
}

/// Read the request body into a `Submission`. Nothing larger than the limits is buffered.
pub async fn read_submission(
    headers: &HeaderMap,
    body: Body,
    limits: &Limits,
) -> Result<Submission, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let caps = SubmissionCaps {
        max_image_bytes: limits.max_image_bytes,
        body_bytes_hint: headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok()),
    };
    livegate_intake::read_submission(ct, body.into_data_stream(), &caps)
        .await
        .map_err(refused)
}

/// A submission that passed the tenant's rules, with its image.
#[derive(Debug)]
pub struct Admitted {
    pub sub: Submission,
    pub image: Bytes,
}

/// Apply the tenant's rules to what the caller sent (a threshold may only rise, a provider
/// may be named only where allowed) and note on the row what is known before decoding.
pub fn admit(
    tenant: &Tenant,
    mut sub: Submission,
    rec: &mut VerificationRecord,
) -> Result<Admitted, ApiError> {
    rec.external_id = sub.external_id.clone();
    rec.metadata = sub.metadata.clone();
    if let Some(t) = sub.threshold {
        if t < tenant.threshold {
            return Err(ApiError::new(
                ErrorCode::ThresholdBelowTenant,
                format!(
                    "threshold {t} is below the tenant's threshold {}; a request may only raise it",
                    tenant.threshold
                ),
            ));
        }
        rec.threshold = t;
    }
    if let Some(p) = &sub.provider {
        if !tenant.allow_provider_override {
            return Err(ApiError::new(
                ErrorCode::ProviderOverrideNotAllowed,
                "this tenant may not choose a provider per request",
            ));
        }
        if !tenant.routing.providers.contains(p) {
            return Err(ApiError::new(
                ErrorCode::UnknownProvider,
                format!("provider {p:?} is not one of this tenant's providers"),
            ));
        }
    }
    let image = sub.image.take().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ImageMissing,
            "send the image as multipart field `image` or JSON `image_base64`",
        )
    })?;
    rec.image_format = ImageFormat::sniff(&image).map(|f| f.extension().to_owned());
    Ok(Admitted { sub, image })
}

/// The row's `image_sha256`: hex SHA-256 of the image as the caller sent it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn header_caps(limits: &Limits) -> HeaderCaps {
    HeaderCaps {
        max_pixels: limits.max_pixels,
        max_decoded_bytes: limits.max_decoded_bytes,
    }
}

/// Format, structure and the header's sizes within the limits, without decoding a pixel.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Header, ApiError> {
    livegate_intake::inspect(bytes, &header_caps(limits)).map_err(refused)
}

/// Check and decode to 8-bit RGB, EXIF orientation applied. CPU-heavy: call from a blocking
/// thread.
pub fn decode(bytes: Bytes, limits: &Limits) -> Result<ImageInput, ApiError> {
    let header = inspect(&bytes, limits)?;
    decode_with(bytes, &header, limits)
}

/// What every vendor and shadow is sent: the caller's bytes without their personal metadata
/// (EXIF, XMP, comments, text chunks; the orientation kept as a one-tag EXIF), never
/// re-encoded; the caller's own bytes when there is nothing to drop. The SHA-256 recorded stays
/// that of the caller's bytes.
fn without_metadata(bytes: Bytes, header: &Header) -> Bytes {
    match livegate_intake::metadata::strip(header.format, &bytes, header.orientation) {
        Some(stripped) => Bytes::from(stripped),
        None => bytes,
    }
}

/// An image [`inspect`] passed, as it is forwarded without decoding: its dimensions are the
/// header's, turned by its EXIF orientation.
pub fn undecoded(bytes: Bytes, header: &Header) -> ImageInput {
    let (width, height) = header.oriented_size();
    ImageInput {
        width,
        height,
        bytes: without_metadata(bytes, header),
        format: header.format,
        decoded: None,
    }
}

/// [`decode`] of an image [`inspect`] already passed.
pub fn decode_with(bytes: Bytes, header: &Header, limits: &Limits) -> Result<ImageInput, ApiError> {
    let undecodable = |e: image::ImageError| {
        ApiError::new(
            ErrorCode::ImageUndecodable,
            format!("the image could not be decoded: {e}"),
        )
    };
    let decoder = livegate_intake::header::reader(&bytes, header.format, &header_caps(limits))
        .into_decoder()
        .map_err(undecodable)?;
    let img = image::DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    let mut img = match img {
        rgb @ image::DynamicImage::ImageRgb8(_) => rgb,
        other => image::DynamicImage::ImageRgb8(other.to_rgb8()),
    };
    img.apply_orientation(header.orientation);
    Ok(ImageInput {
        width: img.width(),
        height: img.height(),
        bytes: without_metadata(bytes, header),
        format: header.format,
        decoded: Some(Arc::new(img)),
    })
}
