//! The inbox and the list endpoints on a real backlog (issue #22):
//! `cargo bench -p charter-server --bench inbox` (add `-- --events 100000`; PostgreSQL is
//! measured too when it accepts connections at `CHARTER_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`, in a throw-away database).
//!
//! A real server on 127.0.0.1 over a real store, seeded through the store API with
//! `--events` events (100,000 by default), 3,000 open escalations (40 of them dead letters)
//! and 220 pending approvals. Measured from a client on the same machine, so each figure
//! includes the loopback HTTP round trip (an upper bound on the server's own time):
//! - the inbox's first page: its HTML size and time to answer;
//! - `GET /api/v1/events?limit=100` paged through 50 pages by cursor (keyset), unfiltered
//!   and by status; and the first page of open escalations with its total;
//! - the baseline, in the same run: `GET /assets/inbox.js`, a static answer through the
//!   same router and middleware, so `ratio` = how many static answers one page costs.

#![allow(clippy::unwrap_used, clippy::cast_precision_loss)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_core::model::NewEvent;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::{IngestOutcome, NewApproval, NewEscalation, Store};
use futures_util::future::join_all;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CHARTER: &str = r#"
name: backlog
description: the benchmark's backlog
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk]
trigger:
  webhook: { path: /hooks/backlog, verify: none }
  dedupe: "{{ payload.ticket.id }}"
  text: "{{ payload.ticket.subject }}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - { when: 'payload.ticket.subject.contains("refund")', label: billing }
  otherwise: escalate
routes:
  - when: decision.label == "billing"
    do: [assign_billing]
actions:
  assign_billing:
    connector: helpdesk
    request: { method: PUT, path: "/api/tickets/{{ payload.ticket.id }}", json: { group: billing } }
    approval: { reviewers: [lead] }
escalation: { to: support-leads }
measure:
  success: [ticket_routed]
"#;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn seed<S: Store>(store: &S, events: usize) {
    let base = 1_760_000_000_000_i64;
    store.set_paused("backlog", true, base).await.unwrap();
    let mut ids = Vec::with_capacity(events);
    for chunk in (0..events).collect::<Vec<_>>().chunks(1000) {
        let stored = join_all(chunk.iter().map(|&n| {
            store.ingest(NewEvent {
                id: Uuid::now_v7(),
                charter: "backlog".into(),
                source: "webhook:/hooks/backlog".into(),
                event_type: None,
                dedupe_key: Some(format!("ticket-{n}")),
                received_at: base + n as i64,
                headers: Default::default(),
                payload: json!({"ticket": {"id": n, "subject": format!("ticket {n}")}}),
            })
        }))
        .await;
        for s in stored {
            if let IngestOutcome::Stored(id) = s.unwrap() {
                ids.push(id);
            }
        }
    }
    let (approvals, escalations, dead) = (220, 2_960, 40);
    let waiting = approvals + escalations + dead;
    for chunk in (0..waiting).collect::<Vec<_>>().chunks(500) {
        let ids = &ids;
        join_all(chunk.iter().map(|&i| async move {
            let run = Uuid::now_v7();
            store.hold_event(ids[i], base).await.unwrap();
            store
                .start_run(run, ids[i], "backlog", "v1", "live", base)
                .await
                .unwrap();
            if i < approvals {
                store
                    .create_approval(NewApproval {
                        id: Uuid::now_v7(),
                        run_id: run,
                        event_id: ids[i],
                        charter: "backlog".into(),
                        action: "assign_billing".into(),
                        params: json!({"target": format!("/api/tickets/{i}"), "json": {"group": "billing"}}),
                        params_hash: format!("h{i}"),
                        reviewers: vec!["lead".into()],
                        created_at: base + i as i64,
                        expires_at: None,
                        on_expiry: None,
                    })
                    .await
                    .unwrap();
            } else {
                let reason = if i >= approvals + escalations {
                    "dead_letter"
                } else {
                    "low_confidence"
                };
                store
                    .create_escalation(NewEscalation {
                        id: Uuid::now_v7(),
                        run_id: Some(run),
                        event_id: ids[i],
                        charter: "backlog".into(),
                        reason: reason.into(),
                        detail: json!({"stages": [{"stage": "llm", "label": "billing", "confidence": 0.55}]}),
                        target: Some("support-leads".into()),
                        created_at: base + i as i64,
                    })
                    .await
                    .unwrap();
            }
        }))
        .await;
    }
}

/// p50 and p99 of `samples` in milliseconds.
fn pct(samples: &mut [Duration]) -> (f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[i].as_secs_f64() * 1000.0
    };
    (at(0.5), at(0.99))
}

async fn timed(client: &reqwest::Client, url: &str, cookie: &str) -> (Duration, String) {
    let t = Instant::now();
    let r = client
        .get(url)
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{url}: {}", r.status());
    let body = r.text().await.unwrap();
    (t.elapsed(), body)
}

