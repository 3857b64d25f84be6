//! Unit tests of the SQLite backend's internals (statement caching, claim plans, ...).

use super::*;
use charter_core::model::{NewEvent, RunOutcome};
use uuid::Uuid;

use super::escalations::ESCALATION_COLS;
use super::queue::{CLAIM_EXPIRED_SQL, CLAIM_PENDING_SQL, CLAIM_UPDATE_SQL};
use super::run_writes::{DecisionRow, PreparedWrite, merge_start_decision};
use crate::{EventStore, IngestOutcome, QueueStore};
use rusqlite::StatementStatus;
use std::collections::BTreeMap;

fn event(charter: &str, received_at: UnixMillis) -> NewEvent {
    NewEvent {
        id: Uuid::now_v7(),
        charter: charter.to_string(),
        source: "test".to_string(),
        event_type: None,
        dedupe_key: None,
        received_at,
        headers: BTreeMap::new(),
        payload: serde_json::json!({"n": 1}),
    }
}

/// A run's `Start` followed at once by its `Decision` becomes one insert; a `Decision`
/// of another run, or one separated from its `Start`, stays as it was, in order.
#[test]
fn start_and_its_decision_merge_only_when_adjacent() {
    let start = |run: &str| PreparedWrite::Start {
        run: run.to_string(),
        event: "e".to_string(),
        charter: "c".to_string(),
        version: "v".to_string(),
        mode: "live".to_string(),
        now: 1,
        decision: None,
    };
    let decision = |run: &str| PreparedWrite::Decision {
        run: run.to_string(),
        row: DecisionRow {
            json: "{}".to_string(),
            label: Some("billing".to_string()),
            stage: Some("rule".to_string()),
            confidence: 1.0,
        },
    };
    let finish = |run: &str| PreparedWrite::FinishRun {
        run: run.to_string(),
        route: None,
        outcome: RunOutcome::Completed,
        error: None,
        now: 2,
    };
    let kinds = |ws: &[PreparedWrite]| -> Vec<String> {
        ws.iter()
            .map(|w| match w {
                PreparedWrite::Start {
                    run,
                    decision: None,
                    ..
                } => format!("start:{run}"),
                PreparedWrite::Start {
                    run,
                    decision: Some(row),
                    ..
                } => format!("decided:{run}:{}", row.label.as_deref().unwrap_or("-")),
                PreparedWrite::Decision { run, .. } => format!("decision:{run}"),
                PreparedWrite::FinishRun { run, .. } => format!("finish:{run}"),
                _ => "other".to_string(),
            })
            .collect()
    };
    let merged = merge_start_decision(vec![start("a"), decision("a"), finish("a")]);
    assert_eq!(kinds(&merged), ["decided:a:billing", "finish:a"]);
    let merged = merge_start_decision(vec![start("a"), decision("b")]);
    assert_eq!(kinds(&merged), ["start:a", "decision:b"]);
    let merged = merge_start_decision(vec![start("a"), finish("a"), decision("a")]);
    assert_eq!(kinds(&merged), ["start:a", "finish:a", "decision:a"]);
    let merged = merge_start_decision(vec![decision("a")]);
    assert_eq!(kinds(&merged), ["decision:a"]);
}

/// The database file's own page count (its header's "in-header database size", bytes
/// 28..32): what has been checkpointed into it, whatever the WAL still holds.
fn pages_in_file(path: &Path) -> u32 {
    let bytes = std::fs::read(path).expect("read the database file");
    u32::from_be_bytes([bytes[28], bytes[29], bytes[30], bytes[31]])
}

