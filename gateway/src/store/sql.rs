//! What lets one piece of SQL serve both backends: a statement with backend-neutral
//! parameters ([`Stmt`]), a row both can read ([`Cols`]) and what each backend provides
//! ([`Db`], [`Backend`]). SQLite has no uuid, timestamp or json column type; it stores them as
//! text (timestamps fixed-width RFC 3339, so text order is time order), and only
//! `postgres/mod.rs` and `sqlite/mod.rs` know how.

use std::borrow::Cow;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{Decode, Postgres, Sqlite, Type};
use uuid::Uuid;

use super::identity::FaceTurn;
use super::ledger::LedgerStore;
use super::postgres::pgvector::Pgvector;
use super::{StoreError, StoreResult};

/// One parameter, owned, in the few types livegate stores.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Text(Option<String>),
    I64(Option<i64>),
    I32(Option<i32>),
    F64(Option<f64>),
    Bool(Option<bool>),
    Bytes(Option<Vec<u8>>),
    Uuid(Option<Uuid>),
    Time(Option<DateTime<Utc>>),
    Json(Option<serde_json::Value>),
}

macro_rules! param_from {
    ($($variant:ident($t:ty)),* $(,)?) => {$(
        impl From<$t> for Param {
            fn from(v: $t) -> Self {
                Param::$variant(Some(v.into()))
            }
        }
        impl From<Option<$t>> for Param {
            fn from(v: Option<$t>) -> Self {
                Param::$variant(v.map(Into::into))
            }
        }
    )*};
}

param_from!(
    Text(String),
    Text(&str),
    I64(i64),
    I32(i32),
    F64(f64),
    Bool(bool),
    Bytes(Vec<u8>),
    Uuid(Uuid),
    Time(DateTime<Utc>),
);

impl From<&String> for Param {
    fn from(v: &String) -> Self {
        Param::Text(Some(v.clone()))
    }
}

impl From<&Option<String>> for Param {
    fn from(v: &Option<String>) -> Self {
        Param::Text(v.clone())
    }
}

/// SQL with `$n` parameters (both sqlx drivers read them) and their values.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: Cow<'static, str>,
    pub params: Vec<Param>,
}

impl Stmt {
    pub fn new(sql: impl Into<Cow<'static, str>>) -> Self {
        Self {
            sql: sql.into(),
            params: Vec::new(),
        }
    }

    pub fn bind(mut self, p: impl Into<Param>) -> Self {
        self.params.push(p.into());
        self
    }

    pub fn json(mut self, v: Option<&serde_json::Value>) -> Self {
        self.params.push(Param::Json(v.cloned()));
        self
    }
}

/// Where a row's values go, in column order: a backend-neutral [`Stmt`] (owned copies), or a
/// Postgres query bound in place (`postgres/results.rs`). One list of a row's values
/// (`verifications.rs`, `bind_verification`) serves both.
pub(crate) trait Binds<'q>: Sized {
    fn value<T>(self, v: T) -> Self
    where
        T: Into<Param> + sqlx::Encode<'q, Postgres> + Type<Postgres> + 'q;
    fn json(self, v: Option<&'q serde_json::Value>) -> Self;
}

impl<'q> Binds<'q> for Stmt {
    fn value<T>(self, v: T) -> Self
    where
        T: Into<Param> + sqlx::Encode<'q, Postgres> + Type<Postgres> + 'q,
    {
        self.bind(v)
    }

    fn json(self, v: Option<&'q serde_json::Value>) -> Self {
        Stmt::json(self, v)
    }
}

/// `sql` with every `$n` outside quoted literals and identifiers shifted by `by`.
pub(crate) fn shift_params(sql: &str, by: usize) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut quote: Option<char> = None;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '$') if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    n.push(d);
                    chars.next();
                }
                // Digits only: the parse cannot fail, but keep the text if it did.
                match n.parse::<usize>() {
                    Ok(v) => out.push_str(&format!("${}", v.saturating_add(by))),
                    Err(_) => {
                        out.push('$');
                        out.push_str(&n);
                    }
                }
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out
}

