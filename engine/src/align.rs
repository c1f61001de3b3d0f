//! Face alignment for the embedding model: a similarity transform (rotation, uniform scale,
//! translation) fitted by least squares (Umeyama) from BlazeFace's landmarks 0-3 onto the
//! template of `face_embedding_alignment_template.json`, then a bilinear warp to the chip size
//! with a black border.

use image::RgbImage;

/// Side of the aligned chip the embedding model takes.
pub(crate) const CHIP: u32 = 150;

/// `face_embedding_alignment_template.json`, key `template_150px_reye_leye_nose_mouth`: where
/// the right eye, left eye, nose tip and mouth center sit on a 150x150 chip. Compiled in (it is
/// four points, not weights) and checked against the models directory's file by a test.
pub(crate) const TEMPLATE: [[f64; 2]; 4] = [
    [47.418_572_239_235_02, 48.716_150_734_563_14],
    [101.898_783_477_537_55, 48.266_419_189_764_164],
    [75.215_323_529_857_43, 76.661_262_469_327_87],
    [75.663_952_377_269_4, 106.232_035_426_088_34],
];

/// `x' = a*x - b*y + tx`, `y' = b*x + a*y + ty`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Similarity {
    pub(crate) a: f64,
    pub(crate) b: f64,
    pub(crate) tx: f64,
    pub(crate) ty: f64,
}

impl Similarity {
    /// The least-squares similarity mapping `src` onto `dst` (Umeyama 1991 without
    /// reflection). In 2-D this is the complex-number fit `c = Σ conj(s)·d / Σ |s|²` on the
    /// centered points, the same minimizer Umeyama's SVD gives. `None` when the source points
    /// all coincide.
    pub(crate) fn fit(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Similarity> {
        let n = src.len().min(dst.len());
        if n < 2 {
            return None;
        }
        let mean = |p: &[[f64; 2]]| {
            let (sx, sy) = p[..n]
                .iter()
                .fold((0.0, 0.0), |(x, y), q| (x + q[0], y + q[1]));
            [sx / n as f64, sy / n as f64]
        };
        let (ms, md) = (mean(src), mean(dst));
        let (mut num_re, mut num_im, mut den) = (0.0, 0.0, 0.0);
        for (s, d) in src[..n].iter().zip(&dst[..n]) {
            let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
            let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
            // conj(s) * d
            num_re += sx * dx + sy * dy;
            num_im += sx * dy - sy * dx;
            den += sx * sx + sy * sy;
        }
        if den <= f64::EPSILON {
            return None;
        }
        let (a, b) = (num_re / den, num_im / den);
        Some(Similarity {
            a,
            b,
            tx: md[0] - (a * ms[0] - b * ms[1]),
            ty: md[1] - (b * ms[0] + a * ms[1]),
        })
    }

    pub(crate) fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [
            self.a * p[0] - self.b * p[1] + self.tx,
            self.b * p[0] + self.a * p[1] + self.ty,
        ]
    }

    /// The inverse map; `None` for a degenerate (zero-scale) transform.
    pub(crate) fn inverse(&self) -> Option<Similarity> {
        let s2 = self.a * self.a + self.b * self.b;
        if s2 <= f64::EPSILON {
            return None;
        }
        let (a, b) = (self.a / s2, -self.b / s2);
        Some(Similarity {
            a,
            b,
            tx: -(a * self.tx - b * self.ty),
            ty: -(b * self.tx + a * self.ty),
        })
    }
}

