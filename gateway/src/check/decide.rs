//! The tenant's decision: livegate re-applies the tenant threshold to the normalized score and
//! applies the tenant's warning actions, so a lenient upstream cannot approve what the tenant
//! would decline.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use livegate_providers::{ProviderAnswer, UpstreamDecision, Warning, WarningCode};

use crate::config::{Tenant, WarningAction};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Review,
    Declined,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approved => "approved",
            Decision::Review => "review",
            Decision::Declined => "declined",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approved" => Some(Decision::Approved),
            "review" => Some(Decision::Review),
            "declined" => Some(Decision::Declined),
            _ => None,
        }
    }

    /// The stricter of two decisions (declined > review > approved).
    fn at_least(self, other: Decision) -> Decision {
        self.max(other)
    }
}

#[derive(Debug, Clone)]
pub struct Judgement {
    pub decision: Decision,
    pub warnings: Vec<Warning>,
}

/// Tolerance for comparing decimal scores after floating-point arithmetic.
const SCORE_EPSILON: f64 = 1e-9;

/// Decide on one provider answer under the tenant's policy and the effective threshold.
pub fn decide(tenant: &Tenant, threshold: f64, answer: &ProviderAnswer) -> Judgement {
    let mut warnings = answer.warnings.clone();
    let ensure = |warnings: &mut Vec<Warning>, code: WarningCode| {
        if !warnings.iter().any(|w| w.code == code) {
            warnings.push(Warning::new(code));
        }
    };
    if answer.spoof_type.is_some() {
        ensure(&mut warnings, WarningCode::LivenessFaceAttack);
    }
    // The tenant's quality gates apply where the provider reports the metric.
    if let Some(face) = &answer.face {
        if let (Some(min), Some(q)) = (tenant.min_face_quality, face.quality)
            && q < min
        {
            ensure(&mut warnings, WarningCode::LowFaceQuality);
        }
        if let (Some((lo, hi)), Some(l)) = (tenant.luminance, face.luminance) {
            if l < lo {
                ensure(&mut warnings, WarningCode::LowFaceLuminance);
            } else if l > hi {
                ensure(&mut warnings, WarningCode::HighFaceLuminance);
            }
        }
    }

    let mut decision = match answer.score {
        // No score means nothing to approve: the warnings (no face, ...) say why, and a
        // tenant that sends one of them to review (`NO_FACE_DETECTED: review`) gets a review.
        None => {
            let to_review = warnings.iter().any(|w| {
                tenant.warning_actions.get(w.code.as_str()) == Some(&WarningAction::Review)
            });
            if to_review {
                Decision::Review
            } else {
                Decision::Declined
            }
        }
        Some(s) if s >= threshold => {
            // The upstream judged with its own threshold; livegate's is the one that counts.
            warnings.retain(|w| w.code != WarningCode::LowLivenessScore);
            Decision::Approved
        }
        Some(s) => {
            ensure(&mut warnings, WarningCode::LowLivenessScore);
            match tenant.review_band {
                // Scores and thresholds are decimals: 0.8 - 0.1 is 0.7000000000000001 in
                // binary, which must not push a 0.7 out of the band.
                Some(band) if s >= threshold - band - SCORE_EPSILON => Decision::Review,
                _ => Decision::Declined,
            }
        }
    };
    if answer.upstream_decision == Some(UpstreamDecision::Review) {
        decision = decision.at_least(Decision::Review);
    }
    for w in &warnings {
        if w.code == WarningCode::LowLivenessScore {
            continue; // Already reflected by the threshold and review band above.
        }
        match tenant.warning_actions.get(w.code.as_str()) {
            Some(WarningAction::Decline) => decision = decision.at_least(Decision::Declined),
            Some(WarningAction::Review) => decision = decision.at_least(Decision::Review),
            Some(WarningAction::Ignore) | None => {}
        }
    }
    if fails_closed(tenant, threshold, answer) {
        decision = Decision::Declined;
    }
    Judgement { decision, warnings }
}

