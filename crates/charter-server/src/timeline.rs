//! One event's timeline, everything recorded about it, as `GET /api/v1/events/{id}/timeline`
//! answers it and the UI's event page renders it (a read model; the caller's scope is a
//! parameter).

use std::collections::HashSet;

use charter_core::model::{EventRecord, RunRecord, UnixMillis};
use charter_store::{
    ApprovalFilter, ApprovalRecord, AuditEntry, AuditFilter, EXTRA_CONTEXT, EXTRA_DRAFT,
    EscalationFilter, EscalationRecord, RunExtra, Store,
};
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

/// Most audit entries and escalations read to assemble one event's timeline.
const TIMELINE_SCAN: usize = 10_000;

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
