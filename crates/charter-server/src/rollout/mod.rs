//! Earning trust step by step: a mode per route, reviewed samples, promotion and demotion,
//! and how much reviewers rewrite drafts.
//!
//! **Mode per route.** A route runs in its own `mode:` (`shadow`, `approve`, `live`), else in
//! the charter's. An operator may set a route's mode (`POST
//! /api/v1/charters/{name}/routes/{route}/mode`, the CLI's `charter route-mode`, the UI's
//! rollout page); the override is kept with the mode the files declared for the route at that
//! moment and applies only while they still do, so an edit of the file wins (as the
//! charter-wide override of [`crate::operator`]). In `approve` every action of the route waits
//! for a reviewer: an `approval: auto` action gets the draft default (any reviewer who sees
//! the charter, within a day, else it escalates).
//!
//! **Samples.** A share of each route's runs (`sample:`) is queued for review once the run
//! ended in `shadow` or `completed`. A reviewer marks the decision and each action right or
//! wrong (with the right label when the decision was wrong: a correction, exported with the
//! other corrections). Agreement is reported per route and mode with a Wilson interval, and as
//! "not enough reviewed" until the route's minimum.
//!
//! **Promotion and demotion.** After each review the route is evaluated over the samples
//! reviewed in its current mode since its mode last changed: a route not yet live that meets
//! its `promote_when` is suggested for promotion to `live` (the owner is told once through the
//! charter's `escalation.notify` channels; promoted only with `auto: true`); a live route
//! whose share of samples marked wrong exceeds `demote_when.corrections` is demoted to
//! `approve` and the owner told. Every change is audited as `route.mode`.
//!
//! **Rewrites.** When a reviewer approves an action that carried a draft, the draft's text and
//! the approved text are compared (edit distance in characters and words) and kept, per
//! charter, route and action: in `charter report`, `GET /api/v1/rewrites`, the UI's chart and
//! the `charter_draft_*` metrics; `charter export-rewrites` writes the pairs as JSONL.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use charter_core::config::{Approval, Charter, Mode, OnExpiry, Route};
use charter_core::model::{Decision, RunOutcome, UnixMillis};
use charter_core::rollout::{self as calc, Agreement, Rewrite};
use charter_store::rollout::{
    DraftRewrite, NewSample, ReviewCounts, ReviewStats, RouteModeChange, RouteState, SampleFilter,
    SampleRecord, SampleReview,
};
use charter_store::{ApprovalRecord, EXTRA_DRAFT, NotificationKind, Store, StoreError};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::record::audit;
use crate::{AppState, now_millis};

mod review;
mod rewrites;
pub use review::*;
pub use rewrites::*;

/// How long an action of a route in `approve` waits for a reviewer (when the action itself
/// runs with `approval: auto`) before it escalates.
pub const APPROVE_MODE_EXPIRES: Duration = Duration::from_secs(24 * 3600);

/// The actor of automatic promotions and demotions in the audit log and route state.
pub const AUTOMATIC: &str = "charter";

// ---------------------------------------------------------------------------------------
// Modes
// ---------------------------------------------------------------------------------------

/// The mode of each route of `charter` given its stored states and the charter's effective
/// mode, in route order.
pub fn route_modes(charter: &Charter, charter_mode: Mode, states: &[RouteState]) -> Vec<Mode> {
    charter
        .routes
        .iter()
        .map(|r| {
            let stored = states
                .iter()
                .find(|s| s.route == r.name)
                .and_then(RouteState::override_pair);
            calc::route_mode(r, charter.mode, charter_mode, stored)
        })
        .collect()
}

/// The mode route `idx` of `charter` (the file's) runs in now.
pub async fn route_mode_now<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    charter_mode: Mode,
    idx: usize,
) -> Result<Mode, StoreError> {
    let Some(route) = charter.routes.get(idx) else {
        return Ok(charter_mode);
    };
    let states = state.store.route_states(Some(&charter.name)).await?;
    let stored = states
        .iter()
        .find(|s| s.route == route.name)
        .and_then(RouteState::override_pair);
    Ok(calc::route_mode(route, charter.mode, charter_mode, stored))
}

/// `charter` as route `idx` runs it in `mode`: the same charter when the mode is the
/// charter's, else a copy in that mode; in `approve` the route's `approval: auto` actions wait
/// for any reviewer who sees the charter.
pub fn charter_in_mode(charter: &Arc<Charter>, idx: usize, mode: Mode) -> Arc<Charter> {
    if mode == charter.mode {
        return charter.clone();
    }
    let mut c = (**charter).clone();
    c.mode = mode;
    if mode == Mode::Approve
        && let Some(route) = charter.routes.get(idx)
    {
        for name in &route.actions {
            if let Some(a) = c.actions.get_mut(name)
                && matches!(a.approval, Approval::Auto)
            {
                a.approval = Approval::Required {
                    reviewers: Vec::new(),
                    expires: APPROVE_MODE_EXPIRES,
                    on_expiry: OnExpiry::Escalate,
                };
            }
        }
    }
    Arc::new(c)
}

