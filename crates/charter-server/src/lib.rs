//! Charter's server: the webhook ingest, the admin API, health and metrics endpoints, and
//! the worker, all supervised under one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use charter_connect::HttpExecutor;
use charter_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub mod alerts;
pub mod api;
pub mod auth;
pub mod backlog;
pub mod client;
pub mod conn;
pub mod dead_letters;
pub mod decide;
pub mod error;
pub mod expressions;
pub mod guard;
pub mod ingest;
pub mod knowledge;
pub mod limits;
pub mod list_api;
pub mod lists;
pub mod mcp;
pub mod metrics;
pub mod mode;
pub mod models;
pub mod nats;
pub mod notify;
pub mod openapi;
pub mod operator;
pub mod ops;
pub mod outbox;
pub mod project;
pub mod record;
pub mod report;
pub mod retention;
pub mod rollout;
pub mod sink;
pub mod slack;
pub mod sources;
pub mod timeline;
pub mod ui;
pub mod worker;

pub use project::{ProjectError, Runtime};

/// Current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Shared state of the HTTP handlers and the worker.
pub struct AppState<S> {
    pub runtime: Arc<Runtime>,
    pub store: S,
    /// Woken when an event is stored or a charter resumed, so idle workers start at once.
    pub wake: Arc<Notify>,
    pub metrics: Arc<metrics::Metrics>,
    /// The server's outbound HTTP client (actions, notifications, answers to Slack).
    pub executor: Arc<HttpExecutor>,
}

impl<S: Clone> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            runtime: self.runtime.clone(),
            store: self.store.clone(),
            wake: self.wake.clone(),
            metrics: self.metrics.clone(),
            executor: self.executor.clone(),
        }
    }
}

/// Which parts of the server run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// HTTP (ingest + API) and the worker.
    All,
    Api,
    Worker,
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub role: Role,
    /// Identifies this node's leases, and must survive a restart of the node so that the
    /// restarted node releases the leases it held before (PostgreSQL; see
    /// [`recover_leases`]). Default: [`node_identity`] (host name and listen address).
    pub worker_id: Option<String>,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot create the HTTP client: {0}")]
    Client(String),
    /// No tokens and a non-loopback address: the admin API and UI would be open to anyone
    /// who can reach it.
    #[error(
        "refusing to serve on {addr} without API tokens: the admin API and UI would be open to anyone who can reach this address. Add `tokens:` to charter.yaml, listen on 127.0.0.1, or (knowingly) set `server.insecure_open_admin: true`"
    )]
    OpenAdmin { addr: SocketAddr },
}

/// A started server.
pub struct Running {
    /// The bound address (useful with port 0).
    pub addr: SocketAddr,
    /// Resolves when every task has stopped (after the token is cancelled, or on failure).
    pub done: tokio::task::JoinHandle<()>,
    /// Wakes this node's worker; a store that hears about events from other nodes (e.g.
    /// PostgreSQL LISTEN/NOTIFY) forwards them here.
    pub wake: Arc<Notify>,
}

/// The default identity of a node: `<host name>/<listen address>`, e.g.
/// `web-1/0.0.0.0:8080`. It survives a restart, and no two live processes share it (two
/// cannot listen on one address of one host). With port 0 the bound port is used, which
/// changes at every start: set an explicit `--node` there.
pub fn node_identity(listen: SocketAddr, bound: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string());
    let addr = if listen.port() == 0 { bound } else { listen };
    format!("{host}/{addr}")
}

/// Release the leases this node's previous incarnation held, so that its events are
/// processed again at once rather than after `worker.lease`. A store served by one process
/// (SQLite under `charter serve`'s serving lock) releases every lease it holds: they all
/// belong to a process that has stopped. A shared store (PostgreSQL) releases only those
/// of `node`, this node's stable identity. Logged once and audited (`worker.recover`) when
/// there were any; runs they cut off are closed as interrupted by the next claim.
pub async fn recover_leases<S: Store>(state: &AppState<S>, node: &str) {
    let all = state.store.single_process();
    let owner = if all { None } else { Some(node) };
    let now = now_millis();
    match state.store.release_leases(owner, now).await {
        Ok(ids) if ids.is_empty() => {}
        Ok(ids) => {
            tracing::warn!(
                released = ids.len(),
                node,
                scope = if all {
                    "every lease (single-process store)"
                } else {
                    "this node's"
                },
                "released the leases of a previous incarnation; their events are processed again now"
            );
            state.metrics.leases_recovered(ids.len());
            let entry = charter_store::NewAuditEntry {
                at: now,
                actor: "system".to_string(),
                action: "worker.recover".to_string(),
                charter: None,
                target: None,
                detail: serde_json::json!({
                    "node": node,
                    "released": ids.len(),
                    "all_leases": all,
                }),
            };
            if let Err(e) = state.store.append_audit(entry).await {
                tracing::error!(error = %e, "could not audit the lease recovery");
            }
        }
        Err(e) => tracing::error!(
            node,
            error = %e,
            "could not release the leases of a previous incarnation; they are taken over when they expire"
        ),
    }
}

