//! Credits and idempotency in the store: balances, the append-only ledger, reservations, and
//! the group-committed results batch (verification rows, attempts, settlements and idempotency
//! answers written in one transaction).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AttemptRecord, StoreResult, VerificationRecord};

/// Ledger kinds, as stored in `credit_ledger.kind`.
pub mod kind {
    pub const INITIAL: &str = "initial";
    pub const RESERVE: &str = "reserve";
    pub const RELEASE: &str = "release";
    pub const CHARGE: &str = "charge";
    pub const EXPIRE: &str = "expire";
    pub const TOPUP: &str = "topup";
    pub const ADJUST: &str = "adjust";
}

/// A request to take `amount` out of a tenant's balance until the verification settles.
#[derive(Debug, Clone)]
pub struct ReserveRequest {
    pub id: Uuid,
    pub tenant_id: String,
    pub amount: i64,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Reserved; the balance after the reservation.
    Reserved { balance: i64 },
    /// Not enough credits; the balance as it is.
    Insufficient { balance: i64 },
    /// The tenant has no credit account (no `credits` in its config).
    NoAccount,
}

/// What a settled reservation becomes: `charged` is kept, the rest goes back.
#[derive(Debug, Clone)]
pub struct Settlement {
    pub reservation_id: Uuid,
    pub tenant_id: String,
    pub reserved: i64,
    pub charged: i64,
}

/// The stored answer of a request that carried an `Idempotency-Key`.
#[derive(Debug, Clone)]
pub struct IdempotentAnswer {
    pub tenant_id: String,
    pub key: String,
    pub http_status: i32,
    pub response: String,
}

/// One verification's results, committed together with others in one transaction.
#[derive(Debug, Clone)]
pub struct ResultWrite {
    pub verification: VerificationRecord,
    pub attempts: Vec<AttemptRecord>,
    pub settlement: Option<Settlement>,
    pub idempotency: Option<IdempotentAnswer>,
    /// The key to forget (the request failed without a verdict, so a retry must run again).
    pub idempotency_forget: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    pub tenant_id: String,
    pub reservation_id: Option<Uuid>,
    pub kind: String,
    pub amount: i64,
    pub verification_id: Option<Uuid>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The state of an idempotency key when a request tries to claim it.
#[derive(Debug, Clone, PartialEq)]
pub enum IdemClaim {
    /// This request owns the key now and must run.
    Claimed,
    /// Another request owns it and has not finished.
    Running { request_hash: String },
    /// Finished: replay this answer.
    Done {
        request_hash: String,
        http_status: i32,
        response: String,
    },
}

#[derive(Debug, Clone)]
pub struct IdemClaimRequest {
    pub tenant_id: String,
    pub key: String,
    pub request_hash: String,
    pub locked_until: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[async_trait]
pub trait LedgerStore: Send + Sync {
    /// Open a tenant's account with its initial balance, once: returns false when it existed.
    async fn ensure_account(&self, tenant_id: &str, initial: i64) -> StoreResult<bool>;
    async fn balance(&self, tenant_id: &str) -> StoreResult<Option<i64>>;
    /// Reserve in order, in one transaction: each request sees the balance the earlier ones
    /// left. One answer per request.
    async fn reserve_batch(&self, reqs: &[ReserveRequest]) -> StoreResult<Vec<ReserveOutcome>>;
    /// Verification rows, attempts, settlements and idempotent answers, in one transaction.
    async fn commit_results(&self, writes: &[ResultWrite]) -> StoreResult<()>;
    /// A top-up (positive) or adjustment, with its reason; the new balance. `NotFound` when the
    /// tenant has no account.
    async fn adjust_credits(
        &self,
        tenant_id: &str,
        amount: i64,
        kind: &str,
        reason: &str,
    ) -> StoreResult<i64>;
    /// Release reservations that expired before `now` (their instance died); how many.
    async fn expire_reservations(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    async fn ledger(&self, tenant_id: &str) -> StoreResult<Vec<LedgerEntry>>;
    async fn open_reservations(&self, tenant_id: &str) -> StoreResult<i64>;
    /// Verifications that reached a decision since `since`.
    async fn decided_since(&self, tenant_id: &str, since: DateTime<Utc>) -> StoreResult<i64>;
    async fn idem_claim(&self, req: &IdemClaimRequest) -> StoreResult<IdemClaim>;
    /// Drop expired idempotency keys; how many.
    async fn idem_sweep(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}
