//! `providers:` entries: the kind's own settings, timeouts and resilience.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use livegate_providers::Secret;
/// Kairos's credential-header spelling, as the adapter defines it.
pub use livegate_providers::kairos::HeaderStyle;

use crate::config::problems::{Problem, problem};

/// A provider entry with its kind-specific settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSpec {
    pub name: String,
    pub timeout: Duration,
    pub kind: ProviderKind,
    pub resilience: Resilience,
}

/// How livegate protects a tenant from a failing provider and a provider from livegate.
#[derive(Debug, Clone, PartialEq)]
pub struct Resilience {
    /// Extra tries on the same provider after a transient failure.
    pub retries: u32,
    /// Outbound requests per second (a vendor's documented limit), `None` = unlimited.
    pub max_rps: Option<f64>,
    /// Outbound calls in flight at once, `None` = unlimited.
    pub max_concurrency: Option<usize>,
    /// Consecutive failures that open the circuit.
    pub breaker_failures: u32,
    /// How long an open circuit stays open before one probe is let through.
    pub breaker_cooldown: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            retries: 0,
            max_rps: None,
            max_concurrency: None,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    Didit {
        base_url: String,
        api_key: Secret,
        save_api_request: bool,
        rotate_image: Option<bool>,
    },
    Kairos {
        base_url: String,
        path: String,
        app_id: Secret,
        app_key: Secret,
        header_style: HeaderStyle,
    },
    Collections {
        base_url: String,
        api_key: Secret,
        collection_id: String,
    },
    Embedded {
        models_dir: Option<PathBuf>,
        max_queue: Option<usize>,
    },
}

