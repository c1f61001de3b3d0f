//! pgvector on Postgres: embeddings also land in an indexed `vector(128)` column, large face
//! sets are searched there (the engine's identify, the tenants' duplicate check), and every
//! process sees every enrollment at once. Under CI pgvector must be there (`.ci/run` installs
//! it); elsewhere these tests are skipped with a note when it is not.

use std::sync::Arc;

use chrono::{SubsecRound, Utc};
use livegate::store::{PgStore, vector_literal};
use livegate_engine::search::IndexOptions;
use livegate_engine::server::{FaceRecord, FaceStore, ServerOptions};
use livegate_engine::synthetic::gaussian_units;
use livegate_engine::{cosine, normalize};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::duplicates::{DUP_KEY, approved_astronaut, yaml};
use crate::engine_server::{KEY, Srv, sample};
use crate::face_matching::photo;
use crate::harness::{Backend, Harness, postgres_url};

/// A store in a fresh schema with pgvector enabled, and a pool on the same schema for SQL
/// checks. `None` (skipped) off CI when Postgres or pgvector is missing; a panic under CI.
async fn pg_with_vector() -> Option<(PgStore, PgPool)> {
    let schema = format!("lg_vec_{}", Uuid::new_v4().simple());
    let ci = std::env::var_os("CI").is_some();
    let store = match PgStore::connect_in_schema(&postgres_url(), &schema).await {
        Ok(s) => s,
        Err(e) if !ci => {
            eprintln!("SKIPPED: Postgres not reachable ({e}); set CI=1 to make this fatal");
            return None;
        }
        Err(e) => panic!("Postgres is required under CI: {e}"),
    };
    livegate::store::Store::migrate(&store)
        .await
        .expect("migrate");
    if !FaceStore::vector_index(&store) {
        assert!(
            !ci,
            "pgvector is required under CI: `scripts/install-pgvector` installs it"
        );
        eprintln!("SKIPPED: this Postgres has no pgvector (scripts/install-pgvector)");
        return None;
    }
    let opts: PgConnectOptions = postgres_url().parse().expect("url");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(opts.options([("search_path", schema.as_str())]))
        .await
        .expect("pool");
    Some((store, pool))
}

