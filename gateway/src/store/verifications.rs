//! Verifications, their attempts and settings: the SQL both backends run, and [`Store`] for
//! every [`Backend`].

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use uuid::Uuid;

use super::identity::insert_face;
use super::ledger::ResultWrite;
use super::sql::{Backend, Binds, Cols, Stmt};
use super::{AttemptRecord, ListFilter, Store, StoreResult, VerificationRecord, clamp_limit};

pub(crate) const COLUMNS: &str = "id, tenant_id, request_id, provider, provider_request_id, decision, is_live, score, \
     threshold, spoof_type, warnings, face, faces_detected, image_sha256, image_format, image_width, \
     image_height, external_id, metadata, http_status, error_code, error_detail, latency_ms, \
     config_hash, trace_id, created_at, provider_decision, erased_at";

pub(crate) const ATTEMPT_COLUMNS: &str = "verification_id, attempt_no, provider, provider_kind, \
     outcome, shadow, score, error_code, upstream_status, latency_ms, raw_body, created_at";

/// `$1, …, $n`: one row's placeholders, starting after `offset`.
pub(crate) fn placeholders(offset: usize, n: usize) -> String {
    (offset + 1..=offset + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A multi-row `INSERT INTO table (columns) VALUES (…), (…)` of `rows` rows of `width`.
pub(crate) fn insert_rows(table: &str, columns: &str, width: usize, rows: usize) -> String {
    let values: Vec<String> = (0..rows)
        .map(|r| format!("({})", placeholders(r * width, width)))
        .collect();
    format!(
        "INSERT INTO {table} ({columns}) VALUES {}",
        values.join(",")
    )
}

/// How many values a row of `columns` binds.
pub(crate) fn width(columns: &str) -> usize {
    columns.split(',').count()
}

/// Binds one verification row's values, in `COLUMNS` order.
pub(crate) fn bind_verification<'q, B: Binds<'q>>(s: B, v: &'q VerificationRecord) -> B {
    s.value(v.id)
        .value(v.tenant_id.as_str())
        .value(v.request_id.as_str())
        .value(v.provider.as_deref())
        .value(v.provider_request_id.as_deref())
        .value(v.decision.as_deref())
        .value(v.is_live)
        .value(v.score)
        .value(v.threshold)
        .value(v.spoof_type.as_deref())
        .json(Some(&v.warnings))
        .json(v.face.as_ref())
        .value(v.faces_detected)
        .value(v.image_sha256.as_deref())
        .value(v.image_format.as_deref())
        .value(v.image_width)
        .value(v.image_height)
        .value(v.external_id.as_deref())
        .json(v.metadata.as_ref())
        .value(v.http_status)
        .value(v.error_code.as_deref())
        .value(v.error_detail.as_deref())
        .value(v.latency_ms)
        .value(v.config_hash.as_deref())
        .value(v.trace_id.as_deref())
        .value(v.created_at)
        .value(v.provider_decision.as_deref())
        .value(v.erased_at)
}

/// Binds one attempt row's values, in `ATTEMPT_COLUMNS` order.
pub(crate) fn bind_attempt<'q, B: Binds<'q>>(s: B, a: &'q AttemptRecord) -> B {
    s.value(a.verification_id)
        .value(a.attempt_no)
        .value(a.provider.as_str())
        .value(a.provider_kind.as_str())
        .value(a.outcome.as_str())
        .value(a.shadow)
        .value(a.score)
        .value(a.error_code.as_deref())
        .value(a.upstream_status)
        .value(a.latency_ms)
        .value(a.raw_body.as_deref())
        .value(a.created_at)
}

/// Rows per multi-row INSERT: at 28 binds a verification row stays far below Postgres' 65535
/// parameters and SQLite's 32766.
pub(crate) const CHUNK: usize = 500;

/// The INSERTs that write `verifications` and then their attempts, `CHUNK` rows at a time.
pub(crate) fn insert_statements<'a>(
    verifications: impl IntoIterator<Item = &'a VerificationRecord>,
    attempts: impl IntoIterator<Item = &'a AttemptRecord>,
) -> Vec<Stmt> {
    let verifications: Vec<_> = verifications.into_iter().collect();
    let attempts: Vec<_> = attempts.into_iter().collect();
    let mut out = Vec::new();
    for chunk in verifications.chunks(CHUNK) {
        let sql = insert_rows("verifications", COLUMNS, width(COLUMNS), chunk.len());
        out.push(
            chunk
                .iter()
                .fold(Stmt::new(sql), |s, v| bind_verification(s, v)),
        );
    }
    for chunk in attempts.chunks(CHUNK) {
        let sql = insert_rows(
            "verification_attempts",
            ATTEMPT_COLUMNS,
            width(ATTEMPT_COLUMNS),
            chunk.len(),
        );
        out.push(chunk.iter().fold(Stmt::new(sql), |s, a| bind_attempt(s, a)));
    }
    out
}

/// A write transaction holding the results' verification rows and attempts, the first part
/// of SQLite's `commit_results` (Postgres sends them as one statement: `postgres/results.rs`);
/// `None` for no results.
pub(crate) async fn begin_results<D: Backend>(
    db: &D,
    writes: &[Arc<ResultWrite>],
) -> StoreResult<Option<D::Tx>> {
    if writes.is_empty() {
        return Ok(None);
    }
    let mut tx = db.begin().await?;
    D::run_all(&mut tx, results_statements(db, writes)).await?;
    Ok(Some(tx))
}

/// What [`begin_results`] writes: the verification rows, attempts, kept faces and webhook
/// messages of `writes`.
fn results_statements<D: Backend>(db: &D, writes: &[Arc<ResultWrite>]) -> Vec<Stmt> {
    let mut rows = insert_statements(
        writes.iter().map(|w| &w.verification),
        writes.iter().flat_map(|w| &w.attempts),
    );
    rows.extend(extra_statements(db, writes));
    rows
}

/// What is written with the results' rows besides them: kept faces and webhook messages, each
/// a plain `INSERT` (Postgres folds them into the rows' statement, `postgres/results.rs`).
pub(crate) fn extra_statements<D: Backend>(db: &D, writes: &[Arc<ResultWrite>]) -> Vec<Stmt> {
    let mut rows = Vec::new();
    // A kept face is written with its verification: never one without the other.
    rows.extend(writes.iter().filter_map(|w| {
        let v = &w.verification;
        let f = w.face.as_ref()?;
        Some(insert_face(
            db.pgvector(),
            &v.tenant_id,
            v.id,
            &f.embedding,
            f.approved,
        ))
    }));
    rows.extend(
        writes
            .iter()
            .flat_map(|w| &w.webhooks)
            .map(super::webhooks::insert_message),
    );
    rows
}

pub(crate) fn verification(row: &impl Cols) -> StoreResult<VerificationRecord> {
    Ok(VerificationRecord {
        id: row.uuid("id")?,
        tenant_id: row.get("tenant_id")?,
        request_id: row.get("request_id")?,
        provider: row.get("provider")?,
        provider_request_id: row.get("provider_request_id")?,
        decision: row.get("decision")?,
        is_live: row.get("is_live")?,
        score: row.get("score")?,
        threshold: row.get("threshold")?,
        spoof_type: row.get("spoof_type")?,
        warnings: row.json("warnings")?.unwrap_or_default(),
        face: row.json("face")?,
        faces_detected: row.get("faces_detected")?,
        image_sha256: row.get("image_sha256")?,
        image_format: row.get("image_format")?,
        image_width: row.get("image_width")?,
        image_height: row.get("image_height")?,
        external_id: row.get("external_id")?,
        metadata: row.json("metadata")?,
        http_status: row.get("http_status")?,
        error_code: row.get("error_code")?,
        error_detail: row.get("error_detail")?,
        latency_ms: row.get("latency_ms")?,
        config_hash: row.get("config_hash")?,
        trace_id: row.get("trace_id")?,
        created_at: row.time("created_at")?,
        provider_decision: row.get("provider_decision")?,
        erased_at: row.opt_time("erased_at")?,
    })
}

fn attempt(r: &impl Cols) -> StoreResult<AttemptRecord> {
    attempt_as(r, "")
}

/// An attempt whose columns carry `prefix` (as aliased in a join).
fn attempt_as(r: &impl Cols, prefix: &str) -> StoreResult<AttemptRecord> {
    let c = |name: &str| format!("{prefix}{name}");
    Ok(AttemptRecord {
        verification_id: r.uuid(&c("verification_id"))?,
        attempt_no: r.get(&c("attempt_no"))?,
        provider: r.get(&c("provider"))?,
        provider_kind: r.get(&c("provider_kind"))?,
        outcome: r.get(&c("outcome"))?,
        shadow: r.get(&c("shadow"))?,
        score: r.get(&c("score"))?,
        error_code: r.get(&c("error_code"))?,
        upstream_status: r.get(&c("upstream_status"))?,
        latency_ms: r.get(&c("latency_ms"))?,
        raw_body: r.get(&c("raw_body"))?,
        created_at: r.time(&c("created_at"))?,
    })
}

/// One page of a tenant's verifications, newest first. Each optional filter is `$n IS NULL OR
/// …`; the parameter types come from the bound values, so the same text serves both backends.
fn page_sql() -> String {
    format!(
        "SELECT {COLUMNS} FROM verifications WHERE tenant_id = $1 \
         AND ($2 IS NULL OR id < $2) AND ($3 IS NULL OR decision = $3) \
         AND ($4 IS NULL OR created_at >= $4) ORDER BY id DESC LIMIT $5"
    )
}

/// `sql` (built on [`page_sql`]) with the page's parameters bound.
fn bind_page(f: &ListFilter, tenant_id: &str, sql: String) -> Stmt {
    Stmt::new(sql)
        .bind(tenant_id)
        .bind(f.before)
        .bind(&f.decision)
        .bind(f.since)
        .bind(clamp_limit(f.limit))
}

/// `a.col AS a_col, …` for every attempt column.
fn aliased_attempt_columns() -> String {
    ATTEMPT_COLUMNS
        .split(',')
        .map(|c| {
            let c = c.trim();
            format!("a.{c} AS a_{c}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl<B: Backend> Store for B {
    async fn migrate(&self) -> StoreResult<()> {
        self.run_migrations().await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.execute(Stmt::new("SELECT 1")).await.map(drop)
    }

    async fn insert_verification(
        &self,
        v: &VerificationRecord,
        attempts: &[AttemptRecord],
    ) -> StoreResult<()> {
        self.execute_all(insert_statements([v], attempts)).await
    }

    async fn insert_attempts(&self, attempts: &[AttemptRecord]) -> StoreResult<()> {
        self.execute_all(insert_statements([], attempts)).await
    }

    async fn get_verification(&self, tenant_id: &str, id: Uuid) -> StoreResult<VerificationRecord> {
        let sql = format!("SELECT {COLUMNS} FROM verifications WHERE tenant_id = $1 AND id = $2");
        verification(&self.row(Stmt::new(sql).bind(tenant_id).bind(id)).await?)
    }

    async fn list_verifications(
        &self,
        tenant_id: &str,
        f: &ListFilter,
    ) -> StoreResult<Vec<VerificationRecord>> {
        self.rows(bind_page(f, tenant_id, page_sql()))
            .await?
            .iter()
            .map(verification)
            .collect()
    }

    async fn list_with_attempts(
        &self,
        tenant_id: &str,
        f: &ListFilter,
    ) -> StoreResult<Vec<(VerificationRecord, Vec<AttemptRecord>)>> {
        // The page is chosen first, then joined to its attempts: one round trip, not 1 + n.
        let sql = format!(
            "SELECT v.*, {} FROM ({}) v \
             LEFT JOIN verification_attempts a ON a.verification_id = v.id \
             ORDER BY v.id DESC, a.attempt_no",
            aliased_attempt_columns(),
            page_sql()
        );
        let mut page: Vec<(VerificationRecord, Vec<AttemptRecord>)> = Vec::new();
        for row in self.rows(bind_page(f, tenant_id, sql)).await? {
            let id = row.uuid("id")?;
            if page.last().is_none_or(|(v, _)| v.id != id) {
                page.push((verification(&row)?, Vec::new()));
            }
            if row.opt_uuid("a_verification_id")?.is_some()
                && let Some((_, attempts)) = page.last_mut()
            {
                attempts.push(attempt_as(&row, "a_")?);
            }
        }
        Ok(page)
    }

    async fn attempts(&self, verification_id: Uuid) -> StoreResult<Vec<AttemptRecord>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM verification_attempts \
             WHERE verification_id = $1 ORDER BY attempt_no"
        );
        let rows = self.rows(Stmt::new(sql).bind(verification_id)).await?;
        rows.iter().map(attempt).collect()
    }

    async fn setting_insert_if_absent(&self, name: &str, value: &str) -> StoreResult<String> {
        self.execute(
            Stmt::new(
                "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO NOTHING",
            )
            .bind(name)
            .bind(value)
            .bind(Utc::now()),
        )
        .await?;
        self.row(Stmt::new("SELECT value FROM settings WHERE name = $1").bind(name))
            .await?
            .get("value")
    }

    async fn setting_replace(&self, name: &str, value: &str) -> StoreResult<()> {
        self.execute(
            Stmt::new(
                "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            )
            .bind(name)
            .bind(value)
            .bind(Utc::now()),
        )
        .await?;
        Ok(())
    }

    async fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        let s = Stmt::new("SELECT value FROM settings WHERE name = $1").bind(name);
        self.optional(s).await?.map(|r| r.get("value")).transpose()
    }

    fn write_concurrency(&self) -> usize {
        self.writers()
    }
}
