//! One conformance suite for every `Store` implementation, expanded per backend.

#[path = "it/harness.rs"]
#[allow(dead_code)]
mod harness;

use chrono::{Duration, SubsecRound, TimeZone, Utc};
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
        provider_decision: decision.map(str::to_owned),
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
        erased_at: None,
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

mod ledger_cases {
    use super::*;
    use livegate::store::ledger::{
        Adjustment, IdemClaim, IdemClaimRequest, IdempotentAnswer, ReserveOutcome, ReserveRequest,
        ResultWrite, Settlement,
    };

    fn reserve(tenant: &str, amount: i64, expires_in: i64) -> ReserveRequest {
        ReserveRequest {
            id: Uuid::now_v7(),
            tenant_id: tenant.into(),
            amount,
            expires_at: Utc::now() + Duration::seconds(expires_in),
        }
    }

    async fn sums(s: &DynStore, tenant: &str) -> i64 {
        let b = s.balance(tenant).await.expect("balance").expect("account");
        let sum: i64 = s
            .ledger(tenant)
            .await
            .expect("ledger")
            .iter()
            .map(|e| e.amount)
            .sum();
        assert_eq!(b, sum, "balance == sum(ledger)");
        b
    }

    pub async fn accounts_open_once(s: DynStore) {
        assert!(s.ensure_account("a", 5).await.expect("open"));
        assert!(!s.ensure_account("a", 500).await.expect("again"));
        assert_eq!(sums(&s, "a").await, 5);
        assert_eq!(s.balance("nobody").await.expect("balance"), None);
        let all = s.balances().await.expect("balances");
        assert!(all.contains(&("a".to_owned(), 5)), "{all:?}");
    }

    pub async fn a_batch_reserves_in_order(s: DynStore) {
        s.ensure_account("a", 5).await.expect("open");
        let reqs = [
            reserve("a", 2, 60),
            reserve("a", 2, 60),
            reserve("a", 2, 60),
            reserve("x", 1, 60),
        ];
        let out = s.reserve_batch(&reqs).await.expect("reserve");
        assert_eq!(
            out,
            [
                ReserveOutcome::Reserved { balance: 3 },
                ReserveOutcome::Reserved { balance: 1 },
                ReserveOutcome::Insufficient { balance: 1 },
                ReserveOutcome::NoAccount,
            ]
        );
        assert_eq!(s.open_reservations("a").await.expect("open"), 4);
        assert_eq!(sums(&s, "a").await, 1);

        // Settle one (keep 1 of 2) and the other after it expired (only the charge is booked).
        let v1 = record("a", Some("approved"), Utc::now());
        let v2 = record("a", Some("declined"), Utc::now());
        let write = |v: &VerificationRecord, r: &ReserveRequest, charged| ResultWrite {
            verification: v.clone(),
            attempts: vec![attempt(v, 1, "ok")],
            settlement: Some(Settlement {
                reservation_id: r.id,
                tenant_id: "a".into(),
                reserved: r.amount,
                charged,
            }),
            idempotency: None,
            idempotency_forget: None,
            face: None,
            webhooks: Vec::new(),
        };
        s.commit_results(&[write(&v1, &reqs[0], 1).into()])
            .await
            .expect("settle");
        assert_eq!(sums(&s, "a").await, 2);
        assert_eq!(
            s.expire_reservations(Utc::now() + Duration::seconds(120))
                .await
                .expect("sweep"),
            1
        );
        assert_eq!(sums(&s, "a").await, 4);
        s.commit_results(&[write(&v2, &reqs[1], 2).into()])
            .await
            .expect("late settle");
        assert_eq!(sums(&s, "a").await, 2);
        assert_eq!(s.open_reservations("a").await.expect("open"), 0);
        let kinds: Vec<(String, i64)> = s
            .ledger("a")
            .await
            .expect("ledger")
            .into_iter()
            .map(|e| (e.kind, e.amount))
            .collect();
        let k = |k: &str, a| (k.to_owned(), a);
        assert_eq!(
            kinds,
            [
                k("initial", 5),
                k("reserve", -2),
                k("reserve", -2),
                k("release", 2),
                k("charge", -1),
                k("expire", 2),
                k("charge", -2)
            ]
        );
        assert_eq!(s.get_verification("a", v2.id).await.expect("row").id, v2.id);
        assert_eq!(
            s.decided_since("a", Utc::now() - Duration::hours(1))
                .await
                .expect("n"),
            2
        );
    }

