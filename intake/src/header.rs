//! What an image's header says, read without decoding a pixel: its dimensions, its color type
//! (and so what a full decode would allocate) and its EXIF orientation. A decompression bomb
//! is refused here, from a few hundred bytes, before any pixel buffer exists.

use std::io::Cursor;

use image::ImageDecoder;

use crate::refusal::{Code, Refused};
use crate::{ImageFormat, structure};

/// The caps an image is held to before it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderCaps {
    /// Most pixels (width × height) accepted.
    pub max_pixels: u64,
    /// Most bytes a full decode may allocate (width × height × channels × bytes per channel).
    pub max_decoded_bytes: u64,
}

/// An image that passed every check short of decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Header {
    pub format: ImageFormat,
    /// As stored, before the EXIF orientation.
    pub width: u32,
    pub height: u32,
    /// What a full decode allocates in the image's own color type.
    pub decoded_bytes: u64,
    pub orientation: image::metadata::Orientation,
}

impl Header {
    /// Width and height once the EXIF orientation is applied (a quarter turn swaps them).
    pub fn oriented_size(&self) -> (u32, u32) {
        use image::metadata::Orientation as O;
        match self.orientation {
            O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH => {
                (self.height, self.width)
            }
            _ => (self.width, self.height),
        }
    }

    /// The memory a decode to 8-bit RGB holds at its peak: the native pixels or the RGB copy.
    pub fn decode_cost(&self) -> u64 {
        self.decoded_bytes
            .max(u64::from(self.width) * u64::from(self.height) * 3)
    }
}

/// A reader of `bytes` as `format` whose decoder may allocate at most what `caps` allow.
pub fn reader<'a>(
    bytes: &'a [u8],
    format: ImageFormat,
    caps: &HeaderCaps,
) -> image::ImageReader<Cursor<&'a [u8]>> {
    let mut reader = image::ImageReader::with_format(Cursor::new(bytes), format.codec());
    let mut limits = image::Limits::default();
    // The decoder's own allocations are bounded too, not only the sizes checked from the header.
    limits.max_alloc = Some(caps.max_decoded_bytes.saturating_add(1 << 20));
    reader.limits(limits);
    reader
}

fn undecodable(e: impl std::fmt::Display) -> Refused {
    Refused::new(
        Code::ImageUndecodable,
        format!("the image could not be decoded: {e}"),
    )
}

/// Format by magic number, the structure whole through its end marker, and the header's
/// dimensions within `caps`: everything that can be known without decoding.
pub fn inspect(bytes: &[u8], caps: &HeaderCaps) -> Result<Header, Refused> {
    let Some(format) = ImageFormat::sniff(bytes) else {
        return Err(Refused::new(
            Code::UnsupportedImageFormat,
            "the image must be JPEG, PNG, WebP or TIFF",
        ));
    };
    let broken = |e: structure::Broken| match e {
        structure::Broken::Truncated => Refused::new(Code::ImageTruncated, e.to_string()),
        structure::Broken::Corrupt(_) => undecodable(e),
    };
    if format == ImageFormat::Jpeg {
        let facts = structure::jpeg_facts(bytes).map_err(broken)?;
        // What the decoder would read from the same segments, without building a decoder
        // (which copies the input and its tables); anything unusual still goes to the decoder.
        if let Some(f) = facts.frame.filter(|f| {
            f.precision == 8 && f.width > 0 && f.height > 0 && matches!(f.components, 1 | 3 | 4)
        }) {
            let orientation = facts
                .exif
                .and_then(image::metadata::Orientation::from_exif_chunk)
                .unwrap_or(image::metadata::Orientation::NoTransforms);
            // Grey stays one channel; YCbCr and CMYK decode to RGB.
            let color = if f.components == 1 {
                image::ColorType::L8
            } else {
                image::ColorType::Rgb8
            };
            return within_caps(
                format,
                u32::from(f.width),
                u32::from(f.height),
                color,
                orientation,
                caps,
            );
        }
    } else {
        structure::check(format, bytes).map_err(broken)?;
    }
    let mut decoder = reader(bytes, format, caps)
        .into_decoder()
        .map_err(undecodable)?;
    let (w, h) = decoder.dimensions();
    let color = decoder.color_type();
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    within_caps(format, w, h, color, orientation, caps)
}

