//! The results' rows on Postgres, one statement per batch: the verification rows and their
//! attempts as multi-row INSERTs folded into data-modifying CTEs, with the kept faces and
//! webhook messages after them. The statement's text depends only on how many rows it holds,
//! so it is built once per shape and kept (sqlx keeps it prepared per connection, Postgres plans
//! it generically), and the values are bound from the results where they are, not copied.
//! Arrays through `UNNEST` would give one text for every batch, but cost Postgres more per
//! single-row batch, the common case (measured: `docs/benchmarks.md`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::types::Json;
use sqlx::{Executor, Postgres};

use super::PgStore;
use crate::store::ledger::ResultWrite;
use crate::store::sql::{Binds, Param, Stmt, shift_params};
use crate::store::verifications::{
    ATTEMPT_COLUMNS, COLUMNS, bind_attempt, bind_verification, extra_statements, insert_rows, width,
};
use crate::store::{AttemptRecord, StoreResult};

/// Postgres' limit on the parameters of one statement.
const PG_MAX_PARAMS: usize = 65_535;

/// Statement texts kept at most: batch shapes beyond are built each time.
const KEPT_SHAPES: usize = 256;

/// Statement texts by (verification rows, attempt rows).
type Shapes = HashMap<(usize, usize), Arc<str>>;

/// Some of a batch's results and what goes with their rows, sent as one statement.
pub(super) struct Part<'w> {
    writes: &'w [Arc<ResultWrite>],
    extras: Vec<Stmt>,
}

/// `writes` as few statements as Postgres' parameter limit allows: one, unless the batch holds
/// more than 65 535 values.
pub(super) fn parts<'w>(store: &PgStore, writes: &'w [Arc<ResultWrite>]) -> Vec<Part<'w>> {
    let (v_width, a_width) = (width(COLUMNS), width(ATTEMPT_COLUMNS));
    let mut parts = Vec::new();
    let (mut start, mut params, mut extras) = (0, 0usize, Vec::new());
    for (i, w) in writes.iter().enumerate() {
        let own = extra_statements(store, std::slice::from_ref(w));
        let more = own
            .iter()
            .map(|s| s.params.len())
            .sum::<usize>()
            .saturating_add(v_width)
            .saturating_add(a_width.saturating_mul(w.attempts.len()));
        if i > start && params.saturating_add(more) > PG_MAX_PARAMS {
            parts.push(Part {
                writes: &writes[start..i],
                extras: std::mem::take(&mut extras),
            });
            (start, params) = (i, 0);
        }
        params = params.saturating_add(more);
        extras.extend(own);
    }
    if start < writes.len() {
        parts.push(Part {
            writes: &writes[start..],
            extras,
        });
    }
    parts
}

/// Writes one part's verification rows, attempts, kept faces and webhook messages in one
/// statement on `conn`: every part of it or none.
pub(super) async fn insert<'c, E>(conn: E, part: Part<'_>) -> StoreResult<()>
where
    E: Executor<'c, Database = Postgres>,
{
    let attempts: Vec<&AttemptRecord> = part.writes.iter().flat_map(|w| &w.attempts).collect();
    let sql = text(part.writes.len(), attempts.len(), &part.extras);
    let q = part.writes.iter().fold(sqlx::query(&sql), |q, w| {
        bind_verification(q, &w.verification)
    });
    let q = attempts.iter().fold(q, |q, a| bind_attempt(q, a));
    let q = part
        .extras
        .into_iter()
        .fold(q, |q, s| super::bind_all(q, s.params));
    q.execute(conn).await?;
    Ok(())
}

/// The statement for `verifications` rows, `attempts` rows and `extras` after them: kept per
/// shape when there are no extras.
fn text(verifications: usize, attempts: usize, extras: &[Stmt]) -> Arc<str> {
    static KEPT: LazyLock<Mutex<Shapes>> = LazyLock::new(Mutex::default);
    if !extras.is_empty() {
        return build(verifications, attempts, extras).into();
    }
    let key = (verifications, attempts);
    if let Some(sql) = KEPT.lock().ok().and_then(|kept| kept.get(&key).cloned()) {
        return sql;
    }
    let sql: Arc<str> = build(verifications, attempts, &[]).into();
    if let Ok(mut kept) = KEPT.lock()
        && kept.len() < KEPT_SHAPES
    {
        kept.insert(key, sql.clone());
    }
    sql
}

/// `WITH p0 AS (…), p1 AS (…) <last>`: every INSERT runs exactly once, and foreign keys are
/// checked at the end of the whole statement, as at the end of each separate one.
fn build(verifications: usize, attempts: usize, extras: &[Stmt]) -> String {
    let (v_width, a_width) = (width(COLUMNS), width(ATTEMPT_COLUMNS));
    let mut inserts = vec![insert_rows(
        "verifications",
        COLUMNS,
        v_width,
        verifications,
    )];
    let mut offset = v_width * verifications;
    if attempts > 0 {
        inserts.push(shift_params(
            &insert_rows("verification_attempts", ATTEMPT_COLUMNS, a_width, attempts),
            offset,
        ));
        offset += a_width * attempts;
    }
    for s in extras {
        inserts.push(shift_params(&s.sql, offset));
        offset += s.params.len();
    }
    let last = inserts.pop().unwrap_or_default();
    if inserts.is_empty() {
        return last;
    }
    let ctes: Vec<String> = inserts
        .iter()
        .enumerate()
        .map(|(i, s)| format!("p{i} AS ({s})"))
        .collect();
    format!("WITH {} {last}", ctes.join(", "))
}

type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// A row's values bound straight into the query, borrowed from the results.
impl<'q> Binds<'q> for PgQuery<'q> {
    fn value<T>(self, v: T) -> Self
    where
        T: Into<Param> + sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres> + 'q,
    {
        self.bind(v)
    }

    fn json(self, v: Option<&'q serde_json::Value>) -> Self {
        self.bind(v.map(Json))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_attempts_and_extras_number_their_parameters_in_turn() {
        let extra = Stmt::new("INSERT INTO t (a, b) VALUES ($1, $2)")
            .bind(1i64)
            .bind(2i64);
        let sql = build(1, 2, &[extra]);
        assert!(
            sql.starts_with("WITH p0 AS (INSERT INTO verifications ("),
            "{sql}"
        );
        assert!(
            sql.contains("$28)), p1 AS (INSERT INTO verification_attempts ("),
            "{sql}"
        );
        assert!(sql.contains("($29,") && sql.contains(",$52))"), "{sql}");
        assert!(
            sql.ends_with(" INSERT INTO t (a, b) VALUES ($53, $54)"),
            "{sql}"
        );
        // One row alone is a plain INSERT.
        assert_eq!(
            build(1, 0, &[]),
            insert_rows("verifications", COLUMNS, 28, 1)
        );
    }

    #[test]
    fn a_shape_is_built_once() {
        let first = text(3, 4, &[]);
        assert!(Arc::ptr_eq(&first, &text(3, 4, &[])));
        assert_eq!(*first, *build(3, 4, &[]));
    }
}