fn face(collection: &str, embedding: Vec<f32>) -> FaceRecord {
    FaceRecord {
        id: Uuid::now_v7(),
        collection_id: collection.to_owned(),
        external_id: None,
        metadata: None,
        liveness_score: None,
        bbox: [0.0, 0.0, 10.0, 10.0],
        confidence: 0.9,
        quality: None,
        image_sha256: "0".repeat(64),
        embedding: Some(embedding),
        created_at: Utc::now().trunc_subsecs(6),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_are_indexed_and_searched_in_postgres() {
    let Some((store, pool)) = pg_with_vector().await else {
        return;
    };
    let (a, b) = (gaussian_units(300, 3), gaussian_units(300, 5));
    let mut ids = Vec::new();
    for (collection, vectors) in [("a", &a), ("b", &b)] {
        store.create_collection(collection).await.expect("create");
        for v in vectors {
            let f = face(collection, v.clone());
            store.insert_face(&f).await.expect("insert");
            if collection == "a" {
                ids.push(f.id);
            }
        }
    }
    assert_eq!(store.embedding_count("a").await.expect("count"), 300);
    let unindexed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM faces WHERE embedding_vec IS NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(unindexed, 0, "every embedding is in the vector column");

    // A noisy copy of each of 20 enrolled faces finds that face first, only in its collection,
    // with the exact cosine similarity.
    let noise = gaussian_units(20, 11);
    for (q, n) in noise.iter().enumerate() {
        let i = q * 15;
        let mixed: Vec<f32> = a[i].iter().zip(n).map(|(x, y)| x + 0.3 * y).collect();
        let probe = normalize(&mixed).expect("normalize");
        let hits = store.nearest_faces("a", &probe, 5).await.expect("search");
        assert_eq!(hits.len(), 5);
        assert_eq!(hits[0].0, ids[i], "probe {q}");
        assert!(
            hits.iter().all(|(id, _)| ids.contains(id)),
            "collection a only"
        );
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        assert!((hits[0].1 - cosine(&probe, &a[i])).abs() < 1e-4);
    }
    assert!(
        store
            .nearest_faces("missing", &a[0], 5)
            .await
            .expect("search")
            .is_empty()
    );

    // The query's shape matches the HNSW index (schema-qualified operator and operator class):
    // with sequential scans ruled out, Postgres walks the graph.
    let mut tx = pool.begin().await.expect("tx");
    for set in [
        "SET LOCAL enable_seqscan = off",
        "SET LOCAL enable_sort = off",
    ] {
        sqlx::query(set).execute(&mut *tx).await.expect("set");
    }
    let schema: String = sqlx::query_scalar(
        "SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
         WHERE e.extname = 'vector'",
    )
    .fetch_one(&mut *tx)
    .await
    .expect("extension schema");
    let plan: Vec<String> = sqlx::query(&format!(
        "EXPLAIN SELECT id FROM faces WHERE collection_id = 'a' \
         ORDER BY embedding_vec OPERATOR(\"{schema}\".<=>) '{}'::text::\"{schema}\".vector LIMIT 5",
        vector_literal(&a[0])
    ))
    .fetch_all(&mut *tx)
    .await
    .expect("explain")
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect();
    assert!(
        plan.iter().any(|l| l.contains("faces_embedding_hnsw")),
        "{plan:#?}"
    );
}

fn search_opts(exact_below: usize) -> ServerOptions {
    ServerOptions {
        index: IndexOptions {
            exact_below,
            ..IndexOptions::default()
        },
        ..ServerOptions::default()
    }
}

async fn enroll(s: &Srv, image: Vec<u8>, external_id: &str) -> String {
    let r = s
        .form(
            Some(KEY),
            "/api/v1/collections/selfies/faces",
            Some(image),
            &[("external_id", external_id), ("check_liveness", "false")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["data"]["face_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{}", r.body))
        .to_owned()
}

async fn identified(s: &Srv, image: Vec<u8>) -> Vec<Value> {
    let r = s
        .form(
            Some(KEY),
            "/api/v1/collections/selfies/identify",
            Some(image),
            &[],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["data"]["matches"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("{}", r.body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_past_the_limit_searches_postgres_and_sees_other_servers() {
    let Some((store, _pool)) = pg_with_vector().await else {
        return;
    };
    let store: Arc<dyn FaceStore> = Arc::new(store);
    // Two servers on one database, as two `livegate engine serve` processes would be.
    let one = Srv::start_on(store.clone(), search_opts(2)).await;
    let two = Srv::start_on(store.clone(), search_opts(2)).await;
    let eileen = enroll(&one, photo("astronaut.jpg"), "eileen").await;
    enroll(&one, sample("real.jpg"), "real").await;

    let m = identified(&two, photo("astronaut_variant.jpg")).await;
    assert_eq!(
        m.first().map(|m| &m["face_id"]),
        Some(&json!(eileen)),
        "{m:?}"
    );
    assert_eq!(m[0]["external_id"], "eileen");
    assert!(m[0]["similarity"].as_f64().is_some_and(|s| s >= 0.93));

    // Enrolled through one after the other's first search: found at once.
    let late = enroll(&one, sample("spoof_replay.jpg"), "late").await;
    let m = identified(&two, sample("spoof_replay.jpg")).await;
    assert_eq!(
        m.first().map(|m| &m["face_id"]),
        Some(&json!(late)),
        "{m:?}"
    );

    // A deleted face is gone from the database's answers too.
    let r = one
        .client
        .delete(format!(
            "{}/api/v1/collections/selfies/faces/{late}",
            one.base
        ))
        .header("x-api-key", KEY)
        .send()
        .await
        .expect("delete");
    assert!(r.status().is_success(), "{}", r.status());
    let m = identified(&two, sample("spoof_replay.jpg")).await;
    assert!(m.iter().all(|m| m["face_id"] != json!(late)), "{m:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_past_the_limit_are_found_in_postgres() {
    if pg_with_vector().await.is_none() {
        return;
    }
    let search = IndexOptions {
        exact_below: 1,
        ..IndexOptions::default()
    };
    let Some(h) = Harness::start_with_search(Backend::Postgres, yaml, search).await else {
        return;
    };
    assert!(h.store.has_vector_index());
    let first_id = approved_astronaut(&h).await;
    let other = h.liveness(DUP_KEY, "image", sample("real.jpg"), &[]).await;
    assert_eq!(other.body["decision"], "approved", "{}", other.body);

    let again = h
        .liveness(DUP_KEY, "image", photo("astronaut_variant.jpg"), &[])
        .await;
    let w = again.body["warnings"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["code"] == "DUPLICATED_FACE"))
        .unwrap_or_else(|| panic!("no DUPLICATED_FACE: {}", again.body));
    assert_eq!(w["matched_verification_id"], first_id.as_str());
}
