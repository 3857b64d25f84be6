//! `charter bench`: measure durable ingest, a no-op HTTP baseline and the end-to-end
//! pipeline on this machine, with the load generator in the same process.
//!
//! Every benchmark serves a throw-away project from a temp dir on a real SQLite file, on
//! 127.0.0.1, and every loop is bounded in time:
//!
//! * **ingest** — one charter (Standard Webhooks signature, a JSON Schema contract, dedupe
//!   on `webhook-id`) served with [`Role::Api`] (no worker). C connections each loop POSTs
//!   of pre-signed deliveries, every one with a unique `webhook-id`. Counts 202s only.
//! * **noop** — the same generator against an axum handler that reads the body and answers
//!   202 with a small JSON: the ceiling of the loopback HTTP path on this machine.
//! * **e2e** — the same project with the worker ([`Role::All`]): a keyword rule (`matches()`), then the embedded
//!   classifier (trained at start-up, before any measured window) decide; one route,
//!   one HTTP action to an in-process [`Sink`]. Sends for the duration, waits (bounded) for
//!   the queue to drain, and reads completion times from the store.
//! * **memory** — VmRSS after start-up idle, and the peak (VmHWM, reset before each load)
//!   while each load runs.
//!
//! The table goes to stdout (JSON with `--json`); progress goes to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use charter_core::config::validate::parse_duration;
use charter_core::model::EventStatus;
use charter_core::verify::{self, VerifySpec};
use charter_server::sink::Sink;
use charter_server::{Role, Runtime, ServeOptions};
use charter_store::postgres::{PgStore, with_dbname};
use charter_store::sqlite::{Durability, Gather, SqliteOptions, SqliteStore};
use charter_store::{EventFilter, EventStore};
use reqwest::header::{HeaderName, HeaderValue};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::serve::{LogArgs, forward_wakeups, init_logging};

mod backlog;

/// Name of the benchmark charter.
const CHARTER: &str = "bench";
/// Its webhook path.
const HOOK_PATH: &str = "/hooks/bench";
/// The webhook secret written into the throw-away project.
const SECRET: &str = "bench-secret-0123456789abcdef";
/// Distinct payloads cycled through (deliveries differ by `webhook-id`, not by body).
const BODIES: usize = 64;
/// Deliveries pre-signed per second of measured time when no rate is known yet.
const FIRST_RATE_GUESS: f64 = 25_000.0;
/// Most deliveries pre-signed for one run. The pool lives in the measured process (about
/// 200 bytes a delivery), so it is capped; past it, deliveries are signed on the fly (about
/// 1 us each) and counted in [`LoadResult::signed_during_run`].
const MAX_POOL: usize = 200_000;
/// A request that takes longer than this counts as an error (bounds every loop).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The sender count at which the ingest / no-op ratio target (>= 0.5) is set: the brief's
/// target load ("256 concurrent senders"). The brief's own anchor explains why not fewer:
/// with its 2-12 ms fsync, "a batch bounded by 32 in-flight requests" caps at ~2,700
/// acks/s, about 0.05 of a no-op server, whatever the HTTP path costs.
const RATIO_TARGET_SENDERS: usize = 256;

/// Which benchmark to run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// Durable ingest and its no-op HTTP baseline (for the ratio).
    Ingest,
    /// The no-op HTTP baseline alone.
    Noop,
    /// End to end: ingest, worker, rule + embedded classifier, route, HTTP action to a local sink.
    E2e,
    /// Everything.
    All,
}

/// `--fsync`: the SQLite store's [`Durability`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fsync {
    Full,
    Pipelined,
}

/// The SQLite store's settings under test (`--fsync`, `--no-gather`).
#[derive(Clone, Copy, Debug)]
struct StoreKnobs {
    fsync: Fsync,
    gather: bool,
}

impl StoreKnobs {
    fn of(args: &BenchArgs) -> StoreKnobs {
        StoreKnobs {
            fsync: args.fsync,
            gather: !args.no_gather,
        }
    }
}

/// Arguments of `charter bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Which benchmark to run.
    #[arg(value_enum, default_value_t = Which::All)]
    pub which: Which,
    /// Measured time per load run (plus a short warm-up for ingest and noop).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Concurrent connections; one run per value (e2e uses the smallest).
    #[arg(long, default_value = "32,256", value_delimiter = ',', value_parser = parse_concurrency)]
    pub concurrency: Vec<usize>,
    /// Runs in flight at once in the benchmark project's worker (its `worker.concurrency`
    /// and the bench charter's `concurrency`). Each run waits for a few group commits, so
    /// end-to-end throughput is bounded by this divided by a run's latency.
    #[arg(long, default_value_t = 256, value_parser = parse_concurrency)]
    pub workers: usize,
    /// Where the SQLite store fsyncs a group commit: `full` (on the writer thread, at
    /// `COMMIT`; what `charter serve` uses) or `pipelined` (a syncer thread fsyncs while the
    /// writer runs the next batch; acknowledgements still follow the fsync).
    #[arg(long, value_enum, default_value_t = Fsync::Full)]
    pub fsync: Fsync,
    /// Turn off the SQLite writer's gathering of larger batches while the CPUs are
    /// saturated (on by default, as in `charter serve`), to measure what it changes.
    #[arg(long)]
    pub no_gather: bool,
    /// Ingest/no-op pairs per concurrency. Each round runs the ingest load and then, right
    /// after it, the same load against the no-op server, so a pair sees the same machine;
    /// the reported ratio is the median of the pairs' ratios (a 2-core VM drifts by tens of
    /// percent over a minute, which a single ingest-then-no-op sequence turns into bias).
    #[arg(long, default_value_t = 1, value_parser = parse_rounds)]
    pub rounds: usize,
    /// Offered rate (requests/s, all connections together) of one more ingest run at the
    /// largest concurrency, paced rather than as fast as answers come: the brief's "p99 ack
    /// <= 25 ms at half that rate" (half of 20,000/s). Latency is counted from each
    /// request's scheduled time, so a late answer also delays what is measured after it. 0
    /// skips the run.
    #[arg(long, default_value_t = 10_000.0)]
    pub paced_rate: f64,
    /// End to end at an offered rate (events/s, all connections together) instead of as fast
    /// as the smallest concurrency's connections get answers: the senders then use the
    /// largest concurrency, each on a fixed schedule, so the figure says whether the engine
    /// keeps up with that rate (events done per second close to it, cycle time bounded) rather
    /// than how fast a closed loop of senders can go. 0 (the default) keeps the closed loop.
    #[arg(long, default_value_t = 0.0)]
    pub e2e_rate: f64,
    /// Longest wait for the e2e queue to drain once sending stops.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Also run the end-to-end benchmark on PostgreSQL: a libpq URL of a server where the
    /// benchmark may create (and then drop) a throw-away database, e.g.
    /// `postgres://postgres@127.0.0.1:5432/postgres`.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Worker node counts for the PostgreSQL end-to-end runs; one run per value.
    #[arg(long, default_value = "1,2,3", value_delimiter = ',', value_parser = parse_nodes)]
    pub nodes: Vec<usize>,
    /// With `--postgres`: also measure one node's processing rate with this many events
    /// queued, one measurement per value (e.g. `1000,500000`; see `bench/backlog.rs`).
    #[arg(long, value_delimiter = ',')]
    pub pg_backlog: Vec<u64>,
    /// Events processed per measured window of `--pg-backlog`.
    #[arg(long, default_value_t = 2000)]
    pub pg_backlog_window: u64,
    /// Windows measured per backlog of `--pg-backlog` (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub pg_backlog_rounds: usize,
    /// Print the report as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

