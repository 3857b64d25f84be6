//! Decision routes: approvals (show, approve with an optional edit, reject) and escalations
//! (show, decide with a label; a dead letter's retry and dismiss).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::Method;
use axum::routing::{get, post};
use charter_store::Store;
use serde::Deserialize;
use serde_json::Value;

use super::{ApiRoute, REVIEWER, VIEWER, body, optional_body, reply, route};
use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::ops;
use crate::ops::escalations::Decision;

/// The decision routes of the table.
pub(super) fn routes<S: Store>() -> Vec<ApiRoute<S>> {
    vec![
        route(
            Method::GET,
            "/api/v1/approvals/{id}",
            VIEWER,
            get(show_approval::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/approvals/{id}/approve",
            REVIEWER,
            post(approve::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/approvals/{id}/reject",
            REVIEWER,
            post(reject::<S>),
        ),
        route(
            Method::GET,
            "/api/v1/escalations/{id}",
            VIEWER,
            get(show_escalation::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/escalations/{id}/decide",
            REVIEWER,
            post(decide_escalation::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/escalations/{id}/retry",
            REVIEWER,
            post(retry::<S>),
        ),
        route(
            Method::POST,
            "/api/v1/escalations/{id}/dismiss",
            REVIEWER,
            post(dismiss::<S>),
        ),
    ]
}

/// `GET /api/v1/approvals/{id}`.
pub async fn show_approval<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::approvals::show(&state, &caller, &id).await?)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// The reviewer's edit of the parameters (only `json` of an HTTP action, or `log` of a
    /// log action, may differ from what was rendered).
    params: Option<Value>,
}

/// `POST /api/v1/approvals/{id}/approve`, optional body `{"params": <edited params>}`.
pub async fn approve<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let edit = optional_body::<ApproveBody>(&bytes, "invalid body").map(|b| b.params);
    reply(ops::approvals::approve(&state, &caller, &id, edit).await?)
}

#[derive(Debug, Deserialize)]
pub struct RejectBody {
    pub reason: String,
}

/// `POST /api/v1/approvals/{id}/reject` with `{"reason": "..."}`.
pub async fn reject<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let reason = body::<RejectBody>(&bytes, "expected {\"reason\": \"...\"}").map(|b| b.reason);
    reply(ops::approvals::reject(&state, &caller, &id, reason).await?)
}

/// One escalation, with the delivery state of each notification that announced it.
pub async fn show_escalation<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::escalations::show(&state, &caller, &id).await?)
}

/// `POST /api/v1/escalations/{id}/decide` with `{"label": "...", "fields": {...}}`: the run
/// continues with this decision (stage `human`).
pub async fn decide_escalation<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let decision = body::<Decision>(&bytes, "expected {\"label\": \"...\", \"fields\": {}}");
    reply(ops::escalations::decide(&state, &caller, &id, decision).await?)
}

/// `POST /api/v1/escalations/{id}/retry`.
pub async fn retry<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    reply(ops::dead_letters::retry(&state, &caller, &id).await?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DismissBody {
    pub reason: String,
}

/// `POST /api/v1/escalations/{id}/dismiss` with `{"reason": "..."}`.
pub async fn dismiss<S: Store>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let b: DismissBody = body(&bytes, "expected {\"reason\": \"...\"}")?;
    reply(ops::dead_letters::dismiss(&state, &caller, &id, &b.reason).await?)
}
