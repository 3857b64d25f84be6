//! The two side effects every operation shares: an entry in the audit log, and putting a
//! decided event back in the queue. Below [`crate::ops`] so that the domain modules the
//! operations use (rollout, dead letters) write the same entries without importing ops.

use std::time::Duration;

use charter_core::model::EventStatus;
use charter_store::{NewAuditEntry, Requeue, Store, StoreError};
use serde_json::Value;
use uuid::Uuid;

use crate::{AppState, now_millis};

/// Append one entry to the audit log (durable before the request is answered). The
/// client's address (behind a trusted proxy, the one it forwarded) is added to `detail`
/// while a request is being served.
pub async fn audit<S: Store>(
    state: &AppState<S>,
    actor: &str,
    action: &str,
    charter: Option<&str>,
    target: Option<String>,
    mut detail: Value,
) -> Result<(), StoreError> {
    if let Some(ip) = crate::client::current_client() {
        if detail.is_null() {
            detail = Value::Object(serde_json::Map::new());
        }
        if let Some(map) = detail.as_object_mut() {
            map.entry("client")
                .or_insert_with(|| Value::String(ip.to_string()));
        }
    }
    state
        .store
        .append_audit(NewAuditEntry {
            at: now_millis(),
            actor: actor.to_string(),
            action: action.to_string(),
            charter: charter.map(str::to_string),
            target,
            detail,
        })
        .await?;
    Ok(())
}

/// Put a decided event back in the queue so the worker runs it again. The run that asked
/// for the decision may still hold the event for a moment; retry until it is released.
pub fn requeue_soon<S: Store>(state: &AppState<S>, event_id: Uuid) {
    let st = state.clone();
    tokio::spawn(async move {
        for _ in 0..600 {
            match st
                .store
                .requeue(Requeue::Event(event_id), now_millis())
                .await
            {
                Ok(ids) if !ids.is_empty() => {
                    st.wake.notify_one();
                    return;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(event = %event_id, error = %e, "requeue failed"),
            }
            match st.store.get_event(event_id).await {
                Ok(Some(e)) if e.status == EventStatus::Processing => {}
                Ok(_) => return,
                Err(e) => tracing::warn!(event = %event_id, error = %e, "event lookup failed"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::error!(event = %event_id, "could not requeue a decided event; replay it");
    });
}
