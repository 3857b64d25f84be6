//! What leaves the process: spans reaching an OTLP collector with the trace id sent
//! downstream, and a canary secret that never appears in logs, store or API.

use super::*;

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
