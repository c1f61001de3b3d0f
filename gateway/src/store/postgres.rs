use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use chrono::Utc;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::pgvector::Pgvector;
use super::{AttemptRecord, ListFilter, Store, StoreResult, VerificationRecord, clamp_limit};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Set by `migrate` when the server has pgvector (`pgvector.rs`).
    pgvector: Arc<OnceLock<Option<Pgvector>>>,
}

impl PgStore {
    /// The pool, for the engine's face store (`faces.rs`), which shares this database.
    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The server's pgvector, once `migrate` found it.
    pub(crate) fn pgvector(&self) -> Option<&Pgvector> {
        self.pgvector.get().and_then(Option::as_ref)
    }

    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts: PgConnectOptions = url.parse()?;
        Self::with_options(opts).await
    }

    /// A store confined to its own schema (created if needed): isolated test databases and
    /// several deployments sharing one database.
    pub async fn connect_in_schema(url: &str, schema: &str) -> StoreResult<Self> {
        if !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(super::StoreError::Other(format!(
                "invalid schema name {schema:?}"
            )));
        }
        let base: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(base.clone())
            .await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        Self::with_options(base.options([("search_path", schema)])).await
    }

    async fn with_options(opts: PgConnectOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(opts)
            .await?;
        Ok(Self {
            pool,
            pgvector: Arc::default(),
        })
    }
}

pub(super) const COLUMNS: &str = "id, tenant_id, request_id, provider, provider_request_id, decision, is_live, score, \
     threshold, spoof_type, warnings, face, faces_detected, image_sha256, image_format, image_width, \
     image_height, external_id, metadata, http_status, error_code, error_detail, latency_ms, \
     config_hash, trace_id, created_at";

fn verification(row: &PgRow) -> StoreResult<VerificationRecord> {
    Ok(VerificationRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        request_id: row.try_get("request_id")?,
        provider: row.try_get("provider")?,
        provider_request_id: row.try_get("provider_request_id")?,
        decision: row.try_get("decision")?,
        is_live: row.try_get("is_live")?,
        score: row.try_get("score")?,
        threshold: row.try_get("threshold")?,
        spoof_type: row.try_get("spoof_type")?,
        warnings: row.try_get::<Json<serde_json::Value>, _>("warnings")?.0,
        face: row
            .try_get::<Option<Json<serde_json::Value>>, _>("face")?
            .map(|j| j.0),
        faces_detected: row.try_get("faces_detected")?,
        image_sha256: row.try_get("image_sha256")?,
        image_format: row.try_get("image_format")?,
        image_width: row.try_get("image_width")?,
        image_height: row.try_get("image_height")?,
        external_id: row.try_get("external_id")?,
        metadata: row
            .try_get::<Option<Json<serde_json::Value>>, _>("metadata")?
            .map(|j| j.0),
        http_status: row.try_get("http_status")?,
        error_code: row.try_get("error_code")?,
        error_detail: row.try_get("error_detail")?,
        latency_ms: row.try_get("latency_ms")?,
        config_hash: row.try_get("config_hash")?,
        trace_id: row.try_get("trace_id")?,
        created_at: row.try_get("created_at")?,
    })
}

async fn insert_attempts(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    attempts: &[AttemptRecord],
) -> StoreResult<()> {
    for a in attempts {
        sqlx::query(
                "INSERT INTO verification_attempts (verification_id, attempt_no, provider, provider_kind, \
                 outcome, shadow, score, error_code, upstream_status, latency_ms, raw_body, created_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
            )
            .bind(a.verification_id)
            .bind(a.attempt_no)
            .bind(&a.provider)
            .bind(&a.provider_kind)
            .bind(&a.outcome)
            .bind(a.shadow)
            .bind(a.score)
            .bind(&a.error_code)
            .bind(a.upstream_status)
            .bind(a.latency_ms)
            .bind(&a.raw_body)
            .bind(a.created_at)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

#[async_trait]
impl Store for PgStore {
    fn write_concurrency(&self) -> usize {
        4
    }

    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
        if self.pgvector.get().is_none() {
            let found = super::pgvector::enable(&self.pool).await?;
            let _ = self.pgvector.set(found);
        }
        Ok(())
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_verification(
        &self,
        v: &VerificationRecord,
        attempts: &[AttemptRecord],
    ) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO verifications ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,\
             $14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26)"
        ))
        .bind(v.id)
        .bind(&v.tenant_id)
        .bind(&v.request_id)
        .bind(&v.provider)
        .bind(&v.provider_request_id)
        .bind(&v.decision)
        .bind(v.is_live)
        .bind(v.score)
        .bind(v.threshold)
        .bind(&v.spoof_type)
        .bind(Json(&v.warnings))
        .bind(v.face.as_ref().map(Json))
        .bind(v.faces_detected)
        .bind(&v.image_sha256)
        .bind(&v.image_format)
        .bind(v.image_width)
        .bind(v.image_height)
        .bind(&v.external_id)
        .bind(v.metadata.as_ref().map(Json))
        .bind(v.http_status)
        .bind(&v.error_code)
        .bind(&v.error_detail)
        .bind(v.latency_ms)
        .bind(&v.config_hash)
        .bind(&v.trace_id)
        .bind(v.created_at)
        .execute(&mut *tx)
        .await?;
        insert_attempts(&mut tx, attempts).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn insert_attempts(&self, attempts: &[AttemptRecord]) -> StoreResult<()> {
        let mut tx = self.pool.begin().await?;
        insert_attempts(&mut tx, attempts).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn get_verification(&self, tenant_id: &str, id: Uuid) -> StoreResult<VerificationRecord> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM verifications WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id)
        .bind(id)
        .fetch_one(&self.pool)
        .await?;
        verification(&row)
    }

    async fn list_verifications(
        &self,
        tenant_id: &str,
        f: &ListFilter,
    ) -> StoreResult<Vec<VerificationRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM verifications WHERE tenant_id = $1 \
             AND ($2::uuid IS NULL OR id < $2) AND ($3::text IS NULL OR decision = $3) \
             AND ($4::timestamptz IS NULL OR created_at >= $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(f.before)
        .bind(&f.decision)
        .bind(f.since)
        .bind(clamp_limit(f.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(verification).collect()
    }

    async fn attempts(&self, verification_id: Uuid) -> StoreResult<Vec<AttemptRecord>> {
        let rows = sqlx::query(
            "SELECT verification_id, attempt_no, provider, provider_kind, outcome, shadow, score, error_code, \
             upstream_status, latency_ms, raw_body, created_at FROM verification_attempts \
             WHERE verification_id = $1 ORDER BY attempt_no",
        )
        .bind(verification_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    verification_id: r.try_get("verification_id")?,
                    attempt_no: r.try_get("attempt_no")?,
                    provider: r.try_get("provider")?,
                    provider_kind: r.try_get("provider_kind")?,
                    outcome: r.try_get("outcome")?,
                    shadow: r.try_get("shadow")?,
                    score: r.try_get("score")?,
                    error_code: r.try_get("error_code")?,
                    upstream_status: r.try_get("upstream_status")?,
                    latency_ms: r.try_get("latency_ms")?,
                    raw_body: r.try_get("raw_body")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    async fn setting_insert_if_absent(&self, name: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .bind(Utc::now())
            .execute(&self.pool)
            .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await?;
        Ok(v)
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(
            sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }
}
