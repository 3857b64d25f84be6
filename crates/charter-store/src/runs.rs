//! Runs, decisions and action attempts: [`RunStore`], the batched [`RunWrite`]s, and the
//! listing of actions left in doubt.

use std::future::Future;

use charter_core::model::{
    ActionRecord, AttemptRecord, Decision, EventStatus, RunOutcome, RunRecord, UnixMillis,
};
use uuid::Uuid;

use crate::{NewMeasurement, Result, Sort};

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
    /// ([`RunStore::start_run`], [`RunStore::begin_action`], [`QueueStore::release`](crate::QueueStore::release), …);
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
    /// [`ReportStore::record_measurement`](crate::ReportStore::record_measurement).
    Measurement(NewMeasurement),
    /// [`RunStore::finish_run`].
    FinishRun {
        run_id: Uuid,
        route: Option<usize>,
        outcome: RunOutcome,
        error: Option<String>,
        now: UnixMillis,
    },
    /// [`QueueStore::release`](crate::QueueStore::release).
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
