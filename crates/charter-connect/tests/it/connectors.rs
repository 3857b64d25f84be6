//! Connectors beyond plain HTTP, against real local servers: a CRM (OAuth2, idempotency
//! keys, 500s, a response contract, rate limits), a Slack-shaped endpoint, a real SMTP
//! server (Python's aiosmtpd), SQLite and the local PostgreSQL. Plus the configuration
//! of all of them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use charter_connect::breaker::{BreakerPolicy, CircuitBreaker};
use charter_connect::email::{Email, SmtpConnector, SmtpSecurity};
use charter_connect::limit::{ConcurrencyLimit, RateLimiter};
use charter_connect::oauth::{OAuth2Client, OAuth2Settings};
use charter_connect::slack::{SlackAuth, SlackConnector};
use charter_connect::sql::{SqlConnector, SqlTarget};
use charter_connect::{
    Connection, HttpConnection, HttpExecutor, ResolvedHttpConnector, ResponseContract, Secret,
};
use charter_core::config::{
    ActionKind, ConnectorKind, HttpAuth, ProjectSource, SlackAuth as SlackCfg, SmtpTls,
    SqlDatabase, load_project,
};
use serde_json::json;

mod config;
mod crm;
mod email;
mod slack;
mod sql;

const CLIENT_SECRET: &str = "cs-SENSITIVE-42";

#[derive(Clone, Default)]
struct Crm {
    token_fetches: Arc<AtomicUsize>,
    /// Tokens the CRM accepts; the first one issued is revoked after its first use.
    issued: Arc<Mutex<Vec<String>>>,
    revoke_first: Arc<Mutex<bool>>,
    contacts: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    flaky_hits: Arc<AtomicUsize>,
}

async fn token(State(crm): State<Crm>, headers: HeaderMap, body: String) -> impl IntoResponse {
    use base64::Engine as _;
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("crm-client:{CLIENT_SECRET}"))
    );
    if auth != want || !body.contains("grant_type=client_credentials") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let n = crm.token_fetches.fetch_add(1, Ordering::SeqCst) + 1;
    let tok = format!("at-{n}");
    crm.issued.lock().unwrap().push(tok.clone());
    axum::Json(json!({"access_token": tok, "token_type": "Bearer", "expires_in": 3600}))
        .into_response()
}

fn bearer_ok(crm: &Crm, headers: &HeaderMap) -> bool {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(tok) = auth.strip_prefix("Bearer ") else {
        return false;
    };
    let issued = crm.issued.lock().unwrap();
    let mut revoke = crm.revoke_first.lock().unwrap();
    if *revoke && issued.first().map(String::as_str) == Some(tok) {
        return false;
    }
    if issued.iter().any(|t| t == tok) {
        *revoke = false;
        return true;
    }
    false
}

async fn contacts(State(crm): State<Crm>, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    if !bearer_ok(&crm, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad token").into_response();
    }
    let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "missing Idempotency-Key").into_response();
    };
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    crm.contacts.lock().unwrap().push((key.to_string(), value));
    (
        StatusCode::CREATED,
        axum::Json(json!({"id": 17, "status": "created"})),
    )
        .into_response()
}

async fn start_crm() -> (String, Crm) {
    let crm = Crm::default();
    let app = Router::new()
        .route("/oauth/token", post(token))
        .route("/contacts", post(contacts))
        .route(
            "/flaky",
            post(|State(crm): State<Crm>| async move {
                crm.flaky_hits.fetch_add(1, Ordering::SeqCst);
                (StatusCode::INTERNAL_SERVER_ERROR, "down")
            }),
        )
        .route(
            "/wrong-shape",
            post(|| async { axum::Json(json!({"id": "seventeen"})) }),
        )
        .route("/ok", get(|| async { "ok" }))
        .with_state(crm.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), crm)
}

fn plain(base: &str) -> ResolvedHttpConnector {
    ResolvedHttpConnector {
        name: "crm".into(),
        base_url: base.into(),
        headers: vec![],
        auth: None,
        timeout: Duration::from_secs(5),
        allow_private: true,
    }
}

fn oauth(base: &str) -> OAuth2Client {
    OAuth2Client::new(OAuth2Settings {
        token_url: format!("{base}/oauth/token"),
        client_id: "crm-client".into(),
        client_secret: Secret::new(CLIENT_SECRET),
        scope: Some("contacts:write".into()),
        allow_private: true,
    })
    .unwrap()
}

fn post_req(c: &ResolvedHttpConnector, path: &str, key: &str) -> charter_connect::HttpRequest {
    HttpExecutor::prepare(
        Some(c),
        "POST",
        path,
        &[],
        Some(json!({"email": "a@b.example"})),
        None,
        key,
    )
    .unwrap()
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "charter-connect-{tag}-{}-{}",
        std::process::id(),
        uuid_like()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn uuid_like() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}
