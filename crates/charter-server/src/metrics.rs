//! Prometheus metrics. Every metric name is defined here, once, in [`Metric`]; the
//! registry is a few small maps behind mutexes, rendered in the Prometheus text format.
//!
//! Counters and histograms are kept in process (one [`Metrics`] per server). Gauges about
//! waiting work (queue depth and age, pending approvals, open escalations, firing alerts)
//! are read from the store at scrape time, so every node of a cluster reports the same
//! numbers for them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use charter_store::{CharterBacklog, Incident};

/// Every metric Charter exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    EventsReceived,
    EventsDuplicate,
    EventsRejected,
    RejectedDropped,
    WebhooksLimited,
    EventsIgnored,
    RunsFinished,
    Decisions,
    LlmCalls,
    LlmTokens,
    LlmCost,
    LlmCache,
    LlmRedactions,
    ActionAttempts,
    Escalations,
    Measurements,
    AlertNotifications,
    Notifications,
    SourcePolls,
    KnowledgeRefreshes,
    KnowledgeRetrievals,
    KnowledgeGaps,
    LeasesRecovered,
    InDoubtActions,
    ReviewSamples,
    SampleReviews,
    RouteModeChanges,
    DraftRewrites,
    DraftEdits,
    DraftLength,
    AckLatency,
    DecisionLatency,
    LlmRequestDuration,
    ActionLatency,
    CycleTime,
    QueueDepth,
    QueueOldestAge,
    ApprovalsPending,
    ApprovalsOldestAge,
    EscalationsOpen,
    EscalationsOldestAge,
    AlertsFiring,
    BacklogEvents,
    BacklogOldest,
    WorkerLimit,
}

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
    Gauge,
}

