//! Retrying and dismissing a dead letter (see [`crate::dead_letters`] for what one is).

use charter_core::config::Role;
use charter_core::model::EventStatus;
use charter_store::{EscalationRecord, Requeue, Store};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use super::escalations::visible;
use super::{OpError, audit, require};
use crate::auth::Caller;
use crate::{AppState, now_millis};

pub use crate::dead_letters::DEAD_LETTER;

/// The answer to deciding a dead letter with a label.
pub fn not_a_decision() -> OpError {
    OpError::Invalid(
        "a dead letter is not decided with a label: retry it (POST …/retry) or dismiss it with a reason (POST …/dismiss)".into(),
    )
}

/// An open dead letter the caller may see and handle.
async fn open_dead_letter<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EscalationRecord, OpError> {
    require(caller, Role::Reviewer)?;
    let e = visible(state, caller, id).await?;
    if e.reason != DEAD_LETTER {
        return Err(OpError::Invalid(
            "only a dead letter is retried or dismissed; decide this escalation with a label"
                .into(),
        ));
    }
    if e.status != charter_store::EscalationStatus::Open {
        return Err(OpError::Conflict(
            "the dead letter is already closed".into(),
        ));
    }
    Ok(e)
}

/// What a retry did: the dead letter and the events put back in the queue.
#[derive(Debug, Serialize)]
pub struct Retried {
    pub escalation: Uuid,
    pub requeued: Vec<Uuid>,
}

/// A dismissed dead letter.
#[derive(Debug, Serialize)]
pub struct Dismissed {
    pub escalation: EscalationRecord,
}

/// Retry a dead letter as `caller`: requeue its event. The escalation closes when a run
/// of the event succeeds.
pub async fn retry<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<Retried, OpError> {
    let e = open_dead_letter(state, caller, id).await?;
    let event = state
        .store
        .get_event(e.event_id)
        .await?
        .ok_or(OpError::NotFound)?;
    if event.status == EventStatus::Processing {
        return Err(OpError::Conflict(
            "the event is being processed right now; retry it when the run ends".into(),
        ));
    }
    let ids = state
        .store
        .requeue(Requeue::Event(e.event_id), now_millis())
        .await?;
    state.wake.notify_one();
    audit(
        state,
        &caller.name,
        "escalation.retry",
        Some(&e.charter),
        Some(e.id.to_string()),
        json!({ "event": e.event_id, "requeued": ids }),
    )
    .await?;
    Ok(Retried {
        escalation: e.id,
        requeued: ids,
    })
}

/// Dismiss a dead letter as `caller` with a reason: closed without a decision, the event
/// stays failed.
pub async fn dismiss<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    reason: &str,
) -> Result<Dismissed, OpError> {
    let e = open_dead_letter(state, caller, id).await?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(OpError::Invalid(
            "dismissing a dead letter needs a reason (`reason`)".into(),
        ));
    }
    let closed = state
        .store
        .close_escalation(e.id, &caller.name, now_millis())
        .await?
        .ok_or_else(|| OpError::Conflict("the dead letter is already closed".into()))?;
    audit(
        state,
        &caller.name,
        "escalation.dismiss",
        Some(&e.charter),
        Some(e.id.to_string()),
        json!({ "event": e.event_id, "reason": DEAD_LETTER, "comment": reason }),
    )
    .await?;
    Ok(Dismissed { escalation: closed })
}
