//! Operator controls of the admin API beyond pause/resume: a charter's mode (promote shadow
//! to live, demote live to shadow), rerouting an event to the manual queue, and the run
//! timeline of an event.
//!
//! **Mode.** The `mode:` in a charter file is the default. An admin may override it
//! (`POST /api/v1/charters/{name}/promote` or `.../mode`); the override is stored in the
//! charter state table together with the mode the file declared at that moment, and the
//! worker reads it at the start of every run, so a promoted charter executes actions from
//! its next run on. If someone later edits `mode:` in the file, that edit is the newer
//! decision and wins: the stored override applies only while the file still declares the
//! mode it was set over (see [`charter_store::effective_mode`]). Setting the mode back to
//! the file's value (or `"file"`) removes the override.
//!
//! **Reroute.** A reviewer or admin can take an event out of automatic processing: it is set
//! to `waiting` (no worker claims it) and an escalation with reason `rerouted` is opened for
//! the charter's escalation target. When a human decides that escalation, the event runs
//! again with the human's label in place of the decision cascade, like any escalation.
//! Approvals still pending for the event are closed (rejected, reason `rerouted by <who>`)
//! through the store's atomic decision, so a reviewer approving at the same moment either
//! wins before the reroute or gets 409; a closed approval never executes, the human's
//! decision of the escalation decides the run.

use std::collections::HashSet;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use charter_core::config::{Charter, Mode, Role};
use charter_core::model::{EventRecord, EventStatus, RunRecord, UnixMillis};
use charter_store::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, AuditEntry, AuditFilter, EXTRA_CONTEXT,
    EXTRA_DRAFT, EscalationFilter, EscalationRecord, ModeOverride, NewEscalation, RunExtra, Store,
    StoreError, Verdict,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{Caller, audit, authorize};
use crate::error::ApiError;
use crate::{AppState, now_millis};

/// Escalation reason of an event rerouted to the manual queue.
pub const REROUTED: &str = "rerouted";

/// Most audit entries and escalations read to assemble one event's timeline.
const TIMELINE_SCAN: usize = 10_000;

fn parse_mode(s: &str) -> Option<Mode> {
    match s {
        "shadow" => Some(Mode::Shadow),
        "live" => Some(Mode::Live),
        _ => None,
    }
}

/// The mode `charter` runs in now: the stored operator override when it still applies,
/// else the file's `mode:`.
pub async fn effective_mode<S: Store>(store: &S, charter: &Charter) -> Result<Mode, StoreError> {
    let stored = store.mode_override(&charter.name).await?;
    Ok(mode_of(charter, stored.as_ref()))
}

/// The mode `charter` runs in given its stored override (`None`: there is none).
pub fn mode_of(charter: &Charter, stored: Option<&ModeOverride>) -> Mode {
    let file = charter.mode.as_str();
    parse_mode(charter_store::effective_mode(file, stored)).unwrap_or(charter.mode)
}

/// A charter's mode as the API shows it: the effective mode, the file's, and the override
/// (present only while it applies).
pub fn mode_json(charter: &Charter, stored: Option<&ModeOverride>) -> Value {
    let file = charter.mode.as_str();
    let applies = stored.filter(|o| o.base == file);
    json!({
        "charter": charter.name,
        "mode": charter_store::effective_mode(file, stored),
        "file_mode": file,
        "override": applies,
    })
}

/// The charter `name` if it exists and the caller sees it (404 otherwise).
fn visible_charter<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
) -> Result<std::sync::Arc<Charter>, ApiError> {
    match state.runtime.charters.get(name) {
        Some(cr) if caller.sees(name) => Ok(cr.charter.clone()),
        _ => Err(ApiError::NotFound),
    }
}

/// Set a charter's mode (`shadow`, `live`, or `file` to drop the override), audited as
/// `charter.mode`.
async fn change_mode<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    charter: &Charter,
    target: Option<Mode>,
) -> Result<Value, ApiError> {
    let file = charter.mode;
    let before = effective_mode(&state.store, charter).await?;
    let now = now_millis();
    match target {
        Some(m) if m != file => {
            state
                .store
                .set_mode(ModeOverride {
                    charter: charter.name.clone(),
                    mode: m.as_str().to_string(),
                    base: file.as_str().to_string(),
                    by: caller.name.clone(),
                    at: now,
                })
                .await?;
        }
        _ => {
            state.store.clear_mode(&charter.name, now).await?;
        }
    }
    let after = effective_mode(&state.store, charter).await?;
    audit(
        state,
        &caller.name,
        "charter.mode",
        Some(&charter.name),
        None,
        json!({
            "from": before.as_str(),
            "to": after.as_str(),
            "file_mode": file.as_str(),
        }),
    )
    .await?;
    state.wake.notify_one();
    tracing::info!(caller = %caller.name, charter = %charter.name, from = before.as_str(), to = after.as_str(), "charter mode changed");
    let stored = state.store.mode_override(&charter.name).await?;
    Ok(mode_json(charter, stored.as_ref()))
}

