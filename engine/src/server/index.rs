//! Each collection's search index, built from the store's embeddings on the collection's first
//! search and kept current by this server's own enrollments and deletions.
//!
//! One process owns a collection's index: a second `livegate engine serve` on the same
//! database does not see the first one's later enrollments until it restarts.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use uuid::Uuid;

use super::error::ApiError;
use super::store::FaceStore;
use crate::EMBEDDING_DIM;
use crate::search::{FaceIndex, Hit, IndexOptions};

pub(super) type Shared = Arc<RwLock<FaceIndex>>;

pub(super) struct Indexes {
    opts: IndexOptions,
    /// Held while an index loads, so an enrollment that lands meanwhile waits and is then
    /// added to the loaded index rather than lost between the load's read and its insertion.
    loaded: Mutex<HashMap<String, Shared>>,
}

impl Indexes {
    pub(super) fn new(opts: IndexOptions) -> Indexes {
        Indexes {
            opts,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// The collection's index, loaded from `store` when this is its first use.
    pub(super) async fn get(
        &self,
        store: &dyn FaceStore,
        collection_id: &str,
    ) -> Result<Shared, ApiError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(index) = loaded.get(collection_id) {
            return Ok(Arc::clone(index));
        }
        let faces = store.embeddings(collection_id).await?;
        let opts = self.opts;
        // Building the graph of a large collection takes seconds of CPU.
        let index =
            tokio::task::spawn_blocking(move || FaceIndex::build(EMBEDDING_DIM, opts, faces))
                .await
                .map_err(|e| ApiError::internal(format!("index build failed: {e}")))?;
        tracing::info!(
            collection = collection_id,
            faces = index.len(),
            graph = index.uses_graph(),
            "search index loaded"
        );
        let index = Arc::new(RwLock::new(index));
        loaded.insert(collection_id.to_owned(), Arc::clone(&index));
        Ok(index)
    }

    pub(super) async fn inserted(&self, collection_id: &str, id: Uuid, vector: &[f32]) {
        let loaded = self.loaded.lock().await;
        if let Some(index) = loaded.get(collection_id)
            && let Ok(mut index) = index.write()
        {
            index.insert(id, vector);
        }
    }

    pub(super) async fn removed(&self, collection_id: &str, id: Uuid) {
        let loaded = self.loaded.lock().await;
        if let Some(index) = loaded.get(collection_id)
            && let Ok(mut index) = index.write()
        {
            index.remove(id);
        }
    }
}

/// Searches on the blocking pool: a large exact scan or graph walk is CPU work.
pub(super) async fn search(
    index: Shared,
    query: Vec<f32>,
    k: usize,
    min_similarity: f32,
) -> Result<Vec<Hit>, ApiError> {
    tokio::task::spawn_blocking(move || {
        index
            .read()
            .map(|i| i.search(&query, k, min_similarity))
            .map_err(|_| ApiError::internal("search index lock poisoned"))
    })
    .await
    .map_err(|e| ApiError::internal(format!("search task failed: {e}")))?
}
