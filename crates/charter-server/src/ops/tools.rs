//! Charters' actions as tools for agents (the MCP endpoint's operations): storing a call
//! as an event of the charter, and waiting for its run.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use charter_core::model::{EventStatus, NewEvent, RejectedPayload};
use charter_store::{IngestOutcome, Store};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{OpError, audit};
use crate::auth::Caller;
use crate::project::CharterRuntime;
pub use crate::text::requested_action;
use crate::text::{MCP_SOURCE_PREFIX as SOURCE_PREFIX, MCP_TYPE_PREFIX as TYPE_PREFIX};
use crate::{AppState, now_millis};

/// How long a tool call waits for its run before answering "still running".
const WAIT_FOR_RUN: Duration = Duration::from_secs(10);

/// A tool's name: `<charter>__<action>`.
pub fn tool_name(charter: &str, action: &str) -> String {
    format!("{charter}__{action}")
}

/// The charter and action of tool `name`, among the charters `caller` sees.
pub fn find_tool<'a, S>(
    state: &'a AppState<S>,
    caller: &Caller,
    name: &str,
) -> Option<(&'a CharterRuntime, String)> {
    state
        .runtime
        .charters
        .values()
        .filter(|cr| caller.sees(&cr.charter.name))
        .find_map(|cr| {
            cr.charter
                .actions
                .keys()
                .find(|a| tool_name(&cr.charter.name, a) == name)
                .map(|a| (cr, a.clone()))
        })
}

/// What a tool call did.
#[derive(Debug)]
pub enum Called {
    /// The arguments broke the charter's input contract: kept as rejected payload `id`.
    Rejected { id: Uuid, violations: Vec<String> },
    /// Stored as event `event_id` (`duplicate`: the same call was made before, this is its
    /// event).
    Stored { event_id: Uuid, duplicate: bool },
}

/// Store a call of `action` of charter `cr` with `args` (the event's payload) as `caller`,
/// through the charter's contract and dedupe template, audited as `mcp.call`.
/// [`OpError::Forbidden`] when the caller's role may not call tools.
pub async fn call<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    (cr, action): (&CharterRuntime, &str),
    tool: &str,
    args: Value,
) -> Result<Called, OpError> {
    if !caller.role.calls_tools() {
        return Err(OpError::Forbidden);
    }
    let charter = &cr.charter;
    let received_at = now_millis();
    let source = format!("{SOURCE_PREFIX}{}", caller.name);
    if let Some(contract) = &cr.contract {
        let violations = crate::ingest::contract_violations(contract, &args);
        if !violations.is_empty() {
            let kept = RejectedPayload {
                id: Uuid::now_v7(),
                charter: charter.name.clone(),
                source,
                received_at,
                headers: BTreeMap::new(),
                body: args.to_string(),
                reasons: violations.clone(),
            };
            let id = crate::ingest::keep_rejected(state, "contract", kept)
                .await
                .map_err(|e| OpError::Internal(format!("keeping the rejected arguments: {e}")))?;
            let detail = json!({"tool": tool, "action": action, "rejected": true});
            audit_call(state, caller, &charter.name, id, detail).await?;
            return Ok(Called::Rejected { id, violations });
        }
    }
    let mut event = NewEvent {
        id: Uuid::now_v7(),
        charter: charter.name.clone(),
        source,
        event_type: Some(format!("{TYPE_PREFIX}{action}")),
        dedupe_key: None,
        received_at,
        headers: BTreeMap::new(),
        payload: args,
    };
    // The charter's dedupe template, in the action's own key space.
    event.dedupe_key = crate::ingest::dedupe_key(charter, &event, None)
        .map_err(|e| OpError::Invalid(e.to_string()))?
        .map(|k| format!("{TYPE_PREFIX}{action}:{k}"));
    let (event_id, duplicate) = match crate::ingest::accept(state, event, None).await {
        Ok(IngestOutcome::Stored(id)) => (id, false),
        Ok(IngestOutcome::Duplicate(id)) => (id, true),
        Err(e) => return Err(OpError::Internal(format!("storing the call: {e}"))),
    };
    let detail = json!({"tool": tool, "action": action, "duplicate": duplicate});
    audit_call(state, caller, &charter.name, event_id, detail).await?;
    tracing::info!(caller = %caller.name, charter = %charter.name, %action, event = %event_id, duplicate, "MCP tool call");
    Ok(Called::Stored {
        event_id,
        duplicate,
    })
}

async fn audit_call<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    charter: &str,
    target: Uuid,
    detail: Value,
) -> Result<(), OpError> {
    audit(
        state,
        &caller.name,
        "mcp.call",
        Some(charter),
        Some(target.to_string()),
        detail,
    )
    .await
    .map_err(|e| OpError::Internal(format!("writing the audit entry: {e}")))
}

/// How a tool call's run went, as far as it got.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub event_id: Uuid,
    pub status: Option<&'static str>,
    /// Present once the event settled and has a run.
    #[serde(flatten)]
    pub run: Option<SettledRun>,
}

/// The latest run of a settled event.
#[derive(Debug, Serialize)]
pub struct SettledRun {
    pub run_id: Uuid,
    pub outcome: Value,
    pub error: Option<String>,
    pub actions: Vec<Value>,
}

/// The event's latest run once the event is no longer queued or running (bounded by
/// [`WAIT_FOR_RUN`]).
pub async fn wait_for_run<S: Store>(
    state: &AppState<S>,
    event_id: Uuid,
) -> Result<RunReport, OpError> {
    let started = Instant::now();
    let read = |e: charter_store::StoreError| OpError::Internal(format!("reading the run: {e}"));
    loop {
        let status = state
            .store
            .get_event(event_id)
            .await
            .map_err(read)?
            .map(|e| e.status);
        let settled = matches!(
            status,
            Some(EventStatus::Done | EventStatus::Failed | EventStatus::Waiting)
        );
        if settled || started.elapsed() >= WAIT_FOR_RUN {
            let runs = state.store.runs_for_event(event_id).await.map_err(read)?;
            let run = runs.last().filter(|_| settled).map(|run| SettledRun {
                run_id: run.id,
                outcome: json!(run.outcome),
                error: run.error.clone(),
                actions: run
                    .actions
                    .iter()
                    .map(|a| json!({"action": a.action, "status": a.status, "params": a.params}))
                    .collect(),
            });
            return Ok(RunReport {
                event_id,
                status: status.map(EventStatus::as_str),
                run,
            });
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
