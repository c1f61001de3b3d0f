//! One verdict across vendors: the three simulators are driven to the same underlying outcome
//! (same score, same face box; one face, no face, two faces, a spoof) and livegate's normalized
//! verdicts must be identical apart from `provider` and ids, except for the fields a vendor
//! cannot report (docs/providers.md, "What each vendor loses"), which are compared only where
//! the vendor reports them.

use serde_json::{Map, Value, json};

use crate::harness::{ACME_KEY, COLL_KEY, Harness, KAIROS_KEY, Sim, jpeg};

crate::backend_matrix!(same_outcome_same_verdict);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Didit,
    Kairos,
    Engine,
}

const VENDORS: [Vendor; 3] = [Vendor::Didit, Vendor::Kairos, Vendor::Engine];

impl Vendor {
    fn sim(self) -> Sim {
        match self {
            Vendor::Didit => Sim::Didit,
            Vendor::Kairos => Sim::Kairos,
            Vendor::Engine => Sim::Collections,
        }
    }

    /// The key of the tenant routed to this vendor (all at threshold 0.8).
    fn key(self) -> &'static str {
        match self {
            Vendor::Didit => ACME_KEY,
            Vendor::Kairos => KAIROS_KEY,
            Vendor::Engine => COLL_KEY,
        }
    }

    fn tenant(self) -> &'static str {
        match self {
            Vendor::Didit => "acme",
            Vendor::Kairos => "kairos_t",
            Vendor::Engine => "coll_t",
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Vendor::Didit => "didit",
            Vendor::Kairos => "kairos",
            Vendor::Engine => "engine",
        }
    }
}

/// What a vendor cannot report, per docs/providers.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loss {
    /// Didit flags an attack (`LIVENESS_FACE_ATTACK`) but names no attack type: its
    /// `spoof_type` is `unknown`. Compared: whether there is one.
    SpoofName,
    /// Kairos has no attack field at all: no `spoof_type`, no `LIVENESS_FACE_ATTACK`; an
    /// attack shows only as a low score.
    Spoof,
    /// The collections engine reports no face box.
    FaceBox,
    /// The collections engine refuses to score several faces (422 `MULTIPLE_FACES`): no score,
    /// and livegate declines what has no score where the others put the face in review.
    ScoreOfSeveralFaces,
}

fn losses(vendor: Vendor, outcome: &Outcome) -> Vec<Loss> {
    match vendor {
        Vendor::Didit => vec![Loss::SpoofName],
        Vendor::Kairos => vec![Loss::Spoof],
        Vendor::Engine if outcome.faces > 1 => vec![Loss::FaceBox, Loss::ScoreOfSeveralFaces],
        Vendor::Engine => vec![Loss::FaceBox],
    }
}

/// One underlying outcome, and the verdict livegate must give for it.
struct Outcome {
    name: &'static str,
    rule: Value,
    faces: u32,
    expected: Value,
}

const BBOX: [f64; 4] = [140.0, 90.0, 420.0, 410.0];

fn outcomes() -> Vec<Outcome> {
    let face = json!({"bbox": BBOX});
    let attempts = json!([{"outcome": "ok", "error_code": null, "shadow": false}]);
    let verdict =
        |decision: &str, score: Value, face: Value, faces: u32, spoof: Value, codes: &[&str]| {
            json!({
                "decision": decision,
                "is_live": decision == "approved",
                "score": score,
                "threshold": 0.8,
                "spoof_type": spoof,
                "face": face,
                "faces_detected": faces,
                "warnings": codes.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "attempts": attempts,
                "external_id": "same-person",
                "metadata": {"flow": "equivalence"},
                "error": null,
            })
        };
    vec![
        Outcome {
            name: "one live face",
            rule: json!({"score": 0.93, "bbox": BBOX}),
            faces: 1,
            expected: verdict("approved", json!(0.93), face.clone(), 1, Value::Null, &[]),
        },
        Outcome {
            name: "one face below the threshold",
            rule: json!({"score": 0.61, "bbox": BBOX}),
            faces: 1,
            expected: verdict(
                "declined",
                json!(0.61),
                face.clone(),
                1,
                Value::Null,
                &["LOW_LIVENESS_SCORE"],
            ),
        },
        Outcome {
            name: "no face",
            rule: json!({"faces": 0}),
            faces: 0,
            expected: verdict(
                "declined",
                Value::Null,
                Value::Null,
                0,
                Value::Null,
                &["NO_FACE_DETECTED"],
            ),
        },
        Outcome {
            name: "two faces",
            rule: json!({"score": 0.93, "faces": 2, "bbox": BBOX}),
            faces: 2,
            expected: verdict(
                "review",
                json!(0.93),
                face.clone(),
                2,
                Value::Null,
                &["MULTIPLE_FACES_DETECTED"],
            ),
        },
        Outcome {
            name: "print attack",
            rule: json!({"score": 0.12, "spoof_type": "print", "bbox": BBOX}),
            faces: 1,
            expected: verdict(
                "declined",
                json!(0.12),
                face,
                1,
                json!("print"),
                &["LIVENESS_FACE_ATTACK", "LOW_LIVENESS_SCORE"],
            ),
        },
    ]
}

