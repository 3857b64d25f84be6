//! `charter bench e2e --postgres URL --pg-backlog 1000,500000`: the processing rate on
//! PostgreSQL with a given number of events queued, and what each processed event costs
//! the database (issue #29).
//!
//! For each backlog B, one worker node (the bench project: rule + embedded classifier, one
//! HTTP `PUT` to the in-process sink) runs against a throw-away database. Each round:
//! the charter is paused, the queue is topped up to B pending events by one `INSERT ...
//! SELECT FROM generate_series` (payloads like the load generator's, ids UUIDv7-shaped in
//! arrival order), the charter is resumed, and the time the node takes to apply the next
//! `window` actions at the sink is measured. The queue holds B at the start of every window
//! and at least B - window at its end. The rate of a backlog is the median of its rounds.
//!
//! Around the measured windows the database's own counters are read: WAL bytes
//! (`pg_current_wal_lsn`), transactions committed and rows written (`pg_stat_database`), and
//! the CPU time of the PostgreSQL server's processes (`/proc`, so only with PostgreSQL on
//! the same machine, as here), each divided by the events processed in the windows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_server::{Role, Runtime, ServeOptions};
use charter_store::CharterStateStore;
use charter_store::postgres::{PgStore, with_dbname};
use charter_testkit::sink::Sink;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::e2e::{PG_POOL_PER_NODE, pg_admin};
use super::servers::write_project;
use super::{BenchError, CHARTER};

/// The rate at one backlog and what an event cost the database.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogResult {
    /// Events pending at the start of each window.
    pub backlog: u64,
    /// Actions applied per measured window.
    pub window: u64,
    /// Events processed per second, one per round, in the order run.
    pub rounds_events_per_sec: Vec<f64>,
    /// The median of the rounds.
    pub events_per_sec: f64,
    /// Per event processed in the windows.
    pub db: DbCost,
}

/// The database's work per event processed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DbCost {
    pub wal_bytes: f64,
    pub commits: f64,
    pub rows_inserted: f64,
    pub rows_updated: f64,
    /// CPU time of every PostgreSQL server process (user + system), microseconds; on a
    /// shared server this includes other databases' sessions.
    pub cpu_us: f64,
    /// CPU time of the sessions connected to the benchmark's database alone.
    pub backend_cpu_us: f64,
}

/// The counters [`DbCost`] is the difference of.
#[derive(Debug, Clone, Copy, Default)]
struct DbCounters {
    wal: i64,
    commits: i64,
    inserted: i64,
    updated: i64,
    cpu_ticks: u64,
    backend_ticks: u64,
}

async fn counters(c: &tokio_postgres::Client, db: &str) -> Result<DbCounters, BenchError> {
    // pg_stat_database is refreshed by each backend at the end of its transactions (and at
    // most every 500 ms when busy): read after a short pause so the window's are in.
    let row = c
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::BIGINT,
                    xact_commit, tup_inserted, tup_updated
             FROM pg_stat_database WHERE datname = $1",
            &[&db],
        )
        .await?;
    Ok(DbCounters {
        wal: row.get(0),
        commits: row.get(1),
        inserted: row.get(2),
        updated: row.get(3),
        cpu_ticks: postgres_cpu_ticks(None),
        backend_ticks: postgres_cpu_ticks(Some(db)),
    })
}

/// User + system clock ticks of every process named `postgres` on this machine, or only of
/// the sessions connected to database `db` (their command line names it).
fn postgres_cpu_ticks(db: Option<&str>) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0;
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... field 14 utime, 15 stime (1-based).
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        if !stat[..close].contains("(postgres") {
            continue;
        }
        if let Some(db) = db {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if !String::from_utf8_lossy(&cmdline).contains(db) {
                continue;
            }
        }
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ut: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let st: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        ticks += ut + st;
    }
    ticks
}

