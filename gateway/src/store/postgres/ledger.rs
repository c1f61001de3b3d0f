//! `LedgerStore` on Postgres. Batches use multi-row statements, and balance rows are locked in
//! tenant-id order in every transaction, so concurrent instances never deadlock on them.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, QueryBuilder, Row, Transaction};
use uuid::Uuid;

use super::{PgStore, results};
use crate::store::ledger::{
    self, LedgerRow, LedgerStore, ReserveOutcome, ReserveRequest, ResultWrite, Settlement, kind,
};
use crate::store::sql::Db;
use crate::store::verifications::CHUNK;
use crate::store::{StoreError, StoreResult};

type Tx = <PgStore as Db>::Tx;

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

/// Releases and charges the results' reservations; the balance delta per tenant, applied
/// last by the caller.
async fn settle<'a>(
    tx: &mut Tx,
    writes: &'a [Arc<ResultWrite>],
    now: DateTime<Utc>,
) -> StoreResult<BTreeMap<&'a str, i64>> {
    let settled: Vec<(&ResultWrite, &Settlement)> = writes
        .iter()
        .filter_map(|w| w.settlement.as_ref().map(|s| (&**w, s)))
        .collect();
    let mut deltas: BTreeMap<&str, i64> = BTreeMap::new();
    if settled.is_empty() {
        return Ok(deltas);
    }
    let ids: Vec<Uuid> = settled.iter().map(|(_, s)| s.reservation_id).collect();
    // A reservation that is gone was released by the expiry sweeper: only the charge remains
    // to be booked.
    let open: HashSet<Uuid> =
        sqlx::query_scalar("DELETE FROM credit_reservations WHERE id = ANY($1) RETURNING id")
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .collect();
    let mut rows = Vec::new();
    for (w, s) in &settled {
        let open = open.contains(&s.reservation_id);
        let (more, delta) = ledger::settlement_rows(w.verification.id, s, open);
        rows.extend(more);
        *deltas.entry(s.tenant_id.as_str()).or_default() += delta;
    }
    PgStore::run_all(tx, ledger::insert_ledger(&rows, now)).await?;
    Ok(deltas)
}

/// Completes the idempotency keys of the results (one statement for all), or forgets them.
async fn store_answers(tx: &mut Tx, writes: &[Arc<ResultWrite>]) -> StoreResult<()> {
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
            "UPDATE idempotency_keys k SET state = 'done', http_status = u.s, response = u.r \
             FROM UNNEST($1::text[], $2::text[], $3::int4[], $4::text[], $5::uuid[]) \
             AS u(t, k, s, r, v) \
             WHERE k.tenant_id = u.t AND k.key = u.k AND k.verification_id = u.v \
             AND k.state = 'running'",
        )
        .bind(&tenants)
        .bind(&keys)
        .bind(&statuses)
        .bind(&bodies)
        .bind(&vids)
        .execute(&mut **tx)
        .await?;
    }
    for w in writes {
        if let Some((tenant, key)) = &w.idempotency_forget {
            sqlx::query(
                "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND key = $2 \
                 AND verification_id = $3",
            )
            .bind(tenant)
            .bind(key)
            .bind(w.verification.id)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// What one pass of a reservation batch decided: an answer per request, the requests that
/// reserve, and the balance change per tenant.
struct Plan<'a> {
    out: Vec<ReserveOutcome>,
    taken: Vec<&'a ReserveRequest>,
    deltas: BTreeMap<&'a str, i64>,
}

/// Each request against the balances the earlier ones left. Optimistically (`locked` false),
/// a refusal gives up the pass: only a pass under lock may refuse.
fn plan(
    reqs: &[ReserveRequest],
    mut balances: BTreeMap<String, i64>,
    locked: bool,
) -> Option<Plan<'_>> {
    let mut p = Plan {
        out: Vec::with_capacity(reqs.len()),
        taken: Vec::new(),
        deltas: BTreeMap::new(),
    };
    for r in reqs {
        let Some(bal) = balances.get_mut(&r.tenant_id) else {
            p.out.push(ReserveOutcome::NoAccount);
            continue;
        };
        if *bal >= r.amount {
            *bal -= r.amount;
            p.out.push(ReserveOutcome::Reserved { balance: *bal });
            *p.deltas.entry(r.tenant_id.as_str()).or_default() -= r.amount;
            p.taken.push(r);
        } else if !locked {
            return None;
        } else {
            p.out.push(ReserveOutcome::Insufficient { balance: *bal });
        }
    }
    Some(p)
}

