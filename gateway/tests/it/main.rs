//! HTTP-level tests: requests in, rows in the database and HTTP out.

mod cli;
mod demo;
pub mod harness;
mod liveness;
mod models_fetch;
mod openapi_drift;
mod read_api;
