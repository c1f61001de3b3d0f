//! The engine's collections server stores its collections, keys and faces in livegate's own
//! database: [`FaceStore`] for both backends (tables of `migrations/*/0002_collections.sql`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use livegate_engine::server::{
    Collection, CollectionKey, FacePage, FaceRecord, FaceStore, FaceStoreError, FaceStoreResult,
    KeyMode, embedding_from_bytes, embedding_to_bytes,
};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use uuid::Uuid;

use super::pgvector::{self, literal};
use super::{PgStore, SqliteStore, Store, StoreError, StoreResult};
use livegate_engine::EMBEDDING_DIM;

/// Opens the database named by `url` (as `store::connect`), applies every migration and
/// returns it as the collections server's store.
pub async fn open(url: &str) -> StoreResult<Arc<dyn FaceStore>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let s = PgStore::connect(url).await?;
        s.migrate().await?;
        Ok(Arc::new(s))
    } else if url.starts_with("sqlite:") {
        let s = SqliteStore::connect(url).await?;
        s.migrate().await?;
        Ok(Arc::new(s))
    } else {
        Err(StoreError::Other(format!(
            "unsupported DATABASE_URL scheme in {:?}: use postgres://… or sqlite:…",
            super::redact_url(url)
        )))
    }
}

/// The gateway's classification of database errors (unique violation = conflict), in the
/// engine's error type. A free function: neither type is this crate's, so no `From`.
fn db(e: sqlx::Error) -> FaceStoreError {
    match StoreError::from(e) {
        StoreError::NotFound => FaceStoreError::NotFound,
        StoreError::Conflict(m) => FaceStoreError::Conflict(m),
        StoreError::Other(m) => FaceStoreError::Other(m),
    }
}

/// Binding a key to a collection that does not exist is a `NotFound`, not a database fault.
fn bind_error(e: sqlx::Error) -> FaceStoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_foreign_key_violation() => FaceStoreError::NotFound,
        _ => db(e),
    }
}

fn mode(s: &str) -> FaceStoreResult<KeyMode> {
    KeyMode::parse(s).ok_or_else(|| FaceStoreError::Other(format!("bad key mode {s:?}")))
}

const FACE_COLUMNS: &str = "id, collection_id, external_id, metadata, liveness_score, \
     bbox_x1, bbox_y1, bbox_x2, bbox_y2, confidence, quality, image_sha256, embedding, created_at";

// ---- Postgres --------------------------------------------------------------------------

fn pg_face(row: &PgRow) -> FaceStoreResult<FaceRecord> {
    let embedding: Option<Vec<u8>> = row.try_get("embedding").map_err(db)?;
    Ok(FaceRecord {
        id: row.try_get("id").map_err(db)?,
        collection_id: row.try_get("collection_id").map_err(db)?,
        external_id: row.try_get("external_id").map_err(db)?,
        metadata: row
            .try_get::<Option<Json<serde_json::Value>>, _>("metadata")
            .map_err(db)?
            .map(|j| j.0),
        liveness_score: row.try_get("liveness_score").map_err(db)?,
        bbox: [
            row.try_get("bbox_x1").map_err(db)?,
            row.try_get("bbox_y1").map_err(db)?,
            row.try_get("bbox_x2").map_err(db)?,
            row.try_get("bbox_y2").map_err(db)?,
        ],
        confidence: row.try_get("confidence").map_err(db)?,
        quality: row.try_get("quality").map_err(db)?,
        image_sha256: row.try_get("image_sha256").map_err(db)?,
        embedding: embedding.as_deref().map(embedding_from_bytes).transpose()?,
        created_at: row.try_get("created_at").map_err(db)?,
    })
}

