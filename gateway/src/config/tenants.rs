//! `tenants:` entries: keys, thresholds, routing, warning actions, credits, rate limits and
//! face checks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use serde::Deserialize;

use crate::config::face_checks::{self, FaceChecks};
use crate::config::keys::KeyHash;
use crate::config::problems::{Problem, problem};
use crate::config::retention::{RawRetention, Retention, retention};

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
    pub face_checks: face_checks::FaceChecks,
    /// `intake.decode`: when the image is decoded.
    pub decode: Decode,
    /// `store_raw`: what of each vendor's answer body is stored (`none` when
    /// `retention.raw_bodies` is 0).
    pub store_raw: StoreRaw,
    /// `retention:` over the top-level defaults.
    pub retention: Retention,
    /// `reviews`: who resolves the tenant's `review` decisions.
    pub reviews: ReviewsBy,
    /// `webhooks`: where the tenant's events are delivered.
    pub webhooks: Vec<crate::config::webhooks::Webhook>,
}

/// Who may resolve a tenant's `review` decisions (`reviews:`): operators only (`admin`, the
/// default), or also the tenant's own keys (`tenant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewsBy {
    #[default]
    Admin,
    Tenant,
}

/// What of a vendor's answer body is kept in `verification_attempts.raw_body` (`store_raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreRaw {
    /// The body as the vendor sent it.
    Full,
    /// Without the estimates about the person (age, gender, …) and without the boxes of faces
    /// other than the scored one (`livegate_providers::redact`).
    #[default]
    Redacted,
    /// Nothing: `raw_body` stays null.
    None,
}

impl StoreRaw {
    pub fn apply(self, body: Option<&str>) -> Option<String> {
        match self {
            StoreRaw::Full => body.map(str::to_owned),
            StoreRaw::Redacted => body.map(livegate_providers::redact),
            StoreRaw::None => None,
        }
    }
}

