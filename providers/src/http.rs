//! The one HTTP exchange every HTTP adapter makes: send with the trace context, read a capped
//! body, note `Retry-After`, and read a status the way every vendor means it. An adapter keeps
//! only its form, its answer and its own exceptions to the status table.

use std::time::Duration;

use futures::StreamExt;
use reqwest::header::HeaderValue;
use reqwest::multipart::Part;

use crate::{Capabilities, ErrorKind, ImageInput, ProviderError, Secret};

/// Largest upstream body livegate reads; anything bigger is not a liveness answer.
const MAX_BODY: usize = 1 << 20;

/// However long a call may take, a connection that is not made by then will not be.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider's HTTP client, built once per provider entry by whoever builds the provider.
///
/// The gateway's client sets no deadline for a whole call: its guard bounds each call with the
/// entry's `timeout_ms`, so that one number decides when a call has taken too long. A program
/// that calls an adapter directly (the face-matching calls) gives the client its deadline.
#[derive(Debug, Clone)]
pub struct HttpClient(reqwest::Client);

impl HttpClient {
    /// A client whose calls are bounded by the caller; only connecting has its own bound.
    pub fn new() -> Result<Self, ProviderError> {
        Self::build(reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT))
    }

    /// A client that gives up on any call after `timeout`.
    pub fn with_timeout(timeout: Duration) -> Result<Self, ProviderError> {
        Self::build(
            reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout.min(CONNECT_TIMEOUT)),
        )
    }

    fn build(builder: reqwest::ClientBuilder) -> Result<Self, ProviderError> {
        builder
            // A redirect would carry the vendor's credential header to wherever it points;
            // livegate follows none, and a 3xx is a bad answer.
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("livegate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map(Self)
            .map_err(|e| ProviderError::new(ErrorKind::Unreachable, format!("http client: {e}")))
    }

    pub(crate) fn post(&self, url: impl reqwest::IntoUrl) -> reqwest::RequestBuilder {
        self.0.post(url)
    }
}

/// A vendor's endpoint, parsed once when its provider is built, as the collections adapter
/// does: parsing (IDNA included) on every call was a few percent of a forwarded selfie's CPU.
pub(crate) fn endpoint(url: &str, vendor: &str) -> Result<url::Url, ProviderError> {
    url::Url::parse(url).map_err(|e| {
        ProviderError::new(
            ErrorKind::Unreachable,
            format!("invalid {vendor} base_url: {e}"),
        )
    })
}

/// One answered request: its status, `Retry-After` and body (lossy UTF-8: bodies are stored
/// as text).
pub(crate) struct Exchange {
    pub status: u16,
    pub body: String,
    retry_after: Option<Duration>,
}

impl Exchange {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `err`, carrying this exchange's status, body and `Retry-After` for the attempt row and
    /// the retry policy.
    pub fn into_error(self, err: ProviderError) -> ProviderError {
        let mut err = err.with_response(self.status, self.body);
        err.retry_after = self.retry_after;
        err
    }

    /// An answer the adapter could not read, with the body kept for the attempt row.
    pub fn unreadable(&self, message: String) -> ProviderError {
        ProviderError::new(ErrorKind::BadResponse, message)
            .with_response(self.status, self.body.clone())
    }
}

/// Send `call` with the W3C trace context and read the whole answer.
pub(crate) async fn exchange(
    call: reqwest::RequestBuilder,
    traceparent: Option<&str>,
) -> Result<Exchange, ProviderError> {
    let call = match traceparent {
        Some(tp) => call.header("traceparent", tp),
        None => call,
    };
    let resp = call
        .send()
        .await
        .map_err(|e| ProviderError::from_transport(&e))?;
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = read_body(resp).await?;
    Ok(Exchange {
        status,
        body,
        retry_after,
    })
}

/// Read at most `MAX_BODY` bytes.
async fn read_body(resp: reqwest::Response) -> Result<String, ProviderError> {
    let status = resp.status().as_u16();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ProviderError::from_transport(&e))?;
        if buf.len().saturating_add(chunk.len()) > MAX_BODY {
            return Err(
                ProviderError::new(ErrorKind::BadResponse, "upstream body too large")
                    .with_response(status, String::from_utf8_lossy(&buf).into_owned()),
            );
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// The longest `Retry-After` taken from an upstream: anything longer says "not now" as well,
/// and passing it on as is would tell tenants to come back in a geological age.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// `Retry-After` in seconds, at most [`MAX_RETRY_AFTER`] (the HTTP-date form is rare upstream
/// and ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER))
}

