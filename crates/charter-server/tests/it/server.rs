//! Integration tests: the server in-process on 127.0.0.1:0, a real SQLite file, and a real
//! local HTTP server (the sink) standing in for the downstream system.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use charter_core::verify::{self, VerifySpec};
use charter_server::Runtime;
use charter_store::sqlite::SqliteStore;
use charter_testkit::project::{now_secs, temp_dir, write};
use charter_testkit::server::boot;
use charter_testkit::sink::{Scripted, Sink};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

mod approvals;
mod cascade;
mod delivery;
mod ingest;

const SECRET: &str = "test-secret-value-0123456789";

struct Harness {
    dir: PathBuf,
    base: String,
    sink: Sink,
    shutdown: CancellationToken,
    store: SqliteStore,
    runtime: Arc<Runtime>,
    client: reqwest::Client,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A project with one charter per verification preset, all routing to the sink.
fn project(dir: &Path, sink_url: &str, extra_charters: &[(&str, &str)]) {
    write(dir, "secrets/hook", SECRET);
    write(dir, "secrets/token", "sink-token-abc");
    write(
        dir,
        "charter.yaml",
        &format!(
            r#"
worker:
  lease: 2s
  poll_interval: 50ms
  concurrency: 8
  shutdown_grace: 2s
connectors:
  helpdesk:
    type: http
    base_url: {sink_url}
    auth: {{ bearer: file:secrets/token }}
    timeout: 2s
    allow_private: true
"#
        ),
    );
    write(
        dir,
        "schemas/ticket.json",
        r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id","subject"],"properties":{"id":{"type":"integer"},"subject":{"type":"string"}}}}}"#,
    );
    let presets = [
        ("std", "standard-webhooks", "/hooks/std"),
        ("stripe", "stripe", "/hooks/stripe"),
        ("github", "github", "/hooks/github"),
        ("slack", "slack", "/hooks/slack"),
    ];
    for (name, preset, path) in presets {
        write(
            dir,
            &format!("charters/{name}.yaml"),
            &charter_yaml(
                name,
                "live",
                &format!("{{ preset: {preset}, secret: file:secrets/hook }}"),
                path,
                "",
            ),
        );
    }
    write(
        dir,
        "charters/generic.yaml",
        &charter_yaml(
            "generic",
            "live",
            "{ preset: hmac, header: X-Sig, algorithm: sha256, encoding: base64, prefix: \"v=\", timestamp_header: X-Ts, signed: \"{timestamp}:{body}\", secret: file:secrets/hook }",
            "/hooks/generic",
            "",
        ),
    );
    for (rel, text) in extra_charters {
        write(dir, rel, text);
    }
}

fn charter_yaml(name: &str, mode: &str, verify: &str, path: &str, extra_trigger: &str) -> String {
    format!(
        r#"
name: {name}
description: test charter {name}
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: {mode}
uses: [helpdesk]
concurrency: 4
trigger:
  webhook:
    path: {path}
    verify: {verify}
  input_schema: schemas/ticket.json
  {extra_trigger}
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: 'payload.ticket.subject.contains("refund")', label: billing }}
  otherwise: other
routes:
  - when: decision.label == "billing"
    do: [assign_billing, note]
  - when: "true"
    do: [note]
actions:
  assign_billing:
    connector: helpdesk
    request:
      method: PUT
      path: "/api/tickets/{{{{ payload.ticket.id }}}}"
      json: {{ ticket: {{ group: billing, id: "{{{{ payload.ticket.id }}}}" }} }}
    approval: auto
    retry: {{ attempts: 4, backoff: 50ms, max_backoff: 3s }}
    measure: ticket_routed
  note:
    log: "ticket {{{{ payload.ticket.id }}}} is {{{{ decision.label }}}}"
    approval: auto
escalation: {{ to: support-leads }}
measure:
  success: [ticket_routed]
"#
    )
}

impl Harness {
    async fn start(extra: &[(&str, &str)]) -> Harness {
        let dir = temp_dir("it");
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        project(&dir, &format!("http://{sink_addr}"), extra);
        Self::boot(dir, sink, shutdown).await
    }

    async fn boot(dir: PathBuf, sink: Sink, shutdown: CancellationToken) -> Harness {
        let server = boot(&dir, "w1", shutdown.clone()).await;
        Harness {
            base: server.base,
            dir,
            sink,
            shutdown,
            store: server.store,
            runtime: server.runtime,
            client: reqwest::Client::new(),
            done: Some(server.done),
        }
    }

    fn spec(&self, charter: &str) -> (VerifySpec, String) {
        let w = self.runtime.charters[charter]
            .charter
            .trigger
            .webhook
            .clone()
            .unwrap();
        (w.verify, w.path)
    }

    async fn send_signed(&self, charter: &str, body: &Value, delivery: &str) -> (u16, Value) {
        let (spec, path) = self.spec(charter);
        let raw = serde_json::to_vec(body).unwrap();
        let headers = verify::sign(&spec, SECRET, &raw, now_secs(), delivery).unwrap();
        self.post(&path, raw, headers).await
    }

