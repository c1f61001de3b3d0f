use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use livegate::app::{AppState, router};
use livegate::config::{Config, ConfigError};
use livegate::runtime::Runtime;
use livegate::store;

/// Default store when DATABASE_URL is unset: a SQLite file in the working directory.
const DEFAULT_DATABASE_URL: &str = "sqlite:livegate.db";

#[derive(Parser)]
#[command(
    name = "livegate",
    version,
    about = "One endpoint for passive face-liveness checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// YAML config file.
        #[arg(long, env = "LIVEGATE_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on.
        #[arg(long, env = "LIVEGATE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Postgres (`postgres://…`) or SQLite (`sqlite:FILE`) URL.
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
        /// Redis shared by every instance for cluster-wide rate limits (`redis://host:6379`).
        /// Without it each instance limits in process.
        #[arg(long, env = "REDIS_URL", hide_env_values = true)]
        redis_url: Option<String>,
        /// How long one Redis call may take before this instance limits in process instead.
        #[arg(long, env = "LIVEGATE_REDIS_TIMEOUT_MS", default_value_t = 100)]
        redis_timeout_ms: u64,
        /// Face sets (collections, a tenant's approved faces) of fewer faces are searched
        /// exactly; larger ones through an index (pgvector on a Postgres that has it, else an
        /// in-process HNSW graph).
        #[arg(long, env = "LIVEGATE_EXACT_SEARCH_BELOW", default_value_t = 100_000)]
        exact_search_below: usize,
    },
    /// Tenant credits.
    Credits {
        #[command(subcommand)]
        command: CreditsCommand,
    },
    /// Validate a config file: exit 0 when valid, 2 with every problem listed.
    CheckConfig { file: PathBuf },
    /// Apply database migrations.
    Migrate {
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Run upstream simulators (for tests and demos), any subset in one process.
    Simulate {
        #[arg(long, value_name = "ADDR")]
        didit: Option<SocketAddr>,
        #[arg(long, value_name = "ADDR")]
        kairos: Option<SocketAddr>,
        #[arg(long, value_name = "ADDR")]
        collections: Option<SocketAddr>,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// The built-in engine's model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// The built-in engine as a collections server (the self-hosted face API).
    Engine {
        #[command(subcommand)]
        command: EngineCommand,
    },
}

#[derive(Subcommand)]
enum EngineCommand {
    /// Serve the collections API (`/api/v1/collections/{id}/…`) on the built-in engine.
    Serve {
        /// Address to listen on.
        #[arg(long, env = "LIVEGATE_ENGINE_LISTEN", default_value = "127.0.0.1:8090")]
        listen: SocketAddr,
        /// Models directory (default: LIVEGATE_MODELS_DIR, else ./models or ../shared/models).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// Postgres (`postgres://…`) or SQLite (`sqlite:FILE`) URL.
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
        /// Face sets (collections, a tenant's approved faces) of fewer faces are searched
        /// exactly; larger ones through an index (pgvector on a Postgres that has it, else an
        /// in-process HNSW graph).
        #[arg(long, env = "LIVEGATE_EXACT_SEARCH_BELOW", default_value_t = 100_000)]
        exact_search_below: usize,
    },
    /// API keys of collections.
    Keys {
        #[command(subcommand)]
        command: EngineKeysCommand,
    },
}

#[derive(Subcommand)]
enum EngineKeysCommand {
    /// Create the collection if needed and print a fresh key bound to it (shown once; only its
    /// SHA-256 is stored).
    New {
        /// Collection id: 1-128 of letters, digits, `_`, `-`, `.`.
        #[arg(long)]
        collection: String,
        /// An `fr_live_` key (the default).
        #[arg(long, conflicts_with = "test")]
        live: bool,
        /// An `fr_test_` key.
        #[arg(long)]
        test: bool,
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download the models named in the manifest, verify their SHA-256 and write SHA256SUMS.
    Fetch {
        /// Directory to fill (default: LIVEGATE_MODELS_DIR, else ./models).
        #[arg(long, env = "LIVEGATE_MODELS_DIR")]
        dir: Option<PathBuf>,
        /// A mirror serving every file as <URL>/<file>, used instead of each file's own URL.
        #[arg(long, env = "LIVEGATE_MODELS_URL")]
        base_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum CreditsCommand {
    /// Add AMOUNT credits to TENANT (negative to take some away); prints the new balance.
    Add {
        tenant: String,
        #[arg(allow_negative_numbers = true)]
        amount: i64,
        /// Why, kept on the ledger row.
        #[arg(long, default_value = "livegate credits add")]
        reason: String,
        /// The YAML config naming the tenant and its `credits`.
        #[arg(long, env = "LIVEGATE_CONFIG")]
        config: PathBuf,
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh API key and the `sha256:` hash to paste into YAML.
    New,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Keys {
            command: KeysCommand::New,
        } => {
            let (key, hash) = livegate::keys::new_key();
            println!("key:  {key}");
            println!("hash: {hash}");
            ExitCode::SUCCESS
        }
        Command::Openapi => {
            print!("{}", livegate::openapi::yaml());
            ExitCode::SUCCESS
        }
        other => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let telemetry = livegate::telemetry::init(rt.handle().clone());
            let result = rt.block_on(run(other));
            // Flush traces while the runtime that carries the exporter's requests still runs.
            drop(telemetry);
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match Config::load(file) {
        Ok(c) => {
            println!(
                "{}: valid ({} providers, {} tenants, {})",
                file.display(),
                c.providers.len(),
                c.tenants.len(),
                c.hash
            );
            ExitCode::SUCCESS
        }
        Err(ConfigError::Invalid(problems)) => {
            eprintln!("{}: {} problem(s)", file.display(), problems.len());
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve {
            config,
            listen,
            database_url,
            redis_url,
            redis_timeout_ms,
            exact_search_below,
        } => {
            serve(
                config,
                listen,
                &database_url,
                redis_url.as_deref(),
                std::time::Duration::from_millis(redis_timeout_ms.max(1)),
                search_options(exact_search_below),
            )
            .await
        }
        Command::Credits {
            command:
                CreditsCommand::Add {
                    tenant,
                    amount,
                    reason,
                    config,
                    database_url,
                },
        } => {
            let config = Config::load(&config)?;
            let s = store::connect(&database_url)
                .await
                .context("opening the database")?;
            s.migrate().await.context("migrating the database")?;
            let change = livegate::api::admin::CreditChange { amount, reason };
            let (kind, balance) =
                livegate::api::admin::change_credits(&s, &config, &tenant, &change)
                    .await
                    .map_err(|e| anyhow::anyhow!("{}", e.detail))?;
            println!("{tenant}: {kind} {amount:+}, balance {balance}");
            Ok(())
        }
        Command::Migrate { database_url } => {
            let s = store::connect(&database_url)
                .await
                .context("opening the database")?;
            s.migrate().await.context("migrating")?;
            println!("migrations applied to {}", store::redact_url(&database_url));
            Ok(())
        }
        Command::Simulate {
            didit,
            kairos,
            collections,
        } => simulate(didit, kairos, collections).await,
        Command::Models {
            command: ModelsCommand::Fetch { dir, base_url },
        } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("models"));
            let manifest = livegate::models::manifest()?;
            for f in &manifest.files {
                println!("{} ({}): {}", f.file, f.licence, f.origin);
            }
            let report = livegate::models::fetch(&manifest, &dir, base_url.as_deref()).await?;
            for r in report {
                match r {
                    livegate::models::Fetched::AlreadyPresent(f) => {
                        println!("{f}: already present, hash verified")
                    }
                    livegate::models::Fetched::Downloaded(f) => {
                        println!("{f}: downloaded, hash verified")
                    }
                }
            }
            println!("models ready in {}", dir.display());
            Ok(())
        }
        Command::Engine {
            command:
                EngineCommand::Serve {
                    listen,
                    models_dir,
                    database_url,
                    exact_search_below,
                },
        } => {
            engine_serve(
                listen,
                models_dir,
                &database_url,
                search_options(exact_search_below),
            )
            .await
        }
        Command::Engine {
            command:
                EngineCommand::Keys {
                    command:
                        EngineKeysCommand::New {
                            collection,
                            live: _,
                            test,
                            database_url,
                        },
                },
        } => engine_key_new(&collection, test, &database_url).await,
        Command::CheckConfig { .. } | Command::Keys { .. } | Command::Openapi => Ok(()),
    }
}

async fn serve(
    config: Option<PathBuf>,
    listen: SocketAddr,
    database_url: &str,
    redis_url: Option<&str>,
    redis_timeout: std::time::Duration,
    search: livegate_engine::search::IndexOptions,
) -> anyhow::Result<()> {
    let store = store::connect(database_url)
        .await
        .context("opening the database")?;
    store.migrate().await.context("migrating the database")?;
    let config_path = config.clone();
    let config = match config {
        Some(path) => Config::load(&path)?,
        None => {
            let (hash, key) = livegate::demo::demo_key(&store)
                .await
                .context("preparing the demo tenant")?;
            match key {
                livegate::demo::DemoKey::New(key) => {
                    println!("No config file: serving the built-in engine with a `demo` tenant.");
                    println!("Demo API key (shown once, stored only as a hash): {key}");
                    println!(
                        "Try: curl -H 'Authorization: Bearer {key}' -F image=@selfie.jpg http://{listen}/v1/liveness"
                    );
                }
                livegate::demo::DemoKey::Existing => {
                    println!(
                        "No config file: serving the built-in engine with the `demo` tenant; its key was printed at first start (remove the database to mint a new one)."
                    );
                }
            }
            livegate::demo::demo_config(&hash)?
        }
    };
    livegate::credits::open_accounts(&store, &config)
        .await
        .context("opening credit accounts")?;
    let runtime = Runtime::build(config, Some(&livegate::embedded::factory))?;
    let limits = match redis_url {
        Some(url) => {
            let l = livegate::ratelimit::RateLimits::redis(url, redis_timeout)
                .context("REDIS_URL is not a valid Redis URL")?;
            tracing::info!(redis = %store::redact_url(url), "rate limits shared through redis");
            l
        }
        None => livegate::ratelimit::RateLimits::local(),
    };
    livegate::credits::spawn_sweeper(store.clone(), std::time::Duration::from_secs(1));
    let mut state = AppState::with_limits(runtime, store, limits);
    state.identity = std::sync::Arc::new(livegate::identity::Identity::new(search));
    if let Some(path) = config_path {
        let factory: &'static livegate::runtime::EmbeddedFactory = &livegate::embedded::factory;
        livegate::reload::spawn_watcher(
            state.clone(),
            path,
            Some(factory),
            std::time::Duration::from_secs(1),
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(listen = %listener.local_addr()?, database = %store::redact_url(database_url), "livegate listening");
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Default search tuning with the operator's exact-search limit.
fn search_options(exact_below: usize) -> livegate_engine::search::IndexOptions {
    livegate_engine::search::IndexOptions {
        exact_below,
        ..Default::default()
    }
}

async fn engine_serve(
    listen: SocketAddr,
    models_dir: Option<PathBuf>,
    database_url: &str,
    search: livegate_engine::search::IndexOptions,
) -> anyhow::Result<()> {
    use livegate_engine::server::{ServerOptions, router};
    let faces = store::faces::open(database_url)
        .await
        .context("opening the database")?;
    let dir = livegate::embedded::models_dir(models_dir.as_deref());
    // Loading verifies hashes and optimizes four models: seconds of CPU, off the async threads.
    let engine = tokio::task::spawn_blocking(move || livegate::embedded::engine(&dir))
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
    axum::serve(listener, router(engine, faces, opts))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn engine_key_new(collection: &str, test: bool, database_url: &str) -> anyhow::Result<()> {
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

async fn shutdown_signal() {
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

async fn simulate(
    didit: Option<SocketAddr>,
    kairos: Option<SocketAddr>,
    collections: Option<SocketAddr>,
) -> anyhow::Result<()> {
    use livegate_simulators as sims;
    if didit.is_none() && kairos.is_none() && collections.is_none() {
        anyhow::bail!(
            "name at least one simulator: --didit ADDR, --kairos ADDR or --collections ADDR"
        );
    }
    let all = [
        ("didit", didit, sims::didit::router as fn() -> axum::Router),
        ("kairos", kairos, sims::kairos::router),
        ("collections", collections, sims::collections::router),
    ];
    for (name, addr, make) in all {
        if let Some(addr) = addr {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr} for {name}"))?;
            println!("{name} simulator on http://{}", listener.local_addr()?);
            sims::serve(listener, make()).await?;
        }
    }
    shutdown_signal().await;
    Ok(())
}
