//! `livegate models fetch` against a local HTTP server standing in for the public origins, and
//! the golden tests of the models livegate converts from them.
//!
//! The mirror holds byte-identical copies of the origin artifacts: the archives the manifest
//! names (a PyPI sdist and wheel, an npm tarball), downloaded once from their registries into a
//! cache outside the clone, and the files published as ONNX, copied from the shared models,
//! which hold the same bytes. The fetch under test never leaves this machine.

use std::path::{Path as FsPath, PathBuf};

use axum::extract::Path;
use axum::http::StatusCode;
use livegate::cli::models::{Fetched, Manifest, manifest};
use sha2::{Digest, Sha256};

fn shared_models() -> PathBuf {
    PathBuf::from(
        std::env::var("LIVEGATE_MODELS_DIR").unwrap_or_else(|_| {
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models").to_owned()
        }),
    )
}

fn sha256_of(path: &FsPath) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| hex::encode(Sha256::digest(&b)))
}

/// The origins cache: `LIVEGATE_MODEL_ORIGINS`, else `~/.cache/livegate-test/model-origins`.
fn origins_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LIVEGATE_MODEL_ORIGINS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/livegate-test/model-origins")
}

static ORIGINS: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// Fills the origins cache once per run; every file is checked against its pinned hash.
async fn origins() -> &'static FsPath {
    ORIGINS
        .get_or_init(|| async {
            let dir = origins_dir();
            std::fs::create_dir_all(&dir).expect("origins cache");
            let m = manifest().expect("manifest");
            for f in &m.files {
                let (name, sha, url) = match &f.archive {
                    Some(a) => (a.file_name().to_owned(), a.sha256.clone(), a.url.clone()),
                    None => (f.file.clone(), f.sha256.clone(), String::new()),
                };
                let target = dir.join(&name);
                if sha256_of(&target).as_deref() == Some(sha.as_str()) {
                    continue;
                }
                let bytes = if f.archive.is_some() {
                    // From the registry that publishes it (setup, not the fetch under test).
                    let r = reqwest::get(&url).await.unwrap_or_else(|e| {
                        panic!("test setup: downloading the origin {url} failed: {e}")
                    });
                    assert!(
                        r.status().is_success(),
                        "test setup: {url}: HTTP {}",
                        r.status()
                    );
                    r.bytes().await.expect("origin body").to_vec()
                } else {
                    std::fs::read(shared_models().join(&f.file)).unwrap_or_else(|e| {
                        panic!("test setup: {} from the shared models: {e}", f.file)
                    })
                };
                let got = hex::encode(Sha256::digest(&bytes));
                assert_eq!(got, sha, "test setup: {name} does not have its pinned hash");
                let tmp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
                std::fs::write(&tmp, &bytes).expect("write origin");
                std::fs::rename(&tmp, &target).expect("install origin");
            }
            dir
        })
        .await
}

