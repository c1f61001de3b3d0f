//! What a vendor gets of a selfie's metadata: nothing but its orientation. EXIF (GPS position,
//! device, serial numbers, timestamps), XMP, IPTC, comments, text chunks and embedded secondary
//! images (MPF, depth maps) are dropped without re-encoding a pixel; the orientation, which a
//! vendor needs to see the face upright, travels as a minimal EXIF block of that one tag.
//! Colour information (JFIF, the ICC profile, Adobe's colour transform) is kept: it changes how
//! the pixels decode. TIFF is forwarded as it is: its metadata lives in the same directories as
//! its pixel layout, and no vendor takes TIFF (it is transcoded, which keeps no metadata).

use image::metadata::Orientation;

use crate::ImageFormat;

/// `bytes` without their personal metadata, or `None` when there is none to drop (the caller
/// keeps the bytes it has, uncopied). `bytes` have passed [`crate::structure::check`]; an
/// unexpected layout also gives `None`.
pub fn strip(format: ImageFormat, bytes: &[u8], orientation: Orientation) -> Option<Vec<u8>> {
    match format {
        ImageFormat::Jpeg => jpeg(bytes, orientation),
        ImageFormat::Png => png(bytes, orientation),
        ImageFormat::Webp => webp(bytes, orientation),
        ImageFormat::Tiff => None,
    }
}

/// A big-endian TIFF structure holding one IFD with one entry: the orientation.
fn orientation_tiff(orientation: Orientation) -> Vec<u8> {
    let mut t = b"MM\0\x2A\0\0\0\x08".to_vec();
    t.extend_from_slice(&1u16.to_be_bytes()); // one entry
    t.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    t.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    t.extend_from_slice(&1u32.to_be_bytes()); // one value
    t.extend_from_slice(&[0, orientation.to_exif(), 0, 0]);
    t.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    t
}

fn needs_tag(orientation: Orientation) -> bool {
    orientation != Orientation::NoTransforms
}

fn be16(b: &[u8], pos: usize) -> Option<usize> {
    Some(usize::from(*b.get(pos)?) << 8 | usize::from(*b.get(pos.checked_add(1)?)?))
}

/// Kept APPn segments: JFIF/JFXX (APP0), the ICC profile (APP2 `ICC_PROFILE`), Adobe (APP14).
fn keep_jpeg_segment(marker: u8, payload: &[u8]) -> bool {
    match marker {
        0xE0 | 0xEE => true,
        0xE2 => payload.starts_with(b"ICC_PROFILE\0"),
        0xE1 | 0xE3..=0xED | 0xEF | 0xFE => false,
        _ => true,
    }
}

/// A JPEG segment before the first scan: its marker and byte range, marker included.
struct Segment {
    marker: u8,
    start: usize,
    end: usize,
}

/// The segments between SOI and the first scan, and where that scan's segment starts.
fn jpeg_segments(b: &[u8]) -> Option<(Vec<Segment>, usize)> {
    let mut segments = Vec::new();
    let mut pos: usize = 2;
    loop {
        let start = pos;
        if *b.get(pos)? != 0xFF {
            return None;
        }
        while *b.get(pos)? == 0xFF {
            pos = pos.checked_add(1)?;
        }
        let marker = *b.get(pos)?;
        pos = pos.checked_add(1)?;
        if marker == 0xDA || marker == 0xD9 {
            return Some((segments, start));
        }
        let end = if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            pos
        } else {
            pos.checked_add(be16(b, pos)?)?
        };
        b.get(start..end)?;
        segments.push(Segment { marker, start, end });
        pos = end;
    }
}

/// The orientation as an APP1 EXIF segment.
fn orientation_app1(out: &mut Vec<u8>, orientation: Orientation) -> Option<()> {
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&orientation_tiff(orientation));
    let len = u16::try_from(app1.len().checked_add(2)?).ok()?;
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    Some(())
}

/// Segments up to the first scan, filtered; from the scan on, the bytes as they are. Nothing
/// is copied unless a segment is dropped.
fn jpeg(b: &[u8], orientation: Orientation) -> Option<Vec<u8>> {
    let (segments, scan) = jpeg_segments(b)?;
    let keep = |s: &Segment| {
        let payload = b.get(s.start.saturating_add(4)..s.end).unwrap_or_default();
        keep_jpeg_segment(s.marker, payload)
    };
    if segments.iter().all(keep) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..2)?);
    let mut tagged = !needs_tag(orientation);
    for s in &segments {
        // The orientation goes right after SOI and JFIF, where readers look for EXIF.
        if !tagged && s.marker != 0xE0 {
            orientation_app1(&mut out, orientation)?;
            tagged = true;
        }
        if keep(s) {
            out.extend_from_slice(b.get(s.start..s.end)?);
        }
    }
    if !tagged {
        orientation_app1(&mut out, orientation)?;
    }
    out.extend_from_slice(b.get(scan..)?);
    Some(out)
}

