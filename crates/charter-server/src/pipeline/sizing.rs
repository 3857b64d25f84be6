//! How many runs this node keeps in flight. A run spends most of its time waiting (on the
//! store's group commits, shared with ingest, and on the targets of its actions), so the
//! right number depends on what it waits on, not on the CPU count: with too few runs in
//! flight processing falls behind as soon as ingest keeps the writer busy; with many more
//! than needed every run just waits longer.
//!
//! Unless `worker.concurrency` sets a fixed number, the limit adapts (between [`MIN`] and
//! [`MAX`]), one window at a time while there is more work than runs in flight: it grows
//! while throughput rises, shrinks when the runs' latency rises without a throughput gain,
//! and holds otherwise. While the limit is not what holds processing back (fewer runs
//! waiting than it allows) it does not move.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The smallest automatic limit.
pub const MIN: usize = 4;
/// The largest automatic limit.
pub const MAX: usize = 1024;
/// Where the automatic limit starts.
pub const START: usize = 64;
/// The shortest window over which throughput and latency are compared.
const WINDOW: Duration = Duration::from_millis(250);
/// The fewest finished runs a window needs to be compared.
const WINDOW_RUNS: u64 = 16;
/// Throughput must rise by this share for a larger limit to count as a gain.
const GAIN: f64 = 0.05;
/// Latency must rise by this share (without a gain) to shrink the limit.
const SLOWER: f64 = 0.10;

/// Runs finished on this node, and the time they took, counted by the run tasks.
#[derive(Debug, Default)]
pub struct Finished {
    runs: AtomicU64,
    busy_us: AtomicU64,
}

impl Finished {
    /// Count one finished run that took `took`, claim to release.
    pub fn add(&self, took: Duration) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.busy_us.fetch_add(us, Ordering::Relaxed);
    }

    fn read(&self) -> (u64, u64) {
        (
            self.runs.load(Ordering::Relaxed),
            self.busy_us.load(Ordering::Relaxed),
        )
    }
}

/// What one window measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Runs finished per second.
    rate: f64,
    /// Mean time of a run, claim to release, in microseconds.
    latency: f64,
}

/// The runs-in-flight limit of this node's worker.
#[derive(Debug)]
pub struct Sizing {
    limit: usize,
    automatic: bool,
    window_start: Instant,
    /// [`Finished`]'s counts when the window started.
    at_start: (u64, u64),
    /// Whether the limit held runs back during this window (every slot taken).
    saturated: bool,
    /// The previous saturated window, to compare against.
    previous: Option<Measured>,
}

impl Sizing {
    /// `configured`: `worker.concurrency` (`0`: unset, automatic).
    pub fn new(configured: usize, now: Instant) -> Sizing {
        Sizing {
            limit: if configured == 0 { START } else { configured },
            automatic: configured == 0,
            window_start: now,
            at_start: (0, 0),
            saturated: false,
            previous: None,
        }
    }

    /// Runs allowed in flight now.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the limit adapts (`worker.concurrency` unset).
    pub fn automatic(&self) -> bool {
        self.automatic
    }

    /// Every slot is taken: the limit is what holds processing back now.
    pub fn note_full(&mut self) {
        self.saturated = true;
    }

    /// Close the window if it is long enough, and adapt the limit to what it measured.
    /// Returns the limit.
    pub fn tick(&mut self, now: Instant, finished: &Finished) -> usize {
        if !self.automatic {
            return self.limit;
        }
        let (runs, busy_us) = finished.read();
        let elapsed = now.saturating_duration_since(self.window_start);
        let done = runs.saturating_sub(self.at_start.0);
        if elapsed < WINDOW || done < WINDOW_RUNS {
            // A window that stays this short long after it began holds too little work
            // to say anything: start over.
            if elapsed >= WINDOW * 8 {
                self.restart(now, (runs, busy_us), None);
            }
            return self.limit;
        }
        let measured = Measured {
            rate: done as f64 / elapsed.as_secs_f64(),
            latency: busy_us.saturating_sub(self.at_start.1) as f64 / done as f64,
        };
        if !self.saturated {
            // The limit was not binding: nothing to learn about it.
            self.restart(now, (runs, busy_us), None);
            return self.limit;
        }
        self.limit = next_limit(self.limit, self.previous, measured);
        self.restart(now, (runs, busy_us), Some(measured));
        self.limit
    }

