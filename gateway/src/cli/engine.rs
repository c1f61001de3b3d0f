//! `livegate engine serve` and `livegate engine keys new`: the built-in engine as a
//! collections server.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::cli::serve::shutdown_signal;
use crate::store;

/// Where `engine serve` takes its models from, as for `serve`.
pub struct Models {
    pub dir: Option<PathBuf>,
    /// A mirror of the origins.
    pub url: Option<String>,
    /// Never download.
    pub offline: bool,
}

pub async fn engine_serve(
    listen: SocketAddr,
    models: Models,
    database_url: &str,
    search: livegate_engine::search::IndexOptions,
) -> anyhow::Result<()> {
    use livegate_engine::server::{ServerOptions, router};
    let dir = crate::runtime::engine::models_dir(models.dir.as_deref());
    // A fresh machine fetches what is missing before anything else starts (or, offline, says why not).
    crate::cli::models::ensure(&dir, models.url.as_deref(), models.offline).await?;
    let faces = store::faces::open(database_url)
        .await
        .context("opening the database")?;
    // Loading verifies hashes and optimizes four models: seconds of CPU, off the async threads.
    let engine = tokio::task::spawn_blocking(move || crate::runtime::engine::engine(&dir))
        .await
        .context("loading the models")?
        .map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!("collections engine on http://{addr}");
    tracing::info!(listen = %addr, database = %store::redact_url(database_url), "collections engine listening");
    let opts = ServerOptions {
        index: search,
        ..ServerOptions::default()
    };
    // The same listener as the gateway's: slow or idle clients do not hold its sockets.
    crate::http::server::serve(
        listener,
        router(engine, faces, opts),
        crate::http::server::ServerLimits::default(),
        shutdown_signal(),
    )
    .await;
    Ok(())
}

pub async fn engine_key_new(
    collection: &str,
    test: bool,
    database_url: &str,
) -> anyhow::Result<()> {
    use livegate_engine::server::{KeyMode, format_key, hash_key, valid_collection_id};
    use rand::RngCore;
    if !valid_collection_id(collection) {
        anyhow::bail!(
            "{collection:?} is not a usable collection id: use 1-128 of letters, digits, `_`, `-`, `.`"
        );
    }
    let faces = store::faces::open(database_url)
        .await
        .context("opening the database")?;
    faces
        .create_collection(collection)
        .await
        .context("creating the collection")?;
    let mode = if test { KeyMode::Test } else { KeyMode::Live };
    let mut random = [0u8; 16];
    rand::rng().fill_bytes(&mut random);
    let key = format_key(mode, random);
    faces
        .bind_key(collection, &hash_key(&key), mode)
        .await
        .context("storing the key")?;
    println!("collection: {collection}");
    println!("key: {key}");
    println!("(shown once: only its SHA-256 is stored)");
    Ok(())
}
