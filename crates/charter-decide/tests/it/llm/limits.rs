//! Cache, budget and rate limit: shared ledgers, estimates for servers without usage, the
//! concurrency bound, the cache lifetime.

use super::*;

#[tokio::test]
async fn repeated_input_is_a_cache_hit() {
    let (fake, addr) = fake_server(vec![Reply::Json(200, openai(&valid("billing", 0.9)))]).await;
    let e = engine(vec![settings("default", addr)]);
    let case = Case::new(&["default"]);
    let a = e.classify(&case.request("charged twice")).await.unwrap();
    let b = e.classify(&case.request("charged twice")).await.unwrap();
    assert!(!a.cached);
    assert!(b.cached);
    assert_eq!(b.label, "billing");
    assert_eq!(b.usage.calls, 0);
    assert_eq!(
        fake.requests(),
        1,
        "the second classification made no request"
    );
    // A different input is not a hit (the script is exhausted, so it fails).
    let c = e.classify(&case.request("charged three times")).await;
    assert!(c.is_err());
    assert!(fake.requests() >= 2);
}

/// A ledger that refuses to be read (a store that is down).
struct BrokenLedger;

impl charter_decide::llm::UsageLedger for BrokenLedger {
    fn take_slot<'a>(
        &'a self,
        _: &'a str,
        _: i64,
        _: i64,
        _: u32,
    ) -> charter_decide::llm::CacheFuture<'a, Result<Option<i64>, String>> {
        Box::pin(async { Err("database is locked".to_string()) })
    }
    fn spent<'a>(
        &'a self,
        _: &'a str,
        _: i64,
    ) -> charter_decide::llm::CacheFuture<'a, Result<charter_decide::llm::Spend, String>> {
        Box::pin(async { Err("database is locked".to_string()) })
    }
    fn add<'a>(
        &'a self,
        _: &'a str,
        _: i64,
        _: charter_decide::llm::SpendDelta,
    ) -> charter_decide::llm::CacheFuture<'a, Result<charter_decide::llm::Spend, String>> {
        Box::pin(async { Err("database is locked".to_string()) })
    }
}

