//! The decision layer's store-backed state: the exact-match LLM response cache and the LLM
//! spend per charter and UTC day (what `budget:` reads), both shared by every node, and
//! what a run produced besides its decision and actions (drafts written for actions,
//! records fetched as context).

use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::Result;

/// Kind of a [`RunExtra`]: a draft written for an action (named after the action).
pub const EXTRA_DRAFT: &str = "draft";
/// Kind of a [`RunExtra`]: a record fetched before deciding (named after the context entry).
pub const EXTRA_CONTEXT: &str = "context";

/// Something a run produced besides its decision and actions.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RunExtra {
    pub run_id: Uuid,
    pub event_id: Uuid,
    /// [`EXTRA_DRAFT`] or [`EXTRA_CONTEXT`].
    pub kind: String,
    /// The action (draft) or the context entry.
    pub name: String,
    /// A draft: `{text, provider, model, usage}`; a context fetch: `{ok, status, value,
    /// error, duration_ms}`.
    pub body: serde_json::Value,
    pub at: UnixMillis,
}

/// Tokens and cost one charter spent on LLM calls on one UTC day.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LlmSpend {
    pub tokens: u64,
    /// In the providers' price unit.
    pub cost: f64,
}

/// LLM response cache, LLM spend and rate windows, and run extras.
pub trait DecisionStore: Send + Sync + 'static {
    /// What `charter` spent on `day` (UTC days since 1970-01-01); zero when nothing.
    fn llm_spent(&self, charter: &str, day: i64) -> impl Future<Output = Result<LlmSpend>> + Send;

    /// Add one call's tokens and cost to `charter`'s total for `day`, atomically (adds from
    /// any node all count); returns the new total.
    fn add_llm_spend(
        &self,
        charter: &str,
        day: i64,
        spend: LlmSpend,
    ) -> impl Future<Output = Result<LlmSpend>> + Send;

    /// Add a signed change (a budget reservation, its settlement, or a reservation given
    /// back) to `charter`'s total for `day`, atomically, neither tokens nor cost going below
    /// zero; returns the new total.
    fn adjust_llm_spend(
        &self,
        charter: &str,
        day: i64,
        tokens: i64,
        cost: f64,
    ) -> impl Future<Output = Result<LlmSpend>> + Send;

    /// The cached answer under `key` unless it expired at `now`.
    fn cache_get(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Store (or replace) `value` under `key` until `expires_at`; rows expired at `now`
    /// are swept.
    fn cache_put(
        &self,
        key: &str,
        value: &str,
        now: UnixMillis,
        expires_at: UnixMillis,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Take one LLM request slot of `charter` at `now`: its window (`window_ms` long) starts
    /// at its first request; a window with fewer than `max` requests admits this one. `None`:
    /// admitted; `Some(t)`: refused until `t` (Unix ms, the window's end). Atomic across
    /// nodes.
    fn take_llm_slot(
        &self,
        charter: &str,
        now: UnixMillis,
        window_ms: i64,
        max: u32,
    ) -> impl Future<Output = Result<Option<UnixMillis>>> + Send;

    /// Record an extra of a run (replacing one of the same run, kind and name).
    fn record_run_extra(&self, extra: &RunExtra) -> impl Future<Output = Result<()>> + Send;

    /// The extras of a run, in the order they were recorded.
    fn run_extras(&self, run_id: Uuid) -> impl Future<Output = Result<Vec<RunExtra>>> + Send;

    /// The most recent extra of this kind and name over all runs of an event (a re-run
    /// after an approval reuses the draft the reviewer saw).
    fn latest_run_extra(
        &self,
        event_id: Uuid,
        kind: &str,
        name: &str,
    ) -> impl Future<Output = Result<Option<RunExtra>>> + Send;
}
