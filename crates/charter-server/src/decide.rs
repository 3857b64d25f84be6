//! The decision cascade as the worker runs it: stages in order, each either decides (its
//! confidence reaches the stage's threshold) or abstains and hands over to the next; every
//! stage consulted is recorded.
//!
//! The LLM stage calls the project's providers through one [`LlmEngine`] per prepared
//! [`Runtime`] (built on first use, see [`llm_engine`]); the exact-match response cache
//! ([`StoreCache`]) and the limits' counts, rate windows and daily spend ([`StoreLedger`]),
//! are kept in the store, shared by every node and kept across restarts.
//! When the LLM stage cannot give a valid answer (invalid output after one
//! repair, every provider failing, budget or rate limit exhausted) the run escalates with
//! that reason, typed ([`EscalationReason`], set on the decision by this code, never read
//! back from message text); tokens, cost, latency, attempts and the cache's hit or miss are
//! recorded on the stage ([`StageAnswer::usage`]) and in the note. A limit reached under
//! `on_exhausted: wait` does not escalate: [`decide_event_or_wait`] tells the worker when to
//! try again.
//!
//! After a stage decides, the declared fields are completed by their extractors and checked
//! ([`charter_core::extract`]); a required field left without a valid value escalates.
//! Drafts for actions ([`draft_for_action`]) and records fetched before deciding
//! ([`assemble_context`]) are kept with the run as run extras.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use charter_connect::HttpExecutor;
use charter_core::config::{
    Charter, ContextOnError, Decide, DraftSpec, LlmStage, OnExhausted, Otherwise, ProviderType,
    Stage, StructuredMode,
};
use charter_core::model::{Decision, DecisionStage, EscalationReason, NewEvent, StageAnswer};
use charter_decide::llm::{
    CacheFuture, ClassifyRequest, DraftRequest, Limits, LlmAnswer, LlmEngine, LlmFailure,
    MemoryCache, MemoryLedger, Price, ProviderKind, ProviderSettings, ResponseCache, SchemaMode,
    Spend, SpendDelta, Usage, UsageLedger,
};
use charter_store::{DecisionStore, EXTRA_CONTEXT, EXTRA_DRAFT, LlmSpend, RunExtra, Store};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::project::{Runtime, resolve_secret};
use crate::{AppState, now_millis};

/// The response cache kept in the store: shared by every node using the same database.
/// Store errors are logged and read as a miss (the cache never fails a decision). Each
/// entry lives for its stage's `cache_ttl`.
pub struct StoreCache<S> {
    store: S,
}

impl<S> StoreCache<S> {
    pub fn new(store: S) -> StoreCache<S> {
        StoreCache { store }
    }
}

impl<S: DecisionStore> ResponseCache for StoreCache<S> {
    fn get<'a>(&'a self, key: &'a str) -> CacheFuture<'a, Option<String>> {
        Box::pin(async move {
            match self.store.cache_get(key, now_millis()).await {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "LLM cache read failed; treated as a miss");
                    None
                }
            }
        })
    }

    fn put<'a>(&'a self, key: &'a str, value: String, ttl: Duration) -> CacheFuture<'a, ()> {
        Box::pin(async move {
            let now = now_millis();
            let until = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            if let Err(e) = self.store.cache_put(key, &value, now, until).await {
                tracing::warn!(error = %e, "LLM cache write failed");
            }
        })
    }
}

/// The LLM limits' counts kept in the store (the budgets' daily spend and the rate windows):
/// every node and every restart sees the same counts. A read error stops the call (the
/// engine escalates with it); a spend that cannot be written is logged by the engine.
pub struct StoreLedger<S> {
    store: S,
}

