//! `livegate models fetch` against a local HTTP server standing in for the public sources.

use std::path::PathBuf;

use axum::extract::Path;
use axum::http::StatusCode;

fn shared_models() -> PathBuf {
    PathBuf::from(
        std::env::var("LIVEGATE_MODELS_DIR").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models").to_owned()
        }),
    )
}

/// Serves the shared model files; `corrupt` flips a byte of that one file.
async fn mirror(corrupt: Option<&'static str>) -> String {
    let app = axum::Router::new().route(
        "/m/{file}",
        axum::routing::get(move |Path(file): Path<String>| async move {
            match std::fs::read(shared_models().join(&file)) {
                Ok(mut bytes) => {
                    if corrupt == Some(file.as_str()) && !bytes.is_empty() {
                        bytes[0] ^= 0xFF;
                    }
                    (StatusCode::OK, bytes)
                }
                Err(_) => (StatusCode::NOT_FOUND, Vec::new()),
            }
        }),
    );
    let addr = livegate_simulators::spawn(app).await.expect("mirror");
    format!("http://{addr}/m")
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("lg-models-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&d).expect("dir");
    d
}

#[tokio::test]
async fn fetch_downloads_verifies_and_the_engine_loads_the_result() {
    let base = mirror(None).await;
    let dir = temp_dir();
    let m = livegate::cli::models::manifest().expect("manifest");
    let report = livegate::cli::models::fetch(&m, &dir, Some(&base))
        .await
        .expect("fetch");
    assert_eq!(report.len(), m.files.len());
    assert!(
        report
            .iter()
            .all(|r| matches!(r, livegate::cli::models::Fetched::Downloaded(_)))
    );
    livegate_engine::verify_models(&dir).expect("fetched models verify");

    // A second run finds everything in place and downloads nothing.
    let again = livegate::cli::models::fetch(&m, &dir, Some("http://127.0.0.1:9/unreachable"))
        .await
        .expect("fetch");
    assert!(
        again
            .iter()
            .all(|r| matches!(r, livegate::cli::models::Fetched::AlreadyPresent(_)))
    );
}

#[tokio::test]
async fn a_corrupted_download_is_refused_and_not_installed() {
    let base = mirror(Some("MiniFASNetV2.onnx")).await;
    let dir = temp_dir();
    let m = livegate::cli::models::manifest().expect("manifest");
    let err = livegate::cli::models::fetch(&m, &dir, Some(&base))
        .await
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("MiniFASNetV2.onnx") && msg.contains("4eed38f0bde33c9b"),
        "{msg}"
    );
    assert!(!dir.join("MiniFASNetV2.onnx").exists());
    assert!(!dir.join(".MiniFASNetV2.onnx.partial").exists());
}

#[tokio::test]
async fn files_without_a_public_url_need_a_mirror() {
    let m = livegate::cli::models::manifest().expect("manifest");
    let err = livegate::cli::models::fetch(&m, &temp_dir(), None)
        .await
        .expect_err("must fail");
    assert!(err.to_string().contains("--base-url"), "{err}");
}
