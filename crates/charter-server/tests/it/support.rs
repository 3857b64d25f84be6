//! The server the API and UI tests share: in-process on 127.0.0.1:0 with a real SQLite store, the
//! worker running, tokens with roles and scopes, and a downstream HTTP server (the sink, an
//! axum server on 127.0.0.1:0) that records every request the charters' actions make.

#![allow(clippy::unwrap_used, dead_code)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use charter_server::sink::Sink;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_store::{ApprovalFilter, ApprovalStatus, EventStore};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

/// A charter whose `billing` decision PUTs the ticket to the downstream server under
/// `approval`; other subjects go to `otherwise` (a label, or `escalate`).
pub fn charter_yaml(name: &str, mode: &str, approval: &str, otherwise: &str) -> String {
    format!(
        r#"
name: {name}
description: test charter {name}
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: {mode}
uses: [helpdesk]
trigger:
  webhook:
    path: /hooks/{name}
    verify: none
  dedupe: "{{{{ payload.ticket.id }}}}"
  text: "{{{{ payload.ticket.subject }}}}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: 'payload.ticket.subject.contains("refund")', label: billing }}
  otherwise: {otherwise}
routes:
  - when: decision.label == "billing"
    do: [assign_billing]
  - when: "true"
    do: [note]
actions:
  assign_billing:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/tickets/{{{{ payload.ticket.id }}}}"
      json: {{ ticket: {{ group: billing }} }}
    approval: {approval}
  note:
    log: "ticket {{{{ payload.ticket.id }}}} is {{{{ decision.label }}}}"
    approval: auto
escalation: {{ to: support-leads }}
measure:
  success: [ticket_routed]
"#
    )
}

pub struct Harness {
    pub dir: PathBuf,
    pub base: String,
    pub sink: Sink,
    pub shutdown: CancellationToken,
    pub store: SqliteStore,
    pub http: reqwest::Client,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A response reduced to what the tests look at.
pub struct Resp {
    pub status: u16,
    pub location: String,
    pub cookies: Vec<String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

pub async fn resp(r: reqwest::Response) -> Resp {
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookies = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    Resp {
        status: r.status().as_u16(),
        location,
        cookies,
        body: r.text().await.unwrap(),
    }
}

impl Harness {
    /// Start a server with these charters and tokens (`(name, role, charters)`, secret
    /// `secret-<name>`).
    pub async fn start(charters: &[(&str, String)], tokens: &[(&str, &str, &[&str])]) -> Harness {
        Harness::start_with_files(charters, tokens, &[]).await
    }

    /// [`Harness::start`] with more project files (`(path, contents)`), such as schemas.
    pub async fn start_with_files(
        charters: &[(&str, String)],
        tokens: &[(&str, &str, &[&str])],
        files: &[(&str, &str)],
    ) -> Harness {
        Harness::start_with_connectors(charters, tokens, files, "").await
    }

