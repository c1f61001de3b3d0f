//! Synthetic embeddings for the identify benchmarks (`benches/identify.rs`, livegate's
//! `benches/identify_pgvector.rs`), so that both measure the same collections and queries.
//!
//! Enrolling 100k real photos is hours of CPU, and a search's cost depends only on the count
//! and the dimension. Random Gaussian directions are nearly orthogonal: the hard case for a
//! graph index (no cluster structure to exploit), so approximate-search figures are
//! conservative.

use crate::embed::{EMBEDDING_DIM, normalize};

/// `n` unit vectors of [`EMBEDDING_DIM`] Gaussian components (xorshift + Box-Muller, so the
/// same `seed` gives the same vectors everywhere, with no RNG crate).
pub fn gaussian_units(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut s = seed.max(1);
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let v: Vec<f32> = (0..EMBEDDING_DIM)
                .map(|_| {
                    let (u1, u2) = (uniform(), uniform());
                    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
                })
                .collect();
            normalize(&v).unwrap_or(v)
        })
        .collect()
}

/// The benchmark collection of `n` faces (seeded by its size).
pub fn collection(n: usize) -> Vec<Vec<f32>> {
    gaussian_units(n, 42 + n as u64)
}

/// `count` queries against [`collection`]`(n)`: enrolled faces seen again, each an enrolled
/// vector plus noise at cosine ~0.95 to it (a same-person score of this model).
pub fn probes(enrolled: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
    if enrolled.is_empty() {
        return Vec::new();
    }
    let noise = gaussian_units(count, 7);
    (0..count)
        .map(|q| {
            let v = &enrolled[(q * 7_919) % enrolled.len()];
            // |noise| = 1: cosine to v is about 1 / sqrt(1 + 0.33^2) = 0.95.
            let mixed: Vec<f32> = v.iter().zip(&noise[q]).map(|(a, b)| a + 0.33 * b).collect();
            normalize(&mixed).unwrap_or(mixed)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::cosine;

    #[test]
    fn deterministic_units_and_close_probes() {
        let a = collection(50);
        assert_eq!(a, collection(50));
        assert!(a.iter().all(|v| (cosine(v, v) - 1.0).abs() < 1e-5));
        let p = probes(&a, 10);
        assert_eq!(p.len(), 10);
        let s = cosine(&p[1], &a[7_919 % 50]);
        assert!((0.9..0.99).contains(&s), "{s}");
    }
}
