//! Nearest-face search over unit-length embeddings: an exact cosine scan while the set is
//! small, an HNSW graph (`hnsw_rs`) once it holds [`IndexOptions::exact_below`] faces or more.
//! Where that size sits was measured (`benches/identify.rs`, README "Identify latency").
//!
//! Deletions leave a tombstone (HNSW graphs cannot drop a node); the graph is rebuilt without
//! them once they are a fifth of its nodes.

use std::collections::{HashMap, HashSet};

use hnsw_rs::prelude::{Distance, Hnsw};
use uuid::Uuid;

use crate::embed::cosine;

/// Tuning of a [`FaceIndex`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IndexOptions {
    /// Below this many faces every search is an exact scan. Default 100,000: up to there the
    /// scan stays under ~9 ms on 2 cores (8.3 ms at 100k, against 5.0 ms for the graph and
    /// 9.7 ms for pgvector), is exact and needs no build (the graph of 100k faces takes
    /// minutes); beyond it the scan grows linearly and the indexes barely (README,
    /// "Identify latency").
    pub exact_below: usize,
    /// HNSW links per node. Default 16.
    pub max_connections: usize,
    /// Candidate list size while building. Default 200.
    pub ef_construction: usize,
    /// Candidate list size while searching (at least `k`). Default 128.
    pub ef_search: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            exact_below: 100_000,
            max_connections: 16,
            ef_construction: 200,
            ef_search: 128,
        }
    }
}

/// One search hit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    pub id: Uuid,
    /// Cosine similarity, computed exactly for every hit (also those the graph found).
    pub similarity: f32,
}

/// Embeddings of one set of faces (a collection, a tenant's approved faces, a blocklist).
pub struct FaceIndex {
    opts: IndexOptions,
    dim: usize,
    /// Slot `i` holds `ids[i]` and `vectors[i*dim..(i+1)*dim]`.
    ids: Vec<Uuid>,
    vectors: Vec<f32>,
    slot_of: HashMap<Uuid, usize>,
    deleted: HashSet<usize>,
    graph: Option<Hnsw<'static, f32, CosineDistance>>,
}

impl std::fmt::Debug for FaceIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaceIndex")
            .field("len", &self.len())
            .field("graph", &self.graph.is_some())
            .finish_non_exhaustive()
    }
}

impl FaceIndex {
    /// An empty index of `dim`-dimensional vectors.
    pub fn new(dim: usize, opts: IndexOptions) -> FaceIndex {
        FaceIndex {
            opts,
            dim,
            ids: Vec::new(),
            vectors: Vec::new(),
            slot_of: HashMap::new(),
            deleted: HashSet::new(),
            graph: None,
        }
    }

    /// An index holding `faces` (built in one go: the graph, when needed, is inserted in
    /// parallel).
    pub fn build(
        dim: usize,
        opts: IndexOptions,
        faces: impl IntoIterator<Item = (Uuid, Vec<f32>)>,
    ) -> FaceIndex {
        let mut index = FaceIndex::new(dim, opts);
        for (id, v) in faces {
            index.push(id, &v);
        }
        index.rebuild_graph();
        index
    }

    /// Faces in the index.
    pub fn len(&self) -> usize {
        self.slot_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slot_of.is_empty()
    }

    /// True once searches go through the HNSW graph.
    pub fn uses_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Adds (or replaces) a face. Vectors of another length are ignored: every stored
    /// embedding comes from the same model.
    pub fn insert(&mut self, id: Uuid, vector: &[f32]) {
        if vector.len() != self.dim {
            return;
        }
        self.remove(id);
        let slot = self.push(id, vector);
        match &self.graph {
            Some(g) => g.insert_slice((vector, slot)),
            None if self.len() >= self.opts.exact_below => self.rebuild_graph(),
            None => {}
        }
    }

    /// Removes a face; false when it was not there.
    pub fn remove(&mut self, id: Uuid) -> bool {
        let Some(slot) = self.slot_of.remove(&id) else {
            return false;
        };
        self.deleted.insert(slot);
        if self.deleted.len() * 5 >= self.ids.len().max(1) {
            self.compact();
        }
        true
    }

