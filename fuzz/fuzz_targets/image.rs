//! Any bytes as an image: the format sniff, the structure walk and the header read never
//! panic; what passes is within the caps, and a small image that passes decodes without a
//! panic either; the metadata strip of what passes never panics, and what it gives back is a
//! whole image of the same format that the header reader takes with the same size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use livegate_intake::{HeaderCaps, ImageFormat, header, inspect, metadata, structure};

const CAPS: HeaderCaps = HeaderCaps {
    max_pixels: 40_000_000,
    max_decoded_bytes: 64 * 1024 * 1024,
};

fuzz_target!(|data: &[u8]| {
    for format in ImageFormat::ALL {
        let _ = structure::check(format, data);
    }
    let Ok(h) = inspect(data, &CAPS) else {
        return;
    };
    assert_eq!(ImageFormat::sniff(data), Some(h.format));
    assert!(u64::from(h.width) * u64::from(h.height) <= CAPS.max_pixels);
    assert!(h.decoded_bytes <= CAPS.max_decoded_bytes);
    if h.decode_cost() <= 1 << 20 {
        let _ = header::reader(data, h.format, &CAPS).decode();
    }
    if let Some(stripped) = metadata::strip(h.format, data, h.orientation) {
        let again = inspect(&stripped, &CAPS).expect("a stripped image still passes");
        assert_eq!(
            (again.format, again.width, again.height),
            (h.format, h.width, h.height)
        );
        assert_eq!(again.orientation, h.orientation);
    }
});
