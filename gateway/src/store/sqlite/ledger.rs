//! `LedgerStore` on SQLite. Every write transaction starts with `BEGIN IMMEDIATE` (one writer
//! at a time), so a read-then-write (reservations) cannot fail on a lock upgrade.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::SqliteStore;
use crate::store::StoreResult;
use crate::store::ledger::{
    self, LedgerRow, LedgerStore, ReserveOutcome, ReserveRequest, ResultWrite, kind,
};
use crate::store::sql::{Cols, Db, Stmt};
use crate::store::verifications::begin_results;

type Tx = <SqliteStore as Db>::Tx;

async fn add_balance(tx: &mut Tx, tenant_id: &str, delta: i64) -> StoreResult<()> {
    let s = Stmt::new("UPDATE tenants SET balance = balance + $2 WHERE id = $1")
        .bind(tenant_id)
        .bind(delta);
    SqliteStore::execute_in(tx, s).await.map(drop)
}

/// The settlement rows of one result: the release of its reservation (unless the expiry
/// sweeper already released it) and its charge; and the balance delta they make.
async fn settle(tx: &mut Tx, w: &ResultWrite, now: DateTime<Utc>) -> StoreResult<()> {
    let Some(s) = &w.settlement else {
        return Ok(());
    };
    let open = SqliteStore::execute_in(
        tx,
        Stmt::new("DELETE FROM credit_reservations WHERE id = $1").bind(s.reservation_id),
    )
    .await?
        == 1;
    let (rows, delta) = ledger::settlement_rows(w.verification.id, s, open);
    SqliteStore::run_all(tx, ledger::insert_ledger(&rows, now)).await?;
    add_balance(tx, &s.tenant_id, delta).await
}

/// The idempotency key's stored answer, or its forgetting.
async fn answer(tx: &mut Tx, w: &ResultWrite) -> StoreResult<()> {
    if let Some(a) = &w.idempotency {
        let s = Stmt::new(
            "UPDATE idempotency_keys SET state = 'done', http_status = $3, response = $4 \
             WHERE tenant_id = $1 AND key = $2 AND verification_id = $5 AND state = 'running'",
        )
        .bind(&a.tenant_id)
        .bind(&a.key)
        .bind(a.http_status)
        .bind(&a.response)
        .bind(w.verification.id);
        SqliteStore::execute_in(tx, s).await?;
    }
    if let Some((tenant, key)) = &w.idempotency_forget {
        let s = Stmt::new(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 AND verification_id = $3",
        )
        .bind(tenant)
        .bind(key)
        .bind(w.verification.id);
        SqliteStore::execute_in(tx, s).await?;
    }
    Ok(())
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn reserve_batch(&self, reqs: &[ReserveRequest]) -> StoreResult<Vec<ReserveOutcome>> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let mut balances: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            if !balances.contains_key(&r.tenant_id) {
                let s = Stmt::new("SELECT balance FROM tenants WHERE id = $1").bind(&r.tenant_id);
                let b = match SqliteStore::rows_in(&mut tx, s).await?.first() {
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
            SqliteStore::execute_in(&mut tx, s).await?;
            let row = LedgerRow::reserve(r);
            SqliteStore::run_all(&mut tx, ledger::insert_ledger(&[row], now)).await?;
            add_balance(&mut tx, &r.tenant_id, -r.amount).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn commit_results(&self, writes: &[Arc<ResultWrite>]) -> StoreResult<()> {
        let Some(mut tx) = begin_results(self, writes).await? else {
            return Ok(());
        };
        let now = Utc::now();
        for w in writes {
            settle(&mut tx, w, now).await?;
            answer(&mut tx, w).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn expire_reservations(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let s = Stmt::new(
            "DELETE FROM credit_reservations WHERE expires_at < $1 RETURNING id, tenant_id, amount",
        )
        .bind(now);
        let rows = SqliteStore::rows_in(&mut tx, s).await?;
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
            SqliteStore::run_all(&mut tx, ledger::insert_ledger(&[row], now)).await?;
            add_balance(&mut tx, &tenant, amount).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }
}
