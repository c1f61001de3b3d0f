//! BlazeFace face detection: letterbox, resize, anchors, decoding and non-maximum suppression.

use image::RgbImage;

use crate::error::EngineError;
use crate::models::{self, Plan};
use crate::resize::{Rect, resize_rgb};

/// One output block of a detector: `rows` anchors, scores in output `scores`, regressors in
/// output `regressors`.
#[derive(Clone, Copy, Debug)]
struct Block {
    scores: usize,
    regressors: usize,
    rows: usize,
}

/// A loaded BlazeFace detector.
pub(crate) struct Detector {
    pub(crate) file: &'static str,
    plan: Plan,
    size: u32,
    /// Output blocks in anchor order (the larger block, stride size/16, first).
    blocks: Vec<Block>,
    /// Anchor centers in input pixels, 896 of them.
    anchors: Vec<[f32; 2]>,
}

/// A raw detection in original image pixels (box not clipped).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Detection {
    pub(crate) bbox: [f64; 4],
    pub(crate) score: f32,
    pub(crate) landmarks: [[f64; 2]; 6],
}

const ROW: usize = 17; // logit, dx, dy, w, h, 6 x (kx, ky)

/// Anchor centers: stride `size/16` with 2 anchors per cell, then stride `size/8` with 6.
pub(crate) fn anchors(size: u32) -> Vec<[f32; 2]> {
    let mut out = Vec::with_capacity(896);
    for (stride, per_cell) in [(size / 16, 2), (size / 8, 6)] {
        let grid = size.div_ceil(stride);
        for gy in 0..grid {
            for gx in 0..grid {
                for _ in 0..per_cell {
                    out.push([
                        stride as f32 * (gx as f32 + 0.5),
                        stride as f32 * (gy as f32 + 0.5),
                    ]);
                }
            }
        }
    }
    out
}

impl Detector {
    /// Loads a detector with input `1 x size x size x 3` and works out its output layout from
    /// the output shapes: blocks of `[1, rows, 1]` scores and `[1, rows, 16]` regressors,
    /// ordered by decreasing `rows` (896; or 512 then 384).
    pub(crate) fn load(file: &'static str, bytes: &[u8], size: u32) -> Result<Self, EngineError> {
        let s = size as usize;
        let (plan, shapes) = models::load_plan(file, bytes, &[1, s, s, 3])?;
        let mut scores = Vec::new();
        let mut regs = Vec::new();
        for (i, shape) in shapes.iter().enumerate() {
            let n = shape.len();
            let lead: usize = shape[..n.saturating_sub(2)].iter().product();
            match (lead, shape.get(n.wrapping_sub(2)), shape.last()) {
                (1, Some(&rows), Some(&1)) if n >= 2 => scores.push((rows, i)),
                (1, Some(&rows), Some(&16)) if n >= 2 => regs.push((rows, i)),
                _ => {
                    return Err(EngineError::ModelSignature {
                        file,
                        detail: format!("unexpected output {i} of shape {shape:?}"),
                    });
                }
            }
        }
        scores.sort_by_key(|s| std::cmp::Reverse(s.0));
        let mut blocks = Vec::new();
        for (rows, si) in scores {
            let pos = regs.iter().position(|&(r, _)| r == rows).ok_or_else(|| {
                EngineError::ModelSignature {
                    file,
                    detail: format!("no regressor output with {rows} rows"),
                }
            })?;
            let (_, ri) = regs.remove(pos);
            blocks.push(Block {
                scores: si,
                regressors: ri,
                rows,
            });
        }
        let anchors = anchors(size);
        let total: usize = blocks.iter().map(|b| b.rows).sum();
        if total != anchors.len() || !regs.is_empty() {
            return Err(EngineError::ModelSignature {
                file,
                detail: format!(
                    "outputs cover {total} anchors, expected {} (shapes {shapes:?})",
                    anchors.len()
                ),
            });
        }
        Ok(Detector {
            file,
            plan,
            size,
            blocks,
            anchors,
        })
    }

    /// Letterboxed input tensor data (NHWC, RGB, `x / 127.5 - 1`).
    fn input(&self, img: &RgbImage) -> Vec<f32> {
        let side = img.width().max(img.height());
        let full = Rect {
            x: 0,
            y: 0,
            w: img.width(),
            h: img.height(),
        };
        let pixels = resize_rgb(img, full, side, side, self.size, self.size);
        pixels.iter().map(|&v| f32::from(v) / 127.5 - 1.0).collect()
    }

