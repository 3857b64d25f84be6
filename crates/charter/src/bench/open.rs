//! `charter bench open`: the end-to-end job under an open stream at fixed offered rates,
//! with the server in its own process.
//!
//! The job: webhook -> keyword rule on the subject -> HTTP `PUT /api/tickets/{id}` to a
//! timing sink on 127.0.0.1 ([`sink`]). This process is the load generator and the sink;
//! the server under load is `charter serve` started as a child on a throw-away project
//! with default settings ([`target`]), or an outside server (`--compare-url`, e.g. Node-RED
//! with `scripts/bench-open/node-red-flow.json`), in alternating rounds.
//!
//! Each round steps the offered rate up (`--rates`), `--duration` per step, sending on a
//! fixed schedule whatever the answers ([`generator`]). A step is *sustained* when every
//! request is acknowledged, every job reaches the sink, the cycle (a webhook's slot in
//! the schedule -> its action's arrival at the sink) has p99 <= 100 ms, and the backlog at
//! the end of the window is at most 100 ms of arrivals; the round stops at the first step
//! that is not. CPU per job is the target process's CPU time over the step (and its
//! drain) divided by the jobs that reached the sink, with the split per thread name.

pub mod generator;
pub mod sink;
pub mod target;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::generator::{Plan, Sent, send_open};
use self::sink::TimingSink;
use self::target::{ProcCpu, Rule, Target};
use super::load::{latency, percentile};
use super::report::Latency;
use super::{BenchArgs, BenchError};

/// Cycle time (slot -> action at the sink) a sustained step keeps at p99.
pub const CYCLE_P99_BOUND_MS: f64 = 100.0;
/// How long after a step's window its jobs may still reach the sink.
const DRAIN: Duration = Duration::from_secs(5);
/// Requests unanswered at once past which the generator skips slots (bounds memory).
const IN_FLIGHT_CAP: u64 = 20_000;
/// Pause between steps, so one step's tail does not load the next.
const BETWEEN_STEPS: Duration = Duration::from_millis(500);
/// Targets of issue #30 for the Charter side.
const TARGET_RATIO: f64 = 2.0;
const TARGET_CPU_MS: f64 = 0.1;

/// One offered rate against one target.
#[derive(Debug, Clone, Serialize)]
pub struct OpenStep {
    pub offered_per_sec: f64,
    pub seconds: f64,
    pub planned: u64,
    /// Slots skipped because too many requests were unanswered.
    pub skipped: u64,
    pub acked: u64,
    pub acked_per_sec: f64,
    pub errors: u64,
    pub error_kinds: BTreeMap<String, u64>,
    /// Slot -> answer, ms.
    pub ack_latency: Latency,
    /// Acknowledged jobs whose action reached the sink (by the drain deadline).
    pub applied: u64,
    /// Actions that reached the sink during the sending window, per second.
    pub applied_in_window_per_sec: f64,
    /// Acknowledged jobs not at the sink by the deadline.
    pub unfinished: u64,
    /// Ids that reached the sink more than once.
    pub doubled: u64,
    /// Slot -> action at the sink, ms (jobs that never arrived count as slower than all).
    pub cycle_p50_ms: Option<f64>,
    pub cycle_p99_ms: Option<f64>,
    pub cycle_max_ms: Option<f64>,
    /// Acknowledged jobs not yet at the sink halfway through the window and at its end.
    pub backlog_mid: u64,
    pub backlog_end: u64,
    /// Requests the generator started more than 10 ms after their slot, and the worst lag.
    pub late_sends: u64,
    pub max_lag_ms: f64,
    pub max_in_flight: u64,
    /// The target process's CPU over the step and its drain, per job at the sink, ms.
    pub cpu_ms_per_job: Option<f64>,
    /// The same split by thread name (threads alive at the end of the step).
    pub cpu_ms_per_job_by_thread: BTreeMap<String, f64>,
    pub sustained: bool,
    /// Why the step is not sustained (empty when it is).
    pub verdict: String,
}

