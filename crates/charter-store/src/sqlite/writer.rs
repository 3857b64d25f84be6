//! The single writer thread with group commit.
//!
//! Every write is a command sent over a bounded channel to one dedicated OS thread that owns
//! the only write connection. The thread blocks for the first command, then takes every
//! command already queued (up to `max_batch`), runs them all in ONE transaction — each inside
//! its own `SAVEPOINT`, so a failing command rolls back alone and gets its own error — commits
//! (with `synchronous=FULL` that is one fsync for the whole batch), and only then answers each
//! command. An answer therefore always means "committed and on disk".
//!
//! A command submitted with [`Writer::submit_atomic`] makes at most one write statement, so it
//! runs without the `SAVEPOINT`: SQLite already undoes a failed statement alone (statement
//! atomicity), and the savepoint would cost two more statements and a copy of every page the
//! command touches into the statement journal. That is the hot path of durable ingest.
//!
//! When the machine's CPUs are saturated (see [`Gather`]), the writer waits up to a bounded
//! time for more commands before it commits: a commit's cost is mostly per transaction (the
//! right-hand pages of every index rewritten into the WAL, the fsync, the page-cache work),
//! so fewer, larger commits leave more CPU to the threads that receive requests. While any
//! CPU is idle it commits at once, which is what a latency-bound load (few senders, each
//! waiting for its acknowledgement) needs.
//!
//! Commands wait in two queues ([`lanes`]): ingest's inserts in one, every other write in
//! the other, and each batch takes from both, so a saturated ingest cannot starve the
//! runs' writes (nor the other way round).
//!
//! With [`Durability::Pipelined`] the fsync moves to a second thread: the writer commits
//! without waiting for the disk (`synchronous=NORMAL`) and goes on with the next batch, while
//! the syncer thread fsyncs the WAL file and only then answers the committed commands. Every
//! answer still follows an fsync that covers its commit (and every commit before it).

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

mod lanes;
use lanes::{Lanes, Senders};

use crate::{Result, StoreError};

/// Counters of the writer thread, for tests, metrics and tuning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (or attempted), one per batch.
    pub batches: u64,
    /// Write commands executed over all batches.
    pub commands: u64,
    /// fsyncs that made batches durable (one per batch with [`Durability::Full`]; one per
    /// group of batches with [`Durability::Pipelined`]).
    pub syncs: u64,
    /// Batches for which the writer waited to gather more commands (the machine was
    /// saturated; see [`Gather`]).
    pub gathered: u64,
    /// Microseconds the writer thread spent on batches, from running the first command to
    /// answering the last (with [`Durability::Full`] this includes the fsync; with
    /// [`Durability::Pipelined`] the fsync and the answers are the syncer thread's). Over a
    /// wall time it says how busy the writer was: near 100% the single writer is the bound.
    pub busy_us: u64,
    /// Microseconds spent in `COMMIT` (with [`Durability::Full`], mostly the fsync).
    pub commit_us: u64,
    /// Commands from ingest's queue (its inserts; see [`lanes`]).
    pub ingest_commands: u64,
    /// Batches holding at least one command from the other queue (claims, runs' writes,
    /// releases...).
    pub work_batches: u64,
}

/// When and how long the writer waits to gather a larger batch before committing.
///
/// The writer commits as soon as it has taken the queued commands, unless the machine's
/// CPUs were saturated over the last reading: their idle share (idle and I/O wait) below
/// `idle_below`, read from `/proc/stat` over windows of at least 200 ms (on a system
/// without it the writer never waits). Then it waits in steps of `step`, taking what
/// arrives, until `target` commands are in the batch, `max_wait` has passed since it took
/// the first, or a step brought nothing (the senders are waiting for answers, so waiting
/// longer would leave CPUs idle). On a saturated machine the time waited is spent by the
/// threads that receive requests, and a commit's cost, mostly per transaction, is shared by
/// more commands; on a machine with idle CPU, waiting would only add latency.
///
/// `/proc/stat` counts the whole machine: in a container limited to a share of a larger
/// host it reflects the host, so a mostly idle host never gathers (the store behaves as
/// without gathering) and a busy host may gather for an idle container (each batch then
/// waits at most one step once nothing more arrives, and never beyond `max_wait`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gather {
    /// Commands in the batch at which the writer stops waiting.
    pub target: usize,
    /// Longest wait, from taking the batch's first command to the start of its transaction.
    pub max_wait: Duration,
    /// How long the writer sleeps between looks at its queue while it waits.
    pub step: Duration,
    /// Machine idle share (0 to 1) under which the CPUs count as saturated. A value above 1
    /// counts every reading as saturated (for tests).
    pub idle_below: f64,
}