    /// A failure row may carry a release-only settlement for a reservation whose commit nobody
    /// heard (the database went away mid-reservation): it releases the reservation when the
    /// database took it, and books nothing when it did not.
    pub async fn an_unheard_reservation_is_released_by_its_failure_row(s: DynStore) {
        s.ensure_account("a", 10).await.expect("open");
        let taken = reserve("a", 3, 60);
        s.reserve_batch(std::slice::from_ref(&taken))
            .await
            .expect("reserve");
        assert_eq!(sums(&s, "a").await, 7);
        let never = reserve("a", 3, 60);
        let failed = |r: &ReserveRequest| {
            let v = record("a", None, Utc::now());
            ResultWrite {
                verification: v,
                attempts: vec![],
                settlement: Some(Settlement {
                    reservation_id: r.id,
                    tenant_id: "a".into(),
                    reserved: r.amount,
                    charged: 0,
                }),
                idempotency: None,
                idempotency_forget: None,
                face: None,
                webhooks: Vec::new(),
            }
        };
        s.commit_results(&[failed(&taken).into()])
            .await
            .expect("release");
        assert_eq!(sums(&s, "a").await, 10);
        assert_eq!(s.open_reservations("a").await.expect("open"), 0);
        s.commit_results(&[failed(&never).into()])
            .await
            .expect("a release of nothing");
        assert_eq!(sums(&s, "a").await, 10);
        assert_eq!(s.ledger("a").await.expect("ledger").len(), 3);
    }

    pub async fn adjustments_need_an_account(s: DynStore) {
        assert!(matches!(
            s.adjust_credits(&Adjustment::new("a", 5, "topup", "why"))
                .await,
            Err(StoreError::NotFound)
        ));
        s.ensure_account("a", 0).await.expect("open");
        assert_eq!(
            s.adjust_credits(&Adjustment::new("a", 5, "topup", "paid"))
                .await
                .expect("top up"),
            5
        );
        assert_eq!(
            s.adjust_credits(&Adjustment::new("a", -7, "adjust", "fix"))
                .await
                .expect("adjust"),
            -2
        );
        assert_eq!(sums(&s, "a").await, -2);
    }

    pub async fn idempotency_keys_claim_replay_and_expire(s: DynStore) {
        let now = Utc::now();
        let v = record("a", Some("approved"), now);
        let claim = |hash: &str, lock: i64, life: i64| IdemClaimRequest {
            tenant_id: "a".into(),
            key: "k1".into(),
            request_hash: hash.into(),
            owner: v.id,
            locked_until: now + Duration::seconds(lock),
            expires_at: now + Duration::seconds(life),
        };
        assert_eq!(
            s.idem_claim(&claim("h1", 60, 3600)).await.expect("claim"),
            IdemClaim::Claimed
        );
        assert_eq!(
            s.idem_claim(&claim("h1", 60, 3600)).await.expect("again"),
            IdemClaim::Running {
                request_hash: "h1".into()
            }
        );
        s.commit_results(&[std::sync::Arc::new(ResultWrite {
            verification: v.clone(),
            attempts: vec![],
            settlement: None,
            idempotency: Some(IdempotentAnswer {
                tenant_id: "a".into(),
                key: "k1".into(),
                http_status: 200,
                response: "{\"id\":1}".into(),
            }),
            idempotency_forget: None,
            face: None,
            webhooks: Vec::new(),
        })])
        .await
        .expect("commit");
        assert_eq!(
            s.idem_claim(&claim("h2", 60, 3600)).await.expect("done"),
            IdemClaim::Done {
                request_hash: "h1".into(),
                http_status: 200,
                response: "{\"id\":1}".into()
            }
        );
        // Another tenant's key of the same name is another key.
        let mut other = claim("h9", 60, 3600);
        other.tenant_id = "b".into();
        assert_eq!(s.idem_claim(&other).await.expect("b"), IdemClaim::Claimed);
        // A running claim whose lock lapsed (its instance died) is taken over.
        let mut stale = claim("h3", -1, 3600);
        stale.key = "k2".into();
        assert_eq!(s.idem_claim(&stale).await.expect("c"), IdemClaim::Claimed);
        let mut again = claim("h3", 60, 3600);
        again.key = "k2".into();
        assert_eq!(
            s.idem_claim(&again).await.expect("takeover"),
            IdemClaim::Claimed
        );
        // Expired keys are swept and can be claimed afresh.
        assert!(s.idem_sweep(now + Duration::hours(2)).await.expect("sweep") >= 3);
        assert_eq!(
            s.idem_claim(&claim("h4", 60, 3600)).await.expect("fresh"),
            IdemClaim::Claimed
        );
    }