/// Top the charter's queue up to `backlog` pending events.
async fn top_up(
    c: &tokio_postgres::Client,
    backlog: u64,
    serial: &mut i64,
) -> Result<(), BenchError> {
    let pending: i64 = c
        .query_one(
            "SELECT count(*) FROM events WHERE charter = $1 AND status = 'pending'",
            &[&CHARTER],
        )
        .await?
        .get(0);
    let add = i64::try_from(backlog).unwrap_or(i64::MAX) - pending;
    if add <= 0 {
        return Ok(());
    }
    let base = charter_server::now_millis() - add;
    // An id shaped like a UUIDv7 of received_at (the first 48 bits), so ordering by id is
    // arrival order as for real events; a distinct ticket id per event.
    c.execute(
        "INSERT INTO events (id, charter, source, event_type, dedupe_key, received_at,
             headers, payload, status, attempts, updated_at)
         SELECT encode(overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send($2 + g) FROM 3) FROM 1), 'hex')::UUID,
                $1, 'bench:backlog', 'ticket.updated', NULL, $2 + g, '{}'::JSON,
                json_build_object(
                    'type', 'ticket.updated',
                    'ticket', json_build_object(
                        'id', $4 + g,
                        'subject', CASE WHEN g % 2 = 0
                            THEN 'refund request for order ord-' || ($4 + g)
                            ELSE 'cannot log in since the update (case ' || g || ')' END,
                        'description', 'Hello, I was charged twice this month and would like the extra payment returned. Thanks.',
                        'priority', 'normal'),
                    'customer', json_build_object('name', 'Ada Example', 'plan', 'team')),
                'pending', 0, $2 + g
         FROM generate_series(1, $3::BIGINT) AS g",
        &[&CHARTER, &base, &add, &*serial],
    )
    .await?;
    *serial += add;
    c.batch_execute("ANALYZE events").await?;
    Ok(())
}

/// Measure the rate at each of `backlogs` (see the module documentation).
pub async fn pg_backlog(
    admin_url: &str,
    backlogs: &[u64],
    workers: usize,
    rounds: usize,
    window: u64,
) -> Result<Vec<BacklogResult>, BenchError> {
    let mut out = Vec::new();
    for &b in backlogs {
        out.push(one_backlog(admin_url, b, workers, rounds, window).await?);
    }
    Ok(out)
}

async fn one_backlog(
    admin_url: &str,
    backlog: u64,
    workers: usize,
    rounds: usize,
    window: u64,
) -> Result<BacklogResult, BenchError> {
    let db_name = format!("charter_bench_{}", uuid::Uuid::now_v7().simple());
    pg_admin(admin_url, &format!("CREATE DATABASE {db_name}")).await?;
    let url = with_dbname(admin_url, &db_name);
    let dir = std::env::temp_dir().join(format!("charter-bench-{}", uuid::Uuid::now_v7().simple()));
    let shutdown = CancellationToken::new();
    let result = async {
        std::fs::create_dir_all(&dir)?;
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await?;
        write_project(&dir, &format!("http://{sink_addr}"), workers)?;
        let runtime = Arc::new(Runtime::load(&dir)?);
        let store = PgStore::connect(&url, PG_POOL_PER_NODE).await?;
        store
            .set_paused(CHARTER, true, charter_server::now_millis())
            .await?;
        let running = charter_server::start(
            runtime,
            store.clone(),
            ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role: Role::Worker,
                worker_id: Some("bench-backlog".into()),
            },
            shutdown.clone(),
        )
        .await?;
        let (admin, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let mut serial = 0i64;
        eprintln!("pg backlog {backlog}: filling the queue");
        let filled = Instant::now();
        top_up(&admin, backlog, &mut serial).await?;
        eprintln!("  filled in {:.1}s", filled.elapsed().as_secs_f64());
        let mut rates = Vec::new();
        let mut cost = DbCost::default();
        let mut processed = 0u64;
        for round in 0..rounds {
            let w = Window {
                store: &store,
                admin: &admin,
                sink: &sink,
                wake: &running.wake,
                db_name: &db_name,
                backlog,
                window,
            };
            let (rate, done_all, delta) = w.measure(round, &mut serial).await?;
            rates.push(rate);
            cost.add(&delta);
            processed += done_all;
        }
        shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), running.done).await;
        store.close().await;
        drop(admin);
        let _ = conn.await;
        let n = processed.max(1) as f64;
        let per = DbCost {
            wal_bytes: cost.wal_bytes / n,
            commits: cost.commits / n,
            rows_inserted: cost.rows_inserted / n,
            rows_updated: cost.rows_updated / n,
            cpu_us: cost.cpu_us / n,
            backend_cpu_us: cost.backend_cpu_us / n,
        };
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
        Ok(BacklogResult {
            backlog,
            window,
            rounds_events_per_sec: rates,
            events_per_sec: median,
            db: per,
        })
    }
    .await;
    shutdown.cancel();
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = pg_admin(
        admin_url,
        &format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"),
    )
    .await
    {
        eprintln!("warning: could not drop the benchmark database {db_name}: {e}");
    }
    result
}

