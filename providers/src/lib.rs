//! The `Provider` trait, livegate's normalized model of one upstream answer, and one adapter
//! per upstream. Adapters keep their vendor's wire types private: everything that leaves this
//! crate is the normalized model.

mod error;
mod image_input;
mod model;
mod redact;
mod secret;
mod settings;
#[cfg(test)]
mod test_upstream;

pub mod collections;
pub mod didit;
#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod http;
pub mod kairos;

pub use error::{ErrorKind, ProviderError};
pub use http::HttpClient;
pub use image_input::{Capabilities, ImageError, ImageFormat, ImageInput, adapt_image};
pub use model::{
    Face, ProviderAnswer, RawExchange, SpoofType, UpstreamDecision, Warning, WarningCode,
};
pub use redact::redact;
pub use secret::Secret;
pub use settings::SettingProblem;

use async_trait::async_trait;

/// What the gateway asks of a provider: one image, the tenant's threshold (0-1) and request
/// context that upstreams may echo.
#[derive(Debug, Clone)]
pub struct CheckRequest {
    pub image: ImageInput,
    /// The tenant's threshold on livegate's 0-1 scale; each adapter converts it to its own unit.
    pub threshold: f64,
    /// livegate's request id, sent where the upstream has a field for caller data.
    pub request_id: String,
    /// W3C trace context to propagate to the upstream.
    pub traceparent: Option<String>,
}

/// Who a provider is: its name in the config, its adapter kind and what its upstream accepts.
#[derive(Debug, Clone)]
pub struct Profile {
    /// The provider's name in the config (`providers.<name>`).
    pub name: String,
    /// The adapter kind (`didit`, `kairos`, `collections`, `embedded`).
    pub kind: &'static str,
    /// What the upstream accepts; the gateway adapts images to it before calling `check`.
    pub capabilities: Capabilities,
}

/// One upstream liveness service, behind a uniform, normalized interface.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    fn profile(&self) -> &Profile;
    fn name(&self) -> &str {
        &self.profile().name
    }
    fn kind(&self) -> &'static str {
        self.profile().kind
    }
    fn capabilities(&self) -> &Capabilities {
        &self.profile().capabilities
    }
    /// One call to the upstream. Never retries: retry policy belongs to the gateway.
    async fn check(&self, req: &CheckRequest) -> Result<ProviderAnswer, ProviderError>;
}