impl<S: DecisionStore> UsageLedger for StoreLedger<S> {
    fn take_slot<'a>(
        &'a self,
        charter: &'a str,
        now: i64,
        window_ms: i64,
        max: u32,
    ) -> CacheFuture<'a, Result<Option<i64>, String>> {
        Box::pin(async move {
            self.store
                .take_llm_slot(charter, now, window_ms, max)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn spent<'a>(&'a self, charter: &'a str, day: i64) -> CacheFuture<'a, Result<Spend, String>> {
        Box::pin(async move {
            self.store
                .llm_spent(charter, day)
                .await
                .map(|s| Spend {
                    tokens: s.tokens,
                    cost: s.cost,
                })
                .map_err(|e| e.to_string())
        })
    }

    fn add<'a>(
        &'a self,
        charter: &'a str,
        day: i64,
        delta: SpendDelta,
    ) -> CacheFuture<'a, Result<Spend, String>> {
        Box::pin(async move {
            self.store
                .adjust_llm_spend(charter, day, delta.tokens, delta.cost)
                .await
                .map(|s: LlmSpend| Spend {
                    tokens: s.tokens,
                    cost: s.cost,
                })
                .map_err(|e| e.to_string())
        })
    }
}

/// What an engine keeps beyond one call: the response cache and the budgets' spend.
pub struct LlmBacking {
    pub cache: Arc<dyn ResponseCache>,
    pub ledger: Arc<dyn UsageLedger>,
}

/// Both in the store, shared by every node (what the server uses).
pub fn store_backing<S: Store + Clone>(store: S) -> LlmBacking {
    LlmBacking {
        cache: Arc::new(StoreCache::new(store.clone())),
        ledger: Arc::new(StoreLedger { store }),
    }
}

/// Both in the process, for callers without a store (`charter eval`, `charter decide`).
pub fn memory_backing() -> LlmBacking {
    LlmBacking {
        cache: Arc::new(MemoryCache::default()),
        ledger: Arc::new(MemoryLedger::default()),
    }
}

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
/// keys resolved then) with the cache and ledger `make_backing` gives. Every caller with the
/// same runtime shares it, and with it the response cache and the rate-limit counters.
pub fn llm_engine(
    runtime: &Arc<Runtime>,
    make_backing: impl FnOnce() -> LlmBacking,
) -> Arc<LlmRuntime> {
    let mut reg = match ENGINES.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    };
    reg.retain(|(w, _)| w.strong_count() > 0);
    let key = Arc::downgrade(runtime);
    if let Some((_, e)) = reg.iter().find(|(w, _)| w.ptr_eq(&key)) {
        return e.clone();
    }
    let built = Arc::new(build_engine(runtime, make_backing()));
    reg.push((key, built.clone()));
    built
}

