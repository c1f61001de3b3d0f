//! livegate: one endpoint for passive face-liveness checks, routed per tenant to Didit,
//! Kairos, a collections engine or the built-in engine, with one normalized verdict.
//!
//! The modules follow a request (see `docs/architecture.md`): [`cli`] starts the server,
//! [`http`] is the edge, [`check`] runs one verification stage by stage on the [`runtime`]
//! built from the [`config`], and [`store`] keeps every result; [`report`] reads it back for
//! operators. [`telemetry`] and [`error`]
//! serve all of them.

pub mod check;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod report;
pub mod runtime;
pub mod store;
pub mod telemetry;
