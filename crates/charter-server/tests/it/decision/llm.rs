//! The LLM stage in the server: the store-backed cache, budget and rate limit across restarts
//! and nodes, typed failure reasons and recorded usage.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_cache_is_kept_in_the_store() {
    let c = charter(
        "cached",
        "decide:\n  labels: [billing, other]\n  stages:\n    - llm: { provider: local, prompt: prompts/triage.md, accept_above: 0.5 }\n  otherwise: escalate",
        "routes:\n  - when: \"true\"\n    do: [note]\nactions:\n  note:\n    log: \"{{ decision.label }}\"\n    approval: auto",
        "",
    );
    let h = Harness::start(
        &[("cached", c)],
        &[("prompts/triage.md", "Classify: {{ text }}")],
    )
    .await;
    let a = h
        .send("cached", json!({"subject": "refund my order"}))
        .await;
    let run = h.wait(a, "done").await;
    assert_eq!(run.decision.unwrap().label.as_deref(), Some("billing"));
    let b = h
        .send("cached", json!({"subject": "refund my order"}))
        .await;
    let run = h.wait(b, "done").await;
    let d = run.decision.unwrap();
    assert!(d.reason.contains("answered from the cache"), "{}", d.reason);
    assert_eq!(
        h.seen.lock().unwrap().len(),
        1,
        "the second event made no model call"
    );
    // The entry is in the store's cache table.
    let key = {
        let body = h.seen.lock().unwrap()[0].clone();
        charter_decide::llm::cache_key("local", "tiny-test", &body)
    };
    let hit = h.store.cache_get(&key, 0).await.unwrap();
    assert!(
        hit.is_some_and(|v| v.contains("billing")),
        "the store holds the answer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_budget_holds_across_restarts_and_nodes() {
    // Each model call uses 62 tokens (50 in, 12 out): two calls cross a 100-token budget.
    let c = charter(
        "budgeted",
        "decide:\n  labels: [billing, other]\n  stages:\n    - llm: { provider: local, prompt: prompts/triage.md, accept_above: 0.5, budget: { tokens_per_day: 100, on_exhausted: escalate } }\n  otherwise: escalate",
        "routes:\n  - when: \"true\"\n    do: [note]\nactions:\n  note:\n    log: \"{{ decision.label }}\"\n    approval: auto",
        "",
    );
    let h = Harness::start(
        &[("budgeted", c)],
        &[("prompts/triage.md", "Classify: {{ text }}")],
    )
    .await;
    for subject in ["refund order 1", "refund order 2"] {
        let id = h.send("budgeted", json!({ "subject": subject })).await;
        let run = h.wait(id, "done").await;
        assert_eq!(run.decision.unwrap().label.as_deref(), Some("billing"));
    }
    let third = h
        .send("budgeted", json!({"subject": "refund order 3"}))
        .await;
    let d = h.wait(third, "waiting").await.decision.unwrap();
    assert!(
        d.reason
            .contains("budget exhausted: 124 of 100 tokens used today"),
        "{}",
        d.reason
    );
    assert_eq!(h.seen.lock().unwrap().len(), 2, "no call past the budget");
    // The day's spend is in the store: tokens, and cost at 1 + 2 per million tokens.
    let spent = h
        .store
        .llm_spent("budgeted", charter_decide::llm::utc_day())
        .await
        .unwrap();
    assert_eq!(spent.tokens, 124);
    assert!(
        (spent.cost - 2.0 * (50.0 + 24.0) / 1e6).abs() < 1e-12,
        "{spent:?}"
    );

    // Another runtime on the same store (a restarted process, or a second node): its LLM
    // engine is new, its counters empty, and it still finds the budget exhausted.
    let state = charter_server::AppState::new(
        Arc::new(Runtime::load(&h.dir).unwrap()),
        h.store.clone(),
        Arc::new(charter_connect::HttpExecutor::new().unwrap()),
    );
    let ctx = json!({"payload": {"subject": "refund order 4"}});
    let decide = state.runtime.charters["budgeted"]
        .charter
        .decide
        .clone()
        .unwrap();
    let d = charter_server::pipeline::decide::decide_event(
        &state,
        "budgeted",
        &decide,
        &ctx,
        "refund order 4",
        None,
    )
    .await;
    assert_eq!(d.label, None, "{d:?}");
    assert!(
        d.reason
            .contains("budget exhausted: 124 of 100 tokens used today"),
        "{}",
        d.reason
    );
    assert_eq!(
        h.seen.lock().unwrap().len(),
        2,
        "the second node made no call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_rate_limit_holds_across_nodes() {
    let c = charter(
        "rated",
        "decide:\n  labels: [billing, other]\n  stages:\n    - llm: { provider: local, prompt: prompts/triage.md, accept_above: 0.5, rate_limit: 1, budget: { on_exhausted: escalate } }\n  otherwise: escalate",
        "routes:\n  - when: \"true\"\n    do: [note]\nactions:\n  note:\n    log: \"{{ decision.label }}\"\n    approval: auto",
        "",
    );
    let h = Harness::start(
        &[("rated", c)],
        &[("prompts/triage.md", "Classify: {{ text }}")],
    )
    .await;
    let first = h.send("rated", json!({"subject": "refund order 1"})).await;
    let run = h.wait(first, "done").await;
    assert_eq!(run.decision.unwrap().label.as_deref(), Some("billing"));

    // Another runtime on the same store (another node): its engine is new, and the
    // charter's one request this minute is already taken.
    let state = charter_server::AppState::new(
        Arc::new(Runtime::load(&h.dir).unwrap()),
        h.store.clone(),
        Arc::new(charter_connect::HttpExecutor::new().unwrap()),
    );
    let decide = state.runtime.charters["rated"]
        .charter
        .decide
        .clone()
        .unwrap();
    let ctx = json!({"payload": {"subject": "refund order 2"}});
    let d = charter_server::pipeline::decide::decide_event(
        &state,
        "rated",
        &decide,
        &ctx,
        "refund order 2",
        None,
    )
    .await;
    assert_eq!(d.label, None, "{d:?}");
    assert!(d.reason.contains("rate limit reached"), "{}", d.reason);
    assert_eq!(
        h.seen.lock().unwrap().len(),
        1,
        "one model call in the window"
    );
}

/// A model server that answers every request with `status` after `delay`.
async fn failing_model(status: u16, delay: Duration, shutdown: CancellationToken) -> String {
    let app = axum::Router::new().fallback(move || async move {
        tokio::time::sleep(delay).await;
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            axum::Json(json!({"error": "stand-in failure"})),
        )
    });
    serve(app, shutdown).await + "/v1"
}

