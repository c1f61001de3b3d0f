//! `livegate models fetch`: download the built-in engine's models named in the manifest, verify
//! each hash before it is moved into place, and write the `SHA256SUMS` the engine checks.
//!
//! A file published as ONNX is downloaded as is. A file whose origin is another format is built
//! from an archive its authors publish (a PyPI sdist or wheel, an npm tarball): the archive is
//! downloaded and verified, the named members are taken out of it and converted to ONNX by
//! `livegate_engine::convert`, and the result must match the pinned SHA-256 too.

mod origin;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The manifest shipped with livegate (`engine/models-manifest.json`).
pub const MANIFEST: &str = include_str!("../../../../engine/models-manifest.json");

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
    /// Where the ONNX file itself is published (none when it is converted from `archive`).
    pub url: Option<String>,
    /// The published archive the file is converted from.
    #[serde(default)]
    pub archive: Option<Archive>,
}

/// An origin archive: where it is published, its SHA-256, what to take out of it and how to
/// turn that into the ONNX file.
#[derive(Debug, Clone, Deserialize)]
pub struct Archive {
    pub url: String,
    pub sha256: String,
    /// `tar.gz` (sdists, npm tarballs) or `zip` (wheels).
    pub format: String,
    /// Paths inside the archive, in the order the converter takes them.
    pub members: Vec<String>,
    /// The converter: `dlib-dat`, `tflite` or `tfjs-graph`.
    pub convert: String,
}

impl Archive {
    /// The archive's file name: what a mirror serves it under.
    pub fn file_name(&self) -> &str {
        self.url
            .rsplit('/')
            .next()
            .unwrap_or(&self.url)
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
    }
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
    #[error(
        "{file}: the archive {url} has no member {member}; the origin changed or the mirror holds another file. Use a mirror with the pinned archive (origin: {origin})"
    )]
    MissingMember {
        file: String,
        url: String,
        member: String,
        origin: String,
    },
    #[error(
        "{file}: converting {member} from {url} failed: {reason}; nothing was installed (origin: {origin})"
    )]
    Convert {
        file: String,
        url: String,
        member: String,
        origin: String,
        reason: String,
    },
    #[error(
        "{file}: the file converted from {url} has SHA-256 {actual}, expected {expected}; nothing was installed. This livegate's converter does not match its manifest: report it"
    )]
    ConvertedHashMismatch {
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
    let mirror = |name: &str| base_url.map(|b| format!("{}/{name}", b.trim_end_matches('/')));
    let mut report = Vec::new();
    for f in &m.files {
        let target = dir.join(&f.file);
        if sha256_file(&target).as_deref() == Some(f.sha256.as_str()) {
            report.push(Fetched::AlreadyPresent(f.file.clone()));
            continue;
        }
        let tmp = dir.join(format!(".{}.partial", f.file));
        let bytes = match &f.archive {
            None => {
                let url = mirror(&f.file).or_else(|| f.url.clone()).ok_or_else(|| {
                    FetchError::NoSource {
                        file: f.file.clone(),
                        origin: f.origin.clone(),
                    }
                })?;
                let got = origin::download(&client, f, &url, &f.sha256, &tmp, progress).await?;
                std::fs::rename(&tmp, &target).map_err(io(&target))?;
                got
            }
            Some(a) => {
                let url = mirror(a.file_name()).unwrap_or_else(|| a.url.clone());
                let archive = dir.join(format!(".{}.partial", a.file_name()));
                let built = async {
                    origin::download(&client, f, &url, &a.sha256, &archive, progress).await?;
                    origin::build(f, a, &url, &archive).await
                }
                .await;
                let _ = std::fs::remove_file(&archive);
                let onnx = built?;
                // Only a file with the pinned hash is written, and under its name only once whole.
                let actual = hex::encode(Sha256::digest(&onnx));
                if actual != f.sha256 {
                    return Err(FetchError::ConvertedHashMismatch {
                        file: f.file.clone(),
                        url,
                        expected: f.sha256.clone(),
                        actual,
                    });
                }
                std::fs::write(&tmp, &onnx).map_err(io(&tmp))?;
                std::fs::rename(&tmp, &target).map_err(io(&target))?;
                if progress != Progress::Quiet {
                    eprintln!(
                        "{}: converted from {} ({}), hash verified",
                        f.file,
                        a.file_name(),
                        a.convert
                    );
                }
                onnx.len() as u64
            }
        };
        if progress == Progress::Lines && f.archive.is_none() {
            eprintln!("{}: {}, hash verified", f.file, megabytes(bytes));
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
    fn published_onnx_files_match_the_shared_checksums() {
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
        // Files published as ONNX are the same bytes; converted ones are our converter's
        // output, compared with the shared files by the golden test (tests/it/models_fetch.rs).
        for f in m.files.iter().filter(|f| f.archive.is_none()) {
            assert!(
                sums.contains(&format!("{}  {}", f.sha256, f.file)),
                "{} differs from SHA256SUMS",
                f.file
            );
        }
    }

    #[test]
    fn a_mirror_serves_an_archive_under_its_file_name() {
        let a = Archive {
            url: "https://registry.npmjs.org/@scope/pkg/-/pkg-1.0.0.tgz".into(),
            sha256: String::new(),
            format: "tar.gz".into(),
            members: vec![],
            convert: "tfjs-graph".into(),
        };
        assert_eq!(a.file_name(), "pkg-1.0.0.tgz");
    }
}
