//! Approvals of actions by people: [`ApprovalStore`] and its records.

use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::{Result, Sort};

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
