//! `charter serve`: load the project, open the store, run until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use charter_server::{Role, Runtime, ServeOptions};
use charter_store::Store;
use charter_store::postgres::PgStore;
use charter_store::sqlite::SqliteStore;
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Project folder.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Address to listen on (default: the project's `server.listen`, else 127.0.0.1:8080).
    #[arg(long, env = "CHARTER_LISTEN")]
    pub listen: Option<String>,
    /// Which parts run in this process.
    #[arg(long, value_enum, default_value_t = RoleArg::All)]
    pub role: RoleArg,
    /// Store to use, overriding the project's `store:` (a SQLite path, or a
    /// `postgres://user@host:port/db` URL).
    #[arg(long, env = "CHARTER_STORE")]
    pub store: Option<String>,
    /// PostgreSQL connection pool size (per node).
    #[arg(long, env = "CHARTER_PG_POOL", default_value_t = 16)]
    pub pg_pool: usize,
    /// Lease owner name for this node (default: pid + random).
    #[arg(long, env = "CHARTER_NODE")]
    pub node: Option<String>,
    #[command(flatten)]
    pub log: LogArgs,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum RoleArg {
    All,
    Api,
    Worker,
}

#[derive(clap::Args, Clone)]
pub struct LogArgs {
    /// Log filter (tracing's EnvFilter syntax, e.g. `info,charter_server=debug`).
    #[arg(long, env = "CHARTER_LOG", default_value = "info")]
    pub log_level: String,
    /// `pretty` for a terminal, `json` for log collectors.
    #[arg(long, env = "CHARTER_LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,
}

pub fn init_logging(args: &LogArgs) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

/// Resolve when SIGTERM or Ctrl-C arrives.
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
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!("invalid listen address `{s}`: expected HOST:PORT such as 127.0.0.1:8080")
    })
}

pub async fn serve(args: ServeArgs) -> ExitCode {
    init_logging(&args.log);
    let runtime = match Runtime::load(&args.dir) {
        Ok(r) => Arc::new(r),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let listen = args
        .listen
        .clone()
        .or_else(|| runtime.project.settings.listen.clone())
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let listen = match parse_listen(&listen) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let role = match args.role {
        RoleArg::All => Role::All,
        RoleArg::Api => Role::Api,
        RoleArg::Worker => Role::Worker,
    };
    let opts = ServeOptions {
        listen,
        role,
        worker_id: args.node.clone(),
    };
    match StoreChoice::from(&runtime, args.store.as_deref()) {
        StoreChoice::Postgres(url) => {
            let store = match PgStore::connect(&url, args.pg_pool.max(2)).await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot connect to the PostgreSQL store: {e}");
                    return ExitCode::from(1);
                }
            };
            // Other nodes' ingests wake this node's worker through LISTEN/NOTIFY.
            let notifications = store.listen().await.ok();
            let code = run_server(runtime, store.clone(), opts, "postgres", notifications).await;
            store.close().await;
            code
        }
        StoreChoice::Sqlite(path) => {
            let store = match SqliteStore::open(&path) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot open the store at {}: {e}", path.display());
                    return ExitCode::from(1);
                }
            };
            let code = run_server(runtime, store.clone(), opts, "sqlite", None).await;
            store.close().await;
            code
        }
    }
}

/// Which store backend the configuration selects.
pub enum StoreChoice {
    Sqlite(PathBuf),
    Postgres(String),
}

impl StoreChoice {
    /// `override_` (flag or CHARTER_STORE) wins over the project's `store:`.
    pub fn from(runtime: &Runtime, override_: Option<&str>) -> StoreChoice {
        let configured = override_.unwrap_or(&runtime.project.settings.store);
        if configured.starts_with("postgres://") || configured.starts_with("postgresql://") {
            StoreChoice::Postgres(configured.to_string())
        } else if let Some(o) = override_ {
            StoreChoice::Sqlite(PathBuf::from(o))
        } else {
            StoreChoice::Sqlite(runtime.store_path())
        }
    }
}

async fn run_server<S: Store>(
    runtime: Arc<Runtime>,
    store: S,
    opts: ServeOptions,
    backend: &str,
    mut notifications: Option<tokio::sync::mpsc::Receiver<String>>,
) -> ExitCode {
    let shutdown = CancellationToken::new();
    let running = match charter_server::start(runtime.clone(), store, opts, shutdown.clone()).await
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = %running.addr, charters = runtime.charters.len(), backend, "charter serving");
    eprintln!("listening on http://{}", running.addr);
    if let Some(mut rx) = notifications.take() {
        let wake = running.wake.clone();
        let token = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    msg = rx.recv() => match msg {
                        Some(_) => wake.notify_one(),
                        None => break,
                    },
                }
            }
        });
    }
    let done = running.done;
    tokio::pin!(done);
    tokio::select! {
        _ = shutdown_signal() => {
            tracing::info!("shutdown requested; draining");
            shutdown.cancel();
            let _ = (&mut done).await;
        }
        _ = &mut done => {
            tracing::error!("server stopped unexpectedly");
            return ExitCode::from(1);
        }
    }
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// `charter migrate`: apply the store's migrations and exit.
pub async fn migrate(dir: &std::path::Path, store: Option<String>) -> ExitCode {
    let runtime = match Runtime::load(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    match StoreChoice::from(&runtime, store.as_deref()) {
        StoreChoice::Postgres(url) => match charter_store::postgres::migrate(&url).await {
            Ok(v) => {
                eprintln!("PostgreSQL store migrated to schema version {v}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        StoreChoice::Sqlite(path) => match SqliteStore::open(&path) {
            Ok(s) => {
                let v = s.schema_version().await.unwrap_or(0);
                s.close().await;
                eprintln!("SQLite store {} at schema version {v}", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
    }
}
