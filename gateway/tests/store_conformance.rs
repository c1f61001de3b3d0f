//! One conformance suite for every `Store` implementation, expanded per backend.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use chrono::{Duration, TimeZone, Utc};
use livegate::store::{AttemptRecord, DynStore, ListFilter, StoreError, VerificationRecord};
use serde_json::json;
use uuid::Uuid;

fn record(tenant: &str, decision: Option<&str>, at: chrono::DateTime<Utc>) -> VerificationRecord {
    VerificationRecord {
        id: Uuid::now_v7(),
        tenant_id: tenant.into(),
        request_id: "req-1".into(),
        provider: Some("didit".into()),
        provider_request_id: Some("up-1".into()),
        decision: decision.map(str::to_owned),
        is_live: decision == Some("approved"),
        score: Some(0.91),
        threshold: 0.8,
        spoof_type: None,
        warnings: json!([{"code": "MULTIPLE_FACES_DETECTED", "message": "two"}]),
        face: Some(json!({"bbox": [1.0, 2.0, 3.0, 4.0], "confidence": 0.9})),
        faces_detected: Some(2),
        image_sha256: Some("ab".repeat(32)),
        image_format: Some("jpg".into()),
        image_width: Some(640),
        image_height: Some(480),
        external_id: Some("user-1".into()),
        metadata: Some(json!({"k": "v"})),
        http_status: 200,
        error_code: None,
        error_detail: None,
        latency_ms: 123,
        config_hash: Some("sha256:00".into()),
        trace_id: None,
        created_at: at,
    }
}

fn attempt(v: &VerificationRecord, n: i32, outcome: &str) -> AttemptRecord {
    AttemptRecord {
        verification_id: v.id,
        attempt_no: n,
        provider: "didit".into(),
        provider_kind: "didit".into(),
        outcome: outcome.into(),
        shadow: false,
        score: None,
        error_code: (outcome == "error").then(|| "provider_timeout".into()),
        upstream_status: Some(504),
        latency_ms: 10,
        raw_body: Some("{\"x\":1}".into()),
        created_at: v.created_at,
    }
}

fn t0() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5)
        .single()
        .expect("time")
        + Duration::microseconds(123_456)
}

async fn round_trip(s: DynStore) {
    let v = record("a", Some("approved"), t0());
    let attempts = [attempt(&v, 1, "error"), attempt(&v, 2, "ok")];
    s.insert_verification(&v, &attempts).await.expect("insert");
    assert_eq!(s.get_verification("a", v.id).await.expect("get"), v);
    assert_eq!(s.attempts(v.id).await.expect("attempts"), attempts);
}

async fn tenants_are_isolated(s: DynStore) {
    let v = record("a", Some("approved"), t0());
    s.insert_verification(&v, &[]).await.expect("insert");
    assert!(matches!(
        s.get_verification("b", v.id).await,
        Err(StoreError::NotFound)
    ));
    let f = ListFilter {
        limit: 10,
        ..Default::default()
    };
    assert!(
        s.list_verifications("b", &f)
            .await
            .expect("list")
            .is_empty()
    );
}

async fn failures_and_nulls(s: DynStore) {
    let mut v = record("a", None, t0());
    v.score = None;
    v.face = None;
    v.metadata = None;
    v.provider = None;
    v.http_status = 415;
    v.error_code = Some("unsupported_image_format".into());
    s.insert_verification(&v, &[]).await.expect("insert");
    assert_eq!(s.get_verification("a", v.id).await.expect("get"), v);
}

async fn duplicate_ids_conflict_and_roll_back(s: DynStore) {
    let v = record("a", Some("approved"), t0());
    s.insert_verification(&v, &[]).await.expect("insert");
    let again = s.insert_verification(&v, &[attempt(&v, 1, "ok")]).await;
    assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
    assert!(
        s.attempts(v.id).await.expect("attempts").is_empty(),
        "the transaction rolled back"
    );
}

async fn list_newest_first_with_filters(s: DynStore) {
    let mut ids = Vec::new();
    for (i, d) in ["approved", "declined", "approved", "review"]
        .into_iter()
        .enumerate()
    {
        let v = record("a", Some(d), t0() + Duration::seconds(i as i64));
        s.insert_verification(&v, &[]).await.expect("insert");
        ids.push(v.id);
    }
    let all = s
        .list_verifications(
            "a",
            &ListFilter {
                limit: 10,
                ..Default::default()
            },
        )
        .await
        .expect("list");
    assert_eq!(
        all.iter().map(|v| v.id).collect::<Vec<_>>(),
        ids.iter().rev().copied().collect::<Vec<_>>()
    );
    let page = s
        .list_verifications(
            "a",
            &ListFilter {
                limit: 2,
                before: Some(ids[2]),
                ..Default::default()
            },
        )
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|v| v.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
    let approved = ListFilter {
        limit: 10,
        decision: Some("approved".into()),
        ..Default::default()
    };
    assert_eq!(
        s.list_verifications("a", &approved)
            .await
            .expect("list")
            .len(),
        2
    );
    let since = ListFilter {
        limit: 10,
        since: Some(t0() + Duration::seconds(2)),
        ..Default::default()
    };
    assert_eq!(
        s.list_verifications("a", &since).await.expect("list").len(),
        2
    );
}

async fn settings_insert_once(s: DynStore) {
    assert_eq!(s.setting("demo").await.expect("get"), None);
    assert_eq!(
        s.setting_insert_if_absent("demo", "one")
            .await
            .expect("put"),
        "one"
    );
    assert_eq!(
        s.setting_insert_if_absent("demo", "two")
            .await
            .expect("put"),
        "one"
    );
    assert_eq!(
        s.setting("demo").await.expect("get").as_deref(),
        Some("one")
    );
}

async fn migrations_are_idempotent(s: DynStore) {
    s.migrate().await.expect("second migrate");
    s.ping().await.expect("ping");
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test] async fn $case() {
                if let Some(s) = super::harness::open_store(super::harness::Backend::Sqlite).await { super::$case(s).await }
            } )*
        }
        mod postgres {
            $( #[tokio::test] async fn $case() {
                if let Some(s) = super::harness::open_store(super::harness::Backend::Postgres).await { super::$case(s).await }
            } )*
        }
    };
}

conformance!(
    round_trip,
    tenants_are_isolated,
    failures_and_nulls,
    duplicate_ids_conflict_and_roll_back,
    list_newest_first_with_filters,
    settings_insert_once,
    migrations_are_idempotent,
);
