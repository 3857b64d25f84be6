//! The in-process load generator: connections looping request -> answer (or paced on a
//! fixed schedule), counting what completes inside the measured window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;

use super::deliveries::{Delivery, Signer};
use super::machine::{CpuSample, now_unix, proc_status_mb, reset_peak_rss};
use super::report::{Latency, LoadResult};

#[derive(Default)]
pub(super) struct TaskStats {
    pub(super) acks: u64,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) latencies_us: Vec<u32>,
    pub(super) signed_late: u64,
    pub(super) replayed: u64,
    pub(super) acks_outside: u64,
}

/// What a connection does once its share of the pre-signed pool is used up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PoolEnd {
    /// Sign new deliveries on the fly (each must be new to the target: ingest dedupes).
    Sign,
    /// Send the pool again from its start (for a target that does not dedupe).
    Replay,
}

/// Drive `concurrency` connections against `url` for `warmup + duration`; count what
/// completes inside the measured window.
#[expect(
    clippy::too_many_arguments,
    reason = "the load generator takes its knobs as the command line gives them"
)]
pub(super) async fn generate(
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

/// When a paced connection sends: `first`, then every `every`.
#[derive(Clone, Copy)]
pub(super) struct Schedule {
    pub(super) first: Instant,
    pub(super) every: Duration,
}

/// One connection's loop: send, wait for the answer, repeat until `end`.
pub(super) async fn connection(
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
