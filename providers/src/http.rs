//! HTTP plumbing shared by the HTTP adapters.

use std::time::Duration;

use futures::StreamExt;

use crate::{ErrorKind, ProviderError};

/// Largest upstream body livegate reads; anything bigger is not a liveness answer.
const MAX_BODY: usize = 1 << 20;

pub struct HttpSettings {
    pub timeout: Duration,
}

pub fn client(s: &HttpSettings) -> Result<reqwest::Client, ProviderError> {
    reqwest::Client::builder()
        .timeout(s.timeout)
        .connect_timeout(s.timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("livegate/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProviderError::new(ErrorKind::Unreachable, format!("http client: {e}")))
}

/// Read at most `MAX_BODY` bytes, lossily as UTF-8 (bodies are stored as text).
pub async fn read_body(resp: reqwest::Response) -> Result<String, ProviderError> {
    let status = resp.status().as_u16();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ProviderError::from_transport(&e))?;
        if buf.len() + chunk.len() > MAX_BODY {
            return Err(
                ProviderError::new(ErrorKind::BadResponse, "upstream body too large")
                    .with_response(status, String::from_utf8_lossy(&buf).into_owned()),
            );
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// `Retry-After` in seconds (the HTTP-date form is rare upstream and ignored).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}
