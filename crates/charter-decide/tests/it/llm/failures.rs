//! Failures: retries (`Retry-After`, 5xx, no retry on 4xx), timeouts, fallback to the second
//! provider, the circuit breaker, and the escalation reason of each failure.

use super::*;

#[tokio::test]
async fn too_many_requests_honours_retry_after() {
    let (fake, addr) = fake_server(vec![
        Reply::WithHeader(429, json!({"error": "slow down"}), "retry-after", "1"),
        Reply::Json(200, openai(&valid("bug", 0.7))),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let case = Case::new(&["default"]);
    let t = Instant::now();
    let a = e.classify(&case.request("app crashes")).await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(990),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(a.label, "bug");
    assert_eq!(fake.requests(), 2);
    assert_eq!(fake.body(0), fake.body(1), "the same request is retried");
}

#[tokio::test]
async fn server_error_then_success_is_retried() {
    let (fake, addr) = fake_server(vec![
        Reply::Json(500, json!({"error": "boom"})),
        Reply::Json(200, openai(&valid("bug", 0.7))),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let case = Case::new(&["default"]);
    let a = e.classify(&case.request("app crashes")).await.unwrap();
    assert_eq!(a.label, "bug");
    assert_eq!(a.usage.calls, 1, "one logical call, two HTTP attempts");
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (fake, addr) = fake_server(vec![
        Reply::Json(400, json!({"error": "bad schema"})),
        Reply::Json(200, openai(&valid("bug", 0.7))),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let case = Case::new(&["default"]);
    let f = e.classify(&case.request("app crashes")).await.unwrap_err();
    assert!(f.reason.contains("HTTP 400"), "{}", f.reason);
    assert!(f.reason.contains("bad schema"), "{}", f.reason);
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn timeout_escalates() {
    let (fake, addr) = fake_server(vec![
        Reply::Slow(Duration::from_secs(3), openai(&valid("bug", 0.7))),
        Reply::Slow(Duration::from_secs(3), openai(&valid("bug", 0.7))),
    ])
    .await;
    let mut s = settings("default", addr);
    s.timeout = Duration::from_millis(200);
    s.max_retries = 1;
    let e = engine(vec![s]);
    let case = Case::new(&["default"]);
    let t = Instant::now();
    let f = e.classify(&case.request("app crashes")).await.unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(
        f.reason.contains("timed out after 2 attempt(s)"),
        "{}",
        f.reason
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn falls_back_to_the_second_provider() {
    let (first, a1) = fake_server(vec![
        Reply::Json(503, json!({"error": "overloaded"})),
        Reply::Json(503, json!({"error": "overloaded"})),
    ])
    .await;
    let (second, a2) = fake_server(vec![Reply::Json(200, openai(&valid("other", 0.75)))]).await;
    let mut p1 = settings("default", a1);
    p1.max_retries = 1;
    let mut p2 = settings("backup", a2);
    p2.model = "backup-model".into();
    let e = engine(vec![p1, p2]);
    let case = Case::new(&["default", "backup"]);
    let a = e.classify(&case.request("hello")).await.unwrap();
    assert_eq!(a.provider, "backup");
    assert_eq!(a.model, "backup-model");
    assert_eq!(a.label, "other");
    assert_eq!(a.fallback_notes.len(), 1);
    assert!(
        a.fallback_notes[0].contains("HTTP 503"),
        "{:?}",
        a.fallback_notes
    );
    assert_eq!(first.requests(), 2);
    assert_eq!(second.requests(), 1);
    assert_eq!(second.body(0)["model"], "backup-model");
}

#[tokio::test]
async fn each_failure_escalates_with_its_own_reason() {
    // A dead provider: a port that was bound and released.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut s = settings("default", dead);
    s.max_retries = 1;
    let f = engine(vec![s])
        .classify(&Case::new(&["default"]).request("hello"))
        .await
        .unwrap_err();
    assert_eq!(
        f.kind,
        EscalationReason::ProviderUnavailable,
        "{}",
        f.reason
    );
    assert_eq!(f.usage.attempts, 2, "both attempts counted");

    // A slow one: every attempt times out.
    let (_, slow) = fake_server(vec![
        Reply::Slow(Duration::from_secs(2), openai(&valid("bug", 0.9))),
        Reply::Slow(Duration::from_secs(2), openai(&valid("bug", 0.9))),
    ])
    .await;
    let mut s = settings("default", slow);
    s.timeout = Duration::from_millis(150);
    s.max_retries = 1;
    let f = engine(vec![s])
        .classify(&Case::new(&["default"]).request("hello"))
        .await
        .unwrap_err();
    assert_eq!(f.kind, EscalationReason::Timeout, "{}", f.reason);
    assert!(
        f.usage.latency_ms >= 300,
        "the failed attempts' time is recorded: {} ms",
        f.usage.latency_ms
    );

    // An HTTP 500 on every attempt.
    let (_, broken) = fake_server(vec![
        Reply::Json(500, json!({"error": "boom"})),
        Reply::Json(500, json!({"error": "boom"})),
    ])
    .await;
    let mut s = settings("default", broken);
    s.max_retries = 1;
    let f = engine(vec![s])
        .classify(&Case::new(&["default"]).request("hello"))
        .await
        .unwrap_err();
    assert_eq!(f.kind, EscalationReason::ProviderError, "{}", f.reason);

    // A refused address (a loopback endpoint without allow_private): nothing is sent.
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("bug", 0.9)))]).await;
    let mut s = settings("default", addr);
    s.allow_private = false;
    let f = engine(vec![s])
        .classify(&Case::new(&["default"]).request("hello"))
        .await
        .unwrap_err();
    assert_eq!(f.kind, EscalationReason::RefusedAddress, "{}", f.reason);
    assert_eq!(fake.requests(), 0);

    // A budget-exhausted charter.
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("bug", 0.9)))]).await;
    let e = engine(vec![settings("default", addr)]);
    let mut case = Case::new(&["default"]);
    case.limits.tokens_per_day = Some(100);
    e.classify(&case.request("first")).await.unwrap();
    let f = e.classify(&case.request("second")).await.unwrap_err();
    assert_eq!(f.kind, EscalationReason::Budget, "{}", f.reason);
    assert!(f.limited);
    assert_eq!(fake.requests(), 1);

    // Invalid output twice.
    let (_, addr) = fake_server(vec![
        Reply::Json(200, openai("not json")),
        Reply::Json(200, openai("still not json")),
    ])
    .await;
    let f = engine(vec![settings("default", addr)])
        .classify(&Case::new(&["default"]).request("hello"))
        .await
        .unwrap_err();
    assert_eq!(f.kind, EscalationReason::InvalidOutput, "{}", f.reason);
}

#[tokio::test]
async fn latency_and_attempts_include_a_failed_provider() {
    let (_, a1) = fake_server(vec![
        Reply::Slow(Duration::from_millis(400), json!({"error": "x"})),
        Reply::Slow(Duration::from_millis(400), json!({"error": "x"})),
    ])
    .await;
    let (_, a2) = fake_server(vec![Reply::Json(200, openai(&valid("other", 0.9)))]).await;
    let mut p1 = settings("default", a1);
    p1.timeout = Duration::from_millis(150);
    p1.max_retries = 1;
    let e = engine(vec![p1, settings("backup", a2)]);
    let a = e
        .classify(&Case::new(&["default", "backup"]).request("hello"))
        .await
        .unwrap();
    assert_eq!(a.provider, "backup");
    assert_eq!(a.usage.attempts, 3, "two failed attempts and one answer");
    assert!(a.usage.latency_ms >= 300, "{} ms", a.usage.latency_ms);
    let outcomes: Vec<_> = a
        .usage
        .requests
        .iter()
        .map(|r| (r.provider.as_str(), r.outcome))
        .collect();
    assert_eq!(outcomes, vec![("default", "timeout"), ("backup", "ok")]);
    let su = a.usage.stage_usage();
    assert_eq!(su.cache.as_deref(), Some("miss"));
    assert_eq!(su.attempts, 3);
}

#[tokio::test]
async fn a_dead_primary_opens_its_circuit_and_the_fallback_answers_at_once() {
    let primary_replies = (0..4)
        .map(|_| Reply::Json(503, json!({"error": "down"})))
        .collect();
    let (primary, a1) = fake_server(primary_replies).await;
    let backup_replies = (0..6)
        .map(|_| Reply::Json(200, openai(&valid("other", 0.9))))
        .collect();
    let (backup, a2) = fake_server(backup_replies).await;
    let mut p1 = settings("default", a1);
    p1.max_retries = 1;
    p1.breaker_failures = 2;
    p1.breaker_cool_down = Duration::from_millis(300);
    let e = engine(vec![p1, settings("backup", a2)]);
    let case = Case::new(&["default", "backup"]);
    // Two events pay the primary's two attempts each; then its circuit is open.
    for text in ["one", "two"] {
        let a = e.classify(&case.request(text)).await.unwrap();
        assert_eq!(a.provider, "backup");
    }
    assert_eq!(primary.requests(), 4);
    for text in ["three", "four"] {
        let a = e.classify(&case.request(text)).await.unwrap();
        assert_eq!(a.provider, "backup");
        assert!(
            a.fallback_notes[0].contains("circuit breaker open"),
            "{:?}",
            a.fallback_notes
        );
        assert_eq!(a.usage.attempts, 1, "only the backup's attempt");
    }
    assert_eq!(primary.requests(), 4, "no request to an open circuit");
    // After the cool-down one probe goes (it fails: the circuit opens again).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let a = e.classify(&case.request("five")).await.unwrap();
    assert_eq!(a.provider, "backup");
    assert_eq!(primary.requests(), 6, "one probe request with its retry");
    let a = e.classify(&case.request("six")).await.unwrap();
    assert!(a.fallback_notes[0].contains("circuit breaker open"));
    assert_eq!(primary.requests(), 6);
    assert_eq!(backup.requests(), 6);
}