fn parse_rounds(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=50).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a number of rounds between 1 and 50")),
    }
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a concurrency between 1 and 10000")),
    }
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=16).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a node count between 1 and 16")),
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("cannot write the benchmark project: {0}")]
    Io(#[from] std::io::Error),
    #[error("the benchmark project is invalid: {0}")]
    Project(#[from] charter_server::ProjectError),
    #[error("store: {0}")]
    Store(#[from] charter_store::StoreError),
    #[error("cannot start the server: {0}")]
    Serve(#[from] charter_server::ServeError),
    #[error("cannot sign a delivery: {0}")]
    Sign(#[from] verify::VerifyError),
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("{0}")]
    Other(String),
}

// ---------------------------------------------------------------------------------------
// Report

/// Where and how the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    /// 1-minute load average when the benchmark started (other work on the machine).
    pub load_average_at_start: Option<f64>,
    pub load_average_at_end: Option<f64>,
    /// UTC date, YYYY-MM-DD.
    pub date: String,
    pub git_commit: Option<String>,
    pub command: String,
    pub profile: &'static str,
}

/// Latency percentiles in milliseconds, as seen by the client.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// One load run against one target at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub target: &'static str,
    pub concurrency: usize,
    /// The paced run's offered requests/s (`None`: as fast as answers come).
    pub offered_per_sec: Option<f64>,
    /// Measured seconds (warm-up excluded).
    pub seconds: f64,
    /// Requests answered 202 within the measured window.
    pub acks: u64,
    /// 202s that completed during the warm-up or after the window closed (stored, not counted).
    pub acks_outside_window: u64,
    pub acks_per_sec: f64,
    /// Requests answered anything else, or failed; by status (or `transport`).
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    pub latency: Latency,
    /// Deliveries signed before the clock started.
    pub presigned: usize,
    /// Estimated memory held by those pre-signed deliveries, MB (part of the RSS figures).
    pub pool_mb: f64,
    /// Deliveries signed during the run because the pool ran out.
    pub signed_during_run: u64,
    /// Deliveries sent a second time from the pool once it ran out (the no-op half only:
    /// its handler neither verifies nor dedupes, so replaying the pool keeps signing, a
    /// load-generator cost, out of its figure).
    pub replayed_from_pool: u64,
    /// Resident memory before the load (pool included) and its peak during the load, MB.
    pub rss_before_mb: f64,
    pub peak_rss_mb: f64,
    /// CPU time of the whole process (server and load generator) during the measured window,
    /// divided by the acks in it, in microseconds: less noisy than throughput when the
    /// machine's speed moves between runs, and comparable between the two halves of a pair
    /// (`None` where /proc is not readable).
    pub cpu_us_per_ack: Option<f64>,
    /// Share of the machine's CPU time that was idle (iowait included) during the window, %:
    /// near 0 means the run was bound by CPU, not by waiting.
    pub machine_idle_pct: Option<f64>,
    /// What the store did during the run (ingest only).
    pub store: Option<StoreFigures>,
}

/// The SQLite writer's work during one ingest run (warm-up included), and the server's
/// own view of the time spent waiting for the store.
#[derive(Debug, Clone, Serialize)]
pub struct StoreFigures {
    /// Transactions committed (one per group-commit batch).
    pub batches: u64,
    /// Write commands executed.
    pub commands: u64,
    /// fsyncs performed.
    pub syncs: u64,
    /// Commands per batch, on average.
    pub mean_batch: f64,
    /// Batches the writer held to gather more commands (the CPUs were saturated).
    pub gathered: u64,
    /// Share of the run's wall time the single writer spent on batches (running commands,
    /// `COMMIT`, answering), in percent: near 100 the writer's serial chain is the bound.
    pub writer_busy_pct: f64,
    /// Share of the run's wall time spent in `COMMIT` (mostly the fsync), in percent.
    pub commit_pct: f64,
    /// Mean time from a verified delivery to its durable commit, server-side
    /// (`charter_ack_latency_seconds` sum / count), in ms.
    pub mean_store_wait_ms: Option<f64>,
}

/// The end-to-end run.
#[derive(Debug, Clone, Serialize)]
pub struct E2eResult {
    /// `sqlite` or `postgres`.
    pub store: &'static str,
    /// Worker nodes sharing the store (node 0 also takes the HTTP load).
    pub nodes: usize,
    /// Runs in flight per node (the project's worker and charter concurrency).
    pub workers: usize,
    pub send: LoadResult,
    /// Events whose run finished `done`, failed, or were still unfinished at the deadline.
    pub done: u64,
    pub failed: u64,
    pub unfinished: u64,
    pub drained: bool,
    /// Time from the first send to the last event done, in seconds.
    pub seconds: f64,
    pub events_per_sec: f64,
    /// received_at -> event released as done, from the store (millisecond resolution).
    pub cycle_p50_ms: f64,
    pub cycle_p99_ms: f64,
    /// Distinct idempotency keys the sink applied, and keys applied more than once.
    pub sink_applied: usize,
    pub sink_doubled: usize,
    /// Decisions made by the embedded classifier (summed over every node's `/metrics`).
    pub decided_embedded: u64,
    pub peak_rss_mb: f64,
}

/// Memory figures for the whole process (server and load generator share it).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// VmRSS with the ingest server started and idle, before any pool was signed.
    pub idle_rss_mb: Option<f64>,
    /// Highest VmHWM seen over all load runs.
    pub peak_rss_mb: Option<f64>,
}

/// Everything `charter bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub machine: Machine,
    /// The SQLite store's fsync placement for the ingest and e2e runs (`--fsync`).
    pub fsync: &'static str,
    /// Whether the SQLite writer gathered larger batches while the CPUs were saturated
    /// (`--no-gather` turns it off).
    pub gather: bool,
    pub ingest: Vec<LoadResult>,
    pub noop: Vec<LoadResult>,
    /// ingest acks/s divided by no-op acks/s, per concurrency: the median of the rounds'
    /// pairs (`--rounds`). The target (>= 0.5) is set at `ratio_target_senders`.
    pub ingest_over_noop: BTreeMap<usize, f64>,
    /// The sender count at which the ratio target applies (the brief's 256).
    pub ratio_target_senders: usize,
    /// Every pair's ratio, per concurrency, in the order run (one per round).
    pub ingest_over_noop_rounds: BTreeMap<usize, Vec<f64>>,
    /// The same comparison by CPU: the no-op's process CPU per ack divided by ingest's, per
    /// concurrency, median of the pairs. When both halves keep the cores busy it tracks the
    /// throughput ratio; it moves less when the machine's speed changes between runs.
    pub noop_over_ingest_cpu: BTreeMap<usize, f64>,
    /// The ingest run at a paced, offered rate (`--paced-rate`).
    pub ingest_paced: Option<LoadResult>,
    pub e2e: Option<E2eResult>,
    /// End to end on PostgreSQL, one run per node count (`--postgres`).
    pub e2e_postgres: Vec<E2eResult>,
    /// One node's processing rate on PostgreSQL per queued backlog (`--pg-backlog`).
    pub pg_backlog: Vec<backlog::BacklogResult>,
    pub memory: Memory,
}