/// What a status means when the vendor's own table says nothing more: the input is refused,
/// the vendor throttles or fails, or the status is not one it documents. `vendor` names it in
/// the message; `detail` is its own words, already bounded, when its error bodies have any.
pub(crate) fn classify_status(status: u16, vendor: &str, detail: Option<&str>) -> ProviderError {
    let with_detail = |what: String| match detail {
        Some(d) => format!("{what}: {d}"),
        None => what,
    };
    let (kind, message) = match status {
        400 | 413 | 415 | 422 => (
            ErrorKind::BadInput,
            with_detail(format!("{vendor} rejected the request (HTTP {status})")),
        ),
        429 => (
            ErrorKind::RateLimited,
            format!("{vendor} rate limit reached"),
        ),
        500..=599 => (
            ErrorKind::Unavailable,
            with_detail(format!("{vendor} failed with HTTP {status}")),
        ),
        300..=399 => (
            ErrorKind::BadResponse,
            format!("{vendor} answered with a redirect (HTTP {status}); livegate follows none"),
        ),
        _ => (
            ErrorKind::BadResponse,
            with_detail(format!("unexpected HTTP {status} from {vendor}")),
        ),
    };
    ProviderError::new(kind, message)
}

/// The image as a multipart file part named `{stem}.{extension}`. The part shares the image's
/// bytes (a reference count, not a copy), whatever the number of attempts and shadows.
pub(crate) fn image_part(image: &ImageInput, stem: &str) -> Result<Part, ProviderError> {
    let len = u64::try_from(image.bytes.len()).unwrap_or(u64::MAX);
    Part::stream_with_length(reqwest::Body::from(image.bytes.clone()), len)
        .file_name(format!("{stem}.{}", image.format.extension()))
        .mime_str(image.format.mime())
        .map_err(|e| ProviderError::new(ErrorKind::BadInput, e.to_string()))
}

/// The gateway adapts images before calling, so a format outside `caps` here is a caller bug,
/// not a vendor rejection: it fails before anything is sent.
pub(crate) fn require_format(
    caps: &Capabilities,
    image: &ImageInput,
    vendor: &str,
) -> Result<(), ProviderError> {
    if caps.formats.contains(&image.format) {
        return Ok(());
    }
    let names: Vec<&str> = caps
        .formats
        .iter()
        .map(|f| match f {
            crate::ImageFormat::Jpeg => "JPEG",
            crate::ImageFormat::Png => "PNG",
            crate::ImageFormat::Webp => "WebP",
            crate::ImageFormat::Tiff => "TIFF",
        })
        .collect();
    Err(ProviderError::new(
        ErrorKind::Unsupported,
        format!(
            "{vendor} takes {}, not {}; adapt the image first",
            names.join(" or "),
            image.format.extension()
        ),
    ))
}

/// A credential as a header value: checked once, so that one that cannot be a header fails at
/// startup, and marked sensitive, so that it never shows in reqwest's or hyper's debug output.
pub(crate) fn secret_header(secret: &Secret, what: &str) -> Result<HeaderValue, ProviderError> {
    let mut v = HeaderValue::from_str(secret.expose()).map_err(|_| {
        ProviderError::new(
            ErrorKind::AuthFailed,
            format!("the {what} contains characters not allowed in an HTTP header"),
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A 0-1 value as form text. Four decimals are finer than any upstream's resolution and keep
/// float noise such as `0.30000000000000004` off the wire; the trailing `.0` keeps `1` and `0`
/// visibly decimal.
pub(crate) fn unit_decimal(t: f64) -> String {
    let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
    let s = ((t * 10_000.0).round() / 10_000.0).to_string();
    if s.contains('.') { s } else { format!("{s}.0") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_bounded() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(
            reqwest::header::RETRY_AFTER,
            "18446744073709551615".parse().expect("value"),
        );
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(reqwest::header::RETRY_AFTER, " 7 ".parse().expect("value"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
    }

    #[test]
    fn unit_decimals_are_short_and_visibly_decimal() {
        assert_eq!(unit_decimal(0.6), "0.6");
        assert_eq!(unit_decimal(0.75), "0.75");
        assert_eq!(unit_decimal(0.1 + 0.2), "0.3");
        assert_eq!(unit_decimal(0.12345), "0.1235");
        assert_eq!(unit_decimal(1.0), "1.0");
        assert_eq!(unit_decimal(0.0), "0.0");
        assert_eq!(unit_decimal(2.0), "1.0");
        assert_eq!(unit_decimal(7.0), "1.0");
        assert_eq!(unit_decimal(-1.0), "0.0");
        assert_eq!(unit_decimal(f64::NAN), "0.0");
    }
}
