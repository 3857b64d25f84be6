//! The entry point: run the selected benchmarks in order and collect the [`Report`].

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use charter_server::Role;
use tokio_util::sync::CancellationToken;

use super::deliveries::Signer;
use super::e2e::{e2e, e2e_postgres, histogram_mean};
use super::load::{PoolEnd, generate};
use super::machine::{load_average, machine_info, proc_status_mb};
use super::output::{render_table, summary_line};
use super::report::{LoadResult, Memory, Report, StoreFigures};
use super::servers::{BenchServer, start_noop};
use super::{
    BenchArgs, BenchError, FIRST_RATE_GUESS, Fsync, HOOK_PATH, MAX_POOL, RATIO_TARGET_SENDERS,
    REQUEST_TIMEOUT, SECRET, StoreKnobs, Which, backlog, open,
};
use crate::serve::{LogArgs, init_logging};

/// Run `charter bench`.
pub async fn bench(args: BenchArgs) -> ExitCode {
    init_logging(&LogArgs {
        log_level: "warn".into(),
        log_format: "pretty".into(),
    });
    match run(&args).await {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                render_table(&report)
            };
            println!("{text}");
            if let Some(path) = &args.out {
                let json = serde_json::to_string_pretty(&report).unwrap_or_default();
                if let Err(e) = std::fs::write(path, json + "\n") {
                    eprintln!("error: cannot write {}: {e}", path.display());
                    return ExitCode::from(1);
                }
                eprintln!("report written to {}", path.display());
            }
            let failed = report.ingest.iter().any(|r| r.errors > 0)
                || report
                    .e2e
                    .iter()
                    .chain(&report.e2e_postgres)
                    .any(|e| !e.drained || e.failed > 0 || e.sink_doubled > 0);
            if failed {
                eprintln!("warning: some requests or runs failed; see the report");
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Run the selected benchmarks and collect the report.
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    let mut concurrency = args.concurrency.clone();
    concurrency.sort_unstable();
    concurrency.dedup();
    if concurrency.is_empty() {
        return Err(BenchError::Other(
            "--concurrency needs at least one value".into(),
        ));
    }
    let mut report = empty_report(args);
    let warmup = (args.duration / 10).min(Duration::from_secs(1));
    let signer = Arc::new(Signer::new(SECRET)?);
    let client = http_client(concurrency.iter().copied().max().unwrap_or(1))?;
    let do_ingest = matches!(args.which, Which::Ingest | Which::All);
    let do_noop = matches!(args.which, Which::Ingest | Which::Noop | Which::All);
    let do_e2e = matches!(args.which, Which::E2e | Which::All);
    let largest = concurrency.iter().copied().max().unwrap_or(1);

    let mut pairs = Pairs {
        client: &client,
        signer: &signer,
        warmup,
        rate_hint: FIRST_RATE_GUESS,
        cpu_rounds: BTreeMap::new(),
    };
    for round in 0..args.rounds {
        if args.rounds > 1 && (do_ingest || do_noop) {
            eprintln!("round {} of {}", round + 1, args.rounds);
        }
        for &c in &concurrency {
            pairs
                .one_pair(args, c, do_ingest, do_noop, &mut report)
                .await?;
        }
    }
    report.ingest_over_noop = medians(&report.ingest_over_noop_rounds);
    report.noop_over_ingest_cpu = medians(&pairs.cpu_rounds);
    if do_ingest && args.paced_rate > 0.0 {
        let load = Load {
            client: &client,
            signer: &signer,
            concurrency: largest,
            warmup,
            duration: args.duration,
            rate_hint: pairs.rate_hint.max(args.paced_rate * 1.2),
            paced: Some(args.paced_rate),
        };
        report.ingest_paced = Some(ingest_run(&load, args, &mut report.memory.idle_rss_mb).await?);
    }
    if matches!(args.which, Which::Open) {
        report.open = Some(open::open_bench(args).await?);
    }
    if do_e2e {
        let paced = (args.e2e_rate > 0.0).then_some(args.e2e_rate);
        let c = if paced.is_some() {
            largest
        } else {
            concurrency[0]
        };
        run_e2e(args, &client, &signer, c, paced, &mut report).await?;
    }
    let peaks = report
        .ingest
        .iter()
        .chain(&report.noop)
        .map(|r| r.peak_rss_mb)
        .chain(report.e2e.as_ref().map(|e| e.peak_rss_mb))
        .chain(report.e2e_postgres.iter().map(|e| e.peak_rss_mb));
    report.memory.peak_rss_mb =
        peaks.fold(None, |m: Option<f64>, p| Some(m.map_or(p, |m| m.max(p))));
    report.machine.load_average_at_end = load_average();
    Ok(report)
}

/// A report with the machine facts and the settings, before anything is measured.
fn empty_report(args: &BenchArgs) -> Report {
    Report {
        machine: machine_info(),
        fsync: match args.fsync {
            Fsync::Full => "full",
            Fsync::Pipelined => "pipelined",
        },
        gather: StoreKnobs::of(args).gather,
        ingest: Vec::new(),
        noop: Vec::new(),
        ingest_over_noop: BTreeMap::new(),
        ratio_target_senders: RATIO_TARGET_SENDERS,
        ingest_over_noop_rounds: BTreeMap::new(),
        noop_over_ingest_cpu: BTreeMap::new(),
        ingest_paced: None,
        e2e: None,
        e2e_postgres: Vec::new(),
        pg_backlog: Vec::new(),
        memory: Memory::default(),
        open: None,
    }
}

/// The ingest/no-op pairs' shared state across rounds: the pool sizing hint (raised by each
/// run's rate) and the CPU ratios of the pairs.
struct Pairs<'a> {
    client: &'a reqwest::Client,
    signer: &'a Arc<Signer>,
    warmup: Duration,
    rate_hint: f64,
    cpu_rounds: BTreeMap<usize, Vec<f64>>,
}

