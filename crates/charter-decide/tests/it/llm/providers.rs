//! Provider kinds and endpoints: Ollama's native API, Anthropic's Messages API, Azure OpenAI,
//! the private-address guard, and a real local model (ignored unless one is configured).

use super::*;

#[tokio::test]
async fn ollama_mode_uses_the_native_api() {
    let (fake, addr) = fake_server(vec![Reply::Json(
        200,
        json!({"model": "llama3", "message": {"role": "assistant", "content": valid("bug", 0.6)},
               "done": true, "prompt_eval_count": 50, "eval_count": 20}),
    )])
    .await;
    let mut s = ProviderSettings::new(
        "ollama",
        ProviderKind::OpenAi,
        &format!("http://{addr}"),
        "llama3",
    );
    // The stand-in model listens on 127.0.0.1.
    s.allow_private = true;
    s.mode = SchemaMode::Ollama;
    let e = engine(vec![s]);
    let case = Case::new(&["ollama"]);
    let a = e.classify(&case.request("crash")).await.unwrap();
    assert_eq!(a.label, "bug");
    assert_eq!(a.usage.prompt_tokens, 50);
    assert_eq!(a.usage.completion_tokens, 20);
    assert_eq!(fake.path(0), "/api/chat");
    let body = fake.body(0);
    assert_eq!(body["stream"], false);
    assert_eq!(
        body["format"]["properties"]["label"]["enum"],
        json!(["billing", "bug", "other"])
    );
    assert!(body.get("response_format").is_none());
}

#[tokio::test]
async fn anthropic_messages_api_with_a_forced_tool() {
    let input = json!({"label": "billing", "confidence": 0.88,
                       "fields": {"order_id": "ORD-9", "urgency": "high"}, "reason": "charge"});
    let (fake, addr) = fake_server(vec![
        Reply::Json(529, json!({"type": "error", "error": {"type": "overloaded_error"}})),
        Reply::Json(
            200,
            json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test",
                   "content": [{"type": "text", "text": "Recording."},
                               {"type": "tool_use", "id": "tu_1", "name": "record_answer", "input": input}],
                   "stop_reason": "tool_use",
                   "usage": {"input_tokens": 200, "output_tokens": 40}}),
        ),
    ])
    .await;
    let mut s = ProviderSettings::new(
        "claude",
        ProviderKind::Anthropic,
        &format!("http://{addr}/v1"),
        "claude-test",
    );
    // The stand-in model listens on 127.0.0.1.
    s.allow_private = true;
    s.api_key = Some("ak-test".into());
    s.initial_backoff = Duration::from_millis(10);
    let e = engine(vec![s]);
    let case = Case::new(&["claude"]);
    let a = e
        .classify(&case.request("charged for ORD-9"))
        .await
        .unwrap();
    assert_eq!(a.label, "billing");
    assert_eq!(a.fields.get("urgency"), Some(&json!("high")));
    assert_eq!(a.usage.prompt_tokens, 200);
    assert_eq!(fake.requests(), 2, "529 overloaded is retried");
    assert_eq!(fake.path(1), "/v1/messages");
    assert_eq!(fake.header(1, "x-api-key").as_deref(), Some("ak-test"));
    assert_eq!(
        fake.header(1, "anthropic-version").as_deref(),
        Some("2023-06-01")
    );
    assert_eq!(fake.header(1, "authorization"), None);
    let body = fake.body(1);
    assert_eq!(body["model"], "claude-test");
    assert!(body["max_tokens"].as_u64().unwrap() > 0);
    assert!(body["system"].as_str().unwrap().contains("untrusted_input"));
    assert_eq!(body["messages"][0]["role"], "user");
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "record_answer"})
    );
    assert_eq!(
        body["tools"][0]["input_schema"]["properties"]["label"]["enum"],
        json!(["billing", "bug", "other"])
    );
}

