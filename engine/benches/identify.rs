//! Identify latency at 1k, 10k and 100k enrolled faces: one query against a collection of
//! synthetic embeddings (`livegate_engine::synthetic`), through the exact scan and through the
//! in-process HNSW graph. `LIVEGATE_BENCH_DATA=face_like` (default: shaped like this model's
//! embeddings) or `gaussian` (independent directions, the worst case for a graph). Each query
//! is an enrolled face seen again, at a same-person score of this model (~0.95).
//! The pgvector column of the README's table comes from livegate's `identify_pgvector` bench,
//! on the same vectors.
//!
//! `cargo bench --profile dev --bench identify`
//!
//! `LIVEGATE_BENCH_SIZES` (default `1000,10000,100000`) changes the collection sizes.
//!
//! After divan, the graph's recall@1 and recall@10 against the exact scan are printed, and the
//! time to build each graph.

use std::sync::LazyLock;
use std::time::Instant;

use divan::{Bencher, black_box};
use livegate_engine::search::{FaceIndex, IndexOptions};
use livegate_engine::{EMBEDDING_DIM, synthetic};
use uuid::Uuid;

/// `LIVEGATE_BENCH_SIZES` (default `1000,10000,100000`), as in livegate's `identify_pgvector`.
static SIZES: LazyLock<Vec<usize>> =
    LazyLock::new(|| synthetic::counts_from_env("LIVEGATE_BENCH_SIZES", &[1_000, 10_000, 100_000]));

fn sizes() -> Vec<usize> {
    SIZES.clone()
}
const QUERIES: usize = 200;

static DATA: LazyLock<synthetic::Data> = LazyLock::new(synthetic::Data::from_env);

fn build(n: usize, exact_below: usize) -> FaceIndex {
    let opts = IndexOptions {
        exact_below,
        ..IndexOptions::default()
    };
    let faces = DATA
        .collection(n)
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
        .map(|&n| DATA.probes(&DATA.collection(n), QUERIES))
        .collect()
});

fn at(n: usize) -> usize {
    SIZES.iter().position(|&s| s == n).unwrap_or(0)
}

#[divan::bench(args = sizes(), sample_count = 50)]
fn exact_top10(bencher: Bencher, n: usize) {
    let (index, probes) = (&EXACT[at(n)], &PROBES[at(n)]);
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(index.search(&probes[q], 10, -1.0))
    });
}

#[divan::bench(args = sizes(), sample_count = 50)]
fn hnsw_top10(bencher: Bencher, n: usize) {
    let (index, probes) = (&GRAPH[at(n)].0, &PROBES[at(n)]);
    let mut q = 0;
    bencher.bench_local(|| {
        q = (q + 1) % QUERIES;
        black_box(index.search(&probes[q], 10, -1.0))
    });
}

fn main() {
    println!("data: {}", DATA.name());
    divan::main();
    println!(
        "\nHNSW (M=16, ef_construction=200, ef_search=128) against the exact scan, {} data:",
        DATA.name()
    );
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
