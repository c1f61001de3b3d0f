//! The command line: clap's types and one module per command; `main.rs` only calls [`main`].

mod check_config;
pub mod credits;
pub mod demo;
pub mod engine;
pub mod healthcheck;
pub mod keys;
pub mod models;
pub mod purge;
pub mod report;
pub mod serve;
pub mod simulate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::store;

/// Default store when DATABASE_URL is unset: a SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite:livegate.db";

/// The config a command was given (loaded) and the database it works on: the config's
/// `database_url`, else `DATABASE_URL` (or `--database-url`); with no config, the embedded
/// default. A config naming neither is refused, so that no command quietly works on a new,
/// empty file while the real data is elsewhere.
pub fn config_and_database(
    path: Option<&std::path::Path>,
    given: Option<String>,
) -> anyhow::Result<(Option<crate::config::Config>, String)> {
    let config = path.map(crate::config::Config::load).transpose()?;
    let named = config.as_ref().and_then(|c| c.database_url.clone());
    let url = match (named.or(given), path) {
        (Some(url), _) => url,
        (None, None) => DEFAULT_DATABASE_URL.to_owned(),
        (None, Some(path)) => anyhow::bail!(
            "no database for {}: set `database_url` in it or DATABASE_URL (or --database-url); livegate does not guess one",
            path.display()
        ),
    };
    Ok((config, url))
}

/// The store at `url`, with every migration applied: what each command that touches data
/// starts from.
pub async fn open_migrated(url: &str) -> anyhow::Result<store::DynStore> {
    let s = store::connect(url).await.context("opening the database")?;
    s.migrate().await.context("migrating the database")?;
    Ok(s)
}

