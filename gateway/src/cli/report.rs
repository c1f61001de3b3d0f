//! `livegate report agreement`: the agreement report (`report/agreement.rs`) as a terminal
//! table, JSON or CSV.

use anyhow::Context;
use chrono::Utc;

use crate::report::agreement;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
}

pub struct Options {
    pub tenant: Option<String>,
    pub since: String,
    pub format: Format,
    pub config: Option<std::path::PathBuf>,
    pub database_url: Option<String>,
}

pub async fn agreement(o: Options) -> anyhow::Result<()> {
    let from = crate::report::since(&o.since, Utc::now()).map_err(anyhow::Error::msg)?;
    let (config, database_url) =
        crate::cli::config_and_database(o.config.as_deref(), o.database_url)?;
    let s = crate::cli::open_migrated(&database_url).await?;
    let pairs = s
        .shadow_pairs(o.tenant.as_deref(), from)
        .await
        .context("reading shadow pairs")?;
    let report = agreement::agreement(&pairs, config.as_ref(), from, o.tenant);
    match o.format {
        Format::Table => print!("{}", agreement::table(&report)),
        Format::Csv => print!("{}", agreement::csv(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}
