//! Credits and idempotency in the store: balances, the append-only ledger, reservations, and
//! the group-committed results batch (verification rows, attempts, settlements and idempotency
//! answers written in one transaction).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::sql::{Cols, Db, Stmt};
use super::verifications::{CHUNK, insert_rows};
use super::{AttemptRecord, StoreError, StoreResult, VerificationRecord};

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
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Settlement {
    pub reservation_id: Uuid,
    pub tenant_id: String,
    pub reserved: i64,
    pub charged: i64,
}

/// The stored answer of a request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct IdempotentAnswer {
    pub tenant_id: String,
    pub key: String,
    pub http_status: i32,
    pub response: String,
}

/// One verification's results, committed together with others in one transaction.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ResultWrite {
    pub verification: VerificationRecord,
    pub attempts: Vec<AttemptRecord>,
    pub settlement: Option<Settlement>,
    pub idempotency: Option<IdempotentAnswer>,
    /// The key to forget (the request failed without a verdict, so a retry must run again).
    pub idempotency_forget: Option<(String, String)>,
    /// The face embedding kept for the tenant's face checks, written with its verification.
    #[serde(default)]
    pub face: Option<KeptFace>,
    /// Webhook messages about this verification, written with it (the outbox).
    #[serde(default)]
    pub webhooks: Vec<super::webhooks::OutboxMessage>,
}

/// A verification's face embedding, for later duplicate and blocklist checks.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeptFace {
    pub embedding: Vec<f32>,
    pub approved: bool,
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
    /// The verification that will hold the key: only its commit completes or forgets it, so a
    /// request whose lock lapsed and was taken over cannot overwrite the new holder's answer.
    pub owner: Uuid,
    pub locked_until: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What both backends do to the ledger with the same SQL: accounts, reads, adjustments and