async fn measure<S: Store>(label: &str, dir: &std::path::Path, store: S, events: usize) {
    let t = Instant::now();
    seed(&store, events).await;
    eprintln!(
        "{label}: seeded {events} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let runtime = Arc::new(Runtime::load(dir).unwrap());
    let shutdown = CancellationToken::new();
    let running = charter_server::start(
        runtime,
        store,
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            role: Role::All,
            worker_id: Some("bench".into()),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // The open UI (no tokens): the login page starts a local session.
    let login = client.get(format!("{base}/login")).send().await.unwrap();
    let cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("charter_session="))
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();

    let rounds = 60;
    let mut stat = Vec::new();
    let mut inbox = Vec::new();
    let mut size = 0;
    for i in 0..rounds + 5 {
        let (ds, _) = timed(&client, &format!("{base}/assets/inbox.js"), &cookie).await;
        let (di, body) = timed(&client, &format!("{base}/inbox"), &cookie).await;
        assert!(body.contains("data-count=\"approvals\""));
        size = body.len();
        if i >= 5 {
            stat.push(ds);
            inbox.push(di);
        }
    }
    let (s50, s99) = pct(&mut stat);
    let (i50, i99) = pct(&mut inbox);
    println!("{label} static /assets/inbox.js (baseline): p50 {s50:.2} ms, p99 {s99:.2} ms");
    println!(
        "{label} inbox first page: {size} bytes, p50 {i50:.2} ms, p99 {i99:.2} ms (ratio p50 {:.1}x the baseline)",
        i50 / s50
    );

    for query in ["limit=100", "limit=100&status=waiting"] {
        let mut pages = Vec::new();
        for _round in 0..3 {
            let mut cursor = String::new();
            for _ in 0..50 {
                let (d, body) = timed(
                    &client,
                    &format!("{base}/api/v1/events?{query}&cursor={cursor}"),
                    &cookie,
                )
                .await;
                pages.push(d);
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                match v["next_cursor"].as_str() {
                    Some(c) => cursor = c.to_string(),
                    None => break,
                }
            }
        }
        let n = pages.len();
        let (p50, p99) = pct(&mut pages);
        println!(
            "{label} GET /api/v1/events?{query} by cursor ({n} pages): p50 {p50:.2} ms, p99 {p99:.2} ms (ratio p50 {:.1}x the baseline)",
            p50 / s50
        );
    }
    let mut esc = Vec::new();
    for _ in 0..rounds {
        let (d, body) = timed(
            &client,
            &format!("{base}/api/v1/escalations?limit=100"),
            &cookie,
        )
        .await;
        assert!(
            body.contains("\"total\":3000"),
            "{}",
            &body[body.len() - 200..]
        );
        esc.push(d);
    }
    let (e50, e99) = pct(&mut esc);
    println!(
        "{label} GET /api/v1/escalations?limit=100 (total 3000): p50 {e50:.2} ms, p99 {e99:.2} ms"
    );
    shutdown.cancel();
    running.done.await.ok();
}

fn project(dir: &std::path::Path, store_yaml: &str) {
    std::fs::create_dir_all(dir.join("charters")).unwrap();
    std::fs::write(
        dir.join("charter.yaml"),
        format!(
            "{store_yaml}connectors:\n  helpdesk:\n    type: http\n    base_url: http://127.0.0.1:9\n    allow_private: true\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("charters/backlog.yaml"), CHARTER).unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    charter_connect::install_crypto_provider();
    let events = arg("--events", 100_000);
    let dir = std::env::temp_dir().join(format!("charter-bench-inbox-{}", Uuid::now_v7().simple()));
    project(&dir, "");
    let runtime = Runtime::load(&dir).unwrap();
    let sqlite = charter_store::sqlite::SqliteStore::open(&runtime.store_path()).unwrap();
    measure("sqlite", &dir, sqlite.clone(), events).await;
    sqlite.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let admin_url = std::env::var("CHARTER_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let Ok((admin, conn)) = tokio_postgres::connect(&admin_url, tokio_postgres::NoTls).await else {
        println!("postgres: not reachable at {admin_url}; skipped");
        return;
    };
    tokio::spawn(conn);
    let name = format!("charter_bench_{}", Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let url = match admin_url.rsplit_once('/') {
        Some((head, _)) => format!("{head}/{name}"),
        None => admin_url.clone(),
    };
    let pg = charter_store::postgres::PgStore::connect(&url, 8)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("charter-bench-inbox-{}", Uuid::now_v7().simple()));
    project(&dir, "");
    measure("postgres", &dir, pg.clone(), events).await;
    pg.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    admin
        .batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .await
        .unwrap();
}
