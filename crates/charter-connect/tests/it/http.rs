//! The HTTP executor against a real server on 127.0.0.1, plus request preparation,
//! backoff bounds and secret redaction.

// Test helpers (the server, fixtures) unwrap too; a panic there is a test failure.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{any, post};
use charter_connect::{
    AttemptOutcome, BODY_EXCERPT_BYTES, BODY_KEEP_BYTES, ConnectError, HttpExecutor, HttpRequest,
    ResolvedAuth, ResolvedHttpConnector, Secret, backoff,
};
use charter_core::config::{HttpAuth, HttpConnector, RetryPolicy, SecretRef};
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::json;

const TOKEN: &str = "tok-SENSITIVE-123";

/// What the test server saw on `/orders/{id}`.
#[derive(Clone, Default)]
struct Seen {
    orders: Arc<Mutex<Vec<(String, HeaderMap, serde_json::Value)>>>,
    target_hits: Arc<AtomicUsize>,
}

async fn order(
    State(seen): State<Seen>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    // The server checks what a well-behaved downstream API would check.
    let auth_ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    let has_key = headers.contains_key("idempotency-key");
    let json_ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        == Some("application/json");
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    };
    seen.orders
        .lock()
        .unwrap()
        .push((id.clone(), headers, value));
    if !auth_ok {
        return (StatusCode::UNAUTHORIZED, "bad auth").into_response();
    }
    if !has_key || !json_ct {
        return (
            StatusCode::BAD_REQUEST,
            "missing idempotency key or content type",
        )
            .into_response();
    }
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": id, "status": "created"})),
    )
        .into_response()
}

async fn status(Path(code): Path<u16>) -> impl IntoResponse {
    let code = StatusCode::from_u16(code).unwrap();
    let mut h = HeaderMap::new();
    if code == StatusCode::TOO_MANY_REQUESTS {
        h.insert(header::RETRY_AFTER, "1".parse().unwrap());
    }
    (code, h, format!("status {}", code.as_u16()))
}

async fn start() -> (String, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/orders/{id}", post(order))
        .route("/status/{code}", any(status))
        .route(
            "/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/redirect",
            any(|| async { (StatusCode::FOUND, [(header::LOCATION, "/target")], "moved") }),
        )
        .route(
            "/target",
            any(|State(seen): State<Seen>| async move {
                seen.target_hits.fetch_add(1, Ordering::SeqCst);
                "target"
            }),
        )
        .route("/big", any(|| async { "x".repeat(2 * 1024 * 1024) }))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), seen)
}

fn connector(base_url: &str) -> ResolvedHttpConnector {
    ResolvedHttpConnector {
        name: "shop".into(),
        base_url: format!("{base_url}/"),
        headers: vec![("X-Team".into(), "ops".into())],
        auth: Some(ResolvedAuth::Bearer(Secret::new(TOKEN))),
        timeout: Duration::from_secs(5),
        allow_private: true,
    }
}

async fn get(exec: &HttpExecutor, base: &str, path: &str, timeout: Duration) -> AttemptOutcome {
    let c = connector(base);
    let req =
        HttpExecutor::prepare(Some(&c), "GET", path, &[], None, Some(timeout), "key-1").unwrap();
    exec.attempt(&req).await
}

