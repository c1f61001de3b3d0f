//! Getting one model's bytes from where they are published: a streamed, hashed download into a
//! temporary file, and the members of an origin archive converted to ONNX.

use std::io::Read;
use std::path::Path;

use futures::StreamExt;
use sha2::{Digest, Sha256};

use super::{Archive, FetchError, ModelFile, Progress, io, megabytes};

/// Streams `url` into `tmp`, hashing on the way; `tmp` is removed unless its SHA-256 is
/// `expected`. Returns the byte count.
pub(super) async fn download(
    client: &reqwest::Client,
    f: &ModelFile,
    url: &str,
    expected: &str,
    tmp: &Path,
    progress: Progress,
) -> Result<u64, FetchError> {
    let fail = |reason: String| FetchError::Download {
        file: f.file.clone(),
        url: url.to_owned(),
        origin: f.origin.clone(),
        reason,
    };
    let resp = client
        .get(url)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("HTTP {}", resp.status())));
    }
    let total = resp.content_length();
    let name = url.rsplit('/').next().unwrap_or(url);
    if progress != Progress::Quiet {
        let size = total
            .map(megabytes)
            .unwrap_or_else(|| "size unknown".into());
        eprintln!("fetching {name} ({size}) from {url}");
    }
    let mut out = tokio::fs::File::create(tmp).await.map_err(io(tmp))?;
    let mut hasher = Sha256::new();
    let mut stream = resp.bytes_stream();
    let mut done: u64 = 0;
    let mut shown = 0_u64;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                drop(out);
                let _ = std::fs::remove_file(tmp);
                return Err(fail(e.to_string()));
            }
        };
        hasher.update(&chunk);
        done = done.saturating_add(chunk.len() as u64);
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(&mut out, &chunk).await {
            drop(out);
            let _ = std::fs::remove_file(tmp);
            return Err(io(tmp)(e));
        }
        if progress == Progress::Bar && done.saturating_sub(shown) >= 256 * 1024 {
            shown = done;
            let pct = total
                .filter(|t| *t > 0)
                .map(|t| format!("{:>3}%", done.saturating_mul(100) / t))
                .unwrap_or_default();
            eprint!("\r  {name} {pct} {}", megabytes(done));
        }
    }
    if progress == Progress::Bar {
        eprintln!("\r  {name} 100% {}", megabytes(done));
    }
    let flushed = tokio::io::AsyncWriteExt::flush(&mut out).await;
    drop(out);
    let actual = hex::encode(hasher.finalize());
    if let Err(e) = flushed {
        let _ = std::fs::remove_file(tmp);
        return Err(io(tmp)(e));
    }
    if actual != expected {
        let _ = std::fs::remove_file(tmp);
        return Err(FetchError::HashMismatch {
            file: f.file.clone(),
            url: url.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(done)
}

/// Reads the named members out of a tar.gz or zip archive at `path`.
fn members(a: &Archive, path: &Path) -> Result<Vec<Option<Vec<u8>>>, String> {
    let mut found: Vec<Option<Vec<u8>>> = vec![None; a.members.len()];
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    match a.format.as_str() {
        "tar.gz" => {
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
            for entry in tar.entries().map_err(|e| e.to_string())? {
                let mut entry = entry.map_err(|e| e.to_string())?;
                let p = entry.path().map_err(|e| e.to_string())?;
                let p = p.to_string_lossy().into_owned();
                if let Some(i) = a.members.iter().position(|m| *m == p) {
                    let mut bytes = Vec::new();
                    entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
                    found[i] = Some(bytes);
                    if found.iter().all(Option::is_some) {
                        break;
                    }
                }
            }
        }
        "zip" => {
            let mut zip = zip::ZipArchive::new(file).map_err(|e| e.to_string())?;
            for (i, m) in a.members.iter().enumerate() {
                let Ok(mut entry) = zip.by_name(m) else {
                    continue;
                };
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
                found[i] = Some(bytes);
            }
        }
        other => return Err(format!("unknown archive format {other:?} (tar.gz or zip)")),
    }
    Ok(found)
}

/// Why an archive did not give its ONNX file.
enum Unbuilt {
    Read(String),
    Missing(String),
    Convert(String),
}

/// Takes `a`'s members out of the archive at `path` and converts them to ONNX.
fn unpack_and_convert(a: &Archive, path: &Path, name: &str) -> Result<Vec<u8>, Unbuilt> {
    use livegate_engine::convert::{Format, Member, convert};
    let format: Format = a
        .convert
        .parse()
        .map_err(|e: livegate_engine::convert::ConvertError| Unbuilt::Convert(e.to_string()))?;
    let found = members(a, path).map_err(|e| Unbuilt::Read(format!("reading the archive: {e}")))?;
    let taken = a
        .members
        .iter()
        .zip(found)
        .map(|(member, bytes)| match bytes {
            Some(bytes) => Ok(Member {
                path: member.clone(),
                bytes,
            }),
            None => Err(Unbuilt::Missing(member.clone())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    convert(format, &taken, name).map_err(|e| Unbuilt::Convert(e.to_string()))
}

/// Takes `a`'s members out of the verified archive at `path` and converts them to ONNX.
pub(super) async fn build(
    f: &ModelFile,
    a: &Archive,
    url: &str,
    path: &Path,
) -> Result<Vec<u8>, FetchError> {
    let first = a.members.first().cloned().unwrap_or_default();
    let convert = |reason: String| FetchError::Convert {
        file: f.file.clone(),
        url: url.to_owned(),
        member: first.clone(),
        origin: f.origin.clone(),
        reason,
    };
    let (a2, path2, name) = (a.clone(), path.to_owned(), f.file.clone());
    // Unpacking and converting are CPU work of seconds: off the async workers.
    match tokio::task::spawn_blocking(move || unpack_and_convert(&a2, &path2, &name)).await {
        Ok(Ok(onnx)) => Ok(onnx),
        Ok(Err(Unbuilt::Missing(member))) => Err(FetchError::MissingMember {
            file: f.file.clone(),
            url: url.to_owned(),
            member,
            origin: f.origin.clone(),
        }),
        Ok(Err(Unbuilt::Read(reason) | Unbuilt::Convert(reason))) => Err(convert(reason)),
        Err(e) => Err(convert(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_gz(files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "lg-origin-{}.tar.gz",
            uuid::Uuid::new_v4().simple()
        ));
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).expect("create"),
            flate2::Compression::fast(),
        );
        let mut tar = tar::Builder::new(gz);
        for (name, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            tar.append_data(&mut h, name, *bytes).expect("append");
        }
        tar.into_inner().expect("tar").finish().expect("gz");
        path
    }

    fn archive(members: &[&str]) -> Archive {
        Archive {
            url: "https://example.test/pkg-1.0.tar.gz".into(),
            sha256: String::new(),
            format: "tar.gz".into(),
            members: members.iter().map(|m| (*m).to_owned()).collect(),
            convert: "dlib-dat".into(),
        }
    }

    #[test]
    fn members_are_taken_by_exact_path_and_a_missing_one_is_reported() {
        let path = tar_gz(&[("pkg/a.bin", b"aaa"), ("pkg/sub/b.bin", b"bb")]);
        let found = members(&archive(&["pkg/sub/b.bin", "pkg/a.bin"]), &path).expect("read");
        assert_eq!(found, vec![Some(b"bb".to_vec()), Some(b"aaa".to_vec())]);
        let found = members(&archive(&["pkg/a.bin", "pkg/b.bin"]), &path).expect("read");
        assert_eq!(found, vec![Some(b"aaa".to_vec()), None]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_file_that_is_not_the_archive_it_claims_is_an_error() {
        let path =
            std::env::temp_dir().join(format!("lg-origin-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, b"not gzip at all").expect("write");
        assert!(members(&archive(&["x"]), &path).is_err());
        let mut zip = archive(&["x"]);
        zip.format = "zip".into();
        assert!(members(&zip, &path).is_err());
        let _ = std::fs::remove_file(path);
    }
}
