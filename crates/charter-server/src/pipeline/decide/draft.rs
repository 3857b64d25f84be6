//! Drafts for actions (`draft:`): the text a provider writes for an action's templates,
//! reused by a re-run of the same event, checked against its citation policy, and kept with
//! the run as a run extra.

use std::time::Duration;

use charter_core::config::{Charter, DraftSpec, Stage};
use charter_core::model::EscalationReason;
use charter_decide::llm::{Draft, DraftRequest, Limits, LlmFailure};
use charter_store::{EXTRA_DRAFT, RunExtra, Store};
use serde_json::{Value, json};

use crate::knowledge::cite::{self, Checked, CiteRun};
use crate::llm::{count_llm_usage, limits};
use crate::now_millis;
use crate::text::decision_text;

/// The limits a draft runs under: those of the charter's first `llm` stage (the counters
/// are per charter), or none.
fn draft_limits(charter: &Charter) -> Limits {
    charter
        .decide
        .as_ref()
        .and_then(|d| {
            d.stages.iter().find_map(|s| match s {
                Stage::Llm(l) => Some(limits(l)),
                _ => None,
            })
        })
        .unwrap_or_default()
}

/// Why an action's draft could not be written.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftError {
    /// The run's message.
    pub message: String,
    /// The charter's LLM budget or rate limit refused the draft: under `on_exhausted:
    /// escalate` (or a window beyond `max_wait`) the event escalates with this reason
    /// instead of the run failing.
    pub escalate: Option<EscalationReason>,
    /// Under `on_exhausted: wait`: how long until the limit's next window; the event is
    /// tried again then (the worker slot is freed meanwhile).
    pub wait: Option<Duration>,
}

impl DraftError {
    fn failed(message: String) -> DraftError {
        DraftError {
            message,
            escalate: None,
            wait: None,
        }
    }
}

/// The draft of action `run.action` for this event: the one an earlier run of the event
/// wrote (so a re-run after an approval renders the same parameters the reviewer saw), else
/// a new one from the provider. Either way it is recorded with this run.
pub async fn draft_for_action<S: Store>(
    run: &CiteRun<'_, S>,
    spec: &DraftSpec,
    ctx: &Value,
) -> Result<String, DraftError> {
    if let Some(text) = reuse_earlier(run).await? {
        return Ok(text);
    }
    let (draft, citations) = write_new(run, spec, ctx).await?;
    record_draft(
        run,
        json!({
            "text": draft.text,
            "provider": draft.provider,
            "model": draft.model,
            "prompt": spec.prompt,
            "usage": draft.usage,
            "citations": citations,
        }),
    )
    .await?;
    Ok(draft.text)
}

/// The text of the draft an earlier run of the event wrote for the action, recorded again
/// with this run (marked `reused_from_run`) when it came from another run.
async fn reuse_earlier<S: Store>(run: &CiteRun<'_, S>) -> Result<Option<String>, DraftError> {
    let action = run.action;
    let earlier = run
        .state
        .store
        .latest_run_extra(run.event.id, EXTRA_DRAFT, action)
        .await
        .map_err(|e| {
            DraftError::failed(format!(
                "action `{action}`: reading an earlier draft failed: {e}"
            ))
        })?;
    let Some(prev) = earlier else {
        return Ok(None);
    };
    let Some(text) = prev.body["text"].as_str() else {
        return Ok(None);
    };
    let text = text.to_string();
    if prev.run_id != run.run_id {
        let mut body = prev.body.clone();
        body["reused_from_run"] = json!(prev.run_id);
        record_draft(run, body).await?;
    }
    Ok(Some(text))
}

/// Keep a draft with the run (a run extra named after the action).
async fn record_draft<S: Store>(run: &CiteRun<'_, S>, body: Value) -> Result<(), DraftError> {
    let action = run.action;
    run.state
        .store
        .record_run_extra(&RunExtra {
            run_id: run.run_id,
            event_id: run.event.id,
            kind: EXTRA_DRAFT.into(),
            name: action.into(),
            body,
            at: now_millis(),
        })
        .await
        .map_err(|e| {
            DraftError::failed(format!(
                "action `{action}`: recording the draft failed: {e}"
            ))
        })
}

/// Ask the provider (then its fallbacks) for a new draft; a draft written from retrieved
/// passages must cite them (one repair, then escalation). Returns the draft and its
/// citation record (`null` without a policy).
async fn write_new<S: Store>(
    run: &CiteRun<'_, S>,
    spec: &DraftSpec,
    ctx: &Value,
) -> Result<(Draft, Value), DraftError> {
    let charter = run.charter;
    let llm = &run.state.llm;
    let mut providers = vec![spec.provider.clone()];
    providers.extend(spec.fallback.iter().cloned());
    let usable: Vec<String> = providers
        .iter()
        .filter(|p| !llm.unavailable.contains_key(*p))
        .cloned()
        .collect();
    let limits = draft_limits(charter);
    let text = decision_text(charter, run.event, ctx);
    let req = DraftRequest {
        charter: &charter.name,
        providers: &usable,
        prompt: &spec.template,
        text: &text,
        context: ctx,
        redact: &spec.redact,
        limits: &limits,
        repair: None,
    };
    let count = |r: &Result<Draft, LlmFailure>| match r {
        Ok(d) => count_llm_usage(&charter.name, &d.provider, true, &d.usage),
        Err(f) => count_llm_usage(&charter.name, &spec.provider, false, &f.usage),
    };
    let first = llm.engine.draft(&req).await;
    count(&first);
    let (result, citations) = match (&spec.cite, first) {
        (Some(policy), Ok(first)) => {
            match cite::check(run, policy, ctx, &llm.engine, &req, first, count).await {
                Checked::Accepted(d, record) => (Ok(*d), record),
                Checked::Failed(f) => (Err(f), Value::Null),
                Checked::Refused(message) => {
                    return Err(DraftError {
                        message,
                        escalate: Some(cite::REFUSED),
                        wait: None,
                    });
                }
            }
        }
        (_, first) => (first, Value::Null),
    };
    match result {
        Ok(d) => Ok((d, citations)),
        Err(f) => Err(refused(run, &providers, f)),
    }
}

/// The run's error for a draft the providers could not write. The charter's own budget or
/// rate limit applies its `on_exhausted` (wait until the next window, or escalate).
fn refused<S>(run: &CiteRun<'_, S>, providers: &[String], f: LlmFailure) -> DraftError {
    let unavailable: Vec<&str> = providers
        .iter()
        .filter_map(|p| run.state.llm.unavailable.get(p).map(String::as_str))
        .collect();
    let mut reason = f.reason;
    if !unavailable.is_empty() {
        reason.push_str(&format!(" ({})", unavailable.join("; ")));
    }
    let wait = if f.limited { f.retry_after } else { None };
    let escalate = f.limited && wait.is_none();
    DraftError {
        message: format!(
            "action `{}`: the draft could not be written: {reason}; {}",
            run.action, f.usage
        ),
        escalate: escalate.then_some(f.kind),
        wait,
    }
}