    /// Runs the detector: detections with score `>= min_score` after NMS at `iou`, at most
    /// `max_faces`, best first, in original image pixels.
    pub(crate) fn detect(
        &self,
        img: &RgbImage,
        min_score: f32,
        iou: f32,
        max_faces: usize,
    ) -> Result<Vec<Detection>, EngineError> {
        let s = self.size as usize;
        let outputs = models::run_plan(&self.plan, self.file, &[1, s, s, 3], self.input(img))?;
        // Rows of [logit, 16 regressors], in anchor order.
        let mut rows: Vec<[f32; ROW]> = Vec::with_capacity(self.anchors.len());
        for b in &self.blocks {
            let sc = models::output_slice(&outputs, b.scores, self.file)?;
            let rg = models::output_slice(&outputs, b.regressors, self.file)?;
            if sc.len() != b.rows || rg.len() != b.rows * 16 {
                return Err(EngineError::ModelSignature {
                    file: self.file,
                    detail: "output length does not match its shape".into(),
                });
            }
            for (logit, reg) in sc.iter().zip(rg.chunks_exact(16)) {
                let mut row = [0f32; ROW];
                row[0] = *logit;
                row[1..].copy_from_slice(reg);
                rows.push(row);
            }
        }
        let side = f64::from(img.width().max(img.height()));
        Ok(decode(
            &rows,
            &self.anchors,
            side / f64::from(self.size),
            min_score,
            iou,
            max_faces,
        ))
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x.clamp(-80.0, 80.0)).exp())
}

fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let xx1 = a[0].max(b[0]);
    let yy1 = a[1].max(b[1]);
    let xx2 = a[2].min(b[2]);
    let yy2 = a[3].min(b[3]);
    let inter = (xx2 - xx1).max(0.0) * (yy2 - yy1).max(0.0);
    inter / (area(a) + area(b) - inter).max(1e-9)
}

/// Decodes rows against anchors, applies greedy NMS (as the reference), scales to the image.
fn decode(
    rows: &[[f32; ROW]],
    anchors: &[[f32; 2]],
    scale: f64,
    min_score: f32,
    iou_threshold: f32,
    max_faces: usize,
) -> Vec<Detection> {
    // Candidates above the score threshold, best first.
    let mut cand: Vec<(usize, f32, [f32; 4])> = rows
        .iter()
        .zip(anchors)
        .enumerate()
        .filter_map(|(i, (r, a))| {
            let score = sigmoid(r[0]);
            if score < min_score {
                return None;
            }
            let (cx, cy) = (r[1] + a[0], r[2] + a[1]);
            let (w, h) = (r[3], r[4]);
            if !(w > 0.0 && h > 0.0) {
                return None; // degenerate (or NaN) box
            }
            Some((
                i,
                score,
                [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            ))
        })
        .collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut keep: Vec<(usize, f32, [f32; 4])> = Vec::new();
    for c in cand {
        if keep.len() >= max_faces {
            break;
        }
        if keep.iter().all(|k| iou(&c.2, &k.2) <= iou_threshold) {
            keep.push(c);
        }
    }
    keep.into_iter()
        .map(|(i, score, b)| {
            let r = &rows[i];
            let a = anchors[i];
            let mut landmarks = [[0f64; 2]; 6];
            for (k, lm) in landmarks.iter_mut().enumerate() {
                lm[0] = f64::from(r[5 + 2 * k] + a[0]) * scale;
                lm[1] = f64::from(r[6 + 2 * k] + a[1]) * scale;
            }
            Detection {
                bbox: b.map(|v| f64::from(v) * scale),
                score,
                landmarks,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_layout() {
        let a = anchors(128);
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], [4.0, 4.0]);
        assert_eq!(a[1], [4.0, 4.0]);
        assert_eq!(a[2], [12.0, 4.0]);
        assert_eq!(a[512], [8.0, 8.0]);
        assert_eq!(a[895], [120.0, 120.0]);
        let b = anchors(256);
        assert_eq!(b.len(), 896);
        assert_eq!(b[895], [240.0, 240.0]);
    }

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let a = anchors(128);
        let mut rows = vec![[0f32; ROW]; 896];
        for r in rows.iter_mut() {
            r[0] = -10.0;
        }
        // Two overlapping boxes around anchor 0 and 1 (same center), one far away.
        rows[0] = {
            let mut r = [0f32; ROW];
            r[0] = 2.0;
            r[3] = 20.0;
            r[4] = 20.0;
            r
        };
        rows[1] = {
            let mut r = [0f32; ROW];
            r[0] = 3.0;
            r[1] = 1.0;
            r[3] = 20.0;
            r[4] = 20.0;
            r
        };
        rows[895] = {
            let mut r = [0f32; ROW];
            r[0] = 1.0;
            r[3] = 10.0;
            r[4] = 10.0;
            r
        };
        let d = decode(&rows, &a, 2.0, 0.5, 0.3, 5);
        assert_eq!(d.len(), 2);
        assert!((d[0].score - sigmoid(3.0)).abs() < 1e-6);
        assert_eq!(d[0].bbox, [-10.0, -12.0, 30.0, 28.0]);
        assert_eq!(d[1].bbox, [230.0, 230.0, 250.0, 250.0]);
        assert_eq!(decode(&rows, &a, 2.0, 0.5, 0.3, 1).len(), 1);
    }
}
