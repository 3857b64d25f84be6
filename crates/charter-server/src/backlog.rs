//! The bounded backlog (issue #29): how much unprocessed work ingest lets into the store.
//!
//! Ingest can outrun processing many times over (SQLite: tens of thousands of acks a second
//! against thousands of runs), and nothing else stops a sustained overload from growing the
//! queue until the disk is full. `server.backlog` sets the bounds: events waiting for a worker
//! across all charters (`max_events`, default 1,000,000), in one charter (`max_per_charter`),
//! and the age of a charter's oldest waiting event (`max_age`). Past a bound:
//!
//! * webhooks of the charter are answered **503** with `Retry-After` and nothing is stored
//!   (webhook providers retry), counted in `charter_webhooks_limited_total{limit="backlog"}`;
//! * its poll sources and schedules skip their ticks until the backlog is under the bound;
//! * a WARN line is logged when a charter starts and stops refusing, and the gauges
//!   `charter_backlog_events` / `charter_backlog_oldest_seconds` show the figures the
//!   decision is made on (alert on them, see the book's "Backlog" section).
//!
//! The counts come from the store ([`charter_store::ReportStore::backlog`]), refreshed by
//! [`run`] on each node that ingests, at most once a second and no more often than 20 times
//! the query's own duration (so the refresh costs the database at most ~5% of one core
//! however large the backlog). Between refreshes, the events this node stored are added, so a
//! node does not overshoot by its own rate; with several nodes each adds only its own, so the
//! bound may be passed by what the other nodes store within one refresh period. It is a
//! guard against filling a disk, not an exact quota.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use charter_core::config::BacklogSettings;
use charter_store::{CharterBacklog, Store};
use tokio_util::sync::CancellationToken;

use crate::{AppState, now_millis};

/// The `Retry-After` sent with a 503 for a full backlog.
pub const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The shortest time between two refreshes of the counts.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The refresh waits this many times the last refresh's duration (at least [`MIN_REFRESH`]).
const REFRESH_FACTOR: u32 = 20;

/// The figures one refresh read, per charter: events waiting and the oldest one's receipt.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    per: BTreeMap<String, (u64, Option<i64>)>,
    total: u64,
}

/// The backlog as last read from the store plus what this node stored since, and which
/// charters are refusing. Held by [`crate::metrics::Metrics`]: it is also what the backlog
/// gauges show.
#[derive(Debug, Default)]
pub struct BacklogGauges {
    snapshot: RwLock<Option<Snapshot>>,
    /// Events this node stored since the last refresh, per charter.
    since: Mutex<HashMap<String, u64>>,
    /// Charters over a bound at the last refresh (for the WARN lines on each change).
    over: Mutex<BTreeSet<String>>,
}

/// Why a charter takes no more events now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `max_events`, `max_per_charter` or `max_age`.
    pub bound: &'static str,
    pub detail: String,
}

impl BacklogGauges {
    /// Count an event this node stored (until the next refresh reads it from the store).
    pub fn stored(&self, charter: &str) {
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        match since.get_mut(charter) {
            Some(n) => *n += 1,
            None => {
                since.insert(charter.to_string(), 1);
            }
        }
    }

    /// Replace the figures with a fresh read of the store.
    fn refresh(&self, backlog: &[CharterBacklog]) {
        let mut snap = Snapshot::default();
        for b in backlog.iter().filter(|b| b.queued > 0) {
            snap.total += b.queued;
            snap.per
                .insert(b.charter.clone(), (b.queued, b.oldest_queued_at));
        }
        let mut since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = Some(snap);
        since.clear();
    }

    /// Whether `charter` must refuse new events at `now` (Unix ms) under `limits`. Nothing
    /// is refused before the first refresh.
    pub fn refusal(&self, limits: &BacklogSettings, charter: &str, now: i64) -> Option<Refusal> {
        let snap = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let snap = snap.as_ref()?;
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let (stored, oldest) = snap.per.get(charter).copied().unwrap_or((0, None));
        let mine = stored + since.get(charter).copied().unwrap_or(0);
        let total = snap.total + since.values().sum::<u64>();
        drop(since);
        if let Some(max) = limits.max_per_charter.or(limits.max_events)
            && mine >= max
        {
            return Some(Refusal {
                bound: "max_per_charter",
                detail: format!("{mine} events waiting in charter {charter}, bound {max}"),
            });
        }
        if let Some(max) = limits.max_events
            && total >= max
        {
            return Some(Refusal {
                bound: "max_events",
                detail: format!("{total} events waiting in all charters, bound {max}"),
            });
        }
        if let (Some(max), Some(oldest)) = (limits.max_age, oldest) {
            let age = Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0));
            if age > max {
                return Some(Refusal {
                    bound: "max_age",
                    detail: format!(
                        "the oldest waiting event of charter {charter} is {}s old, bound {}s",
                        age.as_secs(),
                        max.as_secs()
                    ),
                });
            }
        }
        None
    }

    /// Per charter: events waiting (as read plus stored since) and the oldest one's age in
    /// seconds at `now`, for the gauges.
    pub fn figures(&self, now: i64) -> Vec<(String, u64, f64)> {
        let snap = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let Some(snap) = snap.as_ref() else {
            return Vec::new();
        };
        let since = self.since.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: BTreeMap<&str, (u64, f64)> = BTreeMap::new();
        for (charter, (n, oldest)) in &snap.per {
            let age = oldest.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
            out.insert(charter, (*n, age));
        }
        for (charter, n) in since.iter() {
            out.entry(charter).or_insert((0, 0.0)).0 += n;
        }
        out.into_iter()
            .map(|(c, (n, age))| (c.to_string(), n, age))
            .collect()
    }

    /// Log the charters that started or stopped refusing since the last call.
    fn log_changes(&self, now_over: BTreeSet<String>, reasons: &BTreeMap<String, Refusal>) {
        let mut over = self.over.lock().unwrap_or_else(|e| e.into_inner());
        for c in now_over.difference(&over) {
            if let Some(r) = reasons.get(c) {
                tracing::warn!(charter = %c, bound = r.bound, detail = %r.detail,
                    "backlog full: webhooks answer 503 and poll sources pause until the workers catch up");
            }
        }
        for c in over.difference(&now_over) {
            tracing::warn!(charter = %c, "backlog under its bounds again: taking events");
        }
        *over = now_over;
    }
}

