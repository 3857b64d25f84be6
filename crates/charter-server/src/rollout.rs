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

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use charter_core::config::{Approval, Charter, Mode, OnExpiry, Role, Route};
use charter_core::model::{Decision, RunOutcome, UnixMillis};
use charter_core::rollout::{self as calc, Agreement, Rewrite};
use charter_store::rollout::{
    DraftRewrite, NewSample, ReviewCounts, ReviewStats, RouteModeChange, RouteState, SampleFilter,
    SampleRecord, SampleReview,
};
use charter_store::{
    ApprovalRecord, EXTRA_DRAFT, NotificationKind, NotificationRecord, Store, StoreError,
};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{ApiRoute, Caller, audit, authorize};
use crate::error::ApiError;
use crate::notify::Notice;
use crate::{AppState, now_millis};

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
#[allow(clippy::too_many_arguments)]
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
    let charter_mode = crate::operator::effective_mode(&state.store, charter).await?;
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
    let charter_mode = crate::operator::effective_mode(&state.store, charter).await?;
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

fn visible<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    name: &str,
) -> Result<Arc<Charter>, ApiError> {
    match state.runtime.charters.get(name) {
        Some(cr) if caller.sees(name) => Ok(cr.charter.clone()),
        _ => Err(ApiError::NotFound),
    }
}

/// `GET /api/v1/charters/{name}/routes` (viewer): every route's mode, sampling, agreement
/// and promotion state.
pub async fn list_routes<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let charter = visible(&state, &caller, &name)?;
    Ok(Json(routes_json(&state, &charter).await?))
}

async fn routes_json<S: Store>(state: &AppState<S>, charter: &Charter) -> Result<Value, ApiError> {
    let views = route_views(state, charter).await?;
    let routes: Vec<Value> = views
        .iter()
        .zip(&charter.routes)
        .map(|(v, r)| v.json(r))
        .collect();
    Ok(json!({ "charter": charter.name, "routes": routes }))
}

/// `POST /api/v1/charters/{name}/routes/{route}/mode` with `{"mode": "shadow" | "approve" |
/// "live" | "file", "reason": "..."}` (admin).
pub async fn set_route_mode<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path((name, route)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Admin)?;
    let charter = visible(&state, &caller, &name)?;
    let body: RouteModeBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"mode\": \"shadow\" | \"approve\" | \"live\" | \"file\"}}: {e}"
        ))
    })?;
    let target = parse_target(&body.mode)?;
    change_route_mode(&state, &caller.name, &charter, &route, target, body.reason).await?;
    let all = routes_json(&state, &charter).await?;
    let one = all["routes"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == route.as_str()).cloned())
        .unwrap_or(Value::Null);
    Ok(Json(json!({ "charter": charter.name, "route": one })))
}

// ---------------------------------------------------------------------------------------
// Reviews
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct SamplesQuery {
    pub charter: Option<String>,
    pub route: Option<String>,
    /// `pending` (default), `reviewed` or `all`.
    pub status: Option<String>,
    pub limit: Option<usize>,
}

/// `GET /api/v1/samples?charter=&route=&status=pending|reviewed|all` (viewer).
pub async fn list_samples<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(q): Query<SamplesQuery>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let reviewed = match q.status.as_deref().unwrap_or("pending") {
        "pending" => Some(false),
        "reviewed" => Some(true),
        "all" => None,
        s => {
            return Err(ApiError::BadRequest(format!(
                "unknown status `{s}`: expected pending, reviewed or all"
            )));
        }
    };
    if let Some(c) = &q.charter
        && !caller.sees(c)
    {
        return Ok(Json(json!({ "samples": [] })));
    }
    let list = state
        .store
        .samples(SampleFilter {
            charter: q.charter.clone(),
            route: q.route.clone(),
            reviewed,
            limit: q.limit.unwrap_or(100).min(1000),
        })
        .await?;
    let visible: Vec<&SampleRecord> = list
        .iter()
        .filter(|s| caller.sees(&s.sample.charter))
        .collect();
    Ok(Json(json!({ "samples": visible })))
}

