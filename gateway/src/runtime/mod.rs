//! The live configuration with everything built from it (key index, provider clients). Swapped
//! whole on reload so a request keeps the runtime it started with.

pub mod engine;
pub mod guard;
pub mod reload;

use std::collections::HashMap;
use std::sync::Arc;

use livegate_providers::Provider;

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
        let id = self.keys.get(&KeyHash::of_key(key))?;
        self.config.tenants.get(id)
    }

    pub fn is_admin_key(&self, key: &str) -> bool {
        self.admin_keys.contains(&KeyHash::of_key(key))
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
    use livegate_providers::didit::{Didit, DiditConfig};
    match &spec.kind {
        ProviderKind::Didit {
            base_url,
            api_key,
            save_api_request,
            rotate_image,
        } => {
            let p = Didit::new(DiditConfig {
                name: spec.name.clone(),
                base_url: base_url.clone(),
                api_key: api_key.clone(),
                timeout: spec.timeout,
                save_api_request: *save_api_request,
                rotate_image: *rotate_image,
            })
            .map_err(|e| e.message)?;
            Ok(Arc::new(p))
        }
        ProviderKind::Kairos {
            base_url,
            path,
            app_id,
            app_key,
            header_style,
        } => {
            use livegate_providers::kairos::{Kairos, KairosConfig};
            let p = Kairos::new(KairosConfig {
                name: spec.name.clone(),
                base_url: base_url.clone(),
                path: path.clone(),
                app_id: app_id.clone(),
                app_key: app_key.clone(),
                header_style: *header_style,
                timeout: spec.timeout,
            })
            .map_err(|e| e.message)?;
            Ok(Arc::new(p))
        }
        ProviderKind::Collections {
            base_url,
            api_key,
            collection_id,
        } => {
            use livegate_providers::collections::{Collections, CollectionsConfig};
            let p = Collections::new(CollectionsConfig {
                name: spec.name.clone(),
                base_url: base_url.clone(),
                api_key: api_key.clone(),
                collection_id: collection_id.clone(),
                timeout: spec.timeout,
            })
            .map_err(|e| e.message)?;
            Ok(Arc::new(p))
        }
        ProviderKind::Embedded { .. } => match embedded {
            Some(f) => f(spec),
            None => Err("the built-in engine is not available".to_owned()),
        },
    }
}