#[derive(Parser)]
#[command(
    name = "livegate",
    version,
    about = "One endpoint for passive face-liveness checks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Threads running livegate's async work: connections, vendor calls, commits. One costs
    /// the least CPU per request (no wake-ups handed between threads) and forwards well over a
    /// thousand selfies a second; decoding and the built-in engine run on a pool of their own
    /// whatever this is. Raise it to the cores for an instance that must forward more.
    #[arg(
        long,
        global = true,
        env = "LIVEGATE_WORKER_THREADS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=1024)
    )]
    worker_threads: u16,
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
        /// Postgres (`postgres://…`) or SQLite (`sqlite:FILE`) URL. With a config, its
        /// `database_url` comes first and one of the two is required; without a config the
        /// default is `sqlite:livegate.db`.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
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
        /// Seconds a SIGTERM/SIGINT leaves to answer the requests already accepted and finish
        /// the work that outlives them (their commits, shadow calls) before exiting.
        #[arg(long, env = "LIVEGATE_SHUTDOWN_TIMEOUT", default_value_t = 30)]
        shutdown_timeout: u64,
        /// File keeping results the database could not take (at most 10,000), committed when
        /// it returns.
        #[arg(
            long,
            env = "LIVEGATE_SPOOL_FILE",
            default_value = "livegate-spool.jsonl"
        )]
        spool_file: PathBuf,
        /// The built-in engine's models directory (default: LIVEGATE_MODELS_DIR, else ./models
        /// when it has them, else ~/.cache/livegate/models, where missing models are fetched).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// A mirror of the models' origins (<URL>/<file> for ONNX files, <URL>/<archive> for
        /// the archives livegate converts), used instead of their public URLs when fetching.
        #[arg(long, env = "LIVEGATE_MODELS_URL")]
        models_url: Option<String>,
        /// Never download: fail with what is missing instead.
        #[arg(long, env = "LIVEGATE_OFFLINE")]
        offline: bool,
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
        /// The config `serve` runs with: its `database_url` comes first, and with a config one
        /// of the two is required. Without one the default is `sqlite:livegate.db`.
        #[arg(long, env = "LIVEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
    /// Run one retention purge pass now and print what it removed (`retention:` in the
    /// config; without one, the default periods for every row).
    Purge {
        /// The config `serve` runs with: its `database_url` comes first, and with a config one
        /// of the two is required. Without one the default is `sqlite:livegate.db`.
        #[arg(long, env = "LIVEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// Count what is due without removing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Reports read from the database.
    Report {
        #[command(subcommand)]
        command: ReportCommand,
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
    /// Ask a running gateway whether it is up: exit 0 when its `/healthz` answers 200 (for
    /// container health checks; the image needs no curl).
    Healthcheck {
        /// The address `serve` listens on; a wildcard host is probed on loopback.
        #[arg(long, env = "LIVEGATE_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The path to ask (`/readyz` to also require the database).
        #[arg(long, default_value = "/healthz")]
        path: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 3)]
        timeout: u64,
    },
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
        /// Models directory (default: LIVEGATE_MODELS_DIR, else ./models when it has them, else
        /// ~/.cache/livegate/models, where missing models are fetched).
        #[arg(long)]
        models_dir: Option<PathBuf>,
        /// A mirror of the models' origins, used instead of their public URLs when models are
        /// fetched (as for `serve`).
        #[arg(long, env = "LIVEGATE_MODELS_URL")]
        models_url: Option<String>,
        /// Never download: fail with what is missing instead.
        #[arg(long, env = "LIVEGATE_OFFLINE")]
        offline: bool,
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
    /// Get the models named in the manifest from their origins (converting those published in
    /// another format to ONNX), verify their SHA-256 and write SHA256SUMS.
    Fetch {
        /// Directory to fill (default: LIVEGATE_MODELS_DIR, else ./models).
        #[arg(long, env = "LIVEGATE_MODELS_DIR")]
        dir: Option<PathBuf>,
        /// A mirror of the origins: <URL>/<file> for ONNX files, <URL>/<archive file name> for
        /// the archives converted, used instead of their public URLs.
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
        /// The database `serve` uses for this config: the config's `database_url` comes
        /// first, and one of the two is required.
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReportCommand {
    /// How providers agree on shadow traffic, per provider pair: agreement, Cohen's kappa,
    /// score correlation, where they disagree, latency and cost.
    Agreement {
        /// Only this tenant (default: every tenant).
        #[arg(long)]
        tenant: Option<String>,
        /// How far back: a period (`7d`, `12h`) or an RFC 3339 time.
        #[arg(long, default_value = "7d")]
        since: String,
        #[arg(long, value_enum, default_value_t = report::Format::Table)]
        format: report::Format,
        /// The config `serve` runs with (its `database_url`, and the tenants' costs).
        #[arg(long, env = "LIVEGATE_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Print a fresh API key and the `sha256:` hash to paste into YAML.
    New,
    /// Mint a new key for the zero-config `demo` tenant, replacing the stored one (the old key
    /// stops working when `livegate serve` next starts); prints it once.
    Demo {
        /// The database zero-config `serve` uses.
        #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL, hide_env_values = true)]
        database_url: String,
    },
}

/// The `livegate` binary: parse the command line and run one command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config::check_config(&file),
        Command::Keys {
            command: KeysCommand::New,
        } => {
            let (key, hash) = keys::new_key();
            println!("key:  {key}");
            println!("hash: {hash}");
            ExitCode::SUCCESS
        }
        Command::Openapi => {
            print!("{}", crate::http::openapi::yaml());
            ExitCode::SUCCESS
        }
        // No telemetry and one thread: a probe runs every few seconds and must stay cheap.
        Command::Healthcheck {
            listen,
            path,
            timeout,
        } => {
            let checked = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")
                .and_then(|rt| {
                    rt.block_on(healthcheck::check(
                        listen,
                        &path,
                        std::time::Duration::from_secs(timeout.max(1)),
                    ))
                });
            match checked {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("unhealthy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        other => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(usize::from(cli.worker_threads))
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let telemetry = crate::telemetry::init(rt.handle().clone());
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

async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve {
            config,
            listen,
            database_url,
            redis_url,
            redis_timeout_ms,
            exact_search_below,
            shutdown_timeout,
            spool_file,
            models_dir,
            models_url,
            offline,
        } => {
            serve::serve(serve::Options {
                config,
                listen,
                database_url,
                redis_url,
                redis_timeout: std::time::Duration::from_millis(redis_timeout_ms.max(1)),
                search: serve::search_options(exact_search_below),
                shutdown_timeout: std::time::Duration::from_secs(shutdown_timeout),
                spool_file,
                models_dir,
                models_url,
                offline,
            })
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
        } => credits::add(&tenant, amount, reason, &config, database_url).await,
        Command::Migrate {
            config,
            database_url,
        } => {
            let (_, database_url) = config_and_database(config.as_deref(), database_url)?;
            open_migrated(&database_url).await?;
            println!("migrations applied to {}", store::redact_url(&database_url));
            Ok(())
        }
        Command::Purge {
            config,
            database_url,
            dry_run,
        } => purge::command(config.as_deref(), database_url, dry_run).await,
        Command::Report {
            command:
                ReportCommand::Agreement {
                    tenant,
                    since,
                    format,
                    config,
                    database_url,
                },
        } => {
            report::agreement(report::Options {
                tenant,
                since,
                format,
                config,
                database_url,
            })
            .await
        }
        Command::Keys {
            command: KeysCommand::Demo { database_url },
        } => {
            let s = open_migrated(&database_url).await?;
            let (key, hash) = demo::replace(&s).await.context("storing the demo key")?;
            println!("Demo API key (shown once, stored only as a hash): {key}");
            println!("hash: {hash}");
            println!(
                "Restart `livegate serve` (database {}) to use it.",
                store::redact_url(&database_url)
            );
            Ok(())
        }
        Command::Simulate {
            didit,
            kairos,
            collections,
        } => simulate::simulate(didit, kairos, collections).await,
        Command::Models {
            command: ModelsCommand::Fetch { dir, base_url },
        } => models::fetch_command(dir, base_url.as_deref()).await,
        Command::Engine {
            command:
                EngineCommand::Serve {
                    listen,
                    models_dir,
                    models_url,
                    offline,
                    database_url,
                    exact_search_below,
                },
        } => {
            engine::engine_serve(
                listen,
                engine::Models {
                    dir: models_dir,
                    url: models_url,
                    offline,
                },
                &database_url,
                serve::search_options(exact_search_below),
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
        } => engine::engine_key_new(&collection, test, &database_url).await,
        Command::CheckConfig { .. }
        | Command::Keys {
            command: KeysCommand::New,
        }
        | Command::Openapi
        | Command::Healthcheck { .. } => Ok(()),
    }
}
