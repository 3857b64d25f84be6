//! The worker: claims events under leases, runs the pipeline (decide -> route -> gate ->
//! act -> record) and releases them. Supervised: it stops claiming on shutdown and drains
//! in-flight runs within the configured grace period; a run cut off by the deadline keeps
//! its lease until it expires and is then picked up again (by this node after a restart,
//! or by another).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::expressions::first_matching_route;
use charter_connect::{HttpExecutor, backoff};
use charter_core::config::{ActionKind, Approval, Charter, Mode, OnExpiry, Recipients};
use charter_core::idempotency::idempotency_key;
use charter_core::model::{
    ActionRecord, ActionStatus, AttemptRecord, Decision, DecisionStage, EventStatus, NewEvent,
    RunOutcome, StageAnswer,
};
use charter_core::routing::{decision_value, eval_context};
use charter_store::{
    ApprovalRecord, ApprovalStatus, Claimed, EscalationRecord, NewApproval, NewAuditEntry,
    NewEscalation, RunWrite, Store, StoreError,
};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::{AppState, now_millis};

/// Run the worker loop until `shutdown` is cancelled, then drain.
pub async fn run<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    worker_id: String,
    shutdown: CancellationToken,
) {
    let settings = state.runtime.project.settings.worker.clone();
    let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let names: Vec<String> = state.runtime.charters.keys().cloned().collect();
    let mut start = 0usize;
    // Claim in batches: while runs are in flight, wait until a quarter of the permits are
    // free instead of claiming one event per finished run (a claim is a durable write).
    let min_claim = (settings.concurrency / 4).clamp(1, 64);
    tracing::info!(worker = %worker_id, concurrency = settings.concurrency, "worker started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        let mut claimed_any = false;
        for k in 0..names.len() {
            let name = &names[(start + k) % names.len()];
            let available = permits.available_permits();
            if available == 0 || (available < min_claim && !tasks.is_empty()) {
                break;
            }
            let Some(cr) = state.runtime.charters.get(name) else {
                continue;
            };
            let limit = cr.charter.concurrency.max(1);
            let claimed = match state
                .store
                .claim(
                    name,
                    &worker_id,
                    available.min(limit),
                    limit,
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
            for c in claimed {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                claimed_any = true;
                let st = state.clone();
                let ex = executor.clone();
                let wid = worker_id.clone();
                let lease = settings.lease;
                tasks.spawn(async move {
                    process_claimed(st, ex, wid, c, lease).await;
                    drop(permit);
                });
            }
        }
        start = start.wrapping_add(1);
        while let Some(res) = tasks.try_join_next() {
            if let Err(e) = res {
                tracing::error!(error = %e, "a run task failed");
            }
        }
        if claimed_any {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = state.wake.notified() => {},
            _ = tokio::time::sleep(settings.poll_interval) => {},
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "a run task failed");
                }
            }
        }
    }
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, grace = ?settings.shutdown_grace, "draining in-flight runs");
    }
    let drained = tokio::time::timeout(settings.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = tasks.len(),
            "shutdown deadline reached; unfinished runs will be picked up again when their lease expires"
        );
        tasks.abort_all();
    }
    tracing::info!(worker = %worker_id, "worker stopped");
}

/// Why a run stopped without finishing.
#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("lease lost to another worker")]
    LeaseLost,
    /// The run asked to be tried again later (a context fetch with `on_error: retry`
    /// failed): the lease is extended by this long instead of released.
    #[error("retry later")]
    RetryLater(Duration),
}

