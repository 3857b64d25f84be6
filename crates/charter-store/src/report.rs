//! Evidence: named measurements, per-charter reports over a time window, the backlog the
//! metrics and alerts look at, alert incidents, and the readiness probe.
//!
//! [`ReportStore`] computes everything from what the engine already records (events, runs,
//! actions, approvals, escalations, the audit log) plus the `measurements` table, where the
//! worker writes the charter's own named outcomes. [`AlertStore`] keeps alert incidents so
//! that each incident is announced once and resolved once, across restarts and nodes.

use std::collections::BTreeMap;
use std::future::Future;

use charter_core::model::UnixMillis;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Result;

/// A named outcome to record for a charter (and usually a run).
#[derive(Debug, Clone, PartialEq)]
pub struct NewMeasurement {
    pub charter: String,
    /// One of the charter's `measure:` names.
    pub name: String,
    pub run_id: Option<Uuid>,
    pub event_id: Option<Uuid>,
    /// Usually 1 (one occurrence); summed in reports.
    pub value: f64,
    pub at: UnixMillis,
    pub detail: serde_json::Value,
}

/// What a report covers: one charter, `since <= t < until`, cut into `buckets` equal
/// slices for the charts (at least 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportQuery {
    pub charter: String,
    pub since: UnixMillis,
    pub until: UnixMillis,
    pub buckets: u32,
}

impl ReportQuery {
    /// Width of one bucket in milliseconds (at least 1).
    pub fn bucket_ms(&self) -> i64 {
        ((self.until - self.since).max(1) / i64::from(self.buckets.max(1))).max(1)
    }

    /// The bucket an instant falls in, clamped to the range.
    pub fn bucket_of(&self, t: UnixMillis) -> usize {
        let last = self.buckets.max(1) as usize - 1;
        let i = (t - self.since).max(0) / self.bucket_ms();
        usize::try_from(i).unwrap_or(last).min(last)
    }
}

/// Distribution of cycle times (receipt to the end of processing), in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CycleStats {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: i64,
    pub p90_ms: i64,
    pub p99_ms: i64,
    pub max_ms: i64,
}

impl CycleStats {
    /// Statistics of a set of samples (nearest-rank percentiles).
    pub fn from_samples(samples: &mut [i64]) -> CycleStats {
        if samples.is_empty() {
            return CycleStats::default();
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| -> i64 {
            let k = ((p * n as f64).ceil() as usize).clamp(1, n);
            samples[k - 1]
        };
        let sum: f64 = samples.iter().map(|&s| s as f64).sum();
        CycleStats {
            count: n as u64,
            mean_ms: sum / n as f64,
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: samples[n - 1],
        }
    }
}

/// One slice of the report window, for the charts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportBucket {
    pub start: UnixMillis,
    /// Events received in the slice.
    pub received: u64,
    /// Runs finished in the slice, by outcome.
    pub outcomes: BTreeMap<String, u64>,
    /// Median cycle time of events finished in the slice (0 when none).
    pub p50_cycle_ms: i64,
    /// Events finished in the slice.
    pub finished: u64,
}

/// Approval numbers of a window: requested (created in it) and decided (in it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ApprovalCounts {
    pub requested: u64,
    pub approved: u64,
    pub rejected: u64,
    pub expired: u64,
    /// Approved with parameters edited by the reviewer (a human correction).
    pub edited: u64,
}

/// Escalation numbers of a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EscalationCounts {
    /// Opened in the window, by reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Resolved in the window with a human decision (a human correction).
    pub resolved: u64,
}

impl EscalationCounts {
    pub fn opened(&self) -> u64 {
        self.by_reason.values().sum()
    }
}

/// A count and a total value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MeasureTotal {
    pub count: u64,
    pub sum: f64,
}

