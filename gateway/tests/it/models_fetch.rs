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

/// The README's first command on a machine with no models at all: zero-config
/// `serve` says what is missing, fetches it into the user cache (from a local mirror here:
/// no internet), serves, and approves the repository's sample selfie. `--offline` refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_config_serve_fetches_missing_models_then_serves() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let base = mirror(None).await;
    let home = temp_dir();
    let work = temp_dir();
    let port = crate::harness::free_port();
    let serve = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"));
        c.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(&work)
            .env("HOME", &home)
            .env_remove("XDG_CACHE_HOME")
            .env_remove("LIVEGATE_MODELS_DIR")
            .env_remove("LIVEGATE_CONFIG")
            .env_remove("DATABASE_URL")
            .env("LIVEGATE_MODELS_URL", &base)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        c
    };

    // Offline, nothing can come: a clear refusal naming the directory, no server.
    // Bounded: an `--offline` that fetched anyway would go on to serve, never to exit.
    let mut offline = crate::harness::Kill(serve(&["--offline"]).spawn().expect("run offline"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = offline.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "--offline did not refuse: it went on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut err = String::new();
    if let Some(mut e) = offline.0.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).expect("stderr");
    }
    let cache = home.join(".cache/livegate/models");
    assert!(
        err.contains("--offline") && err.contains(&cache.display().to_string()),
        "{err}"
    );
    assert!(!cache.join("SHA256SUMS").exists());

    let mut child = serve(&[]).spawn().expect("spawn serve");
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let errors = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(key) = line.split("stored only as a hash): ").nth(1) {
                let _ = tx.send(key.trim().to_owned());
            }
        }
    });
    let mut guard = crate::harness::Kill(child);
    let deadline = Instant::now() + Duration::from_secs(240);
    let key = loop {
        if let Ok(k) = rx.try_recv() {
            break k;
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            let _ = guard.0.wait();
            panic!("serve exited with {status}: {:?}", errors.join());
        }
        assert!(Instant::now() < deadline, "no demo key printed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        cache.join("SHA256SUMS").is_file(),
        "models not in the user cache"
    );
    let selfie = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/real.jpg"))
        .expect("the repository's sample selfie");
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(selfie).file_name("real.jpg"),
    );
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/liveness"))
        .bearer_auth(&key)
        .multipart(form)
        .send()
        .await
        .expect("liveness");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["decision"], "approved", "{body}");
    drop(guard);
    let log = errors.join().expect("stderr").join("\n");
    assert!(log.contains("fetching them from"), "{log}");
    assert!(log.contains("face_embedding_dlib_resnet_v1.onnx"), "{log}");
}
