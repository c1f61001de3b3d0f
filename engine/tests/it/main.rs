//! Integration tests of the engine against the real models in `../shared/models`
//! (override with `LIVEGATE_MODELS_DIR`). One test binary: one link of tract.

mod common;
mod golden;
mod identity;
mod models;
mod synthetic;
mod threads;
