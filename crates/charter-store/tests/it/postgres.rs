//! The PostgreSQL store against a real server: what only a shared database has (several
//! nodes claiming at once, racing migrations, LISTEN/NOTIFY,
//! cluster-wide job locks). The shared conformance suite runs from `conformance.rs`.
//!
//! Server: `CHARTER_TEST_PG` (a connection string with rights to create databases), default
//! `postgres://postgres@127.0.0.1:5432/postgres`. Every test works in a database of its own,
//! `charter_test_<uuid>`, created at the start and dropped at the end. Without a server the
//! tests skip with one line (`CHARTER_SKIP_PG=1` skips without looking); under `CI=true`
//! they fail instead (`tests/tools.rs`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charter_core::model::{EventStatus, NewEvent, RejectedPayload, UnixMillis};
use charter_store::postgres::{self, PgStore, SCHEMA_VERSION, with_dbname};
use charter_store::{EventFilter, EventStore, IngestOutcome, QueueStore, StoreError};
use uuid::Uuid;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, dropped (best effort) when the value is dropped.
pub(crate) struct TestDb {
    admin_url: String,
    name: String,
    /// Connection string of the test database.
    pub(crate) url: String,
}

/// Create a fresh database, or `None` when PostgreSQL is missing and the test may skip
/// (`crate::tools`: never under CI=true).
pub(crate) async fn test_db(test: &str) -> Option<TestDb> {
    let admin_url = std::env::var("CHARTER_TEST_PG").unwrap_or_else(|_| DEFAULT_URL.to_string());
    if !crate::tools::available(crate::tools::Tool::Postgres, || {
        crate::tools::tcp_listening(&crate::tools::pg_addr(&admin_url))
    }) {
        return None;
    }
    let admin = match connect(&admin_url).await {
        Ok(client) => client,
        Err(e) => {
            let e = match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            };
            panic!(
                "{test}: PostgreSQL at {admin_url} accepts connections but not this one ({e}); \
                 point CHARTER_TEST_PG at a server with trust auth for postgres"
            );
        }
    };
    let name = format!("charter_test_{}", Uuid::now_v7().simple());
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("CREATE DATABASE");
    let url = with_dbname(&admin_url, &name);
    Some(TestDb {
        admin_url,
        name,
        url,
    })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs inside the test's runtime (or while unwinding); use a runtime of its own
        // on another thread. WITH (FORCE) ends the connections the stores still hold.
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let admin = connect(&admin_url).await.map_err(|e| e.to_string())?;
                admin.batch_execute(&sql).await.map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "warning: could not drop test database {}: {dropped:?}",
                self.name
            );
        }
    }
}

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn now() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn event(charter: &str, dedupe: Option<&str>) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "test".to_string(),
        event_type: None,
        dedupe_key: dedupe.map(str::to_string),
        received_at: now(),
        headers: BTreeMap::new(),
        payload: serde_json::json!({ "n": 1 }),
    }
}

