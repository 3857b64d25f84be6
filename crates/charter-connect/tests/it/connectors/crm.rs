//! HTTP connectors against a local CRM: OAuth2 tokens, the private-address guard, the circuit
//! breaker, response contracts, rate and concurrency limits.

use super::*;

#[tokio::test]
async fn oauth2_token_is_cached_and_refreshed_after_a_401() {
    let (base, crm) = start_crm().await;
    let exec = HttpExecutor::new().unwrap();
    let mut conn = HttpConnection::plain(plain(&base));
    conn.oauth = Some(oauth(&base));
    for i in 0..3 {
        let out = conn
            .attempt(
                &exec,
                &post_req(&conn.connector, "/contacts", &format!("k{i}")),
            )
            .await;
        assert!(out.ok, "{out:?}");
    }
    assert_eq!(crm.token_fetches.load(Ordering::SeqCst), 1, "token cached");
    let keys: Vec<String> = crm
        .contacts
        .lock()
        .unwrap()
        .iter()
        .map(|c| c.0.clone())
        .collect();
    assert_eq!(keys, ["k0", "k1", "k2"]);

    // The CRM revokes the cached token: the next attempt gets a 401, fetches a new token
    // and succeeds within the same attempt.
    *crm.revoke_first.lock().unwrap() = true;
    let out = conn
        .attempt(&exec, &post_req(&conn.connector, "/contacts", "k3"))
        .await;
    assert!(out.ok, "{out:?}");
    assert_eq!(crm.token_fetches.load(Ordering::SeqCst), 2);

    // Wrong client secret: a permanent failure that does not show the secret.
    let bad = OAuth2Client::new(OAuth2Settings {
        token_url: format!("{base}/oauth/token"),
        client_id: "crm-client".into(),
        client_secret: Secret::new("wrong-SENSITIVE"),
        scope: None,
        allow_private: true,
    })
    .unwrap();
    let err = bad.token().await.unwrap_err();
    assert!(!err.retryable());
    assert!(err.to_string().contains("401"), "{err}");
    assert!(err.to_string().contains("invalid_client"), "{err}");
    assert!(!format!("{err:?}").contains("SENSITIVE"));
}

#[tokio::test]
async fn token_endpoint_on_a_private_address_is_refused_without_allow_private() {
    let (base, _crm) = start_crm().await;
    let c = OAuth2Client::new(OAuth2Settings {
        token_url: format!("{base}/oauth/token"),
        client_id: "crm-client".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        scope: None,
        allow_private: false,
    })
    .unwrap();
    let err = c.token().await.unwrap_err();
    assert!(err.to_string().contains("allow_private"), "{err}");
}

#[tokio::test]
async fn circuit_breaker_stops_calling_a_failing_system_and_says_so() {
    let (base, crm) = start_crm().await;
    let exec = HttpExecutor::new().unwrap();
    let mut conn = HttpConnection::plain(plain(&base));
    conn.breaker = Some(CircuitBreaker::new(
        "crm",
        BreakerPolicy {
            failures: 3,
            cool_down: Duration::from_millis(300),
        },
    ));
    let req = post_req(&conn.connector, "/flaky", "k");
    for _ in 0..3 {
        let out = conn.attempt(&exec, &req).await;
        assert_eq!(out.status, Some(500));
    }
    for _ in 0..5 {
        let out = conn.attempt(&exec, &req).await;
        assert_eq!(out.status, None);
        assert!(out.retryable);
        let msg = out.error.unwrap();
        assert!(
            msg.contains("circuit breaker open for connector `crm` after 3 consecutive failures"),
            "{msg}"
        );
        assert!(out.retry_after.unwrap() <= Duration::from_millis(300));
    }
    assert_eq!(
        crm.flaky_hits.load(Ordering::SeqCst),
        3,
        "no calls while open"
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    let probe = conn.attempt(&exec, &req).await;
    assert_eq!(probe.status, Some(500), "one probe after the cool-down");
    assert_eq!(crm.flaky_hits.load(Ordering::SeqCst), 4);
    assert!(
        conn.attempt(&exec, &req).await.status.is_none(),
        "open again"
    );
}

#[tokio::test]
async fn response_contract_mismatch_fails_the_attempt_clearly() {
    let (base, _crm) = start_crm().await;
    let exec = HttpExecutor::new().unwrap();
    let mut conn = HttpConnection::plain(plain(&base));
    let schema = json!({
        "type": "object",
        "required": ["id"],
        "properties": {"id": {"type": "integer"}}
    });
    conn.contract = Some(ResponseContract::new("schemas/crm-answer.json", &schema).unwrap());
    let out = conn
        .attempt(&exec, &post_req(&conn.connector, "/wrong-shape", "k"))
        .await;
    assert_eq!(out.status, Some(200));
    assert!(!out.ok);
    assert!(!out.retryable);
    let msg = out.error.unwrap();
    assert!(
        msg.starts_with("response does not match the contract schemas/crm-answer.json: /id:"),
        "{msg}"
    );
    // A non-JSON answer is a mismatch too.
    let get_ok =
        HttpExecutor::prepare(Some(&conn.connector), "GET", "/ok", &[], None, None, "k").unwrap();
    let out = conn.attempt(&exec, &get_ok).await;
    assert!(out.error.unwrap().contains("not JSON"));
}

#[tokio::test]
async fn rate_limit_and_concurrency_pace_requests() {
    let (base, _crm) = start_crm().await;
    let exec = Arc::new(HttpExecutor::new().unwrap());
    let mut conn = HttpConnection::plain(plain(&base));
    conn.rate_limit = Some(RateLimiter::new(10.0));
    conn.concurrency = Some(ConcurrencyLimit::new(2));
    let conn = Arc::new(conn);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..15 {
        let conn = conn.clone();
        let exec = exec.clone();
        tasks.push(tokio::spawn(async move {
            let req =
                HttpExecutor::prepare(Some(&conn.connector), "GET", "/ok", &[], None, None, "k")
                    .unwrap();
            conn.attempt(&exec, &req).await.ok
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    // 10 from the burst, then 5 more at 10/s.
    assert!(
        t.elapsed() >= Duration::from_millis(450),
        "{:?}",
        t.elapsed()
    );
}