fn build_engine(runtime: &Runtime, backing: LlmBacking) -> LlmRuntime {
    let LlmBacking { cache, ledger } = backing;
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
        s.allow_private = p.allow_private;
        s.api_version = p.api_version.clone();
        s.api_key = api_key;
        s.mode = match p.mode {
            StructuredMode::JsonSchema => SchemaMode::JsonSchema,
            StructuredMode::JsonObject => SchemaMode::JsonObject,
            StructuredMode::Ollama => SchemaMode::Ollama,
        };
        s.timeout = p.timeout;
        s.max_retries = p.max_retries;
        s.max_tokens = p.max_tokens;
        s.breaker_failures = p.circuit_breaker.failures;
        s.breaker_cool_down = p.circuit_breaker.cool_down;
        s.price = p.price.map(|pr| Price {
            input_per_mtok: pr.input_per_mtok,
            output_per_mtok: pr.output_per_mtok,
        });
        settings.push(s);
    }
    let engine = match LlmEngine::new(settings, cache) {
        Ok(e) => e.with_ledger(ledger),
        Err(e) => {
            tracing::error!(error = %e, "LLM providers could not be prepared");
            for name in runtime.project.providers.keys() {
                unavailable.insert(name.clone(), e.to_string());
            }
            LlmEngine::without_providers(Arc::new(MemoryCache::default())).with_ledger(ledger)
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
    let store = state.store.clone();
    let llm = llm_engine(&state.runtime, move || store_backing(store));
    let mut usage = Usage::default();
    let mut wait = None;
    let mut d = cascade_stages(
        llm.as_ref(),
        charter,
        decide,
        ctx,
        text,
        model,
        &mut usage,
        &mut wait,
    )
    .await;
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
    let mut usage = Usage::default();
    let mut wait = None;
    let mut d = cascade_stages(
        llm, charter, decide, ctx, text, model, &mut usage, &mut wait,
    )
    .await;
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

/// Count one LLM exchange (a classification or a draft) in the task's metrics: calls,
/// tokens and cost, each provider request's duration, the cache's hits and misses.
fn count_llm_usage(charter: &str, provider: &str, ok: bool, u: &Usage) {
    if let Some(m) = crate::metrics::current() {
        let usage = crate::metrics::LlmUsage {
            calls: u.calls,
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
            cost: u.cost,
        };
        m.llm_usage(charter, provider, ok, &usage);
        for r in &u.requests {
            m.llm_request(&r.provider, r.outcome, r.duration);
        }
        m.llm_cache(u.cache_hits, u.cache_misses);
        for (kind, n) in &u.redacted {
            m.llm_redactions(charter, kind, *n);
        }
    }
}

/// The stages in order. Errors in a rule (a failing expression) are recorded on the stage
/// and the rule is skipped, never guessed.
async fn cascade_stages(
    llm: &LlmRuntime,
    charter: &str,
    decide: &Decide,
    ctx: &Value,
    text: &str,
    model: Option<&charter_decide::EmbeddedModel>,
    total: &mut Usage,
    wait: &mut Option<Duration>,
) -> Decision {
    let mut answers = Vec::new();
    for stage in &decide.stages {
        match stage {
            Stage::Rules(rules) => {
                for (i, rule) in rules.iter().enumerate() {
                    match crate::expressions::eval_bool(&rule.when, ctx).await {
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
                                usage: None,
                            });
                            return Decision {
                                label: Some(rule.label.clone()),
                                confidence: 1.0,
                                fields,
                                stage: DecisionStage::Rule,
                                reason: note,
                                stages: answers,
                                escalation: None,
                            };
                        }
                        Ok(false) => {}
                        Err(e) => answers.push(StageAnswer {
                            stage: DecisionStage::Rule,
                            label: None,
                            confidence: None,
                            accepted: false,
                            note: format!("rule {} could not be evaluated: {e}", i + 1),
                            usage: None,
                        }),
                    }
                }
                answers.push(StageAnswer {
                    stage: DecisionStage::Rule,
                    label: None,
                    confidence: None,
                    accepted: false,
                    note: "no rule matched".into(),
                    usage: None,
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
                        usage: None,
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
                    usage: None,
                });
                if accepted {
                    return Decision {
                        label: Some(p.label),
                        confidence: p.confidence,
                        fields: BTreeMap::new(),
                        stage: DecisionStage::Embedded,
                        reason: note,
                        stages: answers,
                        escalation: None,
                    };
                }
            }
            Stage::Llm(stage) => {
                let (result, skipped) = ask_llm_stage(llm, charter, decide, stage, ctx, text).await;
                match &result {
                    Ok(a) => total.add(&a.usage),
                    Err(f) => total.add(&f.usage),
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
                        for n in skipped.iter().cloned().chain(a.fallback_notes) {
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
                            usage: Some(a.usage.stage_usage()),
                        });
                        if accepted {
                            return Decision {
                                label: Some(a.label),
                                confidence: a.confidence,
                                fields: a.fields,
                                stage: DecisionStage::Llm,
                                reason: note,
                                stages: answers,
                                escalation: None,
                            };
                        }
                    }
                    Err(f) => {
                        let mut reason = f.reason;
                        if !skipped.is_empty() {
                            reason.push_str(&format!(" ({})", skipped.join("; ")));
                        }
                        if f.retry_after.is_some() {
                            *wait = f.retry_after;
                        }
                        answers.push(StageAnswer {
                            stage: DecisionStage::Llm,
                            label: None,
                            confidence: None,
                            accepted: false,
                            note: format!("llm stage gave no valid answer: {reason}; {}", f.usage),
                            usage: Some(f.usage.stage_usage()),
                        });
                        return Decision {
                            label: None,
                            confidence: 0.0,
                            fields: BTreeMap::new(),
                            stage: DecisionStage::None,
                            reason: format!("escalated: {reason}"),
                            stages: answers,
                            escalation: Some(f.kind),
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
            escalation: None,
        },
        Otherwise::Escalate => Decision {
            label: None,
            confidence: 0.0,
            fields: BTreeMap::new(),
            stage: DecisionStage::None,
            reason: "no stage was sure; escalated to a human".into(),
            stages: answers,
            escalation: Some(EscalationReason::LowConfidence),
        },
    }
}

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

/// The draft of action `action` for this event: the one an earlier run of the event wrote
/// (so a re-run after an approval renders the same parameters the reviewer saw), else a new
/// one from the provider. Either way it is recorded with this run.
#[allow(clippy::too_many_arguments)]
pub async fn draft_for_action<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    action: &str,
    spec: &DraftSpec,
    ctx: &Value,
) -> Result<String, DraftError> {
    let store = &state.store;
    let earlier = store
        .latest_run_extra(event.id, EXTRA_DRAFT, action)
        .await
        .map_err(|e| {
            DraftError::failed(format!(
                "action `{action}`: reading an earlier draft failed: {e}"
            ))
        })?;
    if let Some(prev) = earlier
        && let Some(text) = prev.body["text"].as_str()
    {
        let text = text.to_string();
        if prev.run_id != run_id {
            let mut body = prev.body.clone();
            body["reused_from_run"] = json!(prev.run_id);
            store
                .record_run_extra(&RunExtra {
                    run_id,
                    event_id: event.id,
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
                })?;
        }
        return Ok(text);
    }
    let s = state.store.clone();
    let llm = llm_engine(&state.runtime, move || store_backing(s));
    let mut providers = vec![spec.provider.clone()];
    providers.extend(spec.fallback.iter().cloned());
    let usable: Vec<String> = providers
        .iter()
        .filter(|p| !llm.unavailable.contains_key(*p))
        .cloned()
        .collect();
    let limits = draft_limits(charter);
    let text = crate::worker::decision_text(charter, event, ctx);
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
    let count = |r: &Result<charter_decide::llm::Draft, LlmFailure>| match r {
        Ok(d) => count_llm_usage(&charter.name, &d.provider, true, &d.usage),
        Err(f) => count_llm_usage(&charter.name, &spec.provider, false, &f.usage),
    };
    let mut result = llm.engine.draft(&req).await;
    count(&result);
    // A draft written from retrieved passages must cite them (one repair, then escalation).
    let mut citations = Value::Null;
    let to_check = match (&spec.cite, &result) {
        (Some(policy), Ok(first)) => Some((policy, first.clone())),
        _ => None,
    };
    if let Some((policy, first)) = to_check {
        use crate::knowledge::cite::{self, Checked, CiteRun};
        let run = CiteRun {
            state,
            executor,
            charter,
            event,
            run_id,
            action,
        };
        match cite::check(&run, policy, ctx, &llm.engine, &req, first, count).await {
            Checked::Accepted(d, record) => {
                result = Ok(*d);
                citations = record;
            }
            Checked::Failed(f) => result = Err(f),
            Checked::Refused(message) => {
                return Err(DraftError {
                    message,
                    escalate: Some(cite::REFUSED),
                    wait: None,
                });
            }
        }
    }
    match result {
        Ok(d) => {
            store
                .record_run_extra(&RunExtra {
                    run_id,
                    event_id: event.id,
                    kind: EXTRA_DRAFT.into(),
                    name: action.into(),
                    body: json!({
                        "text": d.text,
                        "provider": d.provider,
                        "model": d.model,
                        "prompt": spec.prompt,
                        "usage": d.usage,
                        "citations": citations,
                    }),
                    at: now_millis(),
                })
                .await
                .map_err(|e| {
                    DraftError::failed(format!(
                        "action `{action}`: recording the draft failed: {e}"
                    ))
                })?;
            Ok(d.text)
        }
        Err(f) => {
            let unavailable: Vec<&str> = providers
                .iter()
                .filter_map(|p| llm.unavailable.get(p).map(String::as_str))
                .collect();
            let mut reason = f.reason;
            if !unavailable.is_empty() {
                reason.push_str(&format!(" ({})", unavailable.join("; ")));
            }
            // The charter's own budget or rate limit: `on_exhausted` applies (wait until
            // the next window, or escalate).
            let wait = if f.limited { f.retry_after } else { None };
            let escalate = f.limited && wait.is_none();
            Err(DraftError {
                message: format!(
                    "action `{action}`: the draft could not be written: {reason}; {}",
                    f.usage
                ),
                escalate: escalate.then_some(f.kind),
                wait,
            })
        }
    }
}

