//! Cited drafts: a draft written from retrieved passages (`draft.cite`) must cite them. A
//! refused draft gets one repair request (the refused text and the reason sent back); a
//! second refusal records a knowledge gap and escalates the event (`invalid_output`), the
//! path every other unusable model answer takes.

use charter_connect::HttpExecutor;
use charter_core::config::{Charter, CitePolicy};
use charter_core::model::{EscalationReason, NewEvent};
use charter_decide::llm::{Draft, DraftRequest, LlmEngine, LlmFailure};
use charter_store::{GapReason, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use super::gaps::{self, GapInput};
use super::retrieve::{check_draft, cited_sources, found_summary, repair_note, retrieved_passages};
use crate::AppState;

/// What became of a drafted text under a citation policy.
pub enum Checked {
    /// Accepted (perhaps after the repair): the draft and its citation record.
    Accepted(Box<Draft>, Value),
    /// The repair request itself failed at the provider.
    Failed(LlmFailure),
    /// Refused twice: the message for the run (a gap was recorded).
    Refused(String),
}

/// Where a run's draft is being checked.
pub struct CiteRun<'a, S> {
    pub state: &'a AppState<S>,
    pub executor: &'a HttpExecutor,
    pub charter: &'a Charter,
    pub event: &'a NewEvent,
    pub run_id: Uuid,
    pub action: &'a str,
}

/// Check `first` against `policy`; on refusal ask once more through `engine` with `req`
/// plus the repair note. `count` is told of the repair request's usage.
pub async fn check<S: Store>(
    run: &CiteRun<'_, S>,
    policy: &CitePolicy,
    ctx: &Value,
    engine: &LlmEngine,
    req: &DraftRequest<'_>,
    first: Draft,
    count: impl Fn(&Result<Draft, LlmFailure>),
) -> Checked {
    let refused = match check_draft(ctx, policy, &first.text) {
        Ok(cited) => {
            let record = record(ctx, policy, &cited, None);
            return Checked::Accepted(Box::new(first), record);
        }
        Err(e) => e,
    };
    let n = retrieved_passages(ctx, policy).len();
    let note = repair_note(&refused, n);
    let again = engine
        .draft(&DraftRequest {
            charter: req.charter,
            providers: req.providers,
            prompt: req.prompt,
            text: req.text,
            context: req.context,
            redact: req.redact,
            limits: req.limits,
            repair: Some((&first.text, &note)),
        })
        .await;
    count(&again);
    let second = match again {
        Ok(d) => d,
        Err(f) => return Checked::Failed(f),
    };
    match check_draft(ctx, policy, &second.text) {
        Ok(cited) => {
            let record = record(ctx, policy, &cited, Some(refused.to_string()));
            Checked::Accepted(Box::new(second), record)
        }
        Err(last) => {
            let why = format!(
                "the draft was refused: {last} (first answer: {refused}; one repair request was made)"
            );
            if let Err(e) = refused_gap(run, policy, ctx, &why).await {
                tracing::warn!(charter = %run.charter.name, error = %e, "knowledge gap could not be recorded");
            }
            Checked::Refused(format!("action `{}`: {why}", run.action))
        }
    }
}

/// The escalation reason of a refused draft.
pub const REFUSED: EscalationReason = EscalationReason::InvalidOutput;

fn record(ctx: &Value, policy: &CitePolicy, cited: &[usize], repaired: Option<String>) -> Value {
    json!({
        "context": policy.context,
        "every_sentence": policy.every_sentence,
        "valid": true,
        "cited": cited,
        "retrieved": retrieved_passages(ctx, policy).len(),
        "repaired_after": repaired,
        "sources": cited_sources(ctx, policy, cited),
    })
}

async fn refused_gap<S: Store>(
    run: &CiteRun<'_, S>,
    policy: &CitePolicy,
    ctx: &Value,
    why: &str,
) -> Result<(), charter_store::StoreError> {
    let step = run
        .charter
        .retrieve
        .iter()
        .find(|r| r.name == policy.context);
    let sources: Vec<String> = step.map(|s| s.sources.clone()).unwrap_or_default();
    let question = ctx["context"][&policy.context]["query"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    gaps::record(
        run.state,
        run.executor,
        GapInput {
            charter: &run.charter.name,
            event_id: run.event.id,
            run_id: run.run_id,
            context: &policy.context,
            question: &question,
            reason: GapReason::DraftRefused,
            why: why.to_string(),
            sources: &sources,
            notify: &sources,
            found: found_summary(retrieved_passages(ctx, policy)),
        },
    )
    .await
    .map(|_| ())
}
