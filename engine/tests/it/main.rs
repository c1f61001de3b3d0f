//! Integration tests of the engine against the real models (`LIVEGATE_MODELS_DIR`, else the
//! project's copy beside the checkout). One test binary: one link of tract.

mod common;
mod golden;
mod identity;
mod models;
mod synthetic;
mod threads;
