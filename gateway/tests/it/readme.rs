//! The README's shell examples, true as written: every command in a `sh` block is either run
//! here (against `livegate simulate` and a gateway on the example config, with `livegate` on
//! the PATH and the README's port replaced by a free one) or checked and named below with the
//! test that runs it or the reason it is not run. A new example that is neither fails.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::simulate_cli::{Example, start_example};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// Every command of the README's `sh` blocks, continuation lines joined, with its block.
fn commands() -> Vec<(usize, String)> {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README");
    let mut out = Vec::new();
    let mut block: Option<usize> = None;
    let mut pending = String::new();
    for (i, line) in readme.lines().enumerate() {
        match (block, line.trim_start()) {
            (None, "```sh") => block = Some(i + 1),
            (Some(_), "```") => block = None,
            (Some(b), l) => {
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                match l.strip_suffix('\\') {
                    Some(head) => pending.push_str(head),
                    None => {
                        pending.push_str(l);
                        out.push((b, std::mem::take(&mut pending)));
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// How a command the README shows is kept true.
enum Kept {
    /// Run by this test.
    Run,
    /// Checked here without running it; the reason it is not run.
    Checked(&'static str),
}

/// The workspace's packages, by folder.
const PACKAGES: [&str; 5] = ["gateway", "engine", "intake", "providers", "simulators"];

fn flag<'a>(words: &[&'a str], name: &str) -> Result<&'a str, String> {
    words
        .iter()
        .position(|w| *w == name)
        .and_then(|i| words.get(i + 1).copied())
        .ok_or_else(|| format!("no {name}"))
}

/// The README's slow examples are run by a CI step of their own, outside `cargo test` (which
/// holds the build directory's lock while tests run, so a nested cargo would wait forever).
fn slow_examples_run_in_ci() -> Result<(), String> {
    let ci = std::fs::read_to_string(format!("{ROOT}/.ci/run")).map_err(|e| e.to_string())?;
    if !ci
        .lines()
        .any(|l| l.contains("scripts/readme-slow-examples"))
    {
        return Err(".ci/run does not run scripts/readme-slow-examples".into());
    }
    Ok(())
}

/// Classifies `cmd`, checking what can be checked without running it.
fn kept(cmd: &str) -> Result<Kept, String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let first = words.first().copied().unwrap_or_default();
    if first == "curl" || first == "livegate" {
        return Ok(Kept::Run);
    }
    if cmd.starts_with("cargo run -p livegate -- serve") {
        return Ok(Kept::Checked(
            "serves until stopped: models_fetch::zero_config_serve_fetches_missing_models_then_serves runs it from a clone",
        ));
    }
    if cmd.starts_with("cargo test --workspace") {
        return Ok(Kept::Checked("the command running this test"));
    }
    if cmd.starts_with("cargo bench") {
        let bench = flag(&words, "--bench")?;
        let declaring: Vec<PathBuf> = PACKAGES
            .iter()
            .map(|dir| PathBuf::from(format!("{ROOT}/{dir}")))
            .filter(|dir| {
                std::fs::read_to_string(dir.join("Cargo.toml"))
                    .unwrap_or_default()
                    .contains(&format!("[[bench]]\nname = \"{bench}\""))
            })
            .collect();
        let [dir] = declaring.as_slice() else {
            return Err(format!(
                "{} packages declare a bench {bench}",
                declaring.len()
            ));
        };
        if !dir.join(format!("benches/{bench}.rs")).is_file() {
            return Err(format!("no benches/{bench}.rs"));
        }
        // The test build's profile and features: the release profile, or `-p` (features
        // resolved for one package), would build every dependency a second time.
        if flag(&words, "--profile")? != "dev" || words.contains(&"-p") {
            return Err("a README benchmark runs as `cargo bench --profile dev --bench NAME` at the workspace root, on the test build".into());
        }
        slow_examples_run_in_ci()?;
        return Ok(Kept::Checked(
            "a benchmark of minutes: scripts/readme-slow-examples runs it short in .ci/run",
        ));
    }
    if let Some(rest) = cmd.strip_prefix("cargo run --example ") {
        let example = rest.split_whitespace().next().unwrap_or_default();
        let found = PACKAGES.iter().any(|dir| {
            Path::new(ROOT)
                .join(dir)
                .join(format!("examples/{example}.rs"))
                .is_file()
        });
        if !found {
            return Err(format!("no example {example}"));
        }
        // name=path[,path] arguments: every file must be in the repository.
        for arg in rest.split_whitespace().filter(|w| w.contains('=')) {
            let (_, paths) = arg.split_once('=').unwrap_or_default();
            for p in paths.split(',') {
                if !Path::new(ROOT).join(p).is_file() {
                    return Err(format!("{p} does not exist"));
                }
            }
        }
        slow_examples_run_in_ci()?;
        return Ok(Kept::Checked(
            "a calibration run of minutes: scripts/readme-slow-examples runs it as written in .ci/run and compares its output with the README's",
        ));
    }
    if first == "bench/overhead" {
        let p = Path::new(ROOT).join(first);
        let mode = std::fs::metadata(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        if std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o111 == 0 {
            return Err("bench/overhead is not executable".into());
        }
        return Ok(Kept::Checked(
            "the load benchmark: CI runs it short as a smoke run (.ci/run)",
        ));
    }
    Err("a shell example this test neither runs nor checks: add it to `kept`".into())
}

#[test]
fn every_readme_example_is_run_or_checked() {
    let cmds = commands();
    assert!(cmds.len() >= 8, "README sh blocks not found: {cmds:?}");
    let mut problems = Vec::new();
    for (block, cmd) in &cmds {
        match kept(cmd) {
            Ok(Kept::Run) => eprintln!("run: {cmd}"),
            Ok(Kept::Checked(why)) => eprintln!("checked, not run ({why}): {cmd}"),
            Err(e) => problems.push(format!("README block at line {block}: `{cmd}`: {e}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs the README's blocks of `curl` and `livegate` commands, in README order, each as one
/// bash script that stops at the first failing command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_commands_run_as_written() {
    let dir = std::env::temp_dir().join(format!("lg-readme-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("samples")).expect("dir");
    for f in std::fs::read_dir(format!("{ROOT}/samples")).expect("samples") {
        let f = f.expect("entry").path();
        if f.is_file() {
            std::fs::copy(&f, dir.join("samples").join(f.file_name().expect("name")))
                .expect("copy sample");
        }
    }

    // The example config with an operator key added, against the simulators.
    let admin_key = "readme-admin-key";
    let admin = format!(
        "\nadmin: {{ keys: [\"sha256:{}\"] }}\n",
        hex::encode(Sha256::digest(admin_key))
    );
    let Example {
        base,
        env,
        sims,
        serve,
        ..
    } = start_example(&dir, &admin).await;
    let gateway = base.trim_start_matches("http://");

    let bin_dir = Path::new(env!("CARGO_BIN_EXE_livegate"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut blocks: Vec<(usize, Vec<String>)> = Vec::new();
    for (block, cmd) in commands() {
        if !matches!(kept(&cmd), Ok(Kept::Run)) {
            continue;
        }
        match blocks.last_mut() {
            Some((b, cmds)) if *b == block => cmds.push(cmd),
            _ => blocks.push((block, vec![cmd])),
        }
    }
    assert!(blocks.len() >= 2, "{blocks:?}");
    let mut outputs = Vec::new();
    for (block, cmds) in &blocks {
        // -f: an HTTP error status fails the command; -sS: quiet but for errors.
        let script = format!(
            "set -euo pipefail\ncurl() {{ command curl -fsS --max-time 30 \"$@\"; echo; }}\n{}\n",
            cmds.join("\n").replace("127.0.0.1:8080", gateway)
        );
        let out = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            tokio::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .current_dir(&dir)
                .env("PATH", &path)
                .env("KEY", "foo")
                .env("ADMIN_KEY", admin_key)
                .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
                .env_remove("LIVEGATE_CONFIG")
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("README block at line {block} did not finish in 120 s"))
        .expect("bash");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "README block at line {block} failed:\n{script}\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push((*block, stdout));
    }
    drop(serve);
    drop(sims);

    // What the examples say they answer: the liveness call a verdict, the credits block the
    // tenant's balance after both top-ups (1000 initial, one Didit check at 2, 500 + 500).
    let json_lines = |text: &str| -> Vec<serde_json::Value> {
        text.lines()
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    };
    let (_, liveness) = &outputs[0];
    let verdict = json_lines(liveness);
    assert_eq!(
        verdict.first().map(|v| v["decision"].is_string()),
        Some(true),
        "{liveness}"
    );
    let (_, credits) = outputs.last().expect("credits block");
    let tenant = json_lines(credits)
        .into_iter()
        .last()
        .expect("a JSON answer");
    assert_eq!(tenant["tenant"], "acme", "{credits}");
    assert_eq!(tenant["balance"], 1998, "{credits}");
}
