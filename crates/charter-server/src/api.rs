//! The admin API under `/api/v1` (JSON), used by the CLI.
//!
//! Auth: when `charter.yaml` defines tokens, every request needs `Authorization: Bearer
//! <token>`; viewers may read, reviewers may also decide approvals and escalations and
//! reroute events to the manual queue, admins may also pause, resume, replay and change a
//! charter's mode (promote). A token scoped to some charters sees only those
//! (another charter's event, approval or escalation answers 404). An approval that names
//! `reviewers` can be decided only by a token of one of those names, or by an admin. With no
//! tokens defined the API is open, which is meant for local use only (the server warns when
//! it listens beyond loopback without tokens).
//!
//! Every decision, pause/resume, mode change, reroute and replay is appended to the audit
//! log with the caller's token name (`local` when the API is open).
//!
//! Every route lives in [`routes`], the one table the router is built from and the OpenAPI
//! document (`GET /api/v1/openapi.json`, [`crate::openapi`]) is checked against.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use charter_core::config::Role;
use charter_core::idempotency::idempotency_key;
use charter_core::model::{EventStatus, NewEvent};
use charter_core::routing::eval_context;
use charter_store::{
    ApprovalRecord, ApprovalStatus, EscalationFilter, EscalationRecord, EscalationStatus,
    HumanDecision, InDoubtFilter, IngestOutcome, NewAuditEntry, Requeue, Store, Verdict,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::ApiError;
use crate::{AppState, now_millis};

/// Who is calling, after the token check.
pub struct Caller {
    pub name: String,
    pub role: Role,
    /// Charters visible to this caller; empty = all.
    pub charters: Vec<String>,
    /// The reviewer name this caller decides as when it differs from `name`: a Slack user
    /// (`name` `slack:U024BE7LH`) mapped to a token decides as that token's name.
    pub reviewer_as: Option<String>,
}

impl Caller {
    pub fn sees(&self, charter: &str) -> bool {
        self.charters.is_empty() || self.charters.iter().any(|c| c == charter)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    diff == 0
}

/// Check the bearer token and the role it needs.
pub fn authorize<S: Store>(
    state: &AppState<S>,
    headers: &HeaderMap,
    need: Role,
) -> Result<Caller, ApiError> {
    let tokens = &state.runtime.tokens;
    if tokens.is_empty() {
        return Ok(Caller {
            name: "local".into(),
            role: Role::Admin,
            charters: vec![],
            reviewer_as: None,
        });
    }
    let presented = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials)
        .ok_or(ApiError::Unauthorized)?;
    let mut found = None;
    for (def, secret) in tokens {
        if constant_time_eq(presented.as_bytes(), secret.as_bytes()) {
            found = Some(def);
        }
    }
    let def = found.ok_or(ApiError::Unauthorized)?;
    if def.role < need {
        return Err(ApiError::Forbidden);
    }
    Ok(Caller {
        name: def.name.clone(),
        role: def.role,
        charters: def.charters.clone(),
        reviewer_as: None,
    })
}

/// The credentials of an `Authorization: Bearer <token>` value. The scheme is matched
/// without regard to case (RFC 9110, section 11.1) and surrounding blanks are ignored.
pub fn bearer_credentials(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, rest) = value.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start();
    (!token.is_empty()).then_some(token)
}

/// A listing's `limit` query parameter: 100 when absent, at most 10,000.
fn listing_limit(limit: Option<usize>) -> usize {
    limit.unwrap_or(100).min(10_000)
}

#[derive(Debug, Deserialize)]
pub struct InDoubtQuery {
    pub charter: Option<String>,
    /// Only actions whose key has not succeeded since.
    #[serde(default)]
    pub unsettled: bool,
    pub limit: Option<usize>,
}