/// Process one claimed event inside a `run` span (fields `event`, `charter`, and `run` /
/// `trace_id` once the run starts), with the server's metrics as the task's current registry.
async fn process_claimed<S: Store>(
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

async fn process_claimed_in_span<S: Store>(
    state: AppState<S>,
    executor: Arc<HttpExecutor>,
    worker_id: String,
    claimed: Claimed,
    lease: Duration,
) {
    let event_id = claimed.event.id;
    let charter_name = claimed.event.charter.clone();
    let received_at = claimed.event.received_at;
    // A run after the first may be the retry of a dead letter, which its success closes.
    let rerun = claimed.attempt > 1;
    note_interrupted(&state, &claimed);
    // The lease is renewed by a task of its own, so that a run busy on a thread (a costly
    // expression evaluated under `block_in_place`, which holds this task for up to the
    // evaluation's time limit) keeps its lease; the task ends with the run (aborted on drop).
    let mut renew = {
        let store = state.store.clone();
        let worker = worker_id.clone();
        AbortOnDrop(tokio::spawn(async move {
            let every = (lease / 3).max(Duration::from_millis(50));
            loop {
                tokio::time::sleep(every).await;
                let until = now_millis() + lease.as_millis() as i64;
                match store.renew(event_id, &worker, until).await {
                    Ok(true) => {}
                    Ok(false) => return RunError::LeaseLost,
                    Err(e) => return RunError::Store(e),
                }
            }
        }))
    };
    // The run's writes that need not be durable yet: they go to the store in one command with
    // the next write that must be (an action's intent, or the run's end with the release).
    let mut pending: Vec<RunWrite> = Vec::new();
    let result = tokio::select! {
        r = run_pipeline(&state, &executor, claimed, &mut pending) => r,
        e = renew.join() => Err(e),
    };
    // Stop renewing before the run's end is written (a retry's hold below sets its own lease).
    drop(renew);
    let status = match result {
        Ok(status) => status,
        Err(RunError::LeaseLost) => {
            tracing::warn!(event = %event_id, charter = %charter_name, "lease lost; abandoning run");
            // What the run did is still true: keep it as evidence (no release). A run whose
            // start was still buffered is closed here as interrupted: the claim that took the
            // event closed the runs it could see, and this one was not written yet.
            close_abandoned(&mut pending);
            let finished = finished_outcome(&pending);
            match flush(&state.store, &mut pending).await {
                Ok(()) => count_finished(&state, &charter_name, received_at, finished),
                Err(e) => {
                    tracing::error!(event = %event_id, error = %e, "recording an abandoned run failed")
                }
            }
            return;
        }
        Err(RunError::RetryLater(after)) => {
            let finished = finished_outcome(&pending);
            if let Err(e) = flush(&state.store, &mut pending).await {
                tracing::error!(event = %event_id, error = %e, "store error during run; will retry after lease expiry");
                return;
            }
            count_finished(&state, &charter_name, received_at, finished);
            // Keep the event leased until then; the next claim after that retries it.
            let until = now_millis() + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
            if let Err(e) = state.store.renew(event_id, &worker_id, until).await {
                tracing::error!(event = %event_id, error = %e, "could not hold the event for a retry; it is retried when its lease expires");
            }
            return;
        }
        Err(RunError::Store(e)) => {
            // Leave the lease to expire: the event is retried by a later claim.
            tracing::error!(event = %event_id, charter = %charter_name, error = %e, "store error during run; will retry after lease expiry");
            return;
        }
    };
    pending.push(RunWrite::Release {
        event_id,
        worker: worker_id,
        status,
        now: now_millis(),
    });
    let finished = finished_outcome(&pending);
    warn_unsuccessful(event_id, &charter_name, &pending);
    match state.store.record_run(pending).await {
        Ok(w) => {
            count_finished(&state, &charter_name, received_at, finished);
            if w.released == Some(false) {
                tracing::warn!(event = %event_id, "lease lost before release")
            } else if rerun && finished == Some(RunOutcome::Completed) {
                crate::dead_letters::close_after_success(&state, event_id).await;
            }
        }
        Err(e) => tracing::error!(event = %event_id, error = %e, "release failed"),
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

/// One WARN line for a run that failed (a dead letter among them) or went to a human, with
/// its event id and reason, so that someone watching the log sees it.
fn warn_unsuccessful(event_id: Uuid, charter: &str, writes: &[RunWrite]) {
    for w in writes {
        if let RunWrite::FinishRun { outcome, error, .. } = w
            && matches!(outcome, RunOutcome::Failed | RunOutcome::Escalated)
        {
            let reason = error.as_deref().unwrap_or("no reason recorded");
            tracing::warn!(event = %event_id, charter, outcome = outcome.as_str(), reason, "run did not complete");
        }
    }
}

/// The outcome among a run's buffered writes, if they include its end.
fn finished_outcome(writes: &[RunWrite]) -> Option<RunOutcome> {
    writes.iter().find_map(|w| match w {
        RunWrite::FinishRun { outcome, .. } => Some(*outcome),
        _ => None,
    })
}

/// Count a finished run once its end is durable, so `/metrics` never runs ahead of the store.
fn count_finished<S: Store>(
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

/// Send the run's buffered writes to the store in one durable command (nothing when empty).
async fn flush<S: Store>(store: &S, pending: &mut Vec<RunWrite>) -> Result<(), StoreError> {
    if pending.is_empty() {
        return Ok(());
    }
    store.record_run(std::mem::take(pending)).await?;
    Ok(())
}

/// Send the buffered writes and `then` (which must be durable before the run goes on, like
/// an action's intent) in one durable command.
async fn flush_with<S: Store>(
    store: &S,
    pending: &mut Vec<RunWrite>,
    then: RunWrite,
) -> Result<(), StoreError> {
    pending.push(then);
    flush(store, pending).await
}

/// Record that the action's idempotency key had already succeeded: nothing is sent.
fn already_done(
    pending: &mut Vec<RunWrite>,
    run_id: Uuid,
    record: &mut ActionRecord,
    params: &Value,
) -> ActStep {
    record.status = ActionStatus::AlreadyDone;
    record_action_now(pending, run_id, record, params);
    ActStep::Continue
}

/// What writing an action's intent found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    /// The intent is durable: the request may be sent.
    Written,
    /// The idempotency key had already succeeded: nothing may be sent.
    AlreadyDone,
}

/// Write the buffered writes and an action's intent (`RunWrite::BeginAction`) in one durable
/// command, which also checks the key against the succeeded keys.
async fn begin_intent<S: Store>(
    store: &S,
    pending: &mut Vec<RunWrite>,
    begin: RunWrite,
) -> Result<Intent, StoreError> {
    pending.push(begin);
    let written = store.record_run(std::mem::take(pending)).await?;
    Ok(if written.already_succeeded {
        Intent::AlreadyDone
    } else {
        Intent::Written
    })
}

/// A spawned task aborted when this handle is dropped: the lease renewal of one run, which
/// must not outlive it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl AbortOnDrop<RunError> {
    /// The renewal's end: a lost lease or a store error (a renewal task that panicked counts
    /// as a lost lease: the run can no longer be sure it holds the event).
    async fn join(&mut self) -> RunError {
        (&mut self.0).await.unwrap_or(RunError::LeaseLost)
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
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
        finish_run(
            pending,
            run_id,
            None,
            RunOutcome::Interrupted,
            Some("the run's lease was lost (it ran longer than worker.lease without renewing); another claim took the event over".into()),
        );
    }
}

/// Record the end of the run (buffered: it is written with the release, and counted in the
/// metrics once that write is durable, see [`count_finished`]).
fn finish_run(
    pending: &mut Vec<RunWrite>,
    run_id: Uuid,
    route: Option<usize>,
    outcome: RunOutcome,
    error: Option<String>,
) {
    pending.push(RunWrite::FinishRun {
        run_id,
        route,
        outcome,
        error,
        now: now_millis(),
    });
}

/// Run one event through its charter. Returns the event's next status.
async fn run_pipeline<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    claimed: Claimed,
    pending: &mut Vec<RunWrite>,
) -> Result<EventStatus, RunError> {
    let Claimed {
        event,
        mode_override,
        resolution: human,
        ..
    } = claimed;
    let store = &state.store;
    let run_id = Uuid::now_v7();
    // The run id doubles as the W3C trace id of everything the run sends out.
    let span = tracing::Span::current();
    span.record("run", tracing::field::display(run_id));
    span.record("trace_id", tracing::field::display(run_id.simple()));
    let Some(cr) = state.runtime.charters.get(&event.charter) else {
        tracing::error!(event = %event.id, charter = %event.charter, "event's charter is not defined in this project");
        store
            .start_run(run_id, event.id, &event.charter, "-", "-", now_millis())
            .await?;
        store
            .finish_run(
                run_id,
                None,
                RunOutcome::Failed,
                Some("the event's charter is not defined in the running project"),
                now_millis(),
            )
            .await?;
        return Ok(EventStatus::Failed);
    };
    // An operator's promotion (or demotion) stored in the charter state wins over the file's
    // `mode:` while the file still says what it said then (see `operator`).
    let mode = crate::operator::mode_of(&cr.charter, mode_override.as_ref());
    let charter = if mode == cr.charter.mode {
        cr.charter.clone()
    } else {
        let mut c = (*cr.charter).clone();
        c.mode = mode;
        Arc::new(c)
    };
    pending.push(RunWrite::Start {
        run_id,
        event_id: event.id,
        charter: charter.name.clone(),
        charter_version: charter.version.clone(),
        mode: mode.as_str().to_string(),
        now: now_millis(),
    });

    let finish = |pending: &mut Vec<RunWrite>,
                  route: Option<usize>,
                  outcome: RunOutcome,
                  error: Option<String>| {
        finish_run(pending, run_id, route, outcome, error);
    };

    // Context: records the charter fetches from its connectors, once per run.
    let fetched = if charter.context.is_empty() && charter.retrieve.is_empty() {
        None
    } else {
        let ctx0 = eval_context(&event, None);
        // The fetches are kept as run extras: the run must exist first.
        flush(store, pending).await?;
        let got = crate::decide::assemble_context(state, executor, &charter, &event, run_id, &ctx0)
            .await?;
        if let Some((why, after)) = got.retry {
            finish(pending, None, RunOutcome::Failed, Some(why));
            return Err(RunError::RetryLater(after));
        }
        Some(Value::Object(got.values))
    };

    // An agent's tool call (MCP) names the action itself: no decision and no route, the
    // action's own gates (approval, shadow mode, idempotency) still apply.
    if let Some(name) = crate::mcp::requested_action(&event) {
        if !charter.actions.contains_key(name) {
            let why = format!(
                "the action `{name}` requested through MCP is no longer declared by the charter"
            );
            finish(pending, None, RunOutcome::Failed, Some(why));
            return Ok(EventStatus::Failed);
        }
        let ctx = run_context(&event, fetched.as_ref());
        if let Err(why) = tool_call_allowed(&charter, name, &ctx) {
            finish(pending, None, RunOutcome::NoRoute, Some(why));
            return Ok(EventStatus::Done);
        }
        let names = [name.to_string()];
        let (outcome, status, error) = act_in_order(
            state, executor, &charter, &event, run_id, &names, &ctx, None, pending,
        )
        .await?;
        finish(pending, None, outcome, error);
        return Ok(status);
    }

    // One context for deciding and routing: only `decision` changes in between.
    let mut ctx = run_context(&event, fetched.as_ref());
    // Decide. A human's decision on an escalation of this event (read with the claim)
    // replaces the cascade.
    let decide_started = Instant::now();
    let decision = if let Some(h) = &human {
        Some(human_decision(h))
    } else {
        match charter.decide.as_ref() {
            Some(d) => {
                let text = decision_text(&charter, &event, &ctx);
                let model = cr.model.as_deref();
                let (decided, wait) = crate::decide::decide_event_or_wait(
                    state,
                    &charter.name,
                    d,
                    &ctx,
                    &text,
                    model,
                )
                .await;
                // A limit under `on_exhausted: wait`: the event is put back until the next
                // window (its lease held until then) and this worker slot is freed.
                if let Some(after) = wait {
                    let why = format!("{}; the event is decided later", decided.reason);
                    finish(pending, None, RunOutcome::Failed, Some(why));
                    return Err(RunError::RetryLater(after));
                }
                Some(decided)
            }
            None => None,
        }
    };
    if let Some(d) = &decision {
        let stage = serde_json::to_value(d.stage)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        state
            .metrics
            .decision(&charter.name, &stage, decide_started.elapsed());
        pending.push(RunWrite::Decision {
            run_id,
            decision: d.clone(),
        });
        if d.label.is_none() {
            flush(store, pending).await?;
            let detail = json!({
                "payload": event.payload,
                "reason": d.reason,
                "stages": d.stages,
            });
            escalate(
                state,
                &charter,
                &event,
                run_id,
                escalation_reason(d),
                detail,
            )
            .await?;
            finish(pending, None, RunOutcome::Escalated, Some(d.reason.clone()));
            return Ok(EventStatus::Waiting);
        }
    }

    // Route.
    ctx["decision"] = decision_value(decision.as_ref());
    let route = match first_matching_route(&charter, &ctx).await {
        Ok(r) => r,
        Err(e) => {
            finish(
                pending,
                None,
                RunOutcome::Failed,
                Some(format!("route evaluation failed: {e}")),
            );
            return Ok(EventStatus::Failed);
        }
    };
    let Some(route_idx) = route else {
        finish(
            pending,
            None,
            RunOutcome::NoRoute,
            Some("no route matched".into()),
        );
        return Ok(EventStatus::Done);
    };

    // The route's own mode (an operator's per-route override, its `mode:`, else the
    // charter's), see `rollout`.
    let route_mode = crate::rollout::route_mode_now(state, &cr.charter, mode, route_idx).await?;
    let charter = crate::rollout::charter_in_mode(&charter, route_idx, route_mode);
    // Gate and act, in the route's order; stop at the first action that fails or waits.
    let actions = &charter.routes[route_idx].actions;
    let (outcome, status, error) = act_in_order(
        state,
        executor,
        &charter,
        &event,
        run_id,
        actions,
        &ctx,
        decision.as_ref(),
        pending,
    )
    .await?;
    finish(pending, Some(route_idx), outcome, error);
    crate::rollout::sample_run(
        state,
        &charter,
        route_idx,
        route_mode,
        event.id,
        run_id,
        decision.as_ref(),
        outcome,
    )
    .await;
    Ok(status)
}

/// What templates and expressions of a run see before deciding: the event, no decision
/// yet, and the records fetched by `context:` (as `context`).
fn run_context(event: &NewEvent, fetched: Option<&Value>) -> Value {
    let mut ctx = eval_context(event, None);
    if let Some(c) = fetched {
        ctx["context"] = c.clone();
    }
    ctx
}

/// Run `names` in order through their gates; stop at the first action that fails or waits.
/// Returns the run's outcome, the event's status and the reason the run stopped early.
#[allow(clippy::too_many_arguments)]
async fn act_in_order<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Arc<Charter>,
    event: &NewEvent,
    run_id: Uuid,
    names: &[String],
    ctx: &Value,
    decision: Option<&Decision>,
    pending: &mut Vec<RunWrite>,
) -> Result<(RunOutcome, EventStatus, Option<String>), RunError> {
    for name in names {
        let action_status =
            act(state, executor, charter, event, run_id, name, ctx, pending).await?;
        let (o, st, msg) = match action_status {
            ActStep::Continue => continue,
            ActStep::Failed(msg) => (RunOutcome::Failed, EventStatus::Failed, msg),
            ActStep::DeadLettered { message, evidence } => {
                let mut detail = evidence;
                detail["payload"] = event.payload.clone();
                detail["stages"] = json!(decision.map(|d| &d.stages));
                flush(&state.store, pending).await?;
                escalate(state, charter, event, run_id, "dead_letter", detail).await?;
                (RunOutcome::Failed, EventStatus::Failed, message)
            }
            ActStep::AwaitingApproval(msg) => {
                (RunOutcome::AwaitingApproval, EventStatus::Waiting, msg)
            }
            ActStep::Escalated(msg) => (RunOutcome::Escalated, EventStatus::Waiting, msg),
            ActStep::Rejected(msg) => (RunOutcome::Rejected, EventStatus::Done, msg),
            ActStep::DraftWait { after, message } => {
                finish_run(
                    pending,
                    run_id,
                    None,
                    RunOutcome::Failed,
                    Some(format!(
                        "{message}; the event is tried again when the limit's window opens"
                    )),
                );
                return Err(RunError::RetryLater(after));
            }
            ActStep::DraftRefused { reason, message } => {
                let detail = json!({
                    "payload": event.payload,
                    "reason": message,
                    "stages": decision.map(|d| &d.stages),
                });
                flush(&state.store, pending).await?;
                escalate(state, charter, event, run_id, reason.as_str(), detail).await?;
                (RunOutcome::Escalated, EventStatus::Waiting, message)
            }
        };
        return Ok((o, st, Some(msg)));
    }
    let outcome = if charter.mode == Mode::Shadow {
        RunOutcome::Shadow
    } else {
        RunOutcome::Completed
    };
    Ok((outcome, EventStatus::Done, None))
}