/// One round's steps against one target.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLadder {
    pub target: String,
    pub round: usize,
    pub steps: Vec<OpenStep>,
    /// The highest offered rate sustained end to end.
    pub sustained_per_sec: Option<f64>,
    /// CPU per job at that rate, ms.
    pub cpu_ms_per_job: Option<f64>,
    /// Cycle p99 at that rate, ms.
    pub cycle_p99_ms: Option<f64>,
    /// The highest offered rate acknowledged without errors with ack p99 <= 100 ms (the
    /// ingest figure of the same run; for a target that answers after the action, the
    /// same as the end-to-end figure at best).
    pub acked_per_sec: Option<f64>,
}

/// Everything `charter bench open` measured.
#[derive(Debug, Clone, Serialize)]
pub struct OpenReport {
    pub rule: Rule,
    pub step_seconds: f64,
    pub ladders: Vec<OpenLadder>,
    /// Per target: the median over rounds of the highest sustained rate.
    pub median_sustained_per_sec: BTreeMap<String, f64>,
    /// Per target: the median over rounds of CPU per job at that rate, ms.
    pub median_cpu_ms_per_job: BTreeMap<String, f64>,
    /// Charter's median sustained rate over the compared target's.
    pub charter_over_compare: Option<f64>,
}

/// Run the open-stream benchmark as `args` say.
pub async fn open_bench(args: &BenchArgs) -> Result<OpenReport, BenchError> {
    let mut rates: Vec<f64> = args.rates.iter().copied().filter(|r| *r > 0.0).collect();
    rates.sort_by(f64::total_cmp);
    rates.dedup();
    if rates.is_empty() {
        return Err(BenchError::Other("--rates needs a rate above 0".into()));
    }
    let compare = match (&args.compare_url, args.compare_pid) {
        (Some(url), Some(pid)) => Some(Target::external(&args.compare_name, url, pid)),
        (None, None) => None,
        _ => {
            return Err(BenchError::Other(
                "--compare-url and --compare-pid go together".into(),
            ));
        }
    };
    let epoch = Instant::now();
    let shutdown = CancellationToken::new();
    let sink = TimingSink::new(epoch);
    let sink_addr = sink
        .start(([127, 0, 0, 1], args.sink_port).into(), shutdown.clone())
        .await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .timeout(super::REQUEST_TIMEOUT)
        .build()?;
    let mut run = Runner {
        client: &client,
        sink: &sink,
        epoch,
        next_id: 1,
        duration: args.duration,
    };
    let mut ladders = Vec::new();
    let result = async {
        for round in 1..=args.rounds {
            let charter =
                Target::charter(&client, &format!("http://{sink_addr}"), args.rule).await?;
            let ladder = run.ladder(&charter, round, &rates).await;
            charter.stop().await;
            ladders.push(ladder);
            if let Some(other) = &compare {
                ladders.push(run.ladder(other, round, &rates).await);
            }
        }
        Ok::<(), BenchError>(())
    }
    .await;
    shutdown.cancel();
    result?;
    Ok(summarize(args, ladders))
}

/// The report's medians and ratio over the ladders.
fn summarize(args: &BenchArgs, ladders: Vec<OpenLadder>) -> OpenReport {
    let mut rates: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut cpus: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for l in &ladders {
        rates
            .entry(l.target.clone())
            .or_default()
            .push(l.sustained_per_sec.unwrap_or(0.0));
        if let Some(c) = l.cpu_ms_per_job {
            cpus.entry(l.target.clone()).or_default().push(c);
        }
    }
    let median_sustained_per_sec = super::entry::medians_of(&rates);
    let median_cpu_ms_per_job = super::entry::medians_of(&cpus);
    let charter_over_compare = median_sustained_per_sec.get("charter").and_then(|c| {
        median_sustained_per_sec
            .get(&args.compare_name)
            .filter(|_| args.compare_url.is_some())
            .filter(|o| **o > 0.0)
            .map(|o| c / o)
    });
    OpenReport {
        rule: args.rule,
        step_seconds: args.duration.as_secs_f64(),
        ladders,
        median_sustained_per_sec,
        median_cpu_ms_per_job,
        charter_over_compare,
    }
}