impl Default for Gather {
    /// 128 commands or 2 ms in steps of 100 us, when less than 15% of the machine's CPU
    /// time was idle.
    fn default() -> Self {
        Gather {
            target: 128,
            max_wait: Duration::from_millis(2),
            step: Duration::from_micros(100),
            idle_below: 0.15,
        }
    }
}

/// How a committed batch is made durable before its commands are answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=FULL`: `COMMIT` fsyncs the WAL on the writer thread, then the batch is
    /// answered. Only durable data is ever visible to other connections.
    #[default]
    Full,
    /// `synchronous=NORMAL` plus a syncer thread that fsyncs the WAL file after each commit
    /// (grouping commits that finished meanwhile) and then answers. The writer never waits
    /// for the disk, so throughput is bounded by the fsync rate times the batch size rather
    /// than by fsync plus SQL time. Acknowledgements carry the same guarantee as `Full`;
    /// reads on the pool may briefly see committed data whose fsync is still running.
    Pipelined,
}

/// A type-erased write command.
trait Command: Send {
    /// Run the command against the open transaction. The returned answer is held until the
    /// batch has committed.
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Answer>;
    /// Answer the command with an error without running it.
    fn fail(self: Box<Self>, err: StoreError);
    /// The command makes at most one write statement: it needs no savepoint of its own.
    fn atomic(&self) -> bool;
}

/// The result of a command that ran, waiting for its batch to commit.
trait Answer: Send {
    fn ok(&self) -> bool;
    /// Deliver the answer; `commit` is the outcome of the batch's commit.
    fn send(self: Box<Self>, commit: std::result::Result<(), String>);
}

struct Cmd<F, R> {
    f: F,
    tx: oneshot::Sender<Result<R>>,
    atomic: bool,
}

struct Ready<R> {
    result: Result<R>,
    tx: oneshot::Sender<Result<R>>,
}

impl<F, R> Command for Cmd<F, R>
where
    F: FnOnce(&Connection) -> Result<R> + Send + 'static,
    R: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Answer> {
        let Cmd { f, tx, .. } = *self;
        let result = match std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))) {
            Ok(result) => result,
            Err(_) => Err(StoreError::Database("write command panicked".into())),
        };
        Box::new(Ready { result, tx })
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.tx.send(Err(err));
    }

    fn atomic(&self) -> bool {
        self.atomic
    }
}

impl<R: Send + 'static> Answer for Ready<R> {
    fn ok(&self) -> bool {
        self.result.is_ok()
    }

    fn send(self: Box<Self>, commit: std::result::Result<(), String>) {
        let out = match commit {
            Ok(()) => self.result,
            Err(msg) => Err(StoreError::Database(msg)),
        };
        // The caller may have gone away (request cancelled); the write stands regardless.
        let _ = self.tx.send(out);
    }
}

enum Msg {
    Cmd(Box<dyn Command>),
    Shutdown(oneshot::Sender<()>),
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    commands: AtomicU64,
    syncs: AtomicU64,
    gathered: AtomicU64,
    busy_us: AtomicU64,
    commit_us: AtomicU64,
    ingest_commands: AtomicU64,
    work_batches: AtomicU64,
}