/// `GET /api/v1/samples/{id}` (viewer): the sample with the run it points at.
pub async fn show_sample<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    let s = visible_sample(&state, &caller, &id).await?;
    let run = state
        .store
        .runs_for_event(s.sample.event_id)
        .await?
        .into_iter()
        .find(|r| r.id == s.sample.run_id);
    Ok(Json(json!({ "sample": s, "run": run })))
}

async fn visible_sample<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
) -> Result<SampleRecord, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    match state.store.sample(id).await? {
        Some(s) if caller.sees(&s.sample.charter) => Ok(s),
        _ => Err(ApiError::NotFound),
    }
}

/// Body of `POST /api/v1/samples/{id}/review`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewBody {
    /// Whether the decision (label) was right; required.
    pub decision_right: Option<bool>,
    /// The right label when it was wrong (one of the charter's labels).
    pub right_label: Option<String>,
    /// Every action of the sample: right (`true`) or wrong.
    #[serde(default)]
    pub actions: BTreeMap<String, bool>,
    pub note: Option<String>,
}

/// Check a review against the sample and charter; the review to store.
pub fn check_review(
    charter: &Charter,
    sample: &NewSample,
    body: ReviewBody,
    by: &str,
    at: UnixMillis,
) -> Result<SampleReview, ApiError> {
    let Some(decision_right) = body.decision_right else {
        return Err(ApiError::BadRequest(
            "missing `decision_right`: expected true or false".into(),
        ));
    };
    let names: Vec<String> = sample
        .actions
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    for (i, name) in body.actions.keys().enumerate() {
        if !names.contains(name) {
            return Err(ApiError::BadRequest(format!(
                "/actions/{name}: the sample has no action `{name}` (entry {i}); expected one of {}",
                names.join(", ")
            )));
        }
    }
    if let Some(missing) = names.iter().find(|n| !body.actions.contains_key(*n)) {
        return Err(ApiError::BadRequest(format!(
            "/actions/{missing}: missing the verdict on action `{missing}`: expected true (right) or false (wrong)"
        )));
    }
    let right_label = match (decision_right, body.right_label) {
        (true, Some(_)) => {
            return Err(ApiError::BadRequest(
                "/right_label: a right label is given only when the decision was wrong".into(),
            ));
        }
        (true, None) => None,
        (false, label) => {
            let labels = charter.decide.as_ref().map(|d| d.labels.as_slice());
            match (labels, label) {
                (Some(ls), Some(l)) if !ls.contains(&l) => {
                    return Err(ApiError::BadRequest(format!(
                        "/right_label: `{l}` is not a label of {}; expected one of {}",
                        charter.name,
                        ls.join(", ")
                    )));
                }
                (Some(_), None) => {
                    return Err(ApiError::BadRequest(
                        "/right_label: missing: the decision was wrong, so name the right label"
                            .into(),
                    ));
                }
                (_, l) => l,
            }
        }
    };
    Ok(SampleReview {
        by: by.to_string(),
        at,
        decision_right,
        right_label,
        actions: body.actions,
        note: body.note.filter(|n| !n.trim().is_empty()),
    })
}

/// `POST /api/v1/samples/{id}/review` (reviewer): `{"decision_right": bool, "right_label":
/// "...", "actions": {"name": bool}, "note": "..."}`. 409 when it was reviewed already.
pub async fn review<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Reviewer)?;
    let body: ReviewBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid body: {e}")))?;
    let done = review_as(&state, &caller, &id, body).await?;
    Ok(Json(json!({ "sample": done })))
}

