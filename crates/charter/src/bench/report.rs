//! The report `charter bench` prints: machine facts, load runs, end-to-end runs, memory.

use std::collections::BTreeMap;

use serde::Serialize;

use super::backlog;

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
    /// The open-stream benchmark (`charter bench open`), absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<super::open::OpenReport>,
}