/// A charter whose one `llm` stage asks `provider` with `limits` (inline YAML keys).
fn llm_charter(name: &str, provider: &str, limits: &str) -> String {
    charter(
        name,
        &format!(
            "decide:\n  labels: [billing, other]\n  stages:\n    - llm: {{ provider: {provider}, prompt: prompts/triage.md, accept_above: 0.5{limits} }}\n  otherwise: escalate"
        ),
        "routes:\n  - when: \"true\"\n    do: [note]\nactions:\n  note:\n    log: \"{{ decision.label }}\"\n    approval: auto",
        "",
    )
}

async fn metrics_text(h: &Harness) -> String {
    h.http
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn timeline(h: &Harness, id: Uuid) -> Value {
    h.http
        .get(format!("{}/api/v1/events/{id}/timeline", h.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_failures_escalate_with_typed_reasons_and_usage_is_recorded() {
    let shutdown = CancellationToken::new();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let slow = failing_model(200, Duration::from_secs(3), shutdown.clone()).await;
    let broken = failing_model(500, Duration::ZERO, shutdown.clone()).await;
    let providers = format!(
        "  dead: {{ type: openai, base_url: \"http://{dead}/v1\", model: m, timeout: 2s, max_retries: 1, allow_private: true }}\n  \
         slow: {{ type: openai, base_url: \"{slow}\", model: m, timeout: 200ms, max_retries: 0, allow_private: true }}\n  \
         broken: {{ type: openai, base_url: \"{broken}\", model: m, timeout: 2s, max_retries: 0, allow_private: true }}"
    );
    let h = Harness::start_with(
        &[
            ("c-dead", llm_charter("c-dead", "dead", "")),
            ("c-slow", llm_charter("c-slow", "slow", "")),
            ("c-broken", llm_charter("c-broken", "broken", "")),
            (
                "c-budget",
                llm_charter(
                    "c-budget",
                    "local",
                    ", budget: { tokens_per_day: 100, on_exhausted: escalate }",
                ),
            ),
        ],
        &[("prompts/triage.md", "Classify: {{ text }}")],
        "",
        &providers,
    )
    .await;
    let mut escalated = Vec::new();
    for c in ["c-dead", "c-slow", "c-broken"] {
        let id = h.send(c, json!({"subject": "refund order 1"})).await;
        h.wait(id, "waiting").await;
        escalated.push((c, id));
    }
    let first = h
        .send("c-budget", json!({"subject": "refund order 1"}))
        .await;
    let run = h.wait(first, "done").await;
    // The answered stage carries its usage as fields.
    let stage = &run.decision.unwrap().stages[0];
    let u = stage.usage.clone().expect("usage on the llm stage");
    assert_eq!((u.calls, u.attempts), (1, 1));
    assert_eq!((u.prompt_tokens, u.completion_tokens), (50, 12));
    assert!(!u.tokens_estimated);
    assert!((u.cost - (50.0 + 24.0) / 1e6).abs() < 1e-12, "{u:?}");
    assert_eq!(u.cache.as_deref(), Some("miss"));
    // 62 tokens a call: the second crosses the 100-token budget, the third is refused.
    let second = h
        .send("c-budget", json!({"subject": "refund order 2"}))
        .await;
    h.wait(second, "done").await;
    let third = h
        .send("c-budget", json!({"subject": "refund order 3"}))
        .await;
    h.wait(third, "waiting").await;
    escalated.push(("c-budget", third));

    let want = [
        ("c-dead", "provider_unavailable"),
        ("c-slow", "timeout"),
        ("c-broken", "provider_error"),
        ("c-budget", "budget"),
    ];
    let all = h
        .store
        .list_escalations(charter_store::EscalationFilter::default())
        .await
        .unwrap();
    for (c, reason) in want {
        let e: Vec<_> = all.iter().filter(|e| e.charter == c).collect();
        assert_eq!(e.len(), 1, "{c}: {all:?}");
        assert_eq!(e[0].reason, reason, "{c}: {:?}", e[0].detail);
    }
    // The decision records the reason and what the failed stage used, in the API too.
    let (_, dead_id) = escalated[0];
    let t = timeline(&h, dead_id).await;
    let d = &t["runs"][0]["decision"];
    assert_eq!(d["escalation"], "provider_unavailable", "{t}");
    let u = &d["stages"][0]["usage"];
    assert_eq!(u["attempts"], 2, "both attempts of the dead provider: {u}");
    assert_eq!(u["calls"], 0);
    assert_documented("TimelineRun", &t["runs"][0]);
    let (_, slow_id) = escalated[1];
    let t = timeline(&h, slow_id).await;
    let latency = t["runs"][0]["decision"]["stages"][0]["usage"]["latency_ms"]
        .as_u64()
        .unwrap();
    assert!(latency >= 200, "the timed-out attempt counts: {latency} ms");
    assert_documented("TimelineRun", &t["runs"][0]);

    // Metrics: escalations by typed reason, request durations by provider and outcome, the
    // cache's misses.
    let m = metrics_text(&h).await;
    for (c, reason) in want {
        assert!(
            m.contains(&format!(
                "charter_escalations_total{{charter=\"{c}\",reason=\"{reason}\"}} 1"
            )),
            "{c} {reason}:\n{m}"
        );
    }
    for (provider, outcome) in [
        ("dead", "provider_unavailable"),
        ("slow", "timeout"),
        ("broken", "provider_error"),
        ("local", "ok"),
    ] {
        let n = if provider == "local" { 2 } else { 1 };
        assert!(
            m.contains(&format!(
                "charter_llm_request_duration_seconds_count{{provider=\"{provider}\",outcome=\"{outcome}\"}} {n}"
            )),
            "{provider} {outcome}:\n{m}"
        );
    }
    assert!(
        m.contains("charter_llm_cache_total{result=\"miss\"} 6"),
        "{m}"
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_charter_waits_outside_the_worker_slots() {
    let h = Harness::start_with(
        &[
            (
                "rated",
                llm_charter(
                    "rated",
                    "local",
                    ", rate_limit: 1, budget: { on_exhausted: wait, max_wait: 120s }",
                ),
            ),
            ("free", llm_charter("free", "local", "")),
        ],
        &[("prompts/triage.md", "Classify: {{ text }}")],
        // Two slots: two events sleeping in them would stop every other charter.
        "  concurrency: 2",
        "",
    )
    .await;
    let mut rated = Vec::new();
    for i in 0..3 {
        rated.push(
            h.send("rated", json!({"subject": format!("refund {i}")}))
                .await,
        );
    }
    // Every rated event has had its run: one decided, two put back until the window opens.
    let mut waiting = 0;
    for id in &rated {
        let mut runs = Vec::new();
        for _ in 0..300 {
            runs = h.store.runs_for_event(*id).await.unwrap();
            if runs.iter().any(|r| r.finished_at.is_some()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = runs.last().expect("a run");
        if r.outcome == Some(charter_core::model::RunOutcome::Failed) {
            let err = r.error.clone().unwrap_or_default();
            assert!(err.contains("retried when the next window opens"), "{err}");
            waiting += 1;
        }
    }
    assert_eq!(waiting, 2, "two events wait for the next window");
    // The free charter's events are decided while the others wait.
    for i in 0..4 {
        let id = h
            .send("free", json!({"subject": format!("invoice {i}")}))
            .await;
        let run = h.wait(id, "done").await;
        assert_eq!(run.decision.unwrap().label.as_deref(), Some("billing"));
    }
    // The waiting events were not retried before their time and nothing escalated.
    for id in &rated {
        assert_eq!(h.store.runs_for_event(*id).await.unwrap().len(), 1);
    }
    let escalations = h
        .store
        .list_escalations(charter_store::EscalationFilter::default())
        .await
        .unwrap();
    assert!(escalations.is_empty(), "{escalations:?}");
    assert_eq!(
        h.seen.lock().unwrap().len(),
        5,
        "one rated and four free calls"
    );
}
