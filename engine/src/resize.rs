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
    if rw == 0 || rh == 0 {
        // Nothing of the rectangle is inside the image: all black.
        return vec![0u8; ow * oh * 3];
    }
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
        horizontal_pass(&mut tmp, &pixel_row, rw, rh, row_first, tmp_rows, cw, ow);
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

/// Horizontal pass of canvas rows `row_first..row_first + tmp_rows` into `tmp` (`ow` wide).
///
/// Every row uses the same taps, so the rows that hold data are first transposed (source
/// column `x` becomes a contiguous run of pixels), and each output column is then a sum of
/// whole runs times scalar weights: a loop the compiler vectorizes. The arithmetic is the same
/// as Pillow's (same fixed-point weights, same order of integer additions), so the result is
/// identical.
#[allow(clippy::too_many_arguments)]
fn horizontal_pass<'a>(
    tmp: &mut [u8],
    pixel_row: &dyn Fn(usize) -> &'a [u8],
    rw: usize,
    rh: usize,
    row_first: usize,
    tmp_rows: usize,
    cw: usize,
    ow: usize,
) {
    let horiz = precompute(cw, ow);
    // Rows past the data are padding: black, already zero in `tmp`.
    let data_rows = rh.saturating_sub(row_first).min(tmp_rows);
    // Strips of rows: the transposed strip (`rw` runs of `STRIP` pixels) stays in cache and
    // the scratch memory does not grow with the image height.
    const STRIP: usize = 32;
    let mut cols = vec![0u8; rw * STRIP * 3];
    let mut acc = vec![0i32; STRIP * 3];
    for ty0 in (0..data_rows).step_by(STRIP) {
        let n = STRIP.min(data_rows - ty0);
        let run = n * 3;
        for i in 0..n {
            let row = pixel_row(ty0 + i + row_first);
            for (col, p) in cols.chunks_exact_mut(run).zip(row.chunks_exact(3)) {
                col[i * 3..i * 3 + 3].copy_from_slice(p);
            }
        }
        let acc = &mut acc[..run];
        for xx in 0..ow {
            let (xmin, count) = horiz.bounds[xx];
            let k = &horiz.kk[xx * horiz.ksize..xx * horiz.ksize + count];
            // Taps beyond the data (letterbox padding) are zeros.
            let valid = count.min(rw.saturating_sub(xmin));
            acc.fill(HALF);
            for (i, &w) in k.iter().enumerate().take(valid) {
                let col = &cols[(xmin + i) * run..(xmin + i + 1) * run];
                for (a, &p) in acc.iter_mut().zip(col) {
                    *a += i32::from(p) * w;
                }
            }
            for (i, px) in acc.chunks_exact(3).enumerate() {
                let o = ((ty0 + i) * ow + xx) * 3;
                tmp[o] = clip8(px[0]);
                tmp[o + 1] = clip8(px[1]);
                tmp[o + 2] = clip8(px[2]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pillow's algorithm written plainly: materialized canvas, row-major horizontal pass
    /// over every row, then the vertical pass.
    fn reference(canvas: &RgbImage, out_w: u32, out_h: u32) -> Vec<u8> {
        let (cw, ch) = (canvas.width() as usize, canvas.height() as usize);
        let (ow, oh) = (out_w as usize, out_h as usize);
        let h = precompute(cw, ow);
        let mut tmp = vec![0u8; ch * ow * 3];
        for y in 0..ch {
            for xx in 0..ow {
                let (xmin, count) = h.bounds[xx];
                for c in 0..3 {
                    let mut s = HALF;
                    for i in 0..count {
                        s += i32::from(canvas.get_pixel((xmin + i) as u32, y as u32)[c])
                            * h.kk[xx * h.ksize + i];
                    }
                    tmp[(y * ow + xx) * 3 + c] = clip8(s);
                }
            }
        }
        let v = precompute(ch, oh);
        let mut out = vec![0u8; oh * ow * 3];
        for yy in 0..oh {
            let (ymin, count) = v.bounds[yy];
            for i in 0..ow * 3 {
                let mut s = HALF;
                for j in 0..count {
                    s += i32::from(tmp[(ymin + j) * ow * 3 + i]) * v.kk[yy * v.ksize + j];
                }
                out[yy * ow * 3 + i] = clip8(s);
            }
        }
        out
    }

    fn noise(w: u32, h: u32, seed: u32) -> RgbImage {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        RgbImage::from_fn(w, h, |x, y| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let n = (state >> 16) as u8;
            image::Rgb([n, (x * 7 + y) as u8, n.wrapping_add((y * 3) as u8)])
        })
    }

    #[test]
    fn matches_the_plain_algorithm() {
        let img = noise(150, 110, 1);
        let cases = [
            // (rect, canvas, out)
            ((0, 0, 150, 110), (150, 150), (128, 128)), // letterbox, landscape
            ((0, 0, 110, 150), (150, 150), (64, 64)),   // uses a sub-rect as portrait source
            ((13, 7, 97, 91), (97, 91), (80, 80)),      // crop, downscale
            ((40, 30, 20, 17), (20, 17), (80, 80)),     // crop, upscale
            ((0, 0, 150, 110), (150, 110), (150, 37)),  // vertical only
            ((0, 0, 150, 110), (150, 110), (41, 110)),  // horizontal only
            ((5, 5, 3, 1), (3, 1), (7, 2)),             // tiny
        ];
        for ((x, y, w, h), (cw, ch), (ow, oh)) in cases {
            let rect = Rect { x, y, w, h };
            let mut canvas = RgbImage::new(cw, ch);
            let sub = image::imageops::crop_imm(&img, x, y, w, h).to_image();
            image::imageops::replace(&mut canvas, &sub, 0, 0);
            assert_eq!(
                resize_rgb(&img, rect, cw, ch, ow, oh),
                reference(&canvas, ow, oh),
                "{rect:?} canvas {cw}x{ch} -> {ow}x{oh}"
            );
        }
    }

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