impl Pairs<'_> {
    /// One round's ingest run and, right after it, its no-op half, at `c` connections.
    async fn one_pair(
        &mut self,
        args: &BenchArgs,
        c: usize,
        do_ingest: bool,
        do_noop: bool,
        report: &mut Report,
    ) -> Result<(), BenchError> {
        let load = Load {
            client: self.client,
            signer: self.signer,
            concurrency: c,
            warmup: self.warmup,
            duration: args.duration,
            rate_hint: self.rate_hint,
            paced: None,
        };
        let (ingest_rate, ingest_cpu) = if do_ingest {
            let result = ingest_run(&load, args, &mut report.memory.idle_rss_mb).await?;
            self.rate_hint = self.rate_hint.max(result.acks_per_sec * 1.2);
            let figures = (Some(result.acks_per_sec), result.cpu_us_per_ack);
            report.ingest.push(result);
            figures
        } else {
            (None, None)
        };
        if !do_noop {
            return Ok(());
        }
        let load = Load {
            rate_hint: self.rate_hint,
            ..load
        };
        let result = noop_run(&load).await?;
        self.rate_hint = self.rate_hint.max(result.acks_per_sec * 1.2);
        if let Some(i) = ingest_rate
            && result.acks_per_sec > 0.0
        {
            report
                .ingest_over_noop_rounds
                .entry(c)
                .or_default()
                .push(i / result.acks_per_sec);
        }
        if let Some((i, n)) = ingest_cpu.zip(result.cpu_us_per_ack)
            && i > 0.0
        {
            self.cpu_rounds.entry(c).or_default().push(n / i);
        }
        report.noop.push(result);
        Ok(())
    }
}

/// The end-to-end runs: SQLite, then (with `--postgres`) each node count and the backlogs.
async fn run_e2e(
    args: &BenchArgs,
    client: &reqwest::Client,
    signer: &Arc<Signer>,
    c: usize,
    paced: Option<f64>,
    report: &mut Report,
) -> Result<(), BenchError> {
    let e2e = e2e(
        client,
        signer,
        c,
        paced,
        args.workers,
        StoreKnobs::of(args),
        args.duration,
        args.drain_timeout,
    )
    .await?;
    report.e2e = Some(e2e);
    let Some(admin_url) = &args.postgres else {
        return Ok(());
    };
    for &n in &args.nodes {
        let r = e2e_postgres(
            client,
            signer,
            c,
            paced,
            args.duration,
            args.drain_timeout,
            admin_url,
            n,
            args.workers,
        )
        .await?;
        report.e2e_postgres.push(r);
    }
    if !args.pg_backlog.is_empty() {
        report.pg_backlog = backlog::pg_backlog(
            admin_url,
            &args.pg_backlog,
            args.workers,
            args.pg_backlog_rounds.max(1),
            args.pg_backlog_window.max(1),
        )
        .await?;
    }
    Ok(())
}

/// One load run's settings, shared by the ingest and no-op halves of a pair.
#[derive(Clone, Copy)]
pub(super) struct Load<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) signer: &'a Arc<Signer>,
    pub(super) concurrency: usize,
    pub(super) warmup: Duration,
    pub(super) duration: Duration,
    /// Expected acks/s, to size the pool of pre-signed deliveries.
    pub(super) rate_hint: f64,
    /// Offered requests/s when paced.
    pub(super) paced: Option<f64>,
}