    /// The `k` most similar faces with similarity at least `min_similarity`, best first.
    pub fn search(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<Hit> {
        if k == 0 || query.len() != self.dim || self.is_empty() {
            return Vec::new();
        }
        let mut hits: Vec<Hit> = match &self.graph {
            Some(g) => {
                // hnsw_rs's filtered walk never stops early (it visits the whole graph), so
                // tombstones are skipped here instead: ask for spare neighbours, and take the
                // filtered walk only when too many of the nearest are deleted.
                let want = if self.deleted.is_empty() {
                    k
                } else {
                    (2 * k).max(k + 16)
                };
                let ef = self.opts.ef_search.max(want);
                let found: Vec<Hit> = g
                    .search(query, want, ef)
                    .into_iter()
                    .filter_map(|n| self.hit(n.d_id, query))
                    .collect();
                if found.len() >= k.min(self.len()) {
                    found
                } else {
                    let alive = |slot: &usize| !self.deleted.contains(slot);
                    g.search_filter(query, k, ef, Some(&alive))
                        .into_iter()
                        .filter_map(|n| self.hit(n.d_id, query))
                        .collect()
                }
            }
            None => self.scan(query, k, min_similarity),
        };
        hits.retain(|h| h.similarity >= min_similarity);
        hits.sort_by(|a, b| b.similarity.total_cmp(&a.similarity));
        hits.truncate(k);
        hits
    }

    /// The exact answer whatever the size (the reference the graph is measured against).
    pub fn search_exact(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<Hit> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        self.scan(query, k, min_similarity)
    }

    fn scan(&self, query: &[f32], k: usize, min_similarity: f32) -> Vec<Hit> {
        let mut best: Vec<Hit> = Vec::with_capacity(k + 1);
        for (slot, v) in self.vectors.chunks_exact(self.dim).enumerate() {
            if self.deleted.contains(&slot) {
                continue;
            }
            let s = dot(query, v);
            if s < min_similarity || (best.len() == k && best[k - 1].similarity >= s) {
                continue;
            }
            let at = best.partition_point(|h| h.similarity >= s);
            best.insert(
                at,
                Hit {
                    id: self.ids[slot],
                    similarity: s,
                },
            );
            best.truncate(k);
        }
        best
    }

    fn hit(&self, slot: usize, query: &[f32]) -> Option<Hit> {
        if self.deleted.contains(&slot) {
            return None;
        }
        let v = self.vectors.get(slot * self.dim..(slot + 1) * self.dim)?;
        Some(Hit {
            id: *self.ids.get(slot)?,
            similarity: cosine(query, v),
        })
    }

    fn push(&mut self, id: Uuid, vector: &[f32]) -> usize {
        let slot = self.ids.len();
        self.ids.push(id);
        self.vectors.extend_from_slice(vector);
        self.slot_of.insert(id, slot);
        slot
    }

    /// Drops tombstoned slots and rebuilds the graph (if the size calls for one).
    fn compact(&mut self) {
        let mut ids = Vec::with_capacity(self.len());
        let mut vectors = Vec::with_capacity(self.len() * self.dim);
        for (slot, v) in self.vectors.chunks_exact(self.dim).enumerate() {
            if !self.deleted.contains(&slot) {
                ids.push(self.ids[slot]);
                vectors.extend_from_slice(v);
            }
        }
        self.slot_of = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        self.ids = ids;
        self.vectors = vectors;
        self.deleted.clear();
        self.rebuild_graph();
    }

    fn rebuild_graph(&mut self) {
        if self.len() < self.opts.exact_below {
            self.graph = None;
            return;
        }
        let g = Hnsw::<f32, CosineDistance>::new(
            self.opts.max_connections,
            self.ids.len().max(1024),
            16,
            self.opts.ef_construction,
            CosineDistance,
        );
        let points: Vec<(&[f32], usize)> = self
            .vectors
            .chunks_exact(self.dim)
            .enumerate()
            .filter(|(slot, _)| !self.deleted.contains(slot))
            .map(|(slot, v)| (v, slot))
            .collect();
        g.parallel_insert_slice(&points);
        self.graph = Some(g);
    }
}

/// `1 - cosine` of unit vectors, floored at 0. `hnsw_rs`'s own `DistDot` asserts the value is
/// not negative, and rounding makes it about -1e-7 for two identical embeddings (the same
/// photo submitted twice), which would panic.
#[derive(Clone, Copy, Debug, Default)]
struct CosineDistance;

impl Distance<f32> for CosineDistance {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// Dot product in `f32` lanes of 8: the hot loop of the exact scan (vectorizes without
/// `unsafe`).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::normalize;

