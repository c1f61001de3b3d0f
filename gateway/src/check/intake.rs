//! Taking the image: multipart or JSON, size cap enforced while reading, format by magic
//! number, structure and size caps checked from the header before decoding, and a full decode
//! to 8-bit RGB with EXIF orientation applied.

use std::io::Cursor;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use image::ImageDecoder;
use sha2::{Digest, Sha256};

use livegate_providers::image_structure::{self, Broken};
use livegate_providers::{ImageFormat, ImageInput};

use crate::config::{Limits, Tenant};
use crate::error::{ApiError, ErrorCode};
use crate::store::VerificationRecord;

/// Multipart field names accepted for the image.
pub const IMAGE_FIELDS: [&str; 3] = ["image", "user_image", "selfie"];
/// Longest `external_id` accepted.
pub const MAX_EXTERNAL_ID: usize = 256;
/// Largest `metadata` object accepted, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What the caller sent, before the image is checked.
#[derive(Debug, Default)]
pub struct Submission {
    pub image: Option<Bytes>,
    pub threshold: Option<f64>,
    pub external_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub provider: Option<String>,
}

fn too_large(limits: &Limits) -> ApiError {
    ApiError::new(
        ErrorCode::ImageTooLarge,
        format!(
            "the image exceeds the limit of {} bytes",
            limits.max_image_bytes
        ),
    )
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
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "multipart/form-data" => read_multipart(ct, body, limits).await,
        "application/json" => read_json(body, limits).await,
        _ => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "send multipart/form-data with an `image` file, or application/json with `image_base64`",
        )),
    }
}

async fn read_multipart(ct: &str, body: Body, limits: &Limits) -> Result<Submission, ApiError> {
    let boundary = multer::parse_boundary(ct).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidMultipart,
            "multipart body without a boundary",
        )
    })?;
    // Text fields are small; the whole stream may hold the image plus some form overhead.
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream((limits.max_image_bytes + 256 * 1024) as u64)
            .per_field((limits.max_image_bytes + 1) as u64),
    );
    let mut mp =
        multer::Multipart::with_constraints(body.into_data_stream(), boundary, constraints);
    let mut sub = Submission::default();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, limits)),
        };
        let name = field.name().unwrap_or("").to_owned();
        if IMAGE_FIELDS.contains(&name.as_str()) {
            if sub.image.is_some() {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "send exactly one image",
                ));
            }
            let mut field = field;
            let mut buf = BytesMut::new();
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if buf.len() + chunk.len() > limits.max_image_bytes {
                            return Err(too_large(limits));
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(multipart_error(e, limits)),
                }
            }
            sub.image = Some(buf.freeze());
            continue;
        }
        // Raw bytes, not `text()`: that decoder drops a leading byte-order mark, which would
        // slip a hidden character past the checks below.
        let text = match field.bytes().await {
            Ok(b) => String::from_utf8(b.to_vec()).map_err(|_| {
                ApiError::new(
                    ErrorCode::InvalidMultipart,
                    format!("form field `{name}` is not UTF-8 text"),
                )
            })?,
            Err(e) => return Err(multipart_error(e, limits)),
        };
        match name.as_str() {
            "threshold" => sub.threshold = Some(parse_threshold(text.trim())?),
            "external_id" => sub.external_id = Some(check_external_id(text)?),
            "metadata" => {
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                    ApiError::new(ErrorCode::InvalidMetadata, "metadata must be a JSON object")
                })?;
                sub.metadata = Some(check_metadata(v)?);
            }
            "provider" => sub.provider = Some(text.trim().to_owned()),
            _ => {} // Unknown form fields are ignored, as HTML forms add their own.
        }
    }
    Ok(sub)
}

