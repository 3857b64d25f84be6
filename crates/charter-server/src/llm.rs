//! The LLM side of the application: one [`LlmEngine`] per prepared project, built at start
//! from the project's `providers:` and owned by the application state
//! ([`crate::AppState::llm`]), with the exact-match response cache ([`StoreCache`]) and the
//! limits' counts, rate windows and daily spend ([`StoreLedger`]) kept in the store, shared
//! by every node and kept across restarts. Callers without a store (`charter eval`,
//! `charter decide`) build one with [`memory_backing`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use charter_core::config::{LlmStage, OnExhausted, ProviderType, StructuredMode};
use charter_decide::llm::{
    CacheFuture, Limits, LlmEngine, MemoryCache, MemoryLedger, Price, ProviderKind,
    ProviderSettings, ResponseCache, SchemaMode, Spend, SpendDelta, Usage, UsageLedger,
};
use charter_store::{DecisionStore, LlmSpend, Store};

use crate::now_millis;
use crate::project::{Runtime, resolve_secret};

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

/// The LLM engine of `runtime`, built from the project's `providers:` (API keys resolved
/// now) with the cache and ledger `make_backing` gives. The server builds one at start
/// ([`crate::AppState::new`]); every run shares it, and with it the response cache and the
/// rate-limit counters.
pub fn llm_engine(
    runtime: &Arc<Runtime>,
    make_backing: impl FnOnce() -> LlmBacking,
) -> Arc<LlmRuntime> {
    Arc::new(build_engine(runtime, make_backing()))
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
pub(crate) fn limits(stage: &LlmStage) -> Limits {
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

/// Count one LLM exchange (a classification or a draft) in the task's metrics: calls,
/// tokens and cost, each provider request's duration, the cache's hits and misses.
pub(crate) fn count_llm_usage(charter: &str, provider: &str, ok: bool, u: &Usage) {
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
