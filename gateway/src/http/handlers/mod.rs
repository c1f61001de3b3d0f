//! HTTP handlers, one module per resource.

pub mod admin;
pub mod blocklist;
pub mod erasure;
pub mod health;
pub mod liveness;
pub mod metrics;
pub mod paging;
pub mod reports;
pub mod reviews;
pub mod tenant;
pub mod verifications;
pub mod webhooks;
