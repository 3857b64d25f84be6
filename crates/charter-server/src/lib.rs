//! Charter's server: the webhook ingest, the admin API, health and metrics endpoints, and
//! the worker, all supervised under one cancellation token.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use charter_store::Store;
use tokio::sync::Notify;

pub mod alerts;
pub mod api;
pub mod auth;
pub mod backlog;
pub mod client;
pub mod conn;
pub mod dead_letters;
pub mod error;
pub mod expressions;
pub mod guard;
pub mod ingest;
pub mod knowledge;
pub mod limits;
pub mod list_api;
pub mod lists;
pub mod llm;
pub mod mcp;
pub mod metrics;
pub mod mode;
pub mod models;
pub mod nats;
pub mod notify;
pub mod openapi;
pub mod ops;
pub mod outbox;
pub mod pipeline;
pub mod project;
pub mod record;
pub mod report;
pub mod retention;
pub mod rollout;
pub mod slack;
pub mod sources;
pub mod state;
pub mod supervise;
pub mod text;
pub mod timeline;
pub mod ui;

pub use project::{ProjectError, Runtime};
pub use state::AppState;
pub(crate) use supervise::every;
pub use supervise::{node_identity, recover_leases, start};

/// Current time in Unix milliseconds.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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
pub(crate) async fn readyz<S: Store>(State(state): State<AppState<S>>) -> impl IntoResponse {
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
pub(crate) async fn metrics_handler<S: Store>(
    State(state): State<AppState<S>>,
) -> impl IntoResponse {
    let now = now_millis();
    let backlog = state.store.backlog(now).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "metrics: backlog unavailable");
        Vec::new()
    });
    let firing = state.store.open_incidents(None).await.unwrap_or_default();
    let text = state.metrics.render_with(&backlog, &firing, now);
    ([("content-type", "text/plain; version=0.0.4")], text)
}
