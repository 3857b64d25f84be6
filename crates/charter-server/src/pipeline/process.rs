//! One claimed event end to end: the `run` span and the task's metrics registry, the
//! lease renewed while the run goes on, and the run's end settled in the store (released,
//! held for a retry, or left to expire).

use std::sync::Arc;
use std::time::Duration;

use charter_connect::HttpExecutor;
use charter_core::model::{EventStatus, RunOutcome};
use charter_store::{Claimed, RunWrite, Store};
use uuid::Uuid;

use super::run::{RunError, run_pipeline};
use super::writes::{count_finished, finished_outcome, flush, warn_unsuccessful};
use crate::{AppState, now_millis};

/// Process one claimed event inside a `run` span (fields `event`, `charter`, and `run` /
/// `trace_id` once the run starts), with the server's metrics as the task's current registry.
pub(super) async fn process_claimed<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    worker_id: String,
    claimed: Claimed,
    lease: Duration,
) {
    use tracing::Instrument as _;
    let span = tracing::info_span!(
        "run",
        event = %claimed.event.id,
        charter = %claimed.event.charter,
        run = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    let metrics = state.metrics.clone();
    crate::metrics::scope(
        metrics,
        process_claimed_in_span(state, executor, worker_id, claimed, lease).instrument(span),
    )
    .await;
}

/// The claimed event and where its run ends up.
struct Held<'a, S> {
    state: &'a AppState<S>,
    worker_id: &'a str,
    event_id: Uuid,
    charter: String,
    received_at: i64,
}

async fn process_claimed_in_span<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    worker_id: String,
    claimed: Claimed,
    lease: Duration,
) {
    let held = Held {
        state: &state,
        worker_id: &worker_id,
        event_id: claimed.event.id,
        charter: claimed.event.charter.clone(),
        received_at: claimed.event.received_at,
    };
    // A run after the first may be the retry of a dead letter, which its success closes.
    let rerun = claimed.attempt > 1;
    note_interrupted(&state, &claimed);
    let mut pending: Vec<RunWrite> = Vec::new();
    // The run never holds this task for long (costly expressions run on the blocking pool,
    // see `expressions`), so the lease is renewed beside it.
    let result = tokio::select! {
        r = run_pipeline(&state, &executor, claimed, &mut pending) => r,
        e = renew(&held, lease) => Err(e),
    };
    match result {
        Ok(status) => held.release(pending, status, rerun).await,
        Err(e) => held.stopped(pending, e).await,
    }
}

/// Renew the lease every third of its length until it is lost or the store fails.
async fn renew<S: Store>(held: &Held<'_, S>, lease: Duration) -> RunError {
    let every = (lease / 3).max(Duration::from_millis(50));
    loop {
        tokio::time::sleep(every).await;
        let until = now_millis() + lease.as_millis() as i64;
        match held
            .state
            .store
            .renew(held.event_id, held.worker_id, until)
            .await
        {
            Ok(true) => {}
            Ok(false) => return RunError::LeaseLost,
            Err(e) => return RunError::Store(e),
        }
    }
}

/// Closes a run abandoned after its lease was lost as interrupted, when its start is among the
/// buffered writes and its end is not (otherwise its row would stay open for good: the claim
/// that took the event over closes only the runs already written).
fn close_abandoned(pending: &mut Vec<RunWrite>) {
    let started = pending.iter().find_map(|w| match w {
        RunWrite::Start { run_id, .. } => Some(*run_id),
        _ => None,
    });
    if let Some(run_id) = started
        && finished_outcome(pending).is_none()
    {
        pending.push(RunWrite::FinishRun {
            run_id,
            route: None,
            outcome: RunOutcome::Interrupted,
            error: Some("the run's lease was lost (it ran longer than worker.lease without renewing); another claim took the event over".into()),
            now: now_millis(),
        });
    }
}

impl<S: Store> Held<'_, S> {
    /// The run ended: its writes and the release in one durable command, then the count.
    async fn release(&self, mut pending: Vec<RunWrite>, status: EventStatus, rerun: bool) {
        let event_id = self.event_id;
        pending.push(RunWrite::Release {
            event_id,
            worker: self.worker_id.to_string(),
            status,
            now: now_millis(),
        });
        let finished = finished_outcome(&pending);
        warn_unsuccessful(event_id, &self.charter, &pending);
        match self.state.store.record_run(pending).await {
            Ok(w) => {
                count_finished(self.state, &self.charter, self.received_at, finished);
                if w.released == Some(false) {
                    tracing::warn!(event = %event_id, "lease lost before release")
                } else if rerun && finished == Some(RunOutcome::Completed) {
                    crate::dead_letters::close_after_success(self.state, event_id).await;
                }
            }
            Err(e) => tracing::error!(event = %event_id, error = %e, "release failed"),
        }
    }

    /// The run stopped without finishing.
    async fn stopped(&self, mut pending: Vec<RunWrite>, error: RunError) {
        let (event_id, charter) = (self.event_id, &self.charter);
        match error {
            RunError::LeaseLost => {
                tracing::warn!(event = %event_id, charter = %charter, "lease lost; abandoning run");
                // What the run did is still true: keep it as evidence (no release). A run
                // whose start was still buffered is closed as interrupted: the claim that took
                // the event closed the runs it could see, and this one was not written yet.
                close_abandoned(&mut pending);
                let finished = finished_outcome(&pending);
                match flush(&self.state.store, &mut pending).await {
                    Ok(()) => count_finished(self.state, charter, self.received_at, finished),
                    Err(e) => {
                        tracing::error!(event = %event_id, error = %e, "recording an abandoned run failed")
                    }
                }
            }
            RunError::RetryLater(after) => {
                let finished = finished_outcome(&pending);
                if let Err(e) = flush(&self.state.store, &mut pending).await {
                    tracing::error!(event = %event_id, error = %e, "store error during run; will retry after lease expiry");
                    return;
                }
                count_finished(self.state, charter, self.received_at, finished);
                // Keep the event leased until then; the next claim after that retries it.
                let until = now_millis() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
                if let Err(e) = self
                    .state
                    .store
                    .renew(event_id, self.worker_id, until)
                    .await
                {
                    tracing::error!(event = %event_id, error = %e, "could not hold the event for a retry; it is retried when its lease expires");
                }
            }
            RunError::Store(e) => {
                // Leave the lease to expire: the event is retried by a later claim.
                tracing::error!(event = %event_id, charter = %charter, error = %e, "store error during run; will retry after lease expiry");
            }
        }
    }
}

/// Count and log the runs of this event that the claim closed as interrupted, and the
/// actions they left in doubt (their requests may have reached the target; this run sends
/// them again with the same idempotency keys unless they are already done).
fn note_interrupted<S: Store>(state: &AppState<S>, claimed: &Claimed) {
    let charter = &claimed.event.charter;
    for run in &claimed.interrupted {
        state
            .metrics
            .run_finished(charter, RunOutcome::Interrupted.as_str(), None);
        for a in &run.in_doubt {
            state.metrics.in_doubt(charter, &a.action);
        }
        let keys: Vec<String> = run
            .in_doubt
            .iter()
            .map(|a| format!("{}={}", a.action, a.idempotency_key))
            .collect();
        tracing::warn!(
            event = %claimed.event.id,
            charter = %charter,
            interrupted_run = %run.run_id,
            in_doubt = ?keys,
            "closed a run cut off before it finished as interrupted; its in-doubt actions are sent again with the same idempotency keys"
        );
    }
}