/// `GET /api/v1/in-doubt`: actions left in doubt by interrupted runs (intent recorded,
/// outcome unknown), newest first; a scoped token sees only its charters'.
pub async fn list_in_doubt<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(q): Query<InDoubtQuery>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    if let Some(c) = &q.charter
        && !caller.sees(c)
    {
        return Ok(Json(json!({"in_doubt": []})));
    }
    let items = state
        .store
        .list_in_doubt(InDoubtFilter {
            charter: q.charter,
            unsettled: q.unsettled,
            limit: listing_limit(q.limit),
        })
        .await?;
    let items: Vec<_> = items
        .into_iter()
        .filter(|a| caller.sees(&a.charter))
        .collect();
    Ok(Json(json!({ "in_doubt": items })))
}

pub async fn show_event<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let event = state.store.get_event(id).await?.ok_or(ApiError::NotFound)?;
    if !caller.sees(&event.event.charter) {
        return Err(ApiError::NotFound);
    }
    let runs = state.store.runs_for_event(id).await?;
    Ok(Json(json!({ "event": event, "runs": runs })))
}

pub async fn replay_event<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let event = state.store.get_event(id).await?.ok_or(ApiError::NotFound)?;
    if !caller.sees(&event.event.charter) {
        return Err(ApiError::NotFound);
    }
    if event.status == EventStatus::Processing {
        return Err(ApiError::Conflict(
            "the event is being processed right now; replay it when the run ends".into(),
        ));
    }
    let ids = state
        .store
        .requeue(Requeue::Event(id), now_millis())
        .await?;
    state.wake.notify_one();
    audit(
        &state,
        &caller.name,
        "event.replay",
        Some(&event.event.charter),
        Some(id.to_string()),
        json!({ "requeued": ids }),
    )
    .await?;
    tracing::info!(caller = %caller.name, event = %id, "replay requested");
    Ok(Json(json!({ "requeued": ids })))
}

/// `POST /api/v1/events/{id}/rerun`: the operator asks for the effects again. A copy of the
/// event is stored as a new event (new id, so new idempotency keys; no dedupe key) and runs
/// from the start: its actions execute again, downstream included. The original keeps its
/// record. A copy of an agent's tool call stays a tool call (same source, same action).
pub async fn rerun_event<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let original = state.store.get_event(id).await?.ok_or(ApiError::NotFound)?;
    if !caller.sees(&original.event.charter) {
        return Err(ApiError::NotFound);
    }
    if !state.runtime.charters.contains_key(&original.event.charter) {
        return Err(ApiError::Conflict(
            "the event's charter is no longer defined".into(),
        ));
    }
    let source = if crate::mcp::requested_action(&original.event).is_some() {
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
    let new_id = match crate::ingest::accept(&state, copy, None).await? {
        IngestOutcome::Stored(new_id) => new_id,
        // No dedupe key and a fresh id: only a UUID collision could land here.
        IngestOutcome::Duplicate(_) => {
            return Err(ApiError::Internal(
                "the copy was taken for a duplicate".into(),
            ));
        }
    };
    audit(
        &state,
        &caller.name,
        "event.rerun",
        Some(&original.event.charter),
        Some(id.to_string()),
        json!({ "event_id": new_id }),
    )
    .await?;
    tracing::info!(caller = %caller.name, event = %id, copy = %new_id, "rerun requested: the event's actions will execute again");
    Ok(Json(json!({ "event_id": new_id, "rerun_of": id })))
}

/// Body of `POST /api/v1/replay`: without `since`/`until`, every failed event (of `charter`,
/// or of all charters); with either, every event received in `[since, until)` (Unix ms),
/// whatever its status, except those being processed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayFailed {
    pub charter: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

