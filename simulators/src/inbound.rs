//! What a simulator learns from one request on its vendor endpoint: headers, form fields,
//! uploaded files (hashed, never logged) and the facts about the image the answers derive from.

use std::collections::BTreeMap;
use std::io::Cursor;

use axum::extract::Multipart;
use axum::extract::multipart::{MultipartError, MultipartRejection};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The body size the simulators read at all: far above every vendor's own cap, so that each
/// simulator can answer an oversized image with its vendor's error rather than the transport's.
pub(crate) const TRANSPORT_LIMIT: usize = 64 * 1024 * 1024;

/// Why the form could not be read in full. Each vendor turns it into its own error.
#[derive(Debug, Clone)]
pub(crate) enum FormError {
    /// The body is not `multipart/form-data` (or has no boundary); carries the content type.
    NotMultipart(String),
    /// The multipart stream broke off or is malformed.
    Malformed(String),
    /// Over the transport limit (far above every vendor's own cap).
    TooLarge,
}

/// One uploaded file part.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub bytes: Bytes,
    pub seed: Seed,
    pub sha256_hex: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// A request as received, read completely before any rule or validation looks at it.
#[derive(Debug)]
pub(crate) struct Inbound {
    pub received_at: DateTime<Utc>,
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    pub fields: BTreeMap<String, String>,
    pub files: BTreeMap<String, Upload>,
    /// Every file part in the order sent, repeats included (`files` keeps the last of each
    /// name): batch enrollment sends `images` once per image.
    pub uploads: Vec<(String, Upload)>,
    pub form_error: Option<FormError>,
    image_field: &'static str,
    /// Other fields read as files even without a filename.
    file_fields: &'static [&'static str],
}

impl Inbound {
    /// Reads the whole form. `image_field` is the vendor's image part: it is kept as a file even
    /// when the client forgot the filename, so rules can still match on its hash.
    pub(crate) async fn read(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        form: Result<Multipart, MultipartRejection>,
        image_field: &'static str,
    ) -> Self {
        Self::read_with_files(method, uri, headers, form, image_field, &[]).await
    }

    /// [`Inbound::read`] for routes with several image parts (`image_a` and `image_b`,
    /// repeated `images`): each of `file_fields` is kept as a file like `image_field`.
    pub(crate) async fn read_with_files(
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
        form: Result<Multipart, MultipartRejection>,
        image_field: &'static str,
        file_fields: &'static [&'static str],
    ) -> Self {
        let mut inbound = Inbound {
            received_at: Utc::now(),
            method: method.as_str().to_owned(),
            path: uri.path().to_owned(),
            headers: flatten_headers(headers),
            fields: BTreeMap::new(),
            files: BTreeMap::new(),
            uploads: Vec::new(),
            form_error: None,
            image_field,
            file_fields,
        };
        match form {
            Ok(multipart) => inbound.read_parts(multipart).await,
            Err(_) => {
                let content_type = headers
                    .get(header::CONTENT_TYPE)
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .unwrap_or_default();
                inbound.form_error = Some(FormError::NotMultipart(content_type));
            }
        }
        inbound
    }

    async fn read_parts(&mut self, mut multipart: Multipart) {
        loop {
            let field = match multipart.next_field().await {
                Ok(Some(field)) => field,
                Ok(None) => return,
                Err(error) => {
                    self.form_error = Some(form_error(&error));
                    return;
                }
            };
            let name = field.name().unwrap_or_default().to_owned();
            let filename = field.file_name().map(str::to_owned);
            let content_type = field.content_type().map(str::to_owned);
            let bytes = match field.bytes().await {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.form_error = Some(form_error(&error));
                    return;
                }
            };
            // Repeated names: the last one wins, as with Django's `QueryDict.get`.
            if filename.is_some()
                || name == self.image_field
                || self.file_fields.contains(&name.as_str())
            {
                let seed = Seed(Sha256::digest(&bytes).into());
                let upload = Upload {
                    sha256_hex: hex::encode(seed.0),
                    seed,
                    bytes,
                    content_type,
                    filename,
                };
                self.uploads.push((name.clone(), upload.clone()));
                self.files.insert(name, upload);
            } else {
                self.fields
                    .insert(name, String::from_utf8_lossy(&bytes).into_owned());
            }
        }
    }

    pub(crate) fn image(&self) -> Option<&Upload> {
        self.files.get(self.image_field)
    }

    /// The file part named `name` (the last one when it repeats).
    pub(crate) fn file(&self, name: &str) -> Option<&Upload> {
        self.files.get(name)
    }

    /// A header's value; repeated headers come joined with `", "`.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }

    /// A header that is present and not blank.
    pub(crate) fn credential(&self, name: &str) -> Option<&str> {
        self.header(name).map(str::trim).filter(|v| !v.is_empty())
    }

    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    /// The `/_sim/requests` entry: everything but the file bytes.
    pub(crate) fn log_entry(&self) -> Value {
        let files: serde_json::Map<String, Value> = self
            .files
            .iter()
            .map(|(name, upload)| {
                let entry = json!({
                    "sha256": upload.sha256_hex,
                    "size": upload.bytes.len(),
                    "content_type": upload.content_type,
                    "filename": upload.filename,
                });
                (name.clone(), entry)
            })
            .collect();
        json!({
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "fields": self.fields,
            "files": files,
        })
    }
}

