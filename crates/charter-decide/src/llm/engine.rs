//! [`LlmEngine`]: the providers of a project, the response cache and the limit counters, and
//! the two things a charter asks of them — classify an event, draft a text.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use charter_core::config::FieldSpec;
use charter_core::model::{EscalationReason, StageUsage};
use charter_core::template::Template;
use serde::Serialize;
use serde_json::Value;

use super::cache::{ResponseCache, cache_key};
use super::limits::{self, Limits, MemoryLedger, Refusal, Spend, UsageLedger};
use super::prompt;
use super::provider::{
    ChatRequest, ChatRole, Completion, Message, Provider, ProviderError, ProviderSettings,
    estimate_tokens,
};
use super::schema::{AnswerValidator, ParsedAnswer, validator_key};

/// One provider request as the metrics see it: which provider, how it ended (`ok` or an
/// escalation reason code) and how long it took, failed attempts and backoff included.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTiming {
    pub provider: String,
    pub outcome: &'static str,
    pub duration: Duration,
}

/// What the LLM calls of one decision (or draft) used, summed over calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Usage {
    /// Provider requests that got an answer (cache hits are not calls).
    pub calls: u32,
    /// HTTP attempts made, failed requests and retries included.
    pub attempts: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Some token counts are estimates (the server reported no `usage`).
    pub tokens_estimated: bool,
    /// From the provider's price; 0 when no price is configured.
    pub cost: f64,
    /// Wall time spent in provider requests, failed ones, retries and backoff included.
    pub latency_ms: u64,
    /// Response-cache lookups that found an answer.
    pub cache_hits: u32,
    /// Response-cache lookups that found none.
    pub cache_misses: u32,
    /// Personal data replaced in the prompt's free text before sending, by kind (`email`,
    /// `phone`, `card`, `iban`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub redacted: BTreeMap<String, u32>,
    /// Every provider request, for the latency histogram.
    #[serde(skip)]
    pub requests: Vec<RequestTiming>,
}

impl Usage {
    fn answered(&mut self, c: &Completion, cost: f64) {
        self.calls += 1;
        self.prompt_tokens += c.prompt_tokens;
        self.completion_tokens += c.completion_tokens;
        self.tokens_estimated |= c.estimated;
        self.cost += cost;
    }

    fn timed(&mut self, provider: &str, outcome: &'static str, attempts: u32, took: Duration) {
        self.attempts += attempts;
        self.latency_ms += u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.requests.push(RequestTiming {
            provider: provider.to_string(),
            outcome,
            duration: took,
        });
    }

    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Adds `other` (another stage's or call's usage).
    pub fn add(&mut self, other: &Usage) {
        self.calls += other.calls;
        self.attempts += other.attempts;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.tokens_estimated |= other.tokens_estimated;
        self.cost += other.cost;
        self.latency_ms += other.latency_ms;
        self.cache_hits += other.cache_hits;
        self.cache_misses += other.cache_misses;
        self.requests.extend(other.requests.iter().cloned());
        for (k, n) in &other.redacted {
            *self.redacted.entry(k.clone()).or_default() += n;
        }
    }

    fn personal(&mut self, found: &super::pii::Found) {
        for (k, n) in found {
            *self.redacted.entry((*k).to_string()).or_default() += n;
        }
    }

    /// The structured usage recorded on a decision stage.
    pub fn stage_usage(&self) -> StageUsage {
        StageUsage {
            calls: self.calls,
            attempts: self.attempts,
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            tokens_estimated: self.tokens_estimated,
            cost: self.cost,
            latency_ms: self.latency_ms,
            redacted: self.redacted.clone(),
            cache: if self.cache_hits > 0 {
                Some("hit".into())
            } else if self.cache_misses > 0 {
                Some("miss".into())
            } else {
                None
            },
        }
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} call(s), {} prompt + {} completion tokens{}, cost {:.6}, {} ms",
            self.calls,
            self.prompt_tokens,
            self.completion_tokens,
            if self.tokens_estimated {
                " (estimated)"
            } else {
                ""
            },
            self.cost,
            self.latency_ms
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
    /// How long a validated answer is served from the cache; zero: the cache is neither
    /// read nor written.
    pub cache_ttl: Duration,
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

/// No usable answer: the run escalates with `reason`, or, with `retry_after`, is tried again
/// later.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmFailure {
    /// Why, as a code (the escalation's reason).
    pub kind: EscalationReason,
    pub reason: String,
    /// A limit is reached under `on_exhausted: wait` and its next window opens in this long
    /// (within `max_wait`): the caller should retry then rather than escalate.
    pub retry_after: Option<Duration>,
    /// The charter's own budget or rate limit refused the request (its `on_exhausted`
    /// applies), as opposed to a provider failing.
    pub limited: bool,
    /// What was spent before giving up.
    pub usage: Usage,
}

