//! Face identity for every tenant, whatever provider judged liveness: `duplicates` (the
//! selfie matches one of the tenant's earlier approved verifications: `DUPLICATED_FACE` /
//! `POSSIBLE_DUPLICATED_FACE`) and `blocklist` (it matches a face an operator blocklisted:
//! `FACE_IN_BLOCKLIST` / `POSSIBLE_FACE_IN_BLOCKLIST`). The built-in engine computes the
//! embedding in-process; the warnings go through the tenant's warning actions like any other.
//!
//! Only embeddings are kept (`verification_faces`, `blocklist_faces`), never images, and only
//! for tenants that turn one of the checks on.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use livegate_engine::search::{FaceIndex, IndexOptions};
use livegate_engine::{EMBEDDING_DIM, Engine, cosine};
use livegate_providers::{ImageInput, ProviderAnswer, Warning, WarningCode};
use tokio::sync::{Mutex, OwnedMutexGuard};
use uuid::Uuid;

use crate::check::decide::{self, Decision, Judgement};
use crate::config::Tenant;
use crate::config::face_checks::MatchThresholds;
#[cfg(test)]
use crate::config::face_checks::{FaceChecks, RawFaceCheck, RawThresholds};
use crate::error::{ApiError, ErrorCode};
use crate::store::identity::FaceTurn;
use crate::store::ledger::KeptFace;
use crate::store::{DynStore, StoreError};

/// The in-memory part: the engine, and each tenant's index of approved faces, read
/// incrementally from the store (rows after the last `seq` seen), so several gateways on one
/// database each see the others' approvals.
///
/// A tenant's approved faces are searched in memory (exact, then HNSW past
/// [`IndexOptions::exact_below`]), or, on a store with its own vector index (pgvector), in
/// the database once they reach that size.
#[derive(Debug, Default)]
pub struct Identity {
    index: IndexOptions,
    approved: Mutex<HashMap<String, Arc<Mutex<TenantFaces>>>>,
    /// One tenant's face checks run one at a time, from the search to the stored embedding:
    /// two selfies of the same face at once cannot both find the other missing.
    turns: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

/// A judgement after the face checks, with the face to keep and the tenant's turn: the turn
/// is held until the face is committed with its verification, so the next check sees it.
pub struct Reviewed {
    pub judgement: Judgement,
    pub face: Option<KeptFace>,
    pub turn: Option<Turn>,
}

/// The tenant's turn at its face checks: this process's, then the database's (every instance
/// on it).
pub struct Turn {
    _local: OwnedMutexGuard<()>,
    shared: FaceTurn,
}

impl Turn {
    pub async fn release(self) {
        self.shared.release().await;
    }
}

impl Reviewed {
    fn unchecked(judgement: Judgement) -> Self {
        Self {
            judgement,
            face: None,
            turn: None,
        }
    }
}

#[derive(Debug)]
struct TenantFaces {
    index: FaceIndex,
    last_seq: i64,
    /// Searched with the store's vector index from now on.
    in_database: bool,
}

/// The engine computing embeddings: loaded once per models directory.
async fn engine(models_dir: Option<PathBuf>) -> Result<Engine, ApiError> {
    let dir = crate::runtime::engine::models_dir(models_dir.as_deref());
    tokio::task::spawn_blocking(move || crate::runtime::engine::engine(&dir))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::new(
                ErrorCode::FaceMatchingUnavailable,
                format!("the face-matching engine could not be loaded: {e}"),
            )
        })
}

fn best_match(
    code: WarningCode,
    possible: WarningCode,
    t: &MatchThresholds,
    best: Option<(Uuid, f32)>,
) -> Option<Warning> {
    let (id, s) = best?;
    let s = f64::from(s);
    let code = if s >= t.threshold {
        code
    } else if s >= t.possible_threshold {
        possible
    } else {
        return None;
    };
    Some(Warning::face_match(
        code,
        id.to_string(),
        (s * 1e4).round() / 1e4,
    ))
}