// ---------------------------------------------------------------------------------------
// Entry point

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
    let machine_start = machine_info();
    let mut report = Report {
        machine: machine_start,
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
    };
    let warmup = (args.duration / 10).min(Duration::from_secs(1));
    let mut rate_hint = FIRST_RATE_GUESS;
    let signer = Arc::new(Signer::new(SECRET)?);
    let client = http_client(concurrency.iter().copied().max().unwrap_or(1))?;
    let do_ingest = matches!(args.which, Which::Ingest | Which::All);
    let do_noop = matches!(args.which, Which::Ingest | Which::Noop | Which::All);
    let do_e2e = matches!(args.which, Which::E2e | Which::All);

    let mut cpu_rounds: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for round in 0..args.rounds {
        if args.rounds > 1 && (do_ingest || do_noop) {
            eprintln!("round {} of {}", round + 1, args.rounds);
        }
        for &c in &concurrency {
            let load = Load {
                client: &client,
                signer: &signer,
                concurrency: c,
                warmup,
                duration: args.duration,
                rate_hint,
                paced: None,
            };
            let (ingest_rate, ingest_cpu) = if do_ingest {
                let result = ingest_run(&load, args, &mut report.memory.idle_rss_mb).await?;
                rate_hint = rate_hint.max(result.acks_per_sec * 1.2);
                let figures = (Some(result.acks_per_sec), result.cpu_us_per_ack);
                report.ingest.push(result);
                figures
            } else {
                (None, None)
            };
            if do_noop {
                let load = Load { rate_hint, ..load };
                let result = noop_run(&load).await?;
                rate_hint = rate_hint.max(result.acks_per_sec * 1.2);
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
                    cpu_rounds.entry(c).or_default().push(n / i);
                }
                report.noop.push(result);
            }
        }
    }
    report.ingest_over_noop = medians(&report.ingest_over_noop_rounds);
    report.noop_over_ingest_cpu = medians(&cpu_rounds);
    if do_ingest && args.paced_rate > 0.0 {
        let load = Load {
            client: &client,
            signer: &signer,
            concurrency: concurrency.iter().copied().max().unwrap_or(1),
            warmup,
            duration: args.duration,
            rate_hint: rate_hint.max(args.paced_rate * 1.2),
            paced: Some(args.paced_rate),
        };
        report.ingest_paced = Some(ingest_run(&load, args, &mut report.memory.idle_rss_mb).await?);
    }
    if do_e2e {
        let paced = (args.e2e_rate > 0.0).then_some(args.e2e_rate);
        let c = if paced.is_some() {
            concurrency.iter().copied().max().unwrap_or(1)
        } else {
            concurrency[0]
        };
        let e2e = e2e(
            &client,
            &signer,
            c,
            paced,
            args.workers,
            StoreKnobs::of(args),
            args.duration,
            args.drain_timeout,
        )
        .await?;
        report.e2e = Some(e2e);
        if let Some(admin_url) = &args.postgres {
            for &n in &args.nodes {
                let r = e2e_postgres(
                    &client,
                    &signer,
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
        }
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

/// One load run's settings, shared by the ingest and no-op halves of a pair.
#[derive(Clone, Copy)]
struct Load<'a> {
    client: &'a reqwest::Client,
    signer: &'a Arc<Signer>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    /// Expected acks/s, to size the pool of pre-signed deliveries.
    rate_hint: f64,
    /// Offered requests/s when paced.
    paced: Option<f64>,
}

impl Load<'_> {
    /// Sign a pool for the expected rate, then drive the load against `url`.
    async fn drive(&self, target: &'static str, url: &str, pool_end: PoolEnd) -> LoadResult {
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
async fn ingest_run(
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
async fn noop_run(load: &Load<'_>) -> Result<LoadResult, BenchError> {
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
fn medians(rounds: &BTreeMap<usize, Vec<f64>>) -> BTreeMap<usize, f64> {
    rounds
        .iter()
        .filter_map(|(c, ratios)| {
            let mut sorted = ratios.clone();
            sorted.sort_by(f64::total_cmp);
            median(&sorted).map(|m| (*c, m))
        })
        .collect()
}

/// The median of sorted values (the mean of the middle two for an even count).
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn pool_size(rate: f64, window: Duration) -> usize {
    let n = rate * window.as_secs_f64() * 1.1;
    (n.max(1_000.0) as usize).min(MAX_POOL)
}

fn http_client(max_connections: usize) -> Result<reqwest::Client, BenchError> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(max_connections)
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

// ---------------------------------------------------------------------------------------
// The project and servers

/// Write the benchmark project into `dir`; `sink_url` is the action's target.
pub fn write_project(dir: &Path, sink_url: &str, workers: usize) -> std::io::Result<()> {
    let files: [(&str, String); 5] = [
        ("secrets/hook", SECRET.to_string()),
        ("data/tickets.csv", bench_examples()),
        (
            "charter.yaml",
            format!(
                r#"store: charter.db
worker:
  lease: 30s
  poll_interval: 20ms
  concurrency: {workers}
  shutdown_grace: 5s
connectors:
  sink:
    type: http
    base_url: {sink_url}
    timeout: 5s
    allow_private: true
"#
            ),
        ),
        (
            "schemas/ticket.json",
            r#"{"type":"object","required":["ticket"],"properties":{"ticket":{"type":"object","required":["id","subject"],"properties":{"id":{"type":"integer"},"subject":{"type":"string"},"description":{"type":"string"}}}}}"#
                .to_string(),
        ),
        (
            "charters/bench.yaml",
            format!(
                r#"name: {CHARTER}
description: Benchmark charter - verify, contract, dedupe, rule + embedded classifier, one HTTP action.
owner: bench@example.test
maintainer: bench@example.test
system_of_record: sink
mode: live
uses: [sink]
concurrency: {workers}
trigger:
  webhook:
    path: {HOOK_PATH}
    verify: {{ preset: standard-webhooks, secret: file:secrets/hook }}
  dedupe: {{ header: webhook-id }}
  input_schema: schemas/ticket.json
  text: "{{{{ payload.ticket.subject }}}}"
decide:
  labels: [billing, other]
  stages:
    - rules:
        - {{ when: 'payload.ticket.subject.matches("(?i)^\\[(vip|urgent)\\]")', label: other }}
    - embedded: {{ examples: data/tickets.csv, accept_above: 0.6 }}
  otherwise: other
routes:
  - when: "true"
    do: [update_ticket]
actions:
  update_ticket:
    connector: sink
    request:
      method: PUT
      path: "/api/tickets/{{{{ payload.ticket.id }}}}"
      json: {{ ticket: {{ label: "{{{{ decision.label }}}}" }} }}
    approval: auto
    retry: {{ attempts: 3, backoff: 50ms, max_backoff: 1s }}
    measure: ticket_routed
escalation: {{ to: ops }}
measure:
  success: [ticket_routed]
"#
            ),
        ),
    ];
    for (rel, contents) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, contents)?;
    }
    Ok(())
}

/// The labelled examples the bench charter's embedded stage is trained on at start-up
/// (before any measured window): 384 generated ticket subjects, half `billing`, half `other`.
pub fn bench_examples() -> String {
    const BILLING: [&str; 8] = [
        "refund request for order ord-{n}",
        "i was charged twice for invoice {n}",
        "please refund my last payment ({n})",
        "wrong amount on my invoice {n}",
        "cancel my subscription and refund order ord-{n}",
        "double charge on my card, order {n}",
        "billing question about invoice {n}",
        "payment failed but money left my account ({n})",
    ];
    const OTHER: [&str; 8] = [
        "cannot log in since the update (case {n})",
        "password reset email never arrives ({n})",
        "the app crashes when i open settings (case {n})",
        "how do i export my data? ({n})",
        "feature request: dark mode ({n})",
        "page {n} loads very slowly",
        "two-factor code is rejected (case {n})",
        "error 500 when saving a draft ({n})",
    ];
    let mut out = String::from("text,label\n");
    for n in 0..24 {
        for (b, o) in BILLING.iter().zip(OTHER.iter()) {
            let id = (n * 7919 + 13) % 100_000;
            out.push_str(&format!(
                "\"{}\",billing\n",
                b.replace("{n}", &id.to_string())
            ));
            out.push_str(&format!(
                "\"{}\",other\n",
                o.replace("{n}", &id.to_string())
            ));
        }
    }
    out
}

/// A Charter server on a throw-away project, with a sink as the action target.
struct BenchServer {
    dir: PathBuf,
    base: String,
    store: SqliteStore,
    sink: Sink,
    shutdown: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl BenchServer {
    async fn start(
        role: Role,
        workers: usize,
        knobs: StoreKnobs,
    ) -> Result<BenchServer, BenchError> {
        let dir =
            std::env::temp_dir().join(format!("charter-bench-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir)?;
        let shutdown = CancellationToken::new();
        let sink = Sink::default();
        let sink_addr = sink
            .start(([127, 0, 0, 1], 0).into(), shutdown.clone())
            .await?;
        let started = Self::boot(
            &dir,
            &sink_addr.to_string(),
            role,
            workers,
            knobs,
            &shutdown,
        )
        .await;
        match started {
            Ok((base, store, done)) => Ok(BenchServer {
                dir,
                base,
                store,
                sink,
                shutdown,
                done,
            }),
            Err(e) => {
                shutdown.cancel();
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    async fn boot(
        dir: &Path,
        sink_addr: &str,
        role: Role,
        workers: usize,
        knobs: StoreKnobs,
        shutdown: &CancellationToken,
    ) -> Result<(String, SqliteStore, tokio::task::JoinHandle<()>), BenchError> {
        write_project(dir, &format!("http://{sink_addr}"), workers)?;
        let runtime = Arc::new(Runtime::load(dir)?);
        let path = runtime.store_path();
        let store = tokio::task::spawn_blocking(move || {
            let durability = match knobs.fsync {
                Fsync::Full => Durability::Full,
                Fsync::Pipelined => Durability::Pipelined,
            };
            SqliteStore::open_with(
                &path,
                SqliteOptions {
                    durability,
                    gather: knobs.gather.then(Gather::default),
                    ..SqliteOptions::default()
                },
            )
        })
        .await
        .map_err(|e| BenchError::Other(format!("opening the store: {e}")))??;
        let running = charter_server::start(
            runtime,
            store.clone(),
            ServeOptions {
                listen: ([127, 0, 0, 1], 0).into(),
                role,
                worker_id: Some("bench".into()),
            },
            shutdown.clone(),
        )
        .await?;
        Ok((format!("http://{}", running.addr), store, running.done))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(15), self.done).await;
        self.store.close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Start the no-op baseline: read the body, answer 202 with a small JSON.
async fn start_noop(shutdown: CancellationToken) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route(HOOK_PATH, post(noop_handler));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
    });
    Ok(addr)
}

async fn noop_handler(body: Bytes) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    (
        StatusCode::ACCEPTED,
        [("content-type", "application/json")],
        format!("{{\"status\":\"accepted\",\"bytes\":{}}}", body.len()),
    )
}

// ---------------------------------------------------------------------------------------
// Deliveries

/// A signed delivery, compact: the signature header values concatenated in one buffer.
#[derive(Clone)]
struct Delivery {
    values: Bytes,
    /// End offset of each header value in `values` (names are in the [`Signer`]).
    ends: [u16; 4],
    body: Bytes,
}

/// Signs deliveries for the benchmark charter (Standard Webhooks, unique `webhook-id`s).
struct Signer {
    spec: VerifySpec,
    secret: String,
    bodies: Vec<Bytes>,
    names: Vec<HeaderName>,
    next: AtomicU64,
    run: String,
}

impl Signer {
    fn new(secret: &str) -> Result<Signer, BenchError> {
        let spec = VerifySpec::StandardWebhooks {
            tolerance: Duration::from_secs(300),
        };
        let bodies: Vec<Bytes> = (0..BODIES).map(sample_body).collect();
        let probe = verify::sign(&spec, secret, &bodies[0], 0, "probe")?;
        let names = probe
            .iter()
            .map(|(k, _)| HeaderName::from_bytes(k.as_bytes()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BenchError::Other(format!("signature header name: {e}")))?;
        if names.len() > 4 {
            return Err(BenchError::Other("too many signature headers".into()));
        }
        Ok(Signer {
            spec,
            secret: secret.to_string(),
            bodies,
            names,
            next: AtomicU64::new(0),
            run: uuid::Uuid::now_v7().simple().to_string(),
        })
    }

    fn sign(&self, now_unix: i64) -> Result<Delivery, BenchError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = self.bodies[(n % BODIES as u64) as usize].clone();
        let id = format!("msg_{}_{n}", self.run);
        let headers = verify::sign(&self.spec, &self.secret, &body, now_unix, &id)?;
        let mut values = Vec::with_capacity(128);
        let mut ends = [0u16; 4];
        for (i, (name, value)) in headers.iter().enumerate() {
            if self.names.get(i).map(HeaderName::as_str) != Some(name.as_str()) {
                return Err(BenchError::Other(format!("unexpected header {name}")));
            }
            values.extend_from_slice(value.as_bytes());
            ends[i] = u16::try_from(values.len())
                .map_err(|_| BenchError::Other("signature headers too long".into()))?;
        }
        Ok(Delivery {
            values: Bytes::from(values),
            ends,
            body,
        })
    }

    /// Pre-sign `n` deliveries.
    fn pool(&self, n: usize) -> Vec<Delivery> {
        let now = now_unix();
        let started = Instant::now();
        let pool: Vec<Delivery> = (0..n).filter_map(|_| self.sign(now).ok()).collect();
        eprintln!(
            "  pre-signed {} deliveries in {:.2}s",
            pool.len(),
            started.elapsed().as_secs_f64()
        );
        pool
    }

    /// The signature headers of `d` as (name, value) pairs.
    fn headers<'a>(
        &'a self,
        d: &'a Delivery,
    ) -> impl Iterator<Item = (HeaderName, Option<HeaderValue>)> + 'a {
        let mut start = 0usize;
        self.names.iter().enumerate().map(move |(i, name)| {
            let end = usize::from(d.ends[i]);
            let value = HeaderValue::from_maybe_shared(d.values.slice(start..end)).ok();
            start = end;
            (name.clone(), value)
        })
    }
}

/// A realistic helpdesk-like payload; half of them mention a refund.
fn sample_body(i: usize) -> Bytes {
    let subject = if i.is_multiple_of(2) {
        format!("Refund request for order ORD-{}", 10_000 + i)
    } else {
        format!("Cannot log in since the update (case {i})")
    };
    let v = serde_json::json!({
        "type": "ticket.updated",
        "ticket": {
            "id": 100_000 + i,
            "subject": subject.to_lowercase(),
            "description": "Hello, I was charged twice this month and would like the extra payment returned. Thanks.",
            "priority": "normal",
        },
        "customer": { "name": "Ada Example", "plan": "team" },
    });
    Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------
// The load generator

#[derive(Default)]
struct TaskStats {
    acks: u64,
    errors: BTreeMap<String, u64>,
    latencies_us: Vec<u32>,
    signed_late: u64,
    replayed: u64,
    acks_outside: u64,
}

/// What a connection does once its share of the pre-signed pool is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PoolEnd {
    /// Sign new deliveries on the fly (each must be new to the target: ingest dedupes).
    Sign,
    /// Send the pool again from its start (for a target that does not dedupe).
    Replay,
}

/// Drive `concurrency` connections against `url` for `warmup + duration`; count what
/// completes inside the measured window.
#[allow(clippy::too_many_arguments)]
async fn generate(
    target: &'static str,
    client: &reqwest::Client,
    url: &str,
    signer: &Arc<Signer>,
    pool: Vec<Delivery>,
    pool_end: PoolEnd,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    paced: Option<f64>,
) -> LoadResult {
    let presigned = pool.len();
    let pool_bytes: usize = pool
        .iter()
        .map(|d| std::mem::size_of::<Delivery>() + d.values.len() + 16)
        .sum();
    // Split the pool into one chunk per connection.
    let mut chunks: Vec<Vec<Delivery>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, d) in pool.into_iter().enumerate() {
        chunks[i % concurrency].push(d);
    }
    let rss_before = proc_status_mb("VmRSS").unwrap_or(0.0);
    reset_peak_rss();
    let url: Arc<str> = Arc::from(url);
    let _progress = crate::progress::Timed::start(
        format!("{target} at {concurrency} connections"),
        warmup + duration,
    );
    let begin = Instant::now();
    let measure_from = begin + warmup;
    let end = measure_from + duration;
    // Paced: each connection sends on its own grid, `concurrency / rate` apart, the grids
    // staggered so the whole load is even.
    let interval = paced
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(concurrency as f64 / r));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, chunk) in chunks.into_iter().enumerate() {
        let client = client.clone();
        let url = url.clone();
        let signer = signer.clone();
        let schedule = interval.map(|every| Schedule {
            first: begin + every.mul_f64(i as f64 / concurrency as f64),
            every,
        });
        tasks.spawn(connection(
            client,
            url,
            signer,
            chunk,
            pool_end,
            measure_from,
            end,
            schedule,
        ));
    }
    // CPU over the measured window only (the connections stop sending at `end`).
    tokio::time::sleep_until(measure_from.into()).await;
    let cpu_from = CpuSample::now();
    tokio::time::sleep_until(end.into()).await;
    let cpu_to = CpuSample::now();
    let mut total = TaskStats::default();
    while let Some(res) = tasks.join_next().await {
        match res {
            Ok(s) => {
                total.acks += s.acks;
                total.signed_late += s.signed_late;
                total.replayed += s.replayed;
                total.acks_outside += s.acks_outside;
                for (k, v) in s.errors {
                    *total.errors.entry(k).or_default() += v;
                }
                total.latencies_us.extend(s.latencies_us);
            }
            Err(e) => {
                *total.errors.entry(format!("task: {e}")).or_default() += 1;
            }
        }
    }
    let peak = proc_status_mb("VmHWM").unwrap_or(0.0);
    let seconds = duration.as_secs_f64();
    total.latencies_us.sort_unstable();
    LoadResult {
        target,
        concurrency,
        offered_per_sec: paced,
        seconds,
        acks: total.acks,
        acks_outside_window: total.acks_outside,
        acks_per_sec: total.acks as f64 / seconds,
        errors: total.errors.values().sum(),
        error_kinds: total.errors,
        latency: latency(&total.latencies_us),
        presigned,
        pool_mb: pool_bytes as f64 / (1024.0 * 1024.0),
        signed_during_run: total.signed_late,
        replayed_from_pool: total.replayed,
        rss_before_mb: rss_before,
        peak_rss_mb: peak,
        cpu_us_per_ack: cpu_from
            .zip(cpu_to)
            .and_then(|(a, b)| b.process_us_since(&a, total.acks)),
        machine_idle_pct: cpu_from.zip(cpu_to).and_then(|(a, b)| b.idle_pct_since(&a)),
        store: None,
    }
}

/// The kernel's CPU-time unit in /proc (`USER_HZ`), 100 on every Linux architecture.
const USER_HZ: f64 = 100.0;

/// CPU time read from /proc: this process's (user + system) and the machine's (idle, total).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuSample {
    process_ticks: u64,
    machine_idle_ticks: u64,
    machine_total_ticks: u64,
}

