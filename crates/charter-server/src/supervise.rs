//! Supervision: [`start`] binds the listener and spawns every task of this node's role
//! (HTTP, ingest sources, the backlog bounds, the worker and its periodic jobs), all under
//! one cancellation token; a task that stops unexpectedly stops the server. Also the
//! periodic-task helper [`every`], the approval expiry job, and the lease recovery a
//! restarted node runs before its first claim.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use charter_connect::HttpExecutor;
use charter_store::Store;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{
    AppState, Role, Running, Runtime, ServeError, ServeOptions, alerts, backlog, conn, knowledge,
    metrics_handler, nats, notify, now_millis, pipeline, readyz, retention, router, sources,
};

/// The server's tasks, each named for the log when it stops.
type Tasks = JoinSet<&'static str>;

/// Start the HTTP server and/or the worker. Everything stops when `shutdown` is cancelled:
/// the listener stops accepting, in-flight requests finish, the worker drains.
pub async fn start<S: Store>(
    runtime: Arc<Runtime>,
    store: S,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> Result<Running, ServeError> {
    let executor = Arc::new(HttpExecutor::new().map_err(|e| ServeError::Client(e.to_string()))?);
    let state = AppState::new(runtime.clone(), store, executor.clone());
    let (listener, addr) = bind(&runtime, &opts).await?;
    let mut tasks = Tasks::new();
    if opts.role != Role::Worker {
        spawn_ingest(&mut tasks, &state, &executor, listener, &shutdown);
    } else {
        spawn_health_only(&mut tasks, &state, listener, &shutdown);
    }
    if opts.role != Role::Api {
        let worker_id = opts
            .worker_id
            .clone()
            .unwrap_or_else(|| node_identity(opts.listen, addr));
        // Before the first claim: the leases a previous incarnation left are released now
        // instead of after `worker.lease`.
        recover_leases(&state, &worker_id).await;
        spawn_worker(&mut tasks, &state, executor, worker_id, &shutdown);
    }
    let done = tokio::spawn(supervise(tasks, shutdown));
    Ok(Running {
        addr,
        done,
        wake: state.wake.clone(),
    })
}

/// Bind the listener, refusing an open admin API beyond loopback without tokens.
async fn bind(
    runtime: &Runtime,
    opts: &ServeOptions,
) -> Result<(TcpListener, SocketAddr), ServeError> {
    let listener = TcpListener::bind(opts.listen)
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
    Ok((listener, addr))
}

/// Spawn `task` under `name` with its own clone of the cancellation token.
fn spawn<F, Fut>(tasks: &mut Tasks, name: &'static str, shutdown: &CancellationToken, task: F)
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let fut = task(shutdown.clone());
    tasks.spawn(async move {
        fut.await;
        name
    });
}

/// Where events are taken in: the HTTP server (webhooks, API, UI), the backlog bounds, the
/// polled sources and NATS.
fn spawn_ingest<S: Store>(
    tasks: &mut Tasks,
    state: &AppState<S>,
    executor: &Arc<HttpExecutor>,
    listener: TcpListener,
    shutdown: &CancellationToken,
) {
    let runtime = &state.runtime;
    // Polled APIs and schedules ingest like webhooks do, so they run where the ingest does.
    if sources::has_sources(runtime) {
        let (st, ex) = (state.clone(), executor.clone());
        spawn(tasks, "sources", shutdown, |t| sources::run(st, ex, t));
    }
    // The backlog bounds are applied where events are taken in.
    let st = state.clone();
    spawn(tasks, "backlog", shutdown, |t| backlog::run(st, t));
    let limits = conn::ConnLimits::from_settings(&runtime.project.settings.net);
    let app = router(state.clone());
    // The client address (ConnectInfo) feeds the limiters and the audit log.
    spawn(tasks, "http", shutdown, |t| {
        conn::serve(listener, app, limits, t)
    });
    // NATS JetStream sources ingest like webhooks do, so they run where the ingest does.
    if nats::has_sources(runtime) {
        let st = state.clone();
        spawn(tasks, "nats", shutdown, |t| nats::run(st, t));
    }
}

/// A worker-only node still answers health checks.
fn spawn_health_only<S: Store>(
    tasks: &mut Tasks,
    state: &AppState<S>,
    listener: TcpListener,
    shutdown: &CancellationToken,
) {
    let limits = conn::ConnLimits::from_settings(&state.runtime.project.settings.net);
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics_handler::<S>))
        .with_state(state.clone());
    spawn(tasks, "http", shutdown, |t| {
        conn::serve(listener, app, limits, t)
    });
}

/// The worker and the jobs that run where it does: approval expiry, notifications,
/// retention, knowledge refresh, alerts.
fn spawn_worker<S: Store>(
    tasks: &mut Tasks,
    state: &AppState<S>,
    executor: Arc<HttpExecutor>,
    worker_id: String,
    shutdown: &CancellationToken,
) {
    let runtime = state.runtime.clone();
    let settings = &runtime.project.settings.worker;
    let (st, ex) = (state.clone(), executor.clone());
    spawn(tasks, "worker", shutdown, |t| {
        pipeline::run(st, ex, worker_id, t)
    });
    let st = state.clone();
    spawn(tasks, "approval-expiry", shutdown, |t| {
        expire_approvals(st, EXPIRY_INTERVAL, t)
    });
    if notify::has_targets(&runtime) {
        let (st, ex) = (state.clone(), executor.clone());
        spawn(tasks, "notifications", shutdown, |t| notify::run(st, ex, t));
    }
    if let Some(keep) = settings.retention {
        let st = state.clone();
        spawn(tasks, "retention", shutdown, |t| {
            retention::run(st, keep, retention::EVERY, t)
        });
    }
    if knowledge::has_sources(&runtime) {
        let (st, ex) = (state.clone(), executor.clone());
        spawn(tasks, "knowledge", shutdown, |t| knowledge::run(st, ex, t));
    }
    if alerts::has_alerts(&runtime) {
        let (st, every) = (state.clone(), settings.alert_interval);
        spawn(tasks, "alerts", shutdown, |t| {
            alerts::run(st, executor, every, t)
        });
    }
}

/// Wait for every task; the first that stops before shutdown (or panics) shuts the
/// server down.
async fn supervise(mut tasks: Tasks, shutdown: CancellationToken) {
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(name) if !shutdown.is_cancelled() => {
                tracing::error!(task = name, "task stopped unexpectedly; shutting down");
                shutdown.cancel();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "task panicked; shutting down");
                shutdown.cancel();
            }
        }
    }
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

/// How often the approval deadlines are checked.
const EXPIRY_INTERVAL: Duration = Duration::from_secs(1);

/// Call `tick` every `period` (the first time one period after start) until `shutdown` is
/// cancelled; the scheduled jobs (approval expiry, alerts, retention) run on it.
pub(crate) async fn every<F, Fut>(period: Duration, shutdown: &CancellationToken, mut tick: F)
where
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

/// Periodically expire approvals past their deadline until `shutdown` is cancelled. Each
/// expiry is audited (actor `system`) and its event re-queued, so the worker applies the
/// action's `on_expiry` (reject, or escalate to a human).
async fn expire_approvals<S: Store>(
    state: AppState<S>,
    period: Duration,
    shutdown: CancellationToken,
) {
    every(period, &shutdown, || expire_due(&state)).await;
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
        crate::record::requeue_soon(state, a.event_id);
    }
}
