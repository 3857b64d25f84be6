//! Events: showing one, putting events back in the queue (replay one, replay the failed
//! ones or a time range), running a copy again (rerun), actions left in doubt, and taking an
//! event out of automatic processing (reroute to the manual queue).

use charter_core::config::Role;
use charter_core::model::{EventRecord, EventStatus, NewEvent, RunRecord};
use charter_store::{
    ApprovalFilter, ApprovalStatus, EscalationRecord, InDoubtAction, InDoubtFilter, IngestOutcome,
    NewEscalation, Requeue, Store, Verdict,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::{OpError, audit, listing_limit, parse_id, require};
use crate::auth::Caller;
use crate::{AppState, now_millis};

/// Escalation reason of an event rerouted to the manual queue.
pub const REROUTED: &str = "rerouted";

/// Most pending approvals closed by one reroute.
const REROUTE_SCAN: usize = 10_000;

/// One event with its runs.
#[derive(Debug, Serialize)]
pub struct EventView {
    pub event: EventRecord,
    pub runs: Vec<RunRecord>,
}

/// The events a replay put back in the queue.
#[derive(Debug, Serialize)]
pub struct Requeued {
    pub requeued: Vec<Uuid>,
}

/// The copy a rerun stored.
#[derive(Debug, Serialize)]
pub struct Rerun {
    pub event_id: Uuid,
    pub rerun_of: Uuid,
}

/// Actions left in doubt by interrupted runs.
#[derive(Debug, Serialize)]
pub struct InDoubt {
    pub in_doubt: Vec<InDoubtAction>,
}

/// What selects the events of a bulk replay: without `since`/`until`, every failed event
/// (of `charter`, or of all charters); with either, every event received in
/// `[since, until)` (Unix ms), whatever its status, except those being processed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaySelection {
    pub charter: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// Which in-doubt actions to list.
#[derive(Debug, Default, Deserialize)]
pub struct InDoubtQuery {
    pub charter: Option<String>,
    /// Only actions whose key has not succeeded since.
    #[serde(default)]
    pub unsettled: bool,
    pub limit: Option<usize>,
}

/// The outcome of a reroute.
#[derive(Debug, Serialize)]
pub struct Rerouted {
    pub already_open: bool,
    pub closed_approvals: Vec<Uuid>,
    pub escalation: EscalationRecord,
    pub event: Uuid,
}

/// The event `id` if the caller sees its charter.
async fn visible<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EventRecord, OpError> {
    let ev = state
        .store
        .get_event(parse_id(id)?)
        .await?
        .ok_or(OpError::NotFound)?;
    if !caller.sees(&ev.event.charter) {
        return Err(OpError::NotFound);
    }
    Ok(ev)
}

/// The event `id` and its runs.
pub async fn show<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EventView, OpError> {
    let event = visible(state, caller, id).await?;
    let runs = state.store.runs_for_event(event.event.id).await?;
    Ok(EventView { event, runs })
}

/// Actions left in doubt (intent recorded, outcome unknown), newest first; a scoped caller
/// sees only its charters'.
pub async fn in_doubt<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    q: InDoubtQuery,
) -> Result<InDoubt, OpError> {
    if let Some(c) = &q.charter
        && !caller.sees(c)
    {
        return Ok(InDoubt { in_doubt: vec![] });
    }
    let items = state
        .store
        .list_in_doubt(InDoubtFilter {
            charter: q.charter,
            unsettled: q.unsettled,
            limit: listing_limit(q.limit),
        })
        .await?;
    let in_doubt = items
        .into_iter()
        .filter(|a| caller.sees(&a.charter))
        .collect();
    Ok(InDoubt { in_doubt })
}

