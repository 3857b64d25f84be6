//! Queuing notifications: one outbox row per new item and target, right after the item is
//! created (idempotent, so a re-run queues nothing new). Queuing never fails the caller: a
//! store error is logged and counted. Delivery is [`crate::notify`].

use charter_core::config::Charter;
use charter_store::{ApprovalRecord, EscalationRecord, NewNotification, NotificationKind, Store};
use uuid::Uuid;

use crate::{AppState, now_millis};

/// Queue the notifications of a pending approval. Never fails the caller.
pub async fn approval_created<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    a: &ApprovalRecord,
) {
    enqueue(state, charter, NotificationKind::Approval, a.id).await;
}

/// Queue the notifications of an open escalation. Never fails the caller.
pub async fn escalation_created<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    e: &EscalationRecord,
) {
    enqueue(state, charter, NotificationKind::Escalation, e.id).await;
}

/// Queue the owner's notice of a route's promotion (suggested or made) or demotion; `sample`
/// is the review that tipped it. Never fails the caller.
pub async fn rollout_changed<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    kind: NotificationKind,
    sample: Uuid,
) {
    enqueue(state, charter, kind, sample).await;
}

async fn enqueue<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    kind: NotificationKind,
    item: Uuid,
) {
    let targets = &charter.escalation.notify;
    if targets.is_empty() {
        return;
    }
    let now = now_millis();
    let rows = targets
        .iter()
        .map(|t| NewNotification {
            id: Uuid::now_v7(),
            kind,
            item_id: item,
            charter: charter.name.clone(),
            target: t.spec.clone(),
            created_at: now,
        })
        .collect();
    if let Err(e) = state.store.enqueue_notifications(rows).await {
        for t in targets {
            state
                .metrics
                .notification(&charter.name, kind.as_str(), &t.connector, "failed");
        }
        tracing::error!(charter = %charter.name, kind = kind.as_str(), item = %item, error = %e, "could not queue notifications; the item is in the inbox but nobody was told");
    }
}
