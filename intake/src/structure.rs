//! Is the image whole? A walk over the container's structure (JPEG segments through EOI, PNG
//! chunks through IEND, the RIFF length of a WebP, the strips or tiles a TIFF points to),
//! without decoding a pixel. Decoders fill a truncated image with grey and report success, so
//! without this a selfie cut short by a flaky connection would be scored, and called a spoof.

use crate::ImageFormat;

/// Why the bytes are not a whole image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    #[error("the image ends before its structure does (cut short in transfer?)")]
    Truncated,
    #[error("the image's structure is corrupt at byte {0}")]
    Corrupt(usize),
}

/// Checks that `bytes`, already sniffed as `format`, hold a complete image.
pub fn check(format: ImageFormat, bytes: &[u8]) -> Result<(), Broken> {
    match format {
        ImageFormat::Jpeg => jpeg_facts(bytes).map(|_| ()),
        ImageFormat::Png => png(bytes),
        ImageFormat::Webp => webp(bytes),
        ImageFormat::Tiff => tiff(bytes),
    }
}

fn at(bytes: &[u8], pos: usize) -> Result<u8, Broken> {
    bytes.get(pos).copied().ok_or(Broken::Truncated)
}

fn be16(bytes: &[u8], pos: usize) -> Result<usize, Broken> {
    Ok(usize::from(at(bytes, pos)?) << 8 | usize::from(at(bytes, pos + 1)?))
}

/// A JPEG's frame header (the first SOF): what a decoder reads its dimensions from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegFrame {
    /// Bits per sample (8 for baseline and almost every progressive file).
    pub precision: u8,
    pub height: u16,
    pub width: u16,
    pub components: u8,
}

/// What the walk over a whole JPEG saw before its first scan, as a decoder's header parse does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JpegFacts<'a> {
    pub frame: Option<JpegFrame>,
    /// The TIFF data of the last `Exif` APP1 segment (after `Exif\0\0`), the one decoders keep.
    pub exif: Option<&'a [u8]>,
}

/// [`check`] for a JPEG, keeping what the walk passed on the way: the frame and the EXIF data.
/// Segments from SOI to EOI; entropy-coded data after each SOS is skipped to its next marker.
pub fn jpeg_facts(b: &[u8]) -> Result<JpegFacts<'_>, Broken> {
    let mut facts = JpegFacts::default();
    let mut scanned = false;
    let mut pos = 2; // past SOI
    loop {
        if at(b, pos)? != 0xFF {
            return Err(Broken::Corrupt(pos));
        }
        while at(b, pos)? == 0xFF {
            pos += 1; // fill bytes
        }
        let marker = at(b, pos)?;
        pos += 1;
        match marker {
            0xD9 => return Ok(facts),
            0x01 | 0xD0..=0xD7 => {}
            0x00 | 0xD8 => return Err(Broken::Corrupt(pos - 1)),
            _ => {
                let len = be16(b, pos)?;
                if len < 2 {
                    return Err(Broken::Corrupt(pos));
                }
                let start = pos;
                pos = pos.checked_add(len).ok_or(Broken::Corrupt(pos))?;
                if pos > b.len() {
                    return Err(Broken::Truncated);
                }
                // The segment's payload, within the file (checked just above).
                let payload = &b[start + 2..pos];
                match marker {
                    0xC0..=0xCF
                        if !matches!(marker, 0xC4 | 0xC8 | 0xCC)
                            && facts.frame.is_none()
                            && !scanned
                            && payload.len() >= 6 =>
                    {
                        facts.frame = Some(JpegFrame {
                            precision: payload[0],
                            height: u16::from_be_bytes([payload[1], payload[2]]),
                            width: u16::from_be_bytes([payload[3], payload[4]]),
                            components: payload[5],
                        });
                    }
                    0xE1 if !scanned && payload.len() > 6 && payload.starts_with(b"Exif\0\0") => {
                        facts.exif = Some(&payload[6..]);
                    }
                    _ => {}
                }
                if marker == 0xDA {
                    scanned = true;
                    pos = after_scan(b, pos)?;
                }
            }
        }
    }
}

/// The position of the marker that ends the entropy-coded data starting at `pos`: a 0xFF not
/// followed by a stuffed 0x00 or a restart marker.
fn after_scan(b: &[u8], mut pos: usize) -> Result<usize, Broken> {
    loop {
        let rest = b.get(pos..).ok_or(Broken::Truncated)?;
        let ff = memchr::memchr(0xFF, rest).ok_or(Broken::Truncated)?;
        pos += ff;
        match at(b, pos + 1)? {
            0x00 | 0xD0..=0xD7 | 0xFF => pos += 1,
            _ => return Ok(pos),
        }
    }
}

/// Chunks from the signature through IEND, each within the file.
fn png(b: &[u8]) -> Result<(), Broken> {
    let mut pos = 8;
    loop {
        let header = b.get(pos..pos + 8).ok_or(Broken::Truncated)?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let kind = &header[4..8];
        if !kind.iter().all(u8::is_ascii_alphabetic) || len > 0x7FFF_FFFF {
            return Err(Broken::Corrupt(pos));
        }
        let len = usize::try_from(len).map_err(|_| Broken::Corrupt(pos))?;
        let end = (pos + 12).checked_add(len).ok_or(Broken::Corrupt(pos))?;
        if end > b.len() {
            return Err(Broken::Truncated);
        }
        if kind == b"IEND" {
            return Ok(());
        }
        pos = end;
    }
}

