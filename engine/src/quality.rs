//! Face quality (sharpness and size) and face luminance. Formulas are documented in
//! `engine/README.md`.

use image::RgbImage;

use crate::resize::{Rect, resize_rgb};

/// Side of the square the face box is resampled to before measuring sharpness.
pub(crate) const SHARPNESS_SIDE: u32 = 112;
/// Laplacian variance at which the sharpness term reaches 0.5.
pub(crate) const SHARPNESS_HALF: f64 = 100.0;
/// Face side (shorter side of the box, pixels) at or below which the size term is 0.
pub(crate) const SIZE_MIN: f64 = 32.0;
/// Face side at or above which the size term is 1.
pub(crate) const SIZE_FULL: f64 = 112.0;

/// ITU-R BT.601 luma of an RGB pixel, 0-255.
#[inline]
fn luma(p: &[u8]) -> f64 {
    0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2])
}

/// The integer pixel rectangle covered by a box, clipped to the image (`None` when empty).
pub(crate) fn pixel_rect(width: u32, height: u32, bbox: &[f64; 4]) -> Option<Rect> {
    let x1 = bbox[0].floor().max(0.0);
    let y1 = bbox[1].floor().max(0.0);
    let x2 = bbox[2].ceil().min(f64::from(width));
    let y2 = bbox[3].ceil().min(f64::from(height));
    if !(x2 > x1 && y2 > y1) {
        return None;
    }
    Some(Rect {
        x: x1 as u32,
        y: y1 as u32,
        w: (x2 - x1) as u32,
        h: (y2 - y1) as u32,
    })
}

/// Mean BT.601 luma of the pixels in `rect`, 0-1.
pub(crate) fn luminance(img: &RgbImage, rect: Rect) -> f32 {
    let stride = img.width() as usize * 3;
    let raw = img.as_raw();
    let mut sum = 0.0;
    for y in rect.y..rect.y + rect.h {
        let start = y as usize * stride + rect.x as usize * 3;
        for p in raw[start..start + rect.w as usize * 3].chunks_exact(3) {
            sum += luma(p);
        }
    }
    let n = f64::from(rect.w) * f64::from(rect.h);
    (sum / n / 255.0) as f32
}

/// Variance of the 4-neighbour Laplacian of the face box resampled to
/// `SHARPNESS_SIDE x SHARPNESS_SIDE` luma (0-255 scale).
pub(crate) fn laplacian_variance(img: &RgbImage, rect: Rect) -> f64 {
    let n = SHARPNESS_SIDE as usize;
    let rgb = resize_rgb(img, rect, rect.w, rect.h, SHARPNESS_SIDE, SHARPNESS_SIDE);
    let gray: Vec<f64> = rgb.chunks_exact(3).map(luma).collect();
    let mut sum = 0.0;
    let mut sum_sq = 0.0;
    for y in 1..n - 1 {
        for x in 1..n - 1 {
            let c = y * n + x;
            let l = gray[c - n] + gray[c + n] + gray[c - 1] + gray[c + 1] - 4.0 * gray[c];
            sum += l;
            sum_sq += l * l;
        }
    }
    let count = ((n - 2) * (n - 2)) as f64;
    let mean = sum / count;
    (sum_sq / count - mean * mean).max(0.0)
}

/// Quality 0-1 from the Laplacian variance and the face's shorter side in pixels.
pub(crate) fn quality(laplacian_variance: f64, face_side: f64) -> f32 {
    let sharpness = laplacian_variance / (laplacian_variance + SHARPNESS_HALF);
    let size = ((face_side - SIZE_MIN) / (SIZE_FULL - SIZE_MIN)).clamp(0.0, 1.0);
    (sharpness * size).sqrt() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luminance_of_constant_image() {
        let img = RgbImage::from_pixel(10, 10, image::Rgb([255, 255, 255]));
        let r = pixel_rect(10, 10, &[-5.0, 2.2, 4.5, 30.0]).unwrap_or(Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 1,
        });
        assert_eq!(
            r,
            Rect {
                x: 0,
                y: 2,
                w: 5,
                h: 8
            }
        );
        assert!((luminance(&img, r) - 1.0).abs() < 1e-6);
        assert_eq!(pixel_rect(10, 10, &[11.0, 0.0, 20.0, 5.0]), None);
    }

    #[test]
    fn flat_face_has_no_sharpness() {
        let img = RgbImage::from_pixel(50, 50, image::Rgb([90, 90, 90]));
        let r = Rect {
            x: 0,
            y: 0,
            w: 50,
            h: 50,
        };
        assert_eq!(laplacian_variance(&img, r), 0.0);
        assert_eq!(quality(0.0, 200.0), 0.0);
        assert!((quality(1e12, 500.0) - 1.0).abs() < 1e-6);
        assert_eq!(quality(1e12, 20.0), 0.0);
    }
}
