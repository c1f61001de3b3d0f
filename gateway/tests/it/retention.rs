//! Retention and erasure: what `DELETE /v1/subjects/{external_id}` and
//! `DELETE /v1/verifications/{id}` leave behind (a scan of every column that can hold data),
//! the purge pass on both stores (exactly what is due, in bounded batches, one instance at a
//! time), `livegate purge` and `retention: 0` at record time.

use std::sync::Arc;

use chrono::{Duration, Utc};
use livegate::config::{Config, KeyHash};
use livegate::store::ledger::{KeptFace, ResultWrite};
use livegate::store::purge::{Plan, PurgeOutcome, purge_once};
use livegate::store::retention::PurgeKind;
use livegate::store::{AttemptRecord, DynStore, PgStore, VerificationRecord};
use serde_json::json;
use sqlx::Row;

use crate::duplicates::DUP_KEY;
use crate::engine_server::{models_dir, sample};
use crate::face_matching::photo;
use crate::harness::{
    ACME_KEY, BETA_KEY, Backend, Harness, Reply, SimUrls, open_store, postgres_url,
};

const ADMIN_KEY: &str = "lg_admin_retention_tests_0101";
const SUBJECT: &str = "subject-SECRET-4711";
const META: &str = "meta-SECRET-0815";

fn yaml(u: &SimUrls) -> String {
    format!(
        r#"
models_dir: "{models}"
providers:
  didit: {{ kind: didit, base_url: "{didit}", api_key: "${{TEST_DIDIT_KEY}}", timeout_ms: 1500 }}
admin:
  keys: ["{admin}"]
tenants:
  dup_t:
    keys: ["{dup}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
    duplicates: true
    blocklist: true
    store_raw: full
    credits: {{ initial: 100 }}
  acme:
    keys: ["{acme}"]
    threshold: 0.8
    routing: {{ strategy: single, providers: [didit] }}
  beta:
    keys: ["{beta}"]
    threshold: 0.5
    routing: {{ strategy: single, providers: [didit] }}
    retention: {{ raw_bodies: 0, metadata: 0 }}
"#,
        models = models_dir(),
        didit = u.didit,
        admin = KeyHash::of_key(ADMIN_KEY),
        dup = KeyHash::of_key(DUP_KEY),
        acme = KeyHash::of_key(ACME_KEY),
        beta = KeyHash::of_key(BETA_KEY),
    )
}

async fn delete(h: &Harness, key: &str, path: &str) -> Reply {
    let req = h.client.delete(h.url(path)).bearer_auth(key);
    Harness::call(req).await
}

fn codes(r: &Reply) -> Vec<String> {
    r.body["warnings"]
        .as_array()
        .map(|ws| {
            ws.iter()
                .filter_map(|w| w["code"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Every cell of every table in `schema` whose type can hold text, bytes or a vector, as
/// `(table.column, text or bytes)`.
async fn every_cell(pool: &sqlx::PgPool, schema: &str) -> Vec<(String, Vec<u8>)> {
    let cols = sqlx::query(
        "SELECT table_name::text AS t, column_name::text AS c, data_type::text AS d, \
         udt_name::text AS u FROM information_schema.columns WHERE table_schema = $1 \
         AND table_name NOT LIKE '\\_sqlx%'",
    )
    .bind(schema)
    .fetch_all(pool)
    .await
    .expect("columns");
    let mut cells = Vec::new();
    let mut scanned = 0;
    for c in cols {
        let (t, col, d, u): (String, String, String, String) =
            (c.get("t"), c.get("c"), c.get("d"), c.get("u"));
        let read = match (d.as_str(), u.as_str()) {
            ("bytea", _) => {
                format!("SELECT \"{col}\" AS v FROM \"{t}\" WHERE \"{col}\" IS NOT NULL")
            }
            ("text" | "character varying" | "jsonb" | "json" | "uuid", _)
            | ("USER-DEFINED", "vector" | "halfvec") => format!(
                "SELECT convert_to(\"{col}\"::text, 'UTF8') AS v FROM \"{t}\" WHERE \"{col}\" IS NOT NULL"
            ),
            _ => continue,
        };
        scanned += 1;
        for row in sqlx::query(&read).fetch_all(pool).await.expect("cells") {
            cells.push((format!("{t}.{col}"), row.get::<Vec<u8>, _>("v")));
        }
    }
    assert!(scanned > 20, "only {scanned} columns scanned");
    cells
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `vector` text (`[0.1,0.2,…]`) that is `embedding` to within float printing.
fn same_vector(text: &[u8], embedding: &[f32]) -> bool {
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return false;
    };
    let v: Vec<f32> = inner
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    v.len() == embedding.len() && v.iter().zip(embedding).all(|(a, b)| (a - b).abs() < 1e-3)
}

/// A subject's erasure on Postgres, scanned column by column: neither the external id, the
/// metadata, the vendor's raw body, the image hash nor the face embedding is anywhere, while
/// the rows stay as tombstones and the ledger still sums to the balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subjects_erasure_leaves_nothing_of_them_in_any_column() {
    let schema = format!("lg_test_{}", uuid::Uuid::new_v4().simple());
    let store = match PgStore::connect_in_schema(&postgres_url(), &schema).await {
        Ok(s) => Arc::new(s) as DynStore,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
            return;
        }
        Err(e) => panic!("Postgres is required under CI: {e}"),
    };
    store.migrate().await.expect("migrate");
    let h = Harness::start_on(store, yaml, Default::default(), None).await;
    livegate::check::credits::open_accounts(&h.store, &h.state.runtime.load().config)
        .await
        .expect("accounts");
    let opts: sqlx::postgres::PgConnectOptions = postgres_url().parse().expect("url");
    let pool = sqlx::PgPool::connect_with(opts.options([("search_path", schema.as_str())]))
        .await
        .expect("pool");

    h.sim_rule(json!({"score": 0.97})).await;
    let meta = json!({"note": META}).to_string();
    let fields = [("external_id", SUBJECT), ("metadata", meta.as_str())];
    // Through an Idempotency-Key too: the stored answer is the verification's JSON.
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(photo("astronaut.jpg")).file_name("a.jpg"),
        )
        .text("external_id", SUBJECT)
        .text("metadata", meta.clone());
    let first = Harness::call(
        h.client
            .post(h.url("/v1/liveness"))
            .bearer_auth(DUP_KEY)
            .header("idempotency-key", "erase-me-1")
            .multipart(form),
    )
    .await;
    assert_eq!(first.body["decision"], "approved", "{}", first.body);
    let second = h
        .liveness(DUP_KEY, "image", photo("astronaut_variant.jpg"), &fields)
        .await;
    assert_eq!(codes(&second), ["DUPLICATED_FACE"], "{}", second.body);
    let other = h
        .liveness(
            DUP_KEY,
            "image",
            sample("real.jpg"),
            &[("external_id", "someone-else")],
        )
        .await;
    assert_eq!(other.body["decision"], "approved", "{}", other.body);
    let ids: Vec<uuid::Uuid> = [&first, &second]
        .iter()
        .map(|r| uuid::Uuid::parse_str(r.body["id"].as_str().expect("id")).expect("uuid"))
        .collect();
    let other_id = uuid::Uuid::parse_str(other.body["id"].as_str().expect("id")).expect("uuid");

    // What must go, read before the erasure.
    let mut secrets: Vec<(&str, Vec<u8>)> = vec![
        ("external id", SUBJECT.as_bytes().to_vec()),
        ("metadata", META.as_bytes().to_vec()),
    ];
    let mut embeddings = Vec::new();
    for id in &ids {
        let (row, attempts) = h.row("dup_t", &id.to_string()).await;
        let raw = attempts[0]
            .raw_body
            .clone()
            .expect("raw body kept (store_raw: full)");
        secrets.push(("raw body", raw.into_bytes()));
        secrets.push(("image hash", row.image_sha256.expect("hash").into_bytes()));
        let face = h.store.verification_face("dup_t", *id).await.expect("face");
        secrets.push((
            "embedding",
            livegate_engine::server::embedding_to_bytes(&face.embedding),
        ));
        embeddings.push(face.embedding);
    }
    // One of the faces on the blocklist: removed only when asked.
    let r = Harness::call(
        h.client
            .post(h.url("/admin/v1/tenants/dup_t/blocklist"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"verification_id": ids[0]})),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let cells = every_cell(&pool, &schema).await;
    for (what, bytes) in &secrets {
        assert!(
            cells.iter().any(|(_, v)| contains(v, bytes)),
            "the scan cannot see the {what} even before the erasure"
        );
    }

    // Another tenant cannot erase them, nor learn they exist.
    let r = delete(&h, ACME_KEY, &format!("/v1/verifications/{}", ids[0])).await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(r.body["code"], "not_found", "{}", r.body);
    let r = delete(&h, ACME_KEY, &format!("/v1/subjects/{SUBJECT}")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["verifications"], 0, "{}", r.body);

    let r = delete(
        &h,
        DUP_KEY,
        &format!("/v1/subjects/{SUBJECT}?blocklist=true"),
    )
    .await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["scope"], "subject");
    assert_eq!(r.body["verifications"], 2, "{}", r.body);
    assert_eq!(r.body["faces"], 2, "{}", r.body);
    assert_eq!(r.body["blocklist"], 1, "{}", r.body);
    assert!(!r.body.to_string().contains(SUBJECT), "{}", r.body);
    let receipt = r.body["receipt_id"].as_str().expect("receipt").to_owned();

    let cells = every_cell(&pool, &schema).await;
    for (what, bytes) in &secrets {
        let found: Vec<&str> = cells
            .iter()
            .filter(|(_, v)| contains(v, bytes))
            .map(|(c, _)| c.as_str())
            .collect();
        assert!(found.is_empty(), "the {what} is still in {found:?}");
    }
    for e in &embeddings {
        let found: Vec<&str> = cells
            .iter()
            .filter(|(_, v)| same_vector(v, e))
            .map(|(c, _)| c.as_str())
            .collect();
        assert!(found.is_empty(), "the embedding is still in {found:?}");
    }
    let audit = sqlx::query("SELECT id::text AS id, scope, verifications FROM erasures")
        .fetch_all(&pool)
        .await
        .expect("erasures");
    assert!(
        audit.iter().any(|r| r.get::<String, _>("id") == receipt),
        "the receipt is kept in erasures"
    );

    // Tombstones: still listed and counted, with their decisions, marked erased.
    for id in &ids {
        let got = h.get(DUP_KEY, &format!("/v1/verifications/{id}")).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert!(got.body["erased_at"].is_string(), "{}", got.body);
        assert_eq!(got.body["decision"], "approved");
        assert!(got.body["external_id"].is_null() && got.body["metadata"].is_null());
    }
    assert_eq!(h.row_count("dup_t").await, 3);
    // The other person is untouched.
    let (kept, _) = h.row("dup_t", &other_id.to_string()).await;
    assert_eq!(kept.external_id.as_deref(), Some("someone-else"));
    assert!(kept.erased_at.is_none());
    // The ledger still sums to the balance, and three checks are still charged.
    let ledger = h.store.ledger("dup_t").await.expect("ledger");
    let balance = h
        .store
        .balance("dup_t")
        .await
        .expect("balance")
        .expect("account");
    assert_eq!(ledger.iter().map(|e| e.amount).sum::<i64>(), balance);
    assert_eq!(
        ledger.iter().filter(|e| e.kind == "charge").count(),
        3,
        "{ledger:?}"
    );

    // The erased face is not a duplicate any more: this gateway's index forgot it.
    let again = h
        .liveness(DUP_KEY, "image", photo("astronaut.jpg"), &[])
        .await;
    assert_eq!(again.body["decision"], "approved", "{}", again.body);
    assert!(codes(&again).is_empty(), "{}", again.body);

    // Idempotent: the same erasure again removes nothing more.
    let r = delete(&h, DUP_KEY, &format!("/v1/subjects/{SUBJECT}")).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["verifications"], 0, "{}", r.body);
}

/// One verification: 202 with a receipt, the same receipt again, 404 for another tenant's
/// key and for an unknown id; the admin route for any tenant.
async fn one_verification_is_erased_with_a_receipt(h: Harness) {
    h.sim_rule(json!({"score": 0.97})).await;
    let r = h
        .liveness(
            ACME_KEY,
            "image",
            crate::harness::jpeg(1),
            &[("external_id", SUBJECT)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let id = r.body["id"].as_str().expect("id").to_owned();
    let path = format!("/v1/verifications/{id}");

    let r = delete(&h, BETA_KEY, &path).await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = delete(
        &h,
        ACME_KEY,
        &format!("/v1/verifications/{}", uuid::Uuid::now_v7()),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = delete(&h, ACME_KEY, "/v1/verifications/not-a-uuid").await;
    assert_eq!(r.status, 404, "{}", r.body);
    let r = delete(&h, ACME_KEY, &format!("{path}?blocklist=maybe")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.body["code"], "invalid_query", "{}", r.body);

    let first = delete(&h, ACME_KEY, &path).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.body["verification_id"], id.as_str());
    assert_eq!(first.body["verifications"], 1);
    assert_eq!(first.body["requested_by"], "tenant");
    let again = delete(&h, ACME_KEY, &path).await;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["receipt_id"], first.body["receipt_id"]);

    let (row, attempts) = h.row("acme", &id).await;
    assert!(row.erased_at.is_some());
    assert!(row.external_id.is_none() && row.image_sha256.is_none());
    assert!(
        attempts.iter().all(|a| a.raw_body.is_none()),
        "{attempts:?}"
    );
    assert_eq!(row.decision.as_deref(), Some("approved"));

    // An operator, for any tenant; a tenant key is not an admin key.
    let other = h
        .liveness(BETA_KEY, "image", crate::harness::jpeg(2), &[])
        .await;
    let oid = other.body["id"].as_str().expect("id").to_owned();
    let admin_path = format!("/admin/v1/tenants/beta/verifications/{oid}");
    let r = delete(&h, ACME_KEY, &admin_path).await;
    assert!(r.status == 401 || r.status == 403, "{}", r.body);
    let r = delete(&h, ADMIN_KEY, &admin_path).await;
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.body["requested_by"], "admin");
    let r = delete(
        &h,
        ADMIN_KEY,
        &format!("/admin/v1/tenants/acme/verifications/{oid}"),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.body);
}

/// `retention: {raw_bodies: 0, metadata: 0}`: answered to the caller, never stored.
async fn zero_retention_is_never_stored(h: Harness) {
    h.sim_rule(json!({"score": 0.97})).await;
    let meta = json!({"note": META}).to_string();
    let r = h
        .liveness(
            BETA_KEY,
            "image",
            crate::harness::jpeg(3),
            &[("external_id", SUBJECT), ("metadata", meta.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let (row, attempts) = h.row("beta", r.body["id"].as_str().expect("id")).await;
    assert!(row.external_id.is_none(), "{row:?}");
    assert!(row.metadata.is_none(), "{row:?}");
    assert!(
        attempts.iter().all(|a| a.raw_body.is_none()),
        "{attempts:?}"
    );
    // Another tenant with the defaults keeps them.
    let r = h
        .liveness(
            ACME_KEY,
            "image",
            crate::harness::jpeg(3),
            &[("external_id", SUBJECT)],
        )
        .await;
    let (row, attempts) = h.row("acme", r.body["id"].as_str().expect("id")).await;
    assert_eq!(row.external_id.as_deref(), Some(SUBJECT));
    assert!(attempts[0].raw_body.is_some());
}

crate::backend_matrix!(
    yaml = yaml;
    one_verification_is_erased_with_a_receipt,
    zero_retention_is_never_stored,
    the_purge_job_runs_and_is_counted,
);

// ---- the purge ----

const PURGE_YAML: &str = r#"
providers:
  didit: { kind: didit, base_url: "http://127.0.0.1:9", api_key: "k" }
retention: { purge_batch: 2 }
tenants:
  a:
    keys: ["sha256:0000000000000000000000000000000000000000000000000000000000000001"]
    routing: { strategy: single, providers: [didit] }
    retention: { raw_bodies: 7d, metadata: 30d, embeddings: 60d, verifications: 90d }
"#;

fn plan() -> Plan {
    livegate::cli::purge::plan(Some(&Config::parse(PURGE_YAML, &|_| None).expect("config")))
}

fn row(tenant: &str, at: chrono::DateTime<Utc>) -> (VerificationRecord, Vec<AttemptRecord>) {
    let id = uuid::Uuid::now_v7();
    let v = VerificationRecord {
        id,
        tenant_id: tenant.into(),
        request_id: format!("req-{id}"),
        provider: Some("didit".into()),
        provider_request_id: None,
        decision: Some("approved".into()),
        provider_decision: None,
        is_live: true,
        score: Some(0.9),
        threshold: 0.5,
        spoof_type: None,
        warnings: json!([]),
        face: None,
        faces_detected: Some(1),
        image_sha256: Some("ab".repeat(32)),
        image_format: Some("jpeg".into()),
        image_width: Some(10),
        image_height: Some(10),
        external_id: Some("person".into()),
        metadata: Some(json!({"k": "v"})),
        http_status: 200,
        error_code: None,
        error_detail: None,
        latency_ms: 5,
        config_hash: None,
        trace_id: None,
        created_at: at,
        erased_at: None,
    };
    let a = AttemptRecord {
        verification_id: id,
        attempt_no: 1,
        provider: "didit".into(),
        provider_kind: "didit".into(),
        outcome: "ok".into(),
        shadow: false,
        score: Some(0.9),
        error_code: None,
        upstream_status: Some(200),
        latency_ms: 5,
        raw_body: Some("{\"raw\":true}".into()),
        created_at: at,
    };
    (v, vec![a])
}

/// Commits `v` with its attempts and an approved face, as a verdict with face checks is.
async fn store_with_face(store: &DynStore, v: VerificationRecord, a: Vec<AttemptRecord>) {
    let write = Arc::new(ResultWrite {
        verification: v,
        attempts: a,
        settlement: None,
        idempotency: None,
        idempotency_forget: None,
        face: Some(KeptFace {
            embedding: vec![0.088_388_35; 128],
            approved: true,
        }),
        webhooks: Vec::new(),
    });
    store.commit_results(&[write]).await.expect("commit");
}

/// Rows of tenant `a` (7d raw bodies, 30d metadata, 90d rows) aged 1, 10, 40 and 100 days, and
/// of `gone`, a tenant no longer configured (the defaults: 30d raw bodies, 400d rows), aged
/// 10 and 500 days.
async fn purge_removes_exactly_what_is_due(backend: Backend) {
    let Some(store) = open_store(backend).await else {
        return;
    };
    let now = Utc::now();
    let mut ids = std::collections::HashMap::new();
    for (tenant, days) in [
        ("a", 1),
        ("a", 10),
        ("a", 40),
        ("a", 100),
        ("gone", 10),
        ("gone", 500),
    ] {
        let (v, a) = row(tenant, now - Duration::days(days));
        store.insert_verification(&v, &a).await.expect("insert");
        ids.insert((tenant, days), v.id);
    }
    let plan = plan();
    assert_eq!(plan.batch, 2);

    let dry = purge_once(&store, &plan, true, now).await.expect("dry run");
    let PurgeOutcome::Ran(dry) = dry else {
        panic!("a dry run needs no turn")
    };
    let expected = [
        (PurgeKind::Verifications, 2),
        (PurgeKind::RawBodies, 2),
        (PurgeKind::Metadata, 1),
        (PurgeKind::Embeddings, 0),
    ];
    for (kind, n) in expected {
        assert_eq!(
            dry.removed.get(&kind).copied(),
            Some(n),
            "dry {kind:?}: {dry:?}"
        );
    }
    assert!(
        store.get_verification("a", ids[&("a", 100)]).await.is_ok(),
        "a dry run removed a row"
    );

    let PurgeOutcome::Ran(report) = purge_once(&store, &plan, false, now).await.expect("purge")
    else {
        panic!("busy with no other instance")
    };
    for (kind, n) in expected {
        assert_eq!(
            report.removed.get(&kind).copied(),
            Some(n),
            "{kind:?}: {report:?}"
        );
    }
    // Two raw bodies of `a` at two per batch: a full batch, then an empty one to be sure; the
    // default scope's one batch.
    assert_eq!(
        report.batches.get(&PurgeKind::RawBodies).copied(),
        Some(3),
        "{report:?}"
    );

    let get = |t: &'static str, d: i64| {
        let store = store.clone();
        let id = ids[&(t, d)];
        async move {
            let v = store.get_verification(t, id).await.ok();
            let a = store.attempts(id).await.expect("attempts");
            (v, a)
        }
    };
    let (v, a) = get("a", 1).await;
    let v = v.expect("1 day old: kept");
    assert!(v.metadata.is_some() && v.external_id.is_some());
    assert!(a[0].raw_body.is_some());
    let (v, a) = get("a", 10).await;
    assert!(v.expect("kept").metadata.is_some());
    assert!(a[0].raw_body.is_none(), "raw body past 7d kept");
    let (v, _) = get("a", 40).await;
    let v = v.expect("kept");
    assert!(
        v.metadata.is_none() && v.external_id.is_none(),
        "metadata past 30d kept"
    );
    let (v, a) = get("a", 100).await;
    assert!(v.is_none() && a.is_empty(), "a row past 90d kept");
    let (v, a) = get("gone", 10).await;
    assert!(
        v.is_some() && a[0].raw_body.is_some(),
        "defaults applied too early"
    );
    let (v, a) = get("gone", 500).await;
    assert!(
        v.is_none() && a.is_empty(),
        "a row past the default 400d kept"
    );

    // Nothing more is due: a second pass removes nothing.
    let PurgeOutcome::Ran(again) = purge_once(&store, &plan, false, now).await.expect("purge")
    else {
        panic!("busy")
    };
    assert_eq!(again.total(), 0, "{again:?}");

    // Faces: kept 60 days for `a`.
    let (v, a) = row("a", now);
    store_with_face(&store, v.clone(), a).await;
    assert_eq!(
        store
            .approved_faces_after("a", 0)
            .await
            .expect("faces")
            .len(),
        1
    );
    let PurgeOutcome::Ran(r) = purge_once(&store, &plan, false, now + Duration::days(59))
        .await
        .expect("purge")
    else {
        panic!("busy")
    };
    assert_eq!(
        r.removed.get(&PurgeKind::Embeddings).copied(),
        Some(0),
        "{r:?}"
    );
    let PurgeOutcome::Ran(r) = purge_once(&store, &plan, false, now + Duration::days(61))
        .await
        .expect("purge")
    else {
        panic!("busy")
    };
    assert_eq!(
        r.removed.get(&PurgeKind::Embeddings).copied(),
        Some(1),
        "{r:?}"
    );
    assert!(
        store
            .approved_faces_after("a", 0)
            .await
            .expect("faces")
            .is_empty()
    );
    // Every instance learns that faces went (and drops its in-memory index).
    assert!(
        store
            .setting(livegate::store::retention::FACES_REMOVED)
            .await
            .expect("setting")
            .is_some()
    );
}

mod purge {
    use super::*;
    crate::backend_matrix!(
        backend;
        purge_removes_exactly_what_is_due,
    );
}

/// Two instances on one Postgres: while one holds the purge turn, the other's pass is
/// skipped, and runs once the turn is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_never_purge_at_once() {
    let schema = format!("lg_test_{}", uuid::Uuid::new_v4().simple());
    let mut stores: Vec<DynStore> = Vec::new();
    for _ in 0..2 {
        match PgStore::connect_in_schema(&postgres_url(), &schema).await {
            Ok(s) => stores.push(Arc::new(s)),
            Err(e) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
                return;
            }
            Err(e) => panic!("Postgres is required under CI: {e}"),
        }
    }
    stores[0].migrate().await.expect("migrate");
    let (v, a) = row("a", Utc::now() - Duration::days(100));
    stores[0].insert_verification(&v, &a).await.expect("insert");

    let held = stores[0].purge_turn().await.expect("turn").expect("free");
    let outcome = purge_once(&stores[1], &plan(), false, Utc::now())
        .await
        .expect("purge");
    assert_eq!(outcome, PurgeOutcome::Busy);
    assert!(stores[1].purge_turn().await.expect("turn").is_none());
    assert!(
        stores[1].get_verification("a", v.id).await.is_ok(),
        "purged while busy"
    );
    held.release().await;

    // Both at once: at least one runs (a pass skipped is never an error).
    let p = plan();
    for _ in 0..5 {
        let (x, y) = tokio::join!(
            purge_once(&stores[0], &p, false, Utc::now()),
            purge_once(&stores[1], &p, false, Utc::now()),
        );
        let ran = [x.expect("x"), y.expect("y")]
            .iter()
            .filter(|o| matches!(o, PurgeOutcome::Ran(_)))
            .count();
        assert!(ran >= 1, "neither ran");
    }
    assert!(
        stores[1].get_verification("a", v.id).await.is_err(),
        "never purged"
    );
}

/// The job `serve` runs: a pass soon after start, counted in `livegate_purged_total`.
async fn the_purge_job_runs_and_is_counted(h: Harness) {
    let (v, a) = row("acme", Utc::now() - Duration::days(500));
    h.store.insert_verification(&v, &a).await.expect("insert");
    livegate::cli::purge::spawn(
        h.store.clone(),
        h.state.runtime.clone(),
        h.state.metrics.clone(),
        h.state.identity.clone(),
        std::time::Duration::from_millis(10),
    );
    // The row goes during the pass, the count once the pass is over.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let line = loop {
        let text = crate::harness::get_text(&h.client, &h.url("/metrics")).await;
        if let Some(l) = text
            .lines()
            .find(|l| l.starts_with("livegate_purged_total{kind=\"verifications\"}"))
        {
            break l.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never counted a purge:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(line.ends_with(" 1"), "{line}");
    assert!(
        h.store.get_verification("acme", v.id).await.is_err(),
        "the row is still there"
    );
}

/// `livegate purge --dry-run` counts; `livegate purge` removes and says what.
#[test]
fn the_purge_command_reports_what_it_removed() {
    let dir =
        std::env::temp_dir().join(format!("livegate-purge-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = format!("sqlite:{}", dir.join("p.db").display());
    let config = dir.join("livegate.yaml");
    std::fs::write(&config, format!("database_url: \"{db}\"\n{PURGE_YAML}")).expect("config");
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let (v, a) = row("a", Utc::now() - Duration::days(100));
    rt.block_on(async {
        let s = livegate::store::connect(&db).await.expect("db");
        s.migrate().await.expect("migrate");
        s.insert_verification(&v, &a).await.expect("insert");
    });
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_livegate"))
            .arg("purge")
            .arg("--config")
            .arg(&config)
            .args(extra)
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
    let dry = run(&["--dry-run"]);
    assert!(
        dry.contains("due: verifications=1 raw_bodies=0 metadata=0 embeddings=0"),
        "{dry}"
    );
    let done = run(&[]);
    assert!(done.contains("removed: verifications=1"), "{done}");
    let again = run(&[]);
    assert!(again.contains("removed: verifications=0"), "{again}");
    rt.block_on(async {
        let s = livegate::store::connect(&db).await.expect("db");
        assert!(s.get_verification("a", v.id).await.is_err());
    });
}

#[test]
fn check_config_refuses_retention_that_cannot_work() {
    let base = |extra: &str| {
        format!(
            r#"
providers:
  didit: {{ kind: didit, base_url: "http://127.0.0.1:9", api_key: "k" }}
tenants:
  a:
    keys: ["sha256:0000000000000000000000000000000000000000000000000000000000000001"]
    routing: {{ strategy: single, providers: [didit] }}
{extra}
"#
        )
    };
    let problems = |extra: &str| match Config::parse(&base(extra), &|_| None) {
        Ok(_) => Vec::new(),
        Err(livegate::config::ConfigError::Invalid(p)) => p.iter().map(|p| p.to_string()).collect(),
        Err(e) => panic!("{e}"),
    };
    assert!(problems("    retention: { raw_bodies: 7d, embeddings: 0 }").is_empty());
    let p = problems("    retention: { verifications: 0 }");
    assert!(
        p.iter()
            .any(|m| m.starts_with("tenants.a.retention.verifications")),
        "{p:?}"
    );
    let p = problems("    duplicates: true\n    retention: { embeddings: 0 }");
    assert!(p.iter().any(|m| m.contains("duplicates is on")), "{p:?}");
    let p = problems("    retention: { raw_bodies: 7 }");
    assert!(p.iter().any(|m| m.contains("no unit")), "{p:?}");
    let p = problems("    retention: { raw_body: 7d }");
    assert!(p.iter().any(|m| m.contains("raw_body")), "{p:?}");
}

/// A database as an earlier livegate left it (migrations up to 0006, rows in plain tables):
/// the partition migration moves every row into its month's partition, and a pass then drops
/// the months past every tenant's retention whole, faces of their verifications with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_rows_move_into_month_partitions_and_old_months_drop_whole() {
    let schema = format!("lg_test_{}", uuid::Uuid::new_v4().simple());
    let store = match PgStore::connect_in_schema(&postgres_url(), &schema).await {
        Ok(s) => Arc::new(s) as DynStore,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
            return;
        }
        Err(e) => panic!("Postgres is required under CI: {e}"),
    };
    let opts: sqlx::postgres::PgConnectOptions = postgres_url().parse().expect("url");
    let pool = sqlx::PgPool::connect_with(opts.options([("search_path", schema.as_str())]))
        .await
        .expect("pool");
    let before =
        std::env::temp_dir().join(format!("livegate-mig-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&before).expect("dir");
    let all = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/postgres");
    for e in std::fs::read_dir(all).expect("migrations") {
        let p = e.expect("entry").path();
        let name = p.file_name().expect("name").to_string_lossy().into_owned();
        if name.as_str() < "0007" {
            std::fs::copy(&p, before.join(&name)).expect("copy");
        }
    }
    sqlx::migrate::Migrator::new(before.as_path())
        .await
        .expect("migrator")
        .run(&pool)
        .await
        .expect("migrations up to 0006");

    let now = Utc::now();
    let mut ids = std::collections::HashMap::new();
    for (tenant, days) in [("a", 1), ("a", 100), ("a", 500), ("gone", 600)] {
        let (v, a) = row(tenant, now - Duration::days(days));
        store.insert_verification(&v, &a).await.expect("insert");
        ids.insert(days, v.id);
    }
    // One old verification with a face kept.
    let (v, a) = row("a", now - Duration::days(530));
    ids.insert(530, v.id);
    store_with_face(&store, v, a).await;

    store.migrate().await.expect("the partition migration");
    let partitioned: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 \
         AND c.relname IN ('verifications', 'verification_attempts')",
    )
    .bind(&schema)
    .fetch_one(&pool)
    .await
    .expect("partitioned");
    assert_eq!(partitioned, 2);
    for (days, id) in &ids {
        let tenant = if *days == 600 { "gone" } else { "a" };
        let v = store.get_verification(tenant, *id).await.expect("row kept");
        assert_eq!(store.attempts(v.id).await.expect("attempts").len(), 1);
    }
    let in_default: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ONLY verifications_default")
        .fetch_one(&pool)
        .await
        .expect("default");
    assert_eq!(in_default, 0, "rows left outside their month's partition");
    let month = |days: i64| (now - Duration::days(days)).format("%Y_%m").to_string();
    let exists = |name: String| {
        let pool = pool.clone();
        let schema = schema.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n \
                 ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
            )
            .bind(schema)
            .bind(name)
            .fetch_one(&pool)
            .await
            .expect("exists")
        }
    };
    assert!(exists(format!("verifications_{}", month(500))).await);
    // The current month and the next two are there before any row needs them.
    assert!(exists(format!("verification_attempts_{}", month(-40))).await);

    // `a` keeps 90 days, every other tenant 400: months older than 400 days go whole.
    let PurgeOutcome::Ran(r) = purge_once(&store, &plan(), false, now)
        .await
        .expect("purge")
    else {
        panic!("busy")
    };
    assert_eq!(r.in_whole_months, 3, "{r:?}");
    assert_eq!(
        r.removed.get(&PurgeKind::Verifications).copied(),
        Some(4),
        "{r:?}"
    );
    for days in [500, 530, 600] {
        assert!(
            !exists(format!("verifications_{}", month(days))).await,
            "{days} days"
        );
        assert!(
            !exists(format!("verification_attempts_{}", month(days))).await,
            "{days} days"
        );
    }
    assert!(exists(format!("verifications_{}", month(100))).await);
    assert!(
        store.get_verification("a", ids[&100]).await.is_err(),
        "the 100-day row kept"
    );
    assert!(
        store
            .attempts(ids[&100])
            .await
            .expect("attempts")
            .is_empty()
    );
    assert!(store.get_verification("a", ids[&1]).await.is_ok());
    assert!(
        store
            .approved_faces_after("a", 0)
            .await
            .expect("faces")
            .is_empty(),
        "face of a dropped month kept"
    );
}