fn multipart_error(e: multer::Error, limits: &Limits) -> ApiError {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            too_large(limits)
        }
        multer::Error::StreamReadFailed(inner) => ApiError::body_read(&*inner),
        other => ApiError::new(
            ErrorCode::InvalidMultipart,
            format!("malformed multipart body: {other}"),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSubmission {
    image_base64: Option<String>,
    threshold: Option<f64>,
    external_id: Option<String>,
    metadata: Option<serde_json::Value>,
    provider: Option<String>,
}

async fn read_json(body: Body, limits: &Limits) -> Result<Submission, ApiError> {
    // Base64 grows data by 4/3; allow that plus room for the other fields.
    let cap = limits.max_image_bytes / 3 * 4 + 8 + 64 * 1024;
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::body_read(&e))?;
        if buf.len() + chunk.len() > cap {
            return Err(too_large(limits));
        }
        buf.extend_from_slice(&chunk);
    }
    let j: JsonSubmission = serde_json::from_slice(&buf)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("invalid JSON body: {e}")))?;
    let image = match j.image_base64 {
        None => None,
        Some(s) => {
            // Accept data URLs as browsers produce them.
            let data = match s.split_once(";base64,") {
                Some((prefix, rest)) if prefix.starts_with("data:") => rest,
                _ => s.as_str(),
            };
            let cleaned: String = data.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(cleaned.as_bytes())
                .or_else(|_| {
                    base64::engine::general_purpose::STANDARD_NO_PAD.decode(cleaned.as_bytes())
                })
                .map_err(|_| {
                    ApiError::new(ErrorCode::InvalidBase64, "image_base64 is not valid base64")
                })?;
            if bytes.len() > limits.max_image_bytes {
                return Err(too_large(limits));
            }
            Some(Bytes::from(bytes))
        }
    };
    let threshold = match j.threshold {
        Some(t) => Some(check_threshold(t)?),
        None => None,
    };
    Ok(Submission {
        image,
        threshold,
        external_id: j.external_id.map(check_external_id).transpose()?,
        metadata: j.metadata.map(check_metadata).transpose()?,
        provider: j.provider,
    })
}

fn parse_threshold(s: &str) -> Result<f64, ApiError> {
    let t: f64 = s.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidThreshold,
            "threshold must be a number between 0 and 1",
        )
    })?;
    check_threshold(t)
}

fn check_threshold(t: f64) -> Result<f64, ApiError> {
    if t.is_finite() && (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidThreshold,
            "threshold must be a number between 0 and 1",
        ))
    }
}

/// Unicode format characters (category Cf): bidi controls, zero-width characters and the
/// like. An id holding them displays as another id in a dashboard or a SQL result.
pub fn is_format_char(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
}

fn check_external_id(s: String) -> Result<String, ApiError> {
    if s.is_empty()
        || s.len() > MAX_EXTERNAL_ID
        || s.chars().any(|c| c.is_control() || is_format_char(c))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidExternalId,
            format!(
                "external_id must be 1-{MAX_EXTERNAL_ID} characters without control or format \
                 (bidi, zero-width) characters"
            ),
        ));
    }
    Ok(s)
}

/// Some key, at any depth, holds a control or format character.
fn has_hidden_key(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.iter().any(|(k, v)| {
            k.chars().any(|c| c.is_control() || is_format_char(c)) || has_hidden_key(v)
        }),
        serde_json::Value::Array(a) => a.iter().any(has_hidden_key),
        _ => false,
    }
}

fn check_metadata(v: serde_json::Value) -> Result<serde_json::Value, ApiError> {
    if !v.is_object() {
        return Err(ApiError::new(
            ErrorCode::InvalidMetadata,
            "metadata must be a JSON object",
        ));
    }
    if has_hidden_key(&v) {
        return Err(ApiError::new(
            ErrorCode::InvalidMetadata,
            "metadata keys must not hold control or format (bidi, zero-width) characters",
        ));
    }
    if v.to_string().len() > MAX_METADATA_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidMetadata,
            format!("metadata must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(v)
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
    let facts = facts(&image);
    rec.image_sha256 = Some(facts.sha256);
    rec.image_format = facts.format.map(|f| f.extension().to_owned());
    Ok(Admitted { sub, image })
}

/// Facts about the image known before decoding, kept for the verification row.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    pub sha256: String,
    pub format: Option<ImageFormat>,
}

