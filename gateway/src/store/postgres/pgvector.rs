//! pgvector on Postgres: when the server has the `vector` extension, enrolled faces and
//! verification faces also keep their embedding as a `vector(128)` with an HNSW index
//! (cosine), and large collections / tenants are searched there (`FaceStore::nearest_faces`,
//! `IdentityStore::nearest_approved`) instead of in each process's memory.
//!
//! The extension is optional: a Postgres without it works as before (the in-process index),
//! with one warning at startup. The BYTEA `embedding` column stays the source of truth (the
//! same bytes on both backends); `embedding_vec` is derived from it, and rows written before
//! the extension was there are filled in when it appears.
//!
//! The extension lives in one schema of the database (`public` when livegate creates it), while
//! livegate's tables may live in another (`connect_in_schema`), so every use of its type,
//! operator class and operator is qualified with that schema.

use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use crate::store::{StoreError, StoreResult};
use livegate_engine::EMBEDDING_DIM;
use livegate_engine::server::embedding_from_bytes;

/// Taken around the setup: several processes (or test schemas) start at once, and
/// `CREATE EXTENSION` / `ADD COLUMN` must not race. Any constant unique to livegate.
const SETUP_LOCK: i64 = 0x6c69_7665_7665_6374;

/// HNSW candidate list size while searching; pgvector's default is 40, too few for a
/// recall close to the exact scan on 128-d embeddings (README, "Identify latency").
pub(crate) const EF_SEARCH: u32 = 128;

/// A found and usable pgvector: the schema its objects live in, quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pgvector {
    schema: String,
    /// 0.8 and later filter during the graph walk (`hnsw.iterative_scan`); earlier versions
    /// may return fewer than `k` rows of one collection when others crowd the candidates.
    iterative_scan: bool,
}

impl Pgvector {
    /// `"schema".vector`
    pub(crate) fn vector_type(&self) -> String {
        format!("{}.vector", self.schema)
    }

    /// The cosine distance operator, schema-qualified.
    pub(crate) fn cosine_op(&self) -> String {
        format!("OPERATOR({}.<=>)", self.schema)
    }

    /// `$n` as a vector: the parameter is bound as its text form ([`literal`]).
    pub(crate) fn param(&self, n: usize) -> String {
        format!("${n}::text::{}", self.vector_type())
    }
}

