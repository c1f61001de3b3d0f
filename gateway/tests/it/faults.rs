//! Faults a gateway meets in production, through HTTP with the rows checked in the store:
//! clients that hang up mid-flight.

use std::time::{Duration, Instant};

use livegate::config::KeyHash;
use livegate::store::ListFilter;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::credits::assert_ledger;
use crate::harness::{Harness, SimUrls, jpeg};

const QUITTER_KEY: &str = "lg_test_quitter_key_4040";
const PATIENT_KEY: &str = "lg_test_patient_key_4041";
const INITIAL: i64 = 100;
const COST: i64 = 2;

fn yaml(u: &SimUrls) -> String {
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 3000, circuit_breaker: {{ failures: 3 }} }}
limits: {{ max_pixels: 4000000, idempotency_wait_ms: 200 }}
tenants:
  quitter:
    keys: ["{quitter}"]
    routing: {{ strategy: single, providers: [didit] }}
    credits: {{ initial: {INITIAL}, cost: {{ didit: {COST} }} }}
  patient:
    keys: ["{patient}"]
    routing: {{ strategy: single, providers: [didit] }}
"#,
        didit = u.didit,
        quitter = KeyHash::of_key(QUITTER_KEY),
        patient = KeyHash::of_key(PATIENT_KEY),
    )
}

/// Sends a whole JSON `POST /v1/liveness`, waits a moment and closes the connection before
/// any answer can come.
async fn send_and_hang_up(addr: String, key: &str, idempotency_key: Option<&str>, image: Vec<u8>) {
    use base64::Engine as _;
    let body = json!({ "image_base64": base64::engine::general_purpose::STANDARD.encode(image) })
        .to_string();
    let idem = idempotency_key
        .map(|k| format!("Idempotency-Key: {k}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /v1/liveness HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n{idem}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    conn.write_all(body.as_bytes()).await.expect("body");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // A reset, as a client that is killed or times out sends.
    conn.set_zero_linger().expect("linger");
    drop(conn);
}

/// Clients that give up long before the vendor answers: every verification still ends as if
/// they had waited (row, settled credits, completed idempotency key, attempts), and the
/// vendor's circuit stays closed for the tenant that waits.
async fn abandoned_requests_finish_and_hurt_no_one(h: Harness) {
    const ABANDONED: usize = 12;
    h.sim_rule(json!({"delay_ms": 700, "score": 0.95})).await;
    let addr = h.base.trim_start_matches("http://").to_owned();
    let calls: Vec<_> = (0..ABANDONED)
        .map(|i| {
            let key = (i == 0).then_some("abandoned-once");
            tokio::spawn(send_and_hang_up(addr.clone(), QUITTER_KEY, key, jpeg(1)))
        })
        .collect();
    for c in calls {
        c.await.expect("join");
    }

    // The verifications finish on their own: every one leaves its row.
    let started = Instant::now();
    while h.row_count("quitter").await < ABANDONED {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{} of {ABANDONED} rows after 10 s",
            h.row_count("quitter").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let filter = ListFilter {
        limit: 200,
        ..ListFilter::default()
    };
    let rows = h
        .store
        .list_verifications("quitter", &filter)
        .await
        .expect("rows");
    let mut attempts = 0;
    for r in &rows {
        assert_eq!(r.decision.as_deref(), Some("approved"), "{r:?}");
        attempts += h.store.attempts(r.id).await.expect("attempts").len();
    }
    // Every vendor call is an attempt row, and each abandoned verdict was charged once.
    assert_eq!(h.sim_requests().await.len(), attempts);
    assert_eq!(attempts, ABANDONED);
    let charged = i64::try_from(ABANDONED).expect("count") * COST;
    assert_ledger(&h.store, "quitter", INITIAL - charged).await;

    // A retry of the abandoned request with its key replays the stored verdict.
    let replay = h
        .liveness_with_key(QUITTER_KEY, "abandoned-once", jpeg(1))
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(
        replay
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert!(rows.iter().any(|r| r.id.to_string() == replay.body["id"]));

    // The circuit stayed closed: the tenant that waits is served.
    let ready = Harness::call(h.client.get(h.url("/readyz"))).await;
    assert_eq!(
        ready.body["checks"]["provider:didit"], "closed",
        "{}",
        ready.body
    );
    let served = h.liveness(PATIENT_KEY, "image", jpeg(2), &[]).await;
    assert_eq!(served.status, 200, "{}", served.body);
}

crate::backend_matrix!(yaml = yaml; abandoned_requests_finish_and_hurt_no_one);
