//! livegate: one endpoint for passive face-liveness checks, routed per tenant to Didit,
//! Kairos, a collections engine or the built-in engine, with one normalized verdict.

pub mod api;
pub mod app;
pub mod config;
pub mod credits;
pub mod demo;
pub mod embedded;
pub mod group_commit;
pub mod idempotency;
pub mod identity;
pub mod intake;
pub mod keys;
pub mod metrics;
pub mod models;
pub mod openapi;
pub mod policy;
pub mod problem;
pub mod ratelimit;
pub mod reload;
pub mod resilience;
pub mod routing;
pub mod runtime;
pub mod server_timing;
pub mod store;
pub mod telemetry;
pub mod verify;
