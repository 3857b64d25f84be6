//! The decision cascade in the running server: rules, the embedded classifier, a local
//! OpenAI-compatible model, escalation.

use super::*;

fn examples_csv() -> String {
    let mut s = String::from("text,label\n");
    let billing = [
        "refund",
        "invoice",
        "charged twice",
        "payment failed",
        "billing address",
        "credit card declined",
        "subscription price",
        "overcharged",
    ];
    let bug = [
        "app crashes",
        "error message",
        "button does not work",
        "page is blank",
        "login broken",
        "screen freezes",
        "sync fails",
        "upload error",
    ];
    let shipping = [
        "parcel late",
        "tracking number",
        "delivery address",
        "package lost",
        "courier",
        "shipment delayed",
        "order not arrived",
        "shipping cost",
    ];
    for (label, words) in [("billing", billing), ("bug", bug), ("shipping", shipping)] {
        for (i, w) in words.iter().enumerate() {
            for (j, frame) in [
                "I have a problem: {}",
                "Hello, {} again",
                "{} since yesterday",
                "why {}?",
                "please help, {}",
                "{} on my account",
                "urgent: {}",
                "{}!!",
            ]
            .iter()
            .enumerate()
            {
                if (i + j) % 2 == 0 {
                    s.push_str(&format!("\"{}\",{label}\n", frame.replace("{}", w)));
                }
            }
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_rules_then_embedded_then_escalation() {
    let text = charter_yaml("cascade", "live", "none", "/hooks/cascade", "text: \"{{ payload.ticket.subject }}\"")
        .replace(
            "  labels: [billing, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.contains(\"refund\")', label: billing }\n  otherwise: other\n",
            "  labels: [billing, bug, shipping, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.startsWith(\"VIP\")', label: other }\n    - embedded: { examples: data/examples.csv, accept_above: 0.6 }\n  otherwise: escalate\n",
        );
    assert!(text.contains("embedded:"), "the charter text was rewritten");
    let h = Harness::start(&[
        ("charters/cascade.yaml", &text),
        ("data/examples.csv", &examples_csv()),
    ])
    .await;
    let send = |subject: &str| {
        let body = serde_json::to_vec(&ticket(1, subject)).unwrap();
        let h = &h;
        async move {
            h.post("/hooks/cascade", body, vec![]).await.1["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let by_rule = send("VIP customer: package lost").await;
    let by_model = send("my parcel is late and the tracking number does not work").await;
    let unsure = send("zxqv wibble frobnicate").await;

    let d = h.wait_final(&by_rule).await;
    assert_eq!(d["runs"][0]["decision"]["stage"], "rule");
    assert_eq!(d["runs"][0]["decision"]["label"], "other");

    let d = h.wait_final(&by_model).await;
    let dec = &d["runs"][0]["decision"];
    assert_eq!(dec["stage"], "embedded", "{dec}");
    assert_eq!(dec["label"], "shipping");
    assert!(dec["confidence"].as_f64().unwrap() >= 0.6);
    let stages: Vec<_> = dec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        stages,
        vec!["rule", "embedded"],
        "every stage consulted is recorded"
    );

    let d = h.wait_final(&unsure).await;
    assert_eq!(
        d["event"]["status"], "waiting",
        "unsure cases go to a human"
    );
    assert_eq!(d["runs"][0]["outcome"], "escalated");
    let dec = &d["runs"][0]["decision"];
    assert!(dec["label"].is_null());
    let emb = &dec["stages"].as_array().unwrap()[1];
    assert_eq!(emb["stage"], "embedded");
    assert_eq!(emb["accepted"], false);
    assert!(emb["confidence"].as_f64().unwrap() < 0.6);
    // The model was trained at start-up and written next to the project.
    assert!(h.dir.join("models/cascade.model").exists());
    h.stop().await;
}

/// A fake OpenAI-compatible model on 127.0.0.1:0 for the cascade test: answers by what the
/// request contains, and records every request body.
async fn fake_llm(shutdown: CancellationToken) -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::extract::State;
    type Seen = Arc<std::sync::Mutex<Vec<Value>>>;
    async fn chat(
        State(seen): State<Seen>,
        headers: axum::http::HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        seen.lock().unwrap().push(body.clone());
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer llm-key") {
            return (axum::http::StatusCode::UNAUTHORIZED, "bad key").into_response();
        }
        let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
        let content = if prompt.contains("sure-thing") {
            json!({"label": "bug", "confidence": 0.92, "fields": {}, "reason": "crash"}).to_string()
        } else if prompt.contains("shrug") {
            json!({"label": "other", "confidence": 0.3, "fields": {}, "reason": "unclear"})
                .to_string()
        } else {
            "I cannot answer in JSON, sorry.".to_string()
        };
        axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20},
        }))
        .into_response()
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_rules_then_embedded_then_llm_then_escalation() {
    let text = charter_yaml("cascade", "live", "none", "/hooks/cascade", "text: \"{{ payload.ticket.subject }}\"")
        .replace(
            "  labels: [billing, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.contains(\"refund\")', label: billing }\n  otherwise: other\n",
            "  labels: [billing, bug, shipping, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.startsWith(\"VIP\")', label: other }\n    - embedded: { examples: data/examples.csv, accept_above: 0.6 }\n    - llm: { provider: local, prompt: prompts/triage.md, accept_above: 0.7, redact: [email] }\n  otherwise: escalate\n",
        );
    assert!(text.contains("llm:"), "the charter text was rewritten");
    let dir = std::env::temp_dir().join(format!("charter-it-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    let (llm_url, seen) = fake_llm(shutdown.clone()).await;
    project(
        &dir,
        &format!("http://{sink_addr}"),
        &[
            ("charters/cascade.yaml", &text),
            ("data/examples.csv", &examples_csv()),
            (
                "prompts/triage.md",
                "Classify the ticket from {{ payload.email }} into one of {{ labels | join(', ') }}.\n{{ text }}",
            ),
            ("secrets/llm", "llm-key"),
        ],
    );
    let mut yaml = std::fs::read_to_string(dir.join("charter.yaml")).unwrap();
    yaml.push_str(&format!(
        "providers:\n  local:\n    type: openai\n    base_url: {llm_url}\n    api_key: file:secrets/llm\n    model: tiny-test\n    timeout: 5s\n    max_retries: 0\n    allow_private: true\n    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}\n"
    ));
    write(&dir, "charter.yaml", &yaml);
    let h = Harness::boot(dir, sink, shutdown).await;

    let send = |subject: &str| {
        let mut body = ticket(1, subject);
        body["email"] = json!("ann@example.test");
        let body = serde_json::to_vec(&body).unwrap();
        let h = &h;
        async move {
            h.post("/hooks/cascade", body, vec![]).await.1["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let by_rule = send("VIP customer: package lost").await;
    let by_model = send("my parcel is late and the tracking number does not work").await;
    let by_llm = send("zxqv wibble sure-thing").await;
    let unsure = send("zxqv wibble shrug").await;
    let invalid = send("zxqv wibble frobnicate").await;

    let stages_of = |dec: &Value| -> Vec<String> {
        dec["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap().to_string())
            .collect()
    };

    let d = h.wait_final(&by_rule).await;
    assert_eq!(d["runs"][0]["decision"]["stage"], "rule");
    assert_eq!(stages_of(&d["runs"][0]["decision"]), vec!["rule"]);

    let d = h.wait_final(&by_model).await;
    let dec = &d["runs"][0]["decision"];
    assert_eq!(dec["stage"], "embedded", "{dec}");
    assert_eq!(dec["label"], "shipping");
    assert_eq!(
        stages_of(dec),
        vec!["rule", "embedded"],
        "the LLM is not asked"
    );

    let d = h.wait_final(&by_llm).await;
    let dec = &d["runs"][0]["decision"];
    assert_eq!(d["event"]["status"], "done", "{d}");
    assert_eq!(dec["stage"], "llm", "{dec}");
    assert_eq!(dec["label"], "bug");
    assert_eq!(dec["confidence"], 0.92);
    assert_eq!(stages_of(dec), vec!["rule", "embedded", "llm"]);
    assert_eq!(
        dec["stages"][1]["accepted"], false,
        "the embedded stage abstained"
    );
    let note = dec["stages"][2]["note"].as_str().unwrap();
    assert!(note.contains("llm local (tiny-test)"), "{note}");
    assert!(
        note.contains("100 prompt + 20 completion tokens"),
        "usage is recorded: {note}"
    );
    assert!(
        note.contains("cost 0.000140"),
        "cost from the price: {note}"
    );

    let d = h.wait_final(&unsure).await;
    assert_eq!(
        d["event"]["status"], "waiting",
        "below the LLM threshold goes to a human"
    );
    assert_eq!(d["runs"][0]["outcome"], "escalated");
    let dec = &d["runs"][0]["decision"];
    assert!(dec["label"].is_null());
    assert_eq!(
        dec["stage"], "none",
        "no stage decided and no human has acted yet"
    );
    let llm = &dec["stages"][2];
    assert_eq!(llm["stage"], "llm");
    assert_eq!(llm["accepted"], false);
    assert_eq!(llm["confidence"], 0.3);

    let d = h.wait_final(&invalid).await;
    assert_eq!(d["event"]["status"], "waiting");
    let dec = &d["runs"][0]["decision"];
    let reason = dec["reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid model output after one repair attempt"),
        "{reason}"
    );

    // What left the machine: the model, the schema, the delimited text, no e-mail address.
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        4,
        "one call each for sure/shrug, two (repair) for the invalid one"
    );
    for b in &bodies {
        assert_eq!(b["model"], "tiny-test");
        assert_eq!(
            b["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"],
            json!(["billing", "bug", "shipping", "other"])
        );
        let s = b.to_string();
        assert!(!s.contains("ann@example.test"), "redacted: {s}");
        assert!(
            !s.contains("package lost") && !s.contains("parcel"),
            "decided earlier: {s}"
        );
    }
    let user = bodies[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.starts_with("Classify the ticket from [redacted] into one of billing, bug"),
        "{user}"
    );
    assert!(user.contains("<untrusted_input>\nzxqv wibble"), "{user}");
    h.stop().await;
}
