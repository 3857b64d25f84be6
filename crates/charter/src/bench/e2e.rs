//! End to end: send, wait for every acknowledged event's run to finish, read cycle times
//! (SQLite and PostgreSQL, one or more nodes).

use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_core::model::EventStatus;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::postgres::{PgStore, with_dbname};
use charter_store::{EventFilter, EventStore};
use charter_testkit::sink::Sink;
use tokio_util::sync::CancellationToken;

use super::deliveries::Signer;
use super::entry::pool_size;
use super::load::{PoolEnd, generate, percentile};
use super::machine::proc_status_mb;
use super::output::summary_line;
use super::report::E2eResult;
use super::servers::{BenchServer, write_project};
use super::{BenchError, CHARTER, HOOK_PATH, StoreKnobs};
use crate::serve::forward_wakeups;

pub(super) async fn e2e(
    client: &reqwest::Client,
    signer: &Arc<Signer>,
    concurrency: usize,
    paced: Option<f64>,
    workers: usize,
    knobs: StoreKnobs,
    duration: Duration,
    drain_timeout: Duration,
) -> Result<E2eResult, BenchError> {
    let server = BenchServer::start(Role::All, workers, knobs).await?;
    eprintln!(
        "e2e (sqlite): {concurrency} connections for {duration:?} against {}, then drain (at most {drain_timeout:?})",
        server.base
    );
    let result = measure_e2e(
        client,
        signer,
        E2eTarget {
            store_name: "sqlite",
            ingest_base: &server.base,
            metrics_bases: std::slice::from_ref(&server.base),
            sink: &server.sink,
            workers,
        },
        &server.store,
        concurrency,
        paced,
        duration,
        drain_timeout,
    )
    .await;
    server.stop().await;
    result
}

/// Where an end-to-end run sends and where it reads progress.
pub(super) struct E2eTarget<'a> {
    pub(super) store_name: &'static str,
    /// The node taking the webhooks.
    pub(super) ingest_base: &'a str,
    /// Every node: their `/metrics` are summed to see runs finish.
    pub(super) metrics_bases: &'a [String],
    pub(super) sink: &'a Sink,
    /// Runs in flight per node (`--workers`).
    pub(super) workers: usize,
}

