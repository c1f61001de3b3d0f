//! What the operators' reports read: the `livegate_shadow_pairs` view
//! (`migrations/*/…_reviews_and_views.sql`), the same on both backends.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::StoreResult;
use super::sql::{Backend, Cols, Stmt};

/// A verification that a shadow provider also scored.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowPair {
    pub tenant_id: String,
    pub primary_provider: String,
    pub shadow_provider: String,
    pub primary_score: f64,
    pub shadow_score: f64,
    /// Each score against the verification's threshold.
    pub primary_approved: bool,
    pub shadow_approved: bool,
    pub primary_latency_ms: i64,
    pub shadow_latency_ms: i64,
}

#[async_trait]
pub trait ReportStore: Send + Sync {
    /// Shadow pairs created at or after `since`, of one tenant or all.
    async fn shadow_pairs(
        &self,
        tenant_id: Option<&str>,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ShadowPair>>;
}

#[async_trait]
impl<B: Backend> ReportStore for B {
    async fn shadow_pairs(
        &self,
        tenant_id: Option<&str>,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<ShadowPair>> {
        let s = Stmt::new(
            "SELECT tenant_id, primary_provider, shadow_provider, primary_score, shadow_score, \
             primary_approved, shadow_approved, primary_latency_ms, shadow_latency_ms \
             FROM livegate_shadow_pairs WHERE ($1 IS NULL OR tenant_id = $1) \
             AND created_at >= $2 ORDER BY verification_id",
        )
        .bind(tenant_id)
        .bind(since);
        self.rows(s)
            .await?
            .iter()
            .map(|r| {
                Ok(ShadowPair {
                    tenant_id: r.get("tenant_id")?,
                    primary_provider: r.get("primary_provider")?,
                    shadow_provider: r.get("shadow_provider")?,
                    primary_score: r.get("primary_score")?,
                    shadow_score: r.get("shadow_score")?,
                    primary_approved: r.get("primary_approved")?,
                    shadow_approved: r.get("shadow_approved")?,
                    primary_latency_ms: r.get("primary_latency_ms")?,
                    shadow_latency_ms: r.get("shadow_latency_ms")?,
                })
            })
            .collect()
    }
}