/// A vector's text form, `[x1,x2,...]` (Rust's shortest round-trip decimals), as pgvector
/// reads it.
pub fn literal(v: &[f32]) -> String {
    let mut s = String::with_capacity(v.len() * 12 + 2);
    s.push('[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

/// `major.minor[.patch]` at least `min`.
fn at_least(version: &str, min: (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Finds (or creates) the extension and adds the vector columns and indexes to the current
/// schema's tables. `None` (with a warning) when the server has no pgvector or livegate may not
/// create it: searches then stay in process.
pub(crate) async fn enable(pool: &PgPool) -> StoreResult<Option<Pgvector>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(SETUP_LOCK)
        .execute(&mut *tx)
        .await?;
    let Some(schema) = extension_schema(&mut tx).await? else {
        return Ok(None);
    };
    let version: String =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_one(&mut *tx)
            .await?;
    let pgv = Pgvector {
        schema: quote_ident(&schema),
        iterative_scan: at_least(&version, (0, 8)),
    };
    let (ty, dim) = (pgv.vector_type(), EMBEDDING_DIM);
    let ops = format!("{}.vector_cosine_ops", pgv.schema);
    for ddl in [
        format!("ALTER TABLE faces ADD COLUMN IF NOT EXISTS embedding_vec {ty}({dim})"),
        format!(
            "CREATE INDEX IF NOT EXISTS faces_embedding_hnsw ON faces \
             USING hnsw (embedding_vec {ops})"
        ),
        format!(
            "ALTER TABLE verification_faces ADD COLUMN IF NOT EXISTS embedding_vec {ty}({dim})"
        ),
        format!(
            "CREATE INDEX IF NOT EXISTS verification_faces_embedding_hnsw ON verification_faces \
             USING hnsw (embedding_vec {ops}) WHERE approved"
        ),
    ] {
        sqlx::query(&ddl).execute(&mut *tx).await?;
    }
    backfill(&mut tx, &pgv, "faces", "id").await?;
    backfill(&mut tx, &pgv, "verification_faces", "seq").await?;
    tx.commit().await?;
    tracing::info!(schema = %schema, version = %version, "pgvector found: large face sets are searched in Postgres");
    Ok(Some(pgv))
}

/// The schema of an installed `vector` extension, installing it into `public` when the server
/// has it available. `None` when it is not available or cannot be installed.
async fn extension_schema(tx: &mut Transaction<'_, Postgres>) -> StoreResult<Option<String>> {
    let installed: Option<String> = sqlx::query_scalar(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'vector'",
    )
    .fetch_optional(&mut **tx)
    .await?;
    if installed.is_some() {
        return Ok(installed);
    }
    let available: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector')",
    )
    .fetch_one(&mut **tx)
    .await?;
    if !available {
        tracing::warn!(
            "pgvector is not installed on this Postgres server: face searches of large \
             collections use the in-process HNSW index (install postgresql-15-pgvector, or the \
             package for your server's version, to search in Postgres)"
        );
        return Ok(None);
    }
    // A failed CREATE would abort the whole transaction: try it under a savepoint.
    sqlx::query("SAVEPOINT create_vector")
        .execute(&mut **tx)
        .await?;
    match sqlx::query("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
        .execute(&mut **tx)
        .await
    {
        Ok(_) => Ok(Some("public".to_owned())),
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT create_vector")
                .execute(&mut **tx)
                .await?;
            tracing::warn!(
                error = %e,
                "pgvector is available but livegate could not create the extension (run \
                 `CREATE EXTENSION vector` as a superuser once): face searches of large \
                 collections use the in-process HNSW index"
            );
            Ok(None)
        }
    }
}

/// Fills `embedding_vec` of rows written while the extension was missing.
async fn backfill(
    tx: &mut Transaction<'_, Postgres>,
    pgv: &Pgvector,
    table: &str,
    key: &str,
) -> StoreResult<()> {
    let rows = sqlx::query(&format!(
        "SELECT {key} AS key, embedding FROM {table} \
         WHERE embedding IS NOT NULL AND embedding_vec IS NULL"
    ))
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let update = format!(
        "UPDATE {table} SET embedding_vec = {} WHERE {key} = $2",
        pgv.param(1)
    );
    let mut filled = 0usize;
    for r in &rows {
        let bytes: Vec<u8> = r.try_get("embedding")?;
        let v = embedding_from_bytes(&bytes).map_err(|e| StoreError::Other(e.to_string()))?;
        // Embeddings of another length (none are written today) stay out of the index.
        if v.len() != EMBEDDING_DIM {
            continue;
        }
        let q = sqlx::query(&update).bind(literal(&v));
        let q = if key == "id" {
            q.bind(r.try_get::<Uuid, _>("key")?)
        } else {
            q.bind(r.try_get::<i64, _>("key")?)
        };
        q.execute(&mut **tx).await?;
        filled += 1;
    }
    tracing::info!(
        table,
        rows = filled,
        "embeddings copied into the pgvector column"
    );
    Ok(())
}

/// Runs a nearest-neighbour query with the search settings it needs: `ef_search`, and
/// iterative scans so that a filter (one collection, one tenant) still yields `k` rows when
/// the graph's first candidates belong to others.
pub(crate) async fn nearest(
    pool: &PgPool,
    pgv: &Pgvector,
    sql: &str,
    scope: &str,
    query: &[f32],
    k: usize,
) -> StoreResult<Vec<(Uuid, f32)>> {
    let mut tx = pool.begin().await?;
    let ef = EF_SEARCH
        .max(u32::try_from(k).unwrap_or(u32::MAX))
        .to_string();
    let settings = if pgv.iterative_scan {
        "SELECT set_config('hnsw.ef_search', $1, true), \
                set_config('hnsw.iterative_scan', 'strict_order', true)"
    } else {
        "SELECT set_config('hnsw.ef_search', $1, true)"
    };
    sqlx::query(settings).bind(ef).execute(&mut *tx).await?;
    let rows = sqlx::query(sql)
        .bind(scope)
        .bind(literal(query))
        .bind(i64::try_from(k).unwrap_or(i64::MAX))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    rows.iter()
        .map(|r| {
            let distance: f64 = r.try_get("distance")?;
            Ok((r.try_get("id")?, (1.0 - distance) as f32))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_round_trips() {
        assert_eq!(literal(&[0.5, -1.0, 1e-7]), "[0.5,-1,0.0000001]");
        let back: Vec<f32> = literal(&[0.1, 0.2])
            .trim_matches(['[', ']'])
            .split(',')
            .filter_map(|x| x.parse().ok())
            .collect();
        assert_eq!(back, vec![0.1, 0.2]);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert!(at_least("0.8.0", (0, 8)) && at_least("1.0", (0, 8)));
        assert!(!at_least("0.7.4", (0, 8)) && !at_least("junk", (0, 8)));
    }
}