pub fn facts(bytes: &[u8]) -> ImageFacts {
    ImageFacts {
        sha256: hex::encode(Sha256::digest(bytes)),
        format: ImageFormat::sniff(bytes),
    }
}

/// What the image's header says, read without decoding a pixel.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub format: ImageFormat,
    /// As stored, before the EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// What a full decode allocates: width × height × channels × bytes per channel.
    pub decoded_bytes: u64,
    pub orientation: image::metadata::Orientation,
}

fn undecodable(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        ErrorCode::ImageUndecodable,
        format!("the image could not be decoded: {e}"),
    )
}

fn reader<'a>(
    bytes: &'a [u8],
    format: ImageFormat,
    limits: &Limits,
) -> image::ImageReader<Cursor<&'a [u8]>> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format.codec());
    let mut img_limits = image::Limits::default();
    // The decoder's own allocations are bounded too, not only the sizes checked from the header.
    img_limits.max_alloc = Some(limits.max_decoded_bytes.saturating_add(1 << 20));
    reader.limits(img_limits);
    reader
}

/// Format by magic number, the structure whole through its end marker, and the header's
/// dimensions within the pixel and decoded-size caps: everything that can be known without
/// decoding, so a bomb or a truncated upload is refused before any pixel is allocated.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Header, ApiError> {
    let Some(format) = ImageFormat::sniff(bytes) else {
        return Err(ApiError::new(
            ErrorCode::UnsupportedImageFormat,
            "the image must be JPEG, PNG, WebP or TIFF",
        ));
    };
    image_structure::check(format, bytes).map_err(|e| match e {
        Broken::Truncated => ApiError::new(ErrorCode::ImageTruncated, e.to_string()),
        Broken::Corrupt(_) => undecodable(e),
    })?;
    let mut decoder = reader(bytes, format, limits)
        .into_decoder()
        .map_err(undecodable)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err(ApiError::new(
            ErrorCode::ImageUndecodable,
            "the image has no pixels",
        ));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > limits.max_pixels {
        return Err(ApiError::new(
            ErrorCode::ImageTooManyPixels,
            format!(
                "the image is {w}x{h}; at most {} pixels are accepted",
                limits.max_pixels
            ),
        ));
    }
    let decoded_bytes = pixels.saturating_mul(u64::from(decoder.color_type().bytes_per_pixel()));
    if decoded_bytes > limits.max_decoded_bytes {
        return Err(ApiError::new(
            ErrorCode::ImageTooLargeDecoded,
            format!(
                "the image is {w}x{h} {:?}: {decoded_bytes} bytes decoded; at most {} are accepted",
                decoder.color_type(),
                limits.max_decoded_bytes
            ),
        ));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    Ok(Header {
        format,
        width: w,
        height: h,
        decoded_bytes,
        orientation,
    })
}

/// The memory a decode of this image holds: its native pixels, or the 8-bit RGB copy.
pub fn decode_cost(h: &Header) -> u64 {
    h.decoded_bytes
        .max(u64::from(h.width) * u64::from(h.height) * 3)
}

/// Check and decode to 8-bit RGB, EXIF orientation applied. CPU-heavy: call from a blocking
/// thread.
pub fn decode(bytes: Bytes, limits: &Limits) -> Result<ImageInput, ApiError> {
    let header = inspect(&bytes, limits)?;
    decode_with(bytes, &header, limits)
}

/// [`decode`] of an image [`inspect`] already passed.
pub fn decode_with(bytes: Bytes, header: &Header, limits: &Limits) -> Result<ImageInput, ApiError> {
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let decoder = reader(&bytes, header.format, limits)
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
        bytes,
        format: header.format,
        sha256,
        decoded: Arc::new(img),
    })
}
