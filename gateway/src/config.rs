//! The YAML configuration: parsed into a tree, `${ENV}` substituted inside string values only,
//! then typed and validated. Every problem is collected with its YAML path so an operator
//! fixes a broken file in one pass.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};

use livegate_providers::Secret;

/// Default image cap: 5 MiB, as the Didit document (the strictest upstream) allows.
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 5 * 1024 * 1024;
/// Decompression-bomb guard: more pixels than any selfie camera produces.
pub const DEFAULT_MAX_PIXELS: u64 = 40_000_000;

/// One problem in a config file, located by its YAML path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

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
    /// The built-in engine's models, for face matching (`duplicates`, `blocklist`); default
    /// as for `kind: embedded` (`LIVEGATE_MODELS_DIR`, `./models`, `../shared/models`).
    pub models_dir: Option<PathBuf>,
    /// `sha256:` of the file's bytes: every verification records the config it was decided under.
    pub hash: String,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_image_bytes: usize,
    pub max_pixels: u64,
    /// How long a credit reservation lives without being settled: past it, the reservation
    /// belonged to a crashed instance and any instance releases it.
    pub reservation_ttl: Duration,
    /// How long a request waits for another one holding the same `Idempotency-Key` before 409.
    pub idempotency_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            max_pixels: DEFAULT_MAX_PIXELS,
            reservation_ttl: Duration::from_secs(120),
            idempotency_wait: Duration::from_secs(35),
        }
    }
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderStyle {
    Underscore,
    Hyphen,
    Both,
}

/// `sha256:<hex>` of an API key, as pasted into YAML.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    pub fn of_key(key: &str) -> Self {
        KeyHash(Sha256::digest(key.as_bytes()).into())
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

#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub keys: Vec<KeyHash>,
    pub threshold: f64,
    pub review_band: Option<f64>,
    pub routing: Routing,
    pub warning_actions: HashMap<String, WarningAction>,
    /// A request may name one of the tenant's providers with `provider=`.
    pub allow_provider_override: bool,
    /// Below this face quality (0-1) livegate adds `LOW_FACE_QUALITY`.
    pub min_face_quality: Option<f64>,
    /// Outside `[min, max]` face luminance (0-1) livegate adds `LOW_`/`HIGH_FACE_LUMINANCE`.
    pub luminance: Option<(f64, f64)>,
    /// Metered tenants have a balance; `None` means unmetered.
    pub credits: Option<Credits>,
    pub rate_limit: Option<RateSpec>,
    /// Limits of single keys, on top of the tenant's.
    pub key_rate_limits: HashMap<KeyHash, RateSpec>,
    /// `duplicates` and `blocklist` (face matching, `identity.rs`).
    pub face_checks: crate::identity::FaceChecks,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Credits {
    /// Balance the account opens with, applied once (later changes to it are ignored: top up
    /// with the admin API or `livegate credits add`).
    pub initial: i64,
    /// Cost per provider; a provider missing here costs `DEFAULT_COST`.
    pub cost: BTreeMap<String, i64>,
}

pub const DEFAULT_COST: i64 = 1;

impl Credits {
    pub fn cost_of(&self, provider: &str) -> i64 {
        self.cost.get(provider).copied().unwrap_or(DEFAULT_COST)
    }
}

/// GCRA: `per_second` sustained, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    pub per_second: f64,
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

#[derive(Debug, Clone)]
pub struct Routing {
    pub strategy: Strategy,
    pub providers: Vec<String>,
    /// `weighted` only: one weight per provider.
    pub weights: Vec<u32>,
    /// `weighted` only: fall back to the other providers on retryable failures.
    pub fallback: bool,
    /// Overall time for all attempts of one request.
    pub deadline: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    Single,
    Fallback,
    Weighted,
    Shadow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningAction {
    Decline,
    Review,
    Ignore,
}

// ---- raw, as written in YAML -------------------------------------------------------------

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
    models_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
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
struct RawBreaker {
    failures: Option<u32>,
    cooldown_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    keys: Vec<RawKey>,
    #[serde(default = "default_threshold")]
    threshold: f64,
    review_band: Option<f64>,
    routing: RawRouting,
    #[serde(default)]
    warnings: BTreeMap<String, WarningAction>,
    #[serde(default)]
    allow_provider_override: bool,
    min_face_quality: Option<f64>,
    luminance: Option<[f64; 2]>,
    credits: Option<RawCredits>,
    rate_limit: Option<RateSpec>,
    duplicates: Option<crate::identity::RawFaceCheck>,
    blocklist: Option<crate::identity::RawFaceCheck>,
}

/// A key hash, alone or with a limit of its own.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawKey {
    Hash(String),
    WithLimit {
        hash: String,
        rate_limit: Option<RateSpec>,
    },
}

