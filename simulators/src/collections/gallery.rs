//! The enrolled faces, in memory, per collection; and who is who.
//!
//! The simulator computes no embeddings: an image's identity is its SHA-256, so the same bytes
//! are the same person and any other bytes another one. Tests can predict every similarity.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use crate::faces::Bbox;

/// Similarity of two images with the same bytes.
pub(super) const SAME_PERSON: f64 = 0.99;

/// Similarity of two images with different bytes: below any sane threshold, the documented
/// default of 0.55 included.
pub(super) const DIFFERENT_PEOPLE: f64 = 0.12;

pub(super) fn similarity(sha256_a: &str, sha256_b: &str) -> f64 {
    if sha256_a == sha256_b {
        SAME_PERSON
    } else {
        DIFFERENT_PEOPLE
    }
}

/// One enrolled face. The image itself is not kept, only its hash (its identity).
#[derive(Debug, Clone)]
pub(super) struct StoredFace {
    pub face_id: String,
    pub collection_id: String,
    pub external_id: Option<String>,
    pub metadata: Option<Value>,
    pub image_sha256: String,
    pub liveness_score: f64,
    pub bbox: Bbox,
    pub confidence: f64,
    pub quality: f64,
    pub created_at: DateTime<Utc>,
}

impl StoredFace {
    /// The enrolled face as enrollment (single and batch) reports it.
    pub(super) fn to_json(&self) -> Value {
        json!({
            "face_id": self.face_id,
            "collection_id": self.collection_id,
            "external_id": self.external_id,
            "metadata": self.metadata,
            "liveness_score": self.liveness_score,
            "face": { "bbox": self.bbox, "confidence": self.confidence },
            "quality": self.quality,
            "has_embedding": true,
            "created_at": self.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        })
    }
}

/// How verify names the enrolled face.
#[derive(Debug, Clone, Copy)]
pub(super) enum FaceKey<'a> {
    FaceId(&'a str),
    ExternalId(&'a str),
}

/// The external_id is already taken in the collection.
#[derive(Debug)]
pub(super) struct Duplicate;

/// Faces per collection, each list in enrollment order.
#[derive(Debug, Default)]
pub(super) struct Gallery {
    collections: Mutex<HashMap<String, Vec<StoredFace>>>,
}

impl Gallery {
    /// Every mutation is a single push, so a panic elsewhere leaves consistent data behind.
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<StoredFace>>> {
        self.collections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn external_id_taken(&self, collection: &str, external_id: &str) -> bool {
        self.lock().get(collection).is_some_and(|faces| {
            faces
                .iter()
                .any(|f| f.external_id.as_deref() == Some(external_id))
        })
    }

    /// Stores `face` unless its external_id is taken; checked and stored under one lock, so
    /// two concurrent enrollments of one external_id cannot both succeed.
    pub(super) fn insert(&self, face: StoredFace) -> Result<(), Duplicate> {
        let mut collections = self.lock();
        let faces = collections.entry(face.collection_id.clone()).or_default();
        if let Some(wanted) = &face.external_id
            && faces.iter().any(|f| f.external_id.as_ref() == Some(wanted))
        {
            return Err(Duplicate);
        }
        faces.push(face);
        Ok(())
    }

    pub(super) fn find(&self, collection: &str, key: FaceKey<'_>) -> Option<StoredFace> {
        let collections = self.lock();
        collections.get(collection)?.iter().find_map(|f| {
            let hit = match key {
                FaceKey::FaceId(id) => f.face_id == id,
                FaceKey::ExternalId(id) => f.external_id.as_deref() == Some(id),
            };
            hit.then(|| f.clone())
        })
    }

    /// The collection's faces in enrollment order (empty for a collection never enrolled in).
    pub(super) fn faces(&self, collection: &str) -> Vec<StoredFace> {
        self.lock().get(collection).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face(collection: &str, id: &str, external_id: Option<&str>) -> StoredFace {
        StoredFace {
            face_id: id.to_owned(),
            collection_id: collection.to_owned(),
            external_id: external_id.map(str::to_owned),
            metadata: None,
            image_sha256: "00".repeat(32),
            liveness_score: 0.9,
            bbox: [0.0, 0.0, 1.0, 1.0],
            confidence: 0.99,
            quality: 0.8,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn external_ids_are_unique_per_collection_only() {
        let gallery = Gallery::default();
        assert!(gallery.insert(face("a", "1", Some("u1"))).is_ok());
        assert!(gallery.insert(face("a", "2", Some("u1"))).is_err());
        assert!(gallery.insert(face("b", "3", Some("u1"))).is_ok());
        assert!(gallery.insert(face("a", "4", None)).is_ok());
        assert!(gallery.insert(face("a", "5", None)).is_ok());
        assert!(gallery.external_id_taken("a", "u1"));
        assert!(!gallery.external_id_taken("c", "u1"));
        let ids: Vec<String> = gallery.faces("a").into_iter().map(|f| f.face_id).collect();
        assert_eq!(ids, ["1", "4", "5"]);
        assert_eq!(
            gallery
                .find("a", FaceKey::ExternalId("u1"))
                .map(|f| f.face_id),
            Some("1".to_owned())
        );
        assert!(gallery.find("b", FaceKey::FaceId("1")).is_none());
    }

    #[test]
    fn identity_is_the_image_hash() {
        let (a, b) = ("aa".repeat(32), "bb".repeat(32));
        assert_eq!(similarity(&a, &a), SAME_PERSON);
        assert_eq!(similarity(&a, &b), DIFFERENT_PEOPLE);
    }
}
