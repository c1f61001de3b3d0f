//! Identify latency in Postgres with pgvector at 1k, 10k and 100k enrolled faces: the same
//! synthetic collections and queries as the engine's `identify` bench
//! (`livegate_engine::synthetic`), searched through `FaceStore::nearest_faces`, the call the
//! collections server makes for a large collection (one transaction: `hnsw.ef_search`,
//! iterative scan, the top-10 query). Prints, per size, the HNSW index build time, the query's
//! median / p95 / fastest latency and recall@1 / recall@10 against the exact answer.
//!
//! `cargo bench --profile dev --bench identify_pgvector` (Postgres with pgvector
//! from `LIVEGATE_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`; a
//! fresh schema per run, dropped at the end). `LIVEGATE_BENCH_SIZES` (default
//! `1000,10000,100000`), `LIVEGATE_BENCH_QUERIES` (default 200) and `LIVEGATE_BENCH_DATA`
//! (`face_like`, the default, or `gaussian`) change the run.

use std::time::{Duration, Instant};

use livegate::store::{PgStore, Store, vector_literal};
use livegate_engine::search::{FaceIndex, IndexOptions};
use livegate_engine::server::{FaceStore, embedding_to_bytes};
use livegate_engine::{EMBEDDING_DIM, synthetic};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

/// Loads `vectors` into collection `c{n}` (alone in the table) in batches (the index is dropped first and built
/// once at the end, as for a bulk import), returns the ids and the index build time.
async fn load(
    pool: &PgPool,
    schema: &str,
    n: usize,
    vectors: &[Vec<f32>],
) -> (Vec<Uuid>, Duration) {
    let collection = format!("c{n}");
    sqlx::query("INSERT INTO collections (id, created_at) VALUES ($1, now())")
        .bind(&collection)
        .execute(pool)
        .await
        .expect("collection");
    // Each size alone in the table, as one large collection would be.
    sqlx::query("DELETE FROM faces")
        .execute(pool)
        .await
        .expect("empty");
    sqlx::query("DROP INDEX IF EXISTS faces_embedding_hnsw")
        .execute(pool)
        .await
        .expect("drop index");
    let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
    for chunk in ids.iter().zip(vectors).collect::<Vec<_>>().chunks(2_000) {
        let (cid, bytes, text): (Vec<Uuid>, Vec<Vec<u8>>, Vec<String>) = chunk.iter().fold(
            (Vec::new(), Vec::new(), Vec::new()),
            |(mut a, mut b, mut c), (id, v)| {
                a.push(**id);
                b.push(embedding_to_bytes(v));
                c.push(vector_literal(v));
                (a, b, c)
            },
        );
        sqlx::query(&format!(
            "INSERT INTO faces (id, collection_id, bbox_x1, bbox_y1, bbox_x2, bbox_y2, \
             confidence, image_sha256, embedding, created_at, embedding_vec) \
             SELECT id, $1, 0, 0, 10, 10, 0.9, 'bench', emb, now(), vec::text::\"{schema}\".vector \
             FROM UNNEST($2::uuid[], $3::bytea[], $4::text[]) AS t(id, emb, vec)"
        ))
        .bind(&collection)
        .bind(&cid)
        .bind(&bytes)
        .bind(&text)
        .execute(pool)
        .await
        .expect("insert");
    }
    let started = Instant::now();
    sqlx::query(&format!(
        "CREATE INDEX faces_embedding_hnsw ON faces \
         USING hnsw (embedding_vec \"{schema}\".vector_cosine_ops)"
    ))
    .execute(pool)
    .await
    .expect("build index");
    let built = started.elapsed();
    sqlx::query("ANALYZE faces")
        .execute(pool)
        .await
        .expect("analyze");
    (ids, built)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let url = std::env::var("LIVEGATE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sizes = synthetic::counts_from_env("LIVEGATE_BENCH_SIZES", &[1_000, 10_000, 100_000]);
    let queries = synthetic::counts_from_env("LIVEGATE_BENCH_QUERIES", &[200])
        .first()
        .copied()
        .unwrap_or(200);
    let data = synthetic::Data::from_env();
    let schema = format!("lg_bench_{}", Uuid::new_v4().simple());
    let store = PgStore::connect_in_schema(&url, &schema)
        .await
        .expect("Postgres");
    store.migrate().await.expect("migrate");
    assert!(
        FaceStore::vector_index(&store),
        "this Postgres has no pgvector (scripts/install-pgvector)"
    );
    let ext_schema: String = {
        let opts: PgConnectOptions = url.parse().expect("url");
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .expect("pool");
        sqlx::query_scalar(
            "SELECT n.nspname FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
        )
        .fetch_one(&pool)
        .await
        .expect("extension schema")
    };
    let opts: PgConnectOptions = url.parse().expect("url");
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Room for the graph of 100k faces while it is built (pgvector warns and slows
                // down when the graph outgrows maintenance_work_mem).
                sqlx::query("SET maintenance_work_mem = '1GB'")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .connect_with(opts.options([("search_path", schema.as_str())]))
        .await
        .expect("pool");

    println!(
        "pgvector HNSW (m=16, ef_construction=64, ef_search=128, iterative scan), top 10, {} data:",
        data.name()
    );
    println!(
        "| faces | index build (s) | median (ms) | p95 (ms) | fastest (ms) | recall@1 | recall@10 |"
    );
    for &n in &sizes {
        let vectors = data.collection(n);
        let probes = data.probes(&vectors, queries);
        let (ids, built) = load(&pool, &ext_schema, n, &vectors).await;
        let exact = FaceIndex::build(
            EMBEDDING_DIM,
            IndexOptions {
                exact_below: usize::MAX,
                ..IndexOptions::default()
            },
            ids.iter().copied().zip(vectors),
        );
        let collection = format!("c{n}");
        // Warm the caches and the prepared statements.
        for p in probes.iter().take(20) {
            store
                .nearest_faces(&collection, p, 10)
                .await
                .expect("search");
        }
        let (mut times, mut r1, mut r10) = (Vec::with_capacity(queries), 0usize, 0usize);
        for p in &probes {
            let t = Instant::now();
            let got = store
                .nearest_faces(&collection, p, 10)
                .await
                .expect("search");
            times.push(t.elapsed());
            let want = exact.search_exact(p, 10, -1.0);
            if got.first().map(|h| h.0) == want.first().map(|h| h.id) {
                r1 += 1;
            }
            r10 += got
                .iter()
                .filter(|(id, _)| want.iter().any(|w| w.id == *id))
                .count();
        }
        times.sort();
        println!(
            "| {n} | {:.1} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} |",
            built.as_secs_f64(),
            ms(percentile(&times, 0.5)),
            ms(percentile(&times, 0.95)),
            ms(times.first().copied().unwrap_or_default()),
            r1 as f64 / queries as f64,
            r10 as f64 / (queries * 10) as f64,
        );
    }
    let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await;
}