/// Handle to the writer thread. Cheap to share behind an `Arc`.
pub(crate) struct Writer {
    senders: Senders,
    /// The writer thread, woken by every send.
    waker: Thread,
    counters: Arc<Counters>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Writer {
    /// Start the writer thread on `conn` (already configured and migrated). `wal` is the open
    /// WAL file when the fsync is pipelined ([`Durability::Pipelined`]), `None` when `COMMIT`
    /// itself fsyncs.
    pub(crate) fn start(
        conn: Connection,
        max_batch: usize,
        queue: usize,
        wal: Option<File>,
        gather: Option<Gather>,
    ) -> Result<Writer> {
        let (senders, lanes) = lanes::lanes(queue);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let max_batch = max_batch.max(1);
        let thread = std::thread::Builder::new()
            .name("charter-sqlite-writer".into())
            .spawn(move || {
                let syncer = match wal {
                    Some(wal) => match Syncer::start(wal, Arc::clone(&thread_counters)) {
                        Ok(syncer) => Some(syncer),
                        Err(e) => {
                            tracing::error!(error = %e, "starting the WAL syncer thread");
                            return;
                        }
                    },
                    None => None,
                };
                let gather = gather.map(|g| (g, Saturation::default()));
                writer_loop(conn, lanes, max_batch, &thread_counters, syncer, gather)
            })
            .map_err(|e| StoreError::Database(format!("starting the writer thread: {e}")))?;
        Ok(Writer {
            senders,
            waker: thread.thread().clone(),
            counters,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Run `f` inside the next batch's transaction, in its own savepoint; resolves after the
    /// batch committed.
    pub(crate) async fn submit<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.send(f, false).await
    }

    /// [`Writer::submit`] for a command that makes **at most one write statement** (reads
    /// before or after it are fine): it runs without a savepoint, since SQLite rolls a failed
    /// statement back alone. A command with two writes must use [`Writer::submit`], or a
    /// failure of the second would leave the first in the batch; so must a command that can
    /// return an error after its write succeeded.
    pub(crate) async fn submit_atomic<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        self.send(f, true).await
    }

    async fn send<F, R>(&self, f: F, atomic: bool) -> Result<R>
    where
        F: FnOnce(&Connection) -> Result<R> + Send + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.senders
            .send(Msg::Cmd(Box::new(Cmd { f, tx, atomic })), &self.waker)
            .await
            .map_err(|()| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) fn stats(&self) -> WriterStats {
        WriterStats {
            batches: self.counters.batches.load(Ordering::Relaxed),
            commands: self.counters.commands.load(Ordering::Relaxed),
            syncs: self.counters.syncs.load(Ordering::Relaxed),
            gathered: self.counters.gathered.load(Ordering::Relaxed),
            busy_us: self.counters.busy_us.load(Ordering::Relaxed),
            commit_us: self.counters.commit_us.load(Ordering::Relaxed),
            ingest_commands: self.counters.ingest_commands.load(Ordering::Relaxed),
            work_batches: self.counters.work_batches.load(Ordering::Relaxed),
        }
    }

    /// Stop accepting commands, run every command already queued, close the connection and
    /// end the thread. Idempotent.
    pub(crate) async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self
            .senders
            .send(Msg::Shutdown(tx), &self.waker)
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        let handle = match self.thread.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(handle) = handle {
            let joined = tokio::task::spawn_blocking(move || handle.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the SQLite writer thread ended abnormally");
            }
        }
    }
}

fn writer_loop(
    conn: Connection,
    mut lanes: Lanes,
    max_batch: usize,
    counters: &Counters,
    syncer: Option<Syncer>,
    mut gather: Option<(Gather, Saturation)>,
) {
    let mut batch: Vec<Box<dyn Command>> = Vec::with_capacity(max_batch);
    let mut shutdown: Vec<oneshot::Sender<()>> = Vec::new();
    let mut closing = false;
    while let Some(first) = lanes.wait() {
        let taken = Instant::now();
        match first {
            Msg::Cmd(cmd) => batch.push(cmd),
            Msg::Shutdown(done) => shutdown.push(done),
        }
        lanes.take(&mut batch, &mut shutdown, max_batch);
        if let Some((g, saturation)) = gather.as_mut() {
            let target = g.target.min(max_batch);
            if !batch.is_empty()
                && batch.len() < target
                && shutdown.is_empty()
                && saturation.saturated(taken, g.idle_below)
            {
                counters.gathered.fetch_add(1, Ordering::Relaxed);
                let deadline = taken + g.max_wait;
                gather_more(
                    &mut lanes,
                    &mut batch,
                    &mut shutdown,
                    target,
                    g.step,
                    deadline,
                );
            }
        }
        if !batch.is_empty() {
            let started = Instant::now();
            let (answers, commit) = run_batch(&conn, &mut batch, counters);
            match (&syncer, commit) {
                (Some(syncer), Ok(())) => syncer.enqueue(answers),
                (None, Ok(())) => {
                    counters.syncs.fetch_add(1, Ordering::Relaxed);
                    answer_all(answers, &Ok(()));
                }
                (_, Err(msg)) => answer_all(answers, &Err(msg)),
            }
            add_micros(&counters.busy_us, started);
        }
        if !shutdown.is_empty() && !closing {
            // Refuse new commands; the loop goes on until the queues are empty.
            closing = true;
            lanes.close();
        }
    }
    if let Some(syncer) = syncer {
        syncer.finish();
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the SQLite write connection");
    }
    tracing::debug!("SQLite writer stopped");
    for done in shutdown {
        let _ = done.send(());
    }
}

/// Wait in steps, taking queued commands, until the batch holds `target` commands,
/// `deadline` passes, a step brings nothing or a shutdown is asked for.
fn gather_more(
    lanes: &mut Lanes,
    batch: &mut Vec<Box<dyn Command>>,
    shutdown: &mut Vec<oneshot::Sender<()>>,
    target: usize,
    step: Duration,
    deadline: Instant,
) {
    while batch.len() < target && shutdown.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(step.min(deadline - now));
        if lanes.take(batch, shutdown, target) == 0 {
            // Nothing arrived during the step: the senders are waiting for answers, not
            // about to send; waiting longer would only leave CPUs idle.
            return;
        }
    }
}