#[async_trait]
impl FaceStore for PgStore {
    async fn create_collection(&self, id: &str) -> FaceStoreResult<Collection> {
        sqlx::query(
            "INSERT INTO collections (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(Utc::now())
        .execute(self.pool())
        .await
        .map_err(db)?;
        let row = sqlx::query("SELECT id, created_at FROM collections WHERE id = $1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
        Ok(Collection {
            id: row.try_get("id").map_err(db)?,
            created_at: row.try_get("created_at").map_err(db)?,
        })
    }

    async fn bind_key(
        &self,
        collection_id: &str,
        key_hash: &str,
        mode: KeyMode,
    ) -> FaceStoreResult<()> {
        sqlx::query(
            "INSERT INTO collection_keys (key_sha256, collection_id, mode, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(key_hash)
        .bind(collection_id)
        .bind(mode.as_str())
        .bind(Utc::now())
        .execute(self.pool())
        .await
        .map_err(bind_error)?;
        Ok(())
    }

    async fn collection_for_key(&self, key_hash: &str) -> FaceStoreResult<Option<CollectionKey>> {
        let row =
            sqlx::query("SELECT collection_id, mode FROM collection_keys WHERE key_sha256 = $1")
                .bind(key_hash)
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
        row.map(|r| {
            Ok(CollectionKey {
                collection_id: r.try_get("collection_id").map_err(db)?,
                mode: mode(&r.try_get::<String, _>("mode").map_err(db)?)?,
            })
        })
        .transpose()
    }

    async fn insert_face(&self, f: &FaceRecord) -> FaceStoreResult<()> {
        // With pgvector the embedding also goes into the indexed vector column.
        let indexed = match (self.pgvector(), f.embedding.as_deref()) {
            (Some(pgv), Some(v)) if v.len() == EMBEDDING_DIM => Some((pgv, literal(v))),
            _ => None,
        };
        let sql = match &indexed {
            Some((pgv, _)) => format!(
                "INSERT INTO faces ({FACE_COLUMNS}, embedding_vec) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,{})",
                pgv.param(15)
            ),
            None => format!(
                "INSERT INTO faces ({FACE_COLUMNS}) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
            ),
        };
        sqlx::query(&sql)
            .bind(f.id)
            .bind(&f.collection_id)
            .bind(&f.external_id)
            .bind(f.metadata.as_ref().map(Json))
            .bind(f.liveness_score)
            .bind(f.bbox[0])
            .bind(f.bbox[1])
            .bind(f.bbox[2])
            .bind(f.bbox[3])
            .bind(f.confidence)
            .bind(f.quality)
            .bind(&f.image_sha256)
            .bind(f.embedding.as_deref().map(embedding_to_bytes))
            .bind(f.created_at)
            .bind(indexed.map(|(_, text)| text))
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn list_faces(
        &self,
        collection_id: &str,
        page: &FacePage,
    ) -> FaceStoreResult<Vec<FaceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FACE_COLUMNS} FROM faces \
             WHERE collection_id = $1 AND ($2::uuid IS NULL OR id > $2) ORDER BY id LIMIT $3"
        ))
        .bind(collection_id)
        .bind(page.after)
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.iter().map(pg_face).collect()
    }

