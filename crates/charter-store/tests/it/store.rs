//! The SQLite store against a real database file: SQLite-specific behaviour (durability
//! across reopen, migrations, group commit). The shared conformance suite runs from
//! `conformance.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use charter_core::model::{EventStatus, NewEvent};
use charter_store::sqlite::{Durability, SCHEMA_VERSION, SqliteOptions, SqliteStore};
use charter_store::{EventFilter, EventStore, IngestOutcome, QueueStore, StoreError};
use uuid::Uuid;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("charter-store-test-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn db(&self) -> PathBuf {
        self.0.join("charter.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn event(charter: &str, dedupe: Option<&str>, n: u64) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "test".to_string(),
        event_type: None,
        dedupe_key: dedupe.map(str::to_string),
        received_at: 1_700_000_000_000,
        headers: BTreeMap::new(),
        payload: serde_json::json!({ "n": n }),
    }
}

fn open(path: &Path) -> SqliteStore {
    SqliteStore::open(path).expect("open store")
}

fn open_pipelined(path: &Path) -> SqliteStore {
    SqliteStore::open_with(
        path,
        SqliteOptions {
            durability: Durability::Pipelined,
            ..SqliteOptions::default()
        },
    )
    .expect("open store (pipelined)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_close_and_reopen() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    let ev = event("c", Some("key-1"), 1);
    assert_eq!(
        store.ingest(ev.clone()).await.unwrap(),
        IngestOutcome::Stored(ev.id)
    );
    let claimed = store
        .claim("c", "w", 1, 1, std::time::Duration::from_secs(60), 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    store.close().await;
    // After close every call fails cleanly.
    assert!(matches!(
        store.ingest(event("c", None, 2)).await,
        Err(StoreError::Closed)
    ));
    assert!(matches!(
        store.get_event(ev.id).await,
        Err(StoreError::Closed)
    ));
    drop(store);

    let store = open(&dir.db());
    let rec = store.get_event(ev.id).await.unwrap().expect("event kept");
    assert_eq!(rec.event, ev);
    assert_eq!(rec.status, EventStatus::Processing);
    assert_eq!(rec.attempts, 1);
    // The dedupe key is remembered across the reopen.
    assert_eq!(
        store.ingest(event("c", Some("key-1"), 3)).await.unwrap(),
        IngestOutcome::Duplicate(ev.id)
    );
    store.close().await;
}

#[tokio::test]
async fn data_survives_drop_without_close() {
    let dir = TempDir::new();
    let ev = event("c", None, 1);
    {
        let store = open(&dir.db());
        store.ingest(ev.clone()).await.unwrap();
        // Dropped without close: an acknowledged write is already committed.
    }
    let store = open(&dir.db());
    assert_eq!(store.get_event(ev.id).await.unwrap().unwrap().event, ev);
}

#[tokio::test]
async fn migrations_are_applied_once_and_reopen_is_idempotent() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    assert_eq!(
        SCHEMA_VERSION, 16,
        "update this test when adding a migration"
    );
    store.ingest(event("c", None, 1)).await.unwrap();
    store.close().await;

    for _ in 0..3 {
        let store = open(&dir.db());
        assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
        let events = store.list_events(EventFilter::default()).await.unwrap();
        assert_eq!(
            events.len(),
            1,
            "reopening must not recreate or wipe tables"
        );
        store.close().await;
    }

    // Every table of the schema exists (including those for later features).
    let conn = rusqlite_tables(&dir.db());
    for table in [
        "events",
        "rejected",
        "runs",
        "action_records",
        "action_attempts",
        "succeeded_keys",
        "charter_state",
        "approvals",
        "escalations",
        "audit_log",
        "measurements",
    ] {
        assert!(conn.contains(&table.to_string()), "missing table {table}");
    }
}

/// Table names in the database file, read with a separate connection.
fn rusqlite_tables(path: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).expect("open database file");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query tables")
        .collect::<Result<Vec<String>, _>>()
        .expect("read tables")
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new();
    open(&dir.db()).close().await;
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
    }
    match SqliteStore::open(&dir.db()) {
        Err(StoreError::Database(msg)) => assert!(msg.contains("newer"), "{msg}"),
        other => panic!("opening a newer schema returned {other:?}"),
    }
}

/// Foreign keys are enforced on the writer: a run for an unknown event is refused.
async fn assert_orphan_run_refused(store: &SqliteStore, charter: &str) {
    let orphan = charter_store::RunStore::start_run(
        store,
        Uuid::now_v7(),
        Uuid::now_v7(),
        charter,
        "v",
        "live",
        1,
    )
    .await;
    assert!(matches!(orphan, Err(StoreError::Database(_))), "{orphan:?}");
}