/// Put event `id` back in the queue (admin). 409 while it is being processed.
pub async fn replay<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<Requeued, OpError> {
    require(caller, Role::Admin)?;
    let event = visible(state, caller, id).await?;
    let id = event.event.id;
    if event.status == EventStatus::Processing {
        return Err(OpError::Conflict(
            "the event is being processed right now; replay it when the run ends".into(),
        ));
    }
    let ids = state
        .store
        .requeue(Requeue::Event(id), now_millis())
        .await?;
    state.wake.notify_one();
    audit(
        state,
        &caller.name,
        "event.replay",
        Some(&event.event.charter),
        Some(id.to_string()),
        json!({ "requeued": ids }),
    )
    .await?;
    tracing::info!(caller = %caller.name, event = %id, "replay requested");
    Ok(Requeued { requeued: ids })
}

/// The operator asks for the effects again (admin): a copy of the event is stored as a new
/// event (new id, so new idempotency keys; no dedupe key) and runs from the start: its
/// actions execute again, downstream included. The original keeps its record. A copy of an
/// agent's tool call stays a tool call (same source, same action).
pub async fn rerun<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<Rerun, OpError> {
    require(caller, Role::Admin)?;
    let original = visible(state, caller, id).await?;
    let id = original.event.id;
    if !state.runtime.charters.contains_key(&original.event.charter) {
        return Err(OpError::Conflict(
            "the event's charter is no longer defined".into(),
        ));
    }
    let source = if super::tools::requested_action(&original.event).is_some() {
        original.event.source.clone()
    } else {
        format!("rerun:{id}")
    };
    let copy = NewEvent {
        id: Uuid::now_v7(),
        charter: original.event.charter.clone(),
        source,
        event_type: original.event.event_type.clone(),
        dedupe_key: None,
        received_at: now_millis(),
        headers: original.event.headers.clone(),
        payload: original.event.payload.clone(),
    };
    let new_id = match crate::ingest::accept(state, copy, None).await? {
        IngestOutcome::Stored(new_id) => new_id,
        // No dedupe key and a fresh id: only a UUID collision could land here.
        IngestOutcome::Duplicate(_) => {
            return Err(OpError::Internal(
                "the copy was taken for a duplicate".into(),
            ));
        }
    };
    audit(
        state,
        &caller.name,
        "event.rerun",
        Some(&original.event.charter),
        Some(id.to_string()),
        json!({ "event_id": new_id }),
    )
    .await?;
    tracing::info!(caller = %caller.name, event = %id, copy = %new_id, "rerun requested: the event's actions will execute again");
    Ok(Rerun {
        event_id: new_id,
        rerun_of: id,
    })
}

/// Put the events `sel` selects back in the queue (admin). A caller scoped to some
/// charters must name one.
pub async fn replay_many<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    sel: ReplaySelection,
) -> Result<Requeued, OpError> {
    require(caller, Role::Admin)?;
    if !caller.charters.is_empty() && sel.charter.is_none() {
        return Err(OpError::Forbidden);
    }
    if let Some(c) = &sel.charter
        && !caller.sees(c)
    {
        return Err(OpError::NotFound);
    }
    let ranged = sel.since.is_some() || sel.until.is_some();
    if let (Some(a), Some(b)) = (sel.since, sel.until)
        && a >= b
    {
        return Err(OpError::Invalid(
            "`since` must be before `until` (Unix milliseconds)".into(),
        ));
    }
    let (selector, what) = if ranged {
        let range = Requeue::Received {
            charter: sel.charter.clone(),
            since: sel.since,
            until: sel.until,
        };
        (range, "events.replay_range")
    } else {
        let failed = Requeue::AllFailed {
            charter: sel.charter.clone(),
        };
        (failed, "events.replay_failed")
    };
    let ids = state.store.requeue(selector, now_millis()).await?;
    state.wake.notify_one();
    audit(
        state,
        &caller.name,
        what,
        sel.charter.as_deref(),
        None,
        json!({ "requeued": ids, "since": sel.since, "until": sel.until }),
    )
    .await?;
    tracing::info!(caller = %caller.name, count = ids.len(), "replay of failed events requested");
    Ok(Requeued { requeued: ids })
}

