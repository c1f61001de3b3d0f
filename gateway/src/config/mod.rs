//! The YAML configuration: parsed into a tree, `${ENV}` substituted inside string values only,
//! then typed and validated. Every problem is collected with its YAML path so an operator
//! fixes a broken file in one pass.

pub mod face_checks;
mod interpolate;
pub mod keys;
pub mod limits;
pub mod problems;
pub mod providers;
pub mod retention;
pub mod tenants;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

use interpolate::interpolate;
pub use keys::KeyHash;
pub use limits::{DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MAX_PIXELS, Limits};
use limits::{RawLimits, RawServer};
pub use problems::Problem;
use problems::{problem, typed};
use providers::provider_spec;
pub use providers::{ProviderKind, ProviderSpec, Resilience};
pub use tenants::{
    Credits, DEFAULT_COST, DEFAULT_DECLINE, DEFAULT_REVIEW, Decode, RateSpec, ReviewsBy, Routing,
    StoreRaw, Strategy, Tenant, WarningAction,
};
use tenants::{RawTenant, tenant};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// The validated configuration. Invalid states are unrepresentable past `Config::parse`.
#[derive(Debug, Clone)]
pub struct Config {
    pub providers: BTreeMap<String, ProviderSpec>,
    pub tenants: BTreeMap<String, Tenant>,
    pub admin_keys: Vec<KeyHash>,
    pub limits: Limits,
    /// The listener's timeouts and caps; read at start (a reload does not change them).
    pub server: limits::ServerLimits,
    /// The built-in engine's models, for face matching (`duplicates`, `blocklist`); default
    /// as for `kind: embedded` (`runtime/engine.rs`, `models_dir`).
    pub models_dir: Option<PathBuf>,
    /// The store every command uses for this config; before `DATABASE_URL`.
    pub database_url: Option<String>,
    /// `retention:` at the top level: every tenant's defaults, and what applies to the rows of
    /// tenants no longer configured.
    pub retention: retention::Retention,
    /// When the purge job runs, and how much one statement of it touches.
    pub purge: retention::PurgeSchedule,
    /// `sha256:` of the file's bytes: every verification records the config it was decided under.
    pub hash: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    #[serde(default)]
    providers: BTreeMap<String, Value>,
    #[serde(default)]
    tenants: BTreeMap<String, Value>,
    #[serde(default)]
    admin: Option<Value>,
    #[serde(default)]
    limits: Option<Value>,
    #[serde(default)]
    server: Option<Value>,
    #[serde(default)]
    models_dir: Option<PathBuf>,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    retention: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    keys: Vec<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, &|name| std::env::var(name).ok())
    }

    /// Parse and validate; `env` resolves `${NAME}` references.
    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let hash = format!("sha256:{}", hex::encode(Sha256::digest(text.as_bytes())));
        let mut problems = Vec::new();
        let mut tree: Value = match serde_yaml_ng::from_str(text) {
            Ok(Value::Null) => Value::Mapping(Default::default()),
            Ok(v) => v,
            Err(e) => {
                return Err(ConfigError::Invalid(vec![Problem {
                    path: String::new(),
                    message: format!("not valid YAML: {e}"),
                }]));
            }
        };
        interpolate(&mut tree, "", env, &mut problems);

        let root: RawRoot = match typed(tree, "", &mut problems) {
            Some(r) => r,
            None => return Err(ConfigError::Invalid(problems)),
        };

        let declared: std::collections::BTreeSet<String> = root.providers.keys().cloned().collect();
        let mut providers = BTreeMap::new();
        for (name, v) in root.providers {
            let path = format!("providers.{name}");
            if let Some(spec) = provider_spec(&name, v, &path, &mut problems) {
                providers.insert(name, spec);
            }
        }

        if root
            .database_url
            .as_deref()
            .is_some_and(|u| u.trim().is_empty())
        {
            problems.push(problem(
                "database_url",
                "is empty: remove the key or name the database (sqlite:FILE or postgres://…)",
            ));
        }
        if root.tenants.is_empty() {
            problems.push(problem(
                "tenants",
                "no tenants: every API key would be refused; declare at least one",
            ));
        }
        let (retention, purge) = match root.retention {
            Some(v) => typed::<retention::RawRootRetention>(v, "retention", &mut problems)
                .map(|raw| retention::root_retention(&raw, &mut problems))
                .unwrap_or_default(),
            None => Default::default(),
        };
        let mut tenants = BTreeMap::new();
        let mut seen_keys: HashMap<KeyHash, String> = HashMap::new();
        for (id, v) in root.tenants {
            let path = format!("tenants.{id}");
            let Some(raw) = typed::<RawTenant>(v, &path, &mut problems) else {
                continue;
            };
            if let Some(t) = tenant(
                &id,
                raw,
                &path,
                (&declared, retention),
                &mut seen_keys,
                &mut problems,
            ) {
                tenants.insert(id, t);
            }
        }

        let mut admin_keys = Vec::new();
        if let Some(v) = root.admin
            && let Some(raw) = typed::<RawAdmin>(v, "admin", &mut problems)
        {
            for (i, k) in raw.keys.iter().enumerate() {
                match KeyHash::parse(k) {
                    Ok(h) => admin_keys.push(h),
                    Err(e) => problems.push(problem(format!("admin.keys[{i}]"), e)),
                }
            }
        }

        let limits = match root.limits {
            Some(v) => typed::<RawLimits>(v, "limits", &mut problems)
                .map(|raw| limits::limits(raw, &mut problems))
                .unwrap_or_default(),
            None => Limits::default(),
        };
        let server = match root.server {
            Some(v) => typed::<RawServer>(v, "server", &mut problems)
                .map(|raw| limits::server(raw, &mut problems))
                .unwrap_or_default(),
            None => Default::default(),
        };

        outlives_deadlines(&limits, &tenants, &mut problems);
        if problems.is_empty() {
            Ok(Config {
                providers,
                tenants,
                admin_keys,
                limits,
                server,
                models_dir: root.models_dir,
                database_url: root.database_url,
                retention,
                purge,
                hash,
            })
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// A request's credit reservation and its `Idempotency-Key` lock last `reservation_ttl`: they
/// must outlive the longest deadline a request can run to, or an instance still working on a
/// request would see its reservation released and its key taken over.
fn outlives_deadlines(
    limits: &Limits,
    tenants: &BTreeMap<String, Tenant>,
    problems: &mut Vec<Problem>,
) {
    let longest = tenants.iter().max_by_key(|(_, t)| t.routing.deadline);
    if let Some((id, t)) = longest
        && limits.reservation_ttl <= t.routing.deadline
    {
        problems.push(problem(
            "limits.reservation_ttl_ms",
            format!(
                "must be longer than the longest routing deadline ({} ms, tenant {id}): a \
                 request's credit reservation and idempotency lock must outlive it",
                t.routing.deadline.as_millis()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::interpolate::substitute;
    use super::*;

    const EXAMPLE: &str = r#"
providers:
  didit: { kind: didit, base_url: "http://127.0.0.1:9101", api_key: "${DIDIT_API_KEY}", timeout_ms: 5000 }
tenants:
  acme:
    keys: ["sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"]
    threshold: 0.8
    routing: { strategy: single, providers: [didit] }
"#;

    fn env(name: &str) -> Option<String> {
        (name == "DIDIT_API_KEY").then(|| "k-123".to_owned())
    }

    #[test]
    fn issue_example_loads() {
        let c = Config::parse(EXAMPLE, &env).expect("valid");
        let t = &c.tenants["acme"];
        assert_eq!(t.threshold, 0.8);
        assert_eq!(t.keys[0], KeyHash::of_key("foo"));
        match &c.providers["didit"].kind {
            ProviderKind::Didit(s) => assert_eq!(s.api_key.expose(), "k-123"),
            other => panic!("{other:?}"),
        }
        assert!(c.hash.starts_with("sha256:"));
    }

    #[test]
    fn missing_env_var_is_named() {
        let err = Config::parse(EXAMPLE, &|_| None).expect_err("invalid");
        let ConfigError::Invalid(p) = err else {
            panic!()
        };
        assert_eq!(
            p[0].to_string(),
            "providers.didit.api_key: environment variable DIDIT_API_KEY is not set"
        );
    }

    #[test]
    fn interpolation_is_value_only() {
        assert_eq!(
            substitute("a${X}b$${Y}", &|_| Some("1".into())).expect("ok"),
            "a1b${Y}"
        );
        assert!(substitute("${X}", &|_| Some("a\nb".into())).is_err());
        assert_eq!(substitute("cost $5", &|_| None).expect("ok"), "cost $5");
    }

    #[test]
    fn a_rate_below_one_call_a_day_is_refused() {
        let text = EXAMPLE.replace("timeout_ms: 5000", "timeout_ms: 5000, max_rps: 1e-300");
        let ConfigError::Invalid(p) = Config::parse(&text, &env).expect_err("invalid") else {
            panic!()
        };
        assert!(
            p.iter().any(|p| p.path == "providers.didit.max_rps"),
            "{p:?}"
        );
        let daily = EXAMPLE.replace("timeout_ms: 5000", "timeout_ms: 5000, max_rps: 0.0001");
        Config::parse(&daily, &env).expect("a slow limit is fine");
    }

    #[test]
    fn values_that_would_overflow_or_panic_are_problems() {
        let text = format!(
            "{EXAMPLE}limits: {{ max_image_bytes: 18446744073709551615, reservation_ttl_ms: \
             18446744073709551615, max_in_flight: 0, idempotency_wait_ms: 18446744073709551615 }}\n\
             server: {{ header_timeout_ms: 0, max_header_bytes: 10, max_connections: 0 }}\n"
        );
        let ConfigError::Invalid(p) = Config::parse(&text, &env).expect_err("invalid") else {
            panic!()
        };
        for path in [
            "limits.max_image_bytes",
            "limits.reservation_ttl_ms",
            "limits.max_in_flight",
            "limits.idempotency_wait_ms",
            "server.header_timeout_ms",
            "server.max_header_bytes",
            "server.max_connections",
        ] {
            assert!(
                p.iter().any(|p| p.path == path),
                "{path} not reported: {p:?}"
            );
        }
        let fine = format!(
            "{EXAMPLE}limits: {{ max_in_flight: 8, max_decoded_bytes: 1048576 }}\n\
             server: {{ header_timeout_ms: 500, keep_alive_timeout_ms: 2000 }}\n"
        );
        let c = Config::parse(&fine, &env).expect("valid");
        assert_eq!(c.limits.max_in_flight_per_tenant, 6);
        assert_eq!(c.server.header_timeout, Duration::from_millis(500));
    }

    #[test]
    fn plain_http_to_a_remote_vendor_needs_an_explicit_yes() {
        let remote = EXAMPLE.replace("http://127.0.0.1:9101", "http://didit.example.com");
        let ConfigError::Invalid(p) = Config::parse(&remote, &env).expect_err("invalid") else {
            panic!()
        };
        assert!(
            p.iter()
                .any(|p| p.path == "providers.didit.base_url" && p.message.contains("https")),
            "{p:?}"
        );
        let allowed = remote.replace(
            "timeout_ms: 5000",
            "timeout_ms: 5000, allow_insecure_http: true",
        );
        Config::parse(&allowed, &env).expect("explicitly allowed");
        let tls = EXAMPLE.replace("http://127.0.0.1:9101", "https://didit.example.com");
        Config::parse(&tls, &env).expect("https");
        let local = EXAMPLE.replace("http://127.0.0.1:9101", "http://localhost:9101");
        Config::parse(&local, &env).expect("loopback");
    }

    #[test]
    fn reservations_must_outlive_every_deadline() {
        let text = format!(
            "{EXAMPLE}    \n  slow:\n    keys: [\"sha256:{}\"]\n    routing: {{ strategy: single, providers: [didit], deadline_ms: 200000 }}\n",
            "ab".repeat(32)
        );
        let ConfigError::Invalid(p) = Config::parse(&text, &env).expect_err("invalid") else {
            panic!()
        };
        assert!(
            p.iter().any(|p| p.path == "limits.reservation_ttl_ms"
                && p.message.contains("200000 ms, tenant slow")),
            "{p:?}"
        );
        let fits = text.replace("deadline_ms: 200000", "deadline_ms: 60000");
        Config::parse(&fits, &env).expect("a 60 s deadline fits the default 120 s");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = r#"
providers:
  didit: { kind: didit, base_url: "ftp://x", api_key: "k", colour: blue }
  kai: { kind: kairos, base_url: "http://k" }
tenants:
  acme:
    keys: ["sha256:nothex"]
    threshold: 1.5
    routing: { strategy: single, providers: [ditid] }
  beta:
    keys: []
    routing: { strategy: sideways, providers: [didit] }
"#;
        let ConfigError::Invalid(p) = Config::parse(text, &env).expect_err("invalid") else {
            panic!()
        };
        let lines: Vec<String> = p.iter().map(|p| p.to_string()).collect();
        let has = |prefix: &str| lines.iter().any(|l| l.starts_with(prefix));
        assert!(has("providers.didit.colour: unknown field"), "{lines:#?}");
        assert!(has("providers.kai.app_id: required"), "{lines:#?}");
        assert!(has("providers.kai.app_key: required"), "{lines:#?}");
        assert!(has("tenants.acme.keys[0]:"), "{lines:#?}");
        assert!(has("tenants.acme.threshold:"), "{lines:#?}");
        assert!(
            has("tenants.acme.routing.providers[0]: unknown provider \"ditid\""),
            "{lines:#?}"
        );
        assert!(
            has("tenants.beta.routing.strategy: unknown variant"),
            "{lines:#?}"
        );
    }
}
