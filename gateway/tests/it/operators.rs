//! What operators read and do: the SQL views and the agreement report on seeded shadow
//! traffic with known agreement (exact figures, both stores), and the review queue through
//! the API.

use std::sync::Arc;

use chrono::Utc;
use livegate::config::KeyHash;
use livegate::store::{AttemptRecord, DynStore, PgStore, VerificationRecord};
use serde_json::json;
use sqlx::Row;

use crate::harness::{ACME_KEY, BETA_KEY, Backend, Harness, Reply, SimUrls, postgres_url};

const ADMIN_KEY: &str = "lg_admin_operators_tests_0202";
const METERED_KEY: &str = "lg_test_operators_metered_0303";
const SELF_REVIEW_KEY: &str = "lg_test_operators_selfreview_0404";

fn yaml(u: &SimUrls) -> String {
    format!(
        r#"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
  kairos: {{ kind: kairos, base_url: "{kairos}", app_id: "id", app_key: "${{TEST_KAIROS_KEY}}", timeout_ms: 1500 }}
admin:
  keys: ["{admin}"]
tenants:
  t:
    keys: ["sha256:0000000000000000000000000000000000000000000000000000000000000001"]
    routing: {{ strategy: shadow, providers: [didit, kairos] }}
    credits: {{ initial: 100, cost: {{ didit: 2, kairos: 3 }} }}
  m:
    keys: ["{metered}"]
    routing: {{ strategy: single, providers: [didit] }}
    credits: {{ initial: 100, cost: {{ didit: 2 }} }}
  acme:
    keys: ["{acme}"]
    threshold: 0.8
    review_band: 0.2
    routing: {{ strategy: single, providers: [didit] }}
  beta:
    keys: ["{beta}"]
    threshold: 0.8
    review_band: 0.2
    routing: {{ strategy: single, providers: [didit] }}
  selfrev:
    keys: ["{selfrev}"]
    threshold: 0.8
    review_band: 0.2
    reviews: tenant
    routing: {{ strategy: single, providers: [didit] }}
"#,
        didit = u.didit,
        kairos = u.kairos,
        admin = KeyHash::of_key(ADMIN_KEY),
        metered = KeyHash::of_key(METERED_KEY),
        acme = KeyHash::of_key(ACME_KEY),
        beta = KeyHash::of_key(BETA_KEY),
        selfrev = KeyHash::of_key(SELF_REVIEW_KEY),
    )
}

/// Raw SQL on the store the harness runs on.
enum Raw {
    Pg(sqlx::PgPool),
    Lite(sqlx::SqlitePool),
}

impl Raw {
    /// Every row of `sql`, each column read as a number.
    async fn numbers(&self, sql: &str, cols: &[&str]) -> Vec<Vec<f64>> {
        macro_rules! read {
            ($rows:expr) => {
                $rows
                    .iter()
                    .map(|r| {
                        cols.iter()
                            .map(|c| {
                                r.try_get::<i64, _>(*c)
                                    .map(|v| v as f64)
                                    .or_else(|_| r.try_get::<f64, _>(*c))
                                    .unwrap_or_else(|e| panic!("{c}: {e}"))
                            })
                            .collect()
                    })
                    .collect()
            };
        }
        match self {
            Raw::Pg(p) => read!(sqlx::query(sql).fetch_all(p).await.expect(sql)),
            Raw::Lite(p) => read!(sqlx::query(sql).fetch_all(p).await.expect(sql)),
        }
    }
}