/// Labelled tickets for [`real_local_model`]: four per label.
const REAL_MODEL_CASES: [(&str, &str); 12] = [
    (
        "I was charged twice for order ORD-1234, please refund",
        "billing",
    ),
    (
        "My invoice for order ORD-88 shows the wrong amount, can you correct it?",
        "billing",
    ),
    (
        "Please update the credit card on my account, the old one expired",
        "billing",
    ),
    ("Why did my subscription price go up this month?", "billing"),
    (
        "The app crashes with an error every time I open settings (order ORD-77)",
        "bug",
    ),
    (
        "Clicking Save does nothing and the console shows a 500 error",
        "bug",
    ),
    ("The export button produces an empty CSV file", "bug"),
    (
        "The login page loops back to itself after I enter my password",
        "bug",
    ),
    ("What are your office hours during the holidays?", "other"),
    ("Do you have a partner program for agencies?", "other"),
    ("Thanks, the team was very helpful yesterday!", "other"),
    ("Can I get a copy of your security whitepaper?", "other"),
];

/// Against a real local model: set CHARTER_TEST_LLM_URL to an OpenAI-compatible base URL
/// (for example llama-cpp-python's server, `http://127.0.0.1:8089/v1`), optionally
/// CHARTER_TEST_LLM_MODEL and CHARTER_TEST_LLM_MODE (`json_schema`, `json_object` (the
/// default), `ollama`), then `cargo test -p charter-decide --test it llm::real_local_model --
/// --ignored --nocapture`. CHARTER_TEST_LLM_MIN_ACCURACY (default 0) sets an accuracy floor.
///
/// It classifies [`REAL_MODEL_CASES`] and prints each answer and a summary (valid on the
/// first try, repaired, escalated, accuracy, median latency per call). It fails when the
/// server refuses or cannot be reached (every escalation must be a validation failure, so
/// the request shape is accepted), when a response carries no token usage, when no answer
/// at all validates, or below the accuracy floor. A small model that fails validation twice
/// is an escalation, which is the behaviour under test.
#[tokio::test]
#[ignore = "needs a local model server: set CHARTER_TEST_LLM_URL"]
async fn real_local_model() {
    let Ok(url) = std::env::var("CHARTER_TEST_LLM_URL") else {
        eprintln!("CHARTER_TEST_LLM_URL is not set; nothing to test");
        return;
    };
    let model = std::env::var("CHARTER_TEST_LLM_MODEL").unwrap_or_else(|_| "local".into());
    let min_accuracy: f64 = std::env::var("CHARTER_TEST_LLM_MIN_ACCURACY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let mut s = ProviderSettings::new("local", ProviderKind::OpenAi, &url, &model);
    // The stand-in model listens on 127.0.0.1.
    s.allow_private = true;
    s.mode = match std::env::var("CHARTER_TEST_LLM_MODE").as_deref() {
        Ok("json_schema") => SchemaMode::JsonSchema,
        Ok("ollama") => SchemaMode::Ollama,
        _ => SchemaMode::JsonObject,
    };
    s.timeout = Duration::from_secs(120);
    s.max_retries = 0;
    s.max_tokens = 256;
    let e = engine(vec![s]);
    let mut case = Case::new(&["local"]);
    case.prompt = Template::parse(
        "Classify this support ticket as one of: {{ labels | join(', ') }}.\n{{ text }}",
    )
    .unwrap();
    let (mut first_try, mut repaired, mut escalated, mut right) = (0, 0, 0, 0);
    let mut per_call_ms = Vec::new();
    for (text, want) in REAL_MODEL_CASES {
        let usage = match e.classify(&case.request(text)).await {
            Ok(a) => {
                assert!(labels().contains(&a.label));
                assert!((0.0..=1.0).contains(&a.confidence));
                if a.repaired {
                    repaired += 1;
                } else {
                    first_try += 1;
                }
                if a.label == want {
                    right += 1;
                }
                eprintln!(
                    "{text:?} -> {} ({:.2}{}), {}; expected {want}",
                    a.label,
                    a.confidence,
                    if a.repaired { ", repaired" } else { "" },
                    a.usage
                );
                a.usage
            }
            Err(f) => {
                assert!(
                    f.reason.starts_with("invalid model output"),
                    "the server did not answer: {}",
                    f.reason
                );
                escalated += 1;
                eprintln!("{text:?} escalated: {}; {}", f.reason, f.usage);
                f.usage
            }
        };
        assert!(usage.calls >= 1, "{text:?}: no call answered");
        assert!(
            usage.prompt_tokens > 0 && usage.completion_tokens > 0 && !usage.tokens_estimated,
            "{text:?}: the response reported no token usage: {usage}"
        );
        per_call_ms.push(usage.latency_ms / u64::from(usage.calls));
    }
    per_call_ms.sort_unstable();
    let n = REAL_MODEL_CASES.len();
    let accuracy = right as f64 / n as f64;
    eprintln!(
        "{n} cases: {first_try} valid on the first try, {repaired} repaired, {escalated} \
         escalated; accuracy {accuracy:.2}; median latency per call {} ms",
        per_call_ms[n / 2]
    );
    assert!(first_try + repaired > 0, "no answer validated");
    assert!(
        accuracy >= min_accuracy,
        "accuracy {accuracy:.2} is below CHARTER_TEST_LLM_MIN_ACCURACY={min_accuracy}"
    );
}

#[tokio::test]
async fn a_private_endpoint_is_refused_unless_the_provider_allows_it() {
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("billing", 0.9)))]).await;
    let mut guarded = settings("default", addr);
    guarded.allow_private = false;
    let p = Provider::new(guarded.clone()).unwrap();
    let req = ChatRequest {
        system: "Classify.".into(),
        messages: vec![Message {
            role: ChatRole::User,
            content: "hello".into(),
        }],
        schema: None,
    };
    let err = p.complete(&req).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused { .. }),
        "expected a refusal, got {err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1 is") && text.contains("`allow_private: true` on the provider"),
        "{text}"
    );
    // A host name resolving to loopback is refused at resolution, and not retried.
    let mut by_name = guarded.clone();
    by_name.base_url = format!("http://localhost:{}/v1", addr.port());
    by_name.max_retries = 3;
    let started = Instant::now();
    let err = Provider::new(by_name)
        .unwrap()
        .complete(&req)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Refused { .. }),
        "expected a refusal, got {err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no retries with backoff"
    );
    assert_eq!(fake.requests(), 0, "nothing reached the endpoint");
    // Allowed: the same endpoint answers.
    let ok = Provider::new(settings("default", addr)).unwrap();
    assert!(ok.complete(&req).await.is_ok());
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn an_azure_openai_deployment_gets_its_api_version_and_api_key_header() {
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("billing", 0.9)))]).await;
    let mut s = settings("azure", addr);
    s.base_url = format!("http://{addr}/openai/deployments/gpt-4o");
    s.api_version = Some("2024-10-21".into());
    let e = engine(vec![s]);
    let case = Case::new(&["azure"]);
    let a = e.classify(&case.request("refund please")).await.unwrap();
    assert_eq!(a.label, "billing");
    assert_eq!(fake.path(0), "/openai/deployments/gpt-4o/chat/completions");
    assert_eq!(fake.query(0).as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(fake.header(0, "api-key").as_deref(), Some("sk-test-123"));
    assert_eq!(
        fake.header(0, "authorization"),
        None,
        "the key is not sent as a bearer"
    );
    // Without an api_version, the usual OpenAI form.
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("billing", 0.9)))]).await;
    let e = engine(vec![settings("plain", addr)]);
    e.classify(&Case::new(&["plain"]).request("refund please"))
        .await
        .unwrap();
    assert_eq!(fake.query(0), None);
    assert_eq!(
        fake.header(0, "authorization").as_deref(),
        Some("Bearer sk-test-123")
    );
    assert_eq!(fake.header(0, "api-key"), None);
}