/// Record the action's `measure:` outcome (if it declares one) after it succeeded
/// (buffered with the run's next durable write).
fn record_measure<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    action: &charter_core::config::Action,
    pending: &mut Vec<RunWrite>,
) {
    let Some(name) = &action.measure else {
        return;
    };
    pending.push(RunWrite::Measurement(charter_store::NewMeasurement {
        charter: charter.name.clone(),
        name: name.clone(),
        run_id: Some(run_id),
        event_id: Some(event.id),
        value: 1.0,
        at: now_millis(),
        detail: json!({ "action": action.name }),
    }));
    state.metrics.measurement(&charter.name, name);
}

/// The text the decision stages read: the trigger's `text` template, or the payload as JSON.
pub(crate) fn decision_text(charter: &Charter, event: &NewEvent, ctx: &Value) -> String {
    match &charter.trigger.text {
        Some(t) => t.render(ctx).unwrap_or_else(|e| {
            tracing::warn!(charter = %charter.name, error = %e, "trigger text could not be rendered; using the payload");
            event.payload.to_string()
        }),
        None => event.payload.to_string(),
    }
}

/// How one action ended, and so whether the route goes on.
enum ActStep {
    Continue,
    Failed(String),
    /// Every attempt failed; an escalation is opened with this evidence.
    DeadLettered {
        message: String,
        evidence: Value,
    },
    /// The action waits for a reviewer (the run ends `awaiting_approval`).
    AwaitingApproval(String),
    /// Its approval expired and was escalated to a human.
    Escalated(String),
    /// Its approval was rejected (or expired with `on_expiry: reject`).
    Rejected(String),
    /// The charter's LLM budget or rate limit refused the action's draft: the event is
    /// escalated with this reason (the limit's `on_exhausted`), the run does not fail.
    DraftRefused {
        reason: charter_core::model::EscalationReason,
        message: String,
    },
    /// The charter's rate limit or budget refused the draft under `on_exhausted: wait`:
    /// the run ends and the event is tried again after `after` (its slot freed meanwhile).
    DraftWait {
        after: Duration,
        message: String,
    },
}