impl Metric {
    /// Every metric, in exposition order.
    pub const ALL: &'static [Metric] = &[
        Metric::EventsReceived,
        Metric::EventsDuplicate,
        Metric::EventsRejected,
        Metric::RejectedDropped,
        Metric::WebhooksLimited,
        Metric::EventsIgnored,
        Metric::RunsFinished,
        Metric::Decisions,
        Metric::LlmCalls,
        Metric::LlmTokens,
        Metric::LlmCost,
        Metric::LlmCache,
        Metric::LlmRedactions,
        Metric::ActionAttempts,
        Metric::Escalations,
        Metric::Measurements,
        Metric::AlertNotifications,
        Metric::Notifications,
        Metric::SourcePolls,
        Metric::KnowledgeRefreshes,
        Metric::KnowledgeRetrievals,
        Metric::KnowledgeGaps,
        Metric::LeasesRecovered,
        Metric::InDoubtActions,
        Metric::ReviewSamples,
        Metric::SampleReviews,
        Metric::RouteModeChanges,
        Metric::DraftRewrites,
        Metric::DraftEdits,
        Metric::DraftLength,
        Metric::AckLatency,
        Metric::DecisionLatency,
        Metric::LlmRequestDuration,
        Metric::ActionLatency,
        Metric::CycleTime,
        Metric::QueueDepth,
        Metric::QueueOldestAge,
        Metric::ApprovalsPending,
        Metric::ApprovalsOldestAge,
        Metric::EscalationsOpen,
        Metric::EscalationsOldestAge,
        Metric::AlertsFiring,
        Metric::BacklogEvents,
        Metric::BacklogOldest,
        Metric::WorkerLimit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::EventsReceived => "charter_events_received_total",
            Metric::EventsDuplicate => "charter_events_duplicate_total",
            Metric::EventsRejected => "charter_events_rejected_total",
            Metric::RejectedDropped => "charter_rejected_dropped_total",
            Metric::WebhooksLimited => "charter_webhooks_limited_total",
            Metric::EventsIgnored => "charter_events_ignored_total",
            Metric::RunsFinished => "charter_runs_total",
            Metric::Decisions => "charter_decisions_total",
            Metric::LlmCalls => "charter_llm_calls_total",
            Metric::LlmTokens => "charter_llm_tokens_total",
            Metric::LlmCost => "charter_llm_cost_total",
            Metric::LlmCache => "charter_llm_cache_total",
            Metric::LlmRedactions => "charter_llm_redactions_total",
            Metric::ActionAttempts => "charter_action_attempts_total",
            Metric::Escalations => "charter_escalations_total",
            Metric::Measurements => "charter_measurements_total",
            Metric::AlertNotifications => "charter_alert_notifications_total",
            Metric::Notifications => "charter_notifications_total",
            Metric::SourcePolls => "charter_source_polls_total",
            Metric::KnowledgeRefreshes => "charter_knowledge_refreshes_total",
            Metric::KnowledgeRetrievals => "charter_knowledge_retrievals_total",
            Metric::KnowledgeGaps => "charter_knowledge_gaps_total",
            Metric::LeasesRecovered => "charter_leases_recovered_total",
            Metric::InDoubtActions => "charter_in_doubt_actions_total",
            Metric::ReviewSamples => "charter_review_samples_total",
            Metric::SampleReviews => "charter_sample_reviews_total",
            Metric::RouteModeChanges => "charter_route_mode_changes_total",
            Metric::DraftRewrites => "charter_draft_rewrites_total",
            Metric::DraftEdits => "charter_draft_edits_total",
            Metric::DraftLength => "charter_draft_length_total",
            Metric::AckLatency => "charter_ack_latency_seconds",
            Metric::DecisionLatency => "charter_decision_latency_seconds",
            Metric::LlmRequestDuration => "charter_llm_request_duration_seconds",
            Metric::ActionLatency => "charter_action_latency_seconds",
            Metric::CycleTime => "charter_cycle_time_seconds",
            Metric::QueueDepth => "charter_queue_depth",
            Metric::QueueOldestAge => "charter_queue_oldest_age_seconds",
            Metric::ApprovalsPending => "charter_approvals_pending",
            Metric::ApprovalsOldestAge => "charter_approvals_oldest_age_seconds",
            Metric::EscalationsOpen => "charter_escalations_open",
            Metric::EscalationsOldestAge => "charter_escalations_oldest_age_seconds",
            Metric::AlertsFiring => "charter_alerts_firing",
            Metric::BacklogEvents => "charter_backlog_events",
            Metric::BacklogOldest => "charter_backlog_oldest_seconds",
            Metric::WorkerLimit => "charter_worker_runs_limit",
        }
    }

    pub fn help(self) -> &'static str {
        match self {
            Metric::EventsReceived => "Events stored, by charter.",
            Metric::EventsDuplicate => "Deliveries recognised as duplicates, by charter.",
            Metric::EventsRejected => {
                "Deliveries refused, by reason (signature, contract, malformed)."
            }
            Metric::RejectedDropped => {
                "Rejected payloads not kept because the charter holds server.rejected_keep, by charter."
            }
            Metric::WebhooksLimited => {
                "Webhook requests answered 429 by a rate limit, by charter and limit (path, client)."
            }
            Metric::EventsIgnored => {
                "Verified deliveries answered but not stored, by charter and reason (event_type: not in trigger.events; ping)."
            }
            Metric::RunsFinished => "Runs finished, by charter and outcome.",
            Metric::Decisions => "Decisions made, by charter and deciding stage.",
            Metric::LlmCalls => "LLM provider requests, by charter, provider and result.",
            Metric::LlmTokens => "LLM tokens, by charter, provider and kind (prompt, completion).",
            Metric::LlmCost => "LLM cost in the providers' price unit, by charter and provider.",
            Metric::LlmCache => "LLM response-cache lookups, by result (hit, miss).",
            Metric::LlmRedactions => {
                "Personal data replaced in LLM prompts before sending, by charter and kind (email, phone, card, iban)."
            }
            Metric::ActionAttempts => "Action attempts, by charter, action, connector and result.",
            Metric::Escalations => "Work handed to a human, by charter and reason.",
            Metric::Measurements => "Named measurements recorded, by charter and name.",
            Metric::AlertNotifications => {
                "Alert notifications sent, by charter, alert, state and result."
            }
            Metric::Notifications => {
                "Approval and escalation notifications, by charter, kind, connector and result."
            }
            Metric::SourcePolls => {
                "Polls of an HTTP API and schedule firings, by charter, source and result."
            }
            Metric::KnowledgeRefreshes => {
                "Refreshes of a knowledge source (read and re-indexed), by source and result."
            }
            Metric::KnowledgeRetrievals => {
                "Retrieve context steps run, by charter and result (found, nothing_found)."
            }
            Metric::KnowledgeGaps => "Knowledge gaps recorded, by charter and reason.",
            Metric::LeasesRecovered => {
                "Leases of a previous incarnation of this node released at its start-up."
            }
            Metric::InDoubtActions => {
                "Actions left in doubt by an interrupted run (intent recorded, outcome unknown: \
                 the request may have reached the target), by charter and action."
            }
            Metric::ReviewSamples => "Runs queued for a reviewer (sample:), by charter and route.",
            Metric::SampleReviews => {
                "Reviews of sampled runs, by charter, route and verdict (agreed, corrected)."
            }
            Metric::RouteModeChanges => {
                "Route mode changes, by charter, route, new mode and by (operator, automatic)."
            }
            Metric::DraftRewrites => {
                "Approved actions that carried a draft, by charter, route and action."
            }
            Metric::DraftEdits => {
                "Edits reviewers made to drafts before approving (edit distance), by charter, \
                 route, action and unit (char, word)."
            }
            Metric::DraftLength => {
                "Length of the approved drafts, by charter, route, action and unit (char, word); \
                 edits / length is the rewrite ratio."
            }
            Metric::AckLatency => "Time from a verified delivery to its durable acknowledgement.",
            Metric::DecisionLatency => "Time the decision cascade took, by deciding stage.",
            Metric::LlmRequestDuration => {
                "Time one LLM provider request took (failed attempts, retries and backoff \
                 included), by provider and outcome (ok, or the escalation reason: timeout, \
                 provider_unavailable, provider_error, rate_limited, refused_address, ...)."
            }
            Metric::ActionLatency => "Time one action attempt took, by connector.",
            Metric::CycleTime => "Time from receipt to the end of the run, by charter.",
            Metric::QueueDepth => "Events waiting for a worker, by charter.",
            Metric::BacklogEvents => {
                "Events waiting for a worker, by charter, as the backlog bounds (server.backlog) see them on this node."
            }
            Metric::BacklogOldest => {
                "Age of the oldest event waiting for a worker, by charter, as the backlog bounds see it on this node."
            }
            Metric::QueueOldestAge => "Age of the oldest event waiting for a worker, by charter.",
            Metric::ApprovalsPending => "Approvals waiting for a reviewer, by charter.",
            Metric::ApprovalsOldestAge => "Age of the oldest pending approval, by charter.",
            Metric::EscalationsOpen => "Escalations waiting for a human, by charter.",
            Metric::EscalationsOldestAge => "Age of the oldest open escalation, by charter.",
            Metric::AlertsFiring => "Alert incidents open, by charter and alert.",
            Metric::WorkerLimit => {
                "Runs this node's worker allows in flight now (adaptive unless worker.concurrency is set)."
            }
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Metric::AckLatency
            | Metric::DecisionLatency
            | Metric::LlmRequestDuration
            | Metric::ActionLatency
            | Metric::CycleTime => Kind::Histogram,
            Metric::QueueDepth
            | Metric::QueueOldestAge
            | Metric::ApprovalsPending
            | Metric::ApprovalsOldestAge
            | Metric::EscalationsOpen
            | Metric::EscalationsOldestAge
            | Metric::AlertsFiring
            | Metric::BacklogEvents
            | Metric::BacklogOldest
            | Metric::WorkerLimit => Kind::Gauge,
            _ => Kind::Counter,
        }
    }
}