    async fn get_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<FaceRecord> {
        let row = sqlx::query(&format!(
            "SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = $1 AND id = $2"
        ))
        .bind(collection_id)
        .bind(face_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        row.as_ref()
            .map(pg_face)
            .unwrap_or(Err(FaceStoreError::NotFound))
    }

    async fn face_by_external_id(
        &self,
        collection_id: &str,
        external_id: &str,
    ) -> FaceStoreResult<FaceRecord> {
        let row = sqlx::query(&format!(
            "SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = $1 AND external_id = $2"
        ))
        .bind(collection_id)
        .bind(external_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        row.as_ref()
            .map(pg_face)
            .unwrap_or(Err(FaceStoreError::NotFound))
    }

    async fn delete_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<()> {
        let done = sqlx::query("DELETE FROM faces WHERE collection_id = $1 AND id = $2")
            .bind(collection_id)
            .bind(face_id)
            .execute(self.pool())
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(FaceStoreError::NotFound);
        }
        Ok(())
    }

    async fn embeddings(&self, collection_id: &str) -> FaceStoreResult<Vec<(Uuid, Vec<f32>)>> {
        let rows = sqlx::query(
            "SELECT id, embedding FROM faces \
             WHERE collection_id = $1 AND embedding IS NOT NULL ORDER BY id",
        )
        .bind(collection_id)
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let bytes: Vec<u8> = r.try_get("embedding").map_err(db)?;
                Ok((r.try_get("id").map_err(db)?, embedding_from_bytes(&bytes)?))
            })
            .collect()
    }

    fn vector_index(&self) -> bool {
        self.pgvector().is_some()
    }

    async fn embedding_count(&self, collection_id: &str) -> FaceStoreResult<usize> {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM faces WHERE collection_id = $1 AND embedding IS NOT NULL",
        )
        .bind(collection_id)
        .fetch_one(self.pool())
        .await
        .map_err(db)?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    async fn nearest_faces(
        &self,
        collection_id: &str,
        query: &[f32],
        k: usize,
    ) -> FaceStoreResult<Vec<(Uuid, f32)>> {
        let Some(pgv) = self.pgvector() else {
            return Err(FaceStoreError::Other("pgvector is not enabled".to_owned()));
        };
        let distance = format!("embedding_vec {} {}", pgv.cosine_op(), pgv.param(2));
        let sql = format!(
            "SELECT id, {distance} AS distance FROM faces \
             WHERE collection_id = $1 AND embedding_vec IS NOT NULL \
             ORDER BY {distance} LIMIT $3"
        );
        pgvector::nearest(self.pool(), pgv, &sql, collection_id, query, k)
            .await
            .map_err(|e| FaceStoreError::Other(e.to_string()))
    }
}

// ---- SQLite ----------------------------------------------------------------------------

/// Fixed width (microseconds, `Z`), so text order is time order, as in `sqlite.rs`.
fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> FaceStoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| FaceStoreError::Other(format!("bad timestamp {s:?}: {e}")))
}

fn lite_face(row: &SqliteRow) -> FaceStoreResult<FaceRecord> {
    let id: String = row.try_get("id").map_err(db)?;
    let metadata: Option<String> = row.try_get("metadata").map_err(db)?;
    let embedding: Option<Vec<u8>> = row.try_get("embedding").map_err(db)?;
    Ok(FaceRecord {
        id: Uuid::parse_str(&id)
            .map_err(|e| FaceStoreError::Other(format!("bad uuid {id:?}: {e}")))?,
        collection_id: row.try_get("collection_id").map_err(db)?,
        external_id: row.try_get("external_id").map_err(db)?,
        metadata: metadata
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| FaceStoreError::Other(format!("bad metadata json: {e}")))?,
        liveness_score: row.try_get("liveness_score").map_err(db)?,
        bbox: [
            row.try_get("bbox_x1").map_err(db)?,
            row.try_get("bbox_y1").map_err(db)?,
            row.try_get("bbox_x2").map_err(db)?,
            row.try_get("bbox_y2").map_err(db)?,
        ],
        confidence: row.try_get("confidence").map_err(db)?,
        quality: row.try_get("quality").map_err(db)?,
        image_sha256: row.try_get("image_sha256").map_err(db)?,
        embedding: embedding.as_deref().map(embedding_from_bytes).transpose()?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at").map_err(db)?)?,
    })
}