    async fn post(&self, path: &str, raw: Vec<u8>, headers: Vec<(String, String)>) -> (u16, Value) {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, path))
            .header("content-type", "application/json")
            .body(raw);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        self.client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    async fn api_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{}", self.base, path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Wait until the event reaches a final status; return its detail (event + runs).
    async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..1200 {
            let v = self.get(&format!("/api/v1/events/{id}")).await;
            if matches!(
                v["event"]["status"].as_str(),
                Some("done" | "failed" | "waiting")
            ) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("event {id} did not finish");
    }

    async fn events(&self, charter: &str) -> Vec<Value> {
        self.get(&format!("/api/v1/events?charter={charter}&limit=1000"))
            .await["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    async fn stop(mut self) -> (PathBuf, Sink) {
        self.shutdown.cancel();
        if let Some(d) = self.done.take() {
            d.await.unwrap();
        }
        self.store.close().await;
        (self.dir.clone(), self.sink.clone())
    }

    /// Stop, keeping the project folder and store for a restart.
    async fn stop_keep(mut self) -> (PathBuf, Sink) {
        let dir = std::mem::take(&mut self.dir);
        let (_, sink) = self.stop().await;
        (dir, sink)
    }
}

fn ticket(id: i64, subject: &str) -> Value {
    json!({"ticket": {"id": id, "subject": subject}})
}

// ---------------------------------------------------------------------------------------
// Approvals, escalations, audit log
// ---------------------------------------------------------------------------------------

/// A charter whose `assign_billing` action needs approval (the `note` action stays auto).
fn gated_charter(name: &str, path: &str, approval: &str) -> String {
    let text = charter_yaml(name, "live", "none", path, "");
    let gated = text.replacen(
        "    approval: auto\n    retry:",
        &format!("    approval: {approval}\n    retry:"),
        1,
    );
    assert_ne!(gated, text, "the approval policy was put in");
    gated
}

/// A charter that always escalates: no rule matches, `otherwise: escalate`.
fn escalating_charter(name: &str, path: &str) -> String {
    let text = charter_yaml(
        name,
        "live",
        "none",
        path,
        "text: \"{{ payload.ticket.subject }}\"",
    );
    let out = text.replace(
        "        - { when: 'payload.ticket.subject.contains(\"refund\")', label: billing }\n  otherwise: other\n",
        "        - { when: 'payload.ticket.subject == \"never matches\"', label: billing }\n  otherwise: escalate\n",
    );
    assert_ne!(out, text, "the decide section was rewritten");
    out
}

impl Harness {
    /// Like [`Harness::start`], with API tokens added to `charter.yaml`: each
    /// `(name, role, charters)` gets the secret `secret-<name>`.
    async fn start_with_tokens(
        extra: &[(&str, &str)],
        tokens: &[(&str, &str, &[&str])],
    ) -> Harness {
        let dir = temp_dir("it");
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        project(&dir, &format!("http://{sink_addr}"), extra);
        let mut yaml = std::fs::read_to_string(dir.join("charter.yaml")).unwrap();
        yaml.push_str("tokens:\n");
        for (name, role, charters) in tokens {
            write(
                &dir,
                &format!("secrets/tok-{name}"),
                &format!("secret-{name}"),
            );
            yaml.push_str(&format!(
                "  - {{ name: {name}, role: {role}, secret: file:secrets/tok-{name}, charters: [{}] }}\n",
                charters.join(", ")
            ));
        }
        write(&dir, "charter.yaml", &yaml);
        Self::boot(dir, sink, shutdown).await
    }

    /// A request with an optional bearer token: (status, JSON body).
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{}", self.base, path);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        };
        if let Some(t) = token {
            req = req.bearer_auth(format!("secret-{t}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(Value::Null))
    }

    /// Poll the event (as `token`) until `check` holds; return its detail.
    async fn wait_event(
        &self,
        id: &str,
        token: Option<&str>,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut last = Value::Null;
        for _ in 0..400 {
            last = self
                .call("GET", &format!("/api/v1/events/{id}"), token, None)
                .await
                .1;
            if check(&last) {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("event {id} never reached the expected state; last: {last}");
    }

    async fn send_plain(&self, path: &str, body: &Value) -> String {
        let (s, v) = self
            .post(path, serde_json::to_vec(body).unwrap(), vec![])
            .await;
        assert_eq!(s, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// The pending approvals of a charter (as `token`).
    async fn pending_approvals(&self, charter: &str, token: Option<&str>) -> Vec<Value> {
        let (s, v) = self
            .call(
                "GET",
                &format!("/api/v1/approvals?charter={charter}"),
                token,
                None,
            )
            .await;
        assert_eq!(s, 200, "{v}");
        v["approvals"].as_array().cloned().unwrap_or_default()
    }
}

/// The run the event ended with (its last run).
fn last_run(detail: &Value) -> &Value {
    detail["runs"].as_array().unwrap().last().unwrap()
}

fn runs_len(detail: &Value) -> usize {
    detail["runs"].as_array().map_or(0, Vec::len)
}

/// Requests the sink got on the ticket path (the `assign_billing` action).
fn ticket_puts(sink: &Sink, id: i64) -> Vec<charter_testkit::sink::Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == format!("/api/tickets/{id}"))
        .collect()
}
