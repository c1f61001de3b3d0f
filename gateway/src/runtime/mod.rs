//! The live configuration with everything built from it (key index, provider clients). Swapped
//! whole on reload so a request keeps the runtime it started with.

pub mod engine;
pub mod guard;
pub mod reload;

use std::collections::HashMap;
use std::sync::Arc;

use livegate_providers::{HttpClient, Provider};

use crate::config::{Config, KeyHash, ProviderKind, ProviderSpec, Tenant};
use crate::runtime::guard::{BreakerState, Guarded};

#[derive(Debug)]
pub struct Runtime {
    pub config: Config,
    keys: HashMap<KeyHash, String>,
    admin_keys: Vec<KeyHash>,
    providers: HashMap<String, Arc<Guarded>>,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("provider {name}: {message}")]
pub struct BuildError {
    pub name: String,
    pub message: String,
}

/// Builds the in-process engine provider; supplied by the binary so tests can share one engine.
pub type EmbeddedFactory = dyn Fn(&ProviderSpec) -> Result<Arc<dyn Provider>, String> + Send + Sync;

impl Runtime {
    pub fn build(
        config: Config,
        embedded: Option<&EmbeddedFactory>,
    ) -> Result<Runtime, BuildError> {
        Self::rebuild(config, embedded, None)
    }

    /// Build from a new config, keeping the provider clients (and so their circuit breakers
    /// and caps) of entries whose settings did not change.
    pub fn rebuild(
        config: Config,
        embedded: Option<&EmbeddedFactory>,
        previous: Option<&Runtime>,
    ) -> Result<Runtime, BuildError> {
        let mut providers = HashMap::new();
        for (name, spec) in &config.providers {
            let kept = previous
                .filter(|p| p.config.providers.get(name) == Some(spec))
                .and_then(|p| p.providers.get(name).cloned());
            let guarded = match kept {
                Some(g) => g,
                None => {
                    let p = build_provider(spec, embedded).map_err(|message| BuildError {
                        name: name.clone(),
                        message,
                    })?;
                    Arc::new(Guarded::new(p, spec.timeout, &spec.resilience))
                }
            };
            providers.insert(name.clone(), guarded);
        }
        let mut keys = HashMap::new();
        for t in config.tenants.values() {
            for k in &t.keys {
                keys.insert(k.clone(), t.id.clone());
            }
        }
        Ok(Runtime {
            admin_keys: config.admin_keys.clone(),
            config,
            keys,
            providers,
            loaded_at: chrono::Utc::now(),
        })
    }

    pub fn tenant_for_key(&self, key: &str) -> Option<&Tenant> {
        self.tenant_for_hash(&KeyHash::of_key(key))
    }

    /// As [`Runtime::tenant_for_key`], for a key already hashed.
    pub fn tenant_for_hash(&self, hash: &KeyHash) -> Option<&Tenant> {
        let id = self.keys.get(hash)?;
        self.config.tenants.get(id)
    }

    pub fn is_admin_key(&self, key: &str) -> bool {
        self.is_admin_hash(&KeyHash::of_key(key))
    }

    /// As [`Runtime::is_admin_key`], for a key already hashed.
    pub fn is_admin_hash(&self, hash: &KeyHash) -> bool {
        self.admin_keys.contains(hash)
    }

    pub fn provider(&self, name: &str) -> Option<&Arc<Guarded>> {
        self.providers.get(name)
    }

    /// Every provider's circuit state, by name.
    pub fn breaker_states(&self) -> Vec<(String, BreakerState)> {
        let mut v: Vec<_> = self
            .providers
            .iter()
            .map(|(n, g)| (n.clone(), g.breaker.state()))
            .collect();
        v.sort();
        v
    }
}

fn build_provider(
    spec: &ProviderSpec,
    embedded: Option<&EmbeddedFactory>,
) -> Result<Arc<dyn Provider>, String> {
    use livegate_providers::{collections::Collections, didit::Didit, kairos::Kairos};
    // One client per provider entry; the call's deadline is the guard's (`spec.timeout`).
    let http = || HttpClient::new().map_err(|e| e.message);
    let name = spec.name.clone();
    Ok(match &spec.kind {
        ProviderKind::Didit(s) => {
            Arc::new(Didit::new(name, s.clone(), http()?).map_err(|e| e.message)?)
        }
        ProviderKind::Kairos(s) => {
            Arc::new(Kairos::new(name, s.clone(), http()?).map_err(|e| e.message)?)
        }
        ProviderKind::Collections(s) => {
            Arc::new(Collections::new(name, s.clone(), http()?).map_err(|e| e.message)?)
        }
        ProviderKind::Embedded(_) => match embedded {
            Some(f) => f(spec)?,
            None => return Err("the built-in engine is not available".to_owned()),
        },
    })
}
