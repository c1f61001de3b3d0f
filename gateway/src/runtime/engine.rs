//! The built-in engine as a provider: where its models are found, and one loaded engine per
//! models directory shared by every provider entry and every config reload.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use livegate_engine::Engine;
use livegate_providers::Provider;
use livegate_providers::embedded::Embedded;

use crate::config::{ProviderKind, ProviderSpec};

/// `serve --models-dir`: set once at start, before any engine loads.
static DEFAULT_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Makes `dir` the models directory of every entry that names none (`serve --models-dir`);
/// false when one was set already.
pub fn set_default_models_dir(dir: PathBuf) -> bool {
    DEFAULT_DIR.set(dir).is_ok()
}

/// The models directory: the config's `models_dir`, else `serve --models-dir`, else the
/// engine's default ([`livegate_engine::default_models_dir`]: `LIVEGATE_MODELS_DIR`, `./models`
/// when it holds a `SHA256SUMS`, the user cache where `serve` fetches them).
pub fn models_dir(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_owned();
    }
    if let Some(p) = DEFAULT_DIR.get() {
        return p.clone();
    }
    livegate_engine::default_models_dir()
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
