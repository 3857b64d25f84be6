//! A route's actions in order, each through its gates, stopping at the first that fails or
//! waits; and the check that an MCP tool call may run its action.

use charter_core::config::{Charter, Mode};
use charter_core::model::{Decision, EventStatus, RunOutcome};
use charter_store::Store;
use serde_json::{Value, json};

use super::act::{ActStep, act};
use super::run::{RunCtx, RunError};

/// How a run ends after its actions: its outcome, the event's status, and why it stopped
/// early (if it did).
pub(super) type Ended = (RunOutcome, EventStatus, Option<String>);

/// Run `names` in order through their gates; stop at the first action that fails or waits.
pub(super) async fn act_in_order<S: Store>(
    run: &mut RunCtx<'_, S>,
    names: &[String],
    ctx: &Value,
    decision: Option<&Decision>,
) -> Result<Ended, RunError> {
    for name in names {
        match act(run, name, ctx).await? {
            ActStep::Continue => continue,
            step => return stopped(run, step, decision).await,
        }
    }
    let outcome = if run.charter.mode == Mode::Shadow {
        RunOutcome::Shadow
    } else {
        RunOutcome::Completed
    };
    Ok((outcome, EventStatus::Done, None))
}

/// The run's end after an action stopped the route (`act_in_order` goes on at `Continue`,
/// which never reaches here and would read as completed).
async fn stopped<S: Store>(
    run: &mut RunCtx<'_, S>,
    step: ActStep,
    decision: Option<&Decision>,
) -> Result<Ended, RunError> {
    let (o, st, msg) = match step {
        ActStep::Continue => return Ok((RunOutcome::Completed, EventStatus::Done, None)),
        ActStep::Failed(msg) => (RunOutcome::Failed, EventStatus::Failed, msg),
        ActStep::DeadLettered { message, evidence } => {
            let mut detail = evidence;
            detail["payload"] = run.event.payload.clone();
            detail["stages"] = json!(decision.map(|d| &d.stages));
            run.flush().await?;
            run.escalate("dead_letter", detail).await?;
            (RunOutcome::Failed, EventStatus::Failed, message)
        }
        ActStep::AwaitingApproval(msg) => (RunOutcome::AwaitingApproval, EventStatus::Waiting, msg),
        ActStep::Escalated(msg) => (RunOutcome::Escalated, EventStatus::Waiting, msg),
        ActStep::Rejected(msg) => (RunOutcome::Rejected, EventStatus::Done, msg),
        ActStep::DraftWait { after, message } => {
            let why = format!("{message}; the event is tried again when the limit's window opens");
            run.finish(None, RunOutcome::Failed, Some(why));
            return Err(RunError::RetryLater(after));
        }
        ActStep::DraftRefused { reason, message } => {
            let detail = json!({
                "payload": run.event.payload,
                "reason": message,
                "stages": decision.map(|d| &d.stages),
            });
            run.flush().await?;
            run.escalate(reason.as_str(), detail).await?;
            (RunOutcome::Escalated, EventStatus::Waiting, message)
        }
    };
    Ok((o, st, Some(msg)))
}

/// Whether an MCP tool call of action `name` may run: the action opts out
/// (`mcp_skip_when: true`), or a route that lists it has a `when:` holding over the call's
/// context (`decision` is null: a call is not decided). `Err` says why not, naming the
/// routes it tried (a condition that cannot be evaluated without a decision counts as not
/// holding, and its error is quoted).
pub(super) fn tool_call_allowed(charter: &Charter, name: &str, ctx: &Value) -> Result<(), String> {
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