/// the idempotency sweep.
#[async_trait]
pub trait LedgerCommon: Send + Sync {
    /// Open a tenant's account with its initial balance, once: returns false when it existed.
    async fn ensure_account(&self, tenant_id: &str, initial: i64) -> StoreResult<bool>;
    /// A top-up (positive) or adjustment, with its reason; the new balance. `NotFound` when the
    /// tenant has no account.
    async fn adjust_credits(&self, a: &Adjustment<'_>) -> StoreResult<i64>;
    async fn balance(&self, tenant_id: &str) -> StoreResult<Option<i64>>;
    /// Every account's balance, by tenant id, in one query.
    async fn balances(&self) -> StoreResult<Vec<(String, i64)>>;
    async fn ledger(&self, tenant_id: &str) -> StoreResult<Vec<LedgerEntry>>;
    async fn open_reservations(&self, tenant_id: &str) -> StoreResult<i64>;
    /// Verifications that reached a decision since `since`.
    async fn decided_since(&self, tenant_id: &str, since: DateTime<Utc>) -> StoreResult<i64>;
    /// Drop expired idempotency keys; how many.
    async fn idem_sweep(&self, now: DateTime<Utc>) -> StoreResult<u64>;
    async fn idem_claim(&self, req: &IdemClaimRequest) -> StoreResult<IdemClaim>;
}

/// The ledger's writes: each backend keeps its own locking (`postgres/ledger.rs`,
/// `sqlite/ledger.rs`).
#[async_trait]
pub trait LedgerStore: LedgerCommon {
    /// Reserve in order, in one transaction: each request sees the balance the earlier ones
    /// left. One answer per request.
    async fn reserve_batch(&self, reqs: &[ReserveRequest]) -> StoreResult<Vec<ReserveOutcome>>;
    /// Verification rows, attempts, settlements and idempotent answers, in one transaction.
    async fn commit_results(&self, writes: &[Arc<ResultWrite>]) -> StoreResult<()>;
    /// Release reservations that expired before `now` (their instance died); how many.
    async fn expire_reservations(&self, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// A top-up (positive amount) or an adjustment of a tenant's balance, and why.
#[derive(Debug, Clone, Copy)]
pub struct Adjustment<'a> {
    pub tenant_id: &'a str,
    pub amount: i64,
    /// `topup` or `adjust`.
    pub kind: &'a str,
    pub reason: &'a str,
}

impl<'a> Adjustment<'a> {
    pub fn new(tenant_id: &'a str, amount: i64, kind: &'a str, reason: &'a str) -> Self {
        Self {
            tenant_id,
            amount,
            kind,
            reason,
        }
    }
}

/// One `credit_ledger` row to write.
pub(crate) struct LedgerRow<'a> {
    pub tenant_id: &'a str,
    pub reservation_id: Option<Uuid>,
    pub kind: &'static str,
    pub amount: i64,
    pub verification_id: Option<Uuid>,
    pub reason: Option<&'a str>,
}

impl<'a> LedgerRow<'a> {
    /// The entry of a reservation: its amount taken from the balance.
    pub fn reserve(r: &'a ReserveRequest) -> Self {
        Self {
            tenant_id: &r.tenant_id,
            reservation_id: Some(r.id),
            kind: kind::RESERVE,
            amount: -r.amount,
            verification_id: None,
            reason: None,
        }
    }
}

/// The multi-row INSERTs of `rows`, all dated `now`.
pub(crate) fn insert_ledger(rows: &[LedgerRow<'_>], now: DateTime<Utc>) -> Vec<Stmt> {
    rows.chunks(CHUNK)
        .map(|chunk| {
            let sql = insert_rows(
                "credit_ledger",
                "tenant_id, reservation_id, kind, amount, verification_id, reason, created_at",
                7,
                chunk.len(),
            );
            chunk.iter().fold(Stmt::new(sql), |s, r| {
                s.bind(r.tenant_id)
                    .bind(r.reservation_id)
                    .bind(r.kind)
                    .bind(r.amount)
                    .bind(r.verification_id)
                    .bind(r.reason)
                    .bind(now)
            })
        })
        .collect()
}

/// What a key that could not be claimed holds: its stored answer, or a request in flight.
fn stored_claim(row: &impl Cols) -> StoreResult<IdemClaim> {
    let request_hash: String = row.get("request_hash")?;
    let state: String = row.get("state")?;
    Ok(
        match (
            state.as_str(),
            row.get("http_status")?,
            row.get("response")?,
        ) {
            ("done", Some(http_status), Some(response)) => IdemClaim::Done {
                request_hash,
                http_status,
                response,
            },
            _ => IdemClaim::Running { request_hash },
        },
    )
}

/// The ledger rows that settle one verification's reservation, and the balance delta they
/// make: the release of what was reserved (unless the expiry sweeper already released it,
/// `open` false) and the charge.
pub(crate) fn settlement_rows(
    verification_id: Uuid,
    s: &Settlement,
    open: bool,
) -> (Vec<LedgerRow<'_>>, i64) {
    let row = |kind, amount| LedgerRow {
        tenant_id: &s.tenant_id,
        reservation_id: Some(s.reservation_id),
        kind,
        amount,
        verification_id: Some(verification_id),
        reason: None,
    };
    let mut rows = Vec::new();
    let mut delta = -s.charged;
    if open {
        delta += s.reserved;
        rows.push(row(kind::RELEASE, s.reserved));
    }
    if s.charged != 0 {
        rows.push(row(kind::CHARGE, -s.charged));
    }
    (rows, delta)
}

/// The kind a top-up or adjustment is booked as.
fn adjustment_kind(kind: &str) -> &'static str {
    if kind == kind::TOPUP {
        kind::TOPUP
    } else {
        kind::ADJUST
    }
}

#[async_trait]
impl<D: Db> LedgerCommon for D {
    async fn ensure_account(&self, tenant_id: &str, initial: i64) -> StoreResult<bool> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let s = Stmt::new(
            "INSERT INTO tenants (id, balance, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(initial)
        .bind(now);
        let created = D::execute_in(&mut tx, s).await? == 1;
        if created {
            let row = LedgerRow {
                tenant_id,
                reservation_id: None,
                kind: kind::INITIAL,
                amount: initial,
                verification_id: None,
                reason: Some("credits.initial"),
            };
            D::run_all(&mut tx, insert_ledger(&[row], now)).await?;
        }
        D::commit(tx).await?;
        Ok(created)
    }