/// Serves the origins; `corrupt` flips a byte of that one file.
async fn mirror(corrupt: Option<&str>) -> String {
    let dir = origins().await.to_owned();
    let corrupt = corrupt.map(str::to_owned);
    let app = axum::Router::new().route(
        "/m/{file}",
        axum::routing::get(move |Path(file): Path<String>| {
            let (dir, corrupt) = (dir.clone(), corrupt.clone());
            async move {
                match tokio::fs::read(dir.join(&file)).await {
                    Ok(mut bytes) => {
                        if corrupt.as_deref() == Some(file.as_str()) && !bytes.is_empty() {
                            let mid = bytes.len() / 2;
                            bytes[mid] ^= 0xFF;
                        }
                        (StatusCode::OK, bytes)
                    }
                    Err(_) => (StatusCode::NOT_FOUND, Vec::new()),
                }
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

static CONVERTED: tokio::sync::OnceCell<PathBuf> = tokio::sync::OnceCell::const_new();

/// One fetch from the mirror, shared by the tests that only read its result.
async fn fetched_models() -> &'static FsPath {
    CONVERTED
        .get_or_init(|| async {
            let base = mirror(None).await;
            let dir = temp_dir();
            let m = manifest().expect("manifest");
            livegate::cli::models::fetch(&m, &dir, Some(&base))
                .await
                .expect("fetch from the mirror");
            dir
        })
        .await
}

#[test]
fn every_model_has_a_public_origin() {
    let m: Manifest = manifest().expect("manifest");
    for f in &m.files {
        match (&f.url, &f.archive) {
            (Some(u), None) => assert!(u.starts_with("https://"), "{}: {u}", f.file),
            (None, Some(a)) => {
                assert!(a.url.starts_with("https://"), "{}: {}", f.file, a.url);
                assert_eq!(a.sha256.len(), 64, "{}", f.file);
                assert!(!a.members.is_empty(), "{}", f.file);
                assert!(
                    a.convert
                        .parse::<livegate_engine::convert::Format>()
                        .is_ok()
                );
            }
            _ => panic!("{}: needs exactly one of url and archive", f.file),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_downloads_converts_verifies_and_the_engine_loads_the_result() {
    let base = mirror(None).await;
    let dir = temp_dir();
    let m = manifest().expect("manifest");
    let report = livegate::cli::models::fetch(&m, &dir, Some(&base))
        .await
        .expect("fetch");
    assert_eq!(report.len(), m.files.len());
    assert!(report.iter().all(|r| matches!(r, Fetched::Downloaded(_))));
    livegate_engine::verify_models(&dir).expect("fetched models verify");
    livegate_engine::Engine::load(&dir).expect("the engine loads the fetched models");
    // Archives are not kept, nothing half-written is left.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A second run finds everything in place and downloads nothing.
    let again = livegate::cli::models::fetch(&m, &dir, Some("http://127.0.0.1:9/unreachable"))
        .await
        .expect("fetch");
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Fetched::AlreadyPresent(_)))
    );
}

#[tokio::test]
async fn a_corrupted_download_is_refused_and_not_installed() {
    let base = mirror(Some("MiniFASNetV2.onnx")).await;
    let dir = temp_dir();
    let m = manifest().expect("manifest");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_origin_archive_is_refused_before_anything_is_converted() {
    let m = manifest().expect("manifest");
    let (file, archive) = m
        .files
        .iter()
        .find_map(|f| f.archive.as_ref().map(|a| (f.file.clone(), a.clone())))
        .expect("a converted model");
    let name = archive.file_name();
    let base = mirror(Some(name)).await;
    let dir = temp_dir();
    let err = livegate::cli::models::fetch(&m, &dir, Some(&base))
        .await
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains(&file) && msg.contains(name) && msg.contains(&archive.sha256[..16]),
        "{msg}"
    );
    assert!(!dir.join(&file).exists());
    assert!(!dir.join(format!(".{name}.partial")).exists());
    assert!(!dir.join("SHA256SUMS").exists());
}

#[tokio::test]
async fn no_network_names_the_file_the_url_and_what_to_do() {
    let m = manifest().expect("manifest");
    let err = livegate::cli::models::fetch(&m, &temp_dir(), Some("http://127.0.0.1:9/nowhere"))
        .await
        .expect_err("must fail");
    let msg = err.to_string();
    assert!(
        msg.contains("127.0.0.1:9/nowhere/") && msg.contains("LIVEGATE_MODELS_URL"),
        "{msg}"
    );
}

/// The models livegate converted score as the files shipped before did: every output of each
/// converted network within 1e-4 of the old file's on the same input, and the engine's
/// verdicts, scores and embeddings on the sample images within 1e-4 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_converted_models_score_as_the_shipped_files() {
    use tract_onnx::prelude::*;
    let ours = fetched_models().await;
    let shipped = shared_models();
    let m = manifest().expect("manifest");
    for f in m.files.iter().filter(|f| f.archive.is_some()) {
        let load = |dir: &FsPath| {
            tract_onnx::onnx()
                .model_for_path(dir.join(&f.file))
                .and_then(|m| m.into_optimized())
                .and_then(|m| m.into_runnable())
                .unwrap_or_else(|e| panic!("{}: {e}", f.file))
        };
        let (a, b) = (load(ours), load(&shipped));
        let fact = a.model().input_fact(0).expect("input").clone();
        let mut shape: Vec<usize> = fact
            .shape
            .iter()
            .map(|d| d.to_i64().map(|v| v as usize).unwrap_or(1))
            .collect();
        if shape.first() == Some(&0) {
            shape[0] = 1;
        }
        // A deterministic input spread over the value range each network takes.
        let n: usize = shape.iter().product();
        let scale = if f.file.contains("embedding") {
            255.0
        } else {
            2.0
        };
        let offset = if f.file.contains("embedding") {
            0.0
        } else {
            -1.0
        };
        let data: Vec<f32> = (0..n)
            .map(|i| offset + scale * (((i * 7919) % 1000) as f32 / 1000.0))
            .collect();
        let input = Tensor::from_shape(&shape, &data).expect("input");
        let oa = a.run(tvec!(input.clone().into())).expect("run ours");
        let ob = b.run(tvec!(input.into())).expect("run shipped");
        assert_eq!(oa.len(), ob.len(), "{}: output count", f.file);
        // Outputs are matched by shape: the engine reads them so.
        let mut worst = 0f32;
        for x in &oa {
            let y = ob
                .iter()
                .find(|y| y.shape() == x.shape())
                .unwrap_or_else(|| {
                    panic!("{}: no shipped output of shape {:?}", f.file, x.shape())
                });
            let f32s = |t: &TValue| {
                t.try_as_plain_ram()
                    .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
                    .expect("f32 output")
            };
            let (x, y) = (f32s(x), f32s(y));
            for (p, q) in x.iter().zip(&y) {
                worst = worst.max((p - q).abs() / q.abs().max(1.0));
            }
        }
        assert!(worst <= 1e-4, "{}: outputs differ by {worst}", f.file);
    }

    let ea = livegate_engine::Engine::load(ours).expect("engine on converted models");
    let eb = livegate_engine::Engine::load(&shipped).expect("engine on shipped models");
    for sample in ["real.jpg", "spoof_print.jpg", "spoof_replay.jpg"] {
        let bytes = std::fs::read(shipped.join("samples").join(sample)).expect("sample");
        let img = livegate_engine::Engine::decode(&bytes).expect("decode");
        let (x, y) = (
            ea.analyze(&img).expect("ours"),
            eb.analyze(&img).expect("shipped"),
        );
        let (sx, sy) = (x.score.expect("a face"), y.score.expect("a face"));
        assert!((sx - sy).abs() <= 1e-4, "{sample}: liveness {sx} vs {sy}");
        assert_eq!(x.faces.len(), y.faces.len(), "{sample}: faces");
        let (fx, fy) = (x.face().expect("face"), y.face().expect("face"));
        assert!(
            (fx.confidence - fy.confidence).abs() <= 1e-4,
            "{sample}: detector confidence {} vs {}",
            fx.confidence,
            fy.confidence
        );
        let (vx, vy) = (
            ea.embed(&img, fx).expect("embed").expect("embedding"),
            eb.embed(&img, fy).expect("embed").expect("embedding"),
        );
        let cos = livegate_engine::cosine(&vx, &vy);
        assert!(
            cos >= 1.0 - 1e-4,
            "{sample}: embeddings differ, cosine {cos}"
        );
    }
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
    // A clone of the repository with nothing beside it: what a new user has.
    let work = temp_dir().join("livegate");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let cloned = std::process::Command::new("git")
        .args(["clone", "-q", "--no-hardlinks", root])
        .arg(&work)
        .status()
        .expect("git clone");
    assert!(cloned.success(), "git clone of {root}");
    // Nothing beside the clone: no models, no sibling directories of the project.
    let beside: Vec<_> = std::fs::read_dir(work.parent().expect("parent"))
        .expect("read dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(beside, vec![std::ffi::OsString::from("livegate")]);
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
    let selfie = std::fs::read(work.join("samples/real.jpg")).expect("the clone's sample selfie");
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
    assert!(log.contains("converted from"), "{log}");
}

/// `engine serve` on a machine without models: `--offline` refuses naming the directory; else
/// it fetches them (from the mirror here) into the user cache and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_serve_fetches_missing_models_too() {
    use std::time::{Duration, Instant};

    let base = mirror(None).await;
    let home = temp_dir();
    let port = crate::harness::free_port();
    let db = home.join("engine.db");
    let run = |extra: &[&str]| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"));
        c.args(["engine", "serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .current_dir(&home)
            .env("HOME", &home)
            .env("DATABASE_URL", format!("sqlite:{}", db.display()))
            .env_remove("XDG_CACHE_HOME")
            .env_remove("LIVEGATE_MODELS_DIR")
            .env("LIVEGATE_MODELS_URL", &base)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        c
    };
    let offline = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::from(run(&["--offline"])).output(),
    )
    .await
    .expect("--offline did not refuse: it went on")
    .expect("run");
    let err = String::from_utf8_lossy(&offline.stderr);
    let cache = home.join(".cache/livegate/models");
    assert!(!offline.status.success());
    assert!(
        err.contains("--offline") && err.contains(&cache.display().to_string()),
        "{err}"
    );

    let mut guard = crate::harness::Kill(run(&[]).spawn().expect("spawn"));
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = guard.0.try_wait() {
            let mut e = String::new();
            if let Some(mut s) = guard.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut s, &mut e);
            }
            panic!("engine serve exited with {status}: {e}");
        }
        assert!(Instant::now() < deadline, "engine serve did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    livegate_engine::verify_models(&cache).expect("models in the user cache");
}
