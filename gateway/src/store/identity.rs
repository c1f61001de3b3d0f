//! Face identity rows (`migrations/*/0003_identity.sql`): each verification's face embedding
//! and each tenant's blocklist, for every [`Backend`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livegate_engine::server::{embedding_from_bytes, embedding_to_bytes};
use uuid::Uuid;

use super::postgres::pgvector::{Pgvector, literal};
use super::sql::{Backend, Cols, Stmt};
use super::{StoreError, StoreResult};
use livegate_engine::EMBEDDING_DIM;

/// A verification's face as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationFace {
    /// Store-assigned, increasing: what an incremental read resumes after.
    pub seq: i64,
    pub verification_id: Uuid,
    pub embedding: Vec<f32>,
    pub approved: bool,
}

/// A tenant's turn at its face checks across every instance sharing the database: held from
/// the search to the commit of the face it found. On Postgres it is an advisory lock on a
/// connection of its own; elsewhere a process-wide turn is enough (one SQLite writer).
#[derive(Debug, Default)]
pub struct FaceTurn {
    held: Option<(sqlx::pool::PoolConnection<sqlx::Postgres>, String)>,
}

impl FaceTurn {
    pub(crate) fn postgres(conn: sqlx::pool::PoolConnection<sqlx::Postgres>, key: String) -> Self {
        Self {
            held: Some((conn, key)),
        }
    }

    /// Gives the turn back.
    pub async fn release(mut self) {
        if let Some((mut conn, key)) = self.held.take() {
            let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
                .bind(&key)
                .execute(&mut *conn)
                .await;
            if unlocked.is_err() {
                // A connection that may still hold the lock must not go back to the pool.
                drop(conn.detach());
            }
        }
    }
}

impl Drop for FaceTurn {
    fn drop(&mut self) {
        // Not released (a failure on the way): closing the connection ends its session and
        // so its lock.
        if let Some((conn, _)) = self.held.take() {
            drop(conn.detach());
        }
    }
}

/// A blocklisted face.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockedFace {
    pub verification_id: Uuid,
    pub embedding: Vec<f32>,
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The tenant's approved faces stored after `after_seq`, in `seq` order.
    async fn approved_faces_after(
        &self,
        tenant_id: &str,
        after_seq: i64,
    ) -> StoreResult<Vec<VerificationFace>>;
    /// The stored face of one of the tenant's verifications.
    async fn verification_face(
        &self,
        tenant_id: &str,
        verification_id: Uuid,
    ) -> StoreResult<VerificationFace>;
    /// Adds to the tenant's blocklist; `Conflict` when it is already there.
    async fn insert_blocked(&self, tenant_id: &str, face: &BlockedFace) -> StoreResult<()>;
    /// `NotFound` when it was not on the blocklist.
    async fn delete_blocked(&self, tenant_id: &str, verification_id: Uuid) -> StoreResult<()>;
    /// The tenant's whole blocklist, oldest first.
    async fn blocklist(&self, tenant_id: &str) -> StoreResult<Vec<BlockedFace>>;
    /// Waits for the tenant's turn at its face checks (see [`FaceTurn`]).
    async fn face_turn(&self, tenant_id: &str) -> StoreResult<FaceTurn>;
    /// True when the database searches embeddings itself (pgvector): a tenant's approved
    /// faces are then searched there once they are many.
    fn has_vector_index(&self) -> bool;
    /// The tenant's `k` approved faces nearest to `query` by the database's index, most
    /// similar first, as `(verification id, cosine similarity)`. Only called when
    /// [`IdentityStore::has_vector_index`] is true.
    async fn nearest_approved(
        &self,
        tenant_id: &str,
        query: &[f32],
        k: usize,
    ) -> StoreResult<Vec<(Uuid, f32)>>;
}

fn vector(bytes: &[u8]) -> StoreResult<Vec<f32>> {
    embedding_from_bytes(bytes).map_err(|e| StoreError::Other(e.to_string()))
}

fn verification_face(r: &impl Cols) -> StoreResult<VerificationFace> {
    Ok(VerificationFace {
        seq: r.get("seq")?,
        verification_id: r.uuid("verification_id")?,
        embedding: vector(&r.get::<Vec<u8>>("embedding")?)?,
        approved: r.get("approved")?,
    })
}

const FACE_COLUMNS: &str = "seq, verification_id, embedding, approved";

