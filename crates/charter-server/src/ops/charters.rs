//! Charters: the list with their state, pause and resume, the operator's mode (promote
//! shadow to live, set or drop the override), and a charter's human decisions as labelled
//! examples (corrections).

use std::sync::Arc;

use charter_core::config::{Charter, Mode, Role};
use charter_core::routing::eval_context;
use charter_store::{EscalationFilter, EscalationStatus, ModeOverride, Store};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{OpError, audit, require};
use crate::auth::Caller;
use crate::mode::{ModeView, effective_mode, parse_mode};
use crate::{AppState, now_millis};

/// A charter as the list shows it.
#[derive(Debug, Serialize)]
pub struct CharterSummary {
    pub description: String,
    pub file_mode: String,
    pub maintainer: String,
    pub mode: String,
    pub mode_override: Option<ModeOverride>,
    pub name: String,
    pub owner: String,
    pub paused: bool,
    pub pending: u64,
    pub system_of_record: String,
    pub version: String,
    pub webhook: Option<String>,
}

/// The charters the caller sees.
#[derive(Debug, Serialize)]
pub struct CharterList {
    pub charters: Vec<CharterSummary>,
}

/// A charter's pause state after a change.
#[derive(Debug, Serialize)]
pub struct PauseState {
    pub charter: String,
    pub paused: bool,
}

/// The charters `caller` sees, with mode, pause state and pending count.
pub async fn list<S: Store>(state: &AppState<S>, caller: &Caller) -> Result<CharterList, OpError> {
    let paused = state.store.paused().await?;
    let pending = state.store.pending_counts().await?;
    let modes = state.store.mode_overrides().await?;
    let mut charters = Vec::new();
    for (name, cr) in &state.runtime.charters {
        if !caller.sees(name) {
            continue;
        }
        let c = &cr.charter;
        let mode = ModeView::of(c, modes.iter().find(|m| &m.charter == name));
        charters.push(CharterSummary {
            description: c.description.clone(),
            file_mode: mode.file_mode,
            maintainer: c.maintainer.clone(),
            mode: mode.mode,
            mode_override: mode.applied,
            name: name.clone(),
            owner: c.owner.clone(),
            paused: paused.iter().any(|p| p == name),
            pending: pending
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, k)| *k)
                .unwrap_or(0),
            system_of_record: c.system_of_record.clone(),
            version: c.version.clone(),
            webhook: c.trigger.webhook.as_ref().map(|w| w.path.clone()),
        });
    }
    Ok(CharterList { charters })
}

/// The charter `name` if it exists and the caller sees it.
pub fn visible<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
) -> Result<Arc<Charter>, OpError> {
    match state.runtime.charters.get(name) {
        Some(cr) if caller.sees(name) => Ok(cr.charter.clone()),
        _ => Err(OpError::NotFound),
    }
}

/// Pause (`true`) or resume charter `name` (admin), audited as `charter.pause` or
/// `charter.resume`.
pub async fn set_paused<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
    paused: bool,
) -> Result<PauseState, OpError> {
    require(caller, Role::Admin)?;
    visible(state, caller, name)?;
    state.store.set_paused(name, paused, now_millis()).await?;
    if !paused {
        state.wake.notify_one();
    }
    let what = if paused {
        "charter.pause"
    } else {
        "charter.resume"
    };
    audit(state, &caller.name, what, Some(name), None, json!({})).await?;
    tracing::info!(caller = %caller.name, charter = %name, paused, "charter pause state changed");
    Ok(PauseState {
        charter: name.to_string(),
        paused,
    })
}

/// Promote charter `name` from shadow to live (admin). 409 when already live.
pub async fn promote<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
) -> Result<ModeView, OpError> {
    require(caller, Role::Admin)?;
    let charter = visible(state, caller, name)?;
    if effective_mode(&state.store, &charter).await? == Mode::Live {
        return Err(OpError::Conflict(format!("{name} is already live")));
    }
    change_mode(state, caller, &charter, Some(Mode::Live)).await
}

/// What an admin asks a charter's mode to be.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeChange {
    /// `shadow`, `live`, or `file` (drop the override: the charter file's mode applies).
    pub mode: String,
}