pub async fn replay_failed<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Json(body): Json<ReplayFailed>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    if !caller.charters.is_empty() && body.charter.is_none() {
        return Err(ApiError::Forbidden);
    }
    if let Some(c) = &body.charter
        && !caller.sees(c)
    {
        return Err(ApiError::NotFound);
    }
    let ranged = body.since.is_some() || body.until.is_some();
    if let (Some(a), Some(b)) = (body.since, body.until)
        && a >= b
    {
        return Err(ApiError::BadRequest(
            "`since` must be before `until` (Unix milliseconds)".into(),
        ));
    }
    let (selector, what) = if ranged {
        (
            Requeue::Received {
                charter: body.charter.clone(),
                since: body.since,
                until: body.until,
            },
            "events.replay_range",
        )
    } else {
        (
            Requeue::AllFailed {
                charter: body.charter.clone(),
            },
            "events.replay_failed",
        )
    };
    let ids = state.store.requeue(selector, now_millis()).await?;
    state.wake.notify_one();
    audit(
        &state,
        &caller.name,
        what,
        body.charter.as_deref(),
        None,
        json!({ "requeued": ids, "since": body.since, "until": body.until }),
    )
    .await?;
    tracing::info!(caller = %caller.name, count = ids.len(), "replay of failed events requested");
    Ok(Json(json!({ "requeued": ids })))
}

pub async fn list_charters<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let paused = state.store.paused().await?;
    let pending = state.store.pending_counts().await?;
    let modes = state.store.mode_overrides().await?;
    let mut out = Vec::new();
    for (name, cr) in &state.runtime.charters {
        if !caller.sees(name) {
            continue;
        }
        let c = &cr.charter;
        let mode = crate::operator::mode_json(c, modes.iter().find(|m| &m.charter == name));
        out.push(json!({
            "name": name,
            "description": c.description,
            "owner": c.owner,
            "maintainer": c.maintainer,
            "system_of_record": c.system_of_record,
            "mode": mode["mode"],
            "file_mode": mode["file_mode"],
            "mode_override": mode["override"],
            "paused": paused.iter().any(|p| p == name),
            "pending": pending.iter().find(|(n, _)| n == name).map(|(_, k)| *k).unwrap_or(0),
            "webhook": c.trigger.webhook.as_ref().map(|w| w.path.clone()),
            "version": c.version,
        }));
    }
    Ok(Json(json!({ "charters": out })))
}

async fn set_paused<S: Store>(
    state: AppState<S>,
    headers: HeaderMap,
    name: String,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    if !state.runtime.charters.contains_key(&name) || !caller.sees(&name) {
        return Err(ApiError::NotFound);
    }
    state.store.set_paused(&name, paused, now_millis()).await?;
    if !paused {
        state.wake.notify_one();
    }
    let what = if paused {
        "charter.pause"
    } else {
        "charter.resume"
    };
    audit(&state, &caller.name, what, Some(&name), None, json!({})).await?;
    tracing::info!(caller = %caller.name, charter = %name, paused, "charter pause state changed");
    Ok(Json(json!({ "charter": name, "paused": paused })))
}

pub async fn pause<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, headers, name, true).await
}

pub async fn resume<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, headers, name, false).await
}

// ---------------------------------------------------------------------------------------
// Audit log
// ---------------------------------------------------------------------------------------

