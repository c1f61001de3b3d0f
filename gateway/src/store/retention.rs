//! Retention and erasure (`migrations/*/0006_erasure.sql`): the purge job's bounded batches,
//! and erasing one verification or every verification of a subject down to a tombstone, for
//! every [`Backend`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::identity::FaceTurn;
use super::sql::{Backend, Cols, Param, Stmt};
use super::{StoreError, StoreResult};

/// What the purge job removes, each on its own period (`retention:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PurgeKind {
    /// Whole verification rows, their attempts and their faces.
    Verifications,
    /// `verification_attempts.raw_body`, set to NULL.
    RawBodies,
    /// `verifications.metadata` and `external_id`, set to NULL.
    Metadata,
    /// `verification_faces` rows.
    Embeddings,
}

impl PurgeKind {
    pub const ALL: [PurgeKind; 4] = [
        PurgeKind::Verifications,
        PurgeKind::RawBodies,
        PurgeKind::Metadata,
        PurgeKind::Embeddings,
    ];

    /// The `kind` label of `livegate_purged_total`, and the `retention:` key.
    pub fn as_str(self) -> &'static str {
        match self {
            PurgeKind::Verifications => "verifications",
            PurgeKind::RawBodies => "raw_bodies",
            PurgeKind::Metadata => "metadata",
            PurgeKind::Embeddings => "embeddings",
        }
    }
}

/// Whose rows one purge statement touches.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    Tenant(&'a str),
    /// Every tenant but these: rows of tenants no longer configured get the default periods.
    AllBut(&'a [String]),
}

/// `column`'s condition for `scope`, with its parameters numbered from `$first`.
fn scope_sql(scope: Scope<'_>, column: &str, first: usize) -> (String, Vec<Param>) {
    match scope {
        Scope::Tenant(t) => (format!("{column} = ${first}"), vec![Param::from(t)]),
        Scope::AllBut([]) => ("TRUE".to_owned(), Vec::new()),
        Scope::AllBut(ids) => {
            let marks: Vec<String> = (first..first + ids.len())
                .map(|i| format!("${i}"))
                .collect();
            (
                format!("{column} NOT IN ({})", marks.join(",")),
                ids.iter().map(Param::from).collect(),
            )
        }
    }
}

/// The key of the rows one batch of `kind` takes, as a subquery: `$1` is the cutoff, the
/// scope's parameters follow, and the batch size comes last when `limit` is set.
fn due(kind: PurgeKind, scope: Scope<'_>, limit: bool) -> (String, Vec<Param>) {
    let (column, from, extra) = match kind {
        PurgeKind::Verifications => ("tenant_id", "SELECT id FROM verifications", ""),
        PurgeKind::RawBodies => (
            "v.tenant_id",
            "SELECT a.verification_id, a.attempt_no FROM verification_attempts a \
             JOIN verifications v ON v.id = a.verification_id",
            " AND a.raw_body IS NOT NULL",
        ),
        PurgeKind::Metadata => (
            "tenant_id",
            "SELECT id FROM verifications",
            " AND (metadata IS NOT NULL OR external_id IS NOT NULL)",
        ),
        PurgeKind::Embeddings => ("tenant_id", "SELECT seq FROM verification_faces", ""),
    };
    let created = if kind == PurgeKind::RawBodies {
        "a.created_at"
    } else {
        "created_at"
    };
    let (cond, mut params) = scope_sql(scope, column, 2);
    params.insert(0, Param::Time(None));
    let mut sql = format!("{from} WHERE {cond} AND {created} < $1{extra}");
    if limit {
        sql.push_str(&format!(" LIMIT ${}", params.len() + 1));
    }
    (sql, params)
}

fn with_params(sql: String, params: Vec<Param>, cutoff: DateTime<Utc>) -> Stmt {
    let mut s = Stmt::new(sql);
    s.params = params;
    s.params[0] = Param::Time(Some(cutoff));
    s
}

/// Who asked for an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    Tenant,
    Admin,
}

impl Requester {
    pub fn as_str(self) -> &'static str {
        match self {
            Requester::Tenant => "tenant",
            Requester::Admin => "admin",
        }
    }
}

/// What to erase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Verification(Uuid),
    /// Every verification of the tenant with this `external_id`.
    Subject(String),
}

#[derive(Debug, Clone)]
pub struct ErasureRequest {
    pub tenant_id: String,
    pub target: Target,
    pub requested_by: Requester,
    /// Also remove the verifications' faces from the tenant's blocklist.
    pub blocklist: bool,
}

