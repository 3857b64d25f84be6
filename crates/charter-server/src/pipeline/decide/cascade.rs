//! The stages of a charter's `decide:` in order: rules, the embedded classifier, the LLM,
//! then `otherwise`. Each stage records what it answered; the first that is sure decides.
//! Errors in a rule (a failing expression) are recorded on the stage and the rule is
//! skipped, never guessed.

use std::collections::BTreeMap;
use std::time::Duration;

use charter_core::config::{Decide, EmbeddedStage, LlmStage, Otherwise, Rule, Stage};
use charter_core::model::{Decision, DecisionStage, EscalationReason, StageAnswer};
use charter_decide::EmbeddedModel;
use charter_decide::llm::{LlmAnswer, LlmFailure, Usage};
use serde_json::Value;

use super::ask_llm_stage;
use crate::llm::LlmRuntime;

/// One pass through the stages: what they read, and what they answered so far.
struct Cascade<'a> {
    llm: &'a LlmRuntime,
    charter: &'a str,
    decide: &'a Decide,
    ctx: &'a Value,
    text: &'a str,
    model: Option<&'a EmbeddedModel>,
    /// Every stage consulted, in order.
    answers: Vec<StageAnswer>,
    /// What the LLM calls used.
    usage: Usage,
    /// A limit under `on_exhausted: wait` stopped the LLM stage: its next window.
    wait: Option<Duration>,
}

/// Run the stages in order. Returns the decision (with every stage consulted), what the LLM
/// calls used, and, when a limit under `on_exhausted: wait` stopped the LLM stage, how long
/// until its next window.
pub(crate) async fn cascade_stages(
    llm: &LlmRuntime,
    charter: &str,
    decide: &Decide,
    ctx: &Value,
    text: &str,
    model: Option<&EmbeddedModel>,
) -> (Decision, Usage, Option<Duration>) {
    let mut c = Cascade {
        llm,
        charter,
        decide,
        ctx,
        text,
        model,
        answers: Vec::new(),
        usage: Usage::default(),
        wait: None,
    };
    let mut decided = None;
    for stage in &decide.stages {
        decided = match stage {
            Stage::Rules(rules) => c.rules(rules).await,
            Stage::Embedded(stage) => c.embedded(stage),
            Stage::Llm(stage) => c.llm(stage).await,
        };
        if decided.is_some() {
            break;
        }
    }
    let mut d = decided.unwrap_or_else(|| otherwise(decide));
    d.stages = std::mem::take(&mut c.answers);
    (d, c.usage, c.wait)
}

/// A decision by `stage` (its `stages` are filled in by [`cascade_stages`]).
fn decided(
    stage: DecisionStage,
    label: Option<String>,
    confidence: f64,
    fields: BTreeMap<String, Value>,
    reason: String,
    escalation: Option<EscalationReason>,
) -> Decision {
    Decision {
        label,
        confidence,
        fields,
        stage,
        reason,
        stages: Vec::new(),
        escalation,
    }
}

/// What `otherwise:` decides when no stage was sure.
fn otherwise(decide: &Decide) -> Decision {
    match &decide.otherwise {
        Otherwise::Label(l) => decided(
            DecisionStage::Default,
            Some(l.clone()),
            0.0,
            BTreeMap::new(),
            format!("no stage was sure; `otherwise: {l}` applied"),
            None,
        ),
        Otherwise::Escalate => decided(
            DecisionStage::None,
            None,
            0.0,
            BTreeMap::new(),
            "no stage was sure; escalated to a human".into(),
            Some(EscalationReason::LowConfidence),
        ),
    }
}