/// State shared by every step: the client, the sink, and the next free ticket id.
struct Runner<'a> {
    client: &'a reqwest::Client,
    sink: &'a TimingSink,
    epoch: Instant,
    next_id: u64,
    duration: Duration,
}

impl Runner<'_> {
    /// Step the rate up against `target` until a step is not sustained.
    async fn ladder(&mut self, target: &Target, round: usize, rates: &[f64]) -> OpenLadder {
        let mut ladder = OpenLadder {
            target: target.name.clone(),
            round,
            steps: Vec::new(),
            sustained_per_sec: None,
            cpu_ms_per_job: None,
            cycle_p99_ms: None,
            acked_per_sec: None,
        };
        for &rate in rates {
            eprintln!(
                "open ({}, round {round}): {rate:.0}/s offered for {:?} against {}",
                target.name, self.duration, target.url
            );
            let step = self.step(target, rate).await;
            eprintln!("  {}", step_line(&step));
            if step.errors == 0 && step.ack_latency.p99_ms <= CYCLE_P99_BOUND_MS {
                ladder.acked_per_sec = Some(rate);
            }
            let sustained = step.sustained;
            if sustained {
                ladder.sustained_per_sec = Some(rate);
                ladder.cpu_ms_per_job = step.cpu_ms_per_job;
                ladder.cycle_p99_ms = step.cycle_p99_ms;
            }
            ladder.steps.push(step);
            if !sustained {
                break;
            }
            tokio::time::sleep(BETWEEN_STEPS).await;
        }
        ladder
    }

    /// One step: send on schedule, wait (bounded) for the jobs to reach the sink, measure.
    async fn step(&mut self, target: &Target, rate: f64) -> OpenStep {
        let plan = Plan {
            rate,
            duration: self.duration,
            first_id: self.next_id,
        };
        self.next_id += plan.count() + 1;
        self.sink.take();
        let cpu_before = ProcCpu::read(target.pid);
        let window_start = self.since_epoch();
        let sent = send_open(
            self.client,
            &target.url,
            plan,
            self.epoch,
            open_body,
            IN_FLIGHT_CAP,
        )
        .await;
        let window_end = window_start + u64::try_from(self.duration.as_nanos()).unwrap_or(0);
        let deadline = Instant::now() + DRAIN;
        while self.sink.count() < sent.acked && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let cpu_after = ProcCpu::read(target.pid);
        let arrivals = self.sink.take();
        let mut step = measure(&plan, &sent, &arrivals, window_start, window_end);
        if let Some((before, after)) = cpu_before.zip(cpu_after)
            && step.applied > 0
        {
            let (total, threads) = after.ms_since(&before);
            let jobs = step.applied as f64;
            step.cpu_ms_per_job = Some(total / jobs);
            step.cpu_ms_per_job_by_thread = threads
                .into_iter()
                .filter(|(_, ms)| *ms > 0.0)
                .map(|(name, ms)| (name, ms / jobs))
                .collect();
        }
        step
    }

    fn since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A webhook body for ticket `id`: half the subjects hold the keyword.
pub fn open_body(id: u64) -> Bytes {
    let subject = if id.is_multiple_of(2) {
        format!("refund request for order ord-{id}")
    } else {
        format!("cannot log in since the update (case {id})")
    };
    Bytes::from(format!(
        r#"{{"type":"ticket.updated","ticket":{{"id":{id},"subject":"{subject}","priority":"normal"}},"customer":{{"name":"Ada Example","plan":"team"}}}}"#
    ))
}

