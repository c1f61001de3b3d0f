//! The webhook outbox (`migrations/*/…_webhooks.sql`): messages written with what they tell,
//! claimed by a sender, and every attempt logged.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sql::{Backend, Cols, Stmt};
use super::{StoreError, StoreResult, clamp_limit};

/// One event for one endpoint, as written with its verification.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OutboxMessage {
    /// The Standard Webhooks message id.
    pub id: Uuid,
    pub tenant_id: String,
    pub url: String,
    pub event: String,
    pub verification_id: Option<Uuid>,
    pub payload: String,
    pub created_at: DateTime<Utc>,
}

/// A message as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub message: OutboxMessage,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How one attempt ended.
#[derive(Debug, Clone)]
pub struct AttemptResult {
    pub status: Option<i32>,
    pub error: Option<String>,
    pub duration_ms: i64,
    /// `None`: delivered. `Some(t)`: retry at `t`. `Some` past the retry window is the caller's
    /// to turn into [`AttemptResult::failed`].
    pub retry_at: Option<DateTime<Utc>>,
    /// Given up: no retry.
    pub failed: bool,
}

#[derive(Debug, Clone, Default)]
pub struct OutboxFilter {
    pub tenant_id: Option<String>,
    pub state: Option<String>,
    pub before: Option<Uuid>,
    pub limit: u32,
}

/// The statement writing `m` as pending, due now: part of the transaction it belongs to.
pub(crate) fn insert_message(m: &OutboxMessage) -> Stmt {
    Stmt::new(
        "INSERT INTO webhook_outbox (id, tenant_id, url, event, verification_id, payload, \
         state, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'pending', 0, $7, $7)",
    )
    .bind(m.id)
    .bind(m.tenant_id.as_str())
    .bind(m.url.as_str())
    .bind(m.event.as_str())
    .bind(m.verification_id)
    .bind(m.payload.as_str())
    .bind(m.created_at)
}

#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Up to `limit` due messages, each locked for this sender until `lock_until`; their
    /// attempt count already includes this attempt.
    async fn claim_messages(
        &self,
        now: DateTime<Utc>,
        lock_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>>;
    /// The attempt's outcome, logged, and the message delivered, rescheduled or failed.
    async fn record_attempt(&self, row: &OutboxRow, r: &AttemptResult) -> StoreResult<()>;
    /// Newest first.
    async fn outbox(&self, f: &OutboxFilter) -> StoreResult<Vec<OutboxRow>>;
    /// One message; `NotFound` when there is none.
    async fn message(&self, id: Uuid) -> StoreResult<OutboxRow>;
    /// Every attempt at one message, oldest first, as `(attempt, status, error, duration_ms,
    /// at)`.
    async fn deliveries_of(
        &self,
        message_id: Uuid,
    ) -> StoreResult<Vec<(i32, Option<i32>, Option<String>, i64, DateTime<Utc>)>>;
    /// Sends a message again (whatever its state), now; `NotFound` when there is none.
    async fn redeliver(&self, message_id: Uuid) -> StoreResult<()>;
}

const COLUMNS: &str = "id, tenant_id, url, event, verification_id, payload, state, attempts, \
     next_attempt_at, last_status, last_error, delivered_at, created_at";

fn outbox_row(r: &impl Cols) -> StoreResult<OutboxRow> {
    Ok(OutboxRow {
        message: OutboxMessage {
            id: r.uuid("id")?,
            tenant_id: r.get("tenant_id")?,
            url: r.get("url")?,
            event: r.get("event")?,
            verification_id: r.opt_uuid("verification_id")?,
            payload: r.get("payload")?,
            created_at: r.time("created_at")?,
        },
        state: r.get("state")?,
        attempts: r.get("attempts")?,
        next_attempt_at: r.time("next_attempt_at")?,
        last_status: r.get("last_status")?,
        last_error: r.get("last_error")?,
        delivered_at: r.opt_time("delivered_at")?,
    })
}