    async fn adjust_credits(&self, a: &Adjustment<'_>) -> StoreResult<i64> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let s =
            Stmt::new("UPDATE tenants SET balance = balance + $2 WHERE id = $1 RETURNING balance")
                .bind(a.tenant_id)
                .bind(a.amount);
        let balance: i64 = match D::rows_in(&mut tx, s).await?.first() {
            Some(row) => row.get("balance")?,
            None => return Err(StoreError::NotFound),
        };
        let row = LedgerRow {
            tenant_id: a.tenant_id,
            reservation_id: None,
            kind: adjustment_kind(a.kind),
            amount: a.amount,
            verification_id: None,
            reason: Some(a.reason),
        };
        D::run_all(&mut tx, insert_ledger(&[row], now)).await?;
        D::commit(tx).await?;
        Ok(balance)
    }

    async fn balance(&self, tenant_id: &str) -> StoreResult<Option<i64>> {
        let s = Stmt::new("SELECT balance FROM tenants WHERE id = $1").bind(tenant_id);
        self.optional(s)
            .await?
            .map(|r| r.get("balance"))
            .transpose()
    }

    async fn balances(&self) -> StoreResult<Vec<(String, i64)>> {
        let rows = self
            .rows(Stmt::new("SELECT id, balance FROM tenants"))
            .await?;
        rows.iter()
            .map(|r| Ok((r.get("id")?, r.get("balance")?)))
            .collect()
    }

    async fn ledger(&self, tenant_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let s = Stmt::new(
            "SELECT tenant_id, reservation_id, kind, amount, verification_id, reason, created_at \
             FROM credit_ledger WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id);
        self.rows(s)
            .await?
            .iter()
            .map(|r| {
                Ok(LedgerEntry {
                    tenant_id: r.get("tenant_id")?,
                    reservation_id: r.opt_uuid("reservation_id")?,
                    kind: r.get("kind")?,
                    amount: r.get("amount")?,
                    verification_id: r.opt_uuid("verification_id")?,
                    reason: r.get("reason")?,
                    created_at: r.time("created_at")?,
                })
            })
            .collect()
    }

    async fn open_reservations(&self, tenant_id: &str) -> StoreResult<i64> {
        let s = Stmt::new(
            "SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT) AS n FROM credit_reservations \
             WHERE tenant_id = $1",
        )
        .bind(tenant_id);
        self.row(s).await?.get("n")
    }

    async fn decided_since(&self, tenant_id: &str, since: DateTime<Utc>) -> StoreResult<i64> {
        let s = Stmt::new(
            "SELECT COUNT(*) AS n FROM verifications WHERE tenant_id = $1 AND created_at >= $2 \
             AND decision IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(since);
        self.row(s).await?.get("n")
    }

    async fn idem_claim(&self, req: &IdemClaimRequest) -> StoreResult<IdemClaim> {
        let now = Utc::now();
        // A second pass covers a row that expired and was swept between the two statements.
        for _ in 0..2 {
            let claim = Stmt::new(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, state, locked_until, \
                 created_at, expires_at, verification_id) \
                 VALUES ($1, $2, $3, 'running', $4, $5, $6, $7) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
                 state = 'running', locked_until = EXCLUDED.locked_until, \
                 created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
                 verification_id = EXCLUDED.verification_id, http_status = NULL, response = NULL \
                 WHERE idempotency_keys.expires_at < $5 \
                 OR (idempotency_keys.state = 'running' AND idempotency_keys.locked_until < $5)",
            )
            .bind(&req.tenant_id)
            .bind(&req.key)
            .bind(&req.request_hash)
            .bind(req.locked_until)
            .bind(now)
            .bind(req.expires_at)
            .bind(req.owner);
            if self.execute(claim).await? == 1 {
                return Ok(IdemClaim::Claimed);
            }
            let held = Stmt::new(
                "SELECT request_hash, state, http_status, response FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = $2",
            )
            .bind(&req.tenant_id)
            .bind(&req.key);
            if let Some(row) = self.optional(held).await? {
                return stored_claim(&row);
            }
        }
        Err(StoreError::Other(
            "idempotency key changed hands twice while claiming it".into(),
        ))
    }

    async fn idem_sweep(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        self.execute(Stmt::new("DELETE FROM idempotency_keys WHERE expires_at < $1").bind(now))
            .await
    }
}