/// The decision a human gave when resolving an escalation of the event.
fn human_decision(e: &EscalationRecord) -> Decision {
    let (label, fields) = match &e.resolution {
        Some(h) => (Some(h.label.clone()), h.fields.clone()),
        None => (None, Default::default()),
    };
    let who = e.resolved_by.as_deref().unwrap_or("a reviewer");
    let note = format!("decided by {who} (escalation {})", e.id);
    Decision {
        label: label.clone(),
        confidence: 1.0,
        fields,
        stage: DecisionStage::Human,
        reason: note.clone(),
        stages: vec![StageAnswer {
            stage: DecisionStage::Human,
            label,
            confidence: Some(1.0),
            accepted: true,
            note,
            usage: None,
        }],
        escalation: None,
    }
}

/// The escalation reason code for a decision the cascade could not make: the one the
/// decision code set ([`Decision::escalation`]); `low_confidence` for a decision recorded
/// without one.
fn escalation_reason(d: &Decision) -> &'static str {
    d.escalation
        .unwrap_or(charter_core::model::EscalationReason::LowConfidence)
        .as_str()
}

/// Hand the event to a human: open an escalation (or find the event's open one).
async fn escalate<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    reason: &str,
    detail: Value,
) -> Result<EscalationRecord, RunError> {
    let rec = state
        .store
        .create_escalation(NewEscalation {
            id: Uuid::now_v7(),
            run_id: Some(run_id),
            event_id: event.id,
            charter: charter.name.clone(),
            reason: reason.to_string(),
            detail,
            target: Some(charter.escalation.to.clone()),
            created_at: now_millis(),
        })
        .await?;
    state.metrics.escalation(&charter.name, reason);
    tracing::info!(event = %event.id, charter = %charter.name, escalation = %rec.id, reason, "escalated to a human");
    if rec.status == charter_store::EscalationStatus::Open {
        // Idempotent: a re-run finding the open escalation queues nothing new.
        crate::notify::escalation_created(state, charter, &rec).await;
    }
    Ok(rec)
}

