//! Servers tests start: Charter itself in-process (real SQLite store, worker running) from a
//! project folder, and small axum apps standing in for downstream systems.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use tokio_util::sync::CancellationToken;

/// A Charter server running in-process on 127.0.0.1.
pub struct InProcess {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    pub store: SqliteStore,
    pub runtime: Arc<Runtime>,
    /// Resolves when every task of the server has stopped (after `shutdown` is cancelled).
    pub done: tokio::task::JoinHandle<()>,
}

/// Load the project in `dir` and serve it on 127.0.0.1:0 with every role, the worker named
/// `worker_id`, until `shutdown` is cancelled. Panics (with the loader's message) when the
/// project does not load.
pub async fn boot(dir: &Path, worker_id: &str, shutdown: CancellationToken) -> InProcess {
    charter_connect::install_crypto_provider();
    let runtime = Arc::new(Runtime::load(dir).unwrap_or_else(|e| panic!("{e}")));
    let store = SqliteStore::open(&runtime.store_path()).unwrap();
    let running = charter_server::start(
        runtime.clone(),
        store.clone(),
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            role: Role::All,
            worker_id: Some(worker_id.into()),
        },
        shutdown,
    )
    .await
    .unwrap();
    InProcess {
        base: format!("http://{}", running.addr),
        store,
        runtime,
        done: running.done,
    }
}

/// Serve `app` on 127.0.0.1:0 until `shutdown` is cancelled; its `http://` base URL.
pub async fn serve(app: axum::Router, shutdown: CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    format!("http://{addr}")
}

/// Wait (up to 30 s) until `base/healthz` answers 2xx; panics otherwise.
pub async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become healthy");
}
