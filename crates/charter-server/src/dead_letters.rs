//! Dead letters as their own kind of inbox item.
//!
//! An action that exhausted its retries leaves its event `failed` and opens a `dead_letter`
//! escalation with the failed action as evidence. A dead letter is not a question for a
//! human's label: the model (or the rules) decided, the action did not go through. So it
//! is handled in one of two ways, never by a label and never as a training correction:
//! - **Retry**: the event is put back in the queue (as a replay); the escalation stays open
//!   until a run of the event succeeds, and is then closed by the worker ([`close_after_success`]).
//!   An action that had already succeeded is not sent again (its idempotency key is done).
//! - **Dismiss** with a reason: the escalation is closed without a decision, the event stays
//!   failed, and the reason goes to the audit log.
//!
//! Any later success of the event closes it too (an operator's replay from the event page or
//! `charter replay`). Both ways are open to reviewers, who work the inbox.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use charter_core::config::Role;
use charter_core::model::EventStatus;
use charter_store::{EscalationRecord, Requeue, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Caller, audit, authorize, visible_escalation};
use crate::error::ApiError;
use crate::{AppState, now_millis};

/// The escalation reason of a dead letter.
pub const DEAD_LETTER: &str = "dead_letter";

/// The answer to deciding a dead letter with a label.
pub fn not_a_decision() -> ApiError {
    ApiError::BadRequest(
        "a dead letter is not decided with a label: retry it (POST …/retry) or dismiss it with a reason (POST …/dismiss)".into(),
    )
}

/// After a run of `event_id` succeeded: close its open dead letter, if it has one, and say
/// so in the audit log. Errors are logged (the run itself is recorded already).
pub async fn close_after_success<S: Store>(state: &AppState<S>, event_id: uuid::Uuid) {
    let closed = state
        .store
        .close_event_escalation(event_id, DEAD_LETTER, "system", now_millis())
        .await;
    match closed {
        Ok(Some(e)) => {
            tracing::info!(event = %event_id, escalation = %e.id, "the event succeeded: its dead letter is closed");
            let _ = audit(
                state,
                "system",
                "escalation.close",
                Some(&e.charter),
                Some(e.id.to_string()),
                json!({ "event": event_id, "reason": DEAD_LETTER, "why": "the event succeeded on a later run" }),
            )
            .await;
        }
        Ok(None) => {}
        Err(err) => {
            tracing::error!(event = %event_id, error = %err, "could not close the event's dead letter")
        }
    }
}

/// An open dead letter the caller may see and handle.
async fn open_dead_letter<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EscalationRecord, ApiError> {
    if caller.role < Role::Reviewer {
        return Err(ApiError::Forbidden);
    }
    let e = visible_escalation(state, caller, id).await?;
    if e.reason != DEAD_LETTER {
        return Err(ApiError::BadRequest(
            "only a dead letter is retried or dismissed; decide this escalation with a label"
                .into(),
        ));
    }
    if e.status != charter_store::EscalationStatus::Open {
        return Err(ApiError::Conflict(
            "the dead letter is already closed".into(),
        ));
    }
    Ok(e)
}

/// Retry a dead letter as `caller`: requeue its event. The escalation closes when a run
/// of the event succeeds.
pub async fn retry_as<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<Json<Value>, ApiError> {
    let e = open_dead_letter(state, caller, id).await?;
    let event = state
        .store
        .get_event(e.event_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if event.status == EventStatus::Processing {
        return Err(ApiError::Conflict(
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
    Ok(Json(json!({ "escalation": e.id, "requeued": ids })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DismissBody {
    pub reason: String,
}

/// Dismiss a dead letter as `caller` with a reason: closed without a decision, the event
/// stays failed.
pub async fn dismiss_as<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    reason: &str,
) -> Result<Json<Value>, ApiError> {
    let e = open_dead_letter(state, caller, id).await?;
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(ApiError::BadRequest(
            "dismissing a dead letter needs a reason (`reason`)".into(),
        ));
    }
    let closed = state
        .store
        .close_escalation(e.id, &caller.name, now_millis())
        .await?
        .ok_or_else(|| ApiError::Conflict("the dead letter is already closed".into()))?;
    audit(
        state,
        &caller.name,
        "escalation.dismiss",
        Some(&e.charter),
        Some(e.id.to_string()),
        json!({ "event": e.event_id, "reason": DEAD_LETTER, "comment": reason }),
    )
    .await?;
    Ok(Json(json!({ "escalation": closed })))
}

/// `POST /api/v1/escalations/{id}/retry`.
pub async fn retry<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    retry_as(&state, &caller, &id).await
}

/// `POST /api/v1/escalations/{id}/dismiss` with `{"reason": "..."}`.
pub async fn dismiss<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    let body: DismissBody = serde_json::from_slice(&body)
        .map_err(|err| ApiError::BadRequest(format!("expected {{\"reason\": \"...\"}}: {err}")))?;
    dismiss_as(&state, &caller, &id, &body.reason).await
}
