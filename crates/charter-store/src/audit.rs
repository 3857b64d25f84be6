//! The audit log of operator and agent actions: [`AuditStore`].

use std::future::Future;

use charter_core::model::UnixMillis;

use crate::{Result, Sort};

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
