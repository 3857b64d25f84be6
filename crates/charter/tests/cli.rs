#![allow(clippy::unwrap_used)]
//! End-to-end tests of the `charter` binary: check, init, demo, and the crash test (a child
//! `charter serve` killed with SIGKILL under load, then restarted).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use charter_server::sink::{Scripted, Sink};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[path = "../../../tests/tools.rs"]
mod tools;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_charter")
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "charter-cli-{tag}-{}",
        uuid::Uuid::now_v7().simple()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

#[test]
fn init_creates_a_project_that_checks_clean() {
    let dir = temp_dir("init");
    let proj = dir.join("proj");
    let out = Command::new(bin()).arg("init").arg(&proj).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(proj.join("charter.yaml").exists());
    let out = Command::new(bin())
        .arg("check")
        .arg(&proj)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stdout: {} stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A second init refuses to overwrite.
    let again = Command::new(bin()).arg("init").arg(&proj).output().unwrap();
    assert_eq!(again.status.code(), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` warns (and still succeeds) about a webhook charter that can recognise no
/// redelivery: no `dedupe:` and a scheme without a delivery id; a Stripe charter (body `id`)
/// and one with `dedupe:` draw no warning.
#[test]
fn check_warns_about_a_webhook_charter_without_a_delivery_id() {
    let dir = temp_dir("dedupe-warn");
    write(
        &dir,
        "charter.yaml",
        "connectors:\n  crm:\n    type: http\n    base_url: http://127.0.0.1:9\n    allow_private: true\n",
    );
    write(&dir, "secrets/hook", "s3cret");
    let charter_file = |name: &str, verify: &str, dedupe: &str| {
        format!(
            "name: {name}\ndescription: d\nowner: o@example.test\nmaintainer: m@example.test\nsystem_of_record: crm\nmode: shadow\nuses: [crm]\ntrigger:\n  webhook: {{ path: /hooks/{name}, verify: {verify} }}\n{dedupe}routes:\n  - when: \"true\"\n    do: [note]\nactions:\n  note: {{ log: \"seen\", approval: auto }}\nescalation: {{ to: ops }}\nmeasure: {{ success: [seen] }}\n"
        )
    };
    write(
        &dir,
        "charters/plain.yaml",
        &charter_file("plain", "none", ""),
    );
    write(
        &dir,
        "charters/stripe.yaml",
        &charter_file(
            "stripe",
            "{ preset: stripe, secret: file:secrets/hook }",
            "",
        ),
    );
    write(
        &dir,
        "charters/keyed.yaml",
        &charter_file("keyed", "none", "  dedupe: \"{{ payload.id }}\"\n"),
    );
    let (code, out, err) = charter(&["check", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0]
            .starts_with("charters/plain.yaml:8:1: warning: charter `plain` has no `dedupe:`"),
        "{out}"
    );
    let (code, out, _) = charter(&["check", dir.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let problems = v["problems"].as_array().cloned().unwrap_or_default();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["severity"], "warning", "{v}");
    assert_eq!(problems[0]["line"], 8, "{v}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn backup_and_purge_from_the_command_line() {
    let dir = temp_dir("backup");
    let proj = dir.join("proj");
    let run = |args: &[&std::ffi::OsStr]| {
        // The new project's webhook secret is read from the environment at load.
        let out = Command::new(bin())
            .args(args)
            .env("SUPPORT_WEBHOOK_SECRET", "backup-test-secret")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, err) = run(&["init".as_ref(), proj.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    // No store yet: said so.
    let copy = dir.join("copy.db");
    let (code, err) = run(&["backup".as_ref(), copy.as_os_str(), proj.as_os_str()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no store at"), "{err}");
    let (code, err) = run(&["migrate".as_ref(), proj.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = run(&["backup".as_ref(), copy.as_os_str(), proj.as_os_str()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("backed up") && err.contains("bytes"), "{err}");
    // The copy is a store at the current schema.
    let (code, err) = run(&[
        "migrate".as_ref(),
        proj.as_os_str(),
        "--store".as_ref(),
        copy.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "at schema version {}",
            charter_store::sqlite::SCHEMA_VERSION
        )),
        "{err}"
    );
    // It never overwrites, and PostgreSQL is not its business.
    let (code, err) = run(&["backup".as_ref(), copy.as_os_str(), proj.as_os_str()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("already exists"), "{err}");
    let (code, err) = run(&[
        "backup".as_ref(),
        dir.join("pg.db").as_os_str(),
        proj.as_os_str(),
        "--store".as_ref(),
        "postgres://postgres@127.0.0.1:5432/postgres".as_ref(),
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("pg_dump"), "{err}");

    // `charter purge` (the purge itself is in the store's conformance suite, on every
    // backend): it says what it removed, and refuses a cut-off it cannot read or one in the
    // future.
    let (code, err) = run(&[
        "purge".as_ref(),
        "--before".as_ref(),
        "90d".as_ref(),
        proj.as_os_str(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("purged 0 event(s) with 0 run(s), and 0 rejected payload(s)"),
        "{err}"
    );
    for (before, says) in [("2999-01-01", "in the future"), ("soon", "is not a time")] {
        let (code, err) = run(&[
            "purge".as_ref(),
            "--before".as_ref(),
            before.as_ref(),
            proj.as_os_str(),
        ]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_lists_every_problem_with_file_line_and_column() {
    let dir = temp_dir("check");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .status()
            .unwrap()
            .success()
    );
    let charter = std::fs::read_to_string(proj.join("charters/support-triage.yaml")).unwrap();
    // Two problems in one file: an unknown key and an action without an approval policy.
    let broken = charter
        .replacen("owner:", "bogus_key: 1\nowner:", 1)
        .replace("approval: auto", "");
    write(&proj, "charters/support-triage.yaml", &broken);
    let out = Command::new(bin())
        .arg("check")
        .arg(&proj)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.len() >= 2, "all problems listed at once: {stdout}");
    for l in &lines {
        let mut parts = l.splitn(4, ':');
        assert_eq!(parts.next(), Some("charters/support-triage.yaml"), "{l}");
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "line number in {l}"
        );
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "column in {l}"
        );
    }
    assert!(stdout.contains("bogus_key"), "{stdout}");
    assert!(stdout.contains("approval"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn schema_writes_the_committed_schemas_and_reference() {
    let dir = temp_dir("schema");
    let out = Command::new(bin())
        .args(["schema", "--docs"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for rel in [
        "schema/charter.yaml.schema.json",
        "schema/charter.schema.json",
        "src/reference.md",
    ] {
        let written = std::fs::read_to_string(dir.join(rel)).unwrap();
        let committed = std::fs::read_to_string(repo.join("docs").join(rel)).unwrap();
        assert!(
            written == committed,
            "{rel}: `charter schema` differs from docs/{rel}"
        );
    }
    // One schema on stdout: valid JSON, the charter file's.
    let out = Command::new(bin())
        .args(["schema", "charter"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["properties"]["trigger"]["properties"]["events"].is_object(),
        "{v}"
    );
    let out = Command::new(bin())
        .args(["schema", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown schema is a usage error"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_runs_to_completion_with_once() {
    let dir = temp_dir("demo");
    let out = Command::new(bin())
        .args(["demo", "--once", "--listen", "127.0.0.1:0", "--dir"])
        .arg(dir.join("p"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.lines().count() >= 2,
        "one line per processed sample: {stdout}"
    );
    assert!(
        !stdout.contains("pending") && !stdout.contains("processing"),
        "{stdout}"
    );
    // The refund waits for a reviewer and the ticket no rule decides is escalated; both
    // are listed with the inbox's URL.
    assert!(stdout.contains("/inbox"), "{stdout}");
    let approval = stdout
        .lines()
        .find(|l| l.starts_with("approval "))
        .unwrap_or_else(|| panic!("no approval listed: {stdout}"));
    assert!(
        approval.contains("issue_refund") && approval.contains("support-leads"),
        "{approval}"
    );
    let escalation = stdout
        .lines()
        .find(|l| l.starts_with("escalation "))
        .unwrap_or_else(|| panic!("no escalation listed: {stdout}"));
    assert!(escalation.contains("support-triage"), "{escalation}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("approval "))
            .count(),
        1
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("escalation "))
            .count(),
        1
    );
    let _ = std::fs::remove_dir_all(&dir);
}

struct Server {
    child: Child,
}

impl Server {
    fn start(dir: &Path, port: u16) -> Server {
        let child = Command::new(bin())
            .arg("serve")
            .arg(dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CHARTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Server { child }
    }

    fn kill9(&mut self) {
        // SIGKILL: no chance to drain or flush.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become healthy");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the stand-in CRM and OTLP collector of the tracing test saw.
#[derive(Default)]
struct Seen {
    traceparents: Vec<String>,
    exports: Vec<Value>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector_with_the_trace_id_sent_downstream() {
    use axum::http::HeaderMap;
    use std::sync::{Arc, Mutex};
    charter_connect::install_crypto_provider();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let app = axum::Router::new()
        .route(
            "/orders",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap| async move {
                    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
                        seen.lock().unwrap().traceparents.push(tp.to_string());
                    }
                    axum::Json(json!({"ok": true}))
                }
            }),
        )
        .route(
            "/v1/traces",
            axum::routing::post({
                let seen = seen.clone();
                move |headers: HeaderMap, body: axum::body::Bytes| async move {
                    assert_eq!(
                        headers.get("content-type").and_then(|v| v.to_str().ok()),
                        Some("application/json")
                    );
                    let v: Value = serde_json::from_slice(&body).unwrap();
                    seen.lock().unwrap().exports.push(v);
                    axum::Json(json!({}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let dir = temp_dir("otlp");
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 2s, poll_interval: 50ms }}\nconnectors:\n  crm:\n    type: http\n    base_url: http://{addr}\n    allow_private: true\n    timeout: 2s\n"
        ),
    );
    write(
        &dir,
        "charters/orders.yaml",
        r#"
name: orders
description: push each order to the CRM
owner: ops@example.test
maintainer: eng@example.test
system_of_record: crm
mode: live
uses: [crm]
trigger:
  webhook: { path: /hooks/orders, verify: none }
routes:
  - when: "true"
    do: [push]
actions:
  push:
    connector: crm
    request: { method: POST, path: "/orders", json: { order: "{{ payload.order }}" } }
    approval: auto
escalation: { to: ops }
measure: { success: [order_pushed] }
"#,
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server {
        child: Command::new(bin())
            .arg("serve")
            .arg(&dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("CHARTER_LOG", "info")
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    };
    let client = reqwest::Client::new();
    wait_healthy(&client, &base).await;
    let r = client
        .post(format!("{base}/hooks/orders"))
        .json(&json!({"order": 7}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let event_id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // The run's span arrives (the exporter posts every second) under the trace id that the
    // action's `traceparent` carried downstream.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (trace_id, run_span) = loop {
        assert!(
            Instant::now() < deadline,
            "no run span reached the collector"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let seen = seen.lock().unwrap();
        let Some(tp) = seen.traceparents.first() else {
            continue;
        };
        let trace_id = tp.split('-').nth(1).unwrap().to_string();
        let found = seen
            .exports
            .iter()
            .flat_map(|e| e["resourceSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|rs| rs["scopeSpans"].as_array().cloned().unwrap_or_default())
            .flat_map(|ss| ss["spans"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == "run" && s["traceId"] == trace_id.as_str());
        if let Some(span) = found {
            break (trace_id, span);
        }
    };
    assert_eq!(trace_id.len(), 32);
    let attr = |key: &str| {
        run_span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].clone())
    };
    assert_eq!(attr("charter"), Some(json!("orders")));
    assert_eq!(attr("event"), Some(json!(event_id)));
    let start: u128 = run_span["startTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let end: u128 = run_span["endTimeUnixNano"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(end >= start && start > 0);
    let exports = seen.lock().unwrap().exports.clone();
    assert_eq!(
        exports[0]["resourceSpans"][0]["resource"]["attributes"][0]["value"]["stringValue"],
        "charter"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event_and_doubles_no_effect() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("crash");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    // Slow answers keep actions in flight when the kill lands: at 100 ms an answer, eight at a
    // time, the first half of the deliveries takes ~2.5 s to work through, far longer than
    // sending it, so the queue is still full when the kill comes. (At 30 ms a loaded machine
    // could send the first half no faster than the worker finished it, and the kill then
    // found nothing left in flight.)
    sink.script((0..400).map(|_| Scripted::Delay(Duration::from_millis(100))));
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 1s, poll_interval: 50ms, concurrency: 8, shutdown_grace: 1s }}\nconnectors:\n  crm:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 2s\n"
        ),
    );
    write(
        &dir,
        "charters/orders.yaml",
        r#"
name: orders
description: push each order to the CRM
owner: ops@example.test
maintainer: eng@example.test
system_of_record: crm
mode: live
uses: [crm]
concurrency: 8
trigger:
  webhook: { path: /hooks/orders, verify: none }
  dedupe: "{{ payload.order }}"
routes:
  - when: "true"
    do: [push]
actions:
  push:
    connector: crm
    request: { method: POST, path: "/orders", json: { order: "{{ payload.order }}" } }
    approval: auto
    retry: { attempts: 10, backoff: 20ms, max_backoff: 500ms }
escalation: { to: ops }
measure: { success: [order_pushed] }
"#,
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut server = Server::start(&dir, port);
    wait_healthy(&client, &base).await;

    let total = 400usize;
    let mut acked: Vec<String> = Vec::new();
    let mut killed = false;
    let mut next = 0usize;
    while next < total {
        // Send a wave of 20 concurrent deliveries.
        let mut wave = Vec::new();
        for i in next..(next + 20).min(total) {
            let c = client.clone();
            let url = format!("{base}/hooks/orders");
            wave.push(tokio::spawn(async move {
                let r = c.post(url).json(&json!({"order": i})).send().await.ok()?;
                if r.status().as_u16() == 202 {
                    let v: Value = r.json().await.ok()?;
                    v["id"].as_str().map(str::to_string)
                } else {
                    None
                }
            }));
        }
        next = (next + 20).min(total);
        for w in wave {
            if let Some(id) = w.await.unwrap() {
                acked.push(id);
            }
        }
        if !killed && next >= total / 2 {
            // Kill only once a run is in flight, so the test always exercises recovery.
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let v: Value = client
                    .get(format!(
                        "{base}/api/v1/events?charter=orders&status=processing&limit=10"
                    ))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if v["events"].as_array().is_some_and(|a| !a.is_empty()) {
                    break;
                }
                assert!(Instant::now() < deadline, "no run was in flight to kill");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            server.kill9();
            killed = true;
            server = Server::start(&dir, port);
            wait_healthy(&client, &base).await;
        }
    }
    assert!(
        acked.len() >= total / 2,
        "most deliveries were acknowledged ({})",
        acked.len()
    );

    // Every acknowledged event is processed after the restart.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v: Value = client
            .get(format!("{base}/api/v1/events?charter=orders&limit=10000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let done = events.iter().filter(|e| e["status"] == "done").count();
        let ids: std::collections::HashSet<&str> =
            events.iter().filter_map(|e| e["id"].as_str()).collect();
        for id in &acked {
            assert!(
                ids.contains(id.as_str()),
                "acknowledged event {id} was lost"
            );
        }
        if done == events.len() && events.len() >= acked.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all events finished: {done}/{}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sink.doubled_keys().is_empty(),
        "an idempotency key was applied twice: {:?}",
        sink.doubled_keys()
    );
    // One applied effect per stored event (each event has exactly one action).
    let stored = {
        let v: Value = client
            .get(format!("{base}/api/v1/events?charter=orders&limit=10000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["events"].as_array().map(|a| a.len()).unwrap_or(0)
    };
    assert_eq!(sink.applied_keys(), stored);
    // The kill landed with work in flight: some events needed a second run after restart.
    let v: Value = client
        .get(format!("{base}/api/v1/events?charter=orders&limit=10000"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let recovered = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["attempts"].as_u64() >= Some(2))
        .count();
    assert!(
        recovered > 0,
        "no event was recovered from the killed process; the test did not exercise recovery"
    );
    drop(server);
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unix milliseconds now (the store's clock: same machine).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// A node killed with 4,000 events queued and four actions in flight, restarted with a
/// 30 s `worker.lease`: the restarted node releases the dead process's leases at start-up
/// and processes at once (not after the lease), closes the four cut-off runs as
/// interrupted, and lists their actions as in doubt (settled once re-sent with the same key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_sigkill_resumes_at_once_and_lists_the_in_doubt_actions() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("restart");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    // The first four requests hang (the kill lands while they are at the downstream); every
    // later one is answered at once.
    sink.script((0..4).map(|_| Scripted::Delay(Duration::from_secs(60))));
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 30s, poll_interval: 500ms, concurrency: 4, shutdown_grace: 1s }}\nconnectors:\n  crm:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 120s\n"
        ),
    );
    write(
        &dir,
        "charters/orders.yaml",
        r#"
name: orders
description: push each order to the CRM
owner: ops@example.test
maintainer: eng@example.test
system_of_record: crm
mode: live
uses: [crm]
concurrency: 4
trigger:
  webhook: { path: /hooks/orders, verify: none }
  dedupe: "{{ payload.order }}"
routes:
  - when: "true"
    do: [push]
actions:
  push:
    connector: crm
    request: { method: POST, path: "/orders", json: { order: "{{ payload.order }}" } }
    approval: auto
    retry: { attempts: 3, backoff: 20ms, max_backoff: 100ms }
escalation: { to: ops }
measure: { success: [order_pushed] }
"#,
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut server = Server::start(&dir, port);
    wait_healthy(&client, &base).await;

    // Queue 4,000 events while the charter is paused, then let the worker at them.
    let r = client
        .post(format!("{base}/api/v1/charters/orders/pause"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "pause: {}", r.status());
    let total = 4000usize;
    for wave in 0..(total / 100) {
        let mut sends = Vec::new();
        for i in (wave * 100)..((wave + 1) * 100) {
            let c = client.clone();
            let url = format!("{base}/hooks/orders");
            sends.push(tokio::spawn(async move {
                c.post(url)
                    .json(&json!({"order": i}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }));
        }
        for s in sends {
            assert_eq!(s.await.unwrap(), 202, "a delivery was not acknowledged");
        }
    }
    let r = client
        .post(format!("{base}/api/v1/charters/orders/resume"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "resume: {}", r.status());

    // Kill once four runs have their action's intent written (a run becomes visible with
    // its start, decision and intent in one write) and their requests hang downstream.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = get_json(
            &client,
            &format!("{base}/api/v1/runs?charter=orders&outcome=running&limit=10"),
        )
        .await;
        if v["runs"].as_array().map_or(0, Vec::len) == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "four runs never got in flight");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill9();
    let killed_at = now_ms();

    let restarted_at = now_ms();
    server = Server::start(&dir, port);
    wait_healthy(&client, &base).await;

    // Every event is processed after the restart.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let v = get_json(
            &client,
            &format!("{base}/api/v1/events?charter=orders&status=done&limit=10000"),
        )
        .await;
        let done = v["events"].as_array().map_or(0, Vec::len);
        if done == total {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {done} of {total} events done"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The restarted node released the dead process's four leases at start-up, and its first
    // run started within a second of that (by the store's timestamps) — not after the
    // 30 s lease that the four dead leases held the charter's limit of 4 with.
    let audit = get_json(
        &client,
        &format!("{base}/api/v1/audit?action=worker.recover&limit=10"),
    )
    .await;
    let entries = audit["audit"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 1, "one recovery at the restart: {audit}");
    assert_eq!(entries[0]["detail"]["released"], 4, "{audit}");
    let recovered_at = entries[0]["at"].as_i64().unwrap();
    assert!(
        recovered_at >= restarted_at,
        "the recovery is the restarted node's"
    );
    let runs = get_json(
        &client,
        &format!("{base}/api/v1/runs?charter=orders&since={recovered_at}&limit=10000"),
    )
    .await;
    let first_run = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["started_at"].as_i64())
        .min()
        .expect("runs after the restart");
    let resumed_after = first_run - recovered_at;
    eprintln!(
        "killed at {killed_at}, restarted at {restarted_at}, leases released at {recovered_at} \
         (+{} ms), first run at +{resumed_after} ms after the release",
        recovered_at - restarted_at
    );
    assert!(
        resumed_after <= 1000,
        "the first run after the restart started {resumed_after} ms after the leases were released"
    );
    assert!(
        first_run - restarted_at < 30_000,
        "the first run after the restart waited for the dead leases ({} ms)",
        first_run - restarted_at
    );

    // The four cut-off runs are closed as interrupted, each with its action in doubt.
    let interrupted = get_json(
        &client,
        &format!("{base}/api/v1/runs?charter=orders&outcome=interrupted&limit=100"),
    )
    .await;
    let interrupted = interrupted["runs"].as_array().cloned().unwrap();
    assert_eq!(interrupted.len(), 4, "{interrupted:?}");
    let mut keys = std::collections::BTreeSet::new();
    for r in &interrupted {
        assert!(r["finished_at"].as_i64().unwrap() >= recovered_at, "{r}");
        let actions = r["actions"].as_array().unwrap();
        assert_eq!(actions.len(), 1, "{r}");
        assert_eq!(actions[0]["status"], "in_doubt", "{r}");
        keys.insert(actions[0]["idempotency_key"].as_str().unwrap().to_string());
    }
    // The CLI lists them; each was sent again with the same key and succeeded: settled.
    let (code, out, err) = charter(&[
        "in-doubt",
        "--charter",
        "orders",
        "--json",
        "--server",
        &base,
    ]);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let listed = listed.as_array().unwrap();
    let listed_keys: std::collections::BTreeSet<String> = listed
        .iter()
        .map(|a| a["idempotency_key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed_keys, keys, "{listed:?}");
    assert!(listed.iter().all(|a| a["settled"] == true), "{listed:?}");
    for key in &keys {
        let sent = sink
            .received()
            .iter()
            .filter(|r| r.idempotency_key.as_deref() == Some(key.as_str()))
            .count();
        assert!(sent >= 1, "the in-doubt key {key} was not sent again");
    }
    let (code, out, err) = charter(&["in-doubt", "--charter", "orders", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    for key in &keys {
        assert!(out.contains(key.as_str()), "{out}");
    }
    let (code, out, _) = charter(&["runs", "--outcome", "interrupted", "--server", &base]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("push:in_doubt").count(), 4, "{out}");
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("charter_in_doubt_actions_total{charter=\"orders\",action=\"push\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("charter_leases_recovered_total{} 4"),
        "{metrics}"
    );
    drop(server);
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// PostgreSQL for the multi-node test: `CHARTER_TEST_PG` or the local server.
fn pg_admin_url() -> String {
    std::env::var("CHARTER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

fn psql(sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .arg(pg_admin_url())
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// One number from a query on the database at `url` (0 when psql fails).
fn psql_count(url: &str, sql: &str) -> i64 {
    Command::new("psql")
        .arg(url)
        .args(["-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0)
}

fn start_node(dir: &Path, port: u16, store: &str, node: &str) -> Server {
    let child = Command::new(bin())
        .arg("serve")
        .arg(dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", store, "--node", node, "--pg-pool", "4"])
        .env("CHARTER_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgres_survive_a_sigkill_with_exactly_one_effect_per_key() {
    if !tools::available(tools::Tool::Postgres, || {
        tools::tcp_listening(&tools::pg_addr(&pg_admin_url()))
    }) {
        return;
    }
    charter_connect::install_crypto_provider();
    let db = format!("charter_nodes_{}", uuid::Uuid::now_v7().simple());
    psql(&format!("CREATE DATABASE {db}")).unwrap_or_else(|e| {
        panic!("PostgreSQL listens but psql cannot create a database (is psql installed?): {e}")
    });
    let base_url = pg_admin_url();
    let store_url = charter_store::postgres::with_dbname(&base_url, &db);

    let dir = temp_dir("nodes");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    // Each call takes 250 ms, so a run seen holding a lease is still in flight when the
    // test gets to kill its node (with 40 ms, a run could finish between the check and the
    // SIGKILL, and the killed node then had no lease to lose).
    sink.script((0..600).map(|_| Scripted::Delay(Duration::from_millis(250))));
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 1s, poll_interval: 100ms, concurrency: 4, shutdown_grace: 1s }}\nconnectors:\n  crm:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 2s\n"
        ),
    );
    write(
        &dir,
        "charters/orders.yaml",
        r#"
name: orders
description: push each order to the CRM
owner: ops@example.test
maintainer: eng@example.test
system_of_record: crm
mode: live
uses: [crm]
concurrency: 6
trigger:
  webhook: { path: /hooks/orders, verify: none }
  dedupe: "{{ payload.order }}"
routes:
  - when: "true"
    do: [push]
actions:
  push:
    connector: crm
    request: { method: POST, path: "/orders", json: { order: "{{ payload.order }}" } }
    approval: auto
    retry: { attempts: 10, backoff: 20ms, max_backoff: 500ms }
escalation: { to: ops }
measure: { success: [order_pushed] }
"#,
    );
    let ports = [free_port(), free_port(), free_port()];
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut nodes: Vec<Option<Server>> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Some(start_node(&dir, *p, &store_url, &format!("node{i}"))))
        .collect();
    for p in ports {
        wait_healthy(&client, &format!("http://127.0.0.1:{p}")).await;
    }

    let total = 300usize;
    let mut acked = Vec::new();
    for wave in 0..(total / 30) {
        let mut sends = Vec::new();
        for j in 0..30 {
            let i = wave * 30 + j;
            // Round-robin over the nodes still alive.
            let alive: Vec<u16> = ports
                .iter()
                .zip(&nodes)
                .filter(|(_, n)| n.is_some())
                .map(|(p, _)| *p)
                .collect();
            let port = alive[i % alive.len()];
            let c = client.clone();
            sends.push(tokio::spawn(async move {
                let r = c
                    .post(format!("http://127.0.0.1:{port}/hooks/orders"))
                    .json(&json!({"order": i}))
                    .send()
                    .await
                    .ok()?;
                if r.status().as_u16() != 202 {
                    return None;
                }
                let v: Value = r.json().await.ok()?;
                v["id"].as_str().map(str::to_string)
            }));
        }
        for s in sends {
            if let Some(id) = s.await.unwrap() {
                acked.push(id);
            }
        }
        if wave == total / 30 / 2 {
            // Kill the middle node with work in flight: wait until it holds a lease.
            // The other nodes may have drained the backlog first; then feed node1 directly
            // (its own ingest wakes its worker), one extra order at a time.
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut extra = total;
            while psql_count(
                &store_url,
                "SELECT count(*) FROM events WHERE lease_owner = 'node1' AND status = 'processing'",
            ) == 0
            {
                assert!(
                    Instant::now() < deadline,
                    "node1 never held a lease to lose"
                );
                let r = client
                    .post(format!("http://127.0.0.1:{}/hooks/orders", ports[1]))
                    .json(&json!({"order": extra}))
                    .send()
                    .await
                    .unwrap();
                if r.status().as_u16() == 202 {
                    let v: Value = r.json().await.unwrap();
                    acked.push(v["id"].as_str().unwrap().to_string());
                }
                extra += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if let Some(mut n) = nodes[1].take() {
                n.kill9();
            }
        }
    }
    assert!(
        acked.len() >= total * 9 / 10,
        "most deliveries were acknowledged: {}",
        acked.len()
    );

    let api = format!("http://127.0.0.1:{}", ports[0]);
    let deadline = Instant::now() + Duration::from_secs(90);
    let events = loop {
        let v: Value = client
            .get(format!("{api}/api/v1/events?charter=orders&limit=10000"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = v["events"].as_array().cloned().unwrap_or_default();
        let done = events.iter().filter(|e| e["status"] == "done").count();
        if done == events.len() && events.len() >= acked.len() {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "not all events finished: {done}/{}",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: std::collections::HashSet<&str> =
        events.iter().filter_map(|e| e["id"].as_str()).collect();
    for id in &acked {
        assert!(
            ids.contains(id.as_str()),
            "acknowledged event {id} was lost"
        );
    }
    assert!(
        sink.doubled_keys().is_empty(),
        "a key was applied twice: {:?}",
        sink.doubled_keys()
    );
    assert_eq!(
        sink.applied_keys(),
        events.len(),
        "one applied effect per stored event"
    );
    let recovered = events
        .iter()
        .filter(|e| e["attempts"].as_u64() >= Some(2))
        .count();
    assert!(
        recovered > 0,
        "the surviving nodes took over none of the killed node's leases"
    );

    drop(nodes);
    shutdown.cancel();
    let _ = psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_secret_never_appears_in_logs_store_or_api() {
    charter_connect::install_crypto_provider();
    const CANARY: &str = "CANARY-7f3a9c1e-secret-value";
    const HOOK_CANARY: &str = "HOOKCANARY-55aa-secret";
    let dir = temp_dir("canary");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    // Failures first (retried, then dead-lettered), so error paths are exercised too.
    sink.fail_always(Some(500));
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    write(&dir, "secrets/crm-token", CANARY);
    write(&dir, "secrets/hook", HOOK_CANARY);
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 2s, poll_interval: 50ms }}\nconnectors:\n  crm:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    auth: {{ bearer: file:secrets/crm-token }}\n    timeout: 2s\n"
        ),
    );
    write(
        &dir,
        "charters/push.yaml",
        r#"
name: push
description: push to the CRM
owner: ops@example.test
maintainer: eng@example.test
system_of_record: crm
mode: live
uses: [crm]
trigger:
  webhook: { path: /hooks/push, verify: { preset: github, secret: file:secrets/hook } }
routes:
  - when: "true"
    do: [push]
actions:
  push:
    connector: crm
    request: { method: POST, path: "/things", json: { id: "{{ payload.id }}" } }
    approval: auto
    retry: { attempts: 2, backoff: 10ms, max_backoff: 50ms }
escalation: { to: ops }
measure: { success: [pushed] }
"#,
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = dir.join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(bin())
        .arg("serve")
        .arg(&dir)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("CHARTER_LOG", "debug")
        .env("CHARTER_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_healthy(&client, &base).await;

    // A signed delivery (dead-lettered downstream), a forged one, then a success.
    let project = charter_server::project::load(&dir).unwrap();
    let webhook = project.charters["push"].trigger.webhook.clone().unwrap();
    let mut ids = Vec::new();
    for (i, secret) in [(1, HOOK_CANARY), (2, "wrong-secret")] {
        let body = serde_json::to_vec(&json!({"id": i})).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let headers =
            charter_core::verify::sign(&webhook.verify, secret, &body, now, &format!("d{i}"))
                .unwrap();
        let mut req = client
            .post(format!("{base}/hooks/push"))
            .header("content-type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let r = req.send().await.unwrap();
        if r.status().as_u16() == 202 {
            ids.push(
                r.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    assert_eq!(ids.len(), 1, "only the correctly signed delivery is stored");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut api_text = String::new();
    loop {
        let v: Value = client
            .get(format!("{base}/api/v1/events/{}", ids[0]))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["event"]["status"] == "failed" {
            api_text.push_str(&v.to_string());
            break;
        }
        assert!(Instant::now() < deadline, "event never failed: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for path in [
        "/api/v1/events?limit=100",
        "/api/v1/charters",
        "/api/v1/rejected",
        "/metrics",
    ] {
        api_text.push_str(
            &client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // The downstream really received the secret, so it was in use.
    assert!(
        sink.received()
            .iter()
            .any(|r| r.authorization.as_deref() == Some(&format!("Bearer {CANARY}")))
    );

    child.kill().unwrap();
    let _ = child.wait();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(logs.contains("push"), "the log captured the run: {logs}");
    let mut store_bytes = Vec::new();
    for f in ["charter.db", "charter.db-wal"] {
        if let Ok(b) = std::fs::read(dir.join(f)) {
            store_bytes.extend(b);
        }
    }
    assert!(!store_bytes.is_empty());
    for secret in [CANARY, HOOK_CANARY] {
        assert!(!logs.contains(secret), "secret in logs");
        assert!(!api_text.contains(secret), "secret in API responses");
        assert!(
            !store_bytes
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "secret in the store"
        );
    }
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An OpenAI-compatible model on 127.0.0.1 for `charter eval`: `refund` -> billing (0.9),
/// `crash` -> bug (0.8), anything else -> other (0.4). 100 prompt + 20 completion tokens.
async fn eval_model(shutdown: CancellationToken) -> String {
    async fn chat(axum::Json(body): axum::Json<Value>) -> axum::Json<Value> {
        let prompt = body["messages"][1]["content"].as_str().unwrap_or_default();
        let (label, confidence) = if prompt.contains("refund") {
            ("billing", 0.9)
        } else if prompt.contains("crash") {
            ("bug", 0.8)
        } else {
            ("other", 0.4)
        };
        let content =
            json!({"label": label, "confidence": confidence, "fields": {}, "reason": "test"});
        axum::Json(json!({
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content.to_string()}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20},
        }))
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    format!("http://{addr}/v1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_runs_the_llm_stage_and_the_cascade_against_a_local_model() {
    let shutdown = CancellationToken::new();
    let url = eval_model(shutdown.clone()).await;
    let dir = temp_dir("eval-llm");
    write(
        &dir,
        "charter.yaml",
        &format!(
            "connectors:\n  helpdesk: {{ type: http, base_url: https://helpdesk.example.com }}\nproviders:\n  default: {{ type: openai, base_url: \"{url}\", model: tiny, max_retries: 0, allow_private: true, price: {{ input_per_mtok: 1, output_per_mtok: 2 }} }}\n"
        ),
    );
    write(&dir, "prompts/triage.md", "Classify: {{ text }}");
    write(
        &dir,
        "charters/triage.yaml",
        r#"name: triage
description: eval test
owner: a@example.test
maintainer: b@example.test
system_of_record: helpdesk
mode: shadow
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/triage, verify: none }
decide:
  labels: [billing, bug, other]
  stages:
    - rules:
        - { when: 'payload.text.contains("hello")', label: other }
    - llm: { prompt: prompts/triage.md, accept_above: 0.5 }
  otherwise: escalate
routes:
  - when: "true"
    do: [note]
actions:
  note: { log: "{{ decision.label }}", approval: auto }
escalation: { to: leads }
measure:
  done: [noted]
"#,
    );
    write(
        &dir,
        "cases.csv",
        "text,label\nrefund please,billing\napp crash on start,bug\nhello there,other\nrefund the crash,bug\n",
    );
    let run = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || Command::new(bin()).args(args).output().unwrap())
    };
    let common = |stage: &str| {
        vec![
            "eval".to_string(),
            "triage".into(),
            "--cases".into(),
            dir.join("cases.csv").display().to_string(),
            "--dir".into(),
            dir.display().to_string(),
            "--stage".into(),
            stage.into(),
            "--json".into(),
        ]
    };
    let out = run(common("llm")).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stage"], "llm");
    assert_eq!(r["cases"], 4);
    // refund->billing, crash->bug, hello->other (0.4, below 0.5), "refund the crash"->billing (wrong).
    assert_eq!(r["accuracy"], 0.75);
    assert_eq!(r["abstention_rate"], 0.25);
    assert!(
        (r["accuracy_on_kept"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9,
        "{r}"
    );
    assert_eq!(r["llm_calls"], 4);
    assert_eq!(r["tokens"], 480);
    assert!(
        (r["cost"].as_f64().unwrap() - (400.0 + 160.0) / 1e6).abs() < 1e-12,
        "{r}"
    );
    let confused = &r["report"]["confusions"][0];
    assert_eq!(
        (
            confused["expected"].as_str(),
            confused["predicted"].as_str()
        ),
        (Some("bug"), Some("billing"))
    );
    let bug = r["report"]["per_label"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["label"] == "bug")
        .unwrap();
    assert_eq!(bug["recall"], 0.5);

    // Out-of-scope cases (a label the stage cannot give) and a suggested threshold.
    write(
        &dir,
        "oos.csv",
        "text,label\nrefund please,billing\napp crash on start,bug\nwin a prize,spam\nrefund the crash,bug\n",
    );
    let with_cases = |extra: &[&str]| {
        let mut a = common("llm");
        a[3] = dir.join("oos.csv").display().to_string();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let out = run(with_cases(&["--target-oos-recall", "1"]))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            r["in_scope_cases"].as_u64(),
            r["out_of_scope_cases"].as_u64()
        ),
        (Some(3), Some(1))
    );
    // At accept_above 0.5 the spam case (0.4) escalates; 2 of 3 in scope are kept and right.
    assert_eq!(r["out_of_scope_recall"], 1.0);
    assert!((r["in_scope_kept_correct"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // The lowest threshold escalating every out-of-scope case is 0.8 (0.4 is kept at 0.4).
    assert_eq!(r["suggested"]["accept_above"], 0.8, "{r}");
    assert_eq!(r["suggested"]["coverage"], 0.75);
    assert_eq!(r["suggested"]["out_of_scope_recall"], 1.0);
    let out = run(with_cases(&["--target-coverage", "0.5"]))
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["suggested"]["accept_above"], 0.9, "{r}");
    assert_eq!(r["suggested"]["coverage"], 0.5);
    let out = run(with_cases(&["--target-escalation", "0.3"]))
        .await
        .unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["suggested"]["accept_above"], 0.9, "{r}");
    assert_eq!(r["suggested"]["escalation_rate"], 0.5);

    // The cascade: the rule takes "hello", the model the rest (3 calls).
    let out = run(common("cascade")).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["stage"], "cascade");
    assert_eq!(r["accuracy"], 0.75);
    assert_eq!(r["abstention_rate"], 0.0);
    assert_eq!(r["llm_calls"], 3);
    assert_eq!(r["tokens"], 360);
    // Per-stage figures: the rules saw all 4 and decided 1 (rightly); the llm saw the other
    // 3, decided all, 2 rightly.
    let stages = r["per_stage"].as_array().unwrap();
    assert_eq!(stages.len(), 2, "{r}");
    assert_eq!(stages[0]["stage"], "rule");
    assert_eq!(
        (
            &stages[0]["consulted"],
            &stages[0]["decided"],
            &stages[0]["correct"],
            &stages[0]["abstained"]
        ),
        (&json!(4), &json!(1), &json!(1), &json!(3))
    );
    assert_eq!(stages[0]["accuracy"], 1.0);
    assert_eq!(stages[1]["stage"], "llm");
    assert_eq!(
        (
            &stages[1]["consulted"],
            &stages[1]["decided"],
            &stages[1]["correct"],
            &stages[1]["abstained"]
        ),
        (&json!(3), &json!(3), &json!(2), &json!(0))
    );
    // Latency is per decision, with the setup apart.
    assert!(r["p99_latency_us"].as_f64().unwrap() >= r["p50_latency_us"].as_f64().unwrap());
    assert!(r["setup_seconds"].as_f64().is_some(), "{r}");
    let cascade_report = r;

    // A baseline from other cases is refused, even with a lower accuracy.
    write(
        &dir,
        "other.csv",
        "text,label\nrefund please,billing\napp crash on start,bug\n",
    );
    let mut args = common("cascade");
    args[3] = dir.join("other.csv").display().to_string();
    let out = run(args).await.unwrap();
    assert!(out.status.success());
    let mut other: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(other["cases_digest"], cascade_report["cases_digest"]);
    other["accuracy"] = json!(0.0);
    write(&dir, "other-base.json", &other.to_string());
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("other-base.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("measured on other cases"), "{err}");
    // So is one without a digest.
    write(&dir, "base.json", "{\"accuracy\": 0.1}");
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("base.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no `cases_digest`"));

    // The same cases pass against themselves ...
    write(&dir, "same.json", &cascade_report.to_string());
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("same.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ... and fail on a better accuracy or a lower abstention rate.
    let mut better = cascade_report.clone();
    better["accuracy"] = json!(0.9);
    better["abstention_rate"] = json!(-0.5);
    write(&dir, "better.json", &better.to_string());
    let mut args = common("cascade");
    args.extend([
        "--baseline".to_string(),
        dir.join("better.json").display().to_string(),
    ]);
    let out = run(args).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("regression: accuracy 0.7500"), "{err}");
    assert!(err.contains("regression: abstention_rate 0.0000"), "{err}");
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Run the `charter` binary with `args`; (exit code, stdout, stderr).
fn charter(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_runs_from_the_command_line_with_a_shopify_signed_delivery() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("runs-cli");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    write(&dir, "secrets/shop", "shpss_cli_test_secret");
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 2s, poll_interval: 50ms }}\nconnectors:\n  store:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 2s\n"
        ),
    );
    write(
        &dir,
        "charters/orders.yaml",
        r#"
name: orders
description: tag new Shopify orders
owner: ops@example.test
maintainer: eng@example.test
system_of_record: store
mode: live
uses: [store]
trigger:
  webhook: { path: /hooks/shopify/orders, verify: { preset: shopify, secret: file:secrets/shop } }
  input_schema: schemas/order.json
routes:
  - when: "true"
    do: [tag]
actions:
  tag:
    connector: store
    request: { method: PUT, path: "/orders/{{ payload.id }}", json: { tags: "charter" } }
    approval: auto
escalation: { to: ops }
measure: { success: [tagged] }
"#,
    );
    write(&dir, "order.json", r#"{"id": 820982911946154508}"#);
    write(&dir, "draft-order.json", r#"{"id": "draft-17"}"#);
    let integer_ids =
        r#"{"type":"object","required":["id"],"properties":{"id":{"type":"integer"}}}"#;
    write(&dir, "schemas/order.json", integer_ids);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Server::start(&dir, port);
    wait_healthy(&reqwest::Client::new(), &base).await;
    let d = dir.to_str().unwrap();
    let order = dir.join("order.json");
    let order = order.to_str().unwrap();

    // `send` signs the way the preset expects (X-Shopify-Hmac-Sha256) and the server accepts.
    let (code, out, err) = charter(&[
        "send",
        "orders",
        order,
        "--dir",
        d,
        "--server",
        &base,
        "--delivery-id",
        "wh-1",
    ]);
    assert_eq!(code, 0, "send: {out} {err}");
    let ack: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ack["status"], "accepted", "{out}");
    let event_id = ack["id"].as_str().unwrap().to_string();
    // The same Shopify webhook id again is a duplicate of that event.
    let (code, out, _) = charter(&[
        "send",
        "orders",
        order,
        "--dir",
        d,
        "--server",
        &base,
        "--delivery-id",
        "wh-1",
    ]);
    assert_eq!(code, 0);
    let dup: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (dup["status"].as_str(), dup["id"].as_str()),
        (Some("duplicate"), Some(event_id.as_str()))
    );

    // `runs --json` lists the run once it completed, with its event and action.
    let deadline = Instant::now() + Duration::from_secs(30);
    let runs = loop {
        let (code, out, err) = charter(&[
            "runs",
            "--charter",
            "orders",
            "--outcome",
            "completed",
            "--json",
            "--server",
            &base,
        ]);
        assert_eq!(code, 0, "runs: {err}");
        let runs: Value = serde_json::from_str(&out).unwrap();
        if runs.as_array().is_some_and(|r| !r.is_empty()) {
            break runs;
        }
        assert!(Instant::now() < deadline, "no completed run listed: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(runs.as_array().unwrap().len(), 1, "{runs}");
    assert_eq!(runs[0]["event_id"], event_id.as_str());
    assert_eq!(runs[0]["charter"], "orders");
    assert_eq!(runs[0]["actions"][0]["action"], "tag");
    assert_eq!(runs[0]["actions"][0]["status"], "succeeded");
    let received = sink.received();
    assert_eq!(received.len(), 1, "one request downstream: {received:?}");
    assert_eq!(received[0].path, "/orders/820982911946154508");

    // The table names the run, its event, its outcome and its action; stderr the count.
    let (code, out, err) = charter(&["runs", "--since", "1h", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let run_id = runs[0]["id"].as_str().unwrap();
    let row = out
        .lines()
        .find(|l| l.starts_with(run_id))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        row.contains(&event_id) && row.contains("completed") && row.contains("tag:succeeded"),
        "{row}"
    );
    assert!(err.contains("1 run(s)"), "{err}");
    // Nothing is listed before the run started, nor for another outcome.
    let (_, out, _) = charter(&["runs", "--until", "1970-01-02", "--json", "--server", &base]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let (_, out, _) = charter(&["runs", "--outcome", "failed", "--json", "--server", &base]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));

    // Bad input: a clear message and exit 1 (server refusal) or 2 (usage); 3 unreachable.
    let (code, _, err) = charter(&["runs", "--outcome", "sideways", "--server", &base]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown outcome `sideways`"), "{err}");
    let (code, _, err) = charter(&["runs", "--since", "last tuesday", "--server", &base]);
    assert_eq!(code, 2);
    assert!(err.contains("--since"), "{err}");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, _, err) = charter(&["runs", "--server", &closed]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach"), "{err}");

    // A payload that breaks the contract is kept as rejected, with the JSON pointer of what
    // is wrong, and is listed by `rejected list`.
    let draft = dir.join("draft-order.json");
    let draft = draft.to_str().unwrap();
    let (code, out, err) = charter(&[
        "send",
        "orders",
        draft,
        "--dir",
        d,
        "--server",
        &base,
        "--delivery-id",
        "wh-2",
    ]);
    assert_eq!(code, 1, "{out} {err}");
    assert!(err.contains("422"), "{err}");
    let (code, out, err) = charter(&["rejected", "list", "--json", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let rejected: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rejected.as_array().unwrap().len(), 1, "{rejected}");
    let rejected_id = rejected[0]["id"].as_str().unwrap().to_string();
    assert!(
        rejected[0]["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("/id: "),
        "{rejected}"
    );
    let (code, out, _) = charter(&["rejected", "list", "--charter", "orders", "--server", &base]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&rejected_id) && l.contains("/id: ")),
        "{out}"
    );
    // Replayed against the same contract: refused, with the violation on stderr.
    let (code, _, err) = charter(&["rejected", "replay", &rejected_id, "--server", &base]);
    assert_eq!(code, 1);
    assert!(err.contains("422") && err.contains("  /id: "), "{err}");

    // The contract is fixed (draft ids are strings) and the server restarted: the replay is
    // stored as an event, processed, and the rejected copy is gone.
    write(
        &dir,
        "schemas/order.json",
        r#"{"type":"object","required":["id"],"properties":{"id":{"type":["integer","string"]}}}"#,
    );
    server.kill9();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server::start(&dir, port);
    wait_healthy(&reqwest::Client::new(), &base).await;
    let (code, out, err) = charter(&["rejected", "replay", &rejected_id, "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let ack: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(ack["status"], "accepted", "{out}");
    let (_, out, _) = charter(&["rejected", "list", "--json", "--server", &base]);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), json!([]));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = charter(&[
            "runs",
            "--outcome",
            "completed",
            "--json",
            "--server",
            &base,
        ]);
        let runs: Value = serde_json::from_str(&out).unwrap();
        if runs.as_array().is_some_and(|r| r.len() == 2) {
            assert_eq!(runs[0]["event_id"], ack["id"], "{runs}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed event did not complete: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sink.received().iter().any(|r| r.path == "/orders/draft-17"),
        "{:?}",
        sink.received()
    );

    // `replay --force`: the first order's PUT goes out again, from a copy of its event.
    let (code, out, err) = charter(&["replay", &event_id, "--force", "--server", &base]);
    assert_eq!(code, 0, "{err}");
    let copy = out.trim().to_string();
    assert!(copy.len() == 36 && copy != event_id, "{out}");
    assert!(err.contains("its actions will execute again"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while requests_to(&sink, "/orders/820982911946154508") < 2 {
        assert!(Instant::now() < deadline, "the forced replay sent nothing");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, err) = charter(&["replay", "--force", "--server", &base]);
    assert_eq!(code, 2, "--force needs an event id: {err}");

    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A charter for the operator-command test: `refund` tickets PUT to the sink under
/// `approval`, anything else goes to `otherwise` (a label, or `escalate`).
/// How many requests the stand-in received at `path`.
fn requests_to(sink: &Sink, path: &str) -> usize {
    sink.received().iter().filter(|r| r.path == path).count()
}

fn operator_charter(name: &str, mode: &str, approval: &str, otherwise: &str) -> String {
    format!(
        r#"
name: {name}
description: operator commands
owner: ops@example.test
maintainer: eng@example.test
system_of_record: desk
mode: {mode}
uses: [desk]
trigger:
  webhook: {{ path: /hooks/{name}, verify: none }}
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
    do: [assign]
actions:
  assign:
    connector: desk
    request: {{ method: PUT, path: "/tickets/{{{{ payload.ticket.id }}}}", json: {{ group: billing }} }}
    approval: {approval}
escalation: {{ to: leads }}
measure: {{ success: [assigned] }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_from_the_command_line() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("operator-cli");
    let shutdown = CancellationToken::new();
    let sink = Sink::default();
    let sink_addr = sink
        .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
        .await
        .unwrap();
    for who in ["root", "lead", "view"] {
        write(&dir, &format!("secrets/{who}"), &format!("token-{who}"));
    }
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ lease: 2s, poll_interval: 50ms }}\nconnectors:\n  desk:\n    type: http\n    base_url: http://{sink_addr}\n    allow_private: true\n    timeout: 2s\ntokens:\n  - {{ name: root, role: admin, secret: file:secrets/root }}\n  - {{ name: lead, role: reviewer, secret: file:secrets/lead }}\n  - {{ name: view, role: viewer, secret: file:secrets/view }}\n"
        ),
    );
    write(
        &dir,
        "charters/gated.yaml",
        &operator_charter(
            "gated",
            "live",
            "{ reviewers: [lead], expires: 1h }",
            "escalate",
        ),
    );
    write(
        &dir,
        "charters/trial.yaml",
        &operator_charter("trial", "shadow", "auto", "other"),
    );
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = Server::start(&dir, port);
    let http = reqwest::Client::new();
    wait_healthy(&http, &base).await;
    let send = |charter: &'static str, id: i64, subject: &'static str| {
        let http = http.clone();
        let url = format!("{base}/hooks/{charter}");
        async move {
            let r = http
                .post(url)
                .json(&json!({"ticket": {"id": id, "subject": subject}}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 202);
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    // `charter <args> --server base --token token-<who>`.
    let as_who = |who: &str, args: &[&str]| {
        let token = format!("token-{who}");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", base.as_str(), "--token", token.as_str()]);
        charter(&all)
    };
    let json_of = |out: &str| -> Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    let wait_status = |id: String, want: &'static str| {
        let base = base.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (_, out, _) = charter(&[
                    "events",
                    "list",
                    "--json",
                    "--limit",
                    "100",
                    "--server",
                    &base,
                    "--token",
                    "token-root",
                ]);
                let events: Value = serde_json::from_str(&out).unwrap();
                let status = events
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["id"] == id.as_str())
                    .map(|e| e["status"].as_str().unwrap().to_string());
                if status.as_deref() == Some(want) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "{id} never became {want} ({status:?})"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };

    // Approvals: listed, refused to a viewer, approved by the reviewer; the PUT goes out.
    let first = send("gated", 1, "refund please").await;
    wait_status(first.clone(), "waiting").await;
    let (code, out, err) = as_who("view", &["approvals", "--json"]);
    assert_eq!(code, 0, "{err}");
    let approvals = json_of(&out);
    assert_eq!(approvals.as_array().unwrap().len(), 1, "{approvals}");
    let approval = approvals[0]["id"].as_str().unwrap().to_string();
    let (code, _, err) = as_who("view", &["approve", &approval]);
    assert_eq!(code, 1, "a viewer may not approve");
    assert!(err.contains("403"), "{err}");
    let (code, _, err) = as_who("lead", &["approve", &approval]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("approved {approval}")), "{err}");
    wait_status(first.clone(), "done").await;
    assert_eq!(requests_to(&sink, "/tickets/1"), 1);
    // A rejection with its reason: the action never runs.
    let second = send("gated", 2, "refund again").await;
    wait_status(second.clone(), "waiting").await;
    let (_, out, _) = as_who("lead", &["approvals", "--json"]);
    let approval = json_of(&out)[0]["id"].as_str().unwrap().to_string();
    let (code, _, err) = as_who(
        "lead",
        &["reject", &approval, "--reason", "duplicate refund"],
    );
    assert_eq!(code, 0, "{err}");
    wait_status(second.clone(), "done").await;
    assert_eq!(requests_to(&sink, "/tickets/2"), 0);

    // Escalations: decided with a label, the run continues with it.
    let third = send("gated", 3, "hello").await;
    wait_status(third.clone(), "waiting").await;
    let (code, out, err) = as_who("lead", &["escalations", "--json"]);
    assert_eq!(code, 0, "{err}");
    let escalations = json_of(&out);
    assert_eq!(escalations.as_array().unwrap().len(), 1, "{escalations}");
    let escalation = escalations[0]["id"].as_str().unwrap().to_string();
    let (code, _, err) = as_who("lead", &["decide", &escalation, "--label", "other"]);
    assert_eq!(code, 0, "{err}");
    wait_status(third.clone(), "done").await;
    // The correction becomes a training example, once.
    let examples = dir.join("data/examples.csv");
    write(
        &dir,
        "data/examples.csv",
        "text,label\nrefund please,billing\n",
    );
    let file = examples.to_str().unwrap();
    let (code, _, err) = as_who(
        "view",
        &["export-corrections", "gated", "--merge-into", file],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("added 1 of 1 correction(s)"), "{err}");
    let (code, _, err) = as_who(
        "view",
        &["export-corrections", "gated", "--merge-into", file],
    );
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("added 0 of 1 correction(s)"), "{err}");
    assert_eq!(
        std::fs::read_to_string(&examples).unwrap(),
        "text,label\nrefund please,billing\nhello,other\n"
    );

    // Routes: listed with their modes; a route's mode set from the CLI (admin only).
    let (code, out, err) = as_who("view", &["routes", "gated", "--json"]);
    assert_eq!(code, 0, "{err}");
    let routes = json_of(&out);
    assert_eq!(routes["routes"][0]["name"], "route-1", "{routes}");
    assert_eq!(routes["routes"][0]["mode"], "live", "{routes}");
    let (code, _, err) = as_who("lead", &["route-mode", "gated", "route-1", "shadow"]);
    assert_eq!(code, 1, "a reviewer may not change a route's mode");
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = as_who(
        "root",
        &[
            "route-mode",
            "gated",
            "route-1",
            "shadow",
            "--reason",
            "watch it",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "shadow");
    let (code, out, err) = as_who("view", &["routes", "gated"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("route-1") && l.contains("shadow") && l.contains("set by root")),
        "{out}"
    );
    assert!(
        out.contains("not enough reviewed: 0 of the 30 needed"),
        "{out}"
    );
    let (code, _, err) = as_who("root", &["route-mode", "gated", "route-1", "file"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = as_who("view", &["export-rewrites", "gated"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "", "no approved draft yet");
    assert!(err.contains("0 rewrite(s)"), "{err}");

    // Pause keeps accepting and storing; resume processes.
    let (code, _, err) = as_who("root", &["pause", "gated"]);
    assert_eq!(code, 0, "{err}");
    let fourth = send("gated", 4, "hello again").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_status(fourth.clone(), "pending").await;
    let (code, _, err) = as_who("root", &["resume", "gated"]);
    assert_eq!(code, 0, "{err}");
    wait_status(fourth.clone(), "waiting").await;

    // Promote a shadow charter: the next refund executes; `mode ... shadow` goes back.
    let shadowed = send("trial", 5, "refund").await;
    wait_status(shadowed, "done").await;
    assert_eq!(requests_to(&sink, "/tickets/5"), 0);
    let (code, _, err) = as_who("lead", &["promote", "trial"]);
    assert_eq!(code, 1, "a reviewer may not promote: {err}");
    let (code, _, err) = as_who("root", &["promote", "trial"]);
    assert_eq!(code, 0, "{err}");
    let live = send("trial", 6, "refund").await;
    wait_status(live, "done").await;
    assert_eq!(requests_to(&sink, "/tickets/6"), 1);
    let (code, _, err) = as_who("root", &["mode", "trial", "shadow"]);
    assert_eq!(code, 0, "{err}");
    let again = send("trial", 7, "refund").await;
    wait_status(again, "done").await;
    assert_eq!(requests_to(&sink, "/tickets/7"), 0);

    // The record: the timeline, the audit log and the report say what happened.
    let (code, out, err) = as_who("view", &["events", "show", &first]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("assign") && out.contains("billing"), "{out}");
    let (code, out, err) = as_who("root", &["audit", "--json"]);
    assert_eq!(code, 0, "{err}");
    let actions: Vec<String> = json_of(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "approval.approve",
        "approval.reject",
        "escalation.resolve",
        "charter.pause",
        "charter.resume",
        "charter.mode",
    ] {
        assert!(
            actions.iter().any(|a| a == want),
            "{want} not in {actions:?}"
        );
    }
    let (code, out, err) = as_who("view", &["report", "gated", "--json"]);
    assert_eq!(code, 0, "{err}");
    let report = json_of(&out);
    assert!(report.is_object(), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("approval") && text.contains("escalation"),
        "{text}"
    );

    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `charter --version` names the git commit it was built from and the build date.
#[test]
fn version_names_the_commit_and_the_build_date() {
    let (code, stdout, stderr) = charter(&["--version"]);
    assert_eq!(code, 0, "{stderr}");
    let line = stdout.trim();
    let rest = line
        .strip_prefix(&format!("charter {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{line}"));
    let (commit, rest) = rest
        .split_once(", built ")
        .unwrap_or_else(|| panic!("{line}"));
    let date = rest.strip_suffix(')').unwrap_or_else(|| panic!("{line}"));
    let bytes = date.as_bytes();
    assert!(
        date.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && date.replace('-', "").chars().all(|c| c.is_ascii_digit()),
        "build date {date:?} in {line}"
    );
    // Built from this checkout: the commit is its HEAD (when git can tell).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match head {
        Some(head) => assert_eq!(commit, head, "{line}"),
        None => assert_eq!(commit, "unknown", "{line}"),
    }
}

/// `charter completions <shell>` prints a completion script that knows the subcommands.
#[test]
fn completions_are_printed_for_each_shell() {
    let (code, bash, stderr) = charter(&["completions", "bash"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(bash.contains("_charter()"), "{bash}");
    for sub in ["serve", "events", "completions", "export-corrections"] {
        assert!(bash.contains(sub), "bash completion lacks {sub}");
    }
    let (code, zsh, _) = charter(&["completions", "zsh"]);
    assert_eq!(code, 0);
    assert!(zsh.starts_with("#compdef charter"), "{zsh}");
    let (code, fish, _) = charter(&["completions", "fish"]);
    assert_eq!(code, 0);
    assert!(fish.contains("complete -c charter"), "{fish}");
    let (code, _, stderr) = charter(&["completions", "tcsh"]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {stderr}");
}

/// A reader that has gone away (`charter runs | head`) ends the command quietly with status
/// 0: stdout is a pipe whose read end is closed before the command writes.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let dir = temp_dir("pipe");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .output()
            .unwrap()
            .status
            .success()
    );
    for args in [
        vec!["completions".to_string(), "bash".to_string()],
        vec!["check".to_string(), proj.display().to_string()],
        vec!["--help".to_string()],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = Command::new(bin())
            .args(&args)
            .env("SUPPORT_WEBHOOK_SECRET", "x")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        if args[0] != "--help" {
            assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check` goes beyond the text: the embedded stage's examples file (undeclared labels, a
/// wrong delimiter, a missing file) is an error at its file:line, and an unset `env:`
/// secret is a warning, an error with `--strict`.
#[test]
fn check_reads_examples_and_the_environment() {
    let dir = temp_dir("check-io");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .output()
            .unwrap()
            .status
            .success()
    );
    let check = |strict: bool, secret: Option<&str>| {
        let mut cmd = Command::new(bin());
        cmd.arg("check")
            .arg(&proj)
            .env_remove("SUPPORT_WEBHOOK_SECRET");
        if strict {
            cmd.arg("--strict");
        }
        if let Some(s) = secret {
            cmd.env("SUPPORT_WEBHOOK_SECRET", s);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // The unset secret, where the charter names it.
    let (code, stdout, stderr) = check(false, None);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("charters/support-triage.yaml:12:50: warning:")
            && stdout.contains(": warning: secret env:SUPPORT_WEBHOOK_SECRET is not set here"),
        "{stdout}"
    );
    assert!(stderr.contains("1 warning(s)"), "{stderr}");
    let (code, stdout, _) = check(true, None);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(": error: secret env:SUPPORT_WEBHOOK_SECRET"),
        "{stdout}"
    );
    let (code, stdout, _) = check(true, Some("s3cret"));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(!stdout.contains("warning"), "{stdout}");

    // An embedded stage whose examples use a label the charter does not declare.
    let charter = std::fs::read_to_string(proj.join("charters/support-triage.yaml")).unwrap();
    let embedded = charter.replace(
        "  otherwise: escalate",
        "    - embedded: { examples: data/examples.csv, accept_above: 0.8 }\n  otherwise: escalate",
    );
    write(&proj, "charters/support-triage.yaml", &embedded);
    write(
        &proj,
        "data/examples.csv",
        "text,label\nrefund please,billing\nit crashed,bug\nwhere is my parcel,shipping\n",
    );
    let (code, stdout, _) = check(false, Some("s"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("data/examples.csv:4:1: error: examples of charter `support-triage`: label `shipping` is not declared in `decide.labels` (billing, bug, other)"),
        "{stdout}"
    );
    // The wrong delimiter.
    write(
        &proj,
        "data/examples.csv",
        "text;label\nrefund please;billing\n",
    );
    let (code, stdout, _) = check(false, Some("s"));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("data/examples.csv:1:1: error:")
            && stdout.contains("the delimiter must be a comma"),
        "{stdout}"
    );
    // Fixed, it passes.
    write(
        &proj,
        "data/examples.csv",
        "text,label\nrefund please,billing\nit crashed,bug\nhello,other\n",
    );
    let (code, stdout, stderr) = check(false, Some("s"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `init` says how to take the first steps: the secret to export and a first `send`.
#[test]
fn init_prints_the_export_and_a_first_send() {
    let dir = temp_dir("init-next");
    let proj = dir.join("proj");
    let (code, _, stderr) = charter(&["init", proj.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    let export = stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("export SUPPORT_WEBHOOK_SECRET="))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert_eq!(export.len(), 32, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "charter send support-triage {0}/samples/ticket.json --dir {0}",
            proj.display()
        )),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second `serve` on a SQLite store that one already serves is refused with the reason;
/// once the first is gone (even by SIGKILL, leaving its lock file), a new one starts. The
/// CLI finds the server from the project's `server.listen` (`--project`, `send --dir`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_serve_on_one_sqlite_store_is_refused_and_the_cli_finds_the_server() {
    charter_connect::install_crypto_provider();
    let dir = temp_dir("lock");
    let proj = dir.join("proj");
    assert!(
        Command::new(bin())
            .arg("init")
            .arg(&proj)
            .output()
            .unwrap()
            .status
            .success()
    );
    let port = free_port();
    let yaml = std::fs::read_to_string(proj.join("charter.yaml")).unwrap();
    write(
        &proj,
        "charter.yaml",
        &yaml.replace(
            "listen: 127.0.0.1:8080",
            &format!("listen: 127.0.0.1:{port}"),
        ),
    );
    // The `note` action's template needs a field the sample lacks: the run fails, and the
    // server log says so in one WARN line.
    let charter = std::fs::read_to_string(proj.join("charters/support-triage.yaml")).unwrap();
    write(
        &proj,
        "charters/support-triage.yaml",
        &charter.replace(
            "log: \"ticket {{ payload.ticket.id }} classified as {{ decision.label }}\"",
            "log: \"ticket {{ payload.ticket.no_such_field }}\"",
        ),
    );
    let serve = |port: u16| {
        Command::new(bin())
            .arg("serve")
            .arg(&proj)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("SUPPORT_WEBHOOK_SECRET", "lock-test-secret")
            .env("CHARTER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let client = reqwest::Client::new();
    let mut first = Server { child: serve(port) };
    wait_healthy(&client, &format!("http://127.0.0.1:{port}")).await;

    let second = serve(free_port()).wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("is already served by another `charter serve`")
            && stderr.contains("charter.db.lock"),
        "{stderr}"
    );

    // No --server: the project's server.listen says where it is.
    let out = Command::new(bin())
        .args(["send", "support-triage"])
        .arg(proj.join("samples/ticket.json"))
        .arg("--dir")
        .arg(&proj)
        .env("SUPPORT_WEBHOOK_SECRET", "lock-test-secret")
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(bin())
        .args(["events", "list", "--json", "--project"])
        .arg(&proj)
        .env_remove("CHARTER_SERVER")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let event_id = listed[0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = Command::new(bin())
            .args(["events", "list", "--json", "--project"])
            .arg(&proj)
            .output()
            .unwrap();
        let listed: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if listed[0]["status"] == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "the run never failed: {listed}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // A crash leaves the lock file behind; it does not block the next server.
    first.kill9();
    let mut log = String::new();
    std::io::Read::read_to_string(first.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    let warns: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("run did not complete"))
        .collect();
    assert_eq!(warns.len(), 1, "one WARN line per failed run: {log}");
    assert!(
        warns[0].contains(&event_id) && warns[0].contains("no_such_field"),
        "the line names the event and the reason: {}",
        warns[0]
    );
    assert!(proj.join("charter.db.lock").exists());
    let port2 = free_port();
    let _third = Server {
        child: serve(port2),
    };
    wait_healthy(&client, &format!("http://127.0.0.1:{port2}")).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `charter eval --stage retrieval` over the knowledge example: the documents answering the
/// example's questions are found (recall@5 and MRR from the real index), and the exported
/// passages are the indexed ones.
#[test]
fn eval_retrieval_reports_recall_and_mrr_for_the_knowledge_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/knowledge");
    let out_dir = temp_dir("eval-retrieval");
    let passages = out_dir.join("passages.jsonl");
    let out = Command::new(bin())
        .args(["eval", "answers", "--stage", "retrieval", "--json", "--dir"])
        .arg(&root)
        .arg("--cases")
        .arg(root.join("cases/questions.jsonl"))
        .arg("--export-passages")
        .arg(&passages)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["cases"], 12);
    assert_eq!(v["documents"], 5);
    assert!(v["recall_at_k"].as_f64().unwrap() >= 0.9, "{v}");
    assert!(v["mrr"].as_f64().unwrap() >= 0.8, "{v}");
    let ranks = v["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 12);
    let exported = std::fs::read_to_string(&passages).unwrap();
    assert_eq!(
        exported.lines().count() as u64,
        v["passages"].as_u64().unwrap()
    );
    assert!(exported.contains("\"doc_key\":\"returns.md\""));
    // A charter without a retrieve step is refused with a clear message.
    let out = Command::new(bin())
        .args(["eval", "nope", "--stage", "retrieval", "--dir"])
        .arg(&root)
        .arg("--cases")
        .arg(root.join("cases/questions.jsonl"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no charter `nope`"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