/// Build the HTTP router: one route per charter webhook path plus the fixed endpoints.
pub fn router<S: Store>(state: AppState<S>) -> Router {
    let mut app: Router<AppState<S>> = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics_handler::<S>));
    // Every admin API route comes from the one table the OpenAPI document is checked against.
    let mut tokened: Router<AppState<S>> = Router::new();
    // Each behind the one role check of its `need` (deny by default: every entry names one).
    for r in api::routes::<S>() {
        let guard =
            axum::middleware::from_fn_with_state((state.clone(), r.need), auth::require::<S>);
        tokened = tokened.route(r.path, r.handler.route_layer(guard));
    }
    // Charters' actions as MCP tools for agents.
    tokened = tokened.route(
        mcp::MCP_PATH,
        post(mcp::handle::<S>)
            .get(mcp::not_offered)
            .delete(mcp::not_offered),
    );
    // Bearer-token routes: an address presenting too many bad tokens is refused for a while.
    let limiter = Arc::new(limits::FailureLimiter::new(
        limits::TOKEN_FAILURES_ALLOWED,
        limits::TOKEN_WINDOW,
    ));
    app = app.merge(tokened.route_layer(axum::middleware::from_fn_with_state(
        limiter,
        limits::guard_tokens,
    )));
    // Webhook routes hold the state behind one `Arc` of their own: axum's `State` extractor
    // clones every field's `Arc` (five shared counters, touched from both cores) per request.
    // They take the request's headers out of it rather than through axum's `HeaderMap`
    // extractor (which copies the map), and they sit outside the response-mapping layer
    // below (a boxed future and a clone of the router per request): they mark a 413's
    // connection for closing themselves. They also apply the body limit themselves rather
    // than through a `DefaultBodyLimit` layer (a layer and an extensions entry per request).
    let limit = state.runtime.project.settings.body_limit;
    let hook_state = Arc::new(state.clone());
    let mut hooks: Router = Router::new();
    // Slack's interactive callback (Approve/Reject buttons of notifications): called by
    // Slack's servers and checked by its signature, so outside the admin guard too.
    if notify::slack_interactive_enabled(&state.runtime) {
        hooks = hooks.merge(
            Router::new()
                .route(
                    slack::SLACK_INTERACTIVE_PATH,
                    post(slack::slack_interactive::<S>),
                )
                .with_state(state.clone()),
        );
    }
    let rates = Arc::new(limits::WebhookLimits::new(
        &state.runtime.project.settings.net,
    ));
    let exposure = Arc::new(guard::Exposure::new(&state.runtime));
    for (path, charter) in &state.runtime.hooks {
        let charter: Arc<str> = Arc::from(charter.as_str());
        let st = hook_state.clone();
        let rates = rates.clone();
        let exposure = exposure.clone();
        hooks = hooks.route(
            path,
            post(move |req: axum::extract::Request| {
                let (parts, body) = req.into_parts();
                let charter = charter.clone();
                let st = st.clone();
                let rates = rates.clone();
                let exposure = exposure.clone();
                async move {
                    if !rates.is_empty() {
                        let client = parts
                            .extensions
                            .get::<axum::extract::ConnectInfo<SocketAddr>>()
                            .map(|c| exposure.client_ip(c.0.ip(), &parts.headers));
                        if let Err((limit, wait)) = rates.check(&charter, client) {
                            st.metrics.webhook_limited(&charter, limit);
                            return error::ApiError::TooManyRequests {
                                retry_after: wait.as_secs_f64().ceil() as u64,
                            }
                            .into_response();
                        }
                    }
                    match axum::body::to_bytes(body, limit).await {
                        Ok(body) => ingest::receive(&st, &charter, parts.uri, parts.headers, body)
                            .await
                            .into_response(),
                        Err(err) => close_if_too_large(body_refused(err).into_response()),
                    }
                }
            }),
        );
    }
    // The web UI (its own session state and form body limit).
    let ui = ui::router(state.clone());
    app.layer(DefaultBodyLimit::max(limit))
        .with_state(state)
        .merge(ui)
        .layer(axum::middleware::map_response(close_after_too_large))
        .layer(axum::middleware::from_fn_with_state(
            exposure,
            guard::admin_guard,
        ))
        .merge(hooks)
}