async fn read_balances(
    tx: &mut Tx,
    reqs: &[ReserveRequest],
    locked: bool,
) -> StoreResult<BTreeMap<String, i64>> {
    let mut ids: Vec<&str> = reqs.iter().map(|r| r.tenant_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let rows = sqlx::query(if locked {
        "SELECT id, balance FROM tenants WHERE id = ANY($1) ORDER BY id FOR UPDATE"
    } else {
        "SELECT id, balance FROM tenants WHERE id = ANY($1)"
    })
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut balances = BTreeMap::new();
    for r in rows {
        balances.insert(r.try_get("id")?, r.try_get("balance")?);
    }
    Ok(balances)
}

/// The reservation rows and their ledger entries.
async fn write_reservations(
    tx: &mut Tx,
    taken: &[&ReserveRequest],
    now: DateTime<Utc>,
) -> StoreResult<()> {
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
        qb.build().execute(&mut **tx).await?;
    }
    let ledger: Vec<LedgerRow<'_>> = taken.iter().map(|r| LedgerRow::reserve(r)).collect();
    PgStore::run_all(tx, ledger::insert_ledger(&ledger, now)).await
}

/// Applies the deltas in tenant order, each only if the balance stays non-negative; the new
/// balances, or `None` when one would not.
async fn take_balances<'a>(
    tx: &mut Tx,
    deltas: &BTreeMap<&'a str, i64>,
) -> StoreResult<Option<BTreeMap<&'a str, i64>>> {
    let mut finals = BTreeMap::new();
    for (tenant, delta) in deltas {
        let after: Option<i64> = sqlx::query_scalar(
            "UPDATE tenants SET balance = balance + $2 WHERE id = $1 AND balance + $2 >= 0 \
             RETURNING balance",
        )
        .bind(tenant)
        .bind(delta)
        .fetch_optional(&mut **tx)
        .await?;
        match after {
            Some(b) => finals.insert(*tenant, b),
            None => return Ok(None),
        };
    }
    Ok(Some(finals))
}

/// The balances an optimistic pass read were a snapshot: restate each answer from the
/// committed balance, counting back from the batch's last reservation.
fn restate(reqs: &[ReserveRequest], out: &mut [ReserveOutcome], finals: &BTreeMap<&str, i64>) {
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

impl PgStore {
    async fn reserve_once(
        &self,
        reqs: &[ReserveRequest],
        locked: bool,
    ) -> StoreResult<Option<Vec<ReserveOutcome>>> {
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let balances = read_balances(&mut tx, reqs, locked).await?;
        let Some(mut p) = plan(reqs, balances, locked) else {
            return Ok(None);
        };
        write_reservations(&mut tx, &p.taken, now).await?;
        // Last, in tenant order: the row locks are held only until the commit below.
        let Some(finals) = take_balances(&mut tx, &p.deltas).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        tx.commit().await?;
        if !locked {
            restate(reqs, &mut p.out, &finals);
        }
        Ok(Some(p.out))
    }
}

#[async_trait]
impl LedgerStore for PgStore {
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

    async fn commit_results(&self, writes: &[Arc<ResultWrite>]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        // Nothing to settle, answer or forget: the rows' one statement is its own transaction,
        // one round trip.
        let rows_only = writes.iter().all(|w| {
            w.settlement.is_none() && w.idempotency.is_none() && w.idempotency_forget.is_none()
        });
        let mut parts = results::parts(self, writes);
        if rows_only
            && parts.len() == 1
            && let Some(part) = parts.pop()
        {
            let mut conn = self.writer().await?;
            let done = results::insert(&mut *conn, part).await;
            match &done {
                Ok(()) => self.keep_writer(conn),
                // The pool tests a connection given back, and drops it if it is broken.
                Err(StoreError::Unavailable(_)) => self.drop_writers(),
                Err(_) => {}
            }
            return done;
        }
        let mut tx = self.begin().await?;
        for part in parts {
            results::insert(&mut *tx, part).await?;
        }
        if rows_only {
            tx.commit().await?;
            return Ok(());
        }
        let now = Utc::now();

        let deltas = settle(&mut tx, writes, now).await?;
        store_answers(&mut tx, writes).await?;
        // Balance rows last: their locks are held only until the commit.
        apply_deltas(&mut tx, &deltas).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn expire_reservations(&self, now: DateTime<Utc>) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
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
        PgStore::run_all(&mut tx, ledger::insert_ledger(&ledger, now)).await?;
        tx.commit().await?;
        Ok(expired.len() as u64)
    }
}
