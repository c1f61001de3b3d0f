//! The in-process engine refuses work beyond its queue instead of buffering without bound.

use std::sync::Arc;

use livegate_engine::Engine;
use livegate_providers::embedded::{Embedded, Settings};
use livegate_providers::{CheckRequest, ErrorKind, ImageFormat, ImageInput, Provider};

fn models_dir() -> std::path::PathBuf {
    std::env::var_os("LIVEGATE_MODELS_DIR")
        .map(Into::into)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_refused_as_overloaded() {
    let engine = Engine::load(&models_dir()).expect("models");
    let bytes = std::fs::read(models_dir().join("samples/real.jpg")).expect("sample");
    let decoded = Engine::decode(&bytes).expect("decode");
    let image = ImageInput {
        width: decoded.width(),
        height: decoded.height(),
        decoded: Some(Arc::new(image::DynamicImage::ImageRgb8(decoded))),
        bytes: bytes.into(),
        format: ImageFormat::Jpeg,
    };
    let settings = Settings {
        workers: Some(1),
        max_queue: Some(1),
        ..Settings::default()
    };
    let provider = Arc::new(Embedded::new("builtin", &settings, engine));
    let req = CheckRequest {
        image,
        threshold: 0.5,
        request_id: "r".into(),
        traceparent: None,
    };

    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (p, r) = (provider.clone(), req.clone());
            tokio::spawn(async move { p.check(&r).await })
        })
        .collect();
    let mut ok = 0;
    let mut overloaded = 0;
    for c in calls {
        match c.await.expect("task") {
            Ok(a) => {
                assert!(a.score.expect("score") > 0.9);
                ok += 1;
            }
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::Overloaded, "{e}");
                assert_eq!(e.kind.http_status(), 503);
                overloaded += 1;
            }
        }
    }
    assert!(ok >= 2, "one running and one queued get through ({ok})");
    assert!(
        overloaded >= 1,
        "the rest are refused at once ({overloaded} refused)"
    );

    // Once the queue drains, calls are accepted again.
    assert!(provider.check(&req).await.is_ok());
}