/// Append one entry to the audit log (durable before the request is answered).
pub async fn audit<S: Store>(
    state: &AppState<S>,
    actor: &str,
    action: &str,
    charter: Option<&str>,
    target: Option<String>,
    mut detail: Value,
) -> Result<(), ApiError> {
    // The client's address (behind a trusted proxy, the one it forwarded) when a request
    // is being served.
    if let Some(ip) = crate::guard::current_client() {
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

// ---------------------------------------------------------------------------------------
// Approvals
// ---------------------------------------------------------------------------------------

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

/// `GET /api/v1/approvals/{id}`.
pub async fn show_approval<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let a = visible_approval(&state, &caller, &id).await?;
    // Where the approval was announced, and how each delivery went (retries, the last
    // error), so an operator can tell a reviewer who was never told from one who was.
    let notifications = state.store.list_notifications(Some(a.id), 100).await?;
    Ok(Json(
        json!({ "approval": a, "notifications": notifications }),
    ))
}

async fn visible_approval<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalRecord, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    let a = state
        .store
        .get_approval(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !caller.sees(&a.charter) {
        return Err(ApiError::NotFound);
    }
    Ok(a)
}

/// May this caller decide this approval? Admins always; others only when the approval names
/// no reviewers or names them.
fn may_decide(caller: &Caller, a: &ApprovalRecord) -> Result<(), ApiError> {
    if caller.role == Role::Admin
        || a.reviewers.is_empty()
        || a.reviewers.iter().any(|r| r == &caller.name)
        || a.reviewers
            .iter()
            .any(|r| Some(r) == caller.reviewer_as.as_ref())
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Why a decision did not take: the approval's state now.
/// Could `caller` decide approval `id` now? The checks a decision makes before it writes
/// (role, scope, reviewers, still pending and not expired), for a client that must ask the
/// reviewer something first (Slack's reason dialog). The decision checks again.
pub async fn check_decidable<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalRecord, ApiError> {
    let a = decidable_approval(state, caller, id).await?;
    match closed(&a, now_millis()) {
        Some(why) => Err(why),
        None => Ok(a),
    }
}

/// The approval `id`, if `caller` is a reviewer who sees it and may decide it.
async fn decidable_approval<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<ApprovalRecord, ApiError> {
    if caller.role < Role::Reviewer {
        return Err(ApiError::Forbidden);
    }
    let a = visible_approval(state, caller, id).await?;
    may_decide(caller, &a)?;
    Ok(a)
}

const EXPIRED: &str = "the approval has expired and can no longer be decided";

/// Why approval `a` can no longer be decided at `now`, if it cannot.
fn closed(a: &ApprovalRecord, now: i64) -> Option<ApiError> {
    if a.status != ApprovalStatus::Pending {
        Some(ApiError::Conflict(format!(
            "the approval is already {}",
            a.status.as_str()
        )))
    } else if a.expires_at.is_some_and(|at| at <= now) {
        Some(ApiError::Conflict(EXPIRED.into()))
    } else {
        None
    }
}

/// Why a decision of a visible approval changed nothing: it was decided meanwhile, or its
/// deadline passed.
async fn not_decided<S: Store>(state: &AppState<S>, id: Uuid) -> ApiError {
    match state.store.get_approval(id).await {
        Ok(Some(a)) => closed(&a, now_millis()).unwrap_or(ApiError::Conflict(EXPIRED.into())),
        Ok(None) => ApiError::NotFound,
        Err(e) => e.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApproveBody {
    /// The reviewer's edit of the parameters (only `json` of an HTTP action, or `log` of a
    /// log action, may differ from what was rendered).
    params: Option<Value>,
}

/// Check a reviewer's edit: same shape, and only the request body (`json`) or a log
/// message (`log`) changed. The connector, method, target and headers come from the
/// charter and are not the reviewer's to change.
fn check_edit(original: &Value, edited: &Value) -> Result<(), ApiError> {
    let (Some(o), Some(e)) = (original.as_object(), edited.as_object()) else {
        return Err(ApiError::BadRequest(
            "edited params must be a JSON object like the original".into(),
        ));
    };
    let mut keys: Vec<&String> = o.keys().chain(e.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if k == "json" || k == "log" {
            if o.contains_key(k) != e.contains_key(k) {
                return Err(ApiError::BadRequest(format!(
                    "edited params must keep `{k}` present or absent as rendered"
                )));
            }
            continue;
        }
        if o.get(k) != e.get(k) {
            return Err(ApiError::BadRequest(format!(
                "`{k}` cannot be edited; only `json` (the request body) or `log` may change"
            )));
        }
    }
    if let Some(v) = e.get("log")
        && !v.is_string()
    {
        return Err(ApiError::BadRequest("`log` must be a string".into()));
    }
    Ok(())
}

/// `POST /api/v1/approvals/{id}/approve`, optional body `{"params": <edited params>}`.
pub async fn approve<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    approve_as(state, &caller, &id, body).await
}

/// Approve as an authorized `caller`: the admin API's and UI's token, or a Slack user mapped
/// to one (`crate::notify::slack_interactive`). The one place an approval is granted.
pub async fn approve_as<S: Store>(
    state: AppState<S>,
    caller: &Caller,
    id: &str,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a = decidable_approval(&state, caller, id).await?;
    let body: ApproveBody = if body.iter().all(u8::is_ascii_whitespace) {
        ApproveBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?
    };
    let edited = match body.params {
        Some(p) if p != a.params => {
            check_edit(&a.params, &p)?;
            let hash = idempotency_key(a.event_id, &a.action, &p);
            Some((p, hash))
        }
        _ => None,
    };
    let decided = state
        .store
        .decide_approval(
            a.id,
            Verdict::Approve {
                edited: edited.clone(),
            },
            &caller.name,
            now_millis(),
        )
        .await?;
    let Some(decided) = decided else {
        return Err(not_decided(&state, a.id).await);
    };
    if let Some((p, hash)) = &edited {
        audit(
            &state,
            &caller.name,
            "approval.edit",
            Some(&a.charter),
            Some(a.id.to_string()),
            json!({
                "event": a.event_id,
                "action": a.action,
                "params": a.params,
                "params_hash": a.params_hash,
                "edited_params": p,
                "edited_hash": hash,
            }),
        )
        .await?;
    }
    audit(
        &state,
        &caller.name,
        "approval.approve",
        Some(&a.charter),
        Some(a.id.to_string()),
        json!({
            "event": a.event_id,
            "action": a.action,
            "params_hash": decided.edited_hash.as_deref().unwrap_or(&a.params_hash),
            "edited": edited.is_some(),
        }),
    )
    .await?;
    crate::rollout::approved(&state, &decided, &caller.name).await;
    requeue_soon(&state, a.event_id);
    tracing::info!(caller = %caller.name, approval = %a.id, edited = edited.is_some(), "approved");
    Ok(Json(json!({ "approval": decided })))
}

#[derive(Debug, Deserialize)]
pub struct RejectBody {
    pub reason: String,
}

/// `POST /api/v1/approvals/{id}/reject` with `{"reason": "..."}`.
pub async fn reject<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    reject_as(state, &caller, &id, body).await
}

/// Reject as an authorized `caller` (see [`approve_as`]).
pub async fn reject_as<S: Store>(
    state: AppState<S>,
    caller: &Caller,
    id: &str,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let a = decidable_approval(&state, caller, id).await?;
    let body: RejectBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("expected {{\"reason\": \"...\"}}: {e}")))?;
    let reason = body.reason.trim().to_string();
    if reason.is_empty() {
        return Err(ApiError::BadRequest("a rejection needs a reason".into()));
    }
    let decided = state
        .store
        .decide_approval(
            a.id,
            Verdict::Reject {
                reason: reason.clone(),
            },
            &caller.name,
            now_millis(),
        )
        .await?;
    let Some(decided) = decided else {
        return Err(not_decided(&state, a.id).await);
    };
    audit(
        &state,
        &caller.name,
        "approval.reject",
        Some(&a.charter),
        Some(a.id.to_string()),
        json!({"event": a.event_id, "action": a.action, "reason": reason}),
    )
    .await?;
    requeue_soon(&state, a.event_id);
    tracing::info!(caller = %caller.name, approval = %a.id, "rejected");
    Ok(Json(json!({ "approval": decided })))
}