impl RawKey {
    fn hash(&self) -> &str {
        match self {
            RawKey::Hash(h) | RawKey::WithLimit { hash: h, .. } => h,
        }
    }

    fn rate_limit(&self) -> Option<RateSpec> {
        match self {
            RawKey::Hash(_) => None,
            RawKey::WithLimit { rate_limit, .. } => *rate_limit,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredits {
    initial: i64,
    #[serde(default)]
    cost: BTreeMap<String, i64>,
}

fn default_threshold() -> f64 {
    0.5
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouting {
    strategy: Strategy,
    providers: Vec<String>,
    #[serde(default)]
    weights: Vec<u32>,
    #[serde(default)]
    fallback: bool,
    deadline_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    #[serde(default)]
    keys: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_image_bytes: Option<usize>,
    max_pixels: Option<u64>,
    reservation_ttl_ms: Option<u64>,
    idempotency_wait_ms: Option<u64>,
}

/// Warning codes that decline by default, as the Didit document auto-declines them.
pub const DEFAULT_DECLINE: [&str; 4] = [
    "NO_FACE_DETECTED",
    "LIVENESS_FACE_ATTACK",
    "FACE_IN_BLOCKLIST",
    "POSSIBLE_FACE_IN_BLOCKLIST",
];
pub const DEFAULT_REVIEW: [&str; 1] = ["MULTIPLE_FACES_DETECTED"];

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
            if let Some(raw) = typed::<RawProvider>(v, &path, &mut problems)
                && let Some(spec) = provider_spec(&name, raw, &path, &mut problems)
            {
                providers.insert(name, spec);
            }
        }

        let mut tenants = BTreeMap::new();
        let mut seen_keys: HashMap<KeyHash, String> = HashMap::new();
        for (id, v) in root.tenants {
            let path = format!("tenants.{id}");
            let Some(raw) = typed::<RawTenant>(v, &path, &mut problems) else {
                continue;
            };
            if let Some(t) = tenant(&id, raw, &path, &declared, &mut seen_keys, &mut problems) {
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

        let mut limits = Limits::default();
        if let Some(v) = root.limits
            && let Some(raw) = typed::<RawLimits>(v, "limits", &mut problems)
        {
            if let Some(b) = raw.max_image_bytes {
                if b == 0 {
                    problems.push(problem("limits.max_image_bytes", "must be greater than 0"));
                }
                limits.max_image_bytes = b;
            }
            if let Some(p) = raw.max_pixels {
                limits.max_pixels = p;
            }
            if let Some(ms) = raw.reservation_ttl_ms {
                if ms < 1_000 {
                    problems.push(problem(
                        "limits.reservation_ttl_ms",
                        "must be at least 1000 (and longer than any request's deadline)",
                    ));
                }
                limits.reservation_ttl = Duration::from_millis(ms);
            }
            if let Some(ms) = raw.idempotency_wait_ms {
                limits.idempotency_wait = Duration::from_millis(ms);
            }
        }

        if problems.is_empty() {
            Ok(Config {
                providers,
                tenants,
                admin_keys,
                limits,
                models_dir: root.models_dir,
                hash,
            })
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        path: path.into(),
        message: message.into(),
    }
}

fn join(prefix: &str, rest: &str) -> String {
    match (prefix.is_empty(), rest.is_empty()) {
        (true, _) => rest.to_owned(),
        (_, true) => prefix.to_owned(),
        _ if rest.starts_with('[') => format!("{prefix}{rest}"),
        _ => format!("{prefix}.{rest}"),
    }
}

/// Deserialize one subtree, reporting a failure with the full path of the offending field.
fn typed<T: serde::de::DeserializeOwned>(
    v: Value,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let inner = e.path().to_string();
            let inner = if inner == "." { String::new() } else { inner };
            let msg = e.into_inner().to_string();
            // serde_yaml_ng appends its own location, meaningless after interpolation.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
            problems.push(problem(join(prefix, &inner), msg));
            None
        }
    }
}

/// Replace `${NAME}` inside string values. `$${` is a literal `${`. Substitution never
/// changes the YAML structure, and a missing variable is an error, never an empty string.
fn interpolate(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Vec<Problem>,
) {
    match v {
        Value::String(s) if s.contains('$') => match substitute(s, env) {
            Ok(out) => *s = out,
            Err(msg) => problems.push(problem(path, msg)),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &format!("{path}[{i}]"), env, problems);
            }
        }
        Value::Mapping(map) => {
            for (k, item) in map.iter_mut() {
                let key = match k {
                    Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                interpolate(item, &join(path, &key), env, problems);
            }
        }
        Value::Tagged(t) => interpolate(&mut t.value, path, env, problems),
        _ => {}
    }
}

fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| "unterminated ${ in value".to_owned())?;
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("invalid environment variable name {name:?}"));
            }
            let value =
                env(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            if value.contains('\n') {
                return Err(format!("environment variable {name} contains a newline"));
            }
            out.push_str(&value);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
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

fn provider_spec(
    name: &str,
    raw: RawProvider,
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
    let k = raw.kind.as_str();
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
    let kind = match k {
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
    };
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
    (problems.len() == before).then(|| ProviderSpec {
        name: name.to_owned(),
        timeout: Duration::from_millis(timeout_ms),
        kind,
        resilience,
    })
}

fn tenant(
    id: &str,
    raw: RawTenant,
    path: &str,
    providers: &std::collections::BTreeSet<String>,
    seen_keys: &mut HashMap<KeyHash, String>,
    problems: &mut Vec<Problem>,
) -> Option<Tenant> {
    let before = problems.len();
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        problems.push(problem(
            path,
            "tenant ids may contain only letters, digits, '-' and '_'",
        ));
    }
    let mut keys = Vec::new();
    if raw.keys.is_empty() {
        problems.push(problem(
            format!("{path}.keys"),
            "at least one key hash is required",
        ));
    }
    let mut key_rate_limits = HashMap::new();
    for (i, k) in raw.keys.iter().enumerate() {
        if let Some(spec) = k.rate_limit() {
            check_rate(&spec, &format!("{path}.keys[{i}].rate_limit"), problems);
        }
        match KeyHash::parse(k.hash()) {
            Ok(h) => {
                if let Some(spec) = k.rate_limit() {
                    key_rate_limits.insert(h.clone(), spec);
                }
                if let Some(other) = seen_keys.insert(h.clone(), id.to_owned()) {
                    problems.push(problem(
                        format!("{path}.keys[{i}]"),
                        format!("key already used by tenant {other:?}"),
                    ));
                }
                keys.push(h);
            }
            Err(e) => problems.push(problem(format!("{path}.keys[{i}]"), e)),
        }
    }
    if !(0.0..=1.0).contains(&raw.threshold) {
        problems.push(problem(
            format!("{path}.threshold"),
            "must be between 0 and 1",
        ));
    }
    if let Some(b) = raw.review_band
        && !(0.0..=1.0).contains(&b)
    {
        problems.push(problem(
            format!("{path}.review_band"),
            "must be between 0 and 1",
        ));
    }
    let r = raw.routing;
    if r.providers.is_empty() {
        problems.push(problem(
            format!("{path}.routing.providers"),
            "at least one provider is required",
        ));
    }
    if r.strategy == Strategy::Single && r.providers.len() > 1 {
        problems.push(problem(
            format!("{path}.routing.providers"),
            "strategy single takes exactly one provider",
        ));
    }
    if r.strategy == Strategy::Shadow && r.providers.len() < 2 {
        problems.push(problem(
            format!("{path}.routing.providers"),
            "strategy shadow takes a primary and at least one shadow provider",
        ));
    }
    if r.strategy == Strategy::Weighted {
        if r.weights.len() != r.providers.len() {
            problems.push(problem(
                format!("{path}.routing.weights"),
                format!(
                    "needs one weight per provider ({} providers, {} weights)",
                    r.providers.len(),
                    r.weights.len()
                ),
            ));
        } else if r.weights.iter().all(|w| *w == 0) {
            problems.push(problem(
                format!("{path}.routing.weights"),
                "at least one weight must be above 0",
            ));
        }
    } else if !r.weights.is_empty() {
        problems.push(problem(
            format!("{path}.routing.weights"),
            "only strategy weighted takes weights",
        ));
    }
    if r.fallback && r.strategy != Strategy::Weighted {
        problems.push(problem(
            format!("{path}.routing.fallback"),
            "only strategy weighted takes `fallback` (use strategy fallback for an ordered chain)",
        ));
    }
    let deadline_ms = r.deadline_ms.unwrap_or(30_000);
    if deadline_ms == 0 || deadline_ms > 300_000 {
        problems.push(problem(
            format!("{path}.routing.deadline_ms"),
            "must be between 1 and 300000",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, p) in r.providers.iter().enumerate() {
        if !seen.insert(p) {
            problems.push(problem(
                format!("{path}.routing.providers[{i}]"),
                format!("provider {p:?} is listed twice"),
            ));
        }
    }
    if let Some(q) = raw.min_face_quality
        && !(0.0..=1.0).contains(&q)
    {
        problems.push(problem(
            format!("{path}.min_face_quality"),
            "must be between 0 and 1",
        ));
    }
    if let Some([lo, hi]) = raw.luminance
        && !((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && lo <= hi)
    {
        problems.push(problem(
            format!("{path}.luminance"),
            "must be [min, max] with 0 <= min <= max <= 1",
        ));
    }
    for (i, p) in r.providers.iter().enumerate() {
        if !providers.contains(p) {
            problems.push(problem(
                format!("{path}.routing.providers[{i}]"),
                format!("unknown provider {p:?}"),
            ));
        }
    }
    let mut warning_actions: HashMap<String, WarningAction> = HashMap::new();
    for c in DEFAULT_DECLINE {
        warning_actions.insert(c.to_owned(), WarningAction::Decline);
    }
    for c in DEFAULT_REVIEW {
        warning_actions.insert(c.to_owned(), WarningAction::Review);
    }
    for (code, action) in raw.warnings {
        if code.is_empty()
            || !code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            problems.push(problem(
                format!("{path}.warnings.{code}"),
                "warning codes are UPPER_SNAKE_CASE",
            ));
        }
        warning_actions.insert(code, action);
    }
    if let Some(spec) = &raw.rate_limit {
        check_rate(spec, &format!("{path}.rate_limit"), problems);
    }
    let credits = raw.credits.map(|c| {
        if c.initial < 0 {
            problems.push(problem(
                format!("{path}.credits.initial"),
                "must be 0 or more",
            ));
        }
        for (name, cost) in &c.cost {
            if !providers.contains(name) {
                problems.push(problem(
                    format!("{path}.credits.cost.{name}"),
                    format!("unknown provider {name:?}"),
                ));
            }
            if *cost < 0 {
                problems.push(problem(
                    format!("{path}.credits.cost.{name}"),
                    "must be 0 or more",
                ));
            }
        }
        Credits {
            initial: c.initial,
            cost: c.cost,
        }
    });
    let (face_checks, face_problems) =
        crate::identity::FaceChecks::from_raw(raw.duplicates, raw.blocklist);
    for (key, message) in face_problems {
        problems.push(problem(format!("{path}.{key}"), message));
    }
    (problems.len() == before).then(|| Tenant {
        id: id.to_owned(),
        keys,
        threshold: raw.threshold,
        review_band: raw.review_band,
        routing: Routing {
            strategy: r.strategy,
            providers: r.providers,
            weights: r.weights,
            fallback: r.fallback,
            deadline: Duration::from_millis(deadline_ms),
        },
        warning_actions,
        allow_provider_override: raw.allow_provider_override,
        min_face_quality: raw.min_face_quality,
        luminance: raw.luminance.map(|[lo, hi]| (lo, hi)),
        credits,
        rate_limit: raw.rate_limit,
        key_rate_limits,
        face_checks,
    })
}

fn check_rate(spec: &RateSpec, path: &str, problems: &mut Vec<Problem>) {
    if !(spec.per_second.is_finite() && spec.per_second > 0.0 && spec.per_second <= 1_000_000.0) {
        problems.push(problem(
            format!("{path}.per_second"),
            "must be above 0 (and at most 1000000)",
        ));
    }
    if spec.burst == 0 {
        problems.push(problem(format!("{path}.burst"), "must be at least 1"));
    }
}

#[cfg(test)]
mod tests {
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
            ProviderKind::Didit { api_key, .. } => assert_eq!(api_key.expose(), "k-123"),
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
