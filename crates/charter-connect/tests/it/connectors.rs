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

// ---------------------------------------------------------------------------------------
// Slack

#[derive(Clone, Default)]
struct SlackSeen {
    messages: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
}

async fn start_slack() -> (String, SlackSeen) {
    let seen = SlackSeen::default();
    let app = Router::new()
        .route(
            "/services/T1/B2/xyz",
            post(
                |State(s): State<SlackSeen>, body: axum::Json<serde_json::Value>| async move {
                    s.messages.lock().unwrap().push(("webhook".into(), body.0));
                    "ok"
                },
            ),
        )
        .route(
            "/api/chat.postMessage",
            post(
                |State(s): State<SlackSeen>,
                 headers: HeaderMap,
                 body: axum::Json<serde_json::Value>| async move {
                    let auth = headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if auth != "Bearer xoxb-SENSITIVE" {
                        return axum::Json(json!({"ok": false, "error": "invalid_auth"}));
                    }
                    if body.0["channel"] != "#ops" {
                        return axum::Json(json!({"ok": false, "error": "channel_not_found"}));
                    }
                    s.messages.lock().unwrap().push(("bot".into(), body.0));
                    axum::Json(json!({"ok": true, "ts": "1.2"}))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn slack_webhook_and_bot_token_post_messages() {
    let (base, seen) = start_slack().await;
    let exec = HttpExecutor::new().unwrap();
    let hook = SlackConnector {
        name: "slack".into(),
        auth: SlackAuth::Webhook(Secret::new(format!("{base}/services/T1/B2/xyz"))),
        timeout: Duration::from_secs(5),
        allow_private: true,
    };
    let req = hook.prepare(None, "Cancellation risk: Acme", "k1").unwrap();
    let out = hook.attempt(&exec, &req).await;
    assert!(out.ok, "{out:?}");

    let bot = SlackConnector {
        name: "slack".into(),
        auth: SlackAuth::Bot {
            token: Secret::new("xoxb-SENSITIVE"),
            base_url: format!("{base}/api"),
        },
        timeout: Duration::from_secs(5),
        allow_private: true,
    };
    let req = bot.prepare(Some("#ops"), "hello ops", "k2").unwrap();
    assert!(!format!("{req:?}").contains("SENSITIVE"));
    assert!(bot.attempt(&exec, &req).await.ok);

    // Slack answers 200 {"ok": false}: a failure with Slack's reason, not retried.
    let req = bot.prepare(Some("#nowhere"), "lost", "k3").unwrap();
    let out = bot.attempt(&exec, &req).await;
    assert!(!out.ok);
    assert!(!out.retryable);
    assert_eq!(
        out.error.as_deref(),
        Some("Slack refused the message: channel_not_found")
    );
    assert!(bot.prepare(None, "no channel", "k4").is_err());

    let msgs = seen.messages.lock().unwrap().clone();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0].0, "webhook");
    assert_eq!(msgs[0].1["text"], "Cancellation risk: Acme");
    assert_eq!(msgs[1].1, json!({"channel": "#ops", "text": "hello ops"}));
}

#[tokio::test]
async fn slack_webhook_on_a_private_address_needs_allow_private() {
    let (base, seen) = start_slack().await;
    let exec = HttpExecutor::new().unwrap();
    let hook = SlackConnector {
        name: "slack".into(),
        auth: SlackAuth::Webhook(Secret::new(format!("{base}/services/T1/B2/xyz"))),
        timeout: Duration::from_secs(5),
        allow_private: false,
    };
    let req = hook.prepare(None, "x", "k").unwrap();
    let out = hook.attempt(&exec, &req).await;
    assert!(!out.ok && !out.retryable);
    assert!(seen.messages.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// SMTP against aiosmtpd

struct SmtpServer {
    child: std::process::Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

/// Start aiosmtpd on a free port; every message is written to `<dir>/<n>.eml`. `None` when
/// aiosmtpd is missing and the test may skip (`crate::tools`: never under CI=true).
async fn start_smtp() -> Option<SmtpServer> {
    if !crate::tools::available(crate::tools::Tool::Smtp, crate::tools::python_aiosmtpd) {
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = temp_dir("smtp");
    let script = r#"
import sys, time, os
from aiosmtpd.controller import Controller
out = sys.argv[2]
class H:
    n = 0
    async def handle_DATA(self, server, session, envelope):
        H.n += 1
        with open(os.path.join(out, "%d.eml" % H.n), "wb") as f:
            f.write(b"X-Rcpt: " + ",".join(envelope.rcpt_tos).encode() + b"\r\n")
            f.write(envelope.content)
        return "250 Message accepted"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
while True:
    time.sleep(1)
"#;
    let child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(port.to_string())
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd; .ci/run installs it)");
    let server = SmtpServer { child, port, dir };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Some(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("aiosmtpd did not start on port {port}; is the aiosmtpd Python module installed?");
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_with_a_message_id_from_the_key() {
    let Some(server) = start_smtp().await else {
        return;
    };
    let smtp = SmtpConnector {
        name: "mail".into(),
        host: "127.0.0.1".into(),
        port: server.port,
        security: SmtpSecurity::None,
        username: None,
        password: None,
        from: "Charter <charter@acme.example>".into(),
        timeout: Duration::from_secs(10),
        // The test relay listens on 127.0.0.1.
        allow_private: true,
        allowed_domains: Vec::new(),
    };
    let email = Email {
        to: "lead@acme.example, Ops <ops@acme.example>".into(),
        subject: "Cancellation risk: Acme Corp".into(),
        body: "Acme asked to cancel.\nPlease call them today.".into(),
    };
    let out = smtp.attempt(&email, "0123abcd").await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.status, Some(250));
    let text = std::fs::read_to_string(server.dir.join("1.eml")).unwrap();
    assert!(
        text.contains("X-Rcpt: lead@acme.example,ops@acme.example"),
        "{text}"
    );
    assert!(
        text.contains("Message-ID: <0123abcd@acme.example>"),
        "{text}"
    );
    assert!(
        text.contains("Subject: Cancellation risk: Acme Corp"),
        "{text}"
    );
    assert!(text.contains("Please call them today."), "{text}");

    // STARTTLS required but the server does not offer it: a clear, permanent failure.
    let mut tls = smtp.clone();
    tls.security = SmtpSecurity::StartTls;
    let out = tls.attempt(&email, "k2").await;
    assert!(!out.ok);
    assert!(!server.dir.join("2.eml").exists());

    // Nobody listening: retryable.
    let mut gone = smtp.clone();
    gone.port = 1;
    let out = gone.attempt(&email, "k3").await;
    assert!(!out.ok && out.retryable, "{out:?}");

    // Without allow_private the outbound guard refuses the loopback relay: nothing is sent
    // and trying again cannot help.
    for host in ["127.0.0.1", "localhost"] {
        let mut guarded = smtp.clone();
        guarded.allow_private = false;
        guarded.host = host.into();
        let out = guarded.attempt(&email, "k4").await;
        assert!(!out.ok && !out.retryable, "{out:?}");
        let error = out.error.unwrap_or_default();
        assert!(
            error.contains("refused by the outbound guard")
                && error.contains("`allow_private: true` on the connector"),
            "{error}"
        );
    }
    assert!(!server.dir.join("2.eml").exists() && !server.dir.join("3.eml").exists());

    // With `allowed_domains`, a recipient elsewhere fails the message before any
    // connection: nothing reaches the relay, and a retry cannot help.
    let mut fenced = smtp.clone();
    fenced.allowed_domains = vec!["acme.example".into()];
    let stray = Email {
        to: "lead@acme.example, attacker@evil.example".into(),
        ..email.clone()
    };
    let out = fenced.attempt(&stray, "k5").await;
    assert!(!out.ok && !out.retryable, "{out:?}");
    assert!(
        out.error
            .unwrap_or_default()
            .contains("attacker@evil.example is not in the connector's allowed_domains"),
    );
    assert!(!server.dir.join("2.eml").exists());
    // Inside the fence it is delivered.
    let out = fenced.attempt(&email, "k6").await;
    assert!(out.ok, "{out:?}");
    let text = std::fs::read_to_string(server.dir.join("2.eml")).unwrap();
    assert!(text.contains("Message-ID: <k6@acme.example>"), "{text}");
}

// ---------------------------------------------------------------------------------------
// SQL

#[tokio::test]
async fn sqlite_statement_runs_once_per_key_with_bound_parameters() {
    let dir = temp_dir("sqlite");
    let db = dir.join("target.db");
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE tickets (id INTEGER, label TEXT, note TEXT)")
            .unwrap();
    }
    let sql = SqlConnector::new(
        "warehouse",
        SqlTarget::Sqlite(db.clone()),
        Duration::from_secs(5),
        false,
    );
    let stmt = "INSERT INTO tickets (label, id, note) VALUES ($2, $1, $3)";
    let hostile = "x'); DROP TABLE tickets; --";
    let params = vec![
        Some("42".to_string()),
        Some("billing".to_string()),
        Some(hostile.to_string()),
    ];
    let out = sql.attempt(stmt, &params, "key-1").await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.body_excerpt.as_deref(), Some("1 row(s) affected"));
    // A retry under the same key does not insert again.
    let again = sql.attempt(stmt, &params, "key-1").await;
    assert!(again.ok);
    assert!(again.body_excerpt.unwrap().contains("already applied"));
    let other = sql
        .attempt(stmt, &[Some("43".into()), None, None], "key-2")
        .await;
    assert!(other.ok);

    let c = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(i64, Option<String>, Option<String>)> = c
        .prepare("SELECT id, label, note FROM tickets ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![
            (42, Some("billing".into()), Some(hostile.into())),
            (43, None, None)
        ]
    );

    // A broken statement is permanent; a wrong parameter count is said plainly.
    let bad = sql
        .attempt("INSERT INTO nope VALUES ($1)", &[Some("1".into())], "key-3")
        .await;
    assert!(!bad.ok && !bad.retryable);
    assert!(bad.error.unwrap().contains("no such table"));
    let count = sql.attempt(stmt, &[Some("1".into())], "key-4").await;
    assert!(
        count
            .error
            .unwrap()
            .contains("3 parameter(s) but 1 value(s)")
    );
    // The failed attempts left no ledger entry: fixing the statement lets the key run.
    let fixed = sql.attempt(stmt, &params, "key-4").await;
    assert!(fixed.ok && fixed.body_excerpt.unwrap().contains("1 row"));
    let _ = std::fs::remove_dir_all(dir);
}

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[tokio::test]
async fn postgres_statement_runs_once_per_key_with_typed_parameters() {
    if !crate::tools::available(crate::tools::Tool::Postgres, || {
        crate::tools::tcp_listening("127.0.0.1:5432")
    }) {
        return;
    }
    let (client, conn) = tokio_postgres::connect(PG_URL, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("the local PostgreSQL at {PG_URL} is not reachable: {e}"));
    tokio::spawn(conn);
    let table = format!("charter_connect_test_{}", uuid_like());
    client
        .batch_execute(&format!(
            "CREATE TABLE {table} (id INTEGER PRIMARY KEY, label TEXT, score DOUBLE PRECISION, vip BOOLEAN, extra JSONB)"
        ))
        .await
        .unwrap();
    let sql = SqlConnector::new(
        "warehouse",
        SqlTarget::Postgres(Secret::new(PG_URL)),
        Duration::from_secs(10),
        // The test server listens on 127.0.0.1.
        true,
    );
    let stmt =
        format!("INSERT INTO {table} (id, label, score, vip, extra) VALUES ($1, $2, $3, $4, $5)");
    let key = format!("pg-key-{}", uuid_like());
    let params: Vec<Option<String>> = vec![
        Some("7".into()),
        Some("it's billing'); DROP TABLE x; --".into()),
        Some("0.93".into()),
        Some("true".into()),
        Some(r#"{"plan": "enterprise"}"#.into()),
    ];
    let out = sql.attempt(&stmt, &params, &key).await;
    assert!(out.ok, "{out:?}");
    let again = sql.attempt(&stmt, &params, &key).await;
    assert!(again.ok, "{again:?}");
    assert!(again.body_excerpt.unwrap().contains("already applied"));

    let rows = client
        .query(
            &format!("SELECT id, label, score, vip, extra FROM {table}"),
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.get::<_, i32>(0), 7);
    assert_eq!(r.get::<_, String>(1), "it's billing'); DROP TABLE x; --");
    assert!((r.get::<_, f64>(2) - 0.93).abs() < 1e-9);
    assert!(r.get::<_, bool>(3));
    assert_eq!(
        r.get::<_, serde_json::Value>(4),
        json!({"plan": "enterprise"})
    );

    // A value that does not fit the column type is a permanent, located failure.
    let bad = sql
        .attempt(
            &stmt,
            &[Some("seven".into()), None, None, None, None],
            &format!("{key}-b"),
        )
        .await;
    assert!(!bad.ok && !bad.retryable);
    assert!(bad.error.unwrap().contains("parameter $1"), "bad param");
    // A unique violation is permanent too.
    let dup = sql.attempt(&stmt, &params, &format!("{key}-c")).await;
    assert!(!dup.ok && !dup.retryable, "{dup:?}");
    // Without allow_private the outbound guard refuses the loopback server before any
    // statement runs, permanently.
    let guarded = SqlConnector::new(
        "warehouse",
        SqlTarget::Postgres(Secret::new(PG_URL)),
        Duration::from_secs(10),
        false,
    );
    let out = guarded.attempt(&stmt, &params, &format!("{key}-d")).await;
    assert!(!out.ok && !out.retryable, "{out:?}");
    let error = out.error.unwrap_or_default();
    assert!(
        error.contains("refused by the outbound guard") && error.contains("127.0.0.1 is"),
        "{error}"
    );
    let rows = client
        .query(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap();
    assert_eq!(
        rows[0].get::<_, i64>(0),
        1,
        "the refused attempt inserted nothing"
    );
    client
        .batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------
// Configuration

fn project(charter_yaml: &str, triage: &str) -> ProjectSource {
    let mut files = BTreeMap::new();
    files.insert("charter.yaml".to_string(), charter_yaml.to_string());
    files.insert("charters/triage.yaml".to_string(), triage.to_string());
    files.insert(
        "schemas/crm-answer.json".to_string(),
        r#"{"type": "object", "required": ["id"]}"#.to_string(),
    );
    ProjectSource { files }
}

const CONNECTORS: &str = r#"connectors:
  crm:
    type: http
    preset: rest_crm
    base_url: https://crm.acme.example/api
    auth: { oauth2: { token_url: https://auth.acme.example/token, client_id: charter, client_secret: env:CRM_SECRET, scope: contacts } }
    rate_limit: 600/m
    concurrency: 3
    circuit_breaker: { failures: 4, cool_down: 1m }
    response_schema: schemas/crm-answer.json
  hubspot:
    type: http
    preset: hubspot
    auth: { bearer: env:HUBSPOT_TOKEN }
  slack:
    type: slack
    webhook_url: env:SLACK_WEBHOOK
  mail:
    type: smtp
    host: smtp.acme.example
    tls: starttls
    username: charter
    password: env:SMTP_PASSWORD
    from: Charter <charter@acme.example>
  warehouse:
    type: sql
    url: sqlite:data/warehouse.db
"#;

const TRIAGE: &str = r##"name: triage
description: Route tickets.
owner: ops@acme.example
maintainer: int@acme.example
system_of_record: crm
mode: live
uses: [crm, slack, mail, warehouse]
trigger:
  webhook: { path: /hooks/t, verify: none }
routes:
  - { when: "true", do: [notify, mail_lead, record] }
actions:
  notify:
    connector: slack
    message: { channel: "#ops", text: "New: {{ payload.subject }}" }
    approval: auto
  mail_lead:
    connector: mail
    email: { to: "{{ payload.lead }}", subject: "Ticket {{ payload.id }}", body: "{{ payload.subject }}" }
    approval: auto
  record:
    connector: warehouse
    sql: { statement: "INSERT INTO tickets (id, label) VALUES ($1, $2)", params: ["{{ payload.id }}", ~] }
    approval: auto
escalation: { to: ops }
measure: { success: [done] }
"##;

#[test]
fn connectors_and_actions_load() {
    let p = load_project(&project(CONNECTORS, TRIAGE)).unwrap_or_else(|d| panic!("{d}"));
    let ConnectorKind::Http(crm) = &p.connectors["crm"].kind else {
        panic!()
    };
    assert_eq!(crm.preset.as_deref(), Some("rest_crm"));
    assert!((crm.rate_limit.unwrap() - 10.0).abs() < 1e-9);
    assert_eq!(crm.concurrency, Some(3));
    assert_eq!(crm.circuit_breaker.unwrap().failures, 4);
    assert_eq!(
        crm.circuit_breaker.unwrap().cool_down,
        Duration::from_secs(60)
    );
    assert_eq!(
        crm.response_schema.as_ref().unwrap().file,
        "schemas/crm-answer.json"
    );
    assert!(
        matches!(&crm.auth, Some(HttpAuth::OAuth2 { client_id, .. }) if client_id == "charter")
    );
    let ConnectorKind::Http(hub) = &p.connectors["hubspot"].kind else {
        panic!()
    };
    assert_eq!(hub.base_url, "https://api.hubapi.com");
    assert!(matches!(
        &p.connectors["slack"].kind,
        ConnectorKind::Slack(s) if matches!(s.auth, SlackCfg::Webhook(_))
    ));
    let ConnectorKind::Smtp(mail) = &p.connectors["mail"].kind else {
        panic!()
    };
    assert_eq!((mail.port, mail.tls), (587, SmtpTls::StartTls));
    assert!(matches!(
        &p.connectors["warehouse"].kind,
        ConnectorKind::Sql(s) if s.database == SqlDatabase::Sqlite("data/warehouse.db".into())
    ));
    let t = &p.charters["triage"];
    assert!(matches!(&t.actions["notify"].kind, ActionKind::Message(m) if m.connector == "slack"));
    assert!(matches!(&t.actions["mail_lead"].kind, ActionKind::Email(_)));
    let ActionKind::Sql(q) = &t.actions["record"].kind else {
        panic!()
    };
    assert_eq!(q.params.len(), 2);
    assert!(q.params[1].is_none());

    // Presets fill their defaults without overriding what is written.
    let hub = charter_connect::presets::apply(hub).unwrap();
    assert_eq!(
        hub.headers.get("Accept").map(String::as_str),
        Some("application/json")
    );
    assert!(hub.rate_limit.is_some() && hub.circuit_breaker.is_some());
    let crm2 = charter_connect::presets::apply(crm).unwrap();
    assert_eq!(crm2.concurrency, Some(3));
}

#[test]
fn every_preset_name_has_a_preset_and_a_snippet_that_loads() {
    for rule in charter_core::config::HTTP_PRESETS {
        let name = rule.name;
        let p = charter_connect::presets::preset(name).unwrap();
        let yaml = format!(
            "connectors:\n{}\n",
            p.snippet
                .lines()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        let mut src = project(&yaml, "");
        src.files.remove("charters/triage.yaml");
        load_project(&src).unwrap_or_else(|d| panic!("{name}: {d}\n{yaml}"));
    }
    assert_eq!(
        charter_connect::presets::PRESETS.len(),
        charter_core::config::HTTP_PRESETS.len()
    );
}

#[test]
fn preset_refuses_an_auth_kind_the_system_does_not_take() {
    // `charter check` (load_project) refuses it, located at the `auth:` line...
    let mut src = project(
        "connectors:\n  hub:\n    type: http\n    preset: hubspot\n    auth: { basic: { username: u, password: env:P } }\n",
        "",
    );
    src.files.remove("charters/triage.yaml");
    let err = diagnostics(&src);
    assert!(
        err.contains("charter.yaml:5:")
            && err.contains("`preset: hubspot` does not accept `basic` auth"),
        "{err}"
    );
    // ...and so does applying the preset at load, for a connector built without check.
    let mut ok = project(
        "connectors:\n  hub:\n    type: http\n    preset: hubspot\n    auth: { bearer: env:P }\n",
        "",
    );
    ok.files.remove("charters/triage.yaml");
    let p = load_project(&ok).unwrap();
    let ConnectorKind::Http(h) = &p.connectors["hub"].kind else {
        panic!("hub is an http connector")
    };
    let mut h = h.clone();
    h.auth = Some(charter_core::config::HttpAuth::Basic {
        username: "u".into(),
        password: charter_core::config::SecretRef::Env("P".into()),
    });
    let err = charter_connect::presets::apply(&h).unwrap_err().to_string();
    assert!(err.contains("does not accept `basic` auth"), "{err}");
}

/// Every auth shape a preset refuses at load is refused by `charter check` too, for every
/// preset: the two can never disagree.
#[test]
fn check_and_load_agree_on_every_preset_and_auth_shape() {
    let shapes = [
        ("bearer", "{ bearer: env:P }"),
        ("basic", "{ basic: { username: u, password: env:P } }"),
        ("header", "{ header: { name: X-Key, value: env:P } }"),
        (
            "oauth2",
            "{ oauth2: { token_url: https://auth.example.com/t, client_id: c, client_secret: env:P } }",
        ),
    ];
    for rule in charter_core::config::HTTP_PRESETS {
        for (word, auth) in shapes {
            let mut src = project(
                &format!(
                    "connectors:\n  c:\n    type: http\n    preset: {}\n    base_url: https://acme.example.com\n    auth: {auth}\n",
                    rule.name
                ),
                "",
            );
            src.files.remove("charters/triage.yaml");
            let checked = load_project(&src);
            let accepted = rule.auth.iter().any(|k| k.word() == word);
            match checked {
                Ok(p) => {
                    assert!(
                        accepted,
                        "{} + {word}: check passed a refused shape",
                        rule.name
                    );
                    let ConnectorKind::Http(h) = &p.connectors["c"].kind else {
                        panic!("c is an http connector")
                    };
                    charter_connect::presets::apply(h).unwrap_or_else(|e| {
                        panic!("{} + {word}: check passed, load refused: {e}", rule.name)
                    });
                }
                Err(d) => {
                    assert!(!accepted, "{} + {word}: refused: {d}", rule.name);
                    assert!(d.to_string().contains("charter.yaml:6:"), "{d}");
                }
            }
        }
    }
}

fn diagnostics(src: &ProjectSource) -> String {
    load_project(src).unwrap_err().to_string()
}

#[test]
fn misconfigured_connectors_and_actions_are_located() {
    let bad_connectors = r#"connectors:
  crm:
    type: http
    preset: salesforce
    base_url: https://x.example
    rate_limit: fast
    response_schema: schemas/missing.json
  jira:
    type: http
    preset: jira
  slack:
    type: slack
    webhook_url: env:HOOK
    token: env:TOKEN
  mail:
    type: smtp
    host: smtp.example
    port: 99999
    from: nobody
    url: sqlite:x.db
  warehouse:
    type: sql
    url: postgres://app:hunter2@db/app
"#;
    let d = diagnostics(&{
        let mut s = project(bad_connectors, "");
        s.files.remove("charters/triage.yaml");
        s
    });
    for want in [
        "charter.yaml:4:13: `preset` is `salesforce`; expected one of `zendesk`, `hubspot`, `jira`, `rest_crm`",
        "charter.yaml:6:17: `rate_limit`: `fast`",
        "charter.yaml:7:22: `response_schema` file `schemas/missing.json` does not exist",
        "connector `jira` (preset `jira`) has no `base_url`",
        "give either `webhook_url` (an incoming webhook) or `token`",
        "`port` is 99999; expected a port from 1 to 65535",
        "smtp connector `mail` has no `tls`",
        "`from` is `nobody`; expected a sender address",
        "`url` is not a setting of a `smtp` connector (it belongs to `sql`)",
        "`url` holds a password; secrets are only given by reference",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }

    let bad_actions = TRIAGE
        .replace(
            "connector: slack\n    message",
            "connector: mail\n    message",
        )
        .replace(
            "INSERT INTO tickets (id, label) VALUES ($1, $2)",
            "INSERT INTO tickets (id) VALUES ('{{ payload.id }}')",
        )
        .replace("connector: mail\n    email", "connector: crm\n    email");
    let d = diagnostics(&project(CONNECTORS, &bad_actions));
    for want in [
        "connector `mail` is a `smtp` connector; a `message` action needs a `slack` connector",
        "connector `crm` is a `http` connector; a `email` action needs a `smtp` connector",
        "`statement` contains a template; values never go into SQL text",
    ] {
        assert!(d.contains(want), "missing {want:?} in:\n{d}");
    }

    // A connector not in `uses` is refused for the new action kinds too.
    let not_used = TRIAGE.replace(
        "uses: [crm, slack, mail, warehouse]",
        "uses: [crm, mail, warehouse]",
    );
    let d = diagnostics(&project(CONNECTORS, &not_used));
    assert!(
        d.contains(
            "action `notify` uses connector `slack`, which is not in this charter's `uses` list"
        ),
        "{d}"
    );
}

#[test]
fn connection_from_config_resolves_secrets() {
    let p = load_project(&project(CONNECTORS, TRIAGE)).unwrap();
    let mut asked = Vec::new();
    for (name, c) in &p.connectors {
        let conn = Connection::from_config(name, &c.kind, std::path::Path::new("/srv/proj"), |r| {
            asked.push(r.to_string());
            Ok(format!("value-of-{r}"))
        })
        .unwrap();
        let shown = format!("{conn:?}");
        assert!(
            !shown.contains("value-of-"),
            "{name}: secrets shown in {shown}"
        );
        if name == "warehouse" {
            assert!(shown.contains("/srv/proj/data/warehouse.db"), "{shown}");
        }
        if name == "crm" {
            let h = conn.http().unwrap();
            assert!(h.oauth.is_some() && h.contract.is_some() && h.breaker.is_some());
        }
    }
    asked.sort();
    assert_eq!(
        asked,
        [
            "env:CRM_SECRET",
            "env:HUBSPOT_TOKEN",
            "env:SLACK_WEBHOOK",
            "env:SMTP_PASSWORD"
        ]
    );
    let err = Connection::from_config(
        "crm",
        &p.connectors["crm"].kind,
        std::path::Path::new("."),
        |_| Err("secret env:CRM_SECRET is not set".to_string()),
    )
    .unwrap_err();
    assert!(err.contains("not set"));
}