// ---------------------------------------------------------------------------------------
// Escalations
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub label: String,
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

/// `POST /api/v1/escalations/{id}/decide` with `{"label": "...", "fields": {...}}`: the run
/// continues with this decision (stage `human`).
pub async fn decide_escalation<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    decide_escalation_as(state, &caller, &id, body).await
}

/// One escalation, with the delivery state of each notification that announced it.
pub async fn show_escalation<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let e = visible_escalation(&state, &caller, &id).await?;
    let notifications = state.store.list_notifications(Some(e.id), 100).await?;
    Ok(Json(
        json!({ "escalation": e, "notifications": notifications }),
    ))
}

/// An escalation the caller may see; another charter's (or an unknown) id is not found.
pub(crate) async fn visible_escalation<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<EscalationRecord, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    let e = state
        .store
        .get_escalation(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !caller.sees(&e.charter) {
        return Err(ApiError::NotFound);
    }
    Ok(e)
}

/// Resolve an escalation as an authorized `caller` (see [`approve_as`]).
pub async fn decide_escalation_as<S: Store>(
    state: AppState<S>,
    caller: &Caller,
    id: &str,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    if caller.role < Role::Reviewer {
        return Err(ApiError::Forbidden);
    }
    let e = visible_escalation(&state, caller, id).await?;
    if e.reason == crate::dead_letters::DEAD_LETTER {
        return Err(crate::dead_letters::not_a_decision());
    }
    let body: DecideBody = serde_json::from_slice(&body).map_err(|err| {
        ApiError::BadRequest(format!(
            "expected {{\"label\": \"...\", \"fields\": {{}}}}: {err}"
        ))
    })?;
    if let Some(decide) = state
        .runtime
        .charters
        .get(&e.charter)
        .and_then(|cr| cr.charter.decide.as_ref())
    {
        if !decide.labels.iter().any(|l| l == &body.label) {
            return Err(ApiError::BadRequest(format!(
                "unknown label `{}`: expected one of {}",
                body.label,
                decide.labels.join(", ")
            )));
        }
        if let Some(k) = body
            .fields
            .keys()
            .find(|k| !decide.extract.contains_key(*k))
        {
            return Err(ApiError::BadRequest(format!(
                "field `{k}` is not declared in the charter's `extract`"
            )));
        }
    }
    let decision = HumanDecision {
        label: body.label,
        fields: body.fields,
    };
    let resolved = state
        .store
        .resolve_escalation(e.id, &decision, &caller.name, now_millis())
        .await?
        .ok_or_else(|| ApiError::Conflict("the escalation is already resolved".into()))?;
    audit(
        &state,
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
    requeue_soon(&state, e.event_id);
    tracing::info!(caller = %caller.name, escalation = %e.id, "escalation resolved");
    Ok(Json(json!({ "escalation": resolved })))
}

#[derive(Debug, Deserialize)]
pub struct CorrectionsQuery {
    pub charter: String,
    pub limit: Option<usize>,
}

/// `GET /api/v1/corrections?charter=`: human-decided cases of a charter as labelled examples
/// (`text` is the charter's trigger text rendered over the event, or the payload as JSON).
pub async fn list_corrections<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(q): Query<CorrectionsQuery>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let Some(cr) = state.runtime.charters.get(&q.charter) else {
        return Err(ApiError::NotFound);
    };
    if !caller.sees(&q.charter) {
        return Err(ApiError::NotFound);
    }
    let resolved = state
        .store
        .list_escalations(EscalationFilter {
            charter: Some(q.charter.clone()),
            status: Some(EscalationStatus::Resolved),
            // A dead letter is no model decision to correct (older stores may hold some
            // decided with a label): never a training example.
            not_reason: Some(crate::dead_letters::DEAD_LETTER.to_string()),
            limit: q.limit.unwrap_or(10_000).min(100_000),
            ..EscalationFilter::default()
        })
        .await?;
    let mut out = Vec::new();
    for e in resolved {
        let Some(decision) = &e.resolution else {
            continue;
        };
        let Some(ev) = state.store.get_event(e.event_id).await? else {
            continue;
        };
        let ctx = eval_context(&ev.event, None);
        let text = crate::worker::decision_text(&cr.charter, &ev.event, &ctx);
        out.push(json!({
            "event_id": e.event_id,
            "escalation_id": e.id,
            "text": text,
            "label": decision.label,
            "fields": decision.fields,
            "decided_by": e.resolved_by,
            "decided_at": e.resolved_at,
        }));
    }
    out.extend(
        crate::rollout::sample_corrections(
            &state,
            &cr.charter,
            q.limit.unwrap_or(10_000).min(100_000),
        )
        .await?,
    );
    Ok(Json(json!({ "corrections": out })))
}

