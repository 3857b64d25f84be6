//! Replaying a payload that was kept as rejected (it broke the contract, or its body did
//! not parse) once the contract or the sender is fixed. The signature was verified when the
//! payload first arrived, so only the body and the contract are checked again.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use charter_core::config::Role;
use charter_core::model::NewEvent;
use charter_store::{RejectedFilter, Sort, Store};
use uuid::Uuid;

use crate::AppState;
use crate::api::authorize;
use crate::error::ApiError;
use crate::ingest::{parse_body, store_event, webhook_dedupe_key};

/// The rejected payload `id`: one keyset seek on the primary key (the first payload after
/// the id just below it, oldest first), however many payloads are kept.
async fn find_rejected<S: Store>(
    store: &S,
    id: Uuid,
) -> Result<Option<charter_core::model::RejectedPayload>, ApiError> {
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

pub async fn replay_rejected<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let rejected = find_rejected(&state.store, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !caller.sees(&rejected.charter) {
        return Err(ApiError::NotFound);
    }
    let cr = state
        .runtime
        .charters
        .get(&rejected.charter)
        .ok_or_else(|| ApiError::Conflict("the payload's charter is no longer defined".into()))?;
    let payload = parse_body(&rejected.headers, rejected.body.as_bytes()).map_err(|reason| {
        ApiError::Contract {
            event_id: Some(id.to_string()),
            violations: vec![reason],
        }
    })?;
    if let Some(contract) = &cr.contract {
        let violations = crate::ingest::contract_violations(contract, &payload);
        if !violations.is_empty() {
            return Err(ApiError::Contract {
                event_id: Some(id.to_string()),
                violations,
            });
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
    let response = store_event(&state, event, None).await?;
    state.store.delete_rejected(id).await?;
    tracing::info!(caller = %caller.name, rejected = %id, "rejected payload replayed");
    Ok(response)
}
