//! The decision cascade as the worker runs it: stages in order, each either decides (its
//! confidence reaches the stage's threshold) or abstains and hands over to the next; every
//! stage consulted is recorded.
//!
//! The LLM stage calls the project's providers through one [`LlmEngine`] per prepared
//! [`Runtime`] (built on first use, see [`llm_engine`]): its HTTP clients, response cache
//! and the per-charter rate-limit and budget counters live in this process, so limits are
//! enforced per node. When the LLM stage cannot give a valid answer (invalid output after
//! one repair, every provider failing, budget or rate limit exhausted) the run escalates
//! with that reason; tokens, cost and latency are written in the stage's note.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use charter_core::config::{
    Decide, LlmStage, OnExhausted, Otherwise, ProviderType, Stage, StructuredMode,
};
use charter_core::model::{Decision, DecisionStage, StageAnswer};
use charter_decide::llm::{
    ClassifyRequest, Limits, LlmEngine, MemoryCache, Price, ProviderKind, ProviderSettings,
    SchemaMode,
};
use serde_json::Value;

use crate::project::{Runtime, resolve_secret};

/// The LLM side of a runtime: the engine, and the providers that could not be prepared
/// (an unreadable API key) with the reason.
#[derive(Debug)]
pub struct LlmRuntime {
    pub engine: LlmEngine,
    pub unavailable: BTreeMap<String, String>,
}

/// Engines by runtime, held weakly so a dropped runtime's engine goes with the next lookup.
type Registry = Vec<(Weak<Runtime>, Arc<LlmRuntime>)>;
static ENGINES: Mutex<Registry> = Mutex::new(Vec::new());

/// The LLM engine of `runtime`, built on first use from the project's `providers:` (API
/// keys resolved then). Every caller with the same runtime shares it, and with it the
/// response cache and the limit counters.
pub fn llm_engine(runtime: &Arc<Runtime>) -> Arc<LlmRuntime> {
    let mut reg = match ENGINES.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    reg.retain(|(w, _)| w.strong_count() > 0);
    let key = Arc::downgrade(runtime);
    if let Some((_, e)) = reg.iter().find(|(w, _)| w.ptr_eq(&key)) {
        return e.clone();
    }
    let built = Arc::new(build_engine(runtime));
    reg.push((key, built.clone()));
    built
}

fn build_engine(runtime: &Runtime) -> LlmRuntime {
    let mut settings = Vec::new();
    let mut unavailable = BTreeMap::new();
    for (name, p) in &runtime.project.providers {
        let api_key = match &p.api_key {
            None => None,
            Some(secret) => match resolve_secret(&runtime.root, secret) {
                Ok(k) => Some(k),
                Err(e) => {
                    tracing::error!(provider = %name, error = %e, "provider's API key cannot be resolved; the provider is unavailable");
                    unavailable.insert(name.clone(), format!("provider `{name}`: {e}"));
                    continue;
                }
            },
        };
        let kind = match p.kind {
            ProviderType::OpenAi => ProviderKind::OpenAi,
            ProviderType::Anthropic => ProviderKind::Anthropic,
        };
        let mut s = ProviderSettings::new(name, kind, &p.base_url, &p.model);
        s.api_key = api_key;
        s.mode = match p.mode {
            StructuredMode::JsonSchema => SchemaMode::JsonSchema,
            StructuredMode::JsonObject => SchemaMode::JsonObject,
            StructuredMode::Ollama => SchemaMode::Ollama,
        };
        s.timeout = p.timeout;
        s.max_retries = p.max_retries;
        s.max_tokens = p.max_tokens;
        s.price = p.price.map(|pr| Price {
            input_per_mtok: pr.input_per_mtok,
            output_per_mtok: pr.output_per_mtok,
        });
        settings.push(s);
    }
    let engine = match LlmEngine::new(settings, Arc::new(MemoryCache::default())) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(error = %e, "LLM providers could not be prepared");
            for name in runtime.project.providers.keys() {
                unavailable.insert(name.clone(), e.to_string());
            }
            LlmEngine::without_providers(Arc::new(MemoryCache::default()))
        }
    };
    LlmRuntime {
        engine,
        unavailable,
    }
}

/// A stage's limits in the engine's terms.
fn limits(stage: &LlmStage) -> Limits {
    Limits {
        requests_per_window: stage.rate_limit,
        rate_window: Duration::from_secs(60),
        tokens_per_day: stage.budget.tokens_per_day,
        cost_per_day: stage.budget.cost_per_day,
        on_exhausted: match stage.budget.on_exhausted {
            OnExhausted::Wait => charter_decide::llm::OnExhausted::Wait,
            OnExhausted::Escalate => charter_decide::llm::OnExhausted::Escalate,
        },
        max_wait: stage.budget.max_wait,
    }
}