/// A harness on a store the test can also query directly.
async fn start(backend: Backend) -> Option<(Harness, Raw)> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir()
                .join(format!("livegate-ops-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).expect("dir");
            let url = format!("sqlite:{}", dir.join("ops.db").display());
            let store = livegate::store::connect(&url).await.expect("sqlite");
            store.migrate().await.expect("migrate");
            let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
            let h = Harness::start_on(store, yaml, Default::default(), None).await;
            Some((h, Raw::Lite(pool)))
        }
        Backend::Postgres => {
            let schema = format!("lg_test_{}", uuid::Uuid::new_v4().simple());
            let store = match PgStore::connect_in_schema(&postgres_url(), &schema).await {
                Ok(s) => Arc::new(s) as DynStore,
                Err(e) if std::env::var_os("CI").is_none() => {
                    eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
                    return None;
                }
                Err(e) => panic!("Postgres is required under CI: {e}"),
            };
            store.migrate().await.expect("migrate");
            let opts: sqlx::postgres::PgConnectOptions = postgres_url().parse().expect("url");
            let pool = sqlx::PgPool::connect_with(opts.options([("search_path", schema.as_str())]))
                .await
                .expect("pool");
            let h = Harness::start_on(store, yaml, Default::default(), None).await;
            Some((h, Raw::Pg(pool)))
        }
    }
}

fn attempt(
    v: uuid::Uuid,
    no: i32,
    provider: &str,
    shadow: bool,
    score: Option<f64>,
    ms: i64,
) -> AttemptRecord {
    AttemptRecord {
        verification_id: v,
        attempt_no: no,
        provider: provider.into(),
        provider_kind: provider.into(),
        outcome: if score.is_some() { "ok" } else { "error" }.into(),
        shadow,
        score,
        error_code: score.is_none().then(|| "provider_timeout".to_owned()),
        upstream_status: score.map(|_| 200),
        latency_ms: ms,
        raw_body: None,
        created_at: Utc::now(),
    }
}

/// Ten verifications of tenant `t` decided by Didit (threshold 0.5) with Kairos in the shadow:
/// 4 both approve (0.9 / 0.8), one each way (0.9 / 0.2 and 0.1 / 0.7), 4 both decline
/// (0.1 / 0.2); Didit took 10, 20, …, 100 ms and Kairos 5 ms more. One more verification's
/// shadow timed out: not a pair.
async fn seed(store: &DynStore) {
    let scores = [
        (0.9, 0.8),
        (0.9, 0.8),
        (0.9, 0.8),
        (0.9, 0.8),
        (0.9, 0.2),
        (0.1, 0.7),
        (0.1, 0.2),
        (0.1, 0.2),
        (0.1, 0.2),
        (0.1, 0.2),
    ];
    for (i, (p, s)) in scores.iter().enumerate() {
        let ms = 10 * (i as i64 + 1);
        let v = record("t", *p, ms);
        let a = vec![
            attempt(v.id, 1, "didit", false, Some(*p), ms),
            attempt(v.id, 2, "kairos", true, Some(*s), ms + 5),
        ];
        store.insert_verification(&v, &a).await.expect("insert");
    }
    let v = record("t", 0.9, 10);
    let a = vec![
        attempt(v.id, 1, "didit", false, Some(0.9), 10),
        attempt(v.id, 2, "kairos", true, None, 1500),
    ];
    store.insert_verification(&v, &a).await.expect("insert");
}

fn record(tenant: &str, score: f64, ms: i64) -> VerificationRecord {
    let id = uuid::Uuid::now_v7();
    let decision = if score >= 0.5 { "approved" } else { "declined" };
    VerificationRecord {
        id,
        tenant_id: tenant.into(),
        request_id: format!("req-{id}"),
        provider: Some("didit".into()),
        provider_request_id: None,
        decision: Some(decision.into()),
        provider_decision: None,
        is_live: score >= 0.5,
        score: Some(score),
        threshold: 0.5,
        spoof_type: None,
        warnings: json!([]),
        face: None,
        faces_detected: Some(1),
        image_sha256: None,
        image_format: None,
        image_width: None,
        image_height: None,
        external_id: None,
        metadata: None,
        http_status: 200,
        error_code: None,
        error_detail: None,
        latency_ms: ms,
        config_hash: None,
        trace_id: None,
        created_at: Utc::now(),
        erased_at: None,
    }
}

