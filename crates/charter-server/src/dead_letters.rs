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

use charter_store::Store;
use serde_json::json;
use uuid::Uuid;

use crate::{AppState, now_millis};

/// The escalation reason of a dead letter.
pub const DEAD_LETTER: &str = "dead_letter";

/// After a run of `event_id` succeeded: close its open dead letter, if it has one, and say
/// so in the audit log. Errors are logged (the run itself is recorded already).
pub async fn close_after_success<S: Store>(state: &AppState<S>, event_id: Uuid) {
    let closed = state
        .store
        .close_event_escalation(event_id, DEAD_LETTER, "system", now_millis())
        .await;
    match closed {
        Ok(Some(e)) => {
            tracing::info!(event = %event_id, escalation = %e.id, "the event succeeded: its dead letter is closed");
            let _ = crate::record::audit(
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