/// Queue the run for review when its route samples it. Never fails the run: a store error is
/// logged.
pub async fn sample_run<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    idx: usize,
    mode: Mode,
    event_id: Uuid,
    run_id: Uuid,
    decision: Option<&Decision>,
    outcome: RunOutcome,
) {
    let Some(route) = charter.routes.get(idx) else {
        return;
    };
    if !matches!(outcome, RunOutcome::Shadow | RunOutcome::Completed)
        || !calc::sampled(event_id.as_u128(), route.rollout.sample)
    {
        return;
    }
    let sample = NewSample {
        id: Uuid::now_v7(),
        run_id,
        event_id,
        charter: charter.name.clone(),
        route: route.name.clone(),
        mode: mode.as_str().to_string(),
        label: decision.and_then(|d| d.label.clone()),
        actions: json!(route.actions),
        created_at: now_millis(),
    };
    match state.store.add_sample(sample).await {
        Ok(true) => state.metrics.sample_queued(&charter.name, &route.name),
        Ok(false) => {}
        Err(e) => {
            tracing::error!(charter = %charter.name, route = %route.name, run = %run_id, error = %e, "could not queue the run for review");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------

/// One route's rollout as the API and UI show it.
#[derive(Debug, Clone)]
pub struct RouteView {
    pub name: String,
    pub actions: Vec<String>,
    /// The mode the route runs in now.
    pub mode: Mode,
    /// What the files declare (the route's `mode:`, else the charter file's).
    pub declared: Mode,
    /// Whether the route has its own `mode:`.
    pub own_mode: bool,
    pub state: Option<RouteState>,
    /// Agreement over samples reviewed in the current mode since the mode last changed.
    pub agreement: Agreement,
    /// Every review of the route, whatever the mode.
    pub all_time: Agreement,
    pub pending: u64,
    pub sample: f64,
    /// `promote_when` is met and the route is not live yet.
    pub suggest_promotion: bool,
    /// The route's demotion bound is crossed (it is demoted after the review that crossed it).
    pub demotion_due: bool,
}

impl RouteView {
    pub fn json(&self, route: &Route) -> Value {
        let st = self.state.as_ref();
        let applies = st
            .and_then(RouteState::override_pair)
            .is_some_and(|(_, base)| base == self.declared.as_str());
        let over = match st {
            Some(s) if applies => json!({
                "mode": s.mode,
                "by": s.by,
                "at": s.at,
                "reason": s.reason,
            }),
            _ => Value::Null,
        };
        json!({
            "name": self.name,
            "actions": self.actions,
            "mode": self.mode.as_str(),
            "declared_mode": self.declared.as_str(),
            "file_mode": route.rollout.mode.map(Mode::as_str),
            "override": over,
            "sample": self.sample,
            "pending_reviews": self.pending,
            "agreement": self.agreement,
            "agreement_text": self.agreement.describe(),
            "all_time": self.all_time,
            "promote_when": route.rollout.promote_when.map(|p| json!({
                "agreement": p.agreement, "reviewed": p.reviewed, "auto": p.auto,
            })),
            "demote_when": route.rollout.demote_when.map(|d| json!({
                "corrections": d.corrections, "reviewed": d.reviewed,
            })),
            "suggest_promotion": self.suggest_promotion,
            "suggested_at": st.and_then(|s| s.suggested_at),
            "demotion_due": self.demotion_due,
        })
    }
}

fn counts_in(stats: &ReviewStats, route: &str, mode: Option<Mode>) -> ReviewCounts {
    stats
        .iter()
        .filter(|((r, m), _)| r == route && mode.is_none_or(|x| x.as_str() == m))
        .fold(ReviewCounts::default(), |mut acc, (_, c)| {
            acc.reviewed += c.reviewed;
            acc.agreed += c.agreed;
            acc.corrected += c.corrected;
            acc.pending += c.pending;
            acc
        })
}

/// Whether `a` meets `promote_when`.
fn promotion_met(route: &Route, a: &Agreement) -> bool {
    route
        .rollout
        .promote_when
        .is_some_and(|p| a.reviewed >= p.reviewed && a.rate.is_some_and(|r| r >= p.agreement))
}

/// Whether `a` (reviews of the live route) crosses `demote_when`.
fn demotion_due(route: &Route, a: &Agreement) -> bool {
    route.rollout.demote_when.is_some_and(|d| {
        a.reviewed >= d.reviewed
            && a.reviewed > 0
            && (a.reviewed - a.agreed) as f64 / a.reviewed as f64 > d.corrections
    })
}

/// The rollout of every route of `charter`.
pub async fn route_views<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
) -> Result<Vec<RouteView>, StoreError> {
    let charter_mode = crate::mode::effective_mode(&state.store, charter).await?;
    let states = state.store.route_states(Some(&charter.name)).await?;
    let modes = route_modes(charter, charter_mode, &states);
    let all = state.store.review_stats(&charter.name, 0).await?;
    let mut out = Vec::new();
    for (route, mode) in charter.routes.iter().zip(modes) {
        let st = states.iter().find(|s| s.route == route.name).cloned();
        let since = st.as_ref().and_then(|s| s.at).unwrap_or(0);
        let current = if since == 0 {
            counts_in(&all, &route.name, Some(mode))
        } else {
            let recent = state.store.review_stats(&charter.name, since).await?;
            counts_in(&recent, &route.name, Some(mode))
        };
        let total = counts_in(&all, &route.name, None);
        let min = route.rollout.min_reviewed;
        let agreement = Agreement::new(current.reviewed, current.agreed, current.corrected, min);
        out.push(RouteView {
            name: route.name.clone(),
            actions: route.actions.clone(),
            mode,
            declared: calc::declared_mode(route, charter.mode),
            own_mode: route.rollout.mode.is_some(),
            state: st,
            suggest_promotion: mode != Mode::Live && promotion_met(route, &agreement),
            demotion_due: mode == Mode::Live && demotion_due(route, &agreement),
            agreement,
            all_time: Agreement::new(total.reviewed, total.agreed, total.corrected, min),
            pending: total.pending,
            sample: route.rollout.sample,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Changing a route's mode
// ---------------------------------------------------------------------------------------

/// Set route `route`'s mode (`None`: drop the override, the files' mode applies), audited
/// as `route.mode` by `actor`. Returns (mode before, mode after).
pub async fn change_route_mode<S: Store>(
    state: &AppState<S>,
    actor: &str,
    charter: &Charter,
    route: &str,
    target: Option<Mode>,
    reason: Option<String>,
) -> Result<(Mode, Mode), ApiError> {
    let Some(idx) = charter.routes.iter().position(|r| r.name == route) else {
        return Err(ApiError::NotFound);
    };
    let r = &charter.routes[idx];
    let charter_mode = crate::mode::effective_mode(&state.store, charter).await?;
    let before = route_mode_now(state, charter, charter_mode, idx).await?;
    let declared = calc::declared_mode(r, charter.mode);
    let now = now_millis();
    match target {
        Some(m) => {
            state
                .store
                .set_route_mode(RouteModeChange {
                    charter: charter.name.clone(),
                    route: r.name.clone(),
                    mode: m.as_str().to_string(),
                    base: declared.as_str().to_string(),
                    by: actor.to_string(),
                    at: now,
                    reason: reason.clone(),
                })
                .await?;
        }
        None => {
            state
                .store
                .clear_route_mode(&charter.name, &r.name, now)
                .await?;
        }
    }
    let after = route_mode_now(state, charter, charter_mode, idx).await?;
    audit(
        state,
        actor,
        "route.mode",
        Some(&charter.name),
        Some(r.name.clone()),
        json!({
            "route": r.name,
            "from": before.as_str(),
            "to": after.as_str(),
            "declared_mode": declared.as_str(),
            "reason": reason,
        }),
    )
    .await?;
    let by = if actor == AUTOMATIC {
        "automatic"
    } else {
        "operator"
    };
    state
        .metrics
        .route_mode_change(&charter.name, &r.name, after.as_str(), by);
    state.wake.notify_one();
    tracing::info!(actor, charter = %charter.name, route = %r.name, from = before.as_str(), to = after.as_str(), "route mode changed");
    Ok((before, after))
}

/// Body of `POST /api/v1/charters/{name}/routes/{route}/mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteModeBody {
    /// `shadow`, `approve`, `live`, or `file` (drop the override).
    pub mode: String,
    pub reason: Option<String>,
}

/// Parse a mode word of the API (`file`: `None`).
pub fn parse_target(word: &str) -> Result<Option<Mode>, ApiError> {
    match word {
        "file" => Ok(None),
        m => Mode::parse(m).map(Some).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "unknown mode `{m}`: expected shadow, approve, live or file"
            ))
        }),
    }
}