/// One measured window of [`one_backlog`]: what it needs to pause, top up, and count.
struct Window<'a> {
    store: &'a PgStore,
    admin: &'a tokio_postgres::Client,
    sink: &'a Sink,
    wake: &'a tokio::sync::Notify,
    db_name: &'a str,
    backlog: u64,
    window: u64,
}

impl Window<'_> {
    /// Pause, top the queue up to the backlog, resume, and time `window` events reaching the
    /// sink; then pause again so the window's writes are all in the counters. Returns the
    /// rate, the events applied by the time the counters were read, and the database's cost.
    async fn measure(
        &self,
        round: usize,
        serial: &mut i64,
    ) -> Result<(f64, u64, DbCost), BenchError> {
        let (store, sink, backlog, window) = (self.store, self.sink, self.backlog, self.window);
        store
            .set_paused(CHARTER, true, charter_server::now_millis())
            .await?;
        // Let the runs in flight finish, then top up.
        tokio::time::sleep(Duration::from_millis(500)).await;
        top_up(self.admin, backlog, serial).await?;
        let before = counters(self.admin, self.db_name).await?;
        let applied0 = sink.applied_keys() as u64;
        let start = Instant::now();
        store
            .set_paused(CHARTER, false, charter_server::now_millis())
            .await?;
        self.wake.notify_one();
        let deadline = start + Duration::from_secs(120);
        while (sink.applied_keys() as u64) < applied0 + window {
            if Instant::now() > deadline {
                return Err(BenchError::Other(format!(
                    "backlog {backlog}: {window} events not processed within 120 s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = start.elapsed().as_secs_f64();
        let done = sink.applied_keys() as u64 - applied0;
        // Pause before reading the counters so the window's writes are all in them.
        store
            .set_paused(CHARTER, true, charter_server::now_millis())
            .await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let after = counters(self.admin, self.db_name).await?;
        let done_all = sink.applied_keys() as u64 - applied0;
        let rate = done as f64 / took;
        eprintln!(
            "  round {}: {done} events in {took:.2}s = {rate:.0}/s",
            round + 1
        );
        let ticks_per_sec = 100.0; // USER_HZ on Linux
        let cost = DbCost {
            wal_bytes: (after.wal - before.wal) as f64,
            commits: (after.commits - before.commits) as f64,
            rows_inserted: (after.inserted - before.inserted) as f64,
            rows_updated: (after.updated - before.updated) as f64,
            cpu_us: (after.cpu_ticks - before.cpu_ticks) as f64 / ticks_per_sec * 1_000_000.0,
            backend_cpu_us: after.backend_ticks.saturating_sub(before.backend_ticks) as f64
                / ticks_per_sec
                * 1_000_000.0,
        };
        Ok((rate, done_all, cost))
    }
}

impl DbCost {
    fn add(&mut self, o: &DbCost) {
        self.wal_bytes += o.wal_bytes;
        self.commits += o.commits;
        self.rows_inserted += o.rows_inserted;
        self.rows_updated += o.rows_updated;
        self.cpu_us += o.cpu_us;
        self.backend_cpu_us += o.backend_cpu_us;
    }
}
