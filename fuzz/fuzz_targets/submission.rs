//! A request body as a client may send it, multipart or JSON, in chunks of any size: never a
//! panic, and whatever is accepted is within the caps.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate_intake::{MAX_EXTERNAL_ID, SubmissionCaps, is_format_char, read_submission};

const CAPS: SubmissionCaps = SubmissionCaps {
    max_image_bytes: 64 * 1024,
    body_bytes_hint: None,
};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the content type and the chunk size the body arrives in.
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let content_type = match mode % 3 {
        0 => "application/json",
        1 => "multipart/form-data; boundary=XyZ",
        _ => "multipart/form-data; boundary=\"q u o t e d\"",
    };
    let chunk = usize::from(mode / 3).max(1);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(chunk)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let read = futures::executor::block_on(read_submission(
        content_type,
        futures::stream::iter(chunks),
        &CAPS,
    ));
    if let Ok(sub) = read {
        if let Some(image) = &sub.image {
            assert!(image.len() <= CAPS.max_image_bytes);
        }
        if let Some(t) = sub.threshold {
            assert!((0.0..=1.0).contains(&t));
        }
        if let Some(id) = &sub.external_id {
            assert!(!id.is_empty() && id.len() <= MAX_EXTERNAL_ID);
            assert!(!id.chars().any(|c| c.is_control() || is_format_char(c)));
        }
        if let Some(m) = &sub.metadata {
            assert!(m.is_object());
        }
    }
});
