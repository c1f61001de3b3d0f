//! API keys: random, prefixed so they are recognisable in a leak scan, stored only as hashes.

use rand::RngCore;

use crate::config::KeyHash;

/// A fresh key and the hash to paste into YAML.
pub fn new_key() -> (String, KeyHash) {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let key = format!("lg_{}", hex::encode(bytes));
    let hash = KeyHash::of_key(&key);
    (key, hash)
}