/// When livegate decodes a tenant's images (`intake.decode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decode {
    /// Only when pixels are needed: the built-in engine, a face check, or an image a provider
    /// cannot take as sent. An image only forwarded is checked from its header and structure.
    #[default]
    WhenNeeded,
    /// Every image, so one that does not decode is refused here (400 `image_undecodable`)
    /// rather than by the vendor.
    Always,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawIntake {
    #[serde(default)]
    decode: Decode,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTenant {
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
    duplicates: Option<face_checks::RawFaceCheck>,
    blocklist: Option<face_checks::RawFaceCheck>,
    #[serde(default)]
    intake: RawIntake,
    #[serde(default)]
    store_raw: StoreRaw,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    reviews: ReviewsBy,
    #[serde(default)]
    webhooks: Vec<crate::config::webhooks::RawWebhook>,
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

/// Warning codes that decline by default, as the Didit document auto-declines them.
pub const DEFAULT_DECLINE: [&str; 4] = [
    "NO_FACE_DETECTED",
    "LIVENESS_FACE_ATTACK",
    "FACE_IN_BLOCKLIST",
    "POSSIBLE_FACE_IN_BLOCKLIST",
];
pub const DEFAULT_REVIEW: [&str; 1] = ["MULTIPLE_FACES_DETECTED"];

pub fn tenant(
    id: &str,
    raw: RawTenant,
    path: &str,
    (providers, defaults): (&BTreeSet<String>, Retention),
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
    let (keys, key_rate_limits) = keys(id, &raw.keys, path, seen_keys, problems);
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
    let routing = routing(raw.routing, path, problems);
    face_limits(raw.min_face_quality, raw.luminance, path, problems);
    known_providers(&routing.providers, path, providers, problems);
    let warning_actions = warning_actions(raw.warnings, path, problems);
    if let Some(spec) = &raw.rate_limit {
        check_rate(spec, &format!("{path}.rate_limit"), problems);
    }
    let credits = raw.credits.map(|c| credits(c, path, providers, problems));
    let (face_checks, face_problems) = FaceChecks::from_raw(raw.duplicates, raw.blocklist);
    for (key, message) in face_problems {
        problems.push(problem(format!("{path}.{key}"), message));
    }
    let retention = retention(
        &raw.retention,
        defaults,
        &format!("{path}.retention"),
        problems,
    );
    if retention.embeddings.is_never_stored() {
        for (key, on) in [
            ("duplicates", face_checks.duplicates.is_some()),
            ("blocklist", face_checks.blocklist.is_some()),
        ] {
            if on {
                problems.push(problem(
                    format!("{path}.retention.embeddings"),
                    format!(
                        "is 0, but {key} is on and needs the faces it keeps: give a period \
                         (e.g. 90d) or turn {key} off"
                    ),
                ));
            }
        }
    }
    let webhooks = crate::config::webhooks::webhooks(raw.webhooks, path, problems);
    let store_raw = if retention.raw_bodies.is_never_stored() {
        StoreRaw::None
    } else {
        raw.store_raw
    };
    (problems.len() == before).then(|| Tenant {
        id: id.to_owned(),
        keys,
        threshold: raw.threshold,
        review_band: raw.review_band,
        routing,
        warning_actions,
        allow_provider_override: raw.allow_provider_override,
        min_face_quality: raw.min_face_quality,
        luminance: raw.luminance.map(|[lo, hi]| (lo, hi)),
        credits,
        rate_limit: raw.rate_limit,
        key_rate_limits,
        face_checks,
        decode: raw.intake.decode,
        store_raw,
        retention,
        reviews: raw.reviews,
        webhooks,
    })
}

/// The tenant's key hashes, each used by one tenant only, with their own limits.
fn keys(
    id: &str,
    raw_keys: &[RawKey],
    path: &str,
    seen_keys: &mut HashMap<KeyHash, String>,
    problems: &mut Vec<Problem>,
) -> (Vec<KeyHash>, HashMap<KeyHash, RateSpec>) {
    let mut keys = Vec::new();
    if raw_keys.is_empty() {
        problems.push(problem(
            format!("{path}.keys"),
            "at least one key hash is required",
        ));
    }
    let mut key_rate_limits = HashMap::new();
    for (i, k) in raw_keys.iter().enumerate() {
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
    (keys, key_rate_limits)
}

/// `routing:`: the strategy's rules about providers, weights, fallback and the deadline.
fn routing(r: RawRouting, path: &str, problems: &mut Vec<Problem>) -> Routing {
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
    let mut seen = BTreeSet::new();
    for (i, p) in r.providers.iter().enumerate() {
        if !seen.insert(p) {
            problems.push(problem(
                format!("{path}.routing.providers[{i}]"),
                format!("provider {p:?} is listed twice"),
            ));
        }
    }
    Routing {
        strategy: r.strategy,
        providers: r.providers,
        weights: r.weights,
        fallback: r.fallback,
        deadline: Duration::from_millis(deadline_ms),
    }
}

/// `min_face_quality` and `luminance` are fractions; luminance is an ordered pair.
fn face_limits(
    min_face_quality: Option<f64>,
    luminance: Option<[f64; 2]>,
    path: &str,
    problems: &mut Vec<Problem>,
) {
    if let Some(q) = min_face_quality
        && !(0.0..=1.0).contains(&q)
    {
        problems.push(problem(
            format!("{path}.min_face_quality"),
            "must be between 0 and 1",
        ));
    }
    if let Some([lo, hi]) = luminance
        && !((0.0..=1.0).contains(&lo) && (0.0..=1.0).contains(&hi) && lo <= hi)
    {
        problems.push(problem(
            format!("{path}.luminance"),
            "must be [min, max] with 0 <= min <= max <= 1",
        ));
    }
}

/// Every routed provider is declared under `providers:`.
fn known_providers(
    routed: &[String],
    path: &str,
    providers: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) {
    for (i, p) in routed.iter().enumerate() {
        if !providers.contains(p) {
            problems.push(problem(
                format!("{path}.routing.providers[{i}]"),
                format!("unknown provider {p:?}"),
            ));
        }
    }
}

/// Why `code` is not a warning of the normalized vocabulary, naming the closest one; `None`
/// when it is one.
fn unknown_warning(code: &str) -> Option<String> {
    let known = livegate_providers::WarningCode::KNOWN;
    if known.iter().any(|k| k.as_str() == code) {
        return None;
    }
    let closest = known
        .iter()
        .map(|k| k.as_str())
        .min_by_key(|k| strsim::levenshtein(k, code))
        .filter(|k| strsim::levenshtein(k, code) <= 3);
    let names: Vec<&str> = known.iter().map(|k| k.as_str()).collect();
    Some(match closest {
        Some(k) => format!(
            "unknown warning code (did you mean {k}?); known: {}",
            names.join(", ")
        ),
        None => format!("unknown warning code; known: {}", names.join(", ")),
    })
}

/// The default actions, then the tenant's own; codes are UPPER_SNAKE_CASE.
fn warning_actions(
    raw: BTreeMap<String, WarningAction>,
    path: &str,
    problems: &mut Vec<Problem>,
) -> HashMap<String, WarningAction> {
    let mut warning_actions: HashMap<String, WarningAction> = HashMap::new();
    for c in DEFAULT_DECLINE {
        warning_actions.insert(c.to_owned(), WarningAction::Decline);
    }
    for c in DEFAULT_REVIEW {
        warning_actions.insert(c.to_owned(), WarningAction::Review);
    }
    for (code, action) in raw {
        if code.is_empty()
            || !code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            problems.push(problem(
                format!("{path}.warnings.{code}"),
                "warning codes are UPPER_SNAKE_CASE",
            ));
        } else if let Some(message) = unknown_warning(&code) {
            // A misspelt code would silently never match any answer.
            problems.push(problem(format!("{path}.warnings.{code}"), message));
        }
        warning_actions.insert(code, action);
    }
    warning_actions
}

/// `credits:`: a non-negative opening balance and costs of declared providers.
fn credits(
    c: RawCredits,
    path: &str,
    providers: &BTreeSet<String>,
    problems: &mut Vec<Problem>,
) -> Credits {
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
