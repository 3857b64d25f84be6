//! Charter's durable store.
//!
//! Store access is split into small traits per concern — [`EventStore`], [`QueueStore`],
//! [`RunStore`], [`CharterStateStore`], [`OperatorStore`], [`ApprovalStore`],
//! [`EscalationStore`], [`AuditStore`] — that the engine uses generically. The backend is
//! chosen at start-up ([`sqlite::SqliteStore`] today; PostgreSQL implements the same traits).
//! [`conformance`] holds the behaviour every backend must show, run against each backend.
//!
//! Durability contract: when a write method returns `Ok`, the write is committed and (for
//! SQLite) fsynced; a crash after that point does not lose it.

use std::future::Future;
use std::time::Duration;

use charter_core::model::{
    ActionRecord, AttemptRecord, Decision, EventRecord, EventStatus, NewEvent, RejectedPayload,
    RunOutcome, RunRecord, UnixMillis,
};
use uuid::Uuid;

pub mod conformance;
pub mod decision;
pub mod knowledge;
mod knowledge_conformance;
mod lists_conformance;
pub mod notifications;
mod notifications_conformance;
pub mod page;
pub mod postgres;
pub mod report;
mod report_conformance;
pub mod retention;
pub mod rollout;
mod rollout_conformance;
pub mod sqlite;

pub use decision::{DecisionStore, EXTRA_CONTEXT, EXTRA_DRAFT, LlmSpend, RunExtra};
pub use knowledge::{
    GapFilter, GapReason, KnowledgeDoc, KnowledgeGap, KnowledgeStore, NewPassage, PassageHit,
    PutOutcome,
};
pub use notifications::{
    Delivery, NewNotification, NotificationKind, NotificationRecord, NotificationState,
    NotificationStore,
};
pub use page::{Sort, uuid_prefix_range};
pub use report::{
    AlertStore, CharterBacklog, CharterReport, Incident, IncidentState, NewIncident,
    NewMeasurement, Readiness, ReportQuery, ReportRates, ReportStore,
};
pub use retention::{Purged, RetentionStore};
pub use rollout::RolloutStore;

/// Errors from a store backend. The text is for logs, never for API clients.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("the store is shutting down")]
    Closed,
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Result of storing an incoming event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Newly stored (durable) under this id.
    Stored(Uuid),
    /// The charter already has an event with this dedupe key; nothing stored.
    Duplicate(Uuid),
}

/// `WHERE a AND b` of a listing query's filter clauses; empty when there are none.
pub(crate) fn where_clause<T: AsRef<str>>(clauses: &[T]) -> String {
    if clauses.is_empty() {
        return String::new();
    }
    let parts: Vec<&str> = clauses.iter().map(AsRef::as_ref).collect();
    format!("WHERE {}", parts.join(" AND "))
}

/// Filters for listing events. `None` means no constraint.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub charter: Option<String>,
    pub status: Option<EventStatus>,
    pub since: Option<UnixMillis>,
    pub until: Option<UnixMillis>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Only events whose id starts with these hexadecimal digits (hyphens ignored); a prefix
    /// that is not hexadecimal matches nothing. Searched as a range of the primary key.
    pub id_prefix: Option<String>,
    /// Only events with exactly this dedupe key (indexed; any charter).
    pub dedupe_key: Option<String>,
    /// Newest first (by id, so arrival) unless `OldestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only events after this id in the listing's order.
    pub after: Option<Uuid>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// Filters for listing runs across events. `None` means no constraint.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub charter: Option<String>,
    /// Only runs that ended this way.
    pub outcome: Option<RunOutcome>,
    /// Only runs that have not finished (no outcome yet); combined with `outcome`, nothing.
    pub running: bool,
    /// Started at or after.
    pub since: Option<UnixMillis>,
    /// Started before.
    pub until: Option<UnixMillis>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Newest first (by start, then id) unless `OldestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only runs after this `(started_at, id)` in the listing's order.
    pub after: Option<(UnixMillis, Uuid)>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// Filters for listing rejected payloads. `None` means no constraint.
#[derive(Debug, Clone, Default)]
pub struct RejectedFilter {
    pub charter: Option<String>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Received at or after.
    pub since: Option<UnixMillis>,
    /// Received before.
    pub until: Option<UnixMillis>,
    /// Newest first (by id, so arrival) unless `OldestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only payloads after this id in the listing's order.
    pub after: Option<Uuid>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// An event claimed by a worker under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event: NewEvent,
    /// The number of runs started for this event, this claim included.
    pub attempt: u32,
    pub lease_until: UnixMillis,
    /// The charter's stored operator mode override, read in the same claim (so a run needs
    /// no separate read to know whether it runs in shadow or live). Whether it still
    /// applies is for [`effective_mode`] to say.
    pub mode_override: Option<ModeOverride>,
    /// The latest human resolution of an escalation of this event, read in the same claim:
    /// when present it replaces the decision cascade (see [`EscalationStore::latest_resolution`]).
    pub resolution: Option<EscalationRecord>,
    /// Earlier runs of this event that were cut off before they finished (their process was
    /// killed, or lost the lease), closed by this claim as [`RunOutcome::Interrupted`] in the
    /// same transaction, each with the actions it left in doubt.
    pub interrupted: Vec<InterruptedRun>,
}