/// Review a sample as `caller` (the API's and UI's one way in): checked, stored, audited as
/// `sample.review`, then the route is evaluated for promotion or demotion.
pub async fn review_as<S: Store>(
    state: &AppState<S>,
    caller: &Caller,
    id: &str,
    body: ReviewBody,
) -> Result<SampleRecord, ApiError> {
    let s = visible_sample(state, caller, id).await?;
    let Some(cr) = state.runtime.charters.get(&s.sample.charter) else {
        return Err(ApiError::NotFound);
    };
    if s.review.is_some() {
        return Err(ApiError::Conflict("the sample was reviewed already".into()));
    }
    let reviewer = caller.reviewer_as.as_deref().unwrap_or(&caller.name);
    let r = check_review(&cr.charter, &s.sample, body, reviewer, now_millis())?;
    let agreed = r.agreed();
    let Some(done) = state.store.review_sample(s.sample.id, r).await? else {
        return Err(ApiError::Conflict("the sample was reviewed already".into()));
    };
    let review = done.review.as_ref();
    audit(
        state,
        &caller.name,
        "sample.review",
        Some(&s.sample.charter),
        Some(s.sample.id.to_string()),
        json!({
            "route": s.sample.route,
            "event": s.sample.event_id,
            "run": s.sample.run_id,
            "label": s.sample.label,
            "agreed": agreed,
            "decision_right": review.map(|r| r.decision_right),
            "right_label": review.and_then(|r| r.right_label.clone()),
            "actions": review.map(|r| &r.actions),
        }),
    )
    .await?;
    state
        .metrics
        .sample_review(&s.sample.charter, &s.sample.route, agreed);
    evaluate(state, &cr.charter, &s.sample.route, s.sample.id).await?;
    Ok(done)
}

/// After a review: suggest (or, with `auto: true`, make) a promotion, or demote a live route
/// whose reviewers disagree too often. `sample` is the review that triggered it (the
/// notification's item).
pub async fn evaluate<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    route: &str,
    sample: Uuid,
) -> Result<(), ApiError> {
    let views = route_views(state, charter).await?;
    let Some((v, r)) = views
        .iter()
        .zip(&charter.routes)
        .find(|(v, _)| v.name == route)
    else {
        return Ok(());
    };
    if v.demotion_due {
        let reason = format!(
            "{} of {} reviewed samples marked wrong since the route went live, above demote_when.corrections {:.1}%",
            v.agreement.reviewed - v.agreement.agreed,
            v.agreement.reviewed,
            100.0 * r.rollout.demote_when.map_or(0.0, |d| d.corrections)
        );
        change_route_mode(
            state,
            AUTOMATIC,
            charter,
            route,
            Some(Mode::Approve),
            Some(reason),
        )
        .await?;
        tell_owner(state, charter, NotificationKind::Demotion, sample).await;
        return Ok(());
    }
    if !v.suggest_promotion {
        return Ok(());
    }
    if r.rollout.promote_when.is_some_and(|p| p.auto) {
        let reason = format!("promote_when met: {}", v.agreement.describe());
        change_route_mode(
            state,
            AUTOMATIC,
            charter,
            route,
            Some(Mode::Live),
            Some(reason),
        )
        .await?;
        tell_owner(state, charter, NotificationKind::Promotion, sample).await;
    } else if state
        .store
        .mark_suggested(&charter.name, route, now_millis())
        .await?
    {
        audit(
            state,
            AUTOMATIC,
            "route.promotion_suggested",
            Some(&charter.name),
            Some(route.to_string()),
            json!({ "route": route, "agreement": v.agreement }),
        )
        .await?;
        tell_owner(state, charter, NotificationKind::Promotion, sample).await;
    }
    Ok(())
}

/// Queue the owner's notice through the charter's notification channels (never fails).
async fn tell_owner<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    kind: NotificationKind,
    sample: Uuid,
) {
    crate::notify::rollout_changed(state, charter, kind, sample).await;
}

