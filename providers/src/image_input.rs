use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use image::DynamicImage;

pub use livegate_intake::ImageFormat;

/// An image that passed livegate's intake checks: known format, decodable, within limits.
#[derive(Debug, Clone)]
pub struct ImageInput {
    pub bytes: Bytes,
    pub format: ImageFormat,
    /// Dimensions after the EXIF orientation was applied.
    pub width: u32,
    pub height: u32,
    /// The decoded pixels (8-bit RGB, EXIF orientation applied), shared by everyone who needs
    /// them; `None` for an image that is only forwarded, which is never decoded.
    pub decoded: Option<Arc<DynamicImage>>,
}

/// What an upstream documents it accepts. livegate never sends anything outside these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub formats: Vec<ImageFormat>,
    /// Smallest accepted side, in pixels.
    pub min_side: u32,
    /// Largest accepted side, in pixels.
    pub max_side: u32,
    pub max_bytes: usize,
}

impl Capabilities {
    /// Whether an image of this format, size (after orientation) and length goes to the
    /// upstream as sent, with no decoding or re-encoding.
    pub fn takes_as_is(&self, format: ImageFormat, width: u32, height: u32, len: usize) -> bool {
        self.formats.contains(&format)
            && width.max(height) <= self.max_side
            && width.min(height) >= self.min_side
            && len <= self.max_bytes
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImageError {
    #[error("the image is {width}x{height}; this provider requires at least {min} px on each side")]
    TooSmall { width: u32, height: u32, min: u32 },
    #[error("the image cannot be brought under this provider's limit of {max_bytes} bytes")]
    TooLarge { max_bytes: usize },
    #[error("the image could not be re-encoded: {0}")]
    Encode(String),
    /// The gateway decides up front whether pixels are needed; reaching this is its bug.
    #[error("the image must be adapted for this provider but was not decoded")]
    NotDecoded,
}

/// Make `input` acceptable to a provider: transcode formats it does not take, downscale what
/// is too large, and refuse (naming the limit) what cannot be fixed, such as a too small image.
pub fn adapt_image(input: &ImageInput, caps: &Capabilities) -> Result<ImageInput, ImageError> {
    let (w, h) = (input.width, input.height);
    if w.min(h) < caps.min_side {
        return Err(ImageError::TooSmall {
            width: w,
            height: h,
            min: caps.min_side,
        });
    }
    if caps.takes_as_is(input.format, w, h, input.bytes.len()) {
        return Ok(input.clone());
    }
    let side_ok = w.max(h) <= caps.max_side;
    let decoded = input.decoded.as_ref().ok_or(ImageError::NotDecoded)?;
    let mut img: DynamicImage = (**decoded).clone();
    if !side_ok {
        img = img.resize(
            caps.max_side,
            caps.max_side,
            image::imageops::FilterType::Triangle,
        );
        if img.width().min(img.height()) < caps.min_side {
            return Err(ImageError::TooSmall {
                width: w,
                height: h,
                min: caps.min_side,
            });
        }
    }
    // JPEG is the smallest re-encoding every upstream takes; PNG only where JPEG is not accepted.
    let target = if caps.formats.contains(&ImageFormat::Jpeg) {
        ImageFormat::Jpeg
    } else if caps.formats.contains(&ImageFormat::Png) {
        ImageFormat::Png
    } else {
        caps.formats.first().copied().unwrap_or(ImageFormat::Jpeg)
    };
    let rgb = DynamicImage::ImageRgb8(img.to_rgb8());
    for quality in [90u8, 80, 70, 55, 40] {
        let bytes = encode(&rgb, target, quality)?;
        if bytes.len() <= caps.max_bytes {
            return Ok(ImageInput {
                width: rgb.width(),
                height: rgb.height(),
                format: target,
                bytes: Bytes::from(bytes),
                decoded: Some(Arc::new(rgb)),
            });
        }
        if target != ImageFormat::Jpeg {
            break;
        }
    }
    Err(ImageError::TooLarge {
        max_bytes: caps.max_bytes,
    })
}

fn encode(img: &DynamicImage, format: ImageFormat, quality: u8) -> Result<Vec<u8>, ImageError> {
    let mut out = Cursor::new(Vec::new());
    let res = match format {
        ImageFormat::Jpeg => {
            let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
            img.write_with_encoder(enc)
        }
        other => img.write_to(&mut out, other.codec()),
    };
    res.map_err(|e| ImageError::Encode(e.to_string()))?;
    Ok(out.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(format: ImageFormat, w: u32, h: u32) -> ImageInput {
        let img =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(w, h, image::Rgb([120, 90, 60])));
        let mut buf = Cursor::new(Vec::new());
        img.write_to(&mut buf, format.codec()).expect("encode");
        ImageInput {
            bytes: Bytes::from(buf.into_inner()),
            format,
            width: w,
            height: h,
            decoded: Some(Arc::new(img)),
        }
    }

    fn caps() -> Capabilities {
        Capabilities {
            formats: vec![ImageFormat::Jpeg, ImageFormat::Png],
            min_side: 100,
            max_side: 1000,
            max_bytes: 10 << 20,
        }
    }

    #[test]
    fn accepted_image_passes_unchanged() {
        let i = input(ImageFormat::Png, 200, 200);
        let out = adapt_image(&i, &caps()).expect("adapt");
        assert_eq!(out.bytes, i.bytes);
    }

    #[test]
    fn webp_and_tiff_are_transcoded() {
        for f in [ImageFormat::Webp, ImageFormat::Tiff] {
            let out = adapt_image(&input(f, 200, 150), &caps()).expect("adapt");
            assert_eq!(out.format, ImageFormat::Jpeg);
            assert_eq!(ImageFormat::sniff(&out.bytes), Some(ImageFormat::Jpeg));
        }
    }

    #[test]
    fn large_images_are_downscaled_and_small_ones_refused() {
        let out = adapt_image(&input(ImageFormat::Png, 2000, 1500), &caps()).expect("adapt");
        assert_eq!((out.width, out.height), (1000, 750));
        let err = adapt_image(&input(ImageFormat::Png, 90, 300), &caps()).expect_err("too small");
        assert_eq!(
            err,
            ImageError::TooSmall {
                width: 90,
                height: 300,
                min: 100
            }
        );
    }
}
