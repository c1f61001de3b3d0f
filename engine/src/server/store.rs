//! What the collections server keeps: collections, their API keys (hashed) and enrolled faces.
//! The trait is implemented by livegate's own stores (Postgres and SQLite), so collections live
//! in the same database as the gateway's verifications.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::keys::KeyMode;

/// Errors of a [`FaceStore`].
#[derive(Debug, thiserror::Error)]
pub enum FaceStoreError {
    /// The collection or face does not exist.
    #[error("not found")]
    NotFound,
    /// A unique value is taken: an `external_id` in the collection, or a key hash.
    #[error("conflict: {0}")]
    Conflict(String),
    /// Anything else (connection, query, corrupt row).
    #[error("store error: {0}")]
    Other(String),
}

/// Result of a [`FaceStore`] call.
pub type FaceStoreResult<T> = Result<T, FaceStoreError>;

/// A collection of enrolled faces.
#[derive(Clone, Debug, PartialEq)]
pub struct Collection {
    pub id: String,
    pub created_at: DateTime<Utc>,
}

/// What a key hash resolves to.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionKey {
    pub collection_id: String,
    pub mode: KeyMode,
}

/// One enrolled face. Images are never stored, only their SHA-256.
#[derive(Clone, Debug, PartialEq)]
pub struct FaceRecord {
    /// UUIDv7: time-ordered, so pages in id order are pages in enrollment order.
    pub id: Uuid,
    pub collection_id: String,
    /// The caller's id for the person; unique within the collection when present.
    pub external_id: Option<String>,
    /// The caller's JSON object, kept verbatim.
    pub metadata: Option<serde_json::Value>,
    /// Liveness score 0-1 measured at enrollment (also when the check was skipped).
    pub liveness_score: Option<f64>,
    /// `[x1, y1, x2, y2]` in pixels of the (EXIF-oriented) enrolled image.
    pub bbox: [f64; 4],
    /// Detector confidence 0-1.
    pub confidence: f64,
    /// Face quality 0-1 (sharpness and size).
    pub quality: Option<f64>,
    pub image_sha256: String,
    /// The face's unit-length embedding (128 `f32`s, dlib ResNet), computed at enrollment;
    /// `None` for faces enrolled before embeddings existed. Stored as little-endian `f32`
    /// bytes ([`embedding_to_bytes`]).
    pub embedding: Option<Vec<f32>>,
    /// Truncated to microseconds so it reads back from either database unchanged.
    pub created_at: DateTime<Utc>,
}

/// One page of a collection's faces, in enrollment (id) order.
#[derive(Clone, Debug, PartialEq)]
pub struct FacePage {
    /// At most this many faces.
    pub limit: u32,
    /// Only faces after this id (the previous page's last face).
    pub after: Option<Uuid>,
}

/// Storage of collections, keys and faces.
#[async_trait]
pub trait FaceStore: Send + Sync {
    /// Creates the collection unless it exists; returns it either way.
    async fn create_collection(&self, id: &str) -> FaceStoreResult<Collection>;
    /// Binds a key (by its hash) to an existing collection. `NotFound` when the collection
    /// does not exist, `Conflict` when the hash is already bound.
    async fn bind_key(
        &self,
        collection_id: &str,
        key_hash: &str,
        mode: KeyMode,
    ) -> FaceStoreResult<()>;
    /// The collection a key hash is bound to, if any.
    async fn collection_for_key(&self, key_hash: &str) -> FaceStoreResult<Option<CollectionKey>>;
    /// Inserts a face. `Conflict` when its `external_id` is taken in the collection.
    async fn insert_face(&self, face: &FaceRecord) -> FaceStoreResult<()>;
    /// A page of the collection's faces, oldest first.
    async fn list_faces(
        &self,
        collection_id: &str,
        page: &FacePage,
    ) -> FaceStoreResult<Vec<FaceRecord>>;
    /// One face of the collection; `NotFound` when absent or in another collection.
    async fn get_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<FaceRecord>;
    /// The collection's face with this `external_id`; `NotFound` when there is none.
    async fn face_by_external_id(
        &self,
        collection_id: &str,
        external_id: &str,
    ) -> FaceStoreResult<FaceRecord>;
    /// Deletes one face of the collection; `NotFound` when absent or in another collection.
    async fn delete_face(&self, collection_id: &str, face_id: Uuid) -> FaceStoreResult<()>;
    /// Every face of the collection that has an embedding, as `(id, embedding)`: what the
    /// search index is built from.
    async fn embeddings(&self, collection_id: &str) -> FaceStoreResult<Vec<(Uuid, Vec<f32>)>>;

    /// True when the database searches embeddings itself with an approximate index
    /// (pgvector's HNSW on Postgres): large collections are then searched there instead of in
    /// an in-process graph, and every process sees every enrollment at once.
    fn vector_index(&self) -> bool {
        false
    }
    /// How many of the collection's faces have an embedding.
    async fn embedding_count(&self, collection_id: &str) -> FaceStoreResult<usize> {
        Ok(self.embeddings(collection_id).await?.len())
    }
    /// The `k` faces of the collection nearest to `query` (a unit vector) by the database's
    /// index, most similar first, as `(id, cosine similarity)`. Only called when
    /// [`FaceStore::vector_index`] is true.
    async fn nearest_faces(
        &self,
        collection_id: &str,
        query: &[f32],
        k: usize,
    ) -> FaceStoreResult<Vec<(Uuid, f32)>> {
        let _ = (collection_id, query, k);
        Err(FaceStoreError::Other(
            "this store has no vector index".to_owned(),
        ))
    }
}

/// An embedding as stored: little-endian `f32`s, the same bytes in every database.
pub fn embedding_to_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// The stored bytes back; an error when their length is not a multiple of 4.
pub fn embedding_from_bytes(b: &[u8]) -> FaceStoreResult<Vec<f32>> {
    if !b.len().is_multiple_of(4) {
        return Err(FaceStoreError::Other(format!(
            "stored embedding has {} bytes, not a multiple of 4",
            b.len()
        )));
    }
    Ok(b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_bytes_round_trip() {
        let v = vec![0.0, -1.5, f32::MIN_POSITIVE, 1e30];
        let b = embedding_to_bytes(&v);
        assert_eq!(b.len(), 16);
        assert_eq!(embedding_from_bytes(&b).ok(), Some(v));
        assert!(embedding_from_bytes(&[1, 2, 3]).is_err());
    }
}
