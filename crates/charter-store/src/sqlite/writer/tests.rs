//! The writer's tests: batches, savepoints, gathering, and the lanes' fair share.

use super::*;

fn open_test_conn() -> (Connection, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("charter-writer-{}.db", uuid::Uuid::now_v7()));
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER NOT NULL)")
        .unwrap();
    (conn, path)
}

fn cleanup(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Start a command that holds the writer thread until the returned sender fires, and
/// wait until it runs (the first batch has started): commands submitted meanwhile queue
/// up and run as the next batch.
async fn hold(
    writer: &Arc<Writer>,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Result<()>>,
) {
    let (gate_tx, gate_rx) = std::sync::mpsc::channel::<()>();
    let w = Arc::clone(writer);
    let gate = tokio::spawn(async move {
        w.submit(move |_conn| {
            gate_rx.recv().ok();
            Ok(())
        })
        .await
    });
    while writer.stats().batches == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    (gate_tx, gate)
}

/// The test table's rows, by key.
async fn table(writer: &Writer) -> Vec<(String, i64)> {
    writer
        .submit(|conn| {
            let mut stmt = conn
                .prepare("SELECT k, v FROM t ORDER BY k")
                .map_err(|e| StoreError::Database(e.to_string()))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(|e| StoreError::Database(e.to_string()))?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(|e| StoreError::Database(e.to_string()))?;
            Ok(rows)
        })
        .await
        .unwrap()
}

/// Commands queued while the writer is busy run as one batch; a failing command in that
/// batch rolls back alone and the others commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_command_rolls_back_alone_within_a_batch() {
    let (conn, path) = open_test_conn();
    let writer = Arc::new(Writer::start(conn, 1024, 64, None, None).unwrap());

    // Hold the writer thread inside a command until the other commands are queued.
    let (gate_tx, gate) = hold(&writer).await;

    let mut handles = Vec::new();
    for (k, v) in [("a", 1), ("dup", 2), ("b", 3)] {
        let w = Arc::clone(&writer);
        handles.push(tokio::spawn(async move {
            w.submit(move |conn| {
                conn.execute("INSERT INTO t (k, v) VALUES (?1, ?2)", (k, v))
                    .map_err(|e| StoreError::Database(e.to_string()))?;
                if k == "dup" {
                    // Second insert fails (NOT NULL, whatever order the three commands
                    // were queued in): the first one must be rolled back with it.
                    conn.execute("INSERT INTO t (k, v) VALUES ('dup2', NULL)", [])
                        .map_err(|e| StoreError::Database(e.to_string()))?;
                }
                Ok(k)
            })
            .await
        }));
    }
    // Give the spawned tasks time to enqueue, then open the gate.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gate_tx.send(()).unwrap();
    gate.await.unwrap().unwrap();

    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert!(matches!(results[0], Ok("a")), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(StoreError::Database(_))),
        "{:?}",
        results[1]
    );
    assert!(matches!(results[2], Ok("b")), "{:?}", results[2]);
    // Gate batch + one batch for the three queued commands.
    let stats = writer.stats();
    assert_eq!(
        (stats.batches, stats.commands, stats.syncs, stats.gathered),
        (2, 4, 2, 0)
    );
    // The gate command ran for at least the 100 ms it was held; COMMIT is part of a
    // batch's time.
    assert!(stats.busy_us >= 100_000, "{stats:?}");
    assert!(stats.commit_us <= stats.busy_us, "{stats:?}");

    let rows = table(&writer).await;
    assert_eq!(rows, vec![("a".to_string(), 1), ("b".to_string(), 3)]);

    writer.shutdown().await;
    assert!(matches!(
        writer.submit(|_| Ok(())).await,
        Err(StoreError::Closed)
    ));
    cleanup(&path);
}

