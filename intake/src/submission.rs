//! Reading what the caller sent: `multipart/form-data` with an image field, or JSON with
//! `image_base64`, and the text fields beside it. Nothing larger than the caps is buffered;
//! every field is checked before anything else runs.

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::refusal::{BodyError, Code, Refused};

/// The caps a submission is read under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubmissionCaps {
    /// Largest image accepted, in bytes as sent (decoded from base64 for JSON).
    pub max_image_bytes: usize,
    /// The body's declared length (`Content-Length`), if any: the image buffer is sized from
    /// it once instead of growing by doubling. Only a hint, never more than the caps allow.
    pub body_bytes_hint: Option<usize>,
}

impl SubmissionCaps {
    /// What to reserve up front for a buffer capped at `cap`: the declared length, but never
    /// more than 4 MiB on the word of a client that has sent nothing yet.
    fn reserve(&self, cap: usize) -> usize {
        self.body_bytes_hint.unwrap_or(0).min(cap).min(4 << 20)
    }
}

/// Multipart field names accepted for the image.
pub const IMAGE_FIELDS: [&str; 3] = ["image", "user_image", "selfie"];
/// Longest `external_id` accepted.
pub const MAX_EXTERNAL_ID: usize = 256;
/// Largest `metadata` object accepted, serialized.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

/// What the caller sent, before the image is checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Submission {
    pub image: Option<Bytes>,
    pub threshold: Option<f64>,
    pub external_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub provider: Option<String>,
}

fn too_large(caps: &SubmissionCaps) -> Refused {
    Refused::new(
        Code::ImageTooLarge,
        format!(
            "the image exceeds the limit of {} bytes",
            caps.max_image_bytes
        ),
    )
}

/// Read the request body, of type `content_type`, into a [`Submission`].
pub async fn read_submission<S, E>(
    content_type: &str,
    body: S,
    caps: &SubmissionCaps,
) -> Result<Submission, Refused>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BodyError> + 'static,
{
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "multipart/form-data" => read_multipart(content_type, body, caps).await,
        "application/json" => read_json(body, caps).await,
        _ => Err(Refused::new(
            Code::UnsupportedMediaType,
            "send multipart/form-data with an `image` file, or application/json with `image_base64`",
        )),
    }
}

async fn read_multipart<S, E>(
    ct: &str,
    body: S,
    caps: &SubmissionCaps,
) -> Result<Submission, Refused>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BodyError> + 'static,
{
    let boundary = multer::parse_boundary(ct)
        .map_err(|_| Refused::new(Code::InvalidMultipart, "multipart body without a boundary"))?;
    // Text fields are small; the whole stream may hold the image plus some form overhead.
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(caps.max_image_bytes.saturating_add(256 * 1024) as u64)
            .per_field(caps.max_image_bytes.saturating_add(1) as u64),
    );
    let mut mp = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut sub = Submission::default();
    loop {
        let mut field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(e, caps)),
        };
        let name = field.name().unwrap_or("").to_owned();
        if IMAGE_FIELDS.contains(&name.as_str()) {
            if sub.image.is_some() {
                return Err(Refused::new(Code::InvalidRequest, "send exactly one image"));
            }
            let mut buf = BytesMut::with_capacity(caps.reserve(caps.max_image_bytes));
            loop {
                match field.chunk().await {
                    Ok(Some(chunk)) => {
                        if buf.len().saturating_add(chunk.len()) > caps.max_image_bytes {
                            return Err(too_large(caps));
                        }
                        buf.extend_from_slice(&chunk);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(multipart_error(e, caps)),
                }
            }
            sub.image = Some(buf.freeze());
            continue;
        }
        // Raw bytes, not `text()`: that decoder drops a leading byte-order mark, which would
        // slip a hidden character past the checks below.
        let text = match field.bytes().await {
            Ok(b) => String::from_utf8(b.to_vec()).map_err(|_| {
                Refused::new(
                    Code::InvalidMultipart,
                    format!("form field `{}` is not UTF-8 text", excerpt(&name)),
                )
            })?,
            Err(e) => return Err(multipart_error(e, caps)),
        };
        match name.as_str() {
            "threshold" => sub.threshold = Some(parse_threshold(text.trim())?),
            "external_id" => sub.external_id = Some(check_external_id(text)?),
            "metadata" => {
                let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
                    Refused::new(Code::InvalidMetadata, "metadata must be a JSON object")
                })?;
                sub.metadata = Some(check_metadata(v)?);
            }
            "provider" => sub.provider = Some(text.trim().to_owned()),
            _ => {} // Unknown form fields are ignored, as HTML forms add their own.
        }
    }
    Ok(sub)
}

/// At most 64 characters of something the caller sent, for a detail.
fn excerpt(s: &str) -> String {
    excerpt_of(s, 64)
}

