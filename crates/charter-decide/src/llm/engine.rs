//! [`LlmEngine`]: the providers of a project, the response cache and the limit counters, and
//! the two things a charter asks of them — classify an event, draft a text.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use charter_core::config::FieldSpec;
use charter_core::template::Template;
use serde::Serialize;
use serde_json::Value;

use super::cache::{ResponseCache, cache_key};
use super::limits::{self, Limits, MemoryLedger, Spend, UsageLedger};
use super::prompt;
use super::provider::{
    ChatRequest, ChatRole, Completion, Message, Provider, ProviderError, ProviderSettings,
};
use super::schema::{AnswerValidator, ParsedAnswer, validator_key};

/// What the LLM calls of one decision (or draft) used, summed over calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Provider requests that got an answer (cache hits are not calls).
    pub calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// From the provider's price; 0 when no price is configured.
    pub cost: f64,
    /// Wall time spent in provider requests, retries and backoff included.
    pub latency_ms: u64,
}

impl Usage {
    fn add(&mut self, c: &Completion, cost: f64) {
        self.calls += 1;
        self.prompt_tokens += c.prompt_tokens;
        self.completion_tokens += c.completion_tokens;
        self.cost += cost;
        self.latency_ms += u64::try_from(c.latency.as_millis()).unwrap_or(u64::MAX);
    }

    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} call(s), {} prompt + {} completion tokens, cost {:.6}, {} ms",
            self.calls, self.prompt_tokens, self.completion_tokens, self.cost, self.latency_ms
        )
    }
}

/// One classification asked of the LLM stage.
#[derive(Debug, Clone, Copy)]
pub struct ClassifyRequest<'a> {
    /// The charter, whose limits apply.
    pub charter: &'a str,
    /// Provider names in order: the stage's provider, then its fallbacks.
    pub providers: &'a [String],
    /// The prompt template (see [`super::prompt`] for its variables).
    pub prompt: &'a Template,
    pub labels: &'a [String],
    pub fields: &'a BTreeMap<String, FieldSpec>,
    /// The event's decision text (untrusted).
    pub text: &'a str,
    /// The evaluation context (`payload`, `event`, ...).
    pub context: &'a Value,
    /// Keys (or dotted paths) whose values are replaced before anything is sent.
    pub redact: &'a [String],
    pub limits: &'a Limits,
}

/// A validated answer.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmAnswer {
    pub label: String,
    pub confidence: f64,
    pub fields: BTreeMap<String, Value>,
    /// The model's own short reason.
    pub reason: String,
    /// The provider that answered.
    pub provider: String,
    pub model: String,
    pub usage: Usage,
    /// Served from the response cache, no request made.
    pub cached: bool,
    /// The first answer was invalid and the repaired one was accepted.
    pub repaired: bool,
    /// What went wrong with providers tried before the one that answered.
    pub fallback_notes: Vec<String>,
}

/// No usable answer: the run escalates with `reason`.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmFailure {
    pub reason: String,
    /// What was spent before giving up.
    pub usage: Usage,
}

impl fmt::Display for LlmFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// A draft asked for by an action.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest<'a> {
    pub charter: &'a str,
    pub providers: &'a [String],
    pub prompt: &'a Template,
    pub text: &'a str,
    /// The evaluation context, with `decision` filled in.
    pub context: &'a Value,
    pub redact: &'a [String],
    pub limits: &'a Limits,
}

/// A drafted text.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub text: String,
    pub provider: String,
    pub model: String,
    pub usage: Usage,
}

/// Providers by name, the response cache and the ledger the limits count in.
pub struct LlmEngine {
    providers: BTreeMap<String, Arc<Provider>>,
    cache: Arc<dyn ResponseCache>,
    ledger: Arc<dyn UsageLedger>,
    /// Compiled answer schemas by [`validator_key`]: built at a charter's first
    /// classification, not at every one.
    validators: Mutex<HashMap<String, Arc<AnswerValidator>>>,
}

/// Answer schemas kept compiled (one per charter with an LLM stage; the bound only matters
/// when reloads keep changing labels or fields).
const VALIDATORS: usize = 64;

