//! Sources beyond webhooks, against real local servers: a polled HTTP API (an axum server
//! on 127.0.0.1 whose pages overlap) and cron schedules.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::routing::get;
use charter_core::config::ScheduleTrigger;
use charter_core::cron::{Cron, Zone};
use charter_core::model::EventRecord;
use charter_server::sources::{self, CURSOR_HEADER, POLL_SOURCE, SCHEDULE_SOURCE};
use charter_server::{AppState, Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_store::{EventFilter, EventStore, SourceStateStore};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn write(dir: &Path, rel: &str, contents: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, contents).unwrap();
}

fn temp_project() -> PathBuf {
    std::env::temp_dir().join(format!("charter-sources-{}", uuid::Uuid::now_v7().simple()))
}

/// A charter named `name` with the given trigger body (indented under `trigger:`).
fn charter(name: &str, trigger: &str) -> String {
    format!(
        r#"name: {name}
description: Events from a source beyond webhooks.
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: api
mode: live
uses: [api]
trigger:
{trigger}
routes:
  - when: "true"
    do: [note]
actions:
  note: {{ log: "event {{{{ event.id }}}}", approval: auto }}
escalation: {{ to: ops }}
measure:
  done: [noted]
"#
    )
}

/// A project whose `api` connector points at `api` (a local test server).
fn project(api: std::net::SocketAddr, charters: &[(&str, String)]) -> PathBuf {
    let dir = temp_project();
    write(
        &dir,
        "charter.yaml",
        &format!(
            "worker: {{ poll_interval: 50ms, lease: 5s, shutdown_grace: 2s }}\n\
             connectors:\n  api: {{ type: http, base_url: http://{api}, allow_private: true, timeout: 5s }}\n"
        ),
    );
    for (name, text) in charters {
        write(&dir, &format!("charters/{name}.yaml"), text);
    }
    dir
}

/// A server started in-process over the project's SQLite file.
struct Node {
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    addr: std::net::SocketAddr,
}

async fn boot(dir: &Path, store: &SqliteStore, role: Role) -> Node {
    charter_connect::install_crypto_provider();
    let runtime = Arc::new(Runtime::load(dir).unwrap_or_else(|e| panic!("{e}")));
    let shutdown = CancellationToken::new();
    let running = charter_server::start(
        runtime,
        store.clone(),
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            role,
            worker_id: None,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    Node {
        shutdown,
        done: running.done,
        addr: running.addr,
    }
}

impl Node {
    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.done)
            .await
            .expect("the server did not stop within 20 s")
            .unwrap();
    }

    /// The value of a counter with exactly these labels on this node's /metrics.
    async fn counter(&self, name: &str, labels: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.addr))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