/// Send for `duration`, wait (bounded) until every acknowledged event's run finished, and
/// read cycle times from the store.
pub(super) async fn measure_e2e<S: EventStore>(
    client: &reqwest::Client,
    signer: &Arc<Signer>,
    target: E2eTarget<'_>,
    store: &S,
    concurrency: usize,
    paced: Option<f64>,
    duration: Duration,
    drain_timeout: Duration,
) -> Result<E2eResult, BenchError> {
    // The worker limits the rate; a pool for a few thousand events/s is plenty, the rest
    // is signed on the fly.
    let pool = signer.pool(pool_size(paced.unwrap_or(10_000.0), duration));
    let url = format!("{}{HOOK_PATH}", target.ingest_base);
    let first_send_ms = charter_server::now_millis();
    let send = generate(
        "e2e-send",
        client,
        &url,
        signer,
        pool,
        PoolEnd::Sign,
        concurrency,
        Duration::ZERO,
        duration,
        paced,
    )
    .await;
    eprintln!("  sent: {}", summary_line(&send));
    let stored = send.acks + send.acks_outside_window;
    let deadline = Instant::now() + drain_timeout;
    let mut drained = false;
    let mut last_report = Instant::now();
    let mut decided_embedded = 0;
    while Instant::now() < deadline {
        let mut finished = 0;
        decided_embedded = 0;
        for base in target.metrics_bases {
            if let Ok(r) = client.get(format!("{base}/metrics")).send().await
                && let Ok(t) = r.text().await
            {
                finished += runs_finished(&t, CHARTER);
                decided_embedded += decisions_by(&t, CHARTER, "embedded");
            }
        }
        if finished >= stored {
            drained = true;
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("  draining: {finished} of {stored} runs finished");
            last_report = Instant::now();
        }
        // Each scrape of /metrics counts the backlog in the store, which is not free with
        // tens of thousands of events queued: scraping every 100 ms took about a quarter of
        // the Tokio threads' CPU during the drain. The figures come from the store's
        // timestamps, so how soon the drain is noticed does not change them.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let peak = proc_status_mb("VmHWM").unwrap_or(0.0);
    let events = store
        .list_events(EventFilter {
            charter: Some(CHARTER.into()),
            limit: usize::try_from(stored)
                .unwrap_or(usize::MAX)
                .saturating_add(1_000),
            ..EventFilter::default()
        })
        .await?;
    let mut cycles: Vec<i64> = Vec::new();
    let (mut done, mut failed, mut unfinished) = (0u64, 0u64, 0u64);
    let mut last_done = first_send_ms;
    for e in &events {
        match e.status {
            EventStatus::Done => {
                done += 1;
                cycles.push(e.updated_at - e.event.received_at);
                last_done = last_done.max(e.updated_at);
            }
            EventStatus::Failed => failed += 1,
            _ => unfinished += 1,
        }
    }
    cycles.sort_unstable();
    let seconds = (last_done - first_send_ms) as f64 / 1000.0;
    let result = E2eResult {
        store: target.store_name,
        nodes: target.metrics_bases.len(),
        workers: target.workers,
        done,
        failed,
        unfinished,
        drained,
        seconds,
        events_per_sec: if seconds > 0.0 {
            done as f64 / seconds
        } else {
            0.0
        },
        cycle_p50_ms: percentile(&cycles, 0.50).unwrap_or(0) as f64,
        cycle_p99_ms: percentile(&cycles, 0.99).unwrap_or(0) as f64,
        sink_applied: target.sink.applied_keys(),
        sink_doubled: target.sink.doubled_keys().len(),
        decided_embedded,
        peak_rss_mb: peak.max(send.peak_rss_mb),
        send,
    };
    eprintln!(
        "  e2e: {done} done, {failed} failed, {unfinished} unfinished; {:.0} events/s; cycle p50 {:.0} ms p99 {:.0} ms",
        result.events_per_sec, result.cycle_p50_ms, result.cycle_p99_ms
    );
    Ok(result)
}

/// Connections each benchmark node keeps to PostgreSQL.
pub(super) const PG_POOL_PER_NODE: usize = 16;

/// End to end on PostgreSQL with `nodes` Charter nodes in this process, each with its own
/// connection pool and worker id, on one throw-away database: node 0 serves HTTP and works,
/// the others only work (`Role::Worker`). Idle workers are woken by LISTEN/NOTIFY as in
/// `charter serve`.
pub(super) async fn e2e_postgres(
    client: &reqwest::Client,
    signer: &Arc<Signer>,
    concurrency: usize,
    paced: Option<f64>,
    duration: Duration,
    drain_timeout: Duration,
    admin_url: &str,
    nodes: usize,
    workers: usize,
) -> Result<E2eResult, BenchError> {
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
        let mut stores = Vec::new();
        let mut bases = Vec::new();
        let mut dones = Vec::new();
        for i in 0..nodes {
            let store = PgStore::connect(&url, PG_POOL_PER_NODE).await?;
            let running = charter_server::start(
                runtime.clone(),
                store.clone(),
                ServeOptions {
                    listen: ([127, 0, 0, 1], 0).into(),
                    role: if i == 0 { Role::All } else { Role::Worker },
                    worker_id: Some(format!("bench-node-{i}")),
                },
                shutdown.clone(),
            )
            .await?;
            if let Ok(rx) = store.listen().await {
                forward_wakeups(rx, running.wake.clone(), shutdown.clone());
            }
            bases.push(format!("http://{}", running.addr));
            dones.push(running.done);
            stores.push(store);
        }
        eprintln!(
            "e2e (postgres, {nodes} node(s)): {concurrency} connections for {duration:?} against {}, then drain (at most {drain_timeout:?})",
            bases[0]
        );
        let result = measure_e2e(
            client,
            signer,
            E2eTarget {
                store_name: "postgres",
                ingest_base: &bases[0],
                metrics_bases: &bases,
                sink: &sink,
                workers,
            },
            &stores[0],
            concurrency,
            paced,
            duration,
            drain_timeout,
        )
        .await;
        shutdown.cancel();
        for done in dones {
            let _ = tokio::time::timeout(Duration::from_secs(15), done).await;
        }
        for store in &stores {
            store.close().await;
        }
        result
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

/// Run one statement on the admin connection (database creation and removal).
pub(super) async fn pg_admin(admin_url: &str, sql: &str) -> Result<(), BenchError> {
    let (client, connection) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls).await?;
    let conn = tokio::spawn(connection);
    let res = client.batch_execute(sql).await;
    drop(client);
    let _ = conn.await;
    res.map_err(BenchError::from)
}

/// Sum of `charter_runs_total` over outcomes for one charter, from Prometheus text.
pub fn runs_finished(metrics: &str, charter: &str) -> u64 {
    let label = format!("charter=\"{charter}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("charter_runs_total{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Decisions of `charter` made by `stage` (`charter_decisions_total`).
pub fn decisions_by(metrics: &str, charter: &str, stage: &str) -> u64 {
    let (c, st) = (
        format!("charter=\"{charter}\""),
        format!("stage=\"{stage}\""),
    );
    metrics
        .lines()
        .filter(|l| l.starts_with("charter_decisions_total{") && l.contains(&c) && l.contains(&st))
        .filter_map(|l| l.rsplit(' ').next())
        .filter_map(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Mean of a Prometheus histogram (`_sum / _count`, unlabelled), if it has observations.
pub fn histogram_mean(metrics: &str, name: &str) -> Option<f64> {
    let value = |suffix: &str| -> Option<f64> {
        let prefix = format!("{name}_{suffix} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
    };
    let count = value("count")?;
    (count > 0.0).then_some(value("sum")? / count)
}
