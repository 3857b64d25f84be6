//! LLM provider tests against fake OpenAI-compatible, Ollama and Anthropic servers started
//! on 127.0.0.1:0. Each fake records the requests it gets (path, headers, body) and answers
//! from a script, so the tests check both the request shape and how answers are handled.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use charter_core::config::{FieldSpec, FieldType};
use charter_core::model::EscalationReason;
use charter_core::template::Template;
use charter_decide::llm::provider::{ChatRequest, ChatRole, Message, Provider, ProviderError};
use charter_decide::llm::{
    ClassifyRequest, DraftRequest, Limits, LlmEngine, MemoryCache, MemoryLedger, OnExhausted,
    Price, ProviderKind, ProviderSettings, SchemaMode, UsageLedger,
};
use serde_json::{Value, json};

mod answers;
mod failures;
mod limits;
mod privacy;
mod providers;

/// One scripted answer.
#[derive(Clone)]
enum Reply {
    Json(u16, Value),
    WithHeader(u16, Value, &'static str, &'static str),
    Slow(Duration, Value),
}

struct Seen {
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Value,
}

#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
}

impl Fake {
    fn requests(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
    fn body(&self, i: usize) -> Value {
        self.seen.lock().unwrap()[i].body.clone()
    }
    fn header(&self, i: usize, name: &str) -> Option<String> {
        self.seen.lock().unwrap()[i]
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    }
    fn path(&self, i: usize) -> String {
        self.seen.lock().unwrap()[i].path.clone()
    }
    fn query(&self, i: usize) -> Option<String> {
        self.seen.lock().unwrap()[i].query.clone()
    }
}

async fn handle(
    State(fake): State<Arc<Fake>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    fake.seen.lock().unwrap().push(Seen {
        path: uri.path().to_string(),
        query: uri.query().map(str::to_string),
        headers,
        body,
    });
    let reply = fake.script.lock().unwrap().pop_front();
    match reply {
        Some(Reply::Json(status, v)) => {
            (StatusCode::from_u16(status).unwrap(), axum::Json(v)).into_response()
        }
        Some(Reply::WithHeader(status, v, h, hv)) => (
            StatusCode::from_u16(status).unwrap(),
            [(h, hv)],
            axum::Json(v),
        )
            .into_response(),
        Some(Reply::Slow(d, v)) => {
            tokio::time::sleep(d).await;
            axum::Json(v).into_response()
        }
        None => (StatusCode::INTERNAL_SERVER_ERROR, "script exhausted").into_response(),
    }
}

async fn fake_server(script: Vec<Reply>) -> (Arc<Fake>, SocketAddr) {
    let fake = Arc::new(Fake {
        script: Mutex::new(script.into()),
        seen: Mutex::default(),
    });
    let app = Router::new().fallback(handle).with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (fake, addr)
}

/// An OpenAI chat-completions response carrying `content`.
fn openai(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150},
    })
}

fn valid(label: &str, confidence: f64) -> String {
    json!({
        "label": label,
        "confidence": confidence,
        "fields": {"order_id": "ORD-42", "urgency": null},
        "reason": "mentions a charge",
    })
    .to_string()
}

fn labels() -> Vec<String> {
    vec!["billing".into(), "bug".into(), "other".into()]
}

fn fields() -> BTreeMap<String, FieldSpec> {
    let mut f = BTreeMap::new();
    f.insert(
        "order_id".into(),
        FieldSpec {
            kind: FieldType::String,
            pattern: Some("^ORD-[0-9]+$".into()),
            enumeration: vec![],
            required: true,
            extractor: None,
        },
    );
    f.insert(
        "urgency".into(),
        FieldSpec {
            kind: FieldType::String,
            pattern: None,
            enumeration: vec!["low".into(), "high".into()],
            required: false,
            extractor: None,
        },
    );
    f
}

fn settings(name: &str, addr: SocketAddr) -> ProviderSettings {
    let mut s = ProviderSettings::new(
        name,
        ProviderKind::OpenAi,
        &format!("http://{addr}/v1"),
        "test-model",
    );
    // The stand-in model listens on 127.0.0.1.
    s.allow_private = true;
    s.api_key = Some("sk-test-123".into());
    s.timeout = Duration::from_secs(5);
    s.initial_backoff = Duration::from_millis(10);
    s.max_backoff = Duration::from_secs(5);
    s
}

fn engine(providers: Vec<ProviderSettings>) -> LlmEngine {
    LlmEngine::new(providers, Arc::new(MemoryCache::default())).unwrap()
}

struct Case {
    prompt: Template,
    labels: Vec<String>,
    fields: BTreeMap<String, FieldSpec>,
    context: Value,
    providers: Vec<String>,
    limits: Limits,
    redact: Vec<String>,
    cache_ttl: Duration,
}

impl Case {
    fn new(providers: &[&str]) -> Case {
        Case {
            prompt: Template::parse(
                "Ticket from {{ payload.customer.name }}.\nLabels: {{ labels | join(', ') }}\n{{ text }}",
            )
            .unwrap(),
            labels: labels(),
            fields: fields(),
            context: json!({"payload": {"customer": {"name": "Ann", "email": "ann@example.test"}}, "event": {"id": "e1"}}),
            providers: providers.iter().map(|s| s.to_string()).collect(),
            limits: Limits::default(),
            redact: vec![],
            cache_ttl: Duration::from_secs(3600),
        }
    }

    fn request<'a>(&'a self, text: &'a str) -> ClassifyRequest<'a> {
        ClassifyRequest {
            charter: "triage",
            providers: &self.providers,
            prompt: &self.prompt,
            labels: &self.labels,
            fields: &self.fields,
            text,
            context: &self.context,
            redact: &self.redact,
            limits: &self.limits,
            cache_ttl: self.cache_ttl,
        }
    }
}
