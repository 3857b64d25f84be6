//! Notifications of approvals and escalations, and deciding them from Slack.
//!
//! The server runs in-process on 127.0.0.1:0 with a real SQLite file. A local axum server
//! plays Slack (`chat.postMessage` with a bot token, and the `response_url` of button
//! presses) and a plain HTTP webhook receiver; the sink plays the downstream helpdesk. The
//! test signs Slack's interactive callbacks with the app's signing secret, as Slack does.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use charter_core::verify::{self, VerifySpec};
use charter_store::NotificationStore;
use charter_store::sqlite::SqliteStore;
use charter_testkit::project::{now_secs, temp_dir, write};
use charter_testkit::server::boot;
use charter_testkit::sink::Sink;

use crate::support::Ui;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod approvals;
mod email;
mod escalations;

pub(crate) use email::start_smtp;

const SIGNING_SECRET: &str = "slack-signing-secret-0123456789abcdef";
const BOT_TOKEN: &str = "xoxb-test-bot-token";
const PUBLIC_URL: &str = "https://charter.example.test";
/// The `trigger_id` every simulated button press carries (a dialog may be opened with it).
const TRIGGER_ID: &str = "1337.42.trigger";

/// One request the fake Slack / webhook receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    authorization: Option<String>,
    body: Value,
}

#[derive(Clone, Default)]
struct Fake {
    got: Arc<Mutex<Vec<Got>>>,
    /// Answers of the webhook receiver still to give before it answers 200.
    hook_failures: Arc<Mutex<Vec<u16>>>,
}

impl Fake {
    fn got(&self, path: &str) -> Vec<Got> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|g| g.path == path)
            .cloned()
            .collect()
    }

    async fn wait_for(&self, path: &str, check: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        for _ in 0..400 {
            let got = self.got(path);
            if check(&got) {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{path}: never got what was expected; got {:?}",
            self.got(path)
        );
    }
}

fn record(fake: &Fake, path: &str, headers: &HeaderMap, body: &[u8]) {
    fake.got.lock().unwrap().push(Got {
        path: path.to_string(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    });
}

/// Slack's Web API and response URLs, and a webhook receiver, on 127.0.0.1.
async fn start_fake(shutdown: CancellationToken) -> (String, Fake) {
    let fake = Fake::default();
    let app = Router::new()
        .route(
            "/api/chat.postMessage",
            post(
                |State(f): State<Fake>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    record(&f, "/api/chat.postMessage", &headers, &body);
                    let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(&format!("Bearer {BOT_TOKEN}"));
                    if auth_ok {
                        axum::Json(json!({"ok": true, "channel": "C1", "ts": "1.0"}))
                    } else {
                        axum::Json(json!({"ok": false, "error": "invalid_auth"}))
                    }
                },
            ),
        )
        .route(
            "/api/views.open",
            post(
                |State(f): State<Fake>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    record(&f, "/api/views.open", &headers, &body);
                    let auth_ok = headers.get("authorization").and_then(|v| v.to_str().ok())
                        == Some(&format!("Bearer {BOT_TOKEN}"));
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    // Slack's answers: the opened view, or `ok: false` with the reason.
                    if !auth_ok {
                        axum::Json(json!({"ok": false, "error": "invalid_auth"}))
                    } else if v["trigger_id"] != TRIGGER_ID {
                        axum::Json(json!({"ok": false, "error": "invalid_trigger_id"}))
                    } else {
                        axum::Json(json!({"ok": true, "view": {"id": "V1", "type": "modal"}}))
                    }
                },
            ),
        )
        .route(
            "/response",
            post(
                |State(f): State<Fake>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    record(&f, "/response", &headers, &body);
                    "ok"
                },
            ),
        )
        .route(
            "/hook/notify",
            post(
                |State(f): State<Fake>, headers: HeaderMap, body: axum::body::Bytes| async move {
                    record(&f, "/hook/notify", &headers, &body);
                    let fail = f.hook_failures.lock().unwrap().pop();
                    match fail {
                        Some(s) => axum::http::StatusCode::from_u16(s).unwrap(),
                        None => axum::http::StatusCode::OK,
                    }
                },
            ),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    (format!("http://{addr}"), fake)
}