#[tokio::test]
async fn engines_sharing_a_ledger_share_the_budget_and_an_unreadable_one_stops_calls() {
    let (fake, addr) = fake_server(vec![
        Reply::Json(200, openai(&valid("billing", 0.9))),
        Reply::Json(200, openai(&valid("billing", 0.9))),
    ])
    .await;
    // Two nodes: separate engines (separate rate counters), one ledger.
    let ledger = Arc::new(charter_decide::llm::MemoryLedger::default());
    let a = engine(vec![settings("default", addr)]).with_ledger(ledger.clone());
    let b = engine(vec![settings("default", addr)]).with_ledger(ledger.clone());
    let mut case = Case::new(&["default"]);
    case.limits.tokens_per_day = Some(100);
    a.classify(&case.request("first")).await.unwrap();
    let f = b.classify(&case.request("second")).await.unwrap_err();
    assert!(
        f.reason.contains("budget exhausted: 150 of 100 tokens"),
        "{}",
        f.reason
    );
    assert_eq!(fake.requests(), 1, "the other engine made no request");
    // Without a budget the ledger is not read: the call goes.
    let mut unbudgeted = Case::new(&["default"]);
    unbudgeted.limits.tokens_per_day = None;
    b.classify(&unbudgeted.request("third")).await.unwrap();
    assert_eq!(fake.requests(), 2);
    // A budget that cannot be read stops the call (it fails closed) and says why.
    let broken = engine(vec![settings("default", addr)]).with_ledger(Arc::new(BrokenLedger));
    let f = broken.classify(&case.request("fourth")).await.unwrap_err();
    assert!(
        f.reason
            .contains("the LLM budget could not be read: database is locked"),
        "{}",
        f.reason
    );
    assert_eq!(fake.requests(), 2);
    // A rate limit that cannot be checked stops the call too.
    let mut limited = Case::new(&["default"]);
    limited.limits.requests_per_window = Some(10);
    let f = broken
        .classify(&limited.request("fifth"))
        .await
        .unwrap_err();
    assert!(
        f.reason
            .contains("the LLM rate limit could not be checked: database is locked"),
        "{}",
        f.reason
    );
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn engines_sharing_a_ledger_share_the_rate_limit() {
    let replies = (0..2)
        .map(|_| Reply::Json(200, openai(&valid("bug", 0.9))))
        .collect();
    let (fake, addr) = fake_server(replies).await;
    let ledger = Arc::new(charter_decide::llm::MemoryLedger::default());
    let a = engine(vec![settings("default", addr)]).with_ledger(ledger.clone());
    let b = engine(vec![settings("default", addr)]).with_ledger(ledger.clone());
    let mut case = Case::new(&["default"]);
    case.limits.requests_per_window = Some(1);
    case.limits.rate_window = Duration::from_secs(60);
    case.limits.on_exhausted = OnExhausted::Escalate;
    a.classify(&case.request("one")).await.unwrap();
    let f = b.classify(&case.request("two")).await.unwrap_err();
    assert!(f.reason.starts_with("rate limit reached"), "{}", f.reason);
    assert_eq!(fake.requests(), 1, "the other engine made no request");
    // Another charter has its own window.
    let mut other = case.request("three");
    other.charter = "another";
    b.classify(&other).await.unwrap();
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn budget_exhausted_escalates_without_a_request() {
    let (fake, addr) = fake_server(vec![
        Reply::Json(200, openai(&valid("billing", 0.9))),
        Reply::Json(200, openai(&valid("billing", 0.9))),
    ])
    .await;
    let e = engine(vec![settings("default", addr)]);
    let mut case = Case::new(&["default"]);
    case.limits.tokens_per_day = Some(100);
    case.limits.on_exhausted = OnExhausted::Escalate;
    e.classify(&case.request("first")).await.unwrap();
    let f = e.classify(&case.request("second")).await.unwrap_err();
    assert!(f.reason.starts_with("budget exhausted"), "{}", f.reason);
    assert!(f.reason.contains("150 of 100 tokens"), "{}", f.reason);
    assert_eq!(fake.requests(), 1);
    // With `wait`, a budget that only reopens tomorrow is still an escalation (bounded wait).
    case.limits.on_exhausted = OnExhausted::Wait;
    case.limits.max_wait = Duration::from_millis(100);
    let f = e.classify(&case.request("third")).await.unwrap_err();
    assert!(f.reason.starts_with("budget exhausted"), "{}", f.reason);
    assert!(f.reason.contains("wait limit"), "{}", f.reason);
    // Limits are per charter: another charter still gets its request.
    let mut other = case.request("fourth");
    other.charter = "another";
    e.classify(&other).await.unwrap();
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn rate_limit_waits_or_escalates() {
    let replies = (0..3)
        .map(|_| Reply::Json(200, openai(&valid("bug", 0.9))))
        .collect();
    let (fake, addr) = fake_server(replies).await;
    let e = engine(vec![settings("default", addr)]);
    let mut case = Case::new(&["default"]);
    case.limits.requests_per_window = Some(1);
    case.limits.rate_window = Duration::from_millis(600);
    case.limits.on_exhausted = OnExhausted::Escalate;
    e.classify(&case.request("one")).await.unwrap();
    let f = e.classify(&case.request("two")).await.unwrap_err();
    assert!(f.reason.starts_with("rate limit reached"), "{}", f.reason);
    assert_eq!(fake.requests(), 1);
    assert_eq!(f.kind, EscalationReason::RateLimited);
    assert_eq!(f.retry_after, None, "escalate does not ask for a retry");
    // `wait` does not sleep in the engine: it says when the next window opens.
    case.limits.on_exhausted = OnExhausted::Wait;
    case.limits.max_wait = Duration::from_secs(5);
    let f = e.classify(&case.request("three")).await.unwrap_err();
    assert_eq!(f.kind, EscalationReason::RateLimited);
    let after = f.retry_after.expect("a retry time under `wait`");
    assert!(after <= Duration::from_millis(600), "{after:?}");
    assert!(
        f.reason.contains("retried when the next window opens"),
        "{}",
        f.reason
    );
    assert_eq!(fake.requests(), 1);
    tokio::time::sleep(after).await;
    e.classify(&case.request("three")).await.unwrap();
    assert_eq!(fake.requests(), 2);
    // A window farther away than `max_wait` escalates.
    case.limits.max_wait = Duration::from_millis(1);
    let f = e.classify(&case.request("four")).await.unwrap_err();
    assert_eq!(f.retry_after, None);
    assert!(f.reason.contains("wait limit"), "{}", f.reason);
}

/// An OpenAI chat-completions response without `usage` (some local servers send none).
fn openai_without_usage(content: &str) -> Value {
    let mut v = openai(content);
    v.as_object_mut().unwrap().remove("usage");
    v
}

#[tokio::test]
async fn a_server_without_usage_is_counted_by_estimate_and_stopped_by_the_budget() {
    let replies = (0..6)
        .map(|_| Reply::Json(200, openai_without_usage(&valid("bug", 0.9))))
        .collect();
    let (fake, addr) = fake_server(replies).await;
    let ledger = Arc::new(MemoryLedger::default());
    let e = engine(vec![settings("default", addr)]).with_ledger(ledger.clone());
    let mut case = Case::new(&["default"]);
    case.limits.tokens_per_day = Some(100);
    let a = e.classify(&case.request("first")).await.unwrap();
    assert!(a.usage.tokens_estimated);
    // Characters / 4 of what was sent (system message and prompt) and what came back.
    let sent: usize = fake.body(0)["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().chars().count())
        .sum();
    assert_eq!(a.usage.prompt_tokens, (sent as u64).div_ceil(4));
    assert_eq!(
        a.usage.completion_tokens,
        (valid("bug", 0.9).chars().count() as u64).div_ceil(4)
    );
    assert!(a.usage.tokens() > 100, "the estimate crosses the budget");
    let spent = ledger
        .add("triage", charter_decide::llm::utc_day(), Default::default())
        .await
        .unwrap();
    assert_eq!(
        spent.tokens,
        a.usage.tokens(),
        "the ledger holds the estimate"
    );
    let f = e.classify(&case.request("second")).await.unwrap_err();
    assert_eq!(f.kind, EscalationReason::Budget, "{}", f.reason);
    assert_eq!(fake.requests(), 1, "no request after the budget is spent");
}

#[tokio::test]
async fn concurrent_calls_stay_within_the_documented_bound() {
    let n = 12;
    let replies = (0..n)
        .map(|_| Reply::Slow(Duration::from_millis(150), openai(&valid("bug", 0.9))))
        .collect();
    let (fake, addr) = fake_server(replies).await;
    let ledger = Arc::new(MemoryLedger::default());
    let mut s = settings("default", addr);
    s.max_tokens = 40;
    let e = Arc::new(engine(vec![s]).with_ledger(ledger.clone()));
    let budget = 500;
    let mut tasks = Vec::new();
    for i in 0..n {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            let mut case = Case::new(&["default"]);
            case.limits.tokens_per_day = Some(budget);
            let text = format!("ticket {i}");
            let r = e.classify(&case.request(&text)).await;
            r.map(|a| a.usage.tokens()).map_err(|f| f.kind)
        }));
    }
    let mut answered = 0u64;
    for t in tasks {
        match t.await.unwrap() {
            Ok(tokens) => {
                assert_eq!(tokens, 150);
                answered += 1;
            }
            Err(kind) => assert_eq!(kind, EscalationReason::Budget),
        }
    }
    let spent = ledger
        .add("triage", charter_decide::llm::utc_day(), Default::default())
        .await
        .unwrap();
    assert_eq!(spent.tokens, answered * 150, "reservations all settled");
    assert_eq!(
        fake.requests() as u64,
        answered,
        "refused calls sent nothing"
    );
    // The bound: the budget plus one call's reservation (prompt estimate + max_tokens), plus
    // how far the reported prompt tokens (120) exceed the estimate for calls in flight.
    let body = fake.body(0);
    let sent: usize = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().chars().count())
        .sum();
    let reservation = (sent as u64).div_ceil(4) + 40;
    let slack = 120u64.saturating_sub((sent as u64).div_ceil(4)) * answered;
    assert!(
        spent.tokens <= budget + reservation + slack,
        "{} tokens spent against {budget} (reservation {reservation})",
        spent.tokens
    );
    // Without reservations all 12 would have gone (1800 tokens against 500).
    assert!(answered < n as u64, "{answered} of {n} answered");
    assert!(answered >= 1);
}