/// A column type both drivers decode as is.
pub(crate) trait Plain:
    for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

impl<T> Plain for T where
    T: for<'r> Decode<'r, Postgres> + Type<Postgres> + for<'r> Decode<'r, Sqlite> + Type<Sqlite>
{
}

/// Reading a row the same way on both backends.
pub(crate) trait Cols {
    fn get<T: Plain>(&self, col: &str) -> StoreResult<T>;
    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>>;
    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>>;
    fn json(&self, col: &str) -> StoreResult<Option<serde_json::Value>>;

    fn uuid(&self, col: &str) -> StoreResult<Uuid> {
        self.opt_uuid(col)?
            .ok_or_else(|| StoreError::Other(format!("{col} is NULL")))
    }

    fn time(&self, col: &str) -> StoreResult<DateTime<Utc>> {
        self.opt_time(col)?
            .ok_or_else(|| StoreError::Other(format!("{col} is NULL")))
    }
}

/// Running statements on one backend's pool, or inside one of its transactions.
#[async_trait]
pub(crate) trait Db: Send + Sync {
    type Row: Cols + Send;
    type Tx: Send;

    async fn rows(&self, s: Stmt) -> StoreResult<Vec<Self::Row>>;
    /// Rows affected.
    async fn execute(&self, s: Stmt) -> StoreResult<u64>;
    /// A write transaction (on SQLite it holds the write lock from the start).
    async fn begin(&self) -> StoreResult<Self::Tx>;
    async fn commit(tx: Self::Tx) -> StoreResult<()>;
    async fn rows_in(tx: &mut Self::Tx, s: Stmt) -> StoreResult<Vec<Self::Row>>;
    async fn execute_in(tx: &mut Self::Tx, s: Stmt) -> StoreResult<u64>;

    async fn optional(&self, s: Stmt) -> StoreResult<Option<Self::Row>> {
        Ok(self.rows(s).await?.into_iter().next())
    }

    async fn row(&self, s: Stmt) -> StoreResult<Self::Row> {
        self.optional(s).await?.ok_or(StoreError::NotFound)
    }

    /// The statements in order, inside `tx`.
    async fn run_all(tx: &mut Self::Tx, stmts: Vec<Stmt>) -> StoreResult<()> {
        for s in stmts {
            Self::execute_in(tx, s).await?;
        }
        Ok(())
    }

    /// The statements in order, in a transaction of their own (one statement is atomic by
    /// itself: no BEGIN and COMMIT round trips around it).
    async fn execute_all(&self, mut stmts: Vec<Stmt>) -> StoreResult<()> {
        if stmts.len() == 1
            && let Some(one) = stmts.pop()
        {
            return self.execute(one).await.map(|_| ());
        }
        let mut tx = self.begin().await?;
        Self::run_all(&mut tx, stmts).await?;
        Self::commit(tx).await
    }
}

/// Nearest neighbours as `(id, cosine similarity)`, most similar first.
pub(crate) type Hits = Vec<(Uuid, f32)>;

/// What differs between the backends beyond the SQL dialect: migrations, write concurrency,
/// and the vector index only Postgres may have.
#[async_trait]
pub(crate) trait Backend: Db + LedgerStore + std::fmt::Debug + 'static {
    async fn run_migrations(&self) -> StoreResult<()>;

    /// How many group-commit workers write at once (SQLite has one writer).
    fn writers(&self) -> usize;

    fn pgvector(&self) -> Option<&Pgvector> {
        None
    }

    /// A turn named `key` that every instance on this database waits for; the default (one
    /// process per database, as with SQLite) is no wait.
    async fn turn(&self, key: &str) -> StoreResult<FaceTurn> {
        let _ = key;
        Ok(FaceTurn::default())
    }

    /// The turn named `key` if no instance holds it now; `None` when one does. Without a
    /// shared lock (SQLite: one process per database) it is always free.
    async fn try_turn(&self, key: &str) -> StoreResult<Option<FaceTurn>> {
        let _ = key;
        Ok(Some(FaceTurn::default()))
    }

    /// Makes sure the month partitions ahead of `now` exist; nothing without partitions.
    async fn ensure_partitions(&self, now: DateTime<Utc>) -> StoreResult<()> {
        let _ = now;
        Ok(())
    }

    /// Drops whole months of verifications that ended at or before `cutoff`; the
    /// verifications and the faces dropped with them (none without partitions: SQLite deletes
    /// row by row).
    async fn drop_partitions_before(&self, cutoff: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        let _ = cutoff;
        Ok((0, 0))
    }

    /// Runs a nearest-neighbour `sql` (`$1` scope, `$2` query vector, `$3` k) on the vector
    /// index, as `(id, cosine similarity)`.
    async fn nearest(&self, sql: &str, scope: &str, query: &[f32], k: usize) -> StoreResult<Hits> {
        let _ = (sql, scope, query, k);
        Err(StoreError::Other(
            "this store has no vector index".to_owned(),
        ))
    }
}

