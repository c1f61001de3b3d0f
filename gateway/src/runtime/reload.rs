//! Hot reload: on SIGHUP or when the config file changes, the new file is validated and built
//! first; only a good one replaces the live runtime. Requests in flight keep the runtime they
//! started with (they hold an `Arc` to it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::runtime::{EmbeddedFactory, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] crate::runtime::BuildError),
}

/// Load, validate and build `path`; swap it in only if all of that succeeded.
pub fn reload(
    live: &ArcSwap<Runtime>,
    path: &Path,
    embedded: Option<&EmbeddedFactory>,
) -> Result<String, ReloadError> {
    let config = Config::load(path)?;
    let current = live.load_full();
    if config.hash == current.config.hash {
        return Ok(config.hash);
    }
    let runtime = Runtime::rebuild(config, embedded, Some(&current))?;
    let hash = runtime.config.hash.clone();
    live.store(Arc::new(runtime));
    Ok(hash)
}

fn file_hash(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

fn apply(live: &ArcSwap<Runtime>, path: &Path, embedded: Option<&EmbeddedFactory>, why: &str) {
    match reload(live, path, embedded) {
        Ok(hash) => {
            tracing::info!(config = %path.display(), %hash, trigger = why, "config reloaded")
        }
        Err(ReloadError::Config(ConfigError::Invalid(problems))) => {
            for p in &problems {
                tracing::error!(config = %path.display(), problem = %p, "config rejected");
            }
            tracing::error!(config = %path.display(), problems = problems.len(), trigger = why, "invalid config rejected; the previous config keeps serving");
        }
        Err(e) => {
            tracing::error!(config = %path.display(), error = %e, trigger = why, "config rejected; the previous config keeps serving");
        }
    }
}

/// Watch for SIGHUP and for changes of the file's content (polled, so it also works on
/// filesystems without change notifications and across editors' rename-on-save).
pub fn spawn_watcher(
    live: Arc<ArcSwap<Runtime>>,
    path: PathBuf,
    embedded: Option<&'static EmbeddedFactory>,
    poll: Duration,
) {
    tokio::spawn(async move {
        let mut last = file_hash(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut tick = tokio::time::interval(poll);
        loop {
            #[cfg(unix)]
            let hup_fired = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_fired = std::future::pending::<()>();
            tokio::select! {
                () = hup_fired => {
                    last = file_hash(&path);
                    apply(&live, &path, embedded, "SIGHUP");
                }
                _ = tick.tick() => {
                    let now = file_hash(&path);
                    if now.is_some() && now != last {
                        last = now;
                        apply(&live, &path, embedded, "file change");
                    }
                }
            }
        }
    });
}