impl ProviderKind {
    pub fn name(&self) -> &'static str {
        match self {
            ProviderKind::Didit { .. } => "didit",
            ProviderKind::Kairos { .. } => "kairos",
            ProviderKind::Collections { .. } => "collections",
            ProviderKind::Embedded { .. } => "embedded",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    kind: String,
    base_url: Option<String>,
    api_key: Option<String>,
    timeout_ms: Option<u64>,
    save_api_request: Option<bool>,
    rotate_image: Option<bool>,
    path: Option<String>,
    app_id: Option<String>,
    app_key: Option<String>,
    header_style: Option<HeaderStyle>,
    collection_id: Option<String>,
    models_dir: Option<PathBuf>,
    max_queue: Option<usize>,
    retries: Option<u32>,
    max_rps: Option<f64>,
    max_concurrency: Option<usize>,
    circuit_breaker: Option<RawBreaker>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    failures: Option<u32>,
    cooldown_ms: Option<u64>,
}

fn required<T>(
    v: Option<T>,
    path: &str,
    field: &str,
    kind: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    if v.is_none() {
        problems.push(problem(
            format!("{path}.{field}"),
            format!("required for kind {kind}"),
        ));
    }
    v
}

fn url(v: Option<String>, path: &str, kind: &str, problems: &mut Vec<Problem>) -> Option<String> {
    let u = required(v, path, "base_url", kind, problems)?;
    if !(u.starts_with("http://") || u.starts_with("https://")) {
        problems.push(problem(
            format!("{path}.base_url"),
            format!("{u:?} is not an http(s) URL"),
        ));
        return None;
    }
    Some(u.trim_end_matches('/').to_owned())
}

fn secret(
    v: Option<String>,
    path: &str,
    field: &str,
    kind: &str,
    problems: &mut Vec<Problem>,
) -> Option<Secret> {
    let s = required(v, path, field, kind, problems)?;
    if s.trim().is_empty() {
        problems.push(problem(format!("{path}.{field}"), "must not be empty"));
        return None;
    }
    Some(Secret::new(s))
}

pub fn provider_spec(
    name: &str,
    mut raw: RawProvider,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<ProviderSpec> {
    let before = problems.len();
    let timeout_ms = raw.timeout_ms.unwrap_or(10_000);
    if timeout_ms == 0 || timeout_ms > 120_000 {
        problems.push(problem(
            format!("{path}.timeout_ms"),
            "must be between 1 and 120000",
        ));
    }
    let tuning = Tuning {
        retries: raw.retries,
        max_rps: raw.max_rps,
        max_concurrency: raw.max_concurrency,
        circuit_breaker: raw.circuit_breaker.take(),
    };
    let k = raw.kind.clone();
    check_fields(&k, &raw, path, problems)?;
    let kind = kind_settings(&k, raw, path, problems)?;
    let resilience = resilience(tuning, path, problems);
    (problems.len() == before).then(|| ProviderSpec {
        name: name.to_owned(),
        timeout: Duration::from_millis(timeout_ms),
        kind,
        resilience,
    })
}

/// The settings every kind shares: retries, caps and the circuit breaker.
struct Tuning {
    retries: Option<u32>,
    max_rps: Option<f64>,
    max_concurrency: Option<usize>,
    circuit_breaker: Option<RawBreaker>,
}

/// The kind is known and no field of another kind is set.
fn check_fields(k: &str, raw: &RawProvider, path: &str, problems: &mut Vec<Problem>) -> Option<()> {
    // Fields that mean nothing for this kind are a mistake worth reporting, not ignoring.
    let allowed: &[&str] = match k {
        "didit" => &["base_url", "api_key", "save_api_request", "rotate_image"],
        "kairos" => &["base_url", "path", "app_id", "app_key", "header_style"],
        "collections" => &["base_url", "api_key", "collection_id"],
        "embedded" => &["models_dir", "max_queue"],
        other => {
            problems.push(problem(
                format!("{path}.kind"),
                format!("unknown provider kind {other:?} (expected didit, kairos, collections or embedded)"),
            ));
            return None;
        }
    };
    let present = [
        ("base_url", raw.base_url.is_some()),
        ("api_key", raw.api_key.is_some()),
        ("save_api_request", raw.save_api_request.is_some()),
        ("rotate_image", raw.rotate_image.is_some()),
        ("path", raw.path.is_some()),
        ("app_id", raw.app_id.is_some()),
        ("app_key", raw.app_key.is_some()),
        ("header_style", raw.header_style.is_some()),
        ("collection_id", raw.collection_id.is_some()),
        ("models_dir", raw.models_dir.is_some()),
        ("max_queue", raw.max_queue.is_some()),
    ];
    for (field, is_set) in present {
        if is_set && !allowed.contains(&field) {
            problems.push(problem(
                format!("{path}.{field}"),
                format!("not a setting of kind {k}"),
            ));
        }
    }
    Some(())
}

/// The kind's own settings, each required one present and well-formed.
fn kind_settings(
    k: &str,
    raw: RawProvider,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<ProviderKind> {
    Some(match k {
        "didit" => ProviderKind::Didit {
            base_url: url(raw.base_url, path, k, problems)?,
            api_key: secret(raw.api_key, path, "api_key", k, problems)?,
            save_api_request: raw.save_api_request.unwrap_or(false),
            rotate_image: raw.rotate_image,
        },
        "kairos" => {
            let base_url = url(raw.base_url, path, k, problems);
            let app_id = secret(raw.app_id, path, "app_id", k, problems);
            let app_key = secret(raw.app_key, path, "app_key", k, problems);
            let p = raw
                .path
                .unwrap_or_else(|| "/v0.2/liveness-verification".to_owned());
            if !p.starts_with('/') {
                problems.push(problem(format!("{path}.path"), "must start with /"));
            }
            ProviderKind::Kairos {
                base_url: base_url?,
                path: p,
                app_id: app_id?,
                app_key: app_key?,
                header_style: raw.header_style.unwrap_or(HeaderStyle::Both),
            }
        }
        "collections" => {
            let base_url = url(raw.base_url, path, k, problems);
            let api_key = secret(raw.api_key, path, "api_key", k, problems);
            let collection_id = required(raw.collection_id, path, "collection_id", k, problems);
            ProviderKind::Collections {
                base_url: base_url?,
                api_key: api_key?,
                collection_id: collection_id?,
            }
        }
        _ => ProviderKind::Embedded {
            models_dir: raw.models_dir,
            max_queue: raw.max_queue,
        },
    })
}

fn resilience(raw: Tuning, path: &str, problems: &mut Vec<Problem>) -> Resilience {
    let mut resilience = Resilience::default();
    if let Some(r) = raw.retries {
        if r > 5 {
            problems.push(problem(
                format!("{path}.retries"),
                "must be between 0 and 5",
            ));
        }
        resilience.retries = r;
    }
    if let Some(rps) = raw.max_rps {
        if !(rps.is_finite() && rps > 0.0) {
            problems.push(problem(
                format!("{path}.max_rps"),
                "must be a number greater than 0",
            ));
        }
        resilience.max_rps = Some(rps);
    }
    if let Some(c) = raw.max_concurrency {
        if c == 0 {
            problems.push(problem(
                format!("{path}.max_concurrency"),
                "must be at least 1",
            ));
        }
        resilience.max_concurrency = Some(c);
    }
    if let Some(b) = raw.circuit_breaker {
        if let Some(f) = b.failures {
            if f == 0 {
                problems.push(problem(
                    format!("{path}.circuit_breaker.failures"),
                    "must be at least 1",
                ));
            }
            resilience.breaker_failures = f;
        }
        if let Some(ms) = b.cooldown_ms {
            if ms == 0 {
                problems.push(problem(
                    format!("{path}.circuit_breaker.cooldown_ms"),
                    "must be at least 1",
                ));
            }
            resilience.breaker_cooldown = Duration::from_millis(ms);
        }
    }
    resilience
}
