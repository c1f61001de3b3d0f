//! The README's first command: `livegate serve` with no config file gives real verdicts from
//! the built-in engine to a `demo` tenant whose key is printed once.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{Kill, free_port};

fn models_dir() -> String {
    std::env::var("LIVEGATE_MODELS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models").to_owned())
}

fn start(db: &std::path::Path, port: u16) -> (Kill, Vec<String>) {
    start_with(db, port, &models_dir())
}

/// Its stdout up to the key (or the note that there is one), or to its end if it stops.
fn start_with(db: &std::path::Path, port: u16, models: &str) -> (Kill, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .arg("serve")
        .env_remove("LIVEGATE_CONFIG")
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .env("LIVEGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("LIVEGATE_MODELS_DIR", models)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn livegate");
    let stdout = child.stdout.take().expect("stdout");
    let guard = Kill(child);
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        let done = line.starts_with("Try:") || line.contains("printed at first start");
        lines.push(line);
        if done {
            break;
        }
    }
    (guard, lines)
}

async fn wait_ready(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/readyz")).await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("livegate did not become ready");
}

async fn check(base: &str, key: &str, sample: &str) -> serde_json::Value {
    let bytes = std::fs::read(format!("{}/samples/{sample}", models_dir())).expect("sample");
    let resp = crate::harness::post_selfie(&reqwest::Client::new(), base, key, bytes, sample).await;
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_config_gives_real_verdicts() {
    let dir = std::env::temp_dir().join(format!("lg-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("demo.db");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");

    let (guard, lines) = start(&db, port);
    let key = lines
        .iter()
        .find_map(|l| l.split("stored only as a hash): ").nth(1))
        .unwrap_or_else(|| panic!("no key printed: {lines:?}"))
        .trim()
        .to_owned();
    wait_ready(&base).await;

    let real = check(&base, &key, "real.jpg").await;
    assert_eq!(real["decision"], "approved", "{real}");
    assert!(real["score"].as_f64().expect("score") >= 0.9);
    let print = check(&base, &key, "spoof_print.jpg").await;
    assert_eq!(print["decision"], "declined", "{print}");
    assert!(
        print["warnings"]
            .to_string()
            .contains("LIVENESS_FACE_ATTACK")
    );
    drop(guard);

    // Both rows are in the store; the key is not printed again, and still works.
    let store = livegate::store::connect(&format!("sqlite:{}", db.display()))
        .await
        .expect("store");
    let f = livegate::store::ListFilter {
        limit: 10,
        ..Default::default()
    };
    let rows = store.list_verifications("demo", &f).await.expect("rows");
    let decisions: Vec<_> = rows
        .iter()
        .map(|r| r.decision.clone().unwrap_or_default())
        .collect();
    assert_eq!(decisions, ["declined", "approved"]);

    let port = free_port();
    let (_guard, lines) = start(&db, port);
    assert!(
        !lines.iter().any(|l| l.contains(&key)),
        "the key is shown only once"
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    assert_eq!(check(&base, &key, "real.jpg").await["decision"], "approved");
}

fn printed_key(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .find_map(|l| l.split("stored only as a hash): ").nth(1))
        .map(|k| k.trim().to_owned())
}

/// A start that cannot serve (no models) shows no key, so none is lost; the first start that
/// serves shows one; `livegate keys demo` replaces it, and the next start serves the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_key_is_shown_once_serving_and_can_be_replaced() {
    let dir = std::env::temp_dir().join(format!("lg-demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = dir.join("demo.db");

    let missing = dir.join("no-models");
    let (_failed, lines) = start_with(&db, free_port(), &missing.display().to_string());
    assert_eq!(
        printed_key(&lines),
        None,
        "a key was shown by a start that failed: {lines:?}"
    );
    let store = livegate::store::connect(&format!("sqlite:{}", db.display()))
        .await
        .expect("store");
    assert_eq!(
        store
            .setting("demo_tenant_key_hash")
            .await
            .expect("setting"),
        None,
        "a key nobody saw was stored"
    );

    let port = free_port();
    let (guard, lines) = start(&db, port);
    let first = printed_key(&lines).unwrap_or_else(|| panic!("no key printed: {lines:?}"));
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    assert_eq!(
        check(&base, &first, "real.jpg").await["decision"],
        "approved"
    );
    drop(guard);

    let out = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .args(["keys", "demo"])
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .output()
        .expect("keys demo");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let second =
        printed_key(&lines).unwrap_or_else(|| panic!("keys demo printed no key: {lines:?}"));
    assert_ne!(first, second);

    let port = free_port();
    let (_guard, lines) = start(&db, port);
    assert_eq!(printed_key(&lines), None, "{lines:?}");
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base).await;
    assert_eq!(
        check(&base, &second, "real.jpg").await["decision"],
        "approved"
    );
    let bytes = std::fs::read(format!("{}/samples/real.jpg", models_dir())).expect("sample");
    let old =
        crate::harness::post_selfie(&reqwest::Client::new(), &base, &first, bytes, "real.jpg")
            .await;
    assert_eq!(old.status().as_u16(), 401, "the replaced key still works");
}
