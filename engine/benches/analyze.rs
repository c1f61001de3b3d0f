//! Benchmarks of the whole liveness check on the 640x480 samples.
//!
//! `cargo bench --profile dev --bench analyze` (models from `LIVEGATE_MODELS_DIR`, else `./models` or the
//! user cache, as `livegate serve` looks them up).
//!
//! - `analyze`: decoded image in, analysis out (detection + both anti-spoofing models).
//! - `analyze_bytes`: JPEG bytes in (decode + EXIF orientation included).
//! - `analyze_threads`: divan runs `analyze` on 1 and 2 threads at once (time per call on
//!   each thread; with 2 threads on 2 cores, throughput = 2 / that time).
//! - After divan, a plain wall-clock throughput run: 2 threads sharing one `Arc<Engine>`,
//!   each analyzing the samples in turn, printed in images per second.

use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use divan::{Bencher, black_box};
use image::RgbImage;
use livegate_engine::Engine;

const SAMPLES: [&str; 3] = ["real.jpg", "spoof_print.jpg", "spoof_replay.jpg"];

fn models_dir() -> PathBuf {
    livegate_engine::default_models_dir()
}

static ENGINE: LazyLock<Arc<Engine>> = LazyLock::new(|| {
    let dir = models_dir();
    match Engine::load(&dir) {
        Ok(e) => Arc::new(e),
        Err(e) => panic!("cannot load the models from {}: {e}", dir.display()),
    }
});

fn bytes(file: &str) -> Vec<u8> {
    // The repository's samples (`samples/`, with their licence).
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../samples")
        .join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decoded(file: &str) -> RgbImage {
    Engine::decode(&bytes(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

#[divan::bench(args = SAMPLES, sample_count = 60)]
fn analyze(bencher: Bencher, file: &str) {
    let engine = &**ENGINE;
    let img = decoded(file);
    bencher.bench(|| engine.analyze(black_box(&img)).map(|a| a.score));
}

#[divan::bench(args = SAMPLES, sample_count = 60)]
fn analyze_bytes(bencher: Bencher, file: &str) {
    let engine = &**ENGINE;
    let data = bytes(file);
    bencher.bench(|| engine.analyze_bytes(black_box(&data)).map(|a| a.score));
}

#[divan::bench(args = SAMPLES, sample_count = 60)]
fn decode_only(bencher: Bencher, file: &str) {
    let data = bytes(file);
    bencher.bench(|| Engine::decode(black_box(&data)).map(|i| i.width()));
}

#[divan::bench(threads = [1, 2], sample_count = 60)]
fn analyze_threads(bencher: Bencher) {
    let engine = &**ENGINE;
    let img = decoded("real.jpg");
    bencher.bench(|| engine.analyze(black_box(&img)).map(|a| a.score));
}

/// Two threads, one shared engine, `duration` of wall-clock time: images per second.
fn throughput(threads: usize, duration: Duration) -> f64 {
    let images = Arc::new(SAMPLES.map(decoded));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let engine = Arc::clone(&ENGINE);
            let images = Arc::clone(&images);
            std::thread::spawn(move || {
                let mut n = 0usize;
                while start.elapsed() < duration {
                    let img = &images[(n + t) % images.len()];
                    if engine.analyze(img).is_ok() {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    divan::main();
    // `cargo test --benches` runs this binary in test mode: skip the long run there.
    if std::env::args().any(|a| a == "--test") {
        return;
    }
    for threads in [1, 2] {
        let ips = throughput(threads, Duration::from_secs(5));
        println!(
            "throughput, {threads} thread(s), shared engine: {ips:.1} images/s ({:.2} ms/image)",
            1000.0 / ips
        );
    }
}