/// Chunks that carry text, EXIF or a timestamp.
fn drop_png_chunk(kind: &[u8]) -> bool {
    matches!(kind, b"tEXt" | b"zTXt" | b"iTXt" | b"eXIf" | b"tIME")
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) -> Option<()> {
    out.extend_from_slice(&u32::try_from(data.len()).ok()?.to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
    Some(())
}

/// Each chunk's type and byte range (length, type, data, CRC).
fn png_chunks(b: &[u8]) -> Option<Vec<([u8; 4], usize, usize)>> {
    let mut chunks = Vec::new();
    let mut pos = 8;
    while pos < b.len() {
        let len = u32::from_be_bytes(b.get(pos..pos.checked_add(4)?)?.try_into().ok()?);
        let kind: [u8; 4] = b
            .get(pos.checked_add(4)?..pos.checked_add(8)?)?
            .try_into()
            .ok()?;
        let end = pos
            .checked_add(12)?
            .checked_add(usize::try_from(len).ok()?)?;
        b.get(pos..end)?;
        chunks.push((kind, pos, end));
        pos = end;
    }
    Some(chunks)
}

fn png(b: &[u8], orientation: Orientation) -> Option<Vec<u8>> {
    let chunks = png_chunks(b)?;
    if !chunks.iter().any(|(kind, _, _)| drop_png_chunk(kind)) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..8)?);
    let mut tagged = !needs_tag(orientation);
    for (kind, start, end) in chunks {
        if !tagged && &kind == b"IDAT" {
            // eXIf must come before the image data.
            png_chunk(&mut out, b"eXIf", &orientation_tiff(orientation))?;
            tagged = true;
        }
        if !drop_png_chunk(&kind) {
            out.extend_from_slice(b.get(start..end)?);
        }
    }
    Some(out)
}

/// The chunks of a RIFF WebP after its 12-byte header: type and byte range, padding included.
fn webp_chunks(b: &[u8]) -> Option<Vec<([u8; 4], usize, usize)>> {
    let mut chunks = Vec::new();
    let mut pos: usize = 12;
    while pos.checked_add(8)? <= b.len() {
        let kind: [u8; 4] = b.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
        let size = u32::from_le_bytes(
            b.get(pos.checked_add(4)?..pos.checked_add(8)?)?
                .try_into()
                .ok()?,
        );
        let size = usize::try_from(size).ok()?;
        let end = pos
            .checked_add(8)?
            .checked_add(size)?
            .checked_add(size % 2)?
            .min(b.len());
        chunks.push((kind, pos, end));
        pos = end;
    }
    Some(chunks)
}

fn drop_webp_chunk(kind: &[u8; 4]) -> bool {
    kind == b"EXIF" || kind == b"XMP "
}

