//! Persistence: one `Store` trait on domain records, a Postgres and a SQLite implementation,
//! chosen by the URL scheme. Both pass the same conformance suite (`tests/store_conformance.rs`).

pub mod faces;
pub mod group_commit;
pub mod identity;
pub mod ledger;
mod postgres;
pub mod purge;
pub mod reports;
pub mod retention;
pub mod reviews;
pub mod spool;
mod sql;
mod sqlite;
mod verifications;
pub mod webhooks;
pub mod writers;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use postgres::PgStore;
pub use postgres::pgvector::literal as vector_literal;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(String),
    /// A row refers to one that does not exist (a foreign key).
    #[error("missing referenced row: {0}")]
    MissingParent(String),
    /// The database cannot be reached or is shutting down: worth retrying shortly.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Other(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                StoreError::Conflict(d.message().to_owned())
            }
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StoreError::MissingParent(d.message().to_owned())
            }
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
            // Connection exceptions (08), the server shutting down or in recovery (57P),
            // too many connections (53300), and a locked SQLite database.
            sqlx::Error::Database(d)
                if d.code().is_some_and(|c| {
                    c.starts_with("08") || c.starts_with("57P") || c == "53300" || c == "5"
                }) =>
            {
                StoreError::Unavailable(d.message().to_owned())
            }
            _ => StoreError::Other(e.to_string()),
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        StoreError::Other(format!("migration failed: {e}"))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// One verification as stored: the answer, or the failure, of one authenticated request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct VerificationRecord {
    pub id: Uuid,
    pub tenant_id: String,
    pub request_id: String,
    pub provider: Option<String>,
    pub provider_request_id: Option<String>,
    /// `approved` | `declined` | `review`; `None` when no verdict was reached.
    pub decision: Option<String>,
    /// What the deciding provider itself said (`approved` | `declined` | `review`), when it
    /// says anything.
    pub provider_decision: Option<String>,
    pub is_live: bool,
    pub score: Option<f64>,
    pub threshold: f64,
    pub spoof_type: Option<String>,
    /// JSON array of `{code, message}`.
    pub warnings: serde_json::Value,
    pub face: Option<serde_json::Value>,
    pub faces_detected: Option<i32>,
    pub image_sha256: Option<String>,
    pub image_format: Option<String>,
    pub image_width: Option<i32>,
    pub image_height: Option<i32>,
    pub external_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub http_status: i32,
    pub error_code: Option<String>,
    pub error_detail: Option<String>,
    pub latency_ms: i64,
    pub config_hash: Option<String>,
    pub trace_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// When its personal data was erased (`DELETE /v1/verifications/{id}`): the row is then a
    /// tombstone that keeps the counts and the ledger right.
    #[serde(default)]
    pub erased_at: Option<DateTime<Utc>>,
}

/// One call to one provider on behalf of a verification.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttemptRecord {
    pub verification_id: Uuid,
    pub attempt_no: i32,
    pub provider: String,
    pub provider_kind: String,
    /// `ok` or `error`.
    pub outcome: String,
    pub shadow: bool,
    pub score: Option<f64>,
    pub error_code: Option<String>,
    pub upstream_status: Option<i32>,
    pub latency_ms: i64,
    pub raw_body: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub limit: u32,
    /// Return only ids older than this one (the previous page's last id).
    pub before: Option<Uuid>,
    pub decision: Option<String>,
    pub since: Option<DateTime<Utc>>,
}

/// Every backend implements it once, in `verifications.rs`; face identity rows come with every
/// store (`identity.rs`).
#[async_trait]
pub trait Store:
    ledger::LedgerStore
    + identity::IdentityStore
    + retention::RetentionStore
    + reviews::ReviewStore
    + reports::ReportStore
    + webhooks::WebhookStore
    + Send
    + Sync
    + std::fmt::Debug
{
    async fn migrate(&self) -> StoreResult<()>;
    async fn ping(&self) -> StoreResult<()>;
    /// The verification and its attempts, in one transaction.
    async fn insert_verification(
        &self,
        v: &VerificationRecord,
        attempts: &[AttemptRecord],
    ) -> StoreResult<()>;
    /// Attempts that ended after their verification was stored (shadow calls).
    async fn insert_attempts(&self, attempts: &[AttemptRecord]) -> StoreResult<()>;
    async fn get_verification(&self, tenant_id: &str, id: Uuid) -> StoreResult<VerificationRecord>;
    /// Newest first.
    async fn list_verifications(
        &self,
        tenant_id: &str,
        filter: &ListFilter,
    ) -> StoreResult<Vec<VerificationRecord>>;
    async fn attempts(&self, verification_id: Uuid) -> StoreResult<Vec<AttemptRecord>>;
    /// [`Store::list_verifications`] with each one's attempts, in one query.
    async fn list_with_attempts(
        &self,
        tenant_id: &str,
        filter: &ListFilter,
    ) -> StoreResult<Vec<(VerificationRecord, Vec<AttemptRecord>)>>;
    /// Insert a setting unless it exists; returns the stored value either way.
    async fn setting_insert_if_absent(&self, name: &str, value: &str) -> StoreResult<String>;
    async fn setting(&self, name: &str) -> StoreResult<Option<String>>;
    /// Set `name` to `value`, whatever it held.
    async fn setting_replace(&self, name: &str, value: &str) -> StoreResult<()>;
    /// How many group-commit workers write at once (SQLite has one writer).
    fn write_concurrency(&self) -> usize {
        1
    }
}

pub type DynStore = Arc<dyn Store>;

/// Open the store named by a URL: `postgres://…` / `postgresql://…` or `sqlite:…`.
pub async fn connect(url: &str) -> StoreResult<DynStore> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(unsupported_url(url))
    }
}

fn unsupported_url(url: &str) -> StoreError {
    StoreError::Other(format!(
        "unsupported DATABASE_URL scheme in {:?}: use postgres://… or sqlite:…",
        redact_url(url)
    ))
}

/// A database URL with any password replaced, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.split('?').next().unwrap_or(url).to_owned(),
    }
}

pub(crate) fn clamp_limit(limit: u32) -> i64 {
    i64::from(limit.clamp(1, 200))
}