impl CpuSample {
    fn now() -> Option<CpuSample> {
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        let machine = std::fs::read_to_string("/proc/stat").ok()?;
        CpuSample::parse(&own, &machine)
    }

    /// From the text of `/proc/self/stat` and `/proc/stat`.
    pub fn parse(own_stat: &str, machine_stat: &str) -> Option<CpuSample> {
        // Fields after the command name (which may hold spaces and parentheses): state is
        // the first, utime the 12th and stime the 13th.
        let after = own_stat.get(own_stat.rfind(')')? + 1..)?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        // `cpu  user nice system idle iowait irq softirq steal ...`
        let line = machine_stat.lines().find(|l| l.starts_with("cpu "))?;
        let ticks: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
        Some(CpuSample {
            process_ticks: utime + stime,
            machine_idle_ticks: idle,
            machine_total_ticks: ticks.iter().sum(),
        })
    }

    /// This process's CPU microseconds since `earlier`, per ack.
    pub fn process_us_since(&self, earlier: &CpuSample, acks: u64) -> Option<f64> {
        let ticks = self.process_ticks.checked_sub(earlier.process_ticks)?;
        (acks > 0).then(|| ticks as f64 / USER_HZ * 1e6 / acks as f64)
    }

    /// The machine's idle share since `earlier`, %.
    pub fn idle_pct_since(&self, earlier: &CpuSample) -> Option<f64> {
        let idle = self
            .machine_idle_ticks
            .checked_sub(earlier.machine_idle_ticks)?;
        let total = self
            .machine_total_ticks
            .checked_sub(earlier.machine_total_ticks)?;
        (total > 0).then(|| 100.0 * idle as f64 / total as f64)
    }
}

