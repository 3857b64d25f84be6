//! Rollout per route: an operator's mode per route, runs sampled for review and their
//! reviews, and how much reviewers rewrote drafts. Implemented by both backends and checked
//! by the conformance suite (`check_rollout`).

use std::collections::BTreeMap;
use std::future::Future;

use charter_core::model::UnixMillis;
use uuid::Uuid;

use crate::Result;

/// A route's stored state: an operator's mode override (all four `mode*` fields set, or
/// none) and when the owner was told the route meets its promotion criteria.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RouteState {
    pub charter: String,
    pub route: String,
    /// The mode an operator (or an automatic promotion or demotion) set.
    pub mode: Option<String>,
    /// The mode the files declared for the route when `mode` was set.
    pub base: Option<String>,
    /// Who set it (token name, or `charter` for an automatic change).
    pub by: Option<String>,
    pub at: Option<UnixMillis>,
    /// Why (free text: `promote_when met`, `correction rate 30% over 10 reviewed`).
    pub reason: Option<String>,
    /// When the owner was told the route may be promoted (cleared by every mode change).
    pub suggested_at: Option<UnixMillis>,
}

impl RouteState {
    /// The stored override as `(mode, base)`, if any.
    pub fn override_pair(&self) -> Option<(&str, &str)> {
        Some((self.mode.as_deref()?, self.base.as_deref()?))
    }
}

/// A mode set on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteModeChange {
    pub charter: String,
    pub route: String,
    pub mode: String,
    pub base: String,
    pub by: String,
    pub at: UnixMillis,
    pub reason: Option<String>,
}

/// A run queued for review.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NewSample {
    pub id: Uuid,
    pub run_id: Uuid,
    pub event_id: Uuid,
    pub charter: String,
    pub route: String,
    /// The route's mode when it ran (`shadow`, `approve`, `live`).
    pub mode: String,
    /// The decided label, if the charter decides.
    pub label: Option<String>,
    /// The run's actions as recorded (`[{action, status, params}]`).
    pub actions: serde_json::Value,
    pub created_at: UnixMillis,
}

/// A reviewer's verdict on a sample.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SampleReview {
    pub by: String,
    pub at: UnixMillis,
    /// Whether the decision (label) was right.
    pub decision_right: bool,
    /// The right label when the decision was wrong (a correction).
    pub right_label: Option<String>,
    /// Each action of the sample: right or wrong.
    pub actions: BTreeMap<String, bool>,
    pub note: Option<String>,
}

impl SampleReview {
    /// The reviewer agreed with everything: the decision and every action.
    pub fn agreed(&self) -> bool {
        self.decision_right && self.actions.values().all(|ok| *ok)
    }
}

/// A sample as stored, with its review once there is one.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SampleRecord {
    #[serde(flatten)]
    pub sample: NewSample,
    pub review: Option<SampleReview>,
}

/// Which samples to list.
#[derive(Debug, Clone, Default)]
pub struct SampleFilter {
    pub charter: Option<String>,
    pub route: Option<String>,
    /// `Some(false)`: the review queue; `Some(true)`: reviewed ones.
    pub reviewed: Option<bool>,
    /// 0: the store's default page.
    pub limit: usize,
}

/// Review counts of one route in one mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct ReviewCounts {
    pub reviewed: u64,
    pub agreed: u64,
    /// Reviews that found the decision wrong and gave the right label.
    pub corrected: u64,
    /// Samples still waiting for a review.
    pub pending: u64,
}

/// Review counts per (route, mode the sample ran in).
pub type ReviewStats = BTreeMap<(String, String), ReviewCounts>;

/// An approved draft and what the reviewer approved.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DraftRewrite {
    pub approval_id: Uuid,
    pub run_id: Uuid,
    pub event_id: Uuid,
    pub charter: String,
    pub route: Option<String>,
    pub action: String,
    pub draft: String,
    pub approved: String,
    #[serde(flatten)]
    pub distance: charter_core::rollout::Rewrite,
    pub edited_by: String,
    pub at: UnixMillis,
}

/// Rewrite totals of one (charter, route, action).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct RewriteTotals {
    /// Approved drafts.
    pub drafts: u64,
    /// Of them, approved with an edit.
    pub edited: u64,
    #[serde(flatten)]
    pub distance: charter_core::rollout::Rewrite,
}

/// Rewrite totals keyed by (charter, route or `-`, action).
pub type RewriteStats = BTreeMap<(String, String, String), RewriteTotals>;

pub trait RolloutStore: Send + Sync + 'static {
    /// Store (or replace) a route's mode; clears `suggested_at` (durable on return).
    fn set_route_mode(&self, change: RouteModeChange) -> impl Future<Output = Result<()>> + Send;

    /// Drop a route's mode override (the files' mode applies); returns whether there was one.
    fn clear_route_mode(
        &self,
        charter: &str,
        route: &str,
        now: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Every stored route state of `charter` (all charters when `None`), by charter and route.
    fn route_states(
        &self,
        charter: Option<&str>,
    ) -> impl Future<Output = Result<Vec<RouteState>>> + Send;

    /// Record that the owner was told `route` may be promoted. Returns false when that was
    /// already recorded since the route's last mode change (so only one caller notifies).
    fn mark_suggested(
        &self,
        charter: &str,
        route: &str,
        at: UnixMillis,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Queue a sample; a second sample of the same run is ignored (returns false).
    fn add_sample(&self, sample: NewSample) -> impl Future<Output = Result<bool>> + Send;

    fn sample(&self, id: Uuid) -> impl Future<Output = Result<Option<SampleRecord>>> + Send;

    /// Samples, oldest first for the queue (`reviewed: Some(false)`), else newest first.
    fn samples(
        &self,
        filter: SampleFilter,
    ) -> impl Future<Output = Result<Vec<SampleRecord>>> + Send;

    /// Record a review; `None` when the sample does not exist or was already reviewed.
    fn review_sample(
        &self,
        id: Uuid,
        review: SampleReview,
    ) -> impl Future<Output = Result<Option<SampleRecord>>> + Send;

    /// Review counts of a charter's samples reviewed at or after `since` (pending counts
    /// every unreviewed sample), per (route, mode).
    fn review_stats(
        &self,
        charter: &str,
        since: UnixMillis,
    ) -> impl Future<Output = Result<ReviewStats>> + Send;

    /// Record a measured rewrite; a second one for the same approval is ignored.
    fn add_rewrite(&self, rewrite: DraftRewrite) -> impl Future<Output = Result<bool>> + Send;

    /// Rewrites at or after `since` (of `charter`, or all), oldest first, at most `limit`.
    fn rewrites(
        &self,
        charter: Option<&str>,
        since: UnixMillis,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<DraftRewrite>>> + Send;

    /// Totals of rewrites at or after `since`, per (charter, route, action).
    fn rewrite_stats(
        &self,
        charter: Option<&str>,
        since: UnixMillis,
    ) -> impl Future<Output = Result<RewriteStats>> + Send;
}
