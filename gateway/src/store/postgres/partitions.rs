//! The monthly partitions of `verifications` and `verification_attempts`
//! (`migrations/postgres/0007_monthly_partitions.sql`): months ahead are created at start and at
//! every purge pass; a month that ended before every tenant's retention is dropped whole.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sqlx::{PgPool, Row};

use crate::store::StoreResult;

/// The two partitioned tables, each month's partition named `{table}_YYYY_MM`.
const TABLES: [&str; 2] = ["verifications", "verification_attempts"];

/// Months ahead of the current one that always have their partitions.
const AHEAD: u32 = 2;

fn month_start(d: NaiveDate) -> NaiveDate {
    d.with_day(1).unwrap_or(d)
}

fn next_month(d: NaiveDate) -> NaiveDate {
    let (y, m) = if d.month() == 12 {
        (d.year().saturating_add(1), 1)
    } else {
        (d.year(), d.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(d)
}

fn bound(d: NaiveDate) -> String {
    format!("{} 00:00:00+00", d.format("%Y-%m-%d"))
}

/// `verifications_2026_11` → its month's first day.
fn month_of(table: &str, partition: &str) -> Option<NaiveDate> {
    let rest = partition.strip_prefix(table)?.strip_prefix('_')?;
    let (y, m) = rest.split_once('_')?;
    if y.len() != 4 || m.len() != 2 {
        return None;
    }
    NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, 1)
}

/// Creates the partitions of the current month and the next [`AHEAD`], where missing. A month
/// whose rows already sit in the DEFAULT partition (livegate was down for months) cannot get
/// one: its rows stay there, purged row by row.
pub async fn ensure_ahead(pool: &PgPool, now: DateTime<Utc>) -> StoreResult<()> {
    let mut month = month_start(now.date_naive());
    for _ in 0..=AHEAD {
        let upto = next_month(month);
        for table in TABLES {
            let name = format!("{table}_{}", month.format("%Y_%m"));
            let sql = format!(
                "CREATE TABLE IF NOT EXISTS \"{name}\" PARTITION OF {table} \
                 FOR VALUES FROM ('{}') TO ('{}')",
                bound(month),
                bound(upto)
            );
            if let Err(e) = sqlx::query(&sql).execute(pool).await {
                // Another instance creating it at the same moment, or rows of that month in
                // the DEFAULT partition: never worth failing a start or a pass for.
                tracing::warn!(partition = %name, error = %e, "month partition not created");
            }
        }
        month = upto;
    }
    Ok(())
}

/// The month partitions of `table`, as `(name, first day)`.
async fn months(pool: &PgPool, table: &str) -> StoreResult<Vec<(String, NaiveDate)>> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS name FROM pg_inherits i \
         JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
    )
    .bind(table)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.try_get("name")?;
        if let Some(m) = month_of(table, &name) {
            out.push((name, m));
        }
    }
    out.sort_by_key(|(_, m)| *m);
    Ok(out)
}

/// Drops every month partition that ended at or before `cutoff` (due for every tenant), the
/// faces of its verifications first; the verifications and the faces dropped. Attempts of a dropped
/// month's verifications that landed in the next month (a shadow call across midnight) are
/// deleted after.
pub async fn drop_before(pool: &PgPool, cutoff: DateTime<Utc>) -> StoreResult<(u64, u64)> {
    let mut dropped = 0_u64;
    let mut faces = 0_u64;
    let mut last_end = None;
    for (name, month) in months(pool, "verifications").await? {
        let end = Utc.from_utc_datetime(&next_month(month).and_time(chrono::NaiveTime::MIN));
        if end > cutoff {
            break;
        }
        last_end = Some(end);
        let mut tx = pool.begin().await?;
        faces += sqlx::query(&format!(
            "DELETE FROM verification_faces f USING \"{name}\" v WHERE f.verification_id = v.id"
        ))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        for table in ["reviews", "webhook_outbox"] {
            sqlx::query(&format!(
                "DELETE FROM {table} r USING \"{name}\" v WHERE r.verification_id = v.id"
            ))
            .execute(&mut *tx)
            .await?;
        }
        let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM \"{name}\""))
            .fetch_one(&mut *tx)
            .await?;
        sqlx::query(&format!("DROP TABLE \"{name}\""))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        dropped = dropped.saturating_add(u64::try_from(n).unwrap_or(0));
        tracing::info!(partition = %name, rows = n, "month partition dropped");
    }
    for (name, month) in months(pool, "verification_attempts").await? {
        let end = Utc.from_utc_datetime(&next_month(month).and_time(chrono::NaiveTime::MIN));
        if end > cutoff {
            break;
        }
        sqlx::query(&format!("DROP TABLE \"{name}\""))
            .execute(pool)
            .await?;
    }
    // Attempts are written within their verification's deadline: orphans of a dropped month
    // can only sit just past its end.
    if let Some(end) = last_end {
        let window = chrono::Duration::days(1);
        sqlx::query(
            "DELETE FROM verification_attempts a WHERE a.created_at >= $1 AND a.created_at < $2 \
             AND NOT EXISTS (SELECT 1 FROM verifications v WHERE v.id = a.verification_id)",
        )
        .bind(end - window)
        .bind(end + window)
        .execute(pool)
        .await?;
    }
    Ok((dropped, faces))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_and_months() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).expect("date");
        assert_eq!(
            month_of("verifications", "verifications_2026_11"),
            Some(d(2026, 11, 1))
        );
        assert_eq!(month_of("verifications", "verifications_default"), None);
        // `verification_attempts_…` is not a verifications partition.
        assert_eq!(
            month_of("verifications", "verification_attempts_2026_11"),
            None
        );
        assert_eq!(next_month(d(2026, 12, 1)), d(2027, 1, 1));
        assert_eq!(month_start(d(2026, 2, 17)), d(2026, 2, 1));
        assert_eq!(bound(d(2026, 2, 1)), "2026-02-01 00:00:00+00");
    }
}