/// What the approval gate allows.
enum Gate {
    /// Execute with these parameters under this idempotency key.
    Proceed {
        params: Value,
        key: String,
    },
    Stop(ActStep),
}

/// The approval gate of an action whose policy requires approval. The approval is bound to
/// `key` (the idempotency key of the rendered `params`): a re-run finds the same approval;
/// different parameters need a new one.
async fn approval_gate<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    name: &str,
    params: &Value,
    key: &str,
    policy: (&[String], Duration, OnExpiry),
) -> Result<Gate, RunError> {
    let store = &state.store;
    let (reviewers, expires, on_expiry) = policy;
    let now = now_millis();
    let mut approval = match store.find_approval(event.id, name, key).await? {
        Some(a) => a,
        None => {
            let a = store
                .create_approval(NewApproval {
                    id: Uuid::now_v7(),
                    run_id,
                    event_id: event.id,
                    charter: charter.name.clone(),
                    action: name.to_string(),
                    params: params.clone(),
                    params_hash: key.to_string(),
                    reviewers: reviewers.to_vec(),
                    created_at: now,
                    expires_at: Some(now.saturating_add(expires.as_millis() as i64)),
                    on_expiry: Some(on_expiry_str(on_expiry).to_string()),
                })
                .await?;
            store
                .append_audit(NewAuditEntry {
                    at: now,
                    actor: "system".into(),
                    action: "approval.request".into(),
                    charter: Some(charter.name.clone()),
                    target: Some(a.id.to_string()),
                    detail: json!({"event": event.id, "action": name, "params_hash": key}),
                })
                .await?;
            a
        }
    };
    if approval.status == ApprovalStatus::Pending {
        // Idempotent: also heals a crash between creating the approval and queuing.
        crate::notify::approval_created(state, charter, &approval).await;
    }
    if approval.status == ApprovalStatus::Pending && approval.expires_at.is_some_and(|t| t <= now) {
        // Past its deadline but not yet swept by the expiry task: expire it now.
        store.expire_approvals(now).await?;
        if let Some(a) = store.get_approval(approval.id).await? {
            approval = a;
        }
    }
    let rejected = |why: String| async move {
        let rec = ActionRecord {
            action: name.to_string(),
            idempotency_key: key.to_string(),
            params: params.clone(),
            status: ActionStatus::Rejected,
            attempts: vec![],
        };
        store.begin_action(run_id, name, key, params).await?;
        store.finish_action(run_id, &rec).await?;
        Ok::<Gate, RunError>(Gate::Stop(ActStep::Rejected(why)))
    };
    match approval.status {
        ApprovalStatus::Pending => Ok(Gate::Stop(ActStep::AwaitingApproval(format!(
            "action `{name}` awaits approval {}",
            approval.id
        )))),
        ApprovalStatus::Approved => Ok(Gate::Proceed {
            params: approval.effective_params().clone(),
            key: approval
                .edited_hash
                .clone()
                .unwrap_or_else(|| key.to_string()),
        }),
        ApprovalStatus::Rejected => {
            let by = approval.decided_by.as_deref().unwrap_or("a reviewer");
            let reason = approval.comment.as_deref().unwrap_or("no reason given");
            rejected(format!(
                "action `{name}`: approval {} rejected by {by}: {reason}",
                approval.id
            ))
            .await
        }
        ApprovalStatus::Expired => {
            if on_expiry == OnExpiry::Reject {
                return rejected(format!(
                    "action `{name}`: approval {} expired; on_expiry: reject",
                    approval.id
                ))
                .await;
            }
            // Escalated: once a human has decided the event after the expiry, the expired
            // approval still cannot run; the run ends there.
            let expired_at = approval.decided_at.unwrap_or(approval.created_at);
            if let Some(h) = store.latest_resolution(event.id).await?
                && h.resolved_at.is_some_and(|t| t >= expired_at)
            {
                return rejected(format!(
                    "action `{name}`: approval {} expired; the escalation was decided by a human",
                    approval.id
                ))
                .await;
            }
            let detail = json!({
                "approval": approval_evidence(&approval),
                "payload": event.payload,
            });
            let e = escalate(state, charter, event, run_id, "approval_expired", detail).await?;
            Ok(Gate::Stop(ActStep::Escalated(format!(
                "action `{name}`: approval {} expired; escalated ({})",
                approval.id, e.id
            ))))
        }
    }
}

fn on_expiry_str(o: OnExpiry) -> &'static str {
    match o {
        OnExpiry::Escalate => "escalate",
        OnExpiry::Reject => "reject",
    }
}

fn approval_evidence(a: &ApprovalRecord) -> Value {
    json!({
        "id": a.id,
        "action": a.action,
        "params": a.params,
        "params_hash": a.params_hash,
        "reviewers": a.reviewers,
        "expires_at": a.expires_at,
    })
}