/// The RIFF length covers the file.
fn webp(b: &[u8]) -> Result<(), Broken> {
    let size = b.get(4..8).ok_or(Broken::Truncated)?;
    let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
    let need = usize::try_from(size)
        .ok()
        .and_then(|s| s.checked_add(8))
        .ok_or(Broken::Corrupt(4))?;
    if need < 12 {
        return Err(Broken::Corrupt(4));
    }
    if b.len() < need {
        return Err(Broken::Truncated);
    }
    Ok(())
}

/// The first IFD, and the strips or tiles it points to, lie within the file.
fn tiff(b: &[u8]) -> Result<(), Broken> {
    let little = b.first() == Some(&b'I');
    let u16_at = |pos: usize| -> Result<u32, Broken> {
        let s = b.get(pos..pos + 2).ok_or(Broken::Truncated)?;
        let v = if little {
            u16::from_le_bytes([s[0], s[1]])
        } else {
            u16::from_be_bytes([s[0], s[1]])
        };
        Ok(u32::from(v))
    };
    let u32_at = |pos: usize| -> Result<u32, Broken> {
        let s = b.get(pos..pos + 4).ok_or(Broken::Truncated)?;
        Ok(if little {
            u32::from_le_bytes([s[0], s[1], s[2], s[3]])
        } else {
            u32::from_be_bytes([s[0], s[1], s[2], s[3]])
        })
    };
    let to_usize = |v: u32| usize::try_from(v).map_err(|_| Broken::Corrupt(0));
    let ifd = to_usize(u32_at(4)?)?;
    let entries = to_usize(u16_at(ifd)?)?;
    // Offsets and byte counts of the image data: (count, type, value or offset) per tag.
    let mut offsets = None;
    let mut counts = None;
    // The IFD ends with the next IFD's offset.
    u32_at(ifd + 2 + entries * 12)?;
    for i in 0..entries {
        let e = ifd + 2 + i * 12;
        let tag = u16_at(e)?;
        let field = (u16_at(e + 2)?, to_usize(u32_at(e + 4)?)?, e + 8);
        // A value longer than four bytes lies elsewhere in the file: all of it must be there.
        let width = match field.0 {
            1 | 2 | 6 | 7 => 1,
            3 | 8 => 2,
            4 | 9 | 11 | 13 => 4,
            5 | 10 | 12 => 8,
            _ => 0,
        };
        let size = field.1.checked_mul(width).ok_or(Broken::Corrupt(e))?;
        if size > 4 {
            let at = to_usize(u32_at(field.2)?)?;
            if at.checked_add(size).ok_or(Broken::Corrupt(e))? > b.len() {
                return Err(Broken::Truncated);
            }
        }
        match tag {
            273 | 324 => offsets = Some(field),
            279 | 325 => counts = Some(field),
            _ => {}
        }
    }
    let (Some(offsets), Some(counts)) = (offsets, counts) else {
        return Err(Broken::Corrupt(ifd));
    };
    if offsets.1 != counts.1 || offsets.1 == 0 {
        return Err(Broken::Corrupt(ifd));
    }
    let values = |(kind, n, field): (u32, usize, usize)| -> Result<Vec<usize>, Broken> {
        let width = match kind {
            3 => 2,
            4 => 4,
            _ => return Err(Broken::Corrupt(field)),
        };
        let total = n.checked_mul(width).ok_or(Broken::Corrupt(field))?;
        let base = if total <= 4 {
            field
        } else {
            to_usize(u32_at(field)?)?
        };
        (0..n)
            .map(|i| {
                let pos = base + i * width;
                to_usize(if width == 2 {
                    u16_at(pos)?
                } else {
                    u32_at(pos)?
                })
            })
            .collect()
    };
    for (offset, count) in values(offsets)?.into_iter().zip(values(counts)?) {
        let end = offset.checked_add(count).ok_or(Broken::Corrupt(ifd))?;
        if end > b.len() {
            return Err(Broken::Truncated);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let img = image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(96, 64, |x, y| {
            image::Rgb([(x * 3) as u8, (y * 4) as u8, ((x ^ y) * 2) as u8])
        }));
        let mut buf = std::io::Cursor::new(Vec::new());
        img.write_to(&mut buf, format.codec()).expect("encode");
        buf.into_inner()
    }

    #[test]
    fn whole_images_pass_and_every_prefix_fails() {
        for format in ImageFormat::ALL {
            let bytes = encoded(format);
            assert_eq!(check(format, &bytes), Ok(()), "{format:?}");
            for len in 0..bytes.len() {
                assert!(
                    check(format, &bytes[..len]).is_err(),
                    "{format:?} cut at {len} of {} passed",
                    bytes.len()
                );
            }
        }
    }

    #[test]
    fn trailing_bytes_after_the_end_are_allowed() {
        let mut bytes = encoded(ImageFormat::Jpeg);
        bytes.extend_from_slice(b"trailer");
        assert_eq!(check(ImageFormat::Jpeg, &bytes), Ok(()));
    }

    #[test]
    fn a_bad_marker_is_corrupt() {
        let mut bytes = encoded(ImageFormat::Jpeg);
        bytes[2] = 0x12;
        assert_eq!(check(ImageFormat::Jpeg, &bytes), Err(Broken::Corrupt(2)));
    }
}