#[tokio::test]
async fn the_cache_lifetime_is_the_stages_and_zero_turns_it_off() {
    let replies = (0..5)
        .map(|_| Reply::Json(200, openai(&valid("bug", 0.9))))
        .collect();
    let (fake, addr) = fake_server(replies).await;
    let e = engine(vec![settings("default", addr)]);
    let mut case = Case::new(&["default"]);
    case.cache_ttl = Duration::from_millis(300);
    assert!(!e.classify(&case.request("same")).await.unwrap().cached);
    let hit = e.classify(&case.request("same")).await.unwrap();
    assert!(hit.cached);
    assert_eq!(hit.usage.stage_usage().cache.as_deref(), Some("hit"));
    assert_eq!(fake.requests(), 1);
    // Expired: asked again.
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(!e.classify(&case.request("same")).await.unwrap().cached);
    assert_eq!(fake.requests(), 2);
    // Zero: the cache is neither read nor written.
    case.cache_ttl = Duration::ZERO;
    let a = e.classify(&case.request("same")).await.unwrap();
    assert!(!a.cached);
    assert_eq!(a.usage.stage_usage().cache, None);
    e.classify(&case.request("other")).await.unwrap();
    case.cache_ttl = Duration::from_secs(60);
    assert!(
        !e.classify(&case.request("other")).await.unwrap().cached,
        "nothing was written with a zero lifetime"
    );
    assert_eq!(fake.requests(), 5);
}
