//! Replaying a payload that was kept as rejected (it broke the contract, or its body did
//! not parse) once the contract or the sender is fixed. The signature was verified when the
//! payload first arrived, so only the body and the contract are checked again.

use charter_core::config::Role;
use charter_core::model::{NewEvent, RejectedPayload};
use charter_store::{IngestOutcome, RejectedFilter, Sort, Store};
use serde::Serialize;
use uuid::Uuid;

use super::{OpError, parse_id, require};
use crate::AppState;
use crate::auth::Caller;
use crate::ingest::{parse_body, webhook_dedupe_key};

/// What a replay of a rejected payload stored: the event, or the earlier event it
/// duplicates (`status` `accepted` or `duplicate`, as a webhook's acknowledgement).
#[derive(Debug, Serialize)]
pub struct Replayed {
    pub id: Uuid,
    pub status: &'static str,
}

/// The rejected payload `id`: one keyset seek on the primary key (the first payload after
/// the id just below it, oldest first), however many payloads are kept.
async fn find_rejected<S: Store>(store: &S, id: Uuid) -> Result<Option<RejectedPayload>, OpError> {
    let Some(below) = id.as_u128().checked_sub(1) else {
        return Ok(None);
    };
    let found = store
        .page_rejected(RejectedFilter {
            sort: Some(Sort::OldestFirst),
            after: Some(Uuid::from_u128(below)),
            limit: 1,
            ..RejectedFilter::default()
        })
        .await?;
    Ok(found.into_iter().find(|r| r.id == id))
}

/// Replay rejected payload `id` (admin): stored as an event when it passes the contract
/// now (and then no longer kept as rejected), [`OpError::Contract`] with what is still
/// wrong otherwise.
pub async fn replay<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<Replayed, OpError> {
    require(caller, Role::Admin)?;
    let id = parse_id(id)?;
    let rejected = find_rejected(&state.store, id)
        .await?
        .ok_or(OpError::NotFound)?;
    if !caller.sees(&rejected.charter) {
        return Err(OpError::NotFound);
    }
    let cr = state
        .runtime
        .charters
        .get(&rejected.charter)
        .ok_or_else(|| OpError::Conflict("the payload's charter is no longer defined".into()))?;
    let invalid = |violations| OpError::Contract {
        event_id: Some(id.to_string()),
        violations,
    };
    let payload = parse_body(&rejected.headers, rejected.body.as_bytes())
        .map_err(|reason| invalid(vec![reason]))?;
    if let Some(contract) = &cr.contract {
        let violations = crate::ingest::contract_violations(contract, &payload);
        if !violations.is_empty() {
            return Err(invalid(violations));
        }
    }
    let mut event = NewEvent {
        id: Uuid::now_v7(),
        charter: rejected.charter.clone(),
        source: format!("replay:rejected:{id}"),
        event_type: None,
        dedupe_key: None,
        received_at: rejected.received_at,
        headers: rejected.headers.clone(),
        payload,
    };
    let header = match &cr.charter.trigger.dedupe {
        Some(charter_core::config::Dedupe::Header(h)) => Some(h.clone()),
        Some(_) => None,
        None => cr
            .charter
            .trigger
            .webhook
            .as_ref()
            .and_then(|w| charter_core::verify::delivery_id_header(&w.verify))
            .map(str::to_string),
    };
    event.dedupe_key = webhook_dedupe_key(&cr.charter, &event, header.as_deref())?;
    let started = std::time::Instant::now();
    let outcome = crate::ingest::accept(state, event, None).await?;
    state.metrics.ack_latency(started.elapsed());
    state.store.delete_rejected(id).await?;
    tracing::info!(caller = %caller.name, rejected = %id, "rejected payload replayed");
    Ok(match outcome {
        IngestOutcome::Stored(id) => Replayed {
            id,
            status: "accepted",
        },
        IngestOutcome::Duplicate(id) => Replayed {
            id,
            status: "duplicate",
        },
    })
}