/// Upper bounds of the latency buckets, in seconds.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Debug, Clone)]
struct Histogram {
    /// Cumulative counts per bucket of [`BUCKETS`].
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS.len()],
            sum: 0.0,
            count: 0,
        }
    }

    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

/// Label names and values, in order, rendered as `k="v"` pairs.
type LabelSet = Vec<(&'static str, String)>;

fn labels(pairs: &[(&'static str, &str)]) -> LabelSet {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_labels(l: &LabelSet) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The value of `m` with exactly these labels, inserted with `init` the first time. A label
/// set seen before is found without allocating: the scan is linear in the metric's label
/// sets (tens in a deployment: charters x actions x outcomes), which costs less than
/// building an owned key per increment did; only a new label set allocates its key.
fn entry<'a, V>(
    map: &'a mut BTreeMap<(Metric, LabelSet), V>,
    m: Metric,
    pairs: &[(&'static str, &str)],
    init: impl FnOnce() -> V,
) -> Option<&'a mut V> {
    let same = |l: &LabelSet| {
        l.len() == pairs.len()
            && l.iter()
                .zip(pairs)
                .all(|((k, v), (pk, pv))| k == pk && v == pv)
    };
    let first = (m, LabelSet::new());
    let seen = map
        .range(&first..)
        .take_while(|((k, _), _)| *k == m)
        .any(|((_, l), _)| same(l));
    if !seen {
        map.insert((m, labels(pairs)), init());
    }
    map.range_mut(&first..)
        .take_while(|((k, _), _)| *k == m)
        .find(|((_, l), _)| same(l))
        .map(|(_, v)| v)
}

/// The process-wide registry (one per server).
pub struct Metrics {
    counters: Mutex<BTreeMap<(Metric, LabelSet), f64>>,
    histograms: Mutex<BTreeMap<(Metric, LabelSet), Histogram>>,
    /// The backlog as the bounds see it (refreshed by [`crate::backlog::run`]).
    pub backlog: crate::backlog::BacklogGauges,
    /// The worker's runs-in-flight limit (0: no worker on this node).
    worker_limit: std::sync::atomic::AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counters: Mutex::new(BTreeMap::new()),
            histograms: Mutex::new(BTreeMap::new()),
            backlog: crate::backlog::BacklogGauges::default(),
            worker_limit: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

tokio::task_local! {
    /// The registry of the server whose run is executing on this task (see [`scope`]).
    static CURRENT: Arc<Metrics>;
}

/// Run `fut` with `metrics` as the current registry, so code deep in the pipeline (the LLM
/// stage) can count into it through [`current`] without carrying it through every call.
pub async fn scope<F: Future>(metrics: Arc<Metrics>, fut: F) -> F::Output {
    CURRENT.scope(metrics, fut).await
}

/// The current task's registry, if it runs inside [`scope`].
pub fn current() -> Option<Arc<Metrics>> {
    CURRENT.try_with(Arc::clone).ok()
}

impl Metrics {
    fn add(&self, m: Metric, pairs: &[(&'static str, &str)], v: f64) {
        if let Ok(mut c) = self.counters.lock()
            && let Some(n) = entry(&mut c, m, pairs, || 0.0)
        {
            *n += v;
        }
    }

    fn observe(&self, m: Metric, pairs: &[(&'static str, &str)], d: Duration) {
        if let Ok(mut h) = self.histograms.lock()
            && let Some(hist) = entry(&mut h, m, pairs, Histogram::new)
        {
            hist.observe(d);
        }
    }

    /// The value of a counter (0 when never incremented); for tests and the UI.
    pub fn counter(&self, m: Metric, label_values: &[(&'static str, &str)]) -> f64 {
        self.counters
            .lock()
            .ok()
            .and_then(|c| c.get(&(m, labels(label_values))).copied())
            .unwrap_or(0.0)
    }

    pub fn received(&self, charter: &str) {
        self.add(Metric::EventsReceived, &[("charter", charter)], 1.0);
    }

    pub fn duplicate(&self, charter: &str) {
        self.add(Metric::EventsDuplicate, &[("charter", charter)], 1.0);
    }

    pub fn rejected(&self, reason: &'static str) {
        self.add(Metric::EventsRejected, &[("reason", reason)], 1.0);
    }

    /// A rejected payload was not kept: its charter holds `server.rejected_keep`.
    pub fn rejected_dropped(&self, charter: &str) {
        self.add(Metric::RejectedDropped, &[("charter", charter)], 1.0);
    }

    /// A webhook request was refused by a rate limit (`path` or `client`).
    pub fn webhook_limited(&self, charter: &str, limit: &'static str) {
        self.add(
            Metric::WebhooksLimited,
            &[("charter", charter), ("limit", limit)],
            1.0,
        );
    }

    /// A verified delivery was answered without being stored (`event_type`, `ping`).
    pub fn ignored(&self, charter: &str, reason: &'static str) {
        self.add(
            Metric::EventsIgnored,
            &[("charter", charter), ("reason", reason)],
            1.0,
        );
    }

    /// A run ended with `outcome`; `cycle` is receipt to now.
    pub fn run_finished(&self, charter: &str, outcome: &str, cycle: Option<Duration>) {
        self.add(
            Metric::RunsFinished,
            &[("charter", charter), ("outcome", outcome)],
            1.0,
        );
        if let Some(c) = cycle {
            self.observe(Metric::CycleTime, &[("charter", charter)], c);
        }
    }

    /// A decision was made by `stage` (`rule`, `embedded`, `llm`, `human`, `default`) in
    /// `latency`.
    pub fn decision(&self, charter: &str, stage: &str, latency: Duration) {
        self.add(
            Metric::Decisions,
            &[("charter", charter), ("stage", stage)],
            1.0,
        );
        self.observe(Metric::DecisionLatency, &[("stage", stage)], latency);
    }

    /// LLM usage of one classification: `calls` provider requests, tokens and cost;
    /// `ok` says whether it produced a valid answer.
    pub fn llm_usage(&self, charter: &str, provider: &str, ok: bool, usage: &LlmUsage) {
        let result = if ok { "ok" } else { "failed" };
        let base = [("charter", charter), ("provider", provider)];
        self.add(
            Metric::LlmCalls,
            &[base[0], base[1], ("result", result)],
            f64::from(usage.calls),
        );
        self.add(
            Metric::LlmTokens,
            &[base[0], base[1], ("kind", "prompt")],
            usage.prompt_tokens as f64,
        );
        self.add(
            Metric::LlmTokens,
            &[base[0], base[1], ("kind", "completion")],
            usage.completion_tokens as f64,
        );
        self.add(Metric::LlmCost, &base, usage.cost);
    }

    /// One provider request of `provider` ended with `outcome` (`ok` or an escalation
    /// reason code) after `took`.
    pub fn llm_request(&self, provider: &str, outcome: &str, took: Duration) {
        self.observe(
            Metric::LlmRequestDuration,
            &[("provider", provider), ("outcome", outcome)],
            took,
        );
    }

    /// Personal data of `kind` replaced `n` times in a prompt of `charter`.
    pub fn llm_redactions(&self, charter: &str, kind: &str, n: u32) {
        self.add(
            Metric::LlmRedactions,
            &[("charter", charter), ("kind", kind)],
            f64::from(n),
        );
    }

    /// Response-cache lookups of one classification.
    pub fn llm_cache(&self, hits: u32, misses: u32) {
        if hits > 0 {
            self.add(Metric::LlmCache, &[("result", "hit")], f64::from(hits));
        }
        if misses > 0 {
            self.add(Metric::LlmCache, &[("result", "miss")], f64::from(misses));
        }
    }

    /// One action attempt: `result` is `succeeded`, `retryable` or `failed`; `connector` is
    /// the connector name (`-` for an absolute URL, `log` for a log action).
    pub fn action_attempt(
        &self,
        charter: &str,
        action: &str,
        connector: &str,
        result: &str,
        latency: Option<Duration>,
    ) {
        self.add(
            Metric::ActionAttempts,
            &[
                ("charter", charter),
                ("action", action),
                ("connector", connector),
                ("result", result),
            ],
            1.0,
        );
        if let Some(d) = latency {
            self.observe(Metric::ActionLatency, &[("connector", connector)], d);
        }
    }

    pub fn escalation(&self, charter: &str, reason: &str) {
        self.add(
            Metric::Escalations,
            &[("charter", charter), ("reason", reason)],
            1.0,
        );
    }

    /// `n` leases of this node's previous incarnation were released at start-up.
    /// The worker's runs-in-flight limit now (see [`crate::pipeline::sizing`]).
    pub fn worker_limit(&self, limit: usize) {
        let limit = u64::try_from(limit).unwrap_or(u64::MAX);
        self.worker_limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn leases_recovered(&self, n: usize) {
        self.add(Metric::LeasesRecovered, &[], n as f64);
    }

    /// An interrupted run left `action` of `charter` in doubt.
    pub fn in_doubt(&self, charter: &str, action: &str) {
        self.add(
            Metric::InDoubtActions,
            &[("charter", charter), ("action", action)],
            1.0,
        );
    }

    pub fn measurement(&self, charter: &str, name: &str) {
        self.add(
            Metric::Measurements,
            &[("charter", charter), ("name", name)],
            1.0,
        );
    }

    /// A run of `route` was queued for review.
    pub fn sample_queued(&self, charter: &str, route: &str) {
        self.add(
            Metric::ReviewSamples,
            &[("charter", charter), ("route", route)],
            1.0,
        );
    }

    /// A sample of `route` was reviewed: agreed with, or corrected.
    pub fn sample_review(&self, charter: &str, route: &str, agreed: bool) {
        let verdict = if agreed { "agreed" } else { "corrected" };
        self.add(
            Metric::SampleReviews,
            &[("charter", charter), ("route", route), ("verdict", verdict)],
            1.0,
        );
    }

    /// A route's mode changed to `to`, by an `operator` or `automatic`ally.
    pub fn route_mode_change(&self, charter: &str, route: &str, to: &str, by: &str) {
        self.add(
            Metric::RouteModeChanges,
            &[
                ("charter", charter),
                ("route", route),
                ("to", to),
                ("by", by),
            ],
            1.0,
        );
    }

    /// An approved draft and how much of it the reviewer rewrote.
    pub fn draft_rewrite(
        &self,
        charter: &str,
        route: &str,
        action: &str,
        d: &charter_core::rollout::Rewrite,
    ) {
        let base = [("charter", charter), ("route", route), ("action", action)];
        self.add(Metric::DraftRewrites, &base, 1.0);
        for (unit, edits, len) in [
            ("char", d.chars, d.draft_chars),
            ("word", d.words, d.draft_words),
        ] {
            let labels = [base[0], base[1], base[2], ("unit", unit)];
            self.add(Metric::DraftEdits, &labels, edits as f64);
            self.add(Metric::DraftLength, &labels, len as f64);
        }
    }

    /// An approval or escalation notification through `connector` was sent, will be
    /// retried (`retry`) or was given up (`failed`).
    pub fn notification(&self, charter: &str, kind: &str, connector: &str, result: &str) {
        self.add(
            Metric::Notifications,
            &[
                ("charter", charter),
                ("kind", kind),
                ("connector", connector),
                ("result", result),
            ],
            1.0,
        );
    }

    /// An alert notification for `state` (`firing`, `resolved`) was sent or failed.
    pub fn alert_notification(&self, charter: &str, alert: &str, state: &str, ok: bool) {
        self.add(
            Metric::AlertNotifications,
            &[
                ("charter", charter),
                ("alert", alert),
                ("state", state),
                ("result", if ok { "sent" } else { "failed" }),
            ],
            1.0,
        );
    }

    /// One poll of a charter's `source` (`poll`, `schedule`) succeeded or failed.
    pub fn source_poll(&self, charter: &str, source: &str, ok: bool) {
        self.add(
            Metric::SourcePolls,
            &[
                ("charter", charter),
                ("source", source),
                ("result", if ok { "ok" } else { "error" }),
            ],
            1.0,
        );
    }

    /// One refresh of knowledge source `source` succeeded or failed.
    pub fn knowledge_refresh(&self, source: &str, ok: bool) {
        self.add(
            Metric::KnowledgeRefreshes,
            &[
                ("source", source),
                ("result", if ok { "ok" } else { "error" }),
            ],
            1.0,
        );
    }

    /// A retrieve step of `charter` ran (`found` or `nothing_found`).
    pub fn knowledge_retrieval(&self, charter: &str, result: &str) {
        self.add(
            Metric::KnowledgeRetrievals,
            &[("charter", charter), ("result", result)],
            1.0,
        );
    }

    /// A knowledge gap of `charter` was recorded for `reason`.
    pub fn knowledge_gap(&self, charter: &str, reason: &str) {
        self.add(
            Metric::KnowledgeGaps,
            &[("charter", charter), ("reason", reason)],
            1.0,
        );
    }

    pub fn ack_latency(&self, d: Duration) {
        self.observe(Metric::AckLatency, &[], d);
    }

    /// Prometheus text exposition format of the in-process counters and histograms.
    pub fn render(&self) -> String {
        self.render_with(&[], &[], 0)
    }

    /// Prometheus text with the store's gauges: `backlog` (waiting work per charter) and
    /// `firing` (open incidents), ages computed at `now` (Unix ms).
    pub fn render_with(&self, backlog: &[CharterBacklog], firing: &[Incident], now: i64) -> String {
        let mut out = String::new();
        let counters = self.counters.lock().map(|c| c.clone()).unwrap_or_default();
        let histograms = self
            .histograms
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let mut gauges = gauges(backlog, firing, now);
        for (charter, n, age) in self.backlog.figures(now) {
            let l = labels(&[("charter", &charter)]);
            gauges.push((Metric::BacklogEvents, l.clone(), n as f64));
            gauges.push((Metric::BacklogOldest, l, age));
        }
        let limit = self.worker_limit.load(std::sync::atomic::Ordering::Relaxed);
        if limit > 0 {
            gauges.push((Metric::WorkerLimit, labels(&[]), limit as f64));
        }
        for &m in Metric::ALL {
            let header = |out: &mut String| {
                let kind = match m.kind() {
                    Kind::Counter => "counter",
                    Kind::Histogram => "histogram",
                    Kind::Gauge => "gauge",
                };
                let _ = writeln!(out, "# HELP {} {}", m.name(), m.help());
                let _ = writeln!(out, "# TYPE {} {kind}", m.name());
            };
            match m.kind() {
                Kind::Counter => {
                    let rows: Vec<_> = counters.iter().filter(|((k, _), _)| *k == m).collect();
                    if rows.is_empty() {
                        continue;
                    }
                    header(&mut out);
                    for ((_, l), v) in rows {
                        let _ = writeln!(out, "{}{{{}}} {v}", m.name(), render_labels(l));
                    }
                }
                Kind::Histogram => {
                    header(&mut out);
                    let rows: Vec<_> = histograms.iter().filter(|((k, _), _)| *k == m).collect();
                    if rows.is_empty() && m == Metric::AckLatency {
                        Histogram::new().render(&mut out, m.name(), "");
                    }
                    for ((_, l), h) in rows {
                        h.render(&mut out, m.name(), &render_labels(l));
                    }
                }
                Kind::Gauge => {
                    let rows: Vec<_> = gauges.iter().filter(|(k, _, _)| *k == m).collect();
                    if rows.is_empty() {
                        continue;
                    }
                    header(&mut out);
                    for (_, l, v) in rows {
                        let _ = writeln!(out, "{}{{{}}} {v}", m.name(), render_labels(l));
                    }
                }
            }
        }
        out
    }
}

/// A W3C `traceparent` header value for an outbound call of the run `trace`: the run id is
/// the trace id, each call gets a fresh span id, and the trace is marked sampled.
pub fn traceparent(trace: uuid::Uuid) -> String {
    let mut span: u64 = rand::random();
    if span == 0 {
        span = 1;
    }
    format!("00-{}-{span:016x}-01", trace.simple())
}

/// LLM usage numbers, as the metrics take them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LlmUsage {
    pub calls: u32,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost: f64,
}

fn age_secs(now: i64, at: Option<i64>) -> f64 {
    at.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0)
}

fn gauges(
    backlog: &[CharterBacklog],
    firing: &[Incident],
    now: i64,
) -> Vec<(Metric, LabelSet, f64)> {
    let mut out = Vec::new();
    for b in backlog {
        let l = labels(&[("charter", &b.charter)]);
        out.push((Metric::QueueDepth, l.clone(), b.queued as f64));
        out.push((
            Metric::QueueOldestAge,
            l.clone(),
            age_secs(now, b.oldest_queued_at),
        ));
        out.push((
            Metric::ApprovalsPending,
            l.clone(),
            b.approvals_pending as f64,
        ));
        out.push((
            Metric::ApprovalsOldestAge,
            l.clone(),
            age_secs(now, b.oldest_approval_at),
        ));
        out.push((
            Metric::EscalationsOpen,
            l.clone(),
            b.escalations_open as f64,
        ));
        out.push((
            Metric::EscalationsOldestAge,
            l,
            age_secs(now, b.oldest_escalation_at),
        ));
    }
    for i in firing {
        out.push((
            Metric::AlertsFiring,
            labels(&[("charter", &i.charter), ("alert", &i.alert)]),
            1.0,
        ));
    }
    out
}

#[cfg(test)]
mod tests;