/// The verdict without what legitimately differs between vendors whatever the outcome:
/// `provider` and ids, timings, the vendor's wire status per attempt, the vendor's wording of a
/// warning, and the face's own measurements (detector confidence, quality, age, ...), which no
/// rule drives and each vendor reports or not on its own. Then the vendor's `losses`.
fn comparable(verdict: &Value, losses: &[Loss]) -> Value {
    let mut v: Map<String, Value> = verdict.as_object().cloned().expect("verdict object");
    // The decision that stands follows from `decision` (an answer's review is still open).
    if let Some(fin) = v.remove("final_decision") {
        let open_review = v.get("decision") == Some(&Value::from("review"));
        let expected = if open_review {
            Value::Null
        } else {
            v.get("decision").cloned().unwrap_or(Value::Null)
        };
        assert_eq!(fin, expected, "final_decision of {verdict}");
        v.remove("review");
    }
    for field in [
        "id",
        "provider",
        "provider_request_id",
        "request_id",
        "created_at",
        "latency_ms",
        // What a check cost is the tenant's business, not the vendor's (tests/it/credits.rs).
        "credits",
        // What the vendor itself said is the vendor's own (tests/it/policy.rs).
        "provider_decision",
    ] {
        v.remove(field);
    }
    if let Some(Value::Array(attempts)) = v.get_mut("attempts") {
        for a in attempts {
            if let Some(a) = a.as_object_mut() {
                a.remove("provider");
                a.remove("latency_ms");
                a.remove("upstream_status");
            }
        }
    }
    if let Some(face) = v.get_mut("face")
        && !face.is_null()
    {
        *face = json!({"bbox": face["bbox"]});
    }
    let mut codes: Vec<String> = v
        .get("warnings")
        .and_then(Value::as_array)
        .expect("warnings")
        .iter()
        .map(|w| w["code"].as_str().expect("code").to_owned())
        .collect();
    for loss in losses {
        match loss {
            Loss::SpoofName => {
                if v.get("spoof_type").is_some_and(|s| !s.is_null()) {
                    v.insert("spoof_type".into(), json!("(an attack, unnamed)"));
                }
            }
            Loss::Spoof => {
                v.remove("spoof_type");
                codes.retain(|c| c != "LIVENESS_FACE_ATTACK");
            }
            Loss::FaceBox => {
                v.remove("face");
            }
            Loss::ScoreOfSeveralFaces => {
                v.remove("score");
            }
        }
    }
    codes.sort();
    v.insert("warnings".into(), json!(codes));
    Value::Object(v)
}

async fn same_outcome_same_verdict(h: Harness) {
    for (i, outcome) in outcomes().iter().enumerate() {
        let img = jpeg(100 + i as u8);
        let mut verdicts = Vec::new();
        for vendor in VENDORS {
            h.sim_rule_on(vendor.sim(), outcome.rule.clone()).await;
            let r = h
                .liveness(
                    vendor.key(),
                    "image",
                    img.clone(),
                    &[
                        ("external_id", "same-person"),
                        ("metadata", r#"{"flow":"equivalence"}"#),
                    ],
                )
                .await;
            assert_eq!(r.status, 200, "{} via {vendor:?}: {}", outcome.name, r.body);
            assert_eq!(r.body["provider"], vendor.provider());
            // The stored verdict is the same document.
            let id = r.body["id"].as_str().expect("id");
            let stored = h
                .get(vendor.key(), &format!("/v1/verifications/{id}"))
                .await;
            assert_eq!(stored.status, 200, "{}", stored.body);
            assert_eq!(
                comparable(&stored.body, &[]),
                comparable(&r.body, &[]),
                "{} via {vendor:?}: the stored verdict differs from the answer",
                outcome.name
            );
            let (row, _) = h.row(vendor.tenant(), id).await;
            assert_eq!(row.decision.as_deref(), r.body["decision"].as_str());
            assert_eq!(row.score, r.body["score"].as_f64());
            verdicts.push((vendor, r.body));
        }

        // Each vendor gives the expected verdict, apart from what it cannot report...
        for (vendor, body) in &verdicts {
            let lost = losses(*vendor, outcome);
            assert_eq!(
                comparable(body, &lost),
                comparable(&outcome.expected, &lost),
                "{} via {vendor:?} (losses {lost:?})",
                outcome.name
            );
        }
        // ...so any two vendors agree on every field both report.
        for (a, va) in &verdicts {
            for (b, vb) in &verdicts {
                let mut lost = losses(*a, outcome);
                lost.extend(losses(*b, outcome));
                assert_eq!(
                    comparable(va, &lost),
                    comparable(vb, &lost),
                    "{}: {a:?} and {b:?} disagree",
                    outcome.name
                );
            }
        }

        // What is lost is lost in the documented way, not replaced by a guess.
        for (vendor, body) in &verdicts {
            for loss in losses(*vendor, outcome) {
                match loss {
                    Loss::SpoofName if !outcome.expected["spoof_type"].is_null() => {
                        assert_eq!(body["spoof_type"], "unknown", "{}", outcome.name);
                    }
                    Loss::Spoof => assert!(body["spoof_type"].is_null()),
                    Loss::FaceBox => assert!(body["face"].is_null()),
                    Loss::ScoreOfSeveralFaces => {
                        assert!(body["score"].is_null());
                        assert_eq!(body["decision"], "review", "several faces go to review");
                    }
                    Loss::SpoofName => {}
                }
            }
        }
    }
}