/// Whether `charter` refuses new events now (see the module documentation).
pub fn refusal<S: Store>(state: &AppState<S>, charter: &str) -> Option<Refusal> {
    let limits = &state.runtime.project.settings.net.backlog;
    state.metrics.backlog.refusal(limits, charter, now_millis())
}

/// Refresh the backlog figures from the store until `shutdown` is cancelled.
pub async fn run<S: Store>(state: AppState<S>, shutdown: CancellationToken) {
    loop {
        let started = Instant::now();
        match state.store.backlog(now_millis()).await {
            Ok(b) => {
                state.metrics.backlog.refresh(&b);
                let limits = &state.runtime.project.settings.net.backlog;
                let now = now_millis();
                let mut over = BTreeSet::new();
                let mut reasons = BTreeMap::new();
                for name in state.runtime.charters.keys() {
                    if let Some(r) = state.metrics.backlog.refusal(limits, name, now) {
                        over.insert(name.clone());
                        reasons.insert(name.clone(), r);
                    }
                }
                state.metrics.backlog.log_changes(over, &reasons);
            }
            Err(e) => tracing::warn!(error = %e, "reading the backlog failed; will retry"),
        }
        let wait = (started.elapsed() * REFRESH_FACTOR).max(MIN_REFRESH);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backlog(charter: &str, queued: u64, oldest: Option<i64>) -> CharterBacklog {
        CharterBacklog {
            charter: charter.to_string(),
            queued,
            oldest_queued_at: oldest,
            ..Default::default()
        }
    }

    #[test]
    fn nothing_is_refused_before_the_first_refresh() {
        let g = BacklogGauges::default();
        let limits = BacklogSettings {
            max_events: Some(0),
            ..Default::default()
        };
        assert_eq!(g.refusal(&limits, "a", 0), None);
    }

    #[test]
    fn bounds_count_the_store_and_what_was_stored_since() {
        let g = BacklogGauges::default();
        let limits = BacklogSettings {
            max_events: Some(10),
            max_per_charter: Some(5),
            max_age: Some(Duration::from_secs(60)),
        };
        g.refresh(&[backlog("a", 3, Some(1_000)), backlog("b", 4, Some(50_000))]);
        assert_eq!(g.refusal(&limits, "a", 2_000), None);
        g.stored("a");
        g.stored("a");
        let r = g.refusal(&limits, "a", 2_000).expect("a is at 5 of 5");
        assert_eq!(r.bound, "max_per_charter");
        // b: 4 of its 5, but 4 + 5 = 9 of 10 overall; one more anywhere fills it.
        assert_eq!(g.refusal(&limits, "b", 2_000), None);
        g.stored("c");
        assert_eq!(
            g.refusal(&limits, "b", 2_000).map(|r| r.bound),
            Some("max_events")
        );
        // A refresh replaces the local counts with the store's.
        g.refresh(&[backlog("b", 1, Some(50_000))]);
        assert_eq!(g.refusal(&limits, "a", 2_000), None);
        assert_eq!(g.refusal(&limits, "b", 100_000), None);
        // Age: b's oldest event is 61 s old.
        assert_eq!(
            g.refusal(&limits, "b", 111_000).map(|r| r.bound),
            Some("max_age")
        );
        let f = g.figures(111_000);
        assert_eq!(f, vec![("b".to_string(), 1, 61.0)]);
    }

    #[test]
    fn unbounded_settings_refuse_nothing() {
        let g = BacklogGauges::default();
        let limits = BacklogSettings {
            max_events: None,
            max_per_charter: None,
            max_age: None,
        };
        g.refresh(&[backlog("a", 10_000_000, Some(0))]);
        assert_eq!(g.refusal(&limits, "a", i64::MAX / 2), None);
    }
}
