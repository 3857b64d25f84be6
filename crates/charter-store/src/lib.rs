//! Charter's durable store.
//!
//! Store access is split into small traits per concern — [`EventStore`], [`QueueStore`],
//! [`RunStore`], [`CharterStateStore`], [`OperatorStore`], [`ApprovalStore`],
//! [`EscalationStore`], [`AuditStore`] — that the engine uses generically. The backend is
//! chosen at start-up ([`sqlite::SqliteStore`] or [`postgres::PgStore`]). Each concern's trait
//! and types are a module of their own (re-exported here); each backend has one file per
//! concern under the same name (`sqlite/approvals.rs`, `postgres/approvals.rs`, ...).
//! `conformance` (the `conformance` feature, for tests) holds the behaviour every backend
//! must show, run against each backend.
//!
//! Durability contract: when a write method returns `Ok`, the write is committed and (for
//! SQLite) fsynced; a crash after that point does not lose it.

pub mod approvals;
pub mod audit;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod decision;
pub mod escalations;
pub mod events;
pub mod knowledge;
pub mod notifications;
pub mod operator;
pub mod page;
pub mod postgres;
pub mod queue;
pub mod report;
pub mod retention;
pub mod rollout;
pub mod runs;
pub mod sessions;
pub mod sources;
pub mod sqlite;
pub mod state;

pub use approvals::{
    ApprovalFilter, ApprovalRecord, ApprovalStatus, ApprovalStore, NewApproval, Verdict,
};
pub use audit::{AuditEntry, AuditFilter, AuditStore, NewAuditEntry};

pub use decision::{DecisionStore, EXTRA_CONTEXT, EXTRA_DRAFT, LlmSpend, RunExtra};
pub use escalations::{
    EscalationFilter, EscalationRecord, EscalationStatus, EscalationStore, HumanDecision,
    NewEscalation,
};
pub use events::{EventFilter, EventStore, IngestOutcome, RejectedFilter};
pub use knowledge::{
    GapFilter, GapReason, KnowledgeDoc, KnowledgeGap, KnowledgeStore, NewPassage, PassageHit,
    PutOutcome,
};
pub use notifications::{
    Delivery, NewNotification, NotificationKind, NotificationRecord, NotificationState,
    NotificationStore,
};
pub use operator::OperatorStore;
pub use page::{Sort, uuid_prefix_range};
pub use queue::{Claimed, INTERRUPTED_ERROR, InDoubtRef, InterruptedRun, QueueStore, Requeue};
pub use report::{
    AlertStore, CharterBacklog, CharterReport, Incident, IncidentState, NewIncident,
    NewMeasurement, Readiness, ReportQuery, ReportRates, ReportStore,
};
pub use retention::{Purged, RetentionStore};
pub use rollout::RolloutStore;
pub use runs::{InDoubtAction, InDoubtFilter, RunFilter, RunStore, RunWrite, RunWritten};
pub use sessions::{SessionStore, UiSession};
pub use sources::SourceStateStore;
pub use state::{CharterStateStore, ModeOverride, effective_mode};

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

/// `WHERE a AND b` of a listing query's filter clauses; empty when there are none.
pub(crate) fn where_clause<T: AsRef<str>>(clauses: &[T]) -> String {
    if clauses.is_empty() {
        return String::new();
    }
    let parts: Vec<&str> = clauses.iter().map(AsRef::as_ref).collect();
    format!("WHERE {}", parts.join(" AND "))
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
