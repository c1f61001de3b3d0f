//! The zero-config setup of `livegate serve` without a config file: the built-in engine and a
//! `demo` tenant whose key is minted at first start, printed once, and kept only as a hash.

use crate::config::{Config, ConfigError, KeyHash};
use crate::store::{DynStore, StoreError};

const DEMO_KEY_SETTING: &str = "demo_tenant_key_hash";

/// The demo tenant's key at start-up.
pub enum Demo {
    /// Minted by this start: stored by [`commit`], then shown this once.
    New { key: String, hash: KeyHash },
    /// Minted at an earlier start (or by `livegate keys demo`); only its hash is known.
    Existing(KeyHash),
}

impl Demo {
    pub fn hash(&self) -> &KeyHash {
        match self {
            Demo::New { hash, .. } | Demo::Existing(hash) => hash,
        }
    }

    /// What the operator is told once the server is serving.
    pub fn print(&self, listen: std::net::SocketAddr) {
        match self {
            Demo::New { key, .. } => {
                println!("No config file: serving the built-in engine with a `demo` tenant.");
                println!("Demo API key (shown once, stored only as a hash): {key}");
                println!(
                    "Try: curl -H 'Authorization: Bearer {key}' -F image=@selfie.jpg http://{listen}/v1/liveness"
                );
            }
            Demo::Existing(_) => {
                println!(
                    "No config file: serving the built-in engine with the `demo` tenant; its key was printed at first start (`livegate keys demo` mints a new one)."
                );
            }
        }
    }
}

/// The stored demo key, or a new one, not stored yet.
pub async fn prepare(store: &DynStore) -> Result<Demo, StoreError> {
    match store.setting(DEMO_KEY_SETTING).await? {
        Some(stored) => Ok(Demo::Existing(
            KeyHash::parse(&stored).map_err(StoreError::Other)?,
        )),
        None => {
            let (key, hash) = crate::cli::keys::new_key();
            Ok(Demo::New { key, hash })
        }
    }
}

/// Store a new key's hash unless another start stored one first (then that one is served).
pub async fn commit(store: &DynStore, demo: Demo) -> Result<Demo, StoreError> {
    let Demo::New { key, hash } = demo else {
        return Ok(demo);
    };
    let stored = store
        .setting_insert_if_absent(DEMO_KEY_SETTING, &hash.to_string())
        .await?;
    let stored = KeyHash::parse(&stored).map_err(StoreError::Other)?;
    if stored == hash {
        Ok(Demo::New { key, hash })
    } else {
        Ok(Demo::Existing(stored))
    }
}

/// `livegate keys demo`: a new demo key replaces the stored one; the old key stops working at
/// the gateway's next start.
pub async fn replace(store: &DynStore) -> Result<(String, KeyHash), StoreError> {
    let (key, hash) = crate::cli::keys::new_key();
    store
        .setting_replace(DEMO_KEY_SETTING, &hash.to_string())
        .await?;
    Ok((key, hash))
}

pub fn demo_config(key: &KeyHash) -> Result<Config, ConfigError> {
    let text = format!(
        r#"
providers:
  builtin: {{ kind: embedded }}
tenants:
  demo:
    keys: ["{key}"]
    threshold: 0.5
    routing: {{ strategy: single, providers: [builtin] }}
"#
    );
    Config::parse(&text, &|name| std::env::var(name).ok())
}
