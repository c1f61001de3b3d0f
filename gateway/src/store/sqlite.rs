use std::str::FromStr;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::{
    AttemptRecord, ListFilter, Store, StoreError, StoreResult, VerificationRecord, clamp_limit,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// The pool, for the engine's face store (`faces.rs`), which shares this database.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn connect(url: &str) -> StoreResult<Self> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(5));
        // An in-memory database exists per connection: keep exactly one.
        let max = if url.contains(":memory:") || url.contains("mode=memory") {
            1
        } else {
            8
        };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await?;
        Ok(Self { pool })
    }
}

const COLUMNS: &str = "id, tenant_id, request_id, provider, provider_request_id, decision, is_live, score, \
     threshold, spoof_type, warnings, face, faces_detected, image_sha256, image_format, image_width, \
     image_height, external_id, metadata, http_status, error_code, error_detail, latency_ms, \
     config_hash, trace_id, created_at";

pub(super) fn ts(t: &DateTime<Utc>) -> String {
    // Fixed width, so text order is time order.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

pub(super) fn parse_ts(s: &str) -> StoreResult<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| StoreError::Other(format!("bad timestamp {s:?}: {e}")))
}

pub(super) fn parse_uuid(s: &str) -> StoreResult<Uuid> {
    Uuid::parse_str(s).map_err(|e| StoreError::Other(format!("bad uuid {s:?}: {e}")))
}

fn json(s: Option<String>) -> StoreResult<Option<serde_json::Value>> {
    s.map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Other(format!("bad json: {e}"))))
        .transpose()
}

fn verification(row: &SqliteRow) -> StoreResult<VerificationRecord> {
    Ok(VerificationRecord {
        id: parse_uuid(&row.try_get::<String, _>("id")?)?,
        tenant_id: row.try_get("tenant_id")?,
        request_id: row.try_get("request_id")?,
        provider: row.try_get("provider")?,
        provider_request_id: row.try_get("provider_request_id")?,
        decision: row.try_get("decision")?,
        is_live: row.try_get("is_live")?,
        score: row.try_get("score")?,
        threshold: row.try_get("threshold")?,
        spoof_type: row.try_get("spoof_type")?,
        warnings: json(Some(row.try_get("warnings")?))?.unwrap_or_default(),
        face: json(row.try_get("face")?)?,
        faces_detected: row.try_get("faces_detected")?,
        image_sha256: row.try_get("image_sha256")?,
        image_format: row.try_get("image_format")?,
        image_width: row.try_get("image_width")?,
        image_height: row.try_get("image_height")?,
        external_id: row.try_get("external_id")?,
        metadata: json(row.try_get("metadata")?)?,
        http_status: row.try_get("http_status")?,
        error_code: row.try_get("error_code")?,
        error_detail: row.try_get("error_detail")?,
        latency_ms: row.try_get("latency_ms")?,
        config_hash: row.try_get("config_hash")?,
        trace_id: row.try_get("trace_id")?,
        created_at: parse_ts(&row.try_get::<String, _>("created_at")?)?,
    })
}

pub(super) async fn insert_attempts(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    attempts: &[AttemptRecord],
) -> StoreResult<()> {
    for a in attempts {
        sqlx::query(
                "INSERT INTO verification_attempts (verification_id, attempt_no, provider, provider_kind, \
                 outcome, shadow, score, error_code, upstream_status, latency_ms, raw_body, created_at) \
                 VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)",
            )
            .bind(a.verification_id.to_string())
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
            .bind(ts(&a.created_at))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

pub(super) async fn insert_verification(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    v: &VerificationRecord,
) -> StoreResult<()> {
    sqlx::query(&format!(
        "INSERT INTO verifications ({COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,\
         $14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26)"
    ))
    .bind(v.id.to_string())
    .bind(&v.tenant_id)
    .bind(&v.request_id)
    .bind(&v.provider)
    .bind(&v.provider_request_id)
    .bind(&v.decision)
    .bind(v.is_live)
    .bind(v.score)
    .bind(v.threshold)
    .bind(&v.spoof_type)
    .bind(v.warnings.to_string())
    .bind(v.face.as_ref().map(|f| f.to_string()))
    .bind(v.faces_detected)
    .bind(&v.image_sha256)
    .bind(&v.image_format)
    .bind(v.image_width)
    .bind(v.image_height)
    .bind(&v.external_id)
    .bind(v.metadata.as_ref().map(|m| m.to_string()))
    .bind(v.http_status)
    .bind(&v.error_code)
    .bind(&v.error_detail)
    .bind(v.latency_ms)
    .bind(&v.config_hash)
    .bind(&v.trace_id)
    .bind(ts(&v.created_at))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> StoreResult<()> {
        MIGRATOR.run(&self.pool).await?;
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
        insert_verification(&mut tx, v).await?;
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
        .bind(id.to_string())
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
             AND ($2 IS NULL OR id < $2) AND ($3 IS NULL OR decision = $3) \
             AND ($4 IS NULL OR created_at >= $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(tenant_id)
        .bind(f.before.map(|u| u.to_string()))
        .bind(&f.decision)
        .bind(f.since.as_ref().map(ts))
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
        .bind(verification_id.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AttemptRecord {
                    verification_id: parse_uuid(&r.try_get::<String, _>("verification_id")?)?,
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
                    created_at: parse_ts(&r.try_get::<String, _>("created_at")?)?,
                })
            })
            .collect()
    }

    async fn setting_insert_if_absent(&self, name: &str, value: &str) -> StoreResult<String> {
        sqlx::query("INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .bind(ts(&Utc::now()))
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