/// A command submitted as atomic runs without a savepoint: when its one statement fails
/// (here a two-row INSERT whose second row breaks NOT NULL), SQLite undoes that statement
/// alone, and the other commands of the same batch, atomic or not, commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_atomic_command_leaves_nothing_and_fails_alone() {
    let (conn, path) = open_test_conn();
    let writer = Arc::new(Writer::start(conn, 1024, 64, None, None).unwrap());
    let (gate_tx, gate) = hold(&writer).await;
    let sql = |sql: &'static str| {
        move |conn: &Connection| {
            conn.execute(sql, [])
                .map_err(|e| StoreError::Database(e.to_string()))
        }
    };
    let w = Arc::clone(&writer);
    let before = tokio::spawn(async move {
        w.submit_atomic(sql("INSERT INTO t (k, v) VALUES ('a', 1)"))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let w = Arc::clone(&writer);
    let failing = tokio::spawn(async move {
        w.submit_atomic(sql(
            "INSERT INTO t (k, v) VALUES ('half', 2), ('broken', NULL)",
        ))
        .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let w = Arc::clone(&writer);
    let after =
        tokio::spawn(async move { w.submit(sql("INSERT INTO t (k, v) VALUES ('b', 3)")).await });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    gate_tx.send(()).unwrap();
    gate.await.unwrap().unwrap();

    assert_eq!(before.await.unwrap().unwrap(), 1);
    assert!(matches!(
        failing.await.unwrap(),
        Err(StoreError::Database(ref m)) if m.contains("NOT NULL")
    ));
    assert_eq!(after.await.unwrap().unwrap(), 1);
    // The three queued commands ran as one batch after the gate's.
    assert_eq!(writer.stats().batches, 2);
    let keys: Vec<String> = table(&writer).await.into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
    writer.shutdown().await;
    cleanup(&path);
}

#[tokio::test]
async fn panicking_command_fails_alone() {
    let (conn, path) = open_test_conn();
    let writer = Writer::start(conn, 16, 16, None, None).unwrap();
    let r: Result<()> = writer.submit(|_| panic!("boom")).await;
    assert!(matches!(r, Err(StoreError::Database(ref m)) if m.contains("panicked")));
    let ok = writer
        .submit(|conn| {
            conn.execute("INSERT INTO t (k, v) VALUES ('x', 1)", [])
                .map_err(|e| StoreError::Database(e.to_string()))
        })
        .await
        .unwrap();
    assert_eq!(ok, 1);
    writer.shutdown().await;
    cleanup(&path);
}

/// An insert of `k` as an atomic command.
async fn insert(writer: Arc<Writer>, k: String) -> Result<usize> {
    writer
        .submit_atomic(move |conn| {
            conn.execute("INSERT INTO t (k, v) VALUES (?1, 1)", [k])
                .map_err(|e| StoreError::Database(e.to_string()))
        })
        .await
}

/// A writer that gathers batches with `gather`, after one first command (the saturation
/// reading needs two samples of `/proc/stat`, 200 ms apart).
async fn gathering_writer(gather: Gather) -> (Arc<Writer>, std::path::PathBuf) {
    let (conn, path) = open_test_conn();
    let writer = Arc::new(Writer::start(conn, 1024, 64, None, Some(gather)).unwrap());
    insert(Arc::clone(&writer), "first".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    (writer, path)
}

/// A gathering that counts every reading as saturated (`idle_below` above 1).
fn always(target: usize, max_wait: Duration, step: Duration) -> Gather {
    Gather {
        target,
        max_wait,
        step,
        idle_below: 2.0,
    }
}

/// Send `n` inserts, `gap` apart, each from its own task.
async fn trickle(
    writer: &Arc<Writer>,
    prefix: &str,
    n: usize,
    gap: Duration,
) -> Vec<tokio::task::JoinHandle<Result<usize>>> {
    let mut handles = Vec::new();
    for i in 0..n {
        handles.push(tokio::spawn(insert(
            Arc::clone(writer),
            format!("{prefix}{i}"),
        )));
        tokio::time::sleep(gap).await;
    }
    handles
}

/// While the machine counts as saturated, commands arriving one by one wait for each
/// other and commit as one batch of the target size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_machine_gathers_commands_into_one_batch() {
    let gather = always(6, Duration::from_secs(20), Duration::from_millis(60));
    let (writer, path) = gathering_writer(gather).await;
    let started = Instant::now();
    for h in trickle(&writer, "k", 6, Duration::from_millis(3)).await {
        assert_eq!(h.await.unwrap().unwrap(), 1);
    }
    // The target was reached long before the longest wait.
    assert!(started.elapsed() < Duration::from_secs(10));
    let stats = writer.stats();
    assert_eq!((stats.batches, stats.commands, stats.gathered), (2, 7, 1));
    assert_eq!(table(&writer).await.len(), 7);
    writer.shutdown().await;
    cleanup(&path);
}

/// While commands keep arriving, a gathered batch short of its target commits at its
/// deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gathered_batch_commits_at_its_deadline() {
    let gather = always(1000, Duration::from_millis(80), Duration::from_millis(20));
    let (writer, path) = gathering_writer(gather).await;
    let started = Instant::now();
    let first = tokio::spawn(insert(Arc::clone(&writer), "first-of-many".into()));
    let rest = trickle(&writer, "k", 40, Duration::from_millis(4)).await;
    assert_eq!(first.await.unwrap().unwrap(), 1);
    assert!(started.elapsed() >= Duration::from_millis(80));
    for h in rest {
        assert_eq!(h.await.unwrap().unwrap(), 1);
    }
    let stats = writer.stats();
    assert!(stats.gathered >= 1, "{stats:?}");
    // 41 commands in far fewer batches than commands.
    assert!(stats.batches < 1 + 20, "{stats:?}");
    writer.shutdown().await;
    cleanup(&path);
}

/// A step that brings nothing ends the wait: a lone command commits after one step,
/// not at the deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_queue_ends_the_wait_after_one_step() {
    let gather = always(100, Duration::from_secs(30), Duration::from_millis(10));
    let (writer, path) = gathering_writer(gather).await;
    let started = Instant::now();
    insert(Arc::clone(&writer), "alone".into()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(15));
    let stats = writer.stats();
    assert_eq!((stats.batches, stats.gathered), (2, 1));
    writer.shutdown().await;
    cleanup(&path);
}

/// With idle CPU (here: a threshold no reading is under) every command commits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_cpu_commits_each_command_at_once() {
    let never = Gather {
        idle_below: 0.0,
        ..always(100, Duration::from_secs(20), Duration::from_millis(10))
    };
    let (writer, path) = gathering_writer(never).await;
    for i in 0..4 {
        insert(Arc::clone(&writer), format!("k{i}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let stats = writer.stats();
    assert_eq!((stats.batches, stats.gathered), (5, 0));
    writer.shutdown().await;
    cleanup(&path);
}

#[test]
fn cpu_times_are_read_from_the_aggregate_line() {
    assert_eq!(
        parse_cpu_times("cpu  4705 150 1120 16250 520 20 31 7 0 0"),
        Some(CpuTimes {
            idle: 16250 + 520,
            total: 4705 + 150 + 1120 + 16250 + 520 + 20 + 31 + 7,
        })
    );
    // Old kernels print fewer columns.
    assert_eq!(
        parse_cpu_times("cpu 10 0 5 100 3"),
        Some(CpuTimes {
            idle: 103,
            total: 118
        })
    );
    assert_eq!(parse_cpu_times("cpu0 10 0 5 100 3 0 0 0"), None);
    assert_eq!(parse_cpu_times("cpu 10 0 5"), None);
    assert_eq!(parse_cpu_times("cpu 10 x 5 100 3"), None);
}

/// With ingest's queue far longer than a batch, a run's write (any non-ingest command)
/// queued after it goes into the very next batch, not behind every queued insert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_writes_are_not_queued_behind_a_flood_of_inserts() {
    let (conn, path) = open_test_conn();
    let writer = Arc::new(Writer::start(conn, 8, 256, None, None).unwrap());
    let (gate_tx, gate) = hold(&writer).await;
    let mut inserts = Vec::new();
    for i in 0..100 {
        inserts.push(tokio::spawn(insert(
            Arc::clone(&writer),
            format!("i{i:03}"),
        )));
    }
    while writer.senders.queued().0 < 100 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Queued after every insert: how many of them does it find committed before it?
    let w = Arc::clone(&writer);
    let run_write = tokio::spawn(async move {
        w.submit(|conn| {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
                .map_err(|e| StoreError::Database(e.to_string()))
        })
        .await
    });
    while writer.senders.queued().1 < 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    gate_tx.send(()).unwrap();
    gate.await.unwrap().unwrap();
    let before_it = run_write.await.unwrap().unwrap();
    assert_eq!(before_it, 0, "the write waited behind {before_it} inserts");
    for h in inserts {
        assert_eq!(h.await.unwrap().unwrap(), 1);
    }
    let stats = writer.stats();
    assert_eq!(stats.ingest_commands, 100);
    // The holding command's batch and the one with the run's write.
    assert_eq!(stats.work_batches, 2, "{stats:?}");
    // The holding batch, then 100 inserts (and the run's write) in batches of at most 8.
    assert!(stats.batches >= 14, "{stats:?}");
    writer.shutdown().await;
    cleanup(&path);
}
