//! `providers:` of `charter.yaml`: the LLM endpoints that `llm` stages call, with their
//! prices and structured-output mode.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Deserialize;

use crate::config::components::project::ProjectChecker;
use crate::config::diag::{Check, valid_name};
use crate::config::raw::{Entries, RawBreaker, S, Scalar};
use crate::config::{CircuitBreakerPolicy, SecretRef};

/// A model provider (`providers:` in charter.yaml).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(rename = "type")]
    pub kind: Option<S<String>>,
    pub base_url: Option<S<String>>,
    pub api_key: Option<S<String>>,
    pub model: Option<S<String>>,
    pub mode: Option<S<String>>,
    pub timeout: Option<S<Scalar>>,
    pub max_retries: Option<S<i64>>,
    pub max_tokens: Option<S<i64>>,
    pub price: Option<S<RawPrice>>,
    pub allow_private: Option<S<bool>>,
    pub api_version: Option<S<String>>,
    pub circuit_breaker: Option<S<RawBreaker>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrice {
    pub input_per_mtok: Option<S<f64>>,
    pub output_per_mtok: Option<S<f64>>,
}

/// A model provider an `llm` stage (or a draft) can call.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderDef {
    pub name: String,
    pub kind: ProviderType,
    /// API root: `https://api.openai.com/v1` (default for `openai`),
    /// `https://api.anthropic.com/v1` (default for `anthropic`), a local server's `/v1`, or
    /// Ollama's root in `ollama` mode.
    pub base_url: String,
    /// Optional for local servers.
    pub api_key: Option<SecretRef>,
    pub model: String,
    pub mode: StructuredMode,
    /// Per-attempt timeout (default 30 s).
    pub timeout: Duration,
    /// Retries on 429, 5xx, timeouts and connection errors (default 3).
    pub max_retries: u32,
    /// Output tokens asked for per request (default 1024).
    pub max_tokens: u32,
    pub price: Option<TokenPrice>,
    /// The endpoint may be a loopback or private address (a model on this machine or the
    /// local network); otherwise the outbound guard refuses such addresses.
    pub allow_private: bool,
    /// Azure OpenAI's `api-version` (such as `2024-10-21`): sent as that query parameter,
    /// with the key in an `api-key` header instead of `Authorization: Bearer`.
    pub api_version: Option<String>,
    /// After `failures` consecutive failed requests (unreachable, timed out, HTTP 5xx) the
    /// provider is not asked for `cool_down` (the next provider of a stage's `fallback` is
    /// asked at once); then one probe request decides. Default 5 failures, 30 s.
    pub circuit_breaker: CircuitBreakerPolicy,
}

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderType {
    /// OpenAI-compatible chat completions (OpenAI, vLLM, llama.cpp, LM Studio, Ollama).
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
}

/// How an OpenAI-compatible server is asked for structured output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StructuredMode {
    /// `response_format: {type: json_schema, ...}` (OpenAI, vLLM): the default.
    JsonSchema,
    /// `response_format: {type: json_object, schema}` (llama-cpp-python).
    JsonObject,
    /// Ollama's native `/api/chat` with `format: <schema>`.
    Ollama,
}

