use std::process::Command;

fn livegate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_livegate"))
}

/// The command succeeded and printed exactly `expected`.
fn assert_printed(out: &std::process::Output, expected: &str) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
}

/// A new, empty directory for one test's files.
fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lg-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn check_config_lists_every_problem_with_its_path() {
    let dir = scratch_dir();
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
        .env("LIVEGATE_MODELS_DIR", shared_models())
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The built-in engine's models, beside the checkout (tests only).
fn shared_models() -> String {
    std::env::var("LIVEGATE_MODELS_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/models").to_owned())
}

/// What parses but would fail or do nothing at run time: a misspelt warning code, a file with
/// no tenants (an empty one included), a built-in engine without its models.
#[test]
fn check_config_refuses_what_would_silently_do_nothing() {
    let dir = scratch_dir();
    let check = |name: &str, yaml: &str, models: &str| {
        let path = dir.join(name);
        std::fs::write(&path, yaml).expect("write");
        let out = livegate()
            .arg("check-config")
            .arg(&path)
            .env("LIVEGATE_MODELS_DIR", models)
            .output()
            .expect("run");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let tenant = |extra: &str| {
        format!(
            r#"
providers:
  builtin: {{ kind: embedded }}
tenants:
  acme:
    keys: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
    routing: {{ strategy: single, providers: [builtin] }}
{extra}"#
        )
    };
    let models = shared_models();

    let (code, err) = check("ok.yaml", &tenant(""), &models);
    assert_eq!(code, Some(0), "{err}");

    let (code, err) = check(
        "typo.yaml",
        &tenant(
            "    warnings: { LOW_FACE_QUALTY: ignore }
",
        ),
        &models,
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains("tenants.acme.warnings.LOW_FACE_QUALTY: unknown warning code (did you mean LOW_FACE_QUALITY?)"),
        "{err}"
    );

    for (name, yaml) in [
        ("empty.yaml", ""),
        (
            "none.yaml",
            "providers: {}
",
        ),
    ] {
        let (code, err) = check(name, yaml, &models);
        assert_eq!(code, Some(2), "{name}");
        assert!(err.contains("tenants: no tenants"), "{name}: {err}");
    }

    let nowhere = dir.join("no-models-here");
    let (code, err) = check("nomodels.yaml", &tenant(""), &nowhere.display().to_string());
    assert_eq!(code, Some(2));
    assert!(
        err.contains("providers.builtin: the built-in engine's models are not in")
            && err.contains("livegate models fetch"),
        "{err}"
    );
}

/// A command given a config works on that config's database, never on a new file it made up.
#[test]
fn credits_add_uses_the_configs_database_or_refuses() {
    let dir = scratch_dir();
    let yaml = |database: &str| {
        format!(
            r#"{database}
providers:
  didit: {{ kind: didit, base_url: "http://127.0.0.1:9101", api_key: "k", timeout_ms: 5000 }}
tenants:
  acme:
    keys: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
    routing: {{ strategy: single, providers: [didit] }}
    credits: {{ initial: 100 }}
"#
        )
    };
    let run = |config: &std::path::Path| {
        livegate()
            .args(["credits", "add", "acme", "5", "--config"])
            .arg(config)
            .env_remove("DATABASE_URL")
            .current_dir(&dir)
            .output()
            .expect("run")
    };
    let bare = dir.join("bare.yaml");
    std::fs::write(&bare, yaml("")).expect("write");
    let out = run(&bare);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no database for") && err.contains("database_url"),
        "{err}"
    );
    assert!(
        !dir.join("livegate.db").exists(),
        "a database file was made up"
    );

    let db = dir.join("named.db");
    let named = dir.join("named.yaml");
    std::fs::write(
        &named,
        yaml(&format!("database_url: \"sqlite:{}\"", db.display())),
    )
    .expect("write");
    let out = run(&named);
    assert_printed(&out, "acme: topup +5, balance 105");
    assert!(db.exists());
    assert!(!dir.join("livegate.db").exists());

    // serve and migrate take the same database, and refuse the same way.
    for command in [&["serve", "--listen", "127.0.0.1:0"][..], &["migrate"][..]] {
        let out = livegate()
            .args(command)
            .arg("--config")
            .arg(&bare)
            .env_remove("DATABASE_URL")
            .current_dir(&dir)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{command:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no database for"),
            "{command:?}"
        );
        assert!(!dir.join("livegate.db").exists(), "{command:?}");
    }
    let out = livegate()
        .args(["migrate", "--config"])
        .arg(&named)
        .env_remove("DATABASE_URL")
        .current_dir(&dir)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("named.db"));
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

