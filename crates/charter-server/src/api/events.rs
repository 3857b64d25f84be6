//! Event routes: show, timeline, replay, rerun, reroute, bulk replay, in-doubt actions and
//! the replay of a rejected payload.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use charter_store::Store;
use serde::Deserialize;
use serde_json::Value;

use super::{ADMIN, ApiRoute, REVIEWER, VIEWER, optional_body, reply, route};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops;
use crate::ops::events::{InDoubtQuery, ReplaySelection};

/// The event routes of the table.
pub(super) fn routes<S: Store>() -> Vec<ApiRoute<S>> {
    vec![
        route(
            Method::GET,
            "/api/v1/in-doubt",
            VIEWER,
            get(list_in_doubt::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/events/{id}",
            VIEWER,
            get(show_event::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/events/{id}/timeline",
            VIEWER,
            get(timeline::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/events/{id}/replay",
            ADMIN,
            post(replay_event::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/events/{id}/rerun",
            ADMIN,
            post(rerun_event::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/events/{id}/reroute",
            REVIEWER,
            post(reroute::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/replay",
            ADMIN,
            post(replay_failed::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/rejected/{id}/replay",
            ADMIN,
            post(replay_rejected::<S>),
        ),
    ]
}

/// `GET /api/v1/in-doubt`: actions left in doubt by interrupted runs (intent recorded,
/// outcome unknown), newest first; a scoped token sees only its charters'.
pub async fn list_in_doubt<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<InDoubtQuery>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::events::in_doubt(&state, &caller, q).await?)
}

/// `GET /api/v1/events/{id}`: the event and its runs.
pub async fn show_event<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::events::show(&state, &caller, &id).await?)
}

/// `GET /api/v1/events/{id}/timeline` (viewer): see [`crate::timeline::timeline_data`].
pub async fn timeline<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = uuid::Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    reply(crate::timeline::timeline_data(&state, id, |c| caller.sees(c)).await?)
}

/// `POST /api/v1/events/{id}/replay` (admin).
pub async fn replay_event<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::events::replay(&state, &caller, &id).await?)
}

/// `POST /api/v1/events/{id}/rerun` (admin): see [`ops::events::rerun`].
pub async fn rerun_event<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::events::rerun(&state, &caller, &id).await?)
}

/// Body of `POST /api/v1/replay` (see [`ReplaySelection`]).
pub async fn replay_failed<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Json(body): Json<ReplaySelection>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::events::replay_many(&state, &caller, body).await?)
}

/// Optional body of `POST /api/v1/events/{id}/reroute`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RerouteBody {
    /// Why, for the human who picks it up.
    note: Option<String>,
}

/// `POST /api/v1/events/{id}/reroute` (reviewer or admin), optional `{"note": "..."}`: take
/// the event out of automatic processing and hand it to a human (an escalation with reason
/// `rerouted`). 409 while the event is being processed.
pub async fn reroute<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let note = optional_body::<RerouteBody>(&body, "expected {\"note\": \"...\"}").map(|b| b.note);
    reply(ops::events::reroute(&state, &caller, &id, note).await?)
}

/// `POST /api/v1/rejected/{id}/replay` (admin): the payload is stored as an event when it
/// passes the contract now (202, or 200 for a duplicate, with the webhook's
/// acknowledgement), 422 with what is still wrong otherwise.
pub async fn replay_rejected<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let done = ops::rejected::replay(&state, &caller, &id).await?;
    let code = if done.status == "duplicate" {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(done)).into_response())
}
