//! Collection API keys: `fr_live_<32 hex>` or `fr_test_<32 hex>`, each bound to one
//! collection and stored only as its SHA-256.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// Whether a key was issued for production (`fr_live_`) or testing (`fr_test_`). The server
/// treats both alike; the mode is kept so operators can tell them apart in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyMode {
    /// `fr_live_…`
    Live,
    /// `fr_test_…`
    Test,
}

impl KeyMode {
    /// `"live"` or `"test"`, as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeyMode::Live => "live",
            KeyMode::Test => "test",
        }
    }

    /// The stored name back.
    pub fn parse(s: &str) -> Option<KeyMode> {
        match s {
            "live" => Some(KeyMode::Live),
            "test" => Some(KeyMode::Test),
            _ => None,
        }
    }
}

/// The key's mode when it has the documented shape `^fr_(live|test)_[0-9a-f]{32}$`, `None`
/// otherwise. Upper-case hex is refused: the documented pattern is lower case, and accepting
/// both would give one secret two spellings with two different hashes.
pub fn key_mode(key: &str) -> Option<KeyMode> {
    let (mode, rest) = if let Some(rest) = key.strip_prefix("fr_live_") {
        (KeyMode::Live, rest)
    } else if let Some(rest) = key.strip_prefix("fr_test_") {
        (KeyMode::Test, rest)
    } else {
        return None;
    };
    let hex_ok = rest.len() == 32 && rest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    hex_ok.then_some(mode)
}

/// Lower-case hex SHA-256 of the key, the only form in which keys are stored. A plain hash is
/// enough: keys carry 128 random bits, so there is nothing to brute-force.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A key of `mode` from 16 random bytes. The caller supplies the randomness so that this crate
/// needs no random number generator of its own.
pub fn format_key(mode: KeyMode, random: [u8; 16]) -> String {
    format!("fr_{}_{}", mode.as_str(), hex::encode(random))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let live = format_key(KeyMode::Live, [0xab; 16]);
        assert_eq!(live, format!("fr_live_{}", "ab".repeat(16)));
        assert_eq!(key_mode(&live), Some(KeyMode::Live));
        let test = format_key(KeyMode::Test, [7; 16]);
        assert_eq!(key_mode(&test), Some(KeyMode::Test));
        for bad in [
            "",
            "fr_live_",
            "fr_prod_0123456789abcdef0123456789abcdef",
            "fr_live_0123456789ABCDEF0123456789abcdef",
            "fr_live_0123456789abcdef0123456789abcde",
            "fr_live_0123456789abcdef0123456789abcdef0",
            "fr_live_0123456789abcdef0123456789abcdeg",
            " fr_live_0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(key_mode(bad), None, "{bad:?}");
        }
        assert_eq!(KeyMode::parse(KeyMode::Live.as_str()), Some(KeyMode::Live));
        assert_eq!(KeyMode::parse(KeyMode::Test.as_str()), Some(KeyMode::Test));
        assert_eq!(KeyMode::parse("prod"), None);
    }

    #[test]
    fn hash_is_sha256_hex() {
        // sha256("abc"), a published test vector.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
