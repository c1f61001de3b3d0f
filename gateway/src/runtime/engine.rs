//! The built-in engine as a provider: where its models are found, and one loaded engine per
//! models directory shared by every provider entry and every config reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use livegate_engine::Engine;
use livegate_providers::Provider;
use livegate_providers::embedded::Embedded;

use crate::config::{ProviderKind, ProviderSpec};

/// Environment variable naming the models directory.
pub const MODELS_DIR_ENV: &str = "LIVEGATE_MODELS_DIR";

/// `serve --models-dir`: set once at start, before any engine loads.
static DEFAULT_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes `dir` the models directory of every entry that names none (`serve --models-dir`);
/// false when one was set already.
pub fn set_default_models_dir(dir: PathBuf) -> bool {
    DEFAULT_DIR.set(dir).is_ok()
}

/// The per-user cache models are fetched into by default: `$XDG_CACHE_HOME/livegate/models`,
/// else `~/.cache/livegate/models`.
pub fn cache_models_dir() -> Option<PathBuf> {
    livegate_engine::user_cache_dir()
}

/// The models directory: the config's `models_dir`, else `serve --models-dir`, else
/// `LIVEGATE_MODELS_DIR`, else the first of `./models` and the user cache
/// ([`cache_models_dir`]) that holds a `SHA256SUMS`; with neither, the user cache (where `serve`
/// fetches them).
pub fn models_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_owned();
    }
    if let Some(p) = DEFAULT_DIR.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os(MODELS_DIR_ENV) {
        return PathBuf::from(p);
    }
    let local = PathBuf::from("models");
    let cache = cache_models_dir();
    if local.join("SHA256SUMS").is_file() {
        return local;
    }
    cache.unwrap_or(local)
}

fn engines() -> &'static Mutex<HashMap<PathBuf, Engine>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Engine>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Load (once per directory) the engine from `dir`, verifying every model's hash.
pub fn engine(dir: &Path) -> Result<Engine, String> {
    let key = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let mut cache = engines()
        .lock()
        .map_err(|_| "engine cache poisoned".to_owned())?;
    if let Some(e) = cache.get(&key) {
        return Ok(e.clone());
    }
    let e = Engine::load(dir).map_err(|e| format!("loading models from {}: {e}", dir.display()))?;
    cache.insert(key, e.clone());
    Ok(e)
}

/// The factory `Runtime::build` uses for `kind: embedded` entries.
pub fn factory(spec: &ProviderSpec) -> Result<Arc<dyn Provider>, String> {
    let ProviderKind::Embedded(settings) = &spec.kind else {
        return Err("not an embedded provider".to_owned());
    };
    let engine = engine(&self::models_dir(settings.models_dir.as_deref()))?;
    Ok(Arc::new(Embedded::new(spec.name.clone(), settings, engine)))
}