async fn events(store: &SqliteStore, charter: &str) -> Vec<EventRecord> {
    let mut v = store
        .list_events(EventFilter {
            charter: Some(charter.into()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap();
    v.reverse(); // oldest first
    v
}

/// Wait until `charter` has at least `n` events.
async fn wait_events(store: &SqliteStore, charter: &str, n: usize) -> Vec<EventRecord> {
    for _ in 0..400 {
        let e = events(store, charter).await;
        if e.len() >= n {
            return e;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected {n} events of `{charter}` within 20 s, have {}",
        events(store, charter).await.len()
    );
}

/// The local helpdesk API: tickets whose `updated_at` is at least `since`, oldest first,
/// three per page. A page's last ticket is the next page's first (the `since` bound is
/// inclusive), so consecutive pages overlap. Every request's `since` is recorded.
#[derive(Clone, Default)]
struct Helpdesk {
    tickets: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Helpdesk {
    fn add(&self, n: u64) {
        self.tickets.lock().unwrap().push(json!({
            "id": format!("T-{n}"),
            "updated_at": n,
            "subject": format!("ticket {n}"),
        }));
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn tickets(
    State(h): State<Helpdesk>,
    Query(q): Query<BTreeMap<String, String>>,
) -> axum::Json<Value> {
    let since_text = q.get("since").cloned().unwrap_or_default();
    h.requests.lock().unwrap().push(since_text.clone());
    let since: u64 = since_text.parse().unwrap_or(0);
    let page: Vec<Value> = h
        .tickets
        .lock()
        .unwrap()
        .iter()
        .filter(|t| t["updated_at"].as_u64().unwrap() >= since)
        .take(3)
        .cloned()
        .collect();
    axum::Json(json!({ "results": page, "count": page.len() }))
}

/// Contacts paged by token: page `p<n>` holds contacts n..n+2 and points at `p<n+2>`, so
/// each page repeats the previous page's last contact. The last page has no `next`.
async fn contacts(Query(q): Query<BTreeMap<String, String>>) -> axum::Json<Value> {
    let start: u64 = q
        .get("page")
        .and_then(|p| p.strip_prefix('p'))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    let items: Vec<Value> = (start..start + 3)
        .filter(|n| *n <= 7)
        .map(|n| json!({ "email": format!("c{n}@example.test") }))
        .collect();
    let next = if start + 2 < 7 {
        json!(format!("p{}", start + 2))
    } else {
        Value::Null
    };
    axum::Json(json!({ "data": { "contacts": items }, "next": next }))
}

async fn serve_api(h: Helpdesk) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new()
        .route("/tickets", get(tickets))
        .route("/contacts", get(contacts))
        .with_state(h);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, task)
}

fn keys(events: &[EventRecord]) -> Vec<String> {
    events
        .iter()
        .map(|e| e.event.dedupe_key.clone().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_pages_yield_each_item_once_and_a_restart_resumes_from_the_stored_cursor() {
    let api = Helpdesk::default();
    for n in 1..=7 {
        api.add(n);
    }
    let (addr, server) = serve_api(api.clone()).await;
    let dir = project(
        addr,
        &[(
            "tickets",
            charter(
                "tickets",
                r#"  poll:
    connector: api
    path: "/tickets?since={{ cursor }}"
    every: 300ms
    items: /results
    key: /id
    cursor: { max: /updated_at, start: "0" }"#,
            ),
        )],
    );
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let node = boot(&dir, &store, Role::All).await;

    let got = wait_events(&store, "tickets", 7).await;
    // Let a few more ticks re-read the last page (T-7 again each time).
    tokio::time::sleep(Duration::from_millis(900)).await;
    let got_after = events(&store, "tickets").await;
    assert_eq!(got_after.len(), 7, "an overlap made a second event");
    let expected: Vec<String> = (1..=7).map(|n| format!("T-{n}")).collect();
    assert_eq!(keys(&got), expected, "each ticket once, in page order");
    assert_eq!(got[0].event.payload["subject"], "ticket 1");
    assert_eq!(got[0].event.source, "poll:api");
    assert_eq!(
        got[3].event.headers.get(CURSOR_HEADER).map(String::as_str),
        Some("3"),
        "T-4 came from the page polled with cursor 3"
    );
    let first_run = api.requests();
    assert_eq!(
        first_run[..4],
        ["0", "3", "5", "7"],
        "pages follow the cursor at once: {first_run:?}"
    );
    assert!(
        first_run[4..].iter().all(|s| s == "7"),
        "later ticks poll from the stored cursor: {first_run:?}"
    );
    // The overlapping items were seen and recognised as duplicates.
    let dups = node
        .counter("charter_events_duplicate_total", "charter=\"tickets\"")
        .await;
    assert!(
        dups >= 3.0,
        "expected the overlaps counted as duplicates, got {dups}"
    );
    assert_eq!(
        store
            .get_cursor("tickets", POLL_SOURCE)
            .await
            .unwrap()
            .as_deref(),
        Some("7")
    );
    node.stop().await;
    store.close().await;

    // New tickets arrive while Charter is down; after the restart it resumes from the
    // stored cursor (7), not from `start` (0).
    api.add(8);
    api.add(9);
    let before = api.requests().len();
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let node = boot(&dir, &store, Role::All).await;
    let got = wait_events(&store, "tickets", 9).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second_run: Vec<String> = api.requests()[before..].to_vec();
    assert_eq!(
        second_run.first().map(String::as_str),
        Some("7"),
        "the first poll after the restart uses the stored cursor: {second_run:?}"
    );
    assert!(
        !second_run.iter().any(|s| s == "0"),
        "the restart polled from the start again: {second_run:?}"
    );
    let all = events(&store, "tickets").await;
    assert_eq!(all.len(), 9, "no duplicates across the restart");
    let expected: Vec<String> = (1..=9).map(|n| format!("T-{n}")).collect();
    assert_eq!(keys(&got), expected);
    assert_eq!(
        store
            .get_cursor("tickets", POLL_SOURCE)
            .await
            .unwrap()
            .as_deref(),
        Some("9")
    );
    node.stop().await;
    store.close().await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_tokens_from_the_response_walk_every_page_once() {
    let (addr, server) = serve_api(Helpdesk::default()).await;
    let dir = project(
        addr,
        &[(
            "contacts",
            charter(
                "contacts",
                r#"  poll:
    connector: api
    path: "/contacts?page={{ cursor }}"
    every: 300ms
    items: /data/contacts
    key: "contact:{{ item.email }}"
    cursor: { next: /next, start: p1 }"#,
            ),
        )],
    );
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let node = boot(&dir, &store, Role::All).await;
    let got = wait_events(&store, "contacts", 7).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(events(&store, "contacts").await.len(), 7);
    let expected: Vec<String> = (1..=7)
        .map(|n| format!("contact:c{n}@example.test"))
        .collect();
    assert_eq!(keys(&got), expected);
    // The last page has no `next`: the cursor stays on it.
    assert_eq!(
        store
            .get_cursor("contacts", POLL_SOURCE)
            .await
            .unwrap()
            .as_deref(),
        Some("p5")
    );
    node.stop().await;
    store.close().await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_api_leaves_the_cursor_and_stores_nothing() {
    // A server that answers 503 to everything.
    let app = axum::Router::new()
        .fallback(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let dir = project(
        addr,
        &[(
            "tickets",
            charter(
                "tickets",
                "  poll: { connector: api, path: /tickets, every: 200ms, items: /results, key: /id, cursor: { next: /n } }",
            ),
        )],
    );
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let node = boot(&dir, &store, Role::All).await;
    let mut errors = 0.0;
    for _ in 0..100 {
        errors = node
            .counter(
                "charter_source_polls_total",
                "charter=\"tickets\",source=\"poll\",result=\"error\"",
            )
            .await;
        if errors >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(errors >= 2.0, "expected failed polls counted, got {errors}");
    assert!(events(&store, "tickets").await.is_empty());
    assert_eq!(
        store.get_cursor("tickets", POLL_SOURCE).await.unwrap(),
        None
    );
    node.stop().await;
    store.close().await;
    server.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_on_two_nodes_makes_one_event_per_fire_time() {
    let dir = project(
        ([127, 0, 0, 1], 9).into(),
        &[(
            "digest",
            charter("digest", "  schedule: { cron: \"* * * * * *\" }"),
        )],
    );
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    // Two nodes sharing one store, as two API nodes of a cluster share one database.
    let a = boot(&dir, &store, Role::All).await;
    let b = boot(&dir, &store, Role::Api).await;
    let got = wait_events(&store, "digest", 3).await;
    let (dup_a, dup_b) = (
        a.counter("charter_events_duplicate_total", "charter=\"digest\"")
            .await,
        b.counter("charter_events_duplicate_total", "charter=\"digest\"")
            .await,
    );
    a.stop().await;
    b.stop().await;
    let all = events(&store, "digest").await;
    assert!(all.len() >= got.len());
    let keys = keys(&all);
    let distinct: BTreeSet<&String> = keys.iter().collect();
    assert_eq!(
        distinct.len(),
        keys.len(),
        "two events for one fire time: {keys:?}"
    );
    // Whether the second node met a duplicate or saw the stored fire time first depends on
    // timing; either way there is one event per fire time.
    eprintln!("duplicates absorbed: {dup_a} + {dup_b}");
    for e in &all {
        let when = e.event.payload["scheduled_for"].as_str().unwrap();
        assert_eq!(
            e.event.dedupe_key.as_deref(),
            Some(format!("schedule:{when}").as_str())
        );
        assert!(when.ends_with('Z') && when.len() == 20, "{when}");
        assert_eq!(e.event.payload["charter"], "digest");
        assert_eq!(e.event.source, "schedule");
    }
    // Consecutive seconds.
    let secs: Vec<&str> = all
        .iter()
        .map(|e| e.event.payload["scheduled_for"].as_str().unwrap())
        .collect();
    let mut sorted = secs.clone();
    sorted.sort();
    assert_eq!(secs, sorted, "fire times in order");
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The missed-fire policy, driven with explicit times: nothing in the past on the first
/// start; after downtime only the most recent missed fire time, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_downtime_only_the_latest_missed_fire_time_fires_once() {
    let dir = project(
        ([127, 0, 0, 1], 9).into(),
        &[(
            "daily",
            charter("daily", "  schedule: { cron: \"0 9 * * *\" }"),
        )],
    );
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let state = AppState::new(
        runtime,
        store.clone(),
        Arc::new(charter_connect::HttpExecutor::new().unwrap()),
    );
    let schedule = ScheduleTrigger {
        cron: Cron::parse("0 9 * * *").unwrap(),
        zone: Zone::utc(),
    };
    // 2026-11-05T10:00:00Z: first start, after today's 09:00.
    let t0: i64 = 1_793_872_800_000;
    let wait = sources::schedule_step(&state, "daily", &schedule, t0)
        .await
        .unwrap();
    assert!(
        events(&store, "daily").await.is_empty(),
        "fired for the past on first start"
    );
    assert_eq!(
        wait,
        Duration::from_secs(23 * 3600),
        "next fire at 09:00 tomorrow"
    );
    // Down for three days; back at 2026-11-08T12:00:00Z.
    let t1 = t0 + (3 * 24 + 2) * 3_600_000;
    sources::schedule_step(&state, "daily", &schedule, t1)
        .await
        .unwrap();
    sources::schedule_step(&state, "daily", &schedule, t1 + 1000)
        .await
        .unwrap();
    let got = events(&store, "daily").await;
    assert_eq!(
        got.len(),
        1,
        "the missed fire times fire once, not three times"
    );
    assert_eq!(
        got[0].event.payload["scheduled_for"],
        "2026-11-08T09:00:00Z"
    );
    assert_eq!(
        store
            .get_cursor("daily", SCHEDULE_SOURCE)
            .await
            .unwrap()
            .as_deref(),
        Some("1794128400")
    );
    // Another node that read the cursor before this one stored it fires the same time
    // again: the dedupe key absorbs it.
    store
        .put_cursor("daily", SCHEDULE_SOURCE, &(t0 / 1000).to_string(), t1)
        .await
        .unwrap();
    sources::schedule_step(&state, "daily", &schedule, t1 + 2000)
        .await
        .unwrap();
    assert_eq!(
        events(&store, "daily").await.len(),
        1,
        "a second event for one fire time"
    );
    assert_eq!(
        state.metrics.counter(
            charter_server::metrics::Metric::EventsDuplicate,
            &[("charter", "daily")]
        ),
        1.0
    );
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A daily digest at 09:00 in Paris, driven with explicit times across the spring change:
/// 08:00Z before it, 07:00Z after, and the payload says when that was on the local clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_in_a_time_zone_fires_at_local_times_across_a_dst_change() {
    let dir = project(
        ([127, 0, 0, 1], 9).into(),
        &[(
            "digest",
            charter(
                "digest",
                "  schedule: { cron: \"0 9 * * *\", timezone: Europe/Paris }",
            ),
        )],
    );
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let schedule = runtime.charters["digest"]
        .charter
        .trigger
        .schedule
        .clone()
        .unwrap();
    assert_eq!(schedule.zone.name(), "Europe/Paris");
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    let state = AppState::new(
        runtime,
        store.clone(),
        Arc::new(charter_connect::HttpExecutor::new().unwrap()),
    );
    // 2026-03-28T10:00:00Z (11:00 CET), first start: the next digest is Sunday 09:00 CEST,
    // the first day of summer time: 2026-03-29T07:00:00Z, 21 hours later.
    let t0: i64 = 1_774_692_000_000;
    let wait = sources::schedule_step(&state, "digest", &schedule, t0)
        .await
        .unwrap();
    assert_eq!(wait, Duration::from_secs(21 * 3600));
    let t1 = t0 + 21 * 3_600_000 + 500;
    let wait = sources::schedule_step(&state, "digest", &schedule, t1)
        .await
        .unwrap();
    let got = events(&store, "digest").await;
    assert_eq!(got.len(), 1);
    let p = &got[0].event.payload;
    assert_eq!(p["scheduled_for"], "2026-03-29T07:00:00Z");
    assert_eq!(p["scheduled_for_local"], "2026-03-29T09:00:00+02:00");
    assert_eq!(p["timezone"], "Europe/Paris");
    assert_eq!(
        got[0].event.dedupe_key.as_deref(),
        Some("schedule:2026-03-29T07:00:00Z")
    );
    // The next one is a whole day later (summer time on both days).
    assert_eq!(wait, Duration::from_millis(24 * 3_600_000 - 500));
    store.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