    fn restart(&mut self, now: Instant, counts: (u64, u64), previous: Option<Measured>) {
        self.window_start = now;
        self.at_start = counts;
        self.saturated = false;
        self.previous = previous;
    }
}

/// The limit after a saturated window that measured `now`, against the one before.
fn next_limit(limit: usize, previous: Option<Measured>, now: Measured) -> usize {
    let grow = (limit + (limit / 2).max(1)).min(MAX);
    let shrink = (limit - limit / 5).max(MIN);
    match previous {
        // The first saturated window: more runs may help.
        None => grow,
        Some(p) if now.rate > p.rate * (1.0 + GAIN) => grow,
        Some(p) if now.latency > p.latency * (1.0 + SLOWER) => shrink,
        Some(_) => limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A window of `elapsed` in which `runs` runs finished, each taking `latency_us`.
    fn window(
        s: &mut Sizing,
        f: &Finished,
        t: &mut Instant,
        runs: u64,
        latency_us: u64,
        full: bool,
    ) -> usize {
        f.runs.fetch_add(runs, Ordering::Relaxed);
        f.busy_us.fetch_add(runs * latency_us, Ordering::Relaxed);
        if full {
            s.note_full();
        }
        *t += WINDOW;
        s.tick(*t, f)
    }

    #[test]
    fn an_explicit_setting_is_fixed() {
        let mut t = Instant::now();
        let mut s = Sizing::new(16, t);
        let f = Finished::default();
        assert!(!s.automatic());
        for _ in 0..5 {
            assert_eq!(window(&mut s, &f, &mut t, 100, 1000, true), 16);
        }
    }

    #[test]
    fn grows_while_throughput_rises_and_holds_when_it_stops() {
        let mut t = Instant::now();
        let mut s = Sizing::new(0, t);
        let f = Finished::default();
        assert_eq!(s.limit(), START);
        let first = window(&mut s, &f, &mut t, 100, 1000, true);
        assert_eq!(first, START + START / 2);
        let second = window(&mut s, &f, &mut t, 150, 1000, true);
        assert!(second > first, "{second} > {first}");
        // The same throughput at the same latency: no reason to move.
        let third = window(&mut s, &f, &mut t, 150, 1000, true);
        assert_eq!(third, second);
    }

    #[test]
    fn shrinks_when_latency_rises_without_a_gain() {
        let mut t = Instant::now();
        let mut s = Sizing::new(0, t);
        let f = Finished::default();
        let grown = window(&mut s, &f, &mut t, 100, 1000, true);
        let shrunk = window(&mut s, &f, &mut t, 100, 2000, true);
        assert!(shrunk < grown, "{shrunk} < {grown}");
        assert!(shrunk >= MIN);
    }

    #[test]
    fn does_not_move_while_the_limit_is_not_binding_or_the_window_is_thin() {
        let mut t = Instant::now();
        let mut s = Sizing::new(0, t);
        let f = Finished::default();
        assert_eq!(window(&mut s, &f, &mut t, 1000, 1000, false), START);
        assert_eq!(window(&mut s, &f, &mut t, 3, 1000, true), START);
    }

    #[test]
    fn stays_within_its_bounds() {
        let mut t = Instant::now();
        let mut s = Sizing::new(0, t);
        let f = Finished::default();
        let mut runs = 100;
        for _ in 0..20 {
            runs += runs / 4;
            window(&mut s, &f, &mut t, runs, 1000, true);
        }
        assert_eq!(s.limit(), MAX);
        let mut latency = 1000;
        for _ in 0..40 {
            latency += latency / 4;
            window(&mut s, &f, &mut t, 100, latency, true);
        }
        assert_eq!(s.limit(), MIN);
    }
}