/// Why a webhook's body could not be read: over the limit (413), or cut off or broken on
/// the wire (400).
fn body_refused(err: axum::Error) -> error::ApiError {
    let inner = err.into_inner();
    if conn::is_body_timeout(&*inner) {
        return error::ApiError::BodyTimeout;
    }
    if inner
        .downcast_ref::<http_body_util::LengthLimitError>()
        .is_some()
    {
        error::ApiError::PayloadTooLarge
    } else {
        error::ApiError::BadRequest("the request body could not be read".to_owned())
    }
}

/// A request refused for its size was not read to its end, so its connection cannot carry
/// another request: the 413 says `Connection: close`, or a client that reuses the
/// connection (HTTP keep-alive) has its next request cut off mid-flight.
async fn close_after_too_large(response: axum::response::Response) -> axum::response::Response {
    close_if_too_large(response)
}

/// [`close_after_too_large`] for a handler's own response.
fn close_if_too_large(mut response: axum::response::Response) -> axum::response::Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE
        || response.status() == StatusCode::REQUEST_TIMEOUT
    {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// Readiness: the store commits a probe write and its schema is at this build's version.
async fn readyz<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
    match state.store.readiness().await {
        Ok(r) if r.migrated() => (
            StatusCode::OK,
            axum::Json(serde_json::json!({
                "status": "ready",
                "schema_version": r.schema_version,
            })),
        ),
        Ok(r) => {
            tracing::warn!(
                found = r.schema_version,
                expected = r.expected_version,
                "readiness: schema version differs"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({
                    "status": "migrations pending",
                    "schema_version": r.schema_version,
                    "expected_version": r.expected_version,
                })),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                axum::Json(serde_json::json!({"status": "store unavailable"})),
            )
        }
    }
}

/// Counters and histograms of this process, plus gauges read from the store (waiting work,
/// pending approvals, open escalations and firing alerts).
async fn metrics_handler<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
    let now = now_millis();
    let backlog = state.store.backlog(now).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: backlog unavailable");
        Vec::new()
    });
    let firing = state.store.open_incidents(None).await.unwrap_or_default();
    let text = state.metrics.render_with(&backlog, &firing, now);
    ([("content-type", "text/plain; version=0.0.4")], text)
}

/// How often the approval deadlines are checked.
const EXPIRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Periodically expire approvals past their deadline until `shutdown` is cancelled. Each
/// expiry is audited (actor `system`) and its event re-queued, so the worker applies the
/// action's `on_expiry` (reject, or escalate to a human).
/// Call `tick` every `period` (the first time one period after start) until `shutdown` is
/// cancelled; the scheduled jobs (approval expiry, alerts, retention) run on it.
pub(crate) async fn every<F, Fut>(
    period: std::time::Duration,
    shutdown: &CancellationToken,
    mut tick: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(period) => {}
        }
        tick().await;
    }
}

async fn expire_approvals<S: Store>(
    state: AppState<S>,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    crate::every(every, &shutdown, || expire_due(&state)).await;
}

/// Expire the approvals whose deadline passed, audit each and requeue its event.
async fn expire_due<S: Store>(state: &AppState<S>) {
    let expired = match state.store.expire_approvals(now_millis()).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "expiring approvals failed; will retry");
            return;
        }
    };
    for a in expired {
        tracing::info!(approval = %a.id, event = %a.event_id, charter = %a.charter, "approval expired");
        let entry = charter_store::NewAuditEntry {
            at: now_millis(),
            actor: "system".into(),
            action: "approval.expire".into(),
            charter: Some(a.charter.clone()),
            target: Some(a.id.to_string()),
            detail: serde_json::json!({
                "event": a.event_id,
                "action": a.action,
                "on_expiry": a.on_expiry,
            }),
        };
        if let Err(e) = state.store.append_audit(entry).await {
            tracing::warn!(error = %e, approval = %a.id, "audit of an expiry failed");
        }
        api::requeue_soon(state, a.event_id);
    }
}

