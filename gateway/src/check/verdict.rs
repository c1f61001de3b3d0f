//! The public JSON shapes (`docs/architecture.md`), built from stored records so that the answer to
//! `POST /v1/liveness` and a later `GET` of the same id are the same document.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use livegate_providers::{Face, SpoofType, Warning};

use crate::check::decide::Decision;
use crate::store::reviews::Review;
use crate::store::{AttemptRecord, VerificationRecord};

/// The normalized verdict.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "id": "0193a5c0-7f4e-7c9a-9e1b-3f2d1c0b5a49", "decision": "approved", "is_live": true, "score": 0.95,
    "threshold": 0.8, "spoof_type": null,
    "face": {"bbox": [156.0, 234.0, 679.0, 898.0], "confidence": 0.717, "quality": 0.85, "luminance": 0.5, "age": 22.16, "gender": "male"},
    "faces_detected": 1, "warnings": [], "provider": "didit", "provider_request_id": "a1b2c3d4",
    "attempts": [{"provider": "didit", "outcome": "ok", "error_code": null, "upstream_status": 200, "latency_ms": 312, "shadow": false}],
    "latency_ms": 320, "created_at": "2026-11-22T07:00:00Z", "external_id": "user-42", "metadata": {"flow": "signup"},
    "request_id": "0193a5c0-7f4e-7c9a-9e1b-3f2d1c0b5a48", "error": null
}))]
pub struct Verification {
    pub id: Uuid,
    /// livegate's decision under the tenant's policy; `null` when no verdict was reached.
    pub decision: Option<Decision>,
    /// The decision that stands: `decision`, or for a `review`, the reviewer's once the review
    /// is resolved (`null` while it is open).
    pub final_decision: Option<Decision>,
    /// A `review` decision's state in the review queue (`review` decisions only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<ReviewState>,
    /// What the deciding provider itself said, when it says anything. A provider's `declined`
    /// stands unless its score is below the threshold or the tenant explicitly allows every
    /// reason it gave.
    pub provider_decision: Option<Decision>,
    /// `decision == approved`.
    pub is_live: bool,
    /// Liveness 0-1, higher = more likely live; `null` when no face was scored.
    pub score: Option<f64>,
    /// The threshold that was applied.
    pub threshold: f64,
    pub spoof_type: Option<SpoofType>,
    pub face: Option<Face>,
    pub faces_detected: u32,
    pub warnings: Vec<Warning>,
    /// The provider whose answer decided.
    pub provider: Option<String>,
    pub provider_request_id: Option<String>,
    pub attempts: Vec<Attempt>,
    pub latency_ms: i64,
    pub created_at: DateTime<Utc>,
    pub external_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub request_id: String,
    /// Why no verdict was reached (stored failures only).
    pub error: Option<VerificationError>,
    /// What this check cost a metered tenant; in the live answer only (the ledger has it for
    /// later: `credit_ledger.verification_id`).
    pub credits: Option<CreditsUsed>,
    /// When this verification's personal data was erased (`DELETE /v1/verifications/{id}`,
    /// `DELETE /v1/subjects/{external_id}`); the decision, score and timing stay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erased_at: Option<DateTime<Utc>>,
}

/// Where a `review` decision stands.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewState {
    /// `open`, `approved` or `declined`.
    pub status: String,
    /// The reviewer's decision, once resolved.
    pub decision: Option<Decision>,
    pub reason: Option<String>,
    /// Who the reviewer said they are (free text).
    pub reviewer: Option<String>,
    /// `admin sha256:…` or `tenant sha256:…`: the id of the key that resolved it.
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

impl ReviewState {
    pub fn of(r: Option<&Review>) -> ReviewState {
        match r {
            None => ReviewState {
                status: "open".to_owned(),
                decision: None,
                reason: None,
                reviewer: None,
                resolved_by: None,
                resolved_at: None,
            },
            Some(r) => ReviewState {
                status: r.decision.clone(),
                decision: Decision::parse(&r.decision),
                reason: r.reason.clone(),
                reviewer: r.reviewer.clone(),
                resolved_by: Some(r.resolved_by.clone()),
                resolved_at: Some(r.created_at),
            },
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreditsUsed {
    /// Credits kept for this check: the cost of the provider that answered.
    pub charged: i64,
    /// The tenant's balance after this check settled.
    pub remaining: i64,
}

/// One provider call made for a verification.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Attempt {
    pub provider: String,
    /// `ok` or `error`.
    pub outcome: String,
    pub error_code: Option<String>,
    pub upstream_status: Option<i32>,
    pub latency_ms: i64,
    /// A shadow call: recorded for comparison, never deciding.
    pub shadow: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationError {
    pub code: String,
    pub status: i32,
    pub detail: Option<String>,
}

/// A page of verifications, newest first.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerificationPage {
    pub data: Vec<Verification>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl Verification {
    pub fn from_records(v: &VerificationRecord, attempts: &[AttemptRecord]) -> Self {
        let decision = v.decision.as_deref().and_then(Decision::parse);
        let in_review = decision == Some(Decision::Review);
        Verification {
            id: v.id,
            decision,
            final_decision: decision.filter(|_| !in_review),
            review: in_review.then(|| ReviewState::of(None)),
            provider_decision: v.provider_decision.as_deref().and_then(Decision::parse),
            is_live: v.is_live,
            score: v.score,
            threshold: v.threshold,
            spoof_type: v.spoof_type.as_deref().and_then(SpoofType::parse),
            face: v.face.clone().and_then(|f| serde_json::from_value(f).ok()),
            faces_detected: v
                .faces_detected
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            warnings: serde_json::from_value(v.warnings.clone()).unwrap_or_default(),
            provider: v.provider.clone(),
            provider_request_id: v.provider_request_id.clone(),
            attempts: attempts
                .iter()
                .map(|a| Attempt {
                    provider: a.provider.clone(),
                    outcome: a.outcome.clone(),
                    error_code: a.error_code.clone(),
                    upstream_status: a.upstream_status,
                    latency_ms: a.latency_ms,
                    shadow: a.shadow,
                })
                .collect(),
            latency_ms: v.latency_ms,
            created_at: v.created_at,
            external_id: v.external_id.clone(),
            metadata: v.metadata.clone(),
            request_id: v.request_id.clone(),
            error: v.error_code.as_ref().map(|code| VerificationError {
                code: code.clone(),
                status: v.http_status,
                detail: v.error_detail.clone(),
            }),
            credits: None,
            erased_at: v.erased_at,
        }
    }

    /// With the review queue's word on a `review` decision.
    pub fn with_review(mut self, r: Option<&Review>) -> Self {
        if self.decision == Some(Decision::Review) {
            let state = ReviewState::of(r);
            self.final_decision = state.decision;
            self.review = Some(state);
        }
        self
    }
}