/// `POST /api/v1/charters/{name}/promote`: shadow -> live (admin). 409 when already live.
pub async fn promote<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    let charter = visible_charter(&state, &caller, &name)?;
    if effective_mode(&state.store, &charter).await? == Mode::Live {
        return Err(ApiError::Conflict(format!("{name} is already live")));
    }
    Ok(Json(
        change_mode(&state, &caller, &charter, Some(Mode::Live)).await?,
    ))
}

/// Body of `POST /api/v1/charters/{name}/mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeBody {
    /// `shadow`, `live`, or `file` (drop the override: the charter file's mode applies).
    pub mode: String,
}

/// `POST /api/v1/charters/{name}/mode` with `{"mode": "shadow" | "live" | "file"}` (admin).
pub async fn set_mode<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    let charter = visible_charter(&state, &caller, &name)?;
    let body: ModeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"mode\": \"shadow\" | \"live\" | \"file\"}}: {e}"
        ))
    })?;
    let target = match body.mode.as_str() {
        "file" => None,
        m => Some(parse_mode(m).ok_or_else(|| {
            ApiError::BadRequest(format!("unknown mode `{m}`: expected shadow, live or file"))
        })?),
    };
    Ok(Json(change_mode(&state, &caller, &charter, target).await?))
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
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let event = state.store.get_event(id).await?.ok_or(ApiError::NotFound)?;
    let charter = event.event.charter.clone();
    if !caller.sees(&charter) {
        return Err(ApiError::NotFound);
    }
    let body: RerouteBody = if body.iter().all(u8::is_ascii_whitespace) {
        RerouteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("expected {{\"note\": \"...\"}}: {e}")))?
    };
    let busy = || {
        ApiError::Conflict(
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
                "note": body.note,
                "previous_status": event.status.as_str(),
                "payload": event.event.payload,
                "decision": last.and_then(|r| r.decision.as_ref()),
            }),
            target,
            created_at: now,
        })
        .await?;
    let already_open = escalation.id != new_id;
    let closed = close_pending_approvals(&state, &caller.name, id, &charter, &message).await?;
    audit(
        &state,
        &caller.name,
        "event.reroute",
        Some(&charter),
        Some(id.to_string()),
        json!({
            "event": id,
            "escalation": escalation.id,
            "previous_status": event.status.as_str(),
            "note": body.note,
            "already_open": already_open,
            "closed_approvals": closed,
        }),
    )
    .await?;
    tracing::info!(caller = %caller.name, event = %id, escalation = %escalation.id, closed_approvals = closed.len(), "event rerouted to the manual queue");
    Ok(Json(json!({
        "event": id,
        "escalation": escalation,
        "already_open": already_open,
        "closed_approvals": closed,
    })))
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
) -> Result<Vec<Uuid>, ApiError> {
    let pending = state
        .store
        .list_approvals(ApprovalFilter {
            charter: Some(charter.to_string()),
            status: Some(ApprovalStatus::Pending),
            event_id: Some(event),
            limit: TIMELINE_SCAN,
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

/// Everything recorded about one event (see [`timeline_data`]); `GET /api/v1/events/{id}/timeline`
/// answers it as JSON and the UI's timeline page renders it.
#[derive(Debug, Serialize)]
pub struct Timeline {
    pub event: EventRecord,
    pub runs: Vec<TimelineRun>,
    pub approvals: Vec<ApprovalRecord>,
    pub escalations: Vec<EscalationRecord>,
    pub audit: Vec<AuditEntry>,
}

/// A run with the route rule it took and what it produced besides its decision and actions.
#[derive(Debug, Serialize)]
pub struct TimelineRun {
    #[serde(flatten)]
    pub run: RunRecord,
    /// The route that matched, as written in the charter (null when none matched or the
    /// charter no longer has it).
    pub route_rule: Option<RouteRule>,
    /// Drafts written for the run's actions, in the order they were recorded.
    pub drafts: Vec<DraftView>,
    /// Records fetched as context before deciding, in the order they were fetched.
    pub context: Vec<ContextView>,
}

/// A route of the charter, as the timeline shows the one a run took.
#[derive(Debug, Serialize)]
pub struct RouteRule {
    pub index: usize,
    pub when: String,
    pub actions: Vec<String>,
}

/// A draft written for an action (a [`RunExtra`] of kind [`EXTRA_DRAFT`]).
#[derive(Debug, Serialize)]
pub struct DraftView {
    pub action: String,
    pub at: UnixMillis,
    pub text: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub usage: DraftUsage,
    /// Set when the run reused the draft an earlier run of the event wrote.
    pub reused_from_run: Option<Uuid>,
}

/// What writing a draft cost.
#[derive(Debug, Default, Serialize)]
pub struct DraftUsage {
    pub calls: u64,
    /// HTTP attempts, failed ones and retries included.
    pub attempts: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The server reported no `usage`: the counts are estimates (characters / 4).
    pub tokens_estimated: bool,
    pub cost: f64,
    /// Wall time of the provider requests, failed attempts and backoff included.
    pub latency_ms: u64,
}

/// A context fetch (a [`RunExtra`] of kind [`EXTRA_CONTEXT`]): how it went, not the record.
#[derive(Debug, Serialize)]
pub struct ContextView {
    pub name: String,
    pub at: UnixMillis,
    pub connector: Option<String>,
    pub ok: bool,
    /// The HTTP status the connector answered, if it answered.
    pub status: Option<u64>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

impl DraftView {
    fn from_extra(x: &RunExtra) -> DraftView {
        let b = &x.body;
        let text = |k: &str| b[k].as_str().map(str::to_string);
        let u = &b["usage"];
        DraftView {
            action: x.name.clone(),
            at: x.at,
            text: text("text").unwrap_or_default(),
            provider: text("provider"),
            model: text("model"),
            usage: DraftUsage {
                calls: u["calls"].as_u64().unwrap_or(0),
                attempts: u["attempts"].as_u64().unwrap_or(0),
                prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
                tokens_estimated: u["tokens_estimated"].as_bool().unwrap_or(false),
                cost: u["cost"].as_f64().unwrap_or(0.0),
                latency_ms: u["latency_ms"].as_u64().unwrap_or(0),
            },
            reused_from_run: text("reused_from_run").and_then(|t| Uuid::parse_str(&t).ok()),
        }
    }
}

impl ContextView {
    fn from_extra(x: &RunExtra) -> ContextView {
        let b = &x.body;
        ContextView {
            name: x.name.clone(),
            at: x.at,
            connector: b["connector"].as_str().map(str::to_string),
            ok: b["ok"].as_bool().unwrap_or(false),
            status: b["status"].as_u64(),
            duration_ms: b["duration_ms"].as_u64(),
            error: b["error"].as_str().map(str::to_string),
        }
    }
}

/// Everything recorded about one event, oldest first within each list: the event, its runs
/// (decision with every stage, the route taken with its rule, actions with every attempt,
/// drafts and context fetches), its approvals and escalations, and the audit entries about
/// it or them. 404 when it does not exist or `caller_sees` hides its charter.
pub async fn timeline_data<S: Store>(
    state: &AppState<S>,
    id: Uuid,
    caller_sees: impl Fn(&str) -> bool,
) -> Result<Timeline, ApiError> {
    let store = &state.store;
    let ev = store.get_event(id).await?.ok_or(ApiError::NotFound)?;
    let charter = ev.event.charter.clone();
    if !caller_sees(&charter) {
        return Err(ApiError::NotFound);
    }
    let rules = state
        .runtime
        .charters
        .get(&charter)
        .map(|c| &c.charter.routes);
    let mut runs = Vec::new();
    for run in store.runs_for_event(id).await? {
        let route_rule = run
            .route
            .and_then(|i| rules.and_then(|r| r.get(i)).map(|r| (i, r)))
            .map(|(index, r)| RouteRule {
                index,
                when: r.when.source().to_string(),
                actions: r.actions.clone(),
            });
        let extras = store.run_extras(run.id).await?;
        let drafts = extras
            .iter()
            .filter(|x| x.kind == EXTRA_DRAFT)
            .map(DraftView::from_extra)
            .collect();
        let context = extras
            .iter()
            .filter(|x| x.kind == EXTRA_CONTEXT)
            .map(ContextView::from_extra)
            .collect();
        runs.push(TimelineRun {
            run,
            route_rule,
            drafts,
            context,
        });
    }
    let approvals = store
        .list_approvals(ApprovalFilter {
            charter: Some(charter.clone()),
            event_id: Some(id),
            limit: TIMELINE_SCAN,
            ..ApprovalFilter::default()
        })
        .await?;
    let escalations: Vec<_> = store
        .list_escalations(EscalationFilter {
            charter: Some(charter.clone()),
            event_id: Some(id),
            limit: TIMELINE_SCAN,
            ..EscalationFilter::default()
        })
        .await?;
    let mut targets: HashSet<String> = HashSet::new();
    targets.insert(id.to_string());
    targets.extend(approvals.iter().map(|a| a.id.to_string()));
    targets.extend(escalations.iter().map(|e| e.id.to_string()));
    let id_text = id.to_string();
    let mut audit: Vec<_> = store
        .list_audit(AuditFilter {
            charter: Some(charter.clone()),
            limit: TIMELINE_SCAN,
            ..AuditFilter::default()
        })
        .await?
        .into_iter()
        .filter(|a| {
            a.target.as_ref().is_some_and(|t| targets.contains(t))
                || a.detail["event"].as_str() == Some(id_text.as_str())
        })
        .collect();
    audit.reverse();
    Ok(Timeline {
        event: ev,
        runs,
        approvals,
        escalations,
        audit,
    })
}

/// `GET /api/v1/events/{id}/timeline` (viewer): see [`timeline_data`].
pub async fn timeline<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::NotFound)?;
    let t = timeline_data(&state, id, |c| caller.sees(c)).await?;
    Ok(Json(
        serde_json::to_value(&t).map_err(|e| ApiError::Internal(e.to_string()))?,
    ))
}
