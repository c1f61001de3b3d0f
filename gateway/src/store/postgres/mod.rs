//! The Postgres store: its pool and connection options, how a backend-neutral statement binds
//! here (`uuid`, `timestamptz`, `jsonb` natively), the ledger (`ledger.rs`, row locks in
//! tenant order) and pgvector (`pgvector.rs`).

mod ledger;
mod partitions;
pub(crate) mod pgvector;
mod results;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

use crate::store::identity::FaceTurn;
use crate::store::sql::{Backend, Cols, Hits, Param, Plain, Stmt, sqlx_db};
use crate::store::{StoreError, StoreResult};
use pgvector::Pgvector;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections that hold advisory locks (face-check turns), apart so that waiting for a
    /// turn never takes a connection the commits need.
    locks: PgPool,
    /// Set by `migrate` when the server has pgvector (`pgvector.rs`).
    pgvector: Arc<OnceLock<Option<Pgvector>>>,
    /// Connections the results writers keep between batches (`writer`, `keep_writer`).
    held: Arc<Held>,
}

/// Pooled connections kept out of the pool between uses, each with when it was last used:
/// sqlx tests a connection with a round trip every time it goes back to the pool, which for the
/// results writers was one more round trip per batch.
#[derive(Debug, Default)]
struct Held(std::sync::Mutex<Vec<(PoolConnection<Postgres>, Instant)>>);

/// Connections kept at most: one per results writer (`Backend::writers`).
const HELD: usize = 4;

/// How long a pooled connection may sit idle before it is pinged ahead of its next use.
const PING_WHEN_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

impl PgStore {
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts: PgConnectOptions = url.parse()?;
        Self::with_options(opts).await
    }

    /// A store confined to its own schema (created if needed): isolated test databases and
    /// several deployments sharing one database.
    pub async fn connect_in_schema(url: &str, schema: &str) -> StoreResult<Self> {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(StoreError::Other(format!("invalid schema name {schema:?}")));
        }
        let base: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        Self::with_options(base.options([("search_path", schema)])).await
    }

    async fn with_options(opts: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            // A ping on every acquire is a round trip per group commit. A connection used less
            // than a second ago is pinged by that use; one idle longer (a restarted server may
            // have dropped it) is pinged first. A dead one is still caught by the query that
            // meets it, and writes retry (`limits.commit_grace_ms`).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_WHEN_IDLE {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(opts.clone())
            .await?;
        let locks = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_lazy_with(opts);
        Ok(Self {
            pool,
            locks,
            pgvector: Arc::default(),
            held: Arc::default(),
        })
    }

    /// A connection for a results batch: the one a writer kept last (tested first if it sat
    /// idle as long as the pool would test it), else one from the pool.
    async fn writer(&self) -> StoreResult<PoolConnection<Postgres>> {
        let kept = self.held.0.lock().ok().and_then(|mut held| held.pop());
        if let Some((mut conn, since)) = kept {
            if since.elapsed() < PING_WHEN_IDLE || sqlx::Connection::ping(&mut *conn).await.is_ok()
            {
                return Ok(conn);
            }
            // Gone (a restarted server): so, likely, are the others kept with it.
            self.drop_writers();
        }
        Ok(self.pool.acquire().await?)
    }

    /// Keep a connection whose batch went through, for the next batch.
    fn keep_writer(&self, conn: PoolConnection<Postgres>) {
        if let Ok(mut held) = self.held.0.lock()
            && held.len() < HELD
        {
            held.push((conn, Instant::now()));
        }
    }

    /// Hand every kept connection back to the pool, which tests each.
    fn drop_writers(&self) {
        if let Ok(mut held) = self.held.0.lock() {
            held.clear();
        }
    }
}

impl Cols for PgRow {
    fn get<T: Plain>(&self, col: &str) -> StoreResult<T> {
        Ok(self.try_get(col)?)
    }

    fn opt_uuid(&self, col: &str) -> StoreResult<Option<Uuid>> {
        Ok(self.try_get(col)?)
    }

    fn opt_time(&self, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
        Ok(self.try_get(col)?)
    }

    fn json(&self, col: &str) -> StoreResult<Option<serde_json::Value>> {
        Ok(self
            .try_get::<Option<Json<serde_json::Value>>, _>(col)?
            .map(|j| j.0))
    }
}

sqlx_db!(
    PgStore, Postgres, PgRow, PgArguments,
    begin: |pool| pool.begin(),
    uuid: |v| v,
    time: |v| v,
    json: |v| v.map(Json),
);

#[async_trait]
impl Backend for PgStore {
    async fn run_migrations(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        partitions::ensure_ahead(&self.pool, Utc::now()).await?;
        if self.pgvector.get().is_none() {
            let found = pgvector::enable(&self.pool).await?;
            let _ = self.pgvector.set(found);
        }
        Ok(())
    }

    fn writers(&self) -> usize {
        4
    }

    async fn turn(&self, key: &str) -> StoreResult<FaceTurn> {
        let mut conn = self.locks.acquire().await?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .execute(&mut *conn)
            .await?;
        Ok(FaceTurn::postgres(conn, key.to_owned()))
    }

    async fn try_turn(&self, key: &str) -> StoreResult<Option<FaceTurn>> {
        let mut conn = self.locks.acquire().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        Ok(got.then(|| FaceTurn::postgres(conn, key.to_owned())))
    }

    async fn ensure_partitions(&self, now: DateTime<Utc>) -> StoreResult<()> {
        partitions::ensure_ahead(&self.pool, now).await
    }

    async fn drop_partitions_before(&self, cutoff: DateTime<Utc>) -> StoreResult<(u64, u64)> {
        partitions::drop_before(&self.pool, cutoff).await
    }

    fn pgvector(&self) -> Option<&Pgvector> {
        self.pgvector.get().and_then(Option::as_ref)
    }

    async fn nearest(&self, sql: &str, scope: &str, query: &[f32], k: usize) -> StoreResult<Hits> {
        match self.pgvector() {
            Some(pgv) => pgvector::nearest(&self.pool, pgv, sql, scope, query, k).await,
            None => Err(StoreError::Other("pgvector is not enabled".to_owned())),
        }
    }
}