/// RIFF chunks of an extended (VP8X) WebP; `EXIF` and `XMP ` dropped and their flags cleared.
fn webp(b: &[u8], orientation: Orientation) -> Option<Vec<u8>> {
    if b.get(12..16)? != b"VP8X" {
        return None; // simple WebP: no metadata chunks
    }
    let chunks = webp_chunks(b)?;
    if !chunks.iter().any(|(kind, _, _)| drop_webp_chunk(kind)) {
        return None;
    }
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b.get(..12)?);
    let mut flags_at = None;
    for (kind, start, end) in chunks {
        if drop_webp_chunk(&kind) {
            continue;
        }
        if &kind == b"VP8X" {
            flags_at = Some(out.len().checked_add(8)?);
        }
        out.extend_from_slice(b.get(start..end)?);
    }
    let flags_at = flags_at?;
    let mut flags = *out.get(flags_at)? & !(0x08 | 0x04); // EXIF, XMP
    if needs_tag(orientation) {
        let tiff = orientation_tiff(orientation);
        out.extend_from_slice(b"EXIF");
        out.extend_from_slice(&u32::try_from(tiff.len()).ok()?.to_le_bytes());
        out.extend_from_slice(&tiff);
        if tiff.len() % 2 == 1 {
            out.push(0);
        }
        flags |= 0x08;
    }
    *out.get_mut(flags_at)? = flags;
    let riff = u32::try_from(out.len().checked_sub(8)?).ok()?;
    out.get_mut(4..8)?.copy_from_slice(&riff.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jpeg_of(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Jpeg)
            .expect("encode");
        out.into_inner()
    }

    /// `jpeg` with, after SOI: an EXIF block (orientation 6 and a fake GPS string), XMP, an
    /// MPF segment and a comment, each carrying `SECRET`.
    fn with_metadata(jpeg: &[u8]) -> Vec<u8> {
        let segment = |marker: u8, payload: &[u8]| {
            let mut s = vec![0xFF, marker];
            s.extend_from_slice(&u16::try_from(payload.len() + 2).unwrap().to_be_bytes());
            s.extend_from_slice(payload);
            s
        };
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0".to_vec();
        exif.extend_from_slice(&1u16.to_le_bytes());
        exif.extend_from_slice(&0x0112u16.to_le_bytes());
        exif.extend_from_slice(&3u16.to_le_bytes());
        exif.extend_from_slice(&1u32.to_le_bytes());
        exif.extend_from_slice(&[6, 0, 0, 0]);
        exif.extend_from_slice(&0u32.to_le_bytes());
        exif.extend_from_slice(b"GPS 52.5200N 13.4050E SECRET");
        let mut out = jpeg[..2].to_vec();
        out.extend(segment(0xE1, &exif));
        out.extend(segment(
            0xE1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>SECRET</x:xmpmeta>",
        ));
        out.extend(segment(0xE2, b"MPF\0SECRET"));
        out.extend(segment(0xFE, b"taken by SECRET"));
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn decoded(bytes: &[u8]) -> (u32, u32, Orientation) {
        use image::ImageDecoder;
        let mut d = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .expect("format")
            .into_decoder()
            .expect("decoder");
        let o = d.orientation().expect("orientation");
        let (w, h) = d.dimensions();
        (w, h, o)
    }

    #[test]
    fn a_jpeg_keeps_its_pixels_and_orientation_and_loses_the_rest() {
        let plain = jpeg_of(64, 48);
        let rich = with_metadata(&plain);
        let stripped = strip(ImageFormat::Jpeg, &rich, Orientation::Rotate90).expect("stripped");
        assert!(!contains(&stripped, b"SECRET"));
        assert!(crate::structure::check(ImageFormat::Jpeg, &stripped).is_ok());
        assert_eq!(decoded(&stripped), (64, 48, Orientation::Rotate90));
        // From the first scan on, the bytes are the original's.
        let sos = plain
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .expect("SOS");
        assert!(stripped.ends_with(&plain[sos..]));
        assert_eq!(
            image::load_from_memory(&stripped)
                .expect("decode")
                .to_rgb8(),
            image::load_from_memory(&plain).expect("decode").to_rgb8()
        );
    }

    #[test]
    fn an_image_without_metadata_is_left_alone() {
        let plain = jpeg_of(32, 32);
        assert_eq!(
            strip(ImageFormat::Jpeg, &plain, Orientation::NoTransforms),
            None
        );
    }

    #[test]
    fn png_text_and_exif_chunks_go_and_the_orientation_stays() {
        let img = image::RgbImage::from_pixel(20, 10, image::Rgb([1, 2, 3]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .expect("encode");
        let png = png.into_inner();
        // tEXt and eXIf (orientation 8 and a secret) before IDAT.
        let idat = png.windows(4).position(|w| w == b"IDAT").expect("IDAT") - 4;
        let mut rich = png[..idat].to_vec();
        png_chunk(&mut rich, b"tEXt", b"Author\0SECRET").unwrap();
        let mut exif =
            b"MM\0\x2A\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x08\0\0\0\0\0\0".to_vec();
        exif.extend_from_slice(b"SECRET");
        png_chunk(&mut rich, b"eXIf", &exif).unwrap();
        rich.extend_from_slice(&png[idat..]);
        assert_eq!(decoded(&rich).2, Orientation::Rotate270);

        let stripped = strip(ImageFormat::Png, &rich, Orientation::Rotate270).expect("stripped");
        assert!(!contains(&stripped, b"SECRET"));
        assert!(crate::structure::check(ImageFormat::Png, &stripped).is_ok());
        assert_eq!(decoded(&stripped), (20, 10, Orientation::Rotate270));
    }

    #[test]
    fn webp_exif_and_xmp_chunks_go_and_the_flags_follow() {
        // VP8X (flags: EXIF | XMP), a lossless 1x1 image, EXIF, XMP.
        let img = image::RgbaImage::from_pixel(1, 1, image::Rgba([9, 9, 9, 255]));
        let mut simple = std::io::Cursor::new(Vec::new());
        img.write_to(&mut simple, image::ImageFormat::WebP)
            .expect("encode");
        let simple = simple.into_inner();
        let image_chunk = &simple[12..];
        let mut body = b"WEBP".to_vec();
        body.extend_from_slice(b"VP8X");
        body.extend_from_slice(&10u32.to_le_bytes());
        body.extend_from_slice(&[0x0C, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // 1x1 (minus one)
        body.extend_from_slice(image_chunk);
        for (kind, data) in [
            (b"EXIF", &b"MM\0\x2ASECRET"[..]),
            (b"XMP ", &b"<x>SECRET</x>!"[..]),
        ] {
            body.extend_from_slice(kind);
            body.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
            body.extend_from_slice(data);
            if data.len() % 2 == 1 {
                body.push(0);
            }
        }
        let mut rich = b"RIFF".to_vec();
        rich.extend_from_slice(&u32::try_from(body.len()).unwrap().to_le_bytes());
        rich.extend_from_slice(&body);

        let stripped =
            strip(ImageFormat::Webp, &rich, Orientation::NoTransforms).expect("stripped");
        assert!(!contains(&stripped, b"SECRET"));
        assert_eq!(stripped[20] & 0x0C, 0, "EXIF and XMP flags cleared");
        assert!(crate::structure::check(ImageFormat::Webp, &stripped).is_ok());
        assert_eq!(
            u32::from_le_bytes(stripped[4..8].try_into().unwrap()) as usize,
            stripped.len() - 8
        );
    }
}
