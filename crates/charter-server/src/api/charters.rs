//! Charter routes: the list, pause and resume, the mode (promote, set), the report and
//! the corrections.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::routing::{get, post};
use charter_store::Store;
use serde_json::Value;

use super::{ADMIN, ApiRoute, VIEWER, body, reply, route};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops;
use crate::ops::charters::{CorrectionsQuery, ModeChange};
use crate::report::ReportParams;

/// The charter routes of the table.
pub(super) fn routes<S: Store>() -> Vec<ApiRoute<S>> {
    vec![
        route(
            Method::GET,
            "/api/v1/charters",
            VIEWER,
            get(list_charters::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/charters/{name}/report",
            VIEWER,
            get(charter_report::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/charters/{name}/pause",
            ADMIN,
            post(pause::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/charters/{name}/resume",
            ADMIN,
            post(resume::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/charters/{name}/promote",
            ADMIN,
            post(promote::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/charters/{name}/mode",
            ADMIN,
            post(set_mode::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/corrections",
            VIEWER,
            get(list_corrections::<S>),
        ),
    ]
}

/// `GET /api/v1/charters`.
pub async fn list_charters<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    reply(ops::charters::list(&state, &caller).await?)
}

/// `POST /api/v1/charters/{name}/pause` (admin).
pub async fn pause<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::charters::set_paused(&state, &caller, &name, true).await?)
}

/// `POST /api/v1/charters/{name}/resume` (admin).
pub async fn resume<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::charters::set_paused(&state, &caller, &name, false).await?)
}

/// `POST /api/v1/charters/{name}/promote`: shadow -> live (admin). 409 when already live.
pub async fn promote<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::charters::promote(&state, &caller, &name).await?)
}

/// `POST /api/v1/charters/{name}/mode` with `{"mode": "shadow" | "live" | "file"}` (admin).
pub async fn set_mode<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let change = body::<ModeChange>(
        &bytes,
        "expected {\"mode\": \"shadow\" | \"live\" | \"file\"}",
    );
    reply(ops::charters::set_mode(&state, &caller, &name, change).await?)
}

/// `GET /api/v1/charters/{name}/report?since=7d&buckets=14` (viewer role).
pub async fn charter_report<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<ReportParams>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        ops::charters::report(&state, &caller, &name, q).await?,
    ))
}

/// `GET /api/v1/corrections?charter=`: human-decided cases of a charter as labelled examples
/// (`text` is the charter's trigger text rendered over the event, or the payload as JSON).
pub async fn list_corrections<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<CorrectionsQuery>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::charters::corrections(&state, &caller, q).await?)
}