    /// A request whose lock lapsed and was taken over commits late: the key keeps the new
    /// holder's claim, and only the new holder's commit completes it.
    pub async fn a_taken_over_key_is_completed_only_by_its_holder(s: DynStore) {
        let now = Utc::now();
        let (late, holder) = (
            record("a", Some("declined"), now),
            record("a", Some("approved"), now),
        );
        let claim = |owner: Uuid, lock: i64| IdemClaimRequest {
            tenant_id: "a".into(),
            key: "k3".into(),
            request_hash: "h".into(),
            owner,
            locked_until: now + Duration::seconds(lock),
            expires_at: now + Duration::seconds(3600),
        };
        let answer = |v: &VerificationRecord, body: &str| ResultWrite {
            verification: v.clone(),
            attempts: vec![],
            settlement: None,
            idempotency: Some(IdempotentAnswer {
                tenant_id: "a".into(),
                key: "k3".into(),
                http_status: 200,
                response: body.into(),
            }),
            idempotency_forget: None,
            face: None,
            webhooks: Vec::new(),
        };
        assert_eq!(
            s.idem_claim(&claim(late.id, -1)).await.expect("first"),
            IdemClaim::Claimed
        );
        assert_eq!(
            s.idem_claim(&claim(holder.id, 60)).await.expect("takeover"),
            IdemClaim::Claimed
        );
        s.commit_results(&[answer(&late, "late").into()])
            .await
            .expect("late commit");
        assert_eq!(
            s.idem_claim(&claim(Uuid::now_v7(), 60))
                .await
                .expect("still held"),
            IdemClaim::Running {
                request_hash: "h".into()
            }
        );
        // The late request's failure does not forget the holder's key either.
        let mut forget = answer(&late, "late");
        forget.verification.id = Uuid::now_v7();
        forget.idempotency = None;
        forget.idempotency_forget = Some(("a".into(), "k3".into()));
        s.commit_results(&[forget.into()])
            .await
            .expect("late forget");
        s.commit_results(&[answer(&holder, "holder").into()])
            .await
            .expect("holder commit");
        assert_eq!(
            s.idem_claim(&claim(Uuid::now_v7(), 60))
                .await
                .expect("done"),
            IdemClaim::Done {
                request_hash: "h".into(),
                http_status: 200,
                response: "holder".into()
            }
        );
    }
}

/// A kept face is written in the results' transaction, with its verification.
pub async fn a_kept_face_is_written_with_its_verification(s: DynStore) {
    use livegate::store::ledger::{KeptFace, ResultWrite};
    let v = record("a", Some("approved"), Utc::now());
    s.commit_results(&[std::sync::Arc::new(ResultWrite {
        verification: v.clone(),
        attempts: vec![],
        settlement: None,
        idempotency: None,
        idempotency_forget: None,
        face: Some(KeptFace {
            embedding: vec![0.5, -0.5, 0.25, 1.0],
            approved: true,
        }),
        webhooks: Vec::new(),
    })])
    .await
    .expect("commit");
    let face = s.verification_face("a", v.id).await.expect("face");
    assert_eq!(face.embedding, vec![0.5, -0.5, 0.25, 1.0]);
    assert!(face.approved);
    assert_eq!(face.verification_id, v.id);
}