/// An erasure's receipt, as kept in `erasures`: no personal data.
#[derive(Debug, Clone, PartialEq)]
pub struct Erasure {
    pub id: Uuid,
    pub tenant_id: String,
    /// `verification` | `subject`.
    pub scope: String,
    pub verification_id: Option<Uuid>,
    pub requested_by: String,
    /// Verifications made tombstones.
    pub verifications: i64,
    /// Face embeddings deleted.
    pub faces: i64,
    /// Blocklist entries deleted.
    pub blocklist: i64,
    pub created_at: DateTime<Utc>,
    /// The verifications erased, for the caller to forget in memory (not stored).
    pub erased_ids: Vec<Uuid>,
}

/// Ids per `IN (…)` list: far below both backends' parameter limits.
const IDS_PER_STATEMENT: usize = 500;

#[async_trait]
pub trait RetentionStore: Send + Sync {
    /// The purge turn, if no other instance holds it: `None` means another instance is
    /// purging now. Given back by dropping or releasing it.
    async fn purge_turn(&self) -> StoreResult<Option<FaceTurn>>;
    /// One bounded batch of `kind` older than `cutoff`: at most `limit` rows deleted or
    /// emptied; how many were.
    async fn purge_batch(
        &self,
        kind: PurgeKind,
        scope: Scope<'_>,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64>;
    /// Creates the month partitions ahead of `now`, then drops every month that ended at or
    /// before `cutoff`; the verifications dropped that way (none on SQLite).
    async fn drop_whole_months(
        &self,
        now: DateTime<Utc>,
        cutoff: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// How many rows of `kind` are due (`purge --dry-run`).
    async fn count_due(
        &self,
        kind: PurgeKind,
        scope: Scope<'_>,
        cutoff: DateTime<Utc>,
    ) -> StoreResult<u64>;
    /// Erases the target's personal data, leaving tombstones, and records the receipt;
    /// `NotFound` for a verification that is not the tenant's. Idempotent: erasing a
    /// verification again answers with the first receipt.
    async fn erase(&self, req: &ErasureRequest) -> StoreResult<Erasure>;
}

fn erasure(r: &impl Cols) -> StoreResult<Erasure> {
    Ok(Erasure {
        id: r.uuid("id")?,
        tenant_id: r.get("tenant_id")?,
        scope: r.get("scope")?,
        verification_id: r.opt_uuid("verification_id")?,
        requested_by: r.get("requested_by")?,
        verifications: r.get("verifications")?,
        faces: r.get("faces")?,
        blocklist: r.get("blocklist")?,
        created_at: r.time("created_at")?,
        erased_ids: Vec::new(),
    })
}

const ERASURE_COLUMNS: &str = "id, tenant_id, scope, verification_id, requested_by, \
     verifications, faces, blocklist, created_at";

/// `sql` with `{ids}` replaced by `$first…` placeholders for `ids`, bound after `lead`.
fn for_ids(sql: &str, lead: Vec<Param>, ids: &[Uuid]) -> Stmt {
    let first = lead.len() + 1;
    let marks: Vec<String> = (first..first + ids.len())
        .map(|i| format!("${i}"))
        .collect();
    let mut s = Stmt::new(sql.replace("{ids}", &marks.join(",")));
    s.params = lead;
    s.params.extend(ids.iter().map(|id| Param::from(*id)));
    s
}

#[async_trait]
impl<B: Backend> RetentionStore for B {
    async fn purge_turn(&self) -> StoreResult<Option<FaceTurn>> {
        self.try_turn("livegate:purge").await
    }

    async fn purge_batch(
        &self,
        kind: PurgeKind,
        scope: Scope<'_>,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<u64> {
        let (sub, mut params) = due(kind, scope, true);
        params.push(Param::from(i64::from(limit)));
        match kind {
            PurgeKind::Verifications => {
                // The faces first (they have no foreign key), then the rows; attempts go by
                // cascade. One transaction: never a face without its verification.
                let mut tx = self.begin().await?;
                let ids: Vec<Uuid> = B::rows_in(&mut tx, with_params(sub, params, cutoff))
                    .await?
                    .iter()
                    .map(|r| r.uuid("id"))
                    .collect::<StoreResult<_>>()?;
                if ids.is_empty() {
                    return Ok(0);
                }
                // Attempts have no foreign key on a partitioned Postgres: deleted here.
                let attempts = "DELETE FROM verification_attempts WHERE verification_id IN ({ids})";
                B::execute_in(&mut tx, for_ids(attempts, Vec::new(), &ids)).await?;
                let reviews = "DELETE FROM reviews WHERE verification_id IN ({ids})";
                B::execute_in(&mut tx, for_ids(reviews, Vec::new(), &ids)).await?;
                let outbox = "DELETE FROM webhook_outbox WHERE verification_id IN ({ids})";
                B::execute_in(&mut tx, for_ids(outbox, Vec::new(), &ids)).await?;
                let faces = "DELETE FROM verification_faces WHERE verification_id IN ({ids})";
                if B::execute_in(&mut tx, for_ids(faces, Vec::new(), &ids)).await? > 0 {
                    B::execute_in(&mut tx, faces_removed(Utc::now())).await?;
                }
                let rows = "DELETE FROM verifications WHERE id IN ({ids})";
                let n = B::execute_in(&mut tx, for_ids(rows, Vec::new(), &ids)).await?;
                B::commit(tx).await?;
                Ok(n)
            }
            PurgeKind::RawBodies => {
                let sql = format!(
                    "UPDATE verification_attempts SET raw_body = NULL \
                     WHERE (verification_id, attempt_no) IN ({sub})"
                );
                self.execute(with_params(sql, params, cutoff)).await
            }
            PurgeKind::Metadata => {
                let sql = format!(
                    "UPDATE verifications SET metadata = NULL, external_id = NULL \
                     WHERE id IN ({sub})"
                );
                self.execute(with_params(sql, params, cutoff)).await
            }
            PurgeKind::Embeddings => {
                let sql = format!("DELETE FROM verification_faces WHERE seq IN ({sub})");
                let n = self.execute(with_params(sql, params, cutoff)).await?;
                if n > 0 {
                    self.execute(faces_removed(Utc::now())).await?;
                }
                Ok(n)
            }
        }
    }

    async fn drop_whole_months(
        &self,
        now: DateTime<Utc>,
        cutoff: DateTime<Utc>,
    ) -> StoreResult<u64> {
        self.ensure_partitions(now).await?;
        let (verifications, faces) = self.drop_partitions_before(cutoff).await?;
        if faces > 0 {
            self.execute(faces_removed(Utc::now())).await?;
        }
        Ok(verifications)
    }

    async fn count_due(
        &self,
        kind: PurgeKind,
        scope: Scope<'_>,
        cutoff: DateTime<Utc>,
    ) -> StoreResult<u64> {
        let (sub, params) = due(kind, scope, false);
        let sql = format!("SELECT COUNT(*) AS n FROM ({sub}) due");
        let n: i64 = self.row(with_params(sql, params, cutoff)).await?.get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn erase(&self, req: &ErasureRequest) -> StoreResult<Erasure> {
        let tenant = req.tenant_id.as_str();
        let now = Utc::now();
        let mut tx = self.begin().await?;
        let (scope, verification_id, ids) = match &req.target {
            Target::Verification(id) => {
                let s = Stmt::new("SELECT id FROM verifications WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant)
                    .bind(*id);
                if B::rows_in(&mut tx, s).await?.is_empty() {
                    return Err(StoreError::NotFound);
                }
                ("verification", Some(*id), vec![*id])
            }
            Target::Subject(external_id) => {
                let s = Stmt::new(
                    "SELECT id FROM verifications WHERE tenant_id = $1 AND external_id = $2 \
                     ORDER BY id",
                )
                .bind(tenant)
                .bind(external_id.as_str());
                let ids = B::rows_in(&mut tx, s)
                    .await?
                    .iter()
                    .map(|r| r.uuid("id"))
                    .collect::<StoreResult<Vec<_>>>()?;
                ("subject", None, ids)
            }
        };
        let (mut verifications, mut faces, mut blocklist) = (0_i64, 0_i64, 0_i64);
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for chunk in ids.chunks(IDS_PER_STATEMENT) {
            let lead = || vec![Param::from(tenant)];
            let tombstone = "UPDATE verifications SET external_id = NULL, metadata = NULL, \
                 image_sha256 = NULL, face = NULL, error_detail = NULL, \
                 erased_at = COALESCE(erased_at, $2) WHERE tenant_id = $1 AND id IN ({ids})";
            let s = for_ids(
                tombstone,
                vec![Param::from(tenant), Param::from(now)],
                chunk,
            );
            verifications = verifications.saturating_add(count(B::execute_in(&mut tx, s).await?));
            let raw = "UPDATE verification_attempts SET raw_body = NULL \
                 WHERE raw_body IS NOT NULL AND verification_id IN ({ids})";
            B::execute_in(&mut tx, for_ids(raw, Vec::new(), chunk)).await?;
            let f = "DELETE FROM verification_faces WHERE tenant_id = $1 \
                 AND verification_id IN ({ids})";
            faces = faces.saturating_add(count(
                B::execute_in(&mut tx, for_ids(f, lead(), chunk)).await?,
            ));
            if req.blocklist {
                let b = "DELETE FROM blocklist_faces WHERE tenant_id = $1 \
                     AND verification_id IN ({ids})";
                blocklist = blocklist.saturating_add(count(
                    B::execute_in(&mut tx, for_ids(b, lead(), chunk)).await?,
                ));
            }
            // A reviewer's free text may name the person.
            let r = "UPDATE reviews SET reason = NULL, reviewer = NULL WHERE tenant_id = $1 \
                 AND verification_id IN ({ids})";
            B::execute_in(&mut tx, for_ids(r, lead(), chunk)).await?;
            // A webhook message carries the verification's JSON too, sent or not.
            let o = "DELETE FROM webhook_outbox WHERE tenant_id = $1 \
                 AND verification_id IN ({ids})";
            B::execute_in(&mut tx, for_ids(o, lead(), chunk)).await?;
            // A stored idempotent answer is the verification's JSON, external id and all.
            let k = "DELETE FROM idempotency_keys WHERE tenant_id = $1 \
                 AND verification_id IN ({ids})";
            B::execute_in(&mut tx, for_ids(k, lead(), chunk)).await?;
        }
        if let Some(vid) = verification_id {
            let s = Stmt::new(format!(
                "SELECT {ERASURE_COLUMNS} FROM erasures WHERE tenant_id = $1 \
                 AND verification_id = $2"
            ))
            .bind(tenant)
            .bind(vid);
            if let Some(row) = B::rows_in(&mut tx, s).await?.into_iter().next() {
                let mut first = erasure(&row)?;
                if blocklist > 0 {
                    let s =
                        Stmt::new("UPDATE erasures SET blocklist = blocklist + $2 WHERE id = $1")
                            .bind(first.id)
                            .bind(blocklist);
                    B::execute_in(&mut tx, s).await?;
                    first.blocklist = first.blocklist.saturating_add(blocklist);
                }
                B::commit(tx).await?;
                first.erased_ids = ids;
                return Ok(first);
            }
        }
        let receipt = Erasure {
            id: Uuid::now_v7(),
            tenant_id: tenant.to_owned(),
            scope: scope.to_owned(),
            verification_id,
            requested_by: req.requested_by.as_str().to_owned(),
            verifications,
            faces,
            blocklist,
            created_at: now,
            erased_ids: Vec::new(),
        };
        let s = Stmt::new(format!(
            "INSERT INTO erasures ({ERASURE_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)"
        ))
        .bind(receipt.id)
        .bind(tenant)
        .bind(scope)
        .bind(verification_id)
        .bind(receipt.requested_by.as_str())
        .bind(verifications)
        .bind(faces)
        .bind(blocklist)
        .bind(now);
        B::execute_in(&mut tx, s).await?;
        if faces > 0 {
            B::execute_in(&mut tx, faces_removed(now)).await?;
        }
        B::commit(tx).await?;
        Ok(Erasure {
            erased_ids: ids,
            ..receipt
        })
    }
}

/// The setting every instance watches to drop its in-memory face indexes once faces were
/// deleted (`check/faces.rs`).
pub const FACES_REMOVED: &str = "faces_removed_at";

fn faces_removed(now: DateTime<Utc>) -> Stmt {
    Stmt::new(
        "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value",
    )
    .bind(FACES_REMOVED)
    .bind(now.to_rfc3339())
    .bind(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_lists_follow_the_leading_parameters() {
        let lead = vec![Param::from("t"), Param::from(Utc::now())];
        let s = for_ids(
            "a = $1 AND b = $2 AND id IN ({ids})",
            lead,
            &[Uuid::nil(), Uuid::max()],
        );
        assert_eq!(s.sql, "a = $1 AND b = $2 AND id IN ($3,$4)");
        assert_eq!(s.params.len(), 4);
    }

    #[test]
    fn scopes_number_their_parameters() {
        let (sql, params) = due(
            PurgeKind::Embeddings,
            Scope::AllBut(&["a".into(), "b".into()]),
            true,
        );
        assert!(sql.contains("tenant_id NOT IN ($2,$3)"), "{sql}");
        assert!(sql.ends_with("LIMIT $4"), "{sql}");
        assert_eq!(params.len(), 3);
        let (sql, _) = due(PurgeKind::Metadata, Scope::AllBut(&[]), false);
        assert!(sql.contains("WHERE TRUE AND created_at < $1"), "{sql}");
    }
}
