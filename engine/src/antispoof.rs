//! Silent-Face anti-spoofing: crop around the face at a model's scale, resize to 80x80,
//! BGR raw 0-255 NCHW, softmax, class 1 = real.

use image::RgbImage;

use crate::error::EngineError;
use crate::models::{self, Plan};
use crate::resize::{Rect, resize_rgb};

pub(crate) const INPUT: u32 = 80;

/// A loaded MiniFASNet model with its crop scale.
pub(crate) struct AntiSpoof {
    pub(crate) file: &'static str,
    plan: Plan,
    scale: f64,
}

/// The Silent-Face crop rectangle for the tight box `[x1, y1, x2, y2]`: scale clamped so the
/// crop fits the image, same center, clipped to the image; `None` when nothing is left.
pub(crate) fn crop_rect(width: u32, height: u32, bbox: &[f64; 4], scale: f64) -> Option<Rect> {
    let (w, h) = (f64::from(width), f64::from(height));
    let (bw, bh) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    if !(bw > 0.0 && bh > 0.0) || width == 0 || height == 0 {
        return None;
    }
    let scale = ((h - 1.0) / bh).min((w - 1.0) / bw).min(scale);
    let (nw, nh) = (bw * scale, bh * scale);
    let (cx, cy) = (bbox[0] + bw / 2.0, bbox[1] + bh / 2.0);
    // Python's int() truncates toward zero, as `as i64` does.
    let x1 = ((cx - nw / 2.0) as i64).max(0);
    let y1 = ((cy - nh / 2.0) as i64).max(0);
    let x2 = ((cx + nw / 2.0) as i64).min(i64::from(width) - 1);
    let y2 = ((cy + nh / 2.0) as i64).min(i64::from(height) - 1);
    if x2 < x1 || y2 < y1 {
        return None;
    }
    Some(Rect {
        x: u32::try_from(x1).ok()?,
        y: u32::try_from(y1).ok()?,
        w: u32::try_from(x2 - x1 + 1).ok()?,
        h: u32::try_from(y2 - y1 + 1).ok()?,
    })
}

/// NCHW BGR float 0-255 from interleaved RGB bytes of an `INPUT x INPUT` image.
fn to_bgr_nchw(rgb: &[u8]) -> Vec<f32> {
    let plane = (INPUT * INPUT) as usize;
    let mut out = vec![0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        out[i] = f32::from(px[2]);
        out[plane + i] = f32::from(px[1]);
        out[2 * plane + i] = f32::from(px[0]);
    }
    out
}

/// Softmax probability of class `index`.
pub(crate) fn softmax_at(logits: &[f32], index: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&z| f64::from(z - max).exp()).sum();
    logits
        .get(index)
        .map_or(0.0, |&z| (f64::from(z - max).exp() / sum) as f32)
}

impl AntiSpoof {
    pub(crate) fn load(file: &'static str, bytes: &[u8], scale: f64) -> Result<Self, EngineError> {
        let n = INPUT as usize;
        let (plan, shapes) = models::load_plan(file, bytes, &[1, 3, n, n])?;
        match shapes.first() {
            Some(s) if s.iter().product::<usize>() == 3 => {}
            other => {
                return Err(EngineError::ModelSignature {
                    file,
                    detail: format!("expected 3 logits, output shape is {other:?}"),
                });
            }
        }
        Ok(AntiSpoof { file, plan, scale })
    }

    /// The model's crop of the face in `bbox` (tight detector box, image pixels).
    fn crop(&self, img: &RgbImage, bbox: &[f64; 4]) -> Option<Rect> {
        crop_rect(img.width(), img.height(), bbox, self.scale)
    }

    /// Probability that the 80x80 RGB crop is a real face.
    fn real_probability(&self, rgb: &[u8]) -> Result<f32, EngineError> {
        let n = INPUT as usize;
        let outputs = models::run_plan(&self.plan, self.file, &[1, 3, n, n], to_bgr_nchw(rgb))?;
        let logits = models::output_slice(&outputs, 0, self.file)?;
        if logits.len() != 3 {
            return Err(EngineError::ModelSignature {
                file: self.file,
                detail: format!("expected 3 logits, got {}", logits.len()),
            });
        }
        Ok(softmax_at(logits, 1))
    }
}

/// Real probabilities `(first, second)` of the face in `bbox` (tight detector box, image
/// pixels) by two models; `None` when a crop is empty. When the image is too small for both
/// scales (a close-up selfie), the two crops are the same rectangle: it is resized once.
pub(crate) fn real_probabilities(
    first: &AntiSpoof,
    second: &AntiSpoof,
    img: &RgbImage,
    bbox: &[f64; 4],
) -> Result<Option<(f32, f32)>, EngineError> {
    let (Some(r1), Some(r2)) = (first.crop(img, bbox), second.crop(img, bbox)) else {
        return Ok(None);
    };
    let resize = |r: Rect| resize_rgb(img, r, r.w, r.h, INPUT, INPUT);
    let rgb1 = resize(r1);
    let p1 = first.real_probability(&rgb1)?;
    let p2 = if r2 == r1 {
        second.real_probability(&rgb1)?
    } else {
        second.real_probability(&resize(r2))?
    };
    Ok(Some((p1, p2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_follows_silent_face_rule() {
        // 480x640 image, box 100..300 x 200..400: scale 2.7 fits horizontally? 200*2.7=540 > 479
        let r = crop_rect(480, 640, &[100.0, 200.0, 300.0, 400.0], 2.7).unwrap_or(Rect {
            x: 9,
            y: 9,
            w: 9,
            h: 9,
        });
        // scale = min(639/200, 479/200, 2.7) = 2.395 -> nw = nh = 479; center (200, 300)
        // x1 = int(200 - 239.5) = int(-39.5) = -39 -> 0; x2 = min(479, int(439.5)) = 439
        // y1 = int(60.5) = 60; y2 = int(539.5) = 539
        assert_eq!(
            r,
            Rect {
                x: 0,
                y: 60,
                w: 440,
                h: 480
            }
        );
        assert_eq!(crop_rect(480, 640, &[10.0, 10.0, 10.0, 20.0], 2.7), None);
    }

    #[test]
    fn softmax_picks_index() {
        let p = softmax_at(&[0.0, 0.0, 0.0], 1);
        assert!((p - 1.0 / 3.0).abs() < 1e-6);
        let p = softmax_at(&[-1000.0, 1000.0, 0.0], 1);
        assert!((p - 1.0).abs() < 1e-6);
    }
}
