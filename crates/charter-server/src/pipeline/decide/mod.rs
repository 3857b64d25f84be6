//! The decision cascade as the worker runs it: stages in order, each either decides (its
//! confidence reaches the stage's threshold) or abstains and hands over to the next; every
//! stage consulted is recorded ([`cascade`]).
//!
//! The LLM stage calls the project's providers through the application's engine
//! ([`crate::llm`]). When it cannot give a valid answer (invalid output after one repair,
//! every provider failing, budget or rate limit exhausted) the run escalates with that
//! reason, typed ([`EscalationReason`], set on the decision by this code, never read back
//! from message text); tokens, cost, latency, attempts and the cache's hit or miss are
//! recorded on the stage
//! ([`charter_core::model::StageAnswer::usage`]) and in the note. A limit reached under
//! `on_exhausted: wait` does not escalate: [`decide_event_or_wait`] tells the worker when to
//! try again.
//!
//! After a stage decides, the declared fields are completed by their extractors and checked
//! ([`charter_core::extract`]); a required field left without a valid value escalates.
//! Drafts for actions ([`draft::draft_for_action`]) and records fetched before deciding
//! ([`context::assemble_context`]) are kept with the run as run extras.

pub mod cascade;
pub mod context;
pub mod draft;

use std::time::Duration;

use charter_core::config::{Decide, LlmStage};
use charter_core::model::{Decision, DecisionStage, EscalationReason};
use charter_decide::llm::{ClassifyRequest, LlmAnswer, LlmFailure, Usage};
use charter_store::Store;
use serde_json::Value;

use crate::AppState;
use crate::llm::{LlmRuntime, count_llm_usage, limits};

pub use context::{Assembled, assemble_context};
pub use draft::{DraftError, draft_for_action};

/// Decide one event as the worker does: the cascade with the store-backed cache, then the
/// declared fields completed and checked.
pub async fn decide_event<S: Store>(
    state: &AppState<S>,
    charter: &str,
    decide: &Decide,
    ctx: &Value,
    text: &str,
    model: Option<&charter_decide::EmbeddedModel>,
) -> Decision {
    decide_event_or_wait(state, charter, decide, ctx, text, model)
        .await
        .0
}

/// [`decide_event`], and when a limit under `on_exhausted: wait` stopped the LLM stage, how
/// long until its next window: the worker then reschedules the event instead of recording
/// the (escalating) decision.
pub async fn decide_event_or_wait<S: Store>(
    state: &AppState<S>,
    charter: &str,
    decide: &Decide,
    ctx: &Value,
    text: &str,
    model: Option<&charter_decide::EmbeddedModel>,
) -> (Decision, Option<Duration>) {
    let (mut d, _, wait) =
        cascade::cascade_stages(&state.llm, charter, decide, ctx, text, model).await;
    complete_decision(decide, &mut d, text, ctx);
    (d, wait)
}

/// Run the charter's stages, then complete and check the declared fields (a required field
/// without a valid value turns the decision into an escalation). Also returns what the LLM
/// calls used.
pub async fn run_cascade(
    llm: &LlmRuntime,
    charter: &str,
    decide: &Decide,
    ctx: &Value,
    text: &str,
    model: Option<&charter_decide::EmbeddedModel>,
) -> (Decision, Usage) {
    let (mut d, usage, _) = cascade::cascade_stages(llm, charter, decide, ctx, text, model).await;
    complete_decision(decide, &mut d, text, ctx);
    (d, usage)
}

/// Fill the decided event's fields from their extractors and check every value. A required
/// field without a valid value escalates, naming the field and why.
pub fn complete_decision(decide: &Decide, d: &mut Decision, text: &str, ctx: &Value) {
    if d.label.is_none()
        || matches!(d.stage, DecisionStage::Human | DecisionStage::None)
        || decide.extract.is_empty()
    {
        return;
    }
    let out = charter_core::extract::complete_fields(&decide.extract, &mut d.fields, text, ctx);
    if !out.notes.is_empty() {
        d.reason = format!("{}; {}", d.reason, out.notes.join("; "));
    }
    if !out.missing.is_empty() {
        let label = d.label.take().unwrap_or_default();
        d.stage = DecisionStage::None;
        d.confidence = 0.0;
        d.escalation = Some(EscalationReason::MissingField);
        d.reason = format!(
            "escalated: required field(s) missing: {} (the {} stage chose `{label}`)",
            out.missing.join("; "),
            d.stages
                .iter()
                .rev()
                .find(|s| s.accepted)
                .map(|s| stage_name(s.stage))
                .unwrap_or("deciding"),
        );
    }
}

fn stage_name(s: DecisionStage) -> &'static str {
    match s {
        DecisionStage::Rule => "rule",
        DecisionStage::Embedded => "embedded",
        DecisionStage::Llm => "llm",
        DecisionStage::Human => "human",
        DecisionStage::Default => "default",
        DecisionStage::None => "none",
    }
}

/// Ask the LLM stage once (the stage's provider, then its fallbacks; providers whose key
/// could not be read are skipped and reported). Returns the answer and the skipped notes.
pub async fn ask_llm_stage(
    llm: &LlmRuntime,
    charter: &str,
    decide: &Decide,
    stage: &LlmStage,
    ctx: &Value,
    text: &str,
) -> (Result<LlmAnswer, LlmFailure>, Vec<String>) {
    let mut providers = vec![stage.provider.clone()];
    providers.extend(stage.fallback.iter().cloned());
    let usable: Vec<String> = providers
        .iter()
        .filter(|p| !llm.unavailable.contains_key(*p))
        .cloned()
        .collect();
    let skipped: Vec<String> = providers
        .iter()
        .filter_map(|p| llm.unavailable.get(p).cloned())
        .collect();
    let limits = limits(stage);
    let req = ClassifyRequest {
        charter,
        providers: &usable,
        prompt: &stage.template,
        labels: &decide.labels,
        fields: &decide.extract,
        text,
        context: ctx,
        redact: &stage.redact,
        limits: &limits,
        cache_ttl: stage.cache_ttl,
    };
    let result = llm.engine.classify(&req).await;
    match &result {
        Ok(a) => count_llm_usage(charter, &a.provider, true, &a.usage),
        Err(f) => count_llm_usage(charter, &stage.provider, false, &f.usage),
    }
    (result, skipped)
}