/// The header's figures checked against `caps`.
fn within_caps(
    format: ImageFormat,
    w: u32,
    h: u32,
    color: image::ColorType,
    orientation: image::metadata::Orientation,
    caps: &HeaderCaps,
) -> Result<Header, Refused> {
    if w == 0 || h == 0 {
        return Err(Refused::new(
            Code::ImageUndecodable,
            "the image has no pixels",
        ));
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > caps.max_pixels {
        return Err(Refused::new(
            Code::ImageTooManyPixels,
            format!(
                "the image is {w}x{h}; at most {} pixels are accepted",
                caps.max_pixels
            ),
        ));
    }
    let decoded_bytes = pixels.saturating_mul(u64::from(color.bytes_per_pixel()));
    if decoded_bytes > caps.max_decoded_bytes {
        return Err(Refused::new(
            Code::ImageTooLargeDecoded,
            format!(
                "the image is {w}x{h} {color:?}: {decoded_bytes} bytes decoded; at most {} are \
                 accepted",
                caps.max_decoded_bytes
            ),
        ));
    }
    Ok(Header {
        format,
        width: w,
        height: h,
        decoded_bytes,
        orientation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAPS: HeaderCaps = HeaderCaps {
        max_pixels: 40_000_000,
        max_decoded_bytes: 256 << 20,
    };

    /// The header as the decoder reads it: what the JPEG fast path must agree with.
    fn through_decoder(bytes: &[u8]) -> (u32, u32, image::ColorType, image::metadata::Orientation) {
        let mut d = reader(bytes, ImageFormat::Jpeg, &CAPS)
            .into_decoder()
            .expect("decoder");
        let (w, h) = d.dimensions();
        let o = d
            .orientation()
            .unwrap_or(image::metadata::Orientation::NoTransforms);
        (w, h, d.color_type(), o)
    }

    fn jpegs() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        for dir in [
            "samples",
            "engine/tests/data",
            "fuzz/corpus/image",
            "fuzz/corpus/submission",
        ] {
            let Ok(entries) = std::fs::read_dir(format!("{root}/{dir}")) else {
                continue;
            };
            for e in entries.flatten() {
                let bytes = std::fs::read(e.path()).unwrap_or_default();
                if ImageFormat::sniff(&bytes) == Some(ImageFormat::Jpeg)
                    && structure::check(ImageFormat::Jpeg, &bytes).is_ok()
                {
                    out.push((e.path().display().to_string(), bytes));
                }
            }
        }
        for (name, img) in [
            (
                "grey",
                image::DynamicImage::ImageLuma8(image::GrayImage::new(33, 17)),
            ),
            (
                "rgb",
                image::DynamicImage::ImageRgb8(image::RgbImage::new(640, 480)),
            ),
        ] {
            let mut buf = std::io::Cursor::new(Vec::new());
            img.write_to(&mut buf, image::ImageFormat::Jpeg)
                .expect("encode");
            out.push((name.to_owned(), buf.into_inner()));
        }
        out
    }

    #[test]
    fn the_jpeg_walk_reads_what_the_decoder_reads() {
        let all = jpegs();
        assert!(all.len() >= 6, "{}", all.len());
        let mut oriented = 0;
        for (name, bytes) in &all {
            let h = inspect(bytes, &CAPS).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            let (w, ht, color, o) = through_decoder(bytes);
            assert_eq!((h.width, h.height), (w, ht), "{name}");
            assert_eq!(h.orientation, o, "{name}");
            assert_eq!(
                h.decoded_bytes,
                u64::from(w) * u64::from(ht) * u64::from(color.bytes_per_pixel()),
                "{name}"
            );
            if o != image::metadata::Orientation::NoTransforms {
                oriented += 1;
            }
        }
        // The samples carry an orientation tag: the EXIF path is exercised.
        assert!(
            oriented > 0,
            "no JPEG with an orientation tag among {}",
            all.len()
        );
    }

    #[test]
    fn jpeg_caps_hold_without_a_decoder() {
        let (_, bytes) = jpegs().pop().expect("a jpeg");
        let tight = HeaderCaps {
            max_pixels: 1000,
            max_decoded_bytes: 256 << 20,
        };
        assert!(matches!(
            inspect(&bytes, &tight),
            Err(Refused::Input {
                code: Code::ImageTooManyPixels,
                ..
            })
        ));
    }
}