impl Load<'_> {
    /// Sign a pool for the expected rate, then drive the load against `url`.
    pub(super) async fn drive(
        &self,
        target: &'static str,
        url: &str,
        pool_end: PoolEnd,
    ) -> LoadResult {
        let pool = self
            .signer
            .pool(pool_size(self.rate_hint, self.duration + self.warmup));
        generate(
            target,
            self.client,
            url,
            self.signer,
            pool,
            pool_end,
            self.concurrency,
            self.warmup,
            self.duration,
            self.paced,
        )
        .await
    }
}

/// The ingest half: a fresh server and database, the load, and the store's own figures.
/// The first call records the idle RSS (server started, nothing signed yet).
pub(super) async fn ingest_run(
    load: &Load<'_>,
    args: &BenchArgs,
    idle_rss_mb: &mut Option<f64>,
) -> Result<LoadResult, BenchError> {
    let c = load.concurrency;
    let server = BenchServer::start(Role::Api, args.workers, StoreKnobs::of(args)).await?;
    if idle_rss_mb.is_none() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        *idle_rss_mb = proc_status_mb("VmRSS");
    }
    let paced = load
        .paced
        .map(|r| format!(", paced at {r:.0} requests/s"))
        .unwrap_or_default();
    eprintln!(
        "ingest: {c} connections{paced}, {:?} (+{:?} warm-up) against {}",
        load.duration, load.warmup, server.base
    );
    let before = server.store.stats();
    let wall = Instant::now();
    let mut result = load
        .drive(
            "ingest",
            &format!("{}{HOOK_PATH}", server.base),
            PoolEnd::Sign,
        )
        .await;
    let after = server.store.stats();
    let wall_us = wall.elapsed().as_secs_f64() * 1e6;
    let share = |us: u64| {
        if wall_us > 0.0 {
            us as f64 * 100.0 / wall_us
        } else {
            0.0
        }
    };
    let batches = after.batches.saturating_sub(before.batches);
    let commands = after.commands.saturating_sub(before.commands);
    let metrics = load
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await?
        .text()
        .await?;
    result.store = Some(StoreFigures {
        batches,
        commands,
        syncs: after.syncs.saturating_sub(before.syncs),
        gathered: after.gathered.saturating_sub(before.gathered),
        writer_busy_pct: share(after.busy_us.saturating_sub(before.busy_us)),
        commit_pct: share(after.commit_us.saturating_sub(before.commit_us)),
        mean_batch: if batches > 0 {
            commands as f64 / batches as f64
        } else {
            0.0
        },
        mean_store_wait_ms: histogram_mean(&metrics, "charter_ack_latency_seconds")
            .map(|s| s * 1000.0),
    });
    server.stop().await;
    eprintln!("  {}", summary_line(&result));
    Ok(result)
}

/// The no-op half: the same load against a handler that only reads the body.
pub(super) async fn noop_run(load: &Load<'_>) -> Result<LoadResult, BenchError> {
    let c = load.concurrency;
    let shutdown = CancellationToken::new();
    let addr = start_noop(shutdown.clone()).await?;
    eprintln!(
        "noop: {c} connections, {:?} (+{:?} warm-up) against http://{addr}",
        load.duration, load.warmup
    );
    let result = load
        .drive(
            "noop",
            &format!("http://{addr}{HOOK_PATH}"),
            PoolEnd::Replay,
        )
        .await;
    shutdown.cancel();
    eprintln!("  {}", summary_line(&result));
    Ok(result)
}

/// The median of each concurrency's pair ratios.
pub(super) fn medians(rounds: &BTreeMap<usize, Vec<f64>>) -> BTreeMap<usize, f64> {
    medians_of(rounds)
}

/// The median of each key's values.
pub(super) fn medians_of<K: Ord + Clone>(rounds: &BTreeMap<K, Vec<f64>>) -> BTreeMap<K, f64> {
    rounds
        .iter()
        .filter_map(|(c, ratios)| {
            let mut sorted = ratios.clone();
            sorted.sort_by(f64::total_cmp);
            median(&sorted).map(|m| (c.clone(), m))
        })
        .collect()
}

/// The median of sorted values (the mean of the middle two for an even count).
pub(super) fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

pub(super) fn pool_size(rate: f64, window: Duration) -> usize {
    let n = rate * window.as_secs_f64() * 1.1;
    (n.max(1_000.0) as usize).min(MAX_POOL)
}

pub(super) fn http_client(max_connections: usize) -> Result<reqwest::Client, BenchError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(max_connections)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}
