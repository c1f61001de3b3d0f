//! Identify latency at 1k, 10k and 100k enrolled faces: one query against a collection of
//! synthetic unit vectors (128-d, Gaussian), through the exact scan and through the HNSW graph.
//! Each query is an enrolled face seen again: its vector plus noise, at cosine ~0.95 to it
//! (a same-person score of this model).
//!
//! `CARGO_TARGET_DIR=/work/target cargo bench -p livegate-engine --bench identify`
//!
//! Synthetic vectors: enrolling 100k real photos is hours of CPU, and the search cost depends
//! only on the count and dimension. Random Gaussian directions are nearly orthogonal, the hard
//! case for a graph (no cluster structure to exploit), so its figures are conservative.
//! After divan, the graph's recall@1 and recall@10 against the exact scan are printed, and the
//! time to build each graph.

use std::sync::LazyLock;
use std::time::Instant;

use divan::{Bencher, black_box};
use livegate_engine::search::{FaceIndex, IndexOptions};
use livegate_engine::{EMBEDDING_DIM, normalize};
use uuid::Uuid;

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const QUERIES: usize = 200;

/// Deterministic xorshift + Box-Muller: no RNG crate needed.
fn gaussian_units(n: usize, seed: u64) -> Vec<Vec<f32>> {
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

fn build(n: usize, exact_below: usize) -> FaceIndex {
    let opts = IndexOptions {
        exact_below,
        ..IndexOptions::default()
    };
    let faces = gaussian_units(n, 42 + n as u64)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (Uuid::from_u128(i as u128), v));
    FaceIndex::build(EMBEDDING_DIM, opts, faces)
}

static EXACT: LazyLock<Vec<FaceIndex>> =
    LazyLock::new(|| SIZES.iter().map(|&n| build(n, usize::MAX)).collect());
static GRAPH: LazyLock<Vec<(FaceIndex, f64)>> = LazyLock::new(|| {
    SIZES
        .iter()
        .map(|&n| {
            let t = Instant::now();
            let index = build(n, 0);
            (index, t.elapsed().as_secs_f64())
        })
        .collect()
});
/// Per size: noisy copies of enrolled faces.
static PROBES: LazyLock<Vec<Vec<Vec<f32>>>> = LazyLock::new(|| {
    SIZES
        .iter()
        .map(|&n| {
            let enrolled = gaussian_units(n, 42 + n as u64);
            let noise = gaussian_units(QUERIES, 7);
            (0..QUERIES)
                .map(|q| {
                    let v = &enrolled[(q * 7_919) % n];
                    // |noise| = 1: cosine to v is about 1 / sqrt(1 + 0.33^2) = 0.95.
                    let mixed: Vec<f32> =
                        v.iter().zip(&noise[q]).map(|(a, b)| a + 0.33 * b).collect();
                    normalize(&mixed).unwrap_or(mixed)
                })
                .collect()
        })
        .collect()
});

fn at(n: usize) -> usize {
    SIZES.iter().position(|&s| s == n).unwrap_or(0)
}

#[divan::bench(args = SIZES, sample_count = 50)]
fn exact_top10(bencher: Bencher, n: usize) {
    let (index, probes) = (&EXACT[at(n)], &PROBES[at(n)]);
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(index.search(&probes[q], 10, -1.0))
    });
}

#[divan::bench(args = SIZES, sample_count = 50)]
fn hnsw_top10(bencher: Bencher, n: usize) {
    let (index, probes) = (&GRAPH[at(n)].0, &PROBES[at(n)]);
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(index.search(&probes[q], 10, -1.0))
    });
}

fn main() {
    divan::main();
    println!("\nHNSW (M=16, ef_construction=200, ef_search=128) against the exact scan:");
    println!("| faces | build (s) | recall@1 | recall@10 |");
    for (i, &n) in SIZES.iter().enumerate() {
        let (graph, secs) = &GRAPH[i];
        let exact = &EXACT[i];
        let (mut r1, mut r10) = (0usize, 0usize);
        for p in PROBES[i].iter() {
            let want = exact.search_exact(p, 10, -1.0);
            let got = graph.search(p, 10, -1.0);
            if got.first().map(|h| h.id) == want.first().map(|h| h.id) {
                r1 += 1;
            }
            r10 += got
                .iter()
                .filter(|h| want.iter().any(|w| w.id == h.id))
                .count();
        }
        println!(
            "| {n} | {secs:.1} | {:.3} | {:.3} |",
            r1 as f64 / QUERIES as f64,
            r10 as f64 / (QUERIES * 10) as f64
        );
    }
}