/// The row of a verification's face; with pgvector the embedding also goes into the indexed
/// vector column.
pub(crate) fn insert_face(
    pgvector: Option<&Pgvector>,
    tenant_id: &str,
    verification_id: Uuid,
    embedding: &[f32],
    approved: bool,
) -> Stmt {
    let indexed = pgvector.filter(|_| embedding.len() == EMBEDDING_DIM);
    let (vec_column, vec_param) = match indexed {
        Some(pgv) => (", embedding_vec", format!(", {}", pgv.param(6))),
        None => ("", String::new()),
    };
    let sql = format!(
        "INSERT INTO verification_faces (verification_id, tenant_id, embedding, \
         approved, created_at{vec_column}) VALUES ($1, $2, $3, $4, $5{vec_param})"
    );
    let s = Stmt::new(sql)
        .bind(verification_id)
        .bind(tenant_id)
        .bind(embedding_to_bytes(embedding))
        .bind(approved)
        .bind(Utc::now());
    match indexed {
        Some(_) => s.bind(literal(embedding)),
        None => s,
    }
}

#[async_trait]
impl<B: Backend> IdentityStore for B {
    async fn face_turn(&self, tenant_id: &str) -> StoreResult<FaceTurn> {
        self.turn(&format!("livegate:faces:{tenant_id}")).await
    }

    fn has_vector_index(&self) -> bool {
        self.pgvector().is_some()
    }

    async fn nearest_approved(
        &self,
        tenant_id: &str,
        query: &[f32],
        k: usize,
    ) -> StoreResult<Vec<(Uuid, f32)>> {
        let Some(pgv) = self.pgvector() else {
            return Err(StoreError::Other("pgvector is not enabled".to_owned()));
        };
        let distance = format!("embedding_vec {} {}", pgv.cosine_op(), pgv.param(2));
        // `approved` matches the partial index's predicate, so the index can serve it.
        let sql = format!(
            "SELECT verification_id AS id, {distance} AS distance FROM verification_faces \
             WHERE tenant_id = $1 AND approved AND embedding_vec IS NOT NULL \
             ORDER BY {distance} LIMIT $3"
        );
        self.nearest(&sql, tenant_id, query, k).await
    }

    async fn approved_faces_after(
        &self,
        tenant_id: &str,
        after_seq: i64,
    ) -> StoreResult<Vec<VerificationFace>> {
        let sql = format!(
            "SELECT {FACE_COLUMNS} FROM verification_faces \
             WHERE tenant_id = $1 AND approved AND seq > $2 ORDER BY seq"
        );
        let rows = self
            .rows(Stmt::new(sql).bind(tenant_id).bind(after_seq))
            .await?;
        rows.iter().map(verification_face).collect()
    }

    async fn verification_face(
        &self,
        tenant_id: &str,
        verification_id: Uuid,
    ) -> StoreResult<VerificationFace> {
        let sql = format!(
            "SELECT {FACE_COLUMNS} FROM verification_faces \
             WHERE tenant_id = $1 AND verification_id = $2"
        );
        let s = Stmt::new(sql).bind(tenant_id).bind(verification_id);
        verification_face(&self.row(s).await?)
    }

    async fn insert_blocked(&self, tenant_id: &str, f: &BlockedFace) -> StoreResult<()> {
        let s = Stmt::new(
            "INSERT INTO blocklist_faces (tenant_id, verification_id, embedding, reason, \
             created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(tenant_id)
        .bind(f.verification_id)
        .bind(embedding_to_bytes(&f.embedding))
        .bind(&f.reason)
        .bind(f.created_at);
        self.execute(s).await.map(drop)
    }

    async fn delete_blocked(&self, tenant_id: &str, verification_id: Uuid) -> StoreResult<()> {
        let s =
            Stmt::new("DELETE FROM blocklist_faces WHERE tenant_id = $1 AND verification_id = $2")
                .bind(tenant_id)
                .bind(verification_id);
        match self.execute(s).await? {
            0 => Err(StoreError::NotFound),
            _ => Ok(()),
        }
    }

    async fn blocklist(&self, tenant_id: &str) -> StoreResult<Vec<BlockedFace>> {
        let s = Stmt::new(
            "SELECT verification_id, embedding, reason, created_at FROM blocklist_faces \
             WHERE tenant_id = $1 ORDER BY created_at, verification_id",
        )
        .bind(tenant_id);
        self.rows(s)
            .await?
            .iter()
            .map(|r| {
                Ok(BlockedFace {
                    verification_id: r.uuid("verification_id")?,
                    embedding: vector(&r.get::<Vec<u8>>("embedding")?)?,
                    reason: r.get("reason")?,
                    created_at: r.time("created_at")?,
                })
            })
            .collect()
    }
}