/// A vendor's own Declined stands unless livegate knows it for a reason the tenant has
/// explicitly allowed. A score below the threshold explains it (the threshold and review band
/// above decide then); otherwise every warning the vendor gave needs a tenant action that lets
/// it pass (`ignore` or `review`). No reason at all, or one the tenant did not override,
/// keeps the decline.
fn fails_closed(tenant: &Tenant, threshold: f64, answer: &ProviderAnswer) -> bool {
    if answer.upstream_decision != Some(UpstreamDecision::Declined) {
        return false;
    }
    if answer.score.is_some_and(|s| s < threshold) {
        return false;
    }
    let allowed = |w: &Warning| {
        matches!(
            tenant.warning_actions.get(w.code.as_str()),
            Some(WarningAction::Ignore | WarningAction::Review)
        )
    };
    answer.warnings.is_empty() || !answer.warnings.iter().all(allowed)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use livegate_providers::{RawExchange, SpoofType};

    use super::*;
    use crate::config::{Routing, Strategy};

    fn tenant(review_band: Option<f64>) -> Tenant {
        let mut warning_actions = HashMap::new();
        for c in crate::config::DEFAULT_DECLINE {
            warning_actions.insert(c.to_owned(), WarningAction::Decline);
        }
        warning_actions.insert("MULTIPLE_FACES_DETECTED".to_owned(), WarningAction::Review);
        Tenant {
            id: "t".into(),
            keys: vec![],
            threshold: 0.8,
            review_band,
            routing: Routing {
                strategy: Strategy::Single,
                providers: vec!["p".into()],
                weights: vec![],
                fallback: false,
                deadline: std::time::Duration::from_secs(30),
            },
            warning_actions,
            allow_provider_override: false,
            min_face_quality: None,
            luminance: None,
            credits: None,
            rate_limit: None,
            key_rate_limits: HashMap::new(),
            face_checks: Default::default(),
            decode: Default::default(),
            store_raw: Default::default(),
            retention: Default::default(),
            reviews: Default::default(),
            webhooks: Vec::new(),
        }
    }

    fn answer(score: Option<f64>, codes: &[WarningCode]) -> ProviderAnswer {
        ProviderAnswer {
            score,
            upstream_decision: Some(UpstreamDecision::Approved),
            spoof_type: None,
            face: None,
            faces_detected: 1,
            warnings: codes.iter().cloned().map(Warning::new).collect(),
            provider_request_id: None,
            raw: RawExchange::default(),
        }
    }

    #[test]
    fn a_vendor_decline_stands_unless_its_reasons_are_allowed() {
        let mut declined = answer(Some(0.95), &[]);
        declined.upstream_decision = Some(UpstreamDecision::Declined);
        // No reason given: declined, whatever the score.
        assert_eq!(
            decide(&tenant(None), 0.8, &declined).decision,
            Decision::Declined
        );
        // A reason the tenant has no action for: declined.
        declined.warnings = vec![Warning::new(WarningCode::from("SOMETHING_NEW".to_owned()))];
        assert_eq!(
            decide(&tenant(None), 0.8, &declined).decision,
            Decision::Declined
        );
        // Its only reason explicitly ignored: the tenant's policy decides.
        let mut lenient = tenant(None);
        lenient
            .warning_actions
            .insert("SOMETHING_NEW".to_owned(), WarningAction::Ignore);
        assert_eq!(
            decide(&lenient, 0.8, &declined).decision,
            Decision::Approved
        );
        // Explained by a score below the threshold: the review band still applies.
        let mut low = answer(Some(0.75), &[]);
        low.upstream_decision = Some(UpstreamDecision::Declined);
        assert_eq!(
            decide(&tenant(Some(0.1)), 0.8, &low).decision,
            Decision::Review
        );
    }

    #[test]
    fn upstream_approval_below_threshold_is_declined() {
        let j = decide(&tenant(None), 0.8, &answer(Some(0.7), &[]));
        assert_eq!(j.decision, Decision::Declined);
        assert_eq!(j.warnings[0].code, WarningCode::LowLivenessScore);
    }

    #[test]
    fn review_band_and_actions() {
        assert_eq!(
            decide(&tenant(Some(0.1)), 0.8, &answer(Some(0.75), &[])).decision,
            Decision::Review
        );
        assert_eq!(
            decide(&tenant(Some(0.1)), 0.8, &answer(Some(0.65), &[])).decision,
            Decision::Declined
        );
        let multi = answer(Some(0.9), &[WarningCode::MultipleFacesDetected]);
        assert_eq!(
            decide(&tenant(None), 0.8, &multi).decision,
            Decision::Review
        );
        let mut spoof = answer(Some(0.9), &[]);
        spoof.spoof_type = Some(SpoofType::Print);
        let j = decide(&tenant(None), 0.8, &spoof);
        assert_eq!(j.decision, Decision::Declined);
        assert_eq!(j.warnings[0].code, WarningCode::LivenessFaceAttack);
        assert_eq!(
            decide(
                &tenant(None),
                0.8,
                &answer(None, &[WarningCode::NoFaceDetected])
            )
            .decision,
            Decision::Declined
        );
    }

    #[test]
    fn band_edge_and_scoreless_review() {
        // 0.8 - 0.1 != 0.7 in binary; the band's lower edge is still inside.
        assert_eq!(
            decide(&tenant(Some(0.1)), 0.8, &answer(Some(0.7), &[])).decision,
            Decision::Review
        );
        let mut t = tenant(None);
        t.warning_actions
            .insert("NO_FACE_DETECTED".to_owned(), WarningAction::Review);
        let no_face = answer(None, &[WarningCode::NoFaceDetected]);
        assert_eq!(decide(&t, 0.8, &no_face).decision, Decision::Review);
        t.warning_actions
            .insert("NO_FACE_DETECTED".to_owned(), WarningAction::Ignore);
        assert_eq!(decide(&t, 0.8, &no_face).decision, Decision::Declined);
    }
}
