//! `livegate models fetch`: download the built-in engine's models named in the manifest, verify
//! each hash before it is moved into place, and write the `SHA256SUMS` the engine checks.

use std::path::{Path, PathBuf};

use futures::StreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest shipped with livegate (`engine/models-manifest.json`).
pub const MANIFEST: &str = include_str!("../../../engine/models-manifest.json");

#[derive(Debug, Deserialize)]
pub struct Manifest {
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ModelFile {
    pub file: String,
    pub sha256: String,
    pub licence: String,
    pub origin: String,
    pub url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("the models manifest is invalid: {0}")]
    Manifest(String),
    #[error(
        "{file}: no public URL is known (origin: {origin}); pass --base-url (LIVEGATE_MODELS_URL) with a mirror that serves it"
    )]
    NoSource { file: String, origin: String },
    #[error(
        "{file}: download from {url} failed: {reason}; nothing was installed. Check the network, or set LIVEGATE_MODELS_URL (--base-url) to a mirror holding the same file (origin: {origin})"
    )]
    Download {
        file: String,
        url: String,
        origin: String,
        reason: String,
    },
    #[error(
        "{file}: SHA-256 mismatch for the download from {url}: expected {expected}, got {actual}; a truncated or altered file, nothing was installed. Retry, or use a mirror with the pinned bytes"
    )]
    HashMismatch {
        file: String,
        url: String,
        expected: String,
        actual: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn manifest() -> Result<Manifest, FetchError> {
    serde_json::from_str(MANIFEST).map_err(|e| FetchError::Manifest(e.to_string()))
}

/// What happened to each file.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    AlreadyPresent(String),
    Downloaded(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_owned(),
        source,
    }
}

fn sha256_file(path: &Path) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    Some(hex::encode(Sha256::digest(&bytes)))
}

/// How a fetch reports its progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Quiet,
    /// A line when each file starts and ends (logs, CI).
    Lines,
    /// A bar redrawn in place (a terminal).
    Bar,
}

impl Progress {
    /// A bar on a terminal, lines otherwise.
    pub fn for_stderr() -> Progress {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Progress::Bar
        } else {
            Progress::Lines
        }
    }
}

fn megabytes(n: u64) -> String {
    format!("{:.1} MB", n as f64 / 1e6)
}

/// Fetch every file of `m` into `dir`. `base_url` (a mirror) overrides each file's own URL.
pub async fn fetch(
    m: &Manifest,
    dir: &Path,
    base_url: Option<&str>,
) -> Result<Vec<Fetched>, FetchError> {
    fetch_with(m, dir, base_url, Progress::Quiet).await
}

/// [`fetch`], reporting on stderr as `progress` says.
pub async fn fetch_with(
    m: &Manifest,
    dir: &Path,
    base_url: Option<&str>,
    progress: Progress,
) -> Result<Vec<Fetched>, FetchError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(15))
        .build()
        .map_err(|e| FetchError::Manifest(format!("http client: {e}")))?;
    let mut report = Vec::new();
    for f in &m.files {
        let target = dir.join(&f.file);
        if sha256_file(&target).as_deref() == Some(f.sha256.as_str()) {
            report.push(Fetched::AlreadyPresent(f.file.clone()));
            continue;
        }
        let url = match (base_url, &f.url) {
            (Some(base), _) => format!("{}/{}", base.trim_end_matches('/'), f.file),
            (None, Some(u)) => u.clone(),
            (None, None) => {
                return Err(FetchError::NoSource {
                    file: f.file.clone(),
                    origin: f.origin.clone(),
                });
            }
        };
        let download = |reason: String| FetchError::Download {
            file: f.file.clone(),
            url: url.clone(),
            origin: f.origin.clone(),
            reason,
        };
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| download(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(download(format!("HTTP {}", resp.status())));
        }
        let total = resp.content_length();
        if progress != Progress::Quiet {
            let size = total
                .map(megabytes)
                .unwrap_or_else(|| "size unknown".into());
            eprintln!("fetching {} ({size}) from {url}", f.file);
        }
        // Stream to a temporary file and hash on the way; only a verified file is renamed in.
        let tmp = dir.join(format!(".{}.partial", f.file));
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        let mut done: u64 = 0;
        let mut shown = 0_u64;
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(download(e.to_string()));
                }
            };
            hasher.update(&chunk);
            done = done.saturating_add(chunk.len() as u64);
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(io(&tmp))?;
            if progress == Progress::Bar && done.saturating_sub(shown) >= 256 * 1024 {
                shown = done;
                let pct = total
                    .filter(|t| *t > 0)
                    .map(|t| format!("{:>3}%", done.saturating_mul(100) / t))
                    .unwrap_or_default();
                eprint!("\r  {} {pct} {}", f.file, megabytes(done));
            }
        }
        if progress == Progress::Bar {
            eprintln!("\r  {} 100% {}", f.file, megabytes(done));
        }
        tokio::io::AsyncWriteExt::flush(&mut out)
            .await
            .map_err(io(&tmp))?;
        drop(out);
        let actual = hex::encode(hasher.finalize());
        if actual != f.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(FetchError::HashMismatch {
                file: f.file.clone(),
                url: url.clone(),
                expected: f.sha256.clone(),
                actual,
            });
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
        if progress == Progress::Lines {
            eprintln!("{}: {}, hash verified", f.file, megabytes(done));
        }
        report.push(Fetched::Downloaded(f.file.clone()));
    }
    let sums: String = m
        .files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.file))
        .collect();
    let sums_path = dir.join("SHA256SUMS");
    std::fs::write(&sums_path, sums).map_err(io(&sums_path))?;
    Ok(report)
}