/// The `error` a run closed as [`RunOutcome::Interrupted`] is recorded with.
pub const INTERRUPTED_ERROR: &str =
    "interrupted: the run was cut off before it finished (its process stopped or lost the lease)";

/// A run closed as [`RunOutcome::Interrupted`] by a claim of its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptedRun {
    pub run_id: Uuid,
    /// The actions whose intent the run had recorded without an outcome, now
    /// [`ActionStatus::InDoubt`](charter_core::model::ActionStatus::InDoubt).
    pub in_doubt: Vec<InDoubtRef>,
}

/// An action left in doubt: its name and the idempotency key its request carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InDoubtRef {
    pub action: String,
    pub idempotency_key: String,
}

/// An action whose intent was recorded but whose outcome never was (its run was
/// interrupted): the request may have reached the target. Listed for operators by
/// [`RunStore::list_in_doubt`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InDoubtAction {
    pub run_id: Uuid,
    pub event_id: Uuid,
    pub charter: String,
    pub action: String,
    /// The key the request carried (`Idempotency-Key`, e-mail `Message-ID`, SQL upsert key).
    pub idempotency_key: String,
    /// The rendered parameters of the request.
    pub params: serde_json::Value,
    /// When the interrupted run started.
    pub started_at: UnixMillis,
    /// When the run was closed as interrupted.
    pub interrupted_at: Option<UnixMillis>,
    /// Attempts recorded before the run was cut off (the one in flight is not among them).
    pub attempts: u32,
    /// Whether an action with the same idempotency key has succeeded since (a later run
    /// sent it again): when the target deduplicates on the key, the effect happened once.
    pub settled: bool,
}

/// Filters for listing in-doubt actions (newest first).
#[derive(Debug, Clone, Default)]
pub struct InDoubtFilter {
    pub charter: Option<String>,
    /// Only those whose key has not succeeded since ([`InDoubtAction::settled`] false).
    pub unsettled: bool,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// Events as received and payloads rejected by their contract.
pub trait EventStore: Send + Sync + 'static {
    /// Store an event unless `(charter, dedupe_key)` was seen before. Returns only after the
    /// event is durable. Safe under concurrent calls with the same dedupe key: exactly one
    /// caller gets `Stored`, the others `Duplicate` with the same id.
    fn ingest(&self, event: NewEvent) -> impl Future<Output = Result<IngestOutcome>> + Send;

    /// [`EventStore::ingest`] for a payload that arrived as JSON text: `payload_json` is that
    /// text, already parsed into `event.payload` by the caller. The store keeps the text as
    /// received (the sender's key order and number spelling) rather than serialising the
    /// parsed value again, which also saves the webhook path that serialisation.
    fn ingest_json(
        &self,
        event: NewEvent,
        payload_json: String,
    ) -> impl Future<Output = Result<IngestOutcome>> + Send;

    /// Keep a payload that broke its charter's contract (durable on return).
    fn reject(&self, rejected: RejectedPayload) -> impl Future<Output = Result<()>> + Send;

    /// [`EventStore::reject`] unless the charter already keeps `keep` rejected payloads:
    /// then nothing is written and the answer is `false` (the count and the insert are one
    /// statement, so concurrent callers cannot overshoot by more than the writers racing).
    fn reject_within(
        &self,
        rejected: RejectedPayload,
        keep: u64,
    ) -> impl Future<Output = Result<bool>> + Send;

