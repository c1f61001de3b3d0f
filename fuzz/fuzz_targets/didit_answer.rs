//! Any status and body as Didit's answer: never a panic, and a verdict read from it is sane.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (status, body) = common::status_and_body(data);
    if let Ok(answer) = livegate_providers::fuzzing::didit(status, &body) {
        common::sane(&answer);
    }
});