/// Makes sure `dir` holds every model, verified; fetches what is missing unless `offline`.
/// For `serve`: says what is missing and where it comes from before fetching.
pub async fn ensure(dir: &Path, base_url: Option<&str>, offline: bool) -> anyhow::Result<()> {
    let manifest = manifest()?;
    // Presence only: the engine verifies every hash as it loads.
    let absent: Vec<&str> = std::iter::once("SHA256SUMS")
        .chain(manifest.files.iter().map(|f| f.file.as_str()))
        .filter(|f| !dir.join(f).is_file())
        .collect();
    if absent.is_empty() {
        return Ok(());
    }
    let missing = format!("missing: {}", absent.join(", "));
    if offline {
        anyhow::bail!(
            "the built-in engine's models are not ready in {} ({missing}); --offline forbids fetching them: run `livegate models fetch --dir {}` where there is network, or point --models-dir at a directory that has them",
            dir.display(),
            dir.display()
        );
    }
    eprintln!(
        "the built-in engine's models are not ready in {} ({missing}): fetching them{}",
        dir.display(),
        base_url
            .map(|b| format!(" from {b}"))
            .unwrap_or_else(|| " from their origins".to_owned())
    );
    fetch_with(&manifest, dir, base_url, Progress::for_stderr()).await?;
    livegate_engine::verify_models(dir)
        .map_err(|e| anyhow::anyhow!("fetched models in {} do not verify: {e}", dir.display()))?;
    eprintln!("models ready in {}", dir.display());
    Ok(())
}

/// `livegate models fetch`: fill `dir` (default `./models`) and say what was done per file.
pub async fn fetch_command(dir: Option<PathBuf>, base_url: Option<&str>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("models"));
    let manifest = manifest()?;
    for f in &manifest.files {
        println!("{} ({}): {}", f.file, f.licence, f.origin);
    }
    for r in fetch_with(&manifest, &dir, base_url, Progress::for_stderr()).await? {
        match r {
            Fetched::AlreadyPresent(f) => println!("{f}: already present, hash verified"),
            Fetched::Downloaded(f) => println!("{f}: downloaded, hash verified"),
        }
    }
    println!("models ready in {}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_matches_the_shared_checksums() {
        let m = manifest().expect("manifest");
        let sums = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/models/SHA256SUMS"
        ));
        let sums = match sums {
            Ok(s) => s,
            Err(_) if std::env::var_os("CI").is_none() => return,
            Err(e) => panic!("../shared/models/SHA256SUMS is required under CI: {e}"),
        };
        for f in &m.files {
            assert!(
                sums.contains(&format!("{}  {}", f.sha256, f.file)),
                "{} differs from SHA256SUMS",
                f.file
            );
        }
    }
}
