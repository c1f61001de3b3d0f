//! `LedgerStore` on SQLite. Every write transaction starts with `BEGIN IMMEDIATE` (one writer
//! at a time), so a read-then-write (reservations) cannot fail on a lock upgrade.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Sqlite, Transaction};

use super::{SqliteStore, execute_in, rows_in};
use crate::store::ledger::{
    self, IdemClaim, IdemClaimRequest, LedgerRow, LedgerStore, ReserveOutcome, ReserveRequest,
    ResultWrite, kind,
};
use crate::store::sql::{Cols, Stmt};
use crate::store::verifications::insert_statements;
use crate::store::{StoreError, StoreResult};

async fn run_all(tx: &mut Transaction<'_, Sqlite>, stmts: Vec<Stmt>) -> StoreResult<()> {
    for s in stmts {
        execute_in(tx, s).await?;
    }
    Ok(())
}

async fn insert_ledger(
    tx: &mut Transaction<'_, Sqlite>,
    rows: &[LedgerRow<'_>],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    run_all(tx, ledger::insert_ledger(rows, now)).await
}

async fn add_balance(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
    delta: i64,
) -> StoreResult<()> {
    let s = Stmt::new("UPDATE tenants SET balance = balance + $2 WHERE id = $1")
        .bind(tenant_id)
        .bind(delta);
    execute_in(tx, s).await.map(drop)
}

/// The settlement rows of one result: the release of its reservation (unless the expiry
/// sweeper already released it) and its charge; and the balance delta they make.
async fn settle(
    tx: &mut Transaction<'_, Sqlite>,
    w: &ResultWrite,
    now: DateTime<Utc>,
) -> StoreResult<()> {
    let Some(s) = &w.settlement else {
        return Ok(());
    };
    let vid = Some(w.verification.id);
    let open = execute_in(
        tx,
        Stmt::new("DELETE FROM credit_reservations WHERE id = $1").bind(s.reservation_id),
    )
    .await?
        == 1;
    let mut rows = Vec::new();
    let mut delta = -s.charged;
    if open {
        delta += s.reserved;
        rows.push(LedgerRow {
            tenant_id: &s.tenant_id,
            reservation_id: Some(s.reservation_id),
            kind: kind::RELEASE,
            amount: s.reserved,
            verification_id: vid,
            reason: None,
        });
    }
    if s.charged != 0 {
        rows.push(LedgerRow {
            tenant_id: &s.tenant_id,
            reservation_id: Some(s.reservation_id),
            kind: kind::CHARGE,
            amount: -s.charged,
            verification_id: vid,
            reason: None,
        });
    }
    insert_ledger(tx, &rows, now).await?;
    add_balance(tx, &s.tenant_id, delta).await
}

/// The idempotency key's stored answer, or its forgetting.
async fn answer(tx: &mut Transaction<'_, Sqlite>, w: &ResultWrite) -> StoreResult<()> {
    if let Some(a) = &w.idempotency {
        let s = Stmt::new(
            "UPDATE idempotency_keys SET state = 'done', http_status = $3, response = $4, \
             verification_id = $5 WHERE tenant_id = $1 AND key = $2",
        )
        .bind(&a.tenant_id)
        .bind(&a.key)
        .bind(a.http_status)
        .bind(&a.response)
        .bind(w.verification.id);
        execute_in(tx, s).await?;
    }
    if let Some((tenant, key)) = &w.idempotency_forget {
        let s = Stmt::new("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
            .bind(tenant)
            .bind(key);
        execute_in(tx, s).await?;
    }
    Ok(())
}

#[async_trait]
impl LedgerStore for SqliteStore {
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
        let created = execute_in(&mut tx, s).await? == 1;
        if created {
            let row = LedgerRow {
                tenant_id,
                reservation_id: None,
                kind: kind::INITIAL,
                amount: initial,
                verification_id: None,
                reason: Some("credits.initial"),
            };
            insert_ledger(&mut tx, &[row], now).await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn reserve_batch(&self, reqs: &[ReserveRequest]) -> StoreResult<Vec<ReserveOutcome>> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut balances: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            if !balances.contains_key(&r.tenant_id) {
                let s = Stmt::new("SELECT balance FROM tenants WHERE id = $1").bind(&r.tenant_id);
                let b = match rows_in(&mut tx, s).await?.first() {
                    Some(row) => Some(row.get::<i64>("balance")?),
                    None => None,
                };
                balances.insert(r.tenant_id.clone(), b);
            }
            let Some(Some(bal)) = balances.get_mut(&r.tenant_id) else {
                out.push(ReserveOutcome::NoAccount);
                continue;
            };
            if *bal < r.amount {
                out.push(ReserveOutcome::Insufficient { balance: *bal });
                continue;
            }
            *bal -= r.amount;
            out.push(ReserveOutcome::Reserved { balance: *bal });
            let s = Stmt::new(
                "INSERT INTO credit_reservations (id, tenant_id, amount, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(r.id)
            .bind(&r.tenant_id)
            .bind(r.amount)
            .bind(r.expires_at)
            .bind(now);
            execute_in(&mut tx, s).await?;
            let row = LedgerRow {
                tenant_id: &r.tenant_id,
                reservation_id: Some(r.id),
                kind: kind::RESERVE,
                amount: -r.amount,
                verification_id: None,
                reason: None,
            };
            insert_ledger(&mut tx, &[row], now).await?;
            add_balance(&mut tx, &r.tenant_id, -r.amount).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn commit_results(&self, writes: &[ResultWrite]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let rows = insert_statements(
            writes.iter().map(|w| &w.verification),
            writes.iter().flat_map(|w| &w.attempts),
        );
        run_all(&mut tx, rows).await?;
        for w in writes {
            settle(&mut tx, w, now).await?;
            answer(&mut tx, w).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn adjust_credits(
        &self,
        tenant_id: &str,
        amount: i64,
        kind: &str,
        reason: &str,
    ) -> StoreResult<i64> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let s =
            Stmt::new("UPDATE tenants SET balance = balance + $2 WHERE id = $1 RETURNING balance")
                .bind(tenant_id)
                .bind(amount);
        let balance: i64 = match rows_in(&mut tx, s).await?.first() {
            Some(row) => row.get("balance")?,
            None => return Err(StoreError::NotFound),
        };
        let row = LedgerRow {
            tenant_id,
            reservation_id: None,
            kind: ledger::adjustment_kind(kind),
            amount,
            verification_id: None,
            reason: Some(reason),
        };
        insert_ledger(&mut tx, &[row], now).await?;
        tx.commit().await?;
        Ok(balance)
    }

    async fn expire_reservations(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let s = Stmt::new(
            "DELETE FROM credit_reservations WHERE expires_at < $1 RETURNING id, tenant_id, amount",
        )
        .bind(now);
        let rows = rows_in(&mut tx, s).await?;
        for r in &rows {
            let tenant: String = r.get("tenant_id")?;
            let amount: i64 = r.get("amount")?;
            let row = LedgerRow {
                tenant_id: &tenant,
                reservation_id: Some(r.uuid("id")?),
                kind: kind::EXPIRE,
                amount,
                verification_id: None,
                reason: Some("reservation expired"),
            };
            insert_ledger(&mut tx, &[row], now).await?;
            add_balance(&mut tx, &tenant, amount).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn idem_claim(&self, req: &IdemClaimRequest) -> StoreResult<IdemClaim> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let claim = Stmt::new(
            "INSERT INTO idempotency_keys (tenant_id, key, request_hash, state, locked_until, \
             created_at, expires_at) VALUES ($1, $2, $3, 'running', $4, $5, $6) \
             ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
             state = 'running', locked_until = excluded.locked_until, \
             created_at = excluded.created_at, expires_at = excluded.expires_at, \
             verification_id = NULL, http_status = NULL, response = NULL \
             WHERE idempotency_keys.expires_at < $5 \
             OR (idempotency_keys.state = 'running' AND idempotency_keys.locked_until < $5)",
        )
        .bind(&req.tenant_id)
        .bind(&req.key)
        .bind(&req.request_hash)
        .bind(req.locked_until)
        .bind(now)
        .bind(req.expires_at);
        let result = if execute_in(&mut tx, claim).await? == 1 {
            IdemClaim::Claimed
        } else {
            let s = Stmt::new(
                "SELECT request_hash, state, http_status, response FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = $2",
            )
            .bind(&req.tenant_id)
            .bind(&req.key);
            let rows = rows_in(&mut tx, s).await?;
            let row = rows.first().ok_or(StoreError::NotFound)?;
            ledger::stored_claim(row)?
        };
        tx.commit().await?;
        Ok(result)
    }
}
