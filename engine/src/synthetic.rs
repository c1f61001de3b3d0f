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

/// Which kind of synthetic embeddings a benchmark uses (`LIVEGATE_BENCH_DATA`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// Independent Gaussian directions: cosines ~0 ± 0.09 between faces, no structure.
    Gaussian,
    /// Shaped like this model's embeddings ([`face_like`]).
    FaceLike,
}

/// A comma-separated list of counts from the environment variable `name` (the benches'
/// `LIVEGATE_BENCH_SIZES`, `LIVEGATE_BENCH_QUERIES`), else `default`.
pub fn counts_from_env(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

impl Data {
    /// From `LIVEGATE_BENCH_DATA` (`gaussian` or `face_like`, the default).
    pub fn from_env() -> Data {
        match std::env::var("LIVEGATE_BENCH_DATA").as_deref() {
            Ok("gaussian") => Data::Gaussian,
            _ => Data::FaceLike,
        }
    }

    /// The benchmark collection of `n` faces.
    pub fn collection(self, n: usize) -> Vec<Vec<f32>> {
        match self {
            Data::Gaussian => collection(n),
            Data::FaceLike => face_like(n, 42 + n as u64),
        }
    }

    /// `count` queries against `enrolled`: enrolled faces seen again.
    pub fn probes(self, enrolled: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
        match self {
            Data::Gaussian => probes(enrolled, count),
            Data::FaceLike => face_like_probes(enrolled, count),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Data::Gaussian => "gaussian",
            Data::FaceLike => "face_like",
        }
    }
}

/// Latent dimensions of [`face_like`] identities.
const FACE_LATENT: usize = 24;
/// Weight of the direction all faces share (`face_like`): sets the different-person mean.
const FACE_COMMON: f32 = 2.5;
/// Weight of the isotropic noise over all 128 dimensions.
const FACE_NOISE: f32 = 0.3;

/// `n` embeddings shaped like the dlib model's on real faces, as measured in the README's
/// calibration: every face shares one dominant direction (different people score ~0.85 on
/// average, 0.76-0.97 over many pairs), and identities differ along a few latent directions
/// (24 here) plus a little noise in all 128. Graph indexes depend on that structure; on
/// [`gaussian_units`] they degenerate towards visiting every node.
pub fn face_like(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let common = gaussian_units(1, 1_000_003).remove(0);
    // A fixed random map from the latent space into the embedding space.
    let basis: Vec<Vec<f32>> = gaussian_units(FACE_LATENT, 1_000_033);
    let latent = latent_units(n, seed);
    let noise = gaussian_units(n, seed ^ 0x5eed);
    (0..n)
        .map(|i| face_vector(&common, &basis, &latent[i], &noise[i]))
        .collect()
}

fn latent_units(n: usize, seed: u64) -> Vec<Vec<f32>> {
    // Gaussian directions of the latent space: the first FACE_LATENT components of fresh units,
    // renormalized.
    gaussian_units(n, seed)
        .into_iter()
        .map(|v| {
            let z: Vec<f32> = v[..FACE_LATENT].to_vec();
            normalize(&z).unwrap_or(z)
        })
        .collect()
}

fn face_vector(common: &[f32], basis: &[Vec<f32>], z: &[f32], noise: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = common.iter().map(|c| FACE_COMMON * c).collect();
    for (w, b) in z.iter().zip(basis) {
        for (x, y) in v.iter_mut().zip(b) {
            *x += w * y;
        }
    }
    for (x, e) in v.iter_mut().zip(noise) {
        *x += FACE_NOISE * e;
    }
    normalize(&v).unwrap_or(v)
}

/// Queries against a [`face_like`] collection: each enrolled face again, moved in a random
/// direction (a same-person score of ~0.96, as a re-submitted selfie).
pub fn face_like_probes(enrolled: &[Vec<f32>], count: usize) -> Vec<Vec<f32>> {
    if enrolled.is_empty() {
        return Vec::new();
    }
    let shift = gaussian_units(count, 7);
    (0..count)
        .map(|q| {
            let v = &enrolled[(q * 7_919) % enrolled.len()];
            let mixed: Vec<f32> = v.iter().zip(&shift[q]).map(|(a, b)| a + 0.3 * b).collect();
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

    #[test]
    fn face_like_scores_resemble_the_model() {
        let a = face_like(400, 9);
        let pairs: Vec<f32> = (0..399).map(|i| cosine(&a[i], &a[i + 1])).collect();
        let mean = pairs.iter().sum::<f32>() / pairs.len() as f32;
        assert!((0.8..0.9).contains(&mean), "different-person mean {mean}");
        let p = face_like_probes(&a, 20);
        for (q, probe) in p.iter().enumerate() {
            let s = cosine(probe, &a[(q * 7_919) % 400]);
            assert!((0.93..0.99).contains(&s), "same-person {s}");
        }
    }
}