/// One batch of results, as the group commit sends it: a verdict with attempts, a failure
/// row of nulls, and a verdict with its kept face and webhook messages, each read back as
/// written.
pub async fn a_batch_of_results_is_stored_as_written(s: DynStore) {
    use livegate::store::ledger::{KeptFace, ResultWrite};
    use livegate::store::webhooks::OutboxMessage;
    let write = |verification: VerificationRecord, attempts: Vec<AttemptRecord>| ResultWrite {
        verification,
        attempts,
        settlement: None,
        idempotency: None,
        idempotency_forget: None,
        face: None,
        webhooks: Vec::new(),
    };
    let at = Utc::now().trunc_subsecs(6);
    let verdict = record("a", Some("approved"), at);
    let attempts = vec![attempt(&verdict, 1, "error"), attempt(&verdict, 2, "ok")];
    let mut failure = record("a", None, at);
    failure.provider = None;
    failure.provider_request_id = None;
    failure.provider_decision = None;
    failure.score = None;
    failure.face = None;
    failure.faces_detected = None;
    failure.metadata = None;
    failure.external_id = None;
    failure.image_width = None;
    failure.http_status = 400;
    failure.error_code = Some("image_undecodable".into());
    failure.error_detail = Some("it's \"broken\" — $1".into());
    failure.trace_id = Some("0af7651916cd43dd8448eb211c80319c".into());
    let told = record("b", Some("review"), at);
    let messages: Vec<OutboxMessage> = (0..2)
        .map(|i| OutboxMessage {
            id: Uuid::now_v7(),
            tenant_id: "b".into(),
            url: format!("https://hooks.example/{i}"),
            event: "verification.completed".into(),
            verification_id: Some(told.id),
            payload: format!("{{\"n\":{i}}}"),
            created_at: at,
        })
        .collect();
    let mut with_extras = write(told.clone(), vec![attempt(&told, 1, "ok")]);
    with_extras.face = Some(KeptFace {
        embedding: vec![0.5, -0.5, 0.25, 1.0],
        approved: false,
    });
    with_extras.webhooks = messages.clone();
    s.commit_results(&[
        write(verdict.clone(), attempts.clone()).into(),
        write(failure.clone(), vec![]).into(),
        with_extras.into(),
    ])
    .await
    .expect("commit");
    assert_eq!(
        s.get_verification("a", verdict.id).await.expect("verdict"),
        verdict
    );
    assert_eq!(s.attempts(verdict.id).await.expect("attempts"), attempts);
    assert_eq!(
        s.get_verification("a", failure.id).await.expect("failure"),
        failure
    );
    assert!(s.attempts(failure.id).await.expect("none").is_empty());
    assert_eq!(s.get_verification("b", told.id).await.expect("told"), told);
    assert_eq!(s.attempts(told.id).await.expect("one").len(), 1);
    let face = s.verification_face("b", told.id).await.expect("face");
    assert_eq!(face.embedding, vec![0.5, -0.5, 0.25, 1.0]);
    assert!(!face.approved);
    for m in &messages {
        assert_eq!(&s.message(m.id).await.expect("message").message, m);
    }
}

/// A batch whose webhook messages need more parameters than one Postgres statement takes
/// (65 535) is stored whole all the same.
pub async fn a_batch_past_the_parameter_limit_is_stored_whole(s: DynStore) {
    use livegate::store::ledger::ResultWrite;
    use livegate::store::webhooks::OutboxMessage;
    let at = Utc::now().trunc_subsecs(6);
    let writes: Vec<std::sync::Arc<ResultWrite>> = (0..3)
        .map(|_| {
            let v = record("a", Some("approved"), at);
            let webhooks = (0..4000)
                .map(|i| OutboxMessage {
                    id: Uuid::now_v7(),
                    tenant_id: "a".into(),
                    url: format!("https://hooks.example/{i}"),
                    event: "verification.completed".into(),
                    verification_id: Some(v.id),
                    payload: "{}".into(),
                    created_at: at,
                })
                .collect();
            std::sync::Arc::new(ResultWrite {
                attempts: vec![attempt(&v, 1, "ok")],
                verification: v,
                settlement: None,
                idempotency: None,
                idempotency_forget: None,
                face: None,
                webhooks,
            })
        })
        .collect();
    s.commit_results(&writes).await.expect("commit");
    for w in &writes {
        let v = &w.verification;
        assert_eq!(&s.get_verification("a", v.id).await.expect("row"), v);
        assert_eq!(s.attempts(v.id).await.expect("attempt").len(), 1);
        for m in [&w.webhooks[0], &w.webhooks[3999]] {
            assert_eq!(&s.message(m.id).await.expect("message").message, m);
        }
    }
}

use ledger_cases::{
    a_batch_reserves_in_order, a_taken_over_key_is_completed_only_by_its_holder,
    accounts_open_once, adjustments_need_an_account,
    an_unheard_reservation_is_released_by_its_failure_row,
    idempotency_keys_claim_replay_and_expire,
};

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
    accounts_open_once,
    a_batch_reserves_in_order,
    an_unheard_reservation_is_released_by_its_failure_row,
    adjustments_need_an_account,
    idempotency_keys_claim_replay_and_expire,
    a_taken_over_key_is_completed_only_by_its_holder,
    a_kept_face_is_written_with_its_verification,
    a_batch_of_results_is_stored_as_written,
    a_batch_past_the_parameter_limit_is_stored_whole,
);