/// The step's figures from what was sent and what reached the sink (ids and ns after the
/// epoch). The sending window is `window_start..window_end` (ns after the epoch).
pub fn measure(
    plan: &Plan,
    sent: &Sent,
    arrivals: &[(u64, u64)],
    window_start: u64,
    window_end: u64,
) -> OpenStep {
    let n = sent.acked_due_ns.len();
    let mut arrived: Vec<Option<u64>> = vec![None; n];
    let mut doubled = 0u64;
    let mut in_window = 0u64;
    for &(id, at) in arrivals {
        let Some(slot) = id
            .checked_sub(plan.first_id)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| arrived.get_mut(i))
        else {
            continue;
        };
        if slot.is_some() {
            doubled += 1;
            continue;
        }
        *slot = Some(at);
        if (window_start..=window_end).contains(&at) {
            in_window += 1;
        }
    }
    let mid = window_start + (window_end.saturating_sub(window_start)) / 2;
    let (mut cycles, mut applied, mut unfinished) = (Vec::new(), 0u64, 0u64);
    let (mut backlog_mid, mut backlog_end) = (0u64, 0u64);
    for (due, at) in sent.acked_due_ns.iter().zip(&arrived) {
        let Some(due) = *due else { continue };
        match at {
            Some(at) => {
                applied += 1;
                cycles.push(at.saturating_sub(due));
            }
            None => {
                unfinished += 1;
                cycles.push(u64::MAX);
            }
        }
        let outstanding_at = |t: u64| due <= t && at.is_none_or(|a| a > t);
        backlog_mid += u64::from(outstanding_at(mid));
        backlog_end += u64::from(outstanding_at(window_end));
    }
    cycles.sort_unstable();
    let ms =
        |q: f64| percentile(&cycles, q).and_then(|ns| (ns != u64::MAX).then(|| ns as f64 / 1e6));
    let seconds = plan.duration.as_secs_f64();
    let errors: u64 = sent.errors.values().sum();
    let mut step = OpenStep {
        offered_per_sec: plan.rate,
        seconds,
        planned: sent.planned,
        skipped: sent.skipped,
        acked: sent.acked,
        acked_per_sec: sent.acked as f64 / seconds,
        errors,
        error_kinds: sent.errors.clone(),
        ack_latency: latency(&sent.ack_us),
        applied,
        applied_in_window_per_sec: in_window as f64 / seconds,
        unfinished,
        doubled,
        cycle_p50_ms: ms(0.50),
        cycle_p99_ms: ms(0.99),
        cycle_max_ms: ms(1.0),
        backlog_mid,
        backlog_end,
        late_sends: sent.late,
        max_lag_ms: sent.max_lag_ms,
        max_in_flight: sent.max_in_flight,
        cpu_ms_per_job: None,
        cpu_ms_per_job_by_thread: BTreeMap::new(),
        sustained: false,
        verdict: String::new(),
    };
    step.verdict = verdict(&step);
    step.sustained = step.verdict.is_empty();
    step
}

/// Why a step is not sustained; empty when it is.
fn verdict(s: &OpenStep) -> String {
    let mut why = Vec::new();
    if s.errors > 0 || s.skipped > 0 {
        why.push(format!("{} errors, {} skipped", s.errors, s.skipped));
    }
    if s.unfinished > 0 {
        why.push(format!("{} jobs never reached the sink", s.unfinished));
    }
    match s.cycle_p99_ms {
        Some(p) if p <= CYCLE_P99_BOUND_MS => {}
        Some(p) => why.push(format!("cycle p99 {p:.0} ms > {CYCLE_P99_BOUND_MS:.0} ms")),
        None if s.acked == 0 => why.push("nothing acknowledged".into()),
        None => why.push("cycle p99 unbounded".into()),
    }
    // At most 100 ms of arrivals outstanding when sending stops: no growing queue.
    let bound = (s.offered_per_sec * CYCLE_P99_BOUND_MS / 1000.0).ceil() as u64 + 10;
    if s.backlog_end > bound {
        why.push(format!(
            "backlog {} at the window's end > {bound}",
            s.backlog_end
        ));
    }
    // The generator itself fell behind: the step's offered rate is not what was offered.
    if s.late_sends * 100 > s.planned.max(1) {
        why.push(format!(
            "the generator sent {} requests late (worst {:.0} ms)",
            s.late_sends, s.max_lag_ms
        ));
    }
    why.join("; ")
}

