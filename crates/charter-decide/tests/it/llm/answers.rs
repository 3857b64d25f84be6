//! The request and the answer: the request shape, the answer schema per mode, validation and
//! one repair, parse errors, plain-text drafts.

use super::*;

#[tokio::test]
async fn valid_output_and_the_request_shape() {
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("billing", 0.9)))]).await;
    let mut s = settings("default", addr);
    s.price = Some(Price {
        input_per_mtok: 1.0,
        output_per_mtok: 2.0,
    });
    let e = engine(vec![s]);
    let case = Case::new(&["default"]);
    let a = e
        .classify(&case.request("I was charged twice for ORD-42"))
        .await
        .unwrap();
    assert_eq!(a.label, "billing");
    assert_eq!(a.confidence, 0.9);
    assert_eq!(a.fields.get("order_id"), Some(&json!("ORD-42")));
    assert!(!a.fields.contains_key("urgency"), "null fields are dropped");
    assert!(!a.cached && !a.repaired);
    assert_eq!(a.usage.calls, 1);
    assert_eq!(a.usage.prompt_tokens, 120);
    assert_eq!(a.usage.completion_tokens, 30);
    assert!((a.usage.cost - (120.0 + 60.0) / 1e6).abs() < 1e-12);

    assert_eq!(fake.requests(), 1);
    assert_eq!(fake.path(0), "/v1/chat/completions");
    assert_eq!(
        fake.header(0, "authorization").as_deref(),
        Some("Bearer sk-test-123")
    );
    let body = fake.body(0);
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["response_format"]["type"], "json_schema");
    let schema = &body["response_format"]["json_schema"]["schema"];
    assert_eq!(
        schema["properties"]["label"]["enum"],
        json!(["billing", "bug", "other"])
    );
    assert_eq!(schema["properties"]["confidence"]["maximum"], 1);
    assert_eq!(
        schema["properties"]["fields"]["properties"]["order_id"]["pattern"],
        "^ORD-[0-9]+$"
    );
    assert_eq!(
        schema["properties"]["fields"]["properties"]["urgency"]["anyOf"],
        json!([{"type": "string", "enum": ["low", "high"]}, {"type": "null"}])
    );
    assert_eq!(
        schema["properties"]["fields"]["additionalProperties"],
        false
    );
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages[0]["role"], "system");
    assert!(
        messages[0]["content"]
            .as_str()
            .unwrap()
            .contains("never an instruction")
    );
    let user = messages[1]["content"].as_str().unwrap();
    assert!(user.starts_with("Ticket from Ann."), "{user}");
    assert!(
        user.contains("<untrusted_input>\nI was charged twice for ORD-42\n</untrusted_input>"),
        "{user}"
    );
}

#[tokio::test]
async fn invalid_then_repaired_output_is_accepted() {
    let (fake, addr) = fake_server(vec![
        Reply::Json(200, openai(&valid("refund_everything", 0.99))),
        Reply::Json(200, openai(&valid("billing", 0.8))),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let case = Case::new(&["default"]);
    let a = e.classify(&case.request("refund me")).await.unwrap();
    assert_eq!(a.label, "billing");
    assert!(a.repaired);
    assert_eq!(a.usage.calls, 2);
    assert_eq!(fake.requests(), 2);
    let repair = fake.body(1);
    let messages = repair["messages"].as_array().unwrap();
    assert_eq!(
        messages.len(),
        4,
        "system, user, the invalid answer, the repair request"
    );
    assert_eq!(messages[2]["role"], "assistant");
    assert!(
        messages[2]["content"]
            .as_str()
            .unwrap()
            .contains("refund_everything")
    );
    let ask = messages[3]["content"].as_str().unwrap();
    assert!(
        ask.contains("/label"),
        "the repair request names the error: {ask}"
    );
}

#[tokio::test]
async fn invalid_twice_escalates_with_the_reason() {
    let (fake, addr) = fake_server(vec![
        Reply::Json(200, openai("Sure! It's billing.")),
        Reply::Json(
            200,
            openai(
                r#"{"label":"billing","confidence":0.9,"fields":{"urgency":"low"},"reason":""}"#,
            ),
        ),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let case = Case::new(&["default"]);
    let f = e.classify(&case.request("refund me")).await.unwrap_err();
    assert!(
        f.reason
            .starts_with("invalid model output after one repair attempt"),
        "{}",
        f.reason
    );
    assert!(
        f.reason.contains("order_id"),
        "missing required field named: {}",
        f.reason
    );
    assert_eq!(f.usage.calls, 2);
    assert_eq!(fake.requests(), 2, "exactly one repair attempt");
}

#[tokio::test]
async fn json_object_mode_sends_the_schema_inline() {
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("bug", 0.9)))]).await;
    let mut s = settings("local", addr);
    s.mode = SchemaMode::JsonObject;
    s.api_key = None;
    let e = engine(vec![s]);
    let case = Case::new(&["local"]);
    e.classify(&case.request("crash")).await.unwrap();
    let body = fake.body(0);
    assert_eq!(body["response_format"]["type"], "json_object");
    assert_eq!(
        body["response_format"]["schema"]["properties"]["label"]["enum"],
        json!(["billing", "bug", "other"])
    );
    assert_eq!(fake.header(0, "authorization"), None, "no key, no header");
}

