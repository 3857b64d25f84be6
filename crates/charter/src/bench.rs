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
//! * **open** (`charter bench open`, not part of `all`) — the end-to-end job under an open
//!   stream at fixed offered rates, against `charter serve` in a child process (and another
//!   server, e.g. Node-RED, in alternating rounds): see [`open`].
//!
//! The table goes to stdout (JSON with `--json`); progress goes to stderr.
//!
//! Layout: the arguments and errors here; [`entry`] runs the benchmarks in order,
//! [`report`] holds the figures, [`servers`] the throw-away project and servers,
//! [`deliveries`] the signed requests, [`load`] the closed-loop and paced generator,
//! [`e2e`] the end-to-end runs (and [`backlog`] the PostgreSQL backlog runs), [`machine`]
//! the machine and process facts, [`output`] the table, [`open`] the open-stream benchmark.

use std::path::PathBuf;
use std::time::Duration;

use charter_core::config::validate::parse_duration;
use charter_core::verify;

mod backlog;
mod deliveries;
mod e2e;
mod entry;
mod load;
mod machine;
mod open;
mod output;
mod report;
mod servers;
#[cfg(test)]
mod tests;

pub use entry::bench;

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
    /// Everything (but `open`).
    All,
    /// An open stream at fixed offered rates against `charter serve` in a child process
    /// (and, with `--compare-url`, another server in alternating rounds); see `bench/open.rs`.
    Open,
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
    /// `open`: the offered rates stepped through, events/s; each round stops at the first
    /// rate not sustained.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,1000,2000,3000,4000,5000,6000,8000,10000,12000,16000,20000"
    )]
    pub rates: Vec<f64>,
    /// `open`: how the charter's keyword rule is written.
    #[arg(long, value_enum, default_value_t = open::target::Rule::Matches)]
    pub rule: open::target::Rule,
    /// `open`: the timing sink's port on 127.0.0.1 (0: any; a compared server's flow must
    /// call the sink, so give the port its flow uses, e.g. 18090 for
    /// `scripts/bench-open/node-red-flow.json`).
    #[arg(long, default_value_t = 0)]
    pub sink_port: u16,
    /// `open`: also drive this server (its webhook URL) in alternating rounds, e.g.
    /// `http://127.0.0.1:1880/hooks/open` for Node-RED.
    #[arg(long, value_name = "URL")]
    pub compare_url: Option<String>,
    /// `open`: the compared server's process id (for its CPU time).
    #[arg(long, value_name = "PID")]
    pub compare_pid: Option<u32>,
    /// `open`: the compared server's name in the report.
    #[arg(long, default_value = "node-red")]
    pub compare_name: String,
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
