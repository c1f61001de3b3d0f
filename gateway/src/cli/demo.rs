//! The zero-config setup of `livegate serve` without a config file: the built-in engine and a
//! `demo` tenant whose key is minted at first start, printed once, and kept only as a hash.

use crate::config::{Config, ConfigError, KeyHash};
use crate::store::{DynStore, StoreError};

const DEMO_KEY_SETTING: &str = "demo_tenant_key_hash";

/// What the operator is told at start-up.
pub enum DemoKey {
    /// Minted now: the only time it is shown.
    New(String),
    /// Minted at an earlier start.
    Existing,
}

pub async fn demo_key(store: &DynStore) -> Result<(KeyHash, DemoKey), StoreError> {
    let (key, hash) = crate::cli::keys::new_key();
    let stored = store
        .setting_insert_if_absent(DEMO_KEY_SETTING, &hash.to_string())
        .await?;
    let stored_hash = KeyHash::parse(&stored).map_err(StoreError::Other)?;
    if stored_hash == hash {
        Ok((hash, DemoKey::New(key)))
    } else {
        Ok((stored_hash, DemoKey::Existing))
    }
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
