//! `LedgerStore` on SQLite. Every write transaction starts with `BEGIN IMMEDIATE`, so a
//! read-then-write (reservations) cannot fail on a lock upgrade under concurrent writers.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Row, Sqlite, Transaction};
use uuid::Uuid;

use super::ledger::{
    IdemClaim, IdemClaimRequest, LedgerEntry, LedgerStore, ReserveOutcome, ReserveRequest,
    ResultWrite, kind,
};
use super::sqlite::{SqliteStore, insert_attempts, insert_verification, parse_ts, parse_uuid, ts};
use super::{StoreError, StoreResult};

const BEGIN: &str = "BEGIN IMMEDIATE";

#[allow(clippy::too_many_arguments)]
async fn ledger_row(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
    reservation_id: Option<Uuid>,
    kind: &str,
    amount: i64,
    verification_id: Option<Uuid>,
    reason: Option<&str>,
    now: &str,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO credit_ledger (tenant_id, reservation_id, kind, amount, verification_id, \
         reason, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(tenant_id)
    .bind(reservation_id.map(|u| u.to_string()))
    .bind(kind)
    .bind(amount)
    .bind(verification_id.map(|u| u.to_string()))
    .bind(reason)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn add_balance(
    tx: &mut Transaction<'_, Sqlite>,
    tenant_id: &str,
    delta: i64,
) -> StoreResult<()> {
    sqlx::query("UPDATE tenants SET balance = balance + $2 WHERE id = $1")
        .bind(tenant_id)
        .bind(delta)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[async_trait]
impl LedgerStore for SqliteStore {
    async fn ensure_account(&self, tenant_id: &str, initial: i64) -> StoreResult<bool> {
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin_with(BEGIN).await?;
        let created = sqlx::query(
            "INSERT INTO tenants (id, balance, created_at) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(initial)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if created {
            ledger_row(
                &mut tx,
                tenant_id,
                None,
                kind::INITIAL,
                initial,
                None,
                Some("credits.initial"),
                &now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(created)
    }

    async fn balance(&self, tenant_id: &str) -> StoreResult<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT balance FROM tenants WHERE id = $1")
                .bind(tenant_id)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    async fn reserve_batch(&self, reqs: &[ReserveRequest]) -> StoreResult<Vec<ReserveOutcome>> {
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin_with(BEGIN).await?;
        let mut balances: BTreeMap<String, Option<i64>> = BTreeMap::new();
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            if !balances.contains_key(&r.tenant_id) {
                let b: Option<i64> =
                    sqlx::query_scalar("SELECT balance FROM tenants WHERE id = $1")
                        .bind(&r.tenant_id)
                        .fetch_optional(&mut *tx)
                        .await?;
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
            sqlx::query(
                "INSERT INTO credit_reservations (id, tenant_id, amount, expires_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(r.id.to_string())
            .bind(&r.tenant_id)
            .bind(r.amount)
            .bind(ts(&r.expires_at))
            .bind(&now)
            .execute(&mut *tx)
            .await?;
            ledger_row(
                &mut tx,
                &r.tenant_id,
                Some(r.id),
                kind::RESERVE,
                -r.amount,
                None,
                None,
                &now,
            )
            .await?;
            add_balance(&mut tx, &r.tenant_id, -r.amount).await?;
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn commit_results(&self, writes: &[ResultWrite]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin_with(BEGIN).await?;
        for w in writes {
            insert_verification(&mut tx, &w.verification).await?;
            insert_attempts(&mut tx, &w.attempts).await?;
            let vid = Some(w.verification.id);
            if let Some(s) = &w.settlement {
                // Gone means the expiry sweeper released it already: only the charge is left.
                let open = sqlx::query("DELETE FROM credit_reservations WHERE id = $1")
                    .bind(s.reservation_id.to_string())
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                let mut delta = -s.charged;
                if open {
                    delta += s.reserved;
                    ledger_row(
                        &mut tx,
                        &s.tenant_id,
                        Some(s.reservation_id),
                        kind::RELEASE,
                        s.reserved,
                        vid,
                        None,
                        &now,
                    )
                    .await?;
                }
                if s.charged != 0 {
                    ledger_row(
                        &mut tx,
                        &s.tenant_id,
                        Some(s.reservation_id),
                        kind::CHARGE,
                        -s.charged,
                        vid,
                        None,
                        &now,
                    )
                    .await?;
                }
                add_balance(&mut tx, &s.tenant_id, delta).await?;
            }
            if let Some(a) = &w.idempotency {
                sqlx::query(
                    "UPDATE idempotency_keys SET state = 'done', http_status = $3, response = $4, \
                     verification_id = $5 WHERE tenant_id = $1 AND key = $2",
                )
                .bind(&a.tenant_id)
                .bind(&a.key)
                .bind(a.http_status)
                .bind(&a.response)
                .bind(w.verification.id.to_string())
                .execute(&mut *tx)
                .await?;
            }
            if let Some((tenant, key)) = &w.idempotency_forget {
                sqlx::query("DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2")
                    .bind(tenant)
                    .bind(key)
                    .execute(&mut *tx)
                    .await?;
            }
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
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin_with(BEGIN).await?;
        let balance: Option<i64> = sqlx::query_scalar(
            "UPDATE tenants SET balance = balance + $2 WHERE id = $1 RETURNING balance",
        )
        .bind(tenant_id)
        .bind(amount)
        .fetch_optional(&mut *tx)
        .await?;
        let balance = balance.ok_or(StoreError::NotFound)?;
        let kind = if kind == kind::TOPUP {
            kind::TOPUP
        } else {
            kind::ADJUST
        };
        ledger_row(
            &mut tx,
            tenant_id,
            None,
            kind,
            amount,
            None,
            Some(reason),
            &now,
        )
        .await?;
        tx.commit().await?;
        Ok(balance)
    }

    async fn expire_reservations(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let now_s = ts(&now);
        let mut tx = self.pool().begin_with(BEGIN).await?;
        let rows = sqlx::query(
            "DELETE FROM credit_reservations WHERE expires_at < $1 RETURNING id, tenant_id, amount",
        )
        .bind(&now_s)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rows {
            let id = parse_uuid(&r.try_get::<String, _>("id")?)?;
            let tenant: String = r.try_get("tenant_id")?;
            let amount: i64 = r.try_get("amount")?;
            ledger_row(
                &mut tx,
                &tenant,
                Some(id),
                kind::EXPIRE,
                amount,
                None,
                Some("reservation expired"),
                &now_s,
            )
            .await?;
            add_balance(&mut tx, &tenant, amount).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn ledger(&self, tenant_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let rows = sqlx::query(
            "SELECT tenant_id, reservation_id, kind, amount, verification_id, reason, created_at \
             FROM credit_ledger WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LedgerEntry {
                    tenant_id: r.try_get("tenant_id")?,
                    reservation_id: r
                        .try_get::<Option<String>, _>("reservation_id")?
                        .map(|s| parse_uuid(&s))
                        .transpose()?,
                    kind: r.try_get("kind")?,
                    amount: r.try_get("amount")?,
                    verification_id: r
                        .try_get::<Option<String>, _>("verification_id")?
                        .map(|s| parse_uuid(&s))
                        .transpose()?,
                    reason: r.try_get("reason")?,
                    created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect()
    }

    async fn open_reservations(&self, tenant_id: &str) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0) FROM credit_reservations WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_one(self.pool())
        .await?)
    }

    async fn decided_since(&self, tenant_id: &str, since: DateTime<Utc>) -> StoreResult<i64> {
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM verifications WHERE tenant_id = $1 AND created_at >= $2 \
             AND decision IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(ts(&since))
        .fetch_one(self.pool())
        .await?)
    }

    async fn idem_claim(&self, req: &IdemClaimRequest) -> StoreResult<IdemClaim> {
        let now = ts(&Utc::now());
        let mut tx = self.pool().begin_with(BEGIN).await?;
        let claimed = sqlx::query(
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
        .bind(ts(&req.locked_until))
        .bind(&now)
        .bind(ts(&req.expires_at))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        let result = if claimed {
            IdemClaim::Claimed
        } else {
            let row = sqlx::query(
                "SELECT request_hash, state, http_status, response FROM idempotency_keys \
                 WHERE tenant_id = $1 AND key = $2",
            )
            .bind(&req.tenant_id)
            .bind(&req.key)
            .fetch_one(&mut *tx)
            .await?;
            let request_hash: String = row.try_get("request_hash")?;
            let state: String = row.try_get("state")?;
            match (
                state.as_str(),
                row.try_get("http_status")?,
                row.try_get("response")?,
            ) {
                ("done", Some(http_status), Some(response)) => IdemClaim::Done {
                    request_hash,
                    http_status,
                    response,
                },
                _ => IdemClaim::Running { request_hash },
            }
        };
        tx.commit().await?;
        Ok(result)
    }

    async fn idem_sweep(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at < $1")
                .bind(ts(&now))
                .execute(self.pool())
                .await?
                .rows_affected(),
        )
    }
}
