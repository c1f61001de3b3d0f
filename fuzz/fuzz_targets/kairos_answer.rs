//! Any status and body as Kairos' answer, for any threshold and image size: never a panic, and
//! a verdict read from it is sane.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let (status, body) = common::status_and_body(data);
    let threshold = f64::from(data.first().copied().unwrap_or(128)) / 255.0;
    let submitted = (640, 480);
    if let Ok(answer) = livegate_providers::fuzzing::kairos(status, &body, threshold, submitted) {
        common::sane(&answer);
    }
});