/// Start the HTTP server and/or the worker. Everything stops when `shutdown` is cancelled:
/// the listener stops accepting, in-flight requests finish, the worker drains.
pub async fn start<S: Store>(
    runtime: Arc<Runtime>,
    store: S,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let executor = Arc::new(HttpExecutor::new().map_err(|e| ServeError::Client(e.to_string()))?);
    let state = AppState {
        runtime: runtime.clone(),
        store,
        wake: Arc::new(Notify::new()),
        metrics: Arc::new(metrics::Metrics::default()),
        executor: executor.clone(),
    };
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| ServeError::Bind {
            addr: opts.listen,
            source: e,
        })?;
    let addr = listener.local_addr().map_err(|e| ServeError::Bind {
        addr: opts.listen,
        source: e,
    })?;
    if opts.role != Role::Worker && !addr.ip().is_loopback() && runtime.tokens.is_empty() {
        if !runtime.project.settings.net.insecure_open_admin {
            return Err(ServeError::OpenAdmin { addr });
        }
        tracing::warn!(
            %addr,
            "INSECURE: listening beyond loopback with no API tokens (server.insecure_open_admin): anyone who can reach this address controls every charter"
        );
    }
    let limits = conn::ConnLimits::from_settings(&runtime.project.settings.net);
    let mut tasks = tokio::task::JoinSet::new();
    // Polled APIs and schedules ingest like webhooks do, so they run where the ingest does.
    if opts.role != Role::Worker && sources::has_sources(&runtime) {
        let token = shutdown.clone();
        let st = state.clone();
        let ex = executor.clone();
        tasks.spawn(async move {
            sources::run(st, ex, token).await;
            "sources"
        });
    }
    if opts.role != Role::Worker {
        // The backlog bounds are applied where events are taken in.
        let token = shutdown.clone();
        let st = state.clone();
        tasks.spawn(async move {
            backlog::run(st, token).await;
            "backlog"
        });
        let app = router(state.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            // The client address (ConnectInfo) feeds the limiters and the audit log.
            conn::serve(listener, app, limits, token).await;
            "http"
        });
    } else {
        // A worker-only node still answers health checks.
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz::<S>))
            .route("/metrics", get(metrics_handler::<S>))
            .with_state(state.clone());
        let token = shutdown.clone();
        tasks.spawn(async move {
            conn::serve(listener, app, limits, token).await;
            "http"
        });
    }
    if opts.role != Role::Api {
        let worker_id = opts
            .worker_id
            .clone()
            .unwrap_or_else(|| node_identity(opts.listen, addr));
        // Before the first claim: the leases a previous incarnation left are released now
        // instead of after `worker.lease`.
        recover_leases(&state, &worker_id).await;
        let token = shutdown.clone();
        let st = state.clone();
        let alert_executor = executor.clone();
        let notify_executor = executor.clone();
        let knowledge_executor = executor.clone();
        tasks.spawn(async move {
            worker::run(st, executor, worker_id, token).await;
            "worker"
        });
        let token = shutdown.clone();
        let st = state.clone();
        tasks.spawn(async move {
            expire_approvals(st, EXPIRY_INTERVAL, token).await;
            "approval-expiry"
        });
        if notify::has_targets(&runtime) {
            let token = shutdown.clone();
            let st = state.clone();
            let ex = notify_executor;
            tasks.spawn(async move {
                notify::run(st, ex, token).await;
                "notifications"
            });
        }
        if let Some(keep) = runtime.project.settings.worker.retention {
            let token = shutdown.clone();
            let st = state.clone();
            tasks.spawn(async move {
                retention::run(st, keep, retention::EVERY, token).await;
                "retention"
            });
        }
        if knowledge::has_sources(&runtime) {
            let token = shutdown.clone();
            let st = state.clone();
            let ex = knowledge_executor;
            tasks.spawn(async move {
                knowledge::run(st, ex, token).await;
                "knowledge"
            });
        }
        if alerts::has_alerts(&runtime) {
            let token = shutdown.clone();
            let st = state.clone();
            let ex = alert_executor;
            let every = runtime.project.settings.worker.alert_interval;
            tasks.spawn(async move {
                alerts::run(st, ex, every, token).await;
                "alerts"
            });
        }
    }
    // NATS JetStream sources ingest like webhooks do, so they run where the ingest does.
    if opts.role != Role::Worker && nats::has_sources(&runtime) {
        let token = shutdown.clone();
        let st = state.clone();
        tasks.spawn(async move {
            nats::run(st, token).await;
            "nats"
        });
    }
    let supervisor_token = shutdown.clone();
    let done = tokio::spawn(async move {
        while let Some(res) = tasks.join_next().await {
            match res {
                Ok(name) if !supervisor_token.is_cancelled() => {
                    tracing::error!(task = name, "task stopped unexpectedly; shutting down");
                    supervisor_token.cancel();
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "task panicked; shutting down");
                    supervisor_token.cancel();
                }
            }
        }
    });
    Ok(Running {
        addr,
        done,
        wake: state.wake.clone(),
    })
}