    /// [`Harness::start_with_files`] with more connectors: `connectors` is YAML placed under
    /// `connectors:` after `helpdesk` (indented by two spaces).
    pub async fn start_with_connectors(
        charters: &[(&str, String)],
        tokens: &[(&str, &str, &[&str])],
        files: &[(&str, &str)],
        connectors: &str,
    ) -> Harness {
        let dir =
            std::env::temp_dir().join(format!("charter-it-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let mut yaml = format!(
            "worker:\n  lease: 2s\n  poll_interval: 50ms\nconnectors:\n  helpdesk:\n    type: http\n    base_url: http://{sink_addr}\n    timeout: 2s\n    allow_private: true\n"
        );
        yaml.push_str(connectors);
        if !tokens.is_empty() {
            yaml.push_str("tokens:\n");
        }
        for (name, role, scope) in tokens {
            write(&dir, &format!("secrets/{name}"), &format!("secret-{name}"));
            yaml.push_str(&format!(
                "  - {{ name: {name}, role: {role}, secret: file:secrets/{name}, charters: [{}] }}\n",
                scope.join(", ")
            ));
        }
        write(&dir, "charter.yaml", &yaml);
        for (path, text) in files {
            write(&dir, path, text);
        }
        for (name, text) in charters {
            write(&dir, &format!("charters/{name}.yaml"), text);
        }
        charter_connect::install_crypto_provider();
        let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
        let store = SqliteStore::open(&runtime.store_path()).unwrap();
        let running = charter_server::start(
            runtime,
            store.clone(),
            ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role: Role::All,
                worker_id: Some("it-w1".into()),
            },
            shutdown.clone(),
        )
        .await
        .unwrap();
        Harness {
            dir,
            base: format!("http://{}", running.addr),
            sink,
            shutdown,
            store,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    /// Send an event to a charter's webhook; returns its id.
    pub async fn send(&self, charter: &str, id: i64, subject: &str) -> String {
        let r = self
            .http
            .post(format!("{}/hooks/{charter}", self.base))
            .json(&json!({"ticket": {"id": id, "subject": subject}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        let v: Value = r.json().await.unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub async fn status(&self, id: &str) -> String {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        let e = self.store.get_event(uuid).await.unwrap().unwrap();
        e.status.as_str().to_string()
    }

    pub async fn wait_status(&self, id: &str, want: &str) {
        let uuid = uuid::Uuid::parse_str(id).unwrap();
        // 30 s: on a loaded 2-core machine the whole suite runs beside this test.
        let mut last = None;
        for _ in 0..1200 {
            if let Some(e) = self.store.get_event(uuid).await.unwrap() {
                if e.status.as_str() == want {
                    return;
                }
                last = Some(e.status);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("event {id} never became {want} (last status {last:?})");
    }

    pub async fn pending_approvals(&self) -> Vec<charter_store::ApprovalRecord> {
        charter_store::ApprovalStore::list_approvals(
            &self.store,
            ApprovalFilter {
                status: Some(ApprovalStatus::Pending),
                limit: 100,
                ..ApprovalFilter::default()
            },
        )
        .await
        .unwrap()
    }

    /// Requests the downstream server received for a ticket's PUT.
    pub fn puts(&self, ticket: i64) -> usize {
        self.sink
            .received()
            .iter()
            .filter(|r| r.method == "PUT" && r.path == format!("/api/tickets/{ticket}"))
            .count()
    }

    /// An API call with the token of `who` (`None`: no token).
    pub async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(name) = who {
            req = req.bearer_auth(format!("secret-{name}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        resp(req.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str, who: Option<&str>) -> Resp {
        self.api(reqwest::Method::GET, path, who, None).await
    }

    pub async fn post(&self, path: &str, who: Option<&str>, body: Option<Value>) -> Resp {
        self.api(reqwest::Method::POST, path, who, body).await
    }
}

pub fn form_encode(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| {
                        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                            (b as char).to_string()
                        } else {
                            format!("%{b:02X}")
                        }
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub fn cookie_value(cookies: &[String], name: &str) -> Option<String> {
    cookies.iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (k, v) = first.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// The CSRF token embedded in a page's forms.
pub fn csrf_in(body: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = body.find(marker).expect("a form with a CSRF field") + marker.len();
    body[start..start + 64].to_string()
}

/// A running server the UI stand-in can talk to (this module's harness, or another test
/// file's).
pub trait Site {
    fn base(&self) -> &str;
    fn http(&self) -> &reqwest::Client;
}

impl Site for Harness {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

/// A browser stand-in for the web UI: one cookie, no redirect following.
pub struct Ui<'a, H: Site = Harness> {
    pub h: &'a H,
    pub cookie: String,
}

impl<'a, H: Site> Ui<'a, H> {
    /// No session yet.
    pub fn anonymous(h: &'a H) -> Ui<'a, H> {
        Ui {
            h,
            cookie: String::new(),
        }
    }

    pub async fn get(&self, path: &str) -> Resp {
        resp(
            self.h
                .http()
                .get(format!("{}{path}", self.h.base()))
                .header("cookie", &self.cookie)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Resp {
        resp(
            self.h
                .http()
                .post(format!("{}{path}", self.h.base()))
                .header("cookie", &self.cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form_encode(fields))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Log in with `secret` through the login form; the response and the session.
    pub async fn try_login(h: &'a H, secret: &str) -> (Resp, Ui<'a, H>) {
        let page = Ui::anonymous(h).get("/login").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let login_cookie = cookie_value(&page.cookies, "charter_login").unwrap();
        let ui = Ui {
            h,
            cookie: format!("charter_login={login_cookie}"),
        };
        let csrf = csrf_in(&page.body);
        let r = ui
            .post(
                "/login",
                &[("csrf", &csrf), ("token", secret), ("next", "/inbox")],
            )
            .await;
        let cookie = cookie_value(&r.cookies, "charter_session")
            .map(|s| format!("charter_session={s}"))
            .unwrap_or_default();
        (r, Ui { h, cookie })
    }

    pub async fn login(h: &'a H, name: &str) -> Ui<'a, H> {
        let (r, ui) = Ui::try_login(h, &format!("secret-{name}")).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.location, "/inbox");
        ui
    }

    /// The same session (its cookie) sent to another node.
    pub fn on<'b, G: Site>(&self, other: &'b G) -> Ui<'b, G> {
        Ui {
            h: other,
            cookie: self.cookie.clone(),
        }
    }

    /// This session's CSRF token (from the inbox's logout form).
    pub async fn csrf(&self) -> String {
        let p = self.get("/inbox").await;
        assert_eq!(p.status, 200, "{}", p.body);
        csrf_in(&p.body)
    }
}