/// Whether the machine's CPUs were saturated, from `/proc/stat` read at most every 200 ms
/// (its counters tick 100 times a second per CPU, so a shorter window is too coarse).
#[derive(Default)]
struct Saturation {
    /// When `/proc/stat` was last looked at (read or not), so a system without it is not
    /// asked again at every batch.
    looked_at: Option<Instant>,
    /// Its idle and total jiffies at the last successful read.
    last: Option<CpuTimes>,
    saturated: bool,
}

impl Saturation {
    const PERIOD: Duration = Duration::from_millis(200);

    /// Whether the idle share over the last period was below `idle_below`; the reading is
    /// refreshed when it is older than [`Self::PERIOD`].
    fn saturated(&mut self, now: Instant, idle_below: f64) -> bool {
        if self
            .looked_at
            .is_some_and(|at| now.duration_since(at) < Self::PERIOD)
        {
            return self.saturated;
        }
        self.looked_at = Some(now);
        let times = read_cpu_times();
        self.saturated = match (self.last, times) {
            (Some(before), Some(times)) => {
                let total = times.total.saturating_sub(before.total);
                let idle = times.idle.saturating_sub(before.idle);
                total > 0 && (idle as f64) < idle_below * total as f64
            }
            // A first reading, or no /proc/stat (not Linux, or hidden): do not wait.
            _ => false,
        };
        self.last = times;
        self.saturated
    }
}

/// Jiffies of all CPUs together since boot: idle (idle + iowait) and total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    idle: u64,
    total: u64,
}

fn read_cpu_times() -> Option<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_times(stat.lines().next()?)
}

/// Parse the aggregate line of `/proc/stat`: `cpu user nice system idle iowait irq softirq
/// steal [guest guest_nice]` (guest time is already counted in user and nice).
fn parse_cpu_times(line: &str) -> Option<CpuTimes> {
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let values: Vec<u64> = fields
        .take(8)
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .ok()?;
    if values.len() < 5 {
        return None;
    }
    Some(CpuTimes {
        idle: values[3] + values[4],
        total: values.iter().sum(),
    })
}

fn add_micros(counter: &AtomicU64, since: Instant) {
    let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    counter.fetch_add(us, Ordering::Relaxed);
}

fn answer_all(answers: Vec<Box<dyn Answer>>, commit: &std::result::Result<(), String>) {
    for answer in answers {
        answer.send(commit.clone());
    }
}

