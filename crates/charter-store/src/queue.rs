//! The work queue: [`QueueStore`], what a claim returns, and the runs a claim closes as
//! interrupted.

use std::future::Future;
use std::time::Duration;

use charter_core::model::{EventStatus, NewEvent, UnixMillis};
use uuid::Uuid;

use crate::{EscalationRecord, ModeOverride, Result};

/// An event claimed by a worker under a lease.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub event: NewEvent,
    /// The number of runs started for this event, this claim included.
    pub attempt: u32,
    pub lease_until: UnixMillis,
    /// The charter's stored operator mode override, read in the same claim (so a run needs
    /// no separate read to know whether it runs in shadow or live). Whether it still
    /// applies is for [`effective_mode`](crate::effective_mode) to say.
    pub mode_override: Option<ModeOverride>,
    /// The latest human resolution of an escalation of this event, read in the same claim:
    /// when present it replaces the decision cascade (see [`EscalationStore::latest_resolution`](crate::EscalationStore::latest_resolution)).
    pub resolution: Option<EscalationRecord>,
    /// Earlier runs of this event that were cut off before they finished (their process was
    /// killed, or lost the lease), closed by this claim as [`RunOutcome::Interrupted`](charter_core::model::RunOutcome::Interrupted) in the
    /// same transaction, each with the actions it left in doubt.
    pub interrupted: Vec<InterruptedRun>,
}

/// The `error` a run closed as [`RunOutcome::Interrupted`](charter_core::model::RunOutcome::Interrupted) is recorded with.
pub const INTERRUPTED_ERROR: &str =
    "interrupted: the run was cut off before it finished (its process stopped or lost the lease)";

/// A run closed as [`RunOutcome::Interrupted`](charter_core::model::RunOutcome::Interrupted) by a claim of its event.
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