/// A charter's numbers over a window, as the store computes them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CharterReport {
    pub charter: String,
    pub since: UnixMillis,
    pub until: UnixMillis,
    /// Events stored (received) in the window.
    pub events_received: u64,
    /// Payloads kept as rejected by the contract in the window (still kept).
    pub rejected_payloads: u64,
    /// Runs finished in the window, by outcome (`completed`, `failed`, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Receipt to done, for events whose processing ended (status `done`) in the window.
    pub cycle: CycleStats,
    pub approvals: ApprovalCounts,
    pub escalations: EscalationCounts,
    /// Actions dead-lettered in runs started in the window.
    pub dead_letters: u64,
    /// Events put back in the queue by an operator in the window (replay of one event, of
    /// all failed events, or of a rejected payload).
    pub replays: u64,
    /// The charter's named measurements recorded in the window.
    pub measurements: BTreeMap<String, MeasureTotal>,
    /// The window cut into equal slices.
    pub buckets: Vec<ReportBucket>,
}

/// Ratios derived from a [`CharterReport`]; `None` when the denominator is zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportRates {
    /// Approved / decided approvals.
    pub approval_rate: Option<f64>,
    /// Rejected / decided approvals.
    pub rejection_rate: Option<f64>,
    /// Escalations opened / runs finished.
    pub escalation_rate: Option<f64>,
    /// Human corrections (escalations decided by a human + edited approvals) / runs finished.
    pub correction_rate: Option<f64>,
    /// Failed runs / runs finished.
    pub error_rate: Option<f64>,
    /// Dead-lettered actions / runs finished.
    pub dead_letter_rate: Option<f64>,
}

fn ratio(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

impl CharterReport {
    /// Runs finished in the window, all outcomes.
    pub fn runs(&self) -> u64 {
        self.outcomes.values().sum()
    }

    /// Runs finished with this outcome.
    pub fn outcome(&self, name: &str) -> u64 {
        self.outcomes.get(name).copied().unwrap_or(0)
    }

    /// The derived rates.
    pub fn rates(&self) -> ReportRates {
        let runs = self.runs();
        let a = &self.approvals;
        let decided = a.approved + a.rejected + a.expired;
        ReportRates {
            approval_rate: ratio(a.approved, decided),
            rejection_rate: ratio(a.rejected, decided),
            escalation_rate: ratio(self.escalations.opened(), runs),
            correction_rate: ratio(self.escalations.resolved + a.edited, runs),
            error_rate: ratio(self.outcome("failed"), runs),
            dead_letter_rate: ratio(self.dead_letters, runs),
        }
    }
}

/// Work waiting in one charter (for gauges and the `stuck` alert).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CharterBacklog {
    pub charter: String,
    /// Events waiting for a worker (pending, or processing with an expired lease).
    pub queued: u64,
    pub oldest_queued_at: Option<UnixMillis>,
    pub approvals_pending: u64,
    pub oldest_approval_at: Option<UnixMillis>,
    pub escalations_open: u64,
    pub oldest_escalation_at: Option<UnixMillis>,
}

/// Whether the store can serve: it committed a probe write, and its schema version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// The version recorded in the database.
    pub schema_version: u32,
    /// The version this build creates and expects.
    pub expected_version: u32,
}

impl Readiness {
    /// Every migration this build knows is applied.
    pub fn migrated(&self) -> bool {
        self.schema_version == self.expected_version
    }
}

/// Measurements, reports and the backlog.
pub trait ReportStore: Send + Sync + 'static {
    /// Record a named measurement (durable on return).
    fn record_measurement(&self, m: NewMeasurement) -> impl Future<Output = Result<()>> + Send;

    /// A charter's numbers over `query`'s window.
    fn report(&self, query: ReportQuery) -> impl Future<Output = Result<CharterReport>> + Send;

    /// Runs of `charter` finished in `since <= t < until`, by outcome (the error-rate alert).
    fn run_outcomes(
        &self,
        charter: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> impl Future<Output = Result<BTreeMap<String, u64>>> + Send;

    /// Escalations of `charter` opened in `since <= t < until`, by reason.
    fn escalation_reasons(
        &self,
        charter: &str,
        since: UnixMillis,
        until: UnixMillis,
    ) -> impl Future<Output = Result<BTreeMap<String, u64>>> + Send;

    /// Work waiting in every charter that has some, at `now` (sorted by charter).
    fn backlog(&self, now: UnixMillis) -> impl Future<Output = Result<Vec<CharterBacklog>>> + Send;

    /// Commit a tiny probe write and read the schema version.
    fn readiness(&self) -> impl Future<Output = Result<Readiness>> + Send;
}

