//! One run of one claimed event, phase by phase: start (the charter in its effective mode),
//! context, then either an MCP tool call's action or decide -> route -> gate and act, and
//! at the end the release. The run's state travels in one [`RunCtx`].

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_connect::HttpExecutor;
use charter_core::config::Charter;
use charter_core::model::{Decision, EventStatus, NewEvent, RunOutcome};
use charter_core::routing::{decision_value, eval_context};
use charter_store::{Claimed, EscalationRecord, ModeOverride, RunWrite, Store, StoreError};
use serde_json::{Value, json};
use uuid::Uuid;

use super::escalate::{escalation_reason, human_decision};
use super::route::{act_in_order, tool_call_allowed};
use crate::expressions::first_matching_route;
use crate::project::CharterRuntime;
use crate::text::{decision_text, requested_action, run_context};
use crate::{AppState, now_millis};

/// Why a run stopped without finishing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("lease lost to another worker")]
    LeaseLost,
    /// The run asked to be tried again later (a context fetch with `on_error: retry`
    /// failed, a limit under `on_exhausted: wait`): the lease is extended by this long
    /// instead of released.
    #[error("retry later")]
    RetryLater(Duration),
}

/// Everything a run's phases share: the application, the event, the run's id, the charter
/// as this run sees it (its effective mode, then its route's), and the run's buffered
/// writes (see [`super::writes`]).
pub(crate) struct RunCtx<'a, S> {
    pub state: &'a AppState<S>,
    pub executor: &'a HttpExecutor,
    pub event: &'a NewEvent,
    pub run_id: Uuid,
    pub charter: Arc<Charter>,
    /// The run's writes that need not be durable yet: they go to the store in one command
    /// with the next write that must be (an action's intent, or the run's end with the
    /// release).
    pub pending: &'a mut Vec<RunWrite>,
}

/// Run one event through its charter. Returns the event's next status.
pub(super) async fn run_pipeline<S: Store>(
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
    let run_id = Uuid::now_v7();
    // The run id doubles as the W3C trace id of everything the run sends out.
    let span = tracing::Span::current();
    span.record("run", tracing::field::display(run_id));
    span.record("trace_id", tracing::field::display(run_id.simple()));
    let Some(cr) = state.runtime.charters.get(&event.charter) else {
        undefined_charter(&state.store, &event, run_id).await?;
        return Ok(EventStatus::Failed);
    };
    let mut run = RunCtx {
        state,
        executor,
        event: &event,
        run_id,
        charter: in_effective_mode(cr, mode_override.as_ref()),
        pending,
    };
    run.start();
    let fetched = fetch_context(&mut run).await?;
    // An agent's tool call (MCP) names the action itself: no decision and no route, the
    // action's own gates (approval, shadow mode, idempotency) still apply.
    if let Some(name) = requested_action(&event) {
        return tool_call(&mut run, name, fetched.as_ref()).await;
    }
    // One context for deciding and routing: only `decision` changes in between.
    let mut ctx = run_context(&event, fetched.as_ref());
    let decision = match decide(&mut run, cr, human.as_ref(), &ctx).await? {
        ControlFlow::Continue(d) => d,
        ControlFlow::Break(status) => return Ok(status),
    };
    ctx["decision"] = decision_value(decision.as_ref());
    let route_idx = match route(&mut run, &ctx).await {
        ControlFlow::Continue(i) => i,
        ControlFlow::Break(status) => return Ok(status),
    };
    act_on_route(&mut run, cr, route_idx, &ctx, decision.as_ref()).await
}

/// An event whose charter is not in the running project: a failed run, recorded at once.
async fn undefined_charter<S: Store>(
    store: &S,
    event: &NewEvent,
    run_id: Uuid,
) -> Result<(), StoreError> {
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
        .await
}

/// The charter in the mode it runs in now: an operator's promotion (or demotion) stored in
/// the charter state wins over the file's `mode:` while the file still says what it said
/// then (see `operator`).
fn in_effective_mode(cr: &CharterRuntime, stored: Option<&ModeOverride>) -> Arc<Charter> {
    let mode = crate::mode::mode_of(&cr.charter, stored);
    if mode == cr.charter.mode {
        cr.charter.clone()
    } else {
        let mut c = (*cr.charter).clone();
        c.mode = mode;
        Arc::new(c)
    }
}

impl<S: Store> RunCtx<'_, S> {
    /// Buffer the run's start.
    fn start(&mut self) {
        self.pending.push(RunWrite::Start {
            run_id: self.run_id,
            event_id: self.event.id,
            charter: self.charter.name.clone(),
            charter_version: self.charter.version.clone(),
            mode: self.charter.mode.as_str().to_string(),
            now: now_millis(),
        });
    }
}

/// Context: the records the charter fetches from its connectors, once per run (`None`
/// when it declares none).
async fn fetch_context<S: Store>(run: &mut RunCtx<'_, S>) -> Result<Option<Value>, RunError> {
    let charter = run.charter.clone();
    if charter.context.is_empty() && charter.retrieve.is_empty() {
        return Ok(None);
    }
    let ctx0 = eval_context(run.event, None);
    // The fetches are kept as run extras: the run must exist first.
    run.flush().await?;
    let got = super::decide::assemble_context(
        run.state,
        run.executor,
        &charter,
        run.event,
        run.run_id,
        &ctx0,
    )
    .await?;
    if let Some((why, after)) = got.retry {
        run.finish(None, RunOutcome::Failed, Some(why));
        return Err(RunError::RetryLater(after));
    }
    Ok(Some(Value::Object(got.values)))
}

