//! Integration tests: the server in-process on 127.0.0.1:0, a real SQLite file, and a real
//! local HTTP server (the sink) standing in for the downstream system.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use charter_core::verify::{self, VerifySpec};
use charter_server::sink::{Scripted, Sink};
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

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

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
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
        let dir =
            std::env::temp_dir().join(format!("charter-it-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
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
        charter_connect::install_crypto_provider();
        let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
        let store = SqliteStore::open(&runtime.store_path()).unwrap();
        let running = charter_server::start(
            runtime.clone(),
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
            base: format!("http://{}", running.addr),
            dir,
            sink,
            shutdown,
            store,
            runtime,
            client: reqwest::Client::new(),
            done: Some(running.done),
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

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn ticket(id: i64, subject: &str) -> Value {
    json!({"ticket": {"id": id, "subject": subject}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_accepts_signed_and_rejects_forged_stale_and_missing() {
    let h = Harness::start(&[]).await;
    for charter in ["std", "stripe", "github", "slack", "generic"] {
        let (status, v) = h
            .send_signed(charter, &ticket(1, "hello"), &format!("d-{charter}"))
            .await;
        assert_eq!(
            status, 202,
            "{charter}: signed delivery must be accepted: {v}"
        );
        assert!(v["id"].as_str().is_some());

        let (spec, path) = h.spec(charter);
        let raw = serde_json::to_vec(&ticket(2, "forged")).unwrap();
        // Wrong secret.
        let forged = verify::sign(&spec, "not-the-secret", &raw, now_secs(), "x1").unwrap();
        assert_eq!(
            h.post(&path, raw.clone(), forged).await.0,
            401,
            "{charter}: forged"
        );
        // Missing signature.
        assert_eq!(
            h.post(&path, raw.clone(), vec![]).await.0,
            401,
            "{charter}: missing"
        );
        // Tampered body with a valid signature of another body.
        let good = verify::sign(&spec, SECRET, &raw, now_secs(), "x2").unwrap();
        let tampered = serde_json::to_vec(&ticket(3, "tampered")).unwrap();
        assert_eq!(
            h.post(&path, tampered, good).await.0,
            401,
            "{charter}: tampered"
        );
        // Stale timestamp (GitHub signs no timestamp, so it has none to be stale).
        if charter != "github" {
            let stale = verify::sign(&spec, SECRET, &raw, now_secs() - 3600, "x3").unwrap();
            assert_eq!(
                h.post(&path, raw.clone(), stale).await.0,
                401,
                "{charter}: stale"
            );
        }
        // Nothing but the one good delivery was stored.
        assert_eq!(
            h.events(charter).await.len(),
            1,
            "{charter}: only the signed event is stored"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_violations_are_answered_422_and_kept_as_rejected() {
    let h = Harness::start(&[]).await;
    let bad = json!({"ticket": {"id": "not-a-number"}});
    let (status, v) = h.send_signed("github", &bad, "c1").await;
    assert_eq!(status, 422, "{v}");
    let violations: Vec<String> = v["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    assert!(
        violations.iter().any(|m| m.starts_with("/ticket/id")),
        "{violations:?}"
    );
    assert!(
        violations.iter().any(|m| m.contains("subject")),
        "{violations:?}"
    );
    assert!(h.events("github").await.is_empty());
    let rejected = h.get("/api/v1/rejected?charter=github").await;
    let items = rejected["rejected"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], v["rejected_id"]);
    assert!(items[0]["body"].as_str().unwrap().contains("not-a-number"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_413() {
    let h = Harness::start(&[]).await;
    let big = json!({"ticket": {"id": 1, "subject": "x".repeat(2 * 1024 * 1024)}});
    let (status, _) = h.send_signed("github", &big, "big").await;
    assert_eq!(status, 413);
    assert!(h.events("github").await.is_empty());
    h.stop().await;
}

/// The oversized body is not read to its end, so the 413 closes the connection; the same
/// client's next request goes out on a new one and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_413_closes_its_connection_and_the_next_request_is_answered() {
    let h = Harness::start(&[]).await;
    let (spec, path) = h.spec("github");
    let raw = serde_json::to_vec(&json!({"pad": "x".repeat(2 * 1024 * 1024)})).unwrap();
    let mut req = h
        .client
        .post(format!("{}{}", h.base, path))
        .header("content-type", "application/json")
        .body(raw.clone());
    for (k, v) in verify::sign(&spec, SECRET, &raw, now_secs(), "too-big").unwrap() {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    assert_eq!(
        resp.headers()
            .get("connection")
            .and_then(|v| v.to_str().ok()),
        Some("close")
    );
    for _ in 0..20 {
        let status = h
            .client
            .get(format!("{}/healthz", h.base))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 200);
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_copies_give_one_event_and_one_action() {
    let h = Arc::new(Harness::start(&[]).await);
    let body = ticket(77, "refund please");
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let h = h.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            h.send_signed("std", &body, "same-delivery").await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut accepted = 0;
    for t in tasks {
        let (status, v) = t.await.unwrap();
        assert!(status == 202 || status == 200, "status {status}");
        if status == 202 {
            accepted += 1;
        }
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(accepted, 1, "exactly one delivery is stored");
    assert_eq!(ids.len(), 1, "every copy answers with the original id");
    let id = ids.into_iter().next().unwrap();
    let detail = h.wait_final(&id).await;
    assert_eq!(detail["event"]["status"], "done");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let puts: Vec<_> = h
        .sink
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 1, "one action reached the downstream");
    assert_eq!(h.events("std").await.len(), 1);
    let h = Arc::try_unwrap(h).ok().unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_500_then_200_is_retried_with_the_same_idempotency_key() {
    let h = Harness::start(&[]).await;
    h.sink
        .script([Scripted::Status(500), Scripted::Status(503)]);
    let (status, v) = h.send_signed("github", &ticket(5, "refund"), "r1").await;
    assert_eq!(status, 202);
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done", "{detail}");
    let puts: Vec<_> = h
        .sink
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .collect();
    assert_eq!(puts.len(), 3);
    let key = puts[0].idempotency_key.clone().unwrap();
    assert!(
        puts.iter()
            .all(|p| p.idempotency_key.as_deref() == Some(key.as_str()))
    );
    assert_eq!(puts.iter().filter(|p| p.applied).count(), 1);
    assert_eq!(
        puts[2].authorization.as_deref(),
        Some("Bearer sink-token-abc")
    );
    let action = &detail["runs"][0]["actions"][0];
    assert_eq!(action["action"], "assign_billing");
    assert_eq!(action["status"], "succeeded");
    assert_eq!(action["idempotency_key"].as_str(), Some(key.as_str()));
    let statuses: Vec<_> = action["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["status"].as_u64())
        .collect();
    assert_eq!(statuses, vec![Some(500), Some(503), Some(200)]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let h = Harness::start(&[]).await;
    h.sink.script([Scripted::TooMany {
        retry_after_secs: 1,
    }]);
    let (_, v) = h.send_signed("github", &ticket(6, "refund"), "ra").await;
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    let attempts = detail["runs"][0]["actions"][0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], 429);
    let gap =
        attempts[1]["started_at"].as_i64().unwrap() - attempts[0]["started_at"].as_i64().unwrap();
    assert!(
        gap >= 1000,
        "the retry waited {gap} ms, less than Retry-After: 1"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_then_replay_does_not_repeat_succeeded_actions() {
    let h = Harness::start(&[]).await;
    h.sink.fail_always(Some(500));
    let (_, v) = h.send_signed("github", &ticket(8, "refund"), "dl").await;
    let id = v["id"].as_str().unwrap().to_string();
    let detail = h.wait_final(&id).await;
    assert_eq!(detail["event"]["status"], "failed");
    assert_eq!(detail["runs"][0]["actions"][0]["status"], "dead_lettered");
    assert_eq!(
        detail["runs"][0]["actions"][0]["attempts"]
            .as_array()
            .unwrap()
            .len(),
        4
    );
    assert_eq!(detail["runs"][0]["outcome"], "failed");

    h.sink.fail_always(None);
    let (s, r) = h
        .api_post("/api/v1/replay", json!({"charter": "github"}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["requeued"].as_array().unwrap().len(), 1);
    // Wait for the second run to finish.
    let mut detail = Value::Null;
    for _ in 0..200 {
        detail = h.get(&format!("/api/v1/events/{id}")).await;
        if detail["event"]["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(detail["event"]["status"], "done");
    assert_eq!(detail["runs"].as_array().unwrap().len(), 2);
    assert_eq!(detail["runs"][1]["actions"][0]["status"], "succeeded");

    // A replay of a done event runs again but repeats no succeeded action.
    let before = h.sink.received().len();
    let (s, _) = h
        .api_post(&format!("/api/v1/events/{id}/replay"), json!({}))
        .await;
    assert_eq!(s, 200);
    let mut runs = 0;
    for _ in 0..200 {
        detail = h.get(&format!("/api/v1/events/{id}")).await;
        runs = detail["runs"].as_array().unwrap().len();
        if runs == 3 && detail["event"]["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(runs, 3);
    assert_eq!(detail["runs"][2]["actions"][0]["status"], "already_done");
    assert_eq!(h.sink.received().len(), before, "nothing was sent again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_mode_sends_nothing_and_records_what_would_run() {
    let shadow = charter_yaml(
        "shadowed",
        "shadow",
        "{ preset: github, secret: file:secrets/hook }",
        "/hooks/shadow",
        "",
    );
    let h = Harness::start(&[("charters/shadowed.yaml", &shadow)]).await;
    let (_, v) = h.send_signed("shadowed", &ticket(9, "refund"), "s1").await;
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done");
    let run = &detail["runs"][0];
    assert_eq!(run["outcome"], "shadow");
    assert_eq!(run["actions"][0]["status"], "would_run");
    assert_eq!(run["actions"][0]["params"]["target"], "/api/tickets/9");
    assert_eq!(run["actions"][1]["status"], "would_run");
    assert!(
        h.sink.received().is_empty(),
        "shadow mode must not call the downstream"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_charter_stores_and_processes_in_order_after_resume() {
    // One at a time, so arrival order is observable at the downstream.
    let serial = charter_yaml(
        "serial",
        "live",
        "{ preset: github, secret: file:secrets/hook }",
        "/hooks/serial",
        "",
    )
    .replace("concurrency: 4", "concurrency: 1");
    let h = Harness::start(&[("charters/serial.yaml", &serial)]).await;
    let (s, _) = h.api_post("/api/v1/charters/serial/pause", json!({})).await;
    assert_eq!(s, 200);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (status, v) = h
            .send_signed("serial", &ticket(100 + i, "refund"), &format!("p{i}"))
            .await;
        assert_eq!(status, 202);
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = h.events("serial").await;
    assert_eq!(events.len(), 5);
    assert!(
        events.iter().all(|e| e["status"] == "pending"),
        "nothing is processed while paused"
    );
    assert!(h.sink.received().is_empty());
    let (s, _) = h
        .api_post("/api/v1/charters/serial/resume", json!({}))
        .await;
    assert_eq!(s, 200);
    for id in &ids {
        assert_eq!(h.wait_final(id).await["event"]["status"], "done");
    }
    let paths: Vec<String> = h
        .sink
        .received()
        .into_iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path)
        .collect();
    assert_eq!(paths.len(), 5);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "events were processed in arrival order");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_recorded() {
    let text = charter_yaml(
        "picky",
        "live",
        "{ preset: github, secret: file:secrets/hook }",
        "/hooks/picky",
        "",
    )
    .replace("  - when: \"true\"\n    do: [note]\n", "");
    let h = Harness::start(&[("charters/picky.yaml", &text)]).await;
    let (_, v) = h
        .send_signed("picky", &ticket(10, "just saying hi"), "n1")
        .await;
    let detail = h.wait_final(v["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done");
    assert_eq!(detail["runs"][0]["outcome"], "no_route");
    assert!(detail["runs"][0]["actions"].as_array().unwrap().is_empty());
    assert_eq!(detail["runs"][0]["decision"]["label"], "other");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_by_template_and_metrics_count_it() {
    let text = charter_yaml(
        "templ",
        "live",
        "none",
        "/hooks/templ",
        "dedupe: \"{{ payload.ticket.id }}\"",
    );
    let h = Harness::start(&[("charters/templ.yaml", &text)]).await;
    let body = serde_json::to_vec(&ticket(11, "hi")).unwrap();
    let (a, va) = h.post("/hooks/templ", body.clone(), vec![]).await;
    let (b, vb) = h.post("/hooks/templ", body, vec![]).await;
    assert_eq!((a, b), (202, 200));
    assert_eq!(va["id"], vb["id"]);
    assert_eq!(vb["status"], "duplicate");
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
        metrics.contains("charter_events_received_total{charter=\"templ\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("charter_events_duplicate_total{charter=\"templ\"} 1"),
        "{metrics}"
    );
    h.stop().await;
}

fn examples_csv() -> String {
    let mut s = String::from("text,label\n");
    let billing = [
        "refund",
        "invoice",
        "charged twice",
        "payment failed",
        "billing address",
        "credit card declined",
        "subscription price",
        "overcharged",
    ];
    let bug = [
        "app crashes",
        "error message",
        "button does not work",
        "page is blank",
        "login broken",
        "screen freezes",
        "sync fails",
        "upload error",
    ];
    let shipping = [
        "parcel late",
        "tracking number",
        "delivery address",
        "package lost",
        "courier",
        "shipment delayed",
        "order not arrived",
        "shipping cost",
    ];
    for (label, words) in [("billing", billing), ("bug", bug), ("shipping", shipping)] {
        for (i, w) in words.iter().enumerate() {
            for (j, frame) in [
                "I have a problem: {}",
                "Hello, {} again",
                "{} since yesterday",
                "why {}?",
                "please help, {}",
                "{} on my account",
                "urgent: {}",
                "{}!!",
            ]
            .iter()
            .enumerate()
            {
                if (i + j) % 2 == 0 {
                    s.push_str(&format!("\"{}\",{label}\n", frame.replace("{}", w)));
                }
            }
        }
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_rules_then_embedded_then_escalation() {
    let text = charter_yaml("cascade", "live", "none", "/hooks/cascade", "text: \"{{ payload.ticket.subject }}\"")
        .replace(
            "  labels: [billing, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.contains(\"refund\")', label: billing }\n  otherwise: other\n",
            "  labels: [billing, bug, shipping, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.startsWith(\"VIP\")', label: other }\n    - embedded: { examples: data/examples.csv, accept_above: 0.6 }\n  otherwise: escalate\n",
        );
    assert!(text.contains("embedded:"), "the charter text was rewritten");
    let h = Harness::start(&[
        ("charters/cascade.yaml", &text),
        ("data/examples.csv", &examples_csv()),
    ])
    .await;
    let send = |subject: &str| {
        let body = serde_json::to_vec(&ticket(1, subject)).unwrap();
        let h = &h;
        async move {
            h.post("/hooks/cascade", body, vec![]).await.1["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let by_rule = send("VIP customer: package lost").await;
    let by_model = send("my parcel is late and the tracking number does not work").await;
    let unsure = send("zxqv wibble frobnicate").await;

    let d = h.wait_final(&by_rule).await;
    assert_eq!(d["runs"][0]["decision"]["stage"], "rule");
    assert_eq!(d["runs"][0]["decision"]["label"], "other");

    let d = h.wait_final(&by_model).await;
    let dec = &d["runs"][0]["decision"];
    assert_eq!(dec["stage"], "embedded", "{dec}");
    assert_eq!(dec["label"], "shipping");
    assert!(dec["confidence"].as_f64().unwrap() >= 0.6);
    let stages: Vec<_> = dec["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        stages,
        vec!["rule", "embedded"],
        "every stage consulted is recorded"
    );

    let d = h.wait_final(&unsure).await;
    assert_eq!(
        d["event"]["status"], "waiting",
        "unsure cases go to a human"
    );
    assert_eq!(d["runs"][0]["outcome"], "escalated");
    let dec = &d["runs"][0]["decision"];
    assert!(dec["label"].is_null());
    let emb = &dec["stages"].as_array().unwrap()[1];
    assert_eq!(emb["stage"], "embedded");
    assert_eq!(emb["accepted"], false);
    assert!(emb["confidence"].as_f64().unwrap() < 0.6);
    // The model was trained at start-up and written next to the project.
    assert!(h.dir.join("models/cascade.model").exists());
    h.stop().await;
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
        let dir =
            std::env::temp_dir().join(format!("charter-it-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
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
fn ticket_puts(sink: &Sink, id: i64) -> Vec<charter_server::sink::Received> {
    sink.received()
        .into_iter()
        .filter(|r| r.method == "PUT" && r.path == format!("/api/tickets/{id}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_waits_then_concurrent_approvals_execute_once() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let h = Harness::start(&[("charters/gated.yaml", &gated)]).await;
    let id = h.send_plain("/hooks/gated", &ticket(31, "refund")).await;
    let d = h
        .wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    assert_eq!(last_run(&d)["outcome"], "awaiting_approval");
    assert!(
        ticket_puts(&h.sink, 31).is_empty(),
        "nothing sent before approval"
    );

    let pending = h.pending_approvals("gated", None).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let a = &pending[0];
    assert_eq!(a["event_id"], id.as_str());
    assert_eq!(a["action"], "assign_billing");
    assert_eq!(a["status"], "pending");
    assert_eq!(a["reviewers"], json!(["lead"]));
    assert_eq!(a["params"]["json"]["ticket"]["group"], "billing");
    assert_eq!(a["params_hash"].as_str().unwrap().len(), 64);
    let approval_id = a["id"].as_str().unwrap().to_string();

    // Eight reviewers press "approve" at the same moment.
    let approve_url = format!("/api/v1/approvals/{approval_id}/approve");
    let mut calls = Vec::new();
    for _ in 0..8 {
        calls.push(h.call("POST", &approve_url, None, None));
    }
    let results = futures_join_all(calls).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let conflict = results.iter().filter(|(s, _)| *s == 409).count();
    assert_eq!((ok, conflict), (1, 7), "{results:?}");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let run = last_run(&d);
    assert_eq!(run["outcome"], "completed");
    assert_eq!(run["actions"][0]["action"], "assign_billing");
    assert_eq!(run["actions"][0]["status"], "succeeded");
    assert_eq!(run["actions"][0]["idempotency_key"], a["params_hash"]);
    // Give any stray second run a chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let puts = ticket_puts(&h.sink, 31);
    assert_eq!(puts.len(), 1, "executed exactly once: {puts:?}");
    assert_eq!(
        puts[0].idempotency_key.as_deref(),
        a["params_hash"].as_str()
    );
    assert!(h.pending_approvals("gated", None).await.is_empty());

    // A replay does not execute it again.
    let (s, _) = h
        .call("POST", &format!("/api/v1/events/{id}/replay"), None, None)
        .await;
    assert_eq!(s, 200);
    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 3
        })
        .await;
    assert_eq!(last_run(&d)["actions"][0]["status"], "already_done");
    assert_eq!(ticket_puts(&h.sink, 31).len(), 1);

    let (_, audit) = h
        .call("GET", "/api/v1/audit?charter=gated", None, None)
        .await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"approval.approve"), "{actions:?}");
    assert!(actions.contains(&"approval.request"), "{actions:?}");
    assert!(actions.contains(&"event.replay"), "{actions:?}");
    let approve = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "approval.approve")
        .unwrap();
    assert_eq!(approve["actor"], "local");
    assert_eq!(approve["target"], approval_id.as_str());
    h.stop().await;
}

/// Run the futures concurrently and collect their outputs in order.
async fn futures_join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_then_approve_executes_the_edit_under_a_new_key() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let h = Harness::start(&[("charters/gated.yaml", &gated)]).await;
    let id = h.send_plain("/hooks/gated", &ticket(32, "refund")).await;
    h.wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    let a = h.pending_approvals("gated", None).await.remove(0);
    let approval_id = a["id"].as_str().unwrap();
    let url = format!("/api/v1/approvals/{approval_id}/approve");

    // Only the body may be edited: a changed target is refused and decides nothing.
    let mut bad = a["params"].clone();
    bad["target"] = json!("/api/tickets/999");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"params": bad})))
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(h.pending_approvals("gated", None).await.len(), 1);

    let mut edited = a["params"].clone();
    edited["json"]["ticket"]["group"] = json!("billing-tier2");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"params": edited})))
        .await;
    assert_eq!(s, 200, "{v}");
    let rec = &v["approval"];
    assert_eq!(rec["status"], "approved");
    assert_eq!(rec["edited_params"], edited);
    assert_eq!(rec["params"], a["params"], "the original is kept");
    let new_key = rec["edited_hash"].as_str().unwrap().to_string();
    assert_eq!(new_key.len(), 64);
    assert_ne!(new_key, a["params_hash"].as_str().unwrap(), "a new hash");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let act = &last_run(&d)["actions"][0];
    assert_eq!(act["status"], "succeeded");
    assert_eq!(act["idempotency_key"], new_key.as_str());
    assert_eq!(act["params"], edited);
    let puts = ticket_puts(&h.sink, 32);
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert_eq!(puts[0].idempotency_key.as_deref(), Some(new_key.as_str()));
    let body: Value = serde_json::from_str(&puts[0].body).unwrap();
    assert_eq!(
        body["ticket"]["group"], "billing-tier2",
        "the edit was sent"
    );

    // The correction is on the record.
    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=approval.edit", None, None)
        .await;
    let entries = audit["audit"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{audit}");
    assert_eq!(entries[0]["detail"]["edited_hash"], new_key.as_str());
    assert_eq!(entries[0]["detail"]["params_hash"], a["params_hash"]);
    assert_eq!(entries[0]["detail"]["edited_params"], edited);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_needs_a_reason_and_ends_the_run_without_executing() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let h = Harness::start(&[("charters/gated.yaml", &gated)]).await;
    let id = h.send_plain("/hooks/gated", &ticket(33, "refund")).await;
    h.wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    let a = h.pending_approvals("gated", None).await.remove(0);
    let approval_id = a["id"].as_str().unwrap();
    let url = format!("/api/v1/approvals/{approval_id}/reject");
    let (s, _) = h
        .call("POST", &url, None, Some(json!({"reason": "  "})))
        .await;
    assert_eq!(s, 400, "an empty reason is refused");
    let (s, _) = h.call("POST", &url, None, None).await;
    assert_eq!(s, 400, "a missing reason is refused");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"reason": "wrong team"})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval"]["status"], "rejected");
    assert_eq!(v["approval"]["comment"], "wrong team");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let run = last_run(&d);
    assert_eq!(run["outcome"], "rejected");
    assert_eq!(run["actions"][0]["status"], "rejected");
    assert!(
        run["error"].as_str().unwrap().contains("wrong team"),
        "{run}"
    );
    assert!(
        ticket_puts(&h.sink, 33).is_empty(),
        "a rejected action never runs"
    );

    // Once rejected it cannot be approved.
    let (s, _) = h
        .call(
            "POST",
            &format!("/api/v1/approvals/{approval_id}/approve"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 409);
    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=approval.reject", None, None)
        .await;
    assert_eq!(audit["audit"][0]["detail"]["reason"], "wrong team");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_approvals_cannot_be_approved_and_apply_on_expiry() {
    let rejecting = gated_charter(
        "expiring",
        "/hooks/expiring",
        "{ reviewers: [lead], expires: 1s, on_expiry: reject }",
    );
    let escalating = gated_charter(
        "expesc",
        "/hooks/expesc",
        "{ reviewers: [lead], expires: 1s, on_expiry: escalate }",
    );
    let h = Harness::start(&[
        ("charters/expiring.yaml", &rejecting),
        ("charters/expesc.yaml", &escalating),
    ])
    .await;
    let id = h.send_plain("/hooks/expiring", &ticket(34, "refund")).await;
    let id2 = h.send_plain("/hooks/expesc", &ticket(35, "refund")).await;
    h.wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    let a = h.pending_approvals("expiring", None).await.remove(0);
    let approval_id = a["id"].as_str().unwrap();

    // on_expiry: reject — after the deadline the run ends rejected and nothing runs.
    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    assert_eq!(last_run(&d)["outcome"], "rejected");
    assert_eq!(last_run(&d)["actions"][0]["status"], "rejected");
    let (s, v) = h
        .call(
            "POST",
            &format!("/api/v1/approvals/{approval_id}/approve"),
            None,
            None,
        )
        .await;
    assert_eq!(s, 409, "an expired approval cannot be approved: {v}");
    let (_, v) = h
        .call(
            "GET",
            "/api/v1/approvals?charter=expiring&status=expired",
            None,
            None,
        )
        .await;
    assert_eq!(v["approvals"][0]["id"], approval_id);
    assert_eq!(v["approvals"][0]["decided_by"], "system");
    assert!(ticket_puts(&h.sink, 34).is_empty());

    // on_expiry: escalate — an escalation with the approval as evidence.
    let d = h
        .wait_event(&id2, None, |d| {
            d["event"]["status"] == "waiting" && last_run(d)["outcome"] == "escalated"
        })
        .await;
    assert!(runs_len(&d) >= 2);
    let (_, v) = h
        .call("GET", "/api/v1/escalations?charter=expesc", None, None)
        .await;
    let esc = &v["escalations"][0];
    assert_eq!(esc["reason"], "approval_expired", "{v}");
    assert_eq!(esc["event_id"], id2.as_str());
    assert_eq!(esc["target"], "support-leads");
    assert_eq!(esc["detail"]["approval"]["action"], "assign_billing");
    assert!(ticket_puts(&h.sink, 35).is_empty());

    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=approval.expire", None, None)
        .await;
    assert_eq!(audit["audit"].as_array().unwrap().len(), 2, "{audit}");
    assert!(
        audit["audit"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "system")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_escalation_continues_the_run_with_the_human_decision() {
    let esc = escalating_charter("unsure", "/hooks/unsure");
    let h = Harness::start(&[("charters/unsure.yaml", &esc)]).await;
    let id = h
        .send_plain("/hooks/unsure", &ticket(36, "something odd"))
        .await;
    let d = h
        .wait_event(&id, None, |d| d["event"]["status"] == "waiting")
        .await;
    assert_eq!(last_run(&d)["outcome"], "escalated");

    let (s, v) = h
        .call("GET", "/api/v1/escalations?charter=unsure", None, None)
        .await;
    assert_eq!(s, 200);
    let list = v["escalations"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{v}");
    let e = &list[0];
    assert_eq!(e["reason"], "low_confidence");
    assert_eq!(e["status"], "open");
    assert_eq!(e["detail"]["payload"], ticket(36, "something odd"));
    assert_eq!(
        e["detail"]["stages"][0]["stage"], "rule",
        "each stage's answer"
    );
    let esc_id = e["id"].as_str().unwrap();
    let url = format!("/api/v1/escalations/{esc_id}/decide");

    let (s, _) = h
        .call("POST", &url, None, Some(json!({"label": "nonsense"})))
        .await;
    assert_eq!(s, 400, "labels outside the charter are refused");
    let (s, v) = h
        .call("POST", &url, None, Some(json!({"label": "billing"})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["escalation"]["status"], "resolved");
    let (s, _) = h
        .call("POST", &url, None, Some(json!({"label": "other"})))
        .await;
    assert_eq!(s, 409, "resolved only once");

    let d = h
        .wait_event(&id, None, |d| {
            d["event"]["status"] == "done" && runs_len(d) >= 2
        })
        .await;
    let run = last_run(&d);
    assert_eq!(run["decision"]["stage"], "human");
    assert_eq!(run["decision"]["label"], "billing");
    assert_eq!(run["outcome"], "completed");
    assert_eq!(run["actions"][0]["action"], "assign_billing");
    assert_eq!(ticket_puts(&h.sink, 36).len(), 1, "the billing route ran");

    // The human decision is a labelled example for the next training.
    let (s, v) = h
        .call("GET", "/api/v1/corrections?charter=unsure", None, None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["corrections"],
        json!([{
            "event_id": id,
            "escalation_id": esc_id,
            "text": "something odd",
            "label": "billing",
            "fields": {},
            "decided_by": "local",
            "decided_at": v["corrections"][0]["decided_at"],
        }])
    );
    let (s, _) = h
        .call("GET", "/api/v1/corrections?charter=nope", None, None)
        .await;
    assert_eq!(s, 404);
    let (_, audit) = h
        .call("GET", "/api/v1/audit?action=escalation.resolve", None, None)
        .await;
    assert_eq!(audit["audit"][0]["detail"]["label"], "billing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_lettered_actions_open_an_escalation() {
    let h = Harness::start(&[]).await;
    h.sink.fail_always(Some(500));
    let (_, v) = h
        .send_signed("github", &ticket(37, "refund"), "dl-esc")
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    let d = h.wait_final(&id).await;
    assert_eq!(d["event"]["status"], "failed");
    let (_, v) = h
        .call("GET", "/api/v1/escalations?charter=github", None, None)
        .await;
    let e = &v["escalations"][0];
    assert_eq!(e["reason"], "dead_letter", "{v}");
    assert_eq!(e["event_id"], id.as_str());
    assert_eq!(e["detail"]["action"], "assign_billing");
    assert_eq!(e["detail"]["attempts"].as_array().unwrap().len(), 4);
    assert_eq!(e["detail"]["payload"], ticket(37, "refund"));
    h.stop().await;
}

/// Open dead letters of `charter` (the API's default listing is the open ones).
async fn open_escalations(h: &Harness, charter: &str) -> Value {
    h.get(&format!("/api/v1/escalations?charter={charter}"))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_closes_when_its_event_later_succeeds_and_is_never_a_correction() {
    let h = Harness::start(&[]).await;
    h.sink.fail_always(Some(500));
    let (_, v) = h
        .send_signed("github", &ticket(41, "refund"), "dl-retry")
        .await;
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait_final(&id).await["event"]["status"], "failed");
    let open = open_escalations(&h, "github").await;
    assert_eq!(open["total"], 1, "{open}");
    let esc = open["escalations"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(open["escalations"][0]["reason"], "dead_letter");

    // A dead letter is not labelled.
    let (s, body) = h
        .api_post(
            &format!("/api/v1/escalations/{esc}/decide"),
            json!({"label": "billing"}),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("dead letter"),
        "{body}"
    );

    // Retry while the target still fails: the escalation stays open.
    let (s, body) = h
        .api_post(&format!("/api/v1/escalations/{esc}/retry"), json!({}))
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["requeued"][0], id.as_str());
    let mut detail = Value::Null;
    for _ in 0..400 {
        detail = h.get(&format!("/api/v1/events/{id}")).await;
        if detail["runs"].as_array().map_or(0, Vec::len) == 2
            && detail["event"]["status"] == "failed"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(detail["event"]["status"], "failed", "{detail}");
    assert_eq!(open_escalations(&h, "github").await["total"], 1);

    // The target recovers; the operator replays the event: it succeeds and the dead letter
    // closes by itself, without a decision.
    h.sink.fail_always(None);
    let (s, _) = h
        .api_post(&format!("/api/v1/events/{id}/replay"), json!({}))
        .await;
    assert_eq!(s, 200);
    let mut closed = Value::Null;
    for _ in 0..400 {
        closed = h.get(&format!("/api/v1/escalations/{esc}")).await;
        if closed["escalation"]["status"] == "resolved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(closed["escalation"]["status"], "resolved", "{closed}");
    assert_eq!(closed["escalation"]["resolved_by"], "system");
    assert_eq!(closed["escalation"]["resolution"], Value::Null);
    assert_eq!(
        h.get(&format!("/api/v1/events/{id}")).await["event"]["status"],
        "done"
    );
    assert_eq!(open_escalations(&h, "github").await["total"], 0);
    let corrections = h.get("/api/v1/corrections?charter=github").await;
    assert_eq!(corrections["corrections"], json!([]), "{corrections}");
    let audit = h.get("/api/v1/audit?action=escalation.close").await;
    assert_eq!(audit["total"], 1, "{audit}");
    assert_eq!(audit["audit"][0]["target"], esc.as_str());
    let retries = h.get("/api/v1/audit?action=escalation.retry").await;
    assert_eq!(retries["total"], 1, "{retries}");

    // Dismiss: another dead letter, closed with a reason; the event stays failed.
    h.sink.fail_always(Some(500));
    let (_, v) = h
        .send_signed("github", &ticket(42, "refund"), "dl-dismiss")
        .await;
    let id2 = v["id"].as_str().unwrap().to_string();
    assert_eq!(h.wait_final(&id2).await["event"]["status"], "failed");
    let open = open_escalations(&h, "github").await;
    let esc2 = open["escalations"][0]["id"].as_str().unwrap().to_string();
    let (s, _) = h
        .api_post(
            &format!("/api/v1/escalations/{esc2}/dismiss"),
            json!({"reason": "  "}),
        )
        .await;
    assert_eq!(s, 400, "a dismissal needs a reason");
    let (s, body) = h
        .api_post(
            &format!("/api/v1/escalations/{esc2}/dismiss"),
            json!({"reason": "customer refunded by hand"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["escalation"]["status"], "resolved");
    assert_eq!(body["escalation"]["resolution"], Value::Null);
    let (s, _) = h
        .api_post(
            &format!("/api/v1/escalations/{esc2}/dismiss"),
            json!({"reason": "again"}),
        )
        .await;
    assert_eq!(s, 409);
    assert_eq!(
        h.get(&format!("/api/v1/events/{id2}")).await["event"]["status"],
        "failed"
    );
    let dismissed = h.get("/api/v1/audit?action=escalation.dismiss").await;
    assert_eq!(
        dismissed["audit"][0]["detail"]["comment"],
        "customer refunded by hand"
    );
    let corrections = h.get("/api/v1/corrections?charter=github").await;
    assert_eq!(corrections["corrections"], json!([]), "{corrections}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_scopes_guard_approvals_escalations_and_audit() {
    let gated = gated_charter(
        "gated",
        "/hooks/gated",
        "{ reviewers: [lead], expires: 1h, on_expiry: reject }",
    );
    let esc = escalating_charter("unsure", "/hooks/unsure");
    let h = Harness::start_with_tokens(
        &[
            ("charters/gated.yaml", &gated),
            ("charters/unsure.yaml", &esc),
        ],
        &[
            ("admin", "admin", &[]),
            ("lead", "reviewer", &["gated", "unsure"]),
            ("rev", "reviewer", &["gated", "unsure"]),
            ("viewer", "viewer", &[]),
            ("outsider", "reviewer", &["std"]),
        ],
    )
    .await;
    let id = h.send_plain("/hooks/gated", &ticket(38, "refund")).await;
    let eid = h.send_plain("/hooks/unsure", &ticket(39, "hm")).await;
    h.wait_event(&id, Some("viewer"), |d| d["event"]["status"] == "waiting")
        .await;
    h.wait_event(&eid, Some("viewer"), |d| d["event"]["status"] == "waiting")
        .await;

    // Listing: no token or a wrong one is 401; a viewer may read; an outsider sees nothing.
    assert_eq!(h.call("GET", "/api/v1/approvals", None, None).await.0, 401);
    let (s, _) = h
        .call("GET", "/api/v1/approvals", Some("nobody"), None)
        .await;
    assert_eq!(s, 401);
    assert_eq!(h.pending_approvals("gated", Some("viewer")).await.len(), 1);
    assert!(
        h.pending_approvals("gated", Some("outsider"))
            .await
            .is_empty()
    );
    let (_, v) = h
        .call("GET", "/api/v1/approvals", Some("outsider"), None)
        .await;
    assert_eq!(v["approvals"], json!([]));
    assert_eq!(h.call("GET", "/api/v1/audit", None, None).await.0, 401);
    assert_eq!(
        h.call("GET", "/api/v1/escalations", None, None).await.0,
        401
    );

    let a = h.pending_approvals("gated", Some("admin")).await.remove(0);
    let approve = format!("/api/v1/approvals/{}/approve", a["id"].as_str().unwrap());
    let reject = format!("/api/v1/approvals/{}/reject", a["id"].as_str().unwrap());
    let why = Some(json!({"reason": "no"}));
    assert_eq!(h.call("POST", &approve, None, None).await.0, 401);
    assert_eq!(h.call("POST", &approve, Some("viewer"), None).await.0, 403);
    assert_eq!(
        h.call("POST", &reject, Some("viewer"), why.clone()).await.0,
        403
    );
    assert_eq!(
        h.call("POST", &approve, Some("outsider"), None).await.0,
        404,
        "another charter's approval does not exist for a scoped token"
    );
    assert_eq!(
        h.call("POST", &approve, Some("rev"), None).await.0,
        403,
        "a reviewer not named by the action"
    );
    assert_eq!(h.call("POST", &reject, Some("rev"), why).await.0, 403);
    let (s, _) = h
        .call(
            "POST",
            "/api/v1/approvals/not-a-uuid/approve",
            Some("lead"),
            None,
        )
        .await;
    assert_eq!(s, 404);
    let missing = format!("/api/v1/approvals/{}/approve", uuid::Uuid::now_v7());
    assert_eq!(h.call("POST", &missing, Some("lead"), None).await.0, 404);
    let (s, v) = h.call("POST", &approve, Some("lead"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["approval"]["decided_by"], "lead");
    h.wait_event(&id, Some("admin"), |d| d["event"]["status"] == "done")
        .await;
    assert_eq!(ticket_puts(&h.sink, 38).len(), 1);

    // Escalations: viewers cannot decide; outsiders get 404; a scoped reviewer can.
    let (_, v) = h
        .call("GET", "/api/v1/escalations", Some("viewer"), None)
        .await;
    let e = v["escalations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event_id"] == eid.as_str())
        .unwrap()
        .clone();
    let decide = format!("/api/v1/escalations/{}/decide", e["id"].as_str().unwrap());
    let label = Some(json!({"label": "other"}));
    assert_eq!(h.call("POST", &decide, None, label.clone()).await.0, 401);
    assert_eq!(
        h.call("POST", &decide, Some("viewer"), label.clone())
            .await
            .0,
        403
    );
    assert_eq!(
        h.call("POST", &decide, Some("outsider"), label.clone())
            .await
            .0,
        404
    );
    let (_, v) = h
        .call("GET", "/api/v1/escalations", Some("outsider"), None)
        .await;
    assert_eq!(v["escalations"], json!([]));
    assert_eq!(h.call("POST", &decide, Some("rev"), label).await.0, 200);

    // Pause/resume are admin-only and audited with the token's name.
    assert_eq!(
        h.call("POST", "/api/v1/charters/gated/pause", Some("lead"), None)
            .await
            .0,
        403
    );
    assert_eq!(
        h.call("POST", "/api/v1/charters/gated/pause", Some("admin"), None)
            .await
            .0,
        200
    );
    assert_eq!(
        h.call("POST", "/api/v1/charters/gated/resume", Some("admin"), None)
            .await
            .0,
        200
    );
    let (s, v) = h.call("GET", "/api/v1/audit", Some("viewer"), None).await;
    assert_eq!(s, 200);
    let entries = v["audit"].as_array().unwrap();
    let who = |action: &str| -> Vec<String> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| e["actor"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(who("approval.approve"), vec!["lead"]);
    assert_eq!(who("escalation.resolve"), vec!["rev"]);
    assert_eq!(who("charter.pause"), vec!["admin"]);
    assert_eq!(who("charter.resume"), vec!["admin"]);
    // Newest first.
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");
    // A scoped token sees only its charters' entries.
    let (_, v) = h.call("GET", "/api/v1/audit", Some("outsider"), None).await;
    assert_eq!(v["audit"], json!([]));
    h.stop().await;
}

/// A fake OpenAI-compatible model on 127.0.0.1:0 for the cascade test: answers by what the
/// request contains, and records every request body.
async fn fake_llm(shutdown: CancellationToken) -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::extract::State;
    type Seen = Arc<std::sync::Mutex<Vec<Value>>>;
    async fn chat(
        State(seen): State<Seen>,
        headers: axum::http::HeaderMap,
        axum::Json(body): axum::Json<Value>,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        seen.lock().unwrap().push(body.clone());
        if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer llm-key") {
            return (axum::http::StatusCode::UNAUTHORIZED, "bad key").into_response();
        }
        let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
        let content = if prompt.contains("sure-thing") {
            json!({"label": "bug", "confidence": 0.92, "fields": {}, "reason": "crash"}).to_string()
        } else if prompt.contains("shrug") {
            json!({"label": "other", "confidence": 0.3, "fields": {}, "reason": "unclear"})
                .to_string()
        } else {
            "I cannot answer in JSON, sorry.".to_string()
        };
        axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20},
        }))
        .into_response()
    }
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    (format!("http://{addr}/v1"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cascade_rules_then_embedded_then_llm_then_escalation() {
    let text = charter_yaml("cascade", "live", "none", "/hooks/cascade", "text: \"{{ payload.ticket.subject }}\"")
        .replace(
            "  labels: [billing, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.contains(\"refund\")', label: billing }\n  otherwise: other\n",
            "  labels: [billing, bug, shipping, other]\n  stages:\n    - rules:\n        - { when: 'payload.ticket.subject.startsWith(\"VIP\")', label: other }\n    - embedded: { examples: data/examples.csv, accept_above: 0.6 }\n    - llm: { provider: local, prompt: prompts/triage.md, accept_above: 0.7, redact: [email] }\n  otherwise: escalate\n",
        );
    assert!(text.contains("llm:"), "the charter text was rewritten");
    let dir = std::env::temp_dir().join(format!("charter-it-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    let (llm_url, seen) = fake_llm(shutdown.clone()).await;
    project(
        &dir,
        &format!("http://{sink_addr}"),
        &[
            ("charters/cascade.yaml", &text),
            ("data/examples.csv", &examples_csv()),
            (
                "prompts/triage.md",
                "Classify the ticket from {{ payload.email }} into one of {{ labels | join(', ') }}.\n{{ text }}",
            ),
            ("secrets/llm", "llm-key"),
        ],
    );
    let mut yaml = std::fs::read_to_string(dir.join("charter.yaml")).unwrap();
    yaml.push_str(&format!(
        "providers:\n  local:\n    type: openai\n    base_url: {llm_url}\n    api_key: file:secrets/llm\n    model: tiny-test\n    timeout: 5s\n    max_retries: 0\n    allow_private: true\n    price: {{ input_per_mtok: 1, output_per_mtok: 2 }}\n"
    ));
    write(&dir, "charter.yaml", &yaml);
    let h = Harness::boot(dir, sink, shutdown).await;

    let send = |subject: &str| {
        let mut body = ticket(1, subject);
        body["email"] = json!("ann@example.test");
        let body = serde_json::to_vec(&body).unwrap();
        let h = &h;
        async move {
            h.post("/hooks/cascade", body, vec![]).await.1["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let by_rule = send("VIP customer: package lost").await;
    let by_model = send("my parcel is late and the tracking number does not work").await;
    let by_llm = send("zxqv wibble sure-thing").await;
    let unsure = send("zxqv wibble shrug").await;
    let invalid = send("zxqv wibble frobnicate").await;

    let stages_of = |dec: &Value| -> Vec<String> {
        dec["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap().to_string())
            .collect()
    };

    let d = h.wait_final(&by_rule).await;
    assert_eq!(d["runs"][0]["decision"]["stage"], "rule");
    assert_eq!(stages_of(&d["runs"][0]["decision"]), vec!["rule"]);

    let d = h.wait_final(&by_model).await;
    let dec = &d["runs"][0]["decision"];
    assert_eq!(dec["stage"], "embedded", "{dec}");
    assert_eq!(dec["label"], "shipping");
    assert_eq!(
        stages_of(dec),
        vec!["rule", "embedded"],
        "the LLM is not asked"
    );

    let d = h.wait_final(&by_llm).await;
    let dec = &d["runs"][0]["decision"];
    assert_eq!(d["event"]["status"], "done", "{d}");
    assert_eq!(dec["stage"], "llm", "{dec}");
    assert_eq!(dec["label"], "bug");
    assert_eq!(dec["confidence"], 0.92);
    assert_eq!(stages_of(dec), vec!["rule", "embedded", "llm"]);
    assert_eq!(
        dec["stages"][1]["accepted"], false,
        "the embedded stage abstained"
    );
    let note = dec["stages"][2]["note"].as_str().unwrap();
    assert!(note.contains("llm local (tiny-test)"), "{note}");
    assert!(
        note.contains("100 prompt + 20 completion tokens"),
        "usage is recorded: {note}"
    );
    assert!(
        note.contains("cost 0.000140"),
        "cost from the price: {note}"
    );

    let d = h.wait_final(&unsure).await;
    assert_eq!(
        d["event"]["status"], "waiting",
        "below the LLM threshold goes to a human"
    );
    assert_eq!(d["runs"][0]["outcome"], "escalated");
    let dec = &d["runs"][0]["decision"];
    assert!(dec["label"].is_null());
    assert_eq!(
        dec["stage"], "none",
        "no stage decided and no human has acted yet"
    );
    let llm = &dec["stages"][2];
    assert_eq!(llm["stage"], "llm");
    assert_eq!(llm["accepted"], false);
    assert_eq!(llm["confidence"], 0.3);

    let d = h.wait_final(&invalid).await;
    assert_eq!(d["event"]["status"], "waiting");
    let dec = &d["runs"][0]["decision"];
    let reason = dec["reason"].as_str().unwrap();
    assert!(
        reason.contains("invalid model output after one repair attempt"),
        "{reason}"
    );

    // What left the machine: the model, the schema, the delimited text, no e-mail address.
    let bodies = seen.lock().unwrap().clone();
    assert_eq!(
        bodies.len(),
        4,
        "one call each for sure/shrug, two (repair) for the invalid one"
    );
    for b in &bodies {
        assert_eq!(b["model"], "tiny-test");
        assert_eq!(
            b["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"],
            json!(["billing", "bug", "shipping", "other"])
        );
        let s = b.to_string();
        assert!(!s.contains("ann@example.test"), "redacted: {s}");
        assert!(
            !s.contains("package lost") && !s.contains("parcel"),
            "decided earlier: {s}"
        );
    }
    let user = bodies[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        user.starts_with("Classify the ticket from [redacted] into one of billing, bug"),
        "{user}"
    );
    assert!(user.contains("<untrusted_input>\nzxqv wibble"), "{user}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_payload_is_replayed_after_the_contract_is_fixed() {
    let h = Harness::start(&[]).await;
    // `subject` missing: the contract rejects it and keeps it.
    let (status, v) = h
        .send_signed("github", &json!({"ticket": {"id": 41}}), "rj")
        .await;
    assert_eq!(status, 422);
    let rejected_id = v["rejected_id"].as_str().unwrap().to_string();
    // Replaying under the same contract still fails, and keeps the payload.
    let (s, body) = h
        .api_post(&format!("/api/v1/rejected/{rejected_id}/replay"), json!({}))
        .await;
    assert_eq!(s, 422, "{body}");
    assert_eq!(
        h.get("/api/v1/rejected?charter=github").await["rejected"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Fix the contract (subject no longer required) and restart on the same folder and store.
    let (dir, sink) = h.stop_keep().await;
    write(
        &dir,
        "schemas/ticket.json",
        r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}}}"#,
    );
    let h = Harness::boot(dir, sink, CancellationToken::new()).await;
    let (s, body) = h
        .api_post(&format!("/api/v1/rejected/{rejected_id}/replay"), json!({}))
        .await;
    assert_eq!(s, 202, "{body}");
    let detail = h.wait_final(body["id"].as_str().unwrap()).await;
    assert_eq!(detail["event"]["status"], "done");
    assert_eq!(
        detail["event"]["source"],
        format!("replay:rejected:{rejected_id}")
    );
    assert!(
        h.get("/api/v1/rejected?charter=github").await["rejected"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    h.stop().await;
}

/// `trigger.events` takes only the listed event types: a GitHub delivery of another type and
/// GitHub's `ping` are answered 200 and stored nowhere, counted by reason.
#[tokio::test]
async fn a_trigger_takes_only_its_event_types_and_answers_ping() {
    let h = Harness::start(&[(
        "charters/gh.yaml",
        &charter_yaml(
            "gh",
            "live",
            "{ preset: github, secret: file:secrets/hook }",
            "/hooks/gh",
            "events: [issues, \"pull_request*\"]",
        ),
    )])
    .await;
    let (spec, path) = h.spec("gh");
    let send = |event: &'static str, delivery: &'static str, id: i64| {
        let raw = serde_json::to_vec(&ticket(id, "refund")).unwrap();
        let mut headers = verify::sign(&spec, SECRET, &raw, now_secs(), delivery).unwrap();
        headers.push(("x-github-event".into(), event.into()));
        h.post(&path, raw, headers)
    };
    let (status, v) = send("issues", "d1", 1).await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = send("pull_request_review", "d2", 2).await;
    assert_eq!(status, 202, "{v}");
    let (status, v) = send("push", "d3", 3).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ignored"], true);
    assert_eq!(v["event_type"], "push");
    let (status, v) = send("ping", "d4", 4).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["ping"], true);
    let stored: Vec<String> = h
        .events("gh")
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(
        stored.contains(&"issues".to_string())
            && stored.contains(&"pull_request_review".to_string())
    );
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
        metrics.contains("charter_events_ignored_total{charter=\"gh\",reason=\"event_type\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("charter_events_ignored_total{charter=\"gh\",reason=\"ping\"} 1"));
    h.stop().await;
}

/// Stripe and the Slack Events API send no delivery-id header but repeat the delivery's id
/// in the body (`id`, `event_id`): without a `dedupe:` in the charter, a signed redelivery
/// with the same body id is answered as a duplicate of the first, and another id is new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stripe_or_slack_redelivery_is_a_duplicate_without_dedupe() {
    let h = Harness::start(&[]).await;
    for (charter, field, id, other) in [
        (
            "stripe",
            "id",
            "evt_1QxY2bLkdIwHu7ix",
            "evt_1QxY2bLkdIwHu7iy",
        ),
        ("slack", "event_id", "Ev08MFMKH6J9", "Ev08MFMKH6JA"),
    ] {
        let mut body = ticket(11, "refund please");
        body[field] = json!(id);
        let (status, first) = h.send_signed(charter, &body, "d1").await;
        assert_eq!(status, 202, "{charter}: {first}");
        // The provider retries the same delivery, signed again (a later timestamp).
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, again) = h.send_signed(charter, &body, "d2").await;
        assert_eq!(status, 200, "{charter}: the redelivery: {again}");
        assert_eq!(again["status"], "duplicate", "{charter}: {again}");
        assert_eq!(again["id"], first["id"], "{charter}: {again}");
        let mut next = body.clone();
        next[field] = json!(other);
        let (status, new) = h.send_signed(charter, &next, "d3").await;
        assert_eq!(status, 202, "{charter}: another delivery id: {new}");
        assert_ne!(new["id"], first["id"]);
        let stored = h.events(charter).await;
        assert_eq!(stored.len(), 2, "{charter}: {stored:?}");
        let ev = h
            .get(&format!("/api/v1/events/{}", first["id"].as_str().unwrap()))
            .await;
        assert_eq!(ev["event"]["dedupe_key"], id, "{charter}: {ev}");
    }
    h.stop().await;
}