#[tokio::test]
async fn the_database_is_in_wal_mode_with_foreign_keys() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    store.ready().await.unwrap();
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    assert_orphan_run_refused(&store, "c").await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_group_committed() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    let before = store.stats();
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .ingest(event("burst", Some(&format!("k{i}")), i))
                .await
        }));
    }
    for task in tasks {
        assert!(matches!(
            task.await.unwrap().unwrap(),
            IngestOutcome::Stored(_)
        ));
    }
    let after = store.stats();
    let batches = after.batches - before.batches;
    let commands = after.commands - before.commands;
    assert_eq!(commands, 500);
    assert!(
        batches < commands,
        "500 concurrent ingests took {batches} transactions: no group commit"
    );
    let listed = store
        .list_events(EventFilter {
            charter: Some("burst".to_string()),
            limit: 1000,
            ..EventFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 500);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pipelined_fsync_group_commits_and_survives_reopen() {
    let dir = TempDir::new();
    // Created in the default mode, then reopened pipelined (the WAL file must be found).
    open(&dir.db()).close().await;
    let store = open_pipelined(&dir.db());
    let mut tasks = Vec::new();
    for i in 0..500 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.ingest(event("burst", None, i)).await
        }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        match task.await.unwrap().unwrap() {
            IngestOutcome::Stored(id) => ids.push(id),
            other => panic!("fresh event not stored: {other:?}"),
        }
    }
    let stats = store.stats();
    assert_eq!(stats.commands, 500);
    assert!(stats.batches < stats.commands, "no group commit: {stats:?}");
    assert!(
        stats.syncs >= 1 && stats.syncs <= stats.batches,
        "one fsync covers one or more batches: {stats:?}"
    );
    store.close().await;

    let store = open_pipelined(&dir.db());
    for id in ids {
        assert!(
            store.get_event(id).await.unwrap().is_some(),
            "event {id} lost"
        );
    }
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_limit_of_one_still_works() {
    let dir = TempDir::new();
    let store = SqliteStore::open_with(
        &dir.db(),
        SqliteOptions {
            max_batch: 1,
            readers: 1,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.ingest(event("one", None, i)).await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let stats = store.stats();
    assert_eq!(
        stats.batches, stats.commands,
        "max_batch 1 means one command per batch"
    );
    assert_eq!(
        stats.syncs, stats.batches,
        "full durability syncs every batch"
    );
    assert_eq!(
        store
            .list_events(EventFilter::default())
            .await
            .unwrap()
            .len(),
        20
    );
    store.close().await;
}

#[tokio::test]
async fn ready_reports_a_writable_store_and_close_makes_it_unready() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    store.ready().await.unwrap();
    store.close().await;
    assert!(matches!(store.ready().await, Err(StoreError::Closed)));
    // Closing twice is harmless.
    store.close().await;
}

#[tokio::test]
async fn corrupt_rows_are_reported_not_panicked_on() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    let ev = event("c", None, 1);
    store.ingest(ev.clone()).await.unwrap();
    {
        let conn = rusqlite::Connection::open(dir.db()).unwrap();
        conn.execute(
            "UPDATE events SET headers = 'not json' WHERE id = ?1",
            [ev.id.to_string()],
        )
        .unwrap();
    }
    let got = store.get_event(ev.id).await;
    assert!(matches!(got, Err(StoreError::Corrupt(_))), "{got:?}");
    store.close().await;
}

/// The migrations before the events table's rebuild (schema version 8).
const MIGRATIONS_TO_V8: [&str; 8] = [
    include_str!("../../migrations/sqlite/0001_init.sql"),
    include_str!("../../migrations/sqlite/0002_approvals.sql"),
    include_str!("../../migrations/sqlite/0003_evidence.sql"),
    include_str!("../../migrations/sqlite/0004_sources.sql"),
    include_str!("../../migrations/sqlite/0005_notifications.sql"),
    include_str!("../../migrations/sqlite/0006_charter_mode.sql"),
    include_str!("../../migrations/sqlite/0007_decision.sql"),
    include_str!("../../migrations/sqlite/0008_json_nul.sql"),
];

/// A database file at schema version 8 holding one event (dedupe key `k1`) with one run;
/// `dangling` adds a run whose event does not exist (written with foreign keys off).
fn database_at_v8(path: &Path, event_id: Uuid, dangling: bool) {
    let conn = rusqlite::Connection::open(path).unwrap();
    for sql in MIGRATIONS_TO_V8 {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 8).unwrap();
    conn.execute(
        "INSERT INTO events (id, charter, source, dedupe_key, received_at, headers, payload,
                             status, attempts, updated_at)
         VALUES (?1, 'old', 'test', 'k1', 1, '{}', '{\"n\":1}', 'done', 1, 2)",
        [event_id.to_string()],
    )
    .unwrap();
    let run = |id: Uuid, event: Uuid| {
        conn.execute(
            "INSERT INTO runs (id, event_id, charter, charter_version, mode, started_at)
             VALUES (?1, ?2, 'old', 'v', 'live', 1)",
            [id.to_string(), event.to_string()],
        )
        .unwrap();
    };
    run(Uuid::now_v7(), event_id);
    if dangling {
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        run(Uuid::now_v7(), Uuid::now_v7());
    }
}