/// The notice of a promotion suggestion or demotion (`n.item_id` is the review's sample);
/// `None` when the sample or charter is gone.
pub async fn notice<S: Store>(
    state: &AppState<S>,
    n: &NotificationRecord,
    base: &str,
) -> Result<Option<Notice>, StoreError> {
    let Some(s) = state.store.sample(n.item_id).await? else {
        return Ok(None);
    };
    let Some(cr) = state.runtime.charters.get(&s.sample.charter) else {
        return Ok(None);
    };
    let charter = &cr.charter;
    let views = route_views(state, charter).await?;
    let Some(v) = views.iter().find(|v| v.name == s.sample.route) else {
        return Ok(None);
    };
    let title = match n.kind {
        NotificationKind::Demotion => format!(
            "Route {} of {} demoted to approve: reviewers corrected it too often",
            v.name, charter.name
        ),
        _ if v.mode == Mode::Live => {
            format!("Route {} of {} was promoted to live", v.name, charter.name)
        }
        _ => format!(
            "Route {} of {} has earned promotion to live",
            v.name, charter.name
        ),
    };
    let reason = v
        .state
        .as_ref()
        .and_then(|s| s.reason.clone())
        .unwrap_or_else(|| v.agreement.describe());
    Ok(Some(Notice {
        kind: n.kind,
        item: n.item_id,
        charter: charter.name.clone(),
        event: s.sample.event_id,
        title,
        facts: vec![
            ("Charter".into(), charter.name.clone()),
            ("Owner".into(), charter.owner.clone()),
            ("Route".into(), v.name.clone()),
            ("Mode now".into(), v.mode.as_str().into()),
            ("Reviews".into(), v.agreement.describe()),
        ],
        evidence: reason,
        link: format!("{base}/rollout/{}", charter.name),
        inbox: format!("{base}/rollout/{}", charter.name),
        labels: Vec::new(),
    }))
}

// ---------------------------------------------------------------------------------------
// Rewrites
// ---------------------------------------------------------------------------------------

/// After an approval: when the action carried a draft, measure and keep how much the
/// reviewer rewrote it. Never fails the approval (errors are logged).
pub async fn approved<S: Store>(state: &AppState<S>, a: &ApprovalRecord, by: &str) {
    if let Err(e) = record_rewrite(state, a, by).await {
        tracing::error!(approval = %a.id, error = %e, "could not record the draft's rewrite");
    }
}

