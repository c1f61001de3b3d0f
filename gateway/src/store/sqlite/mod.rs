//! The SQLite store: its pool (WAL, one connection for in-memory databases), how a
//! backend-neutral statement binds here (uuid, timestamp and json as text), and the ledger
//! (`ledger.rs`, `BEGIN IMMEDIATE` transactions).

mod ledger;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use crate::store::sql::{Backend, Cols, Db, Param, Plain, Stmt};
use crate::store::{StoreError, StoreResult};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// Every write transaction takes the write lock first, so a read-then-write cannot fail on a
/// lock upgrade under concurrent writers.
const BEGIN: &str = "BEGIN IMMEDIATE";

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        // An in-memory database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") || url.contains("mode=memory") {
            1
        } else {
            8
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }

    async fn begin(&self) -> StoreResult<Transaction<'static, Sqlite>> {
        Ok(self.pool.begin_with(BEGIN).await?)
    }
}

/// Fixed width (microseconds, `Z`), so text order is time order.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(format!("bad timestamp {s:?}: {e}")))
}

fn query(sql: &str, params: Vec<Param>) -> Query<'_, Sqlite, SqliteArguments<'_>> {
    params.into_iter().fold(sqlx::query(sql), |q, p| match p {
        Param::Text(v) => q.bind(v),
        Param::I64(v) => q.bind(v),
        Param::I32(v) => q.bind(v),
        Param::F64(v) => q.bind(v),
        Param::Bool(v) => q.bind(v),
        Param::Bytes(v) => q.bind(v),
        Param::Uuid(v) => q.bind(v.map(|u| u.to_string())),
        Param::Time(v) => q.bind(v.as_ref().map(ts)),
        Param::Json(v) => q.bind(v.map(|j| j.to_string())),
    })
}

/// Runs `s` inside `tx`; rows affected.
async fn execute_in(tx: &mut Transaction<'_, Sqlite>, s: Stmt) -> StoreResult<u64> {
    Ok(query(&s.sql, s.params)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

/// The rows of `s`, inside `tx`.
async fn rows_in(tx: &mut Transaction<'_, Sqlite>, s: Stmt) -> StoreResult<Vec<SqliteRow>> {
    Ok(query(&s.sql, s.params).fetch_all(&mut **tx).await?)
}

impl Cols for SqliteRow {
    fn get<T: Plain>(&self, col: &str) -> StoreResult<T> {
        Ok(self.try_get(col)?)
    }

    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        self.try_get::<Option<String>, _>(col)?
            .map(|s| {
                Uuid::parse_str(&s).map_err(|e| StoreError::Other(format!("bad uuid {s:?}: {e}")))
            })
            .transpose()
    }

    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        self.try_get::<Option<String>, _>(col)?
            .map(|s| parse_ts(&s))
            .transpose()
    }

    fn json(&self, col: &str) -> StoreResult<Option<serde_json::Value>> {
        self.try_get::<Option<String>, _>(col)?
            .map(|s| {
                serde_json::from_str(&s).map_err(|e| StoreError::Other(format!("bad json: {e}")))
            })
            .transpose()
    }
}

#[async_trait]
impl Db for SqliteStore {
    type Row = SqliteRow;

    async fn rows(&self, s: Stmt) -> StoreResult<Vec<SqliteRow>> {
        Ok(query(&s.sql, s.params).fetch_all(&self.pool).await?)
    }

    async fn execute(&self, s: Stmt) -> StoreResult<u64> {
        Ok(query(&s.sql, s.params)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn execute_all(&self, stmts: Vec<Stmt>) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for s in stmts {
            execute_in(&mut tx, s).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Backend for SqliteStore {
    async fn run_migrations(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    fn writers(&self) -> usize {
        1
    }
}
