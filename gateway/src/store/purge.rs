//! The retention purge pass: deletes or empties, in bounded batches, every row whose period is
//! over, tenant by tenant, then the rows of tenants no longer configured by the defaults. One
//! pass at a time runs across every instance on the database
//! (`RetentionStore::purge_turn`); the job that runs it is `cli/purge.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::retention::{PurgeKind, Scope};
use super::{DynStore, StoreResult};

/// How long each kind of data lives; zero: not kept at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    pub verifications: Duration,
    pub raw_bodies: Duration,
    pub metadata: Duration,
    pub embeddings: Duration,
}

/// What one pass removed (or, dry, would remove), per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub removed: BTreeMap<PurgeKind, u64>,
    /// Statements run per kind: each touched at most `retention.purge_batch` rows.
    pub batches: BTreeMap<PurgeKind, u64>,
    /// Of the verifications removed, those that went with a whole month's partition
    /// (Postgres), not row by row.
    pub in_whole_months: u64,
    pub dry_run: bool,
}

impl PurgeReport {
    pub fn total(&self) -> u64 {
        self.removed.values().sum()
    }

    /// `verifications=3 raw_bodies=0 …`, every kind listed.
    pub fn summary(&self) -> String {
        PurgeKind::ALL
            .iter()
            .map(|k| {
                format!(
                    "{}={}",
                    k.as_str(),
                    self.removed.get(k).copied().unwrap_or(0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// What a pass enforces: each configured tenant's periods, the defaults for every other
/// tenant's rows, and the most rows one statement touches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tenants: Vec<(String, Periods)>,
    pub defaults: Periods,
    pub batch: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeOutcome {
    Ran(PurgeReport),
    /// Another instance holds the purge turn: it is purging now.
    Busy,
}

fn period(r: &Periods, kind: PurgeKind) -> Duration {
    match kind {
        PurgeKind::Verifications => r.verifications,
        PurgeKind::RawBodies => r.raw_bodies,
        PurgeKind::Metadata => r.metadata,
        PurgeKind::Embeddings => r.embeddings,
    }
}

fn cutoff(now: DateTime<Utc>, keep: Duration) -> DateTime<Utc> {
    // Periods are validated to at most 100 years, so this never saturates in practice.
    chrono::Duration::from_std(keep)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// One pass over every tenant, as of `now`.
pub async fn purge_once(
    store: &DynStore,
    plan: &Plan,
    dry_run: bool,
    now: DateTime<Utc>,
) -> StoreResult<PurgeOutcome> {
    // A dry run changes nothing, so it needs no turn.
    let turn = if dry_run {
        None
    } else {
        match store.purge_turn().await? {
            Some(t) => Some(t),
            None => return Ok(PurgeOutcome::Busy),
        }
    };
    let result = pass(store, plan, dry_run, now).await;
    if let Some(t) = turn {
        t.release().await;
    }
    result.map(PurgeOutcome::Ran)
}

async fn pass(
    store: &DynStore,
    plan: &Plan,
    dry_run: bool,
    now: DateTime<Utc>,
) -> StoreResult<PurgeReport> {
    let mut report = PurgeReport {
        dry_run,
        ..Default::default()
    };
    let configured: Vec<String> = plan.tenants.iter().map(|(id, _)| id.clone()).collect();
    let mut scopes: Vec<(Scope<'_>, Periods)> = plan
        .tenants
        .iter()
        .map(|(id, r)| (Scope::Tenant(id.as_str()), *r))
        .collect();
    scopes.push((Scope::AllBut(&configured), plan.defaults));
    let limit = plan.batch.max(1);
    if !dry_run {
        // A month past every scope's retention goes whole; the rest row by row below.
        let oldest_kept = scopes
            .iter()
            .map(|(_, r)| cutoff(now, r.verifications))
            .min()
            .unwrap_or(now);
        let n = store.drop_whole_months(now, oldest_kept).await?;
        report.in_whole_months = n;
        *report.removed.entry(PurgeKind::Verifications).or_default() += n;
    }
    for (scope, retention) in scopes {
        // Whole rows first: what they take with them is not counted again below.
        for kind in PurgeKind::ALL {
            let due = cutoff(now, period(&retention, kind));
            if dry_run {
                let mut n = store.count_due(kind, scope, due).await?;
                if kind != PurgeKind::Verifications {
                    // What goes with whole rows is counted with them, as a real pass would.
                    let rows_due = cutoff(now, period(&retention, PurgeKind::Verifications));
                    let with_rows = store.count_due(kind, scope, due.min(rows_due)).await?;
                    n = n.saturating_sub(with_rows);
                }
                *report.removed.entry(kind).or_default() += n;
                continue;
            }
            loop {
                let n = store.purge_batch(kind, scope, due, limit).await?;
                *report.removed.entry(kind).or_default() += n;
                *report.batches.entry(kind).or_default() += 1;
                if n < u64::from(limit) {
                    break;
                }
                // Other work on this runtime gets its turn between batches.
                tokio::task::yield_now().await;
            }
        }
    }
    Ok(report)
}
