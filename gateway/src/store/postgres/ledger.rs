//! `LedgerStore` on Postgres. Batches use multi-row statements, and balance rows are locked in
//! tenant-id order in every transaction, so concurrent instances never deadlock on them.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{PgStore, execute_in};
use crate::store::ledger::{
    self, IdemClaim, IdemClaimRequest, LedgerRow, LedgerStore, ReserveOutcome, ReserveRequest,
    ResultWrite, Settlement, kind,
};
use crate::store::sql::Stmt;
use crate::store::verifications::{CHUNK, insert_statements};
use crate::store::{StoreError, StoreResult};

/// Runs statements inside `tx`, in order.
async fn run_all(tx: &mut Transaction<'_, Postgres>, stmts: Vec<Stmt>) -> StoreResult<()> {
    for s in stmts {
        execute_in(tx, s).await?;
    }
    Ok(())
}

async fn insert_ledger(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[LedgerRow<'_>],
    now: DateTime<Utc>,
) -> StoreResult<()> {
    run_all(tx, ledger::insert_ledger(rows, now)).await
}

/// Apply balance deltas in tenant-id order (the BTreeMap's order).
async fn apply_deltas(
    tx: &mut Transaction<'_, Postgres>,
    deltas: &BTreeMap<&str, i64>,
) -> StoreResult<()> {
    for (tenant, delta) in deltas {
        if *delta != 0 {
            sqlx::query("UPDATE tenants SET balance = balance + $2 WHERE id = $1")
                .bind(tenant)
                .bind(delta)
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

impl PgStore {
    async fn reserve_once(
        &self,
        reqs: &[ReserveRequest],
        locked: bool,
    ) -> StoreResult<Option<Vec<ReserveOutcome>>> {
        let now = Utc::now();
        let mut ids: Vec<&str> = reqs.iter().map(|r| r.tenant_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(if locked {
            "SELECT id, balance FROM tenants WHERE id = ANY($1) ORDER BY id FOR UPDATE"
        } else {
            "SELECT id, balance FROM tenants WHERE id = ANY($1)"
        })
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut balances: BTreeMap<String, i64> = BTreeMap::new();
        for r in rows {
            balances.insert(r.try_get("id")?, r.try_get("balance")?);
        }
        let mut out = Vec::with_capacity(reqs.len());
        let mut taken: Vec<&ReserveRequest> = Vec::new();
        let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
        for r in reqs {
            let Some(bal) = balances.get_mut(&r.tenant_id) else {
                out.push(ReserveOutcome::NoAccount);
                continue;
            };
            if *bal >= r.amount {
                *bal -= r.amount;
                out.push(ReserveOutcome::Reserved { balance: *bal });
                *deltas.entry(r.tenant_id.as_str()).or_default() -= r.amount;
                taken.push(r);
            } else if !locked {
                return Ok(None);
            } else {
                out.push(ReserveOutcome::Insufficient { balance: *bal });
            }
        }
        for chunk in taken.chunks(CHUNK) {
            let mut qb = QueryBuilder::<Postgres>::new(
                "INSERT INTO credit_reservations (id, tenant_id, amount, expires_at, created_at) ",
            );
            qb.push_values(chunk, |mut b, r| {
                b.push_bind(r.id)
                    .push_bind(&r.tenant_id)
                    .push_bind(r.amount)
                    .push_bind(r.expires_at)
                    .push_bind(now);
            });
            qb.build().execute(&mut *tx).await?;
        }
        let ledger: Vec<LedgerRow<'_>> = taken
            .iter()
            .map(|r| LedgerRow {
                tenant_id: &r.tenant_id,
                reservation_id: Some(r.id),
                kind: kind::RESERVE,
                amount: -r.amount,
                verification_id: None,
                reason: None,
            })
            .collect();
        insert_ledger(&mut tx, &ledger, now).await?;
        // Last, in tenant order: the row locks are held only until the commit below.
        let mut finals: BTreeMap<&str, i64> = BTreeMap::new();
        for (tenant, delta) in &deltas {
            let after: Option<i64> = sqlx::query_scalar(
                "UPDATE tenants SET balance = balance + $2 WHERE id = $1 AND balance + $2 >= 0 \
                 RETURNING balance",
            )
            .bind(tenant)
            .bind(delta)
            .fetch_optional(&mut *tx)
            .await?;
            match after {
                Some(b) => {
                    finals.insert(tenant, b);
                }
                None => {
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
        }
        tx.commit().await?;
        if !locked {
            // The balances read were a snapshot: restate each answer from the committed one.
            let mut later: BTreeMap<&str, i64> = BTreeMap::new();
            for (r, o) in reqs.iter().zip(out.iter_mut()).rev() {
                if let ReserveOutcome::Reserved { balance } = o {
                    let after = later.entry(r.tenant_id.as_str()).or_default();
                    *balance = finals
                        .get(r.tenant_id.as_str())
                        .copied()
                        .unwrap_or(*balance)
                        + *after;
                    *after += r.amount;
                }
            }
        }
        Ok(Some(out))
    }
}

#[async_trait]
impl LedgerStore for PgStore {
    async fn ensure_account(&self, tenant_id: &str, initial: i64) -> StoreResult<bool> {
        let now = Utc::now();
        let mut tx = self.pool().begin().await?;
        let created = sqlx::query(
            "INSERT INTO tenants (id, balance, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(initial)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
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
        // Optimistic first: the balance row is locked only from its UPDATE to COMMIT, so
        // settlements and other instances queue behind it for as short a time as possible. A
        // batch that would refuse anything, or whose conditional UPDATE finds the balance too
        // low, runs again with the row locked from the start, so every refusal is exact.
        if let Some(out) = self.reserve_once(reqs, false).await? {
            return Ok(out);
        }
        self.reserve_once(reqs, true)
            .await?
            .ok_or_else(|| StoreError::Other("reservation under lock did not apply".into()))
    }

    async fn commit_results(&self, writes: &[ResultWrite]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = Utc::now();
        let mut tx = self.pool().begin().await?;
        let rows = insert_statements(
            writes.iter().map(|w| &w.verification),
            writes.iter().flat_map(|w| &w.attempts),
        );
        run_all(&mut tx, rows).await?;

        let mut settle_deltas: BTreeMap<String, i64> = BTreeMap::new();
        let settled: Vec<(&ResultWrite, &Settlement)> = writes
            .iter()
            .filter_map(|w| w.settlement.as_ref().map(|s| (w, s)))
            .collect();
        if !settled.is_empty() {
            let ids: Vec<Uuid> = settled.iter().map(|(_, s)| s.reservation_id).collect();
            // A reservation that is gone was released by the expiry sweeper: only the charge
            // remains to be booked.
            let open: HashSet<Uuid> = sqlx::query_scalar(
                "DELETE FROM credit_reservations WHERE id = ANY($1) RETURNING id",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let mut rows = Vec::new();
            let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
            for (w, s) in &settled {
                let vid = Some(w.verification.id);
                let mut delta = -s.charged;
                if open.contains(&s.reservation_id) {
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
                *deltas.entry(s.tenant_id.as_str()).or_default() += delta;
            }
            insert_ledger(&mut tx, &rows, now).await?;
            settle_deltas = deltas.into_iter().map(|(t, d)| (t.to_owned(), d)).collect();
        }

        let answers: Vec<_> = writes
            .iter()
            .filter_map(|w| w.idempotency.as_ref().map(|a| (w.verification.id, a)))
            .collect();
        if !answers.is_empty() {
            let tenants: Vec<&str> = answers.iter().map(|(_, a)| a.tenant_id.as_str()).collect();
            let keys: Vec<&str> = answers.iter().map(|(_, a)| a.key.as_str()).collect();
            let statuses: Vec<i32> = answers.iter().map(|(_, a)| a.http_status).collect();
            let bodies: Vec<&str> = answers.iter().map(|(_, a)| a.response.as_str()).collect();
            let vids: Vec<Uuid> = answers.iter().map(|(v, _)| *v).collect();
            sqlx::query(
                "UPDATE idempotency_keys k SET state = 'done', http_status = u.s, response = u.r, \
                 verification_id = u.v \
                 FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::uuid[]) \
                 AS u(t, k, s, r, v) WHERE k.tenant_id = u.t AND k.key = u.k",
            )
            .bind(&tenants)
            .bind(&keys)
            .bind(&statuses)
            .bind(&bodies)
            .bind(&vids)
            .execute(&mut *tx)
            .await?;
        }
        for w in writes {
            if let Some((tenant, key)) = &w.idempotency_forget {
                sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
                    .bind(tenant)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Balance rows last: their locks are held only until the commit.
        let deltas: BTreeMap<&str, i64> = settle_deltas
            .iter()
            .map(|(t, d)| (t.as_str(), *d))
            .collect();
        apply_deltas(&mut tx, &deltas).await?;
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
        let mut tx = self.pool().begin().await?;
        let balance: Option<i64> = sqlx::query_scalar(
            "UPDATE tenants SET balance = balance + $2 WHERE id = $1 RETURNING balance",
        )
        .bind(tenant_id)
        .bind(amount)
        .fetch_optional(&mut *tx)
        .await?;
        let balance = balance.ok_or(StoreError::NotFound)?;
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
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(
            "DELETE FROM credit_reservations WHERE id IN (SELECT id FROM credit_reservations \
             WHERE expires_at < $1 ORDER BY id LIMIT 1000 FOR UPDATE SKIP LOCKED) \
             RETURNING id, tenant_id, amount",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        let mut expired = Vec::with_capacity(rows.len());
        for r in &rows {
            expired.push((
                r.try_get::<Uuid, _>("id")?,
                r.try_get::<String, _>("tenant_id")?,
                r.try_get::<i64, _>("amount")?,
            ));
        }
        let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
        let ledger: Vec<LedgerRow<'_>> = expired
            .iter()
            .map(|(id, t, amount)| {
                *deltas.entry(t.as_str()).or_default() += amount;
                LedgerRow {
                    tenant_id: t,
                    reservation_id: Some(*id),
                    kind: kind::EXPIRE,
                    amount: *amount,
                    verification_id: None,
                    reason: Some("reservation expired"),
                }
            })
            .collect();
        apply_deltas(&mut tx, &deltas).await?;
        insert_ledger(&mut tx, &ledger, now).await?;
        tx.commit().await?;
        Ok(expired.len() as u64)
    }

    async fn idem_claim(&self, req: &IdemClaimRequest) -> StoreResult<IdemClaim> {
        let now = Utc::now();
        // A second pass covers a row that expired and was swept between the two statements.
        for _ in 0..2 {
            let claimed = sqlx::query(
                "INSERT INTO idempotency_keys (tenant_id, key, request_hash, state, locked_until, \
                 created_at, expires_at) VALUES ($1, $2, $3, 'running', $4, $5, $6) \
                 ON CONFLICT (tenant_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash, \
                 state = 'running', locked_until = EXCLUDED.locked_until, \
                 created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
                 verification_id = NULL, http_status = NULL, response = NULL \
                 WHERE idempotency_keys.expires_at < $5 \
                 OR (idempotency_keys.state = 'running' AND idempotency_keys.locked_until < $5)",
            )
            .bind(&req.tenant_id)
            .bind(&req.key)
            .bind(&req.request_hash)
            .bind(req.locked_until)
            .bind(now)
            .bind(req.expires_at)
            .execute(self.pool())
            .await?
            .rows_affected()
                == 1;
            if claimed {
                return Ok(IdemClaim::Claimed);
            }
            let row = sqlx::query(
                "SELECT request_hash, state, http_status, response FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = $2",
            )
            .bind(&req.tenant_id)
            .bind(&req.key)
            .fetch_optional(self.pool())
            .await?;
            let Some(row) = row else { continue };
            return ledger::stored_claim(&row);
        }
        Err(StoreError::Other(
            "idempotency key changed hands twice while claiming it".into(),
        ))
    }
}
