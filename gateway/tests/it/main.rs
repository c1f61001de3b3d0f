//! HTTP-level tests: requests in, rows in the database and HTTP out.

mod cli;
mod collections_sim;
mod credits;
mod demo;
mod duplicates;
mod engine_server;
mod equivalence;
mod face_matching;
mod faults;
pub mod harness;
mod hostile;
mod layout;
mod liveness;
mod log_secrets;
mod metrics;
mod models_fetch;
mod multi_instance;
mod openapi_drift;
mod pgvector;
mod policy;
mod providers;
mod read_api;
mod reload;
mod routing;
mod served;
mod simulate_cli;
mod traces;