/// Price per million tokens, for cost metering and cost budgets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenPrice {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl ProjectChecker<'_> {
    /// `providers:` of charter.yaml, and every provider name written (valid or not).
    pub(crate) fn providers(
        &mut self,
        raw: Option<S<Entries<S<RawProvider>>>>,
    ) -> (BTreeMap<String, ProviderDef>, BTreeSet<String>) {
        let mut providers = BTreeMap::new();
        let mut declared_providers = BTreeSet::new();
        if let Some(raw_providers) = raw {
            for (name, raw) in raw_providers.value.0 {
                declared_providers.insert(name.value.clone());
                if !valid_name(&name.value) {
                    self.err(
                        name.referenced,
                        format!(
                            "provider name `{}` is not allowed; expected lower-case letters, digits, `-` and `_`",
                            name.value
                        ),
                    );
                }
                if let Some(p) = self.provider(&name, raw) {
                    providers.insert(name.value.clone(), p);
                }
            }
        }
        (providers, declared_providers)
    }

    pub(crate) fn provider(
        &mut self,
        name: &S<String>,
        raw: S<RawProvider>,
    ) -> Option<ProviderDef> {
        let at = raw.referenced;
        let p: RawProvider = raw.value;
        let kind = match &p.kind {
            Some(k) => self.one_of(
                k,
                "type",
                &[
                    ("openai", ProviderType::OpenAi),
                    ("anthropic", ProviderType::Anthropic),
                ],
            ),
            None => {
                self.err(
                    at,
                    "missing `type`: expected `openai` (any OpenAI-compatible server) or `anthropic`",
                );
                None
            }
        };
        let base_url = match (&p.base_url, kind) {
            (Some(u), _) => self.absolute_url(u, "base_url"),
            (None, Some(ProviderType::Anthropic)) => Some("https://api.anthropic.com/v1".into()),
            (None, _) => Some("https://api.openai.com/v1".into()),
        };
        let api_key = match &p.api_key {
            Some(k) => self.secret(k, "api_key").map(Some),
            None => Some(None),
        };
        let model = self.required_text(
            &p.model,
            at,
            "model",
            &format!(
                "the model provider `{}` serves, such as `gpt-4o-mini`",
                name.value
            ),
        );
        let mode = match &p.mode {
            Some(m) => self.one_of(
                m,
                "mode",
                &[
                    ("json_schema", StructuredMode::JsonSchema),
                    ("json_object", StructuredMode::JsonObject),
                    ("ollama", StructuredMode::Ollama),
                ],
            ),
            None => Some(StructuredMode::JsonSchema),
        };
        let api_version = self.api_version(&p, kind);
        let timeout = self.duration_or(&p.timeout, "timeout", Duration::from_secs(30));
        let max_retries = self.max_retries(&p);
        let max_tokens = match &p.max_tokens {
            Some(t) => self
                .positive(t, "max_tokens")
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
            None => Some(1024),
        };
        let price = self.price(&p);
        let failures = match p
            .circuit_breaker
            .as_ref()
            .and_then(|b| b.value.failures.as_ref())
        {
            None => Some(5),
            Some(f) => self
                .positive(f, "failures")
                .map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        };
        let cool_down = match &p.circuit_breaker {
            Some(b) => self.duration_or(&b.value.cool_down, "cool_down", Duration::from_secs(30)),
            None => Duration::from_secs(30),
        };
        Some(ProviderDef {
            name: name.value.clone(),
            kind: kind?,
            base_url: base_url?,
            api_key: api_key?,
            model: model?,
            mode: mode?,
            timeout,
            max_retries: max_retries?,
            max_tokens: max_tokens?,
            price: price?,
            allow_private: p.allow_private.as_ref().is_some_and(|b| b.value),
            api_version: api_version?,
            circuit_breaker: CircuitBreakerPolicy {
                failures: failures?,
                cool_down,
            },
        })
    }

    /// `api_version:` (Azure OpenAI only): letters, digits, `-` and `.`.
    fn api_version(
        &mut self,
        p: &RawProvider,
        kind: Option<ProviderType>,
    ) -> Option<Option<String>> {
        match (&p.api_version, kind) {
            (None, _) => Some(None),
            (Some(v), Some(ProviderType::Anthropic)) => {
                self.err(
                    v.referenced,
                    "`api_version` is Azure OpenAI's; it does not apply to an `anthropic` provider",
                );
                None
            }
            (Some(v), _) => {
                let text = v.value.trim();
                if !text.is_empty()
                    && text
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                {
                    Some(Some(text.to_string()))
                } else {
                    self.err(
                        v.referenced,
                        format!(
                            "`api_version` is `{}`; expected an Azure OpenAI API version such as `2024-10-21`",
                            v.value
                        ),
                    );
                    None
                }
            }
        }
    }

    /// `max_retries:`, 0 to 10 (default 3).
    fn max_retries(&mut self, p: &RawProvider) -> Option<u32> {
        match &p.max_retries {
            Some(r) => match u32::try_from(r.value) {
                Ok(n) if n <= 10 => Some(n),
                _ => {
                    self.err(
                        r.referenced,
                        format!(
                            "`max_retries` is {}; expected a whole number from 0 to 10",
                            r.value
                        ),
                    );
                    None
                }
            },
            None => Some(3),
        }
    }

    /// `price:`: both prices per million tokens, each 0 or more.
    fn price(&mut self, p: &RawProvider) -> Option<Option<TokenPrice>> {
        match &p.price {
            None => Some(None),
            Some(pr) => {
                let mut one = |v: &Option<S<f64>>, key: &str| match v {
                    Some(x) if x.value >= 0.0 && x.value.is_finite() => Some(x.value),
                    Some(x) => {
                        self.err(
                            x.referenced,
                            format!("`{key}` is {}; expected a price of 0 or more", x.value),
                        );
                        None
                    }
                    None => {
                        self.err(
                            pr.referenced,
                            format!("missing `{key}`: expected the price per million tokens"),
                        );
                        None
                    }
                };
                let input = one(&pr.value.input_per_mtok, "input_per_mtok");
                let output = one(&pr.value.output_per_mtok, "output_per_mtok");
                Some(Some(TokenPrice {
                    input_per_mtok: input?,
                    output_per_mtok: output?,
                }))
            }
        }
    }
}