fn project(dir: &Path, sink: &str, fake: &str, smtp_port: Option<u16>) {
    let (mail, mail_target) = match smtp_port {
        Some(port) => (
            format!(
                "  mail:\n    type: smtp\n    host: 127.0.0.1\n    port: {port}\n    tls: none\n    allow_private: true\n    from: Charter <charter@example.test>\n"
            ),
            ", mail:leads@example.test",
        ),
        None => (String::new(), ""),
    };
    write(dir, "secrets/slack-bot", BOT_TOKEN);
    write(dir, "secrets/slack-signing", SIGNING_SECRET);
    for t in ["lead", "viewer", "ops"] {
        write(dir, &format!("secrets/tok-{t}"), &format!("secret-{t}"));
    }
    write(
        dir,
        "charter.yaml",
        &format!(
            r#"
server:
  public_url: {PUBLIC_URL}/
  timezone: "+05:30"
worker:
  lease: 2s
  poll_interval: 50ms
  concurrency: 4
  shutdown_grace: 2s
connectors:
  helpdesk:
    type: http
    base_url: {sink}
    timeout: 2s
    allow_private: true
  hooks:
    type: http
    base_url: {fake}
    timeout: 2s
    allow_private: true
  slack:
    type: slack
    token: file:secrets/slack-bot
    base_url: {fake}/api
    allow_private: true
    signing_secret: file:secrets/slack-signing
    users:
      U0LEAD: lead
      U0VIEW: viewer
{mail}tokens:
  - {{ name: lead, role: reviewer, secret: file:secrets/tok-lead }}
  - {{ name: viewer, role: viewer, secret: file:secrets/tok-viewer }}
  - {{ name: ops, role: admin, secret: file:secrets/tok-ops }}
"#
        ),
    );
    write(
        dir,
        "charters/refunds.yaml",
        &r#"
name: refunds
description: Refund requests need a lead's approval; anything unclear goes to a human.
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk, hooks, slack, mail]
trigger:
  webhook: { path: /hooks/refunds, verify: none }
  text: "{{ payload.ticket.subject }}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - { when: 'payload.ticket.subject.contains("refund")', label: billing }
  otherwise: escalate
routes:
  - when: decision.label == "billing"
    do: [refund]
  - when: "true"
    do: [note]
actions:
  refund:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/tickets/{{ payload.ticket.id }}"
      json: { ticket: { group: billing } }
    approval: { reviewers: [lead], expires: 1h, on_expiry: reject }
    retry: { attempts: 3, backoff: 50ms }
  note:
    log: "ticket {{ payload.ticket.id }} is {{ decision.label }}"
    approval: auto
escalation:
  to: support-leads
  notify: [slack:#approvals, hooks:/hook/notify MAIL]
measure:
  success: [refunded]
"#
        .replace(" MAIL", mail_target)
        .replace(", mail]", if smtp_port.is_some() { ", mail]" } else { "]" }),
    );
}

struct Harness {
    dir: PathBuf,
    base: String,
    sink: Sink,
    fake: Fake,
    fake_url: String,
    store: SqliteStore,
    shutdown: CancellationToken,
    client: reqwest::Client,
    /// For the web UI: redirects are not followed (the login answers one with the cookie).
    browser: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl crate::support::Site for Harness {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.browser
    }
}

impl Harness {
    async fn start() -> Harness {
        Self::start_with(None).await
    }

    async fn start_with(smtp_port: Option<u16>) -> Harness {
        charter_connect::install_crypto_provider();
        let dir = temp_dir("notify");
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let (fake_url, fake) = start_fake(shutdown.clone()).await;
        project(&dir, &format!("http://{sink_addr}"), &fake_url, smtp_port);
        let server = boot(&dir, "w1", shutdown.clone()).await;
        Harness {
            dir,
            base: server.base,
            sink,
            fake,
            fake_url,
            store: server.store,
            shutdown,
            client: reqwest::Client::new(),
            browser: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// An admin API call as token `ops`.
    async fn api(&self, path: &str) -> Value {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth("secret-ops")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn send(&self, id: i64, subject: &str) -> String {
        let r = self
            .client
            .post(format!("{}/hooks/refunds", self.base))
            .json(&json!({"ticket": {"id": id, "subject": subject}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    async fn wait_event(&self, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            last = self.api(&format!("/api/v1/events/{id}")).await;
            if last["event"]["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("event {id} never became {status}: {last}");
    }

    /// Slack's interactive callback for a press of `action` by `user`, signed with `secret`.
    async fn press(&self, user: &str, action: Value, secret: &str) -> (u16, Value) {
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user, "username": format!("name-{user}"), "team_id": "T1"},
            "team": {"id": "T1"},
            "trigger_id": TRIGGER_ID,
            "response_url": format!("{}/response", self.fake_url),
            "actions": [action],
        });
        self.interact(&payload, secret).await
    }

    /// Submit the modal `view` (as `views.open` got it) with `reason` typed in.
    async fn submit(&self, user: &str, view: &Value, reason: &str, secret: &str) -> (u16, Value) {
        let mut view = view.clone();
        view["id"] = "V1".into();
        view["state"] = json!({"values": {"reason": {"reason": {
            "type": "plain_text_input", "value": reason
        }}}});
        let payload = json!({
            "type": "view_submission",
            "user": {"id": user, "username": format!("name-{user}"), "team_id": "T1"},
            "team": {"id": "T1"},
            "view": view,
        });
        self.interact(&payload, secret).await
    }

    /// POST a signed interactive payload the way Slack does.
    async fn interact(&self, payload: &Value, secret: &str) -> (u16, Value) {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let spec = VerifySpec::Slack {
            tolerance: verify::DEFAULT_TOLERANCE,
        };
        let headers = verify::sign(&spec, secret, body.as_bytes(), now_secs(), "").unwrap();
        let mut req = self
            .client
            .post(format!("{}/slack/interactive", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    fn puts(&self, ticket: i64) -> usize {
        self.sink
            .received()
            .iter()
            .filter(|r| r.method == "PUT" && r.path == format!("/api/tickets/{ticket}"))
            .count()
    }
}

/// The `actions` block of a Slack message.
/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` (already shifted to the wanted clock).
fn wall_clock(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = charter_core::calendar::civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// The inbox card whose opening tag carries `marker`, up to the next card.
fn card_of<'a>(page: &'a str, marker: &str) -> &'a str {
    let start = page
        .find(marker)
        .unwrap_or_else(|| panic!("no card with {marker} in {page}"));
    let rest = &page[start..];
    let end = rest[1..]
        .find("<div class=\"card")
        .map_or(rest.len(), |i| i + 1);
    &rest[..end]
}

fn actions_block(msg: &Value) -> Value {
    msg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["type"] == "actions")
        .cloned()
        .unwrap_or_else(|| panic!("no actions block in {msg}"))
}

fn button<'a>(actions: &'a Value, action_id: &str) -> &'a Value {
    actions["elements"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action_id"] == action_id)
        .unwrap_or_else(|| panic!("no {action_id} in {actions}"))
}