impl fmt::Debug for LlmEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LlmEngine")
            .field("providers", &self.providers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Outcome of one request to one provider (inside the limits).
enum Call {
    Answered(Completion),
    /// The provider failed; the next one may be tried.
    ProviderFailed(ProviderError),
    /// A limit stopped the request; the whole decision escalates.
    Limited(String),
}

impl LlmEngine {
    /// Builds one HTTP client per provider.
    pub fn new(
        settings: Vec<ProviderSettings>,
        cache: Arc<dyn ResponseCache>,
    ) -> Result<LlmEngine, ProviderError> {
        let mut providers = BTreeMap::new();
        for s in settings {
            providers.insert(s.name.clone(), Arc::new(Provider::new(s)?));
        }
        Ok(LlmEngine {
            providers,
            cache,
            ledger: Arc::new(MemoryLedger::default()),
            validators: Mutex::default(),
        })
    }

    /// Keep the budgets' spend in `ledger` instead of in this process.
    pub fn with_ledger(mut self, ledger: Arc<dyn UsageLedger>) -> LlmEngine {
        self.ledger = ledger;
        self
    }

    /// An engine with no providers: every request fails with "no provider answered". Used
    /// when the configured providers could not be prepared.
    pub fn without_providers(cache: Arc<dyn ResponseCache>) -> LlmEngine {
        LlmEngine {
            providers: BTreeMap::new(),
            cache,
            ledger: Arc::new(MemoryLedger::default()),
            validators: Mutex::default(),
        }
    }

    /// The compiled answer schema for `labels` and `fields`, compiled on first use.
    pub fn answer_validator(
        &self,
        labels: &[String],
        fields: &BTreeMap<String, FieldSpec>,
    ) -> Result<Arc<AnswerValidator>, String> {
        let key = validator_key(labels, fields);
        // A poisoned lock only means another thread panicked while holding it: the map is
        // still a valid cache.
        if let Some(v) = self
            .validators
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(Arc::clone(v));
        }
        let validator = Arc::new(AnswerValidator::new(labels, fields)?);
        let mut map = self.validators.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VALIDATORS {
            map.clear();
        }
        map.insert(key, Arc::clone(&validator));
        Ok(validator)
    }

    /// A configured provider.
    pub fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.get(name).map(Arc::as_ref)
    }

    async fn call(
        &self,
        charter: &str,
        limits: &Limits,
        provider: &Provider,
        req: &ChatRequest,
        usage: &mut Usage,
    ) -> Call {
        if let Err(reason) = limits::admit(&*self.ledger, charter, limits).await {
            return Call::Limited(reason);
        }
        match provider.complete(req).await {
            Ok(c) => {
                let s = provider.settings();
                let cost = s
                    .price
                    .map(|p| p.cost(c.prompt_tokens, c.completion_tokens))
                    .unwrap_or(0.0);
                usage.add(&c, cost);
                let spend = Spend {
                    tokens: c.prompt_tokens + c.completion_tokens,
                    cost,
                };
                limits::record(&*self.ledger, charter, spend).await;
                Call::Answered(c)
            }
            Err(e) => Call::ProviderFailed(e),
        }
    }

    /// Classifies one event: renders the prompt, asks each provider in order until one
    /// answers, validates the answer (one repair request if it is invalid) and returns it.
    /// Every failure is an [`LlmFailure`] whose reason the run escalates with.
    pub async fn classify(&self, req: &ClassifyRequest<'_>) -> Result<LlmAnswer, LlmFailure> {
        let mut usage = Usage::default();
        let fail = |reason: String, usage: &Usage| LlmFailure {
            reason,
            usage: usage.clone(),
        };
        let validator = self
            .answer_validator(req.labels, req.fields)
            .map_err(|e| fail(format!("the answer schema is invalid: {e}"), &usage))?;
        let rendered = prompt::render(
            req.prompt,
            req.text,
            req.labels,
            req.fields,
            req.context,
            req.redact,
        )
        .map_err(|e| fail(format!("the prompt could not be rendered: {e}"), &usage))?;
        let chat = ChatRequest {
            system: prompt::classify_system(req.labels, validator.schema()),
            messages: vec![Message {
                role: ChatRole::User,
                content: rendered.user,
            }],
            schema: Some(validator.schema().clone()),
        };
        if req.providers.is_empty() {
            return Err(fail("no LLM provider is configured".into(), &usage));
        }
        let mut notes = Vec::new();
        for name in req.providers {
            let Some(provider) = self.providers.get(name) else {
                notes.push(format!("provider `{name}` is not configured"));
                continue;
            };
            let s = provider.settings();
            let (_, body) = provider.request_body(&chat);
            let key = cache_key(&s.name, &s.model, &body);
            if let Some(hit) = self.cache.get(&key).await
                && let Ok(a) = validator.parse(&hit)
            {
                return Ok(answer(a, s, usage, true, false, notes));
            }
            let first = match self
                .call(req.charter, req.limits, provider, &chat, &mut usage)
                .await
            {
                Call::Answered(c) => c,
                Call::Limited(reason) => return Err(fail(reason, &usage)),
                Call::ProviderFailed(e) => {
                    tracing::warn!(charter = req.charter, error = %e, "LLM provider failed; trying the next one");
                    notes.push(e.to_string());
                    continue;
                }
            };
            let errors = match validator.parse(&first.text) {
                Ok(a) => {
                    self.cache.put(&key, first.text).await;
                    return Ok(answer(a, s, usage, false, false, notes));
                }
                Err(errors) => errors,
            };
            // One repair attempt on the same provider.
            let mut repair = chat.clone();
            repair.messages.push(Message {
                role: ChatRole::Assistant,
                content: first.text,
            });
            repair.messages.push(Message {
                role: ChatRole::User,
                content: prompt::repair_message(&errors),
            });
            let second = match self
                .call(req.charter, req.limits, provider, &repair, &mut usage)
                .await
            {
                Call::Answered(c) => c,
                Call::Limited(reason) => return Err(fail(reason, &usage)),
                Call::ProviderFailed(e) => {
                    return Err(fail(
                        format!("invalid model output ({errors}); the repair request failed: {e}"),
                        &usage,
                    ));
                }
            };
            return match validator.parse(&second.text) {
                Ok(a) => {
                    // Cached under the original request: the same input gets this answer.
                    self.cache.put(&key, second.text).await;
                    Ok(answer(a, s, usage, false, true, notes))
                }
                Err(again) => Err(fail(
                    format!("invalid model output after one repair attempt: {again}"),
                    &usage,
                )),
            };
        }
        Err(fail(
            format!("no LLM provider answered: {}", notes.join("; ")),
            &usage,
        ))
    }

    /// Drafts a text for an action: renders the prompt, asks the providers in order (no
    /// schema, no cache: a draft is read by a human and may differ between runs).
    pub async fn draft(&self, req: &DraftRequest<'_>) -> Result<Draft, LlmFailure> {
        let mut usage = Usage::default();
        let rendered = prompt::render(
            req.prompt,
            req.text,
            &[],
            &BTreeMap::new(),
            req.context,
            req.redact,
        )
        .map_err(|e| LlmFailure {
            reason: format!("the draft prompt could not be rendered: {e}"),
            usage: usage.clone(),
        })?;
        let chat = ChatRequest {
            system: prompt::draft_system(),
            messages: vec![Message {
                role: ChatRole::User,
                content: rendered.user,
            }],
            schema: None,
        };
        let mut notes = Vec::new();
        for name in req.providers {
            let Some(provider) = self.providers.get(name) else {
                notes.push(format!("provider `{name}` is not configured"));
                continue;
            };
            match self
                .call(req.charter, req.limits, provider, &chat, &mut usage)
                .await
            {
                Call::Answered(c) => {
                    let s = provider.settings();
                    return Ok(Draft {
                        text: c.text.trim().to_string(),
                        provider: s.name.clone(),
                        model: s.model.clone(),
                        usage,
                    });
                }
                Call::Limited(reason) => return Err(LlmFailure { reason, usage }),
                Call::ProviderFailed(e) => notes.push(e.to_string()),
            }
        }
        Err(LlmFailure {
            reason: format!("no LLM provider drafted: {}", notes.join("; ")),
            usage,
        })
    }
}

fn answer(
    a: ParsedAnswer,
    s: &ProviderSettings,
    usage: Usage,
    cached: bool,
    repaired: bool,
    fallback_notes: Vec<String>,
) -> LlmAnswer {
    LlmAnswer {
        label: a.label,
        confidence: a.confidence,
        fields: a.fields,
        reason: a.reason,
        provider: s.name.clone(),
        model: s.model.clone(),
        usage,
        cached,
        repaired,
        fallback_notes,
    }
}