/// The `CHIP x CHIP` aligned face as interleaved RGB `f32` 0-255: each chip pixel takes the
/// bilinear sample of the image at the inverse-mapped pixel position; neighbours outside the
/// image count as black (as OpenCV's `warpAffine` with a constant border). `None` when the
/// landmarks are degenerate.
pub(crate) fn aligned_chip(img: &RgbImage, landmarks: &[[f32; 2]; 6]) -> Option<Vec<f32>> {
    let src: Vec<[f64; 2]> = landmarks[..4]
        .iter()
        .map(|p| [f64::from(p[0]), f64::from(p[1])])
        .collect();
    let to_chip = Similarity::fit(&src, &TEMPLATE)?;
    let to_image = to_chip.inverse()?;
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let raw = img.as_raw();
    let px = |x: i64, y: i64, c: usize| -> f64 {
        if x < 0 || y < 0 || x >= w || y >= h {
            0.0
        } else {
            // In range: x < w and y < h, both non-negative.
            let i = ((y * w + x) * 3) as usize + c;
            raw.get(i).map_or(0.0, |&v| f64::from(v))
        }
    };
    let n = CHIP as usize;
    let mut out = vec![0f32; n * n * 3];
    for v in 0..n {
        for u in 0..n {
            let [sx, sy] = to_image.apply([u as f64, v as f64]);
            if !(sx.is_finite() && sy.is_finite()) {
                continue;
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            for c in 0..3 {
                let top = px(x0, y0, c) * (1.0 - fx) + px(x0 + 1, y0, c) * fx;
                let bottom = px(x0, y0 + 1, c) * (1.0 - fx) + px(x0 + 1, y0 + 1, c) * fx;
                out[(v * n + u) * 3 + c] = (top * (1.0 - fy) + bottom * fy) as f32;
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_known_similarity() {
        let t = Similarity {
            a: 0.8,
            b: -0.3,
            tx: 12.0,
            ty: -4.5,
        };
        let src = [[10.0, 20.0], [50.0, 22.0], [31.0, 40.0], [30.0, 60.0]];
        let dst: Vec<[f64; 2]> = src.iter().map(|p| t.apply(*p)).collect();
        let fit = Similarity::fit(&src, &dst);
        let fit = fit.unwrap_or(Similarity {
            a: 0.0,
            b: 0.0,
            tx: 0.0,
            ty: 0.0,
        });
        for (got, want) in [(fit.a, t.a), (fit.b, t.b), (fit.tx, t.tx), (fit.ty, t.ty)] {
            assert!((got - want).abs() < 1e-9, "{fit:?}");
        }
        let back = fit.inverse().map(|i| i.apply(fit.apply([3.0, 4.0])));
        let back = back.unwrap_or([0.0, 0.0]);
        assert!((back[0] - 3.0).abs() < 1e-9 && (back[1] - 4.0).abs() < 1e-9);
        assert!(Similarity::fit(&[[1.0, 1.0]; 4], &TEMPLATE).is_none());
    }

    #[test]
    fn template_landmarks_give_the_identity_warp() {
        // Landmarks already on the template: the chip is the image's top-left 150x150.
        let img = RgbImage::from_fn(200, 200, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let mut lm = [[0f32; 2]; 6];
        for (i, p) in TEMPLATE.iter().enumerate() {
            lm[i] = [p[0] as f32, p[1] as f32];
        }
        let chip = aligned_chip(&img, &lm).unwrap_or_default();
        assert_eq!(chip.len(), 150 * 150 * 3);
        let at = |x: usize, y: usize, c: usize| chip[(y * 150 + x) * 3 + c];
        assert!((at(10, 20, 0) - 10.0).abs() < 1e-2);
        assert!((at(10, 20, 1) - 20.0).abs() < 1e-2);
        assert!((at(149, 149, 2) - 7.0).abs() < 1e-2);
    }

    #[test]
    fn outside_the_image_is_black() {
        // A face in a tiny image, landmarks scaled so most of the chip falls outside.
        let img = RgbImage::from_pixel(5, 5, image::Rgb([200, 200, 200]));
        let mut lm = [[0f32; 2]; 6];
        for (i, p) in TEMPLATE.iter().enumerate() {
            lm[i] = [(p[0] / 20.0) as f32, (p[1] / 20.0) as f32];
        }
        let chip = aligned_chip(&img, &lm).unwrap_or_default();
        assert_eq!(chip[(149 * 150 + 149) * 3], 0.0);
        assert!(chip[(50 * 150 + 50) * 3] > 190.0);
    }
}
