//! API keys as the config holds them: `sha256:<hex>` hashes, never the keys.

use std::fmt;

use sha2::{Digest, Sha256};

/// `sha256:<hex>` of an API key, as pasted into YAML.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of_key(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
    }

    /// `sha256:` and the hash's first 16 hex digits: names a key in audit rows without
    /// revealing it (the hash alone cannot be turned back into the key either way).
    pub fn id(&self) -> String {
        format!("sha256:{}", hex::encode(&self.0[..8]))
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        let hex_part = s
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("key hash {s:?} must look like \"sha256:<64 hex>\""))?;
        let bytes = hex::decode(hex_part).map_err(|_| {
            "key hash must be 64 lowercase hex characters after \"sha256:\"".to_owned()
        })?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            "key hash must be 64 hex characters (32 bytes) after \"sha256:\"".to_owned()
        })?;
        Ok(KeyHash(arr))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}
