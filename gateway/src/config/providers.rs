//! `providers:` entries: the kind's own settings, timeouts and resilience.

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use livegate_providers::{SettingProblem, collections, didit, embedded, kairos};

use crate::config::problems::{Problem, problem, typed};

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

/// A provider entry's kind with that adapter's own settings: each adapter describes its
/// settings once, and this enum only names them by `kind`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ProviderKind {
    Didit(didit::Settings),
    Kairos(kairos::Settings),
    Collections(collections::Settings),
    Embedded(embedded::Settings),
}

impl ProviderKind {
    pub fn name(&self) -> &'static str {
        match self {
            ProviderKind::Didit(_) => "didit",
            ProviderKind::Kairos(_) => "kairos",
            ProviderKind::Collections(_) => "collections",
            ProviderKind::Embedded(_) => "embedded",
        }
    }

    fn problems(&self) -> Vec<SettingProblem> {
        match self {
            ProviderKind::Didit(s) => s.problems(),
            ProviderKind::Kairos(s) => s.problems(),
            ProviderKind::Collections(s) => s.problems(),
            ProviderKind::Embedded(s) => s.problems(),
        }
    }
}

/// The slowest outbound rate a provider may be limited to: one call a day.
const MIN_RPS: f64 = 1.0 / 86_400.0;

/// The keys every kind shares; everything else in an entry belongs to its kind.
const SHARED: [&str; 5] = [
    "timeout_ms",
    "retries",
    "max_rps",
    "max_concurrency",
    "circuit_breaker",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Shared {
    timeout_ms: Option<u64>,
    retries: Option<u32>,
    max_rps: Option<f64>,
    max_concurrency: Option<usize>,
    circuit_breaker: Option<RawBreaker>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    failures: Option<u32>,
    cooldown_ms: Option<u64>,
}

pub fn provider_spec(
    name: &str,
    entry: Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<ProviderSpec> {
    let Value::Mapping(mut own) = entry else {
        problems.push(problem(path, "must be a mapping with a kind"));
        return None;
    };
    let mut shared = Mapping::new();
    for key in SHARED {
        if let Some(v) = own.remove(key) {
            shared.insert(key.into(), v);
        }
    }
    let before = problems.len();
    let shared: Shared = typed(Value::Mapping(shared), path, problems)?;
    let timeout_ms = shared.timeout_ms.unwrap_or(10_000);
    if timeout_ms == 0 || timeout_ms > 120_000 {
        problems.push(problem(
            format!("{path}.timeout_ms"),
            "must be between 1 and 120000",
        ));
    }
    let kind = kind_settings(own, path, problems);
    let resilience = resilience(shared, path, problems);
    (problems.len() == before).then_some(ProviderSpec {
        name: name.to_owned(),
        timeout: Duration::from_millis(timeout_ms),
        kind: kind?,
        resilience,
    })
}

/// The kind's settings, each problem reported at its field's path.
fn kind_settings(own: Mapping, path: &str, problems: &mut Vec<Problem>) -> Option<ProviderKind> {
    let kind = match ProviderKind::deserialize(Value::Mapping(own.clone())) {
        Ok(kind) => kind,
        // serde's tagged enums lose the field path and stop at the first problem: read the
        // entry again as its kind's own struct to name every problem where it is.
        Err(_) => {
            diagnose(own, path, problems);
            return None;
        }
    };
    let found = kind.problems();
    for p in &found {
        problems.push(problem(format!("{path}.{}", p.field), p.message.clone()));
    }
    found.is_empty().then_some(kind)
}

fn diagnose(mut own: Mapping, path: &str, problems: &mut Vec<Problem>) {
    let kind = match own.remove("kind") {
        Some(Value::String(k)) => k,
        Some(_) => return problems.push(problem(format!("{path}.kind"), "must be a string")),
        None => return problems.push(problem(format!("{path}.kind"), "required")),
    };
    let found = match kind.as_str() {
        "didit" => {
            every_problem::<didit::Settings>(own, path, &kind, problems).map(|s| s.problems())
        }
        "kairos" => {
            every_problem::<kairos::Settings>(own, path, &kind, problems).map(|s| s.problems())
        }
        "collections" => {
            every_problem::<collections::Settings>(own, path, &kind, problems).map(|s| s.problems())
        }
        "embedded" => {
            every_problem::<embedded::Settings>(own, path, &kind, problems).map(|s| s.problems())
        }
        other => {
            return problems.push(problem(
                format!("{path}.kind"),
                format!(
                    "unknown provider kind {other:?} (expected didit, kairos, collections or embedded)"
                ),
            ));
        }
    };
    for p in found.into_iter().flatten() {
        problems.push(problem(format!("{path}.{}", p.field), p.message));
    }
}

/// Deserialize `own` as `T`, reporting each missing and each unknown field rather than only
/// the first: a missing field is noted and stood in for, an unknown one noted and dropped,
/// then the entry is read again. `T` is returned only when nothing was missing.
fn every_problem<T: DeserializeOwned>(
    mut own: Mapping,
    path: &str,
    kind: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut missing = false;
    // Each round removes one problem; an entry has far fewer fields than this.
    for _ in 0..64 {
        let err = match serde_path_to_error::deserialize::<_, T>(Value::Mapping(own.clone())) {
            Ok(t) => return (!missing).then_some(t),
            Err(e) => e.into_inner().to_string(),
        };
        if let Some(field) = quoted_after(&err, "missing field `") {
            problems.push(problem(
                format!("{path}.{field}"),
                format!("required for kind {kind}"),
            ));
            // Every required setting is text; a placeholder lets the rest be read.
            own.insert(field.into(), Value::String(String::new()));
            missing = true;
        } else if let Some(field) = quoted_after(&err, "unknown field `") {
            let message = err.split(" at line ").next().unwrap_or(&err);
            problems.push(problem(format!("{path}.{field}"), message));
            own.remove(field.as_str());
        } else {
            // Anything else names its own field: let the path-tracking reader report it.
            typed::<T>(Value::Mapping(own), path, problems);
            return None;
        }
    }
    None
}

/// The text between `prefix` and the next backtick, as serde words its field errors.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.split_once(prefix)?.1;
    Some(rest.split_once('`')?.0.to_owned())
}

fn resilience(raw: Shared, path: &str, problems: &mut Vec<Problem>) -> Resilience {
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
        // Below one call a day a limit is a typo, and its period would not fit a clock.
        if !(rps.is_finite() && rps >= MIN_RPS) {
            problems.push(problem(
                format!("{path}.max_rps"),
                "must be a number of calls a second of at least one a day (0.0000116)",
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
