//! Issue #30: processing keeps a fair share of the single SQLite writer while ingest is
//! saturated. One node (a SQLite file, the server in process on 127.0.0.1:0) works through
//! a backlog alone for a while, then for as long again while many concurrent senders flood
//! another charter's webhook; the runs it completes meanwhile are compared with what it
//! completed alone, and the writer's counters say how many batches carried run writes.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use charter_core::model::{NewEvent, RunOutcome};
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::sqlite::SqliteStore;
use charter_store::{CharterStateStore, EventStore, RunFilter, RunStore};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events waiting for the worker when the node starts: more than it can finish in both
/// windows on a fast machine, so the backlog is never what stops it.
const BACKLOG: u64 = 12_000;
/// Concurrent webhook senders of the flood.
const SENDERS: usize = 64;
/// Each window's length. The assertions compare counts of the same node in two windows of
/// this length, never a count against a rate.
const WINDOW: Duration = Duration::from_millis(1500);

fn charter(name: &str) -> String {
    format!(
        r#"
name: {name}
description: fairness test charter {name}
owner: ops@example.test
maintainer: integrations@example.test
system_of_record: helpdesk
mode: live
uses: [helpdesk]
concurrency: 1024
trigger:
  webhook:
    path: /hooks/{name}
    verify: none
routes:
  - when: "true"
    do: [note]
actions:
  note:
    log: "event {{{{ payload.n }}}}"
    approval: auto
escalation: {{ to: ops }}
measure:
  success: [noted]
"#
    )
}

fn project() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("charter-it-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(dir.join("charters")).unwrap();
    std::fs::write(
        dir.join("charter.yaml"),
        // The helpdesk is never called: the charters only log.
        "worker:\n  lease: 30s\n  poll_interval: 50ms\nconnectors:\n  helpdesk:\n    type: http\n    base_url: http://127.0.0.1:9\n    allow_private: true\n",
    )
    .unwrap();
    for name in ["work", "flood"] {
        std::fs::write(dir.join(format!("charters/{name}.yaml")), charter(name)).unwrap();
    }
    dir
}

/// Store `n` events of `charter`, many at a time.
async fn preload(store: &SqliteStore, charter: &str, n: u64) {
    let mut tasks = tokio::task::JoinSet::new();
    let per_task = n / 32;
    for t in 0..32 {
        let store = store.clone();
        let charter = charter.to_string();
        tasks.spawn(async move {
            for i in 0..per_task {
                let event = NewEvent {
                    id: Uuid::now_v7(),
                    charter: charter.clone(),
                    source: "test".into(),
                    event_type: None,
                    dedupe_key: None,
                    received_at: charter_server::now_millis(),
                    headers: Default::default(),
                    payload: json!({"n": t * per_task + i}),
                };
                store.ingest(event).await.unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
}

async fn completed(store: &SqliteStore) -> u64 {
    store
        .count_runs(RunFilter {
            charter: Some("work".into()),
            outcome: Some(RunOutcome::Completed),
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processing_keeps_a_share_of_the_writer_while_ingest_is_saturated() {
    let dir = project();
    let store = SqliteStore::open(&dir.join("charter.db")).unwrap();
    // The flood is stored but never processed: only its writes compete with the runs.
    store.set_paused("flood", true, 1).await.unwrap();
    preload(&store, "work", BACKLOG).await;
    charter_connect::install_crypto_provider();
    let shutdown = CancellationToken::new();
    let runtime = Arc::new(Runtime::load(&dir).unwrap_or_else(|e| panic!("{e}")));
    let running = charter_server::start(
        runtime,
        store.clone(),
        ServeOptions {
            listen: ([127, 0, 0, 1], 0).into(),
            role: Role::All,
            worker_id: Some("fair-w1".into()),
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", running.addr);

    // Alone: a first window to get going (the worker's sizing adapts), then the measured one.
    tokio::time::sleep(WINDOW).await;
    let before_alone = completed(&store).await;
    tokio::time::sleep(WINDOW).await;
    let alone = completed(&store).await - before_alone;
    assert!(alone > 0, "the node processed nothing alone");

    // The flood: many senders, each sending as fast as its answers come.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let http = reqwest::Client::new();
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let (stop, acked, http) = (stop.clone(), acked.clone(), http.clone());
        let url = format!("{base}/hooks/flood");
        senders.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(&url)
                    .json(&json!({"n": i, "sender": s}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 202);
                acked.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }
    // Let the flood reach its pace before counting.
    while acked.load(Ordering::Relaxed) < 2 * SENDERS as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats_before = store.stats();
    let before_flood = completed(&store).await;
    let acked_before = acked.load(Ordering::Relaxed);
    tokio::time::sleep(WINDOW).await;
    let during = completed(&store).await - before_flood;
    let flood = acked.load(Ordering::Relaxed) - acked_before;
    let stats_after = store.stats();
    stop.store(true, Ordering::Relaxed);
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    let left = BACKLOG - completed(&store).await;
    shutdown.cancel();

    let batches = stats_after.batches - stats_before.batches;
    let with_runs = stats_after.work_batches - stats_before.work_batches;
    let inserts = stats_after.ingest_commands - stats_before.ingest_commands;
    let summary = format!(
        "alone {alone} runs; during the flood {during} runs while {flood} webhooks were acknowledged; \
         writer: {with_runs} of {batches} batches carried run writes, {inserts} inserts; {left} events left"
    );
    eprintln!("{summary}");
    assert!(
        flood >= SENDERS as u64,
        "the flood did not flood: {summary}"
    );
    // Processing keeps a meaningful share: at least a tenth of what the node does alone
    // (unless it ran out of work, which means it kept up).
    assert!(
        left == 0 || during * 10 >= alone,
        "processing starved while ingest was saturated: {summary}"
    );
    // Runs' writes went into a good share of the batches the flood kept the writer busy with.
    assert!(
        left == 0 || with_runs * 5 >= batches,
        "run writes were left out of most batches: {summary}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
