//! The engine's collections server stores its collections, keys and faces in livegate's own
//! database: [`FaceStore`] for both backends (tables of `migrations/*/0002_collections.sql`).

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use livegate_engine::EMBEDDING_DIM;
use livegate_engine::server::{
    Collection, CollectionKey, FacePage, FaceRecord, FaceStore, FaceStoreError, FaceStoreResult,
    KeyMode, embedding_from_bytes, embedding_to_bytes,
};
use uuid::Uuid;

use super::postgres::pgvector::literal;
use super::sql::{Backend, Cols, Stmt};
use super::{PgStore, SqliteStore, Store, StoreError, StoreResult};

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
        Err(super::unsupported_url(url))
    }
}

/// The gateway's classification of database errors, in the engine's error type. A free
/// function: neither type is this crate's, so no `From`.
fn db(e: StoreError) -> FaceStoreError {
    match e {
        StoreError::NotFound => FaceStoreError::NotFound,
        StoreError::Conflict(m) => FaceStoreError::Conflict(m),
        StoreError::MissingParent(m) | StoreError::Unavailable(m) | StoreError::Other(m) => {
            FaceStoreError::Other(m)
        }
    }
}

fn mode(s: &str) -> FaceStoreResult<KeyMode> {
    KeyMode::parse(s).ok_or_else(|| FaceStoreError::Other(format!("bad key mode {s:?}")))
}

const FACE_COLUMNS: &str = "id, collection_id, external_id, metadata, liveness_score, \
     bbox_x1, bbox_y1, bbox_x2, bbox_y2, confidence, quality, image_sha256, embedding, created_at";

fn face(row: &impl Cols) -> FaceStoreResult<FaceRecord> {
    face_row(row).map_err(db)
}

fn face_row(row: &impl Cols) -> StoreResult<FaceRecord> {
    let embedding: Option<Vec<u8>> = row.get("embedding")?;
    Ok(FaceRecord {
        id: row.uuid("id")?,
        collection_id: row.get("collection_id")?,
        external_id: row.get("external_id")?,
        metadata: row.json("metadata")?,
        liveness_score: row.get("liveness_score")?,
        bbox: [
            row.get("bbox_x1")?,
            row.get("bbox_y1")?,
            row.get("bbox_x2")?,
            row.get("bbox_y2")?,
        ],
        confidence: row.get("confidence")?,
        quality: row.get("quality")?,
        image_sha256: row.get("image_sha256")?,
        embedding: embedding
            .as_deref()
            .map(embedding_from_bytes)
            .transpose()
            .map_err(|e| StoreError::Other(e.to_string()))?,
        created_at: row.time("created_at")?,
    })
}

