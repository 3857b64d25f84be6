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
    /// This node's identity, which its leases carry. It must stay the same across restarts
    /// of the node (a restarted node releases the leases its identity held) and differ
    /// between nodes sharing a store. Default: `<host name>/<listen address>`.
    #[arg(long, env = "CHARTER_NODE")]
    pub node: Option<String>,
    /// Export spans to an OpenTelemetry collector over OTLP/HTTP (JSON), e.g.
    /// `http://127.0.0.1:4318`; `/v1/traces` is appended. Off when unset.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    #[arg(long, env = "OTEL_SERVICE_NAME", default_value = "charter")]
    pub otlp_service: String,
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
    init_logging_with(args, None);
}

/// Logs to stderr (pretty or JSON) and, when given, spans to an OTLP collector.
pub fn init_logging_with(args: &LogArgs, otlp: Option<crate::otlp::OtlpLayer>) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = args.log_format == "json";
    let json_logs = json.then(|| {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
    });
    // Colours only on a terminal: a log redirected to a file gets no ANSI codes.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let text_logs = (!json).then(|| {
        tracing_subscriber::fmt::layer()
            .with_ansi(colour)
            .with_writer(std::io::stderr)
    });
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(json_logs)
        .with(text_logs)
        .with(otlp)
        .try_init();
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
    let otlp = match args.otlp_endpoint.as_deref().map(str::trim) {
        Some(endpoint) if !endpoint.is_empty() => {
            match crate::otlp::pipeline(endpoint, &args.otlp_service) {
                Ok(p) => Some(p),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        _ => None,
    };
    let (layer, exporter) = otlp.unzip();
    init_logging_with(&args.log, layer);
    let export_stop = CancellationToken::new();
    let export_task = exporter.map(|e| tokio::spawn(e.run(export_stop.clone())));
    let code = serve_logged(args).await;
    // Flush the spans of the shutdown itself.
    export_stop.cancel();
    if let Some(task) = export_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), task).await;
    }
    code
}

async fn serve_logged(args: ServeArgs) -> ExitCode {
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
            // One serving process per SQLite file (whatever its role): a second serve is
            // refused, and the leases found at start-up are all a stopped process's, so
            // the worker releases them.
            if let Err(e) = store.lock_for_serving() {
                eprintln!("error: {e}");
                store.close().await;
                return ExitCode::from(1);
            }
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
    if let Some(rx) = notifications.take() {
        forward_wakeups(rx, running.wake.clone(), shutdown.clone());
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

/// Wake this node's worker whenever another node announces a stored event (PostgreSQL
/// LISTEN/NOTIFY), until `shutdown`.
pub fn forward_wakeups(
    mut rx: tokio::sync::mpsc::Receiver<String>,
    wake: Arc<tokio::sync::Notify>,
    shutdown: CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                msg = rx.recv() => match msg {
                    Some(_) => wake.notify_one(),
                    None => break,
                },
            }
        }
    });
}

/// The project in `dir`, or the exit code of a command that cannot load it (the problem
/// printed).
fn load_runtime(dir: &std::path::Path) -> Result<Runtime, ExitCode> {
    Runtime::load(dir).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(1)
    })
}

/// `charter purge`: remove finished work received before `before`, round after round.
pub async fn purge(
    dir: &std::path::Path,
    store: Option<String>,
    before: &str,
    charter: Option<String>,
) -> ExitCode {
    let now = charter_server::now_millis();
    let cutoff = match crate::client::parse_time(before, now) {
        Ok(t) if t <= now => t,
        Ok(_) => {
            eprintln!("error: --before {before} is in the future; nothing that recent is purged");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("error: --before: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match load_runtime(dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let result = match StoreChoice::from(&runtime, store.as_deref()) {
        StoreChoice::Postgres(url) => match PgStore::connect(&url, 2).await {
            Ok(s) => {
                let r =
                    charter_server::retention::purge_before(&s, cutoff, charter.as_deref()).await;
                s.close().await;
                r
            }
            Err(e) => Err(e),
        },
        StoreChoice::Sqlite(path) => {
            if !path.exists() {
                eprintln!("error: no store at {}", path.display());
                return ExitCode::from(1);
            }
            match SqliteStore::open(&path) {
                Ok(s) => {
                    let r = charter_server::retention::purge_before(&s, cutoff, charter.as_deref())
                        .await;
                    s.close().await;
                    r
                }
                Err(e) => Err(e),
            }
        }
    };
    match result {
        Ok(p) => {
            eprintln!(
                "purged {} event(s) with {} run(s), and {} rejected payload(s), received before {}",
                p.events,
                p.runs,
                p.rejected,
                charter_core::cron::format_utc(cutoff.div_euclid(1000))
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `charter backup`: copy the SQLite store to `out` (see `sqlite::backup_file`).
pub async fn backup(
    dir: &std::path::Path,
    store: Option<String>,
    out: &std::path::Path,
) -> ExitCode {
    let runtime = match load_runtime(dir) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let path = match StoreChoice::from(&runtime, store.as_deref()) {
        StoreChoice::Sqlite(path) => path,
        StoreChoice::Postgres(_) => {
            eprintln!(
                "error: `charter backup` copies a SQLite store; back PostgreSQL up with its own tools (pg_dump, or your provider's snapshots)"
            );
            return ExitCode::from(2);
        }
    };
    let target = out.to_path_buf();
    let source = path.clone();
    let done =
        tokio::task::spawn_blocking(move || charter_store::sqlite::backup_file(&source, &target))
            .await;
    match done {
        Ok(Ok(bytes)) => {
            eprintln!(
                "backed up {} to {} ({bytes} bytes)",
                path.display(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: the backup task failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `charter migrate`: apply the store's migrations and exit.
pub async fn migrate(dir: &std::path::Path, store: Option<String>) -> ExitCode {
    let runtime = match load_runtime(dir) {
        Ok(r) => r,
        Err(code) => return code,
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
