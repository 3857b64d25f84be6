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
use charter_server::sink::Sink;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::NotificationStore;
use charter_store::sqlite::SqliteStore;

use crate::support::Ui;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
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
        let dir =
            std::env::temp_dir().join(format!("charter-notify-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let (fake_url, fake) = start_fake(shutdown.clone()).await;
        project(&dir, &format!("http://{sink_addr}"), &fake_url, smtp_port);
        let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
        let store = SqliteStore::open(&runtime.store_path()).unwrap();
        let running = charter_server::start(
            runtime,
            store.clone(),
            ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role: Role::All,
                worker_id: Some("w1".into()),
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        Harness {
            dir,
            base: format!("http://{}", running.addr),
            sink,
            fake,
            fake_url,
            store,
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_is_announced_and_decided_once_from_slack() {
    let h = Harness::start().await;
    // The webhook receiver fails the first delivery: it is retried; Slack is not held up.
    h.fake.hook_failures.lock().unwrap().push(503);
    let event = h.send(7, "refund please").await;
    h.wait_event(&event, "waiting").await;
    assert_eq!(h.puts(7), 0, "nothing runs before the approval");

    // Slack got a Block Kit message with the bot token, buttons and the UI link.
    let posts = h
        .fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    let msg = &posts[0].body;
    assert_eq!(
        posts[0].authorization.as_deref(),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(msg["channel"], "#approvals");
    let link = format!("{PUBLIC_URL}/inbox?tab=approvals&item=");
    assert!(msg["text"].as_str().unwrap().contains(&link), "{msg}");
    assert!(
        msg["text"]
            .as_str()
            .unwrap()
            .contains("Approval needed: refund (refunds)"),
        "{msg}"
    );
    let actions = actions_block(msg);
    let approve = button(&actions, "charter_approve").clone();
    let reject = button(&actions, "charter_reject").clone();
    let open = button(&actions, "charter_open")["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(open.starts_with(&link), "{open}");
    let link_to = open.clone();
    let pending = h.api("/api/v1/approvals?charter=refunds").await;
    let approval = pending["approvals"][0].clone();
    let approval_id = approval["id"].as_str().unwrap().to_string();
    assert_eq!(approve["value"], format!("approval:{approval_id}"));
    assert_eq!(reject["value"], format!("approval:{approval_id}"));
    let shown = msg.to_string();
    assert!(shown.contains("decision: billing"), "evidence: {msg}");
    assert!(shown.contains("Reviewers:* lead"), "{msg}");

    // The HTTP webhook: first answered 503, delivered on the retry, with the link.
    let hooks = h.fake.wait_for("/hook/notify", |g| g.len() >= 2).await;
    let body = &hooks[1].body;
    assert_eq!(body["kind"], "approval");
    assert_eq!(body["id"], approval_id.as_str());
    assert_eq!(
        body["link"],
        format!("{link}{approval_id}"),
        "the link opens the approval"
    );
    assert_eq!(body["charter"], "refunds");
    assert!(body["text"].as_str().unwrap().contains(&link));
    // The delivery record is written once the receiver has answered: wait for it.
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = h
            .store
            .list_notifications(Some(approval_id.parse().unwrap()), 10)
            .await
            .unwrap();
        if rows.iter().all(|r| r.state.as_str() == "sent") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let hook_row = rows
        .iter()
        .find(|r| r.target == "hooks:/hook/notify")
        .unwrap();
    assert_eq!(hook_row.attempts, 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.state.as_str() == "sent"), "{rows:?}");
    // The approval's API answer carries the same delivery record, as documented.
    let shown = h.api(&format!("/api/v1/approvals/{approval_id}")).await;
    crate::openapi::check(
        &crate::openapi::document(),
        "get",
        "/api/v1/approvals/{id}",
        200,
        &shown.to_string(),
    );
    let mut delivered: Vec<(String, String, u64)> = shown["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["target"].as_str().unwrap().to_string(),
                n["state"].as_str().unwrap().to_string(),
                n["attempts"].as_u64().unwrap(),
            )
        })
        .collect();
    delivered.sort();
    let mut expected: Vec<(String, String, u64)> = rows
        .iter()
        .map(|r| (r.target.clone(), "sent".to_string(), u64::from(r.attempts)))
        .collect();
    expected.sort();
    assert_eq!(delivered, expected, "{shown}");
    assert!(
        delivered
            .iter()
            .any(|(t, _, a)| t == "hooks:/hook/notify" && *a == 2),
        "{shown}"
    );

    // The notification's link opens the inbox with the approval selected, decidable there,
    // and its card shows the same delivery record.
    let ui = Ui::login(&h, "lead").await;
    let inbox = ui.get(link_to.strip_prefix(PUBLIC_URL).unwrap()).await;
    assert!(
        inbox
            .body
            .contains(&format!("/approvals/{approval_id}/approve")),
        "{}",
        inbox.body
    );
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let card = card_of(&inbox.body, &format!("data-approval=\"{approval_id}\""));
    for (target, _, attempts) in &expected {
        let shown = format!(
            "<span data-target=\"{target}\"><code>{target}</code> <span class=\"badge ok\">sent</span> {attempts} attempt"
        );
        assert!(card.contains(&shown), "{shown} not in {card}");
    }
    // Times are shown on the clock `server.timezone` names (+05:30 here).
    let sent_at = hook_row.sent_at.unwrap();
    let shown = format!(", sent {}</span>", wall_clock(sent_at + 330 * 60_000));
    assert!(card.contains(&shown), "{shown} not in {card}");

    // A forged signature: 401, nothing changes.
    let (s, _) = h
        .press("U0LEAD", approve.clone(), "not-the-signing-secret")
        .await;
    assert_eq!(s, 401);
    // A stale signature (Slack's 5-minute window) is refused the same way.
    let stale = {
        let payload = "payload=%7B%7D";
        let spec = VerifySpec::Slack {
            tolerance: verify::DEFAULT_TOLERANCE,
        };
        let headers = verify::sign(
            &spec,
            SIGNING_SECRET,
            payload.as_bytes(),
            now_secs() - 600,
            "",
        )
        .unwrap();
        let mut req = h
            .client
            .post(format!("{}/slack/interactive", h.base))
            .body(payload);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send().await.unwrap().status().as_u16()
    };
    assert_eq!(stale, 401);
    // A Slack user not listed under `users:`, and one mapped to a viewer: refused,
    // ephemerally, and nothing changes.
    let (s, v) = h.press("U0STRANGER", approve.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    assert!(v["text"].as_str().unwrap().contains("U0STRANGER"), "{v}");
    let (s, v) = h.press("U0VIEW", approve.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    assert!(
        v["text"].as_str().unwrap().contains("may not decide"),
        "{v}"
    );
    let still = h.api(&format!("/api/v1/approvals/{approval_id}")).await;
    assert_eq!(still["approval"]["status"], "pending", "{still}");
    assert_eq!(h.puts(7), 0);
    let refusals = h.fake.wait_for("/response", |g| g.len() >= 2).await;
    assert!(
        refusals
            .iter()
            .all(|g| g.body["response_type"] == "ephemeral")
    );

    // The lead approves from Slack: decided as the UI would, the action runs once.
    let (s, v) = h.press("U0LEAD", approve.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["replace_original"], true, "{v}");
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .contains("Approved by <@U0LEAD>"),
        "{v}"
    );
    h.wait_event(&event, "done").await;
    let decided = h.api(&format!("/api/v1/approvals/{approval_id}")).await;
    assert_eq!(decided["approval"]["status"], "approved");
    assert_eq!(decided["approval"]["decided_by"], "slack:U0LEAD");
    // Pressing again (or the Reject button) changes nothing: still one execution.
    let (_, v) = h.press("U0LEAD", approve, SIGNING_SECRET).await;
    assert!(
        v["text"].as_str().unwrap().contains("already approved"),
        "{v}"
    );
    let (_, v) = h.press("U0LEAD", reject, SIGNING_SECRET).await;
    assert!(
        v["text"].as_str().unwrap().contains("already approved"),
        "{v}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.puts(7), 1, "the approved action ran exactly once");
    let audit = h.api("/api/v1/audit?charter=refunds").await;
    let entry = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval.approve")
        .cloned()
        .unwrap_or_else(|| panic!("no approval.approve in {audit}"));
    assert_eq!(entry["actor"], "slack:U0LEAD");
    assert_eq!(entry["target"], approval_id.as_str());
    let approvals_by_slack = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "approval.approve" || e["action"] == "approval.reject")
        .count();
    assert_eq!(approvals_by_slack, 1, "{audit}");
    // The metric counts the deliveries.
    let metrics = h
        .client
        .get(format!("{}/metrics", h.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"charter_notifications_total{charter="refunds",kind="approval",connector="hooks",result="retry"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_rejection_asks_for_the_reason_in_a_dialog() {
    let h = Harness::start().await;
    let event = h.send(8, "refund twice").await;
    h.wait_event(&event, "waiting").await;
    let posts = h
        .fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    let actions = actions_block(&posts[0].body);
    let reject = button(&actions, "charter_reject").clone();
    let approval_id = reject["value"]
        .as_str()
        .unwrap()
        .strip_prefix("approval:")
        .unwrap()
        .to_string();
    let path = format!("/api/v1/approvals/{approval_id}");

    // A viewer's press is refused at once, ephemerally: no dialog asks them for a reason.
    let (s, v) = h.press("U0VIEW", reject.clone(), SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    assert!(
        v["text"].as_str().unwrap().contains("may not decide"),
        "{v}"
    );
    assert!(h.fake.got("/api/views.open").is_empty());

    // Slack refuses to open the dialog (a stale trigger): the reviewer is told why, and
    // nothing is decided.
    let stale = json!({
        "type": "block_actions",
        "user": {"id": "U0LEAD", "username": "lead"},
        "trigger_id": "stale.trigger",
        "response_url": format!("{}/response", h.fake_url),
        "actions": [reject.clone()],
    });
    let (s, v) = h.interact(&stale, SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_type"], "ephemeral", "{v}");
    let told = v["text"].as_str().unwrap();
    assert!(
        told.contains("invalid_trigger_id") && told.contains("web UI"),
        "{v}"
    );
    assert_eq!(h.api(&path).await["approval"]["status"], "pending");

    // The lead's press opens the dialog with the press's trigger_id; nothing is decided yet.
    let (s, v) = h.press("U0LEAD", reject.clone(), SIGNING_SECRET).await;
    assert_eq!((s, &v), (200, &Value::Null), "an empty answer: {v}");
    let opened = h.fake.got("/api/views.open");
    assert_eq!(opened.len(), 2, "the stale try and this one: {opened:?}");
    assert_eq!(
        opened[1].authorization.as_deref(),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert_eq!(opened[1].body["trigger_id"], TRIGGER_ID);
    let view = opened[1].body["view"].clone();
    assert_eq!(view["type"], "modal");
    assert_eq!(view["callback_id"], "charter_reject");
    assert_eq!(view["blocks"][0]["block_id"], "reason");
    assert_eq!(view["blocks"][0]["element"]["action_id"], "reason");
    assert_eq!(h.api(&path).await["approval"]["status"], "pending");

    // An empty reason, a forged signature and an unlisted Slack user change nothing; the
    // first and last are told next to the reason field.
    let (s, v) = h.submit("U0LEAD", &view, "   ", SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert_eq!(v["response_action"], "errors", "{v}");
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("needs a reason"),
        "{v}"
    );
    let (s, _) = h
        .submit("U0LEAD", &view, "forged", "not-the-signing-secret")
        .await;
    assert_eq!(s, 401);
    let (s, v) = h
        .submit("U0STRANGER", &view, "not mine", SIGNING_SECRET)
        .await;
    assert_eq!(s, 200);
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("U0STRANGER"),
        "{v}"
    );
    assert_eq!(h.api(&path).await["approval"]["status"], "pending");

    // The lead's reason: rejected as the UI would, with that reason, by the Slack user; the
    // message is replaced through its response_url, and the action never runs.
    let (s, v) = h
        .submit(
            "U0LEAD",
            &view,
            "  Already refunded on #4411 ",
            SIGNING_SECRET,
        )
        .await;
    assert_eq!((s, &v), (200, &Value::Null), "Slack closes the dialog: {v}");
    let decided = h.api(&path).await;
    assert_eq!(decided["approval"]["status"], "rejected", "{decided}");
    assert_eq!(decided["approval"]["comment"], "Already refunded on #4411");
    assert_eq!(decided["approval"]["decided_by"], "slack:U0LEAD");
    let replaced = h
        .fake
        .wait_for("/response", |g| {
            g.iter().any(|r| r.body["replace_original"] == true)
        })
        .await;
    let update = replaced
        .iter()
        .find(|r| r.body["replace_original"] == true)
        .unwrap();
    assert_eq!(
        update.body["text"],
        "Rejected by <@U0LEAD>: Already refunded on #4411"
    );
    h.wait_event(&event, "done").await;
    let audit = h.api("/api/v1/audit?charter=refunds").await;
    let entry = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval.reject")
        .cloned()
        .unwrap_or_else(|| panic!("no approval.reject in {audit}"));
    assert_eq!(entry["actor"], "slack:U0LEAD");
    assert_eq!(entry["detail"]["reason"], "Already refunded on #4411");

    // The dialog submitted again, or Reject pressed again: refused, still one decision.
    let (_, v) = h.submit("U0LEAD", &view, "again", SIGNING_SECRET).await;
    assert!(
        v["errors"]["reason"]
            .as_str()
            .unwrap()
            .contains("already rejected"),
        "{v}"
    );
    let (_, v) = h.press("U0LEAD", reject, SIGNING_SECRET).await;
    assert!(
        v["text"].as_str().unwrap().contains("already rejected"),
        "{v}"
    );
    assert_eq!(h.fake.got("/api/views.open").len(), 2);
    assert_eq!(h.puts(8), 0, "a rejected action never runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalation_is_announced_and_resolved_from_slack() {
    let h = Harness::start().await;
    let event = h.send(8, "where is my parcel").await;
    h.wait_event(&event, "waiting").await;
    let posts = h
        .fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    let msg = &posts[0].body;
    assert!(
        msg["text"]
            .as_str()
            .unwrap()
            .starts_with("Escalated to a human"),
        "{msg}"
    );
    let link = format!("{PUBLIC_URL}/inbox?tab=decisions&item=");
    assert!(msg.to_string().contains(&link), "{msg}");
    let escalations = h.api("/api/v1/escalations?charter=refunds").await;
    let esc_id = escalations["escalations"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let actions = actions_block(msg);
    let menu = button(&actions, "charter_decide");
    let options: Vec<&str> = menu["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        options,
        [
            format!("escalation:{esc_id}:billing"),
            format!("escalation:{esc_id}:other")
        ]
    );
    let hooks = h.fake.wait_for("/hook/notify", |g| !g.is_empty()).await;
    assert_eq!(hooks[0].body["kind"], "escalation");
    let landed = hooks[0].body["link"].as_str().unwrap();
    assert_eq!(
        landed,
        format!("{link}{esc_id}"),
        "the link opens the escalation"
    );
    // The escalation's API answer shows where it was announced and that both went out
    // (the store marks a delivery sent just after the receiver answered: wait for it).
    let path = format!("/api/v1/escalations/{esc_id}");
    let mut shown = h.api(&path).await;
    for _ in 0..100 {
        let states: Vec<&str> = shown["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["state"].as_str().unwrap())
            .collect();
        if states.len() == 2 && states.iter().all(|s| *s == "sent") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        shown = h.api(&path).await;
    }
    crate::openapi::check(
        &crate::openapi::document(),
        "get",
        "/api/v1/escalations/{id}",
        200,
        &shown.to_string(),
    );
    assert_eq!(shown["escalation"]["id"], esc_id.as_str());
    let mut targets: Vec<(&str, &str)> = shown["notifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["target"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        [("hooks:/hook/notify", "sent"), ("slack:#approvals", "sent")],
        "{shown}"
    );
    // The inbox's escalation card shows both deliveries, each sent on the first attempt.
    let inbox = Ui::login(&h, "lead").await.get("/inbox").await;
    assert_eq!(inbox.status, 200, "{}", inbox.body);
    let card = card_of(&inbox.body, &format!("data-escalation=\"{esc_id}\""));
    for (target, _) in &targets {
        let shown = format!(
            "<span data-target=\"{target}\"><code>{target}</code> <span class=\"badge ok\">sent</span> 1 attempt, sent "
        );
        assert!(card.contains(&shown), "{shown} not in {card}");
    }

    // The lead picks `other`: the run goes on with that human decision (`note`).
    let choice = json!({
        "action_id": "charter_decide",
        "type": "static_select",
        "selected_option": {"value": format!("escalation:{esc_id}:other")},
    });
    let (s, _) = h.press("U0LEAD", choice.clone(), "wrong-secret").await;
    assert_eq!(s, 401);
    let open = h.api("/api/v1/escalations?charter=refunds").await;
    assert_eq!(
        open["escalations"].as_array().unwrap().len(),
        1,
        "still open"
    );
    let (s, v) = h.press("U0LEAD", choice, SIGNING_SECRET).await;
    assert_eq!(s, 200);
    assert!(
        v["text"].as_str().unwrap().contains("Decided `other`"),
        "{v}"
    );
    let done = h.wait_event(&event, "done").await;
    let run = done["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(run["decision"]["label"], "other", "{run}");
    let all = h
        .api("/api/v1/escalations?charter=refunds&status=all")
        .await;
    assert_eq!(all["escalations"][0]["resolved_by"], "slack:U0LEAD");
    assert_eq!(h.puts(8), 0, "the refund action was not taken");
}

/// aiosmtpd on a free port (as in charter-connect's connector tests); every message is
/// written to `<dir>/<n>.eml`.
pub(crate) struct SmtpServer {
    child: std::process::Child,
    pub(crate) port: u16,
    pub(crate) dir: PathBuf,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `None` when aiosmtpd is missing and the test may skip (`crate::tools`: never under CI=true).
pub(crate) async fn start_smtp() -> Option<SmtpServer> {
    if !crate::tools::available(crate::tools::Tool::Smtp, crate::tools::python_aiosmtpd) {
        return None;
    }
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = std::env::temp_dir().join(format!(
        "charter-notify-smtp-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_is_announced_by_email() {
    let Some(smtp) = start_smtp().await else {
        return;
    };
    let h = Harness::start_with(Some(smtp.port)).await;
    let event = h.send(9, "refund twice").await;
    h.wait_event(&event, "waiting").await;
    let mut mail = String::new();
    for _ in 0..400 {
        if let Ok(m) = std::fs::read_to_string(smtp.dir.join("1.eml")) {
            mail = m;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(mail.starts_with("X-Rcpt: leads@example.test"), "{mail}");
    // The body is quoted-printable: join soft line breaks, decode `=3D`.
    let mail = mail
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        mail.contains("Subject: [Charter] Approval needed: refund (refunds)"),
        "{mail}"
    );
    let link = format!("{PUBLIC_URL}/inbox?tab=approvals");
    assert!(mail.contains(&link), "{mail}");
    assert!(mail.contains("Reviewers: lead"), "{mail}");
    // The other targets were told too, and nothing ran.
    h.fake
        .wait_for("/api/chat.postMessage", |g| !g.is_empty())
        .await;
    assert_eq!(h.puts(9), 0);
}