async fn create_collection(b: &impl Backend, id: &str) -> StoreResult<Collection> {
    b.execute(
        Stmt::new(
            "INSERT INTO collections (id, created_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(Utc::now()),
    )
    .await?;
    let row = b
        .row(Stmt::new("SELECT id, created_at FROM collections WHERE id = $1").bind(id))
        .await?;
    Ok(Collection {
        id: row.get("id")?,
        created_at: row.time("created_at")?,
    })
}

async fn bind_key(
    b: &impl Backend,
    collection_id: &str,
    key_hash: &str,
    mode: KeyMode,
) -> FaceStoreResult<()> {
    let s = Stmt::new(
        "INSERT INTO collection_keys (key_sha256, collection_id, mode, created_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(key_hash)
    .bind(collection_id)
    .bind(mode.as_str())
    .bind(Utc::now());
    match b.execute(s).await {
        Ok(_) => Ok(()),
        // Binding a key to a collection that does not exist is a `NotFound`, not a fault.
        Err(StoreError::MissingParent(_)) => Err(FaceStoreError::NotFound),
        Err(e) => Err(db(e)),
    }
}

async fn collection_for_key(
    b: &impl Backend,
    key_hash: &str,
) -> FaceStoreResult<Option<CollectionKey>> {
    let s = Stmt::new("SELECT collection_id, mode FROM collection_keys WHERE key_sha256 = $1")
        .bind(key_hash);
    let Some(r) = b.optional(s).await.map_err(db)? else {
        return Ok(None);
    };
    Ok(Some(CollectionKey {
        collection_id: r.get("collection_id").map_err(db)?,
        mode: mode(&r.get::<String>("mode").map_err(db)?)?,
    }))
}

async fn insert_face(b: &impl Backend, f: &FaceRecord) -> StoreResult<()> {
    // With pgvector the embedding also goes into the indexed vector column.
    let indexed = match (b.pgvector(), f.embedding.as_deref()) {
        (Some(pgv), Some(v)) if v.len() == EMBEDDING_DIM => Some((pgv, literal(v))),
        _ => None,
    };
    let (vec_column, vec_param) = match &indexed {
        Some((pgv, _)) => (", embedding_vec", format!(",{}", pgv.param(15))),
        None => ("", String::new()),
    };
    let sql = format!(
        "INSERT INTO faces ({FACE_COLUMNS}{vec_column}) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14{vec_param})"
    );
    let mut s = Stmt::new(sql)
        .bind(f.id)
        .bind(&f.collection_id)
        .bind(&f.external_id)
        .json(f.metadata.as_ref())
        .bind(f.liveness_score)
        .bind(f.bbox[0])
        .bind(f.bbox[1])
        .bind(f.bbox[2])
        .bind(f.bbox[3])
        .bind(f.confidence)
        .bind(f.quality)
        .bind(&f.image_sha256)
        .bind(f.embedding.as_deref().map(embedding_to_bytes))
        .bind(f.created_at);
    if let Some((_, text)) = indexed {
        s = s.bind(text);
    }
    b.execute(s).await.map(drop)
}

async fn list_faces(
    b: &impl Backend,
    collection_id: &str,
    page: &FacePage,
) -> FaceStoreResult<Vec<FaceRecord>> {
    let s = Stmt::new(format!(
        "SELECT {FACE_COLUMNS} FROM faces \
         WHERE collection_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
    ))
    .bind(collection_id)
    .bind(page.after)
    .bind(i64::from(page.limit));
    b.rows(s).await.map_err(db)?.iter().map(face).collect()
}

/// The face found by `column = value` in the collection.
async fn face_where(
    b: &impl Backend,
    collection_id: &str,
    column: &str,
    value: impl Into<super::sql::Param>,
) -> FaceStoreResult<FaceRecord> {
    let s = Stmt::new(format!(
        "SELECT {FACE_COLUMNS} FROM faces WHERE collection_id = $1 AND {column} = $2"
    ))
    .bind(collection_id)
    .bind(value);
    match b.optional(s).await.map_err(db)? {
        Some(row) => face(&row),
        None => Err(FaceStoreError::NotFound),
    }
}

async fn delete_face(b: &impl Backend, collection_id: &str, face_id: Uuid) -> StoreResult<()> {
    let s = Stmt::new("DELETE FROM faces WHERE collection_id = $1 AND id = $2")
        .bind(collection_id)
        .bind(face_id);
    match b.execute(s).await? {
        0 => Err(StoreError::NotFound),
        _ => Ok(()),
    }
}

async fn embeddings(
    b: &impl Backend,
    collection_id: &str,
) -> FaceStoreResult<Vec<(Uuid, Vec<f32>)>> {
    let s = Stmt::new(
        "SELECT id, embedding FROM faces \
         WHERE collection_id = $1 AND embedding IS NOT NULL ORDER BY id",
    )
    .bind(collection_id);
    b.rows(s)
        .await
        .map_err(db)?
        .iter()
        .map(|r| {
            let bytes: Vec<u8> = r.get("embedding").map_err(db)?;
            Ok((r.uuid("id").map_err(db)?, embedding_from_bytes(&bytes)?))
        })
        .collect()
}

async fn embedding_count(b: &impl Backend, collection_id: &str) -> StoreResult<usize> {
    let s = Stmt::new(
        "SELECT count(*) AS n FROM faces WHERE collection_id = $1 AND embedding IS NOT NULL",
    )
    .bind(collection_id);
    let n: i64 = b.row(s).await?.get("n")?;
    Ok(usize::try_from(n).unwrap_or(0))
}

async fn nearest_faces(
    b: &impl Backend,
    collection_id: &str,
    query: &[f32],
    k: usize,
) -> StoreResult<Vec<(Uuid, f32)>> {
    let Some(pgv) = b.pgvector() else {
        return Err(StoreError::Other("pgvector is not enabled".to_owned()));
    };
    let distance = format!("embedding_vec {} {}", pgv.cosine_op(), pgv.param(2));
    let sql = format!(
        "SELECT id, {distance} AS distance FROM faces \
         WHERE collection_id = $1 AND embedding_vec IS NOT NULL \
         ORDER BY {distance} LIMIT $3"
    );
    b.nearest(&sql, collection_id, query, k).await
}

/// `FaceStore` is the engine's trait, so it cannot be implemented for every [`Backend`] at
/// once; this writes the one implementation for each backend type.
macro_rules! face_store {
    ($store:ty) => {
        #[async_trait]
        impl FaceStore for $store {
            async fn create_collection(&self, id: &str) -> FaceStoreResult<Collection> {
                create_collection(self, id).await.map_err(db)
            }

            async fn bind_key(
                &self,
                collection_id: &str,
                key_hash: &str,
                mode: KeyMode,
            ) -> FaceStoreResult<()> {
                bind_key(self, collection_id, key_hash, mode).await
            }

            async fn collection_for_key(
                &self,
                key_hash: &str,
            ) -> FaceStoreResult<Option<CollectionKey>> {
                collection_for_key(self, key_hash).await
            }

            async fn insert_face(&self, f: &FaceRecord) -> FaceStoreResult<()> {
                insert_face(self, f).await.map_err(db)
            }

            async fn list_faces(
                &self,
                collection_id: &str,
                page: &FacePage,
            ) -> FaceStoreResult<Vec<FaceRecord>> {
                list_faces(self, collection_id, page).await
            }

            async fn get_face(
                &self,
                collection_id: &str,
                face_id: Uuid,
            ) -> FaceStoreResult<FaceRecord> {
                face_where(self, collection_id, "id", face_id).await
            }

            async fn face_by_external_id(
                &self,
                collection_id: &str,
                external_id: &str,
            ) -> FaceStoreResult<FaceRecord> {
                face_where(self, collection_id, "external_id", external_id).await
            }

            async fn delete_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<()> {
                delete_face(self, collection_id, face_id).await.map_err(db)
            }

            async fn embeddings(
                &self,
                collection_id: &str,
            ) -> FaceStoreResult<Vec<(Uuid, Vec<f32>)>> {
                embeddings(self, collection_id).await
            }

            fn vector_index(&self) -> bool {
                self.pgvector().is_some()
            }

            async fn embedding_count(&self, collection_id: &str) -> FaceStoreResult<usize> {
                embedding_count(self, collection_id).await.map_err(db)
            }

            async fn nearest_faces(
                &self,
                collection_id: &str,
                query: &[f32],
                k: usize,
            ) -> FaceStoreResult<Vec<(Uuid, f32)>> {
                nearest_faces(self, collection_id, query, k)
                    .await
                    .map_err(db)
            }
        }
    };
}

face_store!(PgStore);
face_store!(SqliteStore);