/// Pearson's r of the seeded scores, worked by hand: Σdxdy 0.76, Σdx² 1.6, Σdy² 0.849.
fn expected_correlation() -> f64 {
    0.76 / (1.6_f64 * 0.849).sqrt()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

async fn views_and_report_on_seeded_shadow_traffic(backend: Backend) {
    let Some((h, raw)) = start(backend).await else {
        return;
    };
    livegate::check::credits::open_accounts(&h.store, &h.state.runtime.load().config)
        .await
        .expect("accounts");
    seed(&h.store).await;
    // One metered verification through the API: its credits show in the daily view.
    h.sim_rule(json!({"score": 0.97})).await;
    let r = h
        .liveness(METERED_KEY, "image", crate::harness::jpeg(5), &[])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    let rows = raw
        .numbers(
            "SELECT pairs, agreement, mean_abs_score_diff, both_approved, \
             primary_approved_shadow_declined, primary_declined_shadow_approved, both_declined \
             FROM livegate_provider_agreement WHERE tenant_id = 't' \
             AND primary_provider = 'didit' AND shadow_provider = 'kairos'",
            &[
                "pairs",
                "agreement",
                "mean_abs_score_diff",
                "both_approved",
                "primary_approved_shadow_declined",
                "primary_declined_shadow_approved",
                "both_declined",
            ],
        )
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!(r[0], 10.0);
    assert!(close(r[1], 0.8), "{r:?}");
    assert!(close(r[2], 0.21), "{r:?}");
    assert_eq!(&r[3..], &[4.0, 1.0, 1.0, 4.0]);

    // Daily: 6 approved (one with the timed-out shadow), 4 declined; nearest-rank percentiles.
    let rows = raw
        .numbers(
            "SELECT verifications, latency_p50_ms, latency_p95_ms, credits \
             FROM livegate_daily_decisions WHERE tenant_id = 't' AND decision = 'declined'",
            &[
                "verifications",
                "latency_p50_ms",
                "latency_p95_ms",
                "credits",
            ],
        )
        .await;
    // Declined latencies 60, 70, 80, 90, 100: p50 is the 3rd, p95 the 5th.
    assert_eq!(rows, vec![vec![5.0, 80.0, 100.0, 0.0]]);
    let rows = raw
        .numbers(
            "SELECT verifications, credits FROM livegate_daily_decisions \
             WHERE tenant_id = 'm' AND decision = 'approved' AND provider = 'didit'",
            &["verifications", "credits"],
        )
        .await;
    assert_eq!(rows, vec![vec![1.0, 2.0]]);
    let rows = raw
        .numbers(
            "SELECT attempts FROM livegate_attempt_errors \
             WHERE provider = 'kairos' AND error_code = 'provider_timeout'",
            &["attempts"],
        )
        .await;
    assert_eq!(rows, vec![vec![1.0]]);

    // The report over the API: the same figures, and kappa, correlation, latency, cost.
    let r = Harness::call(
        h.client
            .get(h.url("/admin/v1/reports/agreement?tenant=t&since=1d"))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let p = &r.body["data"][0];
    assert_eq!(p["primary"], "didit");
    assert_eq!(p["shadow"], "kairos");
    assert_eq!(p["pairs"], 10);
    assert!(
        close(p["agreement"].as_f64().expect("agreement"), 0.8),
        "{p}"
    );
    assert!(close(p["kappa"].as_f64().expect("kappa"), 0.6), "{p}");
    assert!(
        close(
            p["score_correlation"].as_f64().expect("r"),
            expected_correlation()
        ),
        "{p}"
    );
    assert!(
        close(p["mean_abs_score_diff"].as_f64().expect("mad"), 0.21),
        "{p}"
    );
    assert_eq!(p["primary_approved_shadow_declined"], 1);
    assert_eq!(p["primary_declined_shadow_approved"], 1);
    assert_eq!(p["primary_latency_p50_ms"], 50);
    assert_eq!(p["primary_latency_p95_ms"], 100);
    assert_eq!(p["shadow_latency_p50_ms"], 55);
    assert_eq!(p["shadow_latency_p95_ms"], 105);
    assert_eq!(p["primary_cost"], 2.0);
    assert_eq!(p["shadow_cost"], 3.0);
    assert_eq!(r.body["data"].as_array().map(Vec::len), Some(1));

    let csv = h
        .client
        .get(h.url("/admin/v1/reports/agreement?tenant=t&format=csv"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .expect("csv");
    assert!(
        csv.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/csv")
    );
    let text = csv.text().await.expect("text");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("primary,shadow,pairs,agreement,kappa"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("didit,kairos,10,0.8000,0.6000,"),
        "{text}"
    );
    let r = Harness::call(
        h.client
            .get(h.url("/admin/v1/reports/agreement?since=yesterday"))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_since");
    let r = h.get(ACME_KEY, "/admin/v1/reports/agreement").await;
    assert_eq!(r.status, 403, "{}", r.body);
}

async fn post(h: &Harness, key: &str, path: &str, body: serde_json::Value) -> Reply {
    Harness::call(h.client.post(h.url(path)).bearer_auth(key).json(&body)).await
}

async fn in_review(h: &Harness, key: &str) -> String {
    // Threshold 0.8 with a 0.2 review band: 0.7 is `review`.
    h.sim_rule(json!({"score": 0.7})).await;
    let r = h.liveness(key, "image", crate::harness::jpeg(7), &[]).await;
    assert_eq!(r.body["decision"], "review", "{}", r.body);
    assert!(r.body["final_decision"].is_null(), "{}", r.body);
    assert_eq!(r.body["review"]["status"], "open", "{}", r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

async fn a_review_is_resolved_once_and_the_tenant_sees_it(backend: Backend) {
    let Some((h, raw)) = start(backend).await else {
        return;
    };
    let id = in_review(&h, ACME_KEY).await;

    let q = Harness::call(
        h.client
            .get(h.url("/admin/v1/reviews?tenant=acme"))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(q.status, 200, "{}", q.body);
    assert_eq!(
        q.body["data"][0]["verification_id"],
        id.as_str(),
        "{}",
        q.body
    );
    assert_eq!(q.body["data"][0]["review"]["status"], "open");
    let mine = h.get(ACME_KEY, "/v1/reviews").await;
    assert_eq!(
        mine.body["data"].as_array().map(Vec::len),
        Some(1),
        "{}",
        mine.body
    );
    assert_eq!(h.get(BETA_KEY, "/v1/reviews").await.body["data"], json!([]));

    // The tenant may not resolve its own (operators do, by default); nor may bad input pass.
    let body =
        json!({"decision": "declined", "reason": "document mismatch", "reviewer": "ana@ops"});
    let r = post(&h, ACME_KEY, &format!("/v1/reviews/{id}"), body.clone()).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = post(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/reviews/{id}"),
        json!({"decision": "review"}),
    )
    .await;
    assert_eq!(r.body["code"], "invalid_decision", "{}", r.body);
    let long = "x".repeat(201);
    let r = post(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/reviews/{id}"),
        json!({"decision": "approved", "reviewer": long}),
    )
    .await;
    assert_eq!(r.body["code"], "invalid_reviewer", "{}", r.body);
    let r = post(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/reviews/{}", uuid::Uuid::now_v7()),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);

    let r = post(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/reviews/{id}"),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["review"]["status"], "declined");
    let admin_id = KeyHash::of_key(ADMIN_KEY).id();
    assert_eq!(r.body["review"]["resolved_by"], format!("admin {admin_id}"));
    // Written once: a second resolution is refused and changes nothing.
    let again = post(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/reviews/{id}"),
        json!({"decision": "approved"}),
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(again.body["code"], "review_already_resolved");

    let got = h.get(ACME_KEY, &format!("/v1/verifications/{id}")).await;
    assert_eq!(got.body["decision"], "review", "{}", got.body);
    assert_eq!(got.body["final_decision"], "declined", "{}", got.body);
    assert_eq!(got.body["review"]["reviewer"], "ana@ops");
    assert_eq!(got.body["review"]["reason"], "document mismatch");
    let listed = h.get(ACME_KEY, "/v1/verifications").await;
    assert_eq!(
        listed.body["data"][0]["final_decision"], "declined",
        "{}",
        listed.body
    );
    // The audit row, and the queue's view of it.
    let audit = raw
        .numbers(
            "SELECT COUNT(*) AS n FROM reviews WHERE decision = 'declined' AND reviewer = 'ana@ops'",
            &["n"],
        )
        .await;
    assert_eq!(audit, vec![vec![1.0]]);
    let open = raw
        .numbers(
            "SELECT COUNT(*) AS n FROM livegate_review_queue WHERE status = 'open'",
            &["n"],
        )
        .await;
    assert_eq!(open, vec![vec![0.0]]);
    let q = Harness::call(
        h.client
            .get(h.url("/admin/v1/reviews"))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(
        q.body["data"],
        json!([]),
        "resolved reviews are not open: {}",
        q.body
    );
    let q = Harness::call(
        h.client
            .get(h.url("/admin/v1/reviews?status=declined"))
            .bearer_auth(ADMIN_KEY),
    )
    .await;
    assert_eq!(
        q.body["data"][0]["verification_id"],
        id.as_str(),
        "{}",
        q.body
    );

    // `reviews: tenant`: the tenant resolves its own, not another's.
    let own = in_review(&h, SELF_REVIEW_KEY).await;
    let r = post(
        &h,
        SELF_REVIEW_KEY,
        &format!("/v1/reviews/{id}"),
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post(
        &h,
        SELF_REVIEW_KEY,
        &format!("/v1/reviews/{own}"),
        json!({"decision": "approved"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let key_id = KeyHash::of_key(SELF_REVIEW_KEY).id();
    assert_eq!(r.body["review"]["resolved_by"], format!("tenant {key_id}"));
    let got = h
        .get(SELF_REVIEW_KEY, &format!("/v1/verifications/{own}"))
        .await;
    assert_eq!(got.body["final_decision"], "approved", "{}", got.body);
    // An approved verification has its decision as the final one, and no review.
    h.sim_rule(json!({"score": 0.97})).await;
    let ok = h
        .liveness(ACME_KEY, "image", crate::harness::jpeg(8), &[])
        .await;
    assert_eq!(ok.body["final_decision"], "approved", "{}", ok.body);
    assert!(ok.body.get("review").is_none(), "{}", ok.body);
    let r = post(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/reviews/{}", ok.body["id"].as_str().expect("id")),
        body,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

crate::backend_matrix!(
    backend;
    views_and_report_on_seeded_shadow_traffic,
    a_review_is_resolved_once_and_the_tenant_sees_it,
);

/// `livegate report agreement`: aligned columns in a terminal, CSV for spreadsheets.
#[test]
fn the_report_command_prints_a_table_and_csv() {
    let dir =
        std::env::temp_dir().join(format!("livegate-report-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = format!("sqlite:{}", dir.join("r.db").display());
    let config = dir.join("livegate.yaml");
    let text = yaml(&SimUrls {
        didit: "http://127.0.0.1:9",
        kairos: "http://127.0.0.1:9",
        collections: "http://127.0.0.1:9",
    });
    std::fs::write(&config, format!("database_url: \"{db}\"\n{text}")).expect("config");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    rt.block_on(async {
        let s = livegate::store::connect(&db).await.expect("db");
        s.migrate().await.expect("migrate");
        seed(&s).await;
    });
    let run = |format: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
            .args([
                "report",
                "agreement",
                "--tenant",
                "t",
                "--format",
                format,
                "--config",
            ])
            .arg(&config)
            .env("TEST_DIDIT_KEY", "k")
            .env("TEST_KAIROS_KEY", "k")
            .env_remove("DATABASE_URL")
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let table = run("table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert_eq!(
        lines[0].len(),
        lines[1].len(),
        "columns not aligned:\n{table}"
    );
    assert!(lines[1].starts_with("didit    kairos"), "{table}");
    let agreement_at = lines[0].find("agreement").expect("header");
    assert_eq!(
        &lines[1][agreement_at..agreement_at + 9],
        "   0.8000",
        "{table}"
    );
    let csv = run("csv");
    assert!(csv.contains("\r\ndidit,kairos,10,0.8000,0.6000,"), "{csv}");
    let json = run("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["data"][0]["pairs"], 10);
}