/// Where an alert incident stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentState {
    Open,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(IncidentState::Open),
            "resolved" => Some(IncidentState::Resolved),
            _ => None,
        }
    }
}

/// An alert condition that started to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIncident {
    pub id: Uuid,
    pub charter: String,
    /// The alert's key within the charter (`error_rate`, `stuck`, `error_rate#2`, ...).
    pub alert: String,
    pub opened_at: UnixMillis,
    /// The measured value that tripped it (a rate, an age in ms, a count).
    pub value: f64,
    pub detail: serde_json::Value,
}

/// A stored incident: one span of time during which an alert's condition held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: Uuid,
    pub charter: String,
    pub alert: String,
    pub state: IncidentState,
    pub opened_at: UnixMillis,
    pub resolved_at: Option<UnixMillis>,
    pub value: f64,
    pub detail: serde_json::Value,
    /// When the "firing" notification was delivered.
    pub notified_open_at: Option<UnixMillis>,
    /// When the "resolved" notification was delivered.
    pub notified_resolved_at: Option<UnixMillis>,
}

/// Alert incidents: at most one open per `(charter, alert)`.
pub trait AlertStore: Send + Sync + 'static {
    /// A held "only this node evaluates alerts" lease (see [`AlertStore::try_lead`]).
    type Lead: Send + 'static;

    /// Try to become the node that evaluates alerts now. SQLite (one node) always succeeds;
    /// PostgreSQL takes a cluster-wide job lock, held until the value is dropped.
    fn try_lead(&self) -> impl Future<Output = Result<Option<Self::Lead>>> + Send;

    /// Open an incident unless `(charter, alert)` already has an open one. Returns the open
    /// incident and whether this call created it. Safe under concurrent calls.
    fn open_incident(
        &self,
        incident: NewIncident,
    ) -> impl Future<Output = Result<(Incident, bool)>> + Send;

    /// Resolve an open incident. Returns it when this call resolved it.
    fn resolve_incident(
        &self,
        id: Uuid,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<Incident>>> + Send;

    /// Record that the notification for `state` was delivered. Returns false if it was
    /// already recorded (another node delivered it).
    fn mark_notified(
        &self,
        id: Uuid,
        state: IncidentState,
        now: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Open incidents (of one charter, or all), oldest first.
    fn open_incidents(
        &self,
        charter: Option<String>,
    ) -> impl Future<Output = Result<Vec<Incident>>> + Send;

    /// Incidents whose notification is still owed: open and not yet announced, or resolved
    /// after being announced and the resolution not yet announced. Oldest first.
    fn unnotified_incidents(&self) -> impl Future<Output = Result<Vec<Incident>>> + Send;

    /// Incidents newest first (of one charter, or all); at most `limit` (100 when 0).
    fn list_incidents(
        &self,
        charter: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<Incident>>> + Send;
}

/// The smallest UUIDv7 made at `t`: event ids (UUIDv7) made at or after `t` compare
/// greater or equal, as text and as UUIDs. Used to count events created in a window.
pub(crate) fn v7_floor(t: UnixMillis) -> Uuid {
    let ms = u64::try_from(t.max(0)).unwrap_or(0).min((1 << 48) - 1);
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}

/// Fill the per-bucket numbers and cycle statistics of a report from raw samples:
/// `received` (receipt times), `finished` (finish time, outcome) of runs and `cycles`
/// (finish time, cycle ms) of events that ended. Shared by the backends.
pub(crate) fn assemble(
    query: &ReportQuery,
    report: &mut CharterReport,
    received: &[UnixMillis],
    finished: &[(UnixMillis, String)],
    cycles: &[(UnixMillis, i64)],
) {
    let n = query.buckets.max(1) as usize;
    let width = query.bucket_ms();
    let mut buckets: Vec<ReportBucket> = (0..n)
        .map(|i| ReportBucket {
            start: query.since + width * i as i64,
            ..Default::default()
        })
        .collect();
    report.events_received = received.len() as u64;
    for &t in received {
        buckets[query.bucket_of(t)].received += 1;
    }
    for (t, outcome) in finished {
        *report.outcomes.entry(outcome.clone()).or_insert(0) += 1;
        *buckets[query.bucket_of(*t)]
            .outcomes
            .entry(outcome.clone())
            .or_insert(0) += 1;
    }
    let mut per_bucket: Vec<Vec<i64>> = vec![Vec::new(); n];
    let mut all: Vec<i64> = Vec::with_capacity(cycles.len());
    for &(t, ms) in cycles {
        per_bucket[query.bucket_of(t)].push(ms);
        all.push(ms);
    }
    for (b, mut samples) in buckets.iter_mut().zip(per_bucket) {
        let s = CycleStats::from_samples(&mut samples);
        b.finished = s.count;
        b.p50_cycle_ms = s.p50_ms;
    }
    report.cycle = CycleStats::from_samples(&mut all);
    report.buckets = buckets;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut s: Vec<i64> = (1..=100).collect();
        let c = CycleStats::from_samples(&mut s);
        assert_eq!(
            (c.count, c.p50_ms, c.p90_ms, c.p99_ms, c.max_ms),
            (100, 50, 90, 99, 100)
        );
        assert!((c.mean_ms - 50.5).abs() < 1e-9);
        assert_eq!(CycleStats::from_samples(&mut []), CycleStats::default());
        let mut one = vec![7];
        assert_eq!(CycleStats::from_samples(&mut one).p99_ms, 7);
    }

    #[test]
    fn v7_floor_orders_like_event_ids() {
        let id = Uuid::now_v7();
        let t = i64::try_from(id.get_timestamp().unwrap().to_unix().0).unwrap() * 1000
            + i64::from(id.get_timestamp().unwrap().to_unix().1 / 1_000_000);
        assert!(v7_floor(t) <= id);
        assert!(v7_floor(t + 1) > id);
        assert!(v7_floor(t).to_string() <= id.to_string());
        assert!(v7_floor(t + 1).to_string() > id.to_string());
    }

    #[test]
    fn buckets_split_the_window_and_clamp() {
        let q = ReportQuery {
            charter: "c".into(),
            since: 1000,
            until: 2000,
            buckets: 4,
        };
        assert_eq!(q.bucket_ms(), 250);
        assert_eq!(q.bucket_of(1000), 0);
        assert_eq!(q.bucket_of(1249), 0);
        assert_eq!(q.bucket_of(1250), 1);
        assert_eq!(q.bucket_of(1999), 3);
        assert_eq!(q.bucket_of(5000), 3);
        assert_eq!(q.bucket_of(0), 0);
    }

    #[test]
    fn rates_divide_by_the_right_totals() {
        let mut r = CharterReport::default();
        assert_eq!(r.rates(), ReportRates::default());
        r.outcomes.insert("completed".into(), 6);
        r.outcomes.insert("failed".into(), 2);
        r.outcomes.insert("escalated".into(), 2);
        r.approvals = ApprovalCounts {
            requested: 5,
            approved: 3,
            rejected: 1,
            expired: 0,
            edited: 1,
        };
        r.escalations.by_reason.insert("low_confidence".into(), 2);
        r.escalations.resolved = 1;
        r.dead_letters = 1;
        let rates = r.rates();
        assert_eq!(rates.approval_rate, Some(0.75));
        assert_eq!(rates.rejection_rate, Some(0.25));
        assert_eq!(rates.escalation_rate, Some(0.2));
        assert_eq!(rates.correction_rate, Some(0.2));
        assert_eq!(rates.error_rate, Some(0.2));
        assert_eq!(rates.dead_letter_rate, Some(0.1));
    }
}