/// What [`assemble_context`] fetched.
#[derive(Debug, Default)]
pub struct Assembled {
    /// `context.<name>` values (`null` for a failed fetch that continues).
    pub values: serde_json::Map<String, Value>,
    /// A fetch declared `on_error: retry` failed: the reason and when to try again.
    pub retry: Option<(String, Duration)>,
}

/// Largest context record kept (bytes of the response body).
const CONTEXT_MAX_BYTES: usize = 1024 * 1024;

/// Fetch the charter's `context:` records once for this run, through each connector (its
/// auth, SSRF guard, limits and breaker), each with its timeout. Every fetch is recorded
/// with the run; a failure either leaves `context.<name>` null (`on_error: continue`) or
/// asks for the run to be retried later (`on_error: retry`).
pub async fn assemble_context<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    charter: &Charter,
    event: &NewEvent,
    run_id: Uuid,
    ctx: &Value,
) -> Result<Assembled, charter_store::StoreError> {
    let mut out = Assembled::default();
    for f in &charter.context {
        let started = Instant::now();
        let fetched = fetch_one(state, executor, event, f, ctx).await;
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let body = match &fetched {
            Ok((status, v)) => json!({
                "ok": true, "status": status, "value": v, "duration_ms": duration_ms,
                "connector": f.connector,
            }),
            Err((status, e)) => json!({
                "ok": false, "status": status, "error": e, "duration_ms": duration_ms,
                "connector": f.connector, "on_error": match f.on_error {
                    ContextOnError::Continue => "continue",
                    ContextOnError::Retry => "retry",
                },
            }),
        };
        state
            .store
            .record_run_extra(&RunExtra {
                run_id,
                event_id: event.id,
                kind: EXTRA_CONTEXT.into(),
                name: f.name.clone(),
                body,
                at: now_millis(),
            })
            .await?;
        match fetched {
            Ok((_, v)) => {
                out.values.insert(f.name.clone(), v);
            }
            Err((_, e)) => {
                tracing::warn!(charter = %charter.name, context = %f.name, error = %e, "context fetch failed");
                out.values.insert(f.name.clone(), Value::Null);
                if f.on_error == ContextOnError::Retry && out.retry.is_none() {
                    out.retry = Some((
                        format!(
                            "context `{}` could not be fetched: {e}; retrying in {:?} (on_error: retry)",
                            f.name, f.retry_after
                        ),
                        f.retry_after,
                    ));
                }
            }
        }
    }
    crate::knowledge::retrieve::retrieve_all(
        state,
        executor,
        charter,
        event,
        run_id,
        ctx,
        &mut out.values,
    )
    .await?;
    Ok(out)
}

