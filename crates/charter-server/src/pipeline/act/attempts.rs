//! The one retry loop of every action that sends something (an HTTP request, a Slack
//! message, an email, a SQL statement): attempts under the action's retry policy, each
//! recorded, backoff with jitter between retryable failures, a dead letter after the last.
//! The action's intent is durable before the first attempt (see [`super::send`]), so a
//! crash anywhere in here repeats the request under the same idempotency key.

use std::future::Future;
use std::time::Instant;

use charter_connect::{AttemptOutcome, backoff};
use charter_core::config::Action;
use charter_core::model::{ActionRecord, ActionStatus, AttemptRecord};
use charter_store::{RunWrite, Store};
use serde_json::json;

use super::ActStep;
use crate::now_millis;
use crate::pipeline::run::{RunCtx, RunError};

/// What the attempts send through, as the metrics and the dead letter name it.
pub(super) struct Channel<'a> {
    /// The connector's name for the metrics (`-` for a request without one).
    pub connector: &'a str,
    /// A failure without an error text is named by its HTTP status (`HTTP 503`) rather
    /// than as an unknown error (HTTP requests).
    pub status_names_failure: bool,
}

/// Attempt `action` until it succeeds, fails for good, or runs out of attempts. `attempt`
/// makes one attempt; its `Err` means the request cannot be made at all (the action is
/// recorded as invalid, nothing is retried).
pub(super) async fn with_retries<S, F, Fut>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    channel: Channel<'_>,
    mut record: ActionRecord,
    mut attempt: F,
) -> Result<ActStep, RunError>
where
    S: Store,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<AttemptOutcome, String>>,
{
    let name = action.name.as_str();
    let policy = action.retry;
    let mut attempt_no = 1u32;
    loop {
        let started_at = now_millis();
        let out = match attempt().await {
            Ok(out) => out,
            Err(e) => {
                record.status = ActionStatus::Invalid;
                run.state.store.finish_action(run.run_id, &record).await?;
                return Ok(ActStep::Failed(format!("action `{name}`: {e}")));
            }
        };
        let last = out.ok || !out.retryable || attempt_no >= policy.max_attempts;
        record_attempt(run, name, &mut record, &out, attempt_no, started_at, last).await?;
        let result = if out.ok {
            "succeeded"
        } else if out.retryable {
            "retryable"
        } else {
            "failed"
        };
        run.state.metrics.action_attempt(
            &run.charter.name,
            name,
            channel.connector,
            result,
            Some(out.duration),
        );
        if out.ok {
            record.status = ActionStatus::Succeeded;
            run.pending.push(RunWrite::FinishAction {
                run_id: run.run_id,
                record,
            });
            run.record_measure(action);
            return Ok(ActStep::Continue);
        }
        if last {
            return Ok(dead_letter(run, name, &channel, record, out, attempt_no));
        }
        attempt_no += 1;
        let wait = {
            let mut rng = rand::rng();
            backoff(&policy, attempt_no, out.retry_after, &mut rng)
        };
        let t = Instant::now();
        tokio::time::sleep(wait).await;
        tracing::debug!(action = %name, waited = ?t.elapsed(), "retrying");
    }
}

/// Record one attempt of an action. One followed by a retry is written durably at once, so
/// the evidence of a failed attempt survives a crash during the backoff. The last attempt
/// needs no write of its own: the action's `FinishAction` follows right after, and that
/// record carries every attempt (the store adds the ones not yet written).
async fn record_attempt<S: Store>(
    run: &mut RunCtx<'_, S>,
    name: &str,
    record: &mut ActionRecord,
    out: &AttemptOutcome,
    attempt_no: u32,
    started_at: i64,
    last: bool,
) -> Result<(), RunError> {
    let rec = AttemptRecord {
        attempt: attempt_no,
        started_at,
        duration_ms: out.duration.as_millis() as u64,
        status: out.status,
        error: out.error.clone(),
        ok: out.ok,
    };
    if !last {
        let write = RunWrite::Attempt {
            run_id: run.run_id,
            action: name.to_string(),
            attempt: rec.clone(),
        };
        run.flush_with(write).await?;
    }
    record.attempts.push(rec);
    Ok(())
}

/// Every attempt failed (or the last one cannot be retried): the action is dead-lettered,
/// and the route stops with the evidence for the escalation.
fn dead_letter<S: Store>(
    run: &mut RunCtx<'_, S>,
    name: &str,
    channel: &Channel<'_>,
    mut record: ActionRecord,
    out: AttemptOutcome,
    attempts: u32,
) -> ActStep {
    record.status = ActionStatus::DeadLettered;
    let status = out
        .status
        .filter(|_| channel.status_names_failure)
        .map(|s| format!("HTTP {s}"));
    let why = out
        .error
        .or(status)
        .unwrap_or_else(|| "unknown error".into());
    let message = format!("action `{name}` dead-lettered after {attempts} attempt(s): {why}");
    let evidence = json!({
        "action": name,
        "params": record.params,
        "attempts": record.attempts,
        "error": message,
    });
    run.pending.push(RunWrite::FinishAction {
        run_id: run.run_id,
        record,
    });
    ActStep::DeadLettered { message, evidence }
}
