use std::time::Duration;

/// Why a provider call produced no verdict. The kind decides the problem code the tenant sees
/// and whether another attempt (or another provider) may help.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
    /// Upstream HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Upstream body, kept verbatim for the attempt row.
    pub raw_body: Option<String>,
    pub retry_after: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The upstream rejected the image or parameters (400/422): every provider would.
    BadInput,
    /// Our credentials were refused.
    AuthFailed,
    /// The vendor account is out of credits.
    OutOfCredits,
    /// A plan or usage limit was reached (Kairos' 403).
    UsageLimit,
    /// The upstream throttled us (429).
    RateLimited,
    /// The upstream failed (5xx).
    Unavailable,
    Timeout,
    /// No connection could be made.
    Unreachable,
    /// A 2xx whose body we could not understand, or an unknown status value.
    BadResponse,
    /// The image cannot be sent to this provider (format, size), even after adaptation.
    Unsupported,
    /// The provider is saturated locally (queue full, concurrency or rate cap).
    Overloaded,
    /// livegate's circuit breaker for this provider is open: it is failing, so it is skipped.
    CircuitOpen,
}

impl ErrorKind {
    /// The stable problem `code` (the README's table of error codes).
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadInput => "provider_rejected_input",
            ErrorKind::AuthFailed => "provider_auth_failed",
            ErrorKind::OutOfCredits => "provider_out_of_credits",
            ErrorKind::UsageLimit => "provider_usage_limit",
            ErrorKind::RateLimited => "provider_rate_limited",
            ErrorKind::Unavailable => "provider_unavailable",
            ErrorKind::Timeout => "provider_timeout",
            ErrorKind::Unreachable => "provider_unreachable",
            ErrorKind::BadResponse => "provider_bad_response",
            ErrorKind::Unsupported => "provider_unsupported_image",
            ErrorKind::Overloaded => "provider_overloaded",
            ErrorKind::CircuitOpen => "provider_circuit_open",
        }
    }

    /// The HTTP status livegate answers with when this is the last cause.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::BadInput | ErrorKind::Unsupported => 422,
            ErrorKind::Timeout => 504,
            ErrorKind::Unavailable
            | ErrorKind::Overloaded
            | ErrorKind::RateLimited
            | ErrorKind::CircuitOpen => 503,
            ErrorKind::AuthFailed
            | ErrorKind::OutOfCredits
            | ErrorKind::UsageLimit
            | ErrorKind::Unreachable
            | ErrorKind::BadResponse => 502,
        }
    }

    /// Whether another provider (or a later try) may succeed where this one failed.
    pub fn retryable(self) -> bool {
        !matches!(self, ErrorKind::BadInput)
    }

    /// Whether trying the same provider again soon may help (transient failures only).
    pub fn transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Timeout
                | ErrorKind::Unreachable
                | ErrorKind::Unavailable
                | ErrorKind::RateLimited
                | ErrorKind::Overloaded
                | ErrorKind::BadResponse
        )
    }

    /// Whether the failure says something about the provider's health (counts toward
    /// opening its circuit). Bad images and local back-pressure do not.
    pub fn counts_against_provider(self) -> bool {
        !matches!(
            self,
            ErrorKind::BadInput
                | ErrorKind::Unsupported
                | ErrorKind::Overloaded
                | ErrorKind::CircuitOpen
        )
    }
}

/// The longest message a provider error carries: a summary for the tenant's answer and the
/// attempt row; the vendor's whole body stays in `raw_body`.
pub const MAX_MESSAGE_CHARS: usize = 300;

fn summary(message: String) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message,
    }
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: summary(message.into()),
            status: None,
            raw_body: None,
            retry_after: None,
        }
    }

    pub fn with_response(mut self, status: u16, body: impl Into<String>) -> Self {
        self.status = Some(status);
        self.raw_body = Some(body.into());
        self
    }

    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// Classify a transport error from reqwest.
    pub fn from_transport(err: &reqwest::Error) -> Self {
        if err.is_timeout() {
            ProviderError::new(ErrorKind::Timeout, "the provider did not answer in time")
        } else if err.is_connect() {
            ProviderError::new(ErrorKind::Unreachable, "could not connect to the provider")
        } else {
            ProviderError::new(
                ErrorKind::Unreachable,
                format!("transport error: {}", without_url(err)),
            )
        }
    }
}

/// reqwest errors embed the URL; keep messages free of it so query-string secrets never leak.
fn without_url(err: &reqwest::Error) -> String {
    let mut owned = String::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(s) = source {
        owned = s.to_string();
        source = s.source();
    }
    if owned.is_empty() {
        "request failed".into()
    } else {
        owned
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;

    #[test]
    fn a_vendor_essay_becomes_a_summary() {
        let e = ProviderError::new(ErrorKind::BadInput, "é".repeat(10_000));
        assert_eq!(e.message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(e.message.ends_with('…'));
    }
}
