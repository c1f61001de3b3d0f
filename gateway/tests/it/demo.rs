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
    let mut child = Command::new(env!("CARGO_BIN_EXE_livegate"))
        .arg("serve")
        .env_remove("LIVEGATE_CONFIG")
        .env("DATABASE_URL", format!("sqlite:{}", db.display()))
        .env("LIVEGATE_LISTEN", format!("127.0.0.1:{port}"))
        .env("LIVEGATE_MODELS_DIR", models_dir())
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
