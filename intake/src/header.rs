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
    structure::check(format, bytes).map_err(|e| match e {
        structure::Broken::Truncated => Refused::new(Code::ImageTruncated, e.to_string()),
        structure::Broken::Corrupt(_) => undecodable(e),
    })?;
    let mut decoder = reader(bytes, format, caps)
        .into_decoder()
        .map_err(undecodable)?;
    let (w, h) = decoder.dimensions();
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
    let color = decoder.color_type();
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
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    Ok(Header {
        format,
        width: w,
        height: h,
        decoded_bytes,
        orientation,
    })
}