fn form_error(error: &MultipartError) -> FormError {
    if error.status() == StatusCode::PAYLOAD_TOO_LARGE {
        FormError::TooLarge
    } else {
        FormError::Malformed(error.body_text())
    }
}

fn flatten_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.entry(name.as_str().to_owned())
            .and_modify(|joined| {
                joined.push_str(", ");
                joined.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    out
}

/// The image's SHA-256, the source of every value a simulator makes up, so that the same
/// image always gets the same answer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seed(pub [u8; 32]);

impl Seed {
    /// Four bytes from `offset` (wrapping) as a fraction in 0..=1.
    pub(crate) fn unit(&self, offset: usize) -> f64 {
        let b = |i: usize| self.0[(offset + i) % 32];
        let word = u32::from_be_bytes([b(0), b(1), b(2), b(3)]);
        f64::from(word) / f64::from(u32::MAX)
    }

    pub(crate) fn byte(&self, index: usize) -> u8 {
        self.0[index % 32]
    }
}

/// Image container formats the vendors name, told apart by their magic numbers (never by the
/// filename or the declared content type, which clients get wrong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Jpeg,
    Png,
    WebP,
    Tiff,
}

pub(crate) fn sniff(bytes: &[u8]) -> Option<Format> {
    match bytes {
        [0xFF, 0xD8, 0xFF, ..] => Some(Format::Jpeg),
        [0x89, b'P', b'N', b'G', 0x0D, 0x0A, 0x1A, 0x0A, ..] => Some(Format::Png),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some(Format::WebP),
        [b'I', b'I', 0x2A, 0x00, ..] | [b'M', b'M', 0x00, 0x2A, ..] => Some(Format::Tiff),
        _ => None,
    }
}

/// Width and height from the header only; `None` when the header is unreadable.
pub(crate) fn dimensions(bytes: &[u8]) -> Option<(u32, u32)> {
    image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_magic_number() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some(Format::Png));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::WebP));
        assert_eq!(sniff(b"II*\0...."), Some(Format::Tiff));
        assert_eq!(sniff(b"MM\0*...."), Some(Format::Tiff));
        assert_eq!(sniff(b"GIF89a"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn seed_units_stay_in_range() {
        assert_eq!(Seed([0; 32]).unit(0), 0.0);
        assert_eq!(Seed([0xFF; 32]).unit(30), 1.0);
    }
}
