//! Crash tests: a child `charter serve` killed with SIGKILL under load and restarted, alone
//! on SQLite and as three nodes on PostgreSQL; no acknowledged event lost, no effect doubled.

use super::*;

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
