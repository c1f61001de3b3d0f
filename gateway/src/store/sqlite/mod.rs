//! The SQLite store: its pool (WAL, one connection for in-memory databases), how a
//! backend-neutral statement binds here (uuid, timestamp and json as text), and the ledger
//! (`ledger.rs`, `BEGIN IMMEDIATE` transactions).

mod ledger;

use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqlitePool};
use uuid::Uuid;

use crate::store::sql::{Backend, Cols, Param, Plain, Stmt, sqlx_db};
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

sqlx_db!(
    SqliteStore, Sqlite, SqliteRow, SqliteArguments<'q>,
    begin: |pool| pool.begin_with(BEGIN),
    uuid: |v| v.map(|u| u.to_string()),
    time: |v| v.as_ref().map(ts),
    json: |v| v.map(|j| j.to_string()),
);

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
