//! Integration tests: each simulator served on port 0 and driven over HTTP with reqwest.

mod collections;
mod control;
mod didit;
mod kairos;
mod support;