/// One step on one line (progress and the table).
pub fn step_line(s: &OpenStep) -> String {
    let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
    format!(
        "{:.0}/s offered: {:.0} acked/s (p99 {:.1} ms), {:.0} at the sink/s in the window; cycle p50 {} ms p99 {} ms; backlog mid/end {}/{}; cpu {} ms/job; {}",
        s.offered_per_sec,
        s.acked_per_sec,
        s.ack_latency.p99_ms,
        s.applied_in_window_per_sec,
        f(s.cycle_p50_ms),
        f(s.cycle_p99_ms),
        s.backlog_mid,
        s.backlog_end,
        s.cpu_ms_per_job
            .map_or_else(|| "n/a".to_string(), |c| format!("{c:.3}")),
        if s.sustained {
            "sustained".to_string()
        } else {
            format!("not sustained: {}", s.verdict)
        }
    )
}

/// The open-stream section of the table.
pub fn render_open(r: &OpenReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "open stream: webhook -> keyword rule ({:?}) -> HTTP action at a sink; {:.0}s per step; the server in its own process with default settings; cycle = a webhook's slot in the schedule -> its action at the sink",
        r.rule, r.step_seconds
    );
    for l in &r.ladders {
        let _ = writeln!(out);
        let _ = writeln!(out, "{} (round {}):", l.target, l.round);
        for s in &l.steps {
            let _ = writeln!(out, "  {}", step_line(s));
            if !s.cpu_ms_per_job_by_thread.is_empty() {
                let split: Vec<String> = s
                    .cpu_ms_per_job_by_thread
                    .iter()
                    .map(|(name, ms)| format!("{name} {ms:.3}"))
                    .collect();
                let _ = writeln!(out, "    cpu ms/job by thread: {}", split.join(", "));
            }
        }
        let _ = writeln!(
            out,
            "  highest sustained: {} (cycle p99 {} ms, cpu {} ms/job); highest acknowledged within 100 ms: {}",
            l.sustained_per_sec
                .map_or_else(|| "none".to_string(), |r| format!("{r:.0}/s")),
            l.cycle_p99_ms
                .map_or_else(|| "-".to_string(), |v| format!("{v:.0}")),
            l.cpu_ms_per_job
                .map_or_else(|| "n/a".to_string(), |v| format!("{v:.3}")),
            l.acked_per_sec
                .map_or_else(|| "none".to_string(), |r| format!("{r:.0}/s")),
        );
    }
    let _ = writeln!(out);
    for (target, rate) in &r.median_sustained_per_sec {
        let cpu = r
            .median_cpu_ms_per_job
            .get(target)
            .map_or_else(|| "n/a".to_string(), |c| format!("{c:.3}"));
        let _ = writeln!(
            out,
            "{target}: median highest sustained {rate:.0}/s, cpu {cpu} ms/job"
        );
    }
    if let Some(cpu) = r.median_cpu_ms_per_job.get("charter") {
        let met = if *cpu <= TARGET_CPU_MS {
            "met"
        } else {
            "not met"
        };
        let _ = writeln!(
            out,
            "charter cpu per job at its sustained rate: {cpu:.3} ms (target <= {TARGET_CPU_MS} ms: {met})"
        );
    }
    if let Some(ratio) = r.charter_over_compare {
        let met = if ratio >= TARGET_RATIO {
            "met"
        } else {
            "not met"
        };
        let _ = writeln!(
            out,
            "charter / compared target, sustained end to end: {ratio:.2}x (target >= {TARGET_RATIO}x: {met})"
        );
    }
    out
}