/// Render an action's parameters (never containing secrets).
fn render_params(action: &charter_core::config::Action, ctx: &Value) -> Result<Value, String> {
    match &action.kind {
        ActionKind::Log { message } => Ok(json!({
            "log": message.render(ctx).map_err(|e| e.to_string())?,
        })),
        ActionKind::Http(h) => {
            let target = h.target.render(ctx).map_err(|e| format!("target: {e}"))?;
            let mut headers = serde_json::Map::new();
            for (k, t) in &h.headers {
                headers.insert(
                    k.clone(),
                    Value::String(t.render(ctx).map_err(|e| format!("header {k}: {e}"))?),
                );
            }
            let body = match &h.json {
                Some(j) => j.render(ctx).map_err(|e| format!("json: {e}"))?,
                None => Value::Null,
            };
            Ok(json!({
                "connector": h.connector,
                "method": h.method,
                "target": target,
                "headers": headers,
                "json": body,
            }))
        }
        ActionKind::Message(m) => Ok(json!({
            "connector": m.connector,
            "channel": match &m.channel {
                Some(c) => Value::String(c.render(ctx).map_err(|e| format!("channel: {e}"))?),
                None => Value::Null,
            },
            "text": m.text.render(ctx).map_err(|e| format!("text: {e}"))?,
        })),
        ActionKind::Email(e) => Ok(json!({
            "connector": e.connector,
            "to": render_recipients(&e.to, ctx)?,
            "subject": e.subject.render(ctx).map_err(|err| format!("subject: {err}"))?,
            "body": e.body.render(ctx).map_err(|err| format!("body: {err}"))?,
        })),
        ActionKind::Sql(q) => {
            let mut values = Vec::with_capacity(q.params.len());
            for (i, p) in q.params.iter().enumerate() {
                values.push(match p {
                    Some(t) => {
                        Value::String(t.render(ctx).map_err(|e| format!("params[{i}]: {e}"))?)
                    }
                    None => Value::Null,
                });
            }
            Ok(json!({
                "connector": q.connector,
                "statement": q.statement,
                "params": values,
            }))
        }
    }
}

/// Whether an MCP tool call of action `name` may run: the action opts out
/// (`mcp_skip_when: true`), or a route that lists it has a `when:` holding over the call's
/// context (`decision` is null: a call is not decided). `Err` says why not, naming the
/// routes it tried (a condition that cannot be evaluated without a decision counts as not
/// holding, and its error is quoted).
fn tool_call_allowed(charter: &Charter, name: &str, ctx: &Value) -> Result<(), String> {
    let Some(action) = charter.actions.get(name) else {
        return Ok(());
    };
    if action.mcp_skip_when {
        return Ok(());
    }
    let mut tried = Vec::new();
    for (i, route) in charter.routes.iter().enumerate() {
        if !route.actions.iter().any(|a| a == name) {
            continue;
        }
        match route.when.eval_bool(ctx) {
            Ok(true) => return Ok(()),
            Ok(false) => tried.push(format!("route {} does not match", i + 1)),
            Err(e) => tried.push(format!("route {} cannot be evaluated: {e}", i + 1)),
        }
    }
    let tried = if tried.is_empty() {
        "no route lists it".to_string()
    } else {
        tried.join("; ")
    };
    Err(format!(
        "refused: an MCP call runs action `{name}` only when the `when:` of a route that lists it holds for the call ({tried}); set `mcp_skip_when: true` on the action to run it without"
    ))
}