/// Committed pages reach the database file without the writer checkpointing: the
/// checkpointer thread copies them (the writer's own threshold, 2,048 pages, is not
/// reached here), and it stops with the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_thread_copies_the_wal_into_the_file() {
    let dir = std::env::temp_dir().join(format!("charter-ckpt-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.db");
    let store = SqliteStore::open(&path).expect("open");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = pages_in_file(&path);
    let t = now_millis();
    let text = "x".repeat(2_000);
    for i in 0..400 {
        let mut e = event("c", t + i);
        e.payload = serde_json::json!({ "text": text });
        store.ingest(e).await.expect("ingest");
    }
    let mut after = before;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = pages_in_file(&path);
        if after >= before + 150 {
            break;
        }
    }
    assert!(
        after >= before + 150,
        "400 events of 2 KB: the file grew from {before} to {after} pages"
    );
    store.close().await;
    // Closed: the thread is gone and the file is whole.
    let conn = Connection::open(&path).expect("reopen");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 400);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ingest_json` keeps the text it is given, byte for byte; `ingest` serialises the value.
#[tokio::test]
async fn a_received_json_text_is_stored_as_it_came() {
    let dir = std::env::temp_dir().join(format!("charter-jsontext-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.db");
    let store = SqliteStore::open(&path).expect("open");
    let text = "{ \"b\": 1.50,\n \"a\": [ \"\\u00e9\" ] }";
    let mut sent = event("c", now_millis());
    sent.payload = serde_json::from_str(text).expect("test payload");
    let id = match store.ingest_json(sent.clone(), text.to_string()).await {
        Ok(IngestOutcome::Stored(id)) => id,
        other => panic!("ingest_json: {other:?}"),
    };
    let mut plain = event("c", now_millis());
    plain.payload = sent.payload.clone();
    let plain_id = match store.ingest(plain).await {
        Ok(IngestOutcome::Stored(id)) => id,
        other => panic!("ingest: {other:?}"),
    };
    store.close().await;
    let conn = Connection::open(&path).expect("reopen");
    let column = |id: Uuid| -> String {
        conn.query_row(
            "SELECT payload FROM events WHERE id = ?1",
            [id.to_string()],
            |r| r.get(0),
        )
        .expect("payload column")
    };
    assert_eq!(column(id), text);
    assert_eq!(column(plain_id), r#"{"a":["é"],"b":1.5}"#);
    drop(conn);
    let _ = std::fs::remove_dir_all(dir);
}

/// Under a steady stream of commits the WAL starts over at the writer's threshold instead
/// of growing: the checkpointer thread alone never finds every frame copied at the start
/// of a write, so before this the WAL reached four times the threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_stream_of_commits_keeps_the_wal_at_its_threshold() {
    let dir = std::env::temp_dir().join(format!("charter-walcap-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("s.db");
    let threshold: u32 = 64;
    let options = SqliteOptions {
        wal_autocheckpoint_pages: threshold,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(&path, options).expect("open");
    let wal = dir.join("s.db-wal");
    let t = now_millis();
    let text = "x".repeat(2_000);
    let mut largest = 0u64;
    // Eight concurrent senders, so commits follow each other with no pause.
    let mut senders = tokio::task::JoinSet::new();
    for k in 0..8i64 {
        let store = store.clone();
        let text = text.clone();
        senders.spawn(async move {
            for i in 0..150i64 {
                let mut e = event("c", t + k * 1_000 + i);
                e.payload = serde_json::json!({ "text": text });
                store.ingest(e).await.expect("ingest");
            }
        });
    }
    while !senders.is_empty() {
        tokio::select! {
            done = senders.join_next() => {
                if let Some(joined) = done {
                    joined.expect("sender");
                }
            }
            () = tokio::time::sleep(Duration::from_millis(2)) => {}
        }
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    // 1,200 events of 2 KB are ~600 pages of rows alone (many times the threshold); a
    // WAL frame is a 4 KiB page and a 24-byte header. The writer's checkpoint is skipped
    // when it finds the checkpointer thread mid-pass (tried again at the next commit),
    // and the WAL cannot start over while that thread reads it, so allow twice the
    // threshold plus one batch of eight events with their index pages; left to grow,
    // it reached 296 frames here.
    let frame = 4096 + 24;
    let bound = u64::from(2 * threshold + 64) * frame + 32;
    assert!(
        largest <= bound,
        "the WAL reached {largest} bytes ({} frames); threshold {threshold} frames",
        largest / frame
    );
    store.close().await;
    let conn = Connection::open(&path).expect("reopen");
    let n: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .expect("count");
    assert_eq!(n, 1_200, "every event was written");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The claim runs on the writer for every batch of work; its statements must come from
/// the statement cache as they are, not be re-prepared on each use (a bound `LIMIT` or a
/// sort makes SQLite expire a statement whenever its bindings are cleared).
#[tokio::test]
async fn claim_statements_are_not_reprepared() {
    let dir = std::env::temp_dir().join(format!("charter-claim-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = SqliteStore::open(&dir.join("s.db")).expect("open");
    let t = now_millis();
    for i in 0..12 {
        store.ingest(event("c", t + i)).await.expect("ingest");
    }
    let lease = Duration::from_secs(60);
    let mut claimed = 0;
    for (k, max) in [1usize, 2, 3, 4].into_iter().enumerate() {
        let worker = format!("w{k}");
        let got = store
            .claim("c", &worker, max, 100, lease, t + 20)
            .await
            .expect("claim");
        assert_eq!(got.len(), max, "claim {k} took {max}");
        claimed += got.len();
    }
    assert_eq!(claimed, 10);
    let resolution_sql = format!(
        "SELECT {ESCALATION_COLS} FROM escalations
             WHERE event_id = ?1 AND status = 'resolved' AND resolution IS NOT NULL"
    );
    let counts = store
        .write(move |conn| {
            let mut out = Vec::new();
            for sql in [
                CLAIM_PENDING_SQL,
                CLAIM_EXPIRED_SQL,
                CLAIM_UPDATE_SQL,
                &resolution_sql,
            ] {
                let stmt = conn.prepare_cached(sql).map_err(db("test"))?;
                out.push((
                    sql.split_whitespace().take(6).collect::<Vec<_>>().join(" "),
                    stmt.get_status(StatementStatus::RePrepare),
                    stmt.get_status(StatementStatus::Run) > 0
                        || stmt.get_status(StatementStatus::VmStep) > 0,
                ));
            }
            Ok(out)
        })
        .await
        .expect("statement status");
    for (sql, reprepared, ran) in counts {
        assert!(ran, "{sql} never ran, so the check says nothing");
        assert_eq!(reprepared, 0, "{sql} was re-prepared {reprepared} times");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
