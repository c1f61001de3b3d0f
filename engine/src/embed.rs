//! Face embeddings: dlib's ResNet (`face_embedding_dlib_resnet_v1.onnx`) on the aligned
//! 150x150 chip, RGB 0-255 NCHW (the graph subtracts the mean and scales), L2-normalized so
//! that a dot product is the cosine similarity.

use image::RgbImage;

use crate::align::{self, CHIP};
use crate::error::EngineError;
use crate::models::{self, Plan};

/// Length of an embedding.
pub const EMBEDDING_DIM: usize = 128;

pub(crate) struct Embedder {
    pub(crate) file: &'static str,
    plan: Plan,
}

impl Embedder {
    pub(crate) fn load(file: &'static str, bytes: &[u8]) -> Result<Self, EngineError> {
        let n = CHIP as usize;
        let (plan, shapes) = models::load_plan(file, bytes, &[1, 3, n, n])?;
        match shapes.first() {
            Some(s) if s.iter().product::<usize>() == EMBEDDING_DIM => {}
            other => {
                return Err(EngineError::ModelSignature {
                    file,
                    detail: format!("expected {EMBEDDING_DIM} values, output shape is {other:?}"),
                });
            }
        }
        Ok(Embedder { file, plan })
    }

    /// The unit-length embedding of the face with these landmarks; `None` when the landmarks
    /// are degenerate or the descriptor is all zeros.
    pub(crate) fn embed(
        &self,
        img: &RgbImage,
        landmarks: &[[f32; 2]; 6],
    ) -> Result<Option<Vec<f32>>, EngineError> {
        let Some(chip) = align::aligned_chip(img, landmarks) else {
            return Ok(None);
        };
        let n = CHIP as usize;
        let plane = n * n;
        let mut nchw = vec![0f32; 3 * plane];
        for (i, px) in chip.chunks_exact(3).enumerate() {
            nchw[i] = px[0];
            nchw[plane + i] = px[1];
            nchw[2 * plane + i] = px[2];
        }
        let out = models::run_plan(&self.plan, self.file, &[1, 3, n, n], nchw)?;
        let raw = models::output_slice(&out, 0, self.file)?;
        Ok(normalize(raw))
    }
}

/// `v / |v|`; `None` for a zero or non-finite vector.
pub fn normalize(v: &[f32]) -> Option<Vec<f32>> {
    let norm = v
        .iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt();
    if !(norm.is_finite() && norm > 0.0) {
        return None;
    }
    Some(v.iter().map(|&x| (f64::from(x) / norm) as f32).collect())
}

/// Cosine similarity of two unit vectors (their dot product), accumulated in `f64`.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum::<f64>() as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_and_cosine() {
        let v = normalize(&[3.0, 4.0]).unwrap_or_default();
        assert_eq!(v, vec![0.6, 0.8]);
        assert!((cosine(&v, &v) - 1.0).abs() < 1e-6);
        assert!(normalize(&[0.0, 0.0]).is_none());
        assert!(normalize(&[f32::NAN, 1.0]).is_none());
    }
}