// ---------------------------------------------------------------------------------------
// The route table
// ---------------------------------------------------------------------------------------

/// One admin API route: method, path (axum syntax, `{param}`) and handler.
pub struct ApiRoute<S> {
    pub method: axum::http::Method,
    pub path: &'static str,
    pub handler: axum::routing::MethodRouter<AppState<S>>,
}

/// Every `/api/v1` route, in one place: [`crate::router`] registers exactly these, and the
/// OpenAPI test compares them with the document's paths and methods.
pub fn routes<S: Store>() -> Vec<ApiRoute<S>> {
    use axum::http::Method;
    use axum::routing::{get, post};
    let r = |method: Method, path: &'static str, handler| ApiRoute {
        method,
        path,
        handler,
    };
    vec![
        r(
            Method::GET,
            "/api/v1/openapi.json",
            get(crate::openapi::serve),
        ),
        r(
            Method::GET,
            "/api/v1/events",
            get(crate::list_api::list_events::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/runs",
            get(crate::list_api::list_runs::<S>),
        ),
        r(Method::GET, "/api/v1/in-doubt", get(list_in_doubt::<S>)),
        r(Method::GET, "/api/v1/events/{id}", get(show_event::<S>)),
        r(
            Method::GET,
            "/api/v1/events/{id}/timeline",
            get(crate::operator::timeline::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/events/{id}/replay",
            post(replay_event::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/events/{id}/rerun",
            post(rerun_event::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/events/{id}/reroute",
            post(crate::operator::reroute::<S>),
        ),
        r(Method::POST, "/api/v1/replay", post(replay_failed::<S>)),
        r(Method::GET, "/api/v1/charters", get(list_charters::<S>)),
        r(
            Method::GET,
            "/api/v1/charters/{name}/report",
            get(crate::report::charter_report::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/charters/{name}/pause",
            post(pause::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/charters/{name}/resume",
            post(resume::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/charters/{name}/promote",
            post(crate::operator::promote::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/charters/{name}/mode",
            post(crate::operator::set_mode::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/rejected",
            get(crate::list_api::list_rejected::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/rejected/{id}/replay",
            post(crate::rejected::replay_rejected::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/approvals",
            get(crate::list_api::list_approvals::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/approvals/{id}",
            get(show_approval::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/approvals/{id}/approve",
            post(approve::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/approvals/{id}/reject",
            post(reject::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/escalations",
            get(crate::list_api::list_escalations::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/escalations/{id}",
            get(show_escalation::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/escalations/{id}/decide",
            post(decide_escalation::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/escalations/{id}/retry",
            post(crate::dead_letters::retry::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/escalations/{id}/dismiss",
            post(crate::dead_letters::dismiss::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/corrections",
            get(list_corrections::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/knowledge/sources",
            get(crate::knowledge::api::list_sources::<S>),
        ),
        r(
            Method::POST,
            "/api/v1/knowledge/sources/{name}/refresh",
            post(crate::knowledge::api::refresh::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/knowledge/gaps",
            get(crate::knowledge::api::list_gaps::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/knowledge/search",
            get(crate::knowledge::api::search::<S>),
        ),
        r(
            Method::GET,
            "/api/v1/audit",
            get(crate::list_api::list_audit::<S>),
        ),
    ]
    .into_iter()
    .chain(crate::rollout::api_routes())
    .collect()
}