/// One connection's loop: send, wait for the answer, repeat until `end`.
/// When a paced connection sends: `first`, then every `every`.
#[derive(Clone, Copy)]
struct Schedule {
    first: Instant,
    every: Duration,
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    client: reqwest::Client,
    url: Arc<str>,
    signer: Arc<Signer>,
    chunk: Vec<Delivery>,
    pool_end: PoolEnd,
    measure_from: Instant,
    end: Instant,
    schedule: Option<Schedule>,
) -> TaskStats {
    let mut stats = TaskStats {
        latencies_us: Vec::with_capacity(chunk.len().min(1 << 20)),
        ..TaskStats::default()
    };
    // Deliveries are taken in order; `sent` counts them, so past the chunk's end a replay
    // starts over at its first delivery.
    let mut sent = 0usize;
    loop {
        if Instant::now() >= end {
            break;
        }
        let next = match (chunk.get(sent), pool_end) {
            (Some(d), _) => Some(d.clone()),
            (None, PoolEnd::Replay) if !chunk.is_empty() => {
                stats.replayed += 1;
                Some(chunk[sent % chunk.len()].clone())
            }
            (None, _) => None,
        };
        sent += 1;
        let delivery = match next {
            Some(d) => d,
            None => match signer.sign(now_unix()) {
                Ok(d) => {
                    stats.signed_late += 1;
                    d
                }
                Err(e) => {
                    *stats.errors.entry(format!("sign: {e}")).or_default() += 1;
                    break;
                }
            },
        };
        let mut req = client
            .post(&*url)
            .header("content-type", "application/json");
        for (name, value) in signer.headers(&delivery) {
            if let Some(v) = value {
                req = req.header(name, v);
            }
        }
        // Paced: wait for this request's slot, and count its latency from the slot (a
        // request sent late because the previous answer was slow waited that long too).
        let sent = match schedule {
            Some(sch) => {
                let due = sch.first + sch.every.mul_f64((sent - 1) as f64);
                if due >= end {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let outcome = match req.body(delivery.body).send().await {
            Ok(resp) => {
                let status = resp.status();
                // Read the answer so the connection is free for the next request.
                match resp.bytes().await {
                    Ok(_) => Ok(status),
                    Err(_) => Err("transport"),
                }
            }
            Err(e) if e.is_timeout() => Err("timeout"),
            Err(_) => Err("transport"),
        };
        let finished = Instant::now();
        if finished < measure_from || finished > end {
            if matches!(outcome, Ok(s) if s == StatusCode::ACCEPTED) {
                stats.acks_outside += 1;
            }
            continue;
        }
        match outcome {
            Ok(s) if s == StatusCode::ACCEPTED => {
                stats.acks += 1;
                let us = finished.duration_since(sent).as_micros();
                stats
                    .latencies_us
                    .push(u32::try_from(us).unwrap_or(u32::MAX));
            }
            Ok(s) => *stats.errors.entry(s.as_u16().to_string()).or_default() += 1,
            Err(kind) => *stats.errors.entry(kind.to_string()).or_default() += 1,
        }
    }
    stats
}

/// Percentiles of sorted microsecond samples.
pub fn latency(sorted_us: &[u32]) -> Latency {
    let ms = |q: f64| percentile(sorted_us, q).map_or(0.0, |us| f64::from(us) / 1000.0);
    Latency {
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: sorted_us.last().map_or(0.0, |us| f64::from(*us) / 1000.0),
    }
}

/// The nearest-rank percentile `q` (0..=1) of sorted samples.
pub fn percentile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted
        .get(rank.saturating_sub(1).min(sorted.len() - 1))
        .copied()
}

// ---------------------------------------------------------------------------------------
// End to end

#[allow(clippy::too_many_arguments)]
async fn e2e(
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
struct E2eTarget<'a> {
    store_name: &'static str,
    /// The node taking the webhooks.
    ingest_base: &'a str,
    /// Every node: their `/metrics` are summed to see runs finish.
    metrics_bases: &'a [String],
    sink: &'a Sink,
    /// Runs in flight per node (`--workers`).
    workers: usize,
}

/// Send for `duration`, wait (bounded) until every acknowledged event's run finished, and
/// read cycle times from the store.
#[allow(clippy::too_many_arguments)]
async fn measure_e2e<S: EventStore>(
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
const PG_POOL_PER_NODE: usize = 16;

/// End to end on PostgreSQL with `nodes` Charter nodes in this process, each with its own
/// connection pool and worker id, on one throw-away database: node 0 serves HTTP and works,
/// the others only work (`Role::Worker`). Idle workers are woken by LISTEN/NOTIFY as in
/// `charter serve`.
#[allow(clippy::too_many_arguments)]
async fn e2e_postgres(
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
async fn pg_admin(admin_url: &str, sql: &str) -> Result<(), BenchError> {
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

// ---------------------------------------------------------------------------------------
// Machine facts

fn machine_info() -> Machine {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average_at_start: load_average(),
        load_average_at_end: None,
        date: civil_date(now_unix()),
        git_commit: git_commit(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        profile,
    }
}

fn now_unix() -> i64 {
    charter_server::now_millis() / 1000
}

fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// `YYYY-MM-DD` (UTC) of a Unix time in seconds.
pub fn civil_date(unix_secs: i64) -> String {
    charter_core::calendar::date_of_unix(unix_secs)
}

/// A `kB` field of /proc/self/status, in MB.
fn proc_status_mb(field: &str) -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    status_field_kb(&text, field).map(|kb| kb as f64 / 1024.0)
}

/// Parse `Field:   1234 kB` out of /proc/<pid>/status text.
pub fn status_field_kb(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let rest = l.strip_prefix(field)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Reset VmHWM to the current RSS (Linux: write 5 to clear_refs); ignored where unsupported.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

// ---------------------------------------------------------------------------------------
// Output

fn summary_line(r: &LoadResult) -> String {
    let offered = r
        .offered_per_sec
        .map(|o| format!(" (offered {o:.0}/s)"))
        .unwrap_or_default();
    format!(
        "{}{offered}: {:.0} acks/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, {} errors, peak RSS {:.0} MB",
        r.target,
        r.acks_per_sec,
        r.latency.p50_ms,
        r.latency.p99_ms,
        r.latency.p999_ms,
        r.errors,
        r.peak_rss_mb
    )
}

/// One concurrency's ratio line: the median, its verdict at the target's load (on the
/// unrounded median) or why there is none, every pair, and the CPU comparison.
fn ratio_line(
    target_senders: usize,
    c: usize,
    ratio: f64,
    pairs: Option<&[f64]>,
    cpu: Option<f64>,
) -> String {
    let each = pairs
        .filter(|v| v.len() > 1)
        .map(|v| {
            let list: Vec<String> = v.iter().map(|x| format!("{x:.2}")).collect();
            format!(
                "; median of {} adjacent pairs: {}",
                v.len(),
                list.join(", ")
            )
        })
        .unwrap_or_default();
    let cpu = cpu
        .map(|x| format!("; by CPU per ack, no-op / ingest: {x:.2}"))
        .unwrap_or_default();
    let target = if c == target_senders {
        let verdict = if ratio >= 0.5 { "met" } else { "not met" };
        format!("target >= 0.5 at {target_senders} senders: {verdict}")
    } else {
        format!(
            "for information: the target is set at {target_senders} senders; with fewer, each waiting for its group commit, the writer's commit chain rather than the HTTP path bounds ingest"
        )
    };
    format!("ingest / no-op at {c} connections: {ratio:.3} ({target}){each}{cpu}")
}

/// The human-readable report.
pub fn render_table(r: &Report) -> String {
    let m = &r.machine;
    let mut out = String::new();
    let _ = writeln!(out, "charter bench ({} build)", m.profile);
    let _ = writeln!(out, "  command: {}", m.command);
    let _ = writeln!(
        out,
        "  date: {}  cores: {}  commit: {}  load avg (1 min) at start/end: {}/{}",
        m.date,
        m.cores,
        m.git_commit.as_deref().unwrap_or("unknown"),
        fmt_opt(m.load_average_at_start),
        fmt_opt(m.load_average_at_end),
    );
    let _ = writeln!(
        out,
        "  the load generator runs in the same process, on the same cores; SQLite fsync: {}; batches gathered while the CPUs are saturated: {}",
        r.fsync,
        if r.gather { "yes" } else { "no (--no-gather)" }
    );
    if !r.ingest.is_empty() || !r.noop.is_empty() {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<8} {:>5} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>11} {:>7}",
            "target",
            "conns",
            "acks/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
            "peak MB",
            "cpu us/ack",
            "idle %"
        );
        for l in r.ingest.iter().chain(&r.noop) {
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>9.0} {:>11} {:>7}",
                l.target,
                l.concurrency,
                l.acks_per_sec,
                l.latency.p50_ms,
                l.latency.p99_ms,
                l.latency.p999_ms,
                l.latency.max_ms,
                l.errors,
                l.peak_rss_mb,
                fmt_opt(l.cpu_us_per_ack),
                fmt_opt(l.machine_idle_pct)
            );
        }
        for l in &r.ingest {
            if let Some(st) = &l.store {
                let _ = writeln!(
                    out,
                    "  ingest at {}: {} commits ({} fsyncs, {} of them gathered) for {} writes, {:.1} writes per commit; writer busy {:.0}% of the run (COMMIT {:.0}%); server-side store wait {} ms mean",
                    l.concurrency,
                    st.batches,
                    st.syncs,
                    st.gathered,
                    st.commands,
                    st.mean_batch,
                    st.writer_busy_pct,
                    st.commit_pct,
                    fmt_opt(st.mean_store_wait_ms),
                );
            }
        }
        for l in r.ingest.iter().chain(&r.noop) {
            let _ = writeln!(
                out,
                "  {} at {}: {} deliveries pre-signed (~{:.0} MB; {} more signed during the run, {} sent again from the pool); RSS before load {:.0} MB",
                l.target,
                l.concurrency,
                l.presigned,
                l.pool_mb,
                l.signed_during_run,
                l.replayed_from_pool,
                l.rss_before_mb
            );
        }
        for l in r.ingest.iter().chain(&r.noop).filter(|l| l.errors > 0) {
            let _ = writeln!(
                out,
                "  {} at {}: errors {:?}",
                l.target, l.concurrency, l.error_kinds
            );
        }
        for (c, ratio) in &r.ingest_over_noop {
            let line = ratio_line(
                r.ratio_target_senders,
                *c,
                *ratio,
                r.ingest_over_noop_rounds.get(c).map(Vec::as_slice),
                r.noop_over_ingest_cpu.get(c).copied(),
            );
            let _ = writeln!(out, "{line}");
        }
    }
    if let Some(p) = &r.ingest_paced {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "ingest paced at {:.0} requests/s offered, {} connections: {:.0} acks/s, p50 {:.2} ms, p99 {:.2} ms (target: p99 <= 25 ms at half of 20,000/s), p99.9 {:.2} ms, {} errors",
            p.offered_per_sec.unwrap_or(0.0),
            p.concurrency,
            p.acks_per_sec,
            p.latency.p50_ms,
            p.latency.p99_ms,
            p.latency.p999_ms,
            p.errors
        );
    }
    for b in &r.pg_backlog {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "postgres, 1 node, {} events queued: {:.0} events/s processed (median of {:?}, {} per window); per event: {:.0} WAL bytes, {:.2} commits, {:.2} rows inserted, {:.2} rows updated, {:.0} us CPU of the database's sessions ({:.0} us of all PostgreSQL processes)",
            b.backlog,
            b.events_per_sec,
            b.rounds_events_per_sec
                .iter()
                .map(|v| v.round())
                .collect::<Vec<_>>(),
            b.window,
            b.db.wal_bytes,
            b.db.commits,
            b.db.rows_inserted,
            b.db.rows_updated,
            b.db.backend_cpu_us,
            b.db.cpu_us
        );
    }
    for e in r.e2e.iter().chain(&r.e2e_postgres) {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "e2e on {} with {} node(s), {} runs in flight each ({} connections{}, {:.0}s of sending): {} acked at {:.0}/s; {} done, {} failed, {} unfinished{}",
            e.store,
            e.nodes,
            e.workers,
            e.send.concurrency,
            e.send
                .offered_per_sec
                .map(|o| format!(" paced at {o:.0} events/s offered"))
                .unwrap_or_default(),
            e.send.seconds,
            e.send.acks,
            e.send.acks_per_sec,
            e.done,
            e.failed,
            e.unfinished,
            if e.drained { "" } else { " (drain timed out)" }
        );
        let _ = writeln!(
            out,
            "  {:.0} events/s completed over {:.1}s (first send to last done); cycle time p50 {:.0} ms, p99 {:.0} ms",
            e.events_per_sec, e.seconds, e.cycle_p50_ms, e.cycle_p99_ms
        );
        let _ = writeln!(
            out,
            "  sink applied {} distinct keys, {} applied twice; {} decided by the embedded classifier; peak RSS {:.0} MB",
            e.sink_applied, e.sink_doubled, e.decided_embedded, e.peak_rss_mb
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "memory: idle RSS {} MB, peak RSS under load {} MB (server and load generator together)",
        fmt_opt(r.memory.idle_rss_mb),
        fmt_opt(r.memory.peak_rss_mb)
    );
    out
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_tools as tools;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&v, 0.5), Some(500));
        assert_eq!(percentile(&v, 0.99), Some(990));
        assert_eq!(percentile(&v, 0.999), Some(999));
        assert_eq!(percentile(&v, 1.0), Some(1000));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile::<u32>(&[], 0.5), None);
        let l = latency(&[1000, 2000, 3000, 4000]);
        assert_eq!(l.p50_ms, 2.0);
        assert_eq!(l.max_ms, 4.0);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(951_782_400), "2000-02-29");
        assert_eq!(civil_date(1_795_392_000), "2026-11-23");
        assert_eq!(civil_date(1_795_391_999), "2026-11-22");
        assert_eq!(civil_date(-86_400), "1969-12-31");
    }

    #[test]
    fn proc_status_fields() {
        let text = "Name:\tcharter\nVmHWM:\t  123456 kB\nVmRSS:\t   65432 kB\n";
        assert_eq!(status_field_kb(text, "VmRSS"), Some(65_432));
        assert_eq!(status_field_kb(text, "VmHWM"), Some(123_456));
        assert_eq!(status_field_kb(text, "VmSwap"), None);
        // A field is matched by its whole name, not by prefix.
        assert_eq!(status_field_kb("VmRSSX:\t1 kB\n", "VmRSS"), None);
        // On Linux, this process has a resident set.
        if cfg!(target_os = "linux") {
            assert!(proc_status_mb("VmRSS").is_some_and(|mb| mb > 0.0));
        }
    }

    #[test]
    fn runs_finished_sums_outcomes_of_one_charter() {
        let text = "# TYPE charter_runs_total counter\n\
            charter_runs_total{charter=\"bench\",outcome=\"done\"} 41\n\
            charter_runs_total{charter=\"bench\",outcome=\"failed\"} 1\n\
            charter_runs_total{charter=\"benchmark\",outcome=\"done\"} 7\n\
            charter_events_received_total{charter=\"bench\"} 99\n";
        assert_eq!(runs_finished(text, "bench"), 42);
        assert_eq!(runs_finished(text, "other"), 0);
    }

    #[test]
    fn histogram_mean_divides_sum_by_count() {
        let text = "charter_ack_latency_seconds_bucket{le=\"+Inf\"} 4\n\
            charter_ack_latency_seconds_sum 0.02\n\
            charter_ack_latency_seconds_count 4\n";
        let mean = histogram_mean(text, "charter_ack_latency_seconds").unwrap();
        assert!((mean - 0.005).abs() < 1e-12);
        assert_eq!(
            histogram_mean("x_sum 0\nx_count 0\n", "x"),
            None,
            "no observations, no mean"
        );
        assert_eq!(histogram_mean(text, "charter_cycle_time_seconds"), None);
    }

    #[test]
    fn concurrency_values_are_bounded() {
        assert_eq!(parse_concurrency("32"), Ok(32));
        assert!(parse_concurrency("0").is_err());
        assert!(parse_concurrency("x").is_err());
        assert!(parse_concurrency("100000").is_err());
    }

    #[test]
    fn signed_deliveries_verify_and_are_unique() {
        let signer = Signer::new(SECRET).unwrap();
        let now = now_unix();
        let a = signer.sign(now).unwrap();
        let b = signer.sign(now).unwrap();
        let headers = |d: &Delivery| -> std::collections::BTreeMap<String, String> {
            signer
                .headers(d)
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.unwrap().to_str().unwrap().to_string(),
                    )
                })
                .collect()
        };
        let (ha, hb) = (headers(&a), headers(&b));
        assert_ne!(ha["webhook-id"], hb["webhook-id"]);
        verify::verify(&signer.spec, &[SECRET.to_string()], &ha, &a.body, now).unwrap();
        // A wrong secret is refused: the signature really covers the body.
        assert!(verify::verify(&signer.spec, &["other".to_string()], &ha, &a.body, now).is_err());
        let payload: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert!(payload["ticket"]["id"].is_i64());
    }

    fn tiny_args(which: Which) -> BenchArgs {
        BenchArgs {
            which,
            duration: Duration::from_millis(400),
            concurrency: vec![4],
            workers: 8,
            fsync: Fsync::Full,
            no_gather: false,
            drain_timeout: Duration::from_secs(30),
            rounds: 1,
            postgres: None,
            nodes: vec![1],
            pg_backlog: Vec::new(),
            pg_backlog_window: 2000,
            pg_backlog_rounds: 3,
            json: true,
            out: None,
            paced_rate: 0.0,
            e2e_rate: 0.0,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paced_ingest_run_sends_on_its_schedule() {
        charter_connect::install_crypto_provider();
        let args = BenchArgs {
            paced_rate: 200.0,
            ..tiny_args(Which::Ingest)
        };
        let report = run(&args).await.unwrap();
        let paced = report.ingest_paced.expect("the paced run");
        assert_eq!(paced.offered_per_sec, Some(200.0));
        assert_eq!(paced.concurrency, 4);
        assert_eq!(paced.errors, 0, "{:?}", paced.error_kinds);
        // The schedule bounds what is sent: 200/s over the 0.4 s window (plus one slot per
        // connection at its edge), where the unpaced run of the same load answers far more.
        assert!(paced.acks > 0);
        assert!(paced.acks <= 80 + 4, "{} acks", paced.acks);
        // The unpaced run of the same load is not bound by the schedule: it answers more
        // than the schedule's cap (not a multiple of the paced run: on a loaded machine the
        // unpaced window may be slow, and that is not what this test is about).
        assert!(
            report.ingest[0].acks > 80 + 4,
            "the unpaced run is not bound by it: {} acks",
            report.ingest[0].acks
        );
    }

    #[test]
    fn cpu_samples_parse_proc_and_divide_per_ack() {
        // A command name with a space and a parenthesis, as /proc/<pid>/stat may show.
        let own = "4242 (charter (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 350 150 0 0 20 0 9";
        let machine = "cpu  1000 5 300 8000 100 0 50 20 0 0\ncpu0 500 2 150 4000 50 0 25 10 0 0\n";
        let a = CpuSample::parse(own, machine).unwrap();
        assert_eq!(a.process_ticks, 500);
        assert_eq!(a.machine_idle_ticks, 8100);
        assert_eq!(a.machine_total_ticks, 9475);
        let own2 = own.replace(" 350 150 ", " 550 250 ");
        let machine2 = "cpu  1150 5 350 8040 110 0 60 20 0 0\n";
        let b = CpuSample::parse(&own2, machine2).unwrap();
        // 300 ticks of 10 ms = 3 s of CPU over 1,000 acks: 3,000 us each.
        assert!((b.process_us_since(&a, 1_000).unwrap() - 3_000.0).abs() < 1e-9);
        assert_eq!(b.process_us_since(&a, 0), None);
        // 50 idle ticks (40 idle + 10 iowait) of 260.
        assert!((b.idle_pct_since(&a).unwrap() - 100.0 * 50.0 / 260.0).abs() < 1e-9);
        assert_eq!(
            a.process_us_since(&b, 1),
            None,
            "time does not run backwards"
        );
        assert_eq!(CpuSample::parse("garbage", machine), None);
        assert_eq!(CpuSample::parse(own, "intr 1 2 3"), None);
    }

    /// The ratio's verdict is given at the target's load only, on the unrounded median.
    #[test]
    fn the_ratio_verdict_is_given_at_256_connections_only() {
        let line = ratio_line(
            RATIO_TARGET_SENDERS,
            256,
            0.4996,
            Some(&[0.51, 0.4996, 0.47]),
            Some(0.53),
        );
        assert_eq!(
            line,
            "ingest / no-op at 256 connections: 0.500 (target >= 0.5 at 256 senders: not met); \
             median of 3 adjacent pairs: 0.51, 0.50, 0.47; by CPU per ack, no-op / ingest: 0.53"
        );
        let line = ratio_line(RATIO_TARGET_SENDERS, 256, 0.5, None, None);
        assert!(
            line.ends_with("0.500 (target >= 0.5 at 256 senders: met)"),
            "{line}"
        );
        // Above the target at another concurrency: no verdict, the reason instead.
        let line = ratio_line(RATIO_TARGET_SENDERS, 32, 0.9, Some(&[0.9]), None);
        assert!(
            line.starts_with("ingest / no-op at 32 connections: 0.900 (for information"),
            "{line}"
        );
        assert!(!line.contains("met"), "{line}");
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[0.4]), Some(0.4));
        assert_eq!(median(&[0.3, 0.5, 0.9]), Some(0.5));
        assert_eq!(median(&[0.2, 0.4, 0.6, 1.0]), Some(0.5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ingest_and_noop_runs_count_acks_without_errors() {
        charter_connect::install_crypto_provider();
        let args = BenchArgs {
            rounds: 2,
            ..tiny_args(Which::Ingest)
        };
        let report = run(&args).await.unwrap();
        // Two rounds of one adjacent ingest/no-op pair each.
        assert_eq!(report.ingest.len(), 2);
        assert_eq!(report.noop.len(), 2);
        let pairs = &report.ingest_over_noop_rounds[&4];
        assert_eq!(pairs.len(), 2);
        for (k, ratio) in pairs.iter().enumerate() {
            let expected = report.ingest[k].acks_per_sec / report.noop[k].acks_per_sec;
            assert!(
                (ratio - expected).abs() < 1e-9,
                "pair {k}: {ratio} vs {expected}"
            );
        }
        assert!((report.ingest_over_noop[&4] - (pairs[0] + pairs[1]) / 2.0).abs() < 1e-9);
        for r in report.ingest.iter().chain(&report.noop) {
            assert!(r.acks > 0, "{} acked nothing", r.target);
            assert_eq!(r.errors, 0, "{}: {:?}", r.target, r.error_kinds);
            assert!(r.latency.p50_ms > 0.0 && r.latency.p50_ms <= r.latency.p99_ms);
        }
        assert!(report.ingest_over_noop.contains_key(&4));
        // CPU per ack is read for every run, and its pair ratio is the median of the pairs.
        let mut cpu_pairs = Vec::new();
        for (i, n) in report.ingest.iter().zip(&report.noop) {
            let (ci, cn) = (i.cpu_us_per_ack.unwrap(), n.cpu_us_per_ack.unwrap());
            assert!(ci >= 0.0 && cn >= 0.0);
            for idle in [i.machine_idle_pct.unwrap(), n.machine_idle_pct.unwrap()] {
                assert!((0.0..=100.0).contains(&idle), "idle {idle}%");
            }
            if ci > 0.0 {
                cpu_pairs.push(cn / ci);
            }
        }
        cpu_pairs.sort_by(f64::total_cmp);
        match median(&cpu_pairs) {
            Some(m) => assert!((report.noop_over_ingest_cpu[&4] - m).abs() < 1e-9),
            None => assert!(report.noop_over_ingest_cpu.is_empty()),
        }
        let st = report.ingest[0].store.as_ref().unwrap();
        // Every ack is one durable write, and group commit never makes more commits than writes.
        assert!(st.commands >= report.ingest[0].acks);
        assert!(st.batches >= 1 && st.batches <= st.commands);
        assert!(st.mean_store_wait_ms.is_some_and(|ms| ms > 0.0));
        // The writer's time is a share of the run's wall time (a batch straddling the
        // window's edges may add a little).
        assert!(
            st.writer_busy_pct > 0.0 && st.writer_busy_pct < 110.0,
            "{st:?}"
        );
        assert!(st.commit_pct > 0.0 && st.commit_pct < 110.0, "{st:?}");
        assert!(report.memory.idle_rss_mb.is_some_and(|m| m > 0.0));
        let table = render_table(&report);
        assert!(table.contains("ingest / no-op at 4 connections"));
        assert!(table.contains("writer busy"), "{table}");
        // 4 connections is not the target's load: the ratio is shown for information.
        assert!(
            table.contains("the target is set at 256 senders"),
            "{table}"
        );
        assert_eq!(report.ratio_target_senders, 256);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replayed_pool_sends_its_deliveries_again_and_signs_none() {
        charter_connect::install_crypto_provider();
        let shutdown = CancellationToken::new();
        let addr = start_noop(shutdown.clone()).await.unwrap();
        let url: Arc<str> = Arc::from(format!("http://{addr}{HOOK_PATH}").as_str());
        let signer = Arc::new(Signer::new(SECRET).unwrap());
        let client = http_client(2).unwrap();
        let now = Instant::now();
        let end = now + Duration::from_millis(300);
        let replay = connection(
            client.clone(),
            url.clone(),
            signer.clone(),
            signer.pool(2),
            PoolEnd::Replay,
            now,
            end,
            None,
        )
        .await;
        assert!(replay.acks > 2, "only {} acks", replay.acks);
        assert_eq!(replay.signed_late, 0);
        // Every request past the two pooled deliveries was a replay.
        assert_eq!(replay.replayed, replay.acks + replay.acks_outside - 2);
        let sign = connection(
            client,
            url,
            signer.clone(),
            signer.pool(2),
            PoolEnd::Sign,
            Instant::now(),
            Instant::now() + Duration::from_millis(300),
            None,
        )
        .await;
        assert_eq!(sign.replayed, 0);
        assert_eq!(sign.signed_late, sign.acks + sign.acks_outside - 2);
        assert!(sign.errors.is_empty(), "{:?}", sign.errors);
        shutdown.cancel();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn e2e_run_processes_every_acked_event_once() {
        charter_connect::install_crypto_provider();
        let report = run(&tiny_args(Which::E2e)).await.unwrap();
        let e = report.e2e.unwrap();
        assert!(e.send.acks > 0);
        assert!(e.drained, "queue did not drain");
        assert_eq!(e.done, e.send.acks + e.send.acks_outside_window);
        assert_eq!(e.failed + e.unfinished, 0);
        assert_eq!(e.sink_applied as u64, e.done);
        assert_eq!(e.sink_doubled, 0);
        // The bench charter decides with its embedded classifier (trained at start-up).
        assert_eq!(e.decided_embedded, e.done);
        assert!(e.events_per_sec > 0.0);
        assert!(e.cycle_p50_ms <= e.cycle_p99_ms);
    }

    /// At an offered rate the senders keep their schedule (no more than it allows), and
    /// every acknowledged event is still processed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_paced_e2e_run_offers_its_rate_and_processes_every_event_once() {
        charter_connect::install_crypto_provider();
        let args = BenchArgs {
            e2e_rate: 100.0,
            duration: Duration::from_secs(1),
            concurrency: vec![2, 4],
            ..tiny_args(Which::E2e)
        };
        let report = run(&args).await.unwrap();
        let e = report.e2e.unwrap();
        assert_eq!(e.send.offered_per_sec, Some(100.0));
        assert_eq!(
            e.send.concurrency, 4,
            "paced senders use the largest concurrency"
        );
        let sent = e.send.acks + e.send.acks_outside_window;
        // 100/s for 1 s: the schedule allows 100 sends (one more per connection at the edge).
        assert!((50..=104).contains(&sent), "sent {sent}");
        assert!(e.drained, "queue did not drain");
        assert_eq!(e.done, sent);
        assert_eq!(e.sink_applied as u64, e.done);
        assert_eq!(e.sink_doubled, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn e2e_on_postgres_with_two_nodes_processes_every_acked_event_once() {
        let url = std::env::var("CHARTER_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        if !tools::available(tools::Tool::Postgres, || {
            tools::tcp_listening(&tools::pg_addr(&url))
        }) {
            return;
        }
        charter_connect::install_crypto_provider();
        let mut args = tiny_args(Which::E2e);
        args.postgres = Some(url);
        args.nodes = vec![2];
        let report = run(&args).await.unwrap();
        assert_eq!(report.e2e_postgres.len(), 1);
        let e = &report.e2e_postgres[0];
        assert_eq!((e.store, e.nodes), ("postgres", 2));
        assert!(e.send.acks > 0);
        assert!(e.drained, "queue did not drain");
        assert_eq!(e.done, e.send.acks + e.send.acks_outside_window);
        assert_eq!(e.failed + e.unfinished, 0);
        assert_eq!(e.sink_applied as u64, e.done);
        assert_eq!(e.sink_doubled, 0);
        assert!(render_table(&report).contains("e2e on postgres with 2 node(s)"));
    }
}
