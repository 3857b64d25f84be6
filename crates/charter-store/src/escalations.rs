//! Escalations to people and their decisions: [`EscalationStore`] and its records.

use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::{Result, Sort};

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