#[tokio::test]
async fn credits_add_tops_up_once_per_call_with_its_reason() {
    let dir = scratch_dir();
    let config = dir.join("livegate.yaml");
    std::fs::write(
        &config,
        r#"
providers:
  didit: { kind: didit, base_url: "http://127.0.0.1:9101", api_key: "k", timeout_ms: 5000 }
tenants:
  acme:
    keys: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
    routing: { strategy: single, providers: [didit] }
    credits: { initial: 1000, cost: { didit: 2 } }
  free:
    keys: ["sha256:fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9"]
    routing: { strategy: single, providers: [didit] }
"#,
    )
    .expect("write");
    let db = format!("sqlite:{}", dir.join("lg.db").display());
    let run = |args: &[&str]| {
        livegate()
            .args(["credits", "add"])
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", &db)
            .output()
            .expect("run")
    };
    let out = run(&["acme", "50", "--reason", "invoice 7"]);
    assert_printed(&out, "acme: topup +50, balance 1050");
    let out = run(&["acme", "-20"]);
    assert_printed(&out, "acme: adjust -20, balance 1030");
    for (args, why) in [
        (&["free", "5"][..], "has no `credits`"),
        (&["nobody", "5"][..], "not found"),
        (&["acme", "0"][..], "must not be 0"),
    ] {
        let out = run(args);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(why), "{args:?}: {err}");
    }
    let store = livegate::store::connect(&db).await.expect("db");
    let ledger = store.ledger("acme").await.expect("ledger");
    let rows: Vec<(&str, i64, Option<&str>)> = ledger
        .iter()
        .map(|e| (e.kind.as_str(), e.amount, e.reason.as_deref()))
        .collect();
    assert_eq!(
        rows,
        [
            ("initial", 1000, Some("credits.initial")),
            ("topup", 50, Some("invoice 7")),
            ("adjust", -20, Some("livegate credits add")),
        ]
    );
}

/// The container image's HEALTHCHECK: 0 while the gateway answers, non-zero once nothing listens.
#[tokio::test]
async fn healthcheck_exits_zero_only_while_the_gateway_answers() {
    use crate::harness::{Backend, Harness};
    let h = Harness::start(Backend::Sqlite).await.expect("harness");
    let addr = h.base.trim_start_matches("http://").to_owned();
    let probe = |listen: String, path: &'static str| {
        tokio::task::spawn_blocking(move || {
            livegate()
                .args([
                    "healthcheck",
                    "--listen",
                    &listen,
                    "--path",
                    path,
                    "--timeout",
                    "2",
                ])
                .env_remove("LIVEGATE_LISTEN")
                .output()
                .expect("run livegate healthcheck")
        })
    };
    let up = probe(addr.clone(), "/healthz").await.expect("join");
    assert!(
        up.status.success(),
        "healthcheck failed against a live gateway: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    // A wildcard address is probed on loopback, where a server bound to 0.0.0.0 answers.
    let port = addr.rsplit(':').next().expect("port").to_owned();
    let wildcard = probe(format!("0.0.0.0:{port}"), "/healthz")
        .await
        .expect("join");
    assert!(
        wildcard.status.success(),
        "{}",
        String::from_utf8_lossy(&wildcard.stderr)
    );
    // Not found is not healthy.
    let missing = probe(addr, "/no-such-path").await.expect("join");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"));
    let closed = format!("127.0.0.1:{}", crate::harness::free_port());
    let down = probe(closed, "/healthz").await.expect("join");
    assert!(!down.status.success());
    assert!(
        String::from_utf8_lossy(&down.stderr).contains("unhealthy"),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
}