/// Set charter `name`'s mode (admin); `change` is read as input and reported after the
/// charter is found.
pub async fn set_mode<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
    change: Result<ModeChange, OpError>,
) -> Result<ModeView, OpError> {
    require(caller, Role::Admin)?;
    let charter = visible(state, caller, name)?;
    let change = change?;
    let target = match change.mode.as_str() {
        "file" => None,
        m => Some(parse_mode(m).ok_or_else(|| {
            OpError::Invalid(format!("unknown mode `{m}`: expected shadow, live or file"))
        })?),
    };
    change_mode(state, caller, &charter, target).await
}

/// Set a charter's mode (`None`: drop the override), audited as `charter.mode`.
async fn change_mode<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    charter: &Charter,
    target: Option<Mode>,
) -> Result<ModeView, OpError> {
    let file = charter.mode;
    let before = effective_mode(&state.store, charter).await?;
    let now = now_millis();
    match target {
        Some(m) if m != file => {
            let stored = ModeOverride {
                charter: charter.name.clone(),
                mode: m.as_str().to_string(),
                base: file.as_str().to_string(),
                by: caller.name.clone(),
                at: now,
            };
            state.store.set_mode(stored).await?;
        }
        _ => {
            state.store.clear_mode(&charter.name, now).await?;
        }
    }
    let after = effective_mode(&state.store, charter).await?;
    let detail = json!({
        "from": before.as_str(),
        "to": after.as_str(),
        "file_mode": file.as_str(),
    });
    audit(
        state,
        &caller.name,
        "charter.mode",
        Some(&charter.name),
        None,
        detail,
    )
    .await?;
    state.wake.notify_one();
    tracing::info!(caller = %caller.name, charter = %charter.name, from = before.as_str(), to = after.as_str(), "charter mode changed");
    let stored = state.store.mode_override(&charter.name).await?;
    Ok(ModeView::of(charter, stored.as_ref()))
}

/// Which corrections to list.
#[derive(Debug, Deserialize)]
pub struct CorrectionsQuery {
    pub charter: String,
    pub limit: Option<usize>,
}

/// A human-decided case as a labelled example.
#[derive(Debug, Serialize)]
pub struct Correction {
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub escalation_id: Uuid,
    pub event_id: Uuid,
    pub fields: Value,
    pub label: String,
    pub text: String,
}

/// The corrections of a charter: escalations and reviewed samples.
#[derive(Debug, Serialize)]
pub struct Corrections {
    pub corrections: Vec<Value>,
}

/// Human-decided cases of a charter as labelled examples (`text` is the charter's trigger
/// text rendered over the event, or the payload as JSON), then reviewed samples.
pub async fn corrections<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    q: CorrectionsQuery,
) -> Result<Corrections, OpError> {
    let Some(cr) = state.runtime.charters.get(&q.charter) else {
        return Err(OpError::NotFound);
    };
    if !caller.sees(&q.charter) {
        return Err(OpError::NotFound);
    }
    let limit = q.limit.unwrap_or(10_000).min(100_000);
    let resolved = state
        .store
        .list_escalations(EscalationFilter {
            charter: Some(q.charter.clone()),
            status: Some(EscalationStatus::Resolved),
            // A dead letter is no model decision to correct (older stores may hold some
            // decided with a label): never a training example.
            not_reason: Some(super::dead_letters::DEAD_LETTER.to_string()),
            limit,
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
        let c = Correction {
            decided_at: e.resolved_at,
            decided_by: e.resolved_by.clone(),
            escalation_id: e.id,
            event_id: e.event_id,
            fields: json!(decision.fields),
            label: decision.label.clone(),
            text: crate::text::decision_text(&cr.charter, &ev.event, &ctx),
        };
        out.push(serde_json::to_value(c).map_err(|e| OpError::Internal(e.to_string()))?);
    }
    out.extend(crate::rollout::sample_corrections(state, &cr.charter, limit).await?);
    Ok(Corrections { corrections: out })
}

/// The report of charter `name` over `params.since` (default 7 days) as the API returns it
/// (see [`crate::report::build`]).
pub async fn report<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
    params: crate::report::ReportParams,
) -> Result<Value, OpError> {
    use crate::report::{DEFAULT_BUCKETS, DEFAULT_SINCE};
    if !caller.sees(name) {
        return Err(OpError::NotFound);
    }
    let since = charter_core::config::validate::parse_duration(
        params.since.as_deref().unwrap_or(DEFAULT_SINCE),
    )
    .map_err(OpError::Invalid)?;
    let buckets = params.buckets.unwrap_or(DEFAULT_BUCKETS);
    Ok(crate::report::build(state, name, since, buckets).await?)
}
