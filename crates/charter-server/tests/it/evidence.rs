//! Evidence: Prometheus metrics after a known set of events, per-charter reports, alert
//! incidents delivered through a connector, trace context on outbound calls, health.
//!
//! The server runs in-process on 127.0.0.1:0 with a real SQLite file; the downstream system
//! is the scripted [`Sink`]; alert webhooks and trace headers are caught by a small local
//! capture server.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_testkit::sink::Sink;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Requests caught by the capture server: (path, headers, JSON body).
type Caught = Arc<Mutex<Vec<(String, HeaderMap, Value)>>>;

struct Harness {
    dir: PathBuf,
    base: String,
    sink: Sink,
    caught: Caught,
    shutdown: CancellationToken,
    store: SqliteStore,
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

/// A local server that records every request and answers 200.
async fn capture(shutdown: CancellationToken) -> (String, Caught) {
    let caught: Caught = Arc::default();
    let c = caught.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let c = c.clone();
            async move {
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                c.lock().unwrap().push((uri.path().to_string(), headers, v));
                // What Slack's Web API answers a delivered message (HTTP receivers ignore it).
                axum::Json(json!({"ok": true}))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    (format!("http://{addr}"), caught)
}

/// A live charter: "refund" tickets are billing (a rule) and get an HTTP action to the
/// helpdesk that records `ticket_routed`; everything else is `other` (the default); every
/// ticket gets a log action.
fn charter_yaml(name: &str, path: &str, retry_attempts: u32, alerts: &str) -> String {
    format!(
        r#"
name: {name}
description: evidence test charter
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk, capture]
trigger:
  webhook:
    path: {path}
    verify: none
  input_schema: schemas/ticket.json
  dedupe: "{{{{ payload.ticket.id }}}}"
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
      json: {{ group: billing }}
    approval: auto
    retry: {{ attempts: {retry_attempts}, backoff: 20ms, max_backoff: 50ms }}
    measure: ticket_routed
  note:
    log: "ticket {{{{ payload.ticket.id }}}} is {{{{ decision.label }}}}"
    approval: auto
escalation: {{ to: support-leads }}
measure:
  success: [ticket_routed]
{alerts}
"#
    )
}

impl Harness {
    async fn start(charters: &[(&str, String)], alert_interval: &str) -> Harness {
        charter_connect::install_crypto_provider();
        let dir =
            std::env::temp_dir().join(format!("charter-ev-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await
            .unwrap();
        let (capture_url, caught) = capture(shutdown.clone()).await;
        write(
            &dir,
            "charter.yaml",
            &format!(
                r#"
worker:
  lease: 2s
  poll_interval: 50ms
  concurrency: 8
  shutdown_grace: 2s
  alert_interval: {alert_interval}
connectors:
  helpdesk:
    type: http
    base_url: http://{sink_addr}
    timeout: 2s
    allow_private: true
  capture:
    type: http
    base_url: {capture_url}
    timeout: 2s
    allow_private: true
  ops-slack:
    type: slack
    token: file:secrets/slack-bot
    base_url: {capture_url}/slack-api
    allow_private: true
"#
            ),
        );
        write(&dir, "secrets/slack-bot", "xoxb-alerts-test");
        write(
            &dir,
            "schemas/ticket.json",
            r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id","subject"]}}}"#,
        );
        for (name, text) in charters {
            write(&dir, &format!("charters/{name}.yaml"), text);
        }
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
            base: format!("http://{}", running.addr),
            dir,
            sink,
            caught,
            shutdown,
            store,
            client: reqwest::Client::new(),
            done: Some(running.done),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn get_json(&self, path: &str) -> Value {
        serde_json::from_str(&self.get(path).await.1).unwrap()
    }

    /// Send a ticket; return the event id.
    async fn send(&self, path: &str, id: i64, subject: &str) -> String {
        let (s, v) = self
            .post(path, &json!({"ticket": {"id": id, "subject": subject}}))
            .await;
        assert_eq!(s, 202, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    async fn wait_final(&self, id: &str) -> Value {
        for _ in 0..800 {
            let v = self.get_json(&format!("/api/v1/events/{id}")).await;
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

    async fn metrics(&self) -> String {
        let (s, text) = self.get("/metrics").await;
        assert_eq!(s, 200);
        text
    }

    fn caught(&self) -> Vec<(String, HeaderMap, Value)> {
        self.caught.lock().unwrap().clone()
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(d) = self.done.take() {
            d.await.unwrap();
        }
        self.store.close().await;
    }
}

/// The value of the sample `line_prefix` (metric name with labels) in Prometheus text.
fn sample(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn expect(text: &str, line_prefix: &str, want: f64) {
    assert_eq!(
        sample(text, line_prefix),
        Some(want),
        "{line_prefix} in:\n{text}"
    );
}

/// Five stored events (three billing, two other), one duplicate, one contract violation:
/// every counter and histogram count matches exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_set_of_events_match_exactly() {
    let h = Harness::start(&[("m", charter_yaml("m", "/hooks/m", 3, ""))], "1h").await;
    let mut ids = Vec::new();
    for (id, subject) in [
        (1, "refund please"),
        (2, "refund now"),
        (3, "hello"),
        (4, "refund again"),
        (5, "question"),
    ] {
        ids.push(h.send("/hooks/m", id, subject).await);
    }
    // A duplicate of ticket 1 and a payload that breaks the contract.
    let (s, v) = h
        .post(
            "/hooks/m",
            &json!({"ticket": {"id": 1, "subject": "refund please"}}),
        )
        .await;
    assert_eq!((s, v["status"].as_str()), (200, Some("duplicate")));
    let (s, _) = h.post("/hooks/m", &json!({"nope": true})).await;
    assert_eq!(s, 422);
    for id in &ids {
        assert_eq!(h.wait_final(id).await["event"]["status"], "done");
    }

    let m = h.metrics().await;
    expect(&m, "charter_events_received_total{charter=\"m\"}", 5.0);
    expect(&m, "charter_events_duplicate_total{charter=\"m\"}", 1.0);
    expect(
        &m,
        "charter_events_rejected_total{reason=\"contract\"}",
        1.0,
    );
    expect(
        &m,
        "charter_runs_total{charter=\"m\",outcome=\"completed\"}",
        5.0,
    );
    expect(
        &m,
        "charter_decisions_total{charter=\"m\",stage=\"rule\"}",
        3.0,
    );
    expect(
        &m,
        "charter_decisions_total{charter=\"m\",stage=\"default\"}",
        2.0,
    );
    expect(
        &m,
        "charter_action_attempts_total{charter=\"m\",action=\"assign_billing\",connector=\"helpdesk\",result=\"succeeded\"}",
        3.0,
    );
    expect(
        &m,
        "charter_action_attempts_total{charter=\"m\",action=\"note\",connector=\"log\",result=\"succeeded\"}",
        5.0,
    );
    expect(
        &m,
        "charter_measurements_total{charter=\"m\",name=\"ticket_routed\"}",
        3.0,
    );
    // Histograms: one ack per accepted delivery (five stored + one duplicate).
    expect(&m, "charter_ack_latency_seconds_count", 6.0);
    expect(&m, "charter_ack_latency_seconds_bucket{le=\"+Inf\"}", 6.0);
    expect(&m, "charter_cycle_time_seconds_count{charter=\"m\"}", 5.0);
    expect(
        &m,
        "charter_decision_latency_seconds_count{stage=\"rule\"}",
        3.0,
    );
    expect(
        &m,
        "charter_decision_latency_seconds_count{stage=\"default\"}",
        2.0,
    );
    expect(
        &m,
        "charter_action_latency_seconds_count{connector=\"helpdesk\"}",
        3.0,
    );
    expect(
        &m,
        "charter_action_latency_seconds_bucket{connector=\"helpdesk\",le=\"+Inf\"}",
        3.0,
    );
    // Buckets are cumulative: never decreasing, ending at the count.
    let buckets: Vec<f64> = m
        .lines()
        .filter(|l| l.starts_with("charter_cycle_time_seconds_bucket{charter=\"m\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 16);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&5.0));
    for name in [
        "charter_events_received_total",
        "charter_runs_total",
        "charter_ack_latency_seconds",
    ] {
        assert_eq!(
            m.matches(&format!("# TYPE {name} ")).count(),
            1,
            "one TYPE line for {name}"
        );
    }
    // Nothing waits, so no queue gauge for the charter.
    assert_eq!(sample(&m, "charter_queue_depth{charter=\"m\"}"), None);

    // Paused: the next event waits in the queue and the gauges show it.
    let (s, _) = h.post("/api/v1/charters/m/pause", &json!({})).await;
    assert_eq!(s, 200);
    h.send("/hooks/m", 6, "later").await;
    let m = h.metrics().await;
    expect(&m, "charter_queue_depth{charter=\"m\"}", 1.0);
    let age = sample(&m, "charter_queue_oldest_age_seconds{charter=\"m\"}").unwrap();
    assert!((0.0..60.0).contains(&age), "{age}");
    expect(&m, "charter_events_received_total{charter=\"m\"}", 6.0);
    h.stop().await;
}

/// The report endpoint counts a known set of runs: outcomes, cycle times, named
/// measurements, rejected payloads, dead letters, escalations and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_numbers_match_a_known_set_of_runs() {
    let h = Harness::start(&[("r", charter_yaml("r", "/hooks/r", 1, ""))], "1h").await;
    let mut ok = Vec::new();
    for (id, subject) in [(1, "refund"), (2, "refund"), (3, "hi")] {
        ok.push(h.send("/hooks/r", id, subject).await);
    }
    for id in &ok {
        assert_eq!(h.wait_final(id).await["event"]["status"], "done");
    }
    // One billing ticket whose action fails once (one attempt allowed): dead-lettered.
    h.sink.fail_always(Some(500));
    let failed = h.send("/hooks/r", 4, "refund").await;
    assert_eq!(h.wait_final(&failed).await["event"]["status"], "failed");
    h.sink.fail_always(None);
    let (s, _) = h.post("/hooks/r", &json!({"bad": 1})).await;
    assert_eq!(s, 422);
    // Replay the failed event: it completes now.
    let (s, _) = h
        .post(&format!("/api/v1/events/{failed}/replay"), &json!({}))
        .await;
    assert_eq!(s, 200);
    for _ in 0..400 {
        let v = h.get_json(&format!("/api/v1/events/{failed}")).await;
        if v["event"]["status"] == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let v = h
        .get_json("/api/v1/charters/r/report?since=1h&buckets=6")
        .await;
    let r = &v["report"];
    assert_eq!(r["events_received"], 4, "{v}");
    assert_eq!(r["rejected_payloads"], 1, "{v}");
    assert_eq!(r["outcomes"]["completed"], 4, "{v}");
    assert_eq!(r["outcomes"]["failed"], 1, "{v}");
    assert_eq!(r["dead_letters"], 1, "{v}");
    assert_eq!(r["escalations"]["by_reason"]["dead_letter"], 1, "{v}");
    assert_eq!(r["replays"], 1, "{v}");
    assert_eq!(r["measurements"]["ticket_routed"]["count"], 3, "{v}");
    assert_eq!(v["measures"]["ticket_routed"], 3, "{v}");
    assert_eq!(r["cycle"]["count"], 4, "{v}");
    assert!(r["cycle"]["p50_ms"].as_i64().unwrap() <= r["cycle"]["max_ms"].as_i64().unwrap());
    assert_eq!(r["buckets"].as_array().unwrap().len(), 6);
    let received: u64 = r["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["received"].as_u64().unwrap())
        .sum();
    assert_eq!(received, 4);
    assert_eq!(v["rates"]["error_rate"], 0.2, "{v}");
    assert_eq!(v["rates"]["escalation_rate"], 0.2, "{v}");
    let (s, _) = h.get("/api/v1/charters/nope/report").await;
    assert_eq!(s, 404);
    let (s, _) = h.get("/api/v1/charters/r/report?since=soon").await;
    assert_eq!(s, 400);
    h.stop().await;
}

/// A downstream that fails every call trips the error-rate alert once; when it recovers and
/// the failures leave the window, one resolved message follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_rate_alert_fires_once_and_resolves_once() {
    let alerts = "alerts:\n  - error_rate: { above: 50%, window: 2s, notify: capture:/alerts }\n";
    let h = Harness::start(&[("a", charter_yaml("a", "/hooks/a", 1, alerts))], "200ms").await;
    h.sink.fail_always(Some(500));
    for id in 1..=3 {
        let e = h.send("/hooks/a", id, "refund").await;
        assert_eq!(h.wait_final(&e).await["event"]["status"], "failed");
    }
    let alert_posts = |h: &Harness| -> Vec<Value> {
        h.caught()
            .into_iter()
            .filter(|(p, _, _)| p == "/alerts")
            .map(|(_, _, v)| v)
            .collect()
    };
    for _ in 0..100 {
        if !alert_posts(&h).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More failures while it fires: still one message.
    let e = h.send("/hooks/a", 4, "refund").await;
    h.wait_final(&e).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let posts = alert_posts(&h);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let firing = &posts[0];
    assert_eq!(firing["state"], "firing");
    assert_eq!(firing["charter"], "a");
    assert_eq!(firing["alert"], "error_rate");
    assert!(
        firing["text"].as_str().unwrap().contains("[FIRING]"),
        "{firing}"
    );
    let m = h.metrics().await;
    expect(
        &m,
        "charter_alerts_firing{charter=\"a\",alert=\"error_rate\"}",
        1.0,
    );

    // Recovery: the downstream answers again; the failures age out of the 2 s window.
    h.sink.fail_always(None);
    for id in 5..=6 {
        let e = h.send("/hooks/a", id, "refund").await;
        assert_eq!(h.wait_final(&e).await["event"]["status"], "done");
    }
    for _ in 0..200 {
        if alert_posts(&h).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let posts = alert_posts(&h);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[1]["state"], "resolved");
    assert_eq!(posts[1]["incident"], firing["incident"]);
    assert!(posts[1]["text"].as_str().unwrap().contains("[RESOLVED]"));
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "charter_alerts_firing{charter=\"a\",alert=\"error_rate\"}"
        ),
        None
    );
    expect(
        &m,
        "charter_alert_notifications_total{charter=\"a\",alert=\"error_rate\",state=\"firing\",result=\"sent\"}",
        1.0,
    );
    h.stop().await;
}

/// A `stuck` alert posted to a Slack channel through a bot token: once when the work waits
/// too long (the charter is paused), once more when it cleared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_alert_reaches_slack_once_and_resolves_once() {
    let alerts = "alerts:\n  - stuck: { older_than: 1s, notify: ops-slack:#ops-alerts }\n";
    let h = Harness::start(&[("s", charter_yaml("s", "/hooks/s", 1, alerts))], "200ms").await;
    let (status, _) = h.post("/api/v1/charters/s/pause", &json!({})).await;
    assert_eq!(status, 200);
    let e = h.send("/hooks/s", 1, "hello").await;
    let slack_posts = |h: &Harness| -> Vec<(HeaderMap, Value)> {
        h.caught()
            .into_iter()
            .filter(|(p, _, _)| p == "/slack-api/chat.postMessage")
            .map(|(_, headers, v)| (headers, v))
            .collect()
    };
    for _ in 0..200 {
        if !slack_posts(&h).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still stuck over several more ticks: one message.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let posts = slack_posts(&h);
    assert_eq!(posts.len(), 1, "{posts:?}");
    let (headers, firing) = &posts[0];
    assert_eq!(
        headers.get("authorization").and_then(|v| v.to_str().ok()),
        Some("Bearer xoxb-alerts-test")
    );
    assert_eq!(firing["channel"], "#ops-alerts");
    let text = firing["text"].as_str().unwrap();
    assert!(text.starts_with("[FIRING] s: alert `stuck`"), "{text}");

    // Resumed: the event is processed, nothing is older than the limit any more.
    let (status, _) = h.post("/api/v1/charters/s/resume", &json!({})).await;
    assert_eq!(status, 200);
    assert_eq!(h.wait_final(&e).await["event"]["status"], "done");
    for _ in 0..200 {
        if slack_posts(&h).len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    let posts = slack_posts(&h);
    assert_eq!(posts.len(), 2, "{posts:?}");
    assert_eq!(posts[1].1["channel"], "#ops-alerts");
    assert!(
        posts[1].1["text"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED] s: alert `stuck` cleared"),
        "{:?}",
        posts[1].1
    );
    h.stop().await;
}

/// Outbound calls carry a W3C traceparent whose trace id is the run id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_calls_carry_the_runs_traceparent() {
    let text =
        charter_yaml("t", "/hooks/t", 1, "").replace("connector: helpdesk", "connector: capture");
    let h = Harness::start(&[("t", text)], "1h").await;
    let id = h.send("/hooks/t", 1, "refund").await;
    let detail = h.wait_final(&id).await;
    assert_eq!(detail["event"]["status"], "done", "{detail}");
    let run = detail["runs"][0]["id"].as_str().unwrap().replace('-', "");
    let caught = h.caught();
    assert_eq!(caught.len(), 1);
    let tp = caught[0].1["traceparent"].to_str().unwrap().to_string();
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", run.as_str(), "01"),
        "{tp}"
    );
    h.stop().await;
}

/// /healthz answers while the process is up; /readyz checks the store and its schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness() {
    let h = Harness::start(&[("m", charter_yaml("m", "/hooks/m", 1, ""))], "1h").await;
    assert_eq!(h.get("/healthz").await.0, 200);
    let (s, body) = h.get("/readyz").await;
    assert_eq!(s, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(
        v["schema_version"],
        charter_store::sqlite::SCHEMA_VERSION,
        "{v}"
    );
    // A closed store is not ready.
    h.store.close().await;
    let (s, body) = h.get("/readyz").await;
    assert_eq!(s, 503, "{body}");
    h.stop().await;
}

/// `worker.retention`: the scheduled purge removes finished work older than the setting
/// (events and rejected payloads), keeps recent work, audits what it removed, and stops on
/// shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_old_finished_work_on_schedule_and_audits_it() {
    use charter_core::model::{EventStatus, NewEvent, RejectedPayload};
    use charter_store::{AuditFilter, AuditStore, EventStore, IngestOutcome, QueueStore};

    let dir = std::env::temp_dir().join(format!(
        "charter-retention-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(dir.join("charters")).unwrap();
    std::fs::write(dir.join("charter.yaml"), "worker:\n  retention: 1h\n").unwrap();
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let keep = runtime.project.settings.worker.retention.unwrap();
    assert_eq!(keep, Duration::from_secs(3600));
    let store = SqliteStore::open(&runtime.store_path()).unwrap();
    let state = charter_server::AppState::new(
        runtime,
        store.clone(),
        Arc::new(charter_connect::HttpExecutor::new().unwrap()),
    );
    let now = charter_server::now_millis();
    // An event received at `at` (its id is the UUIDv7 of that moment, as ingest makes it),
    // run to `done`.
    let finished = |at: i64| {
        let store = store.clone();
        async move {
            let ms = u64::try_from(at).unwrap();
            let ts = uuid::Timestamp::from_unix(
                uuid::NoContext,
                ms / 1000,
                u32::try_from(ms % 1000).unwrap() * 1_000_000,
            );
            let ev = NewEvent {
                id: uuid::Uuid::new_v7(ts),
                charter: "kept-or-not".into(),
                source: "test".into(),
                event_type: None,
                dedupe_key: None,
                received_at: at,
                headers: Default::default(),
                payload: json!({"n": 1}),
            };
            assert!(matches!(
                store.ingest(ev.clone()).await.unwrap(),
                IngestOutcome::Stored(_)
            ));
            let claimed = store
                .claim("kept-or-not", "w", 1, 1, Duration::from_secs(60), now)
                .await
                .unwrap();
            assert_eq!(claimed.len(), 1);
            assert!(
                store
                    .release(ev.id, "w", EventStatus::Done, now)
                    .await
                    .unwrap()
            );
            ev.id
        }
    };
    let old = finished(now - 2 * 3_600_000).await;
    let recent = finished(now - 60_000).await;
    store
        .reject(RejectedPayload {
            id: uuid::Uuid::now_v7(),
            charter: "kept-or-not".into(),
            source: "test".into(),
            received_at: now - 2 * 3_600_000,
            headers: Default::default(),
            body: "{".into(),
            reasons: vec!["not JSON".into()],
        })
        .await
        .unwrap();

    let purged = charter_server::retention::purge_once(&state, keep)
        .await
        .unwrap();
    assert_eq!((purged.events, purged.rejected), (1, 1), "{purged:?}");
    assert!(store.get_event(old).await.unwrap().is_none());
    assert!(store.get_event(recent).await.unwrap().is_some());
    let audited = |store: SqliteStore| async move {
        store
            .list_audit(AuditFilter {
                action: Some("store.purge".into()),
                ..AuditFilter::default()
            })
            .await
            .unwrap()
    };
    let entries = audited(store.clone()).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].actor, "system");
    assert_eq!(entries[0].detail["events"], 1);
    assert_eq!(entries[0].detail["rejected"], 1);
    // Nothing more to purge: nothing purged, nothing audited.
    let again = charter_server::retention::purge_once(&state, keep)
        .await
        .unwrap();
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(audited(store.clone()).await.len(), 1);

    // The scheduled loop purges on its tick and ends on shutdown.
    let older = finished(now - 3 * 3_600_000).await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(charter_server::retention::run(
        state.clone(),
        keep,
        Duration::from_millis(50),
        shutdown.clone(),
    ));
    let mut gone = false;
    for _ in 0..100 {
        if store.get_event(older).await.unwrap().is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the scheduled purge did not run");
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the retention task ended on shutdown")
        .unwrap();
    assert!(store.get_event(recent).await.unwrap().is_some());
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