/// Run the charter's stages over the evaluation context. Errors in a rule (a failing
/// expression) are recorded on the stage and the rule is skipped, never guessed.
pub async fn run_cascade(
    runtime: &Arc<Runtime>,
    charter: &str,
    decide: &Decide,
    ctx: &Value,
    text: &str,
    model: Option<&charter_decide::EmbeddedModel>,
) -> Decision {
    let mut answers = Vec::new();
    for stage in &decide.stages {
        match stage {
            Stage::Rules(rules) => {
                for (i, rule) in rules.iter().enumerate() {
                    match rule.when.eval_bool(ctx) {
                        Ok(true) => {
                            let mut fields = BTreeMap::new();
                            let mut errors = Vec::new();
                            for (name, t) in &rule.fields {
                                match t.render(ctx) {
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
                            answers.push(StageAnswer {
                                stage: DecisionStage::Rule,
                                label: Some(rule.label.clone()),
                                confidence: Some(1.0),
                                accepted: true,
                                note: note.clone(),
                            });
                            return Decision {
                                label: Some(rule.label.clone()),
                                confidence: 1.0,
                                fields,
                                stage: DecisionStage::Rule,
                                reason: note,
                                stages: answers,
                            };
                        }
                        Ok(false) => {}
                        Err(e) => answers.push(StageAnswer {
                            stage: DecisionStage::Rule,
                            label: None,
                            confidence: None,
                            accepted: false,
                            note: format!("rule {} could not be evaluated: {e}", i + 1),
                        }),
                    }
                }
                answers.push(StageAnswer {
                    stage: DecisionStage::Rule,
                    label: None,
                    confidence: None,
                    accepted: false,
                    note: "no rule matched".into(),
                });
            }
            Stage::Embedded(stage) => {
                let Some(model) = model else {
                    answers.push(StageAnswer {
                        stage: DecisionStage::Embedded,
                        label: None,
                        confidence: None,
                        accepted: false,
                        note: "no embedded model is loaded; skipped".into(),
                    });
                    continue;
                };
                let p = model.predict(text);
                let accepted = p.confidence >= stage.accept_above;
                let note = format!(
                    "embedded classifier: {} ({:.3}) {} threshold {}",
                    p.label,
                    p.confidence,
                    if accepted { "reaches" } else { "is below" },
                    stage.accept_above
                );
                answers.push(StageAnswer {
                    stage: DecisionStage::Embedded,
                    label: Some(p.label.clone()),
                    confidence: Some(p.confidence),
                    accepted,
                    note: note.clone(),
                });
                if accepted {
                    return Decision {
                        label: Some(p.label),
                        confidence: p.confidence,
                        fields: BTreeMap::new(),
                        stage: DecisionStage::Embedded,
                        reason: note,
                        stages: answers,
                    };
                }
            }
            Stage::Llm(stage) => {
                let llm = llm_engine(runtime);
                let mut providers = vec![stage.provider.clone()];
                providers.extend(stage.fallback.iter().cloned());
                // Providers whose key could not be read are reported, not tried.
                let usable: Vec<String> = providers
                    .iter()
                    .filter(|p| !llm.unavailable.contains_key(*p))
                    .cloned()
                    .collect();
                let skipped: Vec<&str> = providers
                    .iter()
                    .filter_map(|p| llm.unavailable.get(p).map(String::as_str))
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
                };
                let result = llm.engine.classify(&req).await;
                if let Some(m) = crate::metrics::current() {
                    let (provider, ok, u) = match &result {
                        Ok(a) => (a.provider.as_str(), true, &a.usage),
                        Err(f) => (stage.provider.as_str(), false, &f.usage),
                    };
                    let usage = crate::metrics::LlmUsage {
                        calls: u.calls,
                        prompt_tokens: u.prompt_tokens,
                        completion_tokens: u.completion_tokens,
                        cost: u.cost,
                    };
                    m.llm_usage(charter, provider, ok, &usage);
                }
                match result {
                    Ok(a) => {
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
                        for n in skipped
                            .iter()
                            .map(|s| s.to_string())
                            .chain(a.fallback_notes)
                        {
                            note.push_str(&format!("; fell back after: {n}"));
                        }
                        if !a.reason.is_empty() {
                            note.push_str(&format!("; model's reason: {}", a.reason));
                        }
                        answers.push(StageAnswer {
                            stage: DecisionStage::Llm,
                            label: Some(a.label.clone()),
                            confidence: Some(a.confidence),
                            accepted,
                            note: note.clone(),
                        });
                        if accepted {
                            return Decision {
                                label: Some(a.label),
                                confidence: a.confidence,
                                fields: a.fields,
                                stage: DecisionStage::Llm,
                                reason: note,
                                stages: answers,
                            };
                        }
                    }
                    Err(f) => {
                        let mut reason = f.reason;
                        if !skipped.is_empty() {
                            reason.push_str(&format!(" ({})", skipped.join("; ")));
                        }
                        answers.push(StageAnswer {
                            stage: DecisionStage::Llm,
                            label: None,
                            confidence: None,
                            accepted: false,
                            note: format!("llm stage gave no valid answer: {reason}; {}", f.usage),
                        });
                        return Decision {
                            label: None,
                            confidence: 0.0,
                            fields: BTreeMap::new(),
                            stage: DecisionStage::Human,
                            reason: format!("escalated: {reason}"),
                            stages: answers,
                        };
                    }
                }
            }
        }
    }
    match &decide.otherwise {
        Otherwise::Label(l) => Decision {
            label: Some(l.clone()),
            confidence: 0.0,
            fields: BTreeMap::new(),
            stage: DecisionStage::Default,
            reason: format!("no stage was sure; `otherwise: {l}` applied"),
            stages: answers,
        },
        Otherwise::Escalate => Decision {
            label: None,
            confidence: 0.0,
            fields: BTreeMap::new(),
            stage: DecisionStage::Human,
            reason: "no stage was sure; escalated to a human".into(),
            stages: answers,
        },
    }
}