/// An MCP tool call: the named action alone, if the charter still declares it and a route
/// listing it would run it for this call.
async fn tool_call<S: Store>(
    run: &mut RunCtx<'_, S>,
    name: &str,
    fetched: Option<&Value>,
) -> Result<EventStatus, RunError> {
    if !run.charter.actions.contains_key(name) {
        let why = format!(
            "the action `{name}` requested through MCP is no longer declared by the charter"
        );
        run.finish(None, RunOutcome::Failed, Some(why));
        return Ok(EventStatus::Failed);
    }
    let ctx = run_context(run.event, fetched);
    if let Err(why) = tool_call_allowed(&run.charter, name, &ctx) {
        run.finish(None, RunOutcome::NoRoute, Some(why));
        return Ok(EventStatus::Done);
    }
    let names = [name.to_string()];
    let (outcome, status, error) = act_in_order(run, &names, &ctx, None).await?;
    run.finish(None, outcome, error);
    Ok(status)
}

/// Decide: a human's decision on an escalation of this event (read with the claim)
/// replaces the cascade. `Continue` with the decision (`None` without `decide:`); `Break`
/// when the run ends here (escalated to a human).
async fn decide<S: Store>(
    run: &mut RunCtx<'_, S>,
    cr: &CharterRuntime,
    human: Option<&EscalationRecord>,
    ctx: &Value,
) -> Result<ControlFlow<EventStatus, Option<Decision>>, RunError> {
    let started = Instant::now();
    let decision = match (human, run.charter.decide.as_ref()) {
        (Some(h), _) => human_decision(h),
        (None, None) => return Ok(ControlFlow::Continue(None)),
        (None, Some(d)) => {
            let text = decision_text(&run.charter, run.event, ctx);
            let (decided, wait) = super::decide::decide_event_or_wait(
                run.state,
                &run.charter.name,
                d,
                ctx,
                &text,
                cr.model.as_deref(),
            )
            .await;
            // A limit under `on_exhausted: wait`: the event is put back until the next
            // window (its lease held until then) and this worker slot is freed.
            if let Some(after) = wait {
                let why = format!("{}; the event is decided later", decided.reason);
                run.finish(None, RunOutcome::Failed, Some(why));
                return Err(RunError::RetryLater(after));
            }
            decided
        }
    };
    record_decision(run, decision, started.elapsed()).await
}

/// Count and buffer the decision; one without a label hands the event to a human.
async fn record_decision<S: Store>(
    run: &mut RunCtx<'_, S>,
    d: Decision,
    took: Duration,
) -> Result<ControlFlow<EventStatus, Option<Decision>>, RunError> {
    let stage = serde_json::to_value(d.stage)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    run.state.metrics.decision(&run.charter.name, &stage, took);
    run.pending.push(RunWrite::Decision {
        run_id: run.run_id,
        decision: d.clone(),
    });
    if d.label.is_some() {
        return Ok(ControlFlow::Continue(Some(d)));
    }
    run.flush().await?;
    let detail = json!({
        "payload": run.event.payload,
        "reason": d.reason,
        "stages": d.stages,
    });
    run.escalate(escalation_reason(&d), detail).await?;
    run.finish(None, RunOutcome::Escalated, Some(d.reason));
    Ok(ControlFlow::Break(EventStatus::Waiting))
}

/// Route: the first route whose `when:` holds. `Break` when none does (or one cannot be
/// evaluated).
async fn route<S: Store>(run: &mut RunCtx<'_, S>, ctx: &Value) -> ControlFlow<EventStatus, usize> {
    match first_matching_route(&run.charter, ctx).await {
        Ok(Some(i)) => ControlFlow::Continue(i),
        Ok(None) => {
            run.finish(None, RunOutcome::NoRoute, Some("no route matched".into()));
            ControlFlow::Break(EventStatus::Done)
        }
        Err(e) => {
            let why = format!("route evaluation failed: {e}");
            run.finish(None, RunOutcome::Failed, Some(why));
            ControlFlow::Break(EventStatus::Failed)
        }
    }
}

/// Gate and act, in the route's order and in the route's own mode (an operator's
/// per-route override, its `mode:`, else the charter's, see `rollout`); stop at the first
/// action that fails or waits. The run is then sampled for the route's review.
async fn act_on_route<S: Store>(
    run: &mut RunCtx<'_, S>,
    cr: &CharterRuntime,
    route_idx: usize,
    ctx: &Value,
    decision: Option<&Decision>,
) -> Result<EventStatus, RunError> {
    let mode = run.charter.mode;
    let route_mode =
        crate::rollout::route_mode_now(run.state, &cr.charter, mode, route_idx).await?;
    run.charter = crate::rollout::charter_in_mode(&run.charter, route_idx, route_mode);
    let actions = run.charter.routes[route_idx].actions.clone();
    let (outcome, status, error) = act_in_order(run, &actions, ctx, decision).await?;
    run.finish(Some(route_idx), outcome, error);
    crate::rollout::sample_run(
        run.state,
        &run.charter,
        route_idx,
        route_mode,
        run.event.id,
        run.run_id,
        decision,
        outcome,
    )
    .await;
    Ok(status)
}