#[test]
fn with_dbname_replaces_the_database() {
    assert_eq!(
        with_dbname("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_dbname("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(
        with_dbname("postgresql://h:5432", "x"),
        "postgresql://h:5432/x"
    );
    assert_eq!(with_dbname("host=h user=u", "x"), "host=h user=u dbname=x");
    assert_eq!(
        with_dbname("postgres://u@h:5432/postgres?sslmode=disable", "x"),
        "postgres://u@h:5432/x?sslmode=disable"
    );
    assert_eq!(with_dbname("postgres://h", "x"), "postgres://h/x");
}

/// Two nodes, four workers each, claiming one charter's events as fast as they can: the
/// charter limit holds across nodes at every moment and no event is claimed twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_never_exceed_the_charter_limit() {
    let Some(db) = test_db("two_nodes_never_exceed_the_charter_limit").await else {
        return;
    };
    const EVENTS: usize = 120;
    const LIMIT: usize = 3;
    let charter = "two-nodes";
    let a = PgStore::connect(&db.url, 4).await.expect("connect node a");
    let b = PgStore::connect(&db.url, 4).await.expect("connect node b");
    for i in 0..EVENTS {
        let node = if i % 2 == 0 { &a } else { &b };
        let out = node.ingest(event(charter, None)).await.unwrap();
        assert!(matches!(out, IngestOutcome::Stored(_)));
    }

    // Our count of held events rises after a claim commits and falls before the release
    // does, so it never exceeds what the database counts as live leases.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        let worker = format!("node{}-w{w}", w % 2);
        let (in_flight, max_seen, finished, seen) = (
            Arc::clone(&in_flight),
            Arc::clone(&max_seen),
            Arc::clone(&finished),
            Arc::clone(&seen),
        );
        workers.push(tokio::spawn(async move {
            while finished.load(Ordering::SeqCst) < EVENTS {
                let got = store
                    .claim(charter, &worker, 2, LIMIT, Duration::from_secs(60), now())
                    .await
                    .unwrap();
                if got.is_empty() {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let held = in_flight.fetch_add(got.len(), Ordering::SeqCst) + got.len();
                max_seen.fetch_max(held, Ordering::SeqCst);
                assert!(held <= LIMIT, "{held} events in flight, limit {LIMIT}");
                for c in &got {
                    assert!(
                        seen.lock().unwrap().insert(c.event.id),
                        "event {} claimed twice",
                        c.event.id
                    );
                    assert_eq!(c.attempt, 1);
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
                for c in got {
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    assert!(
                        store
                            .release(c.event.id, &worker, EventStatus::Done, now())
                            .await
                            .unwrap(),
                        "the claiming worker could not release"
                    );
                    finished.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(120), async {
        for w in workers {
            w.await.expect("worker panicked");
        }
    })
    .await
    .expect("workers did not finish in time");

    assert_eq!(seen.lock().unwrap().len(), EVENTS);
    assert!(
        max_seen.load(Ordering::SeqCst) >= 2,
        "the workers never held events concurrently; the test proved nothing"
    );
    let done = a
        .list_events(EventFilter {
            charter: Some(charter.to_string()),
            status: Some(EventStatus::Done),
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(done.len(), EVENTS);
    assert!(done.iter().all(|r| r.attempts == 1));
    a.close().await;
    b.close().await;
}

/// The same delivery arriving at two nodes at once is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_race_across_nodes() {
    let Some(db) = test_db("dedupe_race_across_nodes").await else {
        return;
    };
    let a = PgStore::connect(&db.url, 6).await.expect("connect node a");
    let b = PgStore::connect(&db.url, 6).await.expect("connect node b");
    let mut tasks = Vec::new();
    for i in 0..60 {
        let node = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            node.ingest(event("race", Some("same-delivery"))).await
        }));
    }
    let mut stored = Vec::new();
    let mut duplicates = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            IngestOutcome::Stored(id) => stored.push(id),
            IngestOutcome::Duplicate(id) => duplicates.push(id),
        }
    }
    assert_eq!(stored.len(), 1, "Stored {} times", stored.len());
    assert_eq!(duplicates.len(), 59);
    assert!(duplicates.iter().all(|id| *id == stored[0]));
    let listed = b
        .list_events(EventFilter {
            charter: Some("race".to_string()),
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    a.close().await;
    b.close().await;
}

/// Nodes starting at once on an empty database: every one succeeds and the migrations are
/// applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_migrate_once() {
    let Some(db) = test_db("racing_connects_migrate_once").await else {
        return;
    };
    let (a, b, c, m) = tokio::join!(
        PgStore::connect(&db.url, 2),
        PgStore::connect(&db.url, 2),
        PgStore::connect(&db.url, 2),
        postgres::migrate(&db.url),
    );
    let (a, b, c) = (a.expect("node a"), b.expect("node b"), c.expect("node c"));
    assert_eq!(m.expect("migrate"), SCHEMA_VERSION);

    let check = connect(&db.url).await.unwrap();
    let row = check
        .query_one(
            "SELECT count(*), max(version) FROM charter_schema_version",
            &[],
        )
        .await
        .unwrap();
    let (rows, max): (i64, i32) = (row.get(0), row.get(1));
    assert_eq!(rows, i64::from(SCHEMA_VERSION), "one row per migration");
    assert_eq!(max as u32, SCHEMA_VERSION);

    // Connecting again changes nothing, and the nodes share one database.
    let d = PgStore::connect(&db.url, 1).await.expect("reconnect");
    let again: i64 = check
        .query_one("SELECT count(*) FROM charter_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(again, rows);
    let ev = event("shared", Some("k"));
    assert_eq!(
        a.ingest(ev.clone()).await.unwrap(),
        IngestOutcome::Stored(ev.id)
    );
    assert_eq!(
        b.ingest(event("shared", Some("k"))).await.unwrap(),
        IngestOutcome::Duplicate(ev.id)
    );
    assert_eq!(c.get_event(ev.id).await.unwrap().unwrap().event, ev);
    for s in [a, b, c, d] {
        s.close().await;
    }
}

/// A database migrated by a newer build is refused rather than misused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newer_schema_is_refused() {
    let Some(db) = test_db("newer_schema_is_refused").await else {
        return;
    };
    postgres::migrate(&db.url).await.expect("migrate");
    let client = connect(&db.url).await.unwrap();
    client
        .execute(
            "INSERT INTO charter_schema_version (version, applied_at) VALUES ($1, 0)",
            &[&(SCHEMA_VERSION as i32 + 1)],
        )
        .await
        .unwrap();
    match PgStore::connect(&db.url, 1).await {
        Err(StoreError::Database(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("connect to a newer schema returned {other:?}"),
    }
    assert!(postgres::migrate(&db.url).await.is_err());
}

async fn recv(rx: &mut tokio::sync::mpsc::Receiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no notification within 5 s")
        .expect("listener ended")
}

/// Stored events are announced to listeners on any node; duplicates are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_receives_ingest_notifications() {
    let Some(db) = test_db("listen_receives_ingest_notifications").await else {
        return;
    };
    let node_a = PgStore::connect(&db.url, 2).await.expect("connect");
    let node_b = PgStore::connect(&db.url, 2).await.expect("connect");
    let mut rx = node_a.listen().await.expect("listen");

    let first = event("listen-a", Some("k1"));
    assert!(matches!(
        node_b.ingest(first).await.unwrap(),
        IngestOutcome::Stored(_)
    ));
    assert_eq!(recv(&mut rx).await, "listen-a");

    // A duplicate stores nothing and announces nothing: the next notification is the next
    // stored event's (notifications arrive in commit order).
    assert!(matches!(
        node_b.ingest(event("listen-a", Some("k1"))).await.unwrap(),
        IngestOutcome::Duplicate(_)
    ));
    assert!(matches!(
        node_a.ingest(event("listen-b", None)).await.unwrap(),
        IngestOutcome::Stored(_)
    ));
    assert_eq!(recv(&mut rx).await, "listen-b");

    // A burst of 20 from concurrent ingests: announced after the commits, possibly several
    // events per notification, at least one, never more than one per event.
    let mut burst = tokio::task::JoinSet::new();
    for i in 0..20 {
        let node = node_b.clone();
        burst.spawn(async move {
            node.ingest(event("listen-burst", Some(&format!("b{i}"))))
                .await
        });
    }
    while let Some(r) = burst.join_next().await {
        assert!(matches!(r.unwrap().unwrap(), IngestOutcome::Stored(_)));
    }
    let mut announced = vec![recv(&mut rx).await];
    while let Ok(Some(more)) = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await {
        announced.push(more);
    }
    assert!(
        announced.iter().all(|c| c == "listen-burst") && announced.len() <= 20,
        "{announced:?}"
    );

    // Closing the store ends the listener.
    node_a.close().await;
    let ended = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("listener did not end after close");
    assert!(ended.is_none(), "unexpected notification {ended:?}");
    node_b.close().await;
}

/// A job lock is held by one session in the whole cluster until released or dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_lock_is_exclusive_across_nodes() {
    let Some(db) = test_db("job_lock_is_exclusive_across_nodes").await else {
        return;
    };
    let a = PgStore::connect(&db.url, 1).await.expect("connect");
    let b = PgStore::connect(&db.url, 2).await.expect("connect");

    let held = a.try_lock_job("nightly").await.unwrap().expect("free lock");
    assert_eq!(held.name(), "nightly");
    assert!(held.is_connected());
    assert!(b.try_lock_job("nightly").await.unwrap().is_none());
    let other = b.try_lock_job("hourly").await.unwrap();
    assert!(other.is_some(), "a different job name is a different lock");

    // Released explicitly: another node may take it, and node a's only pooled connection
    // went back to the pool without the lock.
    held.release().await.expect("release");
    let held_b = b
        .try_lock_job("nightly")
        .await
        .unwrap()
        .expect("freed lock");
    assert!(a.try_lock_job("nightly").await.unwrap().is_none());

    // Dropped: its connection closes and the server frees the lock soon after.
    drop(held_b);
    let mut retaken = None;
    for _ in 0..100 {
        if let Some(lock) = a.try_lock_job("nightly").await.unwrap() {
            retaken = Some(lock);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(retaken.is_some(), "a dropped lock was never freed");
    drop(retaken);
    drop(other);
    a.close().await;
    b.close().await;
}

/// A closed store refuses new calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_store_refuses_calls() {
    let Some(db) = test_db("closed_store_refuses_calls").await else {
        return;
    };
    let store = PgStore::connect(&db.url, 2).await.expect("connect");
    store.close().await;
    assert!(matches!(
        store.get_event(Uuid::now_v7()).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.ingest(event("c", None)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(store.listen().await, Err(StoreError::Closed)));
}

/// A rejected body is kept byte for byte, NUL characters included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_body_keeps_nul_characters() {
    let Some(db) = test_db("rejected_body_keeps_nul_characters").await else {
        return;
    };
    let store = PgStore::connect(&db.url, 2).await.expect("connect");
    let rejected = RejectedPayload {
        id: Uuid::now_v7(),
        charter: "nul".to_string(),
        source: "test".to_string(),
        received_at: now(),
        headers: BTreeMap::new(),
        body: "a\u{0}b \u{fffd}".to_string(),
        reasons: vec!["not JSON".to_string()],
    };
    store.reject(rejected.clone()).await.expect("reject");
    let listed = store
        .list_rejected(Some("nul".to_string()), 10)
        .await
        .unwrap();
    assert_eq!(listed, vec![rejected]);
    store.close().await;
}