/// An email's `to:`, rendered: a string for `to: "..."` (as before lists existed, so the
/// idempotency keys of existing charters do not change), a list for `to: [...]`. A
/// templated recipient must render to exactly one address, so a payload value such as
/// `a@example.test, attacker@evil.example` fails the action instead of adding a recipient.
fn render_recipients(to: &Recipients, ctx: &Value) -> Result<Value, String> {
    let one = |t: &charter_core::template::Template, key: &str| -> Result<String, String> {
        let rendered = t.render(ctx).map_err(|e| format!("{key}: {e}"))?;
        if !t.is_literal() {
            charter_connect::email::one_recipient(rendered.trim())
                .map_err(|e| format!("{key}: {e}"))?;
        }
        Ok(rendered)
    };
    Ok(match to {
        Recipients::One(t) => Value::String(one(t, "to")?),
        Recipients::List(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, t)| one(t, &format!("to[{i}]")).map(Value::String))
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// The recipients of rendered email parameters, comma-separated (`to` is a string or a
/// list of single addresses).
fn recipients_text(to: &Value) -> String {
    match to {
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(", "),
        other => other.as_str().unwrap_or_default().to_string(),
    }
}

/// Checks of rendered parameters against their connector that must hold before an action
/// is gated, recorded as would-run or sent: an HTTP target stays under the connector's base
/// URL without dot segments; an email's recipients are in the connector's
/// `allowed_domains`. `Err` is the reason the action fails (nothing is sent).
fn preflight<S: Store>(
    state: &AppState<S>,
    action: &charter_core::config::Action,
    params: &Value,
) -> Result<(), String> {
    match &action.kind {
        ActionKind::Http(h) => {
            let connector = match &h.connector {
                Some(c) => match state.runtime.connectors.get(c) {
                    Some(rc) => Some(rc),
                    // Reported where the request is prepared.
                    None => return Ok(()),
                },
                None => None,
            };
            let target = params["target"].as_str().unwrap_or_default();
            charter_connect::target_url(connector, target)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        ActionKind::Email(e) => match state.runtime.connections.get(&e.connector).map(|c| &**c) {
            Some(charter_connect::Connection::Smtp(smtp)) => smtp
                .recipients(&recipients_text(&params["to"]))
                .map(|_| ())
                .map_err(|e| e.to_string()),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Buffer an action that ends without any request leaving (invalid, shadow, already done,
/// log): its intent and its final record, written with the run's next durable write.
fn record_action_now(
    pending: &mut Vec<RunWrite>,
    run_id: Uuid,
    record: &ActionRecord,
    begin_params: &Value,
) {
    pending.push(RunWrite::BeginAction {
        run_id,
        action: record.action.clone(),
        idempotency_key: record.idempotency_key.clone(),
        params: begin_params.clone(),
    });
    pending.push(RunWrite::FinishAction {
        run_id,
        record: record.clone(),
    });
}

#[allow(clippy::too_many_arguments)]
async fn act<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Arc<Charter>,
    event: &NewEvent,
    run_id: Uuid,
    name: &str,
    ctx: &Value,
    pending: &mut Vec<RunWrite>,
) -> Result<ActStep, RunError> {
    let store = &state.store;
    let Some(action) = charter.actions.get(name) else {
        // Validation guarantees routes name declared actions; never run anything else.
        return Ok(ActStep::Failed(format!("action `{name}` is not declared")));
    };
    // A draft is written (or the event's earlier one reused) before rendering: `draft`.
    let drafted;
    let ctx = match &action.draft {
        None => ctx,
        Some(spec) => {
            // The draft is kept as a run extra: the run must exist first.
            flush(store, pending).await?;
            match crate::decide::draft_for_action(
                state, executor, charter, event, run_id, name, spec, ctx,
            )
            .await
            {
                Ok(text) => {
                    let mut c = ctx.clone();
                    c["draft"] = Value::String(text);
                    drafted = c;
                    &drafted
                }
                Err(e) => {
                    if let Some(after) = e.wait {
                        return Ok(ActStep::DraftWait {
                            after,
                            message: e.message,
                        });
                    }
                    return Ok(match e.escalate {
                        Some(reason) => ActStep::DraftRefused {
                            reason,
                            message: e.message,
                        },
                        None => ActStep::Failed(e.message),
                    });
                }
            }
        }
    };
    let params = match render_params(action, ctx) {
        Ok(p) => p,
        Err(msg) => {
            let key = idempotency_key(event.id, name, &Value::Null);
            let rec = ActionRecord {
                action: name.to_string(),
                idempotency_key: key.clone(),
                params: Value::Null,
                status: ActionStatus::Invalid,
                attempts: vec![],
            };
            record_action_now(pending, run_id, &rec, &Value::Null);
            return Ok(ActStep::Failed(format!(
                "action `{name}`: parameters could not be rendered: {msg}"
            )));
        }
    };
    let mut key = idempotency_key(event.id, name, &params);
    if let Err(msg) = preflight(state, action, &params) {
        let rec = ActionRecord {
            action: name.to_string(),
            idempotency_key: key,
            params: params.clone(),
            status: ActionStatus::Invalid,
            attempts: vec![],
        };
        record_action_now(pending, run_id, &rec, &params);
        return Ok(ActStep::Failed(format!("action `{name}`: {msg}")));
    }
    let mut params = params;
    if charter.mode != Mode::Shadow
        && let Approval::Required {
            reviewers,
            expires,
            on_expiry,
        } = &action.approval
    {
        let policy = (reviewers.as_slice(), *expires, *on_expiry);
        // The gate creates approvals (and may record the action) against the run.
        flush(store, pending).await?;
        match approval_gate(state, charter, event, run_id, name, &params, &key, policy).await? {
            Gate::Proceed {
                params: approved,
                key: approved_key,
            } => {
                params = approved;
                key = approved_key;
            }
            Gate::Stop(step) => return Ok(step),
        }
    }
    let mut record = ActionRecord {
        action: name.to_string(),
        idempotency_key: key.clone(),
        params: params.clone(),
        status: ActionStatus::WouldRun,
        attempts: vec![],
    };

    if charter.mode == Mode::Shadow {
        record_action_now(pending, run_id, &record, &params);
        return Ok(ActStep::Continue);
    }
    // A `log` action has no durable intent to fold the check into; every other kind checks
    // the key in the same store command that writes its intent (`Intent::AlreadyDone`).
    if matches!(action.kind, ActionKind::Log { .. }) && store.action_succeeded(&key).await? {
        return Ok(already_done(pending, run_id, &mut record, &params));
    }
    // The intent: durable before any request leaves (with everything buffered before it).
    let begin = RunWrite::BeginAction {
        run_id,
        action: name.to_string(),
        idempotency_key: key.clone(),
        params: params.clone(),
    };
    match &action.kind {
        ActionKind::Log { .. } => {
            tracing::info!(event = %event.id, charter = %charter.name, action = %name, params = %params, "log action");
            record.status = ActionStatus::Succeeded;
            record_action_now(pending, run_id, &record, &params);
            state
                .metrics
                .action_attempt(&charter.name, name, "log", "succeeded", None);
            record_measure(state, charter, event, run_id, action, pending);
            Ok(ActStep::Continue)
        }
        ActionKind::Message(_) | ActionKind::Email(_) | ActionKind::Sql(_) => {
            if begin_intent(store, pending, begin).await? == Intent::AlreadyDone {
                return Ok(already_done(pending, run_id, &mut record, &params));
            }
            act_through_connector(
                state, executor, charter, event, run_id, action, &params, &key, record, pending,
            )
            .await
        }
        ActionKind::Http(h) => {
            let connector = match &h.connector {
                Some(c) => match state.runtime.connectors.get(c) {
                    Some(rc) => Some(rc),
                    None => {
                        record.status = ActionStatus::Invalid;
                        record_action_now(pending, run_id, &record, &params);
                        return Ok(ActStep::Failed(format!(
                            "connector `{c}` is not configured"
                        )));
                    }
                },
                None => None,
            };
            let mut headers: Vec<(String, String)> = params["headers"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            // Trace context for the downstream system (not part of the idempotency key).
            if !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("traceparent"))
            {
                headers.push(("traceparent".into(), crate::metrics::traceparent(run_id)));
            }
            let body = match &params["json"] {
                Value::Null => None,
                v => Some(v.clone()),
            };
            let target = params["target"].as_str().unwrap_or_default();
            let req = match HttpExecutor::prepare(
                connector, &h.method, target, &headers, body, h.timeout, &key,
            ) {
                Ok(r) => r,
                Err(e) => {
                    record.status = ActionStatus::Invalid;
                    record_action_now(pending, run_id, &record, &params);
                    return Ok(ActStep::Failed(format!("action `{name}`: {e}")));
                }
            };
            if begin_intent(store, pending, begin).await? == Intent::AlreadyDone {
                return Ok(already_done(pending, run_id, &mut record, &params));
            }
            let policy = action.retry;
            let mut attempt_no = 1u32;
            loop {
                let started_at = now_millis();
                // Through the connector's OAuth2 token, limits, breaker and contract.
                let out = match h
                    .connector
                    .as_deref()
                    .and_then(|c| state.runtime.connections.get(c))
                    .and_then(|c| c.http())
                {
                    Some(conn) => conn.attempt(executor, &req).await,
                    None => executor.attempt(&req).await,
                };
                let rec = AttemptRecord {
                    attempt: attempt_no,
                    started_at,
                    duration_ms: out.duration.as_millis() as u64,
                    status: out.status,
                    error: out.error.clone(),
                    ok: out.ok,
                };
                let last = out.ok || !out.retryable || attempt_no >= policy.max_attempts;
                record_attempt(store, pending, run_id, name, &rec, last).await?;
                record.attempts.push(rec);
                let result = if out.ok {
                    "succeeded"
                } else if out.retryable {
                    "retryable"
                } else {
                    "failed"
                };
                state.metrics.action_attempt(
                    &charter.name,
                    name,
                    h.connector.as_deref().unwrap_or("-"),
                    result,
                    Some(out.duration),
                );
                if out.ok {
                    record.status = ActionStatus::Succeeded;
                    pending.push(RunWrite::FinishAction {
                        run_id,
                        record: record.clone(),
                    });
                    record_measure(state, charter, event, run_id, action, pending);
                    return Ok(ActStep::Continue);
                }
                if !out.retryable || attempt_no >= policy.max_attempts {
                    record.status = ActionStatus::DeadLettered;
                    pending.push(RunWrite::FinishAction {
                        run_id,
                        record: record.clone(),
                    });
                    let why = out
                        .error
                        .or(out.status.map(|s| format!("HTTP {s}")))
                        .unwrap_or_else(|| "unknown error".into());
                    let message = format!(
                        "action `{name}` dead-lettered after {attempt_no} attempt(s): {why}"
                    );
                    let evidence = json!({
                        "action": name,
                        "params": record.params,
                        "attempts": record.attempts,
                        "error": message,
                    });
                    return Ok(ActStep::DeadLettered { message, evidence });
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
    }
}

/// Record one attempt of an action. One followed by a retry is written durably at once, so
/// the evidence of a failed attempt survives a crash during the backoff. The last attempt
/// needs no write of its own: the caller pushes the action's `FinishAction` right after,
/// and that record carries every attempt (the store adds the ones not yet written).
async fn record_attempt<S: Store>(
    store: &S,
    pending: &mut Vec<RunWrite>,
    run_id: Uuid,
    action: &str,
    attempt: &AttemptRecord,
    last: bool,
) -> Result<(), StoreError> {
    if last {
        return Ok(());
    }
    let write = RunWrite::Attempt {
        run_id,
        action: action.to_string(),
        attempt: attempt.clone(),
    };
    flush_with(store, pending, write).await
}

/// One attempt of a `message` (Slack), `email` (SMTP) or `sql` action.
async fn connector_attempt(
    conn: &charter_connect::Connection,
    executor: &HttpExecutor,
    params: &Value,
    key: &str,
) -> Result<charter_connect::AttemptOutcome, String> {
    use charter_connect::Connection;
    let text = |k: &str| params[k].as_str().unwrap_or_default().to_string();
    Ok(match conn {
        Connection::Slack(slack) => {
            let req = slack
                .prepare(params["channel"].as_str(), &text("text"), key)
                .map_err(|e| e.to_string())?;
            slack.attempt(executor, &req).await
        }
        Connection::Smtp(smtp) => {
            let email = charter_connect::email::Email {
                to: recipients_text(&params["to"]),
                subject: text("subject"),
                body: text("body"),
            };
            smtp.attempt(&email, key).await
        }
        Connection::Sql(sql) => {
            let values: Vec<Option<String>> = params["params"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            sql.attempt(&text("statement"), &values, key).await
        }
        Connection::Http(_) => return Err("an HTTP connector takes `request` actions".into()),
    })
}

/// Execute a `message`, `email` or `sql` action with the action's retry policy: every
/// attempt recorded, backoff with jitter between retryable failures, dead letter at the end.
#[allow(clippy::too_many_arguments)]
async fn act_through_connector<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Arc<Charter>,
    event: &NewEvent,
    run_id: Uuid,
    action: &charter_core::config::Action,
    params: &Value,
    key: &str,
    mut record: ActionRecord,
    pending: &mut Vec<RunWrite>,
) -> Result<ActStep, RunError> {
    let store = &state.store;
    let name = action.name.as_str();
    let connector = action.kind.connector().unwrap_or_default();
    let Some(conn) = state.runtime.connections.get(connector) else {
        record.status = ActionStatus::Invalid;
        store.finish_action(run_id, &record).await?;
        return Ok(ActStep::Failed(format!(
            "connector `{connector}` is not configured"
        )));
    };
    let policy = action.retry;
    let mut attempt_no = 1u32;
    loop {
        let started_at = now_millis();
        let out = match connector_attempt(conn, executor, params, key).await {
            Ok(out) => out,
            Err(e) => {
                record.status = ActionStatus::Invalid;
                store.finish_action(run_id, &record).await?;
                return Ok(ActStep::Failed(format!("action `{name}`: {e}")));
            }
        };
        let rec = AttemptRecord {
            attempt: attempt_no,
            started_at,
            duration_ms: out.duration.as_millis() as u64,
            status: out.status,
            error: out.error.clone(),
            ok: out.ok,
        };
        let last = out.ok || !out.retryable || attempt_no >= policy.max_attempts;
        record_attempt(store, pending, run_id, name, &rec, last).await?;
        record.attempts.push(rec);
        let result = if out.ok {
            "succeeded"
        } else if out.retryable {
            "retryable"
        } else {
            "failed"
        };
        state
            .metrics
            .action_attempt(&charter.name, name, connector, result, Some(out.duration));
        if out.ok {
            record.status = ActionStatus::Succeeded;
            pending.push(RunWrite::FinishAction {
                run_id,
                record: record.clone(),
            });
            record_measure(state, charter, event, run_id, action, pending);
            return Ok(ActStep::Continue);
        }
        if !out.retryable || attempt_no >= policy.max_attempts {
            record.status = ActionStatus::DeadLettered;
            pending.push(RunWrite::FinishAction {
                run_id,
                record: record.clone(),
            });
            let why = out.error.unwrap_or_else(|| "unknown error".into());
            let message =
                format!("action `{name}` dead-lettered after {attempt_no} attempt(s): {why}");
            let evidence = json!({
                "action": name,
                "params": record.params,
                "attempts": record.attempts,
                "error": message,
            });
            return Ok(ActStep::DeadLettered { message, evidence });
        }
        attempt_no += 1;
        let wait = {
            let mut rng = rand::rng();
            backoff(&policy, attempt_no, out.retry_after, &mut rng)
        };
        tokio::time::sleep(wait).await;
    }
}
