//! The open-loop generator: requests started on a fixed schedule (request `i` at
//! `start + i / rate`) whatever the answers do, so a slow target faces the same offered
//! rate as a fast one (no coordinated omission). Each request is its own task; the only
//! limit is a cap on requests in flight, past which a scheduled request is counted as
//! skipped rather than sent late.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;

/// How far behind its slot a request may start before it counts as sent late (the
/// generator could not keep its schedule, e.g. on a saturated machine).
const LATE_AFTER: Duration = Duration::from_millis(10);

/// One step of an open stream: `rate` requests/s for `duration`, ids from `first_id`.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub rate: f64,
    pub duration: Duration,
    pub first_id: u64,
}

impl Plan {
    /// Requests the schedule holds.
    pub fn count(&self) -> u64 {
        (self.rate * self.duration.as_secs_f64()).floor() as u64
    }

    /// When request `i` is due.
    pub fn due(&self, start: Instant, i: u64) -> Instant {
        start + Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// What one step sent and how the target answered.
#[derive(Debug, Default)]
pub struct Sent {
    /// Requests the schedule held.
    pub planned: u64,
    /// Requests started (planned minus skipped).
    pub started: u64,
    /// Requests not sent because `in_flight_cap` requests were still unanswered.
    pub skipped: u64,
    /// Answers with a 2xx status.
    pub acked: u64,
    /// Everything else, by status (or `timeout` / `transport`).
    pub errors: BTreeMap<String, u64>,
    /// From each acknowledged request's slot to its answer, microseconds, sorted.
    pub ack_us: Vec<u32>,
    /// Per request `i`: its slot (ns after the epoch) if it was acknowledged, else `None`.
    pub acked_due_ns: Vec<Option<u64>>,
    /// Requests started more than [`LATE_AFTER`] after their slot.
    pub late: u64,
    /// The largest delay between a slot and its request's start, ms.
    pub max_lag_ms: f64,
    /// The most requests unanswered at once.
    pub max_in_flight: u64,
}

/// Requests in flight, and the most seen.
#[derive(Default)]
struct Flight {
    now: AtomicU64,
    max: AtomicU64,
}

impl Flight {
    fn enter(&self) {
        let n = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(n, Ordering::Relaxed);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request's outcome: its index, its status or failure, and when it was answered.
type Answer = (u64, Result<u16, &'static str>, Instant);

/// Run one step of `plan` against `url`, bodies from `body(id)`. Slots are measured from
/// `epoch` (shared with the sink that records arrivals) to compute cycle times.
pub async fn send_open(
    client: &reqwest::Client,
    url: &str,
    plan: Plan,
    epoch: Instant,
    body: fn(u64) -> Bytes,
    in_flight_cap: u64,
) -> Sent {
    let n = plan.count();
    let url: Arc<str> = Arc::from(url);
    let flight = Arc::new(Flight::default());
    let mut sent = Sent {
        planned: n,
        acked_due_ns: vec![None; usize::try_from(n).unwrap_or(0)],
        ..Sent::default()
    };
    let mut tasks: tokio::task::JoinSet<Answer> = tokio::task::JoinSet::new();
    let start = Instant::now();
    let mut i = 0u64;
    while i < n {
        let due = plan.due(start, i);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
            continue;
        }
        // Every slot that has come is sent now, however many (a timer tick is 1 ms).
        let lag = now.duration_since(due);
        if lag > LATE_AFTER {
            sent.late += 1;
        }
        sent.max_lag_ms = sent.max_lag_ms.max(lag.as_secs_f64() * 1000.0);
        if flight.now.load(Ordering::Relaxed) >= in_flight_cap {
            sent.skipped += 1;
        } else {
            sent.started += 1;
            flight.enter();
            let request = client
                .post(&*url)
                .header("content-type", "application/json")
                .body(body(plan.first_id + i));
            let flight = flight.clone();
            tasks.spawn(async move {
                let outcome = match request.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        match resp.bytes().await {
                            Ok(_) => Ok(status),
                            Err(_) => Err("transport"),
                        }
                    }
                    Err(e) if e.is_timeout() => Err("timeout"),
                    Err(_) => Err("transport"),
                };
                flight.leave();
                (i, outcome, Instant::now())
            });
        }
        i += 1;
        while let Some(done) = tasks.try_join_next() {
            sent.count(done, &plan, start, epoch);
        }
    }
    while let Some(done) = tasks.join_next().await {
        sent.count(done, &plan, start, epoch);
    }
    sent.max_in_flight = flight.max.load(Ordering::Relaxed);
    sent.ack_us.sort_unstable();
    sent
}

impl Sent {
    fn count(
        &mut self,
        done: Result<Answer, tokio::task::JoinError>,
        plan: &Plan,
        start: Instant,
        epoch: Instant,
    ) {
        let (i, outcome, answered) = match done {
            Ok(a) => a,
            Err(e) => {
                *self.errors.entry(format!("task: {e}")).or_default() += 1;
                return;
            }
        };
        match outcome {
            Ok(status) if (200..300).contains(&status) => {
                self.acked += 1;
                let due = plan.due(start, i);
                let us = answered.saturating_duration_since(due).as_micros();
                self.ack_us.push(u32::try_from(us).unwrap_or(u32::MAX));
                let due_ns = due.saturating_duration_since(epoch).as_nanos();
                if let Some(slot) = usize::try_from(i)
                    .ok()
                    .and_then(|i| self.acked_due_ns.get_mut(i))
                {
                    *slot = Some(u64::try_from(due_ns).unwrap_or(u64::MAX));
                }
            }
            Ok(status) => *self.errors.entry(status.to_string()).or_default() += 1,
            Err(kind) => *self.errors.entry(kind.to_string()).or_default() += 1,
        }
    }
}
