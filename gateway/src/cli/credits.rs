//! `livegate credits add TENANT AMOUNT`: a top-up (or a correction) written to the ledger.

use std::path::Path;

use anyhow::Context;

use crate::http::handlers::admin::{CreditChange, change_credits};

pub async fn add(
    tenant: &str,
    amount: i64,
    reason: String,
    config_path: &Path,
    database_url: Option<String>,
) -> anyhow::Result<()> {
    let (config, database_url) = crate::cli::config_and_database(Some(config_path), database_url)?;
    let config = config.context("loading the config")?;
    let s = crate::cli::open_migrated(&database_url).await?;
    let change = CreditChange { amount, reason };
    let (kind, balance) = change_credits(&s, &config, tenant, &change)
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
    println!("{tenant}: {kind} {amount:+}, balance {balance}");
    Ok(())
}
