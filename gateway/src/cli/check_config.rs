//! `livegate check-config FILE`: every problem with its YAML path, exit 2 when invalid.

use std::process::ExitCode;

use crate::config::{Config, ConfigError, Problem, ProviderKind};

/// What `serve` would fail on at start although the file itself is valid: a built-in engine
/// (a provider or a tenant's face checks) whose models directory has no checksum list.
pub fn missing_models(c: &Config) -> Vec<Problem> {
    let mut wanted: Vec<(String, std::path::PathBuf)> = Vec::new();
    for (name, spec) in &c.providers {
        if let ProviderKind::Embedded(settings) = &spec.kind {
            let dir = crate::runtime::engine::models_dir(settings.models_dir.as_deref());
            wanted.push((format!("providers.{name}"), dir));
        }
    }
    if let Some((id, _)) = c.tenants.iter().find(|(_, t)| t.face_checks.enabled()) {
        let dir = crate::runtime::engine::models_dir(c.models_dir.as_deref());
        wanted.push((format!("tenants.{id} (duplicates/blocklist)"), dir));
    }
    wanted
        .into_iter()
        .filter(|(_, dir)| !dir.join("SHA256SUMS").is_file())
        .map(|(path, dir)| Problem {
            path,
            message: format!(
                "the built-in engine's models are not in {} (no SHA256SUMS there); run `livegate models fetch --dir {}` or set models_dir / LIVEGATE_MODELS_DIR",
                dir.display(),
                dir.display()
            ),
        })
        .collect()
}

pub fn check_config(file: &std::path::Path) -> ExitCode {
    let problems = match Config::load(file) {
        Ok(c) => {
            let missing = missing_models(&c);
            if missing.is_empty() {
                println!(
                    "{}: valid ({} providers, {} tenants, {})",
                    file.display(),
                    c.providers.len(),
                    c.tenants.len(),
                    c.hash
                );
                return ExitCode::SUCCESS;
            }
            missing
        }
        Err(ConfigError::Invalid(problems)) => problems,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    eprintln!("{}: {} problem(s)", file.display(), problems.len());
    for p in problems {
        eprintln!("{p}");
    }
    ExitCode::from(2)
}
