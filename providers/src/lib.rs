//! The `Provider` trait, livegate's normalized model of one upstream answer, and one adapter
//! per upstream. Adapters keep their vendor's wire types private: everything that leaves this
//! crate is the normalized model.

mod error;
mod image_input;
mod model;
mod secret;
mod settings;
#[cfg(test)]
mod test_upstream;

pub mod collections;
pub mod didit;
pub mod embedded;
mod http;
pub mod kairos;

pub use error::{ErrorKind, ProviderError};
pub use http::HttpClient;
pub use image_input::{Capabilities, ImageError, ImageFormat, ImageInput, adapt_image};
pub use model::{
    Face, ProviderAnswer, RawExchange, SpoofType, UpstreamDecision, Warning, WarningCode,
};
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

/// One upstream liveness service, behind a uniform, normalized interface.
#[async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// The provider's name in the config (`providers.<name>`).
    fn name(&self) -> &str;
    /// The adapter kind (`didit`, `kairos`, `collections`, `embedded`).
    fn kind(&self) -> &'static str;
    /// What the upstream accepts; the gateway adapts images to it before calling `check`.
    fn capabilities(&self) -> &Capabilities;
    /// One call to the upstream. Never retries: retry policy belongs to the gateway.
    async fn check(&self, req: &CheckRequest) -> Result<ProviderAnswer, ProviderError>;
}
