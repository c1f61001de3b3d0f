//! Retention on a running gateway and on the command line: the purge job every `serve` runs,
//! and `livegate purge`. The pass itself is `store/purge.rs`; this file turns the config's
//! `retention:` into its plan.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use arc_swap::ArcSwap;
use chrono::Utc;

use crate::check::faces::Identity;
use crate::config::Config;
use crate::config::retention::{PurgeSchedule, Retention};
use crate::runtime::Runtime;
use crate::store::purge::{Periods, Plan, PurgeOutcome, purge_once};
use crate::store::retention::{FACES_REMOVED, PurgeKind};
use crate::store::{self, DynStore};
use crate::telemetry::metrics::Metrics;

fn periods(r: &Retention) -> Periods {
    Periods {
        verifications: r.verifications.0,
        raw_bodies: r.raw_bodies.0,
        metadata: r.metadata.0,
        embeddings: r.embeddings.0,
    }
}

/// What a pass enforces for `config`; without one, the default periods for every row.
pub fn plan(config: Option<&Config>) -> Plan {
    match config {
        Some(c) => Plan {
            tenants: c
                .tenants
                .values()
                .map(|t| (t.id.clone(), periods(&t.retention)))
                .collect(),
            defaults: periods(&c.retention),
            batch: c.purge.batch,
        },
        None => Plan {
            tenants: Vec::new(),
            defaults: periods(&Retention::default()),
            batch: PurgeSchedule::default().batch,
        },
    }
}

/// `livegate purge`: one pass now, and what it removed (or, dry, would remove).
pub async fn command(
    config: Option<&std::path::Path>,
    database_url: Option<String>,
    dry_run: bool,
) -> anyhow::Result<()> {
    let (config, database_url) = crate::cli::config_and_database(config, database_url)?;
    let s = crate::cli::open_migrated(&database_url).await?;
    let outcome = purge_once(&s, &plan(config.as_ref()), dry_run, Utc::now())
        .await
        .context("purging")?;
    match outcome {
        PurgeOutcome::Ran(report) => {
            let verb = if dry_run { "due" } else { "removed" };
            println!("{verb}: {}", report.summary());
            Ok(())
        }
        PurgeOutcome::Busy => anyhow::bail!(
            "another instance is purging {} now; nothing done",
            store::redact_url(&database_url)
        ),
    }
}

fn removed(report: &crate::store::purge::PurgeReport, kind: PurgeKind) -> u64 {
    report.removed.get(&kind).copied().unwrap_or(0)
}

/// The job every instance runs: a pass every `retention.purge_every` (the live config's),
/// metrics and a log line for each, and this instance's in-memory face indexes dropped once
/// any instance deleted faces.
pub fn spawn(
    store: DynStore,
    runtime: Arc<ArcSwap<Runtime>>,
    metrics: Arc<Metrics>,
    identity: Arc<Identity>,
    first_after: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = first_after;
        let mut faces_seen: Option<String> = None;
        loop {
            tokio::time::sleep(wait).await;
            let config = runtime.load().config.clone();
            wait = config.purge.every;
            let started = std::time::Instant::now();
            match purge_once(&store, &plan(Some(&config)), false, Utc::now()).await {
                Ok(PurgeOutcome::Ran(report)) => {
                    for (kind, n) in &report.removed {
                        metrics.purged(kind.as_str(), *n);
                    }
                    tracing::info!(
                        removed = report.total(),
                        verifications = removed(&report, PurgeKind::Verifications),
                        raw_bodies = removed(&report, PurgeKind::RawBodies),
                        metadata = removed(&report, PurgeKind::Metadata),
                        embeddings = removed(&report, PurgeKind::Embeddings),
                        took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                        "retention purge"
                    );
                }
                Ok(PurgeOutcome::Busy) => {
                    tracing::info!("retention purge: another instance is purging, skipped");
                }
                Err(e) => tracing::warn!(error = %e, "retention purge failed; retried next pass"),
            }
            match store.setting(FACES_REMOVED).await {
                Ok(now) if now != faces_seen => {
                    if faces_seen.is_some() || now.is_some() {
                        identity.forget_all().await;
                    }
                    faces_seen = now;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading when faces were last removed"),
            }
        }
    })
}
