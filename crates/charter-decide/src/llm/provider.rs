//! One model endpoint: request shapes per API, timeouts, retries with backoff.
//!
//! A [`Provider`] sends one [`ChatRequest`] and returns the model's text with the token
//! counts the API reported. It retries 429 and 5xx answers, timeouts and connection errors
//! up to `max_retries` times with full-jitter exponential backoff, waiting at least what a
//! `Retry-After` header asks for (bounded by `max_backoff`). It never interprets the text:
//! validation is the caller's job ([`super::schema`]).

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use charter_core::config::RetryPolicy;
use charter_core::model::EscalationReason;
use serde_json::{Value, json};

/// Largest response body read from a provider.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// Characters of an error body kept in an error message.
const ERROR_EXCERPT: usize = 300;
/// Version header Anthropic's Messages API requires.
const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Name of the tool Anthropic is forced to call to return structured output.
const ANTHROPIC_TOOL: &str = "record_answer";

/// Which API a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// `POST {base_url}/chat/completions` (OpenAI, vLLM, llama.cpp, LM Studio, Ollama `/v1`),
    /// or Ollama's native `POST {base_url}/api/chat` in [`SchemaMode::Ollama`].
    OpenAi,
    /// Anthropic's `POST {base_url}/messages`; structured output through a forced tool call.
    Anthropic,
}

/// How an OpenAI-compatible server is asked for structured output. Servers differ; every
/// answer is validated whatever the mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaMode {
    /// `response_format: {type: json_schema, json_schema: {name, strict, schema}}` (OpenAI,
    /// vLLM, LM Studio, Ollama `/v1`).
    #[default]
    JsonSchema,
    /// `response_format: {type: json_object, schema}` (llama-cpp-python's server).
    JsonObject,
    /// Ollama's native API: `POST {base_url}/api/chat` with `format: <schema>`.
    Ollama,
}

/// Prices in a currency unit (usually USD) per million tokens; used to compute cost.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// Cost of one call.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> f64 {
        (prompt_tokens as f64 * self.input_per_mtok
            + completion_tokens as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// A provider as configured, with its API key already resolved.
#[derive(Clone, PartialEq)]
pub struct ProviderSettings {
    /// The name charters refer to (`default`, `backup`).
    pub name: String,
    pub kind: ProviderKind,
    /// For example `https://api.openai.com/v1`, `http://127.0.0.1:8081/v1`,
    /// `https://api.anthropic.com/v1`, or `http://127.0.0.1:11434` in Ollama mode.
    pub base_url: String,
    /// Sent as `Authorization: Bearer` (OpenAI-compatible) or `x-api-key` (Anthropic).
    /// Optional for local servers.
    pub api_key: Option<String>,
    pub model: String,
    pub mode: SchemaMode,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    /// Backoff ceiling before the first retry, doubled each time.
    pub initial_backoff: Duration,
    /// Upper bound on one wait, `Retry-After` included.
    pub max_backoff: Duration,
    /// `max_tokens` asked for in each request.
    pub max_tokens: u32,
    pub price: Option<Price>,
    /// Whether the endpoint may be a loopback, private, link-local or metadata address (a
    /// model served on this machine or the local network). When `false` (the default) every
    /// address the host resolves to is checked by the outbound guard and such destinations
    /// are refused, as for connectors.
    pub allow_private: bool,
    /// Azure OpenAI's `api-version`: when set, sent as that query parameter of the chat
    /// completions URL, with the key in an `api-key` header (Azure's key authentication)
    /// instead of `Authorization: Bearer`.
    pub api_version: Option<String>,
    /// Consecutive failed requests (unreachable, timed out, HTTP 5xx or an unreadable body,
    /// each after its retries) that open the provider's circuit: while open, requests fail
    /// at once with [`ProviderError::CircuitOpen`] and a stage's fallback is asked instead.
    pub breaker_failures: u32,
    /// How long the circuit stays open before one probe request is let through.
    pub breaker_cool_down: Duration,
}

impl ProviderSettings {
    /// Settings with the defaults: JSON-schema mode, 30 s timeout, 3 retries starting at
    /// 500 ms and capped at 30 s, 1024 output tokens, no key, no price, a circuit breaker
    /// opening after 5 consecutive failed requests for 30 s.
    pub fn new(name: &str, kind: ProviderKind, base_url: &str, model: &str) -> ProviderSettings {
        ProviderSettings {
            name: name.to_string(),
            kind,
            base_url: base_url.to_string(),
            api_key: None,
            model: model.to_string(),
            mode: SchemaMode::default(),
            timeout: Duration::from_secs(30),
            max_retries: 3,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_tokens: 1024,
            price: None,
            allow_private: false,
            api_version: None,
            breaker_failures: 5,
            breaker_cool_down: Duration::from_secs(30),
        }
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("model", &self.model)
            .field("mode", &self.mode)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatRole {
    User,
    Assistant,
}

impl ChatRole {
    fn as_str(self) -> &'static str {
        match self {
            ChatRole::User => "user",
            ChatRole::Assistant => "assistant",
        }
    }
}

/// One message of the conversation (the system message is separate).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: ChatRole,
    pub content: String,
}

/// What to send: a system message, the conversation, and the answer schema (`None` asks for
/// plain text, as drafts do).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub system: String,
    pub messages: Vec<Message>,
    pub schema: Option<Value>,
}

