//! One action of a route: its draft (if it declares one), its parameters rendered and
//! checked, its approval gate, then shadow mode's record or the request itself under the
//! action's retry policy ([`attempts`]), one effect per idempotency key.

mod attempts;
mod render;
mod send;

use std::ops::ControlFlow;
use std::time::Duration;

use charter_core::config::{Action, Approval, DraftSpec, Mode};
use charter_core::idempotency::idempotency_key;
use charter_core::model::{ActionRecord, ActionStatus, EscalationReason};
use charter_store::{NewMeasurement, RunWrite, Store};
use serde_json::{Value, json};

use super::gate::{Gate, Policy};
use super::run::{RunCtx, RunError};
use crate::knowledge::cite::CiteRun;
use crate::now_millis;

/// How one action ended, and so whether the route goes on.
pub(super) enum ActStep {
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
        reason: EscalationReason,
        message: String,
    },
    /// The charter's rate limit or budget refused the draft under `on_exhausted: wait`:
    /// the run ends and the event is tried again after `after` (its slot freed meanwhile).
    DraftWait {
        after: Duration,
        message: String,
    },
}

/// Run action `name` of the run's charter with the run's context `ctx`.
pub(super) async fn act<S: Store>(
    run: &mut RunCtx<'_, S>,
    name: &str,
    ctx: &Value,
) -> Result<ActStep, RunError> {
    let charter = run.charter.clone();
    let Some(action) = charter.actions.get(name) else {
        // Validation guarantees routes name declared actions; never run anything else.
        return Ok(ActStep::Failed(format!("action `{name}` is not declared")));
    };
    // A draft is written (or the event's earlier one reused) before rendering: `draft`.
    let drafted;
    let ctx = match &action.draft {
        None => ctx,
        Some(spec) => match with_draft(run, name, spec, ctx).await? {
            ControlFlow::Continue(c) => {
                drafted = c;
                &drafted
            }
            ControlFlow::Break(step) => return Ok(step),
        },
    };
    let (params, key) = match prepare(run, action, ctx) {
        ControlFlow::Continue(prepared) => prepared,
        ControlFlow::Break(step) => return Ok(step),
    };
    let (params, key) = match gate(run, action, params, key).await? {
        ControlFlow::Continue(gated) => gated,
        ControlFlow::Break(step) => return Ok(step),
    };
    let record = ActionRecord {
        action: name.to_string(),
        idempotency_key: key.clone(),
        params: params.clone(),
        status: ActionStatus::WouldRun,
        attempts: vec![],
    };
    if charter.mode == Mode::Shadow {
        run.record_action_now(&record, &params);
        return Ok(ActStep::Continue);
    }
    send::execute(run, action, record, &params, &key).await
}

/// The context with the action's draft as `draft`, or the step the draft's failure ends
/// the action with.
async fn with_draft<S: Store>(
    run: &mut RunCtx<'_, S>,
    name: &str,
    spec: &DraftSpec,
    ctx: &Value,
) -> Result<ControlFlow<ActStep, Value>, RunError> {
    // The draft is kept as a run extra: the run must exist first.
    run.flush().await?;
    let target = CiteRun {
        state: run.state,
        executor: run.executor,
        charter: &run.charter,
        event: run.event,
        run_id: run.run_id,
        action: name,
    };
    match super::decide::draft_for_action(&target, spec, ctx).await {
        Ok(text) => {
            let mut c = ctx.clone();
            c["draft"] = Value::String(text);
            Ok(ControlFlow::Continue(c))
        }
        Err(e) => Ok(ControlFlow::Break(match (e.wait, e.escalate) {
            (Some(after), _) => ActStep::DraftWait {
                after,
                message: e.message,
            },
            (None, Some(reason)) => ActStep::DraftRefused {
                reason,
                message: e.message,
            },
            (None, None) => ActStep::Failed(e.message),
        })),
    }
}

/// The action's parameters rendered and checked against their connector, with their
/// idempotency key; an action that fails either is recorded as invalid (nothing is sent).
fn prepare<S: Store>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    ctx: &Value,
) -> ControlFlow<ActStep, (Value, String)> {
    let name = action.name.as_str();
    let invalid = |key: String, params: &Value| ActionRecord {
        action: name.to_string(),
        idempotency_key: key,
        params: params.clone(),
        status: ActionStatus::Invalid,
        attempts: vec![],
    };
    let params = match render::render_params(action, ctx) {
        Ok(p) => p,
        Err(msg) => {
            let key = idempotency_key(run.event.id, name, &Value::Null);
            run.record_action_now(&invalid(key, &Value::Null), &Value::Null);
            return ControlFlow::Break(ActStep::Failed(format!(
                "action `{name}`: parameters could not be rendered: {msg}"
            )));
        }
    };
    let key = idempotency_key(run.event.id, name, &params);
    if let Err(msg) = render::preflight(run.state, action, &params) {
        run.record_action_now(&invalid(key, &params), &params);
        return ControlFlow::Break(ActStep::Failed(format!("action `{name}`: {msg}")));
    }
    ControlFlow::Continue((params, key))
}

/// The approval gate, for an action whose policy requires approval outside shadow mode:
/// the parameters and key to execute with (an edited approval's), or the step it ends with.
async fn gate<S: Store>(
    run: &mut RunCtx<'_, S>,
    action: &Action,
    params: Value,
    key: String,
) -> Result<ControlFlow<ActStep, (Value, String)>, RunError> {
    let Approval::Required {
        reviewers,
        expires,
        on_expiry,
    } = &action.approval
    else {
        return Ok(ControlFlow::Continue((params, key)));
    };
    if run.charter.mode == Mode::Shadow {
        return Ok(ControlFlow::Continue((params, key)));
    }
    let policy = Policy {
        reviewers,
        expires: *expires,
        on_expiry: *on_expiry,
    };
    // The gate creates approvals (and may record the action) against the run.
    run.flush().await?;
    Ok(
        match run
            .approval_gate(&action.name, &params, &key, &policy)
            .await?
        {
            Gate::Proceed { params, key } => ControlFlow::Continue((params, key)),
            Gate::Stop(step) => ControlFlow::Break(step),
        },
    )
}

impl<S: Store> RunCtx<'_, S> {
    /// Record the action's `measure:` outcome (if it declares one) after it succeeded
    /// (buffered with the run's next durable write).
    pub(super) fn record_measure(&mut self, action: &Action) {
        let Some(name) = &action.measure else {
            return;
        };
        self.pending.push(RunWrite::Measurement(NewMeasurement {
            charter: self.charter.name.clone(),
            name: name.clone(),
            run_id: Some(self.run_id),
            event_id: Some(self.event.id),
            value: 1.0,
            at: now_millis(),
            detail: json!({ "action": action.name }),
        }));
        self.state.metrics.measurement(&self.charter.name, name);
    }
}
