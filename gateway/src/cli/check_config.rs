//! `livegate check-config FILE`: every problem with its YAML path, exit 2 when invalid.

use std::process::ExitCode;

use crate::config::{Config, ConfigError};

pub fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: valid ({} providers, {} tenants, {})",
                file.display(),
                c.providers.len(),
                c.tenants.len(),
                c.hash
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {} problem(s)", file.display(), problems.len());
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}