async fn record_rewrite<S: Store>(
    state: &AppState<S>,
    a: &ApprovalRecord,
    by: &str,
) -> Result<(), StoreError> {
    let Some(cr) = state.runtime.charters.get(&a.charter) else {
        return Ok(());
    };
    if cr
        .charter
        .actions
        .get(&a.action)
        .is_none_or(|x| x.draft.is_none())
    {
        return Ok(());
    }
    let extras = state.store.run_extras(a.run_id).await?;
    let draft = match extras
        .iter()
        .find(|x| x.kind == EXTRA_DRAFT && x.name == a.action)
    {
        Some(x) => x.body["text"].as_str().unwrap_or_default().to_string(),
        None => state
            .store
            .latest_run_extra(a.event_id, EXTRA_DRAFT, &a.action)
            .await?
            .and_then(|x| x.body["text"].as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    let pairs = calc::draft_texts(&a.params, a.effective_params(), &draft);
    let (before, after) = if pairs.is_empty() {
        (draft.clone(), draft.clone())
    } else {
        let before: Vec<&str> = pairs.iter().map(|p| p.1.as_str()).collect();
        let after: Vec<&str> = pairs.iter().map(|p| p.2.as_str()).collect();
        (before.join("\n"), after.join("\n"))
    };
    let route = state
        .store
        .runs_for_event(a.event_id)
        .await?
        .into_iter()
        .find(|r| r.id == a.run_id)
        .and_then(|r| r.route)
        .and_then(|i| cr.charter.routes.get(i))
        .map(|r| r.name.clone());
    // Quadratic in the texts' lengths: off the async workers for long drafts.
    let (before, after, distance) = tokio::task::spawn_blocking(move || {
        let d = Rewrite::measure(&before, &after);
        (before, after, d)
    })
    .await
    .map_err(|e| StoreError::Database(format!("measuring a rewrite: {e}")))?;
    let w = DraftRewrite {
        approval_id: a.id,
        run_id: a.run_id,
        event_id: a.event_id,
        charter: a.charter.clone(),
        route: route.clone(),
        action: a.action.clone(),
        draft: before,
        approved: after,
        distance,
        edited_by: by.to_string(),
        at: now_millis(),
    };
    if state.store.add_rewrite(w).await? {
        state.metrics.draft_rewrite(
            &a.charter,
            route.as_deref().unwrap_or("-"),
            &a.action,
            &distance,
        );
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
pub struct RewritesQuery {
    pub charter: Option<String>,
    /// Unix milliseconds; default 0 (everything kept).
    pub since: Option<UnixMillis>,
    /// Pairs returned (default 100, at most 10 000); totals cover every rewrite.
    pub limit: Option<usize>,
}

/// Totals as the API shows them: one row per (charter, route, action) with the ratios.
pub fn totals_json(stats: &charter_store::rollout::RewriteStats) -> Vec<Value> {
    stats
        .iter()
        .map(|((c, r, a), t)| {
            json!({
                "charter": c, "route": r, "action": a,
                "drafts": t.drafts, "edited": t.edited,
                "chars_changed": t.distance.chars, "draft_chars": t.distance.draft_chars,
                "words_changed": t.distance.words, "draft_words": t.distance.draft_words,
                "char_ratio": t.distance.char_ratio(),
                "word_ratio": t.distance.word_ratio(),
            })
        })
        .collect()
}

/// `GET /api/v1/rewrites?charter=&since=&limit=` (viewer): rewrite totals per charter, route
/// and action, and the edited pairs (draft, approved).
pub async fn list_rewrites<S: Store>(
    State(state): State<AppState<S>>,
    headers: HeaderMap,
    Query(q): Query<RewritesQuery>,
) -> Result<Json<Value>, ApiError> {
    let caller = authorize(&state, &headers, Role::Viewer)?;
    if let Some(c) = &q.charter
        && !caller.sees(c)
    {
        return Err(ApiError::NotFound);
    }
    let since = q.since.unwrap_or(0);
    let stats = state
        .store
        .rewrite_stats(q.charter.as_deref(), since)
        .await?;
    let stats: charter_store::rollout::RewriteStats = stats
        .into_iter()
        .filter(|((c, _, _), _)| caller.sees(c))
        .collect();
    let pairs: Vec<DraftRewrite> = state
        .store
        .rewrites(
            q.charter.as_deref(),
            since,
            q.limit.unwrap_or(100).min(10_000),
        )
        .await?
        .into_iter()
        .filter(|w| caller.sees(&w.charter))
        .collect();
    Ok(Json(
        json!({ "totals": totals_json(&stats), "rewrites": pairs }),
    ))
}

/// The rollout routes of the admin API (added to [`crate::api::routes`]).
pub fn api_routes<S: Store>() -> Vec<ApiRoute<S>> {
    use axum::http::Method;
    use axum::routing::{get, post};
    vec![
        ApiRoute {
            method: Method::GET,
            path: "/api/v1/charters/{name}/routes",
            handler: get(list_routes::<S>),
        },
        ApiRoute {
            method: Method::POST,
            path: "/api/v1/charters/{name}/routes/{route}/mode",
            handler: post(set_route_mode::<S>),
        },
        ApiRoute {
            method: Method::GET,
            path: "/api/v1/samples",
            handler: get(list_samples::<S>),
        },
        ApiRoute {
            method: Method::GET,
            path: "/api/v1/samples/{id}",
            handler: get(show_sample::<S>),
        },
        ApiRoute {
            method: Method::POST,
            path: "/api/v1/samples/{id}/review",
            handler: post(review::<S>),
        },
        ApiRoute {
            method: Method::GET,
            path: "/api/v1/rewrites",
            handler: get(list_rewrites::<S>),
        },
    ]
}

/// Label corrections from reviewed samples, as `GET /api/v1/corrections` lists them.
pub async fn sample_corrections<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    let reviewed = state
        .store
        .samples(SampleFilter {
            charter: Some(charter.name.clone()),
            route: None,
            reviewed: Some(true),
            limit,
        })
        .await?;
    let mut out = Vec::new();
    for s in reviewed {
        let Some(r) = &s.review else { continue };
        let Some(label) = r.right_label.as_ref().filter(|_| !r.decision_right) else {
            continue;
        };
        let Some(ev) = state.store.get_event(s.sample.event_id).await? else {
            continue;
        };
        let ctx = charter_core::routing::eval_context(&ev.event, None);
        let text = crate::worker::decision_text(charter, &ev.event, &ctx);
        out.push(json!({
            "event_id": s.sample.event_id,
            "escalation_id": null,
            "sample_id": s.sample.id,
            "text": text,
            "label": label,
            "fields": {},
            "decided_by": r.by,
            "decided_at": r.at,
        }));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------

/// The rollout part of a charter's report: every route's mode and agreement, and the
/// rewrite totals of drafts approved since `since`.
pub async fn report_json<S: Store>(
    state: &AppState<S>,
    charter: &Charter,
    since: UnixMillis,
) -> Result<Value, ApiError> {
    let views = route_views(state, charter).await?;
    let routes: Vec<Value> = views
        .iter()
        .zip(&charter.routes)
        .map(|(v, r)| v.json(r))
        .collect();
    let stats = state
        .store
        .rewrite_stats(Some(&charter.name), since)
        .await?;
    let mut all = Rewrite::default();
    let (mut drafts, mut edited) = (0, 0);
    for t in stats.values() {
        drafts += t.drafts;
        edited += t.edited;
        all.chars += t.distance.chars;
        all.draft_chars += t.distance.draft_chars;
        all.words += t.distance.words;
        all.draft_words += t.distance.draft_words;
    }
    Ok(json!({
        "routes": routes,
        "rewrites": totals_json(&stats),
        "rewrite_total": {
            "drafts": drafts, "edited": edited,
            "chars_changed": all.chars, "draft_chars": all.draft_chars,
            "words_changed": all.words, "draft_words": all.draft_words,
            "char_ratio": all.char_ratio(), "word_ratio": all.word_ratio(),
        },
    }))
}

/// The rollout part of `charter report` as text (from [`report_json`]'s value).
pub fn render_text(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let Some(routes) = v["routes"].as_array() else {
        return o;
    };
    let _ = writeln!(o);
    let _ = writeln!(o, "routes");
    for r in routes {
        let _ = writeln!(
            o,
            "  {:<20} {:<8} sample {:>5.1}%  pending {:<4} {}{}",
            r["name"].as_str().unwrap_or("?"),
            r["mode"].as_str().unwrap_or("?"),
            100.0 * r["sample"].as_f64().unwrap_or(0.0),
            r["pending_reviews"].as_u64().unwrap_or(0),
            r["agreement_text"].as_str().unwrap_or(""),
            if r["suggest_promotion"].as_bool() == Some(true) {
                "  (meets promote_when: suggest promotion to live)"
            } else {
                ""
            }
        );
    }
    let t = &v["rewrite_total"];
    let _ = writeln!(o);
    let _ = writeln!(o, "draft rewrites");
    if t["drafts"].as_u64().unwrap_or(0) == 0 {
        let _ = writeln!(o, "  no approved drafts");
        return o;
    }
    let _ = writeln!(
        o,
        "  all                    {} approved, {} edited; {:.1}% of characters, {:.1}% of words rewritten",
        t["drafts"].as_u64().unwrap_or(0),
        t["edited"].as_u64().unwrap_or(0),
        100.0 * t["char_ratio"].as_f64().unwrap_or(0.0),
        100.0 * t["word_ratio"].as_f64().unwrap_or(0.0),
    );
    for r in v["rewrites"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "  {:<22} {} approved, {} edited; {:.1}% chars, {:.1}% words",
            format!(
                "{}/{}",
                r["route"].as_str().unwrap_or("-"),
                r["action"].as_str().unwrap_or("?")
            ),
            r["drafts"].as_u64().unwrap_or(0),
            r["edited"].as_u64().unwrap_or(0),
            100.0 * r["char_ratio"].as_f64().unwrap_or(0.0),
            100.0 * r["word_ratio"].as_f64().unwrap_or(0.0),
        );
    }
    o
}
