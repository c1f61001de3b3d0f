//! Bilinear resampling that reproduces Pillow's `Image.resize(..., Image.BILINEAR)` on 8-bit
//! RGB images bit for bit: a triangle filter whose support is scaled by the downscale factor
//! (so a downscale averages over the whole footprint, i.e. it antialiases), coefficients
//! normalized and converted to 22-bit fixed point, a horizontal pass then a vertical pass,
//! each rounded and clipped to 8 bits (Pillow `libImaging/Resample.c`).

use image::RgbImage;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// A rectangle of source pixels, `x..x+w`, `y..y+h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// Filter taps for one axis: for every output index, the first input index, the tap count and
/// `ksize` fixed-point weights.
struct Coeffs {
    bounds: Vec<(usize, usize)>,
    ksize: usize,
    kk: Vec<i32>,
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for the box `0..in_size`.
fn precompute(in_size: usize, out_size: usize) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut weights = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        // C `(int)` casts truncate toward zero, like Rust's `as`.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, w) in weights.iter_mut().enumerate().take(count) {
            *w = bilinear(((x + xmin) as f64 - center + 0.5) * ss);
            ww += *w;
        }
        let k = &mut kk[xx * ksize..(xx + 1) * ksize];
        for x in 0..count {
            let v = if ww != 0.0 {
                weights[x] / ww
            } else {
                weights[x]
            };
            let scaled = v * f64::from(1u32 << PRECISION_BITS);
            k[x] = if v < 0.0 {
                (-0.5 + scaled) as i32
            } else {
                (0.5 + scaled) as i32
            };
        }
        bounds.push((xmin, count));
    }
    Coeffs { bounds, ksize, kk }
}

