//! Concurrent use of one engine.

use std::sync::Arc;

use livegate_engine::Engine;

use crate::common::{engine, sample};

#[test]
fn analyze_from_several_threads() {
    let images: Vec<_> = ["real.jpg", "spoof_print.jpg", "spoof_replay.jpg"]
        .into_iter()
        .map(sample)
        .collect();
    let expected: Vec<_> = images
        .iter()
        .map(|i| engine().analyze(i).unwrap())
        .collect();
    let shared: Arc<Engine> = Arc::new(engine().clone());
    let images = Arc::new(images);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let engine = Arc::clone(&shared);
            let images = Arc::clone(&images);
            std::thread::spawn(move || {
                (0..2 * images.len())
                    .map(|i| {
                        let k = (i + t) % images.len();
                        (k, engine.analyze(&images[k]).unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        for (k, a) in h.join().unwrap() {
            assert_eq!(a, expected[k]);
        }
    }
}
