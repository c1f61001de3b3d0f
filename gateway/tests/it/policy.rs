//! The tenant's policy against the vendor's own decision, through HTTP with the row checked:
//! a vendor's decline is not turned into an approval unless the tenant allowed its reasons.

use livegate::config::KeyHash;
use serde_json::json;

use crate::harness::{Harness, SimUrls, jpeg};

const STRICT_KEY: &str = "lg_test_strict_key_5150";
const LENIENT_KEY: &str = "lg_test_lenient_key_5151";

fn yaml(u: &SimUrls) -> String {
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 3000 }}
limits: {{ max_pixels: 4000000 }}
tenants:
  strict:
    keys: ["{strict}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
  lenient:
    keys: ["{lenient}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
    warnings: {{ LOW_FACE_QUALITY: ignore }}
"#,
        didit = u.didit,
        strict = KeyHash::of_key(STRICT_KEY),
        lenient = KeyHash::of_key(LENIENT_KEY),
    )
}

async fn a_vendor_decline_above_the_threshold_stays_declined(h: Harness) {
    // Declined with a live score and no reason livegate could weigh.
    h.sim_rule(json!({"score": 0.95, "decision": "Declined"}))
        .await;
    let r = h.liveness(STRICT_KEY, "image", jpeg(1), &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["decision"], "declined", "{}", r.body);
    assert_eq!(r.body["provider_decision"], "declined", "{}", r.body);
    let (row, _) = h.last_row("strict").await;
    assert_eq!(
        (row.decision.as_deref(), row.provider_decision.as_deref()),
        (Some("declined"), Some("declined"))
    );

    // The same decline for a reason the tenant explicitly ignores: the tenant's policy decides.
    h.sim_rule(json!({"score": 0.95, "decision": "Declined", "warnings": ["LOW_FACE_QUALITY"]}))
        .await;
    let r = h.liveness(LENIENT_KEY, "image", jpeg(2), &[]).await;
    assert_eq!(r.body["decision"], "approved", "{}", r.body);
    assert_eq!(r.body["provider_decision"], "declined", "{}", r.body);

    // A tenant without that action keeps the decline.
    h.sim_rule(json!({"score": 0.95, "decision": "Declined", "warnings": ["LOW_FACE_QUALITY"]}))
        .await;
    let r = h.liveness(STRICT_KEY, "image", jpeg(3), &[]).await;
    assert_eq!(r.body["decision"], "declined", "{}", r.body);
}

crate::backend_matrix!(yaml = yaml; a_vendor_decline_above_the_threshold_stays_declined);