impl ChatRequest {
    /// Characters of text sent: the system message and every message's content.
    pub fn chars(&self) -> usize {
        self.system.chars().count()
            + self
                .messages
                .iter()
                .map(|m| m.content.chars().count())
                .sum::<usize>()
    }
}

/// Tokens estimated from characters when a server reports no `usage`: one token per 4
/// characters, rounded up (close for English text with common tokenizers; the budget's
/// bound in [`super::limits`] is stated in these estimates for such servers).
pub fn estimate_tokens(chars: usize) -> u64 {
    u64::try_from(chars).unwrap_or(u64::MAX).div_ceil(4)
}

/// The model's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The answer text (for Anthropic's forced tool call: the tool input as JSON).
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Time from the first attempt to the answer, backoff included.
    pub latency: Duration,
    /// HTTP attempts made (1 when the first one answered).
    pub attempts: u32,
    /// The server reported no token counts: both are [`estimate_tokens`] of the characters
    /// sent and received.
    pub estimated: bool,
}

/// Why a provider gave no answer. Messages never contain the API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider `{provider}`: HTTP {status} after {attempts} attempt(s): {body}")]
    Http {
        provider: String,
        status: u16,
        attempts: u32,
        body: String,
    },
    #[error("provider `{provider}`: timed out after {attempts} attempt(s) ({timeout:?} each)")]
    Timeout {
        provider: String,
        attempts: u32,
        timeout: Duration,
    },
    #[error("provider `{provider}`: request failed after {attempts} attempt(s): {message}")]
    Transport {
        provider: String,
        attempts: u32,
        message: String,
    },
    #[error("provider `{provider}`: unexpected response: {message}")]
    BadResponse { provider: String, message: String },
    #[error("provider `{provider}`: HTTP client could not be built: {message}")]
    Client { provider: String, message: String },
    /// The provider's circuit breaker is open after consecutive failures (nothing was sent).
    #[error(
        "provider `{provider}`: circuit breaker open after {failures} consecutive failed requests; not asking it for another {}s",
        retry_in.as_secs().max(1)
    )]
    CircuitOpen {
        provider: String,
        failures: u32,
        retry_in: Duration,
    },
    /// The outbound guard refused the endpoint's address (nothing was sent).
    #[error(
        "provider `{provider}`: refused by the outbound guard: {message}; set `allow_private: true` on the provider to allow it"
    )]
    Refused { provider: String, message: String },
}

impl ProviderError {
    /// The escalation reason this failure stands for.
    pub fn escalation(&self) -> EscalationReason {
        match self {
            ProviderError::Http { status: 429, .. } => EscalationReason::RateLimited,
            ProviderError::Http { .. } | ProviderError::BadResponse { .. } => {
                EscalationReason::ProviderError
            }
            ProviderError::Timeout { .. } => EscalationReason::Timeout,
            ProviderError::Transport { .. } | ProviderError::CircuitOpen { .. } => {
                EscalationReason::ProviderUnavailable
            }
            ProviderError::Client { .. } => EscalationReason::Configuration,
            ProviderError::Refused { .. } => EscalationReason::RefusedAddress,
        }
    }