#[tokio::test]
async fn sends_idempotency_key_auth_and_json_body() {
    let (base, seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let c = connector(&base);
    let body = json!({"order": {"id": 7, "note": "rush"}});
    let req = HttpExecutor::prepare(
        Some(&c),
        "post",
        "/orders/7",
        &[("X-Request-Source".into(), "charter-test".into())],
        Some(body.clone()),
        None,
        "evt1-act-abc123",
    )
    .unwrap();
    let out = exec.attempt(&req).await;
    assert_eq!(out.status, Some(201), "{out:?}");
    assert!(out.ok);
    assert!(!out.retryable);
    assert_eq!(out.error, None);
    let echoed: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(echoed, json!({"id": "7", "status": "created"}));
    assert!(out.body_excerpt.unwrap().contains("created"));

    let orders = seen.orders.lock().unwrap();
    assert_eq!(orders.len(), 1);
    let (id, headers, value) = &orders[0];
    assert_eq!(id, "7");
    assert_eq!(value, &body);
    assert_eq!(headers["idempotency-key"], "evt1-act-abc123");
    assert_eq!(headers["authorization"], format!("Bearer {TOKEN}").as_str());
    assert_eq!(headers["x-team"], "ops");
    assert_eq!(headers["x-request-source"], "charter-test");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test]
async fn wrong_auth_is_a_client_error() {
    let (base, _seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let mut c = connector(&base);
    c.auth = Some(ResolvedAuth::Bearer(Secret::new("wrong")));
    let req = HttpExecutor::prepare(
        Some(&c),
        "POST",
        "orders/1",
        &[],
        Some(json!({})),
        None,
        "k",
    )
    .unwrap();
    let out = exec.attempt(&req).await;
    assert_eq!(out.status, Some(401));
    assert!(!out.ok && !out.retryable);
    assert_eq!(out.error.as_deref(), Some("HTTP 401 Unauthorized"));
}

#[tokio::test]
async fn server_errors_and_408_are_retryable() {
    let (base, _seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    for code in [500u16, 502, 503, 504, 408] {
        let out = get(
            &exec,
            &base,
            &format!("/status/{code}"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(out.status, Some(code));
        assert!(!out.ok, "{code}");
        assert!(out.retryable, "{code} should be retryable");
        assert!(
            out.error
                .as_deref()
                .unwrap()
                .starts_with(&format!("HTTP {code}"))
        );
        assert_eq!(
            out.body_excerpt.as_deref(),
            Some(format!("status {code}").as_str())
        );
    }
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() {
    let (base, _seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let out = get(&exec, &base, "/status/429", Duration::from_secs(5)).await;
    assert_eq!(out.status, Some(429));
    assert!(out.retryable);
    assert_eq!(out.retry_after, Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn client_errors_are_not_retryable() {
    let (base, _seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    for code in [400u16, 403, 404, 409, 422] {
        let out = get(
            &exec,
            &base,
            &format!("/status/{code}"),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(out.status, Some(code));
        assert!(!out.ok && !out.retryable, "{code}");
        assert_eq!(out.retry_after, None);
    }
    let ok = get(&exec, &base, "/status/204", Duration::from_secs(5)).await;
    assert!(ok.ok && !ok.retryable && ok.error.is_none());
    assert_eq!(ok.body_excerpt, None);
}

#[tokio::test]
async fn timeout_is_retryable_with_an_error() {
    let (base, _seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let out = get(&exec, &base, "/slow", Duration::from_millis(200)).await;
    assert_eq!(out.status, None);
    assert!(!out.ok);
    assert!(out.retryable);
    assert_eq!(out.error.as_deref(), Some("timed out after 200 ms"));
    assert!(out.duration >= Duration::from_millis(200));
    assert!(out.duration < Duration::from_secs(3), "{:?}", out.duration);
}

#[tokio::test]
async fn connection_refused_is_retryable_and_leaks_nothing() {
    // Take a free port, then close it so nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let exec = HttpExecutor::new().unwrap();
    let c = connector(&format!("http://{addr}"));
    let req = HttpExecutor::prepare(
        Some(&c),
        "POST",
        "/orders/1?token=in-query",
        &[],
        Some(json!({"a": 1})),
        None,
        "k",
    )
    .unwrap();
    let out = exec.attempt(&req).await;
    assert_eq!(out.status, None);
    assert!(out.retryable);
    let error = out.error.unwrap();
    assert!(error.starts_with("connection failed"), "{error}");
    assert!(!error.contains(TOKEN), "{error}");
    assert!(!error.contains("in-query"), "URL leaked into {error}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let out = get(&exec, &base, "/redirect", Duration::from_secs(5)).await;
    assert_eq!(out.status, Some(302));
    assert!(!out.ok && !out.retryable);
    assert!(out.error.unwrap().contains("not followed"));
    assert_eq!(seen.target_hits.load(Ordering::SeqCst), 0);
    // The target itself is reachable, so the counter would have moved had we followed.
    let direct = get(&exec, &base, "/target", Duration::from_secs(5)).await;
    assert!(direct.ok);
    assert_eq!(seen.target_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn response_bodies_are_capped() {
    let (base, _seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let out = get(&exec, &base, "/big", Duration::from_secs(5)).await;
    assert!(out.ok);
    assert_eq!(out.body.len(), BODY_KEEP_BYTES);
    assert!(out.body_truncated);
    assert_eq!(out.body_excerpt.unwrap().len(), BODY_EXCERPT_BYTES);
}

// --- prepare ---

fn plain_connector(base: &str, auth: Option<ResolvedAuth>) -> ResolvedHttpConnector {
    ResolvedHttpConnector {
        name: "crm".into(),
        base_url: base.into(),
        headers: vec![
            ("Accept".into(), "application/json".into()),
            ("X-Default".into(), "connector".into()),
        ],
        auth,
        timeout: Duration::from_secs(7),
        allow_private: false,
    }
}

fn header<'a>(req: &'a HttpRequest, name: &str) -> Vec<&'a str> {
    req.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn prepare_joins_urls_and_orders_headers() {
    let c = plain_connector(
        "https://api.example.com/v2/",
        Some(ResolvedAuth::Header {
            name: "X-Api-Key".into(),
            value: Secret::new("k-SECRET"),
        }),
    );
    let req = HttpExecutor::prepare(
        Some(&c),
        "put",
        "/tickets/9?notify=false",
        &[
            ("x-default".into(), "action".into()),
            ("X-Api-Key".into(), "action-tries-to-override".into()),
            ("Idempotency-Key".into(), "action-tries-to-override".into()),
            ("Content-Type".into(), "application/merge-patch+json".into()),
        ],
        Some(json!({"status": "open"})),
        None,
        "the-key",
    )
    .unwrap();
    assert_eq!(req.method, "PUT");
    assert_eq!(
        req.url.as_str(),
        "https://api.example.com/v2/tickets/9?notify=false"
    );
    assert_eq!(req.timeout, Duration::from_secs(7));
    assert_eq!(header(&req, "accept"), ["application/json"]);
    assert_eq!(header(&req, "x-default"), ["action"]);
    assert_eq!(header(&req, "x-api-key"), ["k-SECRET"]);
    assert_eq!(header(&req, "idempotency-key"), ["the-key"]);
    // The action's own content type is kept.
    assert_eq!(
        header(&req, "content-type"),
        ["application/merge-patch+json"]
    );
    assert!(req.is_sensitive("x-api-key"));

    let no_slash = plain_connector("https://api.example.com/v2", None);
    let r = HttpExecutor::prepare(
        Some(&no_slash),
        "GET",
        "users",
        &[],
        None,
        Some(Duration::from_secs(1)),
        "k",
    )
    .unwrap();
    assert_eq!(r.url.as_str(), "https://api.example.com/v2/users");
    assert_eq!(r.timeout, Duration::from_secs(1));
    assert!(
        header(&r, "content-type").is_empty(),
        "no body, no content type"
    );
    assert!(header(&r, "authorization").is_empty());
}

#[test]
fn targets_stay_under_the_connector_base_url() {
    let c = plain_connector("https://api.example.com/v2/", None);
    let url = |target: &str| charter_connect::target_url(Some(&c), target);
    // Encoded values stay one segment; the downstream sees them encoded.
    assert_eq!(
        url("/things/a%2Fb%3Fx%3D1%23").unwrap().as_str(),
        "https://api.example.com/v2/things/a%2Fb%3Fx%3D1%23"
    );
    assert_eq!(
        url("/files/report..v2.txt").unwrap().as_str(),
        "https://api.example.com/v2/files/report..v2.txt"
    );
    assert_eq!(
        url("/tickets/42.json?x=1").unwrap().as_str(),
        "https://api.example.com/v2/tickets/42.json?x=1"
    );
    assert!(url("").is_ok() && url("?page=2").is_ok() && url("/").is_ok());
    // Dot segments, in every spelling the URL parser accepts, are refused before anything
    // else (even those that would stay under the base path).
    for target in [
        "/../admin",
        "/things/../../admin?x=1",
        "/things/%2e%2E/%2e%2e/admin",
        "/things/.%2e/x",
        "/things/./x",
        // Encoded by the template, a traversal still has `..` segments once decoded (as a
        // downstream that decodes `%2F` before routing would see it), twice encoded too.
        "/things/..%2F..%2Fadmin%3Fx%3D1%23",
        "/things/%252e%252e%252fadmin",
        "/things\\..\\..\\admin",
        "..",
    ] {
        let err = url(target).unwrap_err();
        assert!(
            matches!(err, ConnectError::DotSegment { .. }),
            "{target}: {err:?}"
        );
        assert!(err.to_string().contains("nothing sent"), "{err}");
    }
    // A `..` in a query value is not a path segment.
    assert!(url("/search?q=../..").is_ok());
    // A target that reaches another host through the authority is refused as well.
    for target in ["//evil.example/x", "@evil.example/x"] {
        match url(target) {
            Ok(u) => assert_eq!(u.host_str(), Some("api.example.com"), "{target}"),
            Err(e) => assert!(
                matches!(
                    e,
                    ConnectError::AbsoluteTargetWithConnector { .. }
                        | ConnectError::OutsideBase { .. }
                ),
                "{target}: {e:?}"
            ),
        }
    }
    // `prepare` applies the same checks.
    assert!(matches!(
        HttpExecutor::prepare(Some(&c), "POST", "/a/../../admin", &[], None, None, "k"),
        Err(ConnectError::DotSegment { .. })
    ));
    // A base without a path admits every path.
    let root = plain_connector("https://api.example.com", None);
    assert!(charter_connect::target_url(Some(&root), "/admin").is_ok());
}

#[test]
fn prepare_basic_auth() {
    let c = plain_connector(
        "http://127.0.0.1:9",
        Some(ResolvedAuth::Basic {
            username: "Aladdin".into(),
            password: Secret::new("open sesame"),
        }),
    );
    let req = HttpExecutor::prepare(Some(&c), "GET", "/", &[], None, None, "k").unwrap();
    // RFC 7617's example credentials.
    assert_eq!(
        header(&req, "authorization"),
        ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="]
    );
}

#[test]
fn prepare_without_connector_needs_an_absolute_http_url() {
    let req = HttpExecutor::prepare(
        None,
        "POST",
        "http://127.0.0.1:8080/hook",
        &[],
        Some(json!(1)),
        None,
        "k",
    )
    .unwrap();
    assert_eq!(req.url.as_str(), "http://127.0.0.1:8080/hook");
    assert_eq!(req.timeout, charter_connect::DEFAULT_TIMEOUT);
    assert_eq!(header(&req, "content-type"), ["application/json"]);
    assert!(matches!(
        HttpExecutor::prepare(None, "GET", "/relative", &[], None, None, "k"),
        Err(ConnectError::InvalidUrl(_))
    ));
    assert_eq!(
        HttpExecutor::prepare(None, "GET", "ftp://example.com/x", &[], None, None, "k"),
        Err(ConnectError::UnsupportedScheme("ftp".into()))
    );
    let c = plain_connector("https://api.example.com", None);
    assert_eq!(
        HttpExecutor::prepare(
            Some(&c),
            "GET",
            "https://evil.example/x",
            &[],
            None,
            None,
            "k"
        ),
        Err(ConnectError::AbsoluteTargetWithConnector {
            connector: "crm".into()
        })
    );
    assert!(matches!(
        HttpExecutor::prepare(Some(&c), "GE T", "/x", &[], None, None, "k"),
        Err(ConnectError::InvalidMethod(_))
    ));
    assert_eq!(
        HttpExecutor::prepare(Some(&c), "GET", "/x", &[], None, None, ""),
        Err(ConnectError::EmptyIdempotencyKey)
    );
}

#[test]
fn invalid_header_errors_name_the_header_not_the_value() {
    let c = plain_connector("https://api.example.com", None);
    let err = HttpExecutor::prepare(
        Some(&c),
        "GET",
        "/x",
        &[("X-Token".into(), "secret-value\nInjected: yes".into())],
        None,
        None,
        "k",
    )
    .unwrap_err();
    assert_eq!(
        err,
        ConnectError::InvalidHeaderValue {
            name: "X-Token".into()
        }
    );
    assert!(!err.to_string().contains("secret-value"));
    assert!(matches!(
        HttpExecutor::prepare(
            Some(&c),
            "GET",
            "/x",
            &[("bad name".into(), "v".into())],
            None,
            None,
            "k"
        ),
        Err(ConnectError::InvalidHeaderName(_))
    ));
}

// --- secrets ---

#[test]
fn secrets_are_redacted_in_debug_and_display() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s:?}"), "[redacted]");
    assert_eq!(format!("{s}"), "[redacted]");
    assert_eq!(s.expose(), "hunter2");

    let c = plain_connector(
        "https://api.example.com",
        Some(ResolvedAuth::Basic {
            username: "bot".into(),
            password: Secret::new("hunter2"),
        }),
    );
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("bot"));

    let bearer = plain_connector(
        "https://api.example.com",
        Some(ResolvedAuth::Bearer(Secret::new("hunter2"))),
    );
    let req = HttpExecutor::prepare(Some(&bearer), "GET", "/", &[], None, None, "k").unwrap();
    assert_eq!(header(&req, "authorization"), ["Bearer hunter2"]);
    let dbg = format!("{req:?}");
    assert!(!dbg.contains("hunter2"), "{dbg}");
    assert!(dbg.contains("Authorization"));
}

#[test]
fn resolve_connector_from_config() {
    let config = HttpConnector {
        base_url: "https://api.example.com".into(),
        headers: BTreeMap::from([("Accept".to_string(), "application/json".to_string())]),
        auth: Some(HttpAuth::Basic {
            username: "bot".into(),
            password: SecretRef::Env("CRM_PASSWORD".into()),
        }),
        timeout: Duration::from_secs(3),
        allow_private: true,
        preset: None,
        rate_limit: None,
        concurrency: None,
        circuit_breaker: None,
        response_schema: None,
    };
    let resolved = ResolvedHttpConnector::resolve("crm", &config, |r| match r {
        SecretRef::Env(name) if name == "CRM_PASSWORD" => Ok("pw".to_string()),
        other => Err(format!("unexpected {other}")),
    })
    .unwrap();
    assert_eq!(resolved.name, "crm");
    assert_eq!(
        resolved.headers,
        vec![("Accept".to_string(), "application/json".to_string())]
    );
    assert_eq!(
        resolved.auth,
        Some(ResolvedAuth::Basic {
            username: "bot".into(),
            password: Secret::new("pw")
        })
    );
    assert!(resolved.allow_private);
    assert_eq!(resolved.timeout, Duration::from_secs(3));

    let failing = ResolvedHttpConnector::resolve("crm", &config, |_| Err::<String, _>("unset"));
    assert_eq!(failing.unwrap_err(), "unset");
}

// --- backoff ---

fn policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(10),
    }
}

#[test]
fn backoff_stays_within_bounds() {
    let p = policy();
    let mut rng = StdRng::seed_from_u64(7);
    for attempt in 2..=12u32 {
        let ceiling = (p.initial_backoff * 2u32.pow(attempt - 2)).min(p.max_backoff);
        for _ in 0..500 {
            let d = backoff(&p, attempt, None, &mut rng);
            assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
        }
        for ra in [
            Duration::ZERO,
            Duration::from_secs(1),
            Duration::from_secs(4),
            p.max_backoff,
        ] {
            for _ in 0..200 {
                let d = backoff(&p, attempt, Some(ra), &mut rng);
                assert!(
                    d >= ra,
                    "attempt {attempt}: {d:?} shorter than Retry-After {ra:?}"
                );
                assert!(d <= p.max_backoff);
            }
        }
    }
    // Retry-After beyond the cap is capped.
    assert_eq!(
        backoff(&p, 2, Some(Duration::from_secs(3600)), &mut rng),
        p.max_backoff
    );
    // Absurd attempt numbers do not overflow.
    assert!(backoff(&p, u32::MAX, None, &mut rng) <= p.max_backoff);
    assert!(backoff(&p, 0, None, &mut rng) <= p.initial_backoff);
}

#[test]
fn backoff_grows_with_attempts_until_the_cap() {
    let p = policy();
    let mut rng = StdRng::seed_from_u64(42);
    let mean = |attempt: u32, rng: &mut StdRng| {
        let n = 2000u32;
        let total: Duration = (0..n).map(|_| backoff(&p, attempt, None, rng)).sum();
        total / n
    };
    let means: Vec<Duration> = (2..=7).map(|a| mean(a, &mut rng)).collect();
    // Full jitter: the mean is about half the ceiling (0.25 s, 0.5 s, 1 s, 2 s, 4 s, 5 s).
    for w in means.windows(2) {
        assert!(w[1] > w[0], "{means:?}");
    }
    assert!(
        means[0] > Duration::from_millis(200) && means[0] < Duration::from_millis(300),
        "{means:?}"
    );
    assert!(
        means[5] > Duration::from_millis(4500) && means[5] < Duration::from_millis(5500),
        "{means:?}"
    );
}

/// Attempt a GET of `/target` at `url_base` through a connector with the given
/// `allow_private`.
async fn guarded_get(exec: &HttpExecutor, url_base: &str, allow_private: bool) -> AttemptOutcome {
    let mut c = connector(url_base);
    c.allow_private = allow_private;
    let req = HttpExecutor::prepare(Some(&c), "GET", "/target", &[], None, None, "k").unwrap();
    exec.attempt(&req).await
}

#[tokio::test]
async fn ssrf_guard_refuses_loopback_in_every_spelling_before_connecting() {
    let (base, seen) = start().await;
    let port = base.rsplit(':').next().unwrap().to_string();
    let exec = HttpExecutor::new().unwrap();
    for host in [
        "127.0.0.1".to_string(),
        "[::1]".to_string(),
        "0x7f000001".to_string(),
        "2130706433".to_string(),
        "127.1".to_string(),
        "[::ffff:127.0.0.1]".to_string(),
        // A name that resolves to loopback is refused by the guarded resolver.
        "localhost".to_string(),
    ] {
        let out = guarded_get(&exec, &format!("http://{host}:{port}"), false).await;
        assert!(!out.ok, "{host} must be refused");
        assert_eq!(out.status, None, "{host}: no response may arrive");
        let err = out.error.unwrap_or_default();
        assert!(
            err.contains("outbound guard") || err.contains("refused"),
            "{host}: {err}"
        );
        assert!(
            !out.retryable,
            "{host}: a refusal is permanent, not retried"
        );
    }
    assert_eq!(
        seen.target_hits.load(Ordering::SeqCst),
        0,
        "no request reached the server"
    );

    // The same server through a connector that allows private addresses works.
    let ok = guarded_get(&exec, &format!("http://127.0.0.1:{port}"), true).await;
    assert!(ok.ok, "{:?}", ok.error);
    let ok = guarded_get(&exec, &format!("http://localhost:{port}"), true).await;
    assert!(ok.ok, "{:?}", ok.error);
    assert_eq!(seen.target_hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn absolute_urls_without_a_connector_are_always_guarded() {
    let (base, seen) = start().await;
    let exec = HttpExecutor::new().unwrap();
    let req = HttpExecutor::prepare(None, "GET", &format!("{base}/target"), &[], None, None, "k")
        .unwrap();
    assert!(!req.allow_private);
    let out = exec.attempt(&req).await;
    assert!(
        !out.ok && !out.retryable,
        "a literal private address is a permanent refusal"
    );
    assert!(out.error.unwrap().contains("allow_private"));
    assert_eq!(seen.target_hits.load(Ordering::SeqCst), 0);
}

#[test]
fn metadata_and_private_ranges_are_refused_without_any_connection() {
    // Checked on the URL alone: no packet is sent to these addresses.
    for u in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.10:8080/",
        "http://[fd00::1]/",
        "http://[::ffff:10.0.0.1]/",
    ] {
        let url = reqwest::Url::parse(u).unwrap();
        let refused = charter_connect::ssrf::check_url(&url).unwrap_err();
        assert!(refused.to_string().contains("allow_private"), "{u}");
    }
}
