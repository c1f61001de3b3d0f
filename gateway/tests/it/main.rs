//! HTTP-level tests: requests in, rows in the database and HTTP out.

mod cli;
mod demo;
mod duplicates;
mod engine_server;
mod equivalence;
mod face_matching;
pub mod harness;
mod liveness;
mod models_fetch;
mod openapi_drift;
mod providers;
mod read_api;
mod reload;
mod routing;
mod simulate_cli;