    fn get_event(&self, id: Uuid) -> impl Future<Output = Result<Option<EventRecord>>> + Send;

    fn list_events(
        &self,
        filter: EventFilter,
    ) -> impl Future<Output = Result<Vec<EventRecord>>> + Send;

    /// How many events match `filter` (its `after`, `sort` and `limit` aside).
    fn count_events(&self, filter: EventFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Rejected payloads of `charter` (all when `None`), newest first, at most `limit`
    /// (default 100 when 0): the first page of [`EventStore::page_rejected`].
    fn list_rejected(
        &self,
        charter: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<RejectedPayload>>> + Send {
        self.page_rejected(RejectedFilter {
            charter,
            limit,
            ..RejectedFilter::default()
        })
    }

    /// Rejected payloads matching `filter`, newest first unless it sorts oldest first.
    fn page_rejected(
        &self,
        filter: RejectedFilter,
    ) -> impl Future<Output = Result<Vec<RejectedPayload>>> + Send;

    /// How many rejected payloads match `filter` (its `after`, `sort` and `limit` aside).
    fn count_rejected(&self, filter: RejectedFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Remove a rejected payload (after it has been replayed into an event).
    fn delete_rejected(&self, id: Uuid) -> impl Future<Output = Result<bool>> + Send;
}

/// The work queue: claiming pending events under leases.
pub trait QueueStore: Send + Sync + 'static {
    /// Claim up to `max` of `charter`'s oldest claimable events for `worker`: those pending,
    /// and those processing whose lease expired before `now`. Never lets the charter's
    /// events in processing (with a live lease, on any node) exceed `charter_limit`. Claims
    /// nothing for a paused charter. Each claim increments the event's attempt count.
    fn claim(
        &self,
        charter: &str,
        worker: &str,
        max: usize,
        charter_limit: usize,
        lease: Duration,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<Claimed>>> + Send;

    /// Extend the lease of an event this worker holds. Returns false if the lease was lost
    /// (expired and taken by another worker).
    fn renew(
        &self,
        event_id: Uuid,
        worker: &str,
        lease_until: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Set the final status of a claimed event and release the lease. Only the worker that
    /// holds the lease may do this; returns false otherwise.
    fn release(
        &self,
        event_id: Uuid,
        worker: &str,
        status: EventStatus,
        now: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Put events back to pending for another run: one event, or every failed event of a
    /// charter (or of all charters). Returns the ids re-queued. Events in processing are not
    /// touched.
    fn requeue(
        &self,
        selector: Requeue,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<Uuid>>> + Send;

    /// Pending (and expired-lease) events per charter, for metrics and status.
    fn pending_counts(&self) -> impl Future<Output = Result<Vec<(String, u64)>>> + Send;

    /// Put events in processing back to pending, whatever their lease's expiry: those
    /// leased by `owner`, or every one when `owner` is `None`. For a worker's start-up, when
    /// the leases belong to a previous incarnation that is known to be dead (see
    /// [`QueueStore::single_process`]). Returns the ids released. Their runs cut off are
    /// closed by the next claim (see [`Claimed::interrupted`]).
    fn release_leases(
        &self,
        owner: Option<&str>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<Uuid>>> + Send;

    /// Whether one process alone serves this store (SQLite: `charter serve` holds the file's
    /// serving lock), so every lease found when its worker starts belongs to a process that
    /// no longer runs. `false` for a store shared by several nodes (PostgreSQL).
    fn single_process(&self) -> bool;
}

/// What to put back in the queue.
#[derive(Debug, Clone)]
pub enum Requeue {
    Event(Uuid),
    AllFailed {
        charter: Option<String>,
    },
    /// Every event (of `charter`, or of all charters) received in `[since, until)`, whatever
    /// its status, except those in processing. `None` bounds are open.
    Received {
        charter: Option<String>,
        since: Option<UnixMillis>,
        until: Option<UnixMillis>,
    },
}

/// Runs, decisions and action attempts.
pub trait RunStore: Send + Sync + 'static {
    /// Record the start of a run (durable on return).
    fn start_run(
        &self,
        run_id: Uuid,
        event_id: Uuid,
        charter: &str,
        charter_version: &str,
        mode: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    fn record_decision(
        &self,
        run_id: Uuid,
        decision: &Decision,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Record that an action is about to be attempted (intent), before any request leaves.
    fn begin_action(
        &self,
        run_id: Uuid,
        action: &str,
        idempotency_key: &str,
        params: &serde_json::Value,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Append one attempt to an action begun in this run.
    fn record_attempt(
        &self,
        run_id: Uuid,
        action: &str,
        attempt: &AttemptRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Set the final status of an action in this run. Recording `Succeeded` marks the
    /// idempotency key as done for good.
    fn finish_action(
        &self,
        run_id: Uuid,
        record: &ActionRecord,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether an action with this idempotency key already succeeded (in any run).
    fn action_succeeded(&self, idempotency_key: &str) -> impl Future<Output = Result<bool>> + Send;

    fn finish_run(
        &self,
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<&str>,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Apply several of a run's writes in order, in ONE transaction: durable on return, all
    /// or nothing. Each [`RunWrite`] means exactly what its single method means
    /// ([`RunStore::start_run`], [`RunStore::begin_action`], [`QueueStore::release`], …);
    /// batching them saves the worker one durable round trip per write. A `Release` whose
    /// lease was lost is not an error (as with `release`): the other writes still commit, and
    /// [`RunWritten::released`] says false.
    fn record_run(&self, writes: Vec<RunWrite>) -> impl Future<Output = Result<RunWritten>> + Send;

    /// Every run of an event, oldest first, with its decision and actions.
    fn runs_for_event(&self, event_id: Uuid)
    -> impl Future<Output = Result<Vec<RunRecord>>> + Send;

    /// Runs of every event matching `filter`, newest first (by start, then id) unless it
    /// sorts oldest first, with their decisions and actions.
    fn list_runs(&self, filter: RunFilter) -> impl Future<Output = Result<Vec<RunRecord>>> + Send;

    /// How many runs match `filter` (its `after`, `sort` and `limit` aside).
    fn count_runs(&self, filter: RunFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Actions left in doubt by interrupted runs, newest first.
    fn list_in_doubt(
        &self,
        filter: InDoubtFilter,
    ) -> impl Future<Output = Result<Vec<InDoubtAction>>> + Send;
}

/// One write of a run, for [`RunStore::record_run`]. Each variant has the meaning of the
/// single-write method it is named after.
#[derive(Debug, Clone)]
pub enum RunWrite {
    /// [`RunStore::start_run`].
    Start {
        run_id: Uuid,
        event_id: Uuid,
        charter: String,
        charter_version: String,
        mode: String,
        now: UnixMillis,
    },
    /// [`RunStore::record_decision`].
    Decision { run_id: Uuid, decision: Decision },
    /// [`RunStore::begin_action`]: the intent, durable before any request leaves. In a
    /// [`RunStore::record_run`] batch the key is first checked against the succeeded keys
    /// (as [`RunStore::action_succeeded`] would, but in the same transaction): when it already
    /// succeeded, no intent is written and [`RunWritten::already_succeeded`] is set, so the
    /// caller must not send the request.
    BeginAction {
        run_id: Uuid,
        action: String,
        idempotency_key: String,
        params: serde_json::Value,
    },
    /// [`RunStore::record_attempt`].
    Attempt {
        run_id: Uuid,
        action: String,
        attempt: AttemptRecord,
    },
    /// [`RunStore::finish_action`].
    FinishAction { run_id: Uuid, record: ActionRecord },
    /// [`ReportStore::record_measurement`].
    Measurement(NewMeasurement),
    /// [`RunStore::finish_run`].
    FinishRun {
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<String>,
        now: UnixMillis,
    },
    /// [`QueueStore::release`].
    Release {
        event_id: Uuid,
        worker: String,
        status: EventStatus,
        now: UnixMillis,
    },
}

/// What [`RunStore::record_run`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunWritten {
    /// For a batch with a `Release`: whether this worker still held the lease (and so the
    /// event's status was set). `None` without a `Release`.
    pub released: Option<bool>,
    /// For a batch with a `BeginAction`: its idempotency key had already succeeded (by this
    /// run's event or another), so the intent was not written.
    pub already_succeeded: bool,
}

/// Per-charter operator state: paused or not.
pub trait CharterStateStore: Send + Sync + 'static {
    fn set_paused(
        &self,
        charter: &str,
        paused: bool,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    fn is_paused(&self, charter: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Names of paused charters.
    fn paused(&self) -> impl Future<Output = Result<Vec<String>>> + Send;
}

/// Where event sources beyond webhooks left off: a polled API's cursor, a schedule's last
/// fire time. Keyed by charter and source name (`poll`, `schedule`).
pub trait SourceStateStore: Send + Sync + 'static {
    /// A held "only this node runs this source now" lease (see
    /// [`SourceStateStore::try_lock_source`]).
    type SourceLock: Send + 'static;

    /// Try to become the node that runs `source` of `charter` now. SQLite (one node)
    /// always succeeds; PostgreSQL takes a cluster-wide job lock, held until the value is
    /// dropped.
    fn try_lock_source(
        &self,
        charter: &str,
        source: &str,
    ) -> impl Future<Output = Result<Option<Self::SourceLock>>> + Send;

    /// The stored cursor, or `None` when the source never stored one.
    fn get_cursor(
        &self,
        charter: &str,
        source: &str,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Store the cursor (replacing any). Durable when it returns.
    fn put_cursor(
        &self,
        charter: &str,
        source: &str,
        cursor: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// An operator's mode for one charter, set by promoting it to live or demoting it to
/// shadow. It applies only while the charter file still declares `base`: once someone edits
/// `mode:` in the file, the file is the newer decision and wins (see [`effective_mode`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ModeOverride {
    pub charter: String,
    /// The mode the operator set: `shadow` or `live`.
    pub mode: String,
    /// The mode the charter file declared when the override was set.
    pub base: String,
    /// Who set it (token name).
    pub by: String,
    pub at: UnixMillis,
}

/// The mode a charter runs in: the operator's override when there is one and the file
/// still declares the mode it was set over, otherwise the file's mode.
pub fn effective_mode<'a>(file_mode: &'a str, stored: Option<&'a ModeOverride>) -> &'a str {
    match stored {
        Some(o) if o.base == file_mode => &o.mode,
        _ => file_mode,
    }
}

/// Operator controls beyond pausing: a charter's mode override, and taking one event out of
/// automatic processing (the manual queue).
pub trait OperatorStore: Send + Sync + 'static {
    /// Store (or replace) a charter's mode override (durable on return).
    fn set_mode(&self, mode: ModeOverride) -> impl Future<Output = Result<()>> + Send;

    /// Remove a charter's mode override; returns whether there was one.
    fn clear_mode(
        &self,
        charter: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    fn mode_override(
        &self,
        charter: &str,
    ) -> impl Future<Output = Result<Option<ModeOverride>>> + Send;

    /// Every stored mode override, by charter name.
    fn mode_overrides(&self) -> impl Future<Output = Result<Vec<ModeOverride>>> + Send;

    /// Take an event out of automatic processing: set it to `waiting` (which no claim picks
    /// up) unless it is in processing. Returns false for an unknown event or one in
    /// processing. A later requeue (replay, or a human's decision) puts it back.
    fn hold_event(&self, id: Uuid, now: UnixMillis) -> impl Future<Output = Result<bool>> + Send;
}

/// A web UI session as stored. The cookie's id itself is never stored: only its SHA-256
/// (`id_hash`, hex), so the table alone does not let anyone take a session over.
#[derive(Debug, Clone, PartialEq)]
pub struct UiSession {
    /// SHA-256 of the session id, lower-case hex.
    pub id_hash: String,
    /// The API token's name the session was opened with (`local` when the UI is open).
    pub name: String,
    /// The token's role, as its word (`viewer`, `reviewer`, `admin`).
    pub role: String,
    /// Charters the session may see; empty = all.
    pub charters: Vec<String>,
    /// The session's CSRF token, compared with every form's.
    pub csrf: String,
    /// A fingerprint of the grant the session was opened under (the server's: a hash over
    /// the session's id and the token's name, role, scopes and secret), so that a session
    /// ends when its token is removed, rotated or changed.
    pub grant: String,
    pub created_at: UnixMillis,
    pub expires_at: UnixMillis,
}

/// Web UI sessions, kept in the store so that every node sharing it knows a session opened
/// on any of them, and a restart does not log anyone out.
pub trait SessionStore: Send + Sync + 'static {
    /// Store a new session (durable on return); sessions expired at `session.created_at`
    /// are deleted in the same write.
    fn create_session(&self, session: UiSession) -> impl Future<Output = Result<()>> + Send;

    /// The session with this id hash if it is still live at `now`.
    fn session(
        &self,
        id_hash: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<UiSession>>> + Send;

    /// End a session; returns whether there was one.
    fn delete_session(&self, id_hash: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// Everything the engine needs from a store.
pub trait Store:
    EventStore
    + QueueStore
    + RunStore
    + CharterStateStore
    + OperatorStore
    + ApprovalStore
    + EscalationStore
    + AuditStore
    + ReportStore
    + AlertStore
    + SourceStateStore
    + NotificationStore
    + DecisionStore
    + RetentionStore
    + SessionStore
    + RolloutStore
    + KnowledgeStore
    + Clone
{
}
impl<
    T: EventStore
        + QueueStore
        + RunStore
        + CharterStateStore
        + OperatorStore
        + ApprovalStore
        + EscalationStore
        + AuditStore
        + ReportStore
        + AlertStore
        + SourceStateStore
        + NotificationStore
        + DecisionStore
        + RetentionStore
        + SessionStore
        + RolloutStore
        + KnowledgeStore
        + Clone,
> Store for T
{
}

// ---------------------------------------------------------------------------------------
// Approvals, escalations, audit log
// ---------------------------------------------------------------------------------------

/// Where an approval stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// Waiting for a reviewer (until `expires_at`).
    Pending,
    Approved,
    Rejected,
    /// Nobody decided before the deadline; it can no longer be approved.
    Expired,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
            ApprovalStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => ApprovalStatus::Pending,
            "approved" => ApprovalStatus::Approved,
            "rejected" => ApprovalStatus::Rejected,
            "expired" => ApprovalStatus::Expired,
            _ => return None,
        })
    }
}

/// An action waiting for a human, as the worker creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewApproval {
    pub id: Uuid,
    pub run_id: Uuid,
    pub event_id: Uuid,
    pub charter: String,
    pub action: String,
    /// The rendered parameters shown to reviewers.
    pub params: serde_json::Value,
    /// What the approval is bound to: the idempotency key of `params`.
    pub params_hash: String,
    /// Token names (or groups) allowed to decide; empty means any reviewer.
    pub reviewers: Vec<String>,
    pub created_at: UnixMillis,
    /// After this instant the approval can no longer be approved.
    pub expires_at: Option<UnixMillis>,
    /// `escalate` or `reject`.
    pub on_expiry: Option<String>,
}

/// A stored approval and its outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApprovalRecord {
    pub id: Uuid,
    pub run_id: Uuid,
    pub event_id: Uuid,
    pub charter: String,
    pub action: String,
    pub params: serde_json::Value,
    pub params_hash: String,
    pub reviewers: Vec<String>,
    pub status: ApprovalStatus,
    pub created_at: UnixMillis,
    pub expires_at: Option<UnixMillis>,
    pub on_expiry: Option<String>,
    /// Who approved or rejected it (`system` for expiry).
    pub decided_by: Option<String>,
    pub decided_at: Option<UnixMillis>,
    /// The rejection reason, if any.
    pub comment: Option<String>,
    /// Parameters as edited by the reviewer (a human correction); executed instead of `params`.
    pub edited_params: Option<serde_json::Value>,
    /// Hash (idempotency key) of `edited_params`.
    pub edited_hash: Option<String>,
}

impl ApprovalRecord {
    /// The parameters an approved action runs with: the reviewer's edit, else the original.
    pub fn effective_params(&self) -> &serde_json::Value {
        self.edited_params.as_ref().unwrap_or(&self.params)
    }
}

/// A reviewer's verdict on a pending approval.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Approve, optionally with edited parameters and their hash.
    Approve {
        edited: Option<(serde_json::Value, String)>,
    },
    Reject {
        reason: String,
    },
}

/// Filters for listing approvals (oldest first).
#[derive(Debug, Clone, Default)]
pub struct ApprovalFilter {
    pub charter: Option<String>,
    pub status: Option<ApprovalStatus>,
    pub event_id: Option<Uuid>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Only approvals of this action.
    pub action: Option<String>,
    /// Created at or after.
    pub since: Option<UnixMillis>,
    /// Created before.
    pub until: Option<UnixMillis>,
    /// Oldest first (by creation, then id) unless `NewestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only approvals after this `(created_at, id)` in the listing's order.
    pub after: Option<(UnixMillis, Uuid)>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// Approvals bound to exact parameters.
pub trait ApprovalStore: Send + Sync + 'static {
    /// Store a pending approval unless one exists for `(event_id, action, params_hash)`;
    /// either way return the approval stored under that key. Safe under concurrent calls.
    fn create_approval(
        &self,
        approval: NewApproval,
    ) -> impl Future<Output = Result<ApprovalRecord>> + Send;

    fn get_approval(&self, id: Uuid)
    -> impl Future<Output = Result<Option<ApprovalRecord>>> + Send;

    /// The approval of `action` for `event_id` bound to `params_hash`, if any.
    fn find_approval(
        &self,
        event_id: Uuid,
        action: &str,
        params_hash: &str,
    ) -> impl Future<Output = Result<Option<ApprovalRecord>>> + Send;

    fn list_approvals(
        &self,
        filter: ApprovalFilter,
    ) -> impl Future<Output = Result<Vec<ApprovalRecord>>> + Send;

    /// How many approvals match `filter` (its `after`, `sort` and `limit` aside).
    fn count_approvals(&self, filter: ApprovalFilter) -> impl Future<Output = Result<u64>> + Send;

    /// Decide an approval atomically: only a `pending` approval whose deadline has not passed
    /// at `now` changes (to approved or rejected). Returns the updated record when this call
    /// made the change, `None` otherwise (unknown id, already decided, or expired). Of
    /// concurrent calls on one approval at most one gets `Some`.
    fn decide_approval(
        &self,
        id: Uuid,
        verdict: Verdict,
        by: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<ApprovalRecord>>> + Send;

    /// Mark every pending approval whose deadline is at or before `now` as expired and return
    /// them (each is returned by exactly one call).
    fn expire_approvals(
        &self,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Vec<ApprovalRecord>>> + Send;
}

/// Where an escalation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EscalationStatus {
    Open,
    Resolved,
}

impl EscalationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            EscalationStatus::Open => "open",
            EscalationStatus::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => EscalationStatus::Open,
            "resolved" => EscalationStatus::Resolved,
            _ => return None,
        })
    }
}

/// A human's decision on escalated work: the label and fields the run continues with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HumanDecision {
    pub label: String,
    #[serde(default)]
    pub fields: std::collections::BTreeMap<String, serde_json::Value>,
}

/// Work handed to a human, as the worker creates it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEscalation {
    pub id: Uuid,
    pub run_id: Option<Uuid>,
    pub event_id: Uuid,
    pub charter: String,
    /// `low_confidence`, `invalid_output`, `missing_field`, `budget`, `dead_letter`,
    /// `approval_expired`.
    pub reason: String,
    /// The evidence: payload, each stage's answer, the failed action, ...
    pub detail: serde_json::Value,
    /// Who it is handed to (the charter's `escalation.to`).
    pub target: Option<String>,
    pub created_at: UnixMillis,
}

/// A stored escalation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EscalationRecord {
    pub id: Uuid,
    pub run_id: Option<Uuid>,
    pub event_id: Uuid,
    pub charter: String,
    pub reason: String,
    pub detail: serde_json::Value,
    pub target: Option<String>,
    pub status: EscalationStatus,
    pub created_at: UnixMillis,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<UnixMillis>,
    pub resolution: Option<HumanDecision>,
}

/// Filters for listing escalations (oldest first).
#[derive(Debug, Clone, Default)]
pub struct EscalationFilter {
    pub charter: Option<String>,
    pub status: Option<EscalationStatus>,
    /// Only these charters (a caller's scope); empty = all.
    pub charters: Vec<String>,
    /// Only escalations for this reason (`dead_letter`, `low_confidence`, ...).
    pub reason: Option<String>,
    /// Only escalations for any reason but this one (the inbox's decisions without the dead
    /// letters, which have their own list).
    pub not_reason: Option<String>,
    /// Only escalations of this event.
    pub event_id: Option<Uuid>,
    /// Created at or after.
    pub since: Option<UnixMillis>,
    /// Created before.
    pub until: Option<UnixMillis>,
    /// Oldest first (by creation, then id) unless `NewestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only escalations after this `(created_at, id)` in the listing's order.
    pub after: Option<(UnixMillis, Uuid)>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// Work handed to humans and their decisions.
pub trait EscalationStore: Send + Sync + 'static {
    /// Open an escalation unless the event already has an open one; either way return the
    /// event's open escalation. Safe under concurrent calls.
    fn create_escalation(
        &self,
        escalation: NewEscalation,
    ) -> impl Future<Output = Result<EscalationRecord>> + Send;

    fn get_escalation(
        &self,
        id: Uuid,
    ) -> impl Future<Output = Result<Option<EscalationRecord>>> + Send;

    fn list_escalations(
        &self,
        filter: EscalationFilter,
    ) -> impl Future<Output = Result<Vec<EscalationRecord>>> + Send;

    /// How many escalations match `filter` (its `after`, `sort` and `limit` aside).
    fn count_escalations(
        &self,
        filter: EscalationFilter,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Resolve an open escalation with a human decision. Returns the updated record when this
    /// call resolved it, `None` if it was unknown or already resolved.
    fn resolve_escalation(
        &self,
        id: Uuid,
        decision: &HumanDecision,
        by: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<EscalationRecord>>> + Send;

    /// Close an open escalation without a human decision: a dead letter dismissed, or one
    /// whose event later succeeded. It is then `resolved` with no `resolution`, so it neither
    /// replaces a later run's decision nor counts as a correction. Returns the record when
    /// this call closed it, `None` if it was unknown or already closed.
    fn close_escalation(
        &self,
        id: Uuid,
        by: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<EscalationRecord>>> + Send;

    /// Close the event's open escalation for `reason`, if it has one (as
    /// [`EscalationStore::close_escalation`]).
    fn close_event_escalation(
        &self,
        event_id: Uuid,
        reason: &str,
        by: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<EscalationRecord>>> + Send;

    /// The event's most recently resolved escalation, if any (its decision replaces the
    /// decision cascade on later runs).
    fn latest_resolution(
        &self,
        event_id: Uuid,
    ) -> impl Future<Output = Result<Option<EscalationRecord>>> + Send;
}

/// One audit log entry to append.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    pub at: UnixMillis,
    /// Token name, `local`, or `system`.
    pub actor: String,
    /// What was done: `approval.approve`, `approval.reject`, `charter.pause`, ...
    pub action: String,
    pub charter: Option<String>,
    /// What it was done to (an approval, escalation or event id).
    pub target: Option<String>,
    pub detail: serde_json::Value,
}

/// A stored audit log entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub seq: i64,
    pub at: UnixMillis,
    pub actor: String,
    pub action: String,
    pub charter: Option<String>,
    pub target: Option<String>,
    pub detail: serde_json::Value,
}

/// Filters for listing the audit log (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub charter: Option<String>,
    pub actor: Option<String>,
    pub action: Option<String>,
    /// Only entries whose action is one of these; empty = any.
    pub actions: Vec<String>,
    /// Only entries of these charters (a caller's scope: entries tied to no charter are then
    /// left out); empty = all.
    pub charters: Vec<String>,
    /// At or after.
    pub since: Option<UnixMillis>,
    /// Before.
    pub until: Option<UnixMillis>,
    /// Newest first (by sequence) unless `OldestFirst`.
    pub sort: Option<Sort>,
    /// Keyset paging: only entries after this sequence number in the listing's order.
    pub after: Option<i64>,
    /// At most this many (default 100 when 0).
    pub limit: usize,
}

/// The append-only record of who did what and when.
pub trait AuditStore: Send + Sync + 'static {
    /// Append an entry (durable on return) and return its sequence number.
    fn append_audit(&self, entry: NewAuditEntry) -> impl Future<Output = Result<i64>> + Send;

    fn list_audit(
        &self,
        filter: AuditFilter,
    ) -> impl Future<Output = Result<Vec<AuditEntry>>> + Send;

    /// How many entries match `filter` (its `after`, `sort` and `limit` aside).
    fn count_audit(&self, filter: AuditFilter) -> impl Future<Output = Result<u64>> + Send;
}