    /// HTTP attempts made before giving up (0 when nothing was sent).
    pub fn attempts(&self) -> u32 {
        match self {
            ProviderError::Http { attempts, .. }
            | ProviderError::Timeout { attempts, .. }
            | ProviderError::Transport { attempts, .. } => *attempts,
            ProviderError::BadResponse { .. } => 1,
            ProviderError::Client { .. }
            | ProviderError::Refused { .. }
            | ProviderError::CircuitOpen { .. } => 0,
        }
    }
}

/// One failed attempt, and whether trying again may help.
struct AttemptFailure {
    retryable: bool,
    retry_after: Option<Duration>,
    error: ProviderError,
}

/// A configured endpoint with its HTTP client. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Provider {
    settings: ProviderSettings,
    client: reqwest::Client,
    breaker: charter_connect::breaker::CircuitBreaker,
}

impl Provider {
    /// Builds the HTTP client (installing the rustls crypto provider if none is installed).
    /// Redirects are not followed; unless `allow_private`, host names resolve through the
    /// outbound guard.
    pub fn new(settings: ProviderSettings) -> Result<Provider, ProviderError> {
        charter_connect::install_crypto_provider();
        let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
        if !settings.allow_private {
            builder =
                builder.dns_resolver(std::sync::Arc::new(charter_connect::ssrf::GuardedResolver));
        }
        let client = builder.build().map_err(|e| ProviderError::Client {
            provider: settings.name.clone(),
            message: e.to_string(),
        })?;
        let breaker = charter_connect::breaker::CircuitBreaker::new(
            settings.name.clone(),
            charter_connect::breaker::BreakerPolicy {
                failures: settings.breaker_failures,
                cool_down: settings.breaker_cool_down,
            },
        );
        Ok(Provider {
            settings,
            client,
            breaker,
        })
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    /// The URL and JSON body this provider sends for `req`. Deterministic, so the body
    /// doubles as the response-cache key.
    pub fn request_body(&self, req: &ChatRequest) -> (String, Value) {
        let s = &self.settings;
        let base = s.base_url.trim_end_matches('/');
        match (s.kind, s.mode) {
            (ProviderKind::Anthropic, _) => {
                let messages: Vec<Value> = req
                    .messages
                    .iter()
                    .map(|m| json!({"role": m.role.as_str(), "content": m.content}))
                    .collect();
                let mut body = json!({
                    "model": s.model,
                    "max_tokens": s.max_tokens,
                    "temperature": 0,
                    "system": req.system,
                    "messages": messages,
                });
                if let Some(schema) = &req.schema {
                    body["tools"] = json!([{
                        "name": ANTHROPIC_TOOL,
                        "description": "Record the answer. Call this exactly once.",
                        "input_schema": schema,
                    }]);
                    body["tool_choice"] = json!({"type": "tool", "name": ANTHROPIC_TOOL});
                }
                (format!("{base}/messages"), body)
            }
            (ProviderKind::OpenAi, mode) => {
                let mut messages = vec![json!({"role": "system", "content": req.system})];
                messages.extend(
                    req.messages
                        .iter()
                        .map(|m| json!({"role": m.role.as_str(), "content": m.content})),
                );
                if mode == SchemaMode::Ollama {
                    let mut body = json!({
                        "model": s.model,
                        "messages": messages,
                        "stream": false,
                        "options": {"temperature": 0, "num_predict": s.max_tokens},
                    });
                    if let Some(schema) = &req.schema {
                        body["format"] = schema.clone();
                    }
                    return (format!("{base}/api/chat"), body);
                }
                let mut body = json!({
                    "model": s.model,
                    "messages": messages,
                    "temperature": 0,
                    "max_tokens": s.max_tokens,
                });
                if let Some(schema) = &req.schema {
                    body["response_format"] = match mode {
                        SchemaMode::JsonObject => json!({"type": "json_object", "schema": schema}),
                        _ => json!({
                            "type": "json_schema",
                            "json_schema": {"name": "charter_answer", "strict": true, "schema": schema},
                        }),
                    };
                }
                let url = match &s.api_version {
                    Some(v) => format!("{base}/chat/completions?api-version={v}"),
                    None => format!("{base}/chat/completions"),
                };
                (url, body)
            }
        }
    }

    /// Sends `req`, retrying what may succeed on another try, unless the provider's circuit
    /// breaker is open. The request's outcome (after its retries) counts in the breaker:
    /// unreachable, timed out, HTTP 5xx and unreadable answers are failures.
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, ProviderError> {
        let (url, body) = self.request_body(req);
        self.guard(&url)?;
        if let Err(open) = self.breaker.admit() {
            return Err(ProviderError::CircuitOpen {
                provider: self.settings.name.clone(),
                failures: open.failures,
                retry_in: open.retry_in,
            });
        }
        let result = self.send_with_retries(req, &url, &body).await;
        let failed = match &result {
            Ok(_) => false,
            Err(ProviderError::Http { status, .. }) => *status >= 500,
            Err(
                ProviderError::Timeout { .. }
                | ProviderError::Transport { .. }
                | ProviderError::BadResponse { .. },
            ) => true,
            Err(_) => false,
        };
        self.breaker.record(failed);
        result
    }

    async fn send_with_retries(
        &self,
        req: &ChatRequest,
        url: &str,
        body: &Value,
    ) -> Result<Completion, ProviderError> {
        let policy = RetryPolicy {
            max_attempts: self.settings.max_retries.saturating_add(1),
            initial_backoff: self.settings.initial_backoff,
            max_backoff: self.settings.max_backoff,
        };
        let started = Instant::now();
        let mut attempt = 1u32;
        loop {
            match self.attempt(url, body, attempt).await {
                Ok((text, prompt_tokens, completion_tokens)) => {
                    let estimated = prompt_tokens == 0 && completion_tokens == 0;
                    let (prompt_tokens, completion_tokens) = if estimated {
                        (
                            estimate_tokens(req.chars()),
                            estimate_tokens(text.chars().count()),
                        )
                    } else {
                        (prompt_tokens, completion_tokens)
                    };
                    return Ok(Completion {
                        text,
                        prompt_tokens,
                        completion_tokens,
                        latency: started.elapsed(),
                        attempts: attempt,
                        estimated,
                    });
                }
                Err(f) => {
                    if !f.retryable || attempt >= policy.max_attempts {
                        return Err(f.error);
                    }
                    attempt += 1;
                    let wait =
                        charter_connect::backoff(&policy, attempt, f.retry_after, &mut rand::rng());
                    tracing::debug!(provider = %self.settings.name, error = %f.error, ?wait, "retrying LLM request");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// Refuse an endpoint whose host is a blocked IP literal (host names are checked when
    /// they resolve), unless `allow_private`.
    fn guard(&self, url: &str) -> Result<(), ProviderError> {
        if self.settings.allow_private {
            return Ok(());
        }
        let refused = |message: String| ProviderError::Refused {
            provider: self.settings.name.clone(),
            message,
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| refused(format!("`{url}`: {e}")))?;
        charter_connect::ssrf::check_url(&parsed)
            .map_err(|r| refused(format!("{} is {}", r.host, r.reason)))
    }

    async fn attempt(
        &self,
        url: &str,
        body: &Value,
        attempt: u32,
    ) -> Result<(String, u64, u64), AttemptFailure> {
        let s = &self.settings;
        let mut req = self
            .client
            .post(url)
            .timeout(s.timeout)
            .header("content-type", "application/json")
            .json(body);
        match (s.kind, &s.api_key) {
            (ProviderKind::Anthropic, key) => {
                req = req.header("anthropic-version", ANTHROPIC_VERSION);
                if let Some(k) = key {
                    req = req.header("x-api-key", k);
                }
            }
            (ProviderKind::OpenAi, Some(k)) if s.api_version.is_some() => {
                req = req.header("api-key", k);
            }
            (ProviderKind::OpenAi, Some(k)) => req = req.bearer_auth(k),
            (ProviderKind::OpenAi, None) => {}
        }
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                AttemptFailure {
                    retryable: true,
                    retry_after: None,
                    error: ProviderError::Timeout {
                        provider: s.name.clone(),
                        attempts: attempt,
                        timeout: s.timeout,
                    },
                }
            } else {
                let message = describe_reqwest(&e);
                // A host name that resolved only to blocked addresses: trying again cannot help.
                if let Some(at) = message.find("refused by the outbound guard: ") {
                    let reason = &message[at + "refused by the outbound guard: ".len()..];
                    let reason = reason.split(';').next().unwrap_or(reason);
                    return AttemptFailure {
                        retryable: false,
                        retry_after: None,
                        error: ProviderError::Refused {
                            provider: s.name.clone(),
                            message: reason.to_string(),
                        },
                    };
                }
                AttemptFailure {
                    retryable: true,
                    retry_after: None,
                    error: ProviderError::Transport {
                        provider: s.name.clone(),
                        attempts: attempt,
                        message,
                    },
                }
            }
        };
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| charter_connect::parse_retry_after(v, SystemTime::now()));
        let bytes = resp.bytes().await.map_err(transport)?;
        if bytes.len() > MAX_RESPONSE_BYTES {
            return Err(AttemptFailure {
                retryable: false,
                retry_after: None,
                error: ProviderError::BadResponse {
                    provider: s.name.clone(),
                    message: format!("response of {} bytes is over the limit", bytes.len()),
                },
            });
        }
        if !(200..300).contains(&status) {
            let text = String::from_utf8_lossy(&bytes);
            return Err(AttemptFailure {
                retryable: status == 429 || status >= 500,
                retry_after,
                error: ProviderError::Http {
                    provider: s.name.clone(),
                    status,
                    attempts: attempt,
                    body: excerpt(&text),
                },
            });
        }
        let bad = |message: String| AttemptFailure {
            retryable: false,
            retry_after: None,
            error: ProviderError::BadResponse {
                provider: s.name.clone(),
                message,
            },
        };
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| bad(format!("the body is not JSON: {e}")))?;
        self.parse_response(&v).map_err(bad)
    }

    /// Text and token counts from a successful response body.
    fn parse_response(&self, v: &Value) -> Result<(String, u64, u64), String> {
        let tokens = |a: &Value, b: &Value| (a.as_u64().unwrap_or(0), b.as_u64().unwrap_or(0));
        match (self.settings.kind, self.settings.mode) {
            (ProviderKind::Anthropic, _) => {
                let blocks = v["content"]
                    .as_array()
                    .ok_or("no `content` array in the response")?;
                let tool = blocks
                    .iter()
                    .find(|b| b["type"] == "tool_use" && b["name"] == ANTHROPIC_TOOL);
                let text = match tool {
                    Some(b) => b["input"].to_string(),
                    None => blocks
                        .iter()
                        .filter(|b| b["type"] == "text")
                        .filter_map(|b| b["text"].as_str())
                        .collect::<Vec<_>>()
                        .join(""),
                };
                let (p, c) = tokens(&v["usage"]["input_tokens"], &v["usage"]["output_tokens"]);
                Ok((text, p, c))
            }
            (ProviderKind::OpenAi, SchemaMode::Ollama) => {
                let text = v["message"]["content"]
                    .as_str()
                    .ok_or("no `message.content` in the response")?;
                let (p, c) = tokens(&v["prompt_eval_count"], &v["eval_count"]);
                Ok((text.to_string(), p, c))
            }
            (ProviderKind::OpenAi, _) => {
                let msg = &v["choices"][0]["message"];
                let text = match msg["content"].as_str() {
                    Some(t) => t.to_string(),
                    None => match msg["refusal"].as_str() {
                        Some(r) => format!("(refused) {r}"),
                        None => {
                            return Err("no `choices[0].message.content` in the response".into());
                        }
                    },
                };
                let (p, c) = tokens(
                    &v["usage"]["prompt_tokens"],
                    &v["usage"]["completion_tokens"],
                );
                Ok((text, p, c))
            }
        }
    }
}

/// A reqwest error with its causes. Keys travel in headers, never in the URL, so the URL
/// reqwest mentions carries no secret.
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// The start of an error body, on one line.
fn excerpt(text: &str) -> String {
    let one_line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(ERROR_EXCERPT)
        .collect();
    one_line.trim().to_string()
}