/// Take event `id` out of automatic processing and hand it to a human (reviewer): an
/// escalation with reason `rerouted`, `note` saying why. Approvals still pending for the
/// event are closed (see [`close_pending_approvals`]). 409 while the event is being
/// processed. `note` is read as input: reported after the event is found.
pub async fn reroute<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    note: Result<Option<String>, OpError>,
) -> Result<Rerouted, OpError> {
    require(caller, Role::Reviewer)?;
    let event = visible(state, caller, id).await?;
    let (id, charter) = (event.event.id, event.event.charter.clone());
    let note = note?;
    let busy = || {
        OpError::Conflict(
            "the event is being processed right now; reroute it when the run ends".into(),
        )
    };
    if event.status == EventStatus::Processing {
        return Err(busy());
    }
    let now = now_millis();
    if !state.store.hold_event(id, now).await? {
        return Err(busy());
    }
    let runs = state.store.runs_for_event(id).await?;
    let last = runs.last();
    let message = format!("rerouted by {}", caller.name);
    let target = state
        .runtime
        .charters
        .get(&charter)
        .map(|cr| cr.charter.escalation.to.clone());
    let new_id = Uuid::now_v7();
    let escalation = state
        .store
        .create_escalation(NewEscalation {
            id: new_id,
            run_id: last.map(|r| r.id),
            event_id: id,
            charter: charter.clone(),
            reason: REROUTED.into(),
            detail: json!({
                "message": message,
                "rerouted_by": caller.name,
                "note": note,
                "previous_status": event.status.as_str(),
                "payload": event.event.payload,
                "decision": last.and_then(|r| r.decision.as_ref()),
            }),
            target,
            created_at: now,
        })
        .await?;
    let already_open = escalation.id != new_id;
    let closed = close_pending_approvals(state, &caller.name, id, &charter, &message).await?;
    audit(
        state,
        &caller.name,
        "event.reroute",
        Some(&charter),
        Some(id.to_string()),
        json!({
            "event": id,
            "escalation": escalation.id,
            "previous_status": event.status.as_str(),
            "note": note,
            "already_open": already_open,
            "closed_approvals": closed,
        }),
    )
    .await?;
    tracing::info!(caller = %caller.name, event = %id, escalation = %escalation.id, closed_approvals = closed.len(), "event rerouted to the manual queue");
    Ok(Rerouted {
        already_open,
        closed_approvals: closed,
        escalation,
        event: id,
    })
}

/// Reject every approval still pending for a rerouted event with `reason`, each through
/// [`charter_store::ApprovalStore::decide_approval`] (one winner against a reviewer deciding
/// at the same moment) and audited as `approval.reject`. Nothing is requeued: the event
/// stays with the escalation. Returns the ids of the approvals this call closed.
async fn close_pending_approvals<S: Store>(
    state: &AppState<S>,
    actor: &str,
    event: Uuid,
    charter: &str,
    reason: &str,
) -> Result<Vec<Uuid>, OpError> {
    let pending = state
        .store
        .list_approvals(ApprovalFilter {
            charter: Some(charter.to_string()),
            status: Some(ApprovalStatus::Pending),
            event_id: Some(event),
            limit: REROUTE_SCAN,
            ..ApprovalFilter::default()
        })
        .await?;
    let mut closed = Vec::new();
    for a in pending {
        let verdict = Verdict::Reject {
            reason: reason.to_string(),
        };
        let Some(decided) = state
            .store
            .decide_approval(a.id, verdict, actor, now_millis())
            .await?
        else {
            // Decided (or expired) by someone else in the meantime: theirs stands.
            continue;
        };
        audit(
            state,
            actor,
            "approval.reject",
            Some(charter),
            Some(decided.id.to_string()),
            json!({
                "event": event,
                "action": decided.action,
                "reason": reason,
                "rerouted": true,
            }),
        )
        .await?;
        closed.push(decided.id);
    }
    Ok(closed)
}