/// Everything [`review`] needs about the verification.
pub struct Subject<'a> {
    pub tenant: &'a Tenant,
    pub threshold: f64,
    pub image: &'a ImageInput,
    pub answer: &'a ProviderAnswer,
    pub verification_id: Uuid,
    pub models_dir: Option<PathBuf>,
}

impl Identity {
    /// With the search tuning of `index` (default [`IndexOptions::default`]).
    pub fn new(index: IndexOptions) -> Identity {
        Identity {
            index,
            approved: Mutex::default(),
            turns: Mutex::default(),
        }
    }

    /// Applies the tenant's face checks to a judgement: blocklist for every face, duplicates
    /// for faces the policy approved; warnings found are added to the provider's answer and
    /// the policy decides again. The face's embedding is to be kept for later checks.
    pub async fn review(
        &self,
        store: &DynStore,
        s: Subject<'_>,
        judgement: Judgement,
    ) -> Result<Reviewed, ApiError> {
        let checks = &s.tenant.face_checks;
        if !checks.enabled() || s.answer.faces_detected == 0 {
            return Ok(Reviewed::unchecked(judgement));
        }
        let engine = engine(s.models_dir.clone()).await?;
        let Some(img) = s.image.decoded.clone() else {
            return Err(ApiError::internal(
                "a face check on an image that was not decoded",
            ));
        };
        let embedded = tokio::task::spawn_blocking(move || match img.as_rgb8() {
            Some(rgb) => engine.analyze_and_embed(rgb),
            None => engine.analyze_and_embed(&img.to_rgb8()),
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
        // The provider saw a face the engine does not: nothing to match.
        let Some(embedding) = embedded.1 else {
            return Ok(Reviewed::unchecked(judgement));
        };
        let vector = embedding.vector;
        let turn = {
            let mut turns = self.turns.lock().await;
            Arc::clone(turns.entry(s.tenant.id.clone()).or_default())
        };
        let local = turn.lock_owned().await;
        let shared = store
            .face_turn(&s.tenant.id)
            .await
            .map_err(ApiError::store)?;
        let turn = Turn {
            _local: local,
            shared,
        };

        let mut found = Vec::new();
        if let Some(t) = &checks.blocklist {
            let list = store
                .blocklist(&s.tenant.id)
                .await
                .map_err(ApiError::store)?;
            let best = list
                .iter()
                .map(|b| (b.verification_id, cosine(&vector, &b.embedding)))
                .max_by(|a, b| a.1.total_cmp(&b.1));
            found.extend(best_match(
                WarningCode::FaceInBlocklist,
                WarningCode::PossibleFaceInBlocklist,
                t,
                best,
            ));
        }
        if let Some(t) = &checks.duplicates
            && judgement.decision == Decision::Approved
            && found.is_empty()
        {
            let best = self
                .best_approved(store, &s.tenant.id, &vector, t.possible_threshold)
                .await?;
            found.extend(best_match(
                WarningCode::DuplicatedFace,
                WarningCode::PossibleDuplicatedFace,
                t,
                best,
            ));
        }
        let judgement = if found.is_empty() {
            judgement
        } else {
            let mut answer = s.answer.clone();
            answer.warnings.extend(found);
            decide::decide(s.tenant, s.threshold, &answer)
        };
        let face = KeptFace {
            approved: judgement.decision == Decision::Approved,
            embedding: vector,
        };
        Ok(Reviewed {
            judgement,
            face: Some(face),
            turn: Some(turn),
        })
    }

    /// Drops every tenant's in-memory faces: they are read again from the store at the next
    /// check. Called once faces were deleted (retention, erasure) by any instance.
    pub async fn forget_all(&self) {
        self.approved.lock().await.clear();
    }

    /// Drops these verifications' faces from the tenant's in-memory index (an erasure here).
    pub async fn forget(&self, tenant_id: &str, ids: &[Uuid]) {
        let faces = self.approved.lock().await.get(tenant_id).cloned();
        if let Some(faces) = faces {
            let mut faces = faces.lock().await;
            for id in ids {
                faces.index.remove(*id);
            }
        }
    }

    /// The tenant's most similar approved face, after reading the rows stored since the last
    /// look. A match at or above `floor` is confirmed in the store first: a face erased or
    /// purged by another instance is dropped from memory, never reported.
    async fn best_approved(
        &self,
        store: &DynStore,
        tenant_id: &str,
        vector: &[f32],
        floor: f64,
    ) -> Result<Option<(Uuid, f32)>, ApiError> {
        let database = store.has_vector_index();
        let mut opts = self.index;
        if database {
            // Past the exact scan's size the database's index takes over, not a graph here.
            opts.exact_below = usize::MAX;
        }
        let faces = {
            let mut all = self.approved.lock().await;
            Arc::clone(all.entry(tenant_id.to_owned()).or_insert_with(|| {
                Arc::new(Mutex::new(TenantFaces {
                    index: FaceIndex::new(EMBEDDING_DIM, opts),
                    last_seq: 0,
                    in_database: false,
                }))
            }))
        };
        let mut faces = faces.lock().await;
        if !faces.in_database {
            let fresh = store
                .approved_faces_after(tenant_id, faces.last_seq)
                .await
                .map_err(ApiError::store)?;
            for f in fresh {
                faces.last_seq = faces.last_seq.max(f.seq);
                faces.index.insert(f.verification_id, &f.embedding);
            }
            if database && faces.index.len() >= self.index.exact_below {
                tracing::info!(
                    tenant = tenant_id,
                    faces = faces.index.len(),
                    "approved faces searched with the database's vector index"
                );
                faces.in_database = true;
                faces.index = FaceIndex::new(EMBEDDING_DIM, opts);
            }
        }
        if faces.in_database {
            let hits = store
                .nearest_approved(tenant_id, vector, 1)
                .await
                .map_err(ApiError::store)?;
            return Ok(hits.into_iter().next());
        }
        loop {
            let Some(hit) = faces.index.search(vector, 1, -1.0).first().copied() else {
                return Ok(None);
            };
            if f64::from(hit.similarity) < floor {
                return Ok(Some((hit.id, hit.similarity)));
            }
            match store.verification_face(tenant_id, hit.id).await {
                Ok(_) => return Ok(Some((hit.id, hit.similarity))),
                Err(StoreError::NotFound) => {
                    faces.index.remove(hit.id);
                }
                Err(e) => return Err(ApiError::store(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let (c, p) = FaceChecks::from_raw(None, None);
        assert!(!c.enabled() && p.is_empty());
        let (c, p) = FaceChecks::from_raw(Some(RawFaceCheck::On(true)), None);
        assert_eq!(c.duplicates, Some(MatchThresholds::default()));
        assert_eq!(c.duplicates.map(|d| d.threshold), Some(0.95));
        assert!(p.is_empty());
        let (c, p) = FaceChecks::from_raw(
            None,
            Some(RawFaceCheck::Thresholds(RawThresholds {
                threshold: Some(0.97),
                possible_threshold: None,
            })),
        );
        assert_eq!(c.blocklist.map(|b| b.threshold), Some(0.97));
        assert!(p.is_empty());
        let (_, p) = FaceChecks::from_raw(
            Some(RawFaceCheck::Thresholds(RawThresholds {
                threshold: Some(0.9),
                possible_threshold: Some(0.95),
            })),
            Some(RawFaceCheck::Thresholds(RawThresholds {
                threshold: Some(1.5),
                possible_threshold: None,
            })),
        );
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn two_cuts() {
        let t = MatchThresholds::default();
        let id = Uuid::nil();
        let code = |s: f32| {
            best_match(
                WarningCode::DuplicatedFace,
                WarningCode::PossibleDuplicatedFace,
                &t,
                Some((id, s)),
            )
            .map(|w| w.code)
        };
        assert_eq!(code(0.97), Some(WarningCode::DuplicatedFace));
        assert_eq!(code(0.93), Some(WarningCode::PossibleDuplicatedFace));
        assert_eq!(code(0.85), None);
        assert_eq!(
            best_match(
                WarningCode::DuplicatedFace,
                WarningCode::PossibleDuplicatedFace,
                &t,
                None
            ),
            None
        );
    }
}
