//! A run's buffered writes. Records that need not be durable yet wait in the run's buffer
//! and go to the store in one command with the next write that must be: an action's intent
//! (durable before any request leaves), an attempt followed by a retry, or the run's end
//! with the release. Metrics count a run only once its end is durable.

use std::time::Duration;

use charter_core::model::{ActionRecord, ActionStatus, RunOutcome};
use charter_store::{RunWrite, Store, StoreError};
use serde_json::Value;
use uuid::Uuid;

use super::run::RunCtx;
use crate::{AppState, now_millis};

/// What writing an action's intent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intent {
    /// The intent is durable: the request may be sent.
    Written,
    /// The idempotency key had already succeeded: nothing may be sent.
    AlreadyDone,
}

impl<S: Store> RunCtx<'_, S> {
    /// Send the buffered writes to the store in one durable command (nothing when empty).
    pub(super) async fn flush(&mut self) -> Result<(), StoreError> {
        flush(&self.state.store, self.pending).await
    }

    /// Send the buffered writes and `then` (which must be durable before the run goes on)
    /// in one durable command.
    pub(super) async fn flush_with(&mut self, then: RunWrite) -> Result<(), StoreError> {
        self.pending.push(then);
        self.flush().await
    }

    /// Write the buffered writes and an action's intent (`RunWrite::BeginAction`) in one
    /// durable command, which also checks the key against the succeeded keys.
    pub(super) async fn begin_intent(&mut self, begin: RunWrite) -> Result<Intent, StoreError> {
        self.pending.push(begin);
        let written = self
            .state
            .store
            .record_run(std::mem::take(self.pending))
            .await?;
        Ok(if written.already_succeeded {
            Intent::AlreadyDone
        } else {
            Intent::Written
        })
    }

    /// Record the end of the run (buffered: it is written with the release, and counted in
    /// the metrics once that write is durable, see [`count_finished`]).
    pub(super) fn finish(
        &mut self,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<String>,
    ) {
        self.pending.push(RunWrite::FinishRun {
            run_id: self.run_id,
            route,
            outcome,
            error,
            now: now_millis(),
        });
    }

    /// Buffer an action that ends without any request leaving (invalid, shadow, already
    /// done, log): its intent and its final record.
    pub(super) fn record_action_now(&mut self, record: &ActionRecord, begin_params: &Value) {
        self.pending.push(RunWrite::BeginAction {
            run_id: self.run_id,
            action: record.action.clone(),
            idempotency_key: record.idempotency_key.clone(),
            params: begin_params.clone(),
        });
        self.pending.push(RunWrite::FinishAction {
            run_id: self.run_id,
            record: record.clone(),
        });
    }

    /// Record that the action's idempotency key had already succeeded: nothing is sent.
    pub(super) fn already_done(&mut self, record: &mut ActionRecord, params: &Value) {
        record.status = ActionStatus::AlreadyDone;
        self.record_action_now(record, params);
    }
}

/// Send `pending` to the store in one durable command (nothing when empty).
pub(super) async fn flush<S: Store>(
    store: &S,
    pending: &mut Vec<RunWrite>,
) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    store.record_run(std::mem::take(pending)).await?;
    Ok(())
}

/// The outcome among a run's buffered writes, if they include its end.
pub(super) fn finished_outcome(writes: &[RunWrite]) -> Option<RunOutcome> {
    writes.iter().find_map(|w| match w {
        RunWrite::FinishRun { outcome, .. } => Some(*outcome),
        _ => None,
    })
}

/// Count a finished run once its end is durable, so `/metrics` never runs ahead of the store.
pub(super) fn count_finished<S>(
    state: &AppState<S>,
    charter: &str,
    received_at: i64,
    outcome: Option<RunOutcome>,
) {
    if let Some(outcome) = outcome {
        let cycle = Duration::from_millis((now_millis() - received_at).max(0) as u64);
        state
            .metrics
            .run_finished(charter, outcome.as_str(), Some(cycle));
    }
}

/// One WARN line for a run that failed (a dead letter among them) or went to a human, with
/// its event id and reason, so that someone watching the log sees it.
pub(super) fn warn_unsuccessful(event_id: Uuid, charter: &str, writes: &[RunWrite]) {
    for w in writes {
        if let RunWrite::FinishRun { outcome, error, .. } = w
            && matches!(outcome, RunOutcome::Failed | RunOutcome::Escalated)
        {
            let reason = error.as_deref().unwrap_or("no reason recorded");
            tracing::warn!(event = %event_id, charter, outcome = outcome.as_str(), reason, "run did not complete");
        }
    }
}
