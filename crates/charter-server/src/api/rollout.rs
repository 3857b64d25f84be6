//! Rollout routes: routes and their modes, samples and reviews, rewrites.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::routing::{get, post};
use charter_store::Store;
use serde_json::Value;

use super::{ADMIN, ApiRoute, REVIEWER, VIEWER, body, reply, route};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops;
use crate::ops::rollout::SamplesQuery;
use crate::rollout::{ReviewBody, RewritesQuery, RouteModeBody};

/// The rollout routes of the table.
pub(super) fn routes<S: Store>() -> Vec<ApiRoute<S>> {
    vec![
        route(
            Method::GET,
            "/api/v1/charters/{name}/routes",
            VIEWER,
            get(list_routes::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/charters/{name}/routes/{route}/mode",
            ADMIN,
            post(set_route_mode::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/samples",
            VIEWER,
            get(list_samples::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/samples/{id}",
            VIEWER,
            get(show_sample::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/samples/{id}/review",
            REVIEWER,
            post(review::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/rewrites",
            VIEWER,
            get(list_rewrites::<S>),
        ),
    ]
}

/// `GET /api/v1/charters/{name}/routes` (viewer): every route's mode, sampling, agreement
/// and promotion state.
pub async fn list_routes<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::rollout::routes(&state, &caller, &name).await?)
}

/// `POST /api/v1/charters/{name}/routes/{route}/mode` with `{"mode": "shadow" | "approve" |
/// "live" | "file", "reason": "..."}` (admin).
pub async fn set_route_mode<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path((name, route)): Path<(String, String)>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let change = body::<RouteModeBody>(
        &bytes,
        "expected {\"mode\": \"shadow\" | \"approve\" | \"live\" | \"file\"}",
    );
    reply(ops::rollout::set_route_mode(&state, &caller, (&name, &route), change).await?)
}

/// `GET /api/v1/samples?charter=&route=&status=pending|reviewed|all` (viewer).
pub async fn list_samples<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<SamplesQuery>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::rollout::samples(&state, &caller, q).await?)
}

/// `GET /api/v1/samples/{id}` (viewer): the sample with the run it points at.
pub async fn show_sample<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::rollout::sample(&state, &caller, &id).await?)
}

/// `POST /api/v1/samples/{id}/review` (reviewer): `{"decision_right": bool, "right_label":
/// "...", "actions": {"name": bool}, "note": "..."}`. 409 when it was reviewed already.
pub async fn review<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let review: ReviewBody = body(&bytes, "invalid body")?;
    reply(ops::rollout::review(&state, &caller, &id, Ok(review)).await?)
}

/// `GET /api/v1/rewrites?charter=&since=&limit=` (viewer): rewrite totals per charter, route
/// and action, and the edited pairs (draft, approved).
pub async fn list_rewrites<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<RewritesQuery>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::rollout::rewrites(&state, &caller, q).await?)
}
