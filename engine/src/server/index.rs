//! Each collection's search: an in-process index built from the store's embeddings on the
//! collection's first search and kept current by this server's own enrollments and deletions;
//! or, once the collection reaches [`IndexOptions::exact_below`] faces on a store with its own
//! vector index (pgvector), the database's index.
//!
//! An in-process index is owned by one process: a second `livegate engine serve` on the same
//! database does not see the first one's later enrollments until it restarts. Searches that go
//! to the database see every enrollment at once.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use tokio::sync::Mutex;
use uuid::Uuid;

use super::error::ApiError;
use super::store::FaceStore;
use crate::EMBEDDING_DIM;
use crate::search::{FaceIndex, Hit, IndexOptions};

pub(super) type Shared = Arc<RwLock<FaceIndex>>;

/// Where one collection is searched.
#[derive(Clone)]
pub(super) enum Search {
    Memory(Shared),
    Database,
}

pub(super) struct Indexes {
    opts: IndexOptions,
    /// Held while an index loads, so an enrollment that lands meanwhile waits and is then
    /// added to the loaded index rather than lost between the load's read and its insertion.
    loaded: Mutex<HashMap<String, Search>>,
}

impl Indexes {
    pub(super) fn new(opts: IndexOptions) -> Indexes {
        Indexes {
            opts,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Where the collection is searched, its index loaded from `store` when this is its first
    /// use.
    pub(super) async fn get(
        &self,
        store: &dyn FaceStore,
        collection_id: &str,
    ) -> Result<Search, ApiError> {
        let mut loaded = self.loaded.lock().await;
        if let Some(search) = loaded.get(collection_id) {
            return Ok(search.clone());
        }
        let mut opts = self.opts;
        if store.vector_index() {
            if store.embedding_count(collection_id).await? >= opts.exact_below {
                tracing::info!(
                    collection = collection_id,
                    "collection searched with the database's vector index"
                );
                loaded.insert(collection_id.to_owned(), Search::Database);
                return Ok(Search::Database);
            }
            // Small enough for an exact scan; past the limit the database takes over.
            opts.exact_below = usize::MAX;
        }
        let faces = store.embeddings(collection_id).await?;
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
        let search = Search::Memory(Arc::new(RwLock::new(index)));
        loaded.insert(collection_id.to_owned(), search.clone());
        Ok(search)
    }

    /// Keeps a loaded in-process index current; `database` says the store has a vector index
    /// to hand the collection over to once it is large.
    pub(super) async fn inserted(
        &self,
        collection_id: &str,
        id: Uuid,
        vector: &[f32],
        database: bool,
    ) {
        let mut loaded = self.loaded.lock().await;
        let Some(Search::Memory(index)) = loaded.get(collection_id) else {
            return;
        };
        let Ok(mut index) = index.write() else {
            return;
        };
        index.insert(id, vector);
        if database && index.len() >= self.opts.exact_below {
            drop(index);
            tracing::info!(
                collection = collection_id,
                "collection searched with the database's vector index"
            );
            loaded.insert(collection_id.to_owned(), Search::Database);
        }
    }

    pub(super) async fn removed(&self, collection_id: &str, id: Uuid) {
        let loaded = self.loaded.lock().await;
        if let Some(Search::Memory(index)) = loaded.get(collection_id)
            && let Ok(mut index) = index.write()
        {
            index.remove(id);
        }
    }
}

/// The `k` best faces at or above `min_similarity`, best first.
pub(super) async fn search(
    search: Search,
    store: &dyn FaceStore,
    collection_id: &str,
    query: Vec<f32>,
    k: usize,
    min_similarity: f32,
) -> Result<Vec<Hit>, ApiError> {
    match search {
        Search::Memory(index) => search_memory(index, query, k, min_similarity).await,
        Search::Database => Ok(store
            .nearest_faces(collection_id, &query, k)
            .await?
            .into_iter()
            .filter(|(_, s)| *s >= min_similarity)
            .map(|(id, similarity)| Hit { id, similarity })
            .collect()),
    }
}

/// Searches on the blocking pool: a large exact scan or graph walk is CPU work.
async fn search_memory(
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