#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes the source rectangle `src_rect` of `img`, placed at the top-left of a black canvas
/// of `canvas_w` x `canvas_h` pixels (the canvas may equal the rectangle; a larger canvas is a
/// letterbox), to `out_w` x `out_h`. Returns interleaved RGB bytes, row-major.
pub(crate) fn resize_rgb(
    img: &RgbImage,
    src_rect: Rect,
    canvas_w: u32,
    canvas_h: u32,
    out_w: u32,
    out_h: u32,
) -> Vec<u8> {
    let (cw, ch) = (canvas_w as usize, canvas_h as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    // Only the part of the rectangle that is inside the image and the canvas holds data.
    let rw = (src_rect.w.min(img.width().saturating_sub(src_rect.x)) as usize).min(cw);
    let rh = (src_rect.h.min(img.height().saturating_sub(src_rect.y)) as usize).min(ch);
    let stride = img.width() as usize * 3;
    let raw: &[u8] = img.as_raw();
    let base = src_rect.y as usize * stride + src_rect.x as usize * 3;
    let pixel_row = |y: usize| -> &[u8] {
        let start = base + y * stride;
        &raw[start..start + rw * 3]
    };

    let need_h = cw != ow;
    let need_v = ch != oh;

    let vert = precompute(ch, oh);
    // Rows of the canvas that the vertical pass reads.
    let (y_first, y_last) = match (vert.bounds.first(), vert.bounds.last()) {
        (Some(&(f, _)), Some(&(l, n))) => (f, l + n),
        _ => (0, 0),
    };

    // Horizontal pass over rows y_first..y_last into `tmp` (width ow), or a copy of the
    // canvas rows when no horizontal resampling is needed.
    let tmp_rows = if need_v { y_last - y_first } else { ch };
    let row_first = if need_v { y_first } else { 0 };
    let tmp_w = if need_h { ow } else { cw };
    let mut tmp = vec![0u8; tmp_rows * tmp_w * 3];
    if need_h {
        let horiz = precompute(cw, ow);
        for ty in 0..tmp_rows {
            let y = ty + row_first;
            if y >= rh {
                continue; // padding rows are black: every sum rounds to 0
            }
            let row = pixel_row(y);
            let out = &mut tmp[ty * ow * 3..(ty + 1) * ow * 3];
            for (xx, px) in out.chunks_exact_mut(3).enumerate() {
                let (xmin, count) = horiz.bounds[xx];
                let k = &horiz.kk[xx * horiz.ksize..xx * horiz.ksize + count];
                let (mut s0, mut s1, mut s2) = (HALF, HALF, HALF);
                // Taps beyond the data (letterbox padding) are zeros.
                let valid = count.min(rw.saturating_sub(xmin));
                for (i, &w) in k.iter().enumerate().take(valid) {
                    let p = (xmin + i) * 3;
                    s0 += i32::from(row[p]) * w;
                    s1 += i32::from(row[p + 1]) * w;
                    s2 += i32::from(row[p + 2]) * w;
                }
                px[0] = clip8(s0);
                px[1] = clip8(s1);
                px[2] = clip8(s2);
            }
        }
    } else {
        for ty in 0..tmp_rows {
            let y = ty + row_first;
            if y >= rh {
                continue;
            }
            tmp[ty * tmp_w * 3..ty * tmp_w * 3 + rw * 3].copy_from_slice(pixel_row(y));
        }
    }
    if !need_v {
        return tmp;
    }

    // Vertical pass.
    let row_len = tmp_w * 3;
    let mut out = vec![0u8; oh * row_len];
    let mut acc = vec![0i32; row_len];
    for yy in 0..oh {
        let (ymin, count) = vert.bounds[yy];
        let k = &vert.kk[yy * vert.ksize..yy * vert.ksize + count];
        acc.fill(HALF);
        for (i, &w) in k.iter().enumerate() {
            let src_row = ymin - y_first + i;
            let row = &tmp[src_row * row_len..(src_row + 1) * row_len];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += i32::from(p) * w;
            }
        }
        for (o, &a) in out[yy * row_len..(yy + 1) * row_len].iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_sizes_match() {
        let img = RgbImage::from_fn(7, 5, |x, y| image::Rgb([x as u8 * 30, y as u8 * 40, 9]));
        let r = Rect {
            x: 0,
            y: 0,
            w: 7,
            h: 5,
        };
        assert_eq!(resize_rgb(&img, r, 7, 5, 7, 5), img.as_raw().clone());
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(97, 61, image::Rgb([200, 100, 3]));
        let r = Rect {
            x: 0,
            y: 0,
            w: 97,
            h: 61,
        };
        for (w, h) in [(10, 10), (80, 80), (200, 150), (13, 97)] {
            let out = resize_rgb(&img, r, 97, 61, w, h);
            for px in out.chunks_exact(3) {
                assert_eq!(px, [200, 100, 3], "{w}x{h}");
            }
        }
    }

    #[test]
    fn letterbox_pads_with_black() {
        let img = RgbImage::from_pixel(40, 20, image::Rgb([255, 255, 255]));
        let r = Rect {
            x: 0,
            y: 0,
            w: 40,
            h: 20,
        };
        let out = resize_rgb(&img, r, 40, 40, 8, 8);
        // Top rows white, bottom rows black.
        assert_eq!(&out[0..3], &[255, 255, 255]);
        assert_eq!(&out[7 * 8 * 3..7 * 8 * 3 + 3], &[0, 0, 0]);
    }

    #[test]
    fn subrect_matches_copy() {
        let img = RgbImage::from_fn(50, 40, |x, y| {
            image::Rgb([(x * 5) as u8, (y * 6) as u8, ((x + y) * 3) as u8])
        });
        let r = Rect {
            x: 10,
            y: 7,
            w: 23,
            h: 19,
        };
        let sub = image::imageops::crop_imm(&img, 10, 7, 23, 19).to_image();
        let whole = Rect {
            x: 0,
            y: 0,
            w: 23,
            h: 19,
        };
        assert_eq!(
            resize_rgb(&img, r, 23, 19, 8, 8),
            resize_rgb(&sub, whole, 23, 19, 8, 8)
        );
    }
}
