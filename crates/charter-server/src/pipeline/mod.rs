//! The worker as a pipeline: it claims events under leases, runs each through its charter
//! (decide -> route -> gate -> act -> record) and releases them. Supervised: it stops
//! claiming on shutdown and drains in-flight runs within the configured grace period; a run
//! cut off by the deadline keeps its lease until it expires and is then picked up again (by
//! this node after a restart, or by another).
//!
//! - [`process`]: one claimed event (its span, lease renewal, and how its run is settled);
//! - [`run`]: the run's phases over one [`run::RunCtx`];
//! - [`decide`]: the decision cascade, context fetches and drafts;
//! - [`route`], [`act`], [`gate`], [`escalate`]: the route's actions, the one retry loop,
//!   the approval gate, hand-over to a human;
//! - [`writes`]: the run's buffered writes;
//! - [`sizing`]: how many runs are in flight (adaptive unless `worker.concurrency` is set);
//! - [`text`], [`mode`]: pure helpers other modules import without depending on the worker.

mod act;
pub mod decide;
mod escalate;
mod gate;
mod process;
mod route;
mod run;
pub mod sizing;
mod writes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_connect::HttpExecutor;
use charter_core::config::WorkerSettings;
use charter_store::{Claimed, Store};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{AppState, now_millis};
use process::process_claimed;
use sizing::{Finished, Sizing};

/// Run the worker loop until `shutdown` is cancelled, then drain.
pub async fn run<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    worker_id: String,
    shutdown: CancellationToken,
) {
    let settings = state.runtime.project.settings.worker.clone();
    let mut claims = Claims {
        state: &state,
        executor: &executor,
        worker_id: &worker_id,
        names: state.runtime.charters.keys().cloned().collect(),
        start: 0,
        tasks: JoinSet::new(),
        sizing: Sizing::new(settings.concurrency, Instant::now()),
        finished: Arc::new(Finished::default()),
    };
    state.metrics.worker_limit(claims.sizing.limit());
    tracing::info!(
        worker = %worker_id,
        concurrency = claims.sizing.limit(),
        automatic = claims.sizing.automatic(),
        "worker started"
    );
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        claims.reap();
        let limit = claims.sizing.tick(Instant::now(), &claims.finished);
        state.metrics.worker_limit(limit);
        if claims.round(&settings).await {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = state.wake.notified() => {},
            _ = tokio::time::sleep(settings.poll_interval) => {},
            Some(res) = claims.tasks.join_next(), if !claims.tasks.is_empty() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "a run task failed");
                }
            }
        }
    }
    drain(claims.tasks, settings.shutdown_grace).await;
    tracing::info!(worker = %worker_id, "worker stopped");
}

/// The claim loop's state: the charters taken in turn, the runs in flight and their limit.
struct Claims<'a, S> {
    state: &'a AppState<S>,
    executor: &'a Arc<HttpExecutor>,
    worker_id: &'a str,
    names: Vec<String>,
    /// The charter the next round starts with (rotating, so none always goes first).
    start: usize,
    tasks: JoinSet<()>,
    sizing: Sizing,
    finished: Arc<Finished>,
}

impl<S: Store> Claims<'_, S> {
    /// Collect the runs that finished.
    fn reap(&mut self) {
        while let Some(res) = self.tasks.try_join_next() {
            if let Err(e) = res {
                tracing::error!(error = %e, "a run task failed");
            }
        }
    }

    /// One claim per charter, in turn, while slots are free. Returns whether anything was
    /// claimed.
    async fn round(&mut self, settings: &WorkerSettings) -> bool {
        let limit = self.sizing.limit();
        // Claim in batches: while runs are in flight, wait until a quarter of the slots
        // are free instead of claiming one event per finished run (a claim is a durable
        // write).
        let min_claim = (limit / 4).clamp(1, 64);
        let mut claimed_any = false;
        for k in 0..self.names.len() {
            let name = &self.names[(self.start + k) % self.names.len()];
            let available = limit.saturating_sub(self.tasks.len());
            if available == 0 {
                self.sizing.note_full();
                break;
            }
            if available < min_claim && !self.tasks.is_empty() {
                break;
            }
            let Some(cr) = self.state.runtime.charters.get(name) else {
                continue;
            };
            let charter_limit = cr.charter.concurrency.max(1);
            let claimed = match self
                .state
                .store
                .claim(
                    name,
                    self.worker_id,
                    available.min(charter_limit),
                    charter_limit,
                    settings.lease,
                    now_millis(),
                )
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(charter = %name, error = %e, "claim failed");
                    Vec::new()
                }
            };
            claimed_any |= !claimed.is_empty();
            for c in claimed {
                self.spawn(c, settings.lease);
            }
        }
        if self.tasks.len() >= limit {
            self.sizing.note_full();
        }
        self.start = self.start.wrapping_add(1);
        claimed_any
    }

    /// Run one claimed event on its own task, timed for the sizing.
    fn spawn(&mut self, claimed: Claimed, lease: Duration) {
        let st = self.state.clone();
        let ex = self.executor.clone();
        let wid = self.worker_id.to_string();
        let finished = self.finished.clone();
        self.tasks.spawn(async move {
            let started = Instant::now();
            process_claimed(st, ex, wid, claimed, lease).await;
            finished.add(started.elapsed());
        });
    }
}

/// Let the runs in flight finish within `grace`; those still running then are cut off
/// (their leases expire and their events are claimed again).
async fn drain(mut tasks: JoinSet<()>, grace: Duration) {
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, grace = ?grace, "draining in-flight runs");
    }
    let drained =
        tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown deadline reached; unfinished runs will be picked up again when their lease expires"
        );
        tasks.abort_all();
    }
}