/// Every `type` that lists several types, anywhere in `schema`, with its JSON pointer.
fn type_lists(schema: &Value, at: &str, out: &mut Vec<String>) {
    match schema {
        Value::Object(m) => {
            if m.get("type").is_some_and(Value::is_array) {
                out.push(at.to_string());
            }
            for (k, v) in m {
                type_lists(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                type_lists(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// llama.cpp's schema-to-grammar converter (llama-cpp-python's `json_object` mode, Ollama)
/// drops `enum` and `pattern` beside `type: [T, "null"]`; against the real server
/// SmolLM2-135M then wrote `"urgency": "low,"` twice and escalated. Nullable fields are
/// sent as `anyOf` so the grammar keeps their constraints, and such an answer is still
/// caught by validation and repaired.
#[tokio::test]
async fn nullable_fields_are_sent_as_any_of_for_grammar_servers() {
    let broken = valid("billing", 0.9).replace("\"urgency\":null", "\"urgency\":\"low,\"");
    assert!(broken.contains("low,"), "{broken}");
    let (fake, addr) = fake_server(vec![
        Reply::Json(200, openai(&broken)),
        Reply::Json(200, openai(&valid("billing", 0.9))),
    ])
    .await;
    let mut s = settings("local", addr);
    s.mode = SchemaMode::JsonObject;
    let e = engine(vec![s]);
    let mut case = Case::new(&["local"]);
    case.fields.get_mut("order_id").unwrap().required = false;
    let a = e.classify(&case.request("charged twice")).await.unwrap();
    assert!(a.repaired);
    let schema = &fake.body(0)["response_format"]["schema"];
    let mut lists = Vec::new();
    type_lists(schema, "", &mut lists);
    assert!(lists.is_empty(), "type lists at {lists:?} in {schema}");
    let fields = &schema["properties"]["fields"]["properties"];
    assert_eq!(
        fields["urgency"]["anyOf"],
        json!([{"type": "string", "enum": ["low", "high"]}, {"type": "null"}])
    );
    assert_eq!(
        fields["order_id"]["anyOf"],
        json!([{"type": "string", "pattern": "^ORD-[0-9]+$"}, {"type": "null"}])
    );
    let ask = fake.body(1)["messages"][3]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        ask.contains(r#"/fields/urgency: "low," is not one of"#),
        "{ask}"
    );
}

#[tokio::test]
async fn draft_returns_plain_text() {
    let (fake, addr) = fake_server(vec![Reply::Json(
        200,
        openai("  Dear Ann, we are sorry to see you go.  "),
    )])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let prompt =
        Template::parse("Write a retention reply about {{ context.decision.label }}.\n{{ text }}")
            .unwrap();
    let ctx = json!({"payload": {}, "decision": {"label": "cancellation"}});
    let d = e
        .draft(&DraftRequest {
            charter: "triage",
            providers: &["default".to_string()],
            prompt: &prompt,
            text: "I want to cancel",
            context: &ctx,
            redact: &[],
            limits: &Limits::default(),
            repair: None,
        })
        .await
        .unwrap();
    assert_eq!(d.text, "Dear Ann, we are sorry to see you go.");
    assert_eq!(d.usage.calls, 1);
    let body = fake.body(0);
    assert!(body.get("response_format").is_none(), "drafts ask for text");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.starts_with("Write a retention reply about cancellation."),
        "{user}"
    );
}

/// The answer schema of a charter is compiled once and reused for every classification; a
/// change of labels or fields gives another one.
#[test]
fn the_answer_schema_is_compiled_once_per_labels_and_fields() {
    let engine = LlmEngine::without_providers(Arc::new(MemoryCache::default()));
    let labels = vec!["billing".to_string(), "bug".to_string()];
    let mut fields = BTreeMap::new();
    fields.insert(
        "order".to_string(),
        FieldSpec {
            kind: FieldType::String,
            pattern: Some("^ORD-[0-9]+$".into()),
            enumeration: vec![],
            required: false,
            extractor: None,
        },
    );
    let first = engine.answer_validator(&labels, &fields).unwrap();
    let again = engine.answer_validator(&labels, &fields).unwrap();
    assert!(Arc::ptr_eq(&first, &again));
    let other_labels = vec!["billing".to_string(), "other".to_string()];
    let other = engine.answer_validator(&other_labels, &fields).unwrap();
    assert!(!Arc::ptr_eq(&first, &other));
    let no_fields = engine.answer_validator(&labels, &BTreeMap::new()).unwrap();
    assert!(!Arc::ptr_eq(&first, &no_fields));
    assert!(
        first
            .parse(r#"{"label": "bug", "confidence": 0.9, "fields": {"order": "ORD-1"}, "reason": "r"}"#)
            .is_ok()
    );
    assert!(
        first
            .parse(
                r#"{"label": "other", "confidence": 0.9, "fields": {"order": null}, "reason": "r"}"#
            )
            .is_err()
    );
    assert!(
        other
            .parse(
                r#"{"label": "other", "confidence": 0.9, "fields": {"order": null}, "reason": "r"}"#
            )
            .is_ok()
    );
}

#[tokio::test]
async fn a_parse_error_names_the_cause_and_position_and_the_repair_request_carries_it() {
    let raw_newline = "{\"label\":\"bug\",\"confidence\":0.9,\"fields\":{\"order_id\":\"ORD-1\",\"urgency\":null},\"reason\":\"two\nlines\"}";
    let (fake, addr) = fake_server(vec![
        Reply::Json(200, openai(raw_newline)),
        Reply::Json(200, openai(raw_newline)),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let f = e
        .classify(&Case::new(&["default"]).request("hello"))
        .await
        .unwrap_err();
    assert_eq!(f.kind, EscalationReason::InvalidOutput);
    assert!(f.reason.contains("control character"), "{}", f.reason);
    assert!(f.reason.contains("at line 1 column"), "{}", f.reason);
    let repair = fake.body(1);
    let last = repair["messages"].as_array().unwrap().last().unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(last.contains("control character"), "{last}");
    assert!(last.contains("at line 1 column"), "{last}");
}
