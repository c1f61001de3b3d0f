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
        "{file}: no public URL is known (origin: {origin}); pass --base-url with a mirror that serves it"
    )]
    NoSource { file: String, origin: String },
    #[error("{file}: download from {url} failed: {reason}")]
    Download {
        file: String,
        url: String,
        reason: String,
    },
    #[error(
        "{file}: SHA-256 mismatch: expected {expected}, got {actual}; the file was not installed"
    )]
    HashMismatch {
        file: String,
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

/// Fetch every file of `m` into `dir`. `base_url` (a mirror) overrides each file's own URL.
pub async fn fetch(
    m: &Manifest,
    dir: &Path,
    base_url: Option<&str>,
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
        // Stream to a temporary file and hash on the way; only a verified file is renamed in.
        let tmp = dir.join(format!(".{}.partial", f.file));
        let mut out = tokio::fs::File::create(&tmp).await.map_err(io(&tmp))?;
        let mut hasher = Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| download(e.to_string()))?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(io(&tmp))?;
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
                expected: f.sha256.clone(),
                actual,
            });
        }
        std::fs::rename(&tmp, &target).map_err(io(&target))?;
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

/// `livegate models fetch`: fill `dir` (default `./models`) and say what was done per file.
pub async fn fetch_command(dir: Option<PathBuf>, base_url: Option<&str>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(|| PathBuf::from("models"));
    let manifest = manifest()?;
    for f in &manifest.files {
        println!("{} ({}): {}", f.file, f.licence, f.origin);
    }
    for r in fetch(&manifest, &dir, base_url).await? {
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