#[async_trait]
impl FaceStore for SqliteStore {
    async fn create_collection(&self, id: &str) -> FaceStoreResult<Collection> {
        sqlx::query(
            "INSERT INTO collections (id, created_at) VALUES (?1, ?2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(ts(&Utc::now()))
        .execute(self.pool())
        .await
        .map_err(db)?;
        let row = sqlx::query("SELECT id, created_at FROM collections WHERE id = ?1")
            .bind(id)
            .fetch_one(self.pool())
            .await
            .map_err(db)?;
        Ok(Collection {
            id: row.try_get("id").map_err(db)?,
            created_at: parse_ts(&row.try_get::<String, _>("created_at").map_err(db)?)?,
        })
    }

    async fn bind_key(
        &self,
        collection_id: &str,
        key_hash: &str,
        mode: KeyMode,
    ) -> FaceStoreResult<()> {
        sqlx::query(
            "INSERT INTO collection_keys (key_sha256, collection_id, mode, created_at) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(key_hash)
        .bind(collection_id)
        .bind(mode.as_str())
        .bind(ts(&Utc::now()))
        .execute(self.pool())
        .await
        .map_err(bind_error)?;
        Ok(())
    }

    async fn collection_for_key(&self, key_hash: &str) -> FaceStoreResult<Option<CollectionKey>> {
        let row =
            sqlx::query("SELECT collection_id, mode FROM collection_keys WHERE key_sha256 = ?1")
                .bind(key_hash)
                .fetch_optional(self.pool())
                .await
                .map_err(db)?;
        row.map(|r| {
            Ok(CollectionKey {
                collection_id: r.try_get("collection_id").map_err(db)?,
                mode: mode(&r.try_get::<String, _>("mode").map_err(db)?)?,
            })
        })
        .transpose()
    }

    async fn insert_face(&self, f: &FaceRecord) -> FaceStoreResult<()> {
        let metadata = f
            .metadata
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| FaceStoreError::Other(format!("metadata not serializable: {e}")))?;
        sqlx::query(&format!(
            "INSERT INTO faces ({FACE_COLUMNS}) \
             VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14)"
        ))
        .bind(f.id.to_string())
        .bind(&f.collection_id)
        .bind(&f.external_id)
        .bind(metadata)
        .bind(f.liveness_score)
        .bind(f.bbox[0])
        .bind(f.bbox[1])
        .bind(f.bbox[2])
        .bind(f.bbox[3])
        .bind(f.confidence)
        .bind(f.quality)
        .bind(&f.image_sha256)
        .bind(f.embedding.as_deref().map(embedding_to_bytes))
        .bind(ts(&f.created_at))
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_faces(
        &self,
        collection_id: &str,
        page: &FacePage,
    ) -> FaceStoreResult<Vec<FaceRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {FACE_COLUMNS} FROM faces \
             WHERE collection_id = ?1 AND (?2 IS NULL OR id > ?2) ORDER BY id LIMIT ?3"
        ))
        .bind(collection_id)
        .bind(page.after.map(|u| u.to_string()))
        .bind(i64::from(page.limit))
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.iter().map(lite_face).collect()
    }

    async fn get_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<FaceRecord> {
        let row = sqlx::query(&format!(
            "SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = ?1 AND id = ?2"
        ))
        .bind(collection_id)
        .bind(face_id.to_string())
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        row.as_ref()
            .map(lite_face)
            .unwrap_or(Err(FaceStoreError::NotFound))
    }

    async fn face_by_external_id(
        &self,
        collection_id: &str,
        external_id: &str,
    ) -> FaceStoreResult<FaceRecord> {
        let row = sqlx::query(&format!(
            "SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = ?1 AND external_id = ?2"
        ))
        .bind(collection_id)
        .bind(external_id)
        .fetch_optional(self.pool())
        .await
        .map_err(db)?;
        row.as_ref()
            .map(lite_face)
            .unwrap_or(Err(FaceStoreError::NotFound))
    }

    async fn delete_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<()> {
        let done = sqlx::query("DELETE FROM faces WHERE collection_id = ?1 AND id = ?2")
            .bind(collection_id)
            .bind(face_id.to_string())
            .execute(self.pool())
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(FaceStoreError::NotFound);
        }
        Ok(())
    }

    async fn embeddings(&self, collection_id: &str) -> FaceStoreResult<Vec<(Uuid, Vec<f32>)>> {
        let rows = sqlx::query(
            "SELECT id, embedding FROM faces \
             WHERE collection_id = ?1 AND embedding IS NOT NULL ORDER BY id",
        )
        .bind(collection_id)
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id").map_err(db)?;
                let bytes: Vec<u8> = r.try_get("embedding").map_err(db)?;
                let id = Uuid::parse_str(&id)
                    .map_err(|e| FaceStoreError::Other(format!("bad uuid {id:?}: {e}")))?;
                Ok((id, embedding_from_bytes(&bytes)?))
            })
            .collect()
    }
}
