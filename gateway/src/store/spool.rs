//! The local spool of results that could not be committed: a verdict the vendor was paid for
//! is kept on disk while the database is away, and committed when it returns.
//!
//! One JSON line per result in one file, appended and synced before the answer leaves; the
//! replay rewrites the file (a new file renamed over the old, so a crash leaves one or the
//! other) without what it committed. A result already in the database (its acknowledgement
//! was lost) is recognised by its verification id and dropped: nothing is committed twice.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::store::ledger::ResultWrite;
use crate::store::{DynStore, StoreError, StoreResult};

#[derive(Debug)]
pub struct Spool {
    path: PathBuf,
    max_entries: usize,
    /// Serializes appends and replays: the file is rewritten by a replay.
    lock: Mutex<()>,
}

impl Spool {
    /// A spool in `path`, holding at most `max_entries` results.
    pub fn new(path: impl Into<PathBuf>, max_entries: usize) -> Self {
        Self {
            path: path.into(),
            max_entries,
            lock: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Keeps `write` until it can be committed. Fails when the spool is full or the disk
    /// refuses it; the result is then lost, as it would have been without a spool.
    pub async fn append(&self, write: &ResultWrite) -> StoreResult<()> {
        let _held = self.lock.lock().await;
        let line = serde_json::to_string(write).map_err(other)?;
        let path = self.path.clone();
        let max = self.max_entries;
        tokio::task::spawn_blocking(move || {
            if read_lines(&path)?.len() >= max {
                return Err(StoreError::Other(format!(
                    "the spool {} is full ({max} results)",
                    path.display()
                )));
            }
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(other)?;
            writeln!(f, "{line}").map_err(other)?;
            f.sync_all().map_err(other)
        })
        .await
        .map_err(other)?
    }

    /// How many results wait.
    pub async fn len(&self) -> StoreResult<usize> {
        let _held = self.lock.lock().await;
        let path = self.path.clone();
        Ok(tokio::task::spawn_blocking(move || read_lines(&path))
            .await
            .map_err(other)??
            .len())
    }

    /// Commits what waits, oldest first, until the database refuses; keeps the rest. Returns
    /// how many were committed.
    pub async fn replay(&self, store: &DynStore) -> StoreResult<usize> {
        let _held = self.lock.lock().await;
        let path = self.path.clone();
        let lines = tokio::task::spawn_blocking(move || read_lines(&path))
            .await
            .map_err(other)??;
        if lines.is_empty() {
            return Ok(0);
        }
        let mut committed = 0;
        let mut kept = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let write: ResultWrite = match serde_json::from_str(line) {
                Ok(w) => w,
                Err(e) => {
                    tracing::error!(error = %e, "an unreadable spooled result is dropped");
                    continue;
                }
            };
            match store.commit_results(&[Arc::new(write)]).await {
                Ok(()) | Err(StoreError::Conflict(_)) => committed += 1,
                Err(e) => {
                    tracing::warn!(error = %e, waiting = lines.len() - i, "spool replay paused");
                    kept.extend(lines[i..].iter().cloned());
                    break;
                }
            }
        }
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || rewrite(&path, &kept))
            .await
            .map_err(other)??;
        if committed > 0 {
            tracing::info!(committed, "spooled results committed");
        }
        Ok(committed)
    }
}

/// Replays the spool every `every` until the process ends.
pub fn spawn_replayer(spool: Arc<Spool>, store: DynStore, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = spool.replay(&store).await {
                tracing::warn!(error = %e, "spool replay failed");
            }
        }
    });
}

fn read_lines(path: &Path) -> StoreResult<Vec<String>> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(other(e)),
    };
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(other)?;
        // A line cut short by a crash mid-append is not a result.
        if !line.trim().is_empty() && line.ends_with('}') {
            lines.push(line);
        }
    }
    Ok(lines)
}

fn rewrite(path: &Path, lines: &[String]) -> StoreResult<()> {
    if lines.is_empty() {
        return match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(other(e)),
            _ => Ok(()),
        };
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp).map_err(other)?;
        for l in lines {
            writeln!(f, "{l}").map_err(other)?;
        }
        f.sync_all().map_err(other)?;
    }
    std::fs::rename(&tmp, path).map_err(other)
}

fn other(e: impl std::fmt::Display) -> StoreError {
    StoreError::Other(format!("spool: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cut_short_by_a_crash_is_not_a_result() {
        let dir = std::env::temp_dir().join(format!("lg-spool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.jsonl");
        std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").expect("write");
        assert_eq!(read_lines(&path).expect("read"), ["{\"a\":1}", "{\"b\":2}"]);
        rewrite(&path, &["{\"b\":2}".to_owned()]).expect("rewrite");
        assert_eq!(read_lines(&path).expect("read"), ["{\"b\":2}"]);
        rewrite(&path, &[]).expect("empty");
        assert!(!path.exists());
        assert!(read_lines(&path).expect("missing").is_empty());
    }
}