fn excerpt_of(s: &str, chars: usize) -> String {
    match s.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

fn multipart_error(e: multer::Error, caps: &SubmissionCaps) -> Refused {
    match e {
        multer::Error::FieldSizeExceeded { .. } | multer::Error::StreamSizeExceeded { .. } => {
            too_large(caps)
        }
        multer::Error::StreamReadFailed(inner) => Refused::Body(inner),
        other => Refused::new(
            Code::InvalidMultipart,
            format!("malformed multipart body: {}", excerpt(&other.to_string())),
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

async fn read_json<S, E>(mut body: S, caps: &SubmissionCaps) -> Result<Submission, Refused>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BodyError>,
{
    // Base64 grows data by 4/3; allow that plus room for the other fields.
    let cap = (caps.max_image_bytes / 3)
        .saturating_mul(4)
        .saturating_add(8 + 64 * 1024);
    let mut buf = BytesMut::with_capacity(caps.reserve(cap));
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Refused::Body(e.into()))?;
        if buf.len().saturating_add(chunk.len()) > cap {
            return Err(too_large(caps));
        }
        buf.extend_from_slice(&chunk);
    }
    parse_json(&buf, caps)
}

/// A whole JSON body into a [`Submission`].
pub fn parse_json(buf: &[u8], caps: &SubmissionCaps) -> Result<Submission, Refused> {
    let j: JsonSubmission = serde_json::from_slice(buf).map_err(|e| {
        // serde's message quotes the offending value: only an excerpt of it is echoed.
        Refused::new(
            Code::InvalidJson,
            format!("invalid JSON body: {}", excerpt_of(&e.to_string(), 200)),
        )
    })?;
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
                    Refused::new(Code::InvalidBase64, "image_base64 is not valid base64")
                })?;
            if bytes.len() > caps.max_image_bytes {
                return Err(too_large(caps));
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

fn parse_threshold(s: &str) -> Result<f64, Refused> {
    let t: f64 = s.parse().map_err(|_| {
        Refused::new(
            Code::InvalidThreshold,
            "threshold must be a number between 0 and 1",
        )
    })?;
    check_threshold(t)
}

fn check_threshold(t: f64) -> Result<f64, Refused> {
    if t.is_finite() && (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(Refused::new(
            Code::InvalidThreshold,
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

fn check_external_id(s: String) -> Result<String, Refused> {
    if s.is_empty()
        || s.len() > MAX_EXTERNAL_ID
        || s.chars().any(|c| c.is_control() || is_format_char(c))
    {
        return Err(Refused::new(
            Code::InvalidExternalId,
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

fn check_metadata(v: serde_json::Value) -> Result<serde_json::Value, Refused> {
    if !v.is_object() {
        return Err(Refused::new(
            Code::InvalidMetadata,
            "metadata must be a JSON object",
        ));
    }
    if has_hidden_key(&v) {
        return Err(Refused::new(
            Code::InvalidMetadata,
            "metadata keys must not hold control or format (bidi, zero-width) characters",
        ));
    }
    if v.to_string().len() > MAX_METADATA_BYTES {
        return Err(Refused::new(
            Code::InvalidMetadata,
            format!("metadata must be at most {MAX_METADATA_BYTES} bytes"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: SubmissionCaps = SubmissionCaps {
        max_image_bytes: 1024,
        body_bytes_hint: None,
    };

    fn read(content_type: &str, body: &[u8]) -> Result<Submission, Refused> {
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::executor::block_on(read_submission(
            content_type,
            futures::stream::iter(chunks),
            &CAPS,
        ))
    }

    fn code(r: Result<Submission, Refused>) -> Code {
        match r {
            Err(Refused::Input { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_quoted_value_comes_back_as_an_excerpt() {
        let body = format!(r#"{{"threshold": "{}"}}"#, "x".repeat(60_000));
        match read("application/json", body.as_bytes()) {
            Err(Refused::Input { code, detail }) => {
                assert_eq!(code, Code::InvalidJson);
                assert!(detail.chars().count() < 260, "{} characters", detail.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_byte_order_mark_in_a_form_field_is_seen() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"external_id\"\r\n\r\n\u{feff}id\r\n--b--\r\n";
        assert_eq!(
            code(read("multipart/form-data; boundary=b", body.as_bytes())),
            Code::InvalidExternalId
        );
    }

    #[test]
    fn fields_are_read_across_chunks_within_the_caps() {
        let body = "--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"s.jpg\"\r\n\r\n\
                    JPEGDATA\r\n--b\r\nContent-Disposition: form-data; name=\"threshold\"\r\n\r\n0.7\r\n--b--\r\n";
        let sub = read("multipart/form-data; boundary=b", body.as_bytes()).expect("read");
        assert_eq!(sub.image.as_deref(), Some(&b"JPEGDATA"[..]));
        assert_eq!(sub.threshold, Some(0.7));
        let big = format!(r#"{{"image_base64": "{}"}}"#, "QUJD".repeat(400));
        assert_eq!(
            code(read("application/json", big.as_bytes())),
            Code::ImageTooLarge
        );
    }
}
