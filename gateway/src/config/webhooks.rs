//! A tenant's `webhooks:`: where its events are delivered, signed as Standard Webhooks
//! (`whsec_` secrets). Delivery is `http/webhooks.rs`.

use std::net::IpAddr;

use base64::Engine as _;
use serde::Deserialize;

use super::problems::{Problem, problem};

/// The events a webhook may ask for.
pub const EVENTS: [&str; 2] = ["verification.completed", "review.resolved"];

#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: url::Url,
    /// The signing key: the bytes `whsec_<base64>` names.
    pub secret: Vec<u8>,
    pub events: Vec<String>,
    /// Loopback and private targets allowed (tests, internal receivers).
    pub allow_private_targets: bool,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.url.as_str())
            .field("secret", &"***")
            .field("events", &self.events)
            .field("allow_private_targets", &self.allow_private_targets)
            .finish()
    }
}

impl Webhook {
    pub fn wants(&self, event: &str) -> bool {
        self.events.iter().any(|e| e == event)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    url: String,
    secret: String,
    #[serde(default = "all_events")]
    events: Vec<String>,
    #[serde(default)]
    allow_private_targets: bool,
}

fn all_events() -> Vec<String> {
    EVENTS.iter().map(|e| (*e).to_owned()).collect()
}

/// Loopback, private, link-local, shared (CGNAT), unspecified, broadcast or multicast: an
/// address a webhook may not reach unless it allows private targets.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] == 0
        }
        IpAddr::V6(v) => {
            if let Some(v4) = v.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v.segments();
            v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// `whsec_<base64>` → the key's bytes.
pub fn secret(text: &str) -> Result<Vec<u8>, String> {
    let b64 = text
        .strip_prefix("whsec_")
        .ok_or_else(|| "must look like whsec_<base64> (Standard Webhooks)".to_owned())?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the part after whsec_ is not base64".to_owned())?;
    if key.len() < 24 {
        return Err("is too short: use at least 24 random bytes".to_owned());
    }
    Ok(key)
}

pub fn webhooks(raw: Vec<RawWebhook>, path: &str, problems: &mut Vec<Problem>) -> Vec<Webhook> {
    let mut out = Vec::new();
    for (i, w) in raw.into_iter().enumerate() {
        let at = format!("{path}.webhooks[{i}]");
        let before = problems.len();
        let url = match url::Url::parse(&w.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                problems.push(problem(
                    format!("{at}.url"),
                    "must be an absolute http(s) URL",
                ));
                None
            }
        };
        if let Some(u) = &url {
            let literal = match u.host() {
                Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
                Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
                _ => None,
            };
            let local = literal.is_some_and(is_private) || u.host_str() == Some("localhost");
            if local && !w.allow_private_targets {
                problems.push(problem(
                    format!("{at}.url"),
                    "is a loopback or private address: set allow_private_targets: true to allow it",
                ));
            }
        }
        let secret = secret(&w.secret)
            .map_err(|m| problems.push(problem(format!("{at}.secret"), m)))
            .ok();
        if w.events.is_empty() {
            problems.push(problem(format!("{at}.events"), "lists no event"));
        }
        for (j, e) in w.events.iter().enumerate() {
            if !EVENTS.contains(&e.as_str()) {
                problems.push(problem(
                    format!("{at}.events[{j}]"),
                    format!("unknown event {e:?}: known are {}", EVENTS.join(", ")),
                ));
            }
        }
        if let (Some(url), Some(secret), true) = (url, secret, problems.len() == before) {
            out.push(Webhook {
                url,
                secret,
                events: w.events,
                allow_private_targets: w.allow_private_targets,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:4700::1111", "172.32.0.1"] {
            assert!(!is_private(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn secrets_are_standard_webhooks() {
        assert_eq!(
            secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").map(|k| k.len()),
            Ok(24)
        );
        assert!(secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret("whsec_!!").is_err());
        assert!(secret("whsec_c2hvcnQ=").is_err());
    }
}