#[async_trait]
impl<B: Backend> WebhookStore for B {
    async fn claim_messages(
        &self,
        now: DateTime<Utc>,
        lock_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<OutboxRow>> {
        // The outer conditions repeat the inner ones: on Postgres, a row another sender
        // claimed meanwhile is re-checked against them once its lock is released, and skipped.
        let s = Stmt::new(format!(
            "UPDATE webhook_outbox SET locked_until = $2, attempts = attempts + 1 \
             WHERE state = 'pending' AND next_attempt_at <= $1 \
             AND (locked_until IS NULL OR locked_until < $1) \
             AND id IN (SELECT id FROM webhook_outbox WHERE state = 'pending' \
                 AND next_attempt_at <= $1 AND (locked_until IS NULL OR locked_until < $1) \
                 ORDER BY next_attempt_at LIMIT $3) \
             RETURNING {COLUMNS}"
        ))
        .bind(now)
        .bind(lock_until)
        .bind(i64::from(limit));
        self.rows(s).await?.iter().map(outbox_row).collect()
    }

    async fn record_attempt(&self, row: &OutboxRow, r: &AttemptResult) -> StoreResult<()> {
        let now = Utc::now();
        let log = Stmt::new(
            "INSERT INTO webhook_deliveries (message_id, attempt, status, error, duration_ms, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(row.message.id)
        .bind(row.attempts)
        .bind(r.status)
        .bind(&r.error)
        .bind(r.duration_ms)
        .bind(now);
        let state = match (r.failed, r.retry_at) {
            (true, _) => Stmt::new(
                "UPDATE webhook_outbox SET state = 'failed', locked_until = NULL, \
                 last_status = $2, last_error = $3 WHERE id = $1",
            )
            .bind(row.message.id)
            .bind(r.status)
            .bind(&r.error),
            (false, Some(at)) => Stmt::new(
                "UPDATE webhook_outbox SET next_attempt_at = $4, locked_until = NULL, \
                 last_status = $2, last_error = $3 WHERE id = $1",
            )
            .bind(row.message.id)
            .bind(r.status)
            .bind(&r.error)
            .bind(at),
            (false, None) => Stmt::new(
                "UPDATE webhook_outbox SET state = 'delivered', locked_until = NULL, \
                 last_status = $2, last_error = NULL, delivered_at = $3 WHERE id = $1",
            )
            .bind(row.message.id)
            .bind(r.status)
            .bind(now),
        };
        self.execute_all(vec![log, state]).await
    }

    async fn outbox(&self, f: &OutboxFilter) -> StoreResult<Vec<OutboxRow>> {
        let s = Stmt::new(format!(
            "SELECT {COLUMNS} FROM webhook_outbox WHERE ($1 IS NULL OR tenant_id = $1) \
             AND ($2 IS NULL OR state = $2) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(&f.tenant_id)
        .bind(&f.state)
        .bind(f.before)
        .bind(clamp_limit(f.limit));
        self.rows(s).await?.iter().map(outbox_row).collect()
    }

    async fn message(&self, id: Uuid) -> StoreResult<OutboxRow> {
        let s = Stmt::new(format!(
            "SELECT {COLUMNS} FROM webhook_outbox WHERE id = $1"
        ))
        .bind(id);
        outbox_row(&self.row(s).await?)
    }

    async fn deliveries_of(
        &self,
        message_id: Uuid,
    ) -> StoreResult<Vec<(i32, Option<i32>, Option<String>, i64, DateTime<Utc>)>> {
        let s = Stmt::new(
            "SELECT attempt, status, error, duration_ms, created_at FROM webhook_deliveries \
             WHERE message_id = $1 ORDER BY id",
        )
        .bind(message_id);
        self.rows(s)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.get("attempt")?,
                    r.get("status")?,
                    r.get("error")?,
                    r.get("duration_ms")?,
                    r.time("created_at")?,
                ))
            })
            .collect()
    }

    async fn redeliver(&self, message_id: Uuid) -> StoreResult<()> {
        let s = Stmt::new(
            "UPDATE webhook_outbox SET state = 'pending', next_attempt_at = $2, \
             locked_until = NULL WHERE id = $1",
        )
        .bind(message_id)
        .bind(Utc::now());
        match self.execute(s).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }
}
