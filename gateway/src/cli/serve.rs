//! `livegate serve`: the gateway, from a config file or the zero-config demo tenant.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;

use crate::http::router;
use crate::http::state::AppState;
use crate::runtime::Runtime;
use crate::store;

/// Results the spool keeps at most: past it, a result the database cannot take is lost.
pub const SPOOL_MAX_ENTRIES: usize = 10_000;

/// `serve`'s flags.
pub struct Options {
    pub config: Option<PathBuf>,
    pub listen: SocketAddr,
    /// `--database-url` / `DATABASE_URL`, if given (see [`crate::cli::config_and_database`]).
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub redis_timeout: std::time::Duration,
    pub search: livegate_engine::search::IndexOptions,
    pub shutdown_timeout: std::time::Duration,
    pub spool_file: PathBuf,
    /// `--models-dir`: where the built-in engine's models are (and are fetched to).
    pub models_dir: Option<PathBuf>,
    /// `--models-url` / `LIVEGATE_MODELS_URL`: a mirror serving every model file.
    pub models_url: Option<String>,
    /// `--offline`: never download models.
    pub offline: bool,
}

/// The models directories the config needs: its embedded providers' and, with face checks,
/// the top-level one.
fn model_dirs(config: &crate::config::Config) -> Vec<PathBuf> {
    use crate::runtime::engine::models_dir;
    let mut dirs: Vec<PathBuf> = config
        .providers
        .values()
        .filter_map(|p| match &p.kind {
            crate::config::ProviderKind::Embedded(e) => Some(models_dir(e.models_dir.as_deref())),
            _ => None,
        })
        .collect();
    if config.tenants.values().any(|t| t.face_checks.enabled()) {
        dirs.push(models_dir(config.models_dir.as_deref()));
    }
    dirs.sort();
    dirs.dedup();
    dirs
}

pub async fn serve(o: Options) -> anyhow::Result<()> {
    let Options {
        config,
        listen,
        database_url,
        redis_url,
        redis_timeout,
        search,
        shutdown_timeout,
        spool_file,
        models_dir,
        models_url,
        offline,
    } = o;
    if let Some(dir) = models_dir {
        crate::runtime::engine::set_default_models_dir(dir);
    }
    let config_path = config.clone();
    let (loaded, database_url) = crate::cli::config_and_database(config.as_deref(), database_url)?;
    let (database_url, redis_url) = (database_url.as_str(), redis_url.as_deref());
    let store = crate::cli::open_migrated(database_url).await?;
    // Zero-config: a demo key minted now is stored and printed only once the engine has loaded
    // and the port is bound, so a start that fails never shows (or loses) a key.
    let (config, mut demo) = match loaded {
        Some(config) => (config, None),
        None => {
            let demo = crate::cli::demo::prepare(&store)
                .await
                .context("preparing the demo tenant")?;
            (crate::cli::demo::demo_config(demo.hash())?, Some(demo))
        }
    };
    // Before the engine loads: a fresh machine fetches the models (or, offline, says why not).
    for dir in model_dirs(&config) {
        crate::cli::models::ensure(&dir, models_url.as_deref(), offline).await?;
    }
    crate::check::credits::open_accounts(&store, &config)
        .await
        .context("opening credit accounts")?;
    let server_limits = config.server.clone();
    let runtime = Runtime::build(config, Some(&crate::runtime::engine::factory))?;
    let limits = match redis_url {
        Some(url) => {
            let l = crate::http::limiter::RateLimits::redis(url, redis_timeout)
                .context("REDIS_URL is not a valid Redis URL")?;
            tracing::info!(redis = %store::redact_url(url), "rate limits shared through redis");
            l
        }
        None => crate::http::limiter::RateLimits::local(),
    };
    crate::store::writers::spawn_sweeper(store.clone(), std::time::Duration::from_secs(1));
    let spool = std::sync::Arc::new(store::spool::Spool::new(spool_file, SPOOL_MAX_ENTRIES));
    store::spool::spawn_replayer(
        spool.clone(),
        store.clone(),
        std::time::Duration::from_secs(1),
    );
    let mut state = AppState::with_limits(runtime, store, limits);
    state.identity = std::sync::Arc::new(crate::check::faces::Identity::new(search));
    state.spool = Some(spool);
    crate::http::webhooks::spawn(
        state.store.clone(),
        state.runtime.clone(),
        state.metrics.clone(),
        crate::http::webhooks::Schedule::default(),
    );
    // The first pass soon after start, not at it: a fleet restarting together spreads out.
    crate::cli::purge::spawn(
        state.store.clone(),
        state.runtime.clone(),
        state.metrics.clone(),
        state.identity.clone(),
        std::time::Duration::from_secs(30 + u64::from(rand::random::<u8>() % 30)),
    );
    if let Some(path) = config_path {
        let factory: &'static crate::runtime::EmbeddedFactory = &crate::runtime::engine::factory;
        crate::runtime::reload::spawn_watcher(
            state.runtime.clone(),
            path,
            Some(factory),
            std::time::Duration::from_secs(1),
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr()?;
    if let Some(demo) = demo.take() {
        let minted = demo.hash().clone();
        let announced = crate::cli::demo::commit(&state.store, demo)
            .await
            .context("storing the demo key")?;
        if announced.hash() != &minted {
            // Another instance on this database minted the key first: serve that one.
            let config = crate::cli::demo::demo_config(announced.hash())?;
            let factory: &'static crate::runtime::EmbeddedFactory =
                &crate::runtime::engine::factory;
            state
                .runtime
                .store(std::sync::Arc::new(Runtime::build(config, Some(factory))?));
        }
        announced.print(bound);
    }
    tracing::info!(listen = %bound, database = %store::redact_url(database_url), "livegate listening");
    run_until_shutdown(listener, state, server_limits, shutdown_timeout).await
}

/// Serves until SIGTERM/SIGINT, then stops accepting, answers every request already accepted,
/// and waits for the work that outlives its connection (verifications whose client left,
/// shadow calls) and so for their commits: all within `timeout` of the signal.
async fn run_until_shutdown(
    listener: tokio::net::TcpListener,
    state: AppState,
    limits: crate::http::server::ServerLimits,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let signalled = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    let server = crate::http::server::serve(listener, router(state.clone()), limits, async move {
        shutdown_signal().await;
        notify.notify_one();
    });
    let server = tokio::spawn(server);
    signalled.notified().await;
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, server).await {
        Ok(served) => served?,
        Err(_) => tracing::warn!(
            timeout_s = timeout.as_secs(),
            "shutdown timeout: requests still in flight are dropped"
        ),
    }
    state.background.close();
    if tokio::time::timeout_at(deadline, state.background.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            unfinished = state.background.len(),
            "shutdown timeout: background work (verifications, shadow calls) left unfinished"
        );
    }
    if let Some(spool) = &state.spool {
        let replayed = tokio::time::timeout_at(deadline, spool.replay(&state.store)).await;
        if !matches!(replayed, Ok(Ok(_))) {
            tracing::warn!(file = %spool.path().display(), "spooled results wait for the next start");
        }
    }
    tracing::info!("shut down");
    Ok(())
}

/// Default search tuning with the operator's exact-search limit.
pub fn search_options(exact_below: usize) -> livegate_engine::search::IndexOptions {
    livegate_engine::search::IndexOptions {
        exact_below,
        ..Default::default()
    }
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}