    /// Deterministic pseudo-random unit vectors (xorshift), no RNG crate needed.
    fn vectors(n: usize, dim: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut s = seed.max(1);
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| next()).collect();
                normalize(&v).unwrap_or(v)
            })
            .collect()
    }

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|i| Uuid::from_u128(i as u128 + 1)).collect()
    }

    #[test]
    fn exact_scan_ranks_and_thresholds() {
        let vs = vectors(50, 16, 7);
        let id = ids(50);
        let index = FaceIndex::build(
            16,
            IndexOptions::default(),
            id.iter().copied().zip(vs.clone()),
        );
        assert!(!index.uses_graph());
        let hits = index.search(&vs[9], 3, -1.0);
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[0].id, id[9]);
        assert!((hits[0].similarity - 1.0).abs() < 1e-5);
        assert!(hits[0].similarity >= hits[1].similarity);
        assert!(hits[1].similarity >= hits[2].similarity);
        // Only itself clears 0.99.
        assert_eq!(index.search(&vs[9], 10, 0.99).len(), 1);
        assert!(index.search(&vs[9], 0, -1.0).is_empty());
    }

    #[test]
    fn graph_finds_the_exact_best_and_honours_deletes() {
        let opts = IndexOptions {
            exact_below: 500,
            ..IndexOptions::default()
        };
        let vs = vectors(2_000, 32, 11);
        let id = ids(2_000);
        let mut index = FaceIndex::build(32, opts, id.iter().copied().zip(vs.clone()));
        assert!(index.uses_graph());
        let mut found = 0;
        for q in (0..2_000).step_by(40) {
            if index.search(&vs[q], 1, -1.0).first().map(|h| h.id) == Some(id[q]) {
                found += 1;
            }
        }
        assert!(found >= 48, "recall@1 {found}/50");
        assert!(index.remove(id[40]));
        assert!(!index.remove(id[40]));
        let after = index.search(&vs[40], 5, -1.0);
        assert!(after.iter().all(|h| h.id != id[40]));
        // Removing a fifth compacts: still correct afterwards.
        for &gone in id.iter().take(450) {
            index.remove(gone);
        }
        assert_eq!(index.len(), 2_000 - 450);
        assert_eq!(
            index.search(&vs[1_000], 1, -1.0).first().map(|h| h.id),
            Some(id[1_000])
        );
        // An insert after the build goes into the graph.
        let fresh = Uuid::from_u128(99_999);
        let v = vectors(1, 32, 99).remove(0);
        index.insert(fresh, &v);
        assert_eq!(index.search(&v, 1, -1.0).first().map(|h| h.id), Some(fresh));
    }

    #[test]
    fn graph_skips_many_deleted_neighbours() {
        let opts = IndexOptions {
            exact_below: 100,
            ..IndexOptions::default()
        };
        let vs = vectors(2_000, 16, 17);
        let id = ids(2_000);
        let mut index = FaceIndex::build(16, opts, id.iter().copied().zip(vs.clone()));
        // Delete the query's 300 nearest (15%: under the compaction point), so every spare
        // neighbour the graph returns is a tombstone.
        let query = &vs[0];
        let nearest = index.search_exact(query, 300, -1.0);
        for h in &nearest {
            assert!(index.remove(h.id));
        }
        assert!(index.uses_graph());
        let want = index.search_exact(query, 5, -1.0);
        let got = index.search(query, 5, -1.0);
        assert_eq!(got.len(), 5);
        assert!(got.iter().all(|h| nearest.iter().all(|n| n.id != h.id)));
        assert_eq!(got.first().map(|h| h.id), want.first().map(|h| h.id));
    }

    #[test]
    fn growing_past_the_limit_switches_to_the_graph() {
        let opts = IndexOptions {
            exact_below: 100,
            ..IndexOptions::default()
        };
        let mut index = FaceIndex::new(8, opts);
        for (id, v) in ids(100).into_iter().zip(vectors(100, 8, 3)) {
            assert!(!index.uses_graph());
            index.insert(id, &v);
        }
        assert!(index.uses_graph());
        assert_eq!(index.len(), 100);
        index.insert(Uuid::from_u128(1), &vectors(1, 8, 5)[0]);
        assert_eq!(index.len(), 100, "re-inserting an id replaces it");
        assert!(index.search(&[0.0; 7], 1, -1.0).is_empty());
    }
}