impl LlmFailure {
    fn new(kind: EscalationReason, reason: String, usage: &Usage) -> LlmFailure {
        LlmFailure {
            kind,
            reason,
            retry_after: None,
            limited: false,
            usage: usage.clone(),
        }
    }

    fn refused(r: Refusal, usage: &Usage) -> LlmFailure {
        LlmFailure {
            kind: r.kind,
            reason: r.reason,
            retry_after: r.retry_after,
            limited: r.kind != EscalationReason::Configuration,
            usage: usage.clone(),
        }
    }
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
    /// A repair: the refused earlier draft and why it was refused; sent after the prompt as
    /// the assistant's answer and a user message asking again.
    pub repair: Option<(&'a str, &'a str)>,
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
/// One provider's classification attempt, as the repair request needs it.
struct Attempt<'a> {
    provider: &'a Provider,
    chat: &'a ChatRequest,
    validator: &'a AnswerValidator,
    /// The cache key of the original request, when answers are cached.
    key: Option<String>,
}

enum Call {
    Answered(Completion),
    /// The provider failed; the next one may be tried.
    ProviderFailed(ProviderError),
    /// A limit stopped the request; the whole decision escalates (or waits).
    Limited(Refusal),
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
        let s = provider.settings();
        // The reservation: the prompt's estimate and the most the answer may use.
        let reserve_tokens = (estimate_tokens(req.chars()), u64::from(s.max_tokens));
        let reserve = Spend {
            tokens: reserve_tokens.0 + reserve_tokens.1,
            cost: s
                .price
                .map(|p| p.cost(reserve_tokens.0, reserve_tokens.1))
                .unwrap_or(0.0),
        };
        let hold = match limits::admit(&*self.ledger, charter, limits, reserve).await {
            Ok(h) => h,
            Err(r) => return Call::Limited(r),
        };
        let started = Instant::now();
        let result = provider.complete(req).await;
        let took = started.elapsed();
        match result {
            Ok(c) => {
                let cost = s
                    .price
                    .map(|p| p.cost(c.prompt_tokens, c.completion_tokens))
                    .unwrap_or(0.0);
                usage.answered(&c, cost);
                usage.timed(&s.name, "ok", c.attempts, took);
                let spend = Spend {
                    tokens: c.prompt_tokens + c.completion_tokens,
                    cost,
                };
                limits::settle(&*self.ledger, charter, hold, spend).await;
                Call::Answered(c)
            }
            Err(e) => {
                usage.timed(&s.name, e.escalation().as_str(), e.attempts(), took);
                // Nothing is known to be spent: the reservation is given back.
                limits::settle(&*self.ledger, charter, hold, Spend::default()).await;
                Call::ProviderFailed(e)
            }
        }
    }

    /// Classifies one event: renders the prompt, asks each provider in order until one
    /// answers, validates the answer (one repair request if it is invalid) and returns it.
    /// Every failure is an [`LlmFailure`] whose kind and reason the run escalates with.
    pub async fn classify(&self, req: &ClassifyRequest<'_>) -> Result<LlmAnswer, LlmFailure> {
        use EscalationReason as R;
        let mut usage = Usage::default();
        let (validator, chat) = self
            .classify_chat(req, &mut usage)
            .map_err(|reason| LlmFailure::new(R::Configuration, reason, &usage))?;
        if req.providers.is_empty() {
            return Err(LlmFailure::new(
                R::Configuration,
                "no LLM provider is configured".into(),
                &usage,
            ));
        }
        let mut notes = Vec::new();
        // The kind of the last provider failure (what the escalation is about when every
        // provider failed).
        let mut last_kind = R::Configuration;
        for name in req.providers {
            let Some(provider) = self.providers.get(name) else {
                notes.push(format!("provider `{name}` is not configured"));
                continue;
            };
            let s = provider.settings();
            let (_, body) = provider.request_body(&chat);
            let key = cache_key(&s.name, &s.model, &body);
            let cached = !req.cache_ttl.is_zero();
            if cached {
                if let Some(hit) = self.cache.get(&key).await
                    && let Ok(a) = validator.parse(&hit)
                {
                    usage.cache_hits += 1;
                    return Ok(answer(a, s, usage, true, false, notes));
                }
                usage.cache_misses += 1;
            }
            let first = match self
                .call(req.charter, req.limits, provider, &chat, &mut usage)
                .await
            {
                Call::Answered(c) => c,
                Call::Limited(r) => return Err(LlmFailure::refused(r, &usage)),
                Call::ProviderFailed(e) => {
                    tracing::warn!(charter = req.charter, error = %e, "LLM provider failed; trying the next one");
                    last_kind = e.escalation();
                    notes.push(e.to_string());
                    continue;
                }
            };
            let errors = match validator.parse(&first.text) {
                Ok(a) => {
                    if cached {
                        self.cache.put(&key, first.text, req.cache_ttl).await;
                    }
                    return Ok(answer(a, s, usage, false, false, notes));
                }
                Err(errors) => errors,
            };
            let attempt = Attempt {
                provider,
                chat: &chat,
                validator: &validator,
                key: cached.then_some(key),
            };
            return self
                .repair(req, &attempt, first.text, errors, usage, notes)
                .await;
        }
        Err(LlmFailure::new(
            last_kind,
            format!("no LLM provider answered: {}", notes.join("; ")),
            &usage,
        ))
    }

    /// The answer validator and the chat request of a classification (the prompt rendered,
    /// personal data counted in `usage`), or why there is none: a configuration error.
    fn classify_chat(
        &self,
        req: &ClassifyRequest<'_>,
        usage: &mut Usage,
    ) -> Result<(Arc<AnswerValidator>, ChatRequest), String> {
        let validator = self
            .answer_validator(req.labels, req.fields)
            .map_err(|e| format!("the answer schema is invalid: {e}"))?;
        let rendered = prompt::render(
            req.prompt,
            req.text,
            req.labels,
            req.fields,
            req.context,
            req.redact,
        )
        .map_err(|e| format!("the prompt could not be rendered: {e}"))?;
        usage.personal(&rendered.personal);
        let chat = ChatRequest {
            system: prompt::classify_system(req.labels, validator.schema()),
            messages: vec![Message {
                role: ChatRole::User,
                content: rendered.user,
            }],
            schema: Some(validator.schema().clone()),
        };
        Ok((validator, chat))
    }

    /// One repair attempt on the provider whose first answer (`first`) was invalid
    /// (`errors`): the answer if the second one is valid (cached under the original
    /// request), otherwise the failure.
    async fn repair(
        &self,
        req: &ClassifyRequest<'_>,
        attempt: &Attempt<'_>,
        first: String,
        errors: String,
        mut usage: Usage,
        notes: Vec<String>,
    ) -> Result<LlmAnswer, LlmFailure> {
        let mut repair = attempt.chat.clone();
        repair.messages.push(Message {
            role: ChatRole::Assistant,
            content: first,
        });
        repair.messages.push(Message {
            role: ChatRole::User,
            content: prompt::repair_message(&errors),
        });
        let second = match self
            .call(
                req.charter,
                req.limits,
                attempt.provider,
                &repair,
                &mut usage,
            )
            .await
        {
            Call::Answered(c) => c,
            Call::Limited(r) => return Err(LlmFailure::refused(r, &usage)),
            Call::ProviderFailed(e) => {
                return Err(LlmFailure::new(
                    e.escalation(),
                    format!("invalid model output ({errors}); the repair request failed: {e}"),
                    &usage,
                ));
            }
        };
        match attempt.validator.parse(&second.text) {
            Ok(a) => {
                // Cached under the original request: the same input gets this answer.
                if let Some(key) = &attempt.key {
                    self.cache.put(key, second.text, req.cache_ttl).await;
                }
                Ok(answer(
                    a,
                    attempt.provider.settings(),
                    usage,
                    false,
                    true,
                    notes,
                ))
            }
            Err(again) => Err(LlmFailure::new(
                EscalationReason::InvalidOutput,
                format!("invalid model output after one repair attempt: {again}"),
                &usage,
            )),
        }
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
        .map_err(|e| {
            LlmFailure::new(
                EscalationReason::Configuration,
                format!("the draft prompt could not be rendered: {e}"),
                &usage,
            )
        })?;
        usage.personal(&rendered.personal);
        let mut messages = vec![Message {
            role: ChatRole::User,
            content: rendered.user,
        }];
        if let Some((earlier, note)) = req.repair {
            messages.push(Message {
                role: ChatRole::Assistant,
                content: earlier.to_string(),
            });
            messages.push(Message {
                role: ChatRole::User,
                content: note.to_string(),
            });
        }
        let chat = ChatRequest {
            system: prompt::draft_system(),
            messages,
            schema: None,
        };
        let mut notes = Vec::new();
        let mut last_kind = EscalationReason::Configuration;
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
                Call::Limited(r) => return Err(LlmFailure::refused(r, &usage)),
                Call::ProviderFailed(e) => {
                    last_kind = e.escalation();
                    notes.push(e.to_string());
                }
            }
        }
        Err(LlmFailure::new(
            last_kind,
            format!("no LLM provider drafted: {}", notes.join("; ")),
            &usage,
        ))
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