/// Migration 9 rebuilds the events table (its status CHECK no longer uses an IN list):
/// rows, their runs, the dedupe index and foreign-key enforcement all survive it, and the
/// CHECK still refuses an unknown status.
#[tokio::test]
async fn the_events_rebuild_keeps_rows_runs_indexes_and_constraints() {
    let dir = TempDir::new();
    let old = Uuid::now_v7();
    database_at_v8(&dir.db(), old, false);

    let store = open(&dir.db());
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION);
    let kept = store.get_event(old).await.unwrap().expect("the old event");
    assert_eq!(kept.status, EventStatus::Done);
    assert_eq!(kept.event.payload, serde_json::json!({ "n": 1 }));
    assert_eq!((kept.attempts, kept.updated_at), (1, 2));
    let runs = charter_store::RunStore::runs_for_event(&store, old)
        .await
        .unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    // The dedupe index is back: the old key is a duplicate, a new one is stored.
    let mut again = event("old", Some("k1"), 2);
    again.id = Uuid::now_v7();
    assert!(matches!(
        store.ingest(again).await.unwrap(),
        IngestOutcome::Duplicate(id) if id == old
    ));
    assert!(matches!(
        store.ingest(event("old", Some("k2"), 3)).await.unwrap(),
        IngestOutcome::Stored(_)
    ));
    // Foreign keys are enforced again on the writer.
    assert_orphan_run_refused(&store, "old").await;
    store.close().await;

    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let sql: String = conn
        .query_row(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        sql.contains("status = 'waiting'") && !sql.contains(" IN ("),
        "{sql}"
    );
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        indexes,
        [
            "events_charter",
            "events_claim",
            "events_dedupe",
            "events_dedupe_key",
            "sqlite_autoindex_events_1"
        ]
    );
    let refused = conn.execute(
        "UPDATE events SET status = 'lost' WHERE id = ?1",
        [old.to_string()],
    );
    assert!(
        matches!(&refused, Err(e) if e.to_string().contains("CHECK")),
        "{refused:?}"
    );
}

/// A reference already broken before migrating stops the migration with an error that names
/// the table, and the file stays at its old version.
#[tokio::test]
async fn a_broken_reference_stops_the_events_rebuild() {
    let dir = TempDir::new();
    database_at_v8(&dir.db(), Uuid::now_v7(), true);
    match SqliteStore::open(&dir.db()) {
        Err(StoreError::Database(msg)) => {
            assert!(msg.contains("migration 9") && msg.contains("runs"), "{msg}");
        }
        other => panic!("migrating over a broken reference returned {other:?}"),
    }
    let conn = rusqlite::Connection::open(dir.db()).unwrap();
    let version: u32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, 8);
}

/// A backup taken while the store serves holds every commit before it and none after, opens
/// as a store at the current schema, and never overwrites a file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_is_a_consistent_copy_that_opens_as_a_store() {
    let dir = TempDir::new();
    let store = open(&dir.db());
    let before = event("c", Some("key-1"), 1);
    store.ingest(before.clone()).await.unwrap();
    let copy = dir.0.join("copy.db");
    let bytes = store.backup_to(&copy).await.unwrap();
    assert!(bytes > 0 && bytes == std::fs::metadata(&copy).unwrap().len());
    let after = event("c", Some("key-2"), 2);
    store.ingest(after.clone()).await.unwrap();

    let refused = store.backup_to(&copy).await.unwrap_err();
    assert!(refused.to_string().contains("already exists"), "{refused}");
    store.close().await;

    let restored = open(&copy);
    assert_eq!(restored.schema_version().await.unwrap(), SCHEMA_VERSION);
    let rec = restored.get_event(before.id).await.unwrap().expect("kept");
    assert_eq!(rec.event, before);
    assert!(
        restored.get_event(after.id).await.unwrap().is_none(),
        "a later commit is not in the copy"
    );
    // The copy dedupes like the original did.
    assert_eq!(
        restored.ingest(event("c", Some("key-1"), 3)).await.unwrap(),
        IngestOutcome::Duplicate(before.id)
    );
    restored.close().await;
}

/// One process serves a SQLite file: a second serving lock on it is refused while the first
/// store lives, and taken once it is gone; only a store holding the lock says its leases
/// are all its own at start-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_at_a_time_holds_the_serving_lock() {
    let dir = TempDir::new();
    let first = open(&dir.db());
    assert!(!first.single_process(), "no lock taken yet");
    first.lock_for_serving().expect("first serving lock");
    first
        .lock_for_serving()
        .expect("taking it again is a no-op");
    assert!(first.single_process());
    let second = open(&dir.db());
    let refused = second
        .lock_for_serving()
        .expect_err("a second server on the same file");
    assert!(
        refused.to_string().contains("another process is serving"),
        "{refused}"
    );
    assert!(!second.single_process());
    second.close().await;
    drop(second);
    first.close().await;
    drop(first);
    let third = open(&dir.db());
    third
        .lock_for_serving()
        .expect("the lock is free once its store is gone");
    third.close().await;
}
