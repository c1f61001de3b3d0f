//! How many verifications per second the results path writes into Postgres: each one reserves
//! its credits, then commits its verification row, one attempt and its settlement (release +
//! charge ledger rows, balance update), exactly as `POST /v1/liveness` does, from many
//! concurrent requests. Prints the figure with group commit and, for comparison, with one
//! transaction per verification.
//!
//! `cargo bench --profile dev --bench results_throughput` (Postgres from
//! `LIVEGATE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`; a fresh
//! schema per run). `LIVEGATE_BENCH_SECONDS` (default 5) and `LIVEGATE_BENCH_CONCURRENCY`
//! (default 512) change the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use livegate::store::ledger::{ReserveOutcome, ReserveRequest, ResultWrite, Settlement};
use livegate::store::writers::Writers;
use livegate::store::{AttemptRecord, DynStore, PgStore, VerificationRecord};
use uuid::Uuid;

fn record(tenant: &str) -> (VerificationRecord, Vec<AttemptRecord>) {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let v = VerificationRecord {
        id,
        tenant_id: tenant.to_owned(),
        request_id: Uuid::now_v7().to_string(),
        provider: Some("didit".into()),
        provider_request_id: Some(Uuid::new_v4().to_string()),
        decision: Some("approved".into()),
        provider_decision: None,
        is_live: true,
        score: Some(0.97),
        threshold: 0.5,
        spoof_type: None,
        warnings: serde_json::json!([]),
        face: Some(serde_json::json!({"bbox": [10, 10, 90, 90], "confidence": 0.9})),
        faces_detected: Some(1),
        image_sha256: Some("ab".repeat(32)),
        image_format: Some("jpg".into()),
        image_width: Some(640),
        image_height: Some(480),
        external_id: None,
        metadata: None,
        http_status: 200,
        error_code: None,
        error_detail: None,
        latency_ms: 40,
        config_hash: Some("sha256:00".into()),
        trace_id: None,
        created_at: now,
        erased_at: None,
    };
    let a = AttemptRecord {
        verification_id: id,
        attempt_no: 1,
        provider: "didit".into(),
        provider_kind: "didit".into(),
        outcome: "ok".into(),
        shadow: false,
        score: Some(0.97),
        error_code: None,
        upstream_status: Some(200),
        latency_ms: 35,
        raw_body: Some(r#"{"liveness":{"status":"Approved","score":97}}"#.into()),
        created_at: now,
    };
    (v, vec![a])
}

async fn one(store: &DynStore, writers: Option<&Writers>, tenant: &str) -> bool {
    let req = ReserveRequest {
        id: Uuid::now_v7(),
        tenant_id: tenant.to_owned(),
        amount: 2,
        expires_at: Utc::now() + chrono::Duration::seconds(120),
    };
    let outcome = match writers {
        Some(w) => w.reserve.submit(req.clone()).await,
        None => store
            .reserve_batch(std::slice::from_ref(&req))
            .await
            .map(|mut v| v.remove(0)),
    };
    if !matches!(outcome, Ok(ReserveOutcome::Reserved { .. })) {
        return false;
    }
    let (verification, attempts) = record(tenant);
    let write = Arc::new(ResultWrite {
        verification,
        attempts,
        settlement: Some(Settlement {
            reservation_id: req.id,
            tenant_id: tenant.to_owned(),
            reserved: 2,
            charged: 2,
        }),
        idempotency: None,
        idempotency_forget: None,
        face: None,
        webhooks: Vec::new(),
    });
    match writers {
        Some(w) => w.results.submit(write).await.is_ok(),
        None => store
            .commit_results(std::slice::from_ref(&write))
            .await
            .is_ok(),
    }
}

async fn run(store: DynStore, grouped: bool, seconds: u64, concurrency: usize) -> f64 {
    let batches = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        &'static str,
        (u64, u64, f64),
    >::new()));
    let b = batches.clone();
    let observer: livegate::store::group_commit::BatchObserver =
        Arc::new(move |name, size, took| {
            if let Ok(mut m) = b.lock() {
                let e = m.entry(name).or_default();
                e.0 += 1;
                e.1 += size as u64;
                e.2 += took.as_secs_f64();
            }
        });
    let writers = grouped.then(|| Writers::spawn(&store, Some(observer)));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..concurrency {
        let (store, writers, done, failed) =
            (store.clone(), writers.clone(), done.clone(), failed.clone());
        // A few tenants, as in real traffic; most of it on one hot balance row.
        let tenant = if i % 4 == 0 {
            format!("t{}", i % 3)
        } else {
            "hot".into()
        };
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop {
                if one(&store, writers.as_deref(), &tenant).await {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    let f = failed.load(Ordering::Relaxed);
    let rate = n as f64 / secs;
    println!(
        "{:>14}: {n} verifications in {secs:.2} s = {rate:.0}/s ({f} failed), concurrency {concurrency}",
        if grouped {
            "group commit"
        } else {
            "one tx each"
        }
    );
    if let Ok(m) = batches.lock() {
        for (name, (count, items, secs)) in m.iter() {
            println!(
                "{name:>14}: {count} batches, {:.1} writes per batch, {:.1} ms per batch",
                *items as f64 / *count as f64,
                secs * 1000.0 / *count as f64
            );
        }
    }
    rate
}

fn main() {
    let url = std::env::var("LIVEGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let seconds: u64 = std::env::var("LIVEGATE_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let concurrency: usize = std::env::var("LIVEGATE_BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        for grouped in [true, false] {
            let schema = format!("lg_bench_{}", Uuid::new_v4().simple());
            let store: DynStore = Arc::new(
                PgStore::connect_in_schema(&url, &schema)
                    .await
                    .expect("Postgres for the benchmark"),
            );
            store.migrate().await.expect("migrate");
            for t in ["hot", "t0", "t1", "t2"] {
                store
                    .ensure_account(t, i64::MAX / 4)
                    .await
                    .expect("account");
            }
            run(store.clone(), grouped, seconds, concurrency).await;
            for t in ["hot", "t0", "t1", "t2"] {
                let b = store.balance(t).await.expect("balance").unwrap_or_default();
                let sum: i64 = store
                    .ledger(t)
                    .await
                    .expect("ledger")
                    .iter()
                    .map(|e| e.amount)
                    .sum();
                assert_eq!(b, sum, "balance == sum(ledger) for {t}");
            }
        }
    });
}
