//! The review queue (`migrations/*/0008_reviews_and_views.sql`, `0007` on SQLite): a `review`
//! decision is open until one resolution is written for it, once, never updated.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sql::{Backend, Cols, Param, Stmt};
use super::{StoreError, StoreResult, clamp_limit};

/// A review's resolution as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    pub verification_id: Uuid,
    pub tenant_id: String,
    /// `approved` or `declined`.
    pub decision: String,
    pub reason: Option<String>,
    pub reviewer: Option<String>,
    /// `admin sha256:…` or `tenant sha256:…`.
    pub resolved_by: String,
    pub created_at: DateTime<Utc>,
}

/// One `review` verification and its resolution, if any (`livegate_review_queue`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedReview {
    pub verification_id: Uuid,
    pub tenant_id: String,
    pub created_at: DateTime<Utc>,
    pub provider: Option<String>,
    pub score: Option<f64>,
    pub threshold: f64,
    pub warnings: serde_json::Value,
    /// `open`, `approved` or `declined`.
    pub status: String,
    pub resolution: Option<Review>,
}

#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    pub tenant_id: Option<String>,
    /// `open`, `approved` or `declined`; all when `None`.
    pub status: Option<String>,
    /// Only verifications older than this one (the previous page's last).
    pub before: Option<Uuid>,
    pub limit: u32,
}

#[async_trait]
pub trait ReviewStore: Send + Sync {
    /// Writes the resolution of an open review, with the webhook messages that tell of it.
    /// `NotFound` when the verification is not a `review` of `r.tenant_id`; `Conflict` when it
    /// was already resolved.
    async fn resolve_review(
        &self,
        r: &Review,
        webhooks: &[super::webhooks::OutboxMessage],
    ) -> StoreResult<Review>;
    /// The resolutions of these verifications, where there are any.
    async fn reviews_of(&self, ids: &[Uuid]) -> StoreResult<Vec<Review>>;
    /// The tenant of a verification, whatever tenant it is (operator endpoints).
    async fn tenant_of(&self, verification_id: Uuid) -> StoreResult<String>;
    /// Newest first.
    async fn review_queue(&self, f: &QueueFilter) -> StoreResult<Vec<QueuedReview>>;
}

const REVIEW_COLUMNS: &str =
    "verification_id, tenant_id, decision, reason, reviewer, resolved_by, created_at";

fn review(r: &impl Cols) -> StoreResult<Review> {
    Ok(Review {
        verification_id: r.uuid("verification_id")?,
        tenant_id: r.get("tenant_id")?,
        decision: r.get("decision")?,
        reason: r.get("reason")?,
        reviewer: r.get("reviewer")?,
        resolved_by: r.get("resolved_by")?,
        created_at: r.time("created_at")?,
    })
}

#[async_trait]
impl<B: Backend> ReviewStore for B {
    async fn resolve_review(
        &self,
        r: &Review,
        webhooks: &[super::webhooks::OutboxMessage],
    ) -> StoreResult<Review> {
        let mut tx = self.begin().await?;
        let s = Stmt::new(
            "SELECT id FROM verifications WHERE tenant_id = $1 AND id = $2 \
             AND decision = 'review'",
        )
        .bind(r.tenant_id.as_str())
        .bind(r.verification_id);
        if B::rows_in(&mut tx, s).await?.is_empty() {
            return Err(StoreError::NotFound);
        }
        let s = Stmt::new(format!(
            "INSERT INTO reviews ({REVIEW_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(r.verification_id)
        .bind(r.tenant_id.as_str())
        .bind(r.decision.as_str())
        .bind(&r.reason)
        .bind(&r.reviewer)
        .bind(r.resolved_by.as_str())
        .bind(r.created_at);
        B::execute_in(&mut tx, s).await?;
        let messages = webhooks
            .iter()
            .map(super::webhooks::insert_message)
            .collect();
        B::run_all(&mut tx, messages).await?;
        B::commit(tx).await?;
        Ok(r.clone())
    }

    async fn reviews_of(&self, ids: &[Uuid]) -> StoreResult<Vec<Review>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let mut s = Stmt::new(format!(
                "SELECT {REVIEW_COLUMNS} FROM reviews WHERE verification_id IN ({})",
                marks.join(",")
            ));
            s.params = chunk.iter().map(|id| Param::from(*id)).collect();
            for row in self.rows(s).await? {
                out.push(review(&row)?);
            }
        }
        Ok(out)
    }

    async fn tenant_of(&self, verification_id: Uuid) -> StoreResult<String> {
        let s =
            Stmt::new("SELECT tenant_id FROM verifications WHERE id = $1").bind(verification_id);
        self.row(s).await?.get("tenant_id")
    }

    async fn review_queue(&self, f: &QueueFilter) -> StoreResult<Vec<QueuedReview>> {
        let s = Stmt::new(
            "SELECT q.verification_id, q.tenant_id, q.created_at, q.provider, q.score, \
             q.threshold, q.warnings, q.status, r.decision, r.reason, r.reviewer, \
             r.resolved_by, r.created_at AS resolved_at \
             FROM livegate_review_queue q LEFT JOIN reviews r \
             ON r.verification_id = q.verification_id \
             WHERE ($1 IS NULL OR q.tenant_id = $1) AND ($2 IS NULL OR q.status = $2) \
             AND ($3 IS NULL OR q.verification_id < $3) \
             ORDER BY q.verification_id DESC LIMIT $4",
        )
        .bind(&f.tenant_id)
        .bind(&f.status)
        .bind(f.before)
        .bind(clamp_limit(f.limit));
        let mut out = Vec::new();
        for row in self.rows(s).await? {
            let id = row.uuid("verification_id")?;
            let tenant_id: String = row.get("tenant_id")?;
            let resolution = match row.get::<Option<String>>("decision")? {
                Some(decision) => Some(Review {
                    verification_id: id,
                    tenant_id: tenant_id.clone(),
                    decision,
                    reason: row.get("reason")?,
                    reviewer: row.get("reviewer")?,
                    resolved_by: row.get("resolved_by")?,
                    created_at: row.time("resolved_at")?,
                }),
                None => None,
            };
            out.push(QueuedReview {
                verification_id: id,
                tenant_id,
                created_at: row.time("created_at")?,
                provider: row.get("provider")?,
                score: row.get("score")?,
                threshold: row.get("threshold")?,
                warnings: row.json("warnings")?.unwrap_or_default(),
                status: row.get("status")?,
                resolution,
            });
        }
        Ok(out)
    }
}
