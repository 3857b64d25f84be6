//! Retention: removing finished work older than a cut-off, so the store does not grow
//! forever.
//!
//! What goes: events that are `done` or `failed` and were received before the cut-off, with
//! their runs, actions, attempts, run extras, approvals, escalations and those items'
//! notifications; and rejected payloads received before it. What stays: events still in
//! flight or waiting for a human (whatever their age; a failed event with an open
//! escalation or a pending approval too), measurements (reports over old periods keep their
//! figures), the audit log, succeeded idempotency keys, alert incidents
//! and the LLM spend. A purged event's dedupe key goes with it: the same delivery arriving
//! again later is stored as new.

use std::future::Future;

use charter_core::model::UnixMillis;

use crate::Result;

/// What one purge round removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub events: u64,
    pub runs: u64,
    pub rejected: u64,
}

impl Purged {
    /// Nothing was removed: the purge is complete.
    pub fn is_empty(&self) -> bool {
        self.events == 0 && self.rejected == 0
    }

    pub fn add(&mut self, other: Purged) {
        self.events += other.events;
        self.runs += other.runs;
        self.rejected += other.rejected;
    }
}

/// Removing old finished work.
pub trait RetentionStore: Send + Sync + 'static {
    /// Remove up to `limit` finished events received before `before` (of `charter`, or of
    /// every charter) with everything that hangs off them, and up to `limit` rejected
    /// payloads received before it, in one transaction. Call again until it returns
    /// [`Purged::is_empty`]: small rounds keep the store's other writes flowing meanwhile.
    fn purge(
        &self,
        before: UnixMillis,
        charter: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Purged>> + Send;
}
