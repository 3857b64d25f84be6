//! Escalations: showing one and deciding it with a label (the run continues with the
//! human's decision, stage `human`).

use std::collections::BTreeMap;

use charter_core::config::Role;
use charter_store::{EscalationRecord, HumanDecision, NotificationRecord, Store};
use serde::Serialize;
use serde_json::{Value, json};

use super::{OpError, audit, parse_id, requeue_soon, require};
use crate::auth::Caller;
use crate::{AppState, now_millis};

/// One escalation with the delivery state of each notification that announced it.
#[derive(Debug, Serialize)]
pub struct EscalationView {
    pub escalation: EscalationRecord,
    pub notifications: Vec<NotificationRecord>,
}

/// A resolved escalation.
#[derive(Debug, Serialize)]
pub struct Resolved {
    pub escalation: EscalationRecord,
}

/// A human's decision of an escalation: one of the charter's labels, and values for fields
/// its `extract` declares.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub label: String,
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

/// The escalation `id` with its notifications.
pub async fn show<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EscalationView, OpError> {
    let escalation = visible(state, caller, id).await?;
    let notifications = state
        .store
        .list_notifications(Some(escalation.id), 100)
        .await?;
    Ok(EscalationView {
        escalation,
        notifications,
    })
}

/// An escalation the caller may see; another charter's (or an unknown) id is not found.
pub async fn visible<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EscalationRecord, OpError> {
    let e = state
        .store
        .get_escalation(parse_id(id)?)
        .await?
        .ok_or(OpError::NotFound)?;
    if !caller.sees(&e.charter) {
        return Err(OpError::NotFound);
    }
    Ok(e)
}

/// Check a decision against the charter's labels and `extract` fields.
fn check_decision<S: Store>(
    state: &AppState<S>,
    charter: &str,
    d: &Decision,
) -> Result<(), OpError> {
    let Some(decide) = state
        .runtime
        .charters
        .get(charter)
        .and_then(|cr| cr.charter.decide.as_ref())
    else {
        return Ok(());
    };
    if !decide.labels.iter().any(|l| l == &d.label) {
        return Err(OpError::Invalid(format!(
            "unknown label `{}`: expected one of {}",
            d.label,
            decide.labels.join(", ")
        )));
    }
    if let Some(k) = d.fields.keys().find(|k| !decide.extract.contains_key(*k)) {
        return Err(OpError::Invalid(format!(
            "field `{k}` is not declared in the charter's `extract`"
        )));
    }
    Ok(())
}

/// Resolve escalation `id` as `caller` with `decision` (read as input: an unreadable one
/// is reported after the escalation is found to be the caller's to decide). A dead letter
/// is not decided with a label.
pub async fn decide<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    decision: Result<Decision, OpError>,
) -> Result<Resolved, OpError> {
    require(caller, Role::Reviewer)?;
    let e = visible(state, caller, id).await?;
    if e.reason == super::dead_letters::DEAD_LETTER {
        return Err(super::dead_letters::not_a_decision());
    }
    let d = decision?;
    check_decision(state, &e.charter, &d)?;
    let decision = HumanDecision {
        label: d.label,
        fields: d.fields,
    };
    let resolved = state
        .store
        .resolve_escalation(e.id, &decision, &caller.name, now_millis())
        .await?
        .ok_or_else(|| OpError::Conflict("the escalation is already resolved".into()))?;
    audit(
        state,
        &caller.name,
        "escalation.resolve",
        Some(&e.charter),
        Some(e.id.to_string()),
        json!({
            "event": e.event_id,
            "reason": e.reason,
            "label": decision.label,
            "fields": decision.fields,
        }),
    )
    .await?;
    requeue_soon(state, e.event_id);
    tracing::info!(caller = %caller.name, escalation = %e.id, "escalation resolved");
    Ok(Resolved {
        escalation: resolved,
    })
}