/// `Db` for a store holding an sqlx `pool`, the same for both drivers. The invocation says how
/// its write transactions begin and how the three types SQLite lacks bind there.
macro_rules! sqlx_db {
    (
        $store:ty, $driver:ty, $row:ty, $args:ty,
        begin: |$pool:ident| $begin:expr,
        uuid: |$u:ident| $uuid:expr,
        time: |$t:ident| $time:expr,
        json: |$j:ident| $json:expr $(,)?
    ) => {
        fn query<'q>(sql: &'q str, params: Vec<Param>) -> sqlx::query::Query<'q, $driver, $args> {
            bind_all(sqlx::query(sql), params)
        }

        /// `params` bound after what `q` already binds.
        pub(crate) fn bind_all<'q>(
            q: sqlx::query::Query<'q, $driver, $args>,
            params: Vec<Param>,
        ) -> sqlx::query::Query<'q, $driver, $args> {
            params.into_iter().fold(q, |q, p| match p {
                Param::Text(v) => q.bind(v),
                Param::I64(v) => q.bind(v),
                Param::I32(v) => q.bind(v),
                Param::F64(v) => q.bind(v),
                Param::Bool(v) => q.bind(v),
                Param::Bytes(v) => q.bind(v),
                Param::Uuid($u) => q.bind($uuid),
                Param::Time($t) => q.bind($time),
                Param::Json($j) => q.bind($json),
            })
        }

        #[async_trait::async_trait]
        impl $crate::store::sql::Db for $store {
            type Row = $row;
            type Tx = sqlx::Transaction<'static, $driver>;

            async fn rows(&self, s: Stmt) -> StoreResult<Vec<$row>> {
                Ok(query(&s.sql, s.params).fetch_all(&self.pool).await?)
            }

            async fn execute(&self, s: Stmt) -> StoreResult<u64> {
                let done = query(&s.sql, s.params).execute(&self.pool).await?;
                Ok(done.rows_affected())
            }

            async fn begin(&self) -> StoreResult<Self::Tx> {
                let $pool = &self.pool;
                Ok($begin.await?)
            }

            async fn commit(tx: Self::Tx) -> StoreResult<()> {
                Ok(tx.commit().await?)
            }

            async fn rows_in(tx: &mut Self::Tx, s: Stmt) -> StoreResult<Vec<$row>> {
                Ok(query(&s.sql, s.params).fetch_all(&mut **tx).await?)
            }

            async fn execute_in(tx: &mut Self::Tx, s: Stmt) -> StoreResult<u64> {
                let done = query(&s.sql, s.params).execute(&mut **tx).await?;
                Ok(done.rows_affected())
            }
        }
    };
}

pub(crate) use sqlx_db;

#[cfg(test)]
mod shift_tests {
    use super::*;

    #[test]
    fn params_shift_outside_literals_only() {
        assert_eq!(
            shift_params("INSERT INTO t (a, b, c) VALUES ($1, '$2', $10::int)", 3),
            "INSERT INTO t (a, b, c) VALUES ($4, '$2', $13::int)"
        );
        assert_eq!(
            shift_params("VALUES ('it''s $1', $1)", 1),
            "VALUES ('it''s $1', $2)"
        );
    }
}