/// Run one batch in one transaction. Returns the answers of the commands that ran (to be
/// sent once the commit is durable) and the outcome of the commit; commands that could not
/// run are answered here.
fn run_batch(
    conn: &Connection,
    batch: &mut Vec<Box<dyn Command>>,
    counters: &Counters,
) -> (Vec<Box<dyn Answer>>, std::result::Result<(), String>) {
    let n = batch.len() as u64;
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.commands.fetch_add(n, Ordering::Relaxed);
    let ingest = batch.iter().filter(|c| c.atomic()).count() as u64;
    counters
        .ingest_commands
        .fetch_add(ingest, Ordering::Relaxed);
    if ingest < n {
        counters.work_batches.fetch_add(1, Ordering::Relaxed);
    }

    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let msg = format!("beginning a write transaction: {e}");
        tracing::error!(error = %e, "SQLite writer could not begin a transaction");
        for cmd in batch.drain(..) {
            cmd.fail(StoreError::Database(msg.clone()));
        }
        return (Vec::new(), Err(msg));
    }

    let mut answers: Vec<Box<dyn Answer>> = Vec::with_capacity(batch.len());
    let mut broken: Option<String> = None;
    for cmd in batch.drain(..) {
        if broken.is_some() {
            cmd.fail(StoreError::Database(
                "write batch aborted by an earlier failure".into(),
            ));
            continue;
        }
        if cmd.atomic() {
            let answer = cmd.run(conn);
            // Some errors (disk full, I/O) make SQLite roll back the whole transaction: then
            // nothing of this batch stands, and nothing more may run outside it.
            if !answer.ok() && conn.is_autocommit() {
                broken = Some("the write transaction was rolled back by an error".into());
            }
            answers.push(answer);
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT cmd") {
            cmd.fail(StoreError::Database(format!("opening a savepoint: {e}")));
            continue;
        }
        let answer = cmd.run(conn);
        let step = if answer.ok() {
            exec(conn, "RELEASE cmd")
        } else {
            exec(conn, "ROLLBACK TO cmd").and_then(|()| exec(conn, "RELEASE cmd"))
        };
        if let Err(e) = step {
            broken = Some(format!("closing a savepoint: {e}"));
        }
        answers.push(answer);
    }

    let commit = match broken {
        Some(msg) => Err(msg),
        None => {
            let started = Instant::now();
            let done = conn
                .execute_batch("COMMIT")
                .map_err(|e| format!("committing a write batch: {e}"));
            add_micros(&counters.commit_us, started);
            done
        }
    };
    if let Err(msg) = &commit {
        tracing::error!(error = %msg, commands = n, "SQLite write batch failed; rolling back");
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "rolling back a failed write batch");
        }
    }
    (answers, commit)
}

/// The thread that fsyncs the WAL for [`Durability::Pipelined`] and then answers.
struct Syncer {
    tx: std::sync::mpsc::Sender<Vec<Box<dyn Answer>>>,
    thread: JoinHandle<()>,
}

impl Syncer {
    fn start(wal: File, counters: Arc<Counters>) -> std::io::Result<Syncer> {
        let (tx, rx) = std::sync::mpsc::channel::<Vec<Box<dyn Answer>>>();
        let thread = std::thread::Builder::new()
            .name("charter-sqlite-sync".into())
            .spawn(move || {
                while let Ok(mut answers) = rx.recv() {
                    // Every batch committed so far is covered by the next fsync.
                    while let Ok(more) = rx.try_recv() {
                        answers.extend(more);
                    }
                    let synced = wal
                        .sync_data()
                        .map_err(|e| format!("syncing the WAL to disk: {e}"));
                    counters.syncs.fetch_add(1, Ordering::Relaxed);
                    if let Err(msg) = &synced {
                        tracing::error!(error = %msg, "WAL fsync failed");
                    }
                    answer_all(answers, &synced);
                }
            })?;
        Ok(Syncer { tx, thread })
    }

    /// Hand committed answers to the syncer (answered with an error if it is gone).
    fn enqueue(&self, answers: Vec<Box<dyn Answer>>) {
        if let Err(returned) = self.tx.send(answers) {
            answer_all(returned.0, &Err("the WAL syncer thread stopped".into()));
        }
    }

    /// Sync and answer everything queued, then stop.
    fn finish(self) {
        drop(self.tx);
        if self.thread.join().is_err() {
            tracing::error!("the WAL syncer thread panicked");
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

#[cfg(test)]
mod tests;
