use std::process::Command;

fn livegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_livegate"))
}

#[test]
fn check_config_lists_every_problem_with_its_path() {
    let dir = std::env::temp_dir().join(format!("lg-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        r#"
providers:
  didit: { kind: didit, base_url: "http://127.0.0.1:9101", api_key: "${LG_TEST_UNSET_VAR}", timeout_ms: 5000 }
tenants:
  acme:
    keys: ["sha256:abc"]
    threshold: 2
    routing: { strategy: single, providers: [ditid] }
"#,
    )
    .expect("write");
    let out = livegate()
        .arg("check-config")
        .arg(&bad)
        .env_remove("LG_TEST_UNSET_VAR")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "providers.didit.api_key: environment variable LG_TEST_UNSET_VAR is not set",
        "tenants.acme.keys[0]:",
        "tenants.acme.threshold: must be between 0 and 1",
        "tenants.acme.routing.providers[0]: unknown provider \"ditid\"",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }

    let good = dir.join("good.yaml");
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/livegate.example.yaml"
    ))
    .expect("example");
    std::fs::write(&good, example).expect("write");
    let out = livegate()
        .arg("check-config")
        .arg(&good)
        .env("DIDIT_API_KEY", "x")
        .env("KAIROS_APP_ID", "x")
        .env("KAIROS_APP_KEY", "x")
        .env("COLLECTIONS_API_KEY", "x")
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn keys_new_prints_a_key_and_its_hash() {
    let out = livegate().args(["keys", "new"]).output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let key = text
        .lines()
        .find_map(|l| l.strip_prefix("key:  "))
        .expect("key line");
    let hash = text
        .lines()
        .find_map(|l| l.strip_prefix("hash: "))
        .expect("hash line");
    assert_eq!(hash, livegate::config::KeyHash::of_key(key).to_string());
}