impl Cascade<'_> {
    /// Record a stage's answer.
    fn answer(
        &mut self,
        stage: DecisionStage,
        label: Option<String>,
        confidence: Option<f64>,
        accepted: bool,
        note: String,
    ) {
        self.answers.push(StageAnswer {
            stage,
            label,
            confidence,
            accepted,
            note,
            usage: None,
        });
    }

    /// The first rule whose `when:` holds decides, with its fields rendered.
    async fn rules(&mut self, rules: &[Rule]) -> Option<Decision> {
        for (i, rule) in rules.iter().enumerate() {
            match crate::expressions::eval_bool(&rule.when, self.ctx).await {
                Ok(true) => return Some(self.rule_matched(i, rule)),
                Ok(false) => {}
                Err(e) => self.answer(
                    DecisionStage::Rule,
                    None,
                    None,
                    false,
                    format!("rule {} could not be evaluated: {e}", i + 1),
                ),
            }
        }
        self.answer(
            DecisionStage::Rule,
            None,
            None,
            false,
            "no rule matched".into(),
        );
        None
    }

    /// Rule `i` matched: its label, and its fields rendered (a field that cannot be
    /// rendered is left out and named in the note).
    fn rule_matched(&mut self, i: usize, rule: &Rule) -> Decision {
        let mut fields = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, t) in &rule.fields {
            match t.render(self.ctx) {
                Ok(v) => {
                    fields.insert(name.clone(), Value::String(v));
                }
                Err(e) => errors.push(format!("field `{name}`: {e}")),
            }
        }
        let note = if errors.is_empty() {
            format!("rule {} matched: {}", i + 1, rule.when.source())
        } else {
            format!(
                "rule {} matched: {} ({})",
                i + 1,
                rule.when.source(),
                errors.join("; ")
            )
        };
        self.answer(
            DecisionStage::Rule,
            Some(rule.label.clone()),
            Some(1.0),
            true,
            note.clone(),
        );
        decided(
            DecisionStage::Rule,
            Some(rule.label.clone()),
            1.0,
            fields,
            note,
            None,
        )
    }

    /// The embedded classifier decides when its confidence reaches the threshold.
    fn embedded(&mut self, stage: &EmbeddedStage) -> Option<Decision> {
        let Some(model) = self.model else {
            self.answer(
                DecisionStage::Embedded,
                None,
                None,
                false,
                "no embedded model is loaded; skipped".into(),
            );
            return None;
        };
        let p = model.predict(self.text);
        let accepted = p.confidence >= stage.accept_above;
        let note = format!(
            "embedded classifier: {} ({:.3}) {} threshold {}",
            p.label,
            p.confidence,
            if accepted { "reaches" } else { "is below" },
            stage.accept_above
        );
        self.answer(
            DecisionStage::Embedded,
            Some(p.label.clone()),
            Some(p.confidence),
            accepted,
            note.clone(),
        );
        accepted.then(|| {
            decided(
                DecisionStage::Embedded,
                Some(p.label),
                p.confidence,
                BTreeMap::new(),
                note,
                None,
            )
        })
    }

    /// The LLM stage: an answer decides when its confidence reaches the threshold; no
    /// valid answer escalates with the failure's reason.
    async fn llm(&mut self, stage: &LlmStage) -> Option<Decision> {
        let (result, skipped) = ask_llm_stage(
            self.llm,
            self.charter,
            self.decide,
            stage,
            self.ctx,
            self.text,
        )
        .await;
        match result {
            Ok(a) => {
                self.usage.add(&a.usage);
                self.llm_answered(stage, a, &skipped)
            }
            Err(f) => {
                self.usage.add(&f.usage);
                Some(self.llm_failed(f, &skipped))
            }
        }
    }

    fn llm_answered(
        &mut self,
        stage: &LlmStage,
        a: LlmAnswer,
        skipped: &[String],
    ) -> Option<Decision> {
        let accepted = a.confidence >= stage.accept_above;
        let mut note = format!(
            "llm {} ({}): {} ({:.3}) {} threshold {}; {}",
            a.provider,
            a.model,
            a.label,
            a.confidence,
            if accepted { "reaches" } else { "is below" },
            stage.accept_above,
            a.usage,
        );
        if a.cached {
            note.push_str("; answered from the cache");
        }
        if a.repaired {
            note.push_str("; the first answer was invalid and was repaired");
        }
        for n in skipped.iter().chain(a.fallback_notes.iter()) {
            note.push_str(&format!("; fell back after: {n}"));
        }
        if !a.reason.is_empty() {
            note.push_str(&format!("; model's reason: {}", a.reason));
        }
        self.answers.push(StageAnswer {
            stage: DecisionStage::Llm,
            label: Some(a.label.clone()),
            confidence: Some(a.confidence),
            accepted,
            note: note.clone(),
            usage: Some(a.usage.stage_usage()),
        });
        accepted.then(|| {
            decided(
                DecisionStage::Llm,
                Some(a.label),
                a.confidence,
                a.fields,
                note,
                None,
            )
        })
    }

    fn llm_failed(&mut self, f: LlmFailure, skipped: &[String]) -> Decision {
        let mut reason = f.reason;
        if !skipped.is_empty() {
            reason.push_str(&format!(" ({})", skipped.join("; ")));
        }
        if f.retry_after.is_some() {
            self.wait = f.retry_after;
        }
        self.answers.push(StageAnswer {
            stage: DecisionStage::Llm,
            label: None,
            confidence: None,
            accepted: false,
            note: format!("llm stage gave no valid answer: {reason}; {}", f.usage),
            usage: Some(f.usage.stage_usage()),
        });
        decided(
            DecisionStage::None,
            None,
            0.0,
            BTreeMap::new(),
            format!("escalated: {reason}"),
            Some(f.kind),
        )
    }
}