/// One GET. `Err((status, reason))` on any failure.
async fn fetch_one<S: Store>(
    state: &AppState<S>,
    executor: &HttpExecutor,
    event: &NewEvent,
    f: &charter_core::config::ContextFetch,
    ctx: &Value,
) -> Result<(u16, Value), (Option<u16>, String)> {
    let conn = state
        .runtime
        .connections
        .get(&f.connector)
        .and_then(|c| c.http())
        .ok_or_else(|| {
            (
                None,
                format!("connector `{}` is not an HTTP connector", f.connector),
            )
        })?;
    let path = f
        .path
        .render(ctx)
        .map_err(|e| (None, format!("`get` could not be rendered: {e}")))?;
    let key = format!("context:{}:{}", event.id, f.name);
    let req = HttpExecutor::prepare(
        Some(&conn.connector),
        "GET",
        &path,
        &[("Accept".to_string(), "application/json".to_string())],
        None,
        Some(f.timeout),
        &key,
    )
    .map_err(|e| (None, e.to_string()))?;
    let got = conn
        .attempt_keeping(executor, &req, CONTEXT_MAX_BYTES)
        .await;
    if !got.ok {
        let why = got
            .error
            .unwrap_or_else(|| format!("answered {}", got.status.unwrap_or(0)));
        return Err((got.status, why));
    }
    if got.body_truncated {
        return Err((
            got.status,
            format!("the answer is larger than {CONTEXT_MAX_BYTES} bytes"),
        ));
    }
    let value = if got.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&got.body)
            .map_err(|e| (got.status, format!("the answer is not JSON: {e}")))?
    };
    Ok((got.status.unwrap_or(200), value))
}
