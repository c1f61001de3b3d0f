//! The example config against `livegate simulate`: both as subprocesses, one selfie per tenant,
//! each answered by the provider the example routes that tenant to.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{COLL_SECRET, Kill, free_port, jpeg, sim_requests_at};

fn spawn(args: &[&str], env: &[(&str, String)], log: &Path) -> Kill {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_livegate"));
    cmd.args(args)
        .env_remove("LIVEGATE_CONFIG")
        .env_remove("LIVEGATE_LISTEN")
        .env("LIVEGATE_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    Kill(cmd.spawn().expect("spawn livegate"))
}

fn logs(dir: &Path) -> String {
    ["simulate.log", "serve.log"]
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
            format!("--- {f}\n{text}")
        })
        .collect()
}

/// Polls `url` until it answers 200; panics with the processes' logs after 60 s.
async fn wait_for(url: &str, dir: &Path, children: &mut [&mut Kill]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(url).await
            && r.status().is_success()
        {
            return;
        }
        for child in children.iter_mut() {
            if let Ok(Some(status)) = child.0.try_wait() {
                panic!("livegate exited with {status}:\n{}", logs(dir));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} did not come up:\n{}", logs(dir));
}

fn example() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/livegate.example.yaml"
    ))
    .expect("example config")
}

/// `livegate simulate` and `livegate serve` on the example config, both up: the simulators on
/// free ports in place of the example's fixed ones, `extra` YAML appended to the config, the
/// example's placeholder secrets in the environment.
pub(crate) struct Example {
    pub didit: u16,
    pub kairos: u16,
    pub engine: u16,
    /// The gateway's base URL.
    pub base: String,
    /// What `serve` runs with (and a command on the same config needs).
    pub env: Vec<(&'static str, String)>,
    pub sims: Kill,
    pub serve: Kill,
}

pub(crate) async fn start_example(dir: &Path, extra: &str) -> Example {
    let (didit, kairos, engine, gateway) = (free_port(), free_port(), free_port(), free_port());
    let mut config = example();
    for (fixed, port) in [(9101, didit), (9102, kairos), (9103, engine)] {
        let from = format!("http://127.0.0.1:{fixed}\"");
        assert!(config.contains(&from), "the example points at {from}");
        config = config.replace(&from, &format!("http://127.0.0.1:{port}\""));
    }
    config.push_str(extra);
    let config_path = dir.join("livegate.yaml");
    std::fs::write(&config_path, config).expect("write config");

    let addr = |port: u16| format!("127.0.0.1:{port}");
    let mut sims = spawn(
        &[
            "simulate",
            "--didit",
            &addr(didit),
            "--kairos",
            &addr(kairos),
            "--collections",
            &addr(engine),
        ],
        &[],
        &dir.join("simulate.log"),
    );
    let env = vec![
        ("DIDIT_API_KEY", "didit-example-key".to_owned()),
        ("KAIROS_APP_ID", "kairos-example-id".to_owned()),
        ("KAIROS_APP_KEY", "kairos-example-key".to_owned()),
        // The engine checks the key's shape: fr_live_/fr_test_ + 32 hex.
        ("COLLECTIONS_API_KEY", COLL_SECRET.to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite:{}", dir.join("livegate.db").display()),
        ),
        ("LIVEGATE_MODELS_DIR", crate::engine_server::models_dir()),
    ];
    let config_arg = config_path.display().to_string();
    let mut serve = spawn(
        &["serve", "--config", &config_arg, "--listen", &addr(gateway)],
        &env,
        &dir.join("serve.log"),
    );
    for port in [didit, kairos, engine] {
        let url = format!("http://127.0.0.1:{port}/_sim/requests");
        wait_for(&url, dir, &mut [&mut sims, &mut serve]).await;
    }
    let base = format!("http://127.0.0.1:{gateway}");
    wait_for(&format!("{base}/readyz"), dir, &mut [&mut sims, &mut serve]).await;
    Example {
        didit,
        kairos,
        engine,
        base,
        env,
        sims,
        serve,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_tenant_works_against_livegate_simulate() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("lg-simulate-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let Example {
        didit,
        kairos,
        engine,
        base,
        sims,
        serve,
        ..
    } = start_example(&dir, "").await;

    // The example's tenants: their keys are the plain texts of the hashes in its comments.
    let client = reqwest::Client::new();
    let cases = [
        ("foo", "acme", "didit", didit, "user_image"),
        ("bar", "globex", "kairos", kairos, "selfie"),
        ("baz", "initech", "engine", engine, "image"),
    ];
    for (i, (key, tenant, provider, port, field)) in cases.into_iter().enumerate() {
        let resp =
            crate::harness::post_selfie(&client, &base, key, jpeg(200 + i as u8), "selfie.jpg")
                .await;
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.expect("json");
        assert_eq!(status, 200, "{tenant}: {body}\n{}", logs(&dir));
        assert_eq!(body["provider"], provider, "{tenant}: {body}");
        assert!(
            matches!(
                body["decision"].as_str(),
                Some("approved" | "declined" | "review")
            ),
            "{tenant}: {body}"
        );
        assert_eq!(body["faces_detected"], 1, "{tenant}: {body}");
        assert!(body["score"].as_f64().is_some(), "{tenant}: {body}");
        assert_eq!(body["attempts"][0]["outcome"], "ok", "{tenant}: {body}");
        assert_eq!(
            body["attempts"][0]["upstream_status"], 200,
            "{tenant}: {body}"
        );

        // The tenant's own simulator got the selfie, in its vendor's image field.
        let requests = sim_requests_at(&client, &format!("http://127.0.0.1:{port}")).await;
        assert_eq!(requests.len(), 1, "{tenant}: {requests:?}");
        assert!(
            requests[0]["files"].get(field).is_some(),
            "{tenant}: {requests:?}"
        );
    }

    // The tenant on the built-in engine, with the repository's sample selfie; its Didit shadow
    // gets the same image in the background.
    let sample = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../samples/real.jpg"))
        .expect("samples/real.jpg");
    let resp = crate::harness::post_selfie(&client, &base, "qux", sample, "real.jpg").await;
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(status, 200, "hooli: {body}\n{}", logs(&dir));
    assert_eq!(body["provider"], "builtin", "hooli: {body}");
    assert_eq!(body["decision"], "approved", "hooli: {body}");
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let requests = sim_requests_at(&client, &format!("http://127.0.0.1:{didit}")).await;
        if requests.len() == 2 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the shadow never reached Didit: {requests:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(serve);
    drop(sims);
    let _ = std::fs::remove_dir_all(&dir);
}
